//! What the tasks share: the workspace root, running commands, installing what is missing,
//! building the guests and `canup`, the RabbitMQ of the tasks that need one.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

pub const WASM_TARGET: &str = "wasm32-wasip2";

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

pub fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

pub fn run(mut cmd: Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let status = cmd.status().with_context(|| format!("cannot start {shown}"))?;
    if !status.success() {
        bail!("{shown} failed with {status}");
    }
    Ok(())
}

pub fn output_of(mut cmd: Command) -> Result<String> {
    let shown = format!("{cmd:?}");
    let out = cmd.output().with_context(|| format!("cannot start {shown}"))?;
    if !out.status.success() {
        bail!("{shown} failed with {}: {}", out.status, String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Installs a Debian package when `program` is missing (the machine has apt-get and no sudo
/// needed: the build runs as root, as CI does).
pub fn ensure_debian_package(program: &str, package: &str) -> Result<()> {
    if installed(program)? {
        return Ok(());
    }
    eprintln!("xtask: installing {package} (apt-get)");
    let mut update = Command::new("apt-get");
    update.arg("update").env("DEBIAN_FRONTEND", "noninteractive");
    run(update)?;
    let mut install = Command::new("apt-get");
    install.args(["install", "-y", package]).env("DEBIAN_FRONTEND", "noninteractive");
    run(install)
}

/// The real tools behind the simulated host's package management (`canup_sim::packages`):
/// rpm and rpmbuild, dnf, createrepo_c, systemctl for `systemctl --root`, Compose v1's
/// `docker-compose config`, which checks the Compose files steps write, redis-server with
/// its redis-cli (4.3.1's cache purge runs against a real server), and PostgreSQL's server,
/// psql, pg_dump and pg_restore (24.04.3's perf_data_name migration, and the backups and
/// rollbacks of `tests/tests/rollback.rs`, run against a real one).
pub fn ensure_simulated_host_tools() -> Result<()> {
    for (program, package) in [
        ("rpmbuild", "rpm"),
        ("dnf", "dnf"),
        ("createrepo_c", "createrepo-c"),
        ("systemctl", "systemd"),
        ("docker-compose", "docker-compose"),
        ("redis-server", "redis-server"),
        ("pg_ctlcluster", "postgresql"),
    ] {
        ensure_debian_package(program, package)?;
    }
    Ok(())
}

/// Whether `program` is on PATH, or in /usr/sbin (Debian installs daemons there, and PATH may
/// lack it).
pub fn installed(program: &str) -> Result<bool> {
    Ok(Command::new("sh").arg("-c").arg(format!("command -v {program} || test -x /usr/sbin/{program}")).output()?.status.success())
}

/// Installs the wasm target when it is missing (a fresh machine has only the host target).
pub fn ensure_wasm_target() -> Result<()> {
    let out = Command::new("rustup").args(["target", "list", "--installed"]).output().context("rustup is needed to install the wasm32-wasip2 target")?;
    if String::from_utf8_lossy(&out.stdout).lines().any(|l| l.trim() == WASM_TARGET) {
        return Ok(());
    }
    eprintln!("xtask: installing the {WASM_TARGET} target");
    let mut c = Command::new("rustup");
    c.args(["target", "add", WASM_TARGET]);
    run(c)
}

/// Package names of the guest crates (every crate under `steps/` and `tests/guests/`).
fn guest_crates() -> Result<Vec<String>> {
    let mut names = Vec::new();
    for dir in ["steps", "tests/guests"] {
        names.extend(canup_tests::crates_under(dir)?.into_iter().map(|(name, _)| name));
    }
    Ok(names)
}

/// Builds every guest once, in one cargo invocation.
pub fn build_guests() -> Result<Vec<String>> {
    ensure_wasm_target()?;
    let crates = guest_crates()?;
    let mut c = cargo();
    c.args(["build", "--target", WASM_TARGET, "--profile", canup_tests::GUEST_PROFILE]);
    for name in &crates {
        c.args(["-p", name]);
    }
    run(c)?;
    Ok(crates)
}

pub fn build_canup() -> Result<PathBuf> {
    let mut c = cargo();
    c.args(["build", "--quiet", "-p", "canup", "-p", "canup-sim", "-p", "canup-tests", "--bins"]);
    run(c)?;
    Ok(canup_tests::target_dir().join("debug/canup"))
}

/// The shared `rabbitmq-server` of the tests and the demo (`canup@localhost`, management on
/// 127.0.0.1:15672), installed with apt-get if missing. Stopped when dropped; one already
/// answering on 15672 is used as it is.
pub struct RabbitMq {
    _broker: Option<canup_tests::rabbitmq::Broker>,
}

impl RabbitMq {
    pub fn start() -> Result<Self> {
        ensure_debian_package("rabbitmq-server", "rabbitmq-server")?;
        if canup_tests::rabbitmq::management_answers(15672) {
            eprintln!("xtask: a RabbitMQ already answers on 127.0.0.1:15672; using it");
            return Ok(Self { _broker: None });
        }
        Ok(Self { _broker: Some(canup_tests::rabbitmq::start_broker("canup", 5672, 15672)?) })
    }
}
