//! Canopsis 23.10.6: information about a migration error of 23.10.5.
//!
//! The release note says: « Une erreur de migration vers la version 23.10.5 a été repérée.
//! Elle mène au message d'erreur suivant ERROR: there is no unique or exclusion constraint
//! matching the ON CONFLICT specification. La version 23.10.6 corrige ce problème. Si
//! toutefois vous le rencontriez, faites appel à notre service de support. »
//!
//! Nothing to run. Shown in the preflight phase, before anything changes, so that an operator
//! whose upgrade goes through 23.10.5 knows what the error means and whom to call.

use canup_sdk::{Context, Result, ui};

canup_sdk::export_step!(notice);

fn notice(ctx: &Context) -> Result<()> {
    let through = if ctx.installed < canup_sdk::semver::Version::new(23, 10, 5) { " (this upgrade goes through 23.10.5)" } else { "" };
    ui::info(&format!(
        "Canopsis 23.10.6 note{through}: if canopsis-reconfigure stops with « ERROR: there is no unique or exclusion constraint matching the ON CONFLICT specification » while migrating to 23.10.5, 23.10.6 fixes it; if you still meet it, contact Canopsis support before running canup again"
    ));
    Ok(())
}
