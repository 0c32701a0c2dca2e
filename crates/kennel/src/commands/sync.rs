//! `kennel sync`: brings a clone session's branch into the user's
//! repository.

use clap::Args;

use kennel_lib::error::CliError;

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// The session: its name, id or a unique id prefix (`kennel ls`)
    pub session: String,
}

pub async fn run(args: SyncArgs) -> Result<i32, CliError> {
    let reviewed = kennel_lib::checkout::review(&args.session).await?;
    let tip = reviewed
        .repo
        .sync(&reviewed.checkout)
        .map_err(kennel_lib::checkout::git_error)?;
    kennel_lib::report::note(&format!(
        "branch {} is at {} in {}",
        reviewed.checkout.branch,
        &tip[..tip.len().min(12)],
        reviewed.repo.toplevel().display()
    ));
    Ok(0)
}
