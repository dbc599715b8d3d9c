//! End to end: the real `canup` binary, a signed repository of the project's steps served over
//! loopback HTTP, and the simulated Canopsis host.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use canup_tests::rabbitmq::Admin;
use canup_tests::simhost::{Edition, Method, SimHost, Spec, packages};
use canup_tests::site::{Host, host, host_on, host_with_policy, repository, text};
use canup_tests::{OPERATOR_POLICY, canup_bin, target_dir};

fn position(calls: &[String], needle: &str) -> usize {
    calls.iter().position(|c| c.contains(needle)).unwrap_or_else(|| panic!("no call {needle:?} in {calls:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packages_cat_3_38_to_3_40_runs_the_steps_in_order() {
    let h = host(Spec { version: "3.38.0".into(), edition: Edition::Cat, method: Method::Packages, ..Spec::default() }).await;
    // An operator's copy of the che unit, which the 3.39.0 note's `grep -lr
    // alwaysFlushEntities /etc/systemd/system/canopsis*` finds too.
    let copy = "/etc/systemd/system/canopsis-engine-go@engine-che.service";
    h.sim.write(copy, "[Service]\nExecStart=/opt/canopsis/bin/engine-che -alwaysFlushEntities -d\n").unwrap();
    let out = h.run(&["apply", "--to", "3.40.0", "--yes", "--accept-manual"]);
    assert!(out.status.success(), "{}", text(&out));
    let calls = h.calls();
    assert_eq!(
        h.changes(),
        [
            "yum update -y canopsis-cat-3.40.0 canopsis-core-3.40.0",
            "su - canopsis -c canopsinit --canopsis-edition cat --canopsis-stack go",
            "canopsinit --canopsis-edition cat --canopsis-stack go",
            "systemctl daemon-reload",
            "canoctl restart",
            "systemctl enable canopsis-engine-go@engine-fifo",
            "init -conf /opt/canopsis/etc/initialisation.toml",
            "systemctl daemon-reload",
            "canoctl restart",
            "canoctl restart",
        ]
    );
    assert!(calls.contains(&"canopsinit --canopsis-edition cat --canopsis-stack go as canopsis".to_owned()));
    assert_eq!(h.sim.read("/opt/canopsis/VERSION.txt").unwrap(), "Canopsis version 3.40.0\n");
    assert_eq!(h.sim.installed_packages().unwrap(), ["canopsis-cat-3.40.0-1.el7.x86_64", "canopsis-core-3.40.0-1.el7.x86_64"]);
    let webserver = h.sim.read("/opt/canopsis/etc/webserver.conf").unwrap();
    assert!(webserver.ends_with("canopsis.webcore.services.metaalarmrule=1\ncanopsis.webcore.services.broadcast_message=1\n"));
    assert!(!h.sim.read("/etc/systemd/system/canopsis-engine-go@engine-che.service.d/che.conf").unwrap().contains("alwaysFlushEntities"));
    assert_eq!(h.sim.read(copy).unwrap(), "[Service]\nExecStart=/opt/canopsis/bin/engine-che -d\n");
    assert_eq!(h.sim.read("/opt/canopsis/etc/amqp2engines.conf").unwrap(), h.sim.read("/opt/canopsis/etc/amqp2engines-go-cat.conf.example").unwrap());
    let o = text(&out);
    assert!(o.contains("plan: Canopsis 3.38.0 → 3.40.0 (cat edition, packages method)") && o.contains("summary: run"), "{o}");

    // A second apply has nothing to do, and says so without journaling an empty run.
    let runs = |h: &Host| serde_json::from_slice::<serde_json::Value>(&h.run(&["history", "--json"]).stdout).unwrap().as_array().unwrap().len();
    let before = runs(&h);
    let again = h.run(&["apply", "--to", "3.40.0", "--yes"]);
    assert!(again.status.success(), "{}", text(&again));
    assert!(text(&again).contains("Canopsis is already at 3.40.0: nothing to do"), "{}", text(&again));
    assert_eq!(runs(&h), before);
}

/// A Community site of the Python stack (the 3.x default: no Go engine enabled): canopsinit
/// keeps its stack, `--canopsis-stack python`, and is never switched to Go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packages_core_3_38_to_3_40_updates_only_the_core_package_and_keeps_the_python_stack() {
    let h = host(Spec { version: "3.38.0".into(), edition: Edition::Core, method: Method::Packages, ..Spec::default() }).await;
    for unit in ["canopsis-engine-go@engine-che", "canopsis-engine-go@engine-axe"] {
        std::fs::remove_file(h.sim.path(&format!("/etc/systemd/system/multi-user.target.wants/{unit}.service"))).unwrap();
    }
    let out = h.run(&["apply", "--to", "3.40.0", "--yes", "--accept-manual"]);
    assert!(out.status.success(), "{}", text(&out));
    let changes = h.changes();
    assert_eq!(changes[0], "yum update -y canopsis-core-3.40.0");
    assert_eq!(changes[1], "su - canopsis -c canopsinit --canopsis-edition core --canopsis-stack python");
    assert!(position(&changes, "canoctl restart") < position(&changes, "systemctl enable canopsis-engine-go@engine-fifo"));
    assert_eq!(h.sim.installed_packages().unwrap(), ["canopsis-core-3.40.0-1.el7.x86_64"]);
    assert_eq!(h.sim.read("/opt/canopsis/etc/amqp2engines.conf").unwrap(), h.sim.read("/opt/canopsis/etc/amqp2engines-go-core.conf.example").unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_from_3_37_runs_the_3_38_pre_update_before_yum() {
    let h = host(Spec { version: "3.37.0".into(), edition: Edition::Core, method: Method::Packages, ..Spec::default() }).await;
    let out = h.run(&["apply", "--to", "3.40.0", "--yes", "--accept-manual"]);
    assert!(out.status.success(), "{}", text(&out));
    let calls = h.changes();
    assert!(position(&calls, "mongo --nodb --quiet") < position(&calls, "yum update -y canopsis-core-3.40.0"));
    assert!(!calls.iter().any(|c| c.contains("canopsis-cat")), "{calls:#?}");
    assert!(
        position(&calls, "canoctl restart") < position(&calls, "systemctl enable canopsis-engine-go@engine-fifo"),
        "3.39.0 post-update runs after the standard restart"
    );
    // 3.37.0's own note is not part of an upgrade from 3.37.0.
    assert!(!h.sim.read("/opt/canopsis/etc/default_configuration.toml").unwrap().contains("CancelAutosolveDelay"));
    assert_eq!(h.sim.read("/opt/canopsis/etc/amqp2engines.conf").unwrap(), h.sim.read("/opt/canopsis/etc/amqp2engines-go-core.conf.example").unwrap());
}

/// A RHEL 8 host (Pro, 23.04): the update through dnf, the RHEL 8 procedure's `dnf makecache`
/// first, Pro's `canopsis-pro` and the web UI moved by the real dnf in one transaction;
/// `status` names the OS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packages_on_rhel_8_update_with_dnf_makecache_then_dnf() {
    let h = host(Spec { version: "23.04.1".into(), edition: Edition::Cat, os: canup_tests::simhost::Os::Rhel8, ..Spec::default() }).await;
    let status = h.run(&["status"]);
    assert!(text(&status).contains("operating system: Red Hat Enterprise Linux 8.8 (Ootpa)"), "{}", text(&status));
    let out = h.run(&["apply", "--to", "23.04.3", "--yes"]);
    assert!(out.status.success(), "{}", text(&out));
    let changes = h.changes();
    assert_eq!(
        changes[..3],
        [
            "dnf makecache",
            "dnf --disablerepo=* --enablerepo=canopsis* update -y canopsis-pro-23.04.3 canopsis-webui-23.04.3",
            "canopsis-reconfigure -edition pro -migrate-postgres=true -migrate-mongo=true"
        ],
        "{changes:#?}"
    );
    assert!(!changes.iter().any(|c| c.starts_with("yum ")), "{changes:#?}");
    assert_eq!(h.sim.installed_packages().unwrap(), ["canopsis-pro-23.04.3-1.el8.x86_64", "canopsis-webui-23.04.3-1.el8.x86_64"]);
    let upgrades: Vec<String> = packages::history(h.sim.root(), "8").unwrap().into_iter().filter(|l| l.contains("Upgrade")).collect();
    assert_eq!(upgrades.len(), 1, "{upgrades:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packages_4_5_4_to_4_5_7_runs_the_4x_procedure_and_each_release_migrations() {
    let h = host(Spec { version: "4.5.4".into(), edition: Edition::Core, method: Method::Packages, ..Spec::default() }).await;
    let out = h.run(&["apply", "--to", "4.5.7", "--yes"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        h.changes(),
        [
            "yum --disablerepo=* --enablerepo=canopsis* update -y canopsis-core-4.5.7 canopsis-engines-go-4.5.7 canopsis-webui-4.5.7",
            "su - canopsis -c canopsinit --canopsis-edition core",
            "canopsinit --canopsis-edition core",
            // The PostgreSQL migrations of the 4.5 era (4.5.0's guide, release-4.6's text).
            "canopsis-reconfigure -migrate-postgres=true -postgres-migration-mode=up -postgres-migration-directory=/opt/canopsis/share/migrations/postgres",
            "systemctl daemon-reload",
            "canoctl restart",
            // The mongo database endpoint: the shell connects from canup's file, never from
            // an argument.
            "mongo --nodb --quiet (canup's connection file)",
            "mongo --nodb --quiet (canup's connection file)",
            "mongo --nodb --quiet (canup's connection file)",
            "mongo --nodb --quiet (canup's connection file)",
            "mongo --nodb --quiet (canup's connection file)",
        ]
    );
    let reconfigure = h.sim.calls().unwrap().into_iter().find(|c| c.program == "canopsis-reconfigure").unwrap();
    assert_eq!(reconfigure.env.get("CPS_MONGO_URL").map(String::as_str), Some("mongodb://cpsmongo:canopsis@localhost/canopsis"));
    // The notes' scripts, release by release, in the notes' order.
    let applied: Vec<String> =
        h.sim.read("/var/lib/canup-sim/mongo-applied.js").unwrap().lines().filter(|l| l.starts_with("// ")).map(|l| l[3..].to_owned()).collect();
    assert_eq!(
        applied,
        [
            "release4.4/016_add_snooze_and_pbehavior_durations_to_alarm.js",
            "release4.5/008_add_multiple_executions_to_job.js",
            "release4.4/016_add_snooze_and_pbehavior_durations_to_alarm.js",
            "release4.4/016_add_snooze_and_pbehavior_durations_to_alarm.js",
            "release4.5/000_add_pbehavior_info_to_entity.js",
        ]
    );
    assert_eq!(h.sim.read("/opt/canopsis/VERSION.txt").unwrap(), "Canopsis version 4.5.7\n");
    // The scripts got the URL with its password; canup's records did not keep it.
    for record in ["audit.jsonl", "journal.jsonl"] {
        let text = std::fs::read_to_string(h.dir.path().join("state").join(record)).unwrap();
        assert!(!text.contains("cpsmongo:canopsis@"), "{record}: {text}");
        assert!(record != "audit.jsonl" || text.contains("mongodb://cpsmongo:***@localhost/canopsis"), "the audit names the endpoint's URL, masked: {text}");
    }
}

/// RabbitMQ down, then RabbitMQ refusing canup's password: the plan's steps would fail at the
/// drain check or 3.39.0's unbind, after the packages were updated and the engines restarted.
/// canup checks what the steps call before the first change, names the endpoint and the steps
/// that need it, and changes nothing; fixed, the same command runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_that_does_not_answer_stops_the_upgrade_before_anything_changes() {
    let h = host(Spec { version: "3.38.0".into(), edition: Edition::Cat, ..Spec::default() }).await;
    let before = h.sim.snapshot().unwrap();
    // The endpoint's own table (the policy above it quotes the same URL in a comment).
    let management = format!("[endpoints.rabbitmq]\nurl = \"{}\"", canup_tests::rabbitmq::MANAGEMENT);
    let closed = "[endpoints.rabbitmq]\nurl = \"http://127.0.0.1:9\"";
    h.edit_config(&management, closed);
    let out = h.run(&["apply", "--to", "3.40.0", "--yes", "--accept-manual"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains("endpoint rabbitmq (http://127.0.0.1:9) does not answer"), "{said}");
    assert!(said.contains("needed by 3.39.0/unbind-che, drain/queues") && said.contains("nothing was changed"), "{said}");
    assert!(h.changes().is_empty(), "{:?}", h.changes());
    assert_eq!(h.sim.snapshot().unwrap(), before);
    // Answering, but not to canup's password.
    h.edit_config(closed, &management);
    let secret = h.dir.path().join("rabbitmq.pw");
    let good = std::fs::read_to_string(&secret).unwrap();
    std::fs::write(&secret, "not-the-password\n").unwrap();
    let out = h.run(&["apply", "--to", "3.40.0", "--yes", "--accept-manual"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("endpoint rabbitmq") && text(&out).contains("refuses canup's credentials (HTTP 401"), "{}", text(&out));
    assert_eq!(h.sim.snapshot().unwrap(), before);
    std::fs::write(&secret, good).unwrap();
    let out = h.run(&["apply", "--to", "3.40.0", "--yes", "--accept-manual"]);
    assert!(out.status.success(), "{}", text(&out));
}

/// 3.39.0's « Redis doit être mis à jour vers sa version 5 » is a condition canup can read:
/// on a host whose Redis (a real redis-server) is already 5 or later, nothing is asked and the
/// unattended run needs no --accept-manual; on one whose Redis cannot be read, the question
/// comes in the preflight phase, before anything changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_5_is_checked_before_the_downtime_and_asked_only_when_not_met() {
    let unknown = host(Spec { version: "3.38.0".into(), edition: Edition::Core, ..Spec::default() }).await;
    // No Redis answers there.
    unknown.sim.set_redis_url("redis://127.0.0.1:9/0").unwrap();
    let before = unknown.sim.snapshot().unwrap();
    let out = unknown.run(&["apply", "--to", "3.40.0", "--yes"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("Canopsis 3.39.0 needs Redis 5 and canup could not read Redis's version"), "{}", text(&out));
    assert!(unknown.changes().is_empty(), "asked before any change: {:?}", unknown.changes());
    assert_eq!(unknown.sim.snapshot().unwrap(), before);

    let redis = canup_tests::redis::Redis::start().unwrap();
    let h = host(Spec { version: "3.38.0".into(), edition: Edition::Core, ..Spec::default() }).await;
    h.sim.set_redis_url(&redis.url(0)).unwrap();
    let plan = text(&h.run(&["plan", "--to", "3.40.0"]));
    let preflight = plan.split("preflight:").nth(1).and_then(|p| p.split("update:").next()).unwrap_or_default();
    assert!(preflight.contains("3.39.0/redis-5"), "listed in the plan's preflight: {plan}");
    let out = h.run(&["apply", "--to", "3.40.0", "--yes"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("already meets Canopsis 3.39.0"), "{}", text(&out));
}

/// One shared step runs for 4.5.5, 4.5.6 and 4.5.7 (each release's MongoDB scripts). When
/// 4.5.7's fails half-way, the re-run resumes that release's run of the step alone: 4.5.5's and
/// 4.5.6's stay done, and 4.5.7's first script, already applied, is not applied again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_step_failing_for_one_release_resumes_for_that_release_only() {
    let h = host(Spec { version: "4.5.4".into(), edition: Edition::Core, method: Method::Packages, ..Spec::default() }).await;
    h.sim.write("/var/lib/canup-sim/mongo-refuse", "000_add_pbehavior_info_to_entity").unwrap();
    let out = h.run(&["apply", "--to", "4.5.7", "--yes"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("step mongodb-scripts@4.5.7 failed"), "{}", text(&out));
    let applied = || -> Vec<String> {
        h.sim.read("/var/lib/canup-sim/mongo-applied.js").unwrap().lines().filter_map(|l| l.strip_prefix("// ").map(str::to_owned)).collect()
    };
    let s016 = "release4.4/016_add_snooze_and_pbehavior_durations_to_alarm.js";
    assert_eq!(applied(), [s016, "release4.5/008_add_multiple_executions_to_job.js", s016, s016]);
    h.sim.write("/var/lib/canup-sim/mongo-refuse", "").unwrap();
    let out = h.run(&["apply", "--yes"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(applied(), [s016, "release4.5/008_add_multiple_executions_to_job.js", s016, s016, "release4.5/000_add_pbehavior_info_to_entity.js"]);
    let history = text(&h.run(&["history"]));
    for key in ["mongodb-scripts@4.5.5", "mongodb-scripts@4.5.6", "mongodb-scripts@4.5.7"] {
        assert!(history.contains(key), "{key} in {history}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_change_nothing_and_have_distinct_codes() {
    let h = host(Spec { version: "3.40.0".into(), ..Spec::default() }).await;
    let before = h.sim.snapshot().unwrap();
    let major = h.run(&["plan", "--to", "4.0.0"]);
    assert_eq!(major.status.code(), Some(10), "{}", text(&major));
    // The major's migration guide is a barrier of the catalogue: named with its link.
    assert!(
        text(&major).contains("3.40.0 → 4.0.0 reaches 4.0.0, which needs the migration guide \"Guide de migration vers Canopsis 4.0.0\""),
        "{}",
        text(&major)
    );
    let down = h.run(&["apply", "--to", "3.39.0", "--yes"]);
    assert_eq!(down.status.code(), Some(11), "{}", text(&down));
    assert!(text(&down).contains("canup does not downgrade"));
    let missing = h.run(&["plan", "--to", "3.45.0"]);
    assert_eq!(missing.status.code(), Some(12));
    assert_eq!(h.sim.snapshot().unwrap(), before);
    assert!(h.changes().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_lacking_a_capability_stops_the_plan_before_anything_runs() {
    let narrow = OPERATOR_POLICY.replace(
        "[[policy.exec]]\nprogram = \"/opt/canopsis/bin/init\"\nargs = [\"-conf\", \"/opt/canopsis/etc/initialisation.toml\"]\nenv_file = \"/opt/canopsis/etc/go-engines-vars.conf\"\n",
        "",
    );
    assert_ne!(narrow, OPERATOR_POLICY);
    let h = host_with_policy(Spec { version: "3.38.0".into(), ..Spec::default() }, &narrow).await;
    let before = h.sim.snapshot().unwrap();
    let out = h.run(&["apply", "--to", "3.40.0", "--yes", "--accept-manual"]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    assert!(text(&out).contains("step 3.39.0/fifo-queue (Copy initialisation-cat.toml.example"), "{}", text(&out));
    assert!(text(&out).contains("needs, beyond the policy:\n      exec of /opt/canopsis/bin/init with arguments [\"-conf\""), "{}", text(&out));
    assert!(text(&out).contains("`canup policy review`"), "{}", text(&out));
    assert_eq!(h.sim.snapshot().unwrap(), before);
    assert!(h.changes().is_empty(), "{:?}", h.changes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_changes_nothing_and_lists_what_the_real_run_does() {
    let h = host(Spec { version: "3.38.0".into(), edition: Edition::Cat, method: Method::Packages, ..Spec::default() }).await;
    let before = h.sim.snapshot().unwrap();
    let dry = h.run(&["apply", "--to", "3.40.0", "--dry-run", "--accept-manual"]);
    assert!(dry.status.success(), "{}", text(&dry));
    assert_eq!(h.sim.snapshot().unwrap(), before, "the dry run changed the host");
    assert!(h.changes().is_empty(), "the dry run ran {:?}", h.changes());
    let listed: Vec<String> = String::from_utf8_lossy(&dry.stdout)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("run: "))
        .map(|l| {
            l.replace("/usr/bin/", "")
                .replace("/opt/canopsis/bin/", "")
                .replace("CPS_AMQP_URL=… CPS_MONGO_URL=… CPS_REDIS_URL=… CPS_INFLUX_URL=… CPS_DEFAULT_CFG=… CPS_API_URL=… CPS_OLD_API_URL=… ", "")
                .replace('\'', "")
        })
        .collect();
    assert!(text(&dry).contains("append to /opt/canopsis/etc/webserver.conf:"), "{}", text(&dry));
    let real = h.run(&["apply", "--to", "3.40.0", "--yes", "--accept-manual"]);
    assert!(real.status.success(), "{}", text(&real));
    // The real run executes the commands the dry run listed (the nested canopsinit is su's).
    let executed: Vec<String> = h.changes().into_iter().filter(|c| !c.starts_with("canopsinit")).collect();
    assert_eq!(listed, executed);
}

/// The operator re-runs `apply` while the program the killed run started (`program`, held by
/// the simulated host) still runs: the resumed run must wait for it; then the program is let
/// go. Returns the resumed run's status and output.
fn resume_while_blocked(h: &Host, program: &str) -> (std::process::ExitStatus, String) {
    let log = h.dir.path().join("resume.log");
    // Both streams append: a stdout opened at offset 0 would write over what stderr added.
    let append = || std::fs::File::options().create(true).append(true).open(&log).unwrap();
    let mut resume = h.canup(&["apply", "--yes", "--accept-manual"]).stdout(append()).stderr(append()).spawn().unwrap();
    let start = Instant::now();
    while !std::fs::read_to_string(&log).unwrap_or_default().contains("which the interrupted run started and is still running") {
        assert!(start.elapsed() < Duration::from_secs(60), "the resumed run never waited: {}", std::fs::read_to_string(&log).unwrap_or_default());
        assert!(resume.try_wait().unwrap().is_none(), "the resumed run ended without waiting: {}", std::fs::read_to_string(&log).unwrap_or_default());
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::remove_file(h.sim.path(&format!("/var/lib/canup-sim/block-{program}"))).unwrap();
    let status = resume.wait().unwrap();
    (status, std::fs::read_to_string(&log).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_mid_step_resumes_and_each_step_completes_once() {
    let reference = host(Spec { version: "3.38.0".into(), edition: Edition::Cat, method: Method::Packages, ..Spec::default() }).await;
    assert!(reference.run(&["apply", "--to", "3.40.0", "--yes", "--accept-manual"]).status.success());

    let h = host(Spec { version: "3.38.0".into(), edition: Edition::Cat, method: Method::Packages, ..Spec::default() }).await;
    h.sim.write("/var/lib/canup-sim/block-init", "").unwrap();
    let mut child = h.canup(&["apply", "--to", "3.40.0", "--yes", "--accept-manual"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    h.wait_blocked("init");
    // A second apply meanwhile is refused.
    let second = h.run(&["apply", "--to", "3.40.0", "--yes", "--accept-manual"]);
    assert_eq!(second.status.code(), Some(6), "{}", text(&second));
    assert!(text(&second).contains(&format!("another canup (pid {})", child.id())), "{}", text(&second));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // The interrupted `init` goes on running (as a real program would, in its own process
    // group). The operator re-runs at once: the resumed step waits for that `init` and takes
    // its outcome from the receipt instead of starting it a second time.
    let pid: i32 = h.sim.read("/var/lib/canup-sim/blocked-init").unwrap().trim().parse().unwrap();
    assert!(canup_tests::process_alive(pid), "the interrupted init outlives canup");
    let (status, resumed) = resume_while_blocked(&h, "init");
    assert!(status.success(), "{resumed}");
    assert!(resumed.contains("resuming an interrupted run: 5 steps already done"), "{resumed}");
    assert!(resumed.contains("waiting for /opt/canopsis/bin/init -conf"), "{resumed}");
    assert!(resumed.contains("not run again (it finished after the interruption, exit 0)"), "{resumed}");

    // Same end state; every step ran to completion once.
    let tree = |s: &SimHost| {
        let mut t = s.snapshot().unwrap();
        t.retain(|k, _| !k.contains("block"));
        t.into_iter().map(|(k, v)| (k.clone(), v.replace(s.root().to_str().unwrap(), "ROOT"))).collect::<Vec<_>>()
    };
    assert_eq!(tree(&h.sim), tree(&reference.sim));
    let history = h.run(&["history", "--json"]);
    let runs: serde_json::Value = serde_json::from_slice(&history.stdout).unwrap();
    let steps = runs[0]["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 14);
    assert!(steps.iter().all(|s| s["outcome"] == "succeeded"), "{steps:#?}");
    assert_eq!(runs[0]["outcome"], "succeeded");
    assert_eq!(h.changes(), reference.changes(), "every command ran once, the interrupted init too");
    assert!(!h.dir.path().join("state/receipts").exists(), "the finished run left no receipt behind");
}

/// The real dnf behind the host's yum, against a vendor repository that lacks the target:
/// "No match for argument", exit 1; canup stops at the update (nothing after it runs, the
/// packages are untouched), and once the repository has the release, a re-run resumes at the
/// update and finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_missing_from_the_package_repository_stops_at_the_update_and_a_rerun_finishes() {
    let h = host(Spec { version: "3.39.1".into(), edition: Edition::Cat, method: Method::Packages, ..Spec::default() }).await;
    let mirror = h.dir.path().join("mirror");
    packages::mirror_without(&mirror, &["3.40.0"]).unwrap();
    packages::use_repository(h.sim.root(), &mirror).unwrap();

    let out = h.run(&["apply", "--to", "3.40.0", "--yes", "--accept-manual"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("No match for argument: canopsis-core-3.40.0"), "{}", text(&out));
    assert!(text(&out).contains("step procedure-3.x/yum-update failed"), "{}", text(&out));
    let changes = h.changes();
    assert_eq!(
        changes.last().map(String::as_str),
        Some("yum update -y canopsis-cat-3.40.0 canopsis-core-3.40.0"),
        "nothing after the update ran: {changes:#?}"
    );
    assert_eq!(h.sim.installed_packages().unwrap(), ["canopsis-cat-3.39.1-1.el7.x86_64", "canopsis-core-3.39.1-1.el7.x86_64"]);

    // The vendor publishes the packages; the operator runs canup again.
    packages::use_repository(h.sim.root(), &packages::repository().unwrap()).unwrap();
    let again = h.run(&["apply", "--yes", "--accept-manual"]);
    assert!(again.status.success(), "{}", text(&again));
    assert!(text(&again).contains("resuming an interrupted run"), "{}", text(&again));
    assert_eq!(h.sim.installed_packages().unwrap(), ["canopsis-cat-3.40.0-1.el7.x86_64", "canopsis-core-3.40.0-1.el7.x86_64"]);
    assert_eq!(h.sim.read("/opt/canopsis/VERSION.txt").unwrap(), "Canopsis version 3.40.0\n");
    let upgrades: Vec<String> = packages::history(h.sim.root(), "7").unwrap().into_iter().filter(|l| l.contains("Upgrade")).collect();
    assert_eq!(upgrades.len(), 1, "{upgrades:#?}");
}

/// A vendor repository that has the target's `canopsis-core` and engines but not its
/// `canopsis-webui`: the real dnf updates what it finds and leaves the web UI behind (as the
/// vendor's own unpinned update would); canup does not claim the upgrade: exit 9, the message,
/// the journal and --json name the package left behind. Once the repository has it, a new run
/// (detection counts the installation at its oldest package) brings it to the target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_ui_left_behind_by_the_repository_is_unverified_and_named() {
    let h = host(Spec { version: "4.5.4".into(), edition: Edition::Core, method: Method::Packages, ..Spec::default() }).await;
    let mirror = h.dir.path().join("mirror");
    packages::mirror_without(&mirror, &["canopsis-webui-4.5.7"]).unwrap();
    packages::use_repository(h.sim.root(), &mirror).unwrap();

    let out = h.run(&["apply", "--to", "4.5.7", "--yes", "--json"]);
    assert_eq!(out.status.code(), Some(9), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains("canopsis-webui is at 4.5.4"), "the package left behind is named: {said}");
    assert!(!said.contains("Canopsis is now at 4.5.7"), "nothing claimed: {said}");
    assert_eq!(
        h.sim.installed_packages().unwrap(),
        ["canopsis-core-4.5.7-1.el7.x86_64", "canopsis-engines-go-4.5.7-1.el7.x86_64", "canopsis-webui-4.5.4-1.el7.x86_64"]
    );
    let history: serde_json::Value = serde_json::from_slice(&h.run(&["history", "--json"]).stdout).unwrap();
    assert_eq!(history[0]["outcome"], "unverified", "{history:#}");
    assert!(history[0]["message"].as_str().unwrap_or_default().contains("canopsis-webui is at 4.5.4"), "{history:#}");
    assert!(text(&h.run(&["status"])).contains("4.5.4"), "the installation counts as its oldest package");

    packages::use_repository(h.sim.root(), &packages::repository().unwrap()).unwrap();
    let again = h.run(&["apply", "--to", "4.5.7", "--yes"]);
    assert!(again.status.success(), "{}", text(&again));
    assert_eq!(
        h.sim.installed_packages().unwrap(),
        ["canopsis-core-4.5.7-1.el7.x86_64", "canopsis-engines-go-4.5.7-1.el7.x86_64", "canopsis-webui-4.5.7-1.el7.x86_64"]
    );
}

/// A package past the installation's main one (what an unpinned update's resolver does with a
/// new requirement: `canopsis-common` at the repository's newest) describes no version:
/// detection refuses, naming the package and the way out, and nothing changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canopsis_package_past_the_others_is_named_and_nothing_runs() {
    let h = host(Spec { version: "23.04.8".into(), edition: Edition::Core, os: canup_tests::simhost::Os::Rhel8, ..Spec::default() }).await;
    let newer = packages::package(&packages::repository().unwrap(), "rhel8", "canopsis-common", "23.04.14").unwrap();
    let out = packages::rpm(h.sim.root()).args(["-U", "--nodeps", "--noscripts"]).arg(&newer).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let before = h.sim.snapshot().unwrap();
    let out = h.run(&["apply", "--to", "23.04.14", "--yes"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("canopsis is at 23.04.8 but canopsis-common is at 23.04.14"), "{}", text(&out));
    assert_eq!(h.sim.snapshot().unwrap(), before, "refused before any change");
}

/// canup killed (SIGKILL) while the real dnf update runs; the operator re-runs at once. The
/// resumed run waits for the interrupted dnf instead of starting another: dnf's own history
/// shows exactly one upgrade transaction, and the packages are at the target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_during_the_package_update_leaves_exactly_one_dnf_transaction() {
    let h = host(Spec { version: "3.39.1".into(), edition: Edition::Cat, method: Method::Packages, ..Spec::default() }).await;
    h.sim.write("/var/lib/canup-sim/block-yum", "").unwrap();
    let mut child = h.canup(&["apply", "--to", "3.40.0", "--yes", "--accept-manual"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    h.wait_blocked("yum");
    child.kill().unwrap();
    child.wait().unwrap();
    let (status, resumed) = resume_while_blocked(&h, "yum");
    assert!(status.success(), "{resumed}");
    assert_eq!(h.sim.installed_packages().unwrap(), ["canopsis-cat-3.40.0-1.el7.x86_64", "canopsis-core-3.40.0-1.el7.x86_64"]);
    let history = packages::history(h.sim.root(), "7").unwrap();
    let upgrades: Vec<&String> = history.iter().filter(|l| l.contains("Upgrade")).collect();
    assert_eq!(upgrades.len(), 1, "one upgrade transaction: {history:#?}");
    assert_eq!(h.changes().iter().filter(|c| c.starts_with("yum ")).count(), 1, "{:#?}", h.changes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_whose_receipt_shell_died_with_canup_runs_again_with_a_warning() {
    let h = host(Spec { version: "3.38.0".into(), edition: Edition::Cat, method: Method::Packages, ..Spec::default() }).await;
    h.sim.write("/var/lib/canup-sim/block-canoctl", "").unwrap();
    let mut child = h.canup(&["apply", "--to", "3.40.0", "--yes", "--accept-manual"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    // What a power cut does: canup, the receipt's shell and the command all die at once.
    h.power_cut(&mut child, "canoctl");
    std::fs::remove_file(h.sim.path("/var/lib/canup-sim/block-canoctl")).unwrap();
    let resumed = h.run(&["apply", "--yes", "--accept-manual"]);
    assert!(resumed.status.success(), "{}", text(&resumed));
    assert!(
        text(&resumed).contains("/usr/bin/canoctl restart was interrupted with the run before it (its shell died without an exit status): whether it took effect is unknown; running it again"),
        "{}",
        text(&resumed)
    );
    let restarts = |h: &Host| h.changes().iter().filter(|c| *c == "canoctl restart").count();
    let reference = host(Spec { version: "3.38.0".into(), edition: Edition::Cat, method: Method::Packages, ..Spec::default() }).await;
    assert!(reference.run(&["apply", "--to", "3.40.0", "--yes", "--accept-manual"]).status.success());
    assert_eq!(restarts(&h), restarts(&reference) + 1, "the killed restart was started once more");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_files_puts_back_what_a_run_changed() {
    let h = host(Spec { version: "3.38.0".into(), edition: Edition::Cat, method: Method::Packages, ..Spec::default() }).await;
    let webserver = h.sim.read("/opt/canopsis/etc/webserver.conf").unwrap();
    let amqp = h.sim.read("/opt/canopsis/etc/amqp2engines.conf").unwrap();
    assert!(h.run(&["apply", "--to", "3.40.0", "--yes", "--accept-manual"]).status.success());
    let history: serde_json::Value = serde_json::from_slice(&h.run(&["history", "--json"]).stdout).unwrap();
    let run = history[0]["run"].as_str().unwrap().to_owned();
    let out = h.run(&["restore-files", &run]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(h.sim.read("/opt/canopsis/etc/webserver.conf").unwrap(), webserver);
    assert_eq!(h.sim.read("/opt/canopsis/etc/amqp2engines.conf").unwrap(), amqp);
    assert!(!h.sim.path("/opt/canopsis/etc/initialisation.toml").exists(), "a file the run created is removed");
    assert!(text(&out).contains("restored /opt/canopsis/etc/webserver.conf"));
    let _ = &h.dir;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_plan_report_in_json() {
    let h = host(Spec { version: "3.38.0".into(), edition: Edition::Cat, method: Method::Packages, ..Spec::default() }).await;
    let status: serde_json::Value = serde_json::from_slice(&h.run(&["status", "--json"]).stdout).unwrap();
    assert_eq!(status["installed"], "3.38.0");
    assert_eq!(status["edition"], "cat");
    assert_eq!(status["newest_target"], "3.40.0");
    let plan: serde_json::Value = serde_json::from_slice(&h.run(&["plan", "--json"]).stdout).unwrap();
    assert_eq!(plan["target"], "3.40.0");
    let ids: Vec<&str> = plan["steps"].as_array().unwrap().iter().map(|s| s["step"]["manifest"]["id"].as_str().unwrap()).collect();
    assert_eq!(ids.first(), Some(&"broadcast/announce"));
    // Redis's version is read before anything changes.
    assert_eq!(ids[1], "3.39.0/redis-5");
    assert_eq!(ids[2], "procedure-3.x/yum-update");
    assert_eq!(ids.last(), Some(&"broadcast/withdraw"));
    assert!(ids.contains(&"3.39.0/unbind-che") && ids.contains(&"drain/queues"));
}

/// The vendor narrows the 3.x standard procedure's range (and the API check's, which would
/// catch the version as a failed verify step) to end before 3.41.0, then publishes 3.41.0
/// with its own note step only. Publishing refuses it, naming the standard procedure and
/// what it covers, and changes nothing; published anyway with `no-update` (the release says
/// so explicitly), every step succeeds and nothing installs 3.41.0. The run must end failed,
/// naming what detection found, in the journal and in `--json`, and a second run must not
/// succeed either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_published_without_its_procedure_ends_failed_with_the_version_found() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    canup_tests::copy_dir(repository(), &repo).unwrap();
    // The procedure stops before 3.41.0; the API check starts at 4.0.0 (a release may gain a
    // standard role, never silently lose one).
    for (source, package, range, narrow) in [
        ("procedure-3.x", "canopsis-procedure-3x", ">=3.0.0, <4.0.0", ">=3.0.0, <3.41.0"),
        ("api-check", "canopsis-api-check", ">=3.0.0, <25.0.0", ">=4.0.0, <25.0.0"),
    ] {
        let narrowed = dir.path().join(format!("{source}.toml"));
        let original = std::fs::read_to_string(canup_tests::workspace_dir().join(format!("steps/{source}/step.toml"))).unwrap();
        assert!(original.contains(&format!("applies = \"{range}\"")));
        std::fs::write(&narrowed, original.replace(&format!("applies = \"{range}\""), &format!("applies = \"{narrow}\""))).unwrap();
        let module = canup_tests::guest_wasm(package);
        vendor(&repo, "add-shared", &["--steps", narrowed.to_str().unwrap(), "--module", module.to_str().unwrap()]);
    }

    let before = canup_tests::tree(&repo);
    let refused = publish_note_only(&repo, "3.41.0", None);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    let error = String::from_utf8_lossy(&refused.stderr);
    assert!(
        error.contains("release 3.41.0 has no update-phase step for packages/core, packages/cat: the standard procedure")
            && error.contains(
                "procedure-4.x/yum-update, procedure-4.x/finalize (>=4.0.0, <5.0.0); procedure-3.x/yum-update, procedure-3.x/canopsinit (>=3.0.0, <3.41.0))"
            )
            && error.contains("no-update = "),
        "{error}"
    );
    assert_eq!(canup_tests::tree(&repo), before, "a refused publication writes nothing");

    let no_update = Some("a test release: its update is left out on purpose");
    // Without its era's procedure, which 3.40.0 carries, the release is refused until it says why.
    let refused = publish_note_only(&repo, "3.41.0", no_update);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    assert!(text(&refused).contains("release 3.41.0 would ship without the era's procedure"), "{}", text(&refused));
    let published = publish_note_declaring(&repo, "3.41.0", no_update, "[waive]\nprocedure = \"the test's point\"\n", "");
    assert!(published.status.success(), "{}", text(&published));
    let h = host_on(&repo, Spec { version: "3.40.0".into(), ..Spec::default() }, OPERATOR_POLICY).await;

    for attempt in 0..2 {
        let out = h.run(&["apply", "--to", "3.41.0", "--yes", "--json"]);
        assert_eq!(out.status.code(), Some(9), "attempt {attempt}: {}", text(&out));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["outcome"], "unverified", "{report:#}");
        let error = report["error"].as_str().unwrap();
        assert!(error.contains("Canopsis is not at 3.41.0: detection after the run found Canopsis 3.40.0 (core edition, packages method)"), "{error}");
    }
    assert_eq!(h.sim.read("/opt/canopsis/VERSION.txt").unwrap(), "Canopsis version 3.40.0\n");
    let history: serde_json::Value = serde_json::from_slice(&h.run(&["history", "--json"]).stdout).unwrap();
    let runs = history.as_array().unwrap();
    assert_eq!(runs.len(), 2, "each attempt is a run of its own, planned from what is installed: {history:#}");
    for run in runs {
        assert_eq!(run["outcome"], "unverified", "{run:#}");
        assert!(run["message"].as_str().unwrap().contains("expected Canopsis 3.41.0, detection after the run found Canopsis 3.40.0"), "{run:#}");
    }
    let shown = text(&h.run(&["history"]));
    assert!(shown.contains("3.40.0 → 3.41.0 FAILED (not installed): expected Canopsis 3.41.0"), "{shown}");
    let status = text(&h.run(&["status"]));
    assert!(status.contains("installed: Canopsis 3.40.0") && !status.contains("interrupted run pending"), "{status}");
}

/// Shared steps are registered once and follow their range: a release published later gets
/// them (and `add-release` lists them); registering them again updates every release of the
/// range; a registration that would leave a release without its update step is refused with
/// nothing written; and `repo verify` refuses an index (signed by other tooling) whose
/// release lacks the standard procedure, naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_steps_are_registered_once_follow_their_range_and_verify_checks_the_procedure() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    canup_tests::copy_dir(repository(), &repo).unwrap();
    let published = publish_note_only(&repo, "3.41.0", None);
    assert!(published.status.success(), "{}", text(&published));
    let listed = String::from_utf8_lossy(&published.stdout);
    assert!(listed.contains("own steps: empty") && listed.contains("procedure-3.x/yum-update, procedure-3.x/canopsinit"), "{listed}");

    let source = std::fs::read_to_string(canup_tests::workspace_dir().join("steps/procedure-3.x/step.toml")).unwrap();
    let module = canup_tests::guest_wasm("canopsis-procedure-3x");
    let register = |text: &str| {
        let toml = dir.path().join("procedure-3.x.toml");
        std::fs::write(&toml, text).unwrap();
        vendor_output(&repo, "add-shared", &["--steps", toml.to_str().unwrap(), "--module", module.to_str().unwrap()])
    };
    let updated = register(&source.replace("yum update of every installed Canopsis package", "yum update (revised) of every installed Canopsis package"));
    assert!(updated.status.success(), "{}", text(&updated));
    assert!(
        String::from_utf8_lossy(&updated.stdout).contains("republished in 6 release(s): 3.37.0, 3.38.0, 3.39.0, 3.39.1, 3.40.0, 3.41.0"),
        "{}",
        text(&updated)
    );

    let before = canup_tests::tree(&repo);
    let narrowed = register(&source.replace(r#"applies = ">=3.0.0, <4.0.0""#, r#"applies = ">=3.0.0, <3.41.0""#));
    assert_eq!(narrowed.status.code(), Some(2), "{}", text(&narrowed));
    let error = String::from_utf8_lossy(&narrowed.stderr);
    assert!(error.contains("release 3.41.0 has no update-phase step for packages/core, packages/cat") && error.contains("nothing was registered"), "{error}");
    assert_eq!(canup_tests::tree(&repo), before, "a refused registration writes nothing");

    let h = host_on(&repo, Spec { version: "3.40.0".into(), ..Spec::default() }, OPERATOR_POLICY).await;
    let plan: serde_json::Value = serde_json::from_slice(&h.run(&["plan", "--to", "3.41.0", "--json"]).stdout).unwrap();
    let update = plan["steps"].as_array().unwrap().iter().find(|s| s["step"]["manifest"]["id"] == "procedure-3.x/yum-update").unwrap();
    assert!(update["step"]["manifest"]["description"].as_str().unwrap().contains("(revised)"), "{update:#}");
    let verified = h.run(&["repo", "verify"]);
    assert!(verified.status.success(), "{}", text(&verified));
    assert!(text(&verified).contains("shared steps procedure-3.x/yum-update, procedure-3.x/canopsinit for releases >=3.0.0, <4.0.0"), "{}", text(&verified));

    let mut index = canup::repository::publish::read_index(&repo).await.unwrap();
    let release = index.releases.iter_mut().find(|r| r.version == semver::Version::new(3, 41, 0)).unwrap();
    release.steps.retain(|s| s.manifest.id != "procedure-3.x/yum-update");
    let key = target_dir().join("dev-keys/dev.key");
    canup::repository::publish::publish_index(&repo, &[key], &Default::default(), &index).await.unwrap();
    let refused = h.run(&["repo", "verify"]);
    assert_eq!(refused.status.code(), Some(4), "{}", text(&refused));
    assert!(
        text(&refused).contains("1 release(s) cannot be applied as published")
            && text(&refused).contains("release 3.41.0 has no update-phase step for packages/core, packages/cat"),
        "{}",
        text(&refused)
    );
}

/// Runs a vendor command (`canup repo …`) on `repo` with the development key.
fn vendor(repo: &Path, command: &str, args: &[&str]) {
    let out = vendor_output(repo, command, args);
    assert!(out.status.success(), "canup repo {command}: {}", text(&out));
}

fn vendor_output(repo: &Path, command: &str, args: &[&str]) -> std::process::Output {
    Command::new(canup_bin()).args(["repo", command]).arg(repo).args(args).arg("--key").arg(target_dir().join("dev-keys/dev.key")).output().unwrap()
}

/// Publishes `version` with one step of its own that does nothing (the probe's `empty`)
/// through the vendor command; it gets the shared steps registered for it, and says why it
/// has no update step when `no_update` is given.
fn publish_note_only(repo: &Path, version: &str, no_update: Option<&str>) -> std::process::Output {
    publish_note_declaring(repo, version, no_update, "", "")
}

/// The same, with more `top_level` keys and tables (`[waive]`), its step declaring
/// `capabilities` (TOML under `[[step]]`).
fn publish_note_declaring(repo: &Path, version: &str, no_update: Option<&str>, top_level: &str, capabilities: &str) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let steps = dir.path().join("step.toml");
    let no_update = no_update.map(|why| format!("no-update = {why:?}\n")).unwrap_or_default();
    std::fs::write(
        &steps,
        format!(
            r#"release = "{version}"
api = "1.0.0"
published = "2026-01-05"
{no_update}
{top_level}
[[step]]
id = "empty"
phase = "post-update"
order = 10
methods = ["packages", "compose"]
editions = ["core", "cat"]
description = "The release's own note"
{capabilities}"#
        ),
    )
    .unwrap();
    let module = canup_tests::guest_wasm("probe");
    vendor_output(repo, "add-release", &["--steps", steps.to_str().unwrap(), "--module", module.to_str().unwrap()])
}

/// Canopsis 4.6.0 needs its migration guide. The vendor marks it a barrier with one command
/// (`repo barrier`, from steps/catalogue.toml) and the unchanged binary never plans across it,
/// even once 4.6.0 is withdrawn; from 4.6.0 on, planning is normal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_barrier_set_by_the_vendor_is_never_crossed() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    canup_tests::copy_dir(repository(), &repo).unwrap();
    let h = host_on(&repo, Spec { version: "4.5.7".into(), ..Spec::default() }, OPERATOR_POLICY).await;
    let before = h.sim.snapshot().unwrap();
    let refused = |h: &Host| {
        let out = h.run(&["apply", "--to", "4.6.2", "--yes"]);
        assert_eq!(out.status.code(), Some(10), "{}", text(&out));
        assert!(
            text(&out).contains(
                "4.5.7 → 4.6.2 crosses 4.6.0, which needs the migration guide \"Guide de migration vers Canopsis 4.6.0\" (https://doc.canopsis.net/notes-de-version/migration/migration-4.6.0/)"
            ),
            "{}",
            text(&out)
        );
        assert!(h.changes().is_empty(), "only detection ran: {:?}", h.changes());
        assert_eq!(h.sim.snapshot().unwrap(), before);
    };
    refused(&h);
    let status = text(&h.run(&["status"]));
    assert!(status.contains("migration barrier: 4.6.0 needs the guide \"Guide de migration vers Canopsis 4.6.0\""), "{status}");
    assert!(status.contains("newest regular target: 4.5.14"), "up to the release before the barrier: {status}");

    // From the barrier release on, the same index plans normally.
    let migrated = host_on(&repo, Spec { version: "4.6.0".into(), ..Spec::default() }, OPERATOR_POLICY).await;
    let out = migrated.run(&["plan", "--to", "4.6.2", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["releases"], serde_json::json!(["4.6.1", "4.6.2"]));

    // Withdrawing the barrier release does not open the way across its guide.
    vendor(&repo, "withdraw", &["--release", "4.6.0", "--reason", "superseded by 4.6.1"]);
    refused(&h);
}

/// The dry run's list as actions: commands (queries included), file changes, requests.
fn listed_actions(stdout: &str) -> Vec<String> {
    let (_, list) = stdout.split_once("The real run would make these changes, in order (queries ran for real):\n").expect("a dry-run list");
    // The backup phase is canup's own work, not a step's: the audit records steps' calls only.
    let actions = list.lines().filter_map(|l| l.strip_prefix("  ")).filter(|l| !l.starts_with(' ') && !l.starts_with("back up ")).map(|l| {
        if let Some(command) = l.strip_prefix("run: ") {
            // Variables are shown masked (`K=…`) and another user as ` (as USER)`.
            let words: Vec<&str> = command.split(' ').skip_while(|w| w.ends_with("=…")).collect();
            format!("exec {}", words.join(" ").split(" (as ").next().unwrap())
        } else if let Some(query) = l.strip_prefix("query: ") {
            match query.split_once(" on endpoint ") {
                Some((request, endpoint)) => format!("http {request} on {endpoint}"),
                None => format!("exec {query}"),
            }
        } else if let Some(script) = l.strip_prefix("query on database ").or_else(|| l.strip_prefix("run on database ")) {
            // The script follows, indented.
            format!("database {}", script.trim_end_matches(':'))
        } else if let Some(send) = l.strip_prefix("send: ") {
            let (request, rest) = send.split_once(" to endpoint ").unwrap();
            format!("http {request} on {}", rest.split(" with body ").next().unwrap())
        } else if let Some(path) = l.strip_prefix("write ") {
            format!("write {}", path.split(" (").next().unwrap())
        } else if let Some(path) = l.strip_prefix("append to ") {
            format!("append {}", path.trim_end_matches(':'))
        } else if let Some(path) = l.strip_prefix("remove ") {
            format!("remove {path}")
        } else if let Some(path) = l.strip_prefix("create directory ") {
            format!("create-dir {}", path.split(" (").next().unwrap())
        } else {
            panic!("unknown line in the dry-run list: {l:?}")
        }
    });
    collapse(actions)
}

/// What a run did, from the audit records it added to `audit.jsonl` after byte `from`:
/// allowed commands, file changes and requests.
fn audited_actions(state: &Path, from: usize) -> Vec<String> {
    let log = std::fs::read_to_string(state.join("audit.jsonl")).unwrap();
    let actions = log[from..].lines().filter_map(|line| {
        let r: canup::audit::AuditRecord = serde_json::from_str(line).unwrap();
        if r.decision != canup::audit::Decision::Allowed || r.result.starts_with("error") {
            return None;
        }
        let arg = |k: &str| r.args[k].as_str().unwrap_or_default().to_owned();
        Some(match r.capability.as_str() {
            "exec" => {
                let args: Vec<String> = r.args["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_owned()).collect();
                format!("exec {}", canup::sandbox::shell_words(&arg("program"), &args))
            }
            "fs.write" => format!("write {}", arg("path")),
            "fs.append" => format!("append {}", arg("path")),
            "fs.remove" => format!("remove {}", arg("path")),
            "fs.create-dir" if r.result.starts_with("created") => format!("create-dir {}", arg("path")),
            "http" => format!("http {} {} on {}", arg("method"), arg("path"), arg("endpoint")),
            "database" => format!("database {}", arg("endpoint")),
            _ => return None,
        })
    });
    collapse(actions)
}

/// Repeated identical queries in a row (a poll) count once: how often a poll runs depends
/// on the server, not on the plan.
fn collapse(actions: impl Iterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for a in actions {
        if out.last() != Some(&a) {
            out.push(a);
        }
    }
    out
}

/// Dry-run fidelity: on the same simulated host and configuration, the dry run lists exactly
/// the commands, file changes and requests the real run then makes, in order, for the demo
/// upgrade (packages) and a Compose upgrade.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_lists_exactly_what_the_real_run_does() {
    for method in [Method::Packages, Method::Compose] {
        let h = host(Spec { version: "3.38.0".into(), edition: Edition::Cat, method, ..Spec::default() }).await;
        // Other tests of this binary unbind Engine_che at times of their own; unbound from the
        // start, the RabbitMQ state is the same for the dry run and the real run.
        Admin::new().unbind_che().await.unwrap();
        let state = h.dir.path().join("state");
        let before = h.sim.snapshot().unwrap();
        let dry = h.run(&["apply", "--to", "3.40.0", "--dry-run", "--accept-manual"]);
        assert!(dry.status.success(), "{method:?}: {}", text(&dry));
        assert_eq!(h.sim.snapshot().unwrap(), before, "{method:?}: the dry run changed the host");
        let listed = listed_actions(&String::from_utf8_lossy(&dry.stdout));
        let from = std::fs::metadata(state.join("audit.jsonl")).unwrap().len() as usize;
        let real = h.run(&["apply", "--to", "3.40.0", "--yes", "--accept-manual"]);
        assert!(real.status.success(), "{method:?}: {}", text(&real));
        assert_eq!(listed, audited_actions(&state, from), "{method:?}: the dry run's list vs what the real run did");
    }
}

/// The long paths operators take within an era, end to end on hosts built from the vendor's
/// facts, both editions: the real dnf brings every Canopsis package of the installation
/// (`canopsis-core`, `canopsis-engines-go`, `canopsis-webui`, Pro's, `canopsis` and
/// `canopsis-pro` on RHEL 8) to the target in one transaction, the real `rpm -qa` says so,
/// every release's steps run, and detection finds the target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_paths_of_every_era_end_at_their_target() {
    use canup_tests::simhost::Os;
    let paths = [
        ("4.0.1", "4.1.1", Method::Packages, Os::Centos7),
        ("4.3.1", "4.3.8", Method::Packages, Os::Centos7),
        ("4.5.3", "4.5.14", Method::Packages, Os::Centos7),
        ("22.10.1", "22.10.13", Method::Packages, Os::Centos7),
        ("22.10.1", "22.10.13", Method::Packages, Os::Rhel8),
        ("23.04.1", "23.04.14", Method::Packages, Os::Centos7),
        ("23.04.1", "23.04.14", Method::Packages, Os::Rhel8),
        ("23.10.1", "23.10.8", Method::Packages, Os::Centos7),
        ("23.10.1", "23.10.8", Method::Packages, Os::Rhel8),
        ("23.10.1", "23.10.8", Method::Compose, Os::Rhel8),
    ];
    let facts = canup_tests::simhost::facts::Facts::load().unwrap();
    for ((from, to, method, os), edition) in paths.into_iter().flat_map(|p| [(p, Edition::Cat), (p, Edition::Core)]) {
        if edition == Edition::Core && method == Method::Packages && from.starts_with("4.0") {
            continue; // 4.0/4.1 Community takes the same packages as 4.3 Community, tested below
        }
        let h = host(Spec { version: from.into(), edition, method, os, ..Spec::default() }).await;
        let out = h.run(&["apply", "--to", to, "--yes", "--accept-manual"]);
        let said = text(&out);
        assert!(out.status.success(), "{from} → {to} ({method}, {os}, {edition}): {said}");
        assert!(said.contains(&format!("Canopsis is now at {to}")), "{said}");
        if os == Os::Centos7 && method == Method::Packages {
            assert_eq!(h.sim.read("/opt/canopsis/VERSION.txt").unwrap(), format!("Canopsis version {to}\n"));
        }
        assert_eq!(canup_tests::simhost::installed_version(h.sim.root()), to, "{from} → {to} ({method}, {os}, {edition})");
        let changes = h.changes();
        if method == Method::Packages {
            let dist = format!("el{}", os.release_version());
            let mut expected: Vec<String> =
                facts.installed(to, os.key(), &edition.to_string()).unwrap().iter().map(|p| format!("{}-{to}-1.{dist}.x86_64", p.name)).collect();
            expected.sort();
            assert_eq!(h.sim.installed_packages().unwrap(), expected, "{from} → {to} ({os}, {edition}): rpm -qa");
            assert!(expected.len() >= 2, "{expected:?}");
            // The host's packages were installed by rpm: dnf's history holds the update alone.
            let transactions = packages::history(h.sim.root(), os.release_version()).unwrap();
            assert_eq!(transactions.len(), 1, "{from} → {to}: one package transaction: {transactions:#?}");
        }
        match (from, os) {
            ("23.04.1", Os::Rhel8) => {
                assert!(changes.contains(&"dnf makecache".to_owned()), "{changes:#?}");
                if edition == Edition::Core {
                    // canopsis requires canopsis-common from 23.04.7: pinned with the rest, not
                    // taken at the repository's newest (24.04.3).
                    assert!(
                        changes.contains(
                            &"dnf --disablerepo=* --enablerepo=canopsis* install -y canopsis-23.04.14 canopsis-webui-23.04.14 canopsis-common-23.04.14"
                                .to_owned()
                        ),
                        "{changes:#?}"
                    );
                }
                // The vendor's pre-set flags, and the override 23.04.7's setting went to.
                let name = if edition == Edition::Cat { "pro" } else { "community" };
                assert!(
                    changes.contains(&format!(
                        "canopsis-reconfigure -edition {name} -migrate-postgres=true -migrate-mongo=true -override /opt/canopsis/etc/conf.d/canopsis-override.toml"
                    )),
                    "{changes:#?}"
                );
                assert_eq!(changes.contains(&"systemctl restart canopsis-engine-go@engine-webhook".to_owned()), edition == Edition::Cat, "{changes:#?}");
                assert!(!changes.iter().any(|c| c.starts_with("canoctl") || c.contains("canopsinit")), "RHEL 8 has neither: {changes:#?}");
            }
            ("23.04.1" | "22.10.1", Os::Centos7) => {
                let reconfigure = "canopsis-reconfigure -migrate-postgres=true -postgres-migration-mode=up -postgres-migration-directory=/opt/canopsis/share/migrations/postgres";
                let expected =
                    if from == "23.04.1" { format!("{reconfigure} -override /opt/canopsis/etc/conf.d/canopsis-override.toml") } else { reconfigure.to_owned() };
                assert!(changes.contains(&expected), "{changes:#?}");
                assert!(changes.contains(&"canoctl restart".to_owned()), "{changes:#?}");
            }
            ("23.10.1", _) if method == Method::Compose => {
                assert!(changes.contains(&"docker compose up -d".to_owned()) && !changes.iter().any(|c| c.starts_with("docker-compose")), "{changes:#?}")
            }
            ("23.10.1", Os::Rhel8) => {
                // Pro's SNMP engine, enabled by the 23.10.0 migration guide, restarted too.
                let snmp = changes.contains(&"systemctl restart canopsis-engine-python-snmp".to_owned());
                assert_eq!(snmp, edition == Edition::Cat, "{changes:#?}");
                assert!(!changes.contains(&"systemctl restart canopsis-engine-go@engine-service.service".to_owned()), "disabled since 23.10: {changes:#?}");
            }
            _ => {}
        }
        if from == "23.04.1" {
            // 23.04.7's key, in the override where the vendor puts settings since 4.6.0; the
            // package's canopsis.toml, with the operator's comments and values, untouched.
            let toml = h.sim.read("/opt/canopsis/etc/canopsis.toml").unwrap();
            assert!(!toml.contains("ExportMongoClientTimeout") && toml.contains("FlappingFreqLimit = 28") && toml.contains("# site policy"), "{toml}");
            let over = h.sim.read("/opt/canopsis/etc/conf.d/canopsis-override.toml").unwrap();
            assert_eq!(over, "[Canopsis.api]\nExportMongoClientTimeout = \"1m\"\n");
            // 23.04.8's one start of engine-service with the flag, whose drop-in is gone after.
            let restarts = h.sim.read("/var/lib/canup-sim/systemctl-actions").unwrap();
            assert!(restarts.contains("restart canopsis-engine-go@engine-service"), "{restarts}");
            assert!(!h.sim.path("/etc/systemd/system/canopsis-engine-go@engine-service.service.d/canup-recompute.conf").exists());
        }
    }
}

/// Across each migration guide of the catalogue: refused from the release before it, planned
/// from the guide's release on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_migration_barrier_of_the_catalogue_is_refused_then_planned_from_its_release() {
    // (installed before the barrier, barrier, the first regular release after it when it comes
    // before the next barrier)
    let barriers = [
        ("3.40.0", "4.0.0", Some("4.0.1")),
        ("4.1.1", "4.2.0", None),
        ("4.2.0", "4.3.0", Some("4.3.1")),
        ("4.3.8", "4.4.0", Some("4.4.1")),
        ("4.4.1", "4.5.0", Some("4.5.1")),
        ("4.5.14", "4.6.0", Some("4.6.1")),
        ("4.6.3", "22.10.0", Some("22.10.1")),
        ("22.10.13", "23.04.0", Some("23.04.1")),
        ("23.04.14", "23.10.0", Some("23.10.1")),
        ("23.10.8", "24.04.0", Some("24.04.1")),
    ];
    for (before, barrier, after) in barriers {
        // 24.04 has packages for RHEL 8 and 9 only.
        let os = if barrier.starts_with("24.") { canup_tests::simhost::Os::Rhel8 } else { canup_tests::simhost::Os::Centos7 };
        let h = host(Spec { version: before.into(), os, ..Spec::default() }).await;
        let snapshot = h.sim.snapshot().unwrap();
        let out = h.run(&["apply", "--to", after.unwrap_or(barrier), "--yes"]);
        assert_eq!(out.status.code(), Some(10), "{before} → {barrier}: {}", text(&out));
        assert!(text(&out).contains(&format!("Guide de migration vers Canopsis {barrier}")), "{}", text(&out));
        assert_eq!(h.sim.snapshot().unwrap(), snapshot, "refused without a change");
        if let Some(after) = after {
            let migrated = host(Spec { version: barrier.into(), os, ..Spec::default() }).await;
            let out = migrated.run(&["plan", "--to", after, "--json"]);
            assert!(out.status.success(), "from {barrier}: {}", text(&out));
            let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(plan["target"], serde_json::json!(canup::version::parse(after).unwrap().to_string()), "{plan}");
        }
    }
}

/// A new release whose step needs grants the shipped rules lack (a program, a file, a
/// database endpoint): `plan` names them all at once with the step and what it is for;
/// `canup policy review` writes exactly those to a drop-in beside canup.toml; `apply` then
/// runs, and canup.toml is byte for byte what it was. `[deny]` wins over the review.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_lists_every_missing_grant_and_a_review_grants_them_beside_canup_toml() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    canup_tests::copy_dir(repository(), &repo).unwrap();
    let extra = "[step.capabilities.fs]\nread = [\"/etc/canup-review-test.conf\"]\n[[step.capabilities.exec]]\nprogram = \"/usr/bin/systemctl\"\nargs = [\"show-environment\"]\n[[step.capabilities.database]]\nendpoint = \"postgres-tech\"\n";
    let published = publish_note_declaring(&repo, "3.41.0", None, "", extra);
    assert!(published.status.success(), "{}", text(&published));
    // The site's canup.toml has no rules of its own: the shipped ones come from the package's file.
    let shipped = format!("shipped_policy = {:?}\n", canup_tests::workspace_dir().join("host/dist/policy.toml"));
    let h = host_on(&repo, Spec { version: "3.40.0".into(), ..Spec::default() }, &shipped).await;
    let config = std::fs::read(&h.config).unwrap();
    let before = h.sim.snapshot().unwrap();

    let plan = h.run(&["plan", "--to", "3.41.0"]);
    assert_eq!(plan.status.code(), Some(5), "{}", text(&plan));
    let said = text(&plan);
    assert!(said.contains("step empty (The release's own note) needs, beyond the policy:"), "{said}");
    for grant in [
        "exec of /usr/bin/systemctl with arguments [\"show-environment\"]",
        "read of /etc/canup-review-test.conf",
        "read-only scripts on database endpoint postgres-tech",
    ] {
        assert!(said.contains(&format!("\n      {grant}")), "{grant} in {said}");
    }

    let review = h.run(&["policy", "review", "--to", "3.41.0", "--yes"]);
    assert!(review.status.success(), "{}", text(&review));
    assert!(text(&review).contains("wrote 3 grants to") && text(&review).contains("is now admitted"), "{}", text(&review));
    assert!(text(&review).contains("the policy is canup.toml's [policy] with ") && text(&review).contains("host/dist/policy.toml"), "{}", text(&review));
    let drop_ins: Vec<_> = std::fs::read_dir(h.dir.path().join("policy.d")).unwrap().flatten().map(|e| e.path()).collect();
    assert_eq!(drop_ins.len(), 1, "{drop_ins:?}");
    let written = std::fs::read_to_string(&drop_ins[0]).unwrap();
    assert!(written.contains("/usr/bin/systemctl") && written.contains("postgres-tech") && written.contains("  empty: "), "{written}");
    assert!(!written.contains("/usr/bin/yum"), "only the missing grants: {written}");
    assert_eq!(h.sim.snapshot().unwrap(), before, "a review changes nothing on the host");

    let out = h.run(&["apply", "--to", "3.41.0", "--yes"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(std::fs::read(&h.config).unwrap(), config, "canup.toml is never edited");

    // The operator's [deny] wins: what it names is shown, never written.
    let denied = host_on(&repo, Spec { version: "3.40.0".into(), ..Spec::default() }, &format!("{shipped}[deny]\nprograms = [\"/usr/bin/systemctl\"]\n")).await;
    let review = denied.run(&["policy", "review", "--to", "3.41.0", "--yes"]);
    assert_eq!(review.status.code(), Some(5), "{}", text(&review));
    assert!(text(&review).contains("refused by [deny] in canup.toml, never granted: exec of /usr/bin/systemctl"), "{}", text(&review));
    assert!(text(&review).contains("the plan is still refused"), "{}", text(&review));
    let drop_in = std::fs::read_dir(denied.dir.path().join("policy.d")).unwrap().flatten().next().unwrap().path();
    assert!(!std::fs::read_to_string(drop_in).unwrap().contains("show-environment"));
}

/// Extending an era: `repo registrations` lists each shared registration with its role and
/// range; a release past the drain's range is refused by `add-release`, naming the role, the
/// registration and the fix; `repo widen` gives the drain the new range with the module
/// already in the repository, and the release then publishes with every standard role.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_past_the_eras_drain_is_refused_until_the_drain_is_widened() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    canup_tests::copy_dir(repository(), &repo).unwrap();
    let listed = Command::new(canup_bin()).args(["repo", "registrations"]).arg(&repo).output().unwrap();
    assert!(listed.status.success(), "{}", text(&listed));
    let listed = text(&listed);
    let drain = listed.lines().find(|l| l.starts_with("drain ")).unwrap_or_else(|| panic!("{listed}"));
    assert!(drain.contains(">=3.0.0, <25.0.0") && drain.contains("to 24.04.3") && drain.contains("drain/queues (verify)"), "{drain}");
    for role in ["procedure", "compose", "detect", "broadcast", "api-check"] {
        assert!(listed.lines().any(|l| l.starts_with(&format!("{role} "))), "{role} in {listed}");
    }

    // The vendor extends the procedure and the other roles to 25.x, not the drain.
    for step in ["procedure-22.x/update", "compose-update", "detect", "broadcast/announce", "api-check"] {
        vendor(&repo, "widen", &["--step", step, "--applies", ">=3.0.0, <26.0.0"]);
    }
    let before = canup_tests::tree(&repo);
    let refused = publish_note_only(&repo, "25.01.0", None);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    let error = text(&refused);
    assert!(
        error.contains("release 25.01.0 would ship without the era's drain (drain/queues, registered for >=3.0.0, <25.0.0, which 24.04.3 carries)"),
        "{error}"
    );
    assert!(error.contains("canup repo widen DIR --step drain/queues") && error.contains("[waive] drain = "), "{error}");
    assert_eq!(canup_tests::tree(&repo), before, "a refused publication writes nothing");

    vendor(&repo, "widen", &["--step", "drain/queues", "--applies", ">=3.0.0, <26.0.0"]);
    let published = publish_note_only(&repo, "25.01.0", None);
    assert!(published.status.success(), "{}", text(&published));
    let index = canup::repository::publish::read_index(&repo).await.unwrap();
    let release = index.releases.iter().find(|r| r.version == semver::Version::new(25, 1, 0)).unwrap();
    for id in ["drain/queues", "api-check", "broadcast/announce", "detect", "procedure-22.x/update", "compose-update"] {
        assert!(release.steps.iter().any(|s| s.manifest.id == id), "{id} in 25.01.0");
    }
}
