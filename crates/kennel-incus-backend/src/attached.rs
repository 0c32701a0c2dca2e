//! A command in a container attached to kennel's terminal: on a pty when
//! kennel has a terminal, else with stdout and stderr kept apart; stdin
//! forwarded, signals and window size changes passed on, the exit code
//! returned.

use std::io::Write;

use kennel_core::plan::Plan;
use kennel_incus::{Client, ExecRequest, TerminalSize};
use kennel_lib::error::CliError;
use kennel_term::{AtEof, RawMode, StdinReader, window_size};
use tokio::io::AsyncReadExt;
use tokio::signal::unix::{SignalKind, signal};

use crate::incus_error;

/// The agent of `plan`, attached: its exit code.
pub async fn run(
    client: &Client,
    instance: &str,
    request: ExecRequest,
    plan: &Plan,
) -> Result<i32, CliError> {
    if plan.tty {
        interactive(client, instance, request, plan.stdin).await
    } else {
        streamed(client, instance, request, plan.stdin).await
    }
}

/// `kennel exec` and `kennel attach`: a command beside the agent.
pub async fn exec(
    client: &Client,
    instance: &str,
    request: ExecRequest,
    tty: bool,
) -> Result<i32, CliError> {
    if tty {
        interactive(client, instance, request, true).await
    } else {
        streamed(client, instance, request, true).await
    }
}

/// On a pty: kennel's terminal in raw mode, the window size followed.
async fn interactive(
    client: &Client,
    instance: &str,
    request: ExecRequest,
    stdin: bool,
) -> Result<i32, CliError> {
    let (rows, cols) = window_size().unwrap_or((24, 80));
    let session = client
        .exec_interactive(instance, &request, TerminalSize { cols, rows })
        .await
        .map_err(incus_error)?;
    let (stream, control, exit) = session.into_parts();
    let (mut reader, writer) = tokio::io::split(stream);
    let raw_mode = RawMode::enter().map_err(|error| {
        CliError::kennel(format!("cannot set the terminal to raw mode: {error}"))
    })?;
    let output = tokio::spawn(async move {
        let mut stdout = kennel_term::Sink::new(tokio::io::stdout());
        let mut chunk = vec![0u8; 32 * 1024];
        loop {
            match reader.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => stdout.write(&chunk[..n]).await,
            }
        }
        stdout.flush().await;
    });
    let mut stdin_reader = None;
    if stdin {
        let (reader, _forwarding) = kennel_term::forward_stdin(writer, AtEof::ControlD)
            .map_err(|error| CliError::kennel(format!("cannot read stdin: {error}")))?;
        stdin_reader = Some(reader);
    }
    let mut winch = signal(SignalKind::window_change()).ok();
    let mut signals = kennel_term::attached_signals();
    let waiting = exit.wait();
    tokio::pin!(waiting);
    let code = loop {
        tokio::select! {
            code = &mut waiting => break code,
            Some(()) = async { match winch.as_mut() { Some(w) => w.recv().await, None => std::future::pending().await } } => {
                if let Some((rows, cols)) = window_size() {
                    let _ = control.resize(TerminalSize { cols, rows });
                }
            }
            Some(signo) = signals.recv() => {
                let _ = control.signal(signo);
            }
        }
    };
    if let Some(mut reader) = stdin_reader {
        reader.cancel();
    }
    // What the command printed last reaches the terminal before it is restored.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), output).await;
    drop(raw_mode);
    code.map_err(incus_error)
}

/// Without a pty: stdout and stderr apart, as they come.
async fn streamed(
    client: &Client,
    instance: &str,
    request: ExecRequest,
    stdin: bool,
) -> Result<i32, CliError> {
    let mut stdin_reader = None;
    let input = if stdin {
        let (reader, chunks) = StdinReader::spawn()
            .map_err(|error| CliError::kennel(format!("cannot read stdin: {error}")))?;
        stdin_reader = Some(reader);
        Some(chunks)
    } else {
        None
    };
    // A reader that went away is not the command's failure: the rest of
    // its output is dropped, and it runs on.
    let mut output = |fd: u8, bytes: &[u8]| {
        let _ = match fd {
            2 => {
                let mut err = std::io::stderr().lock();
                err.write_all(bytes).and_then(|()| err.flush())
            }
            _ => {
                let mut out = std::io::stdout().lock();
                out.write_all(bytes).and_then(|()| out.flush())
            }
        };
    };
    let signals = kennel_term::attached_signals();
    let code = client
        .exec_streamed(instance, &request, input, Some(signals), &mut output)
        .await;
    if let Some(mut reader) = stdin_reader {
        reader.cancel();
    }
    code.map_err(incus_error)
}
