//! The client-under-test for the public TUF conformance suite
//! (github.com/theupdateframework/tuf-conformance, protocol in its `CLIENT-CLI.md`).
//!
//! Why this exists: canup trusts its release repository through TUF, and the suite is the
//! independent check that the client code canup ships follows the TUF client workflow. So this
//! is canup's own code behind the suite's CLI, not a client of its own: the root chain goes
//! through `canup::repository::trust::TrustStore::update` (canup's checks: thresholds of the
//! old and the new root, version exactly N+1, fast-forward recovery on timestamp or snapshot
//! key rotation), then timestamp, snapshot, targets and delegations through tough's
//! `RepositoryLoader` with a datastore, over canup's `ResumingTransport`, as
//! `Repository::open` does; artifacts come from `tough::Repository::read_target`.
//!
//! Run it with `cargo xtask tuf-conformance DIR` (DIR: a checkout of tuf-conformance); the
//! expected failures, each with its reason, are in `tests/tuf/canup-tuf-client.xfails`.
//!
//! The suite reads `--metadata-dir` as "the metadata the client trusts": unversioned
//! `ROLE.json` files only, byte for byte as served. canup's stores do not look like that, so
//! each run works in a fresh temporary directory (the trust store, seeded with
//! `METADATA_DIR/root.json`, and tough's datastore, seeded with the trusted timestamp and
//! snapshot for rollback checks) and then copies into `METADATA_DIR` every role that canup or
//! tough accepted in this run, also when a later role failed, using the bytes the server sent.
//!
//! What it deliberately does not do:
//! - paper over tough's behaviour where it differs from the suite's expectations (eager
//!   loading of all delegated roles in its own order, re-downloading a snapshot and targets
//!   whose versions did not change, ...): those tests are listed as expected failures instead;
//! - keep tough's `latest_known_time.json` between runs (the suite moves the clock backwards
//!   with faketime between runs, which tough would rightly refuse), nor the trust store's
//!   `N.root.json` history: each run starts from `METADATA_DIR`;
//! - retry: one HTTP request per file, so that the request log the suite checks is exact.
//!   The only repeat it suppresses is a second request for a file the server has just answered
//!   "not found" (TrustStore and tough both probe `N+1.root.json`);
//! - remove delegated-role files from `METADATA_DIR` when a role disappears.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};
use canup::durable::atomic_replace;
use canup::repository::ResumingTransport;
use canup::repository::trust::TrustStore;
use futures_util::StreamExt;
use sha2::{Digest, Sha256, Sha512};
use tough::schema::Target;
use tough::{IntoVec, Repository, RepositoryLoader, TargetName, Transport, TransportError, TransportErrorKind, TransportStream};
use url::Url;

#[derive(Default)]
struct Args {
    metadata_dir: Option<PathBuf>,
    metadata_url: Option<String>,
    target_names: Vec<String>,
    target_dir: Option<PathBuf>,
    target_base_url: Option<String>,
    command: Vec<String>,
}

fn parse_args(argv: impl IntoIterator<Item = String>) -> Result<Args> {
    fn value(it: &mut impl Iterator<Item = String>, opt: &str) -> Result<String> {
        it.next().with_context(|| format!("{opt} needs a value"))
    }
    let mut a = Args::default();
    let mut it = argv.into_iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--metadata-dir" => a.metadata_dir = Some(value(&mut it, &arg)?.into()),
            "--metadata-url" => a.metadata_url = Some(value(&mut it, &arg)?),
            "--target-name" => a.target_names.push(value(&mut it, &arg)?),
            "--target-dir" => a.target_dir = Some(value(&mut it, &arg)?.into()),
            "--target-base-url" => a.target_base_url = Some(value(&mut it, &arg)?),
            s if s.starts_with("--") => bail!("unknown option {s}"),
            _ => a.command.push(arg),
        }
    }
    Ok(a)
}

/// A base URL as the suite gives it (percent-encoded test name), with the trailing slash
/// that makes `join` resolve below it.
fn base_url(s: Option<&String>, opt: &str) -> Result<Url> {
    let s = s.with_context(|| format!("{opt} is required"))?;
    let s = if s.ends_with('/') { s.clone() } else { format!("{s}/") };
    Url::parse(&s).with_context(|| format!("{opt} {s:?}"))
}

/// A library error with every message of its source chain (tough nests the telling part).
fn chain(e: &(dyn std::error::Error + 'static)) -> anyhow::Error {
    anyhow!(canup::error_chain(e))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `signed.version` of a metadata file, without trusting anything else in it.
fn signed_version(bytes: &[u8]) -> Option<u64> {
    serde_json::from_slice::<serde_json::Value>(bytes).ok()?.get("signed")?.get("version")?.as_u64()
}

/// canup's transport, keeping the body of every file it served completely (tough's datastore
/// holds re-serialized JSON; the suite wants the server's bytes) and the files it answered
/// "not found" in this run.
/// A URL and the body the server sent for it.
type Served = (Url, Vec<u8>);

#[derive(Debug, Clone)]
struct Recording {
    inner: ResumingTransport,
    served: Arc<Mutex<Vec<Served>>>,
    missing: Arc<Mutex<HashSet<Url>>>,
}

impl Recording {
    /// The body served as `file` (`N.file` with consistent snapshots) whose version is `version`.
    fn served(&self, file: &str, version: u64) -> Option<Vec<u8>> {
        let served = lock(&self.served);
        let named = |url: &Url| {
            let seg = url.path_segments().and_then(|mut s| s.next_back()).unwrap_or_default();
            seg == file || seg.split_once('.').is_some_and(|(n, rest)| rest == file && n.parse::<u64>().is_ok())
        };
        served.iter().rev().find(|(url, body)| named(url) && signed_version(body) == Some(version)).map(|(_, body)| body.clone())
    }
}

#[tough::async_trait]
impl Transport for Recording {
    async fn fetch(&self, url: Url) -> Result<TransportStream, TransportError> {
        let known_missing = lock(&self.missing).contains(&url);
        if known_missing {
            return Err(TransportError::new(TransportErrorKind::FileNotFound, url));
        }
        let stream = match self.inner.fetch(url.clone()).await {
            Ok(stream) => stream,
            Err(e) => {
                if e.kind() == TransportErrorKind::FileNotFound {
                    lock(&self.missing).insert(url);
                }
                return Err(e);
            }
        };
        // Tee: the consumer (tough, with its size and digest checks) sees the stream as it
        // comes; the body is recorded only once it ended cleanly.
        let served = Arc::clone(&self.served);
        let tee = futures_util::stream::unfold(Some((stream, Vec::new())), move |state| {
            let (served, url) = (Arc::clone(&served), url.clone());
            async move {
                let (mut stream, mut body) = state?;
                match stream.next().await {
                    Some(Ok(chunk)) => {
                        body.extend_from_slice(&chunk);
                        Some((Ok(chunk), Some((stream, body))))
                    }
                    Some(Err(e)) => Some((Err(e), None)),
                    None => {
                        lock(&served).push((url, body));
                        None
                    }
                }
            }
        });
        Ok(Box::pin(tee))
    }
}

/// The newest root the trust store accepted becomes `METADATA_DIR/root.json`, as served.
fn adopt_root(dir: &Path, trust: &Path) -> Result<()> {
    let Ok(newest) = fs::read(trust.join("root.json")) else { return Ok(()) };
    let current = fs::read(dir.join("root.json")).ok().and_then(|b| signed_version(&b));
    let version = signed_version(&newest);
    if version > current {
        atomic_replace(&dir.join("root.json"), &newest).context("writing root.json")?;
        eprintln!("trusted: root.json version {}", version.unwrap_or_default());
    }
    Ok(())
}

/// Every role tough verified and stored in its datastore in this run (it stores each only
/// after all its checks) becomes `METADATA_DIR/ROLE.json`, with the bytes the server sent.
fn adopt_roles(dir: &Path, tuf: &Path, seeded: &HashMap<String, Vec<u8>>, transport: &Recording, consistent: bool) -> Result<()> {
    for entry in fs::read_dir(tuf).context("reading tough's datastore")? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".json") || name == "root.json" || name == "latest_known_time.json" {
            continue;
        }
        let stored = fs::read(entry.path())?;
        let Some(version) = signed_version(&stored) else { continue };
        if seeded.get(&name) == Some(&stored) {
            continue; // the trusted copy we seeded, untouched
        }
        // Delegated roles are stored as `N.ROLE.json` (ROLE percent-encoded) with consistent snapshots.
        let role_file = match name.split_once('.') {
            Some((n, rest)) if consistent && n.parse::<u64>().is_ok() => rest.to_owned(),
            _ => name.clone(),
        };
        let bytes = transport.served(&name, version).unwrap_or(stored);
        atomic_replace(&dir.join(&role_file), &bytes).with_context(|| format!("writing {role_file}"))?;
        eprintln!("trusted: {role_file} version {version}");
    }
    Ok(())
}

/// The TUF client workflow through canup's code; `work` must outlive the returned repository
/// (tough keeps using its datastore there).
async fn refresh(dir: &Path, metadata: &Url, targets: &Url, work: &Path) -> Result<Repository> {
    let seed = fs::read(dir.join("root.json")).with_context(|| format!("reading {}", dir.join("root.json").display()))?;
    let (trust, tuf) = (work.join("trust"), work.join("tuf"));
    fs::create_dir_all(&tuf).context("creating tough's datastore")?;
    let transport =
        Recording { inner: ResumingTransport::new(Duration::from_secs(30), 1).map_err(|e| anyhow!(e))?, served: Arc::default(), missing: Arc::default() };

    let updated = TrustStore::new(&trust).update(&seed, &transport, metadata).await;
    adopt_root(dir, &trust)?; // roots accepted before a failing one stay trusted
    let updated = updated.map_err(|e| chain(&e)).context("updating the root")?;
    let root = &updated.root;
    eprintln!("root: version {}{}", root.version(), if updated.fast_forward_recovery { " (timestamp or snapshot keys rotated)" } else { "" });

    let mut seeded = HashMap::new();
    for name in ["timestamp.json", "snapshot.json"] {
        let trusted = dir.join(name);
        if updated.fast_forward_recovery {
            // As Repository::open does with its cache: the old versions no longer bound the new.
            match fs::remove_file(&trusted) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e).with_context(|| format!("removing {name}")),
                _ => {}
            }
        } else if let Ok(bytes) = fs::read(&trusted) {
            fs::write(tuf.join(name), &bytes).with_context(|| format!("seeding {name}"))?;
            seeded.insert(name.to_owned(), bytes);
        }
    }

    let loaded = RepositoryLoader::new(&root.bytes, metadata.clone(), targets.clone()).transport(transport.clone()).datastore(tuf.clone()).load().await;
    adopt_roles(dir, &tuf, &seeded, &transport, root.signed.signed.consistent_snapshot)?;
    loaded.map_err(|e| chain(&e)).context("loading timestamp, snapshot and targets")
}

/// Known digests of an artifact against its signed entry: length and sha256 (what tough
/// checks) and sha512 when listed. Other algorithms are ignored, as tough does.
fn verify(target: &Target, bytes: &[u8]) -> Result<()> {
    ensure!(bytes.len() as u64 == target.length, "length {} instead of the signed {}", bytes.len(), target.length);
    ensure!(Sha256::digest(bytes).as_slice() == &target.hashes.sha256[..], "sha256 differs from the signed one");
    if let Some(want) = target.hashes._extra.get("sha512") {
        let got = format!("{:x}", Sha512::digest(bytes));
        ensure!(want.as_str().is_some_and(|w| w.eq_ignore_ascii_case(&got)), "sha512 differs from the signed one");
    }
    Ok(())
}

/// One file per target name, directly in the target directory: the name percent-encoded
/// (everything but ASCII letters, digits and `_.-~`), so `a/b` and `../x` stay inside.
fn artifact_path(target_dir: &Path, name: &str) -> Result<PathBuf> {
    ensure!(!name.is_empty(), "empty target name");
    let only_dots = name.bytes().all(|b| b == b'.');
    let mut file = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"_-~".contains(&b) || (b == b'.' && !only_dots) {
            file.push(char::from(b));
        } else {
            file.push_str(&format!("%{b:02X}"));
        }
    }
    Ok(target_dir.join(file))
}

async fn download(repo: &Repository, names: &[String], target_dir: &Path) -> Result<()> {
    fs::create_dir_all(target_dir).with_context(|| format!("creating {}", target_dir.display()))?;
    for raw in names {
        let what = || format!("target {raw:?}");
        let name = TargetName::new(raw.as_str()).map_err(|e| chain(&e)).with_context(what)?;
        let target = repo.targets().signed.find_target(&name, false).map_err(|e| chain(&e)).with_context(what)?;
        let path = artifact_path(target_dir, raw)?;
        if fs::read(&path).is_ok_and(|cached| verify(target, &cached).is_ok()) {
            eprintln!("{raw}: already downloaded as {}", path.display());
            continue;
        }
        let stream = repo.read_target(&name).await.map_err(|e| chain(&e)).with_context(what)?;
        let stream = stream.with_context(|| format!("{} is not listed in the trusted targets", what()))?;
        // tough checks the length bound and sha256 while streaming: the bytes count only
        // once the stream ended cleanly.
        let bytes = stream.into_vec().await.map_err(|e| chain(&e)).with_context(what)?;
        verify(target, &bytes).with_context(what)?;
        atomic_replace(&path, &bytes).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("{raw}: downloaded to {}", path.display());
    }
    Ok(())
}

async fn run(args: Args) -> Result<()> {
    let dir = args.metadata_dir.clone().context("--metadata-dir is required")?;
    let command: Vec<&str> = args.command.iter().map(String::as_str).collect();
    match command.as_slice() {
        ["init", root] => {
            // The protocol asks for no checks here: the first refresh verifies the root.
            let bytes = fs::read(root).with_context(|| format!("reading {root}"))?;
            fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            atomic_replace(&dir.join("root.json"), &bytes).context("writing root.json")
        }
        ["refresh"] => {
            let metadata = base_url(args.metadata_url.as_ref(), "--metadata-url")?;
            let work = tempfile::tempdir().context("creating a work directory")?;
            // No artifact is fetched: the metadata URL stands in for the unused targets URL.
            refresh(&dir, &metadata, &metadata, work.path()).await.map(drop)
        }
        ["download"] => {
            let metadata = base_url(args.metadata_url.as_ref(), "--metadata-url")?;
            let targets = base_url(args.target_base_url.as_ref(), "--target-base-url")?;
            let target_dir = args.target_dir.as_deref().context("--target-dir is required")?;
            ensure!(!args.target_names.is_empty(), "--target-name is required");
            let work = tempfile::tempdir().context("creating a work directory")?;
            let repo = refresh(&dir, &metadata, &targets, work.path()).await?;
            download(&repo, &args.target_names, target_dir).await
        }
        _ => bail!(
            "usage: canup-tuf-client --metadata-dir DIR [--metadata-url URL] [--target-name NAME]... [--target-dir DIR] [--target-base-url URL] <init ROOT | refresh | download>"
        ),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let result = match parse_args(std::env::args().skip(1)) {
        Ok(args) => run(args).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("canup-tuf-client: {e:#}");
            ExitCode::FAILURE
        }
    }
}
