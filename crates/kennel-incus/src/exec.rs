//! Running commands in an instance: collected output, or an interactive
//! session on a pty.
//!
//! Incus's exec websockets carry a stream as binary messages; an empty text
//! message (a "barrier") ends it. A control websocket takes JSON commands
//! (window size, signals). Closing the control socket, or (without one) the
//! stdout socket, before the command ends kills the command, so sockets are
//! kept until the operation has ended. Incus closes its side then, but
//! through incus-user that close never arrives (its proxy closes a
//! connection only once the client has), so the end of the operation, not
//! the server's close, is what ends the client's side.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use hyper::Method;
use serde::Serialize;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tracing::debug;

use crate::client::{Client, segment};
use crate::error::IncusError;
use crate::transport::RequestBody;
use crate::types::Operation;

/// Largest binary message sent for stdin / terminal input.
pub(crate) const INPUT_CHUNK: usize = 64 * 1024;
/// Buffer between an interactive session's websocket and its caller.
const SESSION_BUFFER: usize = 256 * 1024;
/// How long output may trail the end of its command.
pub(crate) const OUTPUT_GRACE: Duration = Duration::from_secs(10);
/// How long one wait for an unbounded command lasts before it is renewed.
const WAIT_SLICE: Duration = Duration::from_secs(3600);

pub(crate) type Socket = WebSocketStream<UnixStream>;

/// A command to run in an instance.
#[derive(Debug, Clone, Default)]
pub struct ExecRequest {
    pub command: Vec<String>,
    /// Added to Incus's defaults (`PATH`, `HOME`, `USER`, `LANG`).
    pub environment: BTreeMap<String, String>,
    pub cwd: Option<String>,
    /// The instance's own uid and gid (root when `None`).
    pub user: Option<u32>,
    pub group: Option<u32>,
    /// Written to the command's stdin, then end of file (non-interactive).
    pub stdin: Bytes,
    /// Longest the command may run (`None`: no limit).
    pub timeout: Option<Duration>,
}

impl ExecRequest {
    pub fn new<S: Into<String>>(command: impl IntoIterator<Item = S>) -> Self {
        ExecRequest {
            command: command.into_iter().map(Into::into).collect(),
            ..ExecRequest::default()
        }
    }

    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.environment.insert(key.into(), value.into());
        self
    }

    pub fn cwd(mut self, cwd: impl Into<String>) -> Self {
        self.cwd = Some(cwd.into());
        self
    }

    pub fn user(mut self, uid: u32, gid: u32) -> Self {
        self.user = Some(uid);
        self.group = Some(gid);
        self
    }

    pub fn stdin(mut self, stdin: impl Into<Bytes>) -> Self {
        self.stdin = stdin.into();
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

/// What a non-interactive command left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub exit_code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// A terminal's size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TerminalSize {
    pub cols: u16,
    pub rows: u16,
}

/// What Incus answers a websocket of an exec operation that has ended
/// (when it stopped waiting for the websockets before they connected).
const NOT_CONNECTABLE: &str = "Only running operations can be connected";

/// `POST /1.0/instances/<name>/exec` as sent.
#[derive(Serialize)]
pub(crate) struct RawExecPost<'a> {
    pub(crate) command: &'a [String],
    pub(crate) environment: &'a BTreeMap<String, String>,
    #[serde(rename = "wait-for-websocket")]
    pub(crate) wait_for_websocket: bool,
    pub(crate) interactive: bool,
    #[serde(rename = "record-output")]
    pub(crate) record_output: bool,
    pub(crate) width: u16,
    pub(crate) height: u16,
    pub(crate) user: u32,
    pub(crate) group: u32,
    pub(crate) cwd: &'a str,
}

impl<'a> RawExecPost<'a> {
    pub(crate) fn new(request: &'a ExecRequest) -> Self {
        RawExecPost {
            command: &request.command,
            environment: &request.environment,
            wait_for_websocket: false,
            interactive: false,
            record_output: false,
            width: 0,
            height: 0,
            user: request.user.unwrap_or(0),
            group: request.group.unwrap_or(0),
            cwd: request.cwd.as_deref().unwrap_or(""),
        }
    }
}

impl Client {
    /// Run a command and collect its output and exit code, over websockets.
    ///
    /// The command starts only once its three websockets are connected
    /// (see [`Client::start_connected`], which starts it again when Incus
    /// gave up waiting for them).
    pub async fn exec(
        &self,
        instance: &str,
        request: &ExecRequest,
    ) -> Result<ExecOutput, IncusError> {
        let action = exec_action(instance, request);
        let post = RawExecPost {
            wait_for_websocket: true,
            ..RawExecPost::new(request)
        };
        let (operation, sockets) = self
            .start_connected(&action, instance, &post, ["0", "1", "2"])
            .await?;
        let [stdin, stdout, stderr]: [Socket; 3] = sockets
            .try_into()
            .map_err(|_| IncusError::protocol(&action, "the exec's websockets"))?;
        // The sockets come back with the output and are dropped (closed)
        // only once the operation has ended.
        let streams = async {
            tokio::try_join!(
                feed_stdin(&action, stdin, request.stdin.clone()),
                collect(&action, stdout),
                collect(&action, stderr),
            )
        };
        let exit = self.exit_code(&action, &operation, request.timeout);
        tokio::pin!(streams, exit);
        let ((_stdin, (stdout, _stdout), (stderr, _stderr)), exit_code) = tokio::select! {
            streams = &mut streams => (streams?, exit.await?),
            exit_code = &mut exit => {
                // Incus sends the barriers before it ends the operation;
                // they may still be on their way.
                let exit_code = exit_code?;
                let streams = tokio::time::timeout(OUTPUT_GRACE, streams)
                    .await
                    .map_err(|_| IncusError::protocol(&action, "the command ended but its output did not"))??;
                (streams, exit_code)
            }
        };
        Ok(ExecOutput {
            exit_code,
            stdout,
            stderr,
        })
    }

    /// The same as [`Client::exec`], through `record-output`: Incus writes
    /// the output to log files, read and deleted afterwards (no
    /// websockets, two requests more). No stdin.
    pub async fn exec_recorded(
        &self,
        instance: &str,
        request: &ExecRequest,
    ) -> Result<ExecOutput, IncusError> {
        let action = exec_action(instance, request);
        let post = RawExecPost {
            record_output: true,
            ..RawExecPost::new(request)
        };
        let operation = self.start_exec(&action, instance, &post).await?;
        let done = self.wait_long(&action, &operation, request.timeout).await?;
        let exit_code = exit_code(&action, &done)?;
        let log = |fd: &str| {
            done.metadata
                .as_ref()
                .and_then(|metadata| metadata.get("output"))
                .and_then(|output| output.get(fd))
                .and_then(|path| path.as_str())
                .map(str::to_string)
                .ok_or_else(|| IncusError::protocol(&action, format!("no log of fd {fd}")))
        };
        let (stdout_log, stderr_log) = (log("1")?, log("2")?);
        let (stdout, stderr) = tokio::try_join!(
            self.read_and_delete_log(&action, &stdout_log),
            self.read_and_delete_log(&action, &stderr_log),
        )?;
        Ok(ExecOutput {
            exit_code,
            stdout,
            stderr,
        })
    }

    /// Start a command on a pty. Its terminal is [`InteractiveExec::stream`]
    /// (input and output, stderr included); [`ExecControl`] resizes it and
    /// sends signals; [`ExecExit::wait`] gives the exit code.
    pub async fn exec_interactive(
        &self,
        instance: &str,
        request: &ExecRequest,
        size: TerminalSize,
    ) -> Result<InteractiveExec, IncusError> {
        let action = exec_action(instance, request);
        let post = RawExecPost {
            wait_for_websocket: true,
            interactive: true,
            width: size.cols,
            height: size.rows,
            ..RawExecPost::new(request)
        };
        // Incus starts the command once both are connected (within 5 s).
        let (operation, sockets) = self
            .start_connected(&action, instance, &post, ["0", "control"])
            .await?;
        let [terminal, control]: [Socket; 2] = sockets
            .try_into()
            .map_err(|_| IncusError::protocol(&action, "the exec's websockets"))?;

        let (caller_end, bridge_end) = tokio::io::duplex(SESSION_BUFFER);
        tokio::spawn(bridge_terminal(terminal, bridge_end));

        let (commands, receiver) = mpsc::unbounded_channel();
        let (ended, operation_ended) = oneshot::channel();
        tokio::spawn(run_control(control, receiver, operation_ended));

        let client = self.clone();
        let timeout = request.timeout;
        let exit = tokio::spawn(async move {
            let exit_code = client.exit_code(&action, &operation, timeout).await;
            // Also when the wait failed: the control socket goes either way.
            let _ = ended.send(());
            exit_code
        });
        Ok(InteractiveExec {
            stream: ExecStream { inner: caller_end },
            control: ExecControl { commands },
            exit: ExecExit { task: exit },
        })
    }

    pub(crate) async fn start_exec(
        &self,
        action: &str,
        instance: &str,
        post: &RawExecPost<'_>,
    ) -> Result<Operation, IncusError> {
        self.start_operation(
            action,
            Method::POST,
            &format!("/1.0/instances/{}/exec", segment(instance)),
            Vec::new(),
            RequestBody::json(post)?,
        )
        .await
    }

    /// Starts an exec that waits for its websockets (`wait-for-websocket`)
    /// and connects the websockets of `fds`, in that order. When Incus gave
    /// up waiting for them first (it waits a few seconds, which a loaded
    /// machine can exceed), the operation ended without running anything,
    /// and it is started again (at most twice more).
    pub(crate) async fn start_connected<const N: usize>(
        &self,
        action: &str,
        instance: &str,
        post: &RawExecPost<'_>,
        fds: [&str; N],
    ) -> Result<(Operation, Vec<Socket>), IncusError> {
        let mut attempt = 0;
        loop {
            let operation = self.start_exec(action, instance, post).await?;
            let connecting = fds.map(|fd| self.websocket(action, &operation, fd));
            match futures_util::future::try_join_all(connecting).await {
                Ok(sockets) => return Ok((operation, sockets)),
                Err(error) if attempt < 2 && error.to_string().contains(NOT_CONNECTABLE) => {
                    attempt += 1;
                    tracing::info!(%error, attempt, "the exec's websockets were not connected in time; starting it again");
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// The websocket of one of the exec's fds (`0`, `1`, `2`, `control`).
    pub(crate) async fn websocket(
        &self,
        action: &str,
        operation: &Operation,
        fd: &str,
    ) -> Result<Socket, IncusError> {
        let secret = operation
            .metadata
            .as_ref()
            .and_then(|metadata| metadata.get("fds"))
            .and_then(|fds| fds.get(fd))
            .and_then(|secret| secret.as_str())
            .ok_or_else(|| {
                IncusError::protocol(action, format!("the exec has no websocket {fd}"))
            })?;
        let secret = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("secret", secret)
            .finish();
        let path = self.url(&format!(
            "/1.0/operations/{}/websocket?{secret}",
            segment(&operation.id)
        ));
        let request = format!("ws://incus{path}")
            .into_client_request()
            .map_err(|err| IncusError::protocol(action, err.to_string()))?;
        let stream = self.transport.connect(action).await?;
        let (socket, _) = tokio_tungstenite::client_async(request, stream)
            .await
            .map_err(|err| websocket_error(action, err))?;
        Ok(socket)
    }

    pub(crate) async fn exit_code(
        &self,
        action: &str,
        operation: &Operation,
        timeout: Option<Duration>,
    ) -> Result<i32, IncusError> {
        match self.wait_long(action, operation, timeout).await {
            Ok(done) => exit_code(action, &done),
            // Incus fails the operation of a command that exits 127 (its
            // shell's "not found"), instead of reporting the code.
            Err(IncusError::OperationFailed { message, .. })
                if message.trim() == "Command not found" =>
            {
                Ok(127)
            }
            Err(err) => Err(err),
        }
    }

    /// Wait up to `timeout`, or for ever in renewed slices.
    async fn wait_long(
        &self,
        action: &str,
        operation: &Operation,
        timeout: Option<Duration>,
    ) -> Result<Operation, IncusError> {
        if let Some(timeout) = timeout {
            return self.wait(action, operation, timeout).await;
        }
        loop {
            match self.wait(action, operation, WAIT_SLICE).await {
                Err(IncusError::Timeout { .. }) => continue,
                other => return other,
            }
        }
    }

    async fn read_and_delete_log(&self, action: &str, path: &str) -> Result<Vec<u8>, IncusError> {
        let answer = self
            .call(
                action,
                Method::GET,
                path,
                Vec::new(),
                RequestBody::Empty,
                None,
            )
            .await?;
        answer.check_status(action)?;
        // Incus keeps these files until deleted; a failure to delete loses
        // nothing the caller needs.
        if let Err(err) = self
            .sync(action, Method::DELETE, path, RequestBody::Empty)
            .await
        {
            debug!(%err, path, "could not delete an exec log");
        }
        Ok(answer.body.to_vec())
    }
}

pub(crate) fn exec_action(instance: &str, request: &ExecRequest) -> String {
    let program = request.command.first().map(String::as_str).unwrap_or("");
    format!("running {program} in instance {instance}")
}

fn exit_code(action: &str, operation: &Operation) -> Result<i32, IncusError> {
    operation
        .metadata
        .as_ref()
        .and_then(|metadata| metadata.get("return"))
        .and_then(|code| code.as_i64())
        .and_then(|code| i32::try_from(code).ok())
        .ok_or_else(|| IncusError::protocol(action, "the exec reported no exit code"))
}

pub(crate) fn websocket_error(
    action: &str,
    err: tokio_tungstenite::tungstenite::Error,
) -> IncusError {
    use tokio_tungstenite::tungstenite::Error;
    match err {
        Error::Http(response) => {
            let status = response.status().as_u16();
            let body = response
                .body()
                .as_deref()
                .map(|body| String::from_utf8_lossy(body).trim().to_string())
                .unwrap_or_default();
            IncusError::from_status(action, status, body)
        }
        Error::Io(err) => IncusError::io(action, err),
        other => IncusError::protocol(action, other.to_string()),
    }
}

/// Send stdin, then the barrier. The socket is handed back to be kept.
async fn feed_stdin(action: &str, mut socket: Socket, stdin: Bytes) -> Result<Socket, IncusError> {
    let broken = |err: tokio_tungstenite::tungstenite::Error| websocket_error(action, err);
    let mut offset = 0;
    while offset < stdin.len() {
        let end = (offset + INPUT_CHUNK).min(stdin.len());
        socket
            .send(Message::Binary(stdin.slice(offset..end)))
            .await
            .map_err(broken)?;
        offset = end;
    }
    socket.send(Message::text("")).await.map_err(broken)?;
    Ok(socket)
}

/// Everything an output websocket carries up to its barrier (or its close),
/// and the socket, to be kept.
async fn collect(action: &str, mut socket: Socket) -> Result<(Vec<u8>, Socket), IncusError> {
    let mut output = Vec::new();
    while let Some(message) = socket.next().await {
        match message {
            Ok(Message::Binary(data)) => output.extend_from_slice(&data),
            Ok(Message::Text(_)) | Ok(Message::Close(_)) => break,
            Ok(_) => {}
            // Incus may drop the connection right after the last data.
            Err(err) => {
                debug!(%err, action, "output websocket broke");
                break;
            }
        }
    }
    Ok((output, socket))
}

/// Copy between the terminal websocket and the caller's end of the duplex.
async fn bridge_terminal(socket: Socket, bridge_end: DuplexStream) {
    let (mut sink, mut source) = socket.split();
    let (mut from_caller, mut to_caller) = tokio::io::split(bridge_end);
    let (output_ended, mut stop_input) = oneshot::channel::<()>();
    let input = tokio::spawn(async move {
        let mut buffer = vec![0u8; INPUT_CHUNK];
        loop {
            tokio::select! {
                _ = &mut stop_input => break,
                read = from_caller.read(&mut buffer) => match read {
                    Ok(0) | Err(_) => break,
                    Ok(read) => {
                        let data = Bytes::copy_from_slice(&buffer[..read]);
                        if sink.send(Message::Binary(data)).await.is_err() {
                            return sink;
                        }
                    }
                },
            }
        }
        // End of input: the caller closed its side, or the command ended.
        // Incus ends the operation only once it has this barrier.
        let _ = sink.send(Message::text("")).await;
        sink
    });
    while let Some(message) = source.next().await {
        match message {
            Ok(Message::Binary(data)) => {
                // A caller that does not read holds the output up (as a
                // terminal does); one that dropped its stream loses it.
                let _ = to_caller.write_all(&data).await;
            }
            Ok(Message::Text(_)) | Ok(Message::Close(_)) => break,
            Ok(_) => {}
            Err(err) => {
                debug!(%err, "terminal websocket broke");
                break;
            }
        }
    }
    let _ = to_caller.shutdown().await;
    // Send our barrier; with both barriers exchanged Incus needs the
    // socket no more.
    let _ = output_ended.send(());
    let _ = input.await;
}

pub(crate) enum ControlCommand {
    Resize(TerminalSize),
    Signal(i32),
}

/// Send control commands until the operation ends (or Incus closes the
/// socket). Dropping the socket earlier would kill the command.
pub(crate) async fn run_control(
    mut socket: Socket,
    mut commands: mpsc::UnboundedReceiver<ControlCommand>,
    mut operation_ended: oneshot::Receiver<()>,
) {
    let mut commands_open = true;
    loop {
        tokio::select! {
            _ = &mut operation_ended => break,
            command = commands.recv(), if commands_open => {
                let Some(command) = command else {
                    commands_open = false;
                    continue;
                };
                let message = match command {
                    ControlCommand::Resize(size) => json!({
                        "command": "window-resize",
                        "args": { "width": size.cols.to_string(), "height": size.rows.to_string() },
                    }),
                    ControlCommand::Signal(signal) => json!({ "command": "signal", "signal": signal }),
                };
                if socket.send(Message::text(message.to_string())).await.is_err() {
                    break;
                }
            }
            message = socket.next() => {
                match message {
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                    Some(Ok(_)) => {}
                }
            }
        }
    }
}

/// An interactive command: its terminal, its control, its exit.
pub struct InteractiveExec {
    stream: ExecStream,
    control: ExecControl,
    exit: ExecExit,
}

impl InteractiveExec {
    /// The terminal: read its output, write its input. Shutting down the
    /// write side ends input.
    pub fn stream(&mut self) -> &mut ExecStream {
        &mut self.stream
    }

    pub fn control(&self) -> &ExecControl {
        &self.control
    }

    /// The exit code, once the command has ended.
    pub async fn wait(self) -> Result<i32, IncusError> {
        self.exit.wait().await
    }

    /// The three parts, to hand to separate tasks.
    pub fn into_parts(self) -> (ExecStream, ExecControl, ExecExit) {
        (self.stream, self.control, self.exit)
    }
}

/// An interactive command's terminal (its pty's master side, remotely).
pub struct ExecStream {
    inner: DuplexStream,
}

impl AsyncRead for ExecStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for ExecStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Window size and signals for an interactive command. Cheap to clone.
#[derive(Clone)]
pub struct ExecControl {
    commands: mpsc::UnboundedSender<ControlCommand>,
}

impl ExecControl {
    /// Tell the pty its new size (the command gets SIGWINCH).
    pub fn resize(&self, size: TerminalSize) -> Result<(), IncusError> {
        self.send(ControlCommand::Resize(size))
    }

    /// Send a signal (its number) to the command.
    pub fn signal(&self, signal: i32) -> Result<(), IncusError> {
        self.send(ControlCommand::Signal(signal))
    }

    fn send(&self, command: ControlCommand) -> Result<(), IncusError> {
        self.commands.send(command).map_err(|_| {
            IncusError::protocol(
                "controlling an interactive command",
                "the command has ended (its control socket is closed)",
            )
        })
    }
}

/// The exit code of an interactive command, when it ends.
pub struct ExecExit {
    task: JoinHandle<Result<i32, IncusError>>,
}

impl ExecExit {
    pub async fn wait(self) -> Result<i32, IncusError> {
        self.task.await.map_err(|err| {
            IncusError::protocol("waiting for an interactive command", err.to_string())
        })?
    }
}
