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
    let session = &found.session;
    Err(CliError::kennel(format!(
        "session {} is not running (it is {}{})",
        session.name,
        session.state,
        session
            .exit_code
            .map(|code| format!(", exit code {code}"))
            .unwrap_or_default()
    ))
    .with_hint(format!(
        "`kennel logs {}` shows what it did; `kennel rm {}` removes it",
        session.name, session.name
    )))
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
