//! `kennel discard`: removes a worktree or clone session's checkout and
//! branch. The session stays in the registry, without a checkout.

use clap::Args;

use kennel_lib::error::CliError;

#[derive(Debug, Args)]
pub struct DiscardArgs {
    /// The session: its name, id or a unique id prefix (`kennel ls`)
    pub session: String,

    /// Do not ask first
    #[arg(short, long)]
    pub force: bool,
}

pub async fn run(args: DiscardArgs) -> Result<i32, CliError> {
    let mut reviewed = kennel_lib::checkout::review(&args.session).await?;
    let session = &reviewed.found.session;
    let checkout = &reviewed.checkout;
    if reviewed.running() {
        return Err(CliError::usage(format!(
            "session {} is still running in its checkout",
            session.name
        ))
        .with_hint(format!(
            "`kennel stop {}` ends it first (a `kennel run` session ends with its agent)",
            session.name
        )));
    }
    if !args.force {
        let question = format!(
            "Remove branch {} and {} with all of session {}'s work?",
            checkout.branch,
            checkout.dir.display(),
            session.name
        );
        let no_terminal = CliError::usage(
            "kennel discard asks before removing a session's work, and stdin is not a terminal",
        )
        .with_hint(format!(
            "`kennel discard --force {}` removes it without asking",
            session.name
        ));
        if !crate::confirm::ask(&question, no_terminal)? {
            kennel_lib::report::note("nothing removed");
            return Ok(0);
        }
    }
    reviewed
        .repo
        .discard(checkout)
        .map_err(kennel_lib::checkout::git_error)?;
    let (id, name, branch) = (
        session.id.clone(),
        session.name.clone(),
        checkout.branch.clone(),
    );
    reviewed.found.registry.set_checkout(&id, None)?;
    kennel_lib::report::note(&format!(
        "discarded session {name}: branch {branch} and its checkout are gone"
    ));
    Ok(0)
}
