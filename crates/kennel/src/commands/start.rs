//! `kennel start`: a persistent session, started detached.
//!
//! The agent runs in a tmux session inside the sandbox (on the socket
//! [`kennel_core::settings::SESSION_TMUX_SOCKET`]): `kennel attach` attaches
//! to it (detach with `C-b d`), `send` types into it, `capture` reads its
//! screen, `logs` reads everything it showed. The container lives as long as
//! the agent and exits with the agent's exit code.

use clap::Args;

use crate::commands::run::RunArgs;
use kennel_lib::error::CliError;

#[derive(Debug, Args)]
pub struct StartArgs {
    /// A name for the session (default: `<agent>-<n>`)
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    #[command(flatten)]
    pub json: crate::cli::JsonFlag,

    #[command(flatten)]
    pub run: RunArgs,
}

pub async fn run(args: StartArgs) -> Result<i32, CliError> {
    if let Some(name) = &args.name {
        check_name(name)?;
    }
    let mut launch = args.run.launch_request(false);
    // The sandbox runs in a pane of its own, whose kennel prepares it.
    launch.warm_up = false;
    let mut prepared = kennel_lib::launch::prepare(&launch).await?;
    kennel_lib::launch::persistent(&mut prepared);
    let choice = args.run.choose(&prepared.context, &prepared.plan)?;
    if args.run.dry_run {
        return crate::commands::run::print_dry_run(
            &mut prepared,
            &choice,
            &launch,
            args.name.as_deref(),
        );
    }
    let session = kennel_lib::launch::start(prepared, choice, &launch, args.name).await?;
    if args.json.json {
        crate::ui::print_json_object(&session)?;
    } else {
        outln!("{} {}", session.name, session.id);
    }
    kennel_lib::report::note(&format!(
        "session {} started; `kennel attach {}` attaches (detach with C-b d)",
        session.name, session.name
    ));
    Ok(0)
}

/// Names are used on command lines: keep them plain.
fn check_name(name: &str) -> Result<(), CliError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with(['-', '.']);
    if ok {
        Ok(())
    } else {
        Err(CliError::usage(format!("invalid session name `{name}`"))
            .with_hint("use letters, digits, `-`, `_` and `.` (up to 64 characters)"))
    }
}

#[cfg(test)]
mod tests {
    use super::check_name;

    #[test]
    fn names() {
        assert!(check_name("fix-bug_2.v1").is_ok());
        for bad in ["", "-x", ".x", "a b", "a/b", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
