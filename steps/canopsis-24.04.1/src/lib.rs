//! Canopsis 24.04.1: information about the alarm lists' columns.
//!
//! The release note warns: « Les bacs à alarmes dont la largeur des colonnes a été
//! redimensionnée manuellement devront être paramétrés à nouveau. » Nothing to run: the
//! widths live in each user's view settings, which only the users can set again. Shown before
//! anything changes, so that the operator can tell the users.

use canup_sdk::{Context, Result, ui};

canup_sdk::export_step!(notice);

fn notice(_: &Context) -> Result<()> {
    ui::info(
        "Canopsis 24.04.1 note: alarm lists (bacs à alarmes) whose column widths were resized by hand must be set again after the update; tell the users who resized them",
    );
    Ok(())
}
