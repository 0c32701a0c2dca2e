//! `kennel completions`: shell completion scripts, generated from the CLI definition.

use clap::{Args, CommandFactory};
use clap_complete::Shell;

use crate::cli::Cli;
use kennel_lib::error::CliError;

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to generate completions for
    #[arg(value_enum)]
    pub shell: Shell,
}

pub fn run(args: CompletionsArgs) -> Result<i32, CliError> {
    let mut command = Cli::command();
    clap_complete::generate(args.shell, &mut command, "kennel", &mut std::io::stdout());
    Ok(0)
}

/// `kennel man`: the man page, from the same definition.
pub fn man() -> Result<i32, CliError> {
    let page = clap_mangen::Man::new(Cli::command());
    page.render(&mut std::io::stdout())
        .map_err(|error| CliError::kennel(format!("cannot write the man page: {error}")))?;
    Ok(0)
}
