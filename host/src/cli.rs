//! The `canup` command line.
//!
//! Exit codes (also in `--help`):
//! - 0: success;
//! - 1: a step failed or stopped (error, trap, limit);
//! - 2: bad usage, configuration or manifest;
//! - 3: a module was refused before running (invalid, wrong step API, cannot link).

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
use crate::sandbox::{Sandbox, SandboxError, StepContext, StepEnv, StepReport};
use crate::sysroot::Sysroot;
use crate::ui::ConsoleUi;

const EXIT_CODES: &str = "Exit codes: 0 success; 1 a step failed or stopped; 2 bad usage, configuration or manifest; \
3 a module was refused before running (invalid, wrong step API, cannot link).";

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
    }
}

fn run_id(prefix: &str) -> String {
    let secs = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    format!("{prefix}-{secs}-{}", std::process::id())
}

async fn step_run(config_path: &std::path::Path, args: StepRunArgs) -> Result<u8, Exit> {
    let config = Config::load(args.policy.as_deref().unwrap_or(config_path)).map_err(usage)?;
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
            installed: args.installed.clone(),
            target: args.target.clone().unwrap_or_else(|| release.release.clone()),
            release: release.release.clone(),
            edition: match args.edition {
                EditionArg::Core => Edition::Core,
                EditionArg::Cat => Edition::Cat,
            },
            method: match args.method {
                MethodArg::Packages => Method::Packages,
                MethodArg::Compose => Method::Compose,
            },
            dry_run: false,
        },
        limits: config.limits.resolve(),
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
