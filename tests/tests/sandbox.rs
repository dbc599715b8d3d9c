//! The sandbox and its capabilities, with the real host library, real guest components, real
//! processes and real loopback HTTP servers. Hostile cases assert the error *and* that nothing
//! outside changed (the simulated tree, the stub call log, files outside the sysroot).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect};
use axum::routing::{get, post};
use canup::audit::{AuditLog, AuditRecord, Decision};
use canup::backup::{BackupEntry, Backups};
use canup::capabilities::http::{Endpoint, Endpoints};
use canup::capabilities::{CapabilitySet, ExecRule, FsRules, Grant, HttpRule};
use canup::config::StepLimits;
use canup::manifest::{Edition, Method, STEP_API};
use canup::sandbox::{LoadedStep, Sandbox, SandboxError, StepContext, StepEnv, StepReport, Stop};
use canup::sysroot::Sysroot;
use canup::ui::{Level, Ui};
use canup_tests::simhost::{SimHost, Spec};
use canup_tests::{guest_wasm, process_alive, serve};
use semver::Version;
use tempfile::TempDir;

/// One engine and one compile of the probe for the whole test binary.
fn probe() -> &'static (Sandbox, LoadedStep) {
    static PROBE: OnceLock<(Sandbox, LoadedStep)> = OnceLock::new();
    PROBE.get_or_init(|| {
        let sandbox = Sandbox::new(None).expect("sandbox");
        let wasm = std::fs::read(guest_wasm("probe")).expect("probe.wasm");
        let loaded = sandbox.load("probe", &wasm, &STEP_API).expect("load probe");
        (sandbox, loaded)
    })
}

fn exec_rule(program: &str, args: &[&str], env: &[&str]) -> ExecRule {
    ExecRule {
        program: program.into(),
        args: args.iter().map(|s| s.to_string()).collect(),
        env: env.iter().map(|s| s.to_string()).collect(),
        users: vec![],
        readonly: false,
        shell: false,
        timeout_seconds: None,
        env_file: None,
    }
}

/// What the probe declares: broad enough that each hostile case is refused for the reason it
/// tests, not because something unrelated is missing.
fn probe_caps() -> CapabilitySet {
    CapabilitySet {
        exec: vec![
            exec_rule("/usr/bin/env", &[], &["FOO", "CPS_API_URL"]),
            exec_rule("/usr/bin/rpm", &["-q", "*"], &[]),
            exec_rule("/usr/bin/su", &["-", "canopsis", "-c", "canopsinit --canopsis-edition *"], &[]),
            // No rule can grant LD_PRELOAD: asked for, it is refused as forbidden.
            exec_rule("/usr/bin/systemctl", &["daemon-reload"], &[]),
            exec_rule("/usr/bin/true", &["*"], &[]),
            exec_rule("/usr/bin/flood", &[], &[]),
            exec_rule("/usr/bin/hang", &[], &[]),
        ],
        fs: FsRules {
            read: vec!["/opt/canopsis/**".into()],
            write: vec!["/opt/canopsis/etc/**".into()],
            create: vec!["/opt/canopsis/etc/**".into()],
            deny: vec![],
        },
        http: vec![HttpRule {
            endpoint: "api".into(),
            methods: vec!["GET".into(), "POST".into()],
            paths: vec!["/api/v4/**".into(), "/old-path".into(), "/new-path".into(), "/redirect-elsewhere".into(), "/big".into()],
        }],
        database: vec![],
        units: Default::default(),
        compose: Default::default(),
    }
}

/// A UI that answers yes and records what it was asked.
#[derive(Default)]
struct RecordingUi {
    events: Mutex<Vec<String>>,
}

impl Ui for RecordingUi {
    fn log(&self, _: &str, level: Level, message: &str) {
        self.events.lock().unwrap().push(format!("{level:?}: {message}"));
    }
    fn progress(&self, _: &str, done: u64, total: Option<u64>, message: &str) {
        self.events.lock().unwrap().push(format!("progress {done}/{total:?} {message}"));
    }
    fn confirm(&self, _: &str, question: &str) -> bool {
        self.events.lock().unwrap().push(format!("confirm {question}"));
        true
    }
    fn manual(&self, _: &str, instruction: &str) -> bool {
        self.events.lock().unwrap().push(format!("manual {instruction}"));
        true
    }
}

/// The loopback servers a probe talks to.
struct Servers {
    api: String,
    elsewhere_hits: Arc<AtomicUsize>,
    socket_hits: Arc<AtomicUsize>,
    socket_addr: String,
    posts: Posts,
}

/// What the fake API received: (authorization header, body) of each POST.
type Posts = Arc<Mutex<Vec<(Option<String>, String)>>>;

async fn servers() -> Servers {
    let elsewhere_hits = Arc::new(AtomicUsize::new(0));
    let hits = elsewhere_hits.clone();
    let elsewhere = serve(Router::new().fallback(move || {
        hits.fetch_add(1, Ordering::SeqCst);
        async { "stolen" }
    }))
    .await;
    let posts: Posts = Arc::default();
    let seen = posts.clone();
    let api = serve(
        Router::new()
            .route(
                "/api/v4/broadcast-message",
                post(move |headers: HeaderMap, body: String| {
                    let auth = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_owned);
                    seen.lock().unwrap().push((auth.clone(), body));
                    async move {
                        if auth.as_deref() == Some("Basic Y2FudXA6czNjcmV0") {
                            (StatusCode::CREATED, r#"{"_id":"b1"}"#).into_response()
                        } else {
                            StatusCode::UNAUTHORIZED.into_response()
                        }
                    }
                }),
            )
            .route("/api/v4/app-info", get(|| async { r#"{"version":"3.40.0"}"# }))
            .route("/old-path", get(|| async { Redirect::to("/new-path") }))
            .route("/new-path", get(|| async { "moved here" }))
            .route("/redirect-elsewhere", get(move || async move { Redirect::to(&format!("http://{elsewhere}/steal")) }))
            .route("/big", get(|| async { vec![b'x'; 10 << 20] })),
    )
    .await;
    let socket_hits = Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let socket_addr = listener.local_addr().unwrap().to_string();
    let counter = socket_hits.clone();
    tokio::spawn(async move {
        while listener.accept().await.is_ok() {
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });
    Servers { api: format!("http://{api}"), elsewhere_hits, socket_hits, socket_addr, posts }
}

struct World {
    _dir: TempDir,
    sim: SimHost,
    state: PathBuf,
    outside: PathBuf,
    servers: Servers,
    secret_file: PathBuf,
}

async fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let sim = SimHost::create(&dir.path().join("root"), &Spec::default(), &canup_tests::sim_bin()).unwrap();
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret"), "outside secret\n").unwrap();
    std::os::unix::fs::symlink(&outside, sim.path("/opt/canopsis/etc/escape")).unwrap();
    sim.write("/root/secret", "root's secret\n").unwrap();
    sim.write("/opt/canopsis/etc/old.conf", "old=1\n").unwrap();
    std::fs::copy("/usr/bin/env", sim.path("/usr/bin/env")).unwrap();
    std::fs::copy("/usr/bin/true", sim.path("/usr/bin/true")).unwrap();
    let script = |name: &str, body: &str| {
        sim.write(name, &format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(sim.path(name), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    };
    script("/usr/bin/flood", "head -c 5000000 /dev/zero | tr '\\0' 'y'");
    script("/usr/bin/slow", "echo migrating collection 1 of 2\nsleep 2\necho migrated");
    std::fs::create_dir_all(sim.path("/var/run")).unwrap();
    let pid_file = sim.path("/var/run/hang.pid");
    script("/usr/bin/hang", &format!("sleep 300 &\necho $! > '{}'\nsleep 300", pid_file.display()));
    let servers = servers().await;
    sim.write("/opt/canopsis/etc/listener", &servers.socket_addr).unwrap();
    let state = dir.path().join("state");
    let secret_file = dir.path().join("api-password");
    std::fs::write(&secret_file, "s3cret\n").unwrap();
    World { _dir: dir, sim, state, outside, servers, secret_file }
}

struct Run {
    report: StepReport,
    audit: Vec<AuditRecord>,
    ui: Arc<RecordingUi>,
    /// What a dry run listed.
    recorded: Vec<String>,
}

impl World {
    fn endpoints(&self) -> Endpoints {
        BTreeMap::from([(
            "api".to_owned(),
            Endpoint {
                url: self.servers.api.clone(),
                username: Some("canup".into()),
                password_file: Some(self.secret_file.clone()),
                password_env: None,
                token_file: None,
                token_env: None,
            },
        )])
    }

    async fn run_with(&self, step: &str, declared: &CapabilitySet, policy: &CapabilitySet, limits: StepLimits) -> Run {
        self.run_mode(step, declared, policy, limits, false).await
    }

    async fn run_mode(&self, step: &str, declared: &CapabilitySet, policy: &CapabilitySet, limits: StepLimits, dry_run: bool) -> Run {
        let ui = Arc::new(RecordingUi::default());
        let (env, audit) = self.env(step, declared, policy, limits, dry_run, ui.clone());
        let recorded = env.recorded.clone();
        let report = probe().0.run(&probe().1, env).await;
        let recorded = recorded.lines();
        Run { report, audit: audit.records(), ui, recorded }
    }

    /// What a probe step runs with: its grant over the simulated host, the test's endpoints.
    fn env(
        &self,
        step: &str,
        declared: &CapabilitySet,
        policy: &CapabilitySet,
        limits: StepLimits,
        dry_run: bool,
        ui: Arc<dyn Ui>,
    ) -> (StepEnv, Arc<AuditLog>) {
        let audit = Arc::new(AuditLog::open(&self.state.join("audit.jsonl"), "test-run").unwrap());
        let context = StepContext {
            step_id: step.into(),
            phase: canup::manifest::Phase::PostUpdate,
            installed: Version::new(3, 38, 0),
            target: Version::new(3, 40, 0),
            release: Version::new(3, 40, 0),
            edition: Some(Edition::Cat),
            method: Some(Method::Packages),
            dry_run,
        };
        let env = StepEnv {
            endpoints: Arc::new(self.endpoints()),
            limits,
            ..StepEnv::new(
                Grant::new(step, declared, policy).unwrap(),
                Sysroot::new(self.sim.root()).unwrap(),
                Backups::open(&self.state, "test-run").unwrap(),
                audit.clone(),
                ui,
                context,
            )
        };
        (env, audit)
    }

    async fn run(&self, step: &str) -> Run {
        self.run_with(step, &probe_caps(), &probe_caps(), StepLimits::default()).await
    }

    /// Runs a hostile step and checks the common promises: it failed with a message
    /// containing `expected`, and nothing in or outside the simulated host changed.
    async fn hostile(&self, step: &str, limits: StepLimits, expected: &str) -> Run {
        let before = self.sim.snapshot().unwrap();
        let run = self.run_with(step, &probe_caps(), &probe_caps(), limits).await;
        let message = match &run.report.result {
            Ok(()) => panic!("hostile step {step} succeeded; stdout: {}", run.report.stdout.text()),
            Err(e) => e.to_string(),
        };
        assert!(message.contains(expected), "step {step}: expected {expected:?} in {message:?}");
        assert_eq!(self.sim.snapshot().unwrap(), before, "step {step} changed the simulated host");
        assert!(self.sim.calls().unwrap().is_empty(), "step {step} ran a stub: {:?}", self.sim.calls().unwrap());
        assert_eq!(std::fs::read_to_string(self.outside.join("secret")).unwrap(), "outside secret\n");
        assert!(!Path::new("/pwned").exists() && !Path::new("/tmp/canup-wasi-pwned").exists());
        run
    }
}

fn denied<'a>(run: &'a Run, capability: &str) -> &'a AuditRecord {
    run.audit
        .iter()
        .find(|r| r.capability == capability && r.decision == Decision::Denied)
        .unwrap_or_else(|| panic!("no denied {capability} record in {:#?}", run.audit))
}

// ---- allowed paths, one per capability ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_runs_declared_programs_with_only_the_given_environment() {
    let w = world().await;
    let run = w.run("allowed-exec").await;
    assert_eq!(run.report.result, Ok(()), "stderr: {}", run.report.stderr.text());
    let out = run.report.stdout.text();
    // /usr/bin/env prints exactly the environment it got: what the step passed and the
    // default search path, nothing of canup's own.
    let mut env_lines: Vec<&str> = out.lines().take_while(|l| !l.starts_with("canopsis-core")).collect();
    env_lines.sort();
    let path = format!("PATH={}", canup::capabilities::exec::DEFAULT_PATH);
    assert_eq!(env_lines, ["CPS_API_URL=http://localhost:8082", "FOO=bar", path.as_str()]);
    assert!(out.contains("canopsis-core-3.38.0-1.el7.x86_64"), "{out}");
    assert!(out.contains("rpm canopsis-cat status Some(1)"), "{out}");
    let calls = w.sim.calls().unwrap();
    let lines: Vec<String> = calls.iter().map(|c| format!("{} as {}", c.line(), c.user)).collect();
    assert_eq!(
        lines,
        [
            "rpm -q canopsis-core as root",
            "su - canopsis -c canopsinit --canopsis-edition core as root",
            "canopsinit --canopsis-edition core as canopsis",
            "rpm -q canopsis-cat as root",
        ]
    );
    let exec: Vec<_> = run.audit.iter().filter(|r| r.capability == "exec").collect();
    assert_eq!(exec.len(), 4);
    assert!(exec.iter().all(|r| r.decision == Decision::Allowed));
    assert_eq!(exec[0].result, "exit 0");
    // Environment values stay out of the audit; names are kept.
    assert_eq!(exec[0].args["env"], serde_json::json!(["FOO", "CPS_API_URL"]));
    assert!(!serde_json::to_string(&run.audit).unwrap().contains("localhost:8082"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fs_reads_writes_atomically_and_keeps_backups() {
    let w = world().await;
    let original = w.sim.read("/opt/canopsis/etc/webserver.conf").unwrap();
    let run = w.run("allowed-fs").await;
    assert_eq!(run.report.result, Ok(()), "stderr: {}", run.report.stderr.text());
    let out = run.report.stdout.text();
    assert!(out.contains("version=Canopsis version 3.38.0"), "{out}");
    assert!(out.contains("exists=true missing=false"), "{out}");
    assert!(out.contains("list=amqp2engines"), "{out}");
    assert!(out.contains("new.conf") && out.contains("kind=File"), "{out}");
    assert_eq!(w.sim.read("/opt/canopsis/etc/new.conf").unwrap(), "created=1\n");
    assert_eq!(w.sim.read("/opt/canopsis/etc/webserver.conf").unwrap(), format!("{original}canopsis.webcore.services.metaalarmrule=1\n"));
    assert!(!w.sim.path("/opt/canopsis/etc/old.conf").exists());
    // Backups: the pre-run content of every changed file, and which files did not exist.
    let dir = w.state.join("backups/test-run");
    let entries: Vec<BackupEntry> = std::fs::read_to_string(dir.join("index.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let by_path = |p: &str| entries.iter().find(|e| e.path == Path::new(p)).unwrap_or_else(|| panic!("no backup of {p}"));
    assert!(!by_path("/opt/canopsis/etc/new.conf").existed);
    assert_eq!(std::fs::read_to_string(dir.join(by_path("/opt/canopsis/etc/webserver.conf").copy.as_ref().unwrap())).unwrap(), original);
    assert_eq!(std::fs::read_to_string(dir.join(by_path("/opt/canopsis/etc/old.conf").copy.as_ref().unwrap())).unwrap(), "old=1\n");
    // No temporary file is left behind.
    assert!(!std::fs::read_dir(w.sim.path("/opt/canopsis/etc")).unwrap().any(|e| e.unwrap().file_name().to_string_lossy().contains(".canup-")));
    let caps: Vec<&str> = run.audit.iter().map(|r| r.capability.as_str()).collect();
    assert_eq!(caps, ["fs.read", "fs.write", "fs.append", "fs.exists", "fs.exists", "fs.list-dir", "fs.metadata", "fs.remove"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_injects_credentials_and_follows_same_origin_redirects() {
    let w = world().await;
    let run = w.run("allowed-http").await;
    assert_eq!(run.report.result, Ok(()), "stderr: {}", run.report.stderr.text());
    let out = run.report.stdout.text();
    assert!(out.contains(r#"post status=201 body={"_id":"b1"}"#), "{out}");
    assert!(out.contains("redirected status=200 body=moved here"), "{out}");
    // The redirect the server sent is a request the step did not name: it has its own record.
    let hop = run.audit.iter().find(|r| r.capability == "http.redirect").unwrap_or_else(|| panic!("no redirect record: {:#?}", run.audit));
    assert_eq!((hop.args["path"].as_str(), hop.args["method"].as_str()), (Some("/new-path"), Some("GET")));
    assert!(hop.result.contains("303") || hop.result.contains("302") || hop.result.contains("307"), "{}", hop.result);
    let posts = w.servers.posts.lock().unwrap().clone();
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0].0.as_deref(), Some("Basic Y2FudXA6czNjcmV0"));
    assert!(posts[0].1.contains("Canopsis upgrade in progress"));
    // The secret is in no record the step or the operator sees.
    assert!(!serde_json::to_string(&run.audit).unwrap().contains("s3cret"));
    assert!(!out.contains("s3cret") && !out.contains("Y2FudXA6czNjcmV0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_reaches_the_operator() {
    let w = world().await;
    let run = w.run("allowed-ui").await;
    assert_eq!(run.report.result, Ok(()));
    assert!(run.report.stdout.text().contains("confirm=true manual=true"));
    let events = run.ui.events.lock().unwrap().clone();
    assert_eq!(
        events,
        ["Info: hello operator", "Warn: careful", "progress 5/Some(10) halfway", "confirm Proceed?", "manual Upgrade Redis to version 5 by hand."]
    );
    assert!(run.audit.iter().any(|r| r.capability == "ui.manual" && r.result == "done"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_tells_versions_edition_and_method() {
    let w = world().await;
    let run = w.run("allowed-context").await;
    assert_eq!(run.report.result, Ok(()));
    assert_eq!(run.report.stdout.text().trim(), "installed=3.38.0 target=3.40.0 release=3.40.0 edition=cat method=packages dry_run=false step=allowed-context");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_id_the_module_does_not_implement_fails_clearly() {
    let w = world().await;
    let run = w.run("no-such-step").await;
    let Err(Stop::Failed(msg)) = &run.report.result else { panic!("{:?}", run.report.result) };
    assert!(msg.contains("does not implement step \"no-such-step\"") && msg.contains("allowed-exec"), "{msg}");
}

// ---- hostile modules ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_traversal_out_of_the_sysroot_is_denied() {
    let w = world().await;
    let run = w.hostile("traversal", StepLimits::default(), "outside the sysroot").await;
    denied(&run, "fs.read");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_traversal_to_an_undeclared_path_is_judged_after_resolution() {
    let w = world().await;
    let run = w
        .hostile(
            "traversal-inside",
            StepLimits::default(),
            "read of /opt/canopsis/etc/../../../root/secret (resolves to /root/secret) is not in the capabilities declared by step traversal-inside",
        )
        .await;
    denied(&run, "fs.read");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlink_leading_outside_cannot_be_read() {
    let w = world().await;
    let run = w.hostile("symlink-read", StepLimits::default(), "outside the sysroot").await;
    assert!(!run.report.result.as_ref().unwrap_err().to_string().contains("outside secret"));
    denied(&run, "fs.read");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlink_leading_outside_cannot_be_written() {
    let w = world().await;
    let run = w.hostile("symlink-write", StepLimits::default(), "outside the sysroot").await;
    denied(&run, "fs.write");
    assert!(!w.state.join("backups/test-run/files").read_dir().unwrap().any(|_| true), "nothing was backed up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_path_cannot_be_written() {
    let w = world().await;
    let run = w.hostile("write-readonly", StepLimits::default(), "write of /opt/canopsis/VERSION.txt is not in the capabilities declared").await;
    denied(&run, "fs.write");
    assert_eq!(w.sim.read("/opt/canopsis/VERSION.txt").unwrap(), "Canopsis version 3.38.0\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undeclared_program_is_denied() {
    let w = world().await;
    let run =
        w.hostile("undeclared-program", StepLimits::default(), "exec of program /bin/sh is not in the capabilities declared by step undeclared-program").await;
    denied(&run, "exec");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_program_with_undeclared_arguments_is_denied() {
    let w = world().await;
    let run = w
        .hostile(
            "undeclared-args",
            StepLimits::default(),
            r#"exec of /usr/bin/systemctl with arguments ["stop", "canopsis-engine-go@engine-che"] is not in the capabilities declared"#,
        )
        .await;
    denied(&run, "exec");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relative_program_is_refused() {
    let w = world().await;
    let run = w.hostile("relative-program", StepLimits::default(), "never looked up through PATH").await;
    denied(&run, "exec");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_found_through_path_is_refused() {
    let w = world().await;
    let run = w.hostile("path-lookup", StepLimits::default(), "exec of program \"systemctl\": programs are named by absolute path").await;
    denied(&run, "exec");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hosts_environment_and_arguments_are_invisible() {
    // SAFETY: set before any thread of this test reads the environment; tests that read it
    // do so only through the sandbox, which never passes it on.
    unsafe { std::env::set_var("CANUP_TEST_SECRET", "hunter2") };
    let w = world().await;
    let run = w.run("host-env").await;
    assert_eq!(run.report.result, Ok(()), "{:?}", run.report.result);
    assert!(run.report.stdout.text().contains("environment empty, no arguments"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ld_preload_is_refused_even_when_declared() {
    let w = world().await;
    let run = w.hostile("ld-preload", StepLimits::default(), "environment variable LD_PRELOAD for /usr/bin/systemctl is refused for every step").await;
    denied(&run, "exec");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_is_refused_without_blocking_the_run() {
    let w = world().await;
    nix::unistd::mkfifo(&w.sim.path("/opt/canopsis/etc/fifo"), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let run = tokio::time::timeout(Duration::from_secs(30), w.hostile("read-fifo", StepLimits::default(), "not a regular file"))
        .await
        .expect("reading a FIFO blocked the run");
    assert_eq!(run.report.result.as_ref().err().map(|_| ()), Some(()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hard_link_to_an_outside_file_is_not_read() {
    let w = world().await;
    std::fs::hard_link(w.outside.join("secret"), w.sim.path("/opt/canopsis/etc/linked-secret")).unwrap();
    let run = w.hostile("read-hardlink", StepLimits::default(), "hard links").await;
    assert!(!run.report.stdout.text().contains("outside secret"));
    assert!(run.audit.iter().any(|r| r.capability == "fs.read" && r.result.contains("hard links")), "{:#?}", run.audit);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steps_text_is_bounded_per_message_and_per_step() {
    let w = world().await;
    let limits = StepLimits { ui_text: 32 << 10, ..StepLimits::default() };
    let run = w.run_with("ui-flood", &probe_caps(), &probe_caps(), limits).await;
    assert_eq!(run.report.result, Ok(()));
    let events = run.ui.events.lock().unwrap().clone();
    let shown: usize = events.iter().map(String::len).sum();
    assert!(shown < 48 << 10, "{shown} bytes reached the UI for a budget of 32 KiB");
    assert!(events.iter().any(|e| e.contains("more bytes not shown")), "a long message is cut with a note");
    assert!(events.iter().any(|e| e.contains("its further messages are not shown")), "the operator is told the rest was dropped");
}

#[test]
fn a_module_over_the_size_limit_is_refused_before_compiling_and_the_operator_can_raise_it() {
    let sandbox = Sandbox::new(None).unwrap();
    // A 15 MB module once cost 121 s and 1.17 GB to compile; the default limit is 2 MiB.
    let huge = vec![0u8; 15 << 20];
    let Err(e) = sandbox.load("huge", &huge, &canup::manifest::STEP_API) else { panic!("a {} byte module loaded", huge.len()) };
    let e = e.to_string();
    assert!(e.contains("refused before compiling") && e.contains("module_kib") && e.contains(&StepLimits::default().module.to_string()), "{e}");
    let just_over = vec![0u8; StepLimits::default().module + 1];
    assert!(sandbox.load("over", &just_over, &canup::manifest::STEP_API).is_err_and(|e| e.to_string().contains("refused before compiling")));
    // Raised, the same bytes get to the compiler (which refuses them as no module at all).
    let raised = Sandbox::new(None).unwrap().with_max_module(16 << 20);
    let Err(e) = raised.load("huge", &huge, &canup::manifest::STEP_API) else { panic!("zeros compiled") };
    assert!(!e.to_string().contains("refused before compiling"), "{e}");
}

/// A compile that takes longer than `module_compile_seconds` is given up on: the probe
/// module takes well over a millisecond to compile.
#[test]
fn a_compile_past_its_time_limit_is_abandoned() {
    let wasm = std::fs::read(guest_wasm("probe")).unwrap();
    let hurried = Sandbox::new(None).unwrap().with_max_compile(Duration::from_millis(1));
    let Err(e) = hurried.load("probe", &wasm, &STEP_API) else { panic!("compiled within 1 ms") };
    assert!(e.to_string().contains("module_compile_seconds"), "{e}");
    assert!(Sandbox::new(None).unwrap().load("probe", &wasm, &STEP_API).is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_option_cannot_slip_through_a_star_pattern() {
    let w = world().await;
    // `rpm -q *` is declared and allowed; `--eval=%(…)` runs a shell as root in rpm 4.
    let run = w.hostile("rpm-eval", StepLimits::default(), "exec of /usr/bin/rpm with arguments").await;
    denied(&run, "exec");
}

/// A step that says a changing command only reads does not get it run in a dry run: read-only
/// is the operator's word.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_cannot_make_a_changing_command_a_query() {
    let w = world().await;
    let mut claims = probe_caps();
    for rule in claims.exec.iter_mut() {
        rule.readonly = true;
    }
    let before = w.sim.snapshot().unwrap();
    let run = w.run_mode("readonly-claim", &claims, &probe_caps(), StepLimits::default(), true).await;
    assert_eq!(run.report.result, Ok(()), "{:?}", run.report.stdout.text());
    assert!(w.sim.calls().unwrap().is_empty(), "the dry run ran a command: {:?}", w.sim.calls().unwrap());
    assert_eq!(w.sim.snapshot().unwrap(), before);
    assert_eq!(run.recorded, vec!["run: /usr/bin/systemctl daemon-reload".to_owned()], "listed as a change, not run as a query");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bash_function_exports_are_refused_even_when_declared() {
    let w = world().await;
    let run =
        w.hostile("bash-func", StepLimits::default(), "environment variable BASH_FUNC_systemctl%% for /usr/bin/systemctl is refused for every step").await;
    denied(&run, "exec");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encoded_separator_in_an_http_path_is_refused() {
    let w = world().await;
    let run = w.hostile("http-encoded-slash", StepLimits::default(), "encoded '/'").await;
    denied(&run, "http");
}

/// What the operator sees is what the step said, shown and not obeyed: every text from the
/// step reaches the UI with its control characters escaped; the audit keeps the original.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_characters_from_a_step_are_shown_escaped() {
    let w = world().await;
    let run = w.hostile("terminal-spoof", StepLimits::default(), "\\x1b[31mfailed\\x1b[0m").await;
    let events = run.ui.events.lock().unwrap().join("\n");
    for shown in [r"before\x1b[2K\x0d      ok (1 ms)", r"\x1b[1Ahalf", r"\x1b[2J\x1b[HApply this plan?", r"\u{9b}2Jdone"] {
        assert!(events.contains(shown), "expected {shown:?} in {events:?}");
    }
    assert!(!events.contains('\x1b') && !events.contains('\u{9b}'), "a control character reached the UI: {events:?}");
    assert!(run.report.stdout.text().contains('\x1b'), "the captured output keeps the step's bytes");
    assert!(run.report.stdout.display().contains(r"\x1b[1A\x1b[2Kout") && !run.report.stdout.display().contains('\x1b'));
    let Err(e) = &run.report.result else { panic!("the step failed") };
    assert!(!e.to_string().contains('\x1b'), "{e}");
    let confirm = run.audit.iter().find(|r| r.capability == "ui.confirm").expect("the question is audited");
    assert!(confirm.args["question"].as_str().unwrap().starts_with("\x1b[2J"), "the audit keeps the original: {:?}", confirm.args);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_infinite_loop_hits_the_cpu_limit() {
    let w = world().await;
    let limits = StepLimits { cpu: Duration::from_millis(300), wall: Duration::from_secs(60), ..StepLimits::default() };
    let run = w.hostile("infinite-loop", limits, "CPU time limit of 300ms").await;
    assert_eq!(run.report.result, Err(Stop::CpuTime(Duration::from_millis(300))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sleeping_and_waiting_do_not_count_as_cpu_time() {
    let w = world().await;
    let limits = StepLimits { cpu: Duration::from_millis(300), ..StepLimits::default() };
    let run = w.run_with("sleepy", &probe_caps(), &probe_caps(), limits).await;
    assert_eq!(run.report.result, Ok(()), "a step sleeping 1.2 s used a 300 ms CPU budget");
    assert!(run.report.duration >= Duration::from_millis(1200));
    // Waiting in a host call neither: the exec test's commands take longer than this budget
    // would allow if their time counted.
    let run = w.run_with("exec-timeout", &probe_caps(), &probe_caps(), StepLimits { cpu: Duration::from_millis(100), ..StepLimits::default() }).await;
    assert!(matches!(&run.report.result, Err(Stop::Failed(m)) if m.contains("ran past its time limit of 500ms")), "{:?}", run.report.result);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_bomb_hits_the_memory_limit() {
    let w = world().await;
    let limits = StepLimits { memory: 32 << 20, ..StepLimits::default() };
    let run = w.hostile("memory-bomb", limits, "over its limit of 33554432 bytes").await;
    assert!(matches!(run.report.result, Err(Stop::OutOfMemory { wanted, .. }) if wanted > 32 << 20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stdout_flood_is_bounded_and_does_not_kill_the_step() {
    let w = world().await;
    let limits = StepLimits { guest_output: 64 << 10, ..StepLimits::default() };
    let run = w.run_with("stdout-flood", &probe_caps(), &probe_caps(), limits).await;
    assert_eq!(run.report.result, Ok(()));
    assert_eq!(run.report.stdout.bytes.len(), 64 << 10);
    assert!(run.report.stdout.dropped > 10_000_000, "dropped {}", run.report.stdout.dropped);
    assert!(run.report.stdout.text().starts_with("flood line 000000"));
    assert_eq!(run.report.stderr.text(), "flood finished\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_output_beyond_the_bound_is_truncated() {
    let w = world().await;
    let mut limits = StepLimits::default();
    limits.exec.max_output = 100_000;
    let run = w.run_with("exec-flood", &probe_caps(), &probe_caps(), limits).await;
    assert_eq!(run.report.result, Ok(()), "{:?}", run.report.result);
    assert_eq!(run.report.stdout.text().trim(), "kept=100000 truncated=true");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undeclared_endpoint_is_denied() {
    let w = world().await;
    let run = w.hostile("undeclared-endpoint", StepLimits::default(), "GET / on endpoint internal-admin is not in the capabilities declared").await;
    denied(&run, "http");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_to_another_host_is_refused() {
    let w = world().await;
    let run = w.hostile("redirect-elsewhere", StepLimits::default(), "leads to another origin").await;
    denied(&run, "http");
    assert_eq!(w.servers.elsewhere_hits.load(Ordering::SeqCst), 0, "the other host was contacted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_response_body_is_refused() {
    let w = world().await;
    let mut limits = StepLimits::default();
    limits.http.max_response_body = 1 << 20;
    let run = w.hostile("big-body", limits, "response body of endpoint api exceeds the limit of 1048576 bytes").await;
    assert!(run.audit.iter().any(|r| r.capability == "http" && r.result.contains("exceeds")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_cannot_set_its_own_credentials() {
    let w = world().await;
    let run = w.hostile("auth-header", StepLimits::default(), "header Authorization on endpoint api is refused for every step").await;
    denied(&run, "http");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_wasi_filesystem_access_finds_nothing() {
    let w = world().await;
    let before = w.sim.snapshot().unwrap();
    let run = w.run("wasi-fs").await;
    assert_eq!(run.report.result, Ok(()), "{:?}", run.report.result);
    assert!(run.report.stdout.text().contains("all direct filesystem calls failed"));
    assert_eq!(w.sim.snapshot().unwrap(), before);
    assert!(!Path::new("/tmp/canup-wasi-pwned").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_wasi_sockets_are_refused() {
    let w = world().await;
    let run = w.run("wasi-socket").await;
    assert_eq!(run.report.result, Ok(()), "{:?}", run.report.result);
    assert!(run.report.stdout.text().contains("socket refused"), "{}", run.report.stdout.text());
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(w.servers.socket_hits.load(Ordering::SeqCst), 0, "the listener was reached");
}

fn hang_pids(w: &World) -> Vec<i32> {
    let text = std::fs::read_to_string(w.sim.path("/var/run/hang.pid")).unwrap_or_default();
    text.trim().parse().into_iter().collect()
}

async fn assert_gone(pids: &[i32]) {
    assert!(!pids.is_empty(), "the hanging program did not start");
    for _ in 0..50 {
        if pids.iter().all(|p| !process_alive(*p)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("processes {pids:?} survived");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_command_is_killed_with_its_process_group() {
    let w = world().await;
    let run = w.run("exec-timeout").await;
    let Err(Stop::Failed(msg)) = &run.report.result else { panic!("{:?}", run.report.result) };
    assert!(
        msg.contains("/usr/bin/hang ran past its time limit of 500ms, set by the timeout step exec-timeout gives this call; its process group was killed"),
        "{msg}"
    );
    assert_gone(&hang_pids(&w)).await;
}

/// A long command declared so: `/usr/bin/slow` takes 2 s; the limit of commands that declare
/// none stands in for the 600 s default at 1 s. Declared at 5 s it runs past that default and is
/// not killed, and the operator hears while it runs that it still does (time, limit, its last
/// line). Declared at 1 s, or capped at 1 s by the policy, it is killed, and the message names
/// the limit and the setting that raises it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_runs_within_its_declared_limit_and_is_killed_past_it_naming_the_setting() {
    let w = world().await;
    let limits = StepLimits {
        exec: canup::capabilities::exec::ExecLimits {
            default_timeout: Duration::from_secs(1),
            progress_every: Duration::from_millis(500),
            ..Default::default()
        },
        ..StepLimits::default()
    };
    let slow = |timeout_seconds: Option<u64>| {
        let mut caps = probe_caps();
        caps.exec.push(ExecRule { timeout_seconds, ..exec_rule("/usr/bin/slow", &[], &[]) });
        caps
    };
    let run = w.run_with("exec-slow", &slow(Some(5)), &slow(None), limits).await;
    assert_eq!(run.report.result, Ok(()), "declared 5 s, it ran 2 s, past the 1 s default");
    let events = run.ui.events.lock().unwrap().clone();
    let still: Vec<&String> = events.iter().filter(|e| e.contains("still running after")).collect();
    assert!(!still.is_empty(), "{events:#?}");
    assert!(still.iter().all(|e| e.contains("(limit 5s): /usr/bin/slow: migrat")), "{still:#?}");
    assert!(still[0].contains("migrating collection 1 of 2"), "its last line at the first report: {still:#?}");

    let run = w.run_with("exec-slow", &slow(Some(1)), &slow(None), limits).await;
    let Err(Stop::Failed(msg)) = &run.report.result else { panic!("{:?}", run.report.result) };
    assert!(
        msg.contains(
            "/usr/bin/slow ran past its time limit of 1s, set by the limit step exec-slow declares for this command (timeout_seconds in its step.toml)"
        ),
        "{msg}"
    );

    let run = w.run_with("exec-slow", &slow(Some(5)), &slow(Some(1)), limits).await;
    let Err(Stop::Failed(msg)) = &run.report.result else { panic!("{:?}", run.report.result) };
    assert!(
        msg.contains("ran past its time limit of 1s, set by the policy's cap for this command (timeout_seconds of its [[policy.exec]] rule for /usr/bin/slow"),
        "{msg}"
    );

    let run = w.run_with("exec-slow", &slow(None), &slow(None), limits).await;
    let Err(Stop::Failed(msg)) = &run.report.result else { panic!("{:?}", run.report.result) };
    assert!(msg.contains("ran past its time limit of 1s, set by [limits] exec_timeout_seconds in canup.toml (the step declares no limit"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wall_time_limit_stops_a_step_blocked_in_a_host_call() {
    let w = world().await;
    let limits = StepLimits { wall: Duration::from_secs(1), ..StepLimits::default() };
    let run = w.run_with("wall-time", &probe_caps(), &probe_caps(), limits).await;
    assert_eq!(run.report.result, Err(Stop::WallTime(Duration::from_secs(1))));
    assert_gone(&hang_pids(&w)).await;
}

/// A terminal that stopped reading (Ctrl-S, a pipe nobody drains) blocks the host's write
/// for `ui.log` on the runtime's thread; a hung network filesystem would do the same to an `fs`
/// call. The wall-time limit still ends the step, while the write is still blocked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wall_time_limit_fires_while_a_host_call_blocks_its_thread() {
    struct StuckTerminal {
        release: Mutex<std::sync::mpsc::Receiver<()>>,
        returned: std::sync::atomic::AtomicBool,
    }
    impl Ui for StuckTerminal {
        fn log(&self, _: &str, _: Level, _: &str) {
            let _ = self.release.lock().unwrap().recv_timeout(Duration::from_secs(30));
            self.returned.store(true, Ordering::SeqCst);
        }
        fn progress(&self, _: &str, _: u64, _: Option<u64>, _: &str) {}
        fn confirm(&self, _: &str, _: &str) -> bool {
            false
        }
        fn manual(&self, _: &str, _: &str) -> bool {
            false
        }
    }
    let w = world().await;
    let (release, stuck) = std::sync::mpsc::channel();
    let ui = Arc::new(StuckTerminal { release: Mutex::new(stuck), returned: Default::default() });
    let limits = StepLimits { wall: Duration::from_secs(1), ..StepLimits::default() };
    let (env, _) = w.env("allowed-ui", &probe_caps(), &probe_caps(), limits, false, ui.clone());
    let report = probe().0.run(&probe().1, env).await;
    assert!(!ui.returned.load(Ordering::SeqCst), "the report waited for the blocked host call to return");
    assert_eq!(report.result, Err(Stop::WallTime(Duration::from_secs(1))));
    release.send(()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_panic_is_reported_with_its_message() {
    let w = world().await;
    let run = w.hostile("panic", StepLimits::default(), "the step panicked: boom: the probe panicked on purpose").await;
    assert!(matches!(&run.report.result, Err(Stop::Panic(m)) if m.contains("src/lib.rs")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operators_policy_bounds_what_a_step_declared() {
    let w = world().await;
    let mut policy = probe_caps();
    policy.exec.retain(|r| r.program != "/usr/bin/rpm");
    let before = w.sim.snapshot().unwrap();
    let run = w.run_with("allowed-exec", &probe_caps(), &policy, StepLimits::default()).await;
    let Err(Stop::Failed(msg)) = &run.report.result else { panic!("{:?}", run.report.result) };
    assert!(msg.contains("exec of program /usr/bin/rpm is not allowed by the operator's policy (step allowed-exec)"), "{msg}");
    assert_eq!(w.sim.snapshot().unwrap(), before);
    assert!(w.sim.calls().unwrap().is_empty());
    denied(&run, "exec");
}

#[test]
fn a_module_built_for_a_newer_major_api_is_refused_before_instantiation() {
    let (sandbox, _) = probe();
    let wasm = std::fs::read(guest_wasm("newer-api")).unwrap();
    // Even when its manifest claims 1.0.0, the imports tell the truth.
    let Err(e) = sandbox.load("newer", &wasm, &STEP_API) else { panic!("loaded a 2.0 module") };
    assert!(matches!(e, SandboxError::ApiMismatch { .. }));
    assert_eq!(
        e.to_string(),
        format!("step newer: built for step API 2.0.0, this canup supports {STEP_API}; use a canup of the same major version and at least that minor")
    );
    let Err(e) = sandbox.load("newer", &wasm, &Version::new(2, 0, 0)) else { panic!("loaded a 2.0 module") };
    assert!(e.to_string().contains("built for step API 2.0.0"));
}

/// The component model would link a 1.3 module that calls nothing new (semver matching);
/// canup refuses it, whether its manifest says 1.3.0 or claims 1.0.0.
#[test]
fn a_module_built_for_a_newer_minor_api_is_refused_before_instantiation() {
    let (sandbox, _) = probe();
    let wasm = std::fs::read(guest_wasm("newer-minor")).unwrap();
    for declared in [Version::new(1, 3, 0), Version::new(1, 0, 0)] {
        let Err(e) = sandbox.load("newer", &wasm, &declared) else { panic!("loaded a 1.3 module declared {declared}") };
        assert_eq!(
            e.to_string(),
            format!("step newer: built for step API 1.3.0, this canup supports {STEP_API}; use a canup of the same major version and at least that minor")
        );
    }
}

/// A module built against the frozen 1.0 contract, before `create-dir` and `choose` existed,
/// runs unchanged on this 1.1 host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_built_for_api_1_0_runs_unchanged() {
    let w = world().await;
    let wasm = std::fs::read(guest_wasm("api-1-0")).unwrap();
    let loaded = probe().0.load("old", &wasm, &Version::new(1, 0, 0)).unwrap();
    assert_eq!(loaded.api, Version::new(1, 0, 0));
    let (env, audit) = w.env("old", &probe_caps(), &probe_caps(), StepLimits::default(), false, Arc::new(RecordingUi::default()));
    let report = probe().0.run(&loaded, env).await;
    assert_eq!(report.result, Ok(()), "{}", report.stderr.text());
    assert_eq!(report.stdout.text(), "api 1.0 step ran: Canopsis version 3.38.0\n");
    assert!(audit.records().iter().any(|r| r.capability == "fs.read" && r.decision == Decision::Allowed));
}

/// Contract 1.1 `fs.create-dir`: `mkdir -p` under the write rules, each new directory
/// audited with its mode and its parent's owner, listed (not made) by a dry run, taken away
/// by `restore-files`; outside the write rules, refused with nothing made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_dir_makes_missing_directories_under_the_write_rules_only() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let w = world().await;
    let dry = w.run_mode("create-dir", &probe_caps(), &probe_caps(), StepLimits::default(), true).await;
    assert_eq!(dry.report.result, Ok(()), "{:?}", dry.report);
    assert!(!w.sim.path("/opt/canopsis/etc/new.d").exists(), "a dry run made a directory");
    // The second create-dir finds the directory the first one listed: a dry run lists each
    // change once, as the real run makes it once.
    assert_eq!(
        dry.recorded,
        [
            "create directory /opt/canopsis/etc/new.d (mode 0750)",
            "create directory /opt/canopsis/etc/new.d/sub (mode 0750)",
            "write /opt/canopsis/etc/new.d/sub/x.conf (4 bytes):\n    x=1"
        ]
    );

    let run = w.run("create-dir").await;
    assert_eq!(run.report.result, Ok(()), "{:?}", run.report);
    let sub = w.sim.path("/opt/canopsis/etc/new.d/sub");
    let (meta, parent) = (std::fs::metadata(&sub).unwrap(), std::fs::metadata(w.sim.path("/opt/canopsis/etc")).unwrap());
    assert!(meta.is_dir());
    assert_eq!(meta.permissions().mode() & 0o777, 0o750);
    assert_eq!((meta.uid(), meta.gid()), (parent.uid(), parent.gid()));
    let made: Vec<&str> = run.audit.iter().filter(|r| r.capability == "fs.create-dir").map(|r| r.result.as_str()).collect();
    assert_eq!(made, ["created (mode 0750)", "created (mode 0750)", "exists"]);

    let restored = canup::upgrade::restore_files(&w.state, &Sysroot::new(w.sim.root()).unwrap(), "test-run").unwrap();
    assert!(restored.contains(&"removed directory /opt/canopsis/etc/new.d (created by the run)".to_owned()), "{restored:?}");
    assert!(!w.sim.path("/opt/canopsis/etc/new.d").exists());

    let run = w.hostile("create-dir-outside", StepLimits::default(), "creation of the directory /opt/canopsis/share is not in the capabilities declared").await;
    assert_eq!(denied(&run, "fs.create-dir").args["path"], "/opt/canopsis/share");
    assert!(!w.sim.path("/opt/canopsis/share").exists());
}

/// Contract 1.1 `ui.choose`: an optional action stays off when nobody answers (the default),
/// and the operator's `[answers]` switch it on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn choose_gives_the_default_unless_the_operator_answered() {
    let w = world().await;
    let run = w.run("choose").await;
    assert_eq!(run.report.stdout.text(), "chosen=0\n", "{:?}", run.report);
    let (mut env, audit) = w.env("choose", &probe_caps(), &probe_caps(), StepLimits::default(), false, Arc::new(RecordingUi::default()));
    env.answers = Arc::new([("choose".to_owned(), [("enable-x".to_owned(), "yes".to_owned())].into())].into());
    let report = probe().0.run(&probe().1, env).await;
    assert_eq!(report.stdout.text(), "chosen=1\n", "{report:?}");
    assert!(audit.records().iter().any(|r| r.capability == "ui.choose" && r.result == "yes (canup.toml [answers])"));
    let (mut env, _) = w.env("choose", &probe_caps(), &probe_caps(), StepLimits::default(), false, Arc::new(RecordingUi::default()));
    env.answers = Arc::new([("choose".to_owned(), [("enable-x".to_owned(), "maybe".to_owned())].into())].into());
    let report = probe().0.run(&probe().1, env).await;
    let Err(Stop::Failed(message)) = &report.result else { panic!("{report:?}") };
    assert!(message.contains("canup.toml [answers.\"choose\"] gives \"maybe\", which is not one of: no, yes"), "{message}");
}

#[test]
fn a_broken_module_is_refused() {
    let (sandbox, _) = probe();
    let Err(e) = sandbox.load("broken", b"\0asm\x0d\0\x01\0garbage", &STEP_API) else { panic!("loaded garbage") };
    assert!(e.to_string().starts_with("step broken: the module is not a valid step component"), "{e}");
}

#[test]
fn compiled_components_are_cached_and_a_tampered_cache_is_not_loaded() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("compiled");
    let wasm = std::fs::read(guest_wasm("example-step")).unwrap();
    let first = Sandbox::new(Some(&cache)).unwrap().load("example", &wasm, &STEP_API).unwrap();
    assert!(!first.from_cache);
    let second = Sandbox::new(Some(&cache)).unwrap().load("example", &wasm, &STEP_API).unwrap();
    assert!(second.from_cache);
    let entry = std::fs::read_dir(&cache).unwrap().next().unwrap().unwrap().path();
    assert!(entry.file_name().unwrap().to_string_lossy().starts_with(&first.module_sha256));
    // Writable by others: treated as untrusted native code.
    std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(0o666)).unwrap();
    let Err(e) = Sandbox::new(Some(&cache)).unwrap().load("example", &wasm, &STEP_API) else { panic!("loaded a world-writable cache entry") };
    assert!(e.to_string().contains("writable by group or others"), "{e}");
    // Corrupt content: ignored and recompiled.
    std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&entry, b"not native code").unwrap();
    let again = Sandbox::new(Some(&cache)).unwrap().load("example", &wasm, &STEP_API).unwrap();
    assert!(!again.from_cache);
    assert!(Sandbox::new(Some(&cache)).unwrap().load("example", &wasm, &STEP_API).unwrap().from_cache);
}

// ---- file races, planted names, host time, audit size, new files ----

/// A thread swaps `/opt/canopsis/etc/race` (a directory) with a symlink to a directory outside
/// the sysroot, atomically and as fast as it can, while the step reads and writes a file in it
/// 10,000 times: no read sees the outside file, no write reaches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_swapped_for_a_symlink_never_lets_a_read_or_write_out() {
    use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
    use std::sync::atomic::AtomicBool;
    let w = world().await;
    let race = w.sim.path("/opt/canopsis/etc/race");
    std::fs::create_dir_all(&race).unwrap();
    std::fs::write(race.join("race.conf"), "inside\n").unwrap();
    let far = w.outside.join("race");
    std::fs::create_dir_all(&far).unwrap();
    std::fs::write(far.join("race.conf"), "OUTSIDE secret\n").unwrap();
    let swap = w.sim.path("/opt/canopsis/etc/race.swap");
    std::os::unix::fs::symlink(&far, &swap).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = std::thread::spawn({
        let stop = stop.clone();
        move || {
            let mut swaps = 0u64;
            while !stop.load(Ordering::Relaxed) {
                renameat2(AT_FDCWD, &race, AT_FDCWD, &swap, RenameFlags::RENAME_EXCHANGE).unwrap();
                swaps += 1;
            }
            swaps
        }
    });
    let run = w.run("race").await;
    stop.store(true, Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    assert_eq!(run.report.result, Ok(()), "stderr: {}", run.report.stderr.text());
    let out = run.report.stdout.text();
    assert!(out.contains(" outside=0 "), "a read returned the outside file: {out}");
    assert_eq!(std::fs::read_to_string(far.join("race.conf")).unwrap(), "OUTSIDE secret\n", "a write landed outside");
    assert_eq!(std::fs::read_dir(&far).unwrap().count(), 1, "a temporary file was left outside");
    // The race was real: the directory moved thousands of times during the calls, and calls
    // both succeeded and were refused.
    let count =
        |key: &str| -> u64 { out.split_whitespace().find_map(|kv| kv.strip_prefix(&format!("{key}="))).and_then(|v| v.trim().parse().ok()).unwrap_or(0) };
    assert!(swaps > 1000, "only {swaps} swaps");
    assert!(count("inside") > 0 && count("written") > 0, "{out}");
    assert!(count("read-errors") + count("write-errors") > 0, "no call met the swap: {out}");
}

/// Symlinks planted under the names the temporary file of a write used to take
/// (`.NAME.canup-PID-N`): the step's writes land in the file it named, the outside file is
/// untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planted_temporary_name_never_redirects_a_write() {
    let w = world().await;
    let etc = w.sim.path("/opt/canopsis/etc");
    for n in 0..200 {
        std::os::unix::fs::symlink(w.outside.join("secret"), etc.join(format!(".old.conf.canup-{}-{n}", std::process::id()))).unwrap();
    }
    let run = w.run("rewrite").await;
    assert_eq!(run.report.result, Ok(()), "stderr: {}", run.report.stderr.text());
    assert_eq!(std::fs::read_to_string(w.outside.join("secret")).unwrap(), "outside secret\n");
    assert_eq!(std::fs::read_to_string(etc.join("old.conf")).unwrap(), "old=19\n");
    assert!(std::fs::symlink_metadata(etc.join("old.conf")).unwrap().file_type().is_file());
}

/// A host call that takes the host long (reading 512 MiB, a sparse file) counts against the
/// step's CPU budget: the loop is stopped by the CPU limit of 1 s, not by the wall-time limit
/// of 10 s. Charged as one tick per call, as host calls used to be, it ran until the latter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_the_host_spends_on_a_steps_calls_counts_against_its_cpu_budget() {
    let w = world().await;
    std::fs::File::create(w.sim.path("/opt/canopsis/etc/huge")).unwrap().set_len(512 << 20).unwrap();
    let limits = StepLimits { cpu: Duration::from_secs(1), wall: Duration::from_secs(10), fs_read: 600 << 20, memory: 2 << 30, ..StepLimits::default() };
    let run = w.run_with("read-forever", &probe_caps(), &probe_caps(), limits).await;
    assert_eq!(run.report.result, Err(Stop::CpuTime(Duration::from_secs(1))), "{} reads", run.audit.len());
}

/// 200 arguments of 100 KB: refused (over `exec_args_kib`), and its audit record is a few
/// hundred KB, not 20 MB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_command_leaves_a_bounded_audit_record() {
    let w = world().await;
    w.hostile("long-args", StepLimits::default(), "exec_args_kib").await;
    let log = std::fs::read_to_string(w.state.join("audit.jsonl")).unwrap();
    let line = log.lines().find(|l| l.contains(r#""capability":"exec""#)).unwrap();
    assert!(line.len() < 400 << 10, "a record of {} bytes", line.len());
    assert!(line.contains("more items") && line.contains("more bytes"), "the record says what it left out");
}

/// With the shipped policy, a step may change the existing drop-ins but not add one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_systemd_drop_in_is_refused_by_the_shipped_policy() {
    let w = world().await;
    let units = w.sim.path("/etc/systemd/system/canopsis-engine-go@.service.d");
    std::fs::create_dir_all(&units).unwrap();
    std::fs::write(units.join("che.conf"), "[Service]\n").unwrap();
    let mut declared = probe_caps();
    declared.fs.write.push("/etc/systemd/system/canopsis*/*.conf".into());
    declared.fs.create.push("/etc/systemd/system/canopsis*/*.conf".into());
    let policy = shipped_policy();
    let before = w.sim.snapshot().unwrap();
    let run = w.run_with("new-drop-in", &declared, &policy, StepLimits::default()).await;
    let e = run.report.result.unwrap_err().to_string();
    assert!(
        e.contains("creation of /etc/systemd/system/canopsis-engine-go@.service.d/zz-canup.conf (a new file) is not allowed by the operator's policy"),
        "{e}"
    );
    assert_eq!(w.sim.snapshot().unwrap(), before);
    assert!(!units.join("zz-canup.conf").exists());
}

// ---- containment: what a signed step may write is what it may run ----

use canup_tests::shipped_policy;

/// N1: a step may rewrite the engines' drop-ins and units under the shipped policy, and so
/// could have made systemd run a root command. Their content is judged: a `+` command, a
/// program that is not Canopsis's, a lost `User=` are refused and nothing changes; what the
/// published steps write passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_or_drop_in_cannot_get_a_root_command_under_the_shipped_policy() {
    let w = world().await;
    let dropins = w.sim.path("/etc/systemd/system/canopsis-engine-go@.service.d");
    std::fs::create_dir_all(&dropins).unwrap();
    std::fs::write(dropins.join("che.conf"), "[Service]\nExecStart=\nExecStart=/usr/bin/env /opt/canopsis/bin/engine-che -alwaysFlushEntities\n").unwrap();
    w.sim
        .write(
            "/etc/systemd/system/canopsis-engine-go@engine-che.service",
            "[Service]\nUser=canopsis\nGroup=canopsis\nExecStart=/usr/bin/env /opt/canopsis/bin/%i\n",
        )
        .unwrap();
    let mut declared = probe_caps();
    declared.fs.read.push("/etc/systemd/system/**".into());
    declared.fs.write.extend(["/etc/systemd/system/canopsis*/*.conf".into(), "/etc/systemd/system/canopsis*.service".into()]);
    let policy = shipped_policy();
    for (step, expected) in [
        ("unit-root", "ExecStartPre=+/bin/sh -c 'id > /pwned' sets the directive ExecStartPre, not among [policy.units] directives"),
        ("unit-identity", "changes which user or group the service runs as"),
    ] {
        let before = w.sim.snapshot().unwrap();
        let run = w.run_with(step, &declared, &policy, StepLimits::default()).await;
        let e = run.report.result.clone().unwrap_err().to_string();
        assert!(e.contains(expected) && e.contains("systemd unit file"), "{step}: {e}");
        assert_eq!(w.sim.snapshot().unwrap(), before, "{step} changed the host");
        denied(&run, "fs.write");
    }
    // An ExecStart line with the `+` prefix is refused as well, though ExecStart is allowed.
    let mut plus = policy.clone();
    plus.units.directives.push("ExecStartPre".into());
    let run = w.run_with("unit-root", &declared, &plus, StepLimits::default()).await;
    assert!(run.report.result.unwrap_err().to_string().contains("the prefix '+'"));
    let run = w.run_with("unit-allowed", &declared, &policy, StepLimits::default()).await;
    assert_eq!(run.report.result, Ok(()));
    assert!(std::fs::read_to_string(dropins.join("che.conf")).unwrap().contains("/opt/canopsis/bin/engine-che -publishQueue"));
}

/// A dry run's listing and a command's arguments are bounded: 300 listings of 100 KB stop at
/// the step's text budget, and a 20 MB argument is refused before anything keeps it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_listing_and_a_commands_arguments_are_bounded() {
    let w = world().await;
    let run = w.run_mode("dry-run-flood", &probe_caps(), &probe_caps(), StepLimits::default(), true).await;
    let e = run.report.result.unwrap_err().to_string();
    assert!(e.contains("ui_text_kib") && e.contains("dry run"), "{e}");
    let listed: usize = run.recorded.iter().map(String::len).sum();
    assert!(listed <= StepLimits::default().ui_text, "{listed} bytes listed");
    assert!(run.recorded.iter().all(|l| l.contains("more bytes not shown")), "each argument is cut with a count");
    let run = w.hostile("huge-arg", StepLimits::default(), "exec_args_kib").await;
    assert!(run.audit.iter().all(|r| r.args.to_string().len() < 64 << 10));
}

/// A step's error of 50 MB reaches the operator and the journal as a few kilobytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_error_is_cut_with_a_count() {
    let w = world().await;
    let run = w.run("huge-error").await;
    let e = run.report.result.unwrap_err().to_string();
    assert!(e.len() < 16 << 10 && e.contains("more bytes not shown"), "{} bytes", e.len());
}

/// 64 options of 1 MB: refused, and neither the terminal nor the audit gets them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_choose_of_64_megabytes_is_refused() {
    let w = world().await;
    let run = w.hostile("choose-flood", StepLimits::default(), "over 200").await;
    let shown: usize = run.ui.events.lock().unwrap().iter().map(String::len).sum();
    assert!(shown < 64 << 10, "{shown} bytes shown");
    let log = std::fs::read_to_string(w.state.join("audit.jsonl")).unwrap();
    assert!(log.len() < 256 << 10, "an audit of {} bytes", log.len());
}

/// What a step pipes to a program is code for it (`runProgram` for mongo): only the release's
/// signed data, named in the listing and the audit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commands_input_is_signed_release_data_or_nothing() {
    let w = world().await;
    let run = w.hostile("stdin-script", StepLimits::default(), "signed data files of release 3.40.0").await;
    denied(&run, "exec");
    let script = b"db.default_rights.update({'_id': 'root'}, {$rename: {shadowpass: 'shadowpasswd'}});".to_vec();
    for dry_run in [true, false] {
        let (mut env, audit) = w.env("stdin-data", &probe_caps(), &probe_caps(), StepLimits::default(), dry_run, Arc::new(RecordingUi::default()));
        env.data = Arc::new([("rename.js".to_owned(), script.clone())].into());
        let recorded = env.recorded.clone();
        let report = probe().0.run(&probe().1, env).await;
        assert_eq!(report.result, Ok(()), "dry run {dry_run}");
        let record = audit.records().into_iter().find(|r| r.capability == "exec").unwrap();
        assert_eq!(record.args["stdin"]["data"], "rename.js");
        if dry_run {
            let listed = recorded.lines().join("\n");
            assert!(listed.contains("< release data rename.js") && listed.contains("$rename"), "{listed}");
        }
    }
}

/// A working directory where anyone may leave a file, and a package named as a file: yum
/// would install what a local user planted. Refused under the shipped policy; yum never runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planted_package_file_and_a_world_writable_directory_are_refused() {
    let w = world().await;
    w.sim.write("/tmp/canopsis-core-24.04.3.rpm", "planted by a local user").unwrap();
    w.hostile("cwd-tmp", StepLimits::default(), "working directory /tmp").await;
    let mut declared = probe_caps();
    declared.exec.push(exec_rule("/usr/bin/yum", &["update", "-y", "canopsis*-[0-9]*..."], &[]));
    let before = w.sim.snapshot().unwrap();
    let run = w.run_with("planted-rpm", &declared, &shipped_policy(), StepLimits::default()).await;
    let e = run.report.result.unwrap_err().to_string();
    assert!(e.contains("canopsis-core-24.04.3.rpm") && e.contains("local package file"), "{e}");
    assert_eq!(w.sim.snapshot().unwrap(), before);
    assert!(w.sim.calls().unwrap().is_empty());
}

/// yum is Python: no rule grants PYTHONWARNINGS or BROWSER, not even a policy's `*`, which no
/// longer loads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pythons_variables_never_reach_yum() {
    let w = world().await;
    let mut declared = probe_caps();
    declared.exec.push(exec_rule("/usr/bin/yum", &["update", "-y", "canopsis*-[0-9]*..."], &[]));
    let before = w.sim.snapshot().unwrap();
    let run = w.run_with("python-env", &declared, &shipped_policy(), StepLimits::default()).await;
    let e = run.report.result.unwrap_err().to_string();
    assert!(e.contains("PYTHONWARNINGS") && e.contains("refused for every step"), "{e}");
    assert_eq!(w.sim.snapshot().unwrap(), before);
    assert!(w.sim.calls().unwrap().is_empty());
    let star = "[policy]\n[[policy.exec]]\nprogram = \"/usr/bin/yum\"\nargs = [\"**\"]\nenv = [\"*\"]\n";
    let e = canup::config::Config::parse(star, "canup.toml").unwrap_err().to_string();
    assert!(e.contains("canup.toml") && e.contains("exact name"), "{e}");
}

/// `restore-files` walks each path on descriptors: after a local user swapped
/// /opt/canopsis/etc for a symbolic link to a directory of theirs, nothing is written there;
/// the restore stops naming the link, and once the directory is back it finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_does_not_follow_a_swapped_directory() {
    let w = world().await;
    let run = w.run("rewrite").await;
    assert_eq!(run.report.result, Ok(()));
    assert_eq!(w.sim.read("/opt/canopsis/etc/old.conf").unwrap(), "old=19\n");
    let etc = w.sim.path("/opt/canopsis/etc");
    let moved = w.sim.path("/opt/canopsis/etc.real");
    std::fs::rename(&etc, &moved).unwrap();
    std::os::unix::fs::symlink(&w.outside, &etc).unwrap();
    let sysroot = Sysroot::new(w.sim.root()).unwrap();
    let e = canup::restore::restore(&w.state, &sysroot, "test-run").unwrap_err().to_string();
    assert!(e.contains("/opt/canopsis/etc/old.conf") && (e.contains("symbolic link") || e.contains("outside the sysroot")), "{e}");
    assert_eq!(
        std::fs::read_dir(&w.outside).unwrap().count(),
        1,
        "a file was written outside: {:?}",
        std::fs::read_dir(&w.outside).unwrap().collect::<Vec<_>>()
    );
    std::fs::remove_file(&etc).unwrap();
    std::fs::rename(&moved, &etc).unwrap();
    let done = canup::restore::restore(&w.state, &sysroot, "test-run").unwrap();
    assert!(done.iter().any(|l| l == "restored /opt/canopsis/etc/old.conf"), "{done:?}");
    assert_eq!(w.sim.read("/opt/canopsis/etc/old.conf").unwrap(), "old=1\n");
}

/// A Compose project as the content check reads it: the files of one reference set.
struct Files(Vec<(String, String)>);

impl canup::capabilities::content::Project for Files {
    fn read(&self, logical: &Path) -> Option<Vec<u8>> {
        let name = logical.file_name()?.to_string_lossy().into_owned();
        self.0.iter().find(|(n, _)| *n == name).map(|(_, t)| t.clone().into_bytes())
    }
    fn list(&self, _: &Path) -> Vec<String> {
        self.0.iter().map(|(n, _)| n.clone()).collect()
    }
}

/// The shipped `[policy.compose]` admits every reference set the vendor published (every
/// release and edition of facts/compose.toml, written whole over an empty project), so that
/// the rules bound steps, not the vendor's own files.
#[test]
fn every_reference_compose_set_passes_the_shipped_compose_rules() {
    let facts = canopsis_facts::compose::ComposeFacts::embedded().unwrap();
    let table: toml::Table = toml::from_str(canopsis_facts::CANOPSIS_TOML).unwrap();
    let releases: Vec<String> =
        table["releases"].as_table().unwrap().values().filter_map(|v| v.as_array()).flatten().filter_map(|v| v.as_str().map(str::to_owned)).collect();
    assert!(releases.len() > 80, "{} releases", releases.len());
    let grant = Grant::new("reference", &CapabilitySet::default(), &shipped_policy()).unwrap();
    let mut checked = 0;
    for release in &releases {
        for edition in ["core", "cat"] {
            let Ok(reference) = facts.reference(release, edition) else { continue };
            let project = Files(reference.files.clone());
            for (name, text) in &reference.files {
                let path = PathBuf::from(format!("/opt/canopsis/docker/{name}"));
                grant.check_content(&path, None, Some(text.as_bytes()), &project).unwrap_or_else(|e| panic!("{release} {edition} {name}: {e}"));
                checked += 1;
            }
        }
    }
    assert!(checked > 300, "{checked} files checked");
}

/// N2: under the shipped policy a step may rewrite docker-compose.yml and .env and run
/// `docker compose up -d`. A privileged service with `/` mounted, an image from another
/// registry (directly or through `.env`'s DOCKER_REPOSITORY) are refused, nothing changes;
/// the reference's own change between two releases passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compose_change_cannot_get_a_root_container_under_the_shipped_policy() {
    let w = world().await;
    let facts = canopsis_facts::compose::ComposeFacts::embedded().unwrap();
    let (old, new) = (facts.reference("24.04.2", "core").unwrap(), facts.reference("24.04.3", "core").unwrap());
    let file = |r: &canopsis_facts::compose::Reference, name: &str| r.files.iter().find(|(n, _)| n == name).unwrap().1.clone();
    let project = Files(old.files.clone());
    let compose = PathBuf::from("/opt/canopsis/docker/docker-compose.yml");
    let grant = Grant::new("compose", &CapabilitySet::default(), &shipped_policy()).unwrap();
    let before = file(&old, "docker-compose.yml");
    grant.check_content(&compose, Some(before.as_bytes()), Some(file(&new, "docker-compose.yml").as_bytes()), &project).unwrap();
    let with_service = before.replacen("services:\n", "services:\n  rooted:\n    image: alpine:latest\n    privileged: true\n    volumes: [\"/:/host\"]\n", 1);
    assert_ne!(with_service, before);
    let e = grant.check_content(&compose, Some(before.as_bytes()), Some(with_service.as_bytes()), &project).unwrap_err().to_string();
    assert!(e.contains("service rooted: privileged"), "{e}");
    let mounted = before.replacen("services:\n", "services:\n  rooted:\n    image: alpine:latest\n    volumes: [\"/:/host\"]\n", 1);
    let e = grant.check_content(&compose, Some(before.as_bytes()), Some(mounted.as_bytes()), &project).unwrap_err().to_string();
    assert!(e.contains("the host path / is mounted"), "{e}");
    let env = file(&old, ".env");
    let evil = env.replace("DOCKER_REPOSITORY=docker.canopsis.net/docker/", "DOCKER_REPOSITORY=evil.example/");
    assert_ne!(evil, env);
    let e = grant.check_content(Path::new("/opt/canopsis/docker/.env"), Some(env.as_bytes()), Some(evil.as_bytes()), &project).unwrap_err().to_string();
    assert!(e.contains("evil.example/") && e.contains("not among [policy.compose] images"), "{e}");
    // Through a step: the write is refused and the project is left as it was.
    w.sim.write("/opt/canopsis/docker/docker-compose.yml", &before).unwrap();
    w.sim.write("/opt/canopsis/docker/.env", &env).unwrap();
    let mut declared = probe_caps();
    declared.fs.read.push("/opt/canopsis/docker/**".into());
    declared.fs.write.push("/opt/canopsis/docker/docker-compose.yml".into());
    let snapshot = w.sim.snapshot().unwrap();
    let run = w.run_with("compose-root", &declared, &shipped_policy(), StepLimits::default()).await;
    let e = run.report.result.unwrap_err().to_string();
    assert!(e.contains("service rooted: privileged"), "{e}");
    assert_eq!(w.sim.snapshot().unwrap(), snapshot);
}

/// The threat model (`docs/threat-model.md`) names every grant of the shipped policy, rule by
/// rule: each program, each path rule, each endpoint, each content rule value. A rule added to
/// host/dist/policy.toml without its line in the threat model fails here.
#[test]
fn the_threat_model_names_every_rule_of_the_shipped_policy() {
    let page = std::fs::read_to_string(canup_tests::workspace_dir().join("docs/threat-model.md")).unwrap();
    let start = page.find("What a signed step can make root do under the shipped policy").expect("the threat model's list of grants");
    let section = &page[start..start + page[start..].find("\n## ").unwrap_or(page.len() - start)];
    let policy = shipped_policy();
    let mut missing = Vec::new();
    let mut want = |what: String, shown: &str| {
        if !section.contains(shown) {
            missing.push(what);
        }
    };
    for rule in &policy.exec {
        let name = rule.program.rsplit('/').next().unwrap();
        want(format!("program {}", rule.program), name);
        for arg in rule.args.iter().filter(|a| a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') && !a.starts_with('-')) {
            want(format!("{name} {arg}"), arg);
        }
    }
    for h in &policy.http {
        want(format!("endpoint {}", h.endpoint), &format!("`{}`", h.endpoint));
        for m in &h.methods {
            want(format!("{m} on {}", h.endpoint), m);
        }
    }
    for d in &policy.database {
        want(format!("database endpoint {}", d.endpoint), &format!("`{}`", d.endpoint));
    }
    for p in &policy.units.programs {
        want(format!("unit program {p}"), p);
    }
    for d in &policy.units.directives {
        want(format!("unit directive {d}"), &format!("`{d}=`"));
    }
    for m in &policy.compose.host_mounts {
        want(format!("host mount {m}"), m);
    }
    let created: Vec<String> = policy.fs.create.iter().filter_map(|p| p.rsplit('/').next().map(str::to_owned)).filter(|n| !n.contains('*')).collect();
    for name in created.iter().filter(|n| *n != ".env") {
        want(format!("created file {name}"), name);
    }
    assert!(missing.is_empty(), "the threat model does not name: {missing:?}");
}

/// A policy that names a program reaching the network from its own arguments does not load:
/// `redis-cli -u redis://*/11 FLUSHDB` once matched `redis://h/0/11` and flushed database 0 of
/// another host; `mongo mongodb://*` read `runProgram` on its input. The database endpoints
/// take their URL from canup.toml or go-engines-vars.conf, never from a step.
#[test]
fn a_policy_naming_a_network_client_does_not_load() {
    for (program, args) in
        [("/usr/bin/redis-cli", r#"["-u", "redis://*/11", "FLUSHDB"]"#), ("/usr/bin/mongo", r#"["mongodb://*"]"#), ("/usr/bin/psql", r#"["**"]"#)]
    {
        let text = format!("[[policy.exec]]\nprogram = {program:?}\nargs = {args}\n");
        let e = canup::config::Config::parse(&text, "/etc/canup/canup.toml").unwrap_err().to_string();
        assert!(e.contains("/etc/canup/canup.toml") && e.contains(program) && e.contains("database endpoint"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("policy.d")).unwrap();
        std::fs::write(dir.path().join("policy.d/review.toml"), &text).unwrap();
        let e = canup::policy::read_sources(&dir.path().join("none.toml"), &dir.path().join("policy.d")).unwrap_err().to_string();
        assert!(e.contains("review.toml") && e.contains(program), "{e}");
    }
}
