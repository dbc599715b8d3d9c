//! The step author's guide (`sdk/README.md`, "From zero to an applied release") run as
//! written: every `sh` block of that section, in order, in one shell, in an empty directory
//! outside the repository, with the `canup` and `canup-sim` the other tests use. The scaffold
//! is built with a cold cargo of its own (its own target directory): what an author's first
//! build does.

use std::process::Command;

use canup_tests::simhost::SimHost;

/// The `sh` blocks of the README's section `title`, in order.
fn section_commands(readme: &str, title: &str) -> String {
    let start = readme.find(&format!("\n## {title}\n")).unwrap_or_else(|| panic!("sdk/README.md has no section {title:?}"));
    let section = &readme[start + 1..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |end| end + 3)];
    let mut script = String::new();
    let mut in_block = false;
    for line in section.lines() {
        match (in_block, line.trim_end()) {
            (false, "```sh") => in_block = true,
            (true, "```") => in_block = false,
            (true, command) => {
                script.push_str(command);
                script.push('\n');
            }
            _ => {}
        }
    }
    assert!(!in_block, "an unterminated sh block in {title:?}");
    script
}

#[test]
fn the_step_authors_guide_runs_as_written_from_an_empty_directory() {
    let workspace = canup_tests::workspace_dir();
    let readme = std::fs::read_to_string(workspace.join("sdk/README.md")).unwrap();
    let commands = section_commands(&readme, "From zero to an applied release");
    for expected in
        ["canup step new", "cargo build --target wasm32-wasip2", "canup repo add-shared", "canup repo add-release", "canup-sim create", "apply --to 3.41.0"]
    {
        assert!(commands.contains(expected), "the guide no longer runs {expected:?}:\n{commands}");
    }
    let dir = tempfile::tempdir().unwrap();
    assert!(!dir.path().starts_with(&workspace), "the guide runs outside the repository");
    // The binaries the other tests use, first on PATH; nothing of this test's own cargo
    // (its target directory, its package variables) leaks into the author's builds.
    let bin = canup_tests::canup_bin().parent().unwrap().to_path_buf();
    assert!(canup_tests::sim_bin().starts_with(&bin));
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let mut shell = Command::new("bash");
    shell.arg("-c").arg(format!("set -eux\n{commands}")).current_dir(dir.path()).env("PATH", path).env("CANUP_SRC", &workspace);
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy().into_owned();
        if (name.starts_with("CARGO_") && name != "CARGO_HOME") || name == "CANUP" || name == "CANUP_SIM" || name.starts_with("CANUP_") {
            shell.env_remove(&name);
        }
    }
    let out = shell.output().unwrap();
    let shown = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the guide failed ({}):\n{shown}", out.status);

    // The scaffolded crate's own test ran (the step twice on a simulated host) and passed.
    assert!(shown.contains("test the_step_runs_on_a_simulated_host_and_a_second_run_changes_nothing ... ok"), "{shown}");
    // The release got the shared steps registered for its range, listed by add-release.
    assert!(shown.contains("shared steps: detect; procedure-3.x/yum-update, procedure-3.x/canopsinit; compose-check, compose-update"), "{shown}");
    // The operator's apply ran the standard procedure and the release's own step, and the
    // version changed; the second apply ran nothing.
    let host = SimHost::open(&dir.path().join("host")).unwrap();
    assert_eq!(host.read("/opt/canopsis/VERSION.txt").unwrap(), "Canopsis version 3.41.0\n");
    let calls: Vec<String> = host.calls().unwrap().iter().map(|c| c.line()).collect();
    let updates: Vec<&String> = calls.iter().filter(|c| c.starts_with("yum ")).collect();
    assert_eq!(updates.len(), 1, "one package update, by the first apply: {calls:#?}");
    assert!(updates[0].ends_with("update -y canopsis-core-3.41.0"), "pinned to the release: {calls:#?}");
    assert!(calls.iter().any(|c| c.starts_with("canopsinit ")), "the standard procedure's canopsinit ran: {calls:#?}");
    let config = host.read("/opt/canopsis/etc/default_configuration.toml").unwrap();
    assert!(config.contains("ReconnectRetries = 3"), "the release's own step ran: {config}");
}
