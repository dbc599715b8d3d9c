//! `cargo xtask demo`: the demo upgrade on a simulated Canopsis, then the SDK's example step.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};
use canup_tests::simhost::{Edition, Method, SimHost, Spec};

use crate::util::{self, RabbitMq, WASM_TARGET, build_canup, build_guests, root};

/// The operator's policy of the demo (and of the end-to-end tests): what any step may do on
/// this host at most.
pub const DEMO_POLICY: &str = canup_tests::OPERATOR_POLICY;

pub fn run() -> Result<()> {
    util::ensure_simulated_host_tools()?;
    build_guests()?;
    let canup = build_canup()?;
    let target = canup_tests::target_dir();
    let demo = target.join("demo");
    if demo.exists() {
        std::fs::remove_dir_all(&demo).with_context(|| format!("cleaning {}", demo.display()))?;
    }
    let repo = demo.join("repo");
    canup_tests::publish_steps(&canup, &repo, &target.join("dev-keys"))?;
    let spec = Spec { version: "3.38.0".into(), edition: Edition::Cat, method: Method::Packages, ..Spec::default() };
    let sim = SimHost::create(&demo.join("root"), &spec, &target.join("debug/canup-sim"))?;

    let _rabbitmq = RabbitMq::start()?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(canup_tests::rabbitmq::Admin::new().setup_canopsis_once())?;
    let url = runtime.block_on(canup_tests::repo_server::serve_repo(repo.clone(), Default::default()));
    let api = runtime.block_on(canup_tests::canopsis_api::CanopsisApi::serve(sim.root().to_path_buf()));
    let config = demo.join("canup.toml");
    // The backups of a real host: a database the plan's steps migrate is dumped (none from
    // 3.38.0 to 3.40.0; the simulated MongoDB's dump would be a copy of its file).
    let site_policy = format!("{DEMO_POLICY}\n[backup]\ndatabases = \"asked\"\n");
    canup_tests::write_site_config(&config, &url, &repo, &demo.join("state"), &site_policy, &api)?;
    println!("== rabbitmq-server on 127.0.0.1:15672 with the canopsis vhost, Engine_che bound to canopsis.events");
    println!("== the simulated host's Canopsis API at {}", api.url);
    println!("== signed repository of {} served at {url}", repo.display());
    println!("== simulated Canopsis 3.38.0 (cat, packages) in {}", sim.root().display());
    println!("== canup apply --to 3.40.0 --yes --accept-manual --sysroot {}\n", sim.root().display());
    let status = Command::new(&canup)
        .arg("--config")
        .arg(&config)
        .arg("--sysroot")
        .arg(sim.root())
        .args(["apply", "--to", "3.40.0", "--yes", "--accept-manual"])
        .status()
        .context("running canup")?;
    println!("\n== commands the steps ran on the simulated host, in order");
    for call in sim.calls()? {
        let env = if call.env.is_empty() { String::new() } else { format!("  [env: {}]", call.env.keys().cloned().collect::<Vec<_>>().join(" ")) };
        println!("  {} (as {}){env}", call.line(), call.user);
    }
    println!("\n== requests to the Canopsis API, in order");
    for r in api.requests() {
        println!("  {} {}", r.method, r.path);
    }
    println!("\n== /opt/canopsis/VERSION.txt: {}", sim.read("/opt/canopsis/VERSION.txt")?.trim());
    println!("== installed packages (the real rpm -qa on the simulated root): {}", sim.installed_packages()?.join(" "));
    for transaction in canup_tests::simhost::packages::history(sim.root(), spec.os.release_version())? {
        println!("== dnf history: {}", transaction.split_whitespace().collect::<Vec<_>>().join(" "));
    }
    if !status.success() {
        bail!("canup exited with {status}");
    }
    example_step(&runtime, &canup, &sim, &demo)
}

/// The SDK's example step (one call of each capability, an API on loopback) through
/// `canup step run`, which prints its audit: what a step author sees.
fn example_step(runtime: &tokio::runtime::Runtime, canup: &Path, sim: &SimHost, demo: &Path) -> Result<()> {
    let api = runtime.block_on(canup_tests::serve(
        axum::Router::new().route("/api/v4/app-info", axum::routing::get(|| async { r#"{"version":"3.40.0","edition":"cat"}"# })),
    ));
    let secret = demo.join("canopsis-api.password");
    std::fs::write(&secret, "demo-password\n")?;
    let policy = demo.join("step-policy.toml");
    std::fs::write(
        &policy,
        format!("{DEMO_POLICY}\n[endpoints.canopsis-api]\nurl = \"http://{api}\"\nusername = \"root\"\npassword_file = \"{}\"\n", secret.display()),
    )?;
    let module = canup_tests::target_dir().join(WASM_TARGET).join(canup_tests::GUEST_PROFILE).join("example_step.wasm");
    println!("\n== the SDK's example step with its audit: canup step run {} --yes", module.display());
    let status = Command::new(canup)
        .arg("--sysroot")
        .arg(sim.root())
        .arg("--state-dir")
        .arg(demo.join("step-state"))
        .args(["step", "run"])
        .arg(&module)
        .arg("--manifest")
        .arg(root().join("tests/guests/example-step/step.toml"))
        .arg("--policy")
        .arg(&policy)
        .args(["--installed", "3.40.0", "--edition", "cat", "--yes"])
        .status()
        .context("running canup step run")?;
    if !status.success() {
        bail!("the example step failed ({status})");
    }
    Ok(())
}
