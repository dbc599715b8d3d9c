//! `cargo xtask …`: the project's build steps.
//!
//! - `cargo xtask test [ARGS]`: checks the house style first (`cargo fmt --all --check`, then
//!   `cargo clippy --workspace --all-targets -- -D warnings`), installs what the tests need (the
//!   `wasm32-wasip2` target, ansible-core, rabbitmq-server), builds every guest crate once, then
//!   runs every test (`cargo test`, extra ARGS passed on).
//! - `cargo xtask demo`: runs the example step on a simulated Canopsis with a loopback API
//!   server, and prints the step's log, its audit and the commands it ran.
//! - `cargo xtask bench`: the performance figures with their goals (release build), the demo
//!   upgrade against a bash script of the same commands included (needs RabbitMQ, started here).
//! - `cargo xtask dist`: the release `canup`, its man page and completions, and the RPM
//!   (`cargo generate-rpm`, installed if missing), checked with Debian's `rpm` tool.
//! - `cargo xtask chaos [KILLS [SEED]]`: the crash campaign, 50 kills of the demo upgrade by
//!   default, each resumed and compared with an uninterrupted run.
//! - `cargo xtask fuzz [--libfuzzer] [SECONDS]`: each fuzz target of `canup::fuzz` for SECONDS
//!   (600 by default) as a proptest campaign (`tests/tests/fuzz.rs`, no nightly toolchain
//!   needed), or with `--libfuzzer` under libFuzzer from `fuzz/` (nightly and cargo-fuzz
//!   installed if missing).
//! - `cargo xtask build-guests`: builds `steps/*` and `tests/guests/*` for `wasm32-wasip2`.
//! - `cargo xtask tuf-conformance DIR`: the public TUF conformance suite (a checkout of
//!   theupdateframework/tuf-conformance at DIR) against `canup-tuf-client`, canup's client
//!   code behind the suite's CLI; its Python dependencies go into `target/tuf-conformance-venv`.
//! - `cargo xtask publish --out DIR`: builds the release crates under `steps/` and publishes
//!   them into a signed repository at DIR with a development key (`target/dev-keys/`).
//!
//! Each task is a module with its `run` (`build-guests` is `util::build_guests`, which other
//! tasks run first); what two tasks share is in `util`. clap writes the usage:
//! `cargo xtask --help`, `cargo xtask help TASK`.

mod bench;
mod chaos;
mod demo;
mod dist;
mod fuzz;
mod publish;
mod test;
mod tuf_conformance;
mod util;
mod vendor_check;
mod vendor_compose;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// The project's build steps.
#[derive(Parser)]
#[command(name = "xtask", bin_name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Checks the house style (fmt, clippy), then runs every test: `cargo test` with CARGO TEST ARGS.
    // No `--help` of its own: every argument goes to `cargo test`, as it always did
    // (`cargo xtask help test` shows this task's usage).
    #[command(disable_help_flag = true)]
    Test {
        /// Passed on to `cargo test`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "CARGO TEST ARGS")]
        args: Vec<String>,
    },
    /// The demo upgrade on a simulated Canopsis, then the SDK's example step with its audit.
    Demo,
    /// The performance figures with their goals (release build; starts RabbitMQ).
    Bench,
    /// The release `canup`, its man page and completions, and the RPM, checked with `rpm`.
    Dist,
    /// The crash campaign: the demo upgrade killed KILLS times, each run resumed and compared with an uninterrupted one.
    Chaos {
        /// How many kills.
        #[arg(default_value_t = 50)]
        kills: usize,
        /// The seed of the kill moments (printed, to replay a campaign); the current time by default.
        seed: Option<u64>,
    },
    /// Each fuzz target of `canup::fuzz` for SECONDS, as a proptest campaign or under libFuzzer.
    Fuzz {
        /// Under libFuzzer from `fuzz/` (nightly and cargo-fuzz installed if missing).
        #[arg(long)]
        libfuzzer: bool,
        /// How long each target runs.
        #[arg(default_value_t = 600)]
        seconds: u64,
    },
    /// Builds `steps/*` and `tests/guests/*` for `wasm32-wasip2`.
    BuildGuests,
    /// The public TUF conformance suite against `canup-tuf-client`.
    TufConformance {
        /// A checkout of theupdateframework/tuf-conformance.
        #[arg(value_name = "DIR")]
        suite: PathBuf,
    },
    /// Compares facts/canopsis.toml with the vendor's tags in DIR (a clone of capensis/canopsis).
    VendorCheck {
        /// A checkout or bare clone of GitHub capensis/canopsis.
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// The release crates under `steps/`, published into a signed repository with a development key.
    Publish {
        /// The repository's directory.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

fn main() -> Result<()> {
    match Cli::parse().task {
        Task::Test { mut args } => {
            // clap takes a `--` right after `test` for its own end of options and drops it; put it
            // back, so that `cargo xtask test -- --nocapture` still runs `cargo test -- --nocapture`.
            if std::env::args().nth(2).as_deref() == Some("--") {
                args.insert(0, "--".into());
            }
            test::run(&args)
        }
        Task::Demo => demo::run(),
        Task::Bench => bench::run(),
        Task::Dist => dist::run(),
        Task::Chaos { kills, seed } => chaos::run(kills, seed),
        Task::Fuzz { libfuzzer, seconds } => fuzz::run(libfuzzer, seconds),
        Task::BuildGuests => util::build_guests().map(|_| ()),
        Task::TufConformance { suite } => tuf_conformance::run(&suite),
        Task::VendorCheck { dir } => vendor_check::run(&dir),
        Task::Publish { out } => publish::run(&out),
    }
}
