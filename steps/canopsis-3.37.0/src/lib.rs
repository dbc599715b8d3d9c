//! Canopsis 3.37.0, post-update.
//!
//! The release note says: « vous devez vous assurer que ce nouveau paramètre est bien présent :
//! `grep -q ^CancelAutosolveDelay /opt/canopsis/etc/default_configuration.toml || echo
//! 'CancelAutosolveDelay = "1h"' >> /opt/canopsis/etc/default_configuration.toml` ». The
//! engines are restarted by the standard procedure's finalize phase.

use canup_sdk::{Context, Result, helpers, ui};

canup_sdk::export_step!(run);

fn run(_: &Context) -> Result<()> {
    let conf = "/opt/canopsis/etc/default_configuration.toml";
    if helpers::ensure_line(conf, "CancelAutosolveDelay", "CancelAutosolveDelay = \"1h\"")? {
        ui::info("added CancelAutosolveDelay = \"1h\"");
    }
    Ok(())
}
