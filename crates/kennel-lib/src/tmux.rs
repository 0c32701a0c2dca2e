//! A persistent session's agent runs in the tmux session
//! [`settings::SESSION_TMUX_TARGET`] on a tmux server of kennel's own:
//! inside the container on Docker and Podman, on the host (in the session's
//! private directory) for the native backend. What kennel asks of it —
//! attach this terminal, type into it, read its screen, hang it up — is the
//! same either way; a [`TmuxServer`] says only how `tmux` is run there.

use async_trait::async_trait;
use kennel_core::settings;

use crate::error::CliError;

/// Where a session's tmux server runs.
#[async_trait(?Send)]
pub trait TmuxServer {
    /// `tmux ARGS` against the server, without a terminal: its stdout, or
    /// an error with what it said.
    async fn tmux(&self, args: &[&str]) -> Result<Vec<u8>, CliError>;

    /// `tmux ARGS` with this terminal: its exit code.
    async fn tmux_attached(&self, args: &[&str]) -> Result<i32, CliError>;
}

const TARGET: &str = settings::SESSION_TMUX_TARGET;

/// What a [`TmuxServer::tmux`] gives back: the command's stdout when it
/// exited 0, else an error naming it, the sandbox `place` and what tmux said.
pub fn tmux_output(
    args: &[&str],
    place: &str,
    exit_code: i32,
    stdout: Vec<u8>,
    stderr: &[u8],
) -> Result<Vec<u8>, CliError> {
    if exit_code != 0 {
        return Err(CliError::kennel(format!(
            "`tmux {}` in {place} failed ({exit_code}): {}",
            args.join(" "),
            String::from_utf8_lossy(stderr).trim()
        )));
    }
    Ok(stdout)
}

/// This terminal on the agent's; `C-b d` detaches.
pub async fn attach(server: &dyn TmuxServer) -> Result<i32, CliError> {
    server
        .tmux_attached(&["attach-session", "-t", TARGET])
        .await
}

/// Types `text` (literally) into the agent, then Enter if `enter`.
pub async fn send(server: &dyn TmuxServer, text: &str, enter: bool) -> Result<(), CliError> {
    server
        .tmux(&["send-keys", "-t", TARGET, "-l", "--", text])
        .await?;
    if enter {
        server.tmux(&["send-keys", "-t", TARGET, "Enter"]).await?;
    }
    Ok(())
}

/// The agent's screen (`history`: with its scrollback; `escapes`: with
/// colours and attributes), wrapped lines joined.
pub async fn capture(
    server: &dyn TmuxServer,
    history: bool,
    escapes: bool,
) -> Result<Vec<u8>, CliError> {
    let mut args = vec!["capture-pane", "-p", "-J", "-t", TARGET];
    if history {
        args.extend(["-S", "-"]);
    }
    if escapes {
        args.push("-e");
    }
    server.tmux(&args).await
}

/// A shell script, run in the sandbox as the agent's user, that sends
/// SIGTERM to the agent: to the process group of its tmux pane.
pub fn terminate_agent_script() -> String {
    use kennel_core::settings::{SESSION_TMUX_SOCKET, SESSION_TMUX_TARGET};
    format!(
        "pid=$(tmux -S {SESSION_TMUX_SOCKET} display-message -p -t {SESSION_TMUX_TARGET} '#{{pane_pid}}') && env kill -s TERM -- -$pid"
    )
}

/// What ends a session's tmux server: the agent gets SIGHUP, as from a
/// closed terminal.
pub const HANG_UP: &[&str] = &["kill-server"];

/// Ends the server (see [`HANG_UP`]).
pub async fn hang_up(server: &dyn TmuxServer) {
    let _ = server.tmux(HANG_UP).await;
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    /// Records what it was asked.
    #[derive(Default)]
    struct Recorder(RefCell<Vec<String>>);

    #[async_trait(?Send)]
    impl TmuxServer for Recorder {
        async fn tmux(&self, args: &[&str]) -> Result<Vec<u8>, CliError> {
            self.0.borrow_mut().push(args.join(" "));
            Ok(b"screen".to_vec())
        }
        async fn tmux_attached(&self, args: &[&str]) -> Result<i32, CliError> {
            self.0
                .borrow_mut()
                .push(format!("(attached) {}", args.join(" ")));
            Ok(0)
        }
    }

    #[test]
    fn every_backend_asks_tmux_the_same() {
        let server = Recorder::default();
        let runtime = crate::runtime().expect("runtime");
        runtime.block_on(async {
            send(&server, "-n not an option", true).await.expect("send");
            send(&server, "x", false).await.expect("send");
            capture(&server, true, true).await.expect("capture");
            capture(&server, false, false).await.expect("capture");
            attach(&server).await.expect("attach");
            hang_up(&server).await;
        });
        assert_eq!(
            server.0.into_inner(),
            [
                "send-keys -t agent -l -- -n not an option",
                "send-keys -t agent Enter",
                "send-keys -t agent -l -- x",
                "capture-pane -p -J -t agent -S - -e",
                "capture-pane -p -J -t agent",
                "(attached) attach-session -t agent",
                "kill-server",
            ]
        );
    }
}
