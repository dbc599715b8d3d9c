//! The signed release repository under attack. Each test serves a repository published with
//! the real vendor commands from a real HTTP server on 127.0.0.1, tampers with it the way an
//! attacker or a broken mirror would, and asserts the error message, that no step ran (the
//! simulated host and its call log are untouched) and that the local cache holds nothing the
//! attack brought.

use std::path::{Path, PathBuf};
use std::time::Duration;

use canup::manifest::{Edition, Method};
use canup::repository::publish::{self, Expiry, RoleKeyFiles};
use canup::repository::{Index, LoadOptions, Repository};
use canup::sandbox::Sandbox;
use canup_tests::repo_server::{Control, Fault, serve_repo};
use canup_tests::simhost::{SimHost, Spec};
use canup_tests::steprun::{self, Setting};

use semver::Version;

fn pristine() -> &'static (PathBuf, PathBuf) {
    canup_tests::pristine_repo()
}

fn copy_dir(from: &Path, to: &Path) {
    canup_tests::copy_dir(from, to).unwrap();
}

struct Case {
    _dir: tempfile::TempDir,
    repo: PathBuf,
    key: PathBuf,
    cache: PathBuf,
    sim: SimHost,
    pristine_tree: std::collections::BTreeMap<String, String>,
    control: Control,
    url: String,
}

async fn case() -> Case {
    let (pristine_repo, key) = pristine();
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    copy_dir(pristine_repo, &repo);
    let sim = SimHost::create(&dir.path().join("root"), &Spec::default(), &canup_tests::sim_bin()).unwrap();
    let pristine_tree = sim.snapshot().unwrap();
    let control = Control::default();
    let url = serve_repo(repo.clone(), control.clone()).await;
    Case { cache: dir.path().join("cache"), repo, key: key.clone(), sim, pristine_tree, control, url, _dir: dir }
}

fn options() -> LoadOptions {
    LoadOptions { timeout: Duration::from_secs(10), tries: 3, allow_expired: false }
}

impl Case {
    fn root(&self) -> Vec<u8> {
        std::fs::read(self.repo.join("metadata/1.root.json")).unwrap()
    }

    fn expiry(&self) -> Expiry {
        Expiry::default()
    }

    /// The file of a target as served (consistent snapshot: `SHA256.NAME`), from the newest
    /// signed targets metadata.
    fn target_file(&self, name: &str) -> String {
        let newest = std::fs::read_dir(self.repo.join("metadata"))
            .unwrap()
            .filter_map(|e| {
                let f = e.unwrap().file_name().to_string_lossy().into_owned();
                f.strip_suffix(".targets.json").and_then(|n| n.parse::<u64>().ok()).map(|n| (n, f))
            })
            .max()
            .unwrap()
            .1;
        let targets: serde_json::Value = serde_json::from_slice(&std::fs::read(self.repo.join("metadata").join(newest)).unwrap()).unwrap();
        let sha = targets["signed"]["targets"][name]["hashes"]["sha256"].as_str().unwrap_or_else(|| panic!("no target {name}"));
        format!("targets/{sha}.{name}")
    }

    /// What an operator's upgrade does with a repository: verify, read the index, fetch each
    /// packages step's module, run it on the simulated host.
    async fn upgrade(&self, location: &str) -> Result<usize, String> {
        let repo = Repository::open(location, &self.root(), &self.cache, &self.cache.join("trust"), &options()).await.map_err(|e| e.to_string())?;
        let index = repo.index().await.map_err(|e| e.to_string())?;
        let sandbox = Sandbox::new(None).map_err(|e| e.to_string())?;
        let mut ran = 0;
        // The 3.40.0 release's own steps: what matters here is that no module runs unverified.
        for release in index.releases.iter().filter(|r| r.version == Version::new(3, 40, 0)) {
            for step in release.steps.iter().filter(|s| s.manifest.methods.contains(&Method::Packages) && s.manifest.id.starts_with("3.40.0/")) {
                let wasm = repo.module(step).await.map_err(|e| e.to_string())?;
                let loaded = sandbox.load(&step.manifest.id, &wasm, &step.api).map_err(|e| e.to_string())?;
                let setting = Setting {
                    installed: Version::new(3, 39, 0),
                    target: release.version.clone(),
                    release: release.version.clone(),
                    edition: Edition::Core,
                    method: Method::Packages,
                    endpoints: Default::default(),
                    settings: Default::default(),
                    data: Default::default(),
                };
                let (report, _) = steprun::run(&sandbox, &loaded, &step.manifest, self.sim.root(), &self.cache.join("state"), &setting).await;
                report.result.map_err(|e| e.to_string())?;
                ran += 1;
            }
        }
        Ok(ran)
    }

    fn cached_modules(&self) -> Vec<String> {
        std::fs::read_dir(self.cache.join("modules")).map(|d| d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()).unwrap_or_default()
    }

    /// The attack's promises: the error names the problem, no step ran, the cache is clean.
    async fn refused(&self, expected: &[&str]) -> String {
        let err = match self.upgrade(&self.url).await {
            Ok(n) => panic!("the attack went through: {n} steps ran"),
            Err(e) => e,
        };
        for part in expected {
            assert!(err.contains(part), "expected {part:?} in: {err}");
        }
        // Metadata is verified before any step; a module or the index after detection.
        assert!(err.to_lowercase().contains("no step ran") || err.contains("target "), "{err}");
        assert_eq!(self.sim.snapshot().unwrap(), self.pristine_tree, "a step changed the host");
        assert!(self.sim.calls().unwrap().is_empty(), "a step ran a command");
        assert!(self.cached_modules().is_empty(), "the cache kept {:?}", self.cached_modules());
        err
    }

    /// The newest version of a role's metadata file (`N.targets.json`, `N.snapshot.json`).
    fn newest(&self, role: &str) -> u64 {
        std::fs::read_dir(self.repo.join("metadata"))
            .unwrap()
            .filter_map(|e| e.unwrap().file_name().to_string_lossy().strip_suffix(&format!(".{role}.json")).and_then(|n| n.parse().ok()))
            .max()
            .unwrap()
    }

    /// The TUF cache's timestamp version, if any.
    fn cached_timestamp_version(&self) -> Option<u64> {
        let bytes = std::fs::read(self.cache.join("tuf/timestamp.json")).ok()?;
        let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        v["signed"]["version"].as_u64()
    }
}

fn flip_byte(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let i = bytes.len() / 2;
    bytes[i] ^= 0x20;
    std::fs::write(path, bytes).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_repository_verifies_over_http_and_its_steps_run() {
    let c = case().await;
    let repo = Repository::open(&c.url, &c.root(), &c.cache, &c.cache.join("trust"), &options()).await.unwrap();
    let index: Index = repo.index().await.unwrap();
    let release = index.release(&Version::new(3, 40, 0)).expect("3.40.0 is published");
    assert_eq!(release.published, "2020-05-04");
    assert_eq!(release.steps[0].manifest.id, "3.40.0/webserver-services");
    assert_eq!(release.steps[0].module, "release-3.40.0.wasm");
    assert_eq!(c.upgrade(&c.url).await, Ok(1));
    let conf = c.sim.read("/opt/canopsis/etc/webserver.conf").unwrap();
    assert!(conf.ends_with("canopsis.webcore.services.metaalarmrule=1\ncanopsis.webcore.services.broadcast_message=1\n"), "{conf}");
    assert_eq!(c.sim.calls().unwrap().iter().map(|c| c.line()).collect::<Vec<_>>(), ["canoctl restart"]);
    assert_eq!(c.cached_modules().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_air_gapped_directory_or_file_url_works_too() {
    let c = case().await;
    assert_eq!(c.upgrade(c.repo.to_str().unwrap()).await, Ok(1));
    assert_eq!(c.upgrade(&format!("file://{}", c.repo.display())).await, Ok(1), "the second run is idempotent");
    assert_eq!(c.sim.calls().unwrap().len(), 1, "the restart ran once: the second run changed nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_module_is_refused() {
    let c = case().await;
    flip_byte(&c.repo.join(c.target_file("release-3.40.0.wasm")));
    c.refused(&["Hash mismatch for", "release-3.40.0.wasm: calculated"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_index_is_refused() {
    let c = case().await;
    let path = c.repo.join(c.target_file("index.json"));
    let text = std::fs::read_to_string(&path).unwrap().replace("\"canoctl\"", "\"/bin/sh\"").replace("2020-05-04", "2020-05-05");
    std::fs::write(&path, text).unwrap();
    c.refused(&["Hash mismatch for", "index.json: calculated"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_not_listed_in_the_signed_targets_is_refused() {
    let c = case().await;
    // A (buggy or compromised-index) release pointing at a file the targets never signed.
    let mut index = publish::read_index(&c.repo).await.unwrap();
    let release = index.releases.iter_mut().find(|r| r.version == Version::new(3, 40, 0)).unwrap();
    release.steps[0].module = "ghost.wasm".into();
    publish::publish_index(&c.repo, std::slice::from_ref(&c.key), &c.expiry(), &index).await.unwrap();
    std::fs::write(c.repo.join("targets/ghost.wasm"), b"\0asm").unwrap();
    let err = match c.upgrade(&c.url).await {
        Ok(_) => panic!("ran an unlisted module"),
        Err(e) => e,
    };
    assert!(err.contains("module ghost.wasm of step 3.40.0/webserver-services is not listed in the signed targets"), "{err}");
    assert_eq!(c.sim.snapshot().unwrap(), c.pristine_tree);
    assert!(c.cached_modules().is_empty());
    assert_eq!(c.control.hits("targets/ghost.wasm"), 0, "the unlisted file was not even fetched");
}

/// Publishes the same content in a second repository signed by the attacker's own key.
async fn attacker_repo(c: &Case) -> PathBuf {
    let attacker = c.repo.parent().unwrap().join("attacker");
    let key = c.repo.parent().unwrap().join("attacker.key");
    publish::keygen(&key).await.unwrap();
    publish::init(&attacker, &RoleKeyFiles { root: vec![key.clone()], ..Default::default() }, &publish::Thresholds::all(1), &c.expiry()).await.unwrap();
    let index = publish::read_index(&c.repo).await.unwrap();
    for _ in 0..3 {
        // Push the attacker's versions above the real ones.
        publish::publish_index(&attacker, std::slice::from_ref(&key), &c.expiry(), &index).await.unwrap();
    }
    attacker
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_signed_by_an_unknown_key_is_refused() {
    let c = case().await;
    let attacker = attacker_repo(&c).await;
    c.control.fault("metadata/timestamp.json", Fault::Replace(std::fs::read(attacker.join("metadata/timestamp.json")).unwrap()));
    c.refused(&["Failed to verify timestamp metadata: Signature threshold of 1 not met for role timestamp (0 valid signatures)"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signature_threshold_not_met_is_refused() {
    let c = case().await;
    // A repository whose roles need two signatures; the mirror drops one of them.
    let dir = c.repo.parent().unwrap().join("two-key");
    let keys = [dir.with_extension("k1"), dir.with_extension("k2")];
    for k in &keys {
        publish::keygen(k).await.unwrap();
    }
    publish::init(&dir, &RoleKeyFiles { root: keys.to_vec(), ..Default::default() }, &publish::Thresholds::all(2), &c.expiry()).await.unwrap();
    let mut ts: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("metadata/timestamp.json")).unwrap()).unwrap();
    ts["signatures"].as_array_mut().unwrap().pop();
    let served = Control::default();
    served.fault("metadata/timestamp.json", Fault::Replace(serde_json::to_vec(&ts).unwrap()));
    let url = serve_repo(dir.clone(), served).await;
    let root = std::fs::read(dir.join("metadata/1.root.json")).unwrap();
    let err = Repository::open(&url, &root, &c.cache, &c.cache.join("trust"), &options()).await.unwrap_err().to_string();
    assert!(err.contains("Signature threshold of 2 not met for role timestamp (1 valid signatures)"), "{err}");
    assert!(c.cached_timestamp_version().is_none(), "the rejected timestamp was cached");
    // With both signatures it loads: the threshold, not the key, was the problem.
    let ok = serve_repo(dir.clone(), Control::default()).await;
    Repository::open(&ok, &root, &c.cache, &c.cache.join("trust"), &options()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_timestamp_is_refused() {
    let c = case().await;
    publish::refresh_timestamp(&c.repo, std::slice::from_ref(&c.key), -1).await.unwrap();
    c.refused(&["timestamp metadata is expired"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_snapshot_is_refused() {
    let c = case().await;
    publish::sign(&c.repo, std::slice::from_ref(&c.key), &Expiry { snapshot_days: -1, ..c.expiry() }).await.unwrap();
    c.refused(&["snapshot metadata is expired"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_targets_are_refused() {
    let c = case().await;
    publish::sign(&c.repo, std::slice::from_ref(&c.key), &Expiry { targets_days: -1, ..c.expiry() }).await.unwrap();
    c.refused(&["targets metadata is expired"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_root_is_refused() {
    let c = case().await;
    // A frozen root: rotated long ago and never renewed.
    publish::rotate_root(&c.repo, std::slice::from_ref(&c.key), std::slice::from_ref(&c.key), &Expiry { root_days: -1, ..c.expiry() }).await.unwrap();
    c.refused(&["root metadata is expired"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_to_an_older_timestamp_is_refused() {
    let c = case().await;
    let old = std::fs::read(c.repo.join("metadata/timestamp.json")).unwrap();
    publish::refresh_timestamp(&c.repo, std::slice::from_ref(&c.key), 1).await.unwrap();
    // The operator sees the new version once …
    Repository::open(&c.url, &c.root(), &c.cache, &c.cache.join("trust"), &options()).await.unwrap();
    let seen = c.cached_timestamp_version().unwrap();
    // … then a mirror serves the old, still validly signed, one.
    c.control.fault("metadata/timestamp.json", Fault::Replace(old));
    c.refused(&[&format!("Found version {} of timestamp metadata when we had previously fetched version {seen}", seen - 1)]).await;
    assert_eq!(c.cached_timestamp_version(), Some(seen), "the cache kept the newer timestamp");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_timestamp_pointing_to_an_older_snapshot_is_refused() {
    let c = case().await;
    let old_ts = std::fs::read(c.repo.join("metadata/timestamp.json")).unwrap();
    let n = c.newest("snapshot");
    publish::sign(&c.repo, std::slice::from_ref(&c.key), &c.expiry()).await.unwrap();
    Repository::open(&c.url, &c.root(), &c.cache, &c.cache.join("trust"), &options()).await.unwrap();
    // Someone holding the timestamp key signs newer timestamps that name the old snapshot.
    std::fs::write(c.repo.join("metadata/timestamp.json"), old_ts).unwrap();
    publish::refresh_timestamp(&c.repo, std::slice::from_ref(&c.key), 1).await.unwrap();
    publish::refresh_timestamp(&c.repo, std::slice::from_ref(&c.key), 1).await.unwrap();
    c.refused(&[&format!("Snapshot version {n} in timestamp {} is less than {} in timestamp {}", n + 2, n + 1, n + 1)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_to_older_targets_is_refused() {
    let c = case().await;
    let n = c.newest("targets");
    let old_targets = std::fs::read(c.repo.join(format!("metadata/{n}.targets.json"))).unwrap();
    publish::sign(&c.repo, std::slice::from_ref(&c.key), &c.expiry()).await.unwrap();
    // The new snapshot names N+1.targets.json; the mirror answers with version N's content.
    let path = format!("metadata/{}.targets.json", n + 1);
    c.control.fault(&path, Fault::Replace(old_targets));
    c.refused(&[&path, "Hash mismatch"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mix_and_match_of_snapshot_and_targets_is_refused() {
    let c = case().await;
    let n = c.newest("snapshot");
    let old_snapshot = std::fs::read(c.repo.join(format!("metadata/{n}.snapshot.json"))).unwrap();
    publish::sign(&c.repo, std::slice::from_ref(&c.key), &c.expiry()).await.unwrap();
    // Timestamp N+1 names snapshot N+1; the mirror serves snapshot N (which names targets N) in its place.
    let path = format!("metadata/{}.snapshot.json", n + 1);
    c.control.fault(&path, Fault::Replace(old_snapshot));
    c.refused(&[&path, "Hash mismatch"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_metadata_is_cut_at_its_limit() {
    let c = case().await;
    c.control.fault("metadata/timestamp.json", Fault::Endless);
    c.refused(&["metadata/timestamp.json", "Maximum size 1048576 (specified by max_timestamp_size argument) exceeded"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_module_is_cut_at_its_signed_length() {
    let c = case().await;
    let module = c.target_file("release-3.40.0.wasm");
    c.control.fault(&module, Fault::Endless);
    c.refused(&["release-3.40.0.wasm", "(specified by targets.json) exceeded"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_dropped_mid_download_is_retried() {
    let c = case().await;
    let module = c.target_file("release-3.40.0.wasm");
    c.control.fault(&module, Fault::DropOnce);
    c.control.fault("metadata/timestamp.json", Fault::Error500Once);
    assert_eq!(c.upgrade(&c.url).await, Ok(1));
    assert_eq!(c.control.hits(&module), 2, "the module was fetched again after the cut");
    assert_eq!(c.control.hits("metadata/timestamp.json"), 2, "the 500 was retried");
    assert_eq!(c.cached_modules().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_rotation_is_followed_and_a_retired_key_is_refused() {
    let c = case().await;
    let new_key = c.repo.parent().unwrap().join("new-root.key");
    publish::keygen(&new_key).await.unwrap();
    publish::rotate_root(&c.repo, std::slice::from_ref(&c.key), std::slice::from_ref(&new_key), &c.expiry()).await.unwrap();
    // A client that trusts root 1 follows the chain to root 2.
    let repo = Repository::open(&c.url, &c.root(), &c.cache, &c.cache.join("trust"), &options()).await.unwrap();
    assert_eq!(repo.tuf().root().signed.version.get(), 2);
    assert_eq!(c.upgrade(&c.url).await, Ok(1));

    // Whoever still holds the retired key signs a root 3 on their own: refused.
    let scratch = c.repo.parent().unwrap().join("forge");
    copy_dir(&c.repo, &scratch);
    // (canup's own vendor commands refuse to sign with a key the current root does not list.)
    let refused = publish::rotate_root(&scratch, std::slice::from_ref(&c.key), std::slice::from_ref(&c.key), &c.expiry()).await.unwrap_err().to_string();
    assert!(refused.contains("not signed by enough keys"), "{refused}");
    let attacker = scratch.join("attacker.pem");
    canup_tests::tuf::tufctl([
        "forge-root",
        scratch.to_str().unwrap(),
        "--key",
        c.key.to_str().unwrap(),
        "--version",
        "3",
        "--attacker-key-out",
        attacker.to_str().unwrap(),
    ])
    .unwrap();
    std::fs::copy(scratch.join("metadata/3.root.json"), c.repo.join("metadata/3.root.json")).unwrap();
    let err = Repository::open(&c.url, &c.root(), &c.cache, &c.cache.join("trust"), &options()).await.unwrap_err().to_string();
    assert!(err.contains("3.root.json is not signed by a threshold of the root keys of version 2 that canup trusts"), "{err}");
    assert!(err.contains("Signature threshold of 1 not met for role root (0 valid signatures)"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withdrawn_release_is_marked_in_the_index() {
    let c = case().await;
    publish::withdraw(&c.repo, std::slice::from_ref(&c.key), &c.expiry(), &Version::new(3, 40, 0), "breaks engine-axe; use 3.40.1").await.unwrap();
    let repo = Repository::open(&c.url, &c.root(), &c.cache, &c.cache.join("trust"), &options()).await.unwrap();
    let index = repo.index().await.unwrap();
    assert_eq!(index.release(&Version::new(3, 40, 0)).unwrap().withdrawn.as_deref(), Some("breaks engine-axe; use 3.40.1"));
}

/// An index that needs a feature this canup does not implement (here on one step's manifest,
/// as a newer vendor canup would write it) is refused as a whole, naming the feature, before
/// any step runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repository_needing_a_newer_canup_is_refused_before_any_step() {
    let c = case().await;
    let mut index = publish::read_index(&c.repo).await.unwrap();
    let release = index.releases.iter_mut().find(|r| r.version == Version::new(3, 40, 0)).unwrap();
    release.steps[0].manifest.requires = vec!["time-travel".into()];
    publish::publish_index(&c.repo, std::slice::from_ref(&c.key), &c.expiry(), &index).await.unwrap();
    let err = c.refused(&["this repository needs a newer canup (feature time-travel, required by step 3.40.0/webserver-services)"]).await;
    assert!(err.contains("nothing was planned"), "{err}");
}

impl Case {
    /// The trust store of the repository the case serves (one per repository under
    /// `cache/trust`).
    fn store(&self) -> PathBuf {
        let stores: Vec<PathBuf> = std::fs::read_dir(self.cache.join("trust")).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_dir()).collect();
        assert_eq!(stores.len(), 1, "one trust store: {stores:?}");
        stores.into_iter().next().unwrap()
    }

    /// The vendor moves root to a new key: the repository's root 2.
    async fn rotate_root(&self) -> PathBuf {
        let new_key = self.repo.parent().unwrap().join("new-root.key");
        publish::keygen(&new_key).await.unwrap();
        publish::rotate_root(&self.repo, std::slice::from_ref(&self.key), std::slice::from_ref(&new_key), &self.expiry()).await.unwrap();
        new_key
    }

    /// A mirror of the repository whose `2.root.json` is forged with the retired root key
    /// (root 1's), giving every role to the attacker, who re-signs the metadata.
    async fn forged_root_2_mirror(&self) -> String {
        let mirror = self.repo.parent().unwrap().join("forged");
        copy_dir(&self.repo, &mirror);
        let attacker = self.repo.parent().unwrap().join("attacker.pem");
        let args =
            ["forge-root", mirror.to_str().unwrap(), "--key", self.key.to_str().unwrap(), "--version", "2", "--attacker-key-out", attacker.to_str().unwrap()];
        canup_tests::tuf::tufctl(args).unwrap();
        assert_ne!(std::fs::read(mirror.join("metadata/2.root.json")).unwrap(), std::fs::read(self.repo.join("metadata/2.root.json")).unwrap());
        serve_repo(mirror, Control::default()).await
    }
}

fn files(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir).unwrap().map(|e| e.unwrap()).map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap())).collect()
}

/// The saved history is the truth: with `root.json` deleted, canup rebuilds it from
/// `1.root.json` and `2.root.json` rather than starting again from the configured root 1, so
/// a mirror's `2.root.json` forged with the retired key is never even considered, and the
/// real root 2 is kept byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_root_json_is_rebuilt_from_the_saved_chain_and_a_forged_root_2_is_refused() {
    let c = case().await;
    c.rotate_root().await;
    Repository::open(&c.url, &c.root(), &c.cache, &c.cache.join("trust"), &options()).await.unwrap();
    let store = c.store();
    let real = std::fs::read(store.join("2.root.json")).unwrap();
    assert_eq!(real, std::fs::read(c.repo.join("metadata/2.root.json")).unwrap());
    std::fs::remove_file(store.join("root.json")).unwrap();

    let forged = c.forged_root_2_mirror().await;
    let err = Repository::open(&forged, &c.root(), &c.cache, &c.cache.join("trust"), &options()).await.unwrap_err().to_string();
    assert!(err.contains("Signature threshold of 1 not met for role timestamp"), "{err}");
    assert_eq!(std::fs::read(store.join("2.root.json")).unwrap(), real, "the real root 2 was overwritten");
    assert_eq!(std::fs::read(store.join("root.json")).unwrap(), real, "root.json was rebuilt from the chain's newest root");
    assert!(!store.join("3.root.json").exists());
    // The genuine repository is still accepted.
    let repo = Repository::open(&c.url, &c.root(), &c.cache, &c.cache.join("trust"), &options()).await.unwrap();
    assert_eq!(repo.tuf().root().signed.version.get(), 2);
}

/// An older root of the chain in `root.json` (a crash between the two writes of a rotation,
/// or an old copy put back) is rebuilt from the chain. A `root.json` that is none of the
/// chain's roots is refused naming the file and what to do, and leaves the store as it was; so
/// is a link of the chain that the root before it did not sign.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_root_json_is_rebuilt_an_altered_one_or_a_broken_link_is_refused() {
    let c = case().await;
    c.rotate_root().await;
    Repository::open(&c.url, &c.root(), &c.cache, &c.cache.join("trust"), &options()).await.unwrap();
    let store = c.store();
    let root1 = std::fs::read(store.join("1.root.json")).unwrap();
    let root2 = std::fs::read(store.join("2.root.json")).unwrap();
    // What a crash between the two writes of a rotation leaves: root.json still at version 1.
    std::fs::write(store.join("root.json"), &root1).unwrap();
    let repo = Repository::open(&c.url, &c.root(), &c.cache, &c.cache.join("trust"), &options()).await.unwrap();
    assert_eq!(repo.tuf().root().signed.version.get(), 2, "trust stands where the chain says");
    assert_eq!(std::fs::read(store.join("root.json")).unwrap(), root2, "rebuilt from the chain");
    // Altered: none of the chain's roots.
    let mut altered = root1.clone();
    altered.extend_from_slice(b"\n ");
    std::fs::write(store.join("root.json"), &altered).unwrap();
    let before = files(&store);
    let err = Repository::open(&c.url, &c.root(), &c.cache, &c.cache.join("trust"), &options()).await.unwrap_err().to_string();
    for part in [&format!("{}", store.join("root.json").display()), "none of the roots of the chain saved beside it", "remove"] {
        assert!(err.contains(part), "expected {part:?} in: {err}");
    }
    assert_eq!(files(&store), before, "the refused run changed the store");

    // Back to the real root.json, then a 2.root.json root 1 never signed (another repository's).
    std::fs::write(store.join("root.json"), std::fs::read(store.join("2.root.json")).unwrap()).unwrap();
    let attacker = attacker_repo(&c).await;
    std::fs::write(store.join("2.root.json"), std::fs::read(attacker.join("metadata/1.root.json")).unwrap()).unwrap();
    let err = Repository::open(&c.url, &c.root(), &c.cache, &c.cache.join("trust"), &options()).await.unwrap_err().to_string();
    for part in [&format!("{}", store.join("2.root.json").display()), "not signed by a threshold of the root keys of version 1 saved before it"] {
        assert!(err.contains(part), "expected {part:?} in: {err}");
    }
}

/// One trust store per repository: a second repository with a root of its own verifies (it
/// used to fail against the first one's chain) and leaves the first store as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_repository_gets_a_trust_store_of_its_own() {
    let c = case().await;
    c.rotate_root().await;
    Repository::open(&c.url, &c.root(), &c.cache, &c.cache.join("trust"), &options()).await.unwrap();
    let first = c.store();
    let before = files(&first);
    assert!(before.contains_key("2.root.json"), "{:?}", before.keys());

    let other = attacker_repo(&c).await;
    let other_url = serve_repo(other.clone(), Control::default()).await;
    let other_root = std::fs::read(other.join("metadata/1.root.json")).unwrap();
    let other_cache = c.cache.parent().unwrap().join("other-cache");
    let repo = Repository::open(&other_url, &other_root, &other_cache, &c.cache.join("trust"), &options()).await.unwrap();
    assert_eq!(repo.tuf().root().signed.version.get(), 1);
    assert_eq!(files(&first), before, "the second repository touched the first one's store");
    let stores: Vec<PathBuf> = std::fs::read_dir(c.cache.join("trust")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(stores.len(), 2, "{stores:?}");
    let second = stores.into_iter().find(|p| p != &first).unwrap();
    assert_eq!(std::fs::read(second.join("root.json")).unwrap(), other_root);
    // And the first repository still verifies from its own chain.
    let repo = Repository::open(&c.url, &c.root(), &c.cache, &c.cache.join("trust"), &options()).await.unwrap();
    assert_eq!(repo.tuf().root().signed.version.get(), 2);
}
