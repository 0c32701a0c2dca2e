//! `kennel apply`: brings a worktree or clone session's changes into the
//! user's checkout as uncommitted (staged) changes.

use clap::Args;

use kennel_lib::error::CliError;

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The session: its name, id or a unique id prefix (`kennel ls`)
    pub session: String,
}

pub async fn run(args: ApplyArgs) -> Result<i32, CliError> {
    let reviewed = kennel_lib::checkout::review(&args.session).await?;
    let name = &reviewed.found.session.name;
    if reviewed.running() {
        kennel_lib::report::note(&format!(
            "session {name} is still running: only what it has committed is applied"
        ));
    }
    reviewed
        .repo
        .apply(&reviewed.checkout)
        .map_err(kennel_lib::checkout::git_error)?;
    kennel_lib::report::note(&format!(
        "the changes of session {name} ({}) are in your checkout, staged and uncommitted",
        reviewed.checkout.branch
    ));
    Ok(0)
}
