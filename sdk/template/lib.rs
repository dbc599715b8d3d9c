//! The steps of Canopsis {release}: what its release note asks, one function per action.

use canup_sdk::{Context, Result, helpers, ui};

canup_sdk::export_step!(run);

/// An example to replace with the note's first action: a setting added to the engines'
/// configuration, the operator's comments and values kept. Like every step, running it again
/// changes nothing (canup runs an interrupted step again on resume).
fn run(ctx: &Context) -> Result<()> {
    let file = "/opt/canopsis/etc/default_configuration.toml";
    if helpers::set_toml_key(file, &["Canopsis", "global", "ReconnectRetries"], 3i64)? {
        ui::info(&format!("{file}: set [Canopsis.global] ReconnectRetries = 3 for Canopsis {}", ctx.target));
    } else {
        ui::info(&format!("{file}: ReconnectRetries is already 3"));
    }
    Ok(())
}
