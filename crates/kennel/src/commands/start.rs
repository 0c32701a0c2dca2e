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
        engine,
        native,
        image_settings,
        recipes,
        mut plan,
        ..
    } = prepare(&args.run, false, |_, _, _| {}).await?;
    plan.ephemeral = false;
    if !native {
        // The container's own command keeps the agent in tmux (the native
        // backend's tmux runs on the host instead: `native_session`).
        plan.tty = false;
        plan.stdin = false;
        plan.command = kennel_core::settings::session_command(&plan.command);
    }

    let choice = args.run.choose(&context, &plan)?;
    if args.run.dry_run {
        return crate::commands::run::print_dry_run(&choice, &mut plan);
    }
    crate::commands::run::direct_guard(&args.run, &context, choice.mode)?;
    let engine = match engine {
        Some(engine) => Some(engine),
        None if native => None,
        None => Some(crate::engines::connect(&plan.backend).await?),
    };
    let limits_warning = engine
        .as_ref()
        .and_then(|engine| engine.unenforced_limits(&plan));
    for warning in plan.warnings.iter().chain(&limits_warning) {
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
    let started = match &engine {
        Some(engine) => start_container(engine, &context, &plan, &image_settings, &recipes)
            .await
            .and_then(|container| Ok(registry.mark_running(&session.id, &container)?)),
        None => start_native(&context, &plan, &image_settings, &mut registry, &session.id),
    };
    match started {
        Ok(()) => {
            println!("{} {}", session.name, session.id);
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

/// Docker and Podman: a detached container (and, for `allowlist` and
/// `restricted`, the proxy daemon that lives as long as it). Returns its id.
async fn start_container(
    engine: &kennel_engine::Engine,
    context: &crate::context::Context,
    plan: &kennel_core::plan::Plan,
    image_settings: &kennel_image::ImageSettings,
    recipes: &[kennel_image::Recipe],
) -> Result<String, CliError> {
    crate::image_build::ensure(
        engine,
        recipes,
        false,
        &crate::image_build::log_dir(&context.host.data_dir),
    )
    .await?;
    prepare_host(context, plan, image_settings)?;
    // `allowlist` and `restricted`: the session's egress proxy runs in a
    // daemon that lives as long as the container (see `proxy_daemon`).
    let daemon = match crate::proxy::ProxySpec::from_plan(&context.config, plan)? {
        Some(spec) => Some(
            crate::proxy_daemon::ProxyDaemon::spawn(
                spec,
                &engine.kind().to_string(),
                &kennel_core::settings::net_log_dir(&context.host),
            )
            .await?,
        ),
        None => None,
    };
    tracing::info!(name = %plan.name, image = %plan.image.reference, "starting detached sandbox");
    let container = match engine.start_detached(plan).await {
        Ok(container) => container,
        Err(error) => {
            if let Some(daemon) = daemon {
                daemon.abort().await;
            }
            return Err(error.into());
        }
    };
    if let Some(daemon) = daemon
        && let Err(error) = daemon.watch(&container)
    {
        // No proxy, no way out: do not leave a session that cannot work.
        if let Err(remove_error) = engine.remove(&container, true).await {
            tracing::warn!("cannot remove {container}: {remove_error}");
        }
        return Err(error);
    }
    Ok(container)
}

/// Native: the sandbox runs in the pane of a tmux server of its own (see
/// `native_session`), whose process becomes the session's owner.
fn start_native(
    context: &crate::context::Context,
    plan: &kennel_core::plan::Plan,
    image_settings: &kennel_image::ImageSettings,
    registry: &mut Registry,
    id: &str,
) -> Result<(), CliError> {
    // Fail closed here, where the user sees it, not in the pane.
    let prepared = kennel_native::prepare(plan, &kennel_native::NativeOptions::default())
        .map_err(|error| crate::commands::run::native_error(&error))?;
    for warning in prepared.warnings() {
        eprintln!("kennel: warning: {warning}");
    }
    prepare_host(context, plan, image_settings)?;
    let proxy = crate::proxy::ProxySpec::from_plan(&context.config, plan)?;
    let session = crate::native_session::NativeSession::of(&context.host, &plan.name);
    tracing::info!(name = %plan.name, "starting native session");
    let owner = session.start(plan, proxy, id)?;
    let recorded = registry
        .set_owner(id, owner)
        .and_then(|()| registry.mark_running(id, &session.dir.display().to_string()));
    if let Err(error) = recorded {
        session.close();
        return Err(error.into());
    }
    session.go()
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
