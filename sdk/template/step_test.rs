//! The step on a simulated Canopsis host, run by the canup that will run it, twice: the
//! second run must change nothing. Needs `canup` and `canup-sim` on PATH (or in $CANUP and
//! $CANUP_SIM) and the module built first:
//! `cargo build --target wasm32-wasip2 --profile step && cargo test`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const RELEASE: &str = "{release}";
const MODULE: &str = "{module}";

fn tool(var: &str, name: &str) -> Command {
    Command::new(std::env::var_os(var).unwrap_or_else(|| name.into()))
}

fn run(command: &mut Command) -> Output {
    let out = command.output().unwrap_or_else(|e| panic!("cannot run {command:?}: {e} (are canup and canup-sim on PATH?)"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{command:?} failed ({}):\n{text}", out.status);
    out
}

/// The module `cargo build --target wasm32-wasip2 --profile step` made, refused when older
/// than the source (a stale module would test old code).
fn module() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| dir.join("target"), PathBuf::from);
    let module = target.join("wasm32-wasip2/step").join(MODULE);
    let modified = |p: &Path| p.metadata().and_then(|m| m.modified()).ok();
    let built = modified(&module).unwrap_or_else(|| panic!("{} is missing: build it with `cargo build --target wasm32-wasip2 --profile step`", module.display()));
    assert!(modified(&dir.join("src/lib.rs")).is_some_and(|s| s <= built), "{} is older than src/lib.rs: build it again", module.display());
    module
}

/// Every file of the simulated host but its call log and its stub program.
fn files(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("the simulated host") {
            let path = entry.expect("a directory entry").path();
            let relative = path.strip_prefix(root).expect("beneath the host").to_path_buf();
            if relative.starts_with("var/log/canup-sim") || relative.starts_with("usr/libexec/canup-sim") || path.is_symlink() {
                continue;
            }
            if path.is_dir() {
                dirs.push(path);
            } else {
                out.insert(relative, std::fs::read(&path).expect("a file of the host"));
            }
        }
    }
    out
}

#[test]
fn the_step_runs_on_a_simulated_host_and_a_second_run_changes_nothing() {
    let module = module();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    // Under the crate's own target directory: nothing of the test lands in a shared /tmp.
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| dir.join("target"), PathBuf::from);
    let work = target.join(format!("step-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let root = work.join("host");
    // The host as the step finds it: the packages of the release are installed (post-update).
    run(tool("CANUP_SIM", "canup-sim").arg("create").arg(&root).args(["--version", RELEASE, "--edition", "cat", "--method", "packages"]));
    let step = || {
        let mut canup = tool("CANUP", "canup");
        canup.arg("--sysroot").arg(&root).arg("--state-dir").arg(work.join("state")).args(["step", "run"]).arg(&module);
        canup.arg("--manifest").arg(dir.join("step.toml")).arg("--policy").arg(dir.join("operator-policy.toml"));
        run(canup.args(["--edition", "cat", "--target", RELEASE, "--yes"]))
    };
    let before = files(&root);
    step();
    let after_first = files(&root);
    // What the example changes: replace with what your step changes.
    let config = String::from_utf8_lossy(&after_first[Path::new("opt/canopsis/etc/default_configuration.toml")]).into_owned();
    assert!(config.contains("ReconnectRetries = 3") && config.contains("PrefetchCount = 10000"), "{config}");
    assert_ne!(before, after_first);
    step();
    assert_eq!(files(&root), after_first, "the second run changed something");
    let _ = std::fs::remove_dir_all(&work);
}
