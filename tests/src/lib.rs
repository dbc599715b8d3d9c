//! Shared test fixtures: the simulated Canopsis host, paths of the built guest modules, and
//! loopback servers. Used by the end-to-end tests and by `cargo xtask demo`.

pub mod canopsis_api;
pub mod chaos;
pub mod postgres;
pub mod rabbitmq;
pub mod redis;
pub mod repo_server;
pub mod site;
pub mod steprun;
pub mod tuf;

/// The simulated host, made by the same library as `canup-sim create` (step authors' tool).
pub use canup_sim as simhost;

use std::path::{Path, PathBuf};

/// The workspace's target directory (honours `CARGO_TARGET_DIR`).
pub fn target_dir() -> PathBuf {
    let dir = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    dir.canonicalize().unwrap_or(dir)
}

/// The `canup` binary built by `cargo test`/`cargo build` (the tests crate cannot name
/// another package's binary through `CARGO_BIN_EXE_*`).
pub fn canup_bin() -> PathBuf {
    let path = target_dir().join("debug/canup");
    assert!(path.is_file(), "{} is missing: run the tests with `cargo xtask test`", path.display());
    path
}

/// The `canup-sim` program (the simulated host's stub and its authors' tool), built like
/// [`canup_bin`].
pub fn sim_bin() -> PathBuf {
    let path = target_dir().join("debug/canup-sim");
    assert!(path.is_file(), "{} is missing: run the tests with `cargo xtask test`", path.display());
    path
}

/// The cargo profile guests are built with (see the workspace `Cargo.toml`).
pub const GUEST_PROFILE: &str = "step";

/// A guest component built by `cargo xtask build-guests` (run by `cargo xtask test`).
pub fn guest_wasm(crate_name: &str) -> PathBuf {
    let path = target_dir().join("wasm32-wasip2").join(GUEST_PROFILE).join(format!("{}.wasm", crate_name.replace('-', "_")));
    assert!(path.is_file(), "guest module {} is missing: run the tests with `cargo xtask test`, which builds the guests first", path.display());
    path
}

/// Serves `router` on an ephemeral 127.0.0.1 port for the life of the current runtime.
pub async fn serve(router: axum::Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    addr
}

/// Whether a process still runs (a zombie counts as gone: it runs nothing).
pub fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next()).is_some_and(|state| state != "Z"),
        Err(_) => false,
    }
}

/// An operator's policy: every program, file and endpoint the published steps may use. It is
/// the policy shipped in the RPM's default `/etc/canup/canup.toml` (everything else in it is
/// commented out): the tests and the demo run under exactly what operators get.
/// The shipped canup.toml with the shipped rules in it, as the operator's own: a site that
/// needs no canup package installed.
pub const OPERATOR_POLICY: &str = concat!(include_str!("../../host/dist/canup.toml"), "\n", include_str!("../../host/dist/policy.toml"));

/// The rules of [`OPERATOR_POLICY`], with `{compose_dir}` at its default.
pub fn shipped_policy() -> canup::capabilities::CapabilitySet {
    #[derive(serde::Deserialize)]
    struct Shipped {
        policy: canup::capabilities::CapabilitySet,
    }
    let shipped: Shipped = toml::from_str(OPERATOR_POLICY).expect("the shipped policy parses");
    shipped.policy.at_compose_dir(canup::capabilities::DEFAULT_COMPOSE_DIR)
}

/// A simulated site's `[backup]` unless its policy fragment has one: its PostgreSQL URL leads
/// nowhere (tests/tests/rollback.rs dumps a real server), so no database is dumped; the
/// package list and the configuration directories are saved on every run all the same.
pub const SITE_BACKUP: &str = "\n[backup]\ndatabases = \"never\"\n";

/// Writes the `canup.toml` of a simulated site at `config`: the repository served at
/// `repo_url` (its first root from the published `repo`), state in `state`, `policy`, and the
/// `rabbitmq` and `canopsis-api` endpoints, their password files beside `config`, and the test
/// broker's statistics interval for the drain check.
pub fn write_site_config(config: &Path, repo_url: &str, repo: &Path, state: &Path, policy: &str, api: &canopsis_api::CanopsisApi) -> anyhow::Result<()> {
    let dir = config.parent().ok_or_else(|| anyhow::anyhow!("{} has no directory", config.display()))?;
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        config,
        format!(
            "repository = \"{repo_url}\"\ntrusted_root = \"{}\"\nstate_dir = \"{}\"\n\n{policy}\n{}{}{}\n[settings]\ndrain_stats_interval_ms = \"{}\"\n",
            repo.join("metadata/1.root.json").display(),
            state.display(),
            rabbitmq::endpoint_toml(&dir.join("rabbitmq.pw"))?,
            api.endpoint_toml(&dir.join("api.pw"))?,
            if policy.lines().any(|l| l.trim() == "[backup]") { "" } else { SITE_BACKUP },
            rabbitmq::STATS_INTERVAL_MS,
        ),
    )?;
    Ok(())
}

/// The workspace root.
pub fn workspace_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    dir.canonicalize().unwrap_or(dir)
}

/// Guest crates under `dir` (relative to the workspace): (package name, crate directory).
pub fn crates_under(dir: &str) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(workspace_dir().join(dir)) else { return Ok(found) };
    for entry in entries {
        let path = entry?.path();
        let Ok(text) = std::fs::read_to_string(path.join("Cargo.toml")) else { continue };
        let name = text
            .lines()
            .find_map(|l| l.strip_prefix("name = ").map(|n| n.trim().trim_matches('"').to_owned()))
            .ok_or_else(|| anyhow::anyhow!("no package name in {}/Cargo.toml", path.display()))?;
        found.push((name, path));
    }
    found.sort();
    Ok(found)
}

/// A `steps/*/step.toml`: its directory, its parsed manifest and, for a crate, its module.
pub struct StepSource {
    pub dir: PathBuf,
    pub steps: canup::manifest::ReleaseSteps,
    pub module: Option<PathBuf>,
}

/// Every `step.toml` under `steps/`, with the module its crate builds (a release with nothing
/// to automate has a step.toml and no crate).
pub fn step_sources() -> anyhow::Result<Vec<StepSource>> {
    let crates = crates_under("steps")?;
    let mut found = Vec::new();
    for entry in std::fs::read_dir(workspace_dir().join("steps"))? {
        let dir = entry?.path();
        let toml = dir.join("step.toml");
        if !toml.is_file() {
            continue;
        }
        let steps = canup::manifest::ReleaseSteps::load(&toml)?;
        let module = crates
            .iter()
            .find(|(_, d)| d == &dir)
            .map(|(name, _)| target_dir().join("wasm32-wasip2").join(GUEST_PROFILE).join(format!("{}.wasm", name.replace('-', "_"))));
        found.push(StepSource { dir, steps, module });
    }
    found.sort_by(|a, b| a.dir.cmp(&b.dir));
    Ok(found)
}

/// Publishes every release under `steps/` into a new repository at `out`, signed with a
/// development key kept in `keys_dir` (created when missing), through the vendor commands of
/// `canup` alone, as the vendor would: `repo keygen`, `repo init`, `repo add-shared` for each
/// shared step.toml (`applies`), then `repo add-release` for each release, ascending. Returns
/// the key path. The guests must be built.
pub fn publish_steps(canup: &Path, out: &Path, keys_dir: &Path) -> anyhow::Result<PathBuf> {
    use anyhow::{Context, bail};
    use std::ffi::OsString;
    let run = |args: Vec<OsString>| -> anyhow::Result<()> {
        let out = std::process::Command::new(canup).args(&args).output().with_context(|| format!("running {}", canup.display()))?;
        if !out.status.success() {
            bail!("canup {:?} failed: {}", args, String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    };
    std::fs::create_dir_all(keys_dir)?;
    let key = keys_dir.join("dev.key");
    if !key.exists() {
        run(vec!["repo".into(), "keygen".into(), "--out".into(), key.clone().into()])?;
    }
    if out.exists() {
        if !out.join("metadata/1.root.json").exists() && std::fs::read_dir(out)?.next().is_some() {
            bail!("{} exists and is not a repository: refusing to replace it", out.display());
        }
        std::fs::remove_dir_all(out)?;
    }
    run(vec!["repo".into(), "init".into(), out.into(), "--root-key".into(), key.clone().into()])?;
    let sources = step_sources()?;
    for shared in sources.iter().filter(|s| s.steps.applies.is_some()) {
        let module = shared.module.as_ref().with_context(|| format!("{} has steps but no crate", shared.dir.display()))?;
        let toml = shared.dir.join("step.toml");
        run(vec![
            "repo".into(),
            "add-shared".into(),
            out.into(),
            "--steps".into(),
            toml.into(),
            "--module".into(),
            module.into(),
            "--key".into(),
            key.clone().into(),
        ])?;
    }
    let mut releases: Vec<&StepSource> = sources.iter().filter(|s| s.steps.release.is_some()).collect();
    releases.sort_by_key(|s| s.steps.release.clone());
    for release in releases {
        let mut args: Vec<OsString> =
            vec!["repo".into(), "add-release".into(), out.into(), "--steps".into(), release.dir.join("step.toml").into(), "--key".into(), key.clone().into()];
        if let Some(module) = &release.module {
            args.extend(["--module".into(), module.clone().into()]);
        }
        run(args)?;
    }
    let catalogue = Catalogue::load()?;
    for b in &catalogue.barrier {
        let mut args: Vec<OsString> = vec!["repo".into(), "barrier".into(), out.into(), "--release".into(), canup::version::text(&b.release).into()];
        args.extend(["--guide".into(), b.guide.clone().into(), "--url".into(), b.url.clone().into(), "--reason".into(), b.reason.clone().into()]);
        args.extend(["--key".into(), key.clone().into()]);
        run(args)?;
    }
    for w in &catalogue.withdrawn {
        let args: Vec<OsString> = vec![
            "repo".into(),
            "withdraw".into(),
            out.into(),
            "--release".into(),
            canup::version::text(&w.release).into(),
            "--reason".into(),
            w.reason.clone().into(),
        ];
        run([args, vec!["--key".into(), key.clone().into()]].concat())?;
    }
    Ok(key)
}

/// `steps/catalogue.toml`: what the vendor decides about published releases after the fact,
/// applied with `canup repo barrier` and `canup repo withdraw` once every release is published.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalogue {
    #[serde(default)]
    pub barrier: Vec<CatalogueBarrier>,
    #[serde(default)]
    pub withdrawn: Vec<CatalogueWithdrawn>,
}

/// A release whose migration guide canup never plans across.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogueBarrier {
    #[serde(deserialize_with = "canup::version::deserialize")]
    pub release: semver::Version,
    pub guide: String,
    pub url: String,
    pub reason: String,
}

/// A release the vendor withdrew, with the note's reason.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogueWithdrawn {
    #[serde(deserialize_with = "canup::version::deserialize")]
    pub release: semver::Version,
    pub reason: String,
}

impl Catalogue {
    pub fn load() -> anyhow::Result<Self> {
        let path = workspace_dir().join("steps/catalogue.toml");
        let text = std::fs::read_to_string(&path).map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }
}

/// The project's release crates, published once per test binary with the real `canup repo`
/// commands into a directory that lives as long as the binary: (repository, development key).
/// Tests work on their own copy ([`copy_dir`]).
pub fn pristine_repo() -> &'static (PathBuf, PathBuf) {
    static PRISTINE: std::sync::OnceLock<(PathBuf, PathBuf, tempfile::TempDir)> = std::sync::OnceLock::new();
    static REF: std::sync::OnceLock<(PathBuf, PathBuf)> = std::sync::OnceLock::new();
    REF.get_or_init(|| {
        let (repo, key, _) = PRISTINE.get_or_init(|| {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let repo = dir.path().join("repo");
            let key = publish_steps(&canup_bin(), &repo, &target_dir().join("dev-keys")).expect("publishing the project's releases");
            (repo, key, dir)
        });
        (repo.clone(), key.clone())
    })
}

/// Every file under `dir` with its content, by relative path: for asserting that something
/// left a tree untouched.
pub fn tree(dir: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("reading {}: {e}", d.display())) {
            let path = e.expect("a directory entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let content = std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
                out.insert(path.strip_prefix(dir).unwrap_or(&path).to_path_buf(), content);
            }
        }
    }
    out
}

/// Copies a directory tree (files and directories only).
pub fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let dest = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &dest)?;
        } else {
            std::fs::copy(e.path(), dest)?;
        }
    }
    Ok(())
}
