//! The `canup` command line.
//!
//! Exit codes (also in `--help`):
//! - 0: success;
//! - 1: a step failed or stopped (error, trap, limit);
//! - 2: bad usage, configuration or manifest;
//! - 3: a module was refused before running (invalid, wrong step API, cannot link);
//! - 4: the release repository failed verification (signatures, expiry, rollback, digests).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use semver::Version;

use crate::audit::{AuditLog, AuditRecord, Decision};
use crate::backup::Backups;
use crate::capabilities::Grant;
use crate::config::{Config, DEFAULT_CONFIG};
use crate::manifest::{Edition, Method, ReleaseSteps};
use crate::repository::vendor::{self, Expiry, RoleKeyFiles, VendorError};
use crate::repository::{self, LoadOptions, Repository};
use crate::sandbox::{Sandbox, SandboxError, StepContext, StepEnv, StepReport};
use crate::sysroot::Sysroot;
use crate::ui::ConsoleUi;

const EXIT_CODES: &str = "Exit codes: 0 success; 1 a step failed or stopped; 2 bad usage, configuration or manifest; \
3 a module was refused before running (invalid, wrong step API, cannot link); \
4 the release repository failed verification (signatures, expiry, rollback, digests).";

#[derive(Debug, Parser)]
#[command(name = "canup", version, about = "Upgrade a single-node Canopsis with signed, sandboxed release steps", after_help = EXIT_CODES)]
pub struct Cli {
    /// Operator configuration.
    #[arg(long, global = true, default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Tools for step authors.
    #[command(subcommand)]
    Step(StepCommand),
    /// The signed release repository: vendor tools, and `verify` for operators.
    #[command(subcommand)]
    Repo(RepoCommand),
}

#[derive(Debug, Args)]
pub struct ExpiryArgs {
    /// Days the root metadata stays valid.
    #[arg(long, default_value_t = 365)]
    pub root_days: i64,
    #[arg(long, default_value_t = 90)]
    pub targets_days: i64,
    #[arg(long, default_value_t = 14)]
    pub snapshot_days: i64,
    /// Short on purpose: a cron job refreshes it (`canup repo refresh-timestamp`).
    #[arg(long, default_value_t = 1)]
    pub timestamp_days: i64,
}

impl ExpiryArgs {
    fn expiry(&self) -> Expiry {
        Expiry { root_days: self.root_days, targets_days: self.targets_days, snapshot_days: self.snapshot_days, timestamp_days: self.timestamp_days }
    }
}

#[derive(Debug, Subcommand)]
pub enum RepoCommand {
    /// Create an ed25519 signing key (PKCS#8 DER, mode 0600). Keep it out of the repository.
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// Create a repository: signed root and an empty release index.
    Init {
        dir: PathBuf,
        /// Root key(s); the other roles use them too unless given their own.
        #[arg(long = "root-key", required = true)]
        root_keys: Vec<PathBuf>,
        #[arg(long = "targets-key")]
        targets_keys: Vec<PathBuf>,
        #[arg(long = "snapshot-key")]
        snapshot_keys: Vec<PathBuf>,
        #[arg(long = "timestamp-key")]
        timestamp_keys: Vec<PathBuf>,
        /// Signatures needed for each role.
        #[arg(long, default_value_t = 1)]
        threshold: u64,
        #[command(flatten)]
        expiry: ExpiryArgs,
    },
    /// Publish a release: its built module and the step.toml describing its steps.
    AddRelease {
        dir: PathBuf,
        /// The release crate's step.toml.
        #[arg(long)]
        steps: PathBuf,
        /// The built component (.wasm).
        #[arg(long)]
        module: PathBuf,
        /// Publication date (YYYY-MM-DD); defaults to `published` in step.toml.
        #[arg(long)]
        published: Option<String>,
        /// Signing keys (targets, snapshot, timestamp).
        #[arg(long = "key", required = true)]
        keys: Vec<PathBuf>,
        #[command(flatten)]
        expiry: ExpiryArgs,
    },
    /// Mark a release withdrawn; operators are told the reason and it is never planned.
    Withdraw {
        dir: PathBuf,
        #[arg(long)]
        release: Version,
        #[arg(long)]
        reason: String,
        #[arg(long = "key", required = true)]
        keys: Vec<PathBuf>,
        #[command(flatten)]
        expiry: ExpiryArgs,
    },
    /// Re-sign targets, snapshot and timestamp with new versions and expiries.
    Sign {
        dir: PathBuf,
        #[arg(long = "key", required = true)]
        keys: Vec<PathBuf>,
        #[command(flatten)]
        expiry: ExpiryArgs,
    },
    /// Sign a fresh timestamp (run it from cron, more often than it expires).
    RefreshTimestamp {
        dir: PathBuf,
        #[arg(long = "key", required = true)]
        keys: Vec<PathBuf>,
        #[arg(long, default_value_t = 1)]
        days: i64,
    },
    /// Replace the root key(s): writes the next N.root.json signed by old and new keys.
    RotateRoot {
        dir: PathBuf,
        #[arg(long = "old-key", required = true)]
        old_keys: Vec<PathBuf>,
        #[arg(long = "new-key", required = true)]
        new_keys: Vec<PathBuf>,
        #[command(flatten)]
        expiry: ExpiryArgs,
    },
    /// Check a repository (signatures, expiry, every module's digest) and the local cache.
    Verify {
        /// Repository URL or directory; defaults to the config's `repository`.
        #[arg(long)]
        repo: Option<String>,
        /// Root of trust; defaults to the config's `trusted_root`, then the built-in one.
        #[arg(long)]
        trusted_root: Option<PathBuf>,
        /// Cache directory; defaults to STATE_DIR/cache/repository.
        #[arg(long)]
        cache_dir: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum StepCommand {
    /// Run one step module, as canup would during an upgrade, and print its audit.
    Run(StepRunArgs),
}

#[derive(Debug, Args)]
pub struct StepRunArgs {
    /// The step component (.wasm).
    pub module: PathBuf,
    /// The release's step.toml.
    #[arg(long)]
    pub manifest: PathBuf,
    /// Which step of the manifest (needed when it lists several).
    #[arg(long)]
    pub step: Option<String>,
    /// Operator config holding the policy, endpoints and limits (canup.toml format);
    /// defaults to --config.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Map every absolute path the step uses under DIR.
    #[arg(long)]
    pub sysroot: Option<PathBuf>,
    /// Audit log, backups and compiled-module cache; defaults to the config's state_dir.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    #[arg(long, default_value = "0.0.0")]
    pub installed: Version,
    /// Target version; defaults to the manifest's release.
    #[arg(long)]
    pub target: Option<Version>,
    #[arg(long, value_enum, default_value = "core")]
    pub edition: EditionArg,
    #[arg(long, value_enum, default_value = "packages")]
    pub method: MethodArg,
    /// Answer yes to the step's confirmations.
    #[arg(long)]
    pub yes: bool,
    /// Treat manual instructions as done.
    #[arg(long)]
    pub accept_manual: bool,
    /// Print the report and audit as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum EditionArg {
    Core,
    Cat,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum MethodArg {
    Packages,
    Compose,
}

/// A failure with the exit code it maps to.
#[derive(Debug)]
struct Exit(u8, anyhow::Error);

fn usage(e: impl Into<anyhow::Error>) -> Exit {
    Exit(2, e.into())
}

pub fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("CANUP_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(Exit(code, e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(code)
        }
    }
}

async fn dispatch(cli: Cli) -> Result<u8, Exit> {
    match cli.command {
        Command::Step(StepCommand::Run(args)) => step_run(&cli.config, args).await,
        Command::Repo(cmd) => repo(&cli.config, cmd).await,
    }
}

/// Loads the config when it exists; vendor commands and step authors may have none.
fn config_or_default(path: &std::path::Path) -> Result<Config, Exit> {
    if path.exists() { Config::load(path).map_err(usage) } else { Ok(Config::default()) }
}

async fn repo(config_path: &std::path::Path, cmd: RepoCommand) -> Result<u8, Exit> {
    let vendor_err = |e: VendorError| match e {
        VendorError::Usage(_) => usage(e),
        other => Exit(1, other.into()),
    };
    match cmd {
        RepoCommand::Keygen { out } => {
            let id = vendor::keygen(&out).await.map_err(vendor_err)?;
            println!("created {} (key id {id})", out.display());
        }
        RepoCommand::Init { dir, root_keys, targets_keys, snapshot_keys, timestamp_keys, threshold, expiry } => {
            let keys = RoleKeyFiles { root: root_keys, targets: targets_keys, snapshot: snapshot_keys, timestamp: timestamp_keys };
            vendor::init(&dir, &keys, threshold, &expiry.expiry()).await.map_err(vendor_err)?;
            println!("initialised {} (root: {}/metadata/1.root.json)", dir.display(), dir.display());
        }
        RepoCommand::AddRelease { dir, steps, module, published, keys, expiry } => {
            let release = ReleaseSteps::load(&steps).map_err(usage)?;
            let bytes = std::fs::read(&module).with_context(|| format!("cannot read module {}", module.display())).map_err(usage)?;
            let published = published
                .or_else(|| release.published.clone())
                .ok_or_else(|| usage(anyhow::anyhow!("no publication date: pass --published or set `published` in {}", steps.display())))?;
            vendor::add_release(&dir, &keys, &expiry.expiry(), &release, &bytes, &published).await.map_err(vendor_err)?;
            println!("published release {} ({} steps) in {}", release.release, release.steps.len(), dir.display());
        }
        RepoCommand::Withdraw { dir, release, reason, keys, expiry } => {
            vendor::withdraw(&dir, &keys, &expiry.expiry(), &release, &reason).await.map_err(vendor_err)?;
            println!("withdrew release {release}");
        }
        RepoCommand::Sign { dir, keys, expiry } => {
            vendor::sign(&dir, &keys, &expiry.expiry()).await.map_err(vendor_err)?;
            println!("signed {}", dir.display());
        }
        RepoCommand::RefreshTimestamp { dir, keys, days } => {
            let v = vendor::refresh_timestamp(&dir, &keys, days).await.map_err(vendor_err)?;
            println!("timestamp version {v}, valid {days} day(s)");
        }
        RepoCommand::RotateRoot { dir, old_keys, new_keys, expiry } => {
            let v = vendor::rotate_root(&dir, &old_keys, &new_keys, &expiry.expiry()).await.map_err(vendor_err)?;
            println!("wrote {}/metadata/{v}.root.json; re-sign the other roles if their keys changed", dir.display());
        }
        RepoCommand::Verify { repo, trusted_root, cache_dir } => return verify(config_path, repo, trusted_root, cache_dir).await,
    }
    Ok(0)
}

async fn verify(config_path: &std::path::Path, repo: Option<String>, trusted: Option<PathBuf>, cache_dir: Option<PathBuf>) -> Result<u8, Exit> {
    let config = config_or_default(config_path)?;
    let location = repo.or(config.repository.clone()).ok_or_else(|| usage(anyhow::anyhow!("no repository: pass --repo or set `repository` in {}", config_path.display())))?;
    let root = repository::trusted_root(trusted.as_deref().or(config.trusted_root.as_deref())).map_err(usage)?;
    let cache = cache_dir.unwrap_or_else(|| config.state_dir().join("cache/repository"));
    let repo = Repository::open(&location, &root, &cache, &LoadOptions::default()).await.map_err(|e| Exit(4, e.into()))?;
    println!("repository {location}: metadata verified");
    let now = jiff::Timestamp::now();
    for (role, expires) in repo.expirations() {
        let left = expires.duration_since(now);
        println!("  {role:<9} expires {expires} (in {:.1} days)", left.as_secs_f64() / 86400.0);
    }
    let index = repo.index().await.map_err(|e| Exit(4, e.into()))?;
    let mut modules = std::collections::BTreeSet::new();
    for release in &index.releases {
        let state = release.withdrawn.as_ref().map(|r| format!(" WITHDRAWN: {r}")).unwrap_or_default();
        println!("  release {} ({}) {} steps{state}", release.version, release.published, release.steps.len());
        for step in &release.steps {
            if modules.insert(step.module.clone()) {
                repo.module(step).await.map_err(|e| Exit(4, e.into()))?;
            }
        }
    }
    println!("  {} step modules verified (length and sha256)", modules.len());
    let stale = repo.stale_cache_entries();
    if stale.is_empty() {
        println!("cache {}: up to date", cache.display());
    } else {
        println!("cache {}: {} stale entries (not signed by this repository or altered):", cache.display(), stale.len());
        for p in stale {
            println!("  {}", p.display());
        }
    }
    Ok(0)
}

fn run_id(prefix: &str) -> String {
    let secs = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    format!("{prefix}-{secs}-{}", std::process::id())
}

async fn step_run(config_path: &std::path::Path, args: StepRunArgs) -> Result<u8, Exit> {
    let config = match &args.policy {
        Some(p) => Config::load(p).map_err(usage)?,
        None => config_or_default(config_path)?,
    };
    let release = ReleaseSteps::load(&args.manifest).map_err(usage)?;
    let manifest = release.select(args.step.as_deref(), &args.manifest).map_err(usage)?.clone();
    let wasm = std::fs::read(&args.module).with_context(|| format!("cannot read module {}", args.module.display())).map_err(usage)?;
    let state_dir = args.state_dir.clone().unwrap_or_else(|| config.state_dir());
    let sysroot = match &args.sysroot {
        Some(dir) => Sysroot::new(dir).map_err(usage)?,
        None => Sysroot::host(),
    };
    let grant = Grant::new(&manifest.id, &manifest.capabilities, &config.policy).map_err(usage)?;

    let sandbox = Sandbox::new(Some(&state_dir.join("cache/compiled"))).map_err(|e| Exit(2, e.into()))?;
    let load_start = std::time::Instant::now();
    let loaded = sandbox.load(&manifest.id, &wasm, &release.api).map_err(|e| {
        let code = if matches!(e, SandboxError::Cache(_) | SandboxError::Engine(_)) { 2 } else { 3 };
        Exit(code, e.into())
    })?;
    let load_time = load_start.elapsed();

    let run = run_id("step-run");
    let audit = Arc::new(AuditLog::open(&state_dir.join("audit.jsonl"), &run).map_err(|e| usage(anyhow::anyhow!("audit log in {}: {e}", state_dir.display())))?);
    let backups = Backups::open(&state_dir, &run).map_err(|e| usage(anyhow::anyhow!("backups in {}: {e}", state_dir.display())))?;
    let env = StepEnv {
        grant,
        sysroot,
        endpoints: Arc::new(config.endpoints.clone()),
        backups,
        audit: audit.clone(),
        ui: Arc::new(ConsoleUi { assume_yes: args.yes, accept_manual: args.accept_manual, min_level: None }),
        context: StepContext {
            step_id: manifest.id.clone(),
            phase: manifest.phase,
            installed: args.installed.clone(),
            target: args.target.clone().unwrap_or_else(|| release.release.clone()),
            release: release.release.clone(),
            edition: Some(match args.edition {
                EditionArg::Core => Edition::Core,
                EditionArg::Cat => Edition::Cat,
            }),
            method: Some(match args.method {
                MethodArg::Packages => Method::Packages,
                MethodArg::Compose => Method::Compose,
            }),
            dry_run: false,
        },
        limits: config.limits.resolve(),
        recorded: Arc::default(),
    };
    let report = sandbox.run(&loaded, env).await;
    let records = audit.records();
    if args.json {
        print_json(&report, &records, loaded.from_cache, load_time);
    } else {
        print_human(&report, &records, loaded.from_cache, load_time);
    }
    Ok(if report.result.is_ok() { 0 } else { 1 })
}

fn print_json(report: &StepReport, audit: &[AuditRecord], from_cache: bool, load_time: std::time::Duration) {
    let value = serde_json::json!({
        "step": report.step,
        "module_sha256": report.module_sha256,
        "compiled_from_cache": from_cache,
        "load_ms": load_time.as_secs_f64() * 1000.0,
        "outcome": match &report.result { Ok(()) => "succeeded".to_owned(), Err(e) => e.to_string() },
        "succeeded": report.result.is_ok(),
        "duration_ms": report.duration.as_secs_f64() * 1000.0,
        "stdout": report.stdout.text(),
        "stdout_dropped": report.stdout.dropped,
        "stderr": report.stderr.text(),
        "stderr_dropped": report.stderr.dropped,
        "audit": audit,
    });
    println!("{}", serde_json::to_string_pretty(&value).unwrap_or_default());
}

fn print_human(report: &StepReport, audit: &[AuditRecord], from_cache: bool, load_time: std::time::Duration) {
    for (name, c) in [("stdout", &report.stdout), ("stderr", &report.stderr)] {
        if !c.bytes.is_empty() {
            println!("--- step {name} ---");
            print!("{}", c.text());
            if !c.text().ends_with('\n') {
                println!();
            }
        }
        if c.dropped > 0 {
            println!("--- {} more bytes of {name} dropped (limit) ---", c.dropped);
        }
    }
    println!("--- audit ({} decisions) ---", audit.len());
    for r in audit {
        let mark = match r.decision {
            Decision::Allowed => "allowed",
            Decision::Denied => "DENIED ",
        };
        println!("{mark} {:<11} {} -> {} ({} us)", r.capability, r.args, r.result, r.duration_us);
    }
    let cache = format!("module {} in {:.1} ms", if from_cache { "loaded from the compiled cache" } else { "compiled" }, load_time.as_secs_f64() * 1000.0);
    match &report.result {
        Ok(()) => println!("step {} succeeded in {:.1} ms ({cache})", report.step, report.duration.as_secs_f64() * 1000.0),
        Err(e) => println!("step {} FAILED: {e}", report.step),
    }
}
