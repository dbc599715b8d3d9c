//! `canup step run` through the real binary.

use std::path::{Path, PathBuf};
use std::process::Command;

use canup_tests::simhost::{SimHost, Spec};
use canup_tests::{canup_bin, guest_wasm, serve};

fn manifest() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("guests/example-step/step.toml")
}

struct Setup {
    dir: tempfile::TempDir,
    sim: SimHost,
    config: PathBuf,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let sim = SimHost::create(&dir.path().join("root"), &Spec::default(), &canup_tests::sim_bin()).unwrap();
    let api = serve(axum::Router::new().route("/api/v4/app-info", axum::routing::get(|| async { r#"{"version":"3.38.0"}"# }))).await;
    let config = dir.path().join("canup.toml");
    std::fs::write(
        &config,
        format!(
            "[policy.fs]\nread = [\"/opt/canopsis/**\"]\nwrite = [\"/opt/canopsis/etc/webserver.conf\"]\n\
             [[policy.exec]]\nprogram = \"/usr/bin/rpm\"\nargs = [\"-q\", \"*\"]\n\
             [[policy.exec]]\nprogram = \"/opt/canopsis/bin/canopsis-reconfigure\"\nenv_file = \"/opt/canopsis/etc/go-engines-vars.conf\"\n\
             [[policy.exec]]\nprogram = \"/usr/bin/canoctl\"\nargs = [\"restart\"]\n\
             [[policy.http]]\nendpoint = \"canopsis-api\"\n\
             [endpoints.canopsis-api]\nurl = \"http://{api}\"\n"
        ),
    )
    .unwrap();
    Setup { dir, sim, config }
}

impl Setup {
    fn step_run(&self, module: &Path, extra: &[&str]) -> std::process::Output {
        self.step_run_with(module, &manifest(), extra)
    }

    fn step_run_with(&self, module: &Path, manifest: &Path, extra: &[&str]) -> std::process::Output {
        Command::new(canup_bin())
            .args(["step", "run"])
            .arg(module)
            .arg("--manifest")
            .arg(manifest)
            .arg("--policy")
            .arg(&self.config)
            .arg("--sysroot")
            .arg(self.sim.root())
            .arg("--state-dir")
            .arg(self.dir.path().join("state"))
            .args(["--installed", "3.38.0", "--target", "3.40.0", "--yes"])
            .args(extra)
            .output()
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_run_prints_the_audit_and_a_rerun_does_not_append_again() {
    let s = setup().await;
    let module = guest_wasm("example-step");
    let out = s.step_run(&module, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "stdout {stdout}\nstderr {}", String::from_utf8_lossy(&out.stderr));
    // go-engines-vars.conf is not read by the step: canup exports it to reconfigure.
    assert!(stdout.contains("--- audit (8 decisions) ---"), "{stdout}");
    assert!(stdout.contains(r#""env_file":"/opt/canopsis/etc/go-engines-vars.conf""#), "{stdout}");
    assert!(stdout.contains(r#"allowed exec        {"args":["restart"]"#), "{stdout}");
    assert!(stdout.contains("step example/hello succeeded") && stdout.contains("module compiled in"), "{stdout}");
    assert!(s.sim.read("/opt/canopsis/etc/webserver.conf").unwrap().ends_with("canopsis.webcore.services.broadcast_message=1\n"));
    let audit = std::fs::read_to_string(s.dir.path().join("state/audit.jsonl")).unwrap();
    assert_eq!(audit.lines().count(), 8);

    let conf = s.sim.read("/opt/canopsis/etc/webserver.conf").unwrap();
    let again = s.step_run(&module, &["--json"]);
    assert!(again.status.success());
    let report: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(report["succeeded"], true);
    assert_eq!(report["compiled_from_cache"], true);
    assert!(!report["audit"].as_array().unwrap().iter().any(|r| r["capability"] == "fs.append"), "second run appended again");
    assert_eq!(s.sim.read("/opt/canopsis/etc/webserver.conf").unwrap(), conf);
    // The restart itself is run each time, as the step says.
    assert_eq!(s.sim.read("/var/lib/canup-sim/canoctl-restarts").unwrap(), "3.38.0\n3.38.0\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_run_refuses_a_newer_major_module_with_exit_3() {
    let s = setup().await;
    let before = s.sim.snapshot().unwrap();
    let out = s.step_run(&guest_wasm("newer-api"), &[]);
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("built for step API 2.0.0, this canup supports {}", canup::manifest::STEP_API)), "{stderr}");
    assert_eq!(s.sim.snapshot().unwrap(), before);
    assert!(s.sim.calls().unwrap().is_empty());
}

/// `step run` admits like `apply`: a manifest asking for more than the policy allows is
/// refused whole with exit 5, before the step starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_run_refuses_a_manifest_wider_than_the_policy_with_exit_5() {
    let s = setup().await;
    let policy = std::fs::read_to_string(&s.config).unwrap();
    std::fs::write(&s.config, policy.replace("[[policy.exec]]\nprogram = \"/usr/bin/canoctl\"\nargs = [\"restart\"]\n", "")).unwrap();
    let before = s.sim.snapshot().unwrap();
    let out = s.step_run(&guest_wasm("example-step"), &[]);
    assert_eq!(out.status.code(), Some(5), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("step example/hello needs exec of /usr/bin/canoctl") && stderr.contains("nothing ran"), "{stderr}");
    assert_eq!(s.sim.snapshot().unwrap(), before);
    assert!(s.sim.calls().unwrap().is_empty());
    assert!(!s.dir.path().join("state/audit.jsonl").exists() || std::fs::read_to_string(s.dir.path().join("state/audit.jsonl")).unwrap().is_empty());
}

/// An optional action asked with `ui.choose` stays off under `--yes` (which the Ansible role
/// always passes) and is switched on by the operator's `[answers]` in canup.toml.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_optional_action_stays_off_under_yes_and_answers_switch_it_on() {
    let s = setup().await;
    let manifest = s.dir.path().join("step.toml");
    std::fs::write(
        &manifest,
        "release = \"3.40.0\"\napi = \"1.1.0\"\n[[step]]\nid = \"choose\"\nphase = \"post-update\"\nmethods = [\"packages\"]\neditions = [\"core\"]\ndescription = \"An optional action\"\n",
    )
    .unwrap();
    let chosen = |s: &Setup| {
        let out = s.step_run_with(&guest_wasm("probe"), &manifest, &["--json"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let choice = report["audit"].as_array().unwrap().iter().find(|r| r["capability"] == "ui.choose").unwrap()["result"].clone();
        (report["stdout"].as_str().unwrap().to_owned(), choice.as_str().unwrap().to_owned())
    };
    let (stdout, audited) = chosen(&s);
    assert_eq!(stdout, "chosen=0\n");
    assert_eq!(audited, "no (the default: nobody answered (--yes or no terminal))");
    let config = std::fs::read_to_string(&s.config).unwrap();
    std::fs::write(&s.config, format!("{config}\n[answers.choose]\nenable-x = \"yes\"\n")).unwrap();
    let (stdout, audited) = chosen(&s);
    assert_eq!(stdout, "chosen=1\n");
    assert_eq!(audited, "yes (canup.toml [answers])");
}

/// A terminal that stops reading (here a stderr pipe nobody drains) blocks canup's write of a
/// step's message. On a one-CPU host too (`taskset -c 0`), the wall-time limit still ends the
/// step, canup reports it on stdout and exits instead of hanging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wall_time_limit_ends_a_step_whose_terminal_stopped_reading_on_one_cpu() {
    let s = setup().await;
    let config = std::fs::read_to_string(&s.config).unwrap();
    std::fs::write(&s.config, format!("{config}\n[limits]\nwall_seconds = 2\n")).unwrap();
    let manifest = s.dir.path().join("step.toml");
    std::fs::write(
        &manifest,
        "release = \"3.40.0\"\napi = \"1.0.0\"\n[[step]]\nid = \"ui-flood\"\nphase = \"post-update\"\nmethods = [\"packages\"]\neditions = [\"core\"]\n",
    )
    .unwrap();
    let mut child = Command::new("taskset")
        .args(["-c", "0"])
        .arg(canup_bin())
        .args(["step", "run"])
        .arg(guest_wasm("probe"))
        .arg("--manifest")
        .arg(&manifest)
        .arg("--policy")
        .arg(&s.config)
        .arg("--sysroot")
        .arg(s.sim.root())
        .arg("--state-dir")
        .arg(s.dir.path().join("state"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > std::time::Duration::from_secs(60) {
            child.kill().unwrap();
            panic!("canup hung with its stderr not read");
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let mut stdout = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut stdout).unwrap();
    assert_eq!(status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("step ui-flood FAILED: the step ran past its wall-time limit of 2s"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_policy_names_the_key_and_line_with_exit_2() {
    let s = setup().await;
    std::fs::write(&s.config, "[policy]\n[[policy.exec]]\nprogram = \"/usr/bin/rpm\"\nargz = [\"-q\"]\n").unwrap();
    let out = s.step_run(&guest_wasm("example-step"), &[]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("argz") && stderr.contains("line 4") && stderr.contains("canup.toml"), "{stderr}");
    assert!(s.sim.calls().unwrap().is_empty());
}

/// The exit codes are listed once (`canup::exit::ExitCode`); help, man page and the operator
/// guide's table say exactly that.
#[test]
fn help_man_page_and_operator_guide_list_the_exit_codes_of_exit_rs() {
    use canup::exit::ExitCode;
    let out = Command::new(canup_bin()).arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&ExitCode::help()), "{text}");
    let man = Command::new(canup_bin()).arg("man").output().unwrap();
    let page = String::from_utf8_lossy(&man.stdout).replace("\\-", "-").replace("\\*(Aq", "'");
    for c in ExitCode::ALL {
        assert!(page.contains(&format!("{:>2}  {}", c.code(), c.meaning())), "the man page lacks exit code {}: {page}", c.code());
    }
    let guide = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/operator-guide.md")).unwrap();
    assert!(guide.contains(&ExitCode::markdown_table()), "docs/operator-guide.md's exit code table differs from exit.rs:\n{}", ExitCode::markdown_table());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_is_printed_once_with_each_cause_once() {
    let s = setup().await;
    let out = Command::new(canup_bin())
        .args(["step", "run"])
        .arg(guest_wasm("example-step"))
        .arg("--manifest")
        .arg(manifest())
        .args(["--policy", "/nonexistent/canup.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("error:").count(), 1, "{stderr}");
    assert_eq!(stderr.matches("No such file or directory").count(), 1, "{stderr}");
    assert!(stderr.contains("/nonexistent/canup.toml"), "{stderr}");
    assert!(s.sim.calls().unwrap().is_empty());
}

/// A compiled-module cache that cannot be created is the host's problem, with the same code
/// under `step run` and under the operator's commands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_cache_exits_2_under_step_run_and_plan() {
    let s = setup().await;
    let state = s.dir.path().join("state");
    std::fs::create_dir_all(state.join("cache")).unwrap();
    std::fs::write(state.join("cache/compiled"), "a file where the cache directory goes").unwrap();
    let out = s.step_run(&guest_wasm("example-step"), &[]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cache"), "{}", String::from_utf8_lossy(&out.stderr));

    let (repo, _) = canup_tests::pristine_repo();
    let out = Command::new(canup_bin())
        .arg("--config")
        .arg(s.dir.path().join("none.toml"))
        .arg("--repo")
        .arg(repo)
        .arg("--trusted-root")
        .arg(repo.join("metadata/1.root.json"))
        .arg("--state-dir")
        .arg(&state)
        .arg("--sysroot")
        .arg(s.sim.root())
        .arg("plan")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cache"), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(s.sim.calls().unwrap().is_empty(), "a step ran");
}

#[test]
fn completions_and_man_page_are_generated_from_the_cli() {
    let bash = Command::new(canup_bin()).args(["completions", "bash"]).output().unwrap();
    assert!(bash.status.success());
    let script = String::from_utf8_lossy(&bash.stdout);
    assert!(script.contains("restore-files") && script.contains("--dry-run"), "{script}");
    let man = Command::new(canup_bin()).arg("man").output().unwrap();
    let page = String::from_utf8_lossy(&man.stdout);
    assert!(page.starts_with(".ie") && page.contains(".TH canup 1"), "{page}");
    assert!(page.contains("Exit codes"), "the man page documents the exit codes");
}
