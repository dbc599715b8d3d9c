//! Canopsis 3.37.0, post-update.
//!
//! The release note says: « vous devez vous assurer que ce nouveau paramètre est bien présent :
//! `grep -q ^CancelAutosolveDelay /opt/canopsis/etc/default_configuration.toml || echo
//! 'CancelAutosolveDelay = "1h"' >> /opt/canopsis/etc/default_configuration.toml` » and, in
//! Docker, « redémarrez votre environnement Docker avec `docker-compose down` et
//! `docker-compose up -d` ». On packages the engines are restarted by the standard
//! procedure's finalize phase; in Compose the file lives in the operator's own volume, so the
//! step shows the instruction.

use canup_sdk::{Context, Result, bail, helpers, ui};

canup_sdk::export_step! {
    "3.37.0/cancel-autosolve-delay" => run,
    "3.37.0/cancel-autosolve-delay-compose" => compose,
}

fn compose(_: &Context) -> Result<()> {
    let instruction = "In the default_configuration.toml your engines use, make sure this line exists:\n  CancelAutosolveDelay = \"1h\"\nthen run `docker-compose down` and `docker-compose up -d`.";
    if !ui::manual(instruction) {
        bail!("the CancelAutosolveDelay setting of Canopsis 3.37.0 was not confirmed; run canup again once it is in place");
    }
    Ok(())
}

fn run(_: &Context) -> Result<()> {
    let conf = "/opt/canopsis/etc/default_configuration.toml";
    if helpers::ensure_line(conf, "CancelAutosolveDelay", "CancelAutosolveDelay = \"1h\"")? {
        ui::info("added CancelAutosolveDelay = \"1h\"");
    }
    Ok(())
}
