//! Docker Compose on the simulated host. The project directory holds the vendor's reference
//! set of the installed release and edition, rendered from `facts/compose.toml`; what the
//! containers run is recorded in [`CONTAINERS`], as `docker compose up -d` left it.
//!
//! `up -d` validates the project with the real `docker-compose config` (Debian's Compose v1)
//! in the project directory, with the caller's environment (`CPS_EDITION`), and fails as the
//! real `up` would on a file Compose cannot read; the images it resolves are what the
//! containers run. Each container carries the label Compose gives it,
//! `com.docker.compose.project.working_dir`, which `docker ps` shows.

use std::path::Path;

use anyhow::{Context, Result, bail};
use canopsis_facts::compose::ComposeFacts;
use canup_sdk::resync::{Value, yaml_value};
use serde::{Deserialize, Serialize};

/// Where the simulated hosts keep their Compose project unless a spec names another.
pub const DEFAULT_DIR: &str = canup_sdk::helpers::DEFAULT_COMPOSE_DIR;
/// The running containers, as JSON.
pub const CONTAINERS: &str = "/var/lib/canup-sim/containers.json";
/// The real Compose v1 (Debian's `docker-compose`), by path: the stub runs with the
/// environment canup gives a command, which has no `PATH`.
const DOCKER_COMPOSE: &str = "/usr/bin/docker-compose";
/// The label Compose puts on a project's containers: the project's directory.
pub const WORKING_DIR_LABEL: &str = "com.docker.compose.project.working_dir";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Container {
    pub service: String,
    pub image: String,
    /// The project directory as the host names it.
    pub working_dir: String,
}

/// The environment the operator exports before running Compose, as the era's guides say:
/// `CPS_EDITION` where the reference files read it.
pub const OPERATOR_ENV: &str = "/var/lib/canup-sim/operator-env";

/// The embedded Compose facts, with `CANUP_SIM_COMPOSE_FACTS=FILE` (entries of the same format)
/// added: a vendor makes a Compose host of a new release without building canup-sim again.
fn facts() -> Result<ComposeFacts> {
    let mut text = canopsis_facts::COMPOSE_TOML.to_owned();
    if let Some(path) = std::env::var_os("CANUP_SIM_COMPOSE_FACTS").filter(|p| !p.is_empty()) {
        let extra = std::fs::read_to_string(&path).with_context(|| format!("reading CANUP_SIM_COMPOSE_FACTS {}", Path::new(&path).display()))?;
        text.push('\n');
        text.push_str(&extra);
    }
    ComposeFacts::parse(&text, "facts/compose.toml (and CANUP_SIM_COMPOSE_FACTS)").map_err(anyhow::Error::msg)
}

/// Writes the reference set of `version`/`edition` into `dir` (a path of the host), and
/// returns it.
pub fn write_reference(root: &Path, dir: &str, version: &str, edition: &str) -> Result<canopsis_facts::compose::Reference> {
    let facts = facts()?;
    let reference = facts.reference(version, edition).map_err(anyhow::Error::msg)?;
    for (name, text) in &reference.files {
        let path = root.join(dir.trim_start_matches('/')).join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(reference)
}

/// The real `docker-compose config` of the project in `dir` (a path of the host), with
/// `env` added to the environment: the resolved configuration, or Compose's own error.
pub fn config(root: &Path, dir: &str, env: &[(String, String)]) -> Result<String> {
    let project = root.join(dir.trim_start_matches('/'));
    let out = std::process::Command::new(DOCKER_COMPOSE)
        .args(["--no-ansi", "config"])
        .current_dir(&project)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .context("cannot run docker-compose (apt-get install docker-compose)")?;
    if !out.status.success() {
        bail!("docker-compose config in {}: {}", project.display(), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `up -d`: the project validated by the real Compose, its services' images now running.
pub fn up(root: &Path, dir: &str, env: &[(String, String)]) -> Result<Vec<Container>> {
    let resolved = yaml_value(&config(root, dir, env)?).map_err(|e| anyhow::anyhow!("docker-compose config printed {e}"))?;
    let Some(Value::Map(services)) = resolved.get("services") else { bail!("docker-compose config printed no services") };
    let containers: Vec<Container> = services
        .iter()
        .filter_map(|(name, s)| match s.get("image") {
            Some(Value::Str(image)) => Some(Container { service: name.clone(), image: image.clone(), working_dir: dir.to_owned() }),
            _ => None,
        })
        .collect();
    let path = root.join(CONTAINERS.trim_start_matches('/'));
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&path, serde_json::to_string_pretty(&containers)?)?;
    Ok(containers)
}

/// The containers running now (none when Compose never ran).
pub fn containers(root: &Path) -> Vec<Container> {
    std::fs::read_to_string(root.join(CONTAINERS.trim_start_matches('/'))).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default()
}

/// The version the Canopsis containers run: the tag most of the Canopsis images carry (the
/// databases' and brokers' images have their own tags).
pub fn running_version(root: &Path) -> Option<String> {
    let images: Vec<String> = containers(root).into_iter().map(|c| c.image).filter(|i| i.contains("canopsis")).collect();
    canup_sdk::helpers::most_common_tag(images.iter().map(String::as_str))
}

/// `docker ps --format FORMAT`: one line per container, `{{.Image}}`, `{{.Names}}` and
/// `{{.Label "NAME"}}` replaced (the fields canup's steps read).
pub fn ps(root: &Path, format: &str) -> String {
    let mut out = String::new();
    for c in containers(root) {
        let project = Path::new(&c.working_dir).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let line = format
            .replace("{{.Image}}", &c.image)
            .replace("{{.Names}}", &format!("{project}-{}-1", c.service))
            .replace(&format!("{{{{.Label \"{WORKING_DIR_LABEL}\"}}}}"), &c.working_dir)
            .replace("\\t", "\t");
        out.push_str(&line);
        out.push('\n');
    }
    out
}
