//! Canopsis 4.5.7, post-update.
//!
//! The release note says: « la correction du bug (#4292) nécessite à nouveau l'exécution des scripts `016_add_snooze_and_pbehavior_durations_to_alarm.js` livré dans le répertoire `release4.4` [et] `000_add_pbehavior_info_to_entity.js` livré dans le répertoire `release4.5` ».
//!
//! The scripts run in the note's order through `mongo` with the installation's own
//! connection URL; they are written to be run again safely (the notes themselves have
//! `016_…` run by three successive releases). Compose: shown as a manual instruction.

use canup_sdk::{Context, Result, helpers};

canup_sdk::export_step! {
    "4.5.7/mongodb-migrations" => migrations,
    "4.5.7/mongodb-migrations-compose" => migrations_compose,
}

const SCRIPTS: &[&str] = &["release4.4/016_add_snooze_and_pbehavior_durations_to_alarm.js", "release4.5/000_add_pbehavior_info_to_entity.js"];

fn migrations(_: &Context) -> Result<()> {
    helpers::run_mongo_scripts(SCRIPTS)
}

fn migrations_compose(_: &Context) -> Result<()> {
    helpers::mongo_scripts_manual("4.5", SCRIPTS)
}
