//! Detection of what is installed, shipped with every release from 3.x to 23.10.
//!
//! The installed version comes from `/opt/canopsis/VERSION.txt` (« Canopsis version 3.38.0 »),
//! cross-checked with `rpm -q canopsis-core` for a package install or with
//! `CANOPSIS_IMAGE_TAG` in the Compose `.env`; a disagreement is an error naming both values.
//! The edition is `cat` when `canopsis-cat` is installed (or `CPS_EDITION=cat`, from 22.10 `pro`,
//! in the `.env`).

use canup_sdk::{Context, Result, bail, detect, exec::Command, fs, ui};

canup_sdk::export_step!(detect_installation);

const VERSION_TXT: &str = "/opt/canopsis/VERSION.txt";
const COMPOSE_ENV: &str = "/opt/canopsis/docker/.env";

/// `canopsis-core-3.38.0-1.el7.x86_64` → `3.38.0`, or `None` when not installed.
fn rpm_version(package: &str) -> Result<Option<String>> {
    let out = Command::new("/usr/bin/rpm").args(["-q", package]).output()?;
    if !out.success() {
        return Ok(None);
    }
    let text = out.stdout_text();
    let rest = text.trim().strip_prefix(&format!("{package}-")).unwrap_or_default();
    Ok(rest.split('-').next().filter(|v| !v.is_empty()).map(str::to_owned))
}

fn env_value(env: &str, key: &str) -> Option<String> {
    env.lines().find_map(|l| l.trim().strip_prefix(key)?.strip_prefix('=').map(|v| v.trim().trim_matches('"').to_owned()))
}

fn detect_installation(_: &Context) -> Result<()> {
    let text = fs::read_to_string(VERSION_TXT)?;
    let from_file = text.trim().trim_start_matches("Canopsis version").trim().to_owned();
    if from_file.is_empty() {
        bail!("{VERSION_TXT} does not name a version: {text:?}");
    }
    let (method, edition, other, source) = if fs::exists(COMPOSE_ENV)? {
        let env = fs::read_to_string(COMPOSE_ENV)?;
        let tag = env_value(&env, "CANOPSIS_IMAGE_TAG").ok_or_else(|| canup_sdk::Error::msg(format!("{COMPOSE_ENV} has no CANOPSIS_IMAGE_TAG")))?;
        // 22.10's Compose files name the editions `community` and `pro` (`CPS_EDITION=pro`).
        let edition = match env_value(&env, "CPS_EDITION").as_deref() {
            Some("cat" | "pro") => "cat".to_owned(),
            _ => "core".to_owned(),
        };
        ("compose", edition, tag, format!("CANOPSIS_IMAGE_TAG in {COMPOSE_ENV}"))
    } else {
        let core = rpm_version("canopsis-core")?
            .ok_or_else(|| canup_sdk::Error::msg("neither a Compose .env nor the canopsis-core package: is Canopsis installed?"))?;
        let edition = if rpm_version("canopsis-cat")?.is_some() { "cat" } else { "core" };
        ("packages", edition.to_owned(), core, "rpm -q canopsis-core".to_owned())
    };
    if other != from_file {
        bail!("{VERSION_TXT} says {from_file} but {source} says {other}; repair the installation before upgrading");
    }
    ui::info(&format!("Canopsis {from_file}, {edition} edition, {method} install"));
    detect::report(&from_file, &edition, method)
}
