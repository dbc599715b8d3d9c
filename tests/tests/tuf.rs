//! Trust across key rotations, checked against python-tuf (the TUF reference implementation).
//!
//! Each site is an operator's canup (its own state directory, the configured root being the
//! repository's first one) reading a repository the vendor publishes with `canup repo`, served
//! on 127.0.0.1. The attacks are forged with python-tuf (`tests/tuf/tufctl.py`) on a mirror:
//! a copy of the repository served at another address. Every refused attack asserts exit 4,
//! the message, that no step ran (the simulated host is untouched), that canup's persisted
//! root is unchanged, and that the next legitimate refresh is accepted.

use std::path::{Path, PathBuf};
use std::process::Output;

use canup_tests::repo_server::{Control, serve_repo};
use canup_tests::simhost::{SimHost, Spec};
use canup_tests::tuf::{ngclient_read, tufctl};
use canup_tests::{canup_bin, copy_dir, pristine_repo};

struct Site {
    dir: tempfile::TempDir,
    repo: PathBuf,
    dev_key: PathBuf,
    url: String,
    sim: SimHost,
    pristine_tree: std::collections::BTreeMap<String, String>,
}

async fn site() -> Site {
    let (pristine, dev_key) = pristine_repo();
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    copy_dir(pristine, &repo).unwrap();
    // The root the operator configured: the repository's first, as shipped.
    std::fs::copy(repo.join("metadata/1.root.json"), dir.path().join("root1.json")).unwrap();
    // The shipped policy, for `canup status`'s detection on the simulated host.
    std::fs::write(dir.path().join("canup.toml"), canup_tests::OPERATOR_POLICY).unwrap();
    let url = serve_repo(repo.clone(), Control::default()).await;
    let sim = SimHost::create(&dir.path().join("sim"), &Spec::default(), &canup_tests::sim_bin()).unwrap();
    let pristine_tree = sim.snapshot().unwrap();
    Site { repo, dev_key: dev_key.clone(), url, sim, pristine_tree, dir }
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

impl Site {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The operator's canup against the repository at `url`.
    fn canup(&self, url: &str, args: &[&str]) -> Output {
        std::process::Command::new(canup_bin())
            .arg("--config")
            .arg(self.path("canup.toml"))
            .args(["--repo", url])
            .arg("--trusted-root")
            .arg(self.path("root1.json"))
            .arg("--state-dir")
            .arg(self.path("state"))
            .arg("--sysroot")
            .arg(self.sim.root())
            .args(args)
            .output()
            .unwrap()
    }

    /// `canup repo …` as the vendor runs it on the repository directory.
    fn vendor(&self, args: &[&str]) -> String {
        let out = std::process::Command::new(canup_bin()).arg("repo").args(args).output().unwrap();
        assert!(out.status.success(), "canup repo {args:?}: {}", text(&out));
        text(&out)
    }

    fn keygen(&self, name: &str) -> String {
        let key = self.path(name);
        self.vendor(&["keygen", "--out", key.to_str().unwrap()]);
        key.to_str().unwrap().to_owned()
    }

    fn repo_str(&self) -> &str {
        self.repo.to_str().unwrap()
    }

    fn dev(&self) -> &str {
        self.dev_key.to_str().unwrap()
    }

    /// The operator's canup accepts the repository at `url`: `canup status` (which keeps the
    /// root of trust and the TUF cache in the state directory) succeeds, and `canup repo
    /// verify` (signatures, expiry, every module; from the configured root, in a directory
    /// of its own) too.
    fn accepted(&self, url: &str) {
        let out = self.canup(url, &["status"]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        let out = self.canup(url, &["repo", "verify"]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        assert!(text(&out).contains("step modules verified"), "{}", text(&out));
    }

    /// The trust store of the configured repository: one per repository under state/trust.
    fn store(&self) -> PathBuf {
        let stores: Vec<PathBuf> = std::fs::read_dir(self.path("state/trust")).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_dir()).collect();
        assert_eq!(stores.len(), 1, "one trust store: {stores:?}");
        stores.into_iter().next().unwrap()
    }

    /// canup's persisted root of trust.
    fn trusted_root(&self) -> Vec<u8> {
        std::fs::read(self.store().join("root.json")).unwrap()
    }

    fn trusted_version(&self) -> u64 {
        let v: serde_json::Value = serde_json::from_slice(&self.trusted_root()).unwrap();
        v["signed"]["version"].as_u64().unwrap()
    }

    /// The timestamp version canup cached (rollback protection).
    fn cached_timestamp(&self) -> u64 {
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(self.path("state/cache/repository/tuf/timestamp.json")).unwrap()).unwrap();
        v["signed"]["version"].as_u64().unwrap()
    }

    /// A mirror: the repository as it is now, copied to `name` and served on its own address.
    async fn mirror(&self, name: &str) -> (PathBuf, String) {
        let dir = self.path(name);
        copy_dir(&self.repo, &dir).unwrap();
        let url = serve_repo(dir.clone(), Control::default()).await;
        (dir, url)
    }

    /// The attack's promises: `canup plan` exits 4 naming the problem, no step ran, the
    /// persisted root and the cached timestamp are what they were.
    fn refused(&self, url: &str, expected: &[&str]) {
        let (root, timestamp) = (self.trusted_root(), self.cached_timestamp());
        // Detection by `canup status` (in `accepted`) ran its queries before: none since.
        let calls = self.sim.calls().unwrap();
        let out = self.canup(url, &["plan", "--to", "3.40.0"]);
        assert_eq!(out.status.code(), Some(4), "the attack was not refused: {}", text(&out));
        for part in expected.iter().chain(&["No step ran"]) {
            assert!(text(&out).contains(part), "expected {part:?} in: {}", text(&out));
        }
        assert_eq!(self.sim.snapshot().unwrap(), self.pristine_tree, "a step changed the host");
        assert_eq!(self.sim.calls().unwrap(), calls, "a step ran a command");
        assert_eq!(self.trusted_root(), root, "the attack changed canup's root of trust");
        assert_eq!(self.cached_timestamp(), timestamp, "the attack changed the cached timestamp");
    }

    /// The vendor gives `role` a new key (`canup repo rotate-keys`), re-signing with `keys`.
    fn rotate(&self, role: &str, new_key: &str, root_keys: &[&str], keys: &[&str]) {
        let mut args = vec!["rotate-keys", self.repo_str(), "--role", role, "--new-key", new_key];
        for k in root_keys {
            args.extend(["--root-key", k]);
        }
        for k in keys {
            args.extend(["--key", k]);
        }
        self.vendor(&args);
    }
}

fn version_of(file: &Path) -> u64 {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
    v["signed"]["version"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_next_root_signed_by_the_retired_root_key_is_refused() {
    let s = site().await;
    let r2 = s.keygen("root2.key");
    s.rotate("root", &r2, &[s.dev()], &[]);
    s.accepted(&s.url);
    assert_eq!(s.trusted_version(), 2, "canup followed the rotation");

    // A mirror serves a different 2.root.json, signed by the retired root key (which root 1
    // trusts), giving every role to the attacker, and metadata signed by the attacker.
    let (mirror, mirror_url) = s.mirror("mirror").await;
    let attacker = s.path("attacker.pem");
    tufctl(["forge-root", mirror.to_str().unwrap(), "--key", s.dev(), "--version", "2", "--attacker-key-out", attacker.to_str().unwrap()]).unwrap();
    s.refused(&mirror_url, &["Signature threshold of 1 not met for role timestamp"]);
    s.accepted(&s.url);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hidden_root_update_with_metadata_signed_by_revoked_keys_is_refused() {
    let s = site().await;
    let before = s.path("before-rotation");
    copy_dir(&s.repo, &before).unwrap();
    // The timestamp key leaked: the vendor revokes it in root 2.
    let ts2 = s.keygen("timestamp2.key");
    s.rotate("timestamp", &ts2, &[s.dev()], &[&ts2]);
    s.accepted(&s.url);
    assert_eq!(s.trusted_version(), 2);

    // The mirror still has no 2.root.json and serves a fresh timestamp signed by the revoked
    // key, naming the old snapshot and targets.
    let mirror_url = serve_repo(before.clone(), Control::default()).await;
    tufctl(["resign", before.to_str().unwrap(), "--role", "timestamp", "--key", s.dev(), "--version", "1000"]).unwrap();
    s.refused(&mirror_url, &["Signature threshold of 1 not met for role timestamp"]);
    s.accepted(&s.url);
}

/// The vendor rotates `role`'s key, then withdraws a release; a mirror replays the timestamp
/// from before the withdrawal (validly signed, unexpired).
async fn replay_after_rotating(role: &str) {
    let s = site().await;
    let new = s.keygen("new.key");
    let keys: Vec<&str> = if role == "snapshot" { vec![&new, s.dev()] } else { vec![&new] };
    s.rotate(role, &new, &[s.dev()], &keys);
    s.accepted(&s.url);
    let replayed = std::fs::read(s.repo.join("metadata/timestamp.json")).unwrap();
    let old = version_of(&s.repo.join("metadata/timestamp.json"));

    s.vendor(&["withdraw", s.repo_str(), "--release", "3.40.0", "--reason", "breaks engine-axe", "--key", s.dev(), "--key", &new]);
    s.accepted(&s.url);
    assert_eq!(s.cached_timestamp(), old + 1);

    let (mirror, mirror_url) = s.mirror("mirror").await;
    std::fs::write(mirror.join("metadata/timestamp.json"), replayed).unwrap();
    s.refused(&mirror_url, &[&format!("Found version {old} of timestamp metadata when we had previously fetched version {}", old + 1)]);
    s.accepted(&s.url);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_timestamp_replayed_after_a_timestamp_key_rotation_is_refused() {
    replay_after_rotating("timestamp").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_timestamp_replayed_after_a_snapshot_key_rotation_is_refused() {
    replay_after_rotating("snapshot").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_forward_attack_is_recovered_by_rotating_the_timestamp_key() {
    let s = site().await;
    let ts2 = s.keygen("timestamp2.key");
    s.rotate("timestamp", &ts2, &[s.dev()], &[&ts2]);
    s.accepted(&s.url);

    // Whoever stole the timestamp key pushes the version far ahead; a client cannot tell.
    let (mirror, mirror_url) = s.mirror("mirror").await;
    tufctl(["resign", mirror.to_str().unwrap(), "--role", "timestamp", "--key", &ts2, "--version", "1000000"]).unwrap();
    s.accepted(&mirror_url);
    assert_eq!(s.cached_timestamp(), 1_000_000);

    // The vendor's own next timestamp now looks like a rollback …
    s.vendor(&["refresh-timestamp", s.repo_str(), "--key", &ts2]);
    let out = s.canup(&s.url, &["status"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(text(&out).contains("when we had previously fetched version 1000000"), "{}", text(&out));

    // … until the vendor rotates the timestamp key: canup forgets what the old key signed.
    let ts3 = s.keygen("timestamp3.key");
    s.rotate("timestamp", &ts3, &[s.dev()], &[&ts3]);
    s.accepted(&s.url);
    assert_eq!(s.trusted_version(), 3);
    assert_eq!(s.cached_timestamp(), version_of(&s.repo.join("metadata/timestamp.json")));
}

/// An older configured root on the persisted chain is ignored (trust continues from the newest
/// root verified). A configured root replaced by another repository's root gets a trust store
/// of its own (one per repository): the vendor's repository is refused under it, and the
/// store of the vendor's chain is left as it was. `repo verify` never writes the state
/// directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_configured_root_is_ignored_and_another_repositorys_root_gets_a_store_of_its_own() {
    let s = site().await;
    s.accepted(&s.url);
    let r2 = s.keygen("root2.key");
    s.rotate("root", &r2, &[s.dev()], &[]);
    // The configured root 1 is older than the persisted root 2 and on its chain: ignored.
    s.accepted(&s.url);
    assert_eq!(s.trusted_version(), 2);
    let store = s.store();
    let kept: Vec<(PathBuf, Vec<u8>)> =
        std::fs::read_dir(&store).unwrap().map(|e| e.unwrap().path()).map(|p| (p.clone(), std::fs::read(&p).unwrap())).collect();

    // Someone replaces the configured root with another repository's root 1.
    let other = s.path("other");
    let out = tufctl(["write-repo", other.to_str().unwrap(), "--targets-from", s.repo_str(), "--keys-out", s.path("other-keys").to_str().unwrap()]).unwrap();
    std::fs::copy(out["root"].as_str().unwrap(), s.path("root1.json")).unwrap();
    let out = s.canup(&s.url, &["status"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(text(&out).contains("No step ran"), "{}", text(&out));
    for (path, bytes) in &kept {
        assert_eq!(&std::fs::read(path).unwrap(), bytes, "{} changed", path.display());
    }
    let stores = std::fs::read_dir(s.path("state/trust")).unwrap().count();
    assert_eq!(stores, 2, "the other root has a store of its own");

    // `repo verify` with either root writes nothing under the state directory.
    let before: Vec<_> = walk(&s.path("state"));
    let out = s.canup(&s.url, &["repo", "verify"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert_eq!(walk(&s.path("state")), before, "repo verify wrote the state directory");
}

/// Every file under `dir` with its content.
fn walk(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push((p.clone(), std::fs::read(&p).unwrap()));
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_tuf_reads_what_canup_publishes_through_every_rotation_and_threshold_two() {
    let s = site().await;
    let ng = s.path("ngclient");
    let root1 = s.path("root1.json");
    let read = |what: &str| {
        let got = ngclient_read(&s.url, &root1, &ng).unwrap_or_else(|e| panic!("python-tuf refused the repository after {what}: {e}"));
        s.accepted(&s.url);
        got
    };
    let first = read("publication");
    let index = s.repo.join("metadata");
    assert!(first["downloaded"]["index.json"].as_str().is_some_and(|h| h.len() == 64), "{first}");

    s.vendor(&["refresh-timestamp", s.repo_str(), "--key", s.dev()]);
    assert_eq!(read("refresh-timestamp")["timestamp"], first["timestamp"].as_u64().unwrap() + 1);

    let (t2, s2, ts2) = (s.keygen("targets2.key"), s.keygen("snapshot2.key"), s.keygen("timestamp2.key"));
    s.rotate("targets", &t2, &[s.dev()], &[&t2, s.dev()]);
    assert_eq!(read("targets key rotation")["root"], 2);
    s.rotate("snapshot", &s2, &[s.dev()], &[&s2, s.dev()]);
    assert_eq!(read("snapshot key rotation")["root"], 3);
    s.rotate("timestamp", &ts2, &[s.dev()], &[&ts2]);
    assert_eq!(read("timestamp key rotation")["root"], 4);

    // Root and timestamp move to two keys each, threshold 2.
    let (r2, r3, ts3) = (s.keygen("root2.key"), s.keygen("root3.key"), s.keygen("timestamp3.key"));
    s.vendor(&["rotate-keys", s.repo_str(), "--role", "root", "--new-key", &r2, "--new-key", &r3, "--threshold", "2", "--root-key", s.dev()]);
    assert_eq!(read("root key rotation to threshold 2")["root"], 5);
    s.vendor(&[
        "rotate-keys",
        s.repo_str(),
        "--role",
        "timestamp",
        "--new-key",
        &ts2,
        "--new-key",
        &ts3,
        "--threshold",
        "2",
        "--root-key",
        &r2,
        "--root-key",
        &r3,
        "--key",
        &ts2,
        "--key",
        &ts3,
    ]);
    assert_eq!(read("timestamp threshold 2")["root"], 6);
    s.vendor(&["refresh-timestamp", s.repo_str(), "--key", &ts2, "--key", &ts3]);
    read("refresh-timestamp with threshold 2");

    // One key of two is not enough, and nothing is published.
    let before = std::fs::read(index.join("timestamp.json")).unwrap();
    let out = std::process::Command::new(canup_bin()).args(["repo", "refresh-timestamp", s.repo_str(), "--key", &ts2]).output().unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("signing timestamp"), "{}", text(&out));
    assert_eq!(std::fs::read(index.join("timestamp.json")).unwrap(), before);
    // A root signed by one of two root keys is not published either.
    let out = std::process::Command::new(canup_bin())
        .args(["repo", "rotate-keys", s.repo_str(), "--role", "timestamp", "--new-key", &ts3, "--threshold", "1", "--root-key", &r2, "--key", &ts3])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("not signed by enough keys"), "{}", text(&out));
    assert!(!index.join("7.root.json").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_holders_sign_a_new_root_offline_then_it_is_published() {
    let s = site().await;
    let (h1, h2) = (s.keygen("holder1.key"), s.keygen("holder2.key"));
    s.vendor(&["rotate-keys", s.repo_str(), "--role", "root", "--new-key", &h1, "--new-key", &h2, "--threshold", "2", "--root-key", s.dev()]);
    s.accepted(&s.url);

    let candidate = s.path("candidate-root.json");
    let ts2 = s.keygen("timestamp2.key");
    s.vendor(&["rotate-keys", s.repo_str(), "--role", "timestamp", "--new-key", &ts2, "--out", candidate.to_str().unwrap()]);
    let first = s.vendor(&["sign-root", s.repo_str(), "--candidate", candidate.to_str().unwrap(), "--key", &h1]);
    assert!(first.contains("still missing") && first.contains("Signature threshold of 2"), "{first}");
    let early = std::process::Command::new(canup_bin())
        .args(["repo", "publish-root", s.repo_str(), "--candidate", candidate.to_str().unwrap(), "--key", &ts2])
        .output()
        .unwrap();
    assert_eq!(early.status.code(), Some(2), "{}", text(&early));
    assert!(!s.repo.join("metadata/3.root.json").exists());

    let second = s.vendor(&["sign-root", s.repo_str(), "--candidate", candidate.to_str().unwrap(), "--key", &h2]);
    assert!(second.contains("carries enough signatures"), "{second}");
    s.vendor(&["publish-root", s.repo_str(), "--candidate", candidate.to_str().unwrap(), "--key", &ts2]);
    s.accepted(&s.url);
    assert_eq!(s.trusted_version(), 3);
    let ng = ngclient_read(&s.url, &s.path("root1.json"), &s.path("ngclient")).unwrap();
    assert_eq!(ng["root"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canup_reads_and_signs_a_repository_python_tuf_wrote() {
    let s = site().await;
    let written = s.path("python-repo");
    let keys = s.path("python-keys");
    let out = tufctl(["write-repo", written.to_str().unwrap(), "--targets-from", s.repo_str(), "--keys-out", keys.to_str().unwrap()]).unwrap();
    std::fs::copy(out["root"].as_str().unwrap(), s.path("root1.json")).unwrap();
    let url = serve_repo(written.clone(), Control::default()).await;
    s.accepted(&url);

    // The vendor commands work on python-tuf's metadata (spec_version 1.0.31, its keys).
    let key = |role: &str| keys.join(format!("{role}.pem")).to_str().unwrap().to_owned();
    let w = written.to_str().unwrap();
    s.vendor(&["sign", w, "--key", &key("targets"), "--key", &key("snapshot"), "--key", &key("timestamp")]);
    s.vendor(&["withdraw", w, "--release", "3.40.0", "--reason", "test", "--key", &key("targets"), "--key", &key("snapshot"), "--key", &key("timestamp")]);
    let ts2 = s.keygen("timestamp2.key");
    s.vendor(&["rotate-keys", w, "--role", "timestamp", "--new-key", &ts2, "--root-key", &key("root"), "--key", &ts2]);
    s.accepted(&url);
    let ng = ngclient_read(&url, &s.path("root1.json"), &s.path("ngclient")).unwrap();
    assert_eq!(ng["root"], 2);
    let spec: serde_json::Value = serde_json::from_slice(&std::fs::read(written.join("metadata/timestamp.json")).unwrap()).unwrap();
    assert_eq!(spec["signed"]["spec_version"], "1.0.31", "the repository's spec_version is kept");
}

#[test]
fn new_keys_are_pkcs8_pem_that_openssl_reads() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k.key");
    let out = std::process::Command::new(canup_bin()).args(["repo", "keygen", "--out"]).arg(&key).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(std::fs::read_to_string(&key).unwrap().starts_with("-----BEGIN PRIVATE KEY-----"));
    let openssl = std::process::Command::new("openssl").args(["pkey", "-noout", "-text", "-in"]).arg(&key).output().unwrap();
    assert!(openssl.status.success(), "{}", text(&openssl));
    assert!(String::from_utf8_lossy(&openssl.stdout).contains("ED25519 Private-Key"), "{}", text(&openssl));
}
