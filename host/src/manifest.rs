//! Step manifests: what a step is and what it needs, as the vendor declares it.
//!
//! A release's crate ships one component and a `step.toml` listing its steps; several steps
//! may share one module, which learns which one to run from `context.step-id`. In the
//! repository's index the same records are signed metadata.

use std::path::Path;

use semver::Version;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::capabilities::CapabilitySet;

/// The step API this canup implements (the `canup:step` WIT package version).
pub const STEP_API: Version = Version::new(1, 2, 0);

/// Phases in the order canup runs them for one upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    Detect,
    Preflight,
    PreUpdate,
    Update,
    Finalize,
    PostUpdate,
    Verify,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    Packages,
    Compose,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Edition {
    /// Canopsis Community.
    Core,
    /// Canopsis Pro.
    Cat,
}

macro_rules! display_as_serde {
    ($($t:ty),*) => {$(
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                let v = serde_json::to_value(self).map_err(|_| std::fmt::Error)?;
                f.write_str(v.as_str().unwrap_or_default())
            }
        }
    )*};
}
display_as_serde!(Phase, Method, Edition);

/// One step. Lenient in the index, strict in a `step.toml` (see [`crate::formats`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StepManifest {
    /// Unique in the repository, e.g. `3.40.0/webserver-services`.
    pub id: String,
    pub phase: Phase,
    /// Order within the phase (ascending).
    #[serde(default)]
    pub order: u32,
    pub methods: Vec<Method>,
    pub editions: Vec<Edition>,
    /// What the release note says this step does, shown to the operator in the plan.
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub capabilities: CapabilitySet,
    /// Features of the manifest format this step needs its canup to implement (see
    /// [`crate::formats`]); a canup without one of them refuses the index.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requires: Vec<String>,
    /// The database endpoints this step migrates by other means than a `database` script
    /// (`canopsis-reconfigure -migrate-postgres`): canup dumps them before the run's first
    /// change (`[backup] databases`). An older canup ignores the field and takes no dump.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backup: Vec<String>,
}

impl StepManifest {
    /// Whether the step is for installs of `method` and `edition`.
    pub fn serves(&self, method: Method, edition: Edition) -> bool {
        self.methods.contains(&method) && self.editions.contains(&edition)
    }

    /// A step of the packages method and the core edition that may touch nothing: where the
    /// planner's tests, the fuzzer and the bench start, setting only the fields they vary.
    pub fn bare(id: impl Into<String>, phase: Phase) -> Self {
        Self {
            id: id.into(),
            phase,
            order: 0,
            methods: vec![Method::Packages],
            editions: vec![Edition::Core],
            description: String::new(),
            capabilities: CapabilitySet::default(),
            requires: Vec::new(),
            backup: Vec::new(),
        }
    }
}

/// A crate's `step.toml`: either one release's own steps (`release = "3.40.0"`), or steps
/// the vendor ships with every release of a range (`applies = ">=3.0.0, <4.0.0"`: the
/// standard procedure, detection), which publishing adds to each matching release.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReleaseSteps {
    /// `23.04.1` or `23.4.1`: read as Canopsis writes it (see [`crate::version`]).
    #[serde(default, deserialize_with = "crate::version::deserialize_opt")]
    pub release: Option<Version>,
    #[serde(default)]
    pub applies: Option<semver::VersionReq>,
    /// The step API version the module is built against.
    pub api: Version,
    /// Publication date of the release note (YYYY-MM-DD), shown in the index.
    #[serde(default)]
    pub published: Option<String>,
    /// Why this release ships no `update`-phase step for some install (none of its own and
    /// no registered shared one covering it). Without it, publishing refuses such a release:
    /// applying it would install nothing (see [`crate::repository::Release::missing_update`]).
    #[serde(default, rename = "no-update", skip_serializing_if = "Option::is_none")]
    pub no_update: Option<String>,
    /// Shared steps only: the part of the era's standard procedure they play (`procedure`,
    /// `compose`, `detect`, `broadcast`, `drain`, `api-check`). Publishing refuses a release
    /// that lacks a role its predecessor carries, unless the release waives it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// A release only: standard roles it ships without on purpose, each with why.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub waive: std::collections::BTreeMap<String, String>,
    #[serde(rename = "step", default)]
    pub steps: Vec<StepManifest>,
}

#[derive(Debug, Error)]
pub enum ManifestError {
    #[error("cannot read manifest {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("manifest {path}: {source}")]
    Parse { path: String, source: crate::formats::StrictError },
    #[error("manifest {path}: step {step} requires {features}, which this canup does not implement: publish it with a newer canup")]
    Requires { path: String, step: String, features: String },
    #[error("manifest {path} has no step {id:?}; it has: {available}")]
    NoSuchStep { path: String, id: String, available: String },
    #[error("manifest {path} has several steps ({available}); choose one with --step")]
    Ambiguous { path: String, available: String },
    #[error("manifest {path} declares no step")]
    Empty { path: String },
    #[error("manifest {path} must name either one `release` or a range it `applies` to")]
    ReleaseOrRange { path: String },
    #[error("manifest {path}: `no-update` belongs to a release's step.toml, not to shared steps (`applies`)")]
    NoUpdateOnShared { path: String },
    #[error("manifest {path}: `{key}` belongs to {belongs}")]
    Misplaced { path: String, key: &'static str, belongs: &'static str },
}

impl ReleaseSteps {
    pub fn load(path: &Path) -> Result<Self, ManifestError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read { path: shown.clone(), source })?;
        let steps: Self = crate::formats::strict_toml(&text).map_err(|source| ManifestError::Parse { path: shown.clone(), source })?;
        if steps.release.is_some() == steps.applies.is_some() {
            return Err(ManifestError::ReleaseOrRange { path: shown });
        }
        if steps.applies.is_some() && steps.no_update.is_some() {
            return Err(ManifestError::NoUpdateOnShared { path: shown });
        }
        if steps.applies.is_none() && steps.role.is_some() {
            return Err(ManifestError::Misplaced { path: shown, key: "role", belongs: "shared steps (`applies`), not to a release" });
        }
        if steps.applies.is_some() && !steps.waive.is_empty() {
            return Err(ManifestError::Misplaced { path: shown, key: "waive", belongs: "a release's step.toml, not to shared steps" });
        }
        for step in &steps.steps {
            let unknown = crate::formats::unknown_features(&step.requires);
            if !unknown.is_empty() {
                return Err(ManifestError::Requires { path: shown, step: step.id.clone(), features: unknown.join(", ") });
            }
        }
        Ok(steps)
    }

    /// The step `id`, or the only step when `id` is `None`.
    pub fn select(&self, id: Option<&str>, path: &Path) -> Result<&StepManifest, ManifestError> {
        let shown = path.display().to_string();
        let available = self.steps.iter().map(|s| s.id.as_str()).collect::<Vec<_>>().join(", ");
        match (id, self.steps.as_slice()) {
            (_, []) => Err(ManifestError::Empty { path: shown }),
            (None, [only]) => Ok(only),
            (None, _) => Err(ManifestError::Ambiguous { path: shown, available }),
            (Some(id), steps) => steps.iter().find(|s| s.id == id).ok_or_else(|| ManifestError::NoSuchStep { path: shown, id: id.to_owned(), available }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_release_with_capabilities() {
        let m: ReleaseSteps = toml::from_str(
            r#"
release = "3.40.0"
api = "1.0.0"
[[step]]
id = "3.40.0/webserver-services"
phase = "post-update"
order = 10
methods = ["packages"]
editions = ["core", "cat"]
description = "Add the metaalarmrule and broadcast_message services to webserver.conf"
[step.capabilities.fs]
read = ["/opt/canopsis/etc/webserver.conf"]
write = ["/opt/canopsis/etc/webserver.conf"]
[[step.capabilities.exec]]
program = "/usr/bin/canoctl"
args = ["restart"]
"#,
        )
        .unwrap();
        assert_eq!(m.release, Some(Version::new(3, 40, 0)));
        let s = m.select(None, Path::new("step.toml")).unwrap();
        assert_eq!(s.phase, Phase::PostUpdate);
        assert_eq!(s.capabilities.exec[0].program, "/usr/bin/canoctl");
        assert_eq!(Phase::PreUpdate.to_string(), "pre-update");
    }

    #[test]
    fn unknown_keys_and_features_are_errors_that_name_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("step.toml");
        let base = "release = \"1.0.0\"\napi = \"1.0.0\"\n[[step]]\nid = \"s\"\nphase = \"update\"\nmethods = [\"packages\"]\neditions = [\"core\"]\n";
        std::fs::write(&path, format!("{base}[step.capabilities.fs]\nraed = [\"/x\"]\n")).unwrap();
        let e = ReleaseSteps::load(&path).unwrap_err().to_string();
        assert!(e.contains("unknown key `step.0.capabilities.fs.raed` (line 9)"), "{e}");
        std::fs::write(&path, format!("{base}requires = [\"time-travel\"]\n")).unwrap();
        let e = ReleaseSteps::load(&path).unwrap_err().to_string();
        assert!(e.contains("step s requires time-travel, which this canup does not implement"), "{e}");
        std::fs::write(&path, base).unwrap();
        assert!(ReleaseSteps::load(&path).is_ok());
    }
}
