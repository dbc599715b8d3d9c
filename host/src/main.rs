//! The `canup` binary: the command line over the `canup` library.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
