//! The root of trust that canup keeps between runs (TUF client workflow, spec §5.2–5.3).
//!
//! Why this exists beside tough: tough 0.24 starts every load from the root it is handed and
//! writes the roots it verified into its datastore, but never reads them back. Handed the
//! configured (or built-in) root each run, it would re-walk the chain from there every time.
//! That undoes a key rotation: a mirror can serve a different `2.root.json` signed by the retired
//! root key, or hide `2.root.json` and serve metadata signed by keys root 2 revoked; and every
//! routine rotation of the timestamp or snapshot key looks like a fast-forward recovery, which
//! throws away the cached timestamp and snapshot that rollback protection compares against.
//!
//! So canup does the root update itself, with tough's own types and checks (`verify_role`
//! for the threshold of the trusted root and of the new root, version exactly N+1), starting
//! from the newest root it verified before, and hands tough the result as its trusted root.
//! Each verified root is persisted before the next is fetched (atomic replace, fsync), so a
//! crash or an attack halfway never loses a rotation already followed. Nothing is weakened:
//! tough still re-checks the root it is given, walks further if the repository grew meanwhile,
//! and checks expiry. This is a thin loader rather than a `[patch]` of tough so that the
//! dependency stays the published crate and the policy stays readable in one file.
//!
//! Layout: one trust store per repository under the trust directory (`STATE/trust`), named
//! by the first 16 hex digits of the sha256 of the root that started it (the configured or
//! built-in root), so that a second repository with a root of its own neither fails against
//! the first one's chain nor mixes its roots into it. A store holds `N.root.json` for every
//! root version verified and `root.json`, a copy of the newest.
//!
//! The `N.root.json` history is the truth, not `root.json`: each run rebuilds the chain from
//! the files (the lowest version must satisfy its own keys, each N+1 a threshold of N's root
//! keys and of its own, versions without a gap) and refuses a bad link naming the file. Had
//! `root.json` alone been read, deleting it would have sent canup back to the configured root
//! 1, from where a forged `2.root.json` signed by the retired key would have been accepted and
//! written over the real one. So a missing or older `root.json` beside a saved chain is
//! rebuilt from the chain (an older one is what a crash between the two writes of `persist`
//! leaves), and a `root.json` that is none of the chain's roots is refused. The
//! configured root seeds an empty store only, and canup says so.

use std::fs;
use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use tough::schema::{RoleType, Root, Signed};
use tough::{Transport, TransportErrorKind};
use url::Url;

use super::RepoError;
use crate::error_chain;

const CURRENT: &str = "root.json";

/// How many root versions one run follows at most (tough's own default): a mirror cannot keep
/// a client walking forever.
const MAX_ROOT_UPDATES: u64 = 1024;

/// The largest root metadata file canup reads (tough's default `max_root_size`).
const MAX_ROOT_BYTES: usize = 1 << 20;

/// A verified root and the bytes it was read from (kept as served, so that the persisted file
/// is the vendor's, byte for byte).
#[derive(Debug, Clone)]
pub struct TrustedRoot {
    pub signed: Signed<Root>,
    pub bytes: Vec<u8>,
}

impl TrustedRoot {
    /// Parses a root and checks it against its own keys and threshold: a root that does not
    /// satisfy itself can be no one's start of trust.
    fn parse(bytes: Vec<u8>) -> Result<Self, String> {
        let signed: Signed<Root> = serde_json::from_slice(&bytes).map_err(|e| format!("not TUF root metadata: {e}"))?;
        signed.signed.verify_role(&signed).map_err(|e| format!("not signed by a threshold of its own root keys: {}", error_chain(&e)))?;
        Ok(Self { signed, bytes })
    }

    /// A root tough verified (it chains from ours), with the bytes to persist it as.
    pub(super) fn from_verified(signed: Signed<Root>, bytes: Vec<u8>) -> Self {
        Self { signed, bytes }
    }

    pub fn version(&self) -> u64 {
        self.signed.signed.version.get()
    }

    /// Whether two roots say the same thing (signatures aside): what "on the chain" compares.
    fn same_as(&self, other: &Self) -> bool {
        serde_json::to_value(&self.signed.signed).ok() == serde_json::to_value(&other.signed.signed).ok()
    }

    /// The key ids of a role, sorted: what decides whether that role's keys were rotated.
    fn keyids(&self, role: RoleType) -> Vec<String> {
        let mut ids: Vec<String> = self.signed.signed.roles.get(&role).map(|r| r.keyids.iter().map(hex::encode).collect()).unwrap_or_default();
        ids.sort();
        ids
    }
}

/// The outcome of a root update.
#[derive(Debug)]
pub struct Updated {
    /// The newest root the repository chains to from the trusted one.
    pub root: TrustedRoot,
    /// The timestamp or snapshot keys differ from those of the root the run started from:
    /// the cached timestamp and snapshot must go (spec §5.3.11, fast-forward recovery).
    pub fast_forward_recovery: bool,
}

/// The persisted root of trust of one repository.
#[derive(Debug, Clone)]
pub struct TrustStore {
    dir: PathBuf,
}

impl TrustStore {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The trust store of the repository whose configured (or built-in) root is `seed`, under
    /// `base` (`STATE/trust`): `base/KEY`, KEY being the first 16 hex digits of the seed's
    /// sha256. A seed met before under another key (a newer root shipped with a newer canup,
    /// already on the chain canup followed) continues that store's chain rather than starting
    /// a new one from an older point; and a store in the single-directory layout of earlier
    /// canup versions (`base/root.json`) is moved into its key when the seed is on its chain.
    pub fn for_repository(base: &Path, seed: &[u8]) -> Result<Self, RepoError> {
        let parsed = TrustedRoot::parse(seed.to_vec()).map_err(|why| RepoError::TrustedRoot { path: "configured trusted root".into(), why })?;
        let keyed = Self::new(base.join(&crate::sha256_hex(seed)[..16]));
        if keyed.dir.exists() {
            return Ok(keyed);
        }
        let on_chain = |dir: &Path| {
            fs::read(dir.join(format!("{}.root.json", parsed.version())))
                .ok()
                .and_then(|bytes| TrustedRoot::parse(bytes).ok())
                .is_some_and(|kept| kept.same_as(&parsed))
        };
        let mut others: Vec<PathBuf> = match fs::read_dir(base) {
            Ok(entries) => entries.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_dir()).collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(keyed),
            Err(e) => return Err(keyed.store_err(base, e.to_string())),
        };
        others.sort();
        if let Some(dir) = others.into_iter().find(|d| on_chain(d)) {
            tracing::info!("the configured trusted root (version {}) is on the chain kept in {}: continuing it", parsed.version(), dir.display());
            return Ok(Self::new(dir));
        }
        if on_chain(base) {
            keyed.adopt_flat_layout(base)?;
        }
        Ok(keyed)
    }

    /// Moves the roots of the single-store layout (`base/N.root.json`, `base/root.json`) into
    /// this store's directory, so that an upgrade of canup keeps the chain it followed.
    fn adopt_flat_layout(&self, base: &Path) -> Result<(), RepoError> {
        fs::create_dir_all(&self.dir).map_err(|e| self.store_err(&self.dir, e.to_string()))?;
        let entries = fs::read_dir(base).map_err(|e| self.store_err(base, e.to_string()))?;
        for entry in entries.filter_map(|e| e.ok()) {
            let name = entry.file_name();
            let is_root = name.to_str().is_some_and(|n| n == CURRENT || n.strip_suffix(".root.json").is_some_and(|v| v.parse::<u64>().is_ok()));
            if is_root && entry.path().is_file() {
                let to = self.dir.join(&name);
                fs::rename(entry.path(), &to).map_err(|e| self.store_err(&to, e.to_string()))?;
            }
        }
        tracing::warn!("moved the roots canup verified before from {} into {} (one trust store per repository)", base.display(), self.dir.display());
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn reset_hint(&self) -> String {
        format!(
            "only if the vendor confirms that the repository was re-keyed from scratch, remove {} and run again to start from the configured trusted root",
            self.dir.display()
        )
    }

    fn store_err(&self, file: &Path, why: String) -> RepoError {
        RepoError::TrustStore { path: file.display().to_string(), why, hint: self.reset_hint() }
    }

    /// The newest root verified by an earlier run, if any: the end of the saved chain.
    pub fn current(&self) -> Result<Option<TrustedRoot>, RepoError> {
        Ok(self.chain()?.pop())
    }

    /// The saved roots, oldest first, each checked against the one before it; empty when
    /// nothing was saved. A file that breaks the chain is an error naming it: dropping it
    /// silently would let whoever removed it restart trust from an older root.
    pub fn chain(&self) -> Result<Vec<TrustedRoot>, RepoError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.store_err(&self.dir, e.to_string())),
        };
        let mut versions = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| self.store_err(&self.dir, e.to_string()))?;
            let name = entry.file_name();
            if let Some(n) = name.to_str().and_then(|n| n.strip_suffix(".root.json")).and_then(|n| n.parse::<u64>().ok()) {
                versions.push(n);
            }
        }
        versions.sort_unstable();
        let mut chain: Vec<TrustedRoot> = Vec::with_capacity(versions.len());
        for n in versions {
            let path = self.dir.join(format!("{n}.root.json"));
            let bytes = fs::read(&path).map_err(|e| self.store_err(&path, e.to_string()))?;
            if let Some(prev) = chain.last() {
                if n != prev.version() + 1 {
                    return Err(self.store_err(&path, format!("the saved chain has a gap: {}.root.json is missing before it", prev.version() + 1)));
                }
                let signed: Signed<Root> = serde_json::from_slice(&bytes).map_err(|e| self.store_err(&path, format!("not TUF root metadata: {e}")))?;
                prev.signed.signed.verify_role(&signed).map_err(|e| {
                    self.store_err(
                        &path,
                        format!("not signed by a threshold of the root keys of version {} saved before it: {}", prev.version(), error_chain(&e)),
                    )
                })?;
            }
            let root = TrustedRoot::parse(bytes).map_err(|why| self.store_err(&path, why))?;
            if root.version() != n {
                return Err(self.store_err(&path, format!("says it is version {}, not {n}", root.version())));
            }
            chain.push(root);
        }
        Ok(chain)
    }

    /// Records a verified root: `N.root.json` first, then `root.json`, each atomically and
    /// synced, so that after a crash `root.json` is always a whole root that was verified.
    pub fn persist(&self, root: &TrustedRoot) -> Result<(), RepoError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |e: std::io::Error| self.store_err(&path, e.to_string())
        };
        fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        let versioned = self.dir.join(format!("{}.root.json", root.version()));
        crate::durable::atomic_replace(&versioned, &root.bytes).map_err(io(&versioned))?;
        let current = self.dir.join(CURRENT);
        crate::durable::atomic_replace(&current, &root.bytes).map_err(io(&current))
    }

    /// The root this run starts from: the newest of the saved chain, or the seed (the
    /// configured or built-in root) when the store is empty. A seed is checked against the
    /// chain: older and on the chain (or from before the chain we kept) is ignored with a log
    /// line; the same version with other content is an error; newer must be met on the way up.
    fn start(&self, seed: &[u8]) -> Result<(TrustedRoot, Option<TrustedRoot>), RepoError> {
        let seed = TrustedRoot::parse(seed.to_vec()).map_err(|why| RepoError::TrustedRoot { path: "configured trusted root".into(), why })?;
        let chain = self.chain()?;
        let current = self.dir.join(CURRENT);
        let Some(newest) = chain.last().cloned() else {
            if current.exists() {
                return Err(RepoError::TrustStore {
                    path: current.display().to_string(),
                    why: "there is no saved N.root.json history for it to be the newest of".into(),
                    hint: self.reset_hint(),
                });
            }
            tracing::warn!(
                "trust store {} is empty: starting it from the configured trusted root (version {}); later runs start from the newest root verified",
                self.dir.display(),
                seed.version()
            );
            self.persist(&seed)?;
            return Ok((seed, None));
        };
        // `root.json` is a copy of the chain's newest root. An older root of the chain there is
        // what a crash between `persist`'s two writes leaves (or an old copy put back): the
        // chain says where trust stands, so it is rebuilt. Anything else was altered.
        let rebuilt = match fs::read(&current) {
            Ok(bytes) if bytes == newest.bytes => None,
            Ok(bytes) if chain.iter().any(|r| r.bytes == bytes) => Some("an older root of the saved chain"),
            Ok(_) => {
                return Err(RepoError::TrustStore {
                    path: current.display().to_string(),
                    why: format!("it is none of the roots of the chain saved beside it (1 to {}.root.json): it was altered", newest.version()),
                    hint: format!("remove {} and run again: canup rebuilds it from the saved N.root.json files", current.display()),
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some("missing"),
            Err(e) => return Err(self.store_err(&current, e.to_string())),
        };
        if let Some(was) = rebuilt {
            tracing::warn!(
                "{} was {was}: rebuilt from the saved chain of roots ({}.root.json to {}.root.json)",
                current.display(),
                chain[0].version(),
                newest.version()
            );
            crate::durable::atomic_replace(&current, &newest.bytes).map_err(|e| self.store_err(&current, e.to_string()))?;
        }
        if seed.version() > newest.version() {
            return Ok((newest, Some(seed)));
        }
        let lowest = chain[0].version();
        if seed.version() >= lowest {
            let kept = usize::try_from(seed.version() - lowest).ok().and_then(|i| chain.get(i));
            if kept.is_some_and(|kept| !kept.same_as(&seed)) {
                return Err(RepoError::OffChain {
                    seed: seed.version(),
                    persisted: newest.version(),
                    dir: self.dir.display().to_string(),
                    hint: self.reset_hint(),
                });
            }
        }
        if seed.version() < newest.version() {
            tracing::info!(
                "the configured trusted root (version {}) is older than the root canup verified before (version {}, in {}); starting from version {}",
                seed.version(),
                newest.version(),
                self.dir.display(),
                newest.version()
            );
        }
        Ok((newest, None))
    }

    /// Follows the repository's root rotations from the trusted root (spec §5.3): fetches
    /// N+1.root.json until there is none, accepting each only when a threshold of version N's
    /// root keys and a threshold of its own signed it and its version is exactly N+1, and
    /// persisting it before going on.
    pub async fn update(&self, seed: &[u8], transport: &dyn Transport, metadata: &Url) -> Result<Updated, RepoError> {
        let (start, mut ahead) = self.start(seed)?;
        let mut root = start.clone();
        let verify = |why: String| RepoError::Verify { location: metadata.to_string(), why };
        while root.version() < start.version() + MAX_ROOT_UPDATES {
            let name = format!("{}.root.json", root.version() + 1);
            let url = metadata.join(&name).map_err(|e| verify(format!("{name}: {e}")))?;
            let Some(bytes) = fetch_bounded(transport, url).await.map_err(|e| verify(format!("fetching {name}: {e}")))? else { break };
            let signed: Signed<Root> = serde_json::from_slice(&bytes).map_err(|e| verify(format!("{name} is not TUF root metadata: {e}")))?;
            root.signed.signed.verify_role(&signed).map_err(|e| {
                verify(format!("{name} is not signed by a threshold of the root keys of version {} that canup trusts: {}", root.version(), error_chain(&e)))
            })?;
            let next = TrustedRoot::parse(bytes).map_err(|why| verify(format!("{name}: {why}")))?;
            if next.version() != root.version() + 1 {
                return Err(verify(format!("{name} says it is version {}, not {} (rollback or a misnamed file)", next.version(), root.version() + 1)));
            }
            if let Some(seed) = ahead.as_ref().filter(|s| s.version() == next.version()) {
                if !seed.same_as(&next) {
                    return Err(RepoError::OffChain {
                        seed: seed.version(),
                        persisted: start.version(),
                        dir: self.dir.display().to_string(),
                        hint: self.reset_hint(),
                    });
                }
                ahead = None;
            }
            self.persist(&next)?;
            root = next;
        }
        if let Some(seed) = ahead {
            return Err(RepoError::Verify {
                location: metadata.to_string(),
                why: format!(
                    "the configured trusted root is version {}, but the repository's roots end at version {}: the mirror is behind, or the configured root is not the vendor's",
                    seed.version(),
                    root.version()
                ),
            });
        }
        let fast_forward_recovery = [RoleType::Timestamp, RoleType::Snapshot].iter().any(|r| start.keyids(*r) != root.keyids(*r));
        Ok(Updated { root, fast_forward_recovery })
    }
}

/// A root metadata file, at most `MAX_ROOT_BYTES`; `None` when the repository has no such file.
async fn fetch_bounded(transport: &dyn Transport, url: Url) -> Result<Option<Vec<u8>>, String> {
    let mut stream = match transport.fetch(url).await {
        Ok(s) => s,
        Err(e) if e.kind() == TransportErrorKind::FileNotFound => return Ok(None),
        Err(e) => return Err(error_chain(&e)),
    };
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(chunk) => bytes.extend_from_slice(&chunk),
            Err(e) if e.kind() == TransportErrorKind::FileNotFound => return Ok(None),
            Err(e) => return Err(error_chain(&e)),
        }
        if bytes.len() > MAX_ROOT_BYTES {
            return Err(format!("larger than {MAX_ROOT_BYTES} bytes (endless data)"));
        }
    }
    Ok(Some(bytes))
}
