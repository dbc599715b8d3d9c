//! The `canup` command line, owned by the binary (ripgrep's shape): `args.rs` is what clap
//! parses, `settings.rs` merges the configuration with the global flags once, one module per
//! command family (`operate.rs`, `repo.rs`, `step_run.rs`, `step_new.rs`) does the work through the library,
//! `print.rs` writes results and `progress.rs` is the apply screen. Every failure leaves
//! through [`Failure`]: one exit code from `canup::exit::ExitCode`, one message printed once.

mod args;
mod operate;
mod policy;
mod print;
mod progress;
mod repo;
mod settings;
mod step_new;
mod step_run;

use std::process::ExitCode as ProcessExit;

use canup::exit::ExitCode;
use canup::upgrade::UpgradeError;
use clap::{CommandFactory, Parser};

use args::{Cli, Command, PolicyCommand, StepCommand};
use settings::Settings;

/// A failure with the exit code it maps to.
#[derive(Debug)]
pub struct Failure {
    code: ExitCode,
    /// `None` when the command already printed why (a step's report).
    error: Option<anyhow::Error>,
}

impl Failure {
    pub fn new(code: ExitCode, error: impl Into<anyhow::Error>) -> Self {
        Self { code, error: Some(error.into()) }
    }

    /// A failure whose reason is already on the screen.
    pub fn reported(code: ExitCode) -> Self {
        Self { code, error: None }
    }
}

/// Bad usage, configuration or manifest.
pub fn usage(e: impl Into<anyhow::Error>) -> Failure {
    Failure::new(ExitCode::Usage, e)
}

impl From<UpgradeError> for Failure {
    fn from(e: UpgradeError) -> Self {
        Failure::new(e.exit_code(), e)
    }
}

pub fn main() -> ProcessExit {
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
    // At least two workers, also on a one-CPU host: a step runs as a task of its own and its
    // wall-time timer in another, and a host call that blocks its worker's thread must leave
    // a worker to fire that timer (`Sandbox::run`).
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::Usage.into();
        }
    };
    let result = runtime.block_on(run(cli));
    // A step abandoned at its wall-time limit may still hold a worker in a system call (a
    // write to a terminal that stopped reading): the process ends without waiting for it.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::Success.into(),
        Err(Failure { code, error }) => {
            if let Some(error) = error {
                // Each cause once: error types that print their source and also expose it
                // would otherwise repeat it (`{:#}` prints the whole chain).
                eprintln!("error: {}", canup::error_chain(error.as_ref()));
            }
            code.into()
        }
    }
}

/// One arm per command: a new command that is not handled here does not compile.
async fn run(cli: Cli) -> Result<(), Failure> {
    let Cli { global, command } = cli;
    match command {
        Command::Status { output } => operate::status(&Settings::resolve(&global, None)?, output).await,
        Command::Plan { to, output } => operate::plan(&Settings::resolve(&global, None)?, to.as_ref(), output).await,
        Command::Apply { to, yes, accept_manual, dry_run, restart, strict_checks, output } => {
            let options = operate::Apply { to, yes, accept_manual, dry_run, restart, strict_checks, json: output.json };
            operate::apply(&Settings::resolve(&global, None)?, options).await
        }
        Command::History { output } => operate::history(&Settings::resolve(&global, None)?, output),
        Command::RestoreFiles { run } => operate::restore_files(&Settings::resolve(&global, None)?, &run),
        Command::Rollback { run, yes, output } => operate::rollback(&Settings::resolve(&global, None)?, &run, yes, output).await,
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "canup", &mut std::io::stdout());
            Ok(())
        }
        Command::Man => clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout()).map_err(usage),
        Command::Step(StepCommand::Run(args)) => {
            let settings = Settings::resolve(&global, args.policy.as_deref())?;
            step_run::run(&settings, args).await
        }
        Command::Step(StepCommand::New { dir, release, sdk }) => step_new::run(&dir, &release, sdk.as_deref()),
        Command::Repo(cmd) => repo::run(&global, cmd).await,
        Command::Policy(PolicyCommand::Review { to, yes }) => policy::review(&Settings::resolve(&global, None)?, to.as_ref(), yes).await,
    }
}
