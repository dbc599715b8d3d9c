fn main() -> std::process::ExitCode {
    canup::cli::main()
}
