//! `kennel merge`: merges a worktree or clone session's branch into the
//! current branch of the user's checkout.

use clap::Args;
use kennel_git::MergeOutcome;

use kennel_lib::error::CliError;

#[derive(Debug, Args)]
pub struct MergeArgs {
    /// The session: its name, id or a unique id prefix (`kennel ls`)
    pub session: String,
}

pub async fn run(args: MergeArgs) -> Result<i32, CliError> {
    let reviewed = kennel_lib::checkout::review(&args.session).await?;
    let name = &reviewed.found.session.name;
    let branch = &reviewed.checkout.branch;
    if reviewed.running() {
        kennel_lib::report::note(&format!(
            "session {name} is still running: only what it has committed is merged"
        ));
    }
    let outcome = reviewed
        .repo
        .merge(&reviewed.checkout)
        .map_err(kennel_lib::checkout::git_error)?;
    match outcome {
        MergeOutcome::UpToDate => {
            kennel_lib::report::note(&format!("already up to date with {branch}"))
        }
        MergeOutcome::FastForward { .. } => {
            kennel_lib::report::note(&format!("fast-forwarded to {branch} (session {name})"))
        }
        MergeOutcome::Merged { .. } => {
            kennel_lib::report::note(&format!("merged {branch} (session {name})"))
        }
    }
    Ok(0)
}
