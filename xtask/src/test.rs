//! `cargo xtask test [CARGO TEST ARGS...]`: the house-style gate, then every test.

use std::process::Command;

use anyhow::Result;

use crate::util::{self, RabbitMq, build_guests, cargo};

pub fn run(extra: &[String]) -> Result<()> {
    // The house style first: formatting and clippy are cheap next to the tests, and a style
    // failure should not wait for a 10-minute test run to be seen.
    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--check"]);
    util::run(fmt)?;
    let mut clippy = cargo();
    clippy.args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]);
    util::run(clippy)?;
    build_guests()?;
    ensure_ansible()?;
    util::ensure_simulated_host_tools()?;
    let _rabbitmq = RabbitMq::start()?;
    // The end-to-end tests run the `canup` and `canup-sim` binaries, which `cargo test`
    // alone does not build for another package's tests.
    let mut bins = cargo();
    bins.args(["build", "--bins"]);
    util::run(bins)?;
    let mut c = cargo();
    c.arg("test").args(extra);
    util::run(c)
}

/// ansible-core for the fleet test (`tests/tests/fleet.rs`), from PyPI into `target/ansible`.
fn ensure_ansible() -> Result<()> {
    let venv = canup_tests::target_dir().join("ansible");
    if venv.join("bin/ansible-playbook").is_file() {
        return Ok(());
    }
    eprintln!("xtask: installing ansible-core into {} (pip)", venv.display());
    let mut c = Command::new("python3");
    c.args(["-m", "venv"]).arg(&venv);
    util::run(c)?;
    let mut pip = Command::new(venv.join("bin/pip"));
    pip.args(["install", "--quiet", ANSIBLE_CORE]);
    util::run(pip)
}

/// The ansible-core the fleet test uses: the 2.17–2.18 series runs on the machine's Python 3.11.
const ANSIBLE_CORE: &str = "ansible-core>=2.17,<2.19";
