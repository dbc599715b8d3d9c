//! The signed release repository, operator side: a TUF repository (verified by `tough`)
//! whose targets are the release index and the step modules.
//!
//! Trust starts from a root that ships in the binary (public keys only) or that the operator
//! names in `canup.toml` (`trusted_root`), and follows the repository's signed root rotations.
//! Metadata goes through tough's checks (signatures and thresholds, expiry, rollback,
//! snapshot/targets consistency, sizes); a target is used only after its length and sha256
//! matched the signed metadata, and a module again against the index. The local cache holds
//! TUF metadata (for rollback protection across runs) and verified modules; nothing in it is
//! used without being checked again.

pub mod index;
pub mod publish;
mod transport;
pub mod trust;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use semver::Version;
use thiserror::Error;
use tough::{ExpirationEnforcement, IntoVec, Limits, RepositoryLoader, TargetName};
use url::Url;

use crate::{error_chain, sha256_hex};
pub use index::{Barrier, Index, IndexData, IndexStep, Release, SharedSteps};

/// A release's data files by name, as its steps read them (`context.data`).
pub type ReleaseData = std::collections::BTreeMap<String, Vec<u8>>;
pub use transport::ResumingTransport;

/// The vendor's production root of trust (public keys only).
pub const EMBEDDED_ROOT: &[u8] = include_bytes!("../../trust/root.json");

/// The largest module or index canup downloads, whatever the metadata says.
const MAX_TARGET_BYTES: u64 = 64 << 20;

#[derive(Debug, Error)]
pub enum RepoError {
    #[error("repository location {0:?} is neither an http(s):// or file:// URL nor an existing directory")]
    Location(String),
    #[error("the release repository at {location} failed verification: {why}. No step ran; check the repository URL and its freshness, or contact the vendor")]
    Verify { location: String, why: String },
    #[error("{what} in the repository at {location} failed verification: {why}")]
    Target { location: String, what: String, why: String },
    #[error("{what} is not listed in the signed targets of {location}")]
    NotListed { location: String, what: String },
    #[error("the trusted root {path}: {why}")]
    TrustedRoot { path: String, why: String },
    #[error("the root of trust canup keeps in {path}: {why}. No step ran; {hint}")]
    TrustStore { path: String, why: String, hint: String },
    #[error(
        "the configured trusted root (version {seed}) is not on the chain of roots canup verified before (newest: version {persisted}, kept in {dir}). No step ran; check `trusted_root` in canup.toml, or {hint}"
    )]
    OffChain { seed: u64, persisted: u64, dir: String, hint: String },
    #[error("local cache {path}: {source}")]
    Cache { path: String, source: std::io::Error },
    #[error(transparent)]
    Index(#[from] index::IndexError),
}

/// Where the repository's metadata and targets live.
#[derive(Debug, Clone)]
pub struct Location {
    pub shown: String,
    pub metadata: Url,
    pub targets: Url,
}

impl Location {
    /// `https://host/repo`, `http://127.0.0.1:8080/repo`, `file:///srv/repo` or a directory:
    /// metadata under `metadata/`, targets under `targets/`.
    pub fn parse(s: &str) -> Result<Self, RepoError> {
        let base = if s.starts_with("http://") || s.starts_with("https://") || s.starts_with("file://") {
            Url::parse(s).map_err(|_| RepoError::Location(s.to_owned()))?
        } else {
            let dir = Path::new(s).canonicalize().map_err(|_| RepoError::Location(s.to_owned()))?;
            Url::from_directory_path(dir).map_err(|_| RepoError::Location(s.to_owned()))?
        };
        let base = if base.path().ends_with('/') { base } else { Url::parse(&format!("{base}/")).map_err(|_| RepoError::Location(s.to_owned()))? };
        let join = |p: &str| base.join(p).map_err(|_| RepoError::Location(s.to_owned()));
        Ok(Self { shown: s.to_owned(), metadata: join("metadata/")?, targets: join("targets/")? })
    }
}

/// Options of a repository load.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub timeout: Duration,
    pub tries: u32,
    /// Vendor tools inspect and refresh expired repositories; operators never run them.
    pub allow_expired: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self { timeout: Duration::from_secs(30), tries: 4, allow_expired: false }
    }
}

/// A verified repository.
#[derive(Debug)]
pub struct Repository {
    inner: tough::Repository,
    location: Location,
    modules: PathBuf,
}

fn cache_err(path: &Path) -> impl Fn(std::io::Error) -> RepoError + '_ {
    move |source| RepoError::Cache { path: path.display().to_string(), source }
}

impl Repository {
    /// Loads and verifies the repository's metadata. Trust starts from the newest root an
    /// earlier run verified (kept in this repository's store under `trust_dir`, see
    /// [`trust::TrustStore::for_repository`]); `seed_root` (the configured or built-in root)
    /// only starts an empty store. The TUF cache under
    /// `cache_dir/tuf` keeps the newest verified timestamp, snapshot and targets so that a
    /// rollback to older versions is refused on later runs too.
    pub async fn open(location: &str, seed_root: &[u8], cache_dir: &Path, trust_dir: &Path, options: &LoadOptions) -> Result<Self, RepoError> {
        let location = Location::parse(location)?;
        let tuf = cache_dir.join("tuf");
        let modules = cache_dir.join("modules");
        for dir in [&tuf, &modules] {
            fs::create_dir_all(dir).map_err(cache_err(dir))?;
        }
        let transport = ResumingTransport::new(options.timeout, options.tries)
            .map_err(|e| RepoError::Verify { location: location.shown.clone(), why: format!("cannot set up HTTP: {e}") })?;
        let store = trust::TrustStore::for_repository(trust_dir, seed_root)?;
        let updated = store.update(seed_root, &transport, &location.metadata).await.map_err(|e| match e {
            RepoError::Verify { why, .. } => RepoError::Verify { location: location.shown.clone(), why },
            other => other,
        })?;
        if updated.fast_forward_recovery {
            // The vendor rotated the timestamp or snapshot keys: what the old keys signed may
            // carry versions an attacker pushed up, so it no longer bounds the new ones.
            tracing::info!("the timestamp or snapshot keys were rotated: forgetting the cached timestamp and snapshot");
            for name in ["timestamp.json", "snapshot.json"] {
                let path = tuf.join(name);
                match fs::remove_file(&path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(cache_err(&path)(e)),
                    _ => {}
                }
            }
        }
        let inner = RepositoryLoader::new(&updated.root.bytes, location.metadata.clone(), location.targets.clone())
            .transport(transport)
            .datastore(tuf)
            .limits(Limits { max_targets_size: 16 << 20, ..Limits::default() })
            .expiration_enforcement(if options.allow_expired { ExpirationEnforcement::Unsafe } else { ExpirationEnforcement::Safe })
            .load()
            .await
            .map_err(|e| RepoError::Verify { location: location.shown.clone(), why: error_chain(&e) })?;
        // tough walks the roots again from ours; a root published in between is verified by
        // it and becomes the start of the next run too.
        if inner.root().signed.version.get() > updated.root.version() {
            let bytes = serde_json::to_vec_pretty(inner.root()).map_err(|e| RepoError::Verify { location: location.shown.clone(), why: e.to_string() })?;
            let newer = trust::TrustedRoot::from_verified(inner.root().clone(), bytes);
            store.persist(&newer)?;
        }
        Ok(Self { inner, location, modules })
    }

    pub fn location(&self) -> &Location {
        &self.location
    }

    pub fn tuf(&self) -> &tough::Repository {
        &self.inner
    }

    /// A target's verified bytes (length and sha256 against the signed targets metadata).
    async fn read(&self, name: &str) -> Result<Vec<u8>, RepoError> {
        let target_err = |why: String| RepoError::Target { location: self.location.shown.clone(), what: format!("target {name}"), why };
        let target_name = TargetName::new(name).map_err(|e| target_err(e.to_string()))?;
        let listed = self.inner.targets().signed.targets.get(&target_name).map(|t| t.length);
        match listed {
            None => return Err(RepoError::NotListed { location: self.location.shown.clone(), what: format!("target {name}") }),
            Some(len) if len > MAX_TARGET_BYTES => {
                return Err(target_err(format!("its signed length {len} exceeds canup's limit of {MAX_TARGET_BYTES} bytes")));
            }
            Some(_) => {}
        }
        let stream = self.inner.read_target(&target_name).await.map_err(|e| target_err(error_chain(&e)))?;
        let stream = stream.ok_or_else(|| RepoError::NotListed { location: self.location.shown.clone(), what: format!("target {name}") })?;
        // tough checks length and hash while streaming; the bytes count only once the stream ended cleanly.
        stream.into_vec().await.map_err(|e| target_err(error_chain(&e)))
    }

    pub async fn index(&self) -> Result<Index, RepoError> {
        Ok(Index::parse(&self.read(index::INDEX_TARGET).await?)?)
    }

    /// A step's module: from the cache when the cached file still matches the signed length
    /// and digest, otherwise downloaded, verified and cached.
    pub async fn module(&self, step: &IndexStep) -> Result<Vec<u8>, RepoError> {
        self.cached_target(&step.module, &step.sha256, || format!("module {} of step {}", step.module, step.manifest.id)).await
    }

    /// A release's data file, verified like a module.
    pub async fn data(&self, release: &Version, data: &IndexData) -> Result<Vec<u8>, RepoError> {
        self.cached_target(&data.target, &data.sha256, || format!("data file {} of release {release}", data.name)).await
    }

    /// Every data file of a release, by name.
    pub async fn release_data(&self, release: &Release) -> Result<ReleaseData, RepoError> {
        let mut files = ReleaseData::new();
        for d in &release.data {
            files.insert(d.name.clone(), self.data(&release.version, d).await?);
        }
        Ok(files)
    }

    /// A target the index names with its digest: the index and the signed targets metadata
    /// must agree on the digest, and the bytes must match both. Cached by digest, so a cache
    /// entry can never stand for other content.
    async fn cached_target(&self, target: &str, index_sha: &str, what: impl Fn() -> String) -> Result<Vec<u8>, RepoError> {
        let location = &self.location.shown;
        let mismatch = |why: String| RepoError::Target { location: location.clone(), what: what(), why };
        let name = TargetName::new(target).map_err(|e| mismatch(e.to_string()))?;
        let signed = self.inner.targets().signed.targets.get(&name).ok_or_else(|| RepoError::NotListed { location: location.clone(), what: what() })?;
        let signed_sha = hex::encode(&signed.hashes.sha256);
        if signed_sha != index_sha {
            return Err(mismatch(format!("the index says sha256 {index_sha}, the signed targets say {signed_sha}")));
        }
        let cached = self.modules.join(&signed_sha);
        if let Ok(bytes) = fs::read(&cached) {
            if bytes.len() as u64 == signed.length && sha256_hex(&bytes) == signed_sha {
                return Ok(bytes);
            }
            tracing::warn!("cached target {} does not match the signed metadata; fetching it again", cached.display());
        }
        let bytes = self.read(target).await?;
        if sha256_hex(&bytes) != index_sha {
            return Err(mismatch("its sha256 does not match the index".into()));
        }
        crate::durable::atomic_replace(&cached, &bytes).map_err(cache_err(&cached))?;
        Ok(bytes)
    }

    /// Expiry of each role, soonest first.
    pub fn expirations(&self) -> Vec<(&'static str, jiff::Timestamp)> {
        let mut v = vec![
            ("root", self.inner.root().signed.expires),
            ("targets", self.inner.targets().signed.expires),
            ("snapshot", self.inner.snapshot().signed.expires),
            ("timestamp", self.inner.timestamp().signed.expires),
        ];
        v.sort_by_key(|(_, t)| *t);
        v
    }

    /// Modules and data files in the cache that are not (or no longer) a verified target of
    /// this repository.
    pub fn stale_cache_entries(&self) -> Vec<PathBuf> {
        let signed: std::collections::HashSet<String> = self.inner.targets().signed.targets.values().map(|t| hex::encode(&t.hashes.sha256)).collect();
        let Ok(entries) = fs::read_dir(&self.modules) else { return Vec::new() };
        let mut stale: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .filter(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                !signed.contains(&name) || fs::read(e.path()).map(|b| sha256_hex(&b) != name).unwrap_or(true)
            })
            .map(|e| e.path())
            .collect();
        stale.sort();
        stale
    }
}

/// The trusted root: the operator's file when configured, the embedded one otherwise.
pub fn trusted_root(path: Option<&Path>) -> Result<Vec<u8>, RepoError> {
    match path {
        None => Ok(EMBEDDED_ROOT.to_vec()),
        Some(p) => fs::read(p).map_err(|e| RepoError::TrustedRoot { path: p.display().to_string(), why: e.to_string() }),
    }
}
