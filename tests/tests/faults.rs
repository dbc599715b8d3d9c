//! Faults in the middle of an upgrade, through the real `canup` binary: each gets a clear
//! error, loses nothing, and a re-run finishes the job.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use canup_tests::canopsis_api::CanopsisApi;
use canup_tests::rabbitmq::Admin;
use canup_tests::repo_server::{Control, Fault, serve_repo};
use canup_tests::simhost::{Edition, Method, SimHost, Spec};
use canup_tests::{OPERATOR_POLICY, canup_bin, publish_steps, target_dir};

/// The published repository and its (development) signing key.
fn published() -> &'static (PathBuf, PathBuf, tempfile::TempDir) {
    static REPO: OnceLock<(PathBuf, PathBuf, tempfile::TempDir)> = OnceLock::new();
    REPO.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        let key = publish_steps(&canup_bin(), &repo, &target_dir().join("dev-keys")).unwrap();
        (repo, key, dir)
    })
}

fn repository() -> &'static PathBuf {
    &published().0
}

struct Host {
    dir: PathBuf,
    sim: SimHost,
    config: PathBuf,
    _api: CanopsisApi,
}

/// A simulated host whose canup.toml names `repo_url` and `rabbitmq` (the management URL).
async fn host(dir: &Path, version: &str, repo_url: &str, rabbitmq: &str, state: &Path) -> Host {
    Admin::new().setup_canopsis_once().await.unwrap();
    Admin::new().bind_che().await.unwrap();
    let sim = SimHost::create(
        &dir.join("root"),
        &Spec { version: version.into(), edition: Edition::Cat, method: Method::Packages, ..Spec::default() },
        &canup_tests::sim_bin(),
    )
    .unwrap();
    let api = CanopsisApi::serve(sim.root().to_path_buf()).await;
    let config = dir.join("canup.toml");
    // The full-disk test's state directory is a 96 MiB tmpfs: the backups' default reserve
    // (256 MiB kept free) would refuse every plan there before the fault it is about.
    let policy = format!("{OPERATOR_POLICY}\n[backup]\ndatabases = \"never\"\nreserve_mib = 0\n");
    canup_tests::write_site_config(&config, repo_url, repository(), state, &policy, &api).unwrap();
    let h = Host { dir: dir.to_path_buf(), sim, config, _api: api };
    h.set_rabbitmq(rabbitmq);
    h
}

impl Host {
    fn apply(&self) -> Command {
        let mut c = Command::new(canup_bin());
        c.arg("--config").arg(&self.config).arg("--sysroot").arg(self.sim.root()).args(["apply", "--to", "3.40.0", "--yes", "--accept-manual"]);
        c.stdin(Stdio::null());
        c
    }

    /// Points the rabbitmq endpoint somewhere else.
    fn set_rabbitmq(&self, url: &str) {
        let text = std::fs::read_to_string(&self.config).unwrap();
        let start = text.find("[endpoints.rabbitmq]\nurl = \"").unwrap() + "[endpoints.rabbitmq]\nurl = \"".len();
        let end = start + text[start..].find('"').unwrap();
        std::fs::write(&self.config, format!("{}{url}{}", &text[..start], &text[end..])).unwrap();
    }

    fn webserver_lines(&self) -> usize {
        self.sim.read("/opt/canopsis/etc/webserver.conf").unwrap().lines().filter(|l| l.starts_with("canopsis.webcore.services.metaalarmrule")).count()
    }
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Faults that share the broker or the repository run one at a time.
static ONE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_repository_is_waited_for_and_a_broken_one_stops_before_anything_runs() {
    let _one = ONE.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let control = Control::default();
    let url = serve_repo(repository().clone(), control.clone()).await;

    // Every answer 500: after its retries canup names the repository and the status; nothing ran.
    control.fault("metadata/timestamp.json", Fault::Error500Always);
    let h = host(&dir.path().join("broken"), "3.38.0", &url, canup_tests::rabbitmq::MANAGEMENT, &dir.path().join("broken/state")).await;
    let before = h.sim.snapshot().unwrap();
    let out = h.apply().output().unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(text(&out).contains(&format!("the release repository at {url} failed verification")) && text(&out).contains("HTTP 500"), "{}", text(&out));
    assert!(control.hits("metadata/timestamp.json") >= 2, "it retried");
    assert_eq!(h.sim.snapshot().unwrap(), before, "nothing ran");

    // A server that answers slowly, and one 500 on the way: the run completes.
    control.fault("metadata/timestamp.json", Fault::Delay(Duration::from_millis(1500)));
    control.fault("index.json", Fault::Error500Once);
    let h = host(&dir.path().join("slow"), "3.38.0", &url, canup_tests::rabbitmq::MANAGEMENT, &dir.path().join("slow/state")).await;
    let t = Instant::now();
    let out = h.apply().output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(t.elapsed() >= Duration::from_millis(1500));
    assert_eq!(h.sim.read("/opt/canopsis/VERSION.txt").unwrap(), "Canopsis version 3.40.0\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_stopped_during_verify_stops_there_and_a_rerun_finishes_without_redoing_the_upgrade() {
    let _one = ONE.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let url = serve_repo(repository().clone(), Control::default()).await;
    // A broker of this test's own beside the shared one, which the other tests keep using.
    let broker = tokio::task::spawn_blocking(|| canup_tests::rabbitmq::start_broker("canup-fault", 5673, 15673)).await.unwrap().unwrap();
    let admin = Admin::at(&broker.management_url());
    admin.setup_canopsis().await.unwrap();
    // A backlog nobody consumes: the drain step of the verify phase waits on it.
    admin.publish("Engine_axe", 5).await.unwrap();
    admin.wait_for_messages("Engine_axe", 5).await.unwrap();
    let h = host(dir.path(), "3.39.0", &url, &broker.management_url(), &dir.path().join("state")).await;
    let log = dir.path().join("apply.log");
    let mut child = h.apply().stdout(std::fs::File::create(&log).unwrap()).stderr(std::fs::File::options().append(true).open(&log).unwrap()).spawn().unwrap();
    let journal = dir.path().join("state/journal.jsonl");
    let start = Instant::now();
    let drain_started = || {
        std::fs::read_to_string(&journal).unwrap_or_default().lines().any(|l| l.contains(r#""event":"step-started""#) && l.contains(r#""step":"drain/queues""#))
    };
    while !drain_started() {
        assert!(child.try_wait().unwrap().is_none(), "apply ended before the drain: {}", std::fs::read_to_string(&log).unwrap());
        assert!(start.elapsed() < Duration::from_secs(120), "the drain never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The step has polled (it polls at once, then every second) and waits: the broker stops.
    std::thread::sleep(Duration::from_millis(300));
    assert!(child.try_wait().unwrap().is_none(), "the drain waits for the backlog: {}", std::fs::read_to_string(&log).unwrap());
    broker.stop_app().unwrap();
    let status = child.wait().unwrap();
    let said = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(1), "{said}");
    assert!(said.contains("step drain/queues failed") && said.contains("endpoint rabbitmq") && said.contains("Connection refused"), "{said}");
    assert!(said.contains("check that RabbitMQ is running"), "{said}");
    assert!(said.contains("run `canup apply` again to resume"), "{said}");
    assert_eq!(h.sim.read("/opt/canopsis/VERSION.txt").unwrap(), "Canopsis version 3.40.0\n", "the upgrade itself was done");
    let calls = h.sim.calls().unwrap().len();

    // The broker is back and the engines have consumed the backlog: the re-run resumes at the
    // drain; nothing before it runs again.
    broker.start_app().unwrap();
    admin.purge().await.unwrap();
    admin.wait_for_messages("Engine_axe", 0).await.unwrap();
    let out = h.apply().output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("resuming an interrupted run"), "{}", text(&out));
    let again: Vec<String> = h.sim.calls().unwrap()[calls..].iter().filter(|c| c.program != "rpm").map(|c| c.line()).collect();
    assert!(again.is_empty(), "the resumed run repeated {again:?}");
    assert_eq!(h.webserver_lines(), 1);
}

/// A tmpfs for the state directory, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"]).arg(dir).output().unwrap();
        assert!(out.status.success(), "this test mounts a small tmpfs for the state directory (root needed): {}", text(&out));
        Self(dir.to_path_buf())
    }

    /// Fills the file system up: what is left for canup is nothing.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let filler = self.0.join("filler");
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 64 << 10];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_under_the_journal_stops_the_run_clearly_and_a_rerun_finishes_it() {
    let _one = ONE.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let state = Tmpfs::mount(&dir.path().join("state"), "96m");
    let url = serve_repo(repository().clone(), Control::default()).await;
    let h = host(dir.path(), "3.38.0", &url, canup_tests::rabbitmq::MANAGEMENT, &state.0).await;

    // 3.39.0's init is held until the state directory's disk is full, then let go.
    let block = h.sim.path("/var/lib/canup-sim/block-init");
    std::fs::write(&block, "").unwrap();
    let child = h.apply().stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let marker = h.sim.path("/var/lib/canup-sim/blocked-init");
    let start = Instant::now();
    while !marker.exists() {
        assert!(start.elapsed() < Duration::from_secs(60), "init never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let filler = state.fill();
    std::fs::remove_file(&block).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("No space left on device"), "the error names the cause:\n{}", text(&out));

    // Space again: the re-run finishes; what was done is not done twice.
    std::fs::remove_file(filler).unwrap();
    let out = h.apply().output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(h.sim.read("/opt/canopsis/VERSION.txt").unwrap(), "Canopsis version 3.40.0\n");
    assert_eq!(h.webserver_lines(), 1);
    let yums = h.sim.calls().unwrap().iter().filter(|c| c.program == "yum").count();
    assert_eq!(yums, 1, "yum ran once");
    let _ = &h.dir;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plans_and_an_apply_while_the_vendor_refreshes_the_timestamp_see_a_consistent_repository() {
    let _one = ONE.lock().await;
    let dir = tempfile::tempdir().unwrap();
    // A private copy: the vendor's cron job rewrites its timestamp all along.
    let repo = dir.path().join("repo");
    assert!(Command::new("cp").arg("-a").arg(repository()).arg(&repo).status().unwrap().success());
    let url = serve_repo(repo.clone(), Control::default()).await;
    let h = host(&dir.path().join("host"), "3.38.0", &url, canup_tests::rabbitmq::MANAGEMENT, &dir.path().join("host/state")).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let refresher = {
        let (stop, repo, key) = (stop.clone(), repo.clone(), published().1.clone());
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            let mut refreshes = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                runtime.block_on(canup::repository::publish::refresh_timestamp(&repo, std::slice::from_ref(&key), 1)).unwrap();
                refreshes += 1;
            }
            refreshes
        })
    };
    for _ in 0..8 {
        let mut plan = Command::new(canup_bin());
        plan.arg("--config").arg(&h.config).arg("--sysroot").arg(h.sim.root()).args(["plan", "--to", "3.40.0"]);
        let out = plan.output().unwrap();
        assert!(out.status.success(), "a plan during a refresh failed: {}", text(&out));
    }
    let out = h.apply().output().unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let refreshes = refresher.join().unwrap();
    assert!(out.status.success(), "the apply during refreshes failed: {}", text(&out));
    assert!(refreshes >= 8, "the timestamp was refreshed {refreshes} times during the runs");
    assert_eq!(h.sim.read("/opt/canopsis/VERSION.txt").unwrap(), "Canopsis version 3.40.0\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_trapped_halfway_by_its_time_limit_is_named_and_the_rerun_resumes_it() {
    let _one = ONE.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let url = serve_repo(repository().clone(), Control::default()).await;
    let h = host(dir.path(), "3.38.0", &url, canup_tests::rabbitmq::MANAGEMENT, &dir.path().join("state")).await;
    let mut config = std::fs::read_to_string(&h.config).unwrap();
    config.push_str("\n[limits]\nwall_seconds = 3\n");
    std::fs::write(&h.config, config).unwrap();

    // 3.39.0's fifo-queue step has written initialisation.toml and waits on `init`, which hangs:
    // the engine traps the step at its wall-time limit and the command's process group is killed.
    let block = h.sim.path("/var/lib/canup-sim/block-init");
    std::fs::write(&block, "").unwrap();
    let out = h.apply().output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("step 3.39.0/fifo-queue failed: the step ran past its wall-time limit of 3s"), "{}", text(&out));
    let pid: i32 = h.sim.read("/var/lib/canup-sim/blocked-init").unwrap().trim().parse().unwrap();
    assert!(!canup_tests::process_alive(pid), "the hanging init was killed");
    assert!(h.sim.path("/opt/canopsis/etc/initialisation.toml").exists(), "the step was stopped halfway");
    assert!(!h.sim.path("/var/lib/canup-sim/init-applied").exists());

    // The cause is gone: the re-run resumes at that step and finishes; nothing is done twice.
    std::fs::remove_file(&block).unwrap();
    let out = h.apply().output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("resuming an interrupted run"), "{}", text(&out));
    assert!(h.sim.path("/var/lib/canup-sim/init-applied").exists());
    assert_eq!(h.webserver_lines(), 1);
    let ran = |program: &str| h.sim.calls().unwrap().iter().filter(|c| c.program == program).count();
    assert_eq!((ran("yum"), ran("canopsinit")), (1, 1), "the steps before the trapped one did not run again");
    assert_eq!(h.sim.read("/opt/canopsis/VERSION.txt").unwrap(), "Canopsis version 3.40.0\n");
}
