//! Every published step, on its own, twice against the simulated host.
//!
//! - The first run makes the calls its release note gives, in order, and changes the files it
//!   should: both are compared with `tests/expected/step-effects.txt`, which was checked by
//!   hand against `../shared/canopsis-docs`. When a step changes on purpose, rerun with
//!   `CANUP_BLESS=1`, then review the file's diff like code.
//! - The second run must change nothing (steps are idempotent, which is what makes resuming an
//!   interrupted upgrade safe). Counters the simulator keeps of repeated actions (restarts,
//!   reloads, applied scripts) and its call log are left out of that comparison: running them
//!   again is the documented behaviour of those commands, not a change of state.

use std::path::Path;

use canup::manifest::{Edition, Method};
use canup::repository::{LoadOptions, Repository};
use canup::sandbox::Sandbox;
use canup_tests::canopsis_api::CanopsisApi;
use canup_tests::simhost::{self, SimHost, Spec};
use canup_tests::steprun::{self, Setting};
use canup_tests::{canup_bin, publish_steps, target_dir};
use semver::Version;

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
    let repo =
        Repository::open(repo_dir.to_str().unwrap(), &root, &dir.path().join("cache"), &dir.path().join("trust"), &LoadOptions::default()).await.unwrap();
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
    // 4.3.1 purges Redis database 11 on a real server; database 0 must keep its keys.
    let redis = canup_tests::redis::Redis::start().unwrap();
    // 24.04.3 turns a view into a table on a real PostgreSQL: each host gets a database in the
    // state 24.04.0–24.04.2 leave.
    let postgres = canup_tests::postgres::Postgres::start().unwrap();
    let mut checked = 0;
    let mut effects = String::new();
    // A step already checked with the same module, release data and era would do the same
    // again: the standard steps every release carries run once per era, a release's own
    // steps (and shared steps fed by its data) for their release.
    let mut seen = std::collections::BTreeSet::new();
    for release in &index.releases {
        let data = repo.release_data(release).await.unwrap();
        // The release's data by content: 4.5.4's and 4.5.5's Compose .env have the same length.
        let data_digest: Vec<(String, String)> = data.iter().map(|(k, v)| (k.clone(), format!("{:x}", <sha2::Sha256 as sha2::Digest>::digest(v)))).collect();
        for step in &release.steps {
            for method in step.manifest.methods.clone() {
                let (installed, os) = era_host(&release.version);
                if !seen.insert((step.manifest.id.clone(), method.to_string(), step.sha256.clone(), format!("{data_digest:?}"), installed)) {
                    continue;
                }
                let spec = Spec {
                    version: installed.into(),
                    edition: simhost::Edition::Cat,
                    method: if method == Method::Packages { simhost::Method::Packages } else { simhost::Method::Compose },
                    os,
                    ..Spec::default()
                };
                let sim = SimHost::create(&dir.path().join(format!("sim-{checked}")), &spec, &canup_tests::sim_bin()).unwrap();
                sim.set_redis_url(&redis.url(0)).unwrap();
                if step.manifest.capabilities.database.iter().any(|d| d.endpoint == "postgres") {
                    let db = format!("steps_{checked}");
                    let url = postgres.create_database(&db).unwrap();
                    postgres.sql_in(&db, canup_tests::postgres::BEFORE_24_04_3).unwrap();
                    sim.set_postgres_url(&url).unwrap();
                }
                redis.cli(&["-n", "11", "SET", "pbehavior-cache", "stale"]).unwrap();
                redis.cli(&["-n", "0", "SET", "engine-state", "kept"]).unwrap();
                let wasm = repo.module(step).await.unwrap();
                let loaded = sandbox.load(&step.manifest.id, &wasm, &step.api).unwrap();
                let setting = Setting {
                    installed: canup::version::parse(installed).unwrap(),
                    target: release.version.clone(),
                    release: release.version.clone(),
                    edition: Edition::Cat,
                    method,
                    endpoints: endpoints.clone(),
                    settings: [("drain_timeout_seconds".to_owned(), "20".to_owned()), ("drain_stats_interval_ms".to_owned(), "100".to_owned())].into(),
                    data: repo.release_data(release).await.unwrap(),
                };
                let before = sim.snapshot().unwrap();
                let mut after = Vec::new();
                for attempt in 0..2 {
                    let (report, _) = steprun::run(&sandbox, &loaded, &step.manifest, sim.root(), &dir.path().join(format!("state-{checked}")), &setting).await;
                    assert_eq!(report.result, Ok(()), "step {} ({method}), run {}: {}", step.manifest.id, attempt + 1, report.stderr.text());
                    if attempt == 0 {
                        // The test server's port changes from run to run.
                        let described = describe(
                            &format!("{} of release {} ({method}, from {installed})", step.manifest.id, canup::version::text(&release.version)),
                            &sim,
                            &before,
                        );
                        effects.push_str(
                            &described
                                .replace(&format!("127.0.0.1:{}/", redis.port), "127.0.0.1:REDIS_PORT/")
                                .replace(&format!("-p {} ", redis.port), "-p REDIS_PORT "),
                        );
                    }
                    after.push(state(&sim));
                }
                assert_eq!(after[0], after[1], "step {} ({method}) changed the host again on its second run", step.manifest.id);
                if step.manifest.id.starts_with("4.3.1/purge-pbehavior-cache") {
                    assert_eq!(redis.cli(&["-n", "11", "DBSIZE"]).unwrap().trim(), "0", "{}: Redis database 11 purged", step.manifest.id);
                }
                assert_eq!(redis.cli(&["-n", "0", "GET", "engine-state"]).unwrap().trim(), "kept", "{}: Redis database 0 untouched", step.manifest.id);
                checked += 1;
            }
        }
    }
    assert!(checked >= 20, "only {checked} step runs were checked");
    compare_with_expected(&effects);
}

/// The simulated host a release's steps run on: its era's first release, on CentOS 7 (23.x and
/// 24.x on RHEL 8, whose procedure differs).
fn era_host(release: &Version) -> (&'static str, simhost::Os) {
    match (release.major, release.minor) {
        (3, _) => ("3.37.0", simhost::Os::Centos7),
        (4, _) => ("4.5.4", simhost::Os::Centos7),
        (22, _) => ("22.10.1", simhost::Os::Centos7),
        (23, 4) => ("23.04.1", simhost::Os::Rhel8),
        (23, _) => ("23.10.1", simhost::Os::Rhel8),
        _ => ("24.04.0", simhost::Os::Rhel8),
    }
}

/// The calls a step's first run made and the files it created, changed or removed.
fn describe(title: &str, sim: &SimHost, before: &std::collections::BTreeMap<String, String>) -> String {
    let mut out = format!("## {title}\n");
    for call in sim.calls().unwrap() {
        let env = if call.env.is_empty() { String::new() } else { format!(" [env {}]", call.env.keys().cloned().collect::<Vec<_>>().join(",")) };
        out.push_str(&format!("call: {} (as {}){env}\n", call.line(), call.user));
    }
    let after = sim.snapshot().unwrap();
    for (path, content) in &after {
        let skip = path.contains("canup-sim/calls") || path.contains("/log/canup-sim");
        match before.get(path) {
            _ if skip => {}
            None => out.push_str(&format!("created: {path}\n")),
            Some(old) if old != content => out.push_str(&format!("changed: {path}\n")),
            Some(_) => {}
        }
    }
    for path in before.keys().filter(|p| !after.contains_key(*p)) {
        out.push_str(&format!("removed: {path}\n"));
    }
    out + "\n"
}

fn compare_with_expected(actual: &str) {
    let path = canup_tests::workspace_dir().join("tests/expected/step-effects.txt");
    if std::env::var_os("CANUP_BLESS").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    if expected != actual {
        let diff: Vec<String> = diff_lines(&expected, actual);
        panic!(
            "the steps' effects differ from {} (- expected, + actual):\n{}\nIf the change is intended, rerun with CANUP_BLESS=1 and review the file's diff.",
            path.display(),
            diff.join("\n")
        );
    }
}

/// Lines only in `a` (-) or only in `b` (+), in order; enough to see what moved.
fn diff_lines(a: &str, b: &str) -> Vec<String> {
    let (a, b): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    let mut out: Vec<String> = a.iter().filter(|l| !b.contains(l)).map(|l| format!("- {l}")).collect();
    out.extend(b.iter().filter(|l| !a.contains(l)).map(|l| format!("+ {l}")));
    if out.is_empty() {
        out.push("(same lines, different order)".into());
    }
    out
}

fn api_setting(api: &CanopsisApi, dir: &Path, installed: &str, target: &str, settings: &[(&str, &str)]) -> Setting {
    let secret = dir.join("api.pw");
    std::fs::write(&secret, canup_tests::canopsis_api::PASSWORD).unwrap();
    Setting {
        installed: Version::parse(installed).unwrap(),
        target: Version::parse(target).unwrap(),
        release: Version::parse(target).unwrap(),
        edition: Edition::Cat,
        method: Method::Packages,
        endpoints: [(
            "canopsis-api".to_owned(),
            canup::capabilities::http::Endpoint {
                url: api.url.clone(),
                username: Some("root".into()),
                password_file: Some(secret),
                password_env: None,
                token_file: None,
                token_env: None,
            },
        )]
        .into(),
        settings: settings.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        data: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_check_waits_for_the_restart_and_checks_the_version_of_the_era() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = Sandbox::new(None).unwrap();
    let (step, loaded, _) = steprun::load(&sandbox, "api-check", "api-check").unwrap();
    let fast = [("api_poll_ms", "200"), ("api_timeout_seconds", "20")];

    // 3.x: the API is restarting at first, then answers with the target version.
    let sim = SimHost::create(&dir.path().join("sim3"), &Spec { version: "3.40.0".into(), ..Spec::default() }, &canup_tests::sim_bin()).unwrap();
    let api = CanopsisApi::serve(sim.root().to_path_buf()).await;
    let down = sim.path("/var/lib/canup-sim/api-down");
    std::fs::create_dir_all(down.parent().unwrap()).unwrap();
    std::fs::write(&down, "").unwrap();
    let restart = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
        std::fs::remove_file(down).unwrap();
    });
    let (report, _) =
        steprun::run(&sandbox, &loaded, &step, sim.root(), &dir.path().join("s1"), &api_setting(&api, dir.path(), "3.39.0", "3.40.0", &fast)).await;
    restart.await.unwrap();
    assert_eq!(report.result, Ok(()), "{}", report.stderr.text());
    let requests = api.requests();
    assert!(requests.len() >= 2, "it polled while the API was down: {requests:?}");
    assert!(requests.iter().all(|r| r.method == "GET" && r.path == "/api/internal/app_info" && r.authorized), "{requests:?}");

    // 4.x: the v4 path; an API still on the old version is an error naming both versions.
    let sim4 = SimHost::create(&dir.path().join("sim4"), &Spec { version: "4.5.6".into(), ..Spec::default() }, &canup_tests::sim_bin()).unwrap();
    let api4 = CanopsisApi::serve(sim4.root().to_path_buf()).await;
    let (report, _) =
        steprun::run(&sandbox, &loaded, &step, sim4.root(), &dir.path().join("s2"), &api_setting(&api4, dir.path(), "4.5.6", "4.5.7", &fast)).await;
    let err = report.result.unwrap_err().to_string();
    assert!(err.contains("answers version 4.5.6 on /api/v4/app-info, expected 4.5.7"), "{err}");

    // An API that never comes back: the step gives up after its timeout, naming what it saw.
    std::fs::write(sim4.path("/var/lib/canup-sim/api-down"), "").unwrap();
    let (report, _) = steprun::run(
        &sandbox,
        &loaded,
        &step,
        sim4.root(),
        &dir.path().join("s3"),
        &api_setting(&api4, dir.path(), "4.5.6", "4.5.6", &[("api_poll_ms", "200"), ("api_timeout_seconds", "1")]),
    )
    .await;
    let err = report.result.unwrap_err().to_string();
    assert!(err.contains("did not answer GET /api/v4/app-info within 1s (last: HTTP 503"), "{err}");
}
