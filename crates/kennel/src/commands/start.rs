//! `kennel start`: a persistent session, started detached.
//!
//! The agent runs in a tmux session inside the sandbox (on the socket
//! [`kennel_core::settings::SESSION_TMUX_SOCKET`]): `kennel attach` attaches
//! to it (detach with `C-b d`), `send` types into it, `capture` reads its
//! screen, `logs` reads everything it showed. The container lives as long as
//! the agent and exits with the agent's exit code.

use clap::Args;
use kennel_sessions::{Mode, Registry, State};

use crate::commands::run::{Prepared, RunArgs, prepare, prepare_host};
use crate::error::CliError;

#[derive(Debug, Args)]
pub struct StartArgs {
    /// A name for the session (default: `<agent>-<n>`)
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    #[command(flatten)]
    pub run: RunArgs,
}

pub async fn run(args: StartArgs) -> Result<i32, CliError> {
    if let Some(name) = &args.name {
        check_name(name)?;
    }
    let Prepared {
        context,
        agent,
        backend,
        image_settings,
        recipes,
        mut plan,
    } = prepare(&args.run, false, |_, _, _| {}).await?;
    plan.ephemeral = false;
    backend.persistent(&mut plan);

    let choice = args.run.choose(&context, &plan)?;
    if args.run.dry_run {
        return crate::commands::run::print_dry_run(&choice, &mut plan);
    }
    crate::commands::run::direct_guard(&args.run, &context, choice.mode)?;
    // Fail closed here, where the user sees it.
    let mut launch = backend
        .prepare(&plan)
        .await
        .map_err(|error| crate::commands::run::with_install_hint(error, &agent))?;
    for warning in plan.warnings.iter().chain(&launch.warnings()) {
        eprintln!("kennel: warning: {warning}");
    }
    let mut registry = Registry::open(&crate::sessions::registry_path(&context.host))?;
    let session = crate::sessions::register(
        &mut registry,
        &context.host,
        &mut plan,
        args.name.clone(),
        Mode::Persistent,
        choice.slot,
    )?;
    if choice.mode == crate::checkout::WorkspaceMode::Direct
        && let Some(workspace) = &context.workspace
    {
        // Checked when the session has ended, however it ends.
        crate::git_audit::begin(&context.host, workspace, &session.id, &session.name);
    }
    if choice.mode != crate::checkout::WorkspaceMode::Direct
        && let Err(error) = crate::checkout::create(
            &mut registry,
            &context.host,
            &mut plan,
            &choice,
            args.run.branch.as_deref(),
            &session,
        )
    {
        if let Err(registry_error) =
            registry.mark_ended(&session.id, State::Failed, Some(error.kind.code()))
        {
            tracing::warn!("cannot record the failed start: {registry_error}");
        }
        return Err(error);
    }
    let started = async {
        launch
            .provision(
                &recipes,
                &crate::image_build::log_dir(&context.host.data_dir),
            )
            .await?;
        prepare_host(&context, &plan, &image_settings)?;
        // `allowlist` and `restricted`: the session's egress proxy lives as
        // long as its sandbox.
        let proxy = crate::proxy::ProxySpec::from_plan(&context.config, &plan)?;
        launch
            .start(&plan, proxy, &context.host, &mut registry, &session.id)
            .await
    }
    .await;
    match started {
        Ok(()) => {
            outln!("{} {}", session.name, session.id);
            eprintln!(
                "kennel: session {} started; `kennel attach {}` attaches (detach with C-b d)",
                session.name, session.name
            );
            Ok(0)
        }
        Err(error) => {
            if let Err(registry_error) =
                registry.mark_ended(&session.id, State::Failed, Some(error.kind.code()))
            {
                tracing::warn!("cannot record the failed start: {registry_error}");
            }
            Err(error)
        }
    }
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
