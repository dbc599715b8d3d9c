//! The MongoDB migration scripts of the 4.5.x notes, post-update.
//!
//! Three notes ask for scripts shipped in `/opt/canopsis/share/migrations/mongodb`:
//! - 4.5.5: « la correction du bug (#4292) ne sera effective qu'après exécution des scripts `016_add_snooze_and_pbehavior_durations_to_alarm.js` livré dans le répertoire `release4.4` [et] `008_add_multiple_executions_to_job.js` livré dans le répertoire `release4.5` » : `cd /opt/canopsis/share/migrations/mongodb/release4.4; mongo -u cpsmongo -p canopsis canopsis < 016_add_snooze_and_pbehavior_durations_to_alarm.js`, then `release4.5/008_add_multiple_executions_to_job.js`.
//! - 4.5.6: « la correction du bug (#4292) nécessite à nouveau l'exécution du script `016_add_snooze_and_pbehavior_durations_to_alarm.js` livré dans le répertoire `release4.4` ».
//! - 4.5.7: « la correction du bug (#4292) nécessite à nouveau l'exécution des scripts `016_add_snooze_and_pbehavior_durations_to_alarm.js` livré dans le répertoire `release4.4` [et] `000_add_pbehavior_info_to_entity.js` livré dans le répertoire `release4.5` ».
//!
//! One step serves the three: each release's signed data `mongodb/scripts` lists its scripts
//! in the note's order, so a release that needs scripts ships a data file, not a crate. The
//! scripts run through `mongo` with the installation's own connection URL; they are written
//! to be run again safely (the notes themselves have `016_…` run by three releases). Compose:
//! shown as a manual instruction.

use canup_sdk::{Context, Result, bail, context, helpers};

canup_sdk::export_step! {
    "mongodb-scripts" => scripts,
    "mongodb-scripts-compose" => scripts_compose,
}

const LIST: &str = "mongodb/scripts";

/// The release's scripts, checked to stay under the migrations directory.
fn listed(ctx: &Context) -> Result<Vec<String>> {
    let text = String::from_utf8(context::data(LIST)?).map_err(|_| canup_sdk::Error::msg(format!("{LIST} of release {} is not UTF-8", ctx.release)))?;
    let scripts: Vec<String> = text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_owned).collect();
    if scripts.is_empty() {
        bail!("release {} lists no MongoDB script in {LIST}: the vendor's publication is incomplete", ctx.release);
    }
    if let Some(bad) = scripts.iter().find(|s| s.starts_with('/') || s.split('/').any(|p| p == "..")) {
        bail!("release {} lists {bad:?} in {LIST}: scripts are paths under {}", ctx.release, helpers::MONGO_MIGRATIONS);
    }
    Ok(scripts)
}

fn scripts(ctx: &Context) -> Result<()> {
    let scripts = listed(ctx)?;
    helpers::run_mongo_scripts(&scripts.iter().map(String::as_str).collect::<Vec<_>>())
}

fn scripts_compose(ctx: &Context) -> Result<()> {
    let scripts = listed(ctx)?;
    let branch = format!("{}.{}", ctx.release.major, ctx.release.minor);
    helpers::mongo_scripts_manual(&branch, &scripts.iter().map(String::as_str).collect::<Vec<_>>())
}
