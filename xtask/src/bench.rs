//! `cargo xtask bench`: the performance figures with their goals, on release builds.

use std::process::Command;

use anyhow::{Context, Result};

use crate::util::{self, RabbitMq, build_guests, cargo};

pub fn run() -> Result<()> {
    build_guests()?;
    // Release builds of everything the figures time: canup, the simulator's stub, the bench.
    let mut c = cargo();
    c.args(["build", "--release", "--quiet", "-p", "canup", "-p", "canup-sim", "-p", "canup-tests", "--bins"]);
    util::run(c)?;
    let release = canup_tests::target_dir().join("release");
    let bench_dir = canup_tests::target_dir().join("bench");
    if bench_dir.exists() {
        std::fs::remove_dir_all(&bench_dir).with_context(|| format!("cleaning {}", bench_dir.display()))?;
    }
    let repo = bench_dir.join("repo");
    canup_tests::publish_steps(&release.join("canup"), &repo, &canup_tests::target_dir().join("dev-keys"))?;
    util::ensure_simulated_host_tools()?;
    let _rabbitmq = RabbitMq::start()?;
    let mut bench = Command::new(release.join("canup-bench"));
    bench.arg("--canup").arg(release.join("canup")).arg("--stub").arg(release.join("canup-sim")).arg("--repo").arg(&repo);
    util::run(bench)
}
