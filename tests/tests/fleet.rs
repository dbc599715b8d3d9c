//! The Ansible role (`contrib/ansible/`) against a fleet of simulated hosts: `ansible-core`
//! from PyPI (installed into `target/ansible` by `cargo xtask test`), the shipped `site.yml`,
//! the local connection, and one simulated Canopsis per inventory host, each with its own
//! canup configuration, state and Canopsis API.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use canup_tests::canopsis_api::CanopsisApi;
use canup_tests::rabbitmq::Admin;
use canup_tests::repo_server::{Control, serve_repo};
use canup_tests::simhost::{Edition, Method, SimHost, Spec};
use canup_tests::{OPERATOR_POLICY, canup_bin, publish_steps, target_dir, workspace_dir};

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
    let sim = SimHost::create(&dir.join(name).join("root"), &spec, &canup_tests::sim_bin()).unwrap();
    let api = CanopsisApi::serve(sim.root().to_path_buf()).await;
    let config = dir.join(name).join("canup.toml");
    canup_tests::write_site_config(&config, repo_url, repo, &dir.join(name).join("state"), OPERATOR_POLICY, &api).unwrap();
    Site { name, sim, config, _api: api }
}

/// Runs the shipped `site.yml` on `sites` (the inventory is written beside them).
fn play(dir: &Path, sites: &[&Site]) -> Output {
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
    Command::new(ansible_playbook())
        .arg("-i")
        .arg(&path)
        .arg(workspace_dir().join("contrib/ansible/site.yml"))
        // Root already; the test machine has no sudo to become with.
        .args(["-e", "canup_version=3.40.0", "-e", "canup_install=false", "-e", "canup_accept_manual=true", "-e", "ansible_become=false"])
        .arg("-e")
        .arg(format!("canup_binary={}", canup_bin().display()))
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

/// (changed, failed) of `host` in the PLAY RECAP.
fn recap(o: &Output, host: &str) -> (u32, u32) {
    let out = String::from_utf8_lossy(&o.stdout);
    let line = out.lines().find(|l| l.starts_with(host) && l.contains("ok=")).unwrap_or_else(|| panic!("no recap for {host}:\n{}", text(o)));
    let field = |name: &str| line.split_whitespace().find_map(|w| w.strip_prefix(&format!("{name}="))).and_then(|v| v.parse().ok()).unwrap();
    (field("changed"), field("failed"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_role_upgrades_a_fleet_reports_changes_once_and_isolates_a_failing_host() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    publish_steps(&canup_bin(), &repo, &target_dir().join("dev-keys")).unwrap();
    let url = serve_repo(repo.clone(), Control::default()).await;
    let admin = Admin::new();
    admin.setup_canopsis_once().await.unwrap();
    admin.bind_che().await.unwrap();

    // Two sites at different versions and methods.
    let a =
        site(dir.path(), "site-a", Spec { version: "3.38.0".into(), edition: Edition::Cat, method: Method::Packages, ..Spec::default() }, &url, &repo).await;
    let b =
        site(dir.path(), "site-b", Spec { version: "3.39.0".into(), edition: Edition::Core, method: Method::Compose, ..Spec::default() }, &url, &repo).await;
    let first = play(dir.path(), &[&a, &b]);
    assert!(first.status.success(), "{}", text(&first));
    for s in [&a, &b] {
        assert_eq!(canup_tests::simhost::installed_version(s.sim.root()), "3.40.0", "{}", s.name);
        assert_eq!(recap(&first, s.name), (1, 0), "{} reports one change:\n{}", s.name, text(&first));
    }
    assert!(text(&first).contains("Canopsis is at 3.40.0"), "{}", text(&first));

    // The same play again: nothing to do, nothing changed, nothing run.
    let calls_before: Vec<usize> = [&a, &b].iter().map(|s| s.sim.calls().unwrap().len()).collect();
    let second = play(dir.path(), &[&a, &b]);
    assert!(second.status.success(), "{}", text(&second));
    for (s, before) in [&a, &b].iter().zip(calls_before) {
        assert_eq!(recap(&second, s.name), (0, 0), "{} reports no change:\n{}", s.name, text(&second));
        // Detection's queries (rpm -qa, docker ps) run again; nothing else does.
        let query = |c: &canup_tests::simhost::Call| c.program == "rpm" || (c.program == "docker" && c.args.first().is_some_and(|a| a == "ps"));
        let changes: Vec<String> = s.sim.calls().unwrap()[before..].iter().filter(|c| !query(c)).map(|c| c.line()).collect();
        assert!(changes.is_empty(), "{} ran {changes:?} again", s.name);
    }

    // A site whose installation is inconsistent fails with canup's error; the other site of
    // the same play is upgraded all the same.
    let broken =
        site(dir.path(), "site-c", Spec { version: "3.38.0".into(), edition: Edition::Core, method: Method::Packages, ..Spec::default() }, &url, &repo).await;
    std::fs::write(broken.sim.path("/opt/canopsis/VERSION.txt"), "Canopsis version 3.37.0\n").unwrap();
    let broken_before = broken.sim.snapshot().unwrap();
    admin.bind_che().await.unwrap();
    let d =
        site(dir.path(), "site-d", Spec { version: "3.38.0".into(), edition: Edition::Core, method: Method::Packages, ..Spec::default() }, &url, &repo).await;
    let third = play(dir.path(), &[&broken, &d]);
    assert!(!third.status.success(), "the play reports the failed host:\n{}", text(&third));
    assert_eq!(recap(&third, "site-c").1, 1, "{}", text(&third));
    assert!(
        text(&third).contains("/opt/canopsis/VERSION.txt says 3.37.0 but rpm -qa 'canopsis*' says 3.38.0"),
        "the failure carries canup's error:\n{}",
        text(&third)
    );
    let mut after = broken.sim.snapshot().unwrap();
    after.retain(|p, _| !p.contains("canup-sim/calls"));
    let mut before = broken_before;
    before.retain(|p, _| !p.contains("canup-sim/calls"));
    assert_eq!(after, before, "the failing site was not touched");
    assert_eq!(recap(&third, "site-d"), (1, 0), "{}", text(&third));
    assert_eq!(d.sim.read("/opt/canopsis/VERSION.txt").unwrap(), "Canopsis version 3.40.0\n");
}
