//! Canopsis 22.10.3: a long migration, announced before the downtime.
//!
//! The release note says: « Un script de migration des structures de comportements
//! périodiques dans les alarmes sera exécuté au moment du lancement de `canopsis-reconfigure`.
//! En fonction du nombre d'alarmes sous comportement périodique, le temps d'exécution peut
//! être plus ou moins long. »
//!
//! Nothing to run: the migration is part of `canopsis-reconfigure` (the standard procedure).
//! What the operator needs is to know before the services stop, so the step runs in the
//! preflight phase and asks whether to start now; an unattended run (`--yes`) goes on.

use canup_sdk::{Context, Result, bail, ui};

canup_sdk::export_step!(notice);

fn notice(ctx: &Context) -> Result<()> {
    let reconfigure = if ctx.method == "compose" { "the reconfigure service" } else { "canopsis-reconfigure" };
    ui::warn(&format!(
        "Canopsis 22.10.3 migrates the periodic behaviours stored in alarms when {reconfigure} runs: the more alarms under a periodic behaviour, the longer the service interruption"
    ));
    if !ui::confirm("Start the upgrade now, with a service interruption that may be long?") {
        bail!("not started: plan the interruption, then run canup apply again");
    }
    Ok(())
}
