//! What the commands print: results on stdout (text, or JSON with `--json`), progress and
//! questions on stderr.

use std::path::Path;

use canup::audit::{AuditRecord, Decision};
use canup::capabilities::CapabilitySet;
use canup::journal::{self, RunRecord};
use canup::plan::Plan;
use canup::sandbox::StepReport;
use canup::upgrade::rollback::RollbackSummary;
use canup::upgrade::{ApplySummary, Status, UpgradeError};
use canup::version::text;

/// A result as JSON on stdout.
pub fn json(value: &impl serde::Serialize) {
    println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
}

/// `canup status`.
pub fn status(s: &Status) {
    println!("installed: Canopsis {} ({} edition, {} method)", text(&s.installed), s.edition, s.method);
    println!("operating system: {}", s.os.as_deref().unwrap_or("unknown (no /etc/os-release or /etc/redhat-release)"));
    println!("repository: {}", s.repository);
    for (role, t) in &s.expires {
        println!("  {role:<9} valid until {t}");
    }
    match &s.newest_target {
        Some(t) => println!("newest regular target: {t} (canup plan --to {t})", t = text(t)),
        None => println!("up to date: no newer regular release of this major before a migration guide"),
    }
    if let Some(b) = &s.barrier {
        println!(
            "migration barrier: {} needs the guide \"{}\" ({}): {}; canup plans up to the release before it, and from {} once migrated",
            text(&b.release),
            b.barrier.guide,
            b.barrier.url,
            b.barrier.reason,
            text(&b.release)
        );
    }
    if let Some(r) = &s.pending_run {
        println!("interrupted run pending: {r}; `canup apply` resumes it");
    }
}

/// What `canup apply` says once the run is over: only what was checked (the steps that ran
/// and those already done), never what was planned.
pub fn apply_summary(summary: &ApplySummary, dry_run: bool) {
    let ran = summary.reports.len();
    if ran == 0 && summary.already_done.is_empty() {
        println!("Canopsis is already at {}: nothing to do", text(&summary.plan.target));
        return;
    }
    println!("\nsummary: run {}: {} steps ran, {} already done", summary.run, ran, summary.already_done.len());
    let skipped = skipped_checks(summary);
    for (step, why) in &skipped {
        println!("  skipped: {step}: {why}");
    }
    if dry_run {
        println!("dry run: nothing was changed. The real run would make these changes, in order (queries ran for real):");
        for line in &summary.recorded {
            println!("  {line}");
        }
    } else {
        match &summary.verified {
            Some(found) => println!(
                "{}: Canopsis is now at {}, detection after the run found it installed ({} edition, {} method). To undo it: canup rollback {} (the backup set taken before its first change), or canup restore-files {} (the files only)",
                outcome_words(skipped.len()),
                text(&found.installed),
                found.edition,
                found.method,
                summary.run,
                summary.run
            ),
            // `apply` verifies every real run; a summary without it is a bug, not a success.
            None => println!("the run {} ended without verifying what is installed: run `canup status`", summary.run),
        }
    }
}

/// The steps that said they did not do their work, with why.
fn skipped_checks(summary: &ApplySummary) -> Vec<(&str, &str)> {
    summary.reports.iter().filter_map(|r| r.skipped.as_deref().map(|why| (r.step.as_str(), why))).collect()
}

/// "succeeded", or "succeeded, N checks skipped": a check that did not run is not an ok.
fn outcome_words(skipped: usize) -> String {
    match skipped {
        0 => "succeeded".to_owned(),
        1 => "succeeded, 1 check skipped".to_owned(),
        n => format!("succeeded, {n} checks skipped"),
    }
}

/// `apply --json`: what Ansible's role reads. `changed` is true when a step ran for real.
pub fn apply_json(result: &Result<ApplySummary, UpgradeError>, dry_run: bool, state_dir: &Path, backup_dir: &Path) {
    // The run's backup set, when it was taken: what the fleet summary names.
    let backup = |run: &str| canup::upgrade::backups::set::BackupSet::read(backup_dir, run).ok().flatten().map(|_| backup_dir.join(run).display().to_string());
    let value = match result {
        Ok(s) => {
            let ran: Vec<&str> = s.reports.iter().map(|r| r.step.as_str()).collect();
            let skipped: Vec<serde_json::Value> = skipped_checks(s).into_iter().map(|(step, why)| serde_json::json!({ "step": step, "reason": why })).collect();
            let outcome = if dry_run {
                "dry-run"
            } else if ran.is_empty() && s.already_done.is_empty() {
                "up-to-date"
            } else {
                "succeeded"
            };
            let steps: Vec<serde_json::Value> = s
                .reports
                .iter()
                .map(|r| match &r.skipped {
                    Some(why) => serde_json::json!({ "step": r.step, "outcome": "skipped", "reason": why }),
                    None => serde_json::json!({ "step": r.step, "outcome": "ok" }),
                })
                .collect();
            serde_json::json!({
                "outcome": outcome,
                "changed": !dry_run && !ran.is_empty(),
                "run": s.run,
                "installed": s.plan.installed.to_string(),
                "target": s.plan.target.to_string(),
                "steps_ran": ran,
                "steps": steps,
                "checks_skipped": skipped,
                "already_done": s.already_done,
                "recorded": s.recorded,
                "verified": s.verified,
                "backup": if dry_run { None } else { backup(&s.run) },
            })
        }
        Err(e) => {
            // A run that started: its versions from the journal, and the step that failed.
            let (run, failed_step) = match e {
                UpgradeError::StepFailed { run, step, .. } => (Some(run.as_str()), Some(step.as_str())),
                UpgradeError::Unverified { run, .. } => (Some(run.as_str()), None),
                _ => (None, None),
            };
            let record = run.and_then(|r| journal::Journal::read(state_dir).ok().and_then(|ev| journal::runs(&ev).into_iter().find(|x| x.run == r)));
            serde_json::json!({
                "outcome": if matches!(e, UpgradeError::Unverified { .. }) { "unverified" } else { "failed" },
                "changed": matches!(e, UpgradeError::StepFailed { .. } | UpgradeError::Unverified { .. }),
                "exit_code": e.exit_code().code(),
                "error": e.to_string(),
                "run": run,
                "failed_step": failed_step,
                "installed": record.as_ref().map(|r| r.installed.to_string()),
                "target": record.as_ref().map(|r| r.target.to_string()),
                "backup": run.and_then(backup),
            })
        }
    };
    println!("{}", serde_json::to_string_pretty(&value).unwrap_or_default());
}

/// `rollback --json`: what the Ansible role reads.
pub fn rollback_json(result: &Result<RollbackSummary, UpgradeError>, run: &str) {
    let value = match result {
        Ok(s) => serde_json::json!({
            "outcome": "rolled-back",
            "changed": true,
            "run": s.run,
            "rollback": s.rollback,
            "installed": s.verified.installed.to_string(),
            "stages": s.done,
        }),
        Err(e) => serde_json::json!({
            "outcome": if matches!(e, UpgradeError::RollbackUnverified { .. }) { "unverified" } else { "failed" },
            "changed": matches!(e, UpgradeError::RollbackFailed { .. } | UpgradeError::RollbackUnverified { .. }),
            "run": run,
            "exit_code": e.exit_code().code(),
            "error": e.to_string(),
        }),
    };
    println!("{}", serde_json::to_string_pretty(&value).unwrap_or_default());
}

pub fn ask_yes_no(prompt: &str) -> bool {
    use std::io::{BufRead, IsTerminal, Write};
    if !std::io::stdin().is_terminal() {
        eprintln!("no terminal to confirm: pass --yes to go on unattended");
        return false;
    }
    print!("{prompt}");
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    matches!(line.trim(), "y" | "Y" | "yes")
}

/// The plan: releases, then each phase's steps with what each may touch; `(query)` marks the
/// commands the operator's policy says only read (they also run in a dry run).
pub fn plan(plan: &Plan, done: &[String], policy: &CapabilitySet) {
    println!("plan: Canopsis {} → {} ({} edition, {} method)", text(&plan.installed), text(&plan.target), plan.edition, plan.method);
    println!("releases: {}", plan.releases.iter().map(text).collect::<Vec<_>>().join(", "));
    for (v, why) in &plan.skipped {
        println!("skipped: {} (withdrawn: {why})", text(v));
    }
    let mut phase = None;
    for p in &plan.steps {
        if phase != Some(p.phase) {
            println!("{}:", p.phase);
            phase = Some(p.phase);
        }
        let m = &p.step.manifest;
        let mark = if done.contains(&m.id) { " (done)" } else { "" };
        println!("  {}{mark} — {}", m.id, m.description);
        let c = &m.capabilities;
        for e in &c.exec {
            println!(
                "      exec {} {}{}{}{}{}",
                e.program,
                e.args.join(" "),
                if e.users.is_empty() { String::new() } else { format!(" (as {})", e.users.join("/")) },
                e.env_file.as_ref().map(|f| format!(" (with the environment of {f})")).unwrap_or_default(),
                if policy.query(e) { " (query)" } else { "" },
                e.timeout_seconds.map(|t| format!(" (may run {})", humantime::format_duration(std::time::Duration::from_secs(t)))).unwrap_or_default()
            );
        }
        for r in &c.fs.read {
            println!("      read {r}");
        }
        for w in &c.fs.write {
            println!("      write {w}");
        }
        for h in &c.http {
            println!("      http {} {} on {}", h.methods.join("/"), h.paths.join(" "), h.endpoint);
        }
        for d in &c.database {
            println!("      database {} ({})", d.endpoint, if d.write { "scripts that change data" } else { "read-only queries" });
        }
    }
}

/// The plan's backup phase: what is saved before the first change, and where.
pub fn backups(lines: &[String]) {
    println!("backup (before the first change):");
    for l in lines {
        println!("  {l}");
    }
}

/// `canup history`: each run and its steps.
pub fn history(runs: &[RunRecord], state_dir: &Path) {
    if runs.is_empty() {
        println!("no runs recorded in {}", state_dir.display());
    }
    for r in runs {
        let outcome = match r.outcome {
            // A run ends Skipped never: only a step does.
            Some(journal::Outcome::Succeeded | journal::Outcome::Skipped) => "succeeded",
            Some(journal::Outcome::Failed) => "abandoned",
            Some(journal::Outcome::Unverified) => "FAILED (not installed)",
            None => "interrupted (resumable)",
        };
        let why = r.message.as_ref().map(|m| format!(": {m}")).unwrap_or_default();
        let skipped = r.steps.iter().filter(|s| s.outcome == Some(journal::Outcome::Skipped)).count();
        let outcome = if r.outcome == Some(journal::Outcome::Succeeded) { outcome_words(skipped) } else { outcome.to_owned() };
        println!("run {} ({}): {} → {} {outcome}{why}", r.run, r.started, text(&r.installed), text(&r.target));
        if let Some(b) = &r.rollback {
            let state = match b.outcome {
                Some(journal::Outcome::Succeeded) => format!("done: {}", b.message.clone().unwrap_or_default()),
                Some(_) => format!("FAILED: {}", b.message.clone().unwrap_or_default()),
                None => "interrupted (`canup rollback` resumes it)".to_owned(),
            };
            println!("  rolled back to {} by rollback {} ({}): {state}", text(&b.to), b.rollback, b.started);
            for (stage, message) in &b.stages {
                println!("    {stage}: {message}");
            }
        }
        for s in &r.steps {
            let o = match s.outcome {
                Some(journal::Outcome::Succeeded) => "ok".to_owned(),
                Some(journal::Outcome::Skipped) => format!("skipped: {}", s.message.clone().unwrap_or_default()),
                Some(journal::Outcome::Failed | journal::Outcome::Unverified) => format!("FAILED: {}", s.message.clone().unwrap_or_default()),
                None => "interrupted".to_owned(),
            };
            println!("  {:<40} {o:<10} {:>6} ms  module {}", s.step, s.duration_ms, &s.module_sha256[..s.module_sha256.len().min(12)]);
        }
    }
}

pub fn step_json(report: &StepReport, audit: &[AuditRecord], from_cache: bool, load_time: std::time::Duration) {
    let value = serde_json::json!({
        "step": report.step,
        "module_sha256": report.module_sha256,
        "compiled_from_cache": from_cache,
        "load_ms": load_time.as_secs_f64() * 1000.0,
        "outcome": match &report.result { Ok(()) => "succeeded".to_owned(), Err(e) => e.to_string() },
        "succeeded": report.result.is_ok(),
        "duration_ms": report.duration.as_secs_f64() * 1000.0,
        "stdout": report.stdout.text(),
        "stdout_dropped": report.stdout.dropped,
        "stderr": report.stderr.text(),
        "stderr_dropped": report.stderr.dropped,
        "audit": audit,
    });
    println!("{}", serde_json::to_string_pretty(&value).unwrap_or_default());
}

pub fn step_human(report: &StepReport, audit: &[AuditRecord], from_cache: bool, load_time: std::time::Duration) {
    for (name, c) in [("stdout", &report.stdout), ("stderr", &report.stderr)] {
        if !c.bytes.is_empty() {
            println!("--- step {name} ---");
            print!("{}", c.display());
            if !c.display().ends_with('\n') {
                println!();
            }
        }
        if c.dropped > 0 {
            println!("--- {} more bytes of {name} dropped (limit) ---", c.dropped);
        }
    }
    println!("--- audit ({} decisions) ---", audit.len());
    for r in audit {
        let mark = match r.decision {
            Decision::Allowed => "allowed",
            Decision::Denied => "DENIED ",
        };
        println!("{mark} {:<11} {} -> {} ({} us)", r.capability, r.args, r.result, r.duration_us);
    }
    let cache = format!("module {} in {:.1} ms", if from_cache { "loaded from the compiled cache" } else { "compiled" }, load_time.as_secs_f64() * 1000.0);
    match &report.result {
        Ok(()) => println!("step {} succeeded in {:.1} ms ({cache})", report.step, report.duration.as_secs_f64() * 1000.0),
        Err(e) => println!("step {} FAILED: {e}", report.step),
    }
}
