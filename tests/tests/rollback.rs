//! The backups canup takes before a run's first change, and `canup rollback`, end to end on a
//! simulated RHEL 8 package host: the real dnf against the simulated repositories, the real
//! PostgreSQL (Debian's) with the real pg_dump and pg_restore; MongoDB is simulated (its dump
//! and restore copy the simulated database's file).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use canup_tests::OPERATOR_POLICY;
use canup_tests::postgres::Postgres;
use canup_tests::simhost::{Edition, Os, Spec, packages};
use canup_tests::site::{Host, host_with_policy, text};

const ROWS: &str = "SELECT id || ' ' || note FROM alarm_note ORDER BY id";

/// The 23.04.14 package's PostgreSQL migration (the simulated packages carry no software: the
/// test puts it where the package would, and canopsis-reconfigure applies it as golang-migrate
/// does).
const MIGRATION: &str = "UPDATE alarm_note SET note = 'migrated' WHERE id = 1; ALTER TABLE alarm_note ADD COLUMN author text; INSERT INTO alarm_note VALUES (3, 'new', 'canopsis');";

/// A RHEL 8 Community host at 23.04.6 whose CPS_POSTGRES_URL is a fresh database of `pg` at
/// migration 1 with a table, dumping what its steps migrate (`[backup]` plus `extra`).
async fn site(pg: &Postgres, db: &str, extra: &str) -> Host {
    let policy = format!("{OPERATOR_POLICY}\n[backup]\ndatabases = \"asked\"\n{extra}\n");
    let h = host_with_policy(Spec { version: "23.04.6".into(), edition: Edition::Core, os: Os::Rhel8, ..Spec::default() }, &policy).await;
    let url = pg.create_database(db).unwrap();
    pg.sql_in(
        db,
        "CREATE TABLE schema_migrations (version bigint NOT NULL PRIMARY KEY, dirty boolean NOT NULL); INSERT INTO schema_migrations VALUES (1, false);
         CREATE TABLE alarm_note (id int PRIMARY KEY, note text); INSERT INTO alarm_note VALUES (1, 'before'), (2, 'kept');",
    )
    .unwrap();
    h.sim.set_postgres_url(&url).unwrap();
    h.sim.write("/opt/canopsis/share/database/postgres_migrations/000002_note.up.sql", MIGRATION).unwrap();
    h
}

/// The host's tree without what the simulated programs record of their calls and the
/// engines' runtime markers: what a rollback must bring back byte for byte.
fn tree(h: &Host) -> BTreeMap<String, String> {
    let mut t = h.sim.snapshot().unwrap();
    t.retain(|p, _| !p.contains("canup-sim/") && !p.starts_with("/opt/canopsis/var/"));
    t
}

fn history_json(h: &Host) -> serde_json::Value {
    serde_json::from_slice(&h.run(&["history", "--json"]).stdout).unwrap()
}

/// 23.04.6 → 23.04.14 takes its backups before the update, fails after it (in finalize, once
/// the migration changed the data), and `canup rollback` brings everything back: the packages
/// in one dnf transaction, the files, the PostgreSQL rows; detection says 23.04.6 and the
/// journal and history show the rollback. A rollback killed in its database stage resumes
/// there and finishes; one from an altered dump is refused first, changing nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_upgrade_is_rolled_back_packages_files_and_postgres_rows() {
    let pg = Postgres::start().unwrap();
    let h = site(&pg, "rollback_e2e", "").await;
    let before_tree = tree(&h);
    let before_rows = pg.sql_in("rollback_e2e", ROWS).unwrap();
    let before_packages = h.sim.installed_packages().unwrap();
    assert_eq!(before_packages, ["canopsis-23.04.6-1.el8.x86_64", "canopsis-webui-23.04.6-1.el8.x86_64"]);

    // A step after the update fails: 23.04.8's restart of engine-service, once the procedure's
    // finalize (canopsis-reconfigure, the migration) ran.
    h.sim.write("/var/lib/canup-sim/fail-systemctl", "").unwrap();
    let out = h.run(&["apply", "--to", "23.04.14", "--yes", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    assert_eq!(result["failed_step"], "23.04.8/recompute-counters", "{result:#}");
    assert_eq!((result["installed"].as_str(), result["target"].as_str()), (Some("23.4.6"), Some("23.4.14")), "{result:#}");
    let run = result["run"].as_str().unwrap().to_owned();
    let backup = Path::new(result["backup"].as_str().unwrap_or_else(|| panic!("no backup named: {result:#}"))).to_owned();
    assert!(pg.sql_in("rollback_e2e", ROWS).unwrap().contains("1 migrated"), "the migration ran before the failure");
    assert_eq!(
        h.sim.installed_packages().unwrap(),
        ["canopsis-23.04.14-1.el8.x86_64", "canopsis-common-23.04.14-1.el8.x86_64", "canopsis-webui-23.04.14-1.el8.x86_64"],
        "the update pinned the package 23.04.14 newly requires"
    );

    // The set: the package list and both dumps, taken before the update.
    let set: serde_json::Value = serde_json::from_slice(&std::fs::read(backup.join("set.json")).unwrap()).unwrap();
    let dumped: Vec<&str> = set["dumps"].as_array().unwrap().iter().map(|d| d["endpoint"].as_str().unwrap()).collect();
    assert_eq!(dumped, ["mongo", "postgres"], "{set:#}");
    assert!(std::fs::read_to_string(backup.join("packages.txt")).unwrap().contains("canopsis\t0\t23.04.6\t1.el8\tx86_64\n"));
    let calls = h.sim.calls().unwrap();
    let first = |p: &dyn Fn(&canup_tests::simhost::Call) -> bool| calls.iter().position(p).unwrap_or(usize::MAX);
    let dump = first(&|c| c.program == "pg_dump");
    let update = first(&|c| c.program == "dnf" && c.args.iter().any(|a| a == "update" || a == "install"));
    assert!(dump < update && update != usize::MAX, "pg_dump ({dump}) before the dnf update ({update})");
    let dumps: Vec<String> = calls.iter().filter(|c| c.program == "pg_dump").map(|c| format!("{:?} {:?}", c.args, c.env)).collect();
    assert!(
        dumps.iter().all(|d| !d.contains(canup_tests::postgres::PASSWORD) && d.contains("(canup's connection file)")),
        "the password in a file only: {dumps:?}"
    );
    std::fs::remove_file(h.sim.path("/var/lib/canup-sim/fail-systemctl")).unwrap();

    // A dump altered on disk: refused, naming it, and nothing changes.
    let dump_file = backup.join("postgres.dump");
    let original = std::fs::read(&dump_file).unwrap();
    std::fs::write(&dump_file, [&original[..], b"x"].concat()).unwrap();
    let snapshot = h.sim.snapshot().unwrap();
    let refused = h.run(&["rollback", &run, "--yes"]);
    assert_eq!(refused.status.code(), Some(16), "{}", text(&refused));
    assert!(text(&refused).contains("the dump of postgres") && text(&refused).contains("changed since it was taken"), "{}", text(&refused));
    assert_eq!(h.sim.snapshot().unwrap(), snapshot, "nothing changed");
    std::fs::write(&dump_file, &original).unwrap();

    // Without --yes and without a terminal to answer on: the rollback shows what it would
    // overwrite, each database named, and does nothing.
    let asked = h.canup(&["rollback", &run]).stdin(Stdio::null()).output().unwrap();
    assert_eq!(asked.status.code(), Some(8), "{}", text(&asked));
    let shown = text(&asked);
    assert!(shown.contains("database postgres (postgresql://cpspostgres:***@127.0.0.1:") && shown.contains("OVERWRITTEN with its dump taken at"), "{shown}");
    assert!(shown.contains("package canopsis-common: 23.04.14-1.el8 removed (installed by the run)"), "{shown}");
    assert!(shown.contains("the operator declined the rollback"), "{shown}");
    assert_eq!(h.sim.snapshot().unwrap(), snapshot, "nothing changed");
    assert!(history_json(&h)[0]["rollback"].is_null(), "no rollback journaled");

    // The rollback, killed (with what it ran) while restoring the database; then run again.
    let transactions = packages::history(h.sim.root(), "8").unwrap().len();
    h.sim.write("/var/lib/canup-sim/block-pg_restore", "").unwrap();
    let mut child = h.canup(&["rollback", &run, "--yes"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    h.power_cut(&mut child, "pg_restore");
    std::fs::remove_file(h.sim.path("/var/lib/canup-sim/block-pg_restore")).unwrap();
    let pending = history_json(&h);
    assert!(pending[0]["rollback"]["outcome"].is_null(), "{pending:#}");
    assert_eq!(h.run(&["apply", "--yes"]).status.code(), Some(7), "nothing else runs while a rollback is unfinished");

    let again = h.run(&["rollback", &run, "--yes"]);
    assert!(again.status.success(), "{}", text(&again));
    assert!(text(&again).contains("rolled back: Canopsis is at 23.04.6 again"), "{}", text(&again));

    assert_eq!(h.sim.installed_packages().unwrap(), before_packages);
    let history = packages::history(h.sim.root(), "8").unwrap();
    assert_eq!(history.len(), transactions + 1, "one dnf transaction for the rollback: {history:#?}");
    assert!(history[0].contains("Downgrade") || history[0].contains("D, "), "{history:#?}");
    let shells: Vec<_> = h.sim.calls().unwrap().into_iter().filter(|c| c.program == "dnf" && c.args.iter().any(|a| a == "shell")).collect();
    assert_eq!(shells.len(), 1, "the resumed rollback did not repeat its package stage");
    assert!(shells[0].input.as_deref().unwrap_or_default().contains("downgrade canopsis-23.04.6-1.el8.x86_64"), "{:?}", shells[0].input);
    assert_eq!(pg.sql_in("rollback_e2e", ROWS).unwrap(), before_rows, "the rows as before the run");
    assert_eq!(pg.sql_in("rollback_e2e", "SELECT version FROM schema_migrations").unwrap().trim(), "1");
    assert_eq!(tree(&h), before_tree, "the files as before the run");

    let status: serde_json::Value = serde_json::from_slice(&h.run(&["status", "--json"]).stdout).unwrap();
    assert_eq!(status["installed"], "23.4.6", "{status:#}");
    let runs = history_json(&h);
    assert_eq!(runs[0]["rollback"]["outcome"], "succeeded", "{runs:#}");
    let stages: Vec<&str> = runs[0]["rollback"]["stages"].as_array().unwrap().iter().map(|s| s[0].as_str().unwrap()).collect();
    assert_eq!(stages, ["packages", "files", "databases"], "{runs:#}");
    let shown = text(&h.run(&["history"]));
    assert!(shown.contains("rolled back to 23.04.6 by rollback"), "{shown}");

    let twice = h.run(&["rollback", &run, "--yes"]);
    assert_eq!(twice.status.code(), Some(16), "{}", text(&twice));
    assert!(text(&twice).contains("already brought the host back to 23.04.6"), "{}", text(&twice));
}

/// A tmpfs of 1 MiB as the backup directory: the dump of the real database does not fit, and
/// the plan stops before anything changes (no run in the journal, no package touched).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_without_space_stops_the_plan_before_any_change() {
    let pg = Postgres::start().unwrap();
    let small = tempfile::tempdir().unwrap();
    let mounted = std::process::Command::new("mount").args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"]).arg(small.path()).status().unwrap();
    assert!(mounted.success(), "mounting a 1 MiB tmpfs (the tests run as root with CAP_SYS_ADMIN)");
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(self.0).status();
        }
    }
    let _unmount = Unmount(small.path());
    let h = site(&pg, "rollback_space", &format!("dir = \"{}\"\nreserve_mib = 0", small.path().display())).await;
    let before = h.sim.snapshot().unwrap();
    let out = h.run(&["apply", "--to", "23.04.14", "--yes"]);
    assert_eq!(out.status.code(), Some(15), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains(&format!("do not fit in {}", small.path().display())) && said.contains("dump of postgres"), "{said}");
    assert_eq!(h.sim.snapshot().unwrap(), before, "nothing changed");
    assert!(!h.sim.calls().unwrap().iter().any(|c| c.program == "dnf" || c.program == "pg_dump"), "no step and no dump ran");
    assert_eq!(history_json(&h), serde_json::json!([]), "no run started");
    assert_eq!(std::fs::read_dir(small.path()).unwrap().count(), 0, "nothing written to the destination");
}

/// What the operator changed after a failed run is not undone behind their back: a package
/// installed again after the run's last record, and a later run, each make `canup rollback`
/// refuse, naming it, with nothing changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_is_refused_once_the_host_changed_after_the_run() {
    let pg = Postgres::start().unwrap();
    let h = site(&pg, "rollback_changed", "").await;
    h.sim.write("/var/lib/canup-sim/fail-systemctl", "").unwrap();
    let out = h.run(&["apply", "--to", "23.04.14", "--yes", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let run = result["run"].as_str().unwrap().to_owned();
    // rpm records install times in seconds: the operator's reinstall comes later.
    std::thread::sleep(Duration::from_millis(2100));
    let webui = packages::package(&packages::repository().unwrap(), "rhel8", "canopsis-webui", "23.04.14").unwrap();
    let reinstalled = packages::rpm(h.sim.root()).args(["-U", "--replacepkgs", "--nodeps", "--noscripts"]).arg(&webui).output().unwrap();
    assert!(reinstalled.status.success(), "{}", String::from_utf8_lossy(&reinstalled.stderr));
    let before = h.sim.snapshot().unwrap();
    let rows = pg.sql_in("rollback_changed", ROWS).unwrap();
    let refused = h.run(&["rollback", &run, "--yes"]);
    assert_eq!(refused.status.code(), Some(16), "{}", text(&refused));
    assert!(
        text(&refused).contains("packages changed after the run's last record") && text(&refused).contains("canopsis-webui-23.04.14"),
        "{}",
        text(&refused)
    );
    assert_eq!(h.sim.snapshot().unwrap(), before, "nothing changed");
    assert_eq!(pg.sql_in("rollback_changed", ROWS).unwrap(), rows, "no database restored");
    assert!(history_json(&h)[0]["rollback"].is_null(), "no rollback journaled");

    // A run after the one rolled back: undoing the first would undo the second too.
    let h = site(&pg, "rollback_later", "").await;
    let first = h.run(&["apply", "--to", "23.04.13", "--yes", "--json"]);
    assert!(first.status.success(), "{}", text(&first));
    let run: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    let run = run["run"].as_str().unwrap().to_owned();
    let second = h.run(&["apply", "--to", "23.04.14", "--yes"]);
    assert!(second.status.success(), "{}", text(&second));
    let before = h.sim.snapshot().unwrap();
    let refused = h.run(&["rollback", &run, "--yes"]);
    assert_eq!(refused.status.code(), Some(16), "{}", text(&refused));
    assert!(text(&refused).contains("started after it") && text(&refused).contains("canup rolls back the newest run only"), "{}", text(&refused));
    assert_eq!(h.sim.snapshot().unwrap(), before, "nothing changed");
}

/// A Compose installation: the backup set holds the project's directory and no package list
/// and no dump (its databases are in the containers; this run migrated none). The rollback
/// puts the project's files back, runs no package manager, and does not claim what it did not
/// do: detection finds the containers still at the target, and says how to finish (exit 9);
/// once the operator recreates them, canup finds the run's starting version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compose_rollback_puts_the_project_back_and_says_the_containers_are_not() {
    let policy = format!("{OPERATOR_POLICY}\n[backup]\ndatabases = \"asked\"\n");
    let spec = Spec { version: "3.38.0".into(), edition: Edition::Core, method: canup_tests::simhost::Method::Compose, ..Spec::default() };
    let h = host_with_policy(spec, &policy).await;
    let env_before = h.sim.read("/opt/canopsis/docker/.env").unwrap();
    let out = h.run(&["apply", "--to", "3.40.0", "--yes", "--accept-manual", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let backup = Path::new(result["backup"].as_str().unwrap()).to_owned();
    let set: serde_json::Value = serde_json::from_slice(&std::fs::read(backup.join("set.json")).unwrap()).unwrap();
    assert!(set["packages"].is_null() && set["dumps"] == serde_json::json!([]), "{set:#}");
    assert_eq!(set["config"][0]["path"], "/opt/canopsis/docker", "the Compose project is saved: {set:#}");

    let rolled = h.run(&["rollback", result["run"].as_str().unwrap(), "--yes"]);
    assert_eq!(rolled.status.code(), Some(9), "{}", text(&rolled));
    assert!(text(&rolled).contains("run `docker compose up -d` in /opt/canopsis/docker"), "{}", text(&rolled));
    assert_eq!(h.sim.read("/opt/canopsis/docker/.env").unwrap(), env_before, "the project's files are back");
    assert!(!h.sim.calls().unwrap().iter().any(|c| c.program == "dnf" || c.program == "yum"), "no package manager ran");
    assert_eq!(history_json(&h)[0]["rollback"]["outcome"], "unverified");

    // What the message says to do, then canup agrees.
    let up = std::process::Command::new(h.sim.path("/usr/bin/docker"))
        .args(["compose", "up", "-d"])
        .current_dir(h.sim.path("/opt/canopsis/docker"))
        .env("CPS_EDITION", "community")
        .output()
        .unwrap();
    assert!(up.status.success(), "{}", String::from_utf8_lossy(&up.stderr));
    let status: serde_json::Value = serde_json::from_slice(&h.run(&["status", "--json"]).stdout).unwrap();
    assert_eq!(status["installed"], "3.38.0", "{status:#}");
}

/// A 4.4 installation has no PostgreSQL (CPS_POSTGRES_URL comes with 4.5): the procedure's
/// finalize asks for dumps of both databases, MongoDB is dumped (simulated), and the missing
/// PostgreSQL neither stops the plan nor the rollback of a run that failed after the update.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_the_installation_lacks_is_not_asked_of_its_rollback() {
    let policy = format!("{OPERATOR_POLICY}\n[backup]\ndatabases = \"asked\"\n");
    let h = host_with_policy(Spec { version: "4.4.0".into(), edition: Edition::Core, ..Spec::default() }, &policy).await;
    let packages_before = h.sim.installed_packages().unwrap();
    h.sim.write("/var/lib/canup-sim/fail-canoctl", "").unwrap();
    let out = h.run(&["apply", "--to", "4.4.1", "--yes", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let set: serde_json::Value = serde_json::from_slice(&std::fs::read(Path::new(result["backup"].as_str().unwrap()).join("set.json")).unwrap()).unwrap();
    assert_eq!(set["asked"], serde_json::json!(["mongo"]), "{set:#}");
    assert!(set["not_dumped"][0]["why"].as_str().unwrap_or_default().contains("sets no CPS_POSTGRES_URL"), "{set:#}");
    assert_ne!(h.sim.installed_packages().unwrap(), packages_before, "the update ran");
    std::fs::remove_file(h.sim.path("/var/lib/canup-sim/fail-canoctl")).unwrap();
    let rolled = h.run(&["rollback", result["run"].as_str().unwrap(), "--yes"]);
    assert!(rolled.status.success(), "{}", text(&rolled));
    assert_eq!(h.sim.installed_packages().unwrap(), packages_before);
    assert!(text(&rolled).contains("rolled back: Canopsis is at 4.4.0 again"), "{}", text(&rolled));
}
