//! The command line's shape: every command, option and argument, as clap parses them.

use std::path::PathBuf;

use canup::config::DEFAULT_CONFIG;
use canup::exit::ExitCode;
use canup::manifest::{Edition, Method};
use canup::repository::publish::Expiry;
use clap::{Args, Parser, Subcommand};
use semver::Version;

#[derive(Debug, Parser)]
#[command(name = "canup", version, about = "Upgrade a single-node Canopsis with signed, sandboxed release steps", after_help = ExitCode::help())]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options of every command; merged with the configuration once (see `settings.rs`).
#[derive(Debug, Args)]
pub struct GlobalArgs {
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
}

/// `--json`: one JSON document on stdout, for scripts and Ansible (progress stays on stderr).
#[derive(Debug, Clone, Copy, Args)]
pub struct Output {
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// The keys a publication signs with (targets, snapshot, timestamp), and the expiries.
#[derive(Debug, Args)]
pub struct SigningArgs {
    /// Signing keys (targets, snapshot, timestamp); as many per role as its threshold.
    #[arg(long = "key", required = true)]
    pub keys: Vec<PathBuf>,
    #[command(flatten)]
    pub expiry: ExpiryArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// What is installed, how fresh the repository is, and the newest reachable release.
    Status {
        #[command(flatten)]
        output: Output,
    },
    /// The verified plan of an upgrade: releases, steps by phase, what each may touch. Also
    /// verifies and compiles its modules, so that a later `apply` starts at once.
    Plan {
        /// Target version; the newest regular release of the installed major by default.
        #[arg(long, value_parser = canup::version::parse_arg)]
        to: Option<Version>,
        #[command(flatten)]
        output: Output,
    },
    /// Show the plan, ask, then run it; resumes an interrupted run.
    Apply {
        #[arg(long, value_parser = canup::version::parse_arg)]
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
        /// Fail the run when a check is skipped (the drain or the API check without its
        /// endpoint in canup.toml), instead of ending "succeeded, N checks skipped".
        #[arg(long)]
        strict_checks: bool,
        /// With --json, the plan is not printed: one object with the outcome is.
        #[command(flatten)]
        output: Output,
    },
    /// Runs and their steps: outcome, module digest, duration.
    History {
        #[command(flatten)]
        output: Output,
    },
    /// Put back every file a run changed, from the backups taken before the change.
    RestoreFiles {
        /// The run id (see `canup history`).
        run: String,
    },
    /// Bring the host back to what a run found: its packages in one transaction, its files,
    /// its databases from the dumps taken before its first change; then detection. Resumes an
    /// interrupted rollback.
    Rollback {
        /// The run id (see `canup history`).
        run: String,
        /// Do not ask (the databases are overwritten without a question).
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        output: Output,
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
    /// The policy: what steps may do, from canup.toml, the shipped rules and the drop-ins.
    #[command(subcommand)]
    Policy(PolicyCommand),
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Show every grant the plan to a release lacks, with the steps that need them, and once
    /// confirmed write exactly those to a new drop-in file beside canup.toml (policy.d/);
    /// canup.toml is never edited. What canup.toml's [deny] refuses is shown, never written.
    Review {
        /// Target version; the newest regular release of the installed major by default.
        #[arg(long, value_parser = canup::version::parse_arg)]
        to: Option<Version>,
        /// Write without asking.
        #[arg(long)]
        yes: bool,
    },
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
    pub fn expiry(&self) -> Expiry {
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
    /// Register shared steps (the standard procedure, detection: a step.toml with `applies =
    /// "RANGE"`) once: every release of the range gets them, those published already and
    /// those published later. Registering them again (same step ids) updates them everywhere.
    AddShared {
        dir: PathBuf,
        /// The shared steps' step.toml (`applies = "…"`).
        #[arg(long)]
        steps: PathBuf,
        /// The built component implementing them (.wasm).
        #[arg(long)]
        module: PathBuf,
        #[command(flatten)]
        signing: SigningArgs,
    },
    /// The shared registrations: each one's role, steps, range and the releases carrying it.
    Registrations { dir: PathBuf },
    /// Give the registration holding STEP a new range, with its module already in the
    /// repository (no rebuild): every release of the range gets its steps.
    Widen {
        dir: PathBuf,
        /// A step id of the registration (e.g. drain/queues).
        #[arg(long)]
        step: String,
        /// The new range, e.g. ">=3.0.0, <26.0.0".
        #[arg(long)]
        applies: semver::VersionReq,
        #[command(flatten)]
        signing: SigningArgs,
    },
    /// Publish a release: its own steps (step.toml and built module) and every registered
    /// shared step whose range covers it. Refused when an install would get no update step,
    /// or when a standard role its predecessor carries (procedure, drain…) is missing and
    /// not waived in its step.toml (`[waive] ROLE = "why"`).
    AddRelease {
        dir: PathBuf,
        /// The release's step.toml (`release = "…"`).
        #[arg(long)]
        steps: PathBuf,
        /// The built component implementing its steps (.wasm); not needed when it has none.
        #[arg(long)]
        module: Option<PathBuf>,
        /// Publication date (YYYY-MM-DD); defaults to `published` in step.toml.
        #[arg(long)]
        published: Option<String>,
        /// The release's data files for its steps to read (e.g. reference Compose files);
        /// defaults to the `data/` directory beside step.toml when there is one.
        #[arg(long)]
        data: Option<PathBuf>,
        #[command(flatten)]
        signing: SigningArgs,
    },
    /// Mark a release withdrawn; operators are told the reason and it is never planned.
    Withdraw {
        dir: PathBuf,
        #[arg(long, value_parser = canup::version::parse_arg)]
        release: Version,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        signing: SigningArgs,
    },
    /// Put a migration barrier on a release: canup never plans across it, and names the guide
    /// to follow by hand. Republishing the release keeps it.
    Barrier {
        dir: PathBuf,
        #[arg(long, value_parser = canup::version::parse_arg)]
        release: Version,
        /// The migration guide's title.
        #[arg(long)]
        guide: String,
        #[arg(long)]
        url: String,
        /// Why the guide is needed, in a sentence.
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        signing: SigningArgs,
    },
    /// Re-sign targets, snapshot and timestamp with new versions and expiries.
    Sign {
        dir: PathBuf,
        #[command(flatten)]
        signing: SigningArgs,
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
        /// Cache and trust directory of this verification; defaults to a temporary directory
        /// (the state directory is never written: trust starts from the configured root).
        #[arg(long)]
        cache_dir: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum StepCommand {
    /// Run one step module, as canup would during an upgrade, and print its audit.
    Run(StepRunArgs),
    /// Create a step crate for a release in DIR (empty or new): Cargo.toml with the build
    /// profile, step.toml, an example step and a test that runs it on a simulated host.
    New {
        dir: PathBuf,
        /// The Canopsis release the steps belong to, e.g. 23.10.9.
        #[arg(long, value_parser = canup::version::parse_arg)]
        release: Version,
        /// A canup-sdk crate to depend on (e.g. a canup checkout's `sdk/`); by default the SDK
        /// of this canup's step contract is written into the crate.
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
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
    #[arg(long, default_value = "0.0.0", value_parser = canup::version::parse_arg)]
    pub installed: Version,
    /// Target version; defaults to the manifest's release.
    #[arg(long, value_parser = canup::version::parse_arg)]
    pub target: Option<Version>,
    #[arg(long, value_enum, default_value = "core")]
    pub edition: Edition,
    #[arg(long, value_enum, default_value = "packages")]
    pub method: Method,
    /// Answer yes to the step's confirmations.
    #[arg(long)]
    pub yes: bool,
    /// Treat manual instructions as done.
    #[arg(long)]
    pub accept_manual: bool,
    #[command(flatten)]
    pub output: Output,
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
