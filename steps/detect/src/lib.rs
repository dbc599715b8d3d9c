//! Detection of what is installed, shipped with every release from 3.x to 24.04.
//!
//! A package install is read from the rpm database: every installed Canopsis package (`rpm -qa
//! 'canopsis*'`), whatever its era calls it (facts/canopsis.toml): `canopsis-core` (CentOS 7),
//! `canopsis` (RHEL 8 and 9, Community) or `canopsis-pro` (Pro) is the installation's main
//! package and gives the version (one `rpm -qa` query gives every package's version and
//! requirements); the edition is Pro when `canopsis-cat` or `canopsis-pro` is
//! installed. The installation is at the version of its oldest package among the main ones,
//! those the installation guides install beside them (the engines, the web UI) and whatever
//! those require (`canopsis-common` from 23.04.7 on RHEL 8): an update that left
//! `canopsis-webui` behind is not the target, and detection names it. A package nothing needs
//! any more (23.04's `canopsis-common` after 23.10) is not counted.
//!
//! `/opt/canopsis/VERSION.txt`, where the package ships it (CentOS 7) or the containers write it
//! (Compose), is cross-checked; a Compose install is read from `CANOPSIS_IMAGE_TAG` in its
//! `.env`. A disagreement is an error naming both values.

use canup_sdk::{Context, Error, Result, bail, detect, fs, helpers, ui};

canup_sdk::export_step!(detect_installation);

const VERSION_TXT: &str = "/opt/canopsis/VERSION.txt";
const COMPOSE_ENV: &str = "/opt/canopsis/docker/.env";

/// The main package of each era and edition, in the order detection takes the version from.
const MAIN: &[&str] = &["canopsis-pro", "canopsis", "canopsis-core"];
/// What the installation guides install beside the main package, in every era.
const INSTALLED_BY_GUIDES: &[&str] = &["canopsis-cat", "canopsis-engines-go", "canopsis-engines-go-cat", "canopsis-webui"];
/// Pro's packages.
const PRO: &[&str] = &["canopsis-cat", "canopsis-pro"];

fn env_value(env: &str, key: &str) -> Option<String> {
    env.lines().find_map(|l| l.trim().strip_prefix(key)?.strip_prefix('=').map(|v| v.trim().trim_matches('"').to_owned()))
}

/// (version, edition, whether every counted package is at that version) of a package install.
fn from_packages() -> Result<(String, String, bool)> {
    let installed = helpers::installed_canopsis_packages()?;
    let package = |name: &str| installed.iter().find(|p| p.name == name);
    let version_of = |name: &str| package(name).map(|p| p.version.clone());
    let (main, version) = MAIN
        .iter()
        .find_map(|m| version_of(m).map(|v| (*m, v)))
        .ok_or_else(|| Error::msg("neither a Compose .env nor a Canopsis package (canopsis-core, canopsis, canopsis-pro): is Canopsis installed?"))?;
    let edition = if PRO.iter().any(|p| version_of(p).is_some()) { "cat" } else { "core" };
    // The installation's packages: the main one, those the guides install, and what they
    // require, transitively.
    let mut counted: Vec<String> = Vec::new();
    let mut queue: Vec<String> =
        std::iter::once(main).chain(INSTALLED_BY_GUIDES.iter().copied()).filter(|n| version_of(n).is_some()).map(str::to_owned).collect();
    while let Some(name) = queue.pop() {
        if counted.contains(&name) || package(&name).is_none() {
            continue;
        }
        queue.extend(package(&name).map(|p| p.requires.clone()).unwrap_or_default());
        counted.push(name);
    }
    counted.sort();
    let behind: Vec<String> = counted.iter().filter_map(|n| version_of(n).filter(|v| *v != version).map(|v| format!("{n} is at {v}"))).collect();
    if behind.is_empty() {
        return Ok((version, edition.to_owned(), true));
    }
    // A package past the main one went past what was installed or asked for (a requirement
    // the resolver took at its newest): no version describes this installation.
    let parse = |v: &str| canup_sdk::context::parse_version(v);
    let ahead: Vec<String> = counted.iter().filter_map(|n| version_of(n).filter(|v| parse(v) > parse(&version)).map(|v| format!("{n} is at {v}"))).collect();
    if !ahead.is_empty() {
        bail!(
            "the Canopsis packages disagree: {main} is at {version} but {}; bring them to one version (yum|dnf downgrade or update of those packages) before running canup",
            ahead.join(", ")
        );
    }
    // The oldest package says what the installation is.
    let oldest = counted.iter().filter_map(|n| version_of(n)).min_by_key(|v| parse(v)).unwrap_or_else(|| version.clone());
    ui::warn(&format!(
        "the Canopsis packages disagree: {main} is at {version} but {}; the installation counts as {oldest} until every package is at one version",
        behind.join(", ")
    ));
    Ok((oldest, edition.to_owned(), false))
}

fn detect_installation(_: &Context) -> Result<()> {
    let (method, installed, edition) = if fs::exists(COMPOSE_ENV)? {
        let env = fs::read_to_string(COMPOSE_ENV)?;
        let tag = env_value(&env, "CANOPSIS_IMAGE_TAG").ok_or_else(|| Error::msg(format!("{COMPOSE_ENV} has no CANOPSIS_IMAGE_TAG")))?;
        // 22.10's Compose files name the editions `community` and `pro` (`CPS_EDITION=pro`).
        let edition = match env_value(&env, "CPS_EDITION").as_deref() {
            Some("cat" | "pro") => "cat".to_owned(),
            _ => "core".to_owned(),
        };
        check_version_txt(&tag, &format!("CANOPSIS_IMAGE_TAG in {COMPOSE_ENV}"))?;
        ("compose", tag, edition)
    } else {
        let (version, edition, agreed) = from_packages()?;
        if agreed {
            check_version_txt(&version, "rpm -qa 'canopsis*'")?;
        }
        ("packages", version, edition)
    };
    ui::info(&format!("Canopsis {installed}, {edition} edition, {method} install"));
    detect::report(&installed, &edition, method)
}

/// VERSION.txt, where there is one, must say `version`.
fn check_version_txt(version: &str, source: &str) -> Result<()> {
    if !fs::exists(VERSION_TXT)? {
        return Ok(());
    }
    let text = fs::read_to_string(VERSION_TXT)?;
    let from_file = text.trim().trim_start_matches("Canopsis version").trim().to_owned();
    if from_file.is_empty() {
        bail!("{VERSION_TXT} does not name a version: {text:?}");
    }
    if from_file != version {
        bail!("{VERSION_TXT} says {from_file} but {source} says {version}; repair the installation before upgrading");
    }
    Ok(())
}
