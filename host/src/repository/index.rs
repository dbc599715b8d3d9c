//! The release index: one signed TUF target (`index.json`) listing every release with its
//! steps. The index is what planning reads; the modules it names are separate targets, each
//! fetched and checked only when a plan needs it. The format is documented in
//! `docs/repository.md`.

use semver::Version;
use serde::{Deserialize, Serialize};

use crate::manifest::{Edition, Method, Phase, StepManifest};

/// The target name of the index in the repository.
pub const INDEX_TARGET: &str = "index.json";
/// The index format this canup reads.
pub const INDEX_FORMAT: u32 = 1;

/// The index. Fields this canup does not know are ignored, and those it must not ignore are
/// announced in `requires` (the compatibility rule: [`crate::formats`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Index {
    pub format: u32,
    /// Features of the format a reader must implement to plan from this index.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requires: Vec<String>,
    /// Ascending by version.
    pub releases: Vec<Release>,
    /// Steps the vendor registered once for a range of releases (the standard procedure,
    /// detection). Each release of the range carries them in its own `steps` too, so planning
    /// never reads this list (an older canup ignores it): it is what publishing adds to a new
    /// release and what updating a shared step republishes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shared: Vec<SharedSteps>,
}

/// One registration of shared steps: one module, the steps it implements, the releases it
/// ships with.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SharedSteps {
    pub applies: semver::VersionReq,
    /// The part of the era's standard procedure these steps play (`procedure`, `detect`,
    /// `drain`…): a release is refused when a role its predecessor carries is missing from
    /// it (see [`Index::check_roles`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    pub steps: Vec<IndexStep>,
}

impl SharedSteps {
    /// Whether the registration ships with `version`. A pre-release is judged by the release it
    /// precedes (semver ranges never match pre-releases of other versions): 4.0.0-rc.1 gets the
    /// 4.x procedure as 4.0.0 will.
    pub fn covers(&self, version: &Version) -> bool {
        self.applies.matches(version) || self.applies.matches(&Version::new(version.major, version.minor, version.patch))
    }

    /// The step ids, for messages.
    pub fn ids(&self) -> String {
        self.steps.iter().map(|s| s.manifest.id.as_str()).collect::<Vec<_>>().join(", ")
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Release {
    pub version: Version,
    /// Publication date (YYYY-MM-DD), from the release note.
    pub published: String,
    /// Set when the vendor withdrew the release: the reason shown to operators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub withdrawn: Option<String>,
    /// Set when reaching this release needs its migration guide: canup never plans across it
    /// (feature `barriers`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub barrier: Option<Barrier>,
    pub steps: Vec<IndexStep>,
    /// Set when the vendor published the release without an `update`-phase step for some
    /// install on purpose: the reason.
    #[serde(default, rename = "no-update", skip_serializing_if = "Option::is_none")]
    pub no_update: Option<String>,
    /// Files the vendor ships with the release for its steps to read (e.g. the reference
    /// Compose files), each a signed target like the modules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub data: Vec<IndexData>,
    /// Standard roles the vendor published the release without on purpose, with why (its
    /// step.toml's `[waive]`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub waived: std::collections::BTreeMap<String, String>,
}

impl Release {
    /// The installs (method × edition, every one a Canopsis release ships for) that no
    /// `update`-phase step of this release serves.
    pub fn missing_update(&self) -> Vec<(Method, Edition)> {
        let mut missing = Vec::new();
        for method in [Method::Packages, Method::Compose] {
            for edition in [Edition::Core, Edition::Cat] {
                let served = self.steps.iter().any(|s| s.manifest.phase == Phase::Update && s.manifest.serves(method, edition));
                if !served {
                    missing.push((method, edition));
                }
            }
        }
        missing
    }
}

/// A migration guide between a release and the ones before it: an operator follows it by
/// hand (the guides change databases, configuration layouts and the OS), then canup plans
/// from the release reached.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Barrier {
    /// The guide's title, as the vendor's documentation names it.
    pub guide: String,
    pub url: String,
    /// Why the guide is needed, in a sentence.
    pub reason: String,
}

/// One data file of a release.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IndexData {
    /// The name steps ask for, a relative path such as `compose/docker-compose.yml`.
    pub name: String,
    /// Target name of the file in the repository.
    pub target: String,
    /// sha256 of the file (hex), checked again after TUF's own check.
    pub sha256: String,
    pub length: u64,
}

/// One step as published: its manifest plus the module that implements it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IndexStep {
    /// The step API the module was built against.
    pub api: Version,
    /// Target name of the module in the repository.
    pub module: String,
    /// sha256 of the module (hex), checked again after TUF's own check.
    pub sha256: String,
    pub length: u64,
    pub manifest: StepManifest,
}

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("the release index is not valid: {0}")]
    Parse(#[from] serde_json::Error),
    #[error("the release index has format {found}; this canup reads format {INDEX_FORMAT}: update canup")]
    Format { found: u32 },
    #[error("this repository needs a newer canup (feature {}{}); nothing was planned and no step ran: update canup", .features.join(", "), .step.as_ref().map(|s| format!(", required by step {s}")).unwrap_or_default())]
    NeedsNewer { features: Vec<String>, step: Option<String> },
}

impl Index {
    pub fn parse(bytes: &[u8]) -> Result<Self, IndexError> {
        // The common case, one typed pass. When that fails, the untyped document says whether
        // it is because of another format or of a required feature this canup lacks (whose
        // new fields may not fit these types): those get their clear message first.
        match serde_json::from_slice::<Index>(bytes) {
            Ok(index) => {
                let manifests = index.releases.iter().flat_map(|r| &r.steps).map(|s| (Some(s.manifest.id.as_str()), s.manifest.requires.as_slice()));
                Self::admit(u64::from(index.format), std::iter::once((None, index.requires.as_slice())).chain(manifests))?;
                Ok(index)
            }
            Err(e) => {
                use serde_json::Value;
                let document: Value = serde_json::from_slice(bytes)?;
                let names = |v: &Value| -> Vec<String> {
                    let list = v.get("requires").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
                    list.iter().map(|n| n.as_str().map_or_else(|| n.to_string(), str::to_owned)).collect()
                };
                let list = |v: &Value, key: &str| v.get(key).and_then(Value::as_array).cloned().unwrap_or_default();
                let manifests: Vec<(Option<String>, Vec<String>)> = list(&document, "releases")
                    .iter()
                    .flat_map(|r| list(r, "steps"))
                    .filter_map(|s| s.get("manifest").map(|m| (m.get("id").and_then(Value::as_str).map(str::to_owned), names(m))))
                    .collect();
                let top = names(&document);
                let found = document.get("format").and_then(Value::as_u64).unwrap_or(0);
                Self::admit(found, std::iter::once((None, top.as_slice())).chain(manifests.iter().map(|(id, r)| (id.as_deref(), r.as_slice()))))?;
                Err(e.into())
            }
        }
    }

    /// The format and the `requires` lists (the index's, then each manifest's with its step
    /// id) against what this canup implements.
    fn admit<'a>(format: u64, requires: impl Iterator<Item = (Option<&'a str>, &'a [String])>) -> Result<(), IndexError> {
        if format != u64::from(INDEX_FORMAT) {
            return Err(IndexError::Format { found: u32::try_from(format).unwrap_or(u32::MAX) });
        }
        for (step, names) in requires {
            let features = crate::formats::unknown_features(names);
            if !features.is_empty() {
                return Err(IndexError::NeedsNewer { features, step: step.map(str::to_owned) });
            }
        }
        Ok(())
    }

    /// The features this index uses that a canup must implement to plan from it: what the
    /// vendor commands write in `requires`.
    pub fn features_used(&self) -> Vec<String> {
        let mut used = Vec::new();
        if self.releases.iter().any(|r| r.barrier.is_some()) {
            used.push(crate::formats::BARRIERS.to_owned());
        }
        used
    }

    /// Why `release` cannot be published as it stands: an install it claims (every method ×
    /// edition) that would get no `update`-phase step, so that applying it would install
    /// nothing, unless the release says why (`no-update`). The message names the standard
    /// procedure the vendor registered and the ranges it covers.
    pub fn check_update(&self, release: &Release) -> Result<(), String> {
        let missing = release.missing_update();
        if missing.is_empty() || release.no_update.is_some() {
            return Ok(());
        }
        let installs = missing.iter().map(|(m, e)| format!("{m}/{e}")).collect::<Vec<_>>().join(", ");
        let registered: Vec<String> = self
            .shared
            .iter()
            .filter(|s| s.steps.iter().any(|st| st.manifest.phase == Phase::Update && missing.iter().any(|(me, ed)| st.manifest.serves(*me, *ed))))
            .map(|s| format!("{} ({})", s.ids(), s.applies))
            .collect();
        let registered = if registered.is_empty() { "none is registered".to_owned() } else { format!("registered: {}", registered.join("; ")) };
        Err(format!(
            "release {v} has no update-phase step for {installs}: the standard procedure that updates the packages or the Compose files \
             does not cover it ({registered}), so applying {v} would install nothing. Register a shared update step whose range covers {v} \
             (`canup repo add-shared`), give the release its own, or, if it really ships no update, say why with `no-update = \"…\"` in its step.toml",
            v = release.version
        ))
    }

    /// The standard roles `release` lacks: those the shared registrations give the release
    /// published just before it, which none gives it, and which it does not waive. Extending
    /// an era by hand, a vendor who widened only the procedure's range published releases
    /// without the drain, the API check and the broadcast, and every run still succeeded.
    pub fn missing_roles(&self, release: &Release) -> Vec<(&SharedSteps, &Release)> {
        let Some(before) = self.releases.iter().filter(|r| r.version < release.version).max_by(|a, b| a.version.cmp(&b.version)) else { return Vec::new() };
        let carried: Vec<&str> = self.shared.iter().filter(|s| s.covers(&release.version)).filter_map(|s| s.role.as_deref()).collect();
        let mut missing: Vec<(&SharedSteps, &Release)> = Vec::new();
        for s in self.shared.iter().filter(|s| s.covers(&before.version)) {
            let Some(role) = s.role.as_deref() else { continue };
            if !carried.contains(&role) && !release.waived.contains_key(role) && !missing.iter().any(|(m, _)| m.role.as_deref() == Some(role)) {
                missing.push((s, before));
            }
        }
        missing
    }

    /// [`Index::missing_roles`] as the vendor's error: each role, the registration and what to do.
    pub fn check_roles(&self, release: &Release) -> Result<(), String> {
        let missing = self.missing_roles(release);
        if missing.is_empty() {
            return Ok(());
        }
        let each: Vec<String> = missing
            .iter()
            .map(|(s, before)| {
                let role = s.role.as_deref().unwrap_or_default();
                let id = s.steps.first().map(|st| st.manifest.id.as_str()).unwrap_or_default();
                format!(
                    "the era's {role} ({}, registered for {}, which {} carries): widen it with `canup repo widen DIR --step {id} --applies \"…\"`, or say why in the release's step.toml: [waive] {role} = \"…\"",
                    s.ids(),
                    s.applies,
                    crate::version::text(&before.version)
                )
            })
            .collect();
        Err(format!("release {} would ship without {}", crate::version::text(&release.version), each.join("; and without ")))
    }

    pub fn release(&self, version: &Version) -> Option<&Release> {
        self.releases.iter().find(|r| &r.version == version)
    }

    /// Adds or replaces a release, keeping releases sorted by version.
    /// A migration barrier set earlier stays: republishing a release's steps does not lift it.
    pub fn upsert(&mut self, mut release: Release) {
        if release.barrier.is_none() {
            release.barrier = self.release(&release.version).and_then(|r| r.barrier.clone());
        }
        self.releases.retain(|r| r.version != release.version);
        self.releases.push(release);
        self.releases.sort_by(|a, b| a.version.cmp(&b.version));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn document(extra_index: &str, extra_manifest: &str) -> String {
        format!(
            r#"{{"format": 1, {extra_index} "future-index-field": {{"any": ["shape"]}},
               "releases": [{{"version": "3.40.0", "published": "2020-05-04", "future-release-field": 1,
                 "steps": [{{"api": "1.0.0", "module": "m.wasm", "sha256": "00", "length": 1, "future-step-field": true,
                   "manifest": {{"id": "3.40.0/x", "phase": "update", "methods": ["packages"], "editions": ["core"], {extra_manifest}
                     "future-manifest-field": "x", "capabilities": {{"fs": {{"read": ["/opt/canopsis/**"], "future-fs-field": []}}}}}}}}]}}]}}"#
        )
    }

    /// The compatibility rule (`crate::formats`): unknown fields are ignored at every level;
    /// an unknown required feature, on the index or on a manifest, refuses the whole index.
    #[test]
    fn unknown_fields_are_ignored_and_unknown_required_features_refused() {
        let index = Index::parse(document("", "").as_bytes()).unwrap();
        assert_eq!(index.releases[0].steps[0].manifest.capabilities.fs.read, ["/opt/canopsis/**"]);
        assert!(Index::parse(document(r#""requires": ["barriers"],"#, "").as_bytes()).is_ok());
        let e = Index::parse(document(r#""requires": ["barriers", "time-travel"],"#, "").as_bytes()).unwrap_err();
        assert_eq!(e.to_string(), "this repository needs a newer canup (feature time-travel); nothing was planned and no step ran: update canup");
        let e = Index::parse(document("", r#""requires": ["time-travel"],"#).as_bytes()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "this repository needs a newer canup (feature time-travel, required by step 3.40.0/x); nothing was planned and no step ran: update canup"
        );
        // A required feature that also changes a known field's shape gets the same message.
        let changed = document(r#""requires": ["phases-v2"],"#, "").replace(r#""phase": "update""#, r#""phase": {"name": "update"}"#);
        assert!(Index::parse(changed.as_bytes()).unwrap_err().to_string().contains("feature phases-v2"));
        assert!(matches!(Index::parse(br#"{"format": 2, "releases": "elsewhere"}"#), Err(IndexError::Format { found: 2 })));
    }
}
