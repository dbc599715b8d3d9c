//! `canup policy review`: the grants a plan lacks, shown with the steps that need them, and
//! written on confirmation to a drop-in of their own (see `canup::policy`).
//!
//! Why a drop-in and not canup.toml: the operator's file is theirs (the RPM keeps it across
//! upgrades, comments and all), and a file per review says when and for which plan each grant
//! was accepted, and goes away with `rm`.

use std::path::Path;

use canup::capabilities::CapabilitySet;
use canup::exit::ExitCode;
use canup::plan;
use canup::ui::ConsoleUi;
use canup::upgrade::UpgradeError;
use semver::Version;

use super::operate::session;
use super::settings::Settings;
use super::{Failure, print, usage};

pub async fn review(settings: &Settings, to: Option<&Version>, yes: bool) -> Result<(), Failure> {
    let (session, progress) = session(settings, ConsoleUi::default()).await?;
    let detected = session.detect(progress).await?;
    let plan = session.unadmitted_plan(&detected, to)?;
    let target = canup::version::text(&plan.target);
    let policy = &settings.config.policy;
    let missing = plan::missing_grants(&plan, policy);
    if missing.is_empty() {
        println!("the policy already grants every step of the plan to Canopsis {target} what it declares: nothing to review");
        return Ok(());
    }
    let deny = &settings.config.deny;
    let mut grants = CapabilitySet::default();
    let mut refused = Vec::new();
    let mut header = vec![
        format!("Granted with `canup policy review` on {} for the plan", humantime::format_rfc3339_seconds(std::time::SystemTime::now())),
        format!("Canopsis {} → {target} ({} edition, {} method), for these steps:", canup::version::text(&plan.installed), plan.edition, plan.method),
    ];
    let files: Vec<String> = settings.config.sources.files.iter().map(|f| f.display().to_string()).collect();
    println!("the policy is canup.toml's [policy] with {}", if files.is_empty() { "no other file".to_owned() } else { files.join(", ") });
    println!("the plan to Canopsis {target} needs grants the policy lacks:");
    for (p, needed) in &missing {
        let m = &p.step.manifest;
        let (grantable, denied) = deny.split(needed);
        println!("  step {} (release {}): {}", m.id, canup::version::text(&p.release), m.description);
        for line in grantable.describe() {
            println!("      grant: {line}");
        }
        for line in denied.describe() {
            println!("      refused by [deny] in canup.toml, never granted: {line}");
            refused.push(format!("step {} needs {line}", m.id));
        }
        if !grantable.is_empty() {
            header.push(format!("  {}: {}", m.id, grantable.describe().join("; ")));
        }
        grants.add(&grantable);
    }
    if grants.is_empty() {
        return Err(Failure::new(
            ExitCode::Admission,
            anyhow::anyhow!("every grant the plan lacks is refused by [deny] in canup.toml: {}", refused.join("; ")),
        ));
    }
    // Named by target and time: one file per review, in the order they were made.
    let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string().replace([':', '-'], "");
    let file = settings.config.sources.drop_in_dir.join(format!("review-{stamp}-{target}.toml"));
    let count = grants.describe().len();
    if !yes && !print::ask_yes_no(&format!("Write these {count} grants to {}? canup.toml is not changed. [y/N] ", file.display())) {
        return Err(UpgradeError::Declined.into());
    }
    let text = canup::policy::drop_in_text(&grants, &header).map_err(usage)?;
    write_new(&file, &text).map_err(|e| Failure::new(ExitCode::Usage, anyhow::anyhow!("cannot write {}: {e}; nothing was granted", file.display())))?;
    // What the next plan will see: the policy with the file read back.
    let mut after = policy.clone();
    after.add(&deny.applied_to(&grants));
    match plan::admit(&plan, &after) {
        Ok(()) => println!("wrote {count} grants to {}; the plan to Canopsis {target} is now admitted (canup.toml unchanged)", file.display()),
        Err(still) => {
            println!("wrote {count} grants to {} (canup.toml unchanged)", file.display());
            return Err(Failure::new(ExitCode::Admission, anyhow::anyhow!("the plan is still refused:\n  {}", still.join("\n  "))));
        }
    }
    Ok(())
}

/// A new file, written whole or not at all and durably (`canup::durable`), in a directory
/// created if missing; an earlier review's file of the same name is never replaced.
fn write_new(path: &Path, text: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(path.parent().unwrap_or(Path::new("/")))?;
    if path.exists() {
        return Err(std::io::Error::new(std::io::ErrorKind::AlreadyExists, "a review of the same second wrote it; run the review again"));
    }
    canup::durable::atomic_replace(path, text.as_bytes())
}
