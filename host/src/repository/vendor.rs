//! The vendor's side of the repository: keys, initialisation, publishing releases, signing,
//! timestamp refresh and root rotation. Built on tough's editor, so the files are exactly
//! what tough's client verifies.
//!
//! Layout of a repository directory: `metadata/` (`N.root.json`, `N.targets.json`,
//! `N.snapshot.json`, `timestamp.json`; consistent snapshots) and `targets/` (files named
//! `SHA256.NAME`). Keys are ed25519, PKCS#8 DER files of mode 0600; they never belong in the
//! repository directory.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::num::NonZeroU64;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::Ed25519KeyPair;
use jiff::{SignedDuration, Timestamp, Unit};
use semver::Version;
use thiserror::Error;
use tough::editor::RepositoryEditor;
use tough::editor::signed::{PathExists, SignedRole};
use tough::key_source::{KeySource, LocalKeySource};
use tough::schema::{KeyHolder, RoleKeys, RoleType, Root, Signed};
use tough::{ExpirationEnforcement, IntoVec, RepositoryLoader, TargetName};
use url::Url;

use super::index::{INDEX_FORMAT, INDEX_TARGET, Index, IndexData, IndexStep, Release};
use crate::{error_chain, sha256_hex};
use crate::manifest::ReleaseSteps;

#[derive(Debug, Error)]
pub enum VendorError {
    #[error("{0}")]
    Usage(String),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("{what}: {why}")]
    Tuf { what: String, why: String },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> VendorError {
    let what = what.into();
    move |source| VendorError::Io { what, source }
}

fn tuf(what: &str) -> impl FnOnce(&dyn std::fmt::Display) -> VendorError + '_ {
    move |e| VendorError::Tuf { what: what.to_owned(), why: e.to_string() }
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

fn in_days(days: i64) -> Result<Timestamp, VendorError> {
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
fn staging_dir(repo: &Path) -> Result<tempfile::TempDir, VendorError> {
    tempfile::Builder::new().prefix(".staging-").tempdir_in(repo).map_err(io(format!("creating a staging directory in {}", repo.display())))
}

/// Moves freshly signed metadata into `metadata/` so that a client reading the repository
/// meanwhile never sees a torn file or a timestamp naming a snapshot not there yet: each file
/// is renamed into place (atomic), versioned files first, `timestamp.json` last — the order
/// TUF clients read backwards from.
fn move_into_place(staging: &Path, metadata: &Path) -> Result<(), VendorError> {
    let mut files: Vec<PathBuf> = fs::read_dir(staging).map_err(io(format!("reading {}", staging.display())))?.filter_map(Result::ok).map(|e| e.path()).collect();
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

fn sources(paths: &[PathBuf]) -> Vec<Box<dyn KeySource>> {
    paths.iter().map(|p| Box::new(LocalKeySource { path: p.clone() }) as Box<dyn KeySource>).collect()
}

/// Generates an ed25519 signing key (PKCS#8 DER, mode 0600) and returns its TUF key id.
pub async fn keygen(out: &Path) -> Result<String, VendorError> {
    let shown = out.display().to_string();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|e| tuf("generating a key")(&e))?;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .map_err(io(format!("creating key file {shown} (an existing key is never overwritten)")))?;
    f.write_all(pkcs8.as_ref()).map_err(io(format!("writing {shown}")))?;
    f.sync_all().map_err(io(format!("writing {shown}")))?;
    key_id(out).await
}

/// The TUF key id of a key file.
pub async fn key_id(path: &Path) -> Result<String, VendorError> {
    let what = format!("key {}", path.display());
    let sign = LocalKeySource { path: path.to_owned() }.as_sign().await.map_err(|e| tuf(&what)(&e))?;
    let id = sign.tuf_key().key_id().map_err(|e| tuf(&what)(&e))?;
    Ok(hex::encode(id))
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
fn latest_root(repo: &Path) -> Result<(PathBuf, u64), VendorError> {
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
        .ok_or_else(|| VendorError::Usage(format!("{} holds no N.root.json: run `canup repo init` first", dir.display())))
}

/// Creates a repository: root metadata signed by the root keys, and an empty release index
/// signed by the other roles' keys.
pub async fn init(repo: &Path, keys: &RoleKeyFiles, threshold: u64, expiry: &Expiry) -> Result<(), VendorError> {
    let meta = metadata_dir(repo);
    if meta.join("1.root.json").exists() {
        return Err(VendorError::Usage(format!("{} already holds a repository", repo.display())));
    }
    if keys.root.is_empty() {
        return Err(VendorError::Usage("at least one root key is needed (--root-key)".into()));
    }
    let threshold = NonZeroU64::new(threshold).ok_or_else(|| VendorError::Usage("the threshold must be at least 1".into()))?;
    fs::create_dir_all(&meta).map_err(io(format!("creating {}", meta.display())))?;
    fs::create_dir_all(targets_dir(repo)).map_err(io("creating the targets directory"))?;
    let mut root = Root {
        spec_version: "1.0.0".into(),
        consistent_snapshot: true,
        version: NonZeroU64::MIN,
        expires: in_days(expiry.root_days)?,
        keys: HashMap::new(),
        roles: HashMap::new(),
        _extra: HashMap::new(),
    };
    let or_root = |v: &Vec<PathBuf>| if v.is_empty() { keys.root.clone() } else { v.clone() };
    for (role, files) in [
        (RoleType::Root, keys.root.clone()),
        (RoleType::Targets, or_root(&keys.targets)),
        (RoleType::Snapshot, or_root(&keys.snapshot)),
        (RoleType::Timestamp, or_root(&keys.timestamp)),
    ] {
        if (files.len() as u64) < threshold.get() {
            return Err(VendorError::Usage(format!("role {role} has {} keys, fewer than the threshold {threshold}", files.len())));
        }
        let mut keyids = Vec::new();
        for s in sources(&files) {
            let what = format!("{role} key");
            let key = s.as_sign().await.map_err(|e| tuf(&what)(&e))?.tuf_key();
            let id = key.key_id().map_err(|e| tuf(&what)(&e))?;
            root.keys.insert(id.clone(), key);
            keyids.push(id);
        }
        root.roles.insert(role, RoleKeys { keyids, threshold, _extra: HashMap::new() });
    }
    let signed = SignedRole::new(root.clone(), &KeyHolder::Root(root), &sources(&keys.root), &SystemRandom::new())
        .await
        .map_err(|e| tuf("signing root.json")(&e))?;
    fs::write(meta.join("1.root.json"), signed.buffer()).map_err(io("writing 1.root.json"))?;
    let all: Vec<PathBuf> = [&keys.targets, &keys.snapshot, &keys.timestamp, &keys.root].into_iter().flatten().cloned().collect();
    publish(repo, &all, expiry, &Index { format: INDEX_FORMAT, releases: Vec::new() }, &[]).await
}

/// The repository as its own vendor sees it: trusted from its first root, expired metadata
/// accepted (so that it can be refreshed).
async fn load_own(repo: &Path) -> Result<tough::Repository, VendorError> {
    let first = fs::read(metadata_dir(repo).join("1.root.json")).map_err(io(format!("reading {}/metadata/1.root.json", repo.display())))?;
    let url = |dir: PathBuf| {
        let dir = dir.canonicalize().map_err(io(format!("{}", dir.display())))?;
        Url::from_directory_path(&dir).map_err(|_| VendorError::Usage(format!("{} is not an absolute directory", dir.display())))
    };
    RepositoryLoader::new(&first, url(metadata_dir(repo))?, url(targets_dir(repo))?)
        .expiration_enforcement(ExpirationEnforcement::Unsafe)
        .load()
        .await
        .map_err(|e| VendorError::Tuf { what: format!("loading {}", repo.display()), why: error_chain(&e) })
}

/// The current index of a repository.
pub async fn read_index(repo: &Path) -> Result<Index, VendorError> {
    let loaded = load_own(repo).await?;
    read_index_of(&loaded).await
}

async fn read_index_of(loaded: &tough::Repository) -> Result<Index, VendorError> {
    let name = TargetName::new(INDEX_TARGET).map_err(|e| tuf("index name")(&e))?;
    let stream = loaded.read_target(&name).await.map_err(|e| tuf("reading the index")(&e))?;
    let bytes = match stream {
        Some(s) => s.into_vec().await.map_err(|e| tuf("reading the index")(&e))?,
        None => return Ok(Index { format: INDEX_FORMAT, releases: Vec::new() }),
    };
    Index::parse(&bytes).map_err(|e| tuf("the index")(&e))
}

/// Publishes `index` as it is (the other vendor commands edit it first).
pub async fn publish_index(repo: &Path, keys: &[PathBuf], expiry: &Expiry, index: &Index) -> Result<(), VendorError> {
    publish(repo, keys, expiry, index, &[]).await
}

/// Writes `index` and `files` as targets and signs targets, snapshot and timestamp with new
/// versions and expiries.
async fn publish(repo: &Path, keys: &[PathBuf], expiry: &Expiry, index: &Index, files: &[(String, Vec<u8>)]) -> Result<(), VendorError> {
    let (root_path, _) = latest_root(repo)?;
    let has_targets = fs::read_dir(metadata_dir(repo))
        .map_err(io("reading the metadata directory"))?
        .filter_map(Result::ok)
        .any(|e| e.file_name().to_string_lossy().ends_with(".targets.json"));
    let mut editor;
    let next = if has_targets {
        let loaded = load_own(repo).await?;
        let versions = [loaded.targets().signed.version, loaded.snapshot().signed.version, loaded.timestamp().signed.version];
        editor = RepositoryEditor::from_repo(&root_path, loaded).await.map_err(|e| tuf("editing the repository")(&e))?;
        versions.map(|v| v.saturating_add(1))
    } else {
        editor = RepositoryEditor::new(&root_path).await.map_err(|e| tuf("editing the repository")(&e))?;
        [NonZeroU64::MIN; 3]
    };
    editor
        .targets_version(next[0])
        .and_then(|e| e.targets_expires(in_days(expiry.targets_days).unwrap_or(Timestamp::now())))
        .map_err(|e| tuf("targets")(&e))?
        .snapshot_version(next[1])
        .snapshot_expires(in_days(expiry.snapshot_days)?)
        .timestamp_version(next[2])
        .timestamp_expires(in_days(expiry.timestamp_days)?);
    let stage = tempfile::tempdir().map_err(io("creating a staging directory"))?;
    let mut staged = vec![(INDEX_TARGET.to_owned(), serde_json::to_vec_pretty(index).map_err(|e| tuf("the index")(&e))?)];
    staged.extend(files.iter().cloned());
    for (name, bytes) in &staged {
        let path = stage.path().join(name);
        fs::write(&path, bytes).map_err(io(format!("staging {name}")))?;
        editor.add_target_path(&path).await.map_err(|e| tuf(name)(&e))?;
    }
    let signed = editor.sign(&sources(keys)).await.map_err(|e| VendorError::Tuf { what: "signing".into(), why: error_chain(&e) })?;
    signed.copy_targets(stage.path(), targets_dir(repo), PathExists::Skip).await.map_err(|e| tuf("copying targets")(&e))?;
    let staging = staging_dir(repo)?;
    signed.write(staging.path()).await.map_err(|e| tuf("writing metadata")(&e))?;
    move_into_place(staging.path(), &metadata_dir(repo))?;
    Ok(())
}

/// Index entries for the steps of one `step.toml` implemented by `module`, published as the
/// target `target`.
fn index_steps(steps: &ReleaseSteps, module: &[u8], target: &str) -> Vec<IndexStep> {
    let sha256 = sha256_hex(module);
    steps
        .steps
        .iter()
        .map(|m| IndexStep { api: steps.api.clone(), module: target.to_owned(), sha256: sha256.clone(), length: module.len() as u64, manifest: m.clone() })
        .collect()
}

/// Adds (or replaces) a release: its own steps (`steps`, implemented by `module`, published
/// as `release-VERSION.wasm`) and the shared steps of `includes` (the standard procedure,
/// each published once as `shared-SHA.wasm`), and its `data` files (`data-SHA`).
#[allow(clippy::too_many_arguments)]
pub async fn add_release(
    repo: &Path,
    keys: &[PathBuf],
    expiry: &Expiry,
    version: &Version,
    published: &str,
    own: Option<(&ReleaseSteps, &[u8])>,
    includes: &[(&ReleaseSteps, &[u8])],
    data: &[(String, Vec<u8>)],
) -> Result<(), VendorError> {
    let mut index = read_index(repo).await?;
    let mut steps = Vec::new();
    let mut files = Vec::new();
    if let Some((own_steps, module)) = own {
        let target = format!("release-{version}.wasm");
        steps.extend(index_steps(own_steps, module, &target));
        files.push((target, module.to_vec()));
    }
    for (shared, module) in includes {
        let target = format!("shared-{}.wasm", &sha256_hex(module)[..16]);
        steps.extend(index_steps(shared, module, &target));
        if !files.iter().any(|(t, _)| t == &target) {
            files.push((target, module.to_vec()));
        }
    }
    if steps.is_empty() {
        return Err(VendorError::Usage(format!("release {version} has no step, own or included")));
    }
    let mut data_entries = Vec::new();
    for (name, bytes) in data {
        check_data_name(name)?;
        let sha256 = sha256_hex(bytes);
        // Content-addressed: the same reference file shipped by several releases is stored once.
        let target = format!("data-{}", &sha256[..32]);
        data_entries.push(IndexData { name: name.clone(), target: target.clone(), sha256, length: bytes.len() as u64 });
        if !files.iter().any(|(t, _)| t == &target) {
            files.push((target, bytes.clone()));
        }
    }
    index.upsert(Release { version: version.clone(), published: published.to_owned(), withdrawn: None, steps, data: data_entries });
    publish(repo, keys, expiry, &index, &files).await
}

/// Data names are relative paths of plain components, so that a step asking for
/// `compose/.env` can never be handed something named outside the release's data.
fn check_data_name(name: &str) -> Result<(), VendorError> {
    let ok = !name.is_empty()
        && name.split('/').all(|c| !c.is_empty() && c != "." && c != ".." && c.chars().all(|ch| ch.is_ascii_alphanumeric() || "._-".contains(ch)));
    if ok { Ok(()) } else { Err(VendorError::Usage(format!("data file name {name:?} must be a relative path of letters, digits, '.', '_' and '-'"))) }
}

/// Every file under `dir` as (relative name, bytes), sorted by name: a release's data directory.
pub fn read_data_dir(dir: &Path) -> Result<Vec<(String, Vec<u8>)>, VendorError> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) -> Result<(), VendorError> {
        let entries = fs::read_dir(dir).map_err(io(format!("reading data directory {}", dir.display())))?;
        for entry in entries {
            let path = entry.map_err(io(format!("reading data directory {}", dir.display())))?.path();
            if path.is_dir() {
                walk(base, &path, out)?;
            } else {
                let name = path.strip_prefix(base).map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
                out.push((name, fs::read(&path).map_err(io(format!("reading data file {}", path.display())))?));
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out)?;
    out.sort();
    Ok(out)
}

/// Marks a release withdrawn: operators are told why and it is never planned.
pub async fn withdraw(repo: &Path, keys: &[PathBuf], expiry: &Expiry, version: &Version, reason: &str) -> Result<(), VendorError> {
    let mut index = read_index(repo).await?;
    let release = index.releases.iter_mut().find(|r| &r.version == version).ok_or_else(|| VendorError::Usage(format!("the repository has no release {version}")))?;
    release.withdrawn = Some(reason.to_owned());
    publish(repo, keys, expiry, &index, &[]).await
}

/// Re-signs targets, snapshot and timestamp with fresh versions and expiries.
pub async fn sign(repo: &Path, keys: &[PathBuf], expiry: &Expiry) -> Result<(), VendorError> {
    let index = read_index(repo).await?;
    publish(repo, keys, expiry, &index, &[]).await
}

/// Signs a new timestamp for the current snapshot: what a cron job runs so that clients can
/// tell a live repository from a frozen one. Needs only the timestamp key.
pub async fn refresh_timestamp(repo: &Path, timestamp_keys: &[PathBuf], days: i64) -> Result<u64, VendorError> {
    let loaded = load_own(repo).await?;
    let old = &loaded.timestamp().signed;
    let version = old.version.saturating_add(1);
    let mut ts = tough::schema::Timestamp::new("1.0.0".into(), version, in_days(days)?);
    ts.meta = old.meta.clone();
    ts._extra = old._extra.clone();
    let root = loaded.root().signed.clone();
    let signed = SignedRole::new(ts, &KeyHolder::Root(root.clone()), &sources(timestamp_keys), &SystemRandom::new())
        .await
        .map_err(|e| VendorError::Tuf { what: "signing the timestamp".into(), why: error_chain(&e) })?;
    let staging = staging_dir(repo)?;
    signed.write(staging.path(), root.consistent_snapshot).await.map_err(|e| tuf("writing timestamp.json")(&e))?;
    move_into_place(staging.path(), &metadata_dir(repo))?;
    Ok(version.get())
}

/// Replaces the root keys: writes `N+1.root.json` listing the new keys for the root role,
/// signed by the old keys (so clients trusting N accept it) and by the new ones (so it
/// satisfies its own threshold). The old keys can sign nothing after it.
pub async fn rotate_root(repo: &Path, old_keys: &[PathBuf], new_keys: &[PathBuf], expiry: &Expiry) -> Result<u64, VendorError> {
    let (path, n) = latest_root(repo)?;
    let old: Signed<Root> = serde_json::from_slice(&fs::read(&path).map_err(io(format!("reading {}", path.display())))?)
        .map_err(|e| tuf("parsing the current root")(&e))?;
    let mut new = old.signed.clone();
    new.version = old.signed.version.saturating_add(1);
    new.expires = in_days(expiry.root_days)?;
    let role = new.roles.get(&RoleType::Root).cloned().ok_or_else(|| VendorError::Usage("the root has no root role".into()))?;
    let mut keyids = Vec::new();
    for s in sources(new_keys) {
        let key = s.as_sign().await.map_err(|e| tuf("new root key")(&e))?.tuf_key();
        let id = key.key_id().map_err(|e| tuf("new root key")(&e))?;
        new.keys.insert(id.clone(), key);
        keyids.push(id);
    }
    if (keyids.len() as u64) < role.threshold.get() {
        return Err(VendorError::Usage(format!("{} new root keys are fewer than the threshold {}", keyids.len(), role.threshold)));
    }
    // Retire the old root keys unless another role still uses them.
    let still_used: Vec<_> = new.roles.iter().filter(|(r, _)| **r != RoleType::Root).flat_map(|(_, k)| k.keyids.clone()).collect();
    for id in &role.keyids {
        if !keyids.contains(id) && !still_used.contains(id) {
            new.keys.remove(id);
        }
    }
    new.roles.insert(RoleType::Root, RoleKeys { keyids, threshold: role.threshold, _extra: role._extra.clone() });
    let rng = SystemRandom::new();
    let by_new = SignedRole::new(new.clone(), &KeyHolder::Root(new.clone()), &sources(new_keys), &rng)
        .await
        .map_err(|e| VendorError::Tuf { what: "signing with the new root keys".into(), why: error_chain(&e) })?;
    let by_old = SignedRole::new(new.clone(), &KeyHolder::Root(old.signed.clone()), &sources(old_keys), &rng)
        .await
        .map_err(|e| VendorError::Tuf { what: "signing with the old root keys".into(), why: error_chain(&e) })?;
    let both = by_new.add_old_signatures(by_old.signed().signatures.clone()).map_err(|e| tuf("combining signatures")(&e))?;
    let out = metadata_dir(repo).join(format!("{}.root.json", n + 1));
    // A client may be looking for this very file: it appears whole or not at all.
    crate::capabilities::fs::atomic_replace(&out, both.buffer()).map_err(io(format!("writing {}", out.display())))?;
    Ok(n + 1)
}
