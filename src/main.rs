//! The `sandboxd` binary: parse the command line and hand over to the
//! library. Everything else lives in the `sandboxd` crate.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // `sandboxd shim` starts once per run, on the exec path: it skips
    // building the parser of every other command (the shim takes no
    // arguments; anything more goes through clap and its errors).
    let mut args = std::env::args_os().skip(1);
    if let (Some(first), None) = (args.next(), args.next()) {
        if first == "shim" {
            return sandboxd::runs::shim::main();
        }
    }
    let cli = sandboxd::cli::Cli::parse();
    sandboxd::cli::main(cli)
}
