//! The `sandboxd` binary: parse the command line and hand over to the
//! library. Everything else lives in the `sandboxd` crate.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = sandboxd::cli::Cli::parse();
    sandboxd::cli::main(cli)
}
