//! `kennel stop`: end a persistent session gracefully.
//!
//! SIGTERM goes to the agent (the process group of its tmux pane); when it
//! is still running after the timeout, the tmux server is closed (SIGHUP to
//! the agent, as a closed terminal would), then the engine stops the container.

use std::time::Duration;

use clap::Args;
use kennel_core::settings::{SESSION_TMUX_SOCKET, SESSION_TMUX_TARGET};
use kennel_engine::{ContainerState, Engine};

use crate::error::CliError;

#[derive(Debug, Args)]
pub struct StopArgs {
    /// The session: its name, id or a unique id prefix (`kennel ls`)
    pub session: String,

    /// Seconds the agent gets to end after SIGTERM
    #[arg(short, long, value_name = "SECONDS", default_value_t = 10)]
    pub timeout: u64,
}

pub async fn run(args: StopArgs) -> Result<i32, CliError> {
    let mut found = crate::sessions::find(&args.session)?;
    if found.is_native() {
        return native(&mut found, Duration::from_secs(args.timeout));
    }
    let (engine, container) = found.container().await?;
    let state = engine.state(&container).await?;
    if state != ContainerState::Running {
        found.record(&engine, state, true).await;
        eprintln!("kennel: session {} is not running", found.session.name);
        return Ok(0);
    }
    let script = format!(
        "pid=$(tmux -S {SESSION_TMUX_SOCKET} display-message -p -t {SESSION_TMUX_TARGET} '#{{pane_pid}}') && env kill -s TERM -- -$pid"
    );
    let signalled = engine
        .exec_output(&container, &["sh".into(), "-c".into(), script])
        .await;
    tracing::debug!(?signalled, "SIGTERM to the agent");
    let mut state = wait_exit(&engine, &container, Duration::from_secs(args.timeout)).await?;
    if state == ContainerState::Running {
        let hangup = kennel_core::settings::session_tmux(&["kill-server"]);
        let _ = engine.exec_output(&container, &hangup).await;
        state = wait_exit(&engine, &container, Duration::from_secs(2)).await?;
    }
    if state == ContainerState::Running {
        engine.stop(&container, Duration::from_secs(2)).await?;
        state = engine.state(&container).await?;
    }
    found.record(&engine, state, true).await;
    eprintln!("kennel: session {} stopped", found.session.name);
    crate::checkout::session_ended(&found.session);
    Ok(0)
}

/// Polls the container until it is no longer running, or `limit` passes.
pub async fn wait_exit(
    engine: &Engine,
    container: &str,
    limit: Duration,
) -> Result<ContainerState, CliError> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let state = engine.state(container).await?;
        if state != ContainerState::Running || tokio::time::Instant::now() >= deadline {
            return Ok(state);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Native: SIGTERM to the session's kennel, which forwards it to the agent;
/// after the timeout the tmux server is closed (SIGHUP), and after 2 s more
/// the session's kennel is killed (the sandbox dies with it).
fn native(found: &mut crate::sessions::Found, timeout: Duration) -> Result<i32, CliError> {
    use crate::native_session::{signal, wait_gone};
    let (session, owner) = found.native()?;
    if let Some(owner) = owner {
        // As for containers: SIGTERM, then a hang-up, then SIGKILL.
        signal(owner, libc::SIGTERM);
        if !wait_gone(owner, timeout) {
            session.hang_up();
            if !wait_gone(owner, Duration::from_secs(2)) {
                crate::native_session::kill(owner);
            }
        }
    } else {
        eprintln!("kennel: session {} is not running", found.session.name);
    }
    session.close();
    if owner.is_some() {
        let code = found.session.exit_code;
        found.mark(kennel_sessions::State::Stopped, code);
        eprintln!("kennel: session {} stopped", found.session.name);
    }
    crate::checkout::session_ended(&found.session);
    Ok(0)
}
