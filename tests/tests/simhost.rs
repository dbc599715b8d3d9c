//! The simulated host's stubs behave like the tools they stand in for.

use std::process::Command;

use canup_tests::simhost::{Edition, Method, SimHost, Spec};

fn host(spec: Spec) -> (tempfile::TempDir, SimHost) {
    let dir = tempfile::tempdir().unwrap();
    let sim = SimHost::create(&dir.path().join("root"), &spec, &canup_tests::sim_bin()).unwrap();
    (dir, sim)
}

fn run(sim: &SimHost, program: &str, args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let out = Command::new(sim.path(program)).args(args).env_clear().envs(env.iter().copied()).output().unwrap();
    (out.status.code().unwrap_or(-1), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn pinned_yum_update_rewrites_version_and_rpm_database() {
    let (_d, sim) = host(Spec { edition: Edition::Cat, ..Spec::default() });
    assert_eq!(run(&sim, "/usr/bin/rpm", &["-q", "canopsis-cat"], &[]).1.trim(), "canopsis-cat-3.38.0-1.el7.x86_64");
    let (code, _) =
        run(&sim, "/usr/bin/yum", &["--disablerepo=*", "--enablerepo=canopsis*", "update", "-y", "canopsis-cat-3.40.0", "canopsis-core-3.40.0"], &[]);
    assert_eq!(code, 0);
    assert_eq!(sim.read("/opt/canopsis/VERSION.txt").unwrap(), "Canopsis version 3.40.0\n");
    assert_eq!(
        run(&sim, "/usr/bin/rpm", &["-q", "canopsis-core", "canopsis-cat"], &[]).1,
        "canopsis-core-3.40.0-1.el7.x86_64\ncanopsis-cat-3.40.0-1.el7.x86_64\n"
    );
    let calls = sim.calls().unwrap();
    assert_eq!(calls[1].line(), "yum --disablerepo=* --enablerepo=canopsis* update -y canopsis-cat-3.40.0 canopsis-core-3.40.0");
    assert_eq!(calls[1].user, "root");
}

/// The real dnf behind the host's yum: a version the repository lacks is "No match for
/// argument" with exit 1 and nothing changes; an update without -y asks, and an unanswered
/// question changes nothing either.
#[test]
fn a_version_missing_from_the_repository_is_no_match_and_changes_nothing() {
    let (_d, sim) = host(Spec::default());
    let before = sim.snapshot().unwrap();
    let (code, out) = run(&sim, "/usr/bin/yum", &["--disablerepo=*", "--enablerepo=canopsis*", "update", "-y", "canopsis-core-3.99.0"], &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("No match for argument: canopsis-core-3.99.0"), "{out}");
    assert_eq!(sim.snapshot().unwrap(), before);
    let (code, out) = run(&sim, "/usr/bin/yum", &["update"], &[]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(sim.snapshot().unwrap(), before);
}

/// The vendor's requirements are unversioned (`canopsis-core` requires `canopsis-engines-go`
/// and `canopsis-webui` from 4.5.0): updating `canopsis-core` alone leaves the engines, the web
/// UI and Pro's packages behind, as on a real host, and rpm's database says so.
#[test]
fn updating_canopsis_core_alone_leaves_the_other_packages_behind() {
    let (_d, sim) = host(Spec { version: "4.5.5".into(), edition: Edition::Cat, ..Spec::default() });
    assert_eq!(
        sim.installed_packages().unwrap(),
        [
            "canopsis-cat-4.5.5-1.el7.x86_64",
            "canopsis-core-4.5.5-1.el7.x86_64",
            "canopsis-engines-go-4.5.5-1.el7.x86_64",
            "canopsis-engines-go-cat-4.5.5-1.el7.x86_64",
            "canopsis-webui-4.5.5-1.el7.x86_64"
        ],
        "what the 4.x Pro installation guide installs, and what canopsis-core requires"
    );
    let (code, out) = run(&sim, "/usr/bin/yum", &["--disablerepo=*", "--enablerepo=canopsis*", "update", "-y", "canopsis-core-4.5.6"], &[]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        sim.installed_packages().unwrap(),
        [
            "canopsis-cat-4.5.5-1.el7.x86_64",
            "canopsis-core-4.5.6-1.el7.x86_64",
            "canopsis-engines-go-4.5.5-1.el7.x86_64",
            "canopsis-engines-go-cat-4.5.5-1.el7.x86_64",
            "canopsis-webui-4.5.5-1.el7.x86_64"
        ]
    );
}

/// A host of any release the facts know, on the OS the facts give it, from the facts alone:
/// 24.04.3 on AlmaLinux 9 has `canopsis-pro`, `canopsis-common` and `canopsis-webui`, the
/// units of its spec (`canopsis-reconfigure.service`), and no VERSION.txt (the EL8/9 packages
/// ship none).
#[test]
fn a_24_04_host_is_made_from_the_facts() {
    let (_d, sim) = host(Spec { version: "24.04.3".into(), edition: Edition::Cat, os: canup_tests::simhost::Os::Rhel9, ..Spec::default() });
    assert_eq!(
        sim.installed_packages().unwrap(),
        ["canopsis-common-24.04.3-1.el9.x86_64", "canopsis-pro-24.04.3-1.el9.x86_64", "canopsis-webui-24.04.3-1.el9.x86_64"]
    );
    assert!(sim.path("/usr/lib/systemd/system/canopsis-reconfigure.service").is_file());
    assert!(std::fs::symlink_metadata(sim.path("/etc/systemd/system/multi-user.target.wants/canopsis-engine-go@engine-webhook.service")).is_ok());
    assert!(!sim.path("/opt/canopsis/VERSION.txt").exists());
    let dir = tempfile::tempdir().unwrap();
    let err = SimHost::create(&dir.path().join("r"), &Spec { version: "24.04.3".into(), ..Spec::default() }, &canup_tests::sim_bin()).err().unwrap();
    assert!(format!("{err:#}").contains("no core installation of Canopsis 24.04.3 on centos7"), "{err:#}");
}

#[test]
fn rhel_8_hosts_have_dnf_and_centos_7_hosts_do_not() {
    let (_d, rhel) = host(Spec { version: "23.04.1".into(), os: canup_tests::simhost::Os::Rhel8, ..Spec::default() });
    assert!(rhel.read("/etc/redhat-release").unwrap().starts_with("Red Hat Enterprise Linux release 8"));
    let (code, out) = run(&rhel, "/usr/bin/dnf", &["makecache"], &[]);
    assert_eq!(code, 0, "{out}");
    let (code, out) =
        run(&rhel, "/usr/bin/dnf", &["--disablerepo=*", "--enablerepo=canopsis*", "update", "-y", "canopsis-23.04.2", "canopsis-webui-23.04.2"], &[]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(rhel.installed_packages().unwrap(), ["canopsis-23.04.2-1.el8.x86_64", "canopsis-webui-23.04.2-1.el8.x86_64"]);
    let (_d7, centos) = host(Spec::default());
    assert!(centos.read("/etc/os-release").unwrap().contains("VERSION_ID=\"7\""));
    assert!(!centos.path("/usr/bin/dnf").exists());
}

#[test]
fn su_runs_canopsinit_as_canopsis_and_canopsinit_refuses_root() {
    let (_d, sim) = host(Spec::default());
    assert_eq!(run(&sim, "/opt/canopsis/bin/canopsinit", &[], &[]).0, 1);
    let (code, _) = run(&sim, "/usr/bin/su", &["-", "canopsis", "-c", "canopsinit --canopsis-edition core --canopsis-stack go"], &[]);
    assert_eq!(code, 0);
    let calls = sim.calls().unwrap();
    let last = calls.last().unwrap();
    assert_eq!((last.line().as_str(), last.user.as_str()), ("canopsinit --canopsis-edition core --canopsis-stack go", "canopsis"));
    assert_eq!(sim.read("/opt/canopsis/var/canopsinit.last").unwrap(), "3.38.0 --canopsis-edition core --canopsis-stack go\n");
}

#[test]
fn systemctl_enable_creates_the_wants_link_once() {
    let (_d, sim) = host(Spec::default());
    assert_eq!(run(&sim, "/usr/bin/systemctl", &["is-enabled", "canopsis-engine-go@engine-fifo"], &[]).0, 1);
    for _ in 0..2 {
        assert_eq!(run(&sim, "/usr/bin/systemctl", &["enable", "canopsis-engine-go@engine-fifo"], &[]).0, 0);
    }
    assert_eq!(run(&sim, "/usr/bin/systemctl", &["is-enabled", "canopsis-engine-go@engine-fifo"], &[]), (0, "enabled\n".into()));
    assert!(std::fs::symlink_metadata(sim.path("/etc/systemd/system/multi-user.target.wants/canopsis-engine-go@engine-fifo.service")).unwrap().is_symlink());
}

#[test]
fn reconfigure_and_init_need_the_exported_variables() {
    let (_d, sim) = host(Spec::default());
    let (code, out) = run(&sim, "/opt/canopsis/bin/canopsis-reconfigure", &[], &[]);
    assert_eq!(code, 1);
    assert!(out.contains("CPS_AMQP_URL is not set"), "{out}");
    let env = [("CPS_AMQP_URL", "amqp://x"), ("CPS_MONGO_URL", "mongodb://x")];
    assert_eq!(run(&sim, "/opt/canopsis/bin/canopsis-reconfigure", &[], &env).0, 0);
    assert_eq!(run(&sim, "/opt/canopsis/bin/init", &["-conf", "/opt/canopsis/etc/initialisation.toml"], &env).0, 1, "conf missing");
    assert_eq!(run(&sim, "/opt/canopsis/bin/init", &["-conf", "/opt/canopsis/etc/initialisation-cat.toml.example"], &env).0, 0);
    let call = sim.calls().unwrap().pop().unwrap();
    assert_eq!(call.env.get("CPS_AMQP_URL").map(String::as_str), Some("amqp://x"));
}

#[test]
fn mongo_records_each_applied_script() {
    let (_d, sim) = host(Spec::default());
    let script = "db.default_rights.update({'_id' : 'root'},{ \"$rename\" : {'shadowpass' : 'shadowpasswd'}});";
    assert_eq!(run(&sim, "/usr/bin/mongo", &["canopsis", "--quiet", "--eval", script], &[]).0, 0);
    assert_eq!(sim.read("/var/lib/canup-sim/mongo-applied.js").unwrap(), format!("{script}\n"));
}

fn run_in(sim: &SimHost, dir: &str, program: &str, args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let out = Command::new(sim.path(program)).args(args).current_dir(sim.path(dir)).env_clear().envs(env.iter().copied()).output().unwrap();
    (out.status.code().unwrap_or(-1), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

const PS: &[&str] = &["ps", "--format", "{{.Image}}\\t{{.Label \"com.docker.compose.project.working_dir\"}}"];

/// A Compose host of each era is the vendor's reference set of its release (facts/compose.toml),
/// which the real `docker-compose config` accepts, with its containers running the release's
/// images: no VERSION.txt, no Canopsis package.
#[test]
fn compose_hosts_of_every_era_are_the_vendor_reference_files_and_run_their_images() {
    for (version, edition, files) in [
        ("3.38.0", Edition::Core, &["docker-compose.yml", ".env", "compose.env", "compose.mongo.env"][..]),
        ("4.5.5", Edition::Cat, &["docker-compose.yml", ".env", "compose.env", "compose.mongo.env"][..]),
        ("22.10.5", Edition::Core, &["docker-compose.yml", ".env", "compose.env", "community.env"][..]),
        ("23.10.1", Edition::Cat, &["docker-compose.yml", ".env", "compose.env", "pro.env"][..]),
        ("24.04.3", Edition::Core, &["docker-compose.yml", ".env", "compose.env", "community.env"][..]),
    ] {
        let (_d, sim) = host(Spec { version: version.into(), edition, method: Method::Compose, ..Spec::default() });
        for f in files {
            assert!(sim.path(&format!("/opt/canopsis/docker/{f}")).is_file(), "{version}: {f}");
        }
        assert!(sim.read("/opt/canopsis/docker/.env").unwrap().contains(&format!("CANOPSIS_IMAGE_TAG={version}")), "{version}");
        sim.compose_config().unwrap_or_else(|e| panic!("{version}: {e}"));
        let (code, ps) = run(&sim, "/usr/bin/docker", PS, &[]);
        assert_eq!(code, 0, "{ps}");
        assert!(ps.lines().any(|l| l.contains(&format!(":{version}\t/opt/canopsis/docker"))), "{version}: {ps}");
        assert_eq!(canup_tests::simhost::installed_version(sim.root()), version);
        assert!(!sim.path("/opt/canopsis/VERSION.txt").exists(), "{version}: only packages ship VERSION.txt");
        assert_eq!(run(&sim, "/usr/bin/rpm", &["-q", "canopsis-core"], &[]).0, 1);
    }
}

/// `up -d` is the real Compose's reading of the project: from 22.10 the files need
/// `CPS_EDITION` (`${CPS_EDITION:?…}.env`), and the containers then run what `.env` says.
#[test]
fn compose_up_reads_the_project_as_the_real_compose_does() {
    let (_d, sim) = host(Spec { version: "23.10.1".into(), method: Method::Compose, ..Spec::default() });
    let (code, out) = run_in(&sim, "/opt/canopsis/docker", "/usr/bin/docker", &["compose", "up", "-d"], &[]);
    assert_ne!(code, 0, "without CPS_EDITION: {out}");
    assert!(out.contains("CPS_EDITION"), "{out}");
    let env = sim.read("/opt/canopsis/docker/.env").unwrap().replace("CANOPSIS_IMAGE_TAG=23.10.1", "CANOPSIS_IMAGE_TAG=23.10.2");
    sim.write("/opt/canopsis/docker/.env", &env).unwrap();
    let (code, out) = run_in(&sim, "/opt/canopsis/docker", "/usr/bin/docker", &["compose", "up", "-d"], &[("CPS_EDITION", "community")]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(canup_tests::simhost::installed_version(sim.root()), "23.10.2");
    // A project Compose cannot read is refused, as by the real `up`, and nothing changes: the
    // containers keep running what they ran, whatever .env now says.
    let env = sim.read("/opt/canopsis/docker/.env").unwrap().replace("CANOPSIS_IMAGE_TAG=23.10.2", "CANOPSIS_IMAGE_TAG=23.10.3");
    sim.write("/opt/canopsis/docker/.env", &env).unwrap();
    sim.write("/opt/canopsis/docker/docker-compose.yml", "services:\n  redis: [not, a, mapping]\n").unwrap();
    let (code, out) = run_in(&sim, "/opt/canopsis/docker", "/usr/bin/docker", &["compose", "up", "-d"], &[("CPS_EDITION", "community")]);
    assert_ne!(code, 0, "{out}");
    assert_eq!(canup_tests::simhost::installed_version(sim.root()), "23.10.2");
}

/// A project kept elsewhere: the containers carry its directory, as Compose labels them.
#[test]
fn a_compose_project_outside_the_default_directory_labels_its_containers_with_it() {
    let (_d, sim) = host(Spec { version: "4.5.5".into(), method: Method::Compose, compose_dir: "/srv/canopsis-compose".into(), ..Spec::default() });
    assert!(!sim.path("/opt/canopsis/docker/.env").exists());
    let (_, ps) = run(&sim, "/usr/bin/docker", PS, &[]);
    assert!(ps.lines().all(|l| l.ends_with("\t/srv/canopsis-compose")) && !ps.is_empty(), "{ps}");
    assert_eq!(sim.compose_dir(), "/srv/canopsis-compose");
}

/// The authors' tool makes the host, and a copy or a move of the tree drives itself: the
/// wrappers find their host from their own path and the stub program lives in the tree.
#[test]
fn a_host_made_by_canup_sim_create_can_be_copied_and_moved() {
    let dir = tempfile::tempdir().unwrap();
    let made = Command::new(canup_tests::sim_bin())
        .args(["create", "made", "--version", "4.5.7", "--edition", "cat", "--method", "packages"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    assert!(String::from_utf8_lossy(&made.stdout).contains("created a simulated Canopsis 4.5.7 host (cat edition, packages method, CentOS 7)"));
    let again = Command::new(canup_tests::sim_bin()).args(["create", "made", "--version", "4.5.7"]).current_dir(dir.path()).output().unwrap();
    assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("is not empty"), "never made over an existing tree");

    canup_tests::copy_dir(&dir.path().join("made"), &dir.path().join("copy")).unwrap();
    std::fs::rename(dir.path().join("made"), dir.path().join("moved")).unwrap();
    let (copy, moved) = (SimHost::open(&dir.path().join("copy")).unwrap(), SimHost::open(&dir.path().join("moved")).unwrap());
    let (code, out) = run(&copy, "/usr/bin/yum", &["update", "-y", "canopsis-core-4.5.8", "canopsis-cat-4.5.8"], &[]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(copy.read("/opt/canopsis/VERSION.txt").unwrap(), "Canopsis version 4.5.8\n");
    assert_eq!(copy.calls().unwrap().len(), 1);
    assert_eq!(moved.read("/opt/canopsis/VERSION.txt").unwrap(), "Canopsis version 4.5.7\n", "the original is untouched");
    assert!(moved.calls().unwrap().is_empty());
    assert_eq!(run(&moved, "/usr/bin/rpm", &["-q", "canopsis-cat"], &[]).1.trim(), "canopsis-cat-4.5.7-1.el7.x86_64");
}

/// A vendor makes a Compose host of a release the embedded facts lack from a file of new
/// entries (`CANUP_SIM_COMPOSE_FACTS`), without building canup-sim again.
#[test]
fn a_compose_host_of_a_new_release_is_made_from_added_facts() {
    let dir = tempfile::tempdir().unwrap();
    let extra = dir.path().join("24.10.0.toml");
    std::fs::write(
        &extra,
        "[[layout]]\neditions = [\"core\"]\nfrom = \"24.10.0\"\nto = \"24.10.0\"\ncompose_file = \"docker-compose.yml\"\nenv_files = [\".env\"]\n\
         command = [\"docker\", \"compose\", \"up\", \"-d\"]\nbasis = \"test\"\n\n\
         [[env]]\neditions = [\"core\"]\nfile = \".env\"\nfrom = \"24.10.0\"\nto = \"24.10.0\"\nvars = [[\"CANOPSIS_IMAGE_TAG\", \"{version}\"]]\nbasis = \"test\"\n\n\
         [[service]]\neditions = [\"core\"]\nname = \"api\"\nfrom = \"24.10.0\"\nto = \"24.10.0\"\nbasis = \"test\"\n\
         [service.definition]\nimage = \"docker.canopsis.net/docker/community/canopsis-api:${CANOPSIS_IMAGE_TAG}\"\n",
    )
    .unwrap();
    let made = Command::new(canup_tests::sim_bin())
        .args(["create", "new", "--version", "24.10.0", "--method", "compose", "--os", "rhel9"])
        .env("CANUP_SIM_COMPOSE_FACTS", &extra)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    assert_eq!(canup_tests::simhost::installed_version(&dir.path().join("new")), "24.10.0");
    let without =
        Command::new(canup_tests::sim_bin()).args(["create", "none", "--version", "24.10.0", "--method", "compose"]).current_dir(dir.path()).output().unwrap();
    assert!(!without.status.success());
    assert!(String::from_utf8_lossy(&without.stderr).contains("no reference files for Canopsis 24.10.0"), "{}", String::from_utf8_lossy(&without.stderr));
}

/// Runs `canup-sim ARGS` in a process group of its own until it prints "(interrupt to stop)":
/// its output so far, and the child (stopped with its group by [`Author::drop`]).
struct Author(std::process::Child, String);

impl Author {
    fn start(args: &[&str]) -> Self {
        use std::io::BufRead;
        use std::os::unix::process::CommandExt;
        let mut child = Command::new(canup_tests::sim_bin()).args(args).stdout(std::process::Stdio::piped()).process_group(0).spawn().unwrap();
        let mut out = String::new();
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap());
        while !out.contains("(interrupt to stop)") {
            let mut line = String::new();
            assert!(lines.read_line(&mut line).unwrap() > 0, "canup-sim {args:?} ended: {out}");
            out.push_str(&line);
        }
        Self(child, out)
    }

    /// The value of `key = "…"` in the printed canup.toml table.
    fn value(&self, key: &str) -> String {
        let line = self.1.lines().find(|l| l.starts_with(&format!("{key} = "))).unwrap_or_else(|| panic!("{key} in {}", self.1));
        line.split('"').nth(1).unwrap().to_owned()
    }
}

impl Drop for Author {
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGTERM);
        let _ = self.0.wait();
    }
}

/// A step author's stand-in Canopsis API: `canup-sim serve-api` answers as the tests' does,
/// with the simulated host's version, to the credentials it prints for canup.toml.
#[tokio::test]
async fn canup_sim_serves_the_stand_in_api_it_prints_for_canup_toml() {
    let (_dir, sim) = host(Spec { version: "23.10.2".into(), ..Spec::default() });
    let api = Author::start(&["serve-api", sim.root().to_str().unwrap()]);
    let url = api.value("url");
    let password = std::fs::read_to_string(api.value("password_file")).unwrap();
    let client = reqwest::Client::new();
    let info: serde_json::Value = client.get(format!("{url}/api/v4/app-info")).basic_auth("root", Some(&password)).send().await.unwrap().json().await.unwrap();
    assert_eq!(info["version"], "23.10.2");
    let refused = client.get(format!("{url}/api/v4/app-info")).basic_auth("root", Some("wrong")).send().await.unwrap();
    assert_eq!(refused.status(), 401);
}

/// A step author's private RabbitMQ: `canup-sim rabbitmq` starts a node set up as Canopsis
/// has it, whose management API takes the credentials it prints for canup.toml.
#[tokio::test]
async fn canup_sim_starts_a_private_rabbitmq_set_up_as_canopsis_has_it() {
    let dir = tempfile::tempdir().unwrap();
    let amqp = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let management = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let node = dir.path().join("rabbitmq");
    let broker = Author::start(&["rabbitmq", node.to_str().unwrap(), "--amqp-port", &amqp.to_string(), "--management-port", &management.to_string()]);
    assert!(broker.1.contains("drain_stats_interval_ms = \"1000\""), "{}", broker.1);
    let password = std::fs::read_to_string(broker.value("password_file")).unwrap();
    let queues: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/api/queues/canopsis", broker.value("url")))
        .basic_auth(broker.value("username"), Some(password.trim()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = queues.as_array().unwrap().iter().filter_map(|q| q["name"].as_str()).collect();
    assert_eq!(names, ["Engine_axe", "Engine_che", "Engine_fifo"], "{queues}");
}
