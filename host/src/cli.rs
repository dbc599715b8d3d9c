//! The `canup` command line.
//!
//! Exit codes (also in `--help`):
//! - 0: success;
//! - 1: a step failed or stopped (error, trap, limit);
//! - 2: bad usage, configuration or manifest;
//! - 3: a module was refused before running (invalid, wrong step API, cannot link);
//! - 4: the release repository failed verification (signatures, expiry, rollback, digests);
//! - 5: the plan needs more than the operator's policy allows;
//! - 6: another canup is applying an upgrade;
//! - 7: an interrupted run is pending, or the repository changed under it;
//! - 8: the operator declined the plan;
//! - 10 to 14: refused plans: 10 major target, 11 downgrade, 12 target not in the repository,
//!   13 withdrawn release, 14 unknown installed version.

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
use crate::journal;
use crate::manifest::{Edition, Method, ReleaseSteps};
use crate::plan::Plan;
use crate::repository::vendor::{self, Expiry, RoleKeyFiles, VendorError};
use crate::repository::{self, LoadOptions, Repository};
use crate::sandbox::{Sandbox, SandboxError, StepContext, StepEnv, StepReport};
use crate::sysroot::Sysroot;
use crate::ui::{ConsoleUi, ProgressUi};
use crate::upgrade::{self, ApplyOptions, Session, UpgradeError};

const EXIT_CODES: &str = "Exit codes: 0 success; 1 a step failed or stopped; 2 bad usage, configuration or manifest; \
3 a module was refused before running (invalid, wrong step API, cannot link); \
4 the release repository failed verification (signatures, expiry, rollback, digests); \
5 the plan needs more than the policy allows; 6 another canup is applying; \
7 an interrupted run is pending or the repository changed under it; 8 the operator declined; \
10 major target (follow the migration guide); 11 downgrade; 12 target not in the repository; \
13 withdrawn release; 14 unknown installed version.";

#[derive(Debug, Parser)]
#[command(name = "canup", version, about = "Upgrade a single-node Canopsis with signed, sandboxed release steps", after_help = EXIT_CODES)]
pub struct Cli {
    /// Operator configuration.
    #[arg(long, global = true, default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// Run against DIR instead of `/` (simulated hosts, staging rehearsals).
    #[arg(long, global = true)]
    pub sysroot: Option<PathBuf>,
    /// State directory (journal, audit, backups, caches); overrides the config's state_dir.
    #[arg(long, global = true)]
    pub state_dir: Option<PathBuf>,
    /// Release repository; overrides the config's `repository`.
    #[arg(long, global = true)]
    pub repo: Option<String>,
    /// Root of trust; overrides the config's `trusted_root` and the built-in root.
    #[arg(long, global = true)]
    pub trusted_root: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// What is installed, how fresh the repository is, and the newest reachable release.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// The verified plan of an upgrade: releases, steps by phase, what each may touch. Also
    /// verifies and compiles its modules, so that a later `apply` starts at once.
    Plan {
        /// Target version; the newest regular release of the installed major by default.
        #[arg(long)]
        to: Option<Version>,
        #[arg(long)]
        json: bool,
    },
    /// Show the plan, ask, then run it; resumes an interrupted run.
    Apply {
        #[arg(long)]
        to: Option<Version>,
        /// Do not ask; confirmations from steps are answered yes.
        #[arg(long)]
        yes: bool,
        /// With --yes: treat manual instructions as done instead of stopping.
        #[arg(long)]
        accept_manual: bool,
        /// Run the steps with every change recorded instead of made, and print the changes.
        #[arg(long)]
        dry_run: bool,
        /// Abandon an interrupted run and plan again.
        #[arg(long)]
        restart: bool,
        /// Print one JSON object with the outcome on stdout (for Ansible and scripts); the
        /// plan is not printed and progress goes to stderr as always.
        #[arg(long)]
        json: bool,
    },
    /// Runs and their steps: outcome, module digest, duration.
    History {
        #[arg(long)]
        json: bool,
    },
    /// Put back every file a run changed, from the backups taken before the change.
    RestoreFiles {
        /// The run id (see `canup history`).
        run: String,
    },
    /// Print shell completions.
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff).
    Man,
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
    /// Create an ed25519 signing key (PKCS#8 PEM, mode 0600, readable by OpenSSL). Keep it
    /// out of the repository.
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
        /// Signatures needed for each role (each role's own flag overrides it).
        #[arg(long, default_value_t = 1)]
        threshold: u64,
        #[arg(long)]
        root_threshold: Option<u64>,
        #[arg(long)]
        targets_threshold: Option<u64>,
        #[arg(long)]
        snapshot_threshold: Option<u64>,
        #[arg(long)]
        timestamp_threshold: Option<u64>,
        #[command(flatten)]
        expiry: ExpiryArgs,
    },
    /// Publish a release: its own steps (step.toml and built module) and the shared steps
    /// (standard procedure, detection) it includes.
    AddRelease {
        dir: PathBuf,
        /// The release's step.toml (`release = "…"`).
        #[arg(long)]
        steps: PathBuf,
        /// The built component implementing its steps (.wasm); not needed when it has none.
        #[arg(long)]
        module: Option<PathBuf>,
        /// Shared steps to include, as STEP_TOML=MODULE (repeatable).
        #[arg(long = "include", value_parser = parse_include)]
        includes: Vec<(PathBuf, PathBuf)>,
        /// Publication date (YYYY-MM-DD); defaults to `published` in step.toml.
        #[arg(long)]
        published: Option<String>,
        /// The release's data files for its steps to read (e.g. reference Compose files);
        /// defaults to the `data/` directory beside step.toml when there is one.
        #[arg(long)]
        data: Option<PathBuf>,
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
    /// Give a role (root, targets, snapshot, timestamp) new keys and optionally a new
    /// threshold: writes the next N.root.json. With enough --root-key to sign it, it is
    /// published at once, together with the roles re-signed by their new keys (--key);
    /// with --out, the unsigned candidate is written there for `sign-root`.
    RotateKeys {
        dir: PathBuf,
        #[arg(long, value_enum)]
        role: RoleArg,
        /// The role's new key(s), all of them (keys not given are removed from the role).
        #[arg(long = "new-key", required = true)]
        new_keys: Vec<PathBuf>,
        /// Signatures the role needs from now on; unchanged by default.
        #[arg(long)]
        threshold: Option<u64>,
        /// Current root keys signing the new root (a threshold of them).
        #[arg(long = "root-key")]
        root_keys: Vec<PathBuf>,
        /// Keys re-signing the roles whose keys changed (targets, snapshot, timestamp).
        #[arg(long = "key")]
        keys: Vec<PathBuf>,
        /// Write the candidate root here instead of publishing (offline root ceremony).
        #[arg(long, conflicts_with_all = ["root_keys", "keys"])]
        out: Option<PathBuf>,
        #[command(flatten)]
        expiry: ExpiryArgs,
    },
    /// Add signatures to a candidate root (offline root ceremony: each holder runs it with
    /// their key), then say what is still missing.
    SignRoot {
        dir: PathBuf,
        /// The candidate root file written by `rotate-keys --out`.
        #[arg(long)]
        candidate: PathBuf,
        #[arg(long = "key", required = true)]
        keys: Vec<PathBuf>,
    },
    /// Publish a candidate root once it carries enough signatures, re-signing the roles whose
    /// keys it changed.
    PublishRoot {
        dir: PathBuf,
        #[arg(long)]
        candidate: PathBuf,
        #[arg(long = "key")]
        keys: Vec<PathBuf>,
        #[command(flatten)]
        expiry: ExpiryArgs,
    },
    /// Check a repository (--repo or the config's; signatures, expiry, every module's
    /// digest) and the local cache.
    Verify {
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
pub enum RoleArg {
    Root,
    Targets,
    Snapshot,
    Timestamp,
}

impl From<RoleArg> for tough::schema::RoleType {
    fn from(r: RoleArg) -> Self {
        match r {
            RoleArg::Root => Self::Root,
            RoleArg::Targets => Self::Targets,
            RoleArg::Snapshot => Self::Snapshot,
            RoleArg::Timestamp => Self::Timestamp,
        }
    }
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
    // Behave like other Unix tools when the reader goes away (`canup history | head`).
    // SAFETY: called first, before any other thread exists.
    unsafe {
        let _ = nix::sys::signal::signal(nix::sys::signal::Signal::SIGPIPE, nix::sys::signal::SigHandler::SigDfl);
    }
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
    match &cli.command {
        Command::Step(StepCommand::Run(_)) | Command::Repo(_) | Command::Completions { .. } | Command::Man => {}
        _ => return operate(cli).await,
    }
    match cli.command {
        Command::Step(StepCommand::Run(args)) => step_run(&cli.config, cli.sysroot.as_deref(), cli.state_dir.as_deref(), args).await,
        Command::Repo(cmd) => repo(&cli.config, cli.repo, cli.trusted_root, cli.state_dir, cmd).await,
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut <Cli as clap::CommandFactory>::command(), "canup", &mut std::io::stdout());
            Ok(0)
        }
        Command::Man => {
            clap_mangen::Man::new(<Cli as clap::CommandFactory>::command()).render(&mut std::io::stdout()).map_err(usage)?;
            Ok(0)
        }
        _ => Ok(0),
    }
}

fn parse_include(s: &str) -> Result<(PathBuf, PathBuf), String> {
    s.split_once('=').map(|(a, b)| (PathBuf::from(a), PathBuf::from(b))).ok_or_else(|| format!("expected STEP_TOML=MODULE, got {s:?}"))
}

fn upgrade_err(e: UpgradeError) -> Exit {
    Exit(e.exit_code(), e.into())
}

/// The operator's commands: status, plan, apply, history, restore-files.
async fn operate(cli: Cli) -> Result<u8, Exit> {
    let mut config = config_or_default(&cli.config)?;
    if let Some(dir) = &cli.state_dir {
        config.state_dir = Some(dir.clone());
    }
    let sysroot = match cli.sysroot.as_ref().or(config.sysroot.as_ref()) {
        Some(dir) => Sysroot::new(dir).map_err(usage)?,
        None => Sysroot::host(),
    };
    let state_dir = config.state_dir();
    match &cli.command {
        Command::History { json } => return history(&state_dir, *json),
        Command::RestoreFiles { run } => {
            for line in upgrade::restore_files(&state_dir, &sysroot, run).map_err(upgrade_err)? {
                println!("{line}");
            }
            return Ok(0);
        }
        _ => {}
    }
    let location = cli
        .repo
        .clone()
        .or(config.repository.clone())
        .ok_or_else(|| usage(anyhow::anyhow!("no repository: set `repository` in {} or pass --repo", cli.config.display())))?;
    let root = repository::trusted_root(cli.trusted_root.as_deref().or(config.trusted_root.as_deref())).map_err(usage)?;
    let console = ConsoleUi {
        assume_yes: matches!(cli.command, Command::Apply { yes: true, .. }),
        accept_manual: matches!(cli.command, Command::Apply { accept_manual: true, .. }),
        min_level: None,
    };
    let progress = Arc::new(ProgressUi::new(console));
    tracing::debug!("configuration read; opening the repository {location}");
    let session = Session::open(config, sysroot, &location, &root).await.map_err(upgrade_err)?;
    match cli.command {
        Command::Status { json } => {
            let s = upgrade::status(&session, progress).await.map_err(upgrade_err)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s).unwrap_or_default());
            } else {
                println!("installed: Canopsis {} ({} edition, {} method)", s.installed, s.edition, s.method);
                println!("repository: {}", s.repository);
                for (role, t) in &s.expires {
                    println!("  {role:<9} valid until {t}");
                }
                match &s.newest_target {
                    Some(t) => println!("newest regular target: {t} (canup plan --to {t})"),
                    None => println!("up to date: no newer regular release of this major"),
                }
                if let Some(r) = &s.pending_run {
                    println!("interrupted run pending: {r}; `canup apply` resumes it");
                }
            }
            Ok(0)
        }
        Command::Plan { to, json } => {
            let detected = session.detect(progress).await.map_err(upgrade_err)?;
            let plan = session.plan(&detected, to.as_ref()).map_err(upgrade_err)?;
            let modules = session.prepare(&plan).await.map_err(upgrade_err)?;
            eprintln!("{modules} modules of the plan verified and compiled: `canup apply` will start from them");
            if json {
                println!("{}", serde_json::to_string_pretty(&plan).unwrap_or_default());
            } else {
                print_plan(&plan, &[]);
            }
            Ok(0)
        }
        Command::Apply { to, yes, dry_run, restart, json, .. } => {
            let options = ApplyOptions { to, dry_run, restart };
            let confirm = |plan: &Plan, done: &[String]| {
                if json {
                    return yes || dry_run;
                }
                print_plan(plan, done);
                if !done.is_empty() {
                    println!("resuming an interrupted run: {} steps already done are not run again", done.len());
                }
                println!();
                yes || dry_run || ask_yes_no("Apply this plan? [y/N] ")
            };
            let p: Arc<dyn upgrade::Progress> = progress.clone();
            let result = upgrade::apply(&session, &options, p, &confirm).await;
            if json {
                print_apply_json(&result, dry_run);
            }
            let summary = result.map_err(upgrade_err)?;
            let ran: Vec<&str> = summary.reports.iter().map(|r| r.step.as_str()).collect();
            if json {
                return Ok(0);
            }
            if ran.is_empty() && summary.skipped.is_empty() {
                println!("Canopsis is already at {}: nothing to do", summary.plan.target);
                return Ok(0);
            }
            println!("\nsummary: run {}: {} steps ran, {} already done", summary.run, ran.len(), summary.skipped.len());
            if dry_run {
                println!("dry run: nothing was changed. The real run would make these changes, in order (queries ran for real):");
                for line in &summary.recorded {
                    println!("  {line}");
                }
            } else {
                println!("Canopsis is now at {} (backups of changed files: canup restore-files {})", summary.plan.target, summary.run);
            }
            Ok(0)
        }
        _ => Ok(0),
    }
}

/// `apply --json`: what Ansible's role reads. `changed` is true when a step ran for real.
fn print_apply_json(result: &Result<upgrade::ApplySummary, UpgradeError>, dry_run: bool) {
    let value = match result {
        Ok(s) => {
            let ran: Vec<&str> = s.reports.iter().map(|r| r.step.as_str()).collect();
            let outcome = if dry_run {
                "dry-run"
            } else if ran.is_empty() && s.skipped.is_empty() {
                "up-to-date"
            } else {
                "succeeded"
            };
            serde_json::json!({
                "outcome": outcome,
                "changed": !dry_run && !ran.is_empty(),
                "run": s.run,
                "installed": s.plan.installed.to_string(),
                "target": s.plan.target.to_string(),
                "steps_ran": ran,
                "already_done": s.skipped,
                "recorded": s.recorded,
            })
        }
        Err(e) => serde_json::json!({
            "outcome": "failed",
            "changed": matches!(e, UpgradeError::StepFailed { .. }),
            "exit_code": e.exit_code(),
            "error": e.to_string(),
        }),
    };
    println!("{}", serde_json::to_string_pretty(&value).unwrap_or_default());
}

fn ask_yes_no(prompt: &str) -> bool {
    use std::io::{BufRead, IsTerminal, Write};
    if !std::io::stdin().is_terminal() {
        eprintln!("no terminal to confirm the plan: pass --yes to apply it unattended");
        return false;
    }
    print!("{prompt}");
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    matches!(line.trim(), "y" | "Y" | "yes")
}

fn print_plan(plan: &Plan, done: &[String]) {
    println!("plan: Canopsis {} → {} ({} edition, {} method)", plan.installed, plan.target, plan.edition, plan.method);
    println!("releases: {}", plan.releases.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "));
    for (v, why) in &plan.skipped {
        println!("skipped: {v} (withdrawn: {why})");
    }
    let mut phase = None;
    for p in &plan.steps {
        if phase != Some(p.phase) {
            println!("{}:", p.phase);
            phase = Some(p.phase);
        }
        let m = &p.step.manifest;
        let mark = if done.contains(&m.id) { " (done)" } else { "" };
        println!("  {}{mark} — {}", m.id, m.description);
        let c = &m.capabilities;
        for e in &c.exec {
            println!(
                "      exec {} {}{}",
                e.program,
                e.args.join(" "),
                if e.users.is_empty() { String::new() } else { format!(" (as {})", e.users.join("/")) }
            );
        }
        for r in &c.fs.read {
            println!("      read {r}");
        }
        for w in &c.fs.write {
            println!("      write {w}");
        }
        for h in &c.http {
            println!("      http {} {} on {}", h.methods.join("/"), h.paths.join(" "), h.endpoint);
        }
    }
}

fn history(state_dir: &std::path::Path, json: bool) -> Result<u8, Exit> {
    let events = journal::Journal::read(state_dir).map_err(usage)?;
    let runs = journal::runs(&events);
    if json {
        println!("{}", serde_json::to_string_pretty(&runs).unwrap_or_default());
        return Ok(0);
    }
    if runs.is_empty() {
        println!("no runs recorded in {}", state_dir.display());
    }
    for r in &runs {
        let outcome = match r.outcome {
            Some(journal::Outcome::Succeeded) => "succeeded",
            Some(journal::Outcome::Failed) => "abandoned",
            None => "interrupted (resumable)",
        };
        println!("run {} ({}): {} → {} {}", r.run, r.started, r.installed, r.target, outcome);
        for s in &r.steps {
            let o = match s.outcome {
                Some(journal::Outcome::Succeeded) => "ok".to_owned(),
                Some(journal::Outcome::Failed) => format!("FAILED: {}", s.message.clone().unwrap_or_default()),
                None => "interrupted".to_owned(),
            };
            println!("  {:<40} {o:<10} {:>6} ms  module {}", s.step, s.duration_ms, &s.module_sha256[..s.module_sha256.len().min(12)]);
        }
    }
    Ok(0)
}

/// Loads the config when it exists; vendor commands and step authors may have none.
fn config_or_default(path: &std::path::Path) -> Result<Config, Exit> {
    if path.exists() { Config::load(path).map_err(usage) } else { Ok(Config::default()) }
}

async fn repo(
    config_path: &std::path::Path,
    repo_arg: Option<String>,
    trusted_arg: Option<PathBuf>,
    state_arg: Option<PathBuf>,
    cmd: RepoCommand,
) -> Result<u8, Exit> {
    let vendor_err = |e: VendorError| match e {
        VendorError::Usage(_) => usage(e),
        other => Exit(1, other.into()),
    };
    match cmd {
        RepoCommand::Keygen { out } => {
            let id = vendor::keygen(&out).await.map_err(vendor_err)?;
            println!("created {} (key id {id})", out.display());
        }
        RepoCommand::Init {
            dir,
            root_keys,
            targets_keys,
            snapshot_keys,
            timestamp_keys,
            threshold,
            root_threshold,
            targets_threshold,
            snapshot_threshold,
            timestamp_threshold,
            expiry,
        } => {
            let keys = RoleKeyFiles { root: root_keys, targets: targets_keys, snapshot: snapshot_keys, timestamp: timestamp_keys };
            let thresholds = vendor::Thresholds {
                root: root_threshold.unwrap_or(threshold),
                targets: targets_threshold.unwrap_or(threshold),
                snapshot: snapshot_threshold.unwrap_or(threshold),
                timestamp: timestamp_threshold.unwrap_or(threshold),
            };
            vendor::init(&dir, &keys, &thresholds, &expiry.expiry()).await.map_err(vendor_err)?;
            println!("initialised {} (root: {}/metadata/1.root.json)", dir.display(), dir.display());
        }
        RepoCommand::AddRelease { dir, steps, module, includes, published, data, keys, expiry } => {
            let read = |p: &PathBuf| std::fs::read(p).with_context(|| format!("cannot read module {}", p.display())).map_err(usage);
            let release = ReleaseSteps::load(&steps).map_err(usage)?;
            let version = release.release.clone().ok_or_else(|| usage(anyhow::anyhow!("{} names no `release`", steps.display())))?;
            let published = published
                .or_else(|| release.published.clone())
                .ok_or_else(|| usage(anyhow::anyhow!("no publication date: pass --published or set `published` in {}", steps.display())))?;
            let own_module = match (&module, release.steps.is_empty()) {
                (Some(m), _) => Some(read(m)?),
                (None, true) => None,
                (None, false) => return Err(usage(anyhow::anyhow!("{} declares steps: pass the --module implementing them", steps.display()))),
            };
            let mut shared = Vec::new();
            for (toml, wasm) in &includes {
                let s = ReleaseSteps::load(toml).map_err(usage)?;
                if let Some(range) = &s.applies
                    && !range.matches(&version)
                {
                    return Err(usage(anyhow::anyhow!("{} applies to {range}, not to {version}", toml.display())));
                }
                shared.push((s, read(wasm)?));
            }
            let shared_refs: Vec<(&ReleaseSteps, &[u8])> = shared.iter().map(|(s, m)| (s, m.as_slice())).collect();
            let own = own_module.as_deref().map(|m| (&release, m));
            let data_dir = data.or_else(|| steps.parent().map(|d| d.join("data")).filter(|d| d.is_dir()));
            let files = match &data_dir {
                Some(d) => vendor::read_data_dir(d).map_err(vendor_err)?,
                None => Vec::new(),
            };
            vendor::add_release(&dir, &keys, &expiry.expiry(), &version, &published, own, &shared_refs, &files).await.map_err(vendor_err)?;
            println!("published release {version} in {}", dir.display());
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
        RepoCommand::RotateKeys { dir, role, new_keys, threshold, root_keys, keys, out, expiry } => {
            let change = vendor::RoleChange { role: role.into(), keys: new_keys, threshold };
            match out {
                Some(out) => {
                    let candidate = vendor::root::propose(&dir, &[change], &expiry.expiry()).await.map_err(vendor_err)?;
                    vendor::root::write_candidate(&out, &candidate).map_err(vendor_err)?;
                    println!(
                        "wrote the candidate root version {} to {}; each root key holder signs it with `canup repo sign-root {} --candidate {} --key KEY`",
                        candidate.signed.version,
                        out.display(),
                        dir.display(),
                        out.display()
                    );
                }
                None => {
                    let v = vendor::root::rotate(&dir, &[change], &root_keys, &keys, &expiry.expiry()).await.map_err(vendor_err)?;
                    println!("published {}/metadata/{v}.root.json: role {} has its new keys", dir.display(), tough::schema::RoleType::from(role));
                }
            }
        }
        RepoCommand::SignRoot { dir, candidate, keys } => {
            let mut root = vendor::root::read_candidate(&candidate).map_err(vendor_err)?;
            vendor::root::add_signatures(&dir, &mut root, &keys).await.map_err(vendor_err)?;
            vendor::root::write_candidate(&candidate, &root).map_err(vendor_err)?;
            let missing = vendor::root::missing_signatures(&dir, &root).map_err(vendor_err)?;
            if missing.is_empty() {
                println!(
                    "{} carries enough signatures: publish it with `canup repo publish-root {} --candidate {}`",
                    candidate.display(),
                    dir.display(),
                    candidate.display()
                );
            } else {
                println!("{} now has {} signature(s); still missing:", candidate.display(), root.signatures.len());
                for m in missing {
                    println!("  {m}");
                }
            }
        }
        RepoCommand::PublishRoot { dir, candidate, keys, expiry } => {
            let root = vendor::root::read_candidate(&candidate).map_err(vendor_err)?;
            let v = vendor::root::publish_root(&dir, &root, &keys, &expiry.expiry()).await.map_err(vendor_err)?;
            println!("published {}/metadata/{v}.root.json", dir.display());
        }
        RepoCommand::Verify { cache_dir } => return verify(config_path, repo_arg, trusted_arg, state_arg, cache_dir).await,
    }
    Ok(0)
}

async fn verify(
    config_path: &std::path::Path,
    repo: Option<String>,
    trusted: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    cache_dir: Option<PathBuf>,
) -> Result<u8, Exit> {
    let config = config_or_default(config_path)?;
    let state_dir = state_dir.unwrap_or_else(|| config.state_dir());
    let location = repo
        .or(config.repository.clone())
        .ok_or_else(|| usage(anyhow::anyhow!("no repository: pass --repo or set `repository` in {}", config_path.display())))?;
    let root = repository::trusted_root(trusted.as_deref().or(config.trusted_root.as_deref())).map_err(usage)?;
    let cache = cache_dir.unwrap_or_else(|| state_dir.join("cache/repository"));
    let repo = Repository::open(&location, &root, &cache, &state_dir.join("trust"), &LoadOptions::default()).await.map_err(|e| Exit(4, e.into()))?;
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

async fn step_run(
    config_path: &std::path::Path,
    sysroot: Option<&std::path::Path>,
    state_dir: Option<&std::path::Path>,
    args: StepRunArgs,
) -> Result<u8, Exit> {
    let config = match &args.policy {
        Some(p) => Config::load(p).map_err(usage)?,
        None => config_or_default(config_path)?,
    };
    let release = ReleaseSteps::load(&args.manifest).map_err(usage)?;
    let manifest = release.select(args.step.as_deref(), &args.manifest).map_err(usage)?.clone();
    let wasm = std::fs::read(&args.module).with_context(|| format!("cannot read module {}", args.module.display())).map_err(usage)?;
    let state_dir = state_dir.map(ToOwned::to_owned).unwrap_or_else(|| config.state_dir());
    let sysroot = match sysroot {
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
    let audit =
        Arc::new(AuditLog::open(&state_dir.join("audit.jsonl"), &run).map_err(|e| usage(anyhow::anyhow!("audit log in {}: {e}", state_dir.display())))?);
    let backups = Backups::open(&state_dir, &run).map_err(|e| usage(anyhow::anyhow!("backups in {}: {e}", state_dir.display())))?;
    let ui = Arc::new(ConsoleUi { assume_yes: args.yes, accept_manual: args.accept_manual, min_level: None });
    let context = StepContext {
        step_id: manifest.id.clone(),
        phase: manifest.phase,
        installed: args.installed.clone(),
        target: args.target.clone().or_else(|| release.release.clone()).unwrap_or(Version::new(0, 0, 0)),
        release: release.release.clone().unwrap_or(Version::new(0, 0, 0)),
        edition: Some(match args.edition {
            EditionArg::Core => Edition::Core,
            EditionArg::Cat => Edition::Cat,
        }),
        method: Some(match args.method {
            MethodArg::Packages => Method::Packages,
            MethodArg::Compose => Method::Compose,
        }),
        dry_run: false,
    };
    // The release's data files sit in `data/` beside its step.toml, as `canup repo add-release` publishes them.
    let data_dir = args.manifest.parent().map(|d| d.join("data")).filter(|d| d.is_dir());
    let data = match &data_dir {
        Some(d) => vendor::read_data_dir(d).map_err(usage)?.into_iter().collect(),
        None => repository::ReleaseData::new(),
    };
    let env = StepEnv {
        endpoints: Arc::new(config.endpoints.clone()),
        limits: config.limits.resolve(),
        settings: Arc::new(config.settings.clone()),
        data: Arc::new(data),
        ..StepEnv::new(grant, sysroot, backups, audit.clone(), ui, context)
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
