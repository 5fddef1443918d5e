//! `sandboxd completions` and `sandboxd man`: shell completion scripts
//! (clap_complete) and roff man pages (clap_mangen), generated from the
//! same clap definition as the command line itself.

use std::io::Write;
use std::process::ExitCode;

use clap::CommandFactory;

use super::Cli;

/// `sandboxd completions`.
#[derive(Debug, clap::Args)]
#[command(after_long_help = "\
Install, for example:
  sandboxd completions bash > /etc/bash_completion.d/sandboxd
  sandboxd completions zsh > \"${fpath[1]}/_sandboxd\"
  sandboxd completions fish > ~/.config/fish/completions/sandboxd.fish")]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `sandboxd man`.
#[derive(Debug, clap::Args)]
#[command(after_long_help = "\
Read it with: sandboxd man | man -l -
Install: sandboxd man > /usr/local/share/man/man1/sandboxd.1")]
pub struct ManArgs {
    /// A command (`exec`, `upload`...) for its own page [default: sandboxd's page].
    #[arg(value_name = "COMMAND")]
    pub command: Option<String>,
}

/// Prints the completion script.
pub fn completions(args: &CompletionsArgs) -> ExitCode {
    let mut command = visible_command();
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut command, "sandboxd", &mut out);
    write_stdout(&out)
}

/// The command line without its hidden subcommands (`shim`), which
/// clap_complete would otherwise offer.
fn visible_command() -> clap::Command {
    let full = Cli::command();
    let mut visible = clap::Command::new("sandboxd")
        .version(env!("CARGO_PKG_VERSION"))
        .subcommand_required(true);
    if let Some(about) = full.get_about() {
        visible = visible.about(about.clone());
    }
    for sub in full.get_subcommands().filter(|c| !c.is_hide_set()) {
        visible = visible.subcommand(sub.clone());
    }
    visible
}

/// Prints the man page.
pub fn man(args: &ManArgs) -> ExitCode {
    let mut root = Cli::command();
    // Building sets each subcommand's display name (`sandboxd-exec`) and usage.
    root.build();
    let command = match &args.command {
        None => root,
        Some(name) => {
            let found = root
                .get_subcommands()
                .find(|c| c.get_name() == name && !c.is_hide_set())
                .cloned();
            let Some(sub) = found else {
                let names: Vec<&str> = root
                    .get_subcommands()
                    .filter(|c| !c.is_hide_set())
                    .map(|c| c.get_name())
                    .collect();
                eprintln!(
                    "sandboxd: no command {name:?}; the commands are {}",
                    names.join(", ")
                );
                return ExitCode::from(2);
            };
            sub
        }
    };
    let mut out = Vec::new();
    if let Err(err) = clap_mangen::Man::new(command).render(&mut out) {
        eprintln!("sandboxd: cannot render the man page: {err}");
        return ExitCode::from(1);
    }
    write_stdout(&out)
}

fn write_stdout(bytes: &[u8]) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("sandboxd: cannot write to stdout: {err}");
            ExitCode::from(1)
        }
    }
}
