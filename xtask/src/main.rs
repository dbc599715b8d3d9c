//! `cargo xtask …`: the project's build steps.
//!
//! - `cargo xtask test [ARGS]`: installs what the tests need (the `wasm32-wasip2` target),
//!   builds every guest crate once, then runs every test (`cargo test`, extra ARGS passed on).
//! - `cargo xtask demo`: runs the example step on a simulated Canopsis with a loopback API
//!   server, and prints the step's log, its audit and the commands it ran.
//! - `cargo xtask bench`: the performance figures with their goals (release build), the demo
//!   upgrade against a bash script of the same commands included (needs RabbitMQ, started here).
//! - `cargo xtask dist`: the release `canup`, its man page and completions, and the RPM
//!   (`cargo generate-rpm`, installed if missing), checked with Debian's `rpm` tool.
//! - `cargo xtask chaos [KILLS [SEED]]`: the crash campaign, 50 kills of the demo upgrade by
//!   default, each resumed and compared with an uninterrupted run.
//! - `cargo xtask fuzz [--libfuzzer] [SECONDS]`: each fuzz target of `canup::fuzz` for SECONDS
//!   (600 by default) as a proptest campaign (`tests/tests/fuzz.rs`, no nightly toolchain
//!   needed), or with `--libfuzzer` under libFuzzer from `fuzz/` (nightly and cargo-fuzz
//!   installed if missing).
//! - `cargo xtask build-guests`: builds `steps/*` and `tests/guests/*` for `wasm32-wasip2`.
//! - `cargo xtask tuf-conformance DIR`: the public TUF conformance suite (a checkout of
//!   theupdateframework/tuf-conformance at DIR) against `canup-tuf-client`, canup's client
//!   code behind the suite's CLI; its Python dependencies go into `target/tuf-conformance-venv`.
//! - `cargo xtask publish --out DIR`: builds the release crates under `steps/` and publishes
//!   them into a signed repository at DIR with a development key (`target/dev-keys/`).

use std::path::{Path, PathBuf};
use std::process::Command;

mod tuf_conformance;

use anyhow::{Context, Result, bail};
use canup_tests::simhost::{Edition, Method, SimHost, Spec};

const WASM_TARGET: &str = "wasm32-wasip2";

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let task = args.next().unwrap_or_default();
    let rest: Vec<String> = args.collect();
    match task.as_str() {
        "test" => test(&rest),
        "demo" => demo(),
        "build-guests" => build_guests().map(|_| ()),
        "bench" => bench(),
        "dist" => dist(),
        "chaos" => chaos(&rest),
        "fuzz" => fuzz(&rest),
        "tuf-conformance" => match rest.as_slice() {
            [suite] => tuf_conformance(Path::new(suite)),
            _ => bail!("usage: cargo xtask tuf-conformance DIR (a checkout of theupdateframework/tuf-conformance)"),
        },
        "publish" => match rest.as_slice() {
            [flag, out] if flag == "--out" => publish(Path::new(out)),
            _ => bail!("usage: cargo xtask publish --out DIR"),
        },
        _ => {
            eprintln!(
                "usage: cargo xtask <test [CARGO TEST ARGS] | demo | bench | dist | chaos [KILLS [SEED]] | fuzz [--libfuzzer] [SECONDS] | build-guests | publish --out DIR | tuf-conformance DIR>"
            );
            std::process::exit(2)
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

fn run(mut cmd: Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let status = cmd.status().with_context(|| format!("cannot start {shown}"))?;
    if !status.success() {
        bail!("{shown} failed with {status}");
    }
    Ok(())
}

/// Installs the wasm target when it is missing (a fresh machine has only the host target).
fn ensure_wasm_target() -> Result<()> {
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
fn build_guests() -> Result<Vec<String>> {
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

fn build_canup() -> Result<PathBuf> {
    let mut c = cargo();
    c.args(["build", "--quiet", "-p", "canup", "-p", "canup-tests", "--bins"]);
    run(c)?;
    Ok(canup_tests::target_dir().join("debug/canup"))
}

/// Builds the conformance client, puts its expected failures beside it (where the suite looks
/// for them) and runs the suite; fails when a test fails outside the expected ones.
fn tuf_conformance(suite: &Path) -> Result<()> {
    let mut c = cargo();
    c.args(["build", "--quiet", "-p", "canup-tests", "--bin", "canup-tuf-client"]);
    run(c)?;
    let client = canup_tests::target_dir().join("debug/canup-tuf-client");
    let xfails = root().join("tests/tuf/canup-tuf-client.xfails");
    std::fs::copy(&xfails, client.with_extension("xfails")).with_context(|| format!("copying {}", xfails.display()))?;
    let counts = tuf_conformance::run(suite, &client, &canup_tests::target_dir().join("tuf-conformance-venv"))?;
    println!(
        "tuf-conformance: {} passed, {} failed, {} expected failures (tests/tuf/canup-tuf-client.xfails), {} skipped",
        counts.passed, counts.failed, counts.xfailed, counts.skipped
    );
    if counts.failed > 0 {
        bail!("{} conformance tests failed outside the expected failures", counts.failed);
    }
    Ok(())
}

fn publish(out: &Path) -> Result<()> {
    build_guests()?;
    let canup = build_canup()?;
    let out = if out.is_absolute() { out.to_path_buf() } else { std::env::current_dir()?.join(out) };
    let key = canup_tests::publish_steps(&canup, &out, &canup_tests::target_dir().join("dev-keys"))?;
    let releases = canup_tests::step_sources()?.iter().filter(|s| s.steps.release.is_some()).count();
    println!("published {releases} releases into {}", out.display());
    println!("trusted root: {}/metadata/1.root.json (development key {})", out.display(), key.display());
    Ok(())
}

fn bench() -> Result<()> {
    build_guests()?;
    // Release builds of everything the figures time: canup, the simulator's stub, the bench.
    let mut c = cargo();
    c.args(["build", "--release", "--quiet", "-p", "canup", "-p", "canup-tests", "--bins"]);
    run(c)?;
    let release = canup_tests::target_dir().join("release");
    let bench_dir = canup_tests::target_dir().join("bench");
    if bench_dir.exists() {
        std::fs::remove_dir_all(&bench_dir).with_context(|| format!("cleaning {}", bench_dir.display()))?;
    }
    let repo = bench_dir.join("repo");
    canup_tests::publish_steps(&release.join("canup"), &repo, &canup_tests::target_dir().join("dev-keys"))?;
    let _rabbitmq = RabbitMq::start()?;
    let mut bench = Command::new(release.join("canup-bench"));
    bench.arg("--canup").arg(release.join("canup")).arg("--stub").arg(release.join("canup-simstub")).arg("--repo").arg(&repo);
    run(bench)
}

/// Installs a Debian package when `program` is missing (the machine has apt-get and no sudo
/// needed: the build runs as root, as CI does).
fn ensure_debian_package(program: &str, package: &str) -> Result<()> {
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

/// Whether `program` is on PATH, or in /usr/sbin (Debian installs daemons there, and PATH may
/// lack it).
fn installed(program: &str) -> Result<bool> {
    Ok(Command::new("sh").arg("-c").arg(format!("command -v {program} || test -x /usr/sbin/{program}")).output()?.status.success())
}

fn output_of(mut cmd: Command) -> Result<String> {
    let shown = format!("{cmd:?}");
    let out = cmd.output().with_context(|| format!("cannot start {shown}"))?;
    if !out.status.success() {
        bail!("{shown} failed with {}: {}", out.status, String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `cargo xtask fuzz`: the fuzz targets, each for a set time.
fn fuzz(args: &[String]) -> Result<()> {
    let (libfuzzer, args) = match args.split_first() {
        Some((flag, rest)) if flag == "--libfuzzer" => (true, rest),
        _ => (false, args),
    };
    let seconds: u64 = args.first().map(|s| s.parse()).transpose().context("SECONDS must be a number")?.unwrap_or(600);
    if libfuzzer {
        return fuzz_libfuzzer(seconds);
    }
    let mut c = cargo();
    c.args(["test", "--release", "-p", "canup-tests", "--test", "fuzz", "--", "--nocapture", "--test-threads", "1"])
        .env("CANUP_FUZZ_SECONDS", seconds.to_string());
    run(c)
}

/// The targets of `fuzz/` (the same functions as `tests/tests/fuzz.rs`).
const FUZZ_TARGETS: &[&str] = &["index", "manifest", "config", "planner", "patterns"];

/// `cargo xtask fuzz --libfuzzer [SECONDS]`: each target of `fuzz/` under libFuzzer
/// (coverage-guided) for SECONDS, one after another. Installs what it needs: a nightly
/// toolchain (rustup) and cargo-fuzz (crates.io). The corpora start from the repository's own
/// inputs (every `step.toml`, the shipped `canup.toml`, a published index when one is under
/// `target/`) and are kept in `fuzz/corpus/` between campaigns; a crash is left in
/// `fuzz/artifacts/` and fails the campaign.
fn fuzz_libfuzzer(seconds: u64) -> Result<()> {
    let nightly = |args: &[&str]| {
        let mut c = Command::new("rustup");
        c.args(["run", "nightly"]).args(args).current_dir(root().join("fuzz"));
        // The stable cargo that runs xtask must not leak into the nightly one.
        for var in ["CARGO", "RUSTC", "RUSTDOC", "RUSTUP_TOOLCHAIN", "CARGO_TARGET_DIR"] {
            c.env_remove(var);
        }
        c
    };
    if !nightly(&["rustc", "--version"]).output().is_ok_and(|o| o.status.success()) {
        let mut c = Command::new("rustup");
        c.args(["toolchain", "install", "nightly", "--profile", "minimal"]);
        run(c)?;
    }
    if !nightly(&["cargo", "fuzz", "--version"]).output().is_ok_and(|o| o.status.success()) {
        let mut c = Command::new("cargo");
        c.args(["install", "cargo-fuzz", "--locked"]);
        run(c)?;
    }
    let corpus = root().join("fuzz/corpus");
    let seed = |target: &str, files: Vec<PathBuf>| -> Result<()> {
        let dir = corpus.join(target);
        std::fs::create_dir_all(&dir)?;
        for (i, f) in files.iter().enumerate() {
            std::fs::copy(f, dir.join(format!("seed-{i}")))?;
        }
        Ok(())
    };
    let listed = |dir: PathBuf, keep: &dyn Fn(&Path) -> bool| -> Vec<PathBuf> {
        std::fs::read_dir(dir).into_iter().flatten().flatten().map(|e| e.path()).filter(|p| keep(p)).collect()
    };
    let manifests = listed(root().join("steps"), &|p| p.join("step.toml").is_file()).into_iter().map(|p| p.join("step.toml")).collect();
    seed("manifest", manifests)?;
    seed("config", vec![root().join("host/dist/canup.toml")])?;
    seed("index", listed(canup_tests::target_dir().join("chaos/repo/targets"), &|p| p.to_string_lossy().ends_with(".index.json")))?;
    let mut summary = Vec::new();
    for target in FUZZ_TARGETS {
        eprintln!("xtask: libFuzzer on {target} for {seconds} s");
        let mut c = nightly(&["cargo", "fuzz", "run", "--sanitizer", "none", target]);
        c.arg(corpus.join(target)).args(["--", &format!("-max_total_time={seconds}"), "-print_final_stats=1"]);
        let out = c.output().with_context(|| format!("running cargo fuzz on {target}"))?;
        let log = String::from_utf8_lossy(&out.stderr);
        let stat = |name: &str| log.lines().find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned())).unwrap_or_else(|| "?".into());
        let coverage = log
            .lines()
            .rev()
            .find_map(|l| l.split_once(" cov: ").and_then(|(_, r)| r.split_whitespace().next()).map(str::to_owned))
            .unwrap_or_else(|| "?".into());
        if !out.status.success() {
            let tail: Vec<&str> = log.lines().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect();
            bail!("libFuzzer found a failure in {target} (input in fuzz/artifacts/{target}/; make it a regression test):\n{}", tail.join("\n"));
        }
        summary.push(format!("| {target} | {} | {coverage} | {} MB |", stat("stat::number_of_executed_units:"), stat("stat::peak_rss_mb:")));
    }
    println!("| target ({seconds} s each) | runs | coverage (edges) | peak RSS |\n| --- | --- | --- | --- |\n{}", summary.join("\n"));
    Ok(())
}

/// `cargo xtask chaos`: the crash campaign (see `canup_tests::chaos`).
fn chaos(args: &[String]) -> Result<()> {
    let kills: usize = args.first().map(|k| k.parse()).transpose().context("KILLS must be a number")?.unwrap_or(50);
    let seed: u64 = match args.get(1) {
        Some(s) => s.parse().context("SEED must be a number")?,
        None => std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs(),
    };
    build_guests()?;
    let canup = build_canup()?;
    let work = canup_tests::chaos::work_dir("chaos")?;
    let repo = work.join("repo");
    canup_tests::publish_steps(&canup, &repo, &canup_tests::target_dir().join("dev-keys"))?;
    let _rabbitmq = RabbitMq::start()?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        canup_tests::rabbitmq::Admin::new().setup_canopsis_once().await?;
        let repo_url = canup_tests::repo_server::serve_repo(repo.clone(), Default::default()).await;
        let stub = canup_tests::target_dir().join("debug/canup-simstub");
        let setup = canup_tests::chaos::Setup { canup, stub, repo, repo_url, work };
        canup_tests::chaos::campaign(&setup, kills, seed).await.map(|_| ())
    })
}

/// `cargo xtask dist`: builds the RPM and checks it as an operator's yum would see it.
fn dist() -> Result<()> {
    let target = canup_tests::target_dir();
    let dist = target.join("dist");
    if dist.exists() {
        std::fs::remove_dir_all(&dist).with_context(|| format!("cleaning {}", dist.display()))?;
    }
    std::fs::create_dir_all(dist.join("completions"))?;
    let mut build = cargo();
    build.args(["build", "--release", "-p", "canup", "--bin", "canup"]);
    run(build)?;
    let binary = dist.join("canup");
    std::fs::copy(target.join("release/canup"), &binary)?;
    let mut strip = Command::new("strip");
    strip.arg("-s").arg(&binary);
    run(strip)?;
    let canup = |args: &[&str]| {
        let mut c = Command::new(&binary);
        c.args(args);
        output_of(c)
    };
    std::fs::write(dist.join("canup.1"), canup(&["man"])?)?;
    let mut gzip = Command::new("gzip");
    gzip.args(["-9n"]).arg(dist.join("canup.1"));
    run(gzip)?;
    for (shell, file) in [("bash", "canup.bash"), ("zsh", "_canup"), ("fish", "canup.fish")] {
        std::fs::write(dist.join("completions").join(file), canup(&["completions", shell])?)?;
    }

    if !installed("cargo-generate-rpm")? {
        eprintln!("xtask: installing cargo-generate-rpm (cargo install)");
        let mut install = cargo();
        install.args(["install", "--locked", "cargo-generate-rpm@0.21.1"]);
        run(install)?;
    }
    let mut rpm = cargo();
    // gzip, not the default zstd: the rpm of EL7 cannot read zstd payloads.
    rpm.args(["generate-rpm", "-p", "host", "--payload-compress", "gzip", "-o"]).arg(&dist);
    run(rpm)?;
    let package = std::fs::read_dir(&dist)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "rpm"))
        .context("cargo generate-rpm wrote no .rpm")?;
    check_rpm(&package, &dist)?;
    println!("{}", package.display());
    Ok(())
}

/// The checks of the RPM with the `rpm` tool: metadata, file list, the config file marked
/// noreplace, and an install into a scratch root where the binary runs and an edited
/// config survives a reinstall.
fn check_rpm(package: &Path, dist: &Path) -> Result<()> {
    ensure_debian_package("rpm", "rpm")?;
    let rpm = |args: &[&str]| {
        let mut c = Command::new("rpm");
        c.args(args);
        output_of(c)
    };
    let pkg = package.to_str().context("package path is not UTF-8")?;
    let info = rpm(&["-qip", pkg])?;
    println!("{info}");
    for field in ["Name        : canup", "License     : Apache-2.0"] {
        if !info.contains(field) {
            bail!("rpm -qip {pkg}: no {field:?}");
        }
    }
    let files = rpm(&["-qlp", pkg])?;
    println!("{files}");
    let expected = [
        "/etc/canup/canup.toml",
        "/usr/bin/canup",
        "/usr/share/bash-completion/completions/canup",
        "/usr/share/fish/vendor_completions.d/canup.fish",
        "/usr/share/man/man1/canup.1.gz",
        "/usr/share/zsh/site-functions/_canup",
    ];
    let listed: Vec<&str> = files.lines().collect();
    if listed != expected {
        bail!("rpm -qlp {pkg} lists {listed:?}, expected {expected:?}");
    }
    let config = rpm(&["-qp", "--qf", "[%{FILENAMES} %{FILEFLAGS:fflags}\n]", pkg])?;
    if !config.lines().any(|l| l == "/etc/canup/canup.toml cn") {
        bail!(
            "/etc/canup/canup.toml is not %config(noreplace) in {pkg}:
{config}"
        );
    }
    let modes = rpm(&["-qp", "--qf", "[%{FILENAMES} %{FILEMODES:perms}\n]", pkg])?;
    for line in ["/usr/bin/canup -rwxr-xr-x", "/etc/canup/canup.toml -rw-r-----"] {
        if !modes.lines().any(|l| l == line) {
            bail!(
                "{pkg}: expected {line:?} in
{modes}"
            );
        }
    }

    let scripts = rpm(&["-qp", "--scripts", pkg])?;
    if !scripts.contains("install -d -m 0700 /var/lib/canup") {
        bail!("{pkg}: no %post creating /var/lib/canup:\n{scripts}");
    }

    // Install into a scratch root (its rpm database knows no glibc: --nodeps; it has no
    // shell to run %post in: --noscripts).
    let root = dist.join("scratch-root");
    let root_s = root.to_str().context("scratch root path is not UTF-8")?;
    std::fs::create_dir_all(&root)?;
    rpm(&["--root", root_s, "--initdb"])?;
    rpm(&["--root", root_s, "-i", "--nodeps", "--noscripts", pkg])?;
    let version = output_of({
        let mut c = Command::new(root.join("usr/bin/canup"));
        c.arg("--version");
        c
    })?;
    println!("installed into {root_s}: {}", version.trim());
    let conf = root.join("etc/canup/canup.toml");
    let mut edited = std::fs::read_to_string(&conf)?;
    edited.push_str(
        "
# edited by the operator
",
    );
    std::fs::write(&conf, &edited)?;
    rpm(&["--root", root_s, "-U", "--replacepkgs", "--nodeps", "--noscripts", pkg])?;
    if std::fs::read_to_string(&conf)? != edited {
        bail!("reinstalling {pkg} replaced the operator's {}", conf.display());
    }
    println!("rpm checks passed: metadata, file list, modes, %config(noreplace), %post, scratch install and reinstall");
    Ok(())
}

/// The shared `rabbitmq-server` of the tests and the demo (`canup@localhost`, management on
/// 127.0.0.1:15672), installed with apt-get if missing. Stopped when dropped; one already
/// answering on 15672 is used as it is.
struct RabbitMq {
    _broker: Option<canup_tests::rabbitmq::Broker>,
}

impl RabbitMq {
    fn start() -> Result<Self> {
        ensure_debian_package("rabbitmq-server", "rabbitmq-server")?;
        if canup_tests::rabbitmq::management_answers(15672) {
            eprintln!("xtask: a RabbitMQ already answers on 127.0.0.1:15672; using it");
            return Ok(Self { _broker: None });
        }
        Ok(Self { _broker: Some(canup_tests::rabbitmq::Broker::start("canup", 5672, 15672)?) })
    }
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
    run(c)?;
    let mut pip = Command::new(venv.join("bin/pip"));
    pip.args(["install", "--quiet", ANSIBLE_CORE]);
    run(pip)
}

/// The ansible-core the fleet test uses: the 2.17–2.18 series runs on the machine's Python 3.11.
const ANSIBLE_CORE: &str = "ansible-core>=2.17,<2.19";

fn test(extra: &[String]) -> Result<()> {
    build_guests()?;
    ensure_ansible()?;
    let _rabbitmq = RabbitMq::start()?;
    // The end-to-end tests run the `canup` and `canup-simstub` binaries, which `cargo test`
    // alone does not build for another package's tests.
    let mut bins = cargo();
    bins.args(["build", "--bins"]);
    run(bins)?;
    let mut c = cargo();
    c.arg("test").args(extra);
    run(c)
}

/// The operator's policy of the demo (and of the end-to-end tests): what any step may do on
/// this host at most.
pub const DEMO_POLICY: &str = canup_tests::OPERATOR_POLICY;

fn demo() -> Result<()> {
    build_guests()?;
    let canup = build_canup()?;
    let target = canup_tests::target_dir();
    let demo = target.join("demo");
    if demo.exists() {
        std::fs::remove_dir_all(&demo).with_context(|| format!("cleaning {}", demo.display()))?;
    }
    let repo = demo.join("repo");
    canup_tests::publish_steps(&canup, &repo, &target.join("dev-keys"))?;
    let spec = Spec { version: "3.38.0".into(), edition: Edition::Cat, method: Method::Packages };
    let sim = SimHost::create(&demo.join("root"), &spec, &target.join("debug/canup-simstub"))?;

    let _rabbitmq = RabbitMq::start()?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(canup_tests::rabbitmq::Admin::new().setup_canopsis_once())?;
    let url = runtime.block_on(canup_tests::repo_server::serve_repo(repo.clone(), Default::default()));
    let api = runtime.block_on(canup_tests::canopsis_api::CanopsisApi::serve(sim.root().to_path_buf()));
    let config = demo.join("canup.toml");
    canup_tests::write_site_config(&config, &url, &repo, &demo.join("state"), DEMO_POLICY, &api)?;
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
