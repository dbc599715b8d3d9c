//! Docker Compose end to end: hosts built from the vendor's facts (facts/compose.toml), an
//! operator's changes on top, `canup apply`, and the real `docker-compose config` on the result.

use canopsis_facts::compose::ComposeFacts;
use canup_sdk::resync::{Value, env_entries, yaml_value};
use canup_tests::simhost::{Edition, Method, Spec, installed_version};
use canup_tests::site::{Host, host, text};

const PROJECT: &str = "/opt/canopsis/docker";

fn edition_name(e: Edition) -> &'static str {
    match e {
        Edition::Core => "core",
        Edition::Cat => "cat",
    }
}

fn reference(version: &str, edition: Edition) -> canopsis_facts::compose::Reference {
    ComposeFacts::embedded().unwrap().reference(version, edition_name(edition)).unwrap()
}

type Entries = Vec<(String, Value)>;

/// `value` with `f` applied to the mapping at `path`.
fn edit(value: &Value, path: &[&str], f: &dyn Fn(&mut Entries)) -> Value {
    let Value::Map(entries) = value else { panic!("not a mapping at {path:?}") };
    let mut entries = entries.clone();
    match path.split_first() {
        None => f(&mut entries),
        Some((first, rest)) => {
            let slot = entries.iter_mut().find(|(k, _)| k == first).unwrap_or_else(|| panic!("no {first}"));
            slot.1 = edit(&slot.1, rest, f);
        }
    }
    Value::Map(entries)
}

/// The operator's site: an extra service, the RabbitMQ management port moved, a variable of
/// their own in `.env` changed, and an override file.
struct OperatorChanges {
    variable: (String, String),
}

const EXPORTER: &str = "  my-exporter:\n    image: prom/node-exporter:v1.6.1\n    restart: unless-stopped\n";
const OVERRIDE: &str = "services:\n  my-sidecar:\n    image: busybox:1.36\n";

fn change_as_an_operator(h: &Host, from: &str, to: &str, edition: Edition) -> OperatorChanges {
    let yml = h.sim.read(&format!("{PROJECT}/docker-compose.yml")).unwrap();
    assert!(yml.contains("\"15672:15672\""), "{yml}");
    let yml = yml.replacen("services:\n", &format!("services:\n{EXPORTER}"), 1).replace("\"15672:15672\"", "\"25672:15672\"");
    h.sim.write(&format!("{PROJECT}/docker-compose.yml"), &yml).unwrap();
    h.sim.write(&format!("{PROJECT}/docker-compose.override.yml"), OVERRIDE).unwrap();
    // A variable the vendor leaves alone between the two releases, given the site's value.
    let (base, theirs) = (reference(from, edition), reference(to, edition));
    let base_env = &base.env.iter().find(|(f, _)| f == ".env").unwrap().1;
    let their_env = &theirs.env.iter().find(|(f, _)| f == ".env").unwrap().1;
    let (key, value) = base_env.iter().find(|(k, v)| k != "CANOPSIS_IMAGE_TAG" && their_env.iter().any(|(k2, v2)| k2 == k && v2 == v)).unwrap().clone();
    let site_value = format!("{value}-site");
    let env = h.sim.read(&format!("{PROJECT}/.env")).unwrap().replace(&format!("{key}={value}\n"), &format!("{key}={site_value}\n"));
    h.sim.write(&format!("{PROJECT}/.env"), &env).unwrap();
    OperatorChanges { variable: (key, site_value) }
}

/// One era's Compose path: every operator change is still there, every reference change is
/// applied (the operator's file means the target's reference plus the operator's changes,
/// nothing else), the real `docker-compose config` reads the result, the containers run the
/// target, and Compose ran as the era's update guide says.
async fn era(from: &str, to: &str, edition: Edition, up: &str, cps_edition: Option<&str>) -> Host {
    let h = host(Spec { version: from.into(), edition, method: Method::Compose, ..Spec::default() }).await;
    let changes = change_as_an_operator(&h, from, to, edition);
    let out = h.run(&["apply", "--to", to, "--yes", "--accept-manual"]);
    assert!(out.status.success(), "{from} → {to}: {}", text(&out));
    assert_eq!(installed_version(h.sim.root()), to, "{from} → {to}: the containers run the target");

    let theirs = reference(to, edition);
    let expected = edit(&theirs.compose, &["services"], &|services| {
        services.insert(
            0,
            ("my-exporter".into(), yaml_value(&format!("services:\n{EXPORTER}")).unwrap().get("services").unwrap().get("my-exporter").unwrap().clone()),
        );
    });
    let expected = edit(&expected, &["services", "rabbitmq"], &|rabbitmq| {
        let ports = rabbitmq.iter_mut().find(|(k, _)| k == "ports").unwrap();
        ports.1 = Value::Seq(vec![Value::Str("5672:5672".into()), Value::Str("25672:15672".into())]);
    });
    let merged = yaml_value(&h.sim.read(&format!("{PROJECT}/docker-compose.yml")).unwrap()).unwrap();
    assert!(
        merged.same(&expected),
        "{from} → {to}: the merged docker-compose.yml\n{}\nis not the target's reference with the operator's changes",
        merged.show()
    );
    for (file, vars) in &theirs.env {
        let on_host = env_entries(&h.sim.read(&format!("{PROJECT}/{file}")).unwrap());
        let want: Vec<(String, String)> =
            vars.iter().map(|(k, v)| if *k == changes.variable.0 { (k.clone(), changes.variable.1.clone()) } else { (k.clone(), v.clone()) }).collect();
        let mut on_host_sorted = on_host.clone();
        on_host_sorted.sort();
        let mut want_sorted = want.clone();
        want_sorted.sort();
        assert_eq!(on_host_sorted, want_sorted, "{from} → {to}: {file}");
    }
    assert_eq!(h.sim.read(&format!("{PROJECT}/docker-compose.override.yml")).unwrap(), OVERRIDE, "never touched");

    let resolved = h.sim.compose_config().unwrap_or_else(|e| panic!("{from} → {to}: {e}"));
    assert!(resolved.contains("my-exporter") && resolved.contains("my-sidecar"), "{resolved}");
    assert!(resolved.contains(&format!(":{to}")), "{resolved}");

    let calls = h.sim.calls().unwrap();
    let ups: Vec<_> = calls.iter().filter(|c| c.line() == up).collect();
    assert_eq!(ups.len(), 1, "{from} → {to}: one `{up}`: {:?}", calls.iter().map(|c| c.line()).collect::<Vec<_>>());
    assert_eq!(ups[0].cwd, h.sim.path(PROJECT).display().to_string());
    assert_eq!(ups[0].env.get("CPS_EDITION").map(String::as_str), cps_edition, "{from} → {to}");
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_3x_pro_site_keeps_its_changes_and_gets_3_39s_redis_fifo_and_che() {
    let h = era("3.38.0", "3.40.0", Edition::Cat, "docker-compose up -d", None).await;
    let yml = h.sim.read(&format!("{PROJECT}/docker-compose.yml")).unwrap();
    let merged = yaml_value(&yml).unwrap();
    assert_eq!(merged.get("services").unwrap().get("che").unwrap().get("command").unwrap().show(), "/engine-che");
    assert!(merged.get("services").unwrap().get("fifo").is_some());
    assert!(h.sim.read(&format!("{PROJECT}/.env")).unwrap().contains("REDIS_TAG=5.0.8-buster\n"));
    // The operator's previous files are kept and can be put back.
    let runs = h.run(&["history", "--json"]);
    let run = serde_json::from_slice::<serde_json::Value>(&runs.stdout).unwrap()[0]["run"].as_str().unwrap().to_owned();
    let restored = h.run(&["restore-files", &run]);
    assert!(restored.status.success(), "{}", text(&restored));
    assert!(h.sim.read(&format!("{PROJECT}/docker-compose.yml")).unwrap().contains("-alwaysFlushEntities"));
}

/// 4.5.4 → 4.5.7 changes no service in the reference files (the releases of an era between
/// barriers differ by their image tag): the `.env` resync, Pro's single-file layout and
/// Compose v1 are what this era checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_4x_site_of_the_4_4_layout_keeps_its_changes() {
    era("4.5.4", "4.5.7", Edition::Cat, "docker-compose up -d", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_22_10_site_runs_docker_compose_with_its_edition() {
    era("22.10.1", "22.10.13", Edition::Core, "docker-compose up -d", Some("community")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_23_04_pro_site_runs_docker_compose_with_its_edition() {
    era("23.04.1", "23.04.14", Edition::Cat, "docker-compose up -d", Some("pro")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_23_10_site_runs_docker_compose_v2_with_its_edition() {
    era("23.10.1", "23.10.8", Edition::Core, "docker compose up -d", Some("community")).await;
}

/// 24.04 on Compose: the resync and `docker compose up -d` as in 23.10, and 24.04.3's
/// `perf_data_name` migration given as the note's command for the operator to run in the
/// timescaledb container (canup does not reach that database), accepted here by
/// --accept-manual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_24_04_pro_site_gets_the_perf_data_name_migration_as_the_notes_command() {
    let h = era("24.04.0", "24.04.3", Edition::Cat, "docker compose up -d", Some("pro")).await;
    let history = text(&h.run(&["history"]));
    assert!(history.contains("24.04.3/perf-data-name-compose"), "{history}");
    let audit = std::fs::read_to_string(h.dir.path().join("state/audit.jsonl")).unwrap();
    let manual = audit.lines().find(|l| l.contains("\"ui.manual\"") && l.contains("perf_data_name")).unwrap_or_else(|| panic!("{audit}"));
    assert!(manual.contains("docker compose exec timescaledb psql") && manual.contains("DROP MATERIALIZED VIEW perf_data_name"), "{manual}");
}

/// The dry run shows the resync before anything changes: a unified diff per file, and what
/// stays the operator's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dry_run_shows_the_resync_as_a_diff_and_what_stays_yours() {
    let h = host(Spec { version: "3.38.0".into(), edition: Edition::Core, method: Method::Compose, ..Spec::default() }).await;
    change_as_an_operator(&h, "3.38.0", "3.40.0", Edition::Core);
    let before = h.sim.snapshot().unwrap();
    let out = h.run(&["apply", "--to", "3.40.0", "--dry-run", "--accept-manual"]);
    assert!(out.status.success(), "{}", text(&out));
    let shown = text(&out);
    for wanted in [
        "--- a/opt/canopsis/docker/docker-compose.yml",
        "+++ b/opt/canopsis/docker/docker-compose.yml",
        "-    command: /engine-che -alwaysFlushEntities",
        "+    command: /engine-che",
        "+  fifo:",
        "--- a/opt/canopsis/docker/.env",
        "-REDIS_TAG=4.0.14-buster",
        "+REDIS_TAG=5.0.8-buster",
        "yours, kept: services.my-exporter",
        "yours, kept: services.rabbitmq.ports: yours [25672:15672]",
    ] {
        assert!(shown.contains(wanted), "no {wanted:?} in:\n{shown}");
    }
    assert_eq!(h.sim.snapshot().unwrap(), before, "the dry run changed the host");
}

/// Both sides changed engine-che's command (the operator added an option; 3.39.0 removes
/// `-alwaysFlushEntities`): nothing changes, not a byte, and the message names the key, the
/// operator's value and the reference's old and new ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_changed_on_both_sides_stops_before_anything_changes() {
    let h = host(Spec { version: "3.38.0".into(), edition: Edition::Core, method: Method::Compose, ..Spec::default() }).await;
    let yml = h.sim.read(&format!("{PROJECT}/docker-compose.yml")).unwrap();
    let mine = yml.replace("command: /engine-che -alwaysFlushEntities", "command: /engine-che -alwaysFlushEntities -printEventOnError");
    assert_ne!(mine, yml);
    h.sim.write(&format!("{PROJECT}/docker-compose.yml"), &mine).unwrap();
    h.refused(
        &["apply", "--to", "3.40.0", "--yes", "--accept-manual"],
        &[
            "services.che.command: yours is `/engine-che -alwaysFlushEntities -printEventOnError`; the reference changed it from `/engine-che -alwaysFlushEntities` to `/engine-che`",
            "nothing was changed",
        ],
    );
}

/// Flow style is YAML too: the operator's file written as one JSON document is merged, not
/// refused, and the result is still valid Compose.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_style_compose_file_is_merged() {
    fn json(v: &Value) -> serde_json::Value {
        match v {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Number(n) => n.parse::<i64>().map(serde_json::Value::from).unwrap_or_else(|_| serde_json::Value::String(n.clone())),
            Value::Str(s) => serde_json::Value::String(s.clone()),
            Value::Seq(items) => serde_json::Value::Array(items.iter().map(json).collect()),
            Value::Map(entries) => serde_json::Value::Object(entries.iter().map(|(k, v)| (k.clone(), json(v))).collect()),
        }
    }
    let h = host(Spec { version: "3.38.0".into(), edition: Edition::Cat, method: Method::Compose, ..Spec::default() }).await;
    let block = h.sim.read(&format!("{PROJECT}/docker-compose.yml")).unwrap();
    let flow = serde_json::to_string(&json(&yaml_value(&block).unwrap())).unwrap() + "\n";
    h.sim.write(&format!("{PROJECT}/docker-compose.yml"), &flow).unwrap();
    let out = h.run(&["apply", "--to", "3.40.0", "--yes", "--accept-manual"]);
    assert!(out.status.success(), "{}", text(&out));
    let merged = h.sim.read(&format!("{PROJECT}/docker-compose.yml")).unwrap();
    assert!(merged.starts_with('{') && !merged.contains("\n  "), "still one flow document:\n{merged}");
    assert!(yaml_value(&merged).unwrap().same(&reference("3.40.0", Edition::Cat).compose), "{merged}");
    h.sim.compose_config().unwrap();
}

/// The project where the operator keeps it: `compose_dir` in canup.toml. Without it, canup
/// looks in the default directory, finds the containers' label naming the real one, says
/// which, and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compose_project_is_found_where_canup_toml_says() {
    let dir = "/srv/canopsis-compose";
    let h = host(Spec { version: "23.10.1".into(), method: Method::Compose, compose_dir: dir.into(), ..Spec::default() }).await;
    h.refused(&["apply", "--to", "23.10.8", "--yes", "--accept-manual"], &[&format!("set compose_dir = \"{dir}\" in canup.toml")]);
    let config = std::fs::read_to_string(&h.config).unwrap();
    std::fs::write(&h.config, format!("compose_dir = \"{dir}\"\n{config}")).unwrap();
    let out = h.run(&["apply", "--to", "23.10.8", "--yes", "--accept-manual"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(installed_version(h.sim.root()), "23.10.8");
    assert!(h.sim.read(&format!("{dir}/.env")).unwrap().contains("CANOPSIS_IMAGE_TAG=23.10.8\n"));
}

/// `.env` says one release and the containers run another (an edit never applied): detection
/// names both and nothing runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_env_the_containers_do_not_run_is_named_and_nothing_runs() {
    let h = host(Spec { version: "23.10.1".into(), method: Method::Compose, ..Spec::default() }).await;
    let env = h.sim.read(&format!("{PROJECT}/.env")).unwrap().replace("CANOPSIS_IMAGE_TAG=23.10.1", "CANOPSIS_IMAGE_TAG=23.10.2");
    h.sim.write(&format!("{PROJECT}/.env"), &env).unwrap();
    h.refused(&["apply", "--to", "23.10.8", "--yes", "--accept-manual"], &["says CANOPSIS_IMAGE_TAG=23.10.2 but the containers run 23.10.1"]);
}

/// Pro's split reference (00-data, 01-prov, 02-app, from the 4.4.0 migration guide) is not
/// public, so not in the facts: a project laid out that way is refused before anything changes,
/// saying why and what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pros_split_compose_files_are_refused_before_anything_changes() {
    let h = host(Spec { version: "4.5.4".into(), edition: Edition::Cat, method: Method::Compose, ..Spec::default() }).await;
    let yml = h.sim.read(&format!("{PROJECT}/docker-compose.yml")).unwrap();
    std::fs::remove_file(h.sim.path(&format!("{PROJECT}/docker-compose.yml"))).unwrap();
    for part in ["00-data", "01-prov", "02-app"] {
        h.sim.write(&format!("{PROJECT}/{part}.docker-compose.yml"), &yml).unwrap();
    }
    h.refused(&["apply", "--to", "4.5.7", "--yes", "--accept-manual"], &["Pro's split Compose files", "nothing was changed"]);
}

/// The vendor's own 22.10+ files build their services from `x-` templates merged with `<<:`;
/// an operator's file written that way is resynced through them: what the templates give
/// stays given by them, and the result means the target's reference.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_project_built_on_yaml_templates_is_resynced_through_them() {
    let h = host(Spec { version: "23.10.1".into(), method: Method::Compose, ..Spec::default() }).await;
    let yml = h.sim.read(&format!("{PROJECT}/docker-compose.yml")).unwrap();
    let restarts = yml.matches("    restart: unless-stopped\n").count();
    assert!(restarts > 3, "{yml}");
    let templated =
        format!("x-service_base: &service_base\n  restart: unless-stopped\n{}", yml.replace("    restart: unless-stopped\n", "    <<: *service_base\n"));
    // Its meaning without the templates themselves (top-level `x-` keys, which Compose ignores).
    let meaning = |text: &str| match yaml_value(text).unwrap() {
        Value::Map(top) => Value::Map(top.into_iter().filter(|(k, _)| !k.starts_with("x-")).collect()),
        other => other,
    };
    assert!(meaning(&templated).same(&meaning(&yml)), "the same meaning");
    h.sim.write(&format!("{PROJECT}/docker-compose.yml"), &templated).unwrap();
    let out = h.run(&["apply", "--to", "23.10.8", "--yes", "--accept-manual"]);
    assert!(out.status.success(), "{}", text(&out));
    let merged = h.sim.read(&format!("{PROJECT}/docker-compose.yml")).unwrap();
    assert_eq!(merged.matches("<<: *service_base").count(), restarts, "the templates stay:\n{merged}");
    assert!(meaning(&merged).same(&reference("23.10.8", Edition::Core).compose), "{merged}");
    h.sim.compose_config().unwrap();
}

/// canup's default project directory (the operator's side) and the SDK's (a step's fallback
/// when the setting is absent, as under `canup step run`) are one directory.
#[test]
fn the_default_compose_directory_is_the_same_on_both_sides() {
    assert_eq!(canup::capabilities::DEFAULT_COMPOSE_DIR, canup_sdk::helpers::DEFAULT_COMPOSE_DIR);
    assert_eq!(canup::capabilities::DEFAULT_COMPOSE_DIR, PROJECT);
}
