//! `cargo xtask tuf-conformance DIR`: runs the public TUF conformance suite
//! (github.com/theupdateframework/tuf-conformance, a checkout at DIR) against a
//! client-under-test executable implementing its CLIENT-CLI.md protocol: `canup-tuf-client`.
//!
//! Extra pytest options (`-k test_name`, `-rA`, `--repository-dump-dir DIR`, ...) can be
//! passed through the `PYTEST_ADDOPTS` environment variable, which pytest reads itself.

use anyhow::{Context, Result, bail};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use crate::util::{self, cargo, root};

/// Builds the conformance client, puts its expected failures beside it (where the suite looks
/// for them) and runs the suite; fails when a test fails outside the expected ones.
pub fn run(suite: &Path) -> Result<()> {
    let mut c = cargo();
    c.args(["build", "--quiet", "-p", "canup-tests", "--bin", "canup-tuf-client"]);
    util::run(c)?;
    let client = canup_tests::target_dir().join("debug/canup-tuf-client");
    let xfails = root().join("tests/tuf/canup-tuf-client.xfails");
    std::fs::copy(&xfails, client.with_extension("xfails")).with_context(|| format!("copying {}", xfails.display()))?;
    let counts = run_suite(suite, &client, &canup_tests::target_dir().join("tuf-conformance-venv"))?;
    println!(
        "tuf-conformance: {} passed, {} failed, {} expected failures (tests/tuf/canup-tuf-client.xfails), {} skipped",
        counts.passed, counts.failed, counts.xfailed, counts.skipped
    );
    if counts.failed > 0 {
        bail!("{} conformance tests failed outside the expected failures", counts.failed);
    }
    Ok(())
}

/// Test outcome counts taken from pytest's final summary line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub passed: u32,
    /// Includes pytest "errors" (fixture/setup failures): they mean "not conformant" too.
    /// Also includes tests listed in `.xfails` that passed: the suite marks xfails
    /// `strict=True`, so pytest reports them as failures, not as xpassed.
    pub failed: u32,
    pub xfailed: u32,
    pub skipped: u32,
    pub xpassed: u32,
}

/// `suite`: checkout of tuf-conformance (holds `pyproject.toml` and `tuf_conformance/`).
/// `client`: the client-under-test executable; `<client>.xfails` beside it is picked up
/// by the suite itself. `venv`: Python virtualenv to create/reuse for the suite's deps.
///
/// Returns `Err` only when the suite could not run; failing tests are reported in `Counts`.
fn run_suite(suite: &Path, client: &Path, venv: &Path) -> Result<Counts> {
    let suite = suite.canonicalize().with_context(|| format!("tuf-conformance checkout {}", suite.display()))?;
    let pyproject = std::fs::read_to_string(suite.join("pyproject.toml")).context("suite has no pyproject.toml: not a tuf-conformance checkout?")?;
    // The suite resolves a relative --entrypoint against pytest's cwd and looks for
    // "<entrypoint>.xfails"; an absolute path makes both independent of our cwd.
    let client = client.canonicalize().with_context(|| format!("client-under-test {}", client.display()))?;
    let client_str = client.to_str().context("client path is not UTF-8")?;
    // ClientRunner does `entrypoint.split(" ")` to allow "interpreter script" entrypoints,
    // so a path containing a space would be mangled into several argv words.
    if client_str.contains(' ') {
        bail!("client path {client_str:?} contains a space; the suite splits --entrypoint on spaces");
    }

    ensure_venv(&suite, &pyproject, venv)?;
    // Expiry tests run the client as `faketime "<datetime>" <client> …`.
    util::ensure_debian_package("faketime", "faketime")?;

    // -p no:cacheprovider: don't litter the suite checkout with .pytest_cache.
    // Client stdout/stderr is captured by pytest and only shown for failing tests.
    let mut child = Command::new(venv.join("bin/python"))
        .args(["-m", "pytest", "tuf_conformance", "-p", "no:cacheprovider", "-rfE", "--entrypoint"])
        .arg(&client)
        .current_dir(&suite)
        .stdout(Stdio::piped())
        .spawn()
        .context("spawning pytest")?;

    // Tee pytest's output so progress stays visible while we keep the summary line
    // (pytest always prints the "N passed, M failed ... in Xs" totals last).
    let mut last = String::new();
    for line in BufReader::new(child.stdout.take().expect("piped stdout")).lines() {
        let line = line.context("reading pytest output")?;
        println!("{line}");
        if !line.trim().is_empty() {
            last = line;
        }
    }
    let status = child.wait().context("waiting for pytest")?;
    // pytest exit codes: 0 all passed, 1 some tests failed; 2..=5 mean interrupted,
    // internal error, usage error or nothing collected, i.e. the suite did not run.
    if !matches!(status.code(), Some(0 | 1)) {
        bail!("pytest did not complete ({status}); last output: {last}");
    }
    parse_summary(&last).with_context(|| format!("unrecognised pytest summary line: {last:?}"))
}

/// Creates the venv and installs the suite (and so its pinned deps) into it. A marker
/// file holding the suite path + pyproject.toml skips the slow pip step on later runs
/// while still reinstalling when the suite checkout moves or bumps its pins.
fn ensure_venv(suite: &Path, pyproject: &str, venv: &Path) -> Result<()> {
    let python = venv.join("bin/python");
    if !python.exists() {
        let mut c = Command::new("python3");
        c.args(["-m", "venv"]).arg(venv);
        util::run(c)?;
    }
    // The suite imports `datetime.UTC` (Python >= 3.11) although pyproject says >= 3.10:
    // fail here with a clear message instead of 100+ collection errors.
    let mut c = Command::new(&python);
    c.args(["-c", "import sys; assert sys.version_info >= (3, 11), sys.version"]);
    util::run(c).context("tuf-conformance needs Python >= 3.11 in the venv")?;

    let marker = venv.join(".tuf-conformance-installed");
    let stamp = format!("{}\n{pyproject}", suite.display());
    if std::fs::read_to_string(&marker).ok().as_deref() == Some(stamp.as_str()) {
        return Ok(());
    }
    // Editable install, as upstream's Makefile/action do: pytest runs the tests from the
    // checkout anyway, we only need tuf, securesystemslib[crypto] and pytest pinned.
    let mut c = Command::new(&python);
    c.args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-e"]).arg(suite);
    util::run(c)?;
    std::fs::write(&marker, stamp).context("writing venv marker")?;
    Ok(())
}

/// Parses e.g. "==== 2 failed, 120 passed, 1 xfailed, 3 warnings in 98.76s (0:01:38) ====".
fn parse_summary(line: &str) -> Option<Counts> {
    let body = line.trim().trim_matches('=').trim();
    let (totals, _duration) = body.rsplit_once(" in ")?;
    let mut c = Counts::default();
    let mut any = false;
    for part in totals.split(", ") {
        let (n, word) = part.trim().split_once(' ')?;
        let n: u32 = n.parse().ok()?;
        match word {
            "passed" => c.passed += n,
            "failed" | "error" | "errors" => c.failed += n,
            "xfailed" => c.xfailed += n,
            "skipped" => c.skipped += n,
            "xpassed" => c.xpassed += n,
            // "warnings", "deselected", "rerun": not outcomes we track.
            _ => {}
        }
        any = true;
    }
    any.then_some(c)
}
