//! `kennel start`: a persistent session, started detached.
//!
//! The agent runs in a tmux session inside the sandbox (on the socket
//! [`kennel_core::settings::SESSION_TMUX_SOCKET`]): `kennel attach` attaches
//! to it (detach with `C-b d`), `send` types into it, `capture` reads its
//! screen, `logs` reads everything it showed. The container lives as long as
//! the agent and exits with the agent's exit code.

use clap::Args;
use kennel_sessions::{Mode, Registry, SlotRequest, State};

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
    plan.tty = false;
    plan.stdin = false;
    plan.command = kennel_core::settings::session_command(&plan.command);

    let slot = args.run.slot_request(&context, &plan)?;
    if args.run.dry_run {
        if let SlotRequest::Exact(slot) = slot {
            kennel_core::settings::use_slot(&mut plan, &context.host, slot);
        }
        let json = serde_json::to_string_pretty(&plan.redacted())
            .map_err(|error| CliError::kennel(format!("cannot serialise the plan: {error}")))?;
        println!("{json}");
        return Ok(0);
    }
    if native {
        return Err(crate::sessions::native_unsupported());
    }
    let engine = match engine {
        Some(engine) => engine,
        None => crate::engines::connect(&plan.backend).await?,
    };
    for warning in plan.warnings.iter().chain(&engine.unenforced_limits(&plan)) {
        eprintln!("kennel: warning: {warning}");
    }
    let mut registry = Registry::open(&crate::sessions::registry_path(&context.host))?;
    let session = crate::sessions::register(
        &mut registry,
        &context.host,
        &mut plan,
        args.name.clone(),
        Mode::Persistent,
        slot,
    )?;
    let started: Result<String, CliError> = async {
        crate::image_build::ensure(&engine, &recipes, false).await?;
        prepare_host(&context, &plan, &image_settings)?;
        // `allowlist` and `restricted`: the session's egress proxy runs in a
        // daemon that lives as long as the container (see `proxy_daemon`).
        let daemon = match crate::proxy::ProxySpec::from_plan(&context.config, &plan)? {
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
        let container = match engine.start_detached(&plan).await {
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
    .await;
    match started {
        Ok(container) => {
            registry.mark_running(&session.id, &container)?;
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
