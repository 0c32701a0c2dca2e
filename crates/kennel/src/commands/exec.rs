//! `kennel exec`: run a command in a persistent session's sandbox.

use std::io::IsTerminal;

use clap::Args;
use kennel_engine::{ContainerState, Engine};

use crate::error::CliError;
use crate::sessions::Found;

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// The session: its name, id or a unique id prefix (`kennel ls`)
    pub session: String,

    /// The command and its arguments
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

pub async fn run(args: ExecArgs) -> Result<i32, CliError> {
    let mut found = crate::sessions::find(&args.session)?;
    if found.is_native() {
        return native(&mut found, args.command).await;
    }
    let (engine, container) = found.container().await?;
    require_running(&mut found, &engine, &container).await?;
    let tty = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let env = if tty {
        vec![format!("TERM={}", crate::sessions::sandbox_term())]
    } else {
        Vec::new()
    };
    Ok(engine
        .exec(&container, &args.command, &env, tty, true)
        .await?)
}

/// Fails (and records the session's real state) unless its container runs.
pub async fn require_running(
    found: &mut Found,
    engine: &Engine,
    container: &str,
) -> Result<(), CliError> {
    let state = engine.state(container).await?;
    if state == ContainerState::Running {
        return Ok(());
    }
    found.record(engine, state, false).await;
    Err(found.not_running())
}

/// Runs `argv` in the session's sandbox without a terminal; fails with its
/// stderr when it fails. Returns its stdout.
pub async fn output(
    engine: &Engine,
    container: &str,
    argv: &[String],
) -> Result<Vec<u8>, CliError> {
    let (code, stdout, stderr) = engine.exec_output(container, argv).await?;
    if code != 0 {
        return Err(CliError::kennel(format!(
            "`{}` failed in the sandbox (exit code {code}): {}",
            argv.join(" "),
            String::from_utf8_lossy(&stderr).trim()
        )));
    }
    Ok(stdout)
}

/// Native: the command enters the running sandbox, confined as its agent is.
async fn native(found: &mut Found, command: Vec<String>) -> Result<i32, CliError> {
    let (session, owner) = found.native_running()?;
    let mut plan = session.plan()?;
    plan.command = command;
    let init = kennel_native::sandbox_init_of(owner.pid as u32).ok_or_else(|| {
        CliError::kennel(format!(
            "the sandbox of session {} is not running",
            found.session.name
        ))
    })?;
    let entered = tokio::task::spawn_blocking(move || {
        kennel_native::enter(&plan, init, &kennel_native::NativeOptions::default())
    })
    .await
    .map_err(|error| CliError::kennel(format!("the native exec failed: {error}")))?;
    match entered {
        Ok(code) => Ok(code),
        Err(error @ kennel_native::NativeError::CommandNotFound { .. }) => {
            eprintln!("kennel: {error}");
            Ok(error.exit_code())
        }
        Err(error) => Err(super::run::native_error(&error)),
    }
}
