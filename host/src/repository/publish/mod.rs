//! The publisher's side of the repository, what the vendor runs: keys, initialisation,
//! publishing releases, signing, timestamp refresh and key rotation. Metadata is built from
//! tough's schema types and signed with tough's `SignedRole`, so the files are exactly what tough's client verifies; the
//! editor is not used because it refuses metadata whose `spec_version` is not "1.0.0", and
//! the vendor commands must keep working on a repository another conforming implementation
//! wrote (python-tuf writes "1.0.31").
//!
//! Layout of a repository directory: `metadata/` (`N.root.json`, `N.targets.json`,
//! `N.snapshot.json`, `timestamp.json`; consistent snapshots) and `targets/` (files named
//! `SHA256.NAME`). Keys live outside it (see [`keys`]); key rotation and the offline root
//! ceremony are in [`root`].

pub mod keys;
mod release;
pub mod root;

use std::collections::HashMap;
use std::fs;
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};

use aws_lc_rs::rand::SystemRandom;
use jiff::{SignedDuration, Timestamp, Unit};
use thiserror::Error;
use tough::editor::signed::SignedRole;
use tough::schema::decoded::Decoded;
use tough::schema::{Hashes, KeyHolder, Metafile, RoleType, Root, Signed, Snapshot, Target, Targets, Timestamp as TimestampRole};
use tough::{ExpirationEnforcement, IntoVec, RepositoryLoader, TargetName};
use url::Url;

use super::index::{INDEX_FORMAT, INDEX_TARGET, Index};
use crate::error_chain;
pub use keys::{key_id, keygen};
pub use release::{Published, add_release, add_shared, read_data_dir, set_barrier, widen, withdraw};
pub use root::{RoleChange, Thresholds, init, rotate_root};

#[derive(Debug, Error)]
pub enum PublishError {
    #[error("{0}")]
    Usage(String),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("{what}: {why}")]
    Tuf { what: String, why: String },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> PublishError {
    let what = what.into();
    move |source| PublishError::Io { what, source }
}

fn tuf(what: &str) -> impl FnOnce(&dyn std::fmt::Display) -> PublishError + '_ {
    move |e| PublishError::Tuf { what: what.to_owned(), why: e.to_string() }
}

/// How long each role's signature stays valid: the timestamp is short (a cron job refreshes
/// it), so a frozen mirror is noticed within a day; the root is long-lived and offline.
#[derive(Debug, Clone, Copy)]
pub struct Expiry {
    pub root_days: i64,
    pub targets_days: i64,
    pub snapshot_days: i64,
    pub timestamp_days: i64,
}

impl Default for Expiry {
    fn default() -> Self {
        Self { root_days: 365, targets_days: 90, snapshot_days: 14, timestamp_days: 1 }
    }
}

fn in_days(days: i64) -> Result<Timestamp, PublishError> {
    (Timestamp::now() + SignedDuration::from_hours(24 * days)).round(Unit::Second).map_err(|e| tuf("expiry date")(&e))
}

fn metadata_dir(repo: &Path) -> PathBuf {
    repo.join("metadata")
}

fn targets_dir(repo: &Path) -> PathBuf {
    repo.join("targets")
}

/// Where new metadata is written before it goes live: beside `metadata/`, on the same file
/// system, so that going live is a rename.
fn staging_dir(repo: &Path) -> Result<tempfile::TempDir, PublishError> {
    tempfile::Builder::new().prefix(".staging-").tempdir_in(repo).map_err(io(format!("creating a staging directory in {}", repo.display())))
}

/// Moves freshly signed metadata into `metadata/` so that a client reading the repository
/// meanwhile never sees a torn file or a timestamp naming a snapshot not there yet: each file
/// is renamed into place (atomic), versioned files first, `timestamp.json` last — the order
/// TUF clients read backwards from.
fn move_into_place(staging: &Path, metadata: &Path) -> Result<(), PublishError> {
    let mut files: Vec<PathBuf> =
        fs::read_dir(staging).map_err(io(format!("reading {}", staging.display())))?.filter_map(Result::ok).map(|e| e.path()).collect();
    let rank = |p: &PathBuf| match p.file_name().and_then(|n| n.to_str()) {
        Some(n) if n.ends_with("root.json") => 0,
        Some(n) if n.ends_with("targets.json") => 1,
        Some(n) if n.ends_with("snapshot.json") => 2,
        _ => 3,
    };
    files.sort_by_key(rank);
    for file in files {
        let name = file.file_name().map(PathBuf::from).unwrap_or_default();
        let dest = metadata.join(&name);
        fs::rename(&file, &dest).map_err(io(format!("moving {} into {}", name.display(), metadata.display())))?;
    }
    fs::File::open(metadata).and_then(|d| d.sync_all()).map_err(io(format!("syncing {}", metadata.display())))
}

/// The signing keys of each role.
#[derive(Debug, Clone, Default)]
pub struct RoleKeyFiles {
    pub root: Vec<PathBuf>,
    pub targets: Vec<PathBuf>,
    pub snapshot: Vec<PathBuf>,
    pub timestamp: Vec<PathBuf>,
}

/// The newest `N.root.json` of a repository and its N.
fn latest_root(repo: &Path) -> Result<(PathBuf, u64), PublishError> {
    let dir = metadata_dir(repo);
    let entries = fs::read_dir(&dir).map_err(io(format!("reading {}", dir.display())))?;
    entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let n = name.strip_suffix(".root.json")?.parse::<u64>().ok()?;
            Some((e.path(), n))
        })
        .max_by_key(|(_, n)| *n)
        .ok_or_else(|| PublishError::Usage(format!("{} holds no N.root.json: run `canup repo init` first", dir.display())))
}

/// The repository as its own vendor sees it: trusted from its first root, expired metadata
/// accepted (so that it can be refreshed).
async fn load_own(repo: &Path) -> Result<tough::Repository, PublishError> {
    let first = fs::read(metadata_dir(repo).join("1.root.json")).map_err(io(format!("reading {}/metadata/1.root.json", repo.display())))?;
    let url = |dir: PathBuf| {
        let dir = dir.canonicalize().map_err(io(format!("{}", dir.display())))?;
        Url::from_directory_path(&dir).map_err(|_| PublishError::Usage(format!("{} is not an absolute directory", dir.display())))
    };
    RepositoryLoader::new(&first, url(metadata_dir(repo))?, url(targets_dir(repo))?)
        .expiration_enforcement(ExpirationEnforcement::Unsafe)
        .load()
        .await
        .map_err(|e| PublishError::Tuf { what: format!("loading {}", repo.display()), why: error_chain(&e) })
}

/// The current index of a repository.
pub async fn read_index(repo: &Path) -> Result<Index, PublishError> {
    let loaded = load_own(repo).await?;
    read_index_of(&loaded).await
}

async fn read_index_of(loaded: &tough::Repository) -> Result<Index, PublishError> {
    let name = TargetName::new(INDEX_TARGET).map_err(|e| tuf("index name")(&e))?;
    let stream = loaded.read_target(&name).await.map_err(|e| tuf("reading the index")(&e))?;
    let bytes = match stream {
        Some(s) => s.into_vec().await.map_err(|e| tuf("reading the index")(&e))?,
        None => return Ok(Index { format: INDEX_FORMAT, ..Default::default() }),
    };
    Index::parse(&bytes).map_err(|e| tuf("the index")(&e))
}

/// Publishes `index` as it is (the other vendor commands edit it first).
pub async fn publish_index(repo: &Path, keys: &[PathBuf], expiry: &Expiry, index: &Index) -> Result<(), PublishError> {
    publish(repo, keys, expiry, index, &[]).await
}

/// Writes `index` and `files` as targets and signs targets, snapshot and timestamp with new
/// versions and expiries.
async fn publish(repo: &Path, keys: &[PathBuf], expiry: &Expiry, index: &Index, files: &[(String, Vec<u8>)]) -> Result<(), PublishError> {
    republish(repo, None, keys, expiry, RoleType::Targets, Some((index, files))).await.map(|_| ())
}

/// A new index and the files to add as targets.
type TargetsEdit<'a> = (&'a Index, &'a [(String, Vec<u8>)]);

/// Stages a new root (when given) and new versions of the top-level roles from `from` down
/// (targets → snapshot → timestamp; `Root` re-signs none of them), then moves them all into
/// place in one go, so that a client sees the new root together with what its keys signed.
/// `edit` replaces the index and adds files to the targets. Returns the new timestamp version.
async fn republish(
    repo: &Path,
    new_root: Option<&Signed<Root>>,
    keys: &[PathBuf],
    expiry: &Expiry,
    from: RoleType,
    edit: Option<TargetsEdit<'_>>,
) -> Result<Option<u64>, PublishError> {
    let current = Current::read(repo).await?;
    let root = new_root.unwrap_or(&current.root);
    let consistent = root.signed.consistent_snapshot;
    let staging = staging_dir(repo)?;
    if let Some(r) = new_root {
        let name = format!("{}.root.json", r.signed.version);
        let bytes = serde_json::to_vec_pretty(r).map_err(|e| tuf("the root")(&e))?;
        fs::write(staging.path().join(&name), bytes).map_err(io(format!("staging {name}")))?;
    }
    let signer = Signer { root: &root.signed, keys, consistent, staging: staging.path() };
    let mut targets_meta = None;
    // The index files a client may still be fetching: the current one and the one written now.
    let mut live_indexes: Vec<PathBuf> = Vec::new();
    let index_name = TargetName::new(INDEX_TARGET).map_err(|e| tuf(INDEX_TARGET)(&e))?;
    if let Some(target) = current.targets.as_ref().and_then(|t| t.signed.targets.get(&index_name)) {
        live_indexes.push(target_file(repo, consistent, INDEX_TARGET, &hex::encode(&target.hashes.sha256)));
    }
    if from == RoleType::Targets {
        let mut targets = current.next_targets(expiry)?;
        if let Some((index, files)) = edit {
            // What the index uses that a canup must understand is announced, so that an older
            // canup refuses it rather than plan without it (`crate::formats`).
            let index = Index { requires: index.features_used(), ..index.clone() };
            let mut staged = vec![(INDEX_TARGET.to_owned(), serde_json::to_vec_pretty(&index).map_err(|e| tuf("the index")(&e))?)];
            staged.extend(files.iter().cloned());
            for (name, bytes) in &staged {
                let target_name = TargetName::new(name.as_str()).map_err(|e| tuf(name)(&e))?;
                let sha256 = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes).as_ref().to_vec();
                let file = target_file(repo, consistent, name, &hex::encode(&sha256));
                if name == INDEX_TARGET {
                    live_indexes.push(file.clone());
                }
                if !file.exists() {
                    crate::durable::atomic_replace(&file, bytes).map_err(io(format!("writing target {}", file.display())))?;
                }
                let hashes = Hashes { sha256: Decoded::from(sha256), _extra: HashMap::new() };
                targets.targets.insert(target_name, Target { length: bytes.len() as u64, hashes, custom: HashMap::new(), _extra: HashMap::new() });
            }
        }
        let targets = signer.sign(targets, "targets").await?;
        targets_meta = Some(metafile(targets.buffer(), targets.signed().signed.version));
    }
    let mut snapshot_meta = None;
    if matches!(from, RoleType::Targets | RoleType::Snapshot) {
        let snapshot = signer.sign(current.next_snapshot(targets_meta, expiry)?, "snapshot").await?;
        snapshot_meta = Some(metafile(snapshot.buffer(), snapshot.signed().signed.version));
    }
    let mut version = None;
    if from != RoleType::Root {
        let timestamp = signer.sign(current.next_timestamp(snapshot_meta, expiry.timestamp_days)?, "timestamp").await?;
        version = Some(timestamp.signed().signed.version.get());
    }
    move_into_place(staging.path(), &metadata_dir(repo))?;
    if consistent && edit.is_some() {
        prune_indexes(repo, &live_indexes);
    }
    Ok(version)
}

/// Removes the index files older than the current and the previous one. Each publication
/// writes a new index (the whole catalogue, hundreds of KB); keeping every one made a
/// repository of the 4.0–23.10 catalogue weigh 64 MB. The previous one stays for a client that
/// read the previous snapshot just before this publication. Best effort: a file that cannot be
/// removed only takes space.
fn prune_indexes(repo: &Path, live: &[PathBuf]) {
    let Ok(entries) = fs::read_dir(targets_dir(repo)) else { return };
    let suffix = format!(".{INDEX_TARGET}");
    for entry in entries.flatten() {
        let path = entry.path();
        let is_index = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with(&suffix));
        if is_index && !live.contains(&path) {
            let _ = fs::remove_file(&path);
        }
    }
}

/// Where a target's file lives: `SHA256.NAME` with consistent snapshots, `NAME` without.
fn target_file(repo: &Path, consistent: bool, name: &str, sha256: &str) -> PathBuf {
    if consistent { targets_dir(repo).join(format!("{sha256}.{name}")) } else { targets_dir(repo).join(name) }
}

/// The repository's newest metadata, as the vendor commands build on it.
struct Current {
    root: Signed<Root>,
    targets: Option<Signed<Targets>>,
    snapshot: Option<Signed<Snapshot>>,
    timestamp: Option<Signed<TimestampRole>>,
}

impl Current {
    /// The newest root file, and the rest as tough's client verifies it (expired accepted,
    /// so that it can be refreshed); a repository with no targets yet has only a root.
    async fn read(repo: &Path) -> Result<Self, PublishError> {
        let (root_path, _) = latest_root(repo)?;
        let root: Signed<Root> = serde_json::from_slice(&fs::read(&root_path).map_err(io(format!("reading {}", root_path.display())))?)
            .map_err(|e| tuf(&format!("parsing {}", root_path.display()))(&e))?;
        if !metadata_dir(repo).join("timestamp.json").exists() {
            return Ok(Self { root, targets: None, snapshot: None, timestamp: None });
        }
        let loaded = load_own(repo).await?;
        if loaded.targets().signed.delegations.as_ref().is_some_and(|d| !d.roles.is_empty()) {
            return Err(PublishError::Usage(format!(
                "{} delegates targets to other roles; canup's vendor commands edit only top-level targets",
                repo.display()
            )));
        }
        Ok(Self { root, targets: Some(loaded.targets().clone()), snapshot: Some(loaded.snapshot().clone()), timestamp: Some(loaded.timestamp().clone()) })
    }

    fn next_targets(&self, expiry: &Expiry) -> Result<Targets, PublishError> {
        let expires = in_days(expiry.targets_days)?;
        Ok(match &self.targets {
            Some(t) => Targets { version: t.signed.version.saturating_add(1), expires, ..t.signed.clone() },
            None => Targets::new(self.root.signed.spec_version.clone(), NonZeroU64::MIN, expires),
        })
    }

    /// The next snapshot: naming `targets` when targets were re-signed, the same targets
    /// otherwise.
    fn next_snapshot(&self, targets: Option<Metafile>, expiry: &Expiry) -> Result<Snapshot, PublishError> {
        let expires = in_days(expiry.snapshot_days)?;
        let mut snapshot = match &self.snapshot {
            Some(s) => Snapshot { version: s.signed.version.saturating_add(1), expires, ..s.signed.clone() },
            None => Snapshot::new(self.root.signed.spec_version.clone(), NonZeroU64::MIN, expires),
        };
        if let Some(meta) = targets {
            snapshot.meta.insert("targets.json".into(), meta);
        }
        Ok(snapshot)
    }

    fn next_timestamp(&self, snapshot: Option<Metafile>, days: i64) -> Result<TimestampRole, PublishError> {
        let expires = in_days(days)?;
        let mut timestamp = match &self.timestamp {
            Some(t) => TimestampRole { version: t.signed.version.saturating_add(1), expires, ..t.signed.clone() },
            None => TimestampRole::new(self.root.signed.spec_version.clone(), NonZeroU64::MIN, expires),
        };
        if let Some(meta) = snapshot {
            timestamp.meta.insert("snapshot.json".into(), meta);
        }
        Ok(timestamp)
    }
}

/// What snapshot says of targets and timestamp of snapshot: version, length and sha256.
fn metafile(buffer: &[u8], version: NonZeroU64) -> Metafile {
    let sha256 = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, buffer).as_ref().to_vec();
    Metafile {
        length: Some(buffer.len() as u64),
        hashes: Some(Hashes { sha256: Decoded::from(sha256), _extra: HashMap::new() }),
        version,
        _extra: HashMap::new(),
    }
}

/// Signs top-level roles with the root's keys for them and writes each into the staging
/// directory under its published name.
struct Signer<'a> {
    root: &'a Root,
    keys: &'a [PathBuf],
    consistent: bool,
    staging: &'a Path,
}

impl Signer<'_> {
    async fn sign<T: tough::schema::Role + serde::Serialize>(&self, role: T, name: &str) -> Result<SignedRole<T>, PublishError> {
        let version = role.version();
        let signed = SignedRole::new(role, &KeyHolder::Root(self.root.clone()), &keys::sources(self.keys), &SystemRandom::new())
            .await
            .map_err(|e| PublishError::Tuf { what: format!("signing {name} (are its keys among --key, as many as its threshold?)"), why: error_chain(&e) })?;
        let file = if self.consistent && name != "timestamp" { format!("{version}.{name}.json") } else { format!("{name}.json") };
        fs::write(self.staging.join(&file), signed.buffer()).map_err(io(format!("staging {file}")))?;
        Ok(signed)
    }
}

/// Re-signs targets, snapshot and timestamp with fresh versions and expiries.
pub async fn sign(repo: &Path, keys: &[PathBuf], expiry: &Expiry) -> Result<(), PublishError> {
    let index = read_index(repo).await?;
    publish(repo, keys, expiry, &index, &[]).await
}

/// Signs a new timestamp for the current snapshot: what a cron job runs so that clients can
/// tell a live repository from a frozen one. Needs only the timestamp key.
pub async fn refresh_timestamp(repo: &Path, timestamp_keys: &[PathBuf], days: i64) -> Result<u64, PublishError> {
    let expiry = Expiry { timestamp_days: days, ..Expiry::default() };
    let version = republish(repo, None, timestamp_keys, &expiry, RoleType::Timestamp, None).await?;
    version.ok_or_else(|| PublishError::Usage(format!("{} has no timestamp yet: run `canup repo init` first", repo.display())))
}
