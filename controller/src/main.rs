//! The `artgen` binary: local CLI and (with later subcommands) the controller.

fn main() -> std::process::ExitCode {
    artgen::cli::main()
}
