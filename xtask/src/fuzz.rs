//! `cargo xtask fuzz [--libfuzzer] [SECONDS]`: the fuzz targets, each for a set time.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::util::{self, cargo, root};

/// Each target for `seconds`: as a proptest campaign (`tests/tests/fuzz.rs`), or under libFuzzer.
pub fn run(libfuzzer: bool, seconds: u64) -> Result<()> {
    if libfuzzer {
        return fuzz_libfuzzer(seconds);
    }
    let mut c = cargo();
    c.args(["test", "--release", "-p", "canup-tests", "--test", "fuzz", "--", "--nocapture", "--test-threads", "1"])
        .env("CANUP_FUZZ_SECONDS", seconds.to_string());
    util::run(c)
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
        util::run(c)?;
    }
    if !nightly(&["cargo", "fuzz", "--version"]).output().is_ok_and(|o| o.status.success()) {
        let mut c = Command::new("cargo");
        c.args(["install", "cargo-fuzz", "--locked"]);
        util::run(c)?;
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
    seed("config", vec![root().join("host/dist/canup.toml"), root().join("host/dist/policy.toml")])?;
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
