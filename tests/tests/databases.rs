//! Databases as endpoints, against a real PostgreSQL: 24.04.3's `perf_data_name` migration on
//! simulated RHEL 8 and 9 hosts of both editions, run once; and no step ever holding the
//! password canup connects with.

use std::sync::Arc;

use canup::audit::AuditLog;
use canup::backup::Backups;
use canup::capabilities::{CapabilitySet, Grant};
use canup::manifest::{Edition as StepEdition, Method as StepMethod, Phase, STEP_API};
use canup::sandbox::{Sandbox, StepContext, StepEnv};
use canup::sysroot::Sysroot;
use canup::ui::{ConsoleUi, Level};
use canup_tests::postgres::{BEFORE_24_04_3, PASSWORD, Postgres};
use canup_tests::simhost::{Edition, Os, SimHost, Spec};
use canup_tests::site::{Host, host, text};
use canup_tests::{OPERATOR_POLICY, guest_wasm, sim_bin};
use semver::Version;

const KIND: &str = "SELECT relkind FROM pg_class WHERE oid = to_regclass('perf_data_name')";
const NAMES: &str = "SELECT name || ' ' || unit || ' ' || updated_at FROM perf_data_name ORDER BY name";

/// A simulated host at `version` whose CPS_POSTGRES_URL is a fresh database of `pg` in the
/// state 24.04.0–24.04.2 leave.
async fn site(pg: &Postgres, db: &str, version: &str, edition: Edition, os: Os) -> Host {
    let h = host(Spec { version: version.into(), edition, os, ..Spec::default() }).await;
    let url = pg.create_database(db).unwrap();
    pg.sql_in(db, BEFORE_24_04_3).unwrap();
    h.sim.set_postgres_url(&url).unwrap();
    h
}

/// The psql calls of the run: the real psql ran them against the real server, with neither
/// the password nor the URL among its arguments.
fn psql_calls_hold_no_password(h: &Host) -> usize {
    let calls: Vec<_> = h.sim.calls().unwrap().into_iter().filter(|c| c.program == "psql").collect();
    for c in &calls {
        let line = format!("{:?} {:?}", c.args, c.env);
        assert!(!line.contains(PASSWORD) && !line.contains("postgresql://"), "{line}");
        assert_eq!(c.env.get("PGPASSFILE").map(String::as_str), Some("(canup's connection file)"), "{line}");
    }
    calls.len()
}

async fn migrates_once(pg: &Postgres, db: &str, edition: Edition, os: Os) {
    let h = site(pg, db, "24.04.0", edition, os).await;
    assert_eq!(pg.sql_in(db, KIND).unwrap().trim(), "m");
    let out = h.run(&["apply", "--to", "24.04.3", "--yes"]);
    let shown = text(&out);
    assert!(out.status.success(), "{edition:?} {os:?}: {shown}");
    assert!(shown.contains("perf_data_name is now a table"), "{shown}");
    assert!(shown.contains("succeeded: Canopsis is now at 24.04.3, detection after the run found it installed"), "{shown}");
    assert_eq!(pg.sql_in(db, KIND).unwrap().trim(), "r", "{shown}");
    assert_eq!(pg.sql_in(db, NAMES).unwrap(), "cpu % 2024-10-01 11:00:00\nmem MB 2024-10-01 10:00:00\n");
    // The query, then the migration: two psql runs.
    assert_eq!(psql_calls_hold_no_password(&h), 3, "query, migration, query after");
    let reconfigure = h.sim.calls().unwrap().into_iter().find(|c| c.program == "canopsis-reconfigure").expect("reconfigure ran");
    assert_eq!(
        reconfigure.env.get("PATH").map(String::as_str),
        Some("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin"),
        "reconfigure runs `bash -c mongosh …`"
    );
    assert!(reconfigure.env.contains_key("CPS_MONGO_URL"), "go-engines-vars.conf is exported to it: {:?}", reconfigure.env.keys());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn perf_data_name_becomes_a_table_once_on_rhel_8_and_9_in_both_editions() {
    let pg = Postgres::start().unwrap();
    migrates_once(&pg, "rhel8_core", Edition::Core, Os::Rhel8).await;
    migrates_once(&pg, "rhel9_cat", Edition::Cat, Os::Rhel9).await;
    migrates_once(&pg, "rhel8_cat", Edition::Cat, Os::Rhel8).await;
    migrates_once(&pg, "rhel9_core", Edition::Core, Os::Rhel9).await;

    // A second run on a database migrated before changes nothing: a host at 24.04.2 whose
    // database already has the table (and a row the migration would not make).
    let h = host(Spec { version: "24.04.2".into(), edition: Edition::Core, os: Os::Rhel8, ..Spec::default() }).await;
    h.sim.set_postgres_url(&pg.url_of("rhel8_core")).unwrap();
    pg.sql_in("rhel8_core", "INSERT INTO perf_data_name VALUES ('marker', 'x', '2020-01-01')").unwrap();
    let before = pg.sql_in("rhel8_core", NAMES).unwrap();
    let out = h.run(&["apply", "--to", "24.04.3", "--yes"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("perf_data_name is already a table"), "{}", text(&out));
    assert_eq!(pg.sql_in("rhel8_core", NAMES).unwrap(), before);
    assert_eq!(psql_calls_hold_no_password(&h), 1, "the query only");
}

/// A step that tries every way to the password canup connects PostgreSQL with gets none of
/// them, under the shipped policy, while its own query runs with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_step_receives_a_database_password() {
    let pg = Postgres::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sim = SimHost::create(&dir.path().join("root"), &Spec { version: "24.04.2".into(), os: Os::Rhel8, ..Spec::default() }, &sim_bin()).unwrap();
    sim.set_postgres_url(&pg.url()).unwrap();
    let shipped = canup::config::Config::parse(OPERATOR_POLICY, "host/dist/canup.toml").unwrap().policy;
    let declared: CapabilitySet = toml::from_str(
        r#"
[fs]
read = ["/opt/canopsis/**"]
[[exec]]
program = "/usr/bin/env"
env_file = "/opt/canopsis/etc/go-engines-vars.conf"
[[database]]
endpoint = "postgres"
write = true
"#,
    )
    .unwrap();
    let sandbox = Sandbox::new(None).unwrap();
    let loaded = sandbox.load("probe", &std::fs::read(guest_wasm("probe")).unwrap(), &STEP_API).unwrap();
    let audit = Arc::new(AuditLog::in_memory("databases"));
    let context = StepContext {
        step_id: "database-password".into(),
        phase: Phase::PostUpdate,
        installed: Version::new(24, 4, 2),
        target: Version::new(24, 4, 3),
        release: Version::new(24, 4, 3),
        edition: Some(StepEdition::Core),
        method: Some(StepMethod::Packages),
        dry_run: false,
    };
    let grant = Grant::new("database-password", &declared, &shipped).unwrap();
    let ui = Arc::new(ConsoleUi { assume_yes: true, accept_manual: true, min_level: Some(Level::Warn) });
    let backups = Backups::open(&dir.path().join("state"), "databases").unwrap();
    let env = StepEnv::new(grant, Sysroot::new(sim.root()).unwrap(), backups, audit.clone(), ui, context);
    let report = sandbox.run(&loaded, env).await;
    assert_eq!(report.result, Ok(()), "{:?}", report.result);
    let said = report.stdout.text();
    assert!(!said.contains(PASSWORD), "the step got the password: {said}");
    assert!(said.contains("read go-engines-vars.conf: refused: ") && said.contains("holds the databases' passwords"), "{said}");
    assert!(said.contains("env with go-engines-vars.conf: refused: ") && said.contains("/usr/bin/env"), "{said}");
    assert!(said.contains("psql \"\\\\! env\": refused: ") && said.contains("backslash command"), "{said}");
    assert!(said.contains("syntax error at or near"), "a backslash after SQL reaches the server as SQL: {said}");
    assert!(said.contains("session: GOT cpspostgres canopsis canup"), "its query ran with the password it never held: {said}");
    let audited = serde_json::to_string(&audit.records()).unwrap();
    assert!(!audited.contains(PASSWORD), "{audited}");
    let calls = serde_json::to_string(&sim.calls().unwrap()).unwrap();
    assert!(!calls.contains(PASSWORD), "{calls}");
}

/// Without a RabbitMQ endpoint the drain check cannot run: the run says `skipped` with the
/// reason (progress, summary, history, --json), never `ok`; `--strict-checks` fails it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_without_their_endpoint_are_skipped_not_ok() {
    let h = host(Spec { version: "23.04.1".into(), edition: Edition::Core, os: Os::Rhel8, ..Spec::default() }).await;
    let config = std::fs::read_to_string(&h.config).unwrap();
    let start = config.find("\n[endpoints.rabbitmq]").expect("the site names RabbitMQ") + 1;
    let end = start + config[start..].find("password_file").unwrap();
    let end = end + config[end..].find('\n').unwrap() + 1;
    std::fs::write(&h.config, format!("{}{}", &config[..start], &config[end..])).unwrap();

    let strict = h.run(&["apply", "--to", "23.04.2", "--yes", "--strict-checks", "--json"]);
    assert!(!strict.status.success(), "{}", text(&strict));
    let json: serde_json::Value = serde_json::from_slice(&strict.stdout).unwrap();
    assert!(json["error"].as_str().unwrap().contains("--strict-checks makes a skipped check fail the run"), "{json}");

    let out = h.run(&["apply", "--to", "23.04.2", "--yes", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["checks_skipped"][0]["step"], "drain/queues", "{json}");
    assert!(json["checks_skipped"][0]["reason"].as_str().unwrap().contains("rabbitmq endpoint is not configured"), "{json}");
    let drain = json["steps"].as_array().unwrap().iter().find(|s| s["step"] == "drain/queues").unwrap();
    assert_eq!(drain["outcome"], "skipped", "{json}");

    let history = text(&h.run(&["history"]));
    assert!(history.contains("succeeded, 1 check skipped"), "{history}");
    let line = history.lines().rev().find(|l| l.trim_start().starts_with("drain/queues")).unwrap();
    assert!(line.contains("skipped: not waiting for the RabbitMQ backlog"), "{line}");
    let json: serde_json::Value = serde_json::from_slice(&h.run(&["history", "--json"]).stdout).unwrap();
    let last = json.as_array().unwrap().last().unwrap();
    let drain = last["steps"].as_array().unwrap().iter().find(|s| s["step"] == "drain/queues").unwrap();
    assert_eq!(drain["outcome"], "skipped", "{last}");
}
