//! Canopsis 23.04.7: a new canopsis.toml parameter, before the update: the procedure runs
//! `canopsis-reconfigure` « après avoir pris en compte toute éventuelle remarque des notes de
//! version au sujet du fichier `canopsis.toml` ».
//!
//! The release note says: « Un bug a nécessité l'ajout d'un paramètre dans le fichier de
//! configuration canopsis.toml. Le paramètre permet de définir le temps d'export maximum
//! autorisé. » with « `[Canopsis.api]` / `ExportMongoClientTimeout = "1m"` ».
//!
//! The key is added only when missing: an operator who already set it keeps their value, and
//! the file keeps its comments and layout (toml_edit). On Compose the file the reconfigure
//! service reads is the operator's override, in a volume canup does not own: a manual
//! instruction.

use canup_sdk::{Context, Result, bail, helpers, ui};

canup_sdk::export_step! {
    "23.04.7/export-timeout" => export_timeout,
    "23.04.7/export-timeout-compose" => export_timeout_compose,
}

const CANOPSIS_TOML: &str = "/opt/canopsis/etc/canopsis.toml";
const KEY: &[&str] = &["Canopsis", "api", "ExportMongoClientTimeout"];

fn export_timeout(_: &Context) -> Result<()> {
    match helpers::add_toml_key(CANOPSIS_TOML, KEY, "1m")? {
        true => ui::info(&format!("added [Canopsis.api] ExportMongoClientTimeout = \"1m\" to {CANOPSIS_TOML}")),
        false => ui::info(&format!("{CANOPSIS_TOML} already sets [Canopsis.api] ExportMongoClientTimeout: kept")),
    }
    Ok(())
}

fn export_timeout_compose(_: &Context) -> Result<()> {
    if !ui::manual(
        "In the canopsis.toml override your reconfigure service reads, add:\n  [Canopsis.api]\n  ExportMongoClientTimeout = \"1m\"\n(unless you already set it), then docker compose up -d reconfigure",
    ) {
        bail!("the canopsis.toml parameter of Canopsis 23.04.7 was not confirmed; run canup again once it is set");
    }
    Ok(())
}
