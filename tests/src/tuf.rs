//! python-tuf, the TUF reference implementation, as a second opinion on canup's repository:
//! `tests/tuf/tufctl.py` (python-tuf 7.0.1 from PyPI, in a virtualenv under `target/`) reads
//! what canup publishes, writes repositories canup must read, and forges the attacks.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{Context, bail};

use crate::{target_dir, workspace_dir};

/// The virtualenv's python, created (and its requirements installed) on first use. The
/// requirements file's content is the marker: a changed pin reinstalls.
pub fn python() -> anyhow::Result<PathBuf> {
    static READY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    READY.get_or_init(|| ensure_venv().map_err(|e| format!("{e:#}"))).clone().map_err(anyhow::Error::msg)
}

fn ensure_venv() -> anyhow::Result<PathBuf> {
    let venv = target_dir().join("tuf-venv");
    let python = venv.join("bin/python");
    let requirements = workspace_dir().join("tests/tuf/requirements.txt");
    let wanted = std::fs::read(&requirements).with_context(|| format!("reading {}", requirements.display()))?;
    let marker = venv.join("canup-requirements.txt");
    if python.is_file() && std::fs::read(&marker).ok().as_deref() == Some(&wanted[..]) {
        return Ok(python);
    }
    // Several test binaries may get here at once: the first creates, the others wait for it.
    std::fs::create_dir_all(target_dir())?;
    let lock = std::fs::File::create(target_dir().join("tuf-venv.lock"))?;
    let _guard = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, e)| anyhow::anyhow!("locking the venv: {e}"))?;
    if python.is_file() && std::fs::read(&marker).ok().as_deref() == Some(&wanted[..]) {
        return Ok(python);
    }
    run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    run(Command::new(&python).args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r"]).arg(&requirements))?;
    std::fs::write(&marker, wanted)?;
    Ok(python)
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| format!("starting {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// `tufctl.py ARGS`: its JSON answer, or its one-line error.
pub fn tufctl<I, S>(args: I) -> Result<serde_json::Value, String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let python = python().map_err(|e| e.to_string())?;
    let out = Command::new(python).arg(workspace_dir().join("tests/tuf/tufctl.py")).args(args).output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("tufctl printed no JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// python-tuf's client (ngclient) reading the repository at `url` as a long-lived client whose
/// state is in `dir` (seeded from `root` on first use), downloading the release index.
pub fn ngclient_read(url: &str, root: &Path, dir: &Path) -> Result<serde_json::Value, String> {
    let (metadata, targets) = (format!("{url}/metadata/"), format!("{url}/targets/"));
    let args: [&std::ffi::OsStr; 11] = [
        "read".as_ref(),
        "--metadata-url".as_ref(),
        metadata.as_ref(),
        "--targets-url".as_ref(),
        targets.as_ref(),
        "--trusted-root".as_ref(),
        root.as_os_str(),
        "--dir".as_ref(),
        dir.as_os_str(),
        "--target".as_ref(),
        "index.json".as_ref(),
    ];
    tufctl(args)
}
