//! A simulated site for end-to-end tests: a simulated host, its Canopsis API, and a
//! `canup.toml` naming a signed repository of the project's steps served over loopback HTTP
//! and the shared RabbitMQ.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use crate::canopsis_api::CanopsisApi;
use crate::rabbitmq::Admin;
use crate::repo_server::{Control, serve_repo};
use crate::simhost::{SimHost, Spec};
use crate::{OPERATOR_POLICY, canup_bin, publish_steps, target_dir};

/// The project's steps, published once per test binary.
pub fn repository() -> &'static PathBuf {
    static REPO: OnceLock<(PathBuf, tempfile::TempDir)> = OnceLock::new();
    &REPO
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let repo = dir.path().join("repo");
            publish_steps(&canup_bin(), &repo, &target_dir().join("dev-keys")).unwrap();
            (repo, dir)
        })
        .0
}

pub struct Host {
    pub dir: tempfile::TempDir,
    pub sim: SimHost,
    pub config: PathBuf,
    /// The simulated host's Canopsis API (broadcast messages, the API check).
    pub api: CanopsisApi,
}

pub async fn host(spec: Spec) -> Host {
    host_with_policy(spec, OPERATOR_POLICY).await
}

pub async fn host_with_policy(spec: Spec, policy: &str) -> Host {
    host_on(repository(), spec, policy).await
}

/// A simulated host whose canup uses the repository at `repo`.
pub async fn host_on(repo: &Path, spec: Spec, policy: &str) -> Host {
    let url = serve_repo(repo.to_path_buf(), Control::default()).await;
    // 3.39.0 unbinds Engine_che and the verify phase watches the queues: a real RabbitMQ.
    Admin::new().setup_canopsis_once().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sim = SimHost::create(&dir.path().join("root"), &spec, &crate::sim_bin()).unwrap();
    let api = CanopsisApi::serve(sim.root().to_path_buf()).await;
    let config = dir.path().join("canup.toml");
    crate::write_site_config(&config, &url, repo, &dir.path().join("state"), policy, &api).unwrap();
    Host { dir, sim, config, api }
}

impl Host {
    pub fn canup(&self, args: &[&str]) -> Command {
        let mut c = Command::new(canup_bin());
        c.arg("--config").arg(&self.config).arg("--sysroot").arg(self.sim.root()).args(args);
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.canup(args).output().unwrap()
    }

    pub fn calls(&self) -> Vec<String> {
        self.sim.calls().unwrap().iter().map(|c| format!("{} as {}", c.line(), c.user)).collect()
    }

    /// The calls that change something (the queries `rpm -q`, `dnf repoquery`, `is-enabled`,
    /// `redis-cli … INFO` and `docker ps` excluded).
    pub fn changes(&self) -> Vec<String> {
        let query = |c: &crate::simhost::Call| {
            c.program == "rpm"
                || c.args.first().is_some_and(|a| a == "is-enabled")
                || (c.program == "dnf" && c.args.iter().any(|a| a == "repoquery"))
                || (c.program == "redis-cli" && c.input.as_deref().is_some_and(|i| i.lines().all(|l| l.starts_with("INFO") || l.starts_with("AUTH"))))
                || (c.program == "docker" && c.args.first().is_some_and(|a| a == "ps"))
        };
        self.sim.calls().unwrap().iter().filter(|c| !query(c)).map(|c| c.line()).collect()
    }

    /// Runs canup expecting it to refuse: it fails, says each of `says`, and changes
    /// nothing (the tree byte for byte, and no changing call). Its output, for more checks.
    pub fn refused(&self, args: &[&str], says: &[&str]) -> String {
        let before = self.sim.snapshot().unwrap();
        let out = self.run(args);
        let shown = text(&out);
        assert!(!out.status.success(), "{shown}");
        for s in says {
            assert!(shown.contains(s), "no {s:?} in:\n{shown}");
        }
        assert_eq!(self.sim.snapshot().unwrap(), before, "the tree changed:\n{shown}");
        assert!(self.changes().is_empty(), "{:?}", self.changes());
        shown
    }

    /// Waits for a stub the test froze (`/var/lib/canup-sim/block-NAME`) to say it is blocked.
    pub fn wait_blocked(&self, name: &str) {
        let marker = self.sim.path(&format!("/var/lib/canup-sim/blocked-{name}"));
        let start = std::time::Instant::now();
        while !marker.exists() {
            assert!(start.elapsed() < std::time::Duration::from_secs(120), "{name} never started");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// What a power cut does to a canup whose `program` the test froze: canup, and the process
    /// group of the program (a receipt's shell, the program), die at once. Returns when they
    /// are gone; the program's block stays for the caller to lift.
    pub fn power_cut(&self, canup: &mut std::process::Child, program: &str) {
        self.wait_blocked(program);
        let pid: i32 = self.sim.read(&format!("/var/lib/canup-sim/blocked-{program}")).unwrap().trim().parse().unwrap();
        let group = nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(pid))).unwrap();
        canup.kill().unwrap();
        canup.wait().unwrap();
        nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL).unwrap();
        while crate::process_alive(pid) {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Rewrites a line of canup.toml (an endpoint's URL, say).
    pub fn edit_config(&self, from: &str, to: &str) {
        let text = std::fs::read_to_string(&self.config).unwrap();
        assert!(text.contains(from), "canup.toml has no {from:?}: {text}");
        std::fs::write(&self.config, text.replacen(from, to, 1)).unwrap();
    }
}

pub fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}
