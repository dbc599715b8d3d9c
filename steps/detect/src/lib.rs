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
//! any more (23.04's `canopsis-common` after 23.10) is not counted. `/opt/canopsis/VERSION.txt`,
//! where the package ships it (CentOS 7), is cross-checked.
//!
//! A Compose install is the project in `compose_dir` (canup.toml; the guides name no
//! directory): `CANOPSIS_IMAGE_TAG` of its `.env`, cross-checked with the images the running
//! containers of that project run (`docker ps`, Compose's working-directory label). Containers
//! of Canopsis started from another directory mean `compose_dir` is wrong, and detection says
//! which directory they name. The edition is Pro when the `.env` says `CPS_EDITION=pro|cat`,
//! when an image comes from the Pro paths (`…/pro/…`, `…-cat`), or when the project has the Pro
//! env file (`pro.env`, which `${CPS_EDITION}.env` names).
//!
//! A disagreement is an error naming both values.

use canup_sdk::{Context, Error, Result, bail, detect, fs, helpers, ui};

canup_sdk::export_step!(detect_installation);

const VERSION_TXT: &str = "/opt/canopsis/VERSION.txt";
/// What `docker ps` prints per container: its image and the project directory Compose
/// labelled it with, tab-separated (docker reads the `\t` escape itself).
pub const PS_FORMAT: &str = "{{.Image}}\\t{{.Label \"com.docker.compose.project.working_dir\"}}";

/// The main package of each era and edition, in the order detection takes the version from.
const MAIN: &[&str] = &["canopsis-pro", "canopsis", "canopsis-core"];
/// What the installation guides install beside the main package, in every era.
const INSTALLED_BY_GUIDES: &[&str] = &["canopsis-cat", "canopsis-engines-go", "canopsis-engines-go-cat", "canopsis-webui"];
/// Pro's packages.
const PRO: &[&str] = &["canopsis-cat", "canopsis-pro"];

/// A variable of a dotenv text as Compose reads it: the last assignment, quotes removed.
fn env_value(env: &str, key: &str) -> Option<String> {
    canup_sdk::resync::env_entries(env).into_iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.trim_matches(['"', '\'']).to_owned())
}

/// (version, edition, whether every counted package is at that version) of a package install.
fn from_packages() -> Result<(String, String, bool)> {
    let installed = helpers::installed_canopsis_packages()?;
    let package = |name: &str| installed.iter().find(|p| p.name == name);
    let version_of = |name: &str| package(name).map(|p| p.version.clone());
    let (main, version) = MAIN
        .iter()
        .find_map(|m| version_of(m).map(|v| (*m, v)))
        .ok_or_else(|| {
            Error::msg(format!(
                "neither a Compose project in compose_dir {} (no .env) nor a Canopsis package (canopsis-core, canopsis, canopsis-pro): is Canopsis installed, and is compose_dir in canup.toml right?",
                helpers::compose_dir()
            ))
        })?;
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

/// The Canopsis images of running containers: (image, project directory).
fn running_images() -> Result<Vec<(String, String)>> {
    let out = canup_sdk::exec::Command::new("/usr/bin/docker").args(["ps", "--format", PS_FORMAT]).run()?;
    Ok(out
        .stdout_text()
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .filter(|(image, _)| image.contains("canopsis"))
        .map(|(i, d)| (i.trim().to_owned(), d.trim().to_owned()))
        .collect())
}

/// Whether an image is one of Pro's: its path or name says so.
fn pro_image(image: &str) -> bool {
    let name = image.rsplit_once(':').map_or(image, |(n, _)| n);
    name.contains("/pro/") || name.contains("canopsis-pro/") || name.ends_with("-cat")
}

/// (version, edition) of the Compose project in `dir`.
fn from_compose(dir: &str) -> Result<(String, String)> {
    let env_path = format!("{dir}/.env");
    let env = fs::read_to_string(&env_path)?;
    let tag = env_value(&env, "CANOPSIS_IMAGE_TAG").ok_or_else(|| {
        Error::msg(format!(
            "{env_path} has no CANOPSIS_IMAGE_TAG, which the Canopsis images' tag comes from; put back the line of your release (CANOPSIS_IMAGE_TAG=…), or set compose_dir in canup.toml if the project is elsewhere"
        ))
    })?;
    let images = running_images()?;
    let here: Vec<(String, String)> = images.iter().filter(|(_, d)| d == dir).cloned().collect();
    if here.is_empty() {
        if let Some((image, elsewhere)) = images.iter().find(|(_, d)| !d.is_empty()) {
            bail!(
                "the Canopsis containers were started from {elsewhere} (Compose's label on {image}), not from compose_dir {dir}; set compose_dir = \"{elsewhere}\" in canup.toml"
            );
        }
        // A stray .env on a packages host must not turn it into a Compose one.
        let packages = helpers::installed_canopsis_packages().unwrap_or_default();
        if let Some(p) = packages.first() {
            bail!(
                "{env_path} exists but no Canopsis container runs, and Canopsis is installed by packages ({} {}): remove or move {env_path} if the host is a packages install, or start the Compose project (docker compose up -d in {dir}); then run canup again",
                p.name,
                p.version
            );
        }
        ui::warn(&format!("no Canopsis container of {dir} is running (docker ps): the version is {env_path}'s alone"));
    } else if let Some(running) = helpers::most_common_tag(here.iter().map(|(image, _)| image.as_str()))
        && running != tag
    {
        bail!(
            "{env_path} says CANOPSIS_IMAGE_TAG={tag} but the containers run {running}; run `docker compose up -d` in {dir} if {tag} is what you installed, or put {running} back in {env_path}, then run canup again"
        );
    }
    // 22.10's Compose files name the editions `community` and `pro` (`CPS_EDITION=pro`).
    let pro = match env_value(&env, "CPS_EDITION").as_deref() {
        Some("cat" | "pro") => true,
        Some(_) => false,
        None => here.iter().any(|(i, _)| pro_image(i)) || fs::exists(&format!("{dir}/pro.env"))?,
    };
    Ok((tag, if pro { "cat" } else { "core" }.to_owned()))
}

fn detect_installation(_: &Context) -> Result<()> {
    let dir = helpers::compose_dir();
    let (method, installed, edition) = if fs::exists(&format!("{dir}/.env"))? {
        let (tag, edition) = from_compose(&dir)?;
        ("compose", tag, edition)
    } else {
        let (version, edition, agreed) = match from_packages() {
            Ok(found) => found,
            Err(none) => {
                // Neither packages nor a project here: a project elsewhere says where it is.
                if let Ok(images) = running_images()
                    && let Some((image, elsewhere)) = images.iter().find(|(_, d)| !d.is_empty())
                {
                    bail!(
                        "no Compose project in compose_dir {dir} (no .env), but the Canopsis containers were started from {elsewhere} (Compose's label on {image}); set compose_dir = \"{elsewhere}\" in canup.toml"
                    );
                }
                return Err(none);
            }
        };
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
