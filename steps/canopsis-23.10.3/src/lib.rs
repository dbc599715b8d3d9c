//! Canopsis 23.10.3: optional settings, offered and off unless the operator answers.
//!
//! The release note says: « Les moteurs `engine-che` et `engine-axe` bénéficient d'un nouveau
//! paramètre de lancement : `-workers` » (« Amount of workers to process main event flow
//! (default 10) »), and « Dans le fichier canopsis.toml, un nouveau paramètre est mis à
//! disposition : `EnableArraySortingInEntityInfos` » with « `[Canopsis.alarm]` /
//! `EnableArraySortingInEntityInfos = true` », which sorts string arrays of entity infos.
//!
//! The setting goes to `conf.d/canopsis-override.toml`, where the vendor puts an installation's
//! settings since 4.6.0, never into the package's canopsis.toml.
//!
//! The sorting changes what operators' rules see, so it is asked (`ui.choose`, question
//! `array-sorting`, answerable in canup.toml's `[answers."23.10.3/options"]`) and stays off
//! by default. `-workers` is only told of: the note gives no value to choose other than the
//! default it already runs with.

use canup_sdk::{Context, Result, bail, helpers, ui};

canup_sdk::export_step! {
    "23.10.3/options" => options,
    "23.10.3/options-compose" => options_compose,
}

const KEY: &[&str] = &["Canopsis", "alarm", "EnableArraySortingInEntityInfos"];

/// Whether the operator wants the sorting; `no` first and the default.
fn wants_sorting() -> Result<bool> {
    let chosen = ui::choose(
        "array-sorting",
        "Canopsis 23.10.3 can sort the string arrays of event infos before saving them to entities ([Canopsis.alarm] EnableArraySortingInEntityInfos = true). Enable it?",
        &["no", "yes"],
        0,
    )?;
    Ok(chosen == 1)
}

fn tell_workers() {
    ui::info(
        "Canopsis 23.10.3: engine-che and engine-axe accept -workers N (default 10) to process the main event flow in parallel; add it to their command line if you need more",
    );
}

fn options(_: &Context) -> Result<()> {
    if wants_sorting()? {
        match helpers::set_canopsis_setting(KEY, true)? {
            true => ui::info(&format!("set [Canopsis.alarm] EnableArraySortingInEntityInfos = true in {}", helpers::CANOPSIS_OVERRIDE)),
            false => ui::info(&format!("{} already enables EnableArraySortingInEntityInfos", helpers::CANOPSIS_OVERRIDE)),
        }
    }
    tell_workers();
    Ok(())
}

fn options_compose(_: &Context) -> Result<()> {
    if wants_sorting()?
        && !ui::manual(
            "In the canopsis.toml override your reconfigure service reads, set:\n  [Canopsis.alarm]\n  EnableArraySortingInEntityInfos = true\nthen docker compose up -d reconfigure",
        )
    {
        bail!("the optional setting of Canopsis 23.10.3 was chosen but not confirmed; run canup again once it is set");
    }
    tell_workers();
    Ok(())
}
