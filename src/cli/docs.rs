//! `completions SHELL` and `man`: the shell completions and the man page, generated from the same
//! clap definitions as `--help`, so that they never drift from the flags.

use std::io::Write;
use std::process::ExitCode;

use clap::CommandFactory;

use crate::config::cli::Cli;

pub fn completions(shell: clap_complete::Shell) -> ExitCode {
    let mut command = Cli::command();
    clap_complete::generate(
        shell,
        &mut command,
        "sqs-batch-worker",
        &mut std::io::stdout(),
    );
    ExitCode::SUCCESS
}

/// The man page of the binary and its subcommands, one after the other (`man -l -` reads it).
pub fn man() -> ExitCode {
    let command = Cli::command();
    let mut page = Vec::new();
    let rendered = clap_mangen::Man::new(command.clone())
        .render(&mut page)
        .and_then(|()| {
            for sub in command.get_subcommands().filter(|sub| !sub.is_hide_set()) {
                let name = format!("sqs-batch-worker-{}", sub.get_name());
                clap_mangen::Man::new(sub.clone().name(name)).render(&mut page)?;
            }
            std::io::stdout().write_all(&page)
        });
    match rendered {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("man: cannot write the page: {error}");
            ExitCode::FAILURE
        }
    }
}
