//! The Ansible role (`contrib/ansible/`) against a fleet of simulated hosts: `ansible-core`
//! from PyPI (installed into `target/ansible` by `cargo xtask test`), the shipped `site.yml`,
//! the local connection, and one simulated Canopsis per inventory host, each with its own
//! canup configuration, state and Canopsis API. The rollout is a canary (the first host) and
//! then batches; a failure stops it, and the fleet summary says where every host stands.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use canup_tests::canopsis_api::CanopsisApi;
use canup_tests::rabbitmq::Admin;
use canup_tests::repo_server::{Control, serve_repo};
use canup_tests::simhost::{Call, Edition, Method, SimHost, Spec};
use canup_tests::{OPERATOR_POLICY, canup_bin, copy_dir, pristine_repo, target_dir, workspace_dir};
use serde_json::{Value, json};

fn ansible_playbook() -> PathBuf {
    let path = target_dir().join("ansible/bin/ansible-playbook");
    assert!(path.is_file(), "{} is missing: run the tests with `cargo xtask test`, which installs ansible-core", path.display());
    path
}

struct Site {
    name: &'static str,
    sim: SimHost,
    config: PathBuf,
    _api: CanopsisApi,
}

async fn site(dir: &Path, name: &'static str, spec: Spec, repo_url: &str, repo: &Path) -> Site {
    site_with_policy(dir, name, spec, repo_url, repo, OPERATOR_POLICY).await
}

async fn site_with_policy(dir: &Path, name: &'static str, spec: Spec, repo_url: &str, repo: &Path, policy: &str) -> Site {
    let sim = SimHost::create(&dir.join(name).join("root"), &spec, &canup_tests::sim_bin()).unwrap();
    let api = CanopsisApi::serve(sim.root().to_path_buf()).await;
    let config = dir.join(name).join("canup.toml");
    canup_tests::write_site_config(&config, repo_url, repo, &dir.join(name).join("state"), policy, &api).unwrap();
    Site { name, sim, config, _api: api }
}

/// A fleet's directory, one copy of the published repository served for its sites, and the
/// shared broker set up as Canopsis has it (Engine_che bound again: 3.39.0 unbinds it).
async fn fleet() -> (tempfile::TempDir, PathBuf, String, Admin) {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    copy_dir(&pristine_repo().0, &repo).unwrap();
    let url = serve_repo(repo.clone(), Control::default()).await;
    let admin = Admin::new();
    admin.setup_canopsis_once().await.unwrap();
    admin.bind_che().await.unwrap();
    (dir, repo, url, admin)
}

/// Where [`play`] has the role write the fleet summary.
fn summary_path(dir: &Path) -> PathBuf {
    dir.join("canup-fleet-summary.json")
}

/// Runs the shipped `site.yml` on `sites`, in this order (the inventory is written beside
/// them; the first site is the canary), with more `ansible-playbook` arguments.
fn play(dir: &Path, sites: &[&Site], extra: &[&str]) -> Output {
    let python = target_dir().join("ansible/bin/python");
    let mut inventory = String::from("[canopsis]\n");
    for s in sites {
        inventory.push_str(&format!(
            "{} ansible_connection=local ansible_python_interpreter={} canup_config={} canup_sysroot={}\n",
            s.name,
            python.display(),
            s.config.display(),
            s.sim.root().display()
        ));
    }
    let path = dir.join("inventory");
    std::fs::write(&path, inventory).unwrap();
    // A summary left by an earlier play must not pass for this one's.
    let summary = summary_path(dir);
    let _ = std::fs::remove_file(&summary);
    Command::new(ansible_playbook())
        .arg("-i")
        .arg(&path)
        .arg(workspace_dir().join("contrib/ansible/site.yml"))
        // Root already; the test machine has no sudo to become with.
        .args(["-e", "canup_version=3.40.0", "-e", "canup_install=false", "-e", "canup_accept_manual=true", "-e", "ansible_become=false"])
        .arg("-e")
        .arg(format!("canup_binary={}", canup_bin().display()))
        .arg("-e")
        .arg(format!("canup_summary_path={}", summary.display()))
        .args(extra)
        .env("ANSIBLE_ROLES_PATH", workspace_dir().join("contrib/ansible/roles"))
        .env("ANSIBLE_LOCAL_TEMP", dir.join("ansible-tmp"))
        .env("ANSIBLE_HOME", dir.join("ansible-home"))
        .env("ANSIBLE_NOCOLOR", "1")
        .env("ANSIBLE_FORCE_COLOR", "0")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// The host's line of the PLAY RECAP, if the host ran at all.
fn recap_line(o: &Output, host: &str) -> Option<String> {
    let out = String::from_utf8_lossy(&o.stdout);
    out.lines().find(|l| l.split_whitespace().next() == Some(host) && l.contains("ok=")).map(str::to_owned)
}

/// (changed, failed) of `host` in the PLAY RECAP.
fn recap(o: &Output, host: &str) -> (u32, u32) {
    let line = recap_line(o, host).unwrap_or_else(|| panic!("no recap for {host}:\n{}", text(o)));
    let field = |name: &str| line.split_whitespace().find_map(|w| w.strip_prefix(&format!("{name}="))).and_then(|v| v.parse().ok()).unwrap();
    (field("changed"), field("failed"))
}

/// The summary file the role wrote on the controller.
fn summary(dir: &Path, o: &Output) -> Value {
    let path = summary_path(dir);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("no fleet summary at {}: {e}\n{}", path.display(), text(o)));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("the fleet summary is not JSON: {e}\n{}", String::from_utf8_lossy(&bytes)))
}

/// The hosts of the summary, by name, after checking they are `names` in rollout order.
fn summary_hosts(summary: &Value, names: &[&str]) -> BTreeMap<String, Value> {
    assert_eq!(summary["target"], "3.40.0", "{summary:#}");
    let hosts = summary["hosts"].as_array().unwrap_or_else(|| panic!("no hosts in {summary:#}"));
    let listed: Vec<&str> = hosts.iter().map(|h| h["host"].as_str().unwrap()).collect();
    assert_eq!(listed, names, "{summary:#}");
    hosts.iter().map(|h| (h["host"].as_str().unwrap().to_owned(), h.clone())).collect()
}

/// Some fields of a host's summary, for comparing with `json!`.
fn pick(host: &Value, fields: &[&str]) -> Value {
    Value::Object(fields.iter().map(|f| (f.to_string(), host[*f].clone())).collect())
}

/// The row of `host` in the last fleet table the play showed (a debug message: one quoted
/// string per row, the host first).
fn table_row(o: &Output, host: &str) -> String {
    let out = String::from_utf8_lossy(&o.stdout);
    let tables: Vec<&str> = out.split("TASK [canup : Show the fleet summary]").skip(1).collect();
    let last = tables.last().unwrap_or_else(|| panic!("no fleet table:\n{}", text(o)));
    last.lines()
        .filter_map(|l| l.trim().strip_prefix('"'))
        .find(|row| row.split_whitespace().next() == Some(host))
        .map(|row| row.trim_end_matches(',').trim_end_matches('"').to_owned())
        .unwrap_or_else(|| panic!("no row for {host} in the fleet table:\n{last}"))
}

/// Detection's queries (rpm -qa, docker ps): what canup runs on a host before it changes
/// anything.
fn is_query(c: &Call) -> bool {
    c.program == "rpm" || (c.program == "docker" && c.args.first().is_some_and(|a| a == "ps"))
}

/// The simulated host's files, the call log left out (detection's queries may add to it).
fn files(sim: &SimHost) -> BTreeMap<String, String> {
    let mut files = sim.snapshot().unwrap();
    files.retain(|p, _| !p.contains("canup-sim/calls"));
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_role_upgrades_a_fleet_canary_first_reports_changes_once_and_stops_at_a_failing_host() {
    let (dir, repo, url, admin) = fleet().await;

    // Two sites at different versions and methods: site-a is the canary, site-b the next batch.
    let a =
        site(dir.path(), "site-a", Spec { version: "3.38.0".into(), edition: Edition::Cat, method: Method::Packages, ..Spec::default() }, &url, &repo).await;
    let b =
        site(dir.path(), "site-b", Spec { version: "3.39.0".into(), edition: Edition::Core, method: Method::Compose, ..Spec::default() }, &url, &repo).await;
    let first = play(dir.path(), &[&a, &b], &[]);
    assert!(first.status.success(), "{}", text(&first));
    for s in [&a, &b] {
        assert_eq!(canup_tests::simhost::installed_version(s.sim.root()), "3.40.0", "{}", s.name);
        assert_eq!(recap(&first, s.name), (1, 0), "{} reports one change:\n{}", s.name, text(&first));
    }
    assert!(text(&first).contains("Canopsis is at 3.40.0"), "{}", text(&first));
    // The canary ran alone, before the other batch started (each batch is shown as a play).
    let out = text(&first);
    let batches: Vec<&str> = out.split("PLAY [Upgrade Canopsis with canup]").skip(1).collect();
    assert_eq!(batches.len(), 2, "two batches:\n{out}");
    assert!(batches[0].contains("[site-a]") && !batches[0].contains("[site-b]"), "the canary's batch:\n{out}");
    let hosts = summary_hosts(&summary(dir.path(), &first), &["site-a", "site-b"]);
    for (name, before) in [("site-a", "3.38.0"), ("site-b", "3.39.0")] {
        let h = &hosts[name];
        assert_eq!(
            pick(h, &["outcome", "before", "after", "changed"]),
            json!({"outcome": "succeeded", "before": before, "after": "3.40.0", "changed": true}),
            "{h:#}"
        );
        assert!(h["failed_step"].is_null() && h["error"].is_null() && h["rollback"].is_null(), "{h:#}");
        assert!(table_row(&first, name).contains(&format!("succeeded  {before}  3.40.0")), "{}", table_row(&first, name));
    }

    // The same play again: nothing to do, nothing changed, nothing run.
    let calls_before: Vec<usize> = [&a, &b].iter().map(|s| s.sim.calls().unwrap().len()).collect();
    let second = play(dir.path(), &[&a, &b], &[]);
    assert!(second.status.success(), "{}", text(&second));
    for (s, before) in [&a, &b].iter().zip(calls_before) {
        assert_eq!(recap(&second, s.name), (0, 0), "{} reports no change:\n{}", s.name, text(&second));
        // Detection's queries (rpm -qa, docker ps) run again; nothing else does.
        let changes: Vec<String> = s.sim.calls().unwrap()[before..].iter().filter(|c| !is_query(c)).map(|c| c.line()).collect();
        assert!(changes.is_empty(), "{} ran {changes:?} again", s.name);
    }
    let hosts = summary_hosts(&summary(dir.path(), &second), &["site-a", "site-b"]);
    for h in hosts.values() {
        assert_eq!(
            pick(h, &["outcome", "before", "after", "changed"]),
            json!({"outcome": "up-to-date", "before": "3.40.0", "after": "3.40.0", "changed": false}),
            "{h:#}"
        );
    }

    // A healthy canary (site-d), then batches of two: site-c, whose installation is
    // inconsistent, fails with canup's error and is left untouched; site-e, in the same batch,
    // is upgraded all the same (the hosts of a batch run side by side); and the failure stops
    // the rollout there: site-f, of the next batch, is never touched.
    let broken =
        site(dir.path(), "site-c", Spec { version: "3.38.0".into(), edition: Edition::Core, method: Method::Packages, ..Spec::default() }, &url, &repo).await;
    std::fs::write(broken.sim.path("/opt/canopsis/VERSION.txt"), "Canopsis version 3.37.0\n").unwrap();
    let broken_before = files(&broken.sim);
    admin.bind_che().await.unwrap();
    let d =
        site(dir.path(), "site-d", Spec { version: "3.38.0".into(), edition: Edition::Core, method: Method::Packages, ..Spec::default() }, &url, &repo).await;
    // From 3.39.0: it does not run 3.39.0's change to the shared broker that site-d makes.
    let e =
        site(dir.path(), "site-e", Spec { version: "3.39.0".into(), edition: Edition::Core, method: Method::Compose, ..Spec::default() }, &url, &repo).await;
    let f =
        site(dir.path(), "site-f", Spec { version: "3.38.0".into(), edition: Edition::Core, method: Method::Packages, ..Spec::default() }, &url, &repo).await;
    let f_before = files(&f.sim);
    let third = play(dir.path(), &[&d, &broken, &e, &f], &["-e", "canup_serial=2"]);
    assert!(!third.status.success(), "the play reports the failed host:\n{}", text(&third));
    assert_eq!(recap(&third, "site-c").1, 1, "{}", text(&third));
    let canup_error = "/opt/canopsis/VERSION.txt says 3.37.0 but rpm -qa 'canopsis*' says 3.38.0";
    assert!(text(&third).contains(canup_error), "the failure carries canup's error:\n{}", text(&third));
    assert_eq!(files(&broken.sim), broken_before, "the failing site was not touched");
    for s in [&d, &e] {
        assert_eq!(recap(&third, s.name), (1, 0), "{}", text(&third));
        assert_eq!(canup_tests::simhost::installed_version(s.sim.root()), "3.40.0", "{}", s.name);
    }
    assert_eq!(d.sim.read("/opt/canopsis/VERSION.txt").unwrap(), "Canopsis version 3.40.0\n");
    assert!(recap_line(&third, "site-f").is_none(), "site-f never ran:\n{}", text(&third));
    assert!(f.sim.calls().unwrap().is_empty(), "canup never ran on site-f: {:?}", f.sim.calls().unwrap());
    assert_eq!(files(&f.sim), f_before, "site-f was not touched");
    let hosts = summary_hosts(&summary(dir.path(), &third), &["site-d", "site-c", "site-e", "site-f"]);
    for (name, before) in [("site-d", "3.38.0"), ("site-e", "3.39.0")] {
        let h = &hosts[name];
        assert_eq!(pick(h, &["outcome", "before", "after"]), json!({"outcome": "succeeded", "before": before, "after": "3.40.0"}), "{h:#}");
    }
    let c = &hosts["site-c"];
    assert_eq!(
        pick(c, &["outcome", "changed", "failed_step", "rollback"]),
        json!({"outcome": "failed", "changed": false, "failed_step": null, "rollback": null}),
        "{c:#}"
    );
    assert!(c["error"].as_str().is_some_and(|e| e.contains(canup_error)), "{c:#}");
    assert!(c["exit_code"].as_i64().is_some_and(|code| code != 0), "{c:#}");
    assert_eq!(hosts["site-f"]["outcome"], "not run", "{:#}", hosts["site-f"]);
    let row = table_row(&third, "site-c");
    assert!(row.contains("failed") && row.contains(canup_error), "{row}");
    assert!(table_row(&third, "site-f").contains("not run"), "{}", table_row(&third, "site-f"));
}

/// Flips a byte in the middle of every file of `repo` that stores the target `name` (named
/// `SHA256.NAME`): the bytes no longer match the signed metadata.
fn tamper_target(repo: &Path, name: &str) {
    let mut tampered = 0;
    for entry in std::fs::read_dir(repo.join("targets")).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().and_then(|f| f.to_str()).is_some_and(|f| f.ends_with(&format!(".{name}"))) {
            let mut bytes = std::fs::read(&path).unwrap();
            let i = bytes.len() / 2;
            bytes[i] ^= 0x20;
            std::fs::write(&path, bytes).unwrap();
            tampered += 1;
        }
    }
    assert!(tampered > 0, "no target {name} in {}", repo.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_canary_stops_the_rollout_and_the_summary_says_where_every_host_stands() {
    let dir = tempfile::tempdir().unwrap();
    // Three sites, each with its own copy of the published repository, served on its own; the
    // canary's copy has a module whose bytes were altered on disk.
    let mut sites = Vec::new();
    let mut controls = Vec::new();
    for (name, edition) in [("canary", Edition::Core), ("site-b", Edition::Cat), ("site-c", Edition::Core)] {
        let repo = dir.path().join(format!("{name}-repo"));
        copy_dir(&pristine_repo().0, &repo).unwrap();
        if name == "canary" {
            tamper_target(&repo, "release-3.40.0.wasm");
        }
        let control = Control::default();
        let url = serve_repo(repo.clone(), control.clone()).await;
        let spec = Spec { version: "3.38.0".into(), edition, method: Method::Packages, ..Spec::default() };
        sites.push(site(dir.path(), name, spec, &url, &repo).await);
        controls.push(control);
    }
    let before: Vec<BTreeMap<String, String>> = sites.iter().map(|s| files(&s.sim)).collect();

    let o = play(dir.path(), &sites.iter().collect::<Vec<_>>(), &[]);
    assert!(!o.status.success(), "the play reports the failed canary:\n{}", text(&o));

    // The canary: verification refused the module before any step ran; only detection's
    // queries ran, and the host failed with canup's error.
    let canary = &sites[0];
    assert_eq!(recap(&o, "canary"), (0, 1), "{}", text(&o));
    assert!(text(&o).contains("release-3.40.0.wasm"), "the failure carries canup's error:\n{}", text(&o));
    assert_eq!(files(&canary.sim), before[0], "the canary was not changed");
    let changes: Vec<String> = canary.sim.calls().unwrap().iter().filter(|c| !is_query(c)).map(|c| c.line()).collect();
    assert!(changes.is_empty(), "the canary ran {changes:?}");
    assert!(controls[0].hits("metadata/timestamp.json") > 0, "the canary's canup read its repository");

    // The others never ran: not in the recap, their canup never asked their repository for
    // anything, their hosts are byte for byte as they were and ran no command at all.
    for (i, s) in sites.iter().enumerate().skip(1) {
        assert!(recap_line(&o, s.name).is_none(), "{} ran:\n{}", s.name, text(&o));
        assert_eq!(controls[i].hits("metadata/timestamp.json"), 0, "{}'s repository was read", s.name);
        assert_eq!(files(&s.sim), before[i], "{} was not touched", s.name);
        assert!(s.sim.calls().unwrap().is_empty(), "{} ran {:?}", s.name, s.sim.calls().unwrap());
        assert_eq!(canup_tests::simhost::installed_version(s.sim.root()), "3.38.0");
    }

    // The summary was written although the rollout stopped at the canary.
    let hosts = summary_hosts(&summary(dir.path(), &o), &["canary", "site-b", "site-c"]);
    let c = &hosts["canary"];
    assert_eq!(
        pick(c, &["outcome", "changed", "failed_step", "rollback"]),
        json!({"outcome": "failed", "changed": false, "failed_step": null, "rollback": null}),
        "{c:#}"
    );
    // Nothing changed: after is before (canup names the version when it knows the run's, else
    // both are null).
    assert_eq!(c["after"], c["before"], "{c:#}");
    assert!(c["before"].is_null() || c["before"] == "3.38.0", "{c:#}");
    let error = c["error"].as_str().unwrap_or_else(|| panic!("no error in {c:#}"));
    assert!(error.contains("release-3.40.0.wasm") && error.contains("Hash mismatch"), "the error names the repository's problem: {error}");
    assert!(c["exit_code"].as_i64().is_some_and(|code| code != 0), "{c:#}");
    for name in ["site-b", "site-c"] {
        let h = &hosts[name];
        assert_eq!(h["outcome"], "not run", "{h:#}");
        for field in ["before", "after", "run", "failed_step", "backup", "error", "exit_code", "rollback"] {
            assert!(h[field].is_null(), "{name}'s {field}: {h:#}");
        }
    }

    // The table shows the same.
    let row = table_row(&o, "canary");
    assert!(row.contains("failed") && row.contains("release-3.40.0.wasm"), "{row}");
    for name in ["site-b", "site-c"] {
        assert!(table_row(&o, name).contains("not run"), "{}", table_row(&o, name));
    }
}

/// With `canup_rollback_on_failure`, a host whose upgrade failed after the update is rolled back
/// by the role: the host still fails, its packages, files and (simulated) MongoDB are as they
/// were, and the summary names the failed step, the backup and the rollback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_role_rolls_back_a_failed_host_when_asked() {
    let (dir, repo, url, _admin) = fleet().await;
    // 3.38.0's MongoDB rename is migrated, and dumped first (MongoDB is simulated).
    let policy = format!("{OPERATOR_POLICY}\n[backup]\ndatabases = \"asked\"\n");
    let spec = Spec { version: "3.38.0".into(), edition: Edition::Cat, method: Method::Packages, ..Spec::default() };
    let s = site_with_policy(dir.path(), "site-r", spec, &url, &repo, &policy).await;
    let packages_before = s.sim.installed_packages().unwrap();
    let mongo_before = s.sim.read("/var/lib/canup-sim/mongo-applied.js").unwrap_or_default();
    let mut before = files(&s.sim);
    // Every canoctl call fails: the first is the restart after the update.
    s.sim.write("/var/lib/canup-sim/fail-canoctl", "").unwrap();
    before.insert("/var/lib/canup-sim/fail-canoctl".into(), String::new());

    let o = play(dir.path(), &[&s], &["-e", "canup_rollback_on_failure=true"]);
    assert!(!o.status.success(), "the host fails, rolled back or not:\n{}", text(&o));
    assert_eq!(recap(&o, "site-r").1, 1, "{}", text(&o));
    assert!(s.sim.calls().unwrap().iter().any(|c| c.program == "yum" && c.args.iter().any(|a| a == "update")), "the update ran");
    let hosts = summary_hosts(&summary(dir.path(), &o), &["site-r"]);
    let h = &hosts["site-r"];
    assert_eq!(
        pick(h, &["outcome", "before", "after", "changed"]),
        json!({"outcome": "failed", "before": "3.38.0", "after": "3.38.0", "changed": true}),
        "{h:#}"
    );
    assert!(h["failed_step"].as_str().is_some(), "{h:#}");
    let backup = h["backup"].as_str().unwrap_or_else(|| panic!("no backup in {h:#}"));
    assert!(Path::new(backup).join("set.json").is_file(), "{h:#}");
    assert_eq!(pick(&h["rollback"], &["outcome", "installed"]), json!({"outcome": "rolled-back", "installed": "3.38.0"}), "{h:#}");
    assert!(table_row(&o, "site-r").contains("rolled-back"), "{}", table_row(&o, "site-r"));

    assert_eq!(s.sim.installed_packages().unwrap(), packages_before);
    assert_eq!(s.sim.read("/var/lib/canup-sim/mongo-applied.js").unwrap_or_default(), mongo_before, "the MongoDB dump was restored");
    let mut after = files(&s.sim);
    after.retain(|p, _| !p.starts_with("/var/lib/canup-sim/") || p.ends_with("fail-canoctl"));
    before.retain(|p, _| !p.starts_with("/var/lib/canup-sim/") || p.ends_with("fail-canoctl"));
    after.retain(|p, _| !p.starts_with("/opt/canopsis/var/"));
    before.retain(|p, _| !p.starts_with("/opt/canopsis/var/"));
    assert_eq!(after, before, "the files as before the run");
}
