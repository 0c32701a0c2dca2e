//! The agent in its Pod attached to kennel's terminal, through the API's
//! exec: on a pty when kennel has a terminal (raw mode, the window's size
//! followed), else with stdout and stderr kept apart; stdin forwarded; the
//! exit code returned. A signal to kennel ends the wait (the exec API
//! cannot pass a signal on): the caller then ends the agent.

use futures_util::SinkExt;
use kennel_kube::Cluster;
use kennel_lib::error::CliError;
use kennel_term::{AtEof, RawMode, window_size};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::signal::unix::{SignalKind, signal};

use crate::cluster_error;

/// How the attached agent's wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AgentEnd {
    /// The agent exited with this code.
    Exited(i32),
    /// kennel got this signal first; the agent may still run.
    Signalled(i32),
}

/// Copies `from` to `to` until it ends (or `to` goes away: a reader that
/// left is not the agent's failure, and the rest is dropped).
async fn copy_out(mut from: impl AsyncRead + Unpin, to: impl AsyncWrite + Unpin) {
    let mut sink = kennel_term::Sink::new(to);
    let mut chunk = vec![0u8; 32 * 1024];
    loop {
        match from.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => sink.write(&chunk[..n]).await,
        }
    }
    sink.flush().await;
}

/// A command of the user's (`kennel exec`, `kennel attach`'s tmux) in the
/// Pod `pod`, attached to this terminal with stdin forwarded; on a pty
/// with the sandbox's `TERM` when `tty`. Its exit code, or 128 + the
/// signal kennel got first.
pub(crate) async fn run_for_user(
    cluster: &Cluster,
    pod: &str,
    command: impl IntoIterator<Item = String>,
    tty: bool,
) -> Result<i32, CliError> {
    let mut argv = Vec::new();
    if tty {
        argv.push("env".to_string());
        argv.push(format!("TERM={}", kennel_lib::sessions::sandbox_term()));
    }
    argv.extend(command);
    Ok(match run(cluster, pod, &argv, tty, true).await? {
        AgentEnd::Exited(code) => code,
        AgentEnd::Signalled(signo) => 128 + signo,
    })
}

/// Runs `argv` in the Pod `pod` attached to this terminal: on a pty when
/// `tty`, with kennel's stdin forwarded when `stdin`.
pub(crate) async fn run(
    cluster: &Cluster,
    pod: &str,
    argv: &[String],
    tty: bool,
    stdin: bool,
) -> Result<AgentEnd, CliError> {
    let mut process = cluster
        .exec_attached(pod, argv, tty)
        .await
        .map_err(cluster_error)?;
    let status = process.take_status();
    let failed = |what: &str| CliError::kennel(format!("Kubernetes: exec in Pod {pod}: {what}"));
    let (Some(mut input), Some(output), Some(status)) = (process.stdin(), process.stdout(), status)
    else {
        return Err(failed("the stream has no stdin or stdout"));
    };
    let raw_mode = match tty {
        true => RawMode::enter().map_err(|error| {
            CliError::kennel(format!("cannot set the terminal to raw mode: {error}"))
        })?,
        false => None,
    };
    let mut copies = vec![tokio::spawn(copy_out(output, tokio::io::stdout()))];
    if let Some(errors) = process.stderr() {
        copies.push(tokio::spawn(copy_out(errors, tokio::io::stderr())));
    }
    let mut resize = process.terminal_size();
    if let (Some(sender), Some((rows, cols))) = (resize.as_mut(), window_size()) {
        let _ = sender
            .send(kennel_kube::TerminalSize {
                width: cols,
                height: rows,
            })
            .await;
    }
    let mut stdin_reader = None;
    if stdin {
        let at_eof = match tty {
            true => AtEof::ControlD,
            false => AtEof::HalfClose,
        };
        let (reader, _forwarding) = kennel_term::forward_stdin(input, at_eof)
            .map_err(|error| CliError::kennel(format!("cannot read stdin: {error}")))?;
        stdin_reader = Some(reader);
    } else {
        // Nothing to send: the agent sees its stdin end at once.
        let _ = input.shutdown().await;
    }
    let mut winch = signal(SignalKind::window_change()).ok();
    let mut signals = kennel_term::attached_signals();
    tokio::pin!(status);
    let end = loop {
        tokio::select! {
            status = &mut status => {
                break match kennel_kube::exit_code(status.as_ref()) {
                    Some(code) => Ok(AgentEnd::Exited(code)),
                    None => Err(failed(&format!("it ended without an exit code ({status:?})"))),
                };
            }
            Some(()) = async { match winch.as_mut() { Some(w) => w.recv().await, None => std::future::pending().await } } => {
                if let (Some(sender), Some((rows, cols))) = (resize.as_mut(), window_size()) {
                    let _ = sender.send(kennel_kube::TerminalSize { width: cols, height: rows }).await;
                }
            }
            Some(signo) = signals.recv() => break Ok(AgentEnd::Signalled(signo)),
        }
    };
    if let Some(mut reader) = stdin_reader {
        reader.cancel();
    }
    // What the agent printed last reaches the terminal before it is restored.
    if matches!(end, Ok(AgentEnd::Exited(_))) {
        for copy in copies {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), copy).await;
        }
    } else {
        process.abort();
    }
    drop(raw_mode);
    end
}
