//! The standard upgrade procedure of Canopsis 3.x (`mise-a-jour-3.x.md`), shipped with every
//! 3.x release, and the detection of what is installed.
//!
//! The procedure says: « Sur un environnement CentOS : `yum update` », then « `su - canopsis
//! -c "canopsinit --canopsis-edition cat --canopsis-stack go"` », « `systemctl daemon-reload` »
//! and « `canoctl restart` ». The update is pinned to exactly the target version, never
//! "latest". For Docker Compose the files are resynchronised with the target's reference and
//! `docker-compose up -d` restarts the stack.

use canup_sdk::{Context, Result, bail, detect, exec::Command, fs, ui};

canup_sdk::export_step! {
    "procedure-3.x/detect" => detect_installation,
    "procedure-3.x/yum-update" => yum_update,
    "procedure-3.x/canopsinit" => canopsinit,
    "procedure-3.x/compose-update" => compose_update,
}

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
        let edition = env_value(&env, "CPS_EDITION").unwrap_or_else(|| "core".into());
        ("compose", edition, tag, format!("CANOPSIS_IMAGE_TAG in {COMPOSE_ENV}"))
    } else {
        let core = rpm_version("canopsis-core")?.ok_or_else(|| canup_sdk::Error::msg("neither a Compose .env nor the canopsis-core package: is Canopsis installed?"))?;
        let edition = if rpm_version("canopsis-cat")?.is_some() { "cat" } else { "core" };
        ("packages", edition.to_owned(), core, "rpm -q canopsis-core".to_owned())
    };
    if other != from_file {
        bail!("{VERSION_TXT} says {from_file} but {source} says {other}; repair the installation before upgrading");
    }
    ui::info(&format!("Canopsis {from_file}, {edition} edition, {method} install"));
    detect::report(&from_file, &edition, method)
}

fn yum_update(ctx: &Context) -> Result<()> {
    let mut packages = vec![format!("canopsis-core-{}", ctx.target)];
    if ctx.edition == "cat" {
        packages.push(format!("canopsis-cat-{}", ctx.target));
    }
    Command::new("/usr/bin/yum").args(["update", "-y"]).args(packages).run()?;
    Ok(())
}

fn canopsinit(ctx: &Context) -> Result<()> {
    let edition = match ctx.edition.as_str() {
        e @ ("core" | "cat") => e,
        other => bail!("unknown edition {other:?}"),
    };
    Command::new("/usr/bin/su").args(["-", "canopsis", "-c", &format!("canopsinit --canopsis-edition {edition} --canopsis-stack go")]).run()?;
    Command::new("/usr/bin/systemctl").arg("daemon-reload").run()?;
    Command::new("/usr/bin/canoctl").arg("restart").run()?;
    Ok(())
}

/// Only the image tag changes; every other value of the operator's .env is kept.
fn set_env_value(env: &str, key: &str, value: &str) -> String {
    let mut found = false;
    let mut out: Vec<String> = env
        .lines()
        .map(|l| match l.split_once('=') {
            Some((k, _)) if k.trim() == key => {
                found = true;
                format!("{key}={value}")
            }
            _ => l.to_owned(),
        })
        .collect();
    if !found {
        out.push(format!("{key}={value}"));
    }
    out.join("\n") + "\n"
}

fn compose_update(ctx: &Context) -> Result<()> {
    let env = fs::read_to_string(COMPOSE_ENV)?;
    let updated = set_env_value(&env, "CANOPSIS_IMAGE_TAG", &ctx.target.to_string());
    if updated != env {
        fs::write(COMPOSE_ENV, updated)?;
    }
    Command::new("/usr/bin/docker-compose").args(["up", "-d"]).cwd("/opt/canopsis/docker").run()?;
    Ok(())
}
