//! The operator's commands: status, plan, apply, history, restore-files.

use std::sync::Arc;

use canup::journal;
use canup::plan::Plan;
use canup::ui::ConsoleUi;
use canup::upgrade::{self, ApplyOptions, Session};
use semver::Version;

use super::args::Output;
use super::print;
use super::progress::ProgressUi;
use super::settings::Settings;
use super::{Failure, usage};

/// `canup apply`'s options.
pub struct Apply {
    pub to: Option<Version>,
    pub yes: bool,
    pub accept_manual: bool,
    pub dry_run: bool,
    pub restart: bool,
    pub strict_checks: bool,
    pub json: bool,
}

/// Opens the verified repository and the sandbox with the apply screen as the steps' UI.
pub(super) async fn session(settings: &Settings, console: ConsoleUi) -> Result<(Session, Arc<ProgressUi>), Failure> {
    let location = settings.repository()?;
    let root = settings.seed_root()?;
    tracing::debug!("configuration read; opening the repository {location}");
    let session = Session::open(settings.config.clone(), settings.sysroot.clone(), location, &root).await?;
    Ok((session, Arc::new(ProgressUi::new(console))))
}

pub async fn status(settings: &Settings, output: Output) -> Result<(), Failure> {
    let (session, progress) = session(settings, ConsoleUi::default()).await?;
    let s = upgrade::status(&session, progress).await?;
    if output.json {
        print::json(&s);
    } else {
        print::status(&s);
    }
    Ok(())
}

pub async fn plan(settings: &Settings, to: Option<&Version>, output: Output) -> Result<(), Failure> {
    let (session, progress) = session(settings, ConsoleUi::default()).await?;
    let detected = session.detect(progress).await?;
    let plan = session.plan(&detected, to)?;
    // Whether the backups fit is known before the maintenance window, too.
    let backups = upgrade::backups::plan(&session, &plan, None).await?;
    let modules = session.prepare(&plan).await?;
    eprintln!("{modules} modules of the plan verified and compiled: `canup apply` will start from them");
    if output.json {
        print::json(&plan);
    } else {
        print::backups(&backups.describe());
        print::plan(&plan, &[], &settings.config.policy);
    }
    Ok(())
}

pub async fn apply(settings: &Settings, a: Apply) -> Result<(), Failure> {
    let console = ConsoleUi { assume_yes: a.yes, accept_manual: a.accept_manual, min_level: None };
    let (session, progress) = session(settings, console).await?;
    let options = ApplyOptions { to: a.to, dry_run: a.dry_run, restart: a.restart, strict_checks: a.strict_checks };
    let confirm = |plan: &Plan, done: &[String], backups: &[String]| {
        if a.json {
            return a.yes || a.dry_run;
        }
        print::backups(backups);
        print::plan(plan, done, &settings.config.policy);
        if !done.is_empty() {
            println!("resuming an interrupted run: {} steps already done are not run again", done.len());
        }
        println!();
        a.yes || a.dry_run || print::ask_yes_no("Apply this plan? [y/N] ")
    };
    let p: Arc<dyn upgrade::Progress> = progress.clone();
    let result = upgrade::apply(&session, &options, p, &confirm).await;
    if a.json {
        print::apply_json(&result, a.dry_run, &session.state_dir, &session.config.backup_dir());
    }
    let summary = result?;
    if !a.json {
        print::apply_summary(&summary, a.dry_run);
    }
    Ok(())
}

pub fn history(settings: &Settings, output: Output) -> Result<(), Failure> {
    let events = journal::Journal::read(&settings.state_dir).map_err(usage)?;
    let runs = journal::runs(&events);
    if output.json {
        print::json(&runs);
    } else {
        print::history(&runs, &settings.state_dir);
    }
    Ok(())
}

pub async fn rollback(settings: &Settings, run: &str, yes: bool, output: Output) -> Result<(), Failure> {
    let console = ConsoleUi { assume_yes: yes, accept_manual: false, min_level: None };
    let (session, progress) = session(settings, console).await?;
    let confirm = |lines: &[String]| {
        if !output.json {
            println!("rollback of run {run}:");
            for l in lines {
                println!("  {l}");
            }
            println!();
        }
        yes || print::ask_yes_no("Roll back, overwriting what is named above? [y/N] ")
    };
    let result = upgrade::rollback::rollback(&session, run, progress, &confirm).await;
    if output.json {
        print::rollback_json(&result, run);
    }
    let summary = result?;
    if !output.json {
        for line in &summary.done {
            println!("{line}");
        }
        println!(
            "rolled back: Canopsis is at {} again, detection after the rollback found it installed (rollback {})",
            canup::version::text(&summary.verified.installed),
            summary.rollback
        );
    }
    Ok(())
}

pub fn restore_files(settings: &Settings, run: &str) -> Result<(), Failure> {
    for line in upgrade::restore_files(&settings.state_dir, &settings.sysroot, run)? {
        println!("{line}");
    }
    Ok(())
}
