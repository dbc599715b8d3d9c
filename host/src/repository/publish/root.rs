//! The root of the repository: creating it, rotating any role's keys and thresholds, and the
//! offline ceremony in which several holders each sign a new root before it goes live.
//!
//! A new root N+1 must be signed by a threshold of version N's root keys (so that clients
//! trusting N follow it) and by a threshold of its own (so that it stands on its own). When the
//! root changes the keys of targets, snapshot or timestamp, what those roles signed no longer
//! verifies under it, so publishing the root re-signs them from the first changed role down
//! and moves everything into place at once: a client never sees a root whose keys signed
//! nothing yet.

use std::collections::HashMap;
use std::fs;
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};

use aws_lc_rs::rand::SystemRandom;
use tough::editor::signed::SignedRole;
use tough::schema::{KeyHolder, Role, RoleKeys, RoleType, Root, Signature, Signed};

use super::keys::{signer, sources};
use super::{Expiry, PublishError, RoleKeyFiles, in_days, io, latest_root, metadata_dir, republish, targets_dir, tuf};
use crate::error_chain;

/// Signatures needed per role.
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    pub root: u64,
    pub targets: u64,
    pub snapshot: u64,
    pub timestamp: u64,
}

impl Thresholds {
    pub fn all(n: u64) -> Self {
        Self { root: n, targets: n, snapshot: n, timestamp: n }
    }

    fn of(&self, role: RoleType) -> u64 {
        match role {
            RoleType::Root => self.root,
            RoleType::Targets => self.targets,
            RoleType::Snapshot => self.snapshot,
            _ => self.timestamp,
        }
    }
}

fn threshold(role: RoleType, n: u64, keys: usize) -> Result<NonZeroU64, PublishError> {
    let t = NonZeroU64::new(n).ok_or_else(|| PublishError::Usage(format!("the threshold of role {role} must be at least 1")))?;
    if (keys as u64) < t.get() {
        return Err(PublishError::Usage(format!("role {role} has {keys} keys, fewer than its threshold {t}: no one could ever sign it")));
    }
    Ok(t)
}

/// Gives `role` the keys of `files` with `threshold` in `root`, and drops the keys no role
/// uses any more.
async fn assign(root: &mut Root, role: RoleType, files: &[PathBuf], threshold_n: u64) -> Result<(), PublishError> {
    let threshold = threshold(role, threshold_n, files.len())?;
    let mut keyids = Vec::new();
    for file in files {
        let key = signer(file).await?.tuf_key();
        let id = key.key_id().map_err(|e| tuf(&format!("key {}", file.display()))(&e))?;
        if keyids.contains(&id) {
            return Err(PublishError::Usage(format!("key {} is given twice for role {role}", file.display())));
        }
        root.keys.insert(id.clone(), key);
        keyids.push(id);
    }
    let extra = root.roles.get(&role).map(|r| r._extra.clone()).unwrap_or_default();
    root.roles.insert(role, RoleKeys { keyids, threshold, _extra: extra });
    let used: Vec<_> = root.roles.values().flat_map(|r| r.keyids.clone()).collect();
    root.keys.retain(|id, _| used.contains(id));
    Ok(())
}

/// Creates a repository: root metadata signed by the root keys, and an empty release index
/// signed by the other roles' keys (each role uses the root keys unless given its own).
pub async fn init(repo: &Path, keys: &RoleKeyFiles, thresholds: &Thresholds, expiry: &Expiry) -> Result<(), PublishError> {
    let meta = metadata_dir(repo);
    if meta.join("1.root.json").exists() {
        return Err(PublishError::Usage(format!("{} already holds a repository", repo.display())));
    }
    if keys.root.is_empty() {
        return Err(PublishError::Usage("at least one root key is needed (--root-key)".into()));
    }
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
        assign(&mut root, role, &files, thresholds.of(role)).await?;
    }
    let signed =
        SignedRole::new(root.clone(), &KeyHolder::Root(root), &sources(&keys.root), &SystemRandom::new()).await.map_err(|e| tuf("signing root.json")(&e))?;
    signed
        .signed()
        .signed
        .verify_role(signed.signed())
        .map_err(|e| PublishError::Tuf { what: "signing root.json (pass as many --root-key as its threshold)".into(), why: error_chain(&e) })?;
    fs::create_dir_all(&meta).map_err(io(format!("creating {}", meta.display())))?;
    fs::create_dir_all(targets_dir(repo)).map_err(io("creating the targets directory"))?;
    fs::write(meta.join("1.root.json"), signed.buffer()).map_err(io("writing 1.root.json"))?;
    let all: Vec<PathBuf> = [&keys.targets, &keys.snapshot, &keys.timestamp, &keys.root].into_iter().flatten().cloned().collect();
    super::publish_index(repo, &all, expiry, &super::Index { format: super::INDEX_FORMAT, ..Default::default() }).await
}

/// A change of one role's keys (and threshold; unchanged when `None`).
#[derive(Debug, Clone)]
pub struct RoleChange {
    pub role: RoleType,
    pub keys: Vec<PathBuf>,
    pub threshold: Option<u64>,
}

fn read_root(path: &Path) -> Result<Signed<Root>, PublishError> {
    let bytes = fs::read(path).map_err(io(format!("reading {}", path.display())))?;
    serde_json::from_slice(&bytes).map_err(|e| tuf(&format!("parsing {}", path.display()))(&e))
}

/// The repository's newest root.
fn current_root(repo: &Path) -> Result<Signed<Root>, PublishError> {
    read_root(&latest_root(repo)?.0)
}

/// The next root with `changes` applied, version N+1, a fresh expiry, and no signature yet.
pub async fn propose(repo: &Path, changes: &[RoleChange], expiry: &Expiry) -> Result<Signed<Root>, PublishError> {
    let current = current_root(repo)?;
    let mut next = current.signed.clone();
    next.version = current.signed.version.saturating_add(1);
    next.expires = in_days(expiry.root_days)?;
    for change in changes {
        let old = next.roles.get(&change.role).map(|r| r.threshold.get()).unwrap_or(1);
        assign(&mut next, change.role, &change.keys, change.threshold.unwrap_or(old)).await?;
    }
    Ok(Signed { signed: next, signatures: Vec::new() })
}

/// Adds the signatures of `keys` to a candidate root. Each key must be a root key of the
/// current root or of the candidate: any other signature would only be noise for clients.
pub async fn add_signatures(repo: &Path, candidate: &mut Signed<Root>, keys: &[PathBuf]) -> Result<(), PublishError> {
    let current = current_root(repo)?;
    let data = candidate.signed.canonical_form().map_err(|e| tuf("the candidate root")(&e))?;
    let rng = SystemRandom::new();
    for file in keys {
        let sign = signer(file).await?;
        let is_root_key = |root: &Root| root.key_id(sign.as_ref()).filter(|id| root.roles.get(&RoleType::Root).is_some_and(|r| r.keyids.contains(id)));
        let Some(keyid) = is_root_key(&candidate.signed).or_else(|| is_root_key(&current.signed)) else {
            return Err(PublishError::Usage(format!(
                "key {} is a root key of neither the current root (version {}) nor the new one",
                file.display(),
                current.signed.version
            )));
        };
        if candidate.signatures.iter().any(|s| s.keyid == keyid) {
            continue;
        }
        let sig = sign.sign(&data, &rng).await.map_err(|e| PublishError::Tuf { what: format!("signing with {}", file.display()), why: e.to_string() })?;
        candidate.signatures.push(Signature { keyid, sig: sig.into() });
    }
    Ok(())
}

/// Where a candidate root stands: what is still missing before it can be published.
pub fn missing_signatures(repo: &Path, candidate: &Signed<Root>) -> Result<Vec<String>, PublishError> {
    missing_against(&current_root(repo)?, candidate)
}

fn missing_against(current: &Signed<Root>, candidate: &Signed<Root>) -> Result<Vec<String>, PublishError> {
    let mut missing = Vec::new();
    if candidate.signed.version.get() != current.signed.version.get() + 1 {
        return Err(PublishError::Usage(format!(
            "the candidate root is version {}, but the repository's newest root is version {}: a new root must be exactly the next version",
            candidate.signed.version, current.signed.version
        )));
    }
    if let Err(e) = current.signed.verify_role(candidate) {
        missing.push(format!("the current root keys (version {}): {e}", current.signed.version));
    }
    if let Err(e) = candidate.signed.verify_role(candidate) {
        missing.push(format!("the new root keys (version {}): {e}", candidate.signed.version));
    }
    Ok(missing)
}

/// Publishes a fully signed candidate root, re-signing (with `keys`) the roles whose keys
/// it changed.
pub async fn publish_root(repo: &Path, candidate: &Signed<Root>, keys: &[PathBuf], expiry: &Expiry) -> Result<u64, PublishError> {
    let current = current_root(repo)?;
    let missing = missing_against(&current, candidate)?;
    if !missing.is_empty() {
        return Err(PublishError::Usage(format!(
            "the new root is not signed by enough keys yet: {}; add them with `canup repo sign-root`",
            missing.join("; ")
        )));
    }
    let changed = |role: RoleType| current.signed.roles.get(&role) != candidate.signed.roles.get(&role);
    let from = [RoleType::Targets, RoleType::Snapshot, RoleType::Timestamp].into_iter().find(|r| changed(*r)).unwrap_or(RoleType::Root);
    if from != RoleType::Root && keys.is_empty() {
        return Err(PublishError::Usage(format!(
            "the new root changes the {from} keys, so {from} and what follows it must be re-signed in the same publication: pass their new keys with --key"
        )));
    }
    republish(repo, Some(candidate), keys, expiry, from, None).await?;
    Ok(candidate.signed.version.get())
}

/// Writes a candidate root to a file, for the holders of the root keys to sign one by one.
pub fn write_candidate(path: &Path, candidate: &Signed<Root>) -> Result<(), PublishError> {
    let bytes = serde_json::to_vec_pretty(candidate).map_err(|e| tuf("the candidate root")(&e))?;
    crate::durable::atomic_replace(path, &bytes).map_err(io(format!("writing {}", path.display())))
}

pub fn read_candidate(path: &Path) -> Result<Signed<Root>, PublishError> {
    read_root(path)
}

/// The one-step rotation, when the vendor holds every key needed: proposes the change,
/// signs it with `root_keys` (and with the new root keys when the root role changes), and
/// publishes it. Returns the new root's version.
pub async fn rotate(repo: &Path, changes: &[RoleChange], root_keys: &[PathBuf], keys: &[PathBuf], expiry: &Expiry) -> Result<u64, PublishError> {
    let mut candidate = propose(repo, changes, expiry).await?;
    let mut signers = root_keys.to_vec();
    signers.extend(changes.iter().filter(|c| c.role == RoleType::Root).flat_map(|c| c.keys.clone()));
    signers.dedup();
    add_signatures(repo, &mut candidate, &signers).await?;
    publish_root(repo, &candidate, keys, expiry).await
}

/// Replaces the root keys: `N+1.root.json` signed by the old keys and the new ones. The old
/// keys can sign nothing after it (unless another role still uses them).
pub async fn rotate_root(repo: &Path, old_keys: &[PathBuf], new_keys: &[PathBuf], expiry: &Expiry) -> Result<u64, PublishError> {
    rotate(repo, &[RoleChange { role: RoleType::Root, keys: new_keys.to_vec(), threshold: None }], old_keys, &[], expiry).await
}
