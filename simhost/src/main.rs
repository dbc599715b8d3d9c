//! `canup-sim`: makes a simulated Canopsis host for `canup step run --sysroot` and
//! `canup apply --sysroot`, and is the stub program its wrappers run.

mod stub;

use std::path::PathBuf;
use std::process::ExitCode;

use canup_sim::{Edition, Method, Os, SimHost, Spec};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "canup-sim", version, about = "A simulated single-node Canopsis host to try canup steps and upgrades on")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Creates a simulated host in DIR (empty or new): Canopsis VERSION of EDITION installed
    /// by METHOD, with stub programs that record their calls in DIR/var/log/canup-sim/calls.jsonl.
    Create {
        dir: PathBuf,
        /// The installed Canopsis version, e.g. 4.5.7.
        #[arg(long)]
        version: String,
        /// Community (`core`) or Pro (`cat`), as the Canopsis packages name them.
        #[arg(long, value_enum, default_value = "core")]
        edition: Edition,
        #[arg(long, value_enum, default_value = "packages")]
        method: Method,
        /// The operating system: CentOS 7 (yum), RHEL 8 or AlmaLinux 9 (dnf); the facts say which
        /// releases each runs (facts/canopsis.toml).
        #[arg(long, value_enum, default_value = "centos7")]
        os: Os,
        /// Where a Compose host keeps its project (docker-compose.yml, .env).
        #[arg(long, default_value = canup_sim::compose::DEFAULT_DIR)]
        compose_dir: String,
    },
    /// What the simulated host's wrappers run (not for people).
    #[command(hide = true)]
    Stub {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    // The stub's argv is the wrapped program's: parsed by hand so that nothing in it is taken
    // for an option of canup-sim.
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("stub") {
        return stub::run(argv[2..].to_vec());
    }
    match Args::parse().command {
        Command::Create { dir, version, edition, method, os, compose_dir } => {
            let spec = Spec { version, edition, method, os, compose_dir };
            let created = std::env::current_exe().map_err(anyhow::Error::from).and_then(|me| SimHost::create(&dir, &spec, &me));
            match created {
                Ok(host) => {
                    println!(
                        "created a simulated Canopsis {} host ({} edition, {} method, {}) in {}",
                        spec.version,
                        spec.edition,
                        spec.method,
                        spec.os,
                        host.root().display()
                    );
                    println!("its programs record their calls in {}", host.path(canup_sim::CALL_LOG).display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("canup-sim: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Stub { args } => stub::run(args),
    }
}
