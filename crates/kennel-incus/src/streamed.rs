//! Two more ways to run a command: with its output handed over as it comes
//! (stdout and stderr apart) and its input fed as it comes, or started and
//! left running. As for every exec, the websockets are kept until the
//! operation has ended (see the `exec` module).

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tracing::debug;

use crate::client::Client;
use crate::error::IncusError;
use crate::exec::{
    ControlCommand, ExecRequest, INPUT_CHUNK, OUTPUT_GRACE, RawExecPost, Socket, exec_action,
    run_control,
};

impl Client {
    /// Runs a command, giving each piece of its output to `output` as it
    /// comes (with its fd: 1 stdout, 2 stderr), feeding it the chunks of
    /// `stdin` (end of input when the channel closes; none: empty input)
    /// and passing on the signal numbers `signals` brings; its exit code.
    pub async fn exec_streamed(
        &self,
        instance: &str,
        request: &ExecRequest,
        stdin: Option<mpsc::Receiver<Vec<u8>>>,
        signals: Option<mpsc::UnboundedReceiver<i32>>,
        output: &mut (dyn FnMut(u8, &[u8]) + Send),
    ) -> Result<i32, IncusError> {
        let action = exec_action(instance, request);
        let post = RawExecPost {
            wait_for_websocket: true,
            ..RawExecPost::new(request)
        };
        let (operation, sockets) = self
            .start_connected(&action, instance, &post, ["0", "1", "2", "control"])
            .await?;
        let [input, stdout, stderr, control]: [crate::exec::Socket; 4] = sockets
            .try_into()
            .map_err(|_| IncusError::protocol(&action, "the exec's websockets"))?;
        let (ended, input_ended) = oneshot::channel();
        let feeding = tokio::spawn(feed(input, stdin, input_ended));
        let (commands, receiver) = mpsc::unbounded_channel();
        let (control_ended, operation_ended) = oneshot::channel();
        let controlling = tokio::spawn(run_control(control, receiver, operation_ended));
        if let Some(mut signals) = signals {
            tokio::spawn(async move {
                while let Some(signal) = signals.recv().await {
                    if commands.send(ControlCommand::Signal(signal)).is_err() {
                        return;
                    }
                }
            });
        }
        let (sender, mut chunks) = mpsc::channel::<(u8, Bytes)>(64);
        let pumps = [
            tokio::spawn(pump(stdout, 1, sender.clone())),
            tokio::spawn(pump(stderr, 2, sender)),
        ];
        let exit = self.exit_code(&action, &operation, request.timeout);
        tokio::pin!(exit);
        let code = loop {
            tokio::select! {
                chunk = chunks.recv() => match chunk {
                    Some((fd, data)) => output(fd, &data),
                    // Both streams ended: the command is ending.
                    None => break exit.await,
                },
                code = &mut exit => {
                    // Incus sends the barriers before it ends the operation;
                    // what is on its way still counts.
                    let rest = async {
                        while let Some((fd, data)) = chunks.recv().await {
                            output(fd, &data);
                        }
                    };
                    if tokio::time::timeout(OUTPUT_GRACE, rest).await.is_err() {
                        debug!(action, "the command ended but its output did not");
                    }
                    break code;
                }
            }
        };
        let _ = ended.send(());
        let _ = control_ended.send(());
        let _ = feeding.await;
        let _ = controlling.await;
        for pump in pumps {
            pump.abort();
        }
        code
    }

    /// Starts a command and returns once Incus runs it; it goes on with no
    /// input and its output discarded.
    pub async fn exec_detached(
        &self,
        instance: &str,
        request: &ExecRequest,
    ) -> Result<(), IncusError> {
        let action = exec_action(instance, request);
        let post = RawExecPost::new(request);
        self.start_exec(&action, instance, &post).await.map(drop)
    }
}

/// Sends `stdin`'s chunks, then the barrier that ends input; keeps the
/// socket until the operation has ended.
async fn feed(
    mut socket: Socket,
    stdin: Option<mpsc::Receiver<Vec<u8>>>,
    mut ended: oneshot::Receiver<()>,
) {
    if let Some(mut chunks) = stdin {
        loop {
            tokio::select! {
                _ = &mut ended => return,
                chunk = chunks.recv() => {
                    let Some(chunk) = chunk else { break };
                    for piece in chunk.chunks(INPUT_CHUNK) {
                        if socket
                            .send(Message::Binary(Bytes::copy_from_slice(piece)))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                }
            }
        }
    }
    let _ = socket.send(Message::text("")).await;
    let _ = ended.await;
}

/// An output websocket's data, as it comes, until its barrier; the socket
/// is kept (in the task's result) until the caller is done.
async fn pump(mut socket: Socket, fd: u8, sender: mpsc::Sender<(u8, Bytes)>) -> Socket {
    while let Some(message) = socket.next().await {
        match message {
            Ok(Message::Binary(data)) => {
                if sender.send((fd, data)).await.is_err() {
                    break;
                }
            }
            Ok(Message::Text(_)) | Ok(Message::Close(_)) => break,
            Ok(_) => {}
            Err(err) => {
                debug!(%err, fd, "output websocket broke");
                break;
            }
        }
    }
    socket
}
