//! The release index: one signed TUF target (`index.json`) listing every release with its
//! steps. The index is what planning reads; the modules it names are separate targets, each
//! fetched and checked only when a plan needs it. The format is documented in
//! `docs/repository.md`.

use semver::Version;
use serde::{Deserialize, Serialize};

use crate::manifest::StepManifest;

/// The target name of the index in the repository.
pub const INDEX_TARGET: &str = "index.json";
/// The index format this canup reads.
pub const INDEX_FORMAT: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct Index {
    pub format: u32,
    /// Ascending by version.
    pub releases: Vec<Release>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Release {
    pub version: Version,
    /// Publication date (YYYY-MM-DD), from the release note.
    pub published: String,
    /// Set when the vendor withdrew the release: the reason shown to operators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub withdrawn: Option<String>,
    pub steps: Vec<IndexStep>,
    /// Files the vendor ships with the release for its steps to read (e.g. the reference
    /// Compose files), each a signed target like the modules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub data: Vec<IndexData>,
}

/// One data file of a release.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
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
#[serde(deny_unknown_fields)]
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
}

impl Index {
    pub fn parse(bytes: &[u8]) -> Result<Self, IndexError> {
        // The format is checked before the rest so that a newer index gets the clear message.
        #[derive(Deserialize)]
        struct Head {
            format: u32,
        }
        let head: Head = serde_json::from_slice(bytes)?;
        if head.format != INDEX_FORMAT {
            return Err(IndexError::Format { found: head.format });
        }
        Ok(serde_json::from_slice(bytes)?)
    }

    pub fn release(&self, version: &Version) -> Option<&Release> {
        self.releases.iter().find(|r| &r.version == version)
    }

    /// Adds or replaces a release, keeping releases sorted by version.
    pub fn upsert(&mut self, release: Release) {
        self.releases.retain(|r| r.version != release.version);
        self.releases.push(release);
        self.releases.sort_by(|a, b| a.version.cmp(&b.version));
    }
}
