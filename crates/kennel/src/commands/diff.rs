//! `kennel diff`: a worktree or clone session's changes against the commit
//! it started from, committed and not. The agent wrote the files, so their
//! control characters are shown escaped unless `--raw`.

use clap::Args;

use kennel_lib::error::CliError;

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The session: its name, id or a unique id prefix (`kennel ls`)
    pub session: String,

    /// A summary of the changed files instead of the patch
    #[arg(long)]
    pub stat: bool,

    /// The agent's bytes as they are (control characters and escape
    /// sequences in its files can hide lines on a terminal; by default they
    /// are shown escaped, e.g. `\x1b`)
    #[arg(long)]
    pub raw: bool,
}

pub async fn run(args: DiffArgs) -> Result<i32, CliError> {
    let reviewed = kennel_lib::checkout::review(&args.session).await?;
    let diff = reviewed
        .repo
        .diff(&reviewed.checkout, args.stat)
        .map_err(kennel_lib::checkout::git_error)?;
    let diff = if args.raw {
        diff
    } else {
        kennel_lib::text::terminal_safe(&diff, false)
    };
    // `kennel diff | head`: the reader going away ends kennel quietly.
    crate::ui::write_stdout_bytes(&diff);
    Ok(0)
}
