//! Every published step, on its own, twice against the simulated host: the second run must
//! change nothing (steps are idempotent, which is what makes resuming an interrupted upgrade
//! safe). Counters the simulator keeps of repeated actions (restarts, reloads, applied
//! scripts) and its call log are left out of the comparison: running them again is the
//! documented behaviour of those commands, not a change of state.

use std::path::Path;

use canup::manifest::{Edition, Method};
use canup::repository::{LoadOptions, Repository};
use canup::sandbox::Sandbox;
use canup_tests::simhost::{self, SimHost, Spec};
use canup_tests::steprun::{self, Setting};
use canup_tests::{canup_bin, publish_steps, target_dir};
use semver::Version;

const STUB: &str = env!("CARGO_BIN_EXE_canup-simstub");

/// Simulator files that count repeated actions.
const COUNTERS: &[&str] = &["canoctl-restarts", "daemon-reloads", "mongo-applied.js", "systemctl-actions"];

fn state(sim: &SimHost) -> std::collections::BTreeMap<String, String> {
    let mut tree = sim.snapshot().unwrap();
    tree.retain(|path, _| !COUNTERS.iter().any(|c| path.ends_with(c)));
    tree
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_step_changes_nothing_when_run_a_second_time() {
    let dir = tempfile::tempdir().unwrap();
    let repo_dir = dir.path().join("repo");
    publish_steps(&canup_bin(), &repo_dir, &target_dir().join("dev-keys")).unwrap();
    let root = std::fs::read(repo_dir.join("metadata/1.root.json")).unwrap();
    let repo = Repository::open(repo_dir.to_str().unwrap(), &root, &dir.path().join("cache"), &LoadOptions::default()).await.unwrap();
    let index = repo.index().await.unwrap();
    let sandbox = Sandbox::new(None).unwrap();
    canup_tests::rabbitmq::Admin::new().setup_canopsis_once().await.unwrap();
    let secret = dir.path().join("rabbitmq.pw");
    std::fs::write(&secret, canup_tests::rabbitmq::PASSWORD).unwrap();
    let endpoints = std::collections::BTreeMap::from([(
        "rabbitmq".to_owned(),
        canup::capabilities::http::Endpoint {
            url: canup_tests::rabbitmq::MANAGEMENT.into(),
            username: Some(canup_tests::rabbitmq::USER.into()),
            password_file: Some(secret.clone()),
            password_env: None,
            token_file: None,
            token_env: None,
        },
    )]);
    let mut checked = 0;
    for release in &index.releases {
        for step in &release.steps {
            for method in step.manifest.methods.clone() {
                let installed = if release.version.major == 4 { "4.5.4" } else { "3.37.0" };
                let spec = Spec {
                    version: installed.into(),
                    edition: simhost::Edition::Cat,
                    method: if method == Method::Packages { simhost::Method::Packages } else { simhost::Method::Compose },
                };
                let sim = SimHost::create(&dir.path().join(format!("sim-{checked}")), &spec, Path::new(STUB)).unwrap();
                let wasm = repo.module(step).await.unwrap();
                let loaded = sandbox.load(&step.manifest.id, &wasm, &step.api).unwrap();
                let setting = Setting {
                    installed: Version::parse(installed).unwrap(),
                    target: release.version.clone(),
                    release: release.version.clone(),
                    edition: Edition::Cat,
                    method,
                    endpoints: endpoints.clone(),
                    settings: [("drain_timeout_seconds".to_owned(), "20".to_owned())].into(),
                };
                let mut after = Vec::new();
                for attempt in 0..2 {
                    let (report, _) = steprun::run(&sandbox, &loaded, &step.manifest, sim.root(), &dir.path().join(format!("state-{checked}")), &setting).await;
                    assert_eq!(report.result, Ok(()), "step {} ({method}), run {}: {}", step.manifest.id, attempt + 1, report.stderr.text());
                    after.push(state(&sim));
                }
                assert_eq!(after[0], after[1], "step {} ({method}) changed the host again on its second run", step.manifest.id);
                checked += 1;
            }
        }
    }
    assert!(checked >= 20, "only {checked} step runs were checked");
}
