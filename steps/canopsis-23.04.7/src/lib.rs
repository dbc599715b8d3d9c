//! Canopsis 23.04.7: a new canopsis.toml parameter, before the update: the procedure runs
//! `canopsis-reconfigure` « après avoir pris en compte toute éventuelle remarque des notes de
//! version au sujet du fichier `canopsis.toml` ».
//!
//! The release note says: « Un bug a nécessité l'ajout d'un paramètre dans le fichier de
//! configuration canopsis.toml. Le paramètre permet de définir le temps d'export maximum
//! autorisé. » with « `[Canopsis.api]` / `ExportMongoClientTimeout = "1m"` ».
//!
//! The key goes where the vendor puts an installation's settings since 4.6.0,
//! `conf.d/canopsis-override.toml` (which the procedure's `canopsis-reconfigure -override`
//! reads), never into the package's canopsis.toml, which the update may replace; it is added
//! only when neither file sets it, so an operator's own value is kept, and the override keeps
//! its comments and layout (toml_edit). On Compose the override lives in a volume canup does
//! not own: a manual instruction.

use canup_sdk::{Context, Result, bail, helpers, ui};

canup_sdk::export_step! {
    "23.04.7/export-timeout" => export_timeout,
    "23.04.7/export-timeout-compose" => export_timeout_compose,
}

const KEY: &[&str] = &["Canopsis", "api", "ExportMongoClientTimeout"];

fn export_timeout(_: &Context) -> Result<()> {
    match helpers::add_canopsis_setting(KEY, "1m")? {
        true => ui::info(&format!("added [Canopsis.api] ExportMongoClientTimeout = \"1m\" to {}", helpers::CANOPSIS_OVERRIDE)),
        false => ui::info("canopsis.toml or its override already sets [Canopsis.api] ExportMongoClientTimeout: kept"),
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
