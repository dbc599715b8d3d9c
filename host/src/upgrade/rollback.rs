//! `canup rollback RUN`: the host brought back to what run RUN found, from the backup set the
//! run took before its first change. In stages, each journaled when done so that a killed
//! rollback resumes where it stopped:
//! 1. `packages`: the installed packages back to the recorded list in one transaction (`dnf
//!    shell`, or `yum shell` on CentOS 7: remove, downgrade and install, then one `run`);
//! 2. `files`: the files the run's steps changed, and the configuration directories;
//! 3. `databases`: each dump restored, after a confirmation naming what it overwrites;
//! 4. detection: the host must be at the run's starting version, or the rollback is not done.
//!
//! Refused, before anything changes, where undoing is unsafe or impossible: a later run (its
//! changes would be undone too), packages changed after the run (by the operator), a set that
//! is incomplete or altered on disk, a database the run migrated without its dump, or a
//! migration barrier between the versions.

use std::path::Path;
use std::sync::Arc;

use super::backups::set::{BackupSet, Package, PackageChanges};
use crate::capabilities::database::{self, Transfer};
use crate::capabilities::exec::ExecRequest;
use crate::capabilities::fs::{self as cap_fs, Restore};
use crate::journal::{self, ApplyLock, Event, Journal, Outcome, RunRecord};
use crate::manifest::Method;
use crate::restore::RestoreError;
use crate::sandbox::Detected;
use crate::ui::{Level, Ui};
use crate::version::text;

use super::backups::{host_command, installed_packages};
use super::{Session, UpgradeError};

const STAGE_PACKAGES: &str = "packages";
const STAGE_FILES: &str = "files";
const STAGE_DATABASES: &str = "databases";

/// Shows what the rollback will do (a line each) and asks; `true` to go on.
pub type ConfirmRollback<'a> = &'a dyn Fn(&[String]) -> bool;

#[derive(Debug)]
pub struct RollbackSummary {
    pub run: String,
    pub rollback: String,
    /// What each stage did.
    pub done: Vec<String>,
    /// What detection found after the rollback (the run's starting version).
    pub verified: Detected,
}

/// What the rollback will change, known before it starts.
struct Work {
    packages: PackageChanges,
    set: BackupSet,
}

/// `canup rollback RUN`.
pub async fn rollback(session: &Session, run: &str, ui: Arc<dyn Ui>, confirm: ConfirmRollback<'_>) -> Result<RollbackSummary, UpgradeError> {
    let _lock = ApplyLock::acquire(&session.state_dir)?;
    let events = Journal::read(&session.state_dir)?;
    let refused = |why: String| UpgradeError::RollbackRefused { run: run.to_owned(), why };
    let runs = journal::runs(&events);
    let position = runs.iter().position(|r| r.run == run).ok_or_else(|| refused("no such run in the journal (`canup history` lists them)".into()))?;
    let record = &runs[position];
    if let Some((other, pending)) = journal::pending_rollback(&events)
        && other != run
    {
        return Err(UpgradeError::RollbackPending { run: other, rollback: pending.rollback });
    }
    if let Some(later) = runs.get(position + 1) {
        return Err(refused(format!(
            "run {} started after it ({} → {}): rolling back {run} would undo that run too; canup rolls back the newest run only",
            later.run,
            text(&later.installed),
            text(&later.target)
        )));
    }
    let resumed = record.rollback.clone().filter(|b| b.outcome.is_none());
    if let Some(done) = record.rollback.as_ref().filter(|b| b.outcome == Some(Outcome::Succeeded)) {
        return Err(refused(format!("rollback {} already brought the host back to {} ({})", done.rollback, text(&done.to), done.started)));
    }
    let work = check(session, record, &events).await.map_err(refused)?;
    let stages_done: Vec<String> = resumed.as_ref().map(|b| b.stages.iter().map(|(s, _)| s.clone()).collect()).unwrap_or_default();

    let mut shown = vec![format!(
        "bring the host back to Canopsis {} as run {run} found it ({} edition, {} method)",
        text(&work.set.installed),
        work.set.edition,
        work.set.method
    )];
    if !stages_done.is_empty() {
        shown.push(format!(
            "resuming rollback {}: done already: {}",
            resumed.as_ref().map(|b| b.rollback.as_str()).unwrap_or_default(),
            stages_done.join(", ")
        ));
    }
    if !stages_done.iter().any(|s| s == STAGE_PACKAGES) {
        shown.extend(work.packages.describe().into_iter().map(|l| format!("package {l}")));
    }
    if !stages_done.iter().any(|s| s == STAGE_FILES) {
        shown.push(format!("files: those the run's steps changed, from {}", session.state_dir.join("backups").join(run).display()));
        shown.extend(work.set.config.iter().map(|d| format!("files: configuration directory {} as it was ({} files)", d.path, d.files.len())));
    }
    if !stages_done.iter().any(|s| s == STAGE_DATABASES) {
        shown.extend(work.set.dumps.iter().map(|d| {
            format!(
                "database {} ({}) OVERWRITTEN with its dump taken at {} before run {run}: every change made to it since, by Canopsis or anyone, is lost",
                d.endpoint, d.target, work.set.taken
            )
        }));
    }
    if !confirm(&shown) {
        return Err(UpgradeError::RollbackDeclined(run.to_owned()));
    }

    let mut journal = Journal::open(&session.state_dir)?;
    let rollback = match &resumed {
        Some(b) => b.rollback.clone(),
        None => {
            let id = format!("{}-rollback", super::run_id());
            journal.append(&Event::RollbackStarted { rollback: id.clone(), run: run.to_owned(), time: journal::now(), to: work.set.installed.clone() })?;
            id
        }
    };
    if record.outcome.is_none() {
        // The interrupted run is given up: `apply` must not resume it over the rollback. (After
        // the rollback's start: the run's own last record bounds what it did.)
        journal.append(&Event::RunFinished {
            run: run.to_owned(),
            time: journal::now(),
            outcome: Outcome::Failed,
            message: Some(format!("rolled back (rollback {rollback})")),
        })?;
    }
    let failed = |stage: &str| {
        let (rollback, run, stage) = (rollback.clone(), run.to_owned(), stage.to_owned());
        move |why: String| UpgradeError::RollbackFailed { rollback, run, stage, why }
    };
    let mut done: Vec<String> = resumed.map(|b| b.stages.into_iter().map(|(s, m)| format!("{s}: {m} (before)")).collect()).unwrap_or_default();
    let mut stage = |name: &str, message: String, journal: &mut Journal| -> Result<(), UpgradeError> {
        ui.log("canup", Level::Info, &format!("rollback: {name}: {message}"));
        journal.append(&Event::RollbackStage { rollback: rollback.clone(), stage: name.to_owned(), time: journal::now(), message: message.clone() })?;
        done.push(format!("{name}: {message}"));
        Ok(())
    };
    if !stages_done.iter().any(|s| s == STAGE_PACKAGES) {
        let message = packages(session, &work, ui.as_ref()).await.map_err(failed(STAGE_PACKAGES))?;
        stage(STAGE_PACKAGES, message, &mut journal)?;
    }
    if !stages_done.iter().any(|s| s == STAGE_FILES) {
        let message = files(session, run, &work.set).map_err(failed(STAGE_FILES))?;
        stage(STAGE_FILES, message, &mut journal)?;
    }
    if !stages_done.iter().any(|s| s == STAGE_DATABASES) {
        let message = databases(session, &work.set, ui.as_ref()).await.map_err(failed(STAGE_DATABASES))?;
        stage(STAGE_DATABASES, message, &mut journal)?;
    }
    ui.log("canup", Level::Info, "rollback: detecting what is installed now:");
    let found = session.detect(ui.clone()).await;
    let verdict = match &found {
        Ok(d) if d.installed == work.set.installed && d.edition == work.set.edition && d.method == work.set.method => Ok(d.clone()),
        Ok(d) => Err(format!("found Canopsis {} ({} edition, {} method)", text(&d.installed), d.edition, d.method)),
        Err(e) => Err(format!("could not tell what is installed: {e}")),
    };
    let (outcome, message) = match &verdict {
        Ok(d) => {
            (Outcome::Succeeded, format!("detection after the rollback found Canopsis {} ({} edition, {} method)", text(&d.installed), d.edition, d.method))
        }
        Err(found) => (Outcome::Unverified, format!("expected Canopsis {}, detection after the rollback {found}", text(&work.set.installed))),
    };
    journal.append(&Event::RollbackFinished { rollback: rollback.clone(), time: journal::now(), outcome, message: Some(message) })?;
    match verdict {
        Ok(verified) => Ok(RollbackSummary { run: run.to_owned(), rollback, done, verified }),
        Err(found) => Err(UpgradeError::RollbackUnverified { rollback, expected: text(&work.set.installed), found }),
    }
}

/// Everything that must hold before the rollback changes anything; the reason otherwise.
async fn check(session: &Session, record: &RunRecord, events: &[Event]) -> Result<Work, String> {
    let dir = session.config.backup_dir();
    let run = &record.run;
    let set = BackupSet::read(&dir, run)
        .map_err(|e| format!("its backup set in {} cannot be read: {e}", dir.join(run).display()))?
        .ok_or_else(|| format!("it has no complete backup set in {} (taken before a run's first change; a run of an older canup, or one stopped before its backups, has none): nothing to roll back from", dir.join(run).display()))?;
    let damaged = set.damaged(&dir);
    if !damaged.is_empty() {
        return Err(format!("its backup set is not what was taken:\n  {}", damaged.join("\n  ")));
    }
    let missing: Vec<String> = set
        .asked
        .iter()
        .filter(|e| !set.dumps.iter().any(|d| &d.endpoint == *e))
        .map(|e| {
            let why = set.not_dumped.iter().find(|n| &n.endpoint == e).map(|n| format!(" ({})", n.why)).unwrap_or_default();
            format!("database {e}, which the run's steps migrate, has no dump{why}")
        })
        .collect();
    if !missing.is_empty() {
        return Err(format!("its backup set is incomplete: old software on migrated data would not run:\n  {}", missing.join("\n  ")));
    }
    if let Some(release) = session.index.releases.iter().find(|r| r.barrier.is_some() && r.version > set.installed && r.version <= record.target)
        && let Some(b) = &release.barrier
    {
        return Err(format!(
            "release {} between {} and {} carries a migration barrier ({}: {}): its data changes are not undone by a dump restore canup can vouch for; follow {}",
            text(&release.version),
            text(&set.installed),
            text(&record.target),
            b.guide,
            b.reason,
            b.url
        ));
    }
    let packages = match set.method {
        Method::Packages => {
            let recorded = read_packages(&dir, &set)?;
            let now = installed_packages(session).await.map_err(|e| format!("listing the installed packages: {e}"))?;
            let changes = PackageChanges::between(&recorded, &now);
            // A package rpm installed after the run's last record and before a rollback of it
            // started was not the run's doing, nor the rollback's.
            let (last, rollback_start) = journal::run_window(events, run);
            let secs = |t: &Option<String>| {
                t.as_deref().and_then(|t| humantime::parse_rfc3339_weak(t).ok()).and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map(|d| d.as_secs())
            };
            if let Some(end) = secs(&last) {
                let until = secs(&rollback_start).unwrap_or(u64::MAX);
                let after: Vec<String> = changes
                    .changed
                    .iter()
                    .map(|(now, _)| now)
                    .chain(&changes.added)
                    .filter(|p| p.installed_at.is_some_and(|t| t > end + 1 && t < until))
                    .map(|p| format!("{}-{}-{}", p.name, p.version, p.release))
                    .collect();
                if !after.is_empty() {
                    return Err(format!(
                        "packages changed after the run's last record ({}): {}; the host is no longer what the run left, and undoing the run would undo that too",
                        last.unwrap_or_default(),
                        after.join(", ")
                    ));
                }
            }
            changes
        }
        _ => PackageChanges::default(),
    };
    Ok(Work { packages, set })
}

fn read_packages(dir: &Path, set: &BackupSet) -> Result<Vec<Package>, String> {
    let Some(saved) = &set.packages else { return Ok(Vec::new()) };
    let path = dir.join(&set.run).join(&saved.file);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(text.lines().filter_map(Package::parse).collect())
}

/// The packages back in one transaction; a package manager that was killed with an earlier
/// rollback holds rpm's lock, and this one waits for it, then finds less or nothing to do.
async fn packages(session: &Session, work: &Work, ui: &dyn Ui) -> Result<String, String> {
    if work.set.packages.is_none() {
        // A Compose installation's software is its images: the files stage puts back the
        // project's files that name them; the containers are the operator's to recreate.
        return Ok("no package list in the set (a Compose installation): no package changed".into());
    }
    let recorded = read_packages(&session.config.backup_dir(), &work.set)?;
    let now = installed_packages(session).await?;
    let changes = PackageChanges::between(&recorded, &now);
    if changes.is_empty() {
        return Ok("the installed packages are those recorded".into());
    }
    let program = if session.sysroot.map(Path::new("/usr/bin/dnf")).exists() { "/usr/bin/dnf" } else { "/usr/bin/yum" };
    let req = ExecRequest {
        program: program.into(),
        args: vec!["-y".into(), "shell".into()],
        stdin: Some(changes.shell_script().into_bytes()),
        ..Default::default()
    };
    ui.log("canup", Level::Info, &format!("rollback: {program} -y shell, in one transaction:\n  {}", changes.describe().join("\n  ")));
    host_command(session, &req, Some(ui)).await?;
    let left = PackageChanges::between(&recorded, &installed_packages(session).await?);
    if !left.is_empty() {
        return Err(format!("{program} shell ended, but these packages are still not as recorded: {}", left.describe().join("; ")));
    }
    Ok(format!("{} packages back as recorded ({program} shell, one transaction): {}", changes.describe().len(), changes.describe().join("; ")))
}

/// The files the run's steps changed (their backups), then each configuration directory's
/// files as the set has them. Files created since in those directories are kept, and said.
fn files(session: &Session, run: &str, set: &BackupSet) -> Result<String, String> {
    // A run whose steps changed no file has no file backups; any other failure stops the stage.
    let mut lines = match crate::restore::restore(&session.state_dir, &session.sysroot, run) {
        Ok(lines) => lines,
        Err(RestoreError::NoBackups { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e.to_string()),
    };
    let run_dir = session.config.backup_dir().join(run);
    for dir in &set.config {
        let mut restored = 0;
        for f in &dir.files {
            let saved = std::fs::read(run_dir.join(&f.saved.file)).map_err(|e| format!("{}: {e}", run_dir.join(&f.saved.file).display()))?;
            let current = cap_fs::read_for_host(&session.sysroot, &f.path, saved.len().max(1 << 20) + 1).ok();
            if current.as_deref() != Some(&saved[..]) {
                cap_fs::restore(&session.sysroot, Path::new(&f.path), Restore::File(&saved, Some(f.mode))).map_err(|e| format!("restoring {}: {e}", f.path))?;
                restored += 1;
            }
        }
        lines.push(format!("{}: {restored} of {} files put back", dir.path, dir.files.len()));
    }
    Ok(if lines.is_empty() { "nothing to put back".into() } else { lines.join("; ") })
}

/// Each dump restored into its database (the endpoint as configured now).
async fn databases(session: &Session, set: &BackupSet, ui: &dyn Ui) -> Result<String, String> {
    let run_dir = session.config.backup_dir().join(&set.run);
    let mut lines = Vec::new();
    for d in &set.dumps {
        let conn = database::resolve(&d.endpoint, &session.config.databases, &session.sysroot).map_err(|e| e.to_string())?;
        let file = run_dir.join(&d.saved.file);
        let inv = database::transfer_invocation(&conn, Transfer::Restore(&file)).map_err(|e| e.to_string())?;
        ui.log("canup", Level::Info, &format!("rollback: restoring {} ({}) from {}", d.endpoint, conn.shown(), file.display()));
        host_command(session, &inv.request, Some(ui)).await.map_err(|e| format!("restoring database {}: {e}", d.endpoint))?;
        lines.push(format!("{} restored from {} ({})", d.endpoint, file.display(), super::backups::size(d.saved.bytes)));
    }
    Ok(if lines.is_empty() { "no dump to restore".into() } else { lines.join("; ") })
}
