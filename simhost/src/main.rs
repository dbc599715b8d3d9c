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
    /// Serves the stand-in Canopsis API of the simulated host at DIR on 127.0.0.1 (what the
    /// broadcast and API-check steps call; it reports the tree's installed version), and
    /// prints the `[endpoints.canopsis-api]` table for canup.toml. Runs until interrupted.
    ServeApi {
        dir: PathBuf,
        /// The port; a free one by default.
        #[arg(long, default_value_t = 0)]
        port: u16,
    },
    /// Starts a private RabbitMQ node (Debian's rabbitmq-server) with its files in DIR, on
    /// loopback ports of its own, set up as Canopsis has it (vhost canopsis, user cpsrabbit,
    /// exchange canopsis.events, the engines' queues), and prints the `[endpoints.rabbitmq]`
    /// table and the statistics setting for canup.toml. Runs until interrupted.
    Rabbitmq {
        dir: PathBuf,
        #[arg(long, default_value_t = 5682)]
        amqp_port: u16,
        #[arg(long, default_value_t = 15682)]
        management_port: u16,
        /// collect_statistics_interval in ms (RabbitMQ's default is 5000; small keeps the drain check quick).
        #[arg(long, default_value_t = 1000)]
        stats_interval_ms: u64,
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
        Command::ServeApi { dir, port } => report(serve_api(&dir, port)),
        Command::Rabbitmq { dir, amqp_port, management_port, stats_interval_ms } => report(rabbitmq(&dir, amqp_port, management_port, stats_interval_ms)),
        Command::Stub { args } => stub::run(args),
    }
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("canup-sim: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn serve_api(dir: &std::path::Path, port: u16) -> anyhow::Result<()> {
    let host = SimHost::open(dir)?;
    let listener = std::net::TcpListener::bind(("127.0.0.1", port))?;
    let url = format!("http://{}", listener.local_addr()?);
    let secret = host.root().with_extension("api-password");
    println!("the Canopsis API of {} answers on {url}; in canup.toml:\n", host.root().display());
    println!("{}", canup_sim::api::endpoint_toml(&url, &secret)?);
    println!("(interrupt to stop)");
    canup_sim::api::serve(listener, host.root())?;
    Ok(())
}

fn rabbitmq(dir: &std::path::Path, amqp: u16, management: u16, interval: u64) -> anyhow::Result<()> {
    let broker = canup_sim::rabbitmq::Broker::start_in(dir, "canup-sim", amqp, management, interval)?;
    broker.setup_canopsis()?;
    println!("RabbitMQ runs with Canopsis's vhost, user and queues; in canup.toml:\n");
    println!("{}[settings]\ndrain_stats_interval_ms = \"{interval}\"\n", broker.endpoint_toml(&dir.with_extension("password"))?);
    // The node outlives an interrupted canup-sim (Debian's wrapper detaches it): the interrupt
    // is waited for, then the broker is stopped (its Drop runs `rabbitmqctl stop`).
    let signals: nix::sys::signal::SigSet = [nix::sys::signal::Signal::SIGINT, nix::sys::signal::Signal::SIGTERM].into_iter().collect();
    signals.thread_block()?;
    println!("(interrupt to stop)");
    let signal = signals.wait()?;
    eprintln!("canup-sim: {signal}: stopping RabbitMQ");
    drop(broker);
    Ok(())
}
