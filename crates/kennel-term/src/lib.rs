//! The host side of a sandbox attached to kennel's terminal, for every
//! backend: raw terminal mode, the window size, a cancellable stdin reader,
//! and output writers that never block the sandbox.

use std::io::IsTerminal;
use std::os::fd::{AsFd, OwnedFd};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::termios::{self, SetArg, Termios};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tracing::{debug, warn};

/// Puts the terminal on stdin in raw mode; restores it when dropped (on every
/// exit path, including errors and panics that unwind).
pub struct RawMode {
    original: Termios,
}

impl RawMode {
    /// `Ok(None)` when stdin is not a terminal.
    pub fn enter() -> std::io::Result<Option<RawMode>> {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return Ok(None);
        }
        let original = termios::tcgetattr(stdin.as_fd()).map_err(std::io::Error::from)?;
        let mut raw = original.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw).map_err(std::io::Error::from)?;
        debug!("terminal in raw mode");
        Ok(Some(RawMode { original }))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let stdin = std::io::stdin();
        if let Err(err) = termios::tcsetattr(stdin.as_fd(), SetArg::TCSADRAIN, &self.original) {
            warn!(%err, "could not restore the terminal mode");
        } else {
            debug!("terminal mode restored");
        }
    }
}

/// The host terminal's size as (rows, columns), from stdout, stdin or stderr.
pub fn window_size() -> Option<(u16, u16)> {
    for fd in [libc::STDOUT_FILENO, libc::STDIN_FILENO, libc::STDERR_FILENO] {
        let mut size = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // nix has no safe TIOCGWINSZ (its `ioctl_read_bad!` functions are unsafe).
        // SAFETY: TIOCGWINSZ writes one `winsize` into the pointed-to struct.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut size) };
        if rc == 0 && size.ws_row > 0 && size.ws_col > 0 {
            return Some((size.ws_row, size.ws_col));
        }
    }
    None
}

/// Reads kennel's stdin on a plain thread (never the runtime's blocking pool,
/// which would keep the process alive on a read that never returns) and can be
/// cancelled through a pipe.
pub struct StdinReader {
    cancel: Option<OwnedFd>,
}

impl StdinReader {
    /// Chunks of stdin arrive on the receiver; it closes at EOF.
    pub fn spawn() -> std::io::Result<(StdinReader, mpsc::Receiver<Vec<u8>>)> {
        let (cancel_read, cancel_write) = nix::unistd::pipe().map_err(std::io::Error::from)?;
        let (tx, rx) = mpsc::channel::<Vec<u8>>(16);
        std::thread::Builder::new()
            .name("kennel-stdin".to_string())
            .spawn(move || read_stdin(tx, cancel_read))?;
        Ok((
            StdinReader {
                cancel: Some(cancel_write),
            },
            rx,
        ))
    }

    pub fn cancel(&mut self) {
        if let Some(fd) = self.cancel.take() {
            let _ = nix::unistd::write(&fd, b"x");
        }
    }
}

/// What the sandbox's end of an attached stream gets when kennel's stdin
/// ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtEof {
    /// A pty: the ^D a terminal's EOF is.
    ControlD,
    /// A pipe: the write half closed, so the reader sees EOF.
    HalfClose,
}

/// Forwards kennel's stdin to `writer` until either ends, then tells the
/// sandbox as `at_eof` says; `writer` is kept (a dropped writer may end
/// the stream) until the task is aborted or the runtime ends. The reader
/// stops reading when dropped or cancelled.
pub fn forward_stdin<W>(
    mut writer: W,
    at_eof: AtEof,
) -> std::io::Result<(StdinReader, tokio::task::JoinHandle<()>)>
where
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (reader, mut chunks) = StdinReader::spawn()?;
    let task = tokio::spawn(async move {
        while let Some(chunk) = chunks.recv().await {
            if let Err(err) = writer.write_all(&chunk).await {
                debug!(%err, "forwarding stdin stopped");
                return;
            }
        }
        let told = match at_eof {
            AtEof::ControlD => writer.write_all(&[4]).await,
            AtEof::HalfClose => writer.shutdown().await,
        };
        if let Err(err) = told {
            debug!(%err, "telling the sandbox that stdin ended failed");
        }
        std::future::pending::<()>().await;
    });
    Ok((reader, task))
}

impl Drop for StdinReader {
    fn drop(&mut self) {
        self.cancel();
    }
}

fn read_stdin(tx: mpsc::Sender<Vec<u8>>, cancel: OwnedFd) {
    let stdin = std::io::stdin();
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let mut fds = [
            PollFd::new(stdin.as_fd(), PollFlags::POLLIN),
            PollFd::new(cancel.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(err) => {
                debug!(%err, "poll on stdin failed");
                break;
            }
        }
        if fds[1].revents().is_some_and(|events| !events.is_empty()) {
            debug!("stdin reader cancelled");
            return;
        }
        if fds[0].revents().is_none_or(|events| events.is_empty()) {
            continue;
        }
        match nix::unistd::read(stdin.as_fd(), &mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if tx.blocking_send(buf[..n].to_vec()).is_err() {
                    return;
                }
            }
            Err(Errno::EINTR | Errno::EAGAIN) => continue,
            Err(err) => {
                debug!(%err, "reading stdin failed; treating it as EOF");
                break;
            }
        }
    }
    debug!("stdin reached EOF");
}

/// Writes to a host stream; after the first failure (a closed pipe), it keeps
/// accepting and discarding output so the sandbox is never blocked.
pub struct Sink<W> {
    inner: W,
    broken: bool,
}

impl<W: AsyncWrite + Unpin> Sink<W> {
    pub fn new(inner: W) -> Self {
        Sink {
            inner,
            broken: false,
        }
    }

    pub async fn write(&mut self, data: &[u8]) {
        if self.broken || data.is_empty() {
            return;
        }
        let result = async {
            self.inner.write_all(data).await?;
            self.inner.flush().await
        }
        .await;
        if let Err(err) = result {
            debug!(%err, "writing output failed; discarding the rest");
            self.broken = true;
        }
    }

    pub async fn flush(&mut self) {
        if !self.broken {
            let _ = self.inner.flush().await;
        }
    }
}

/// The signals that concern a sandbox attached to kennel's terminal
/// (SIGINT, SIGTERM, SIGHUP, SIGQUIT), by number, as they come: a backend
/// passes them on to the agent, or ends its wait for it. Must be called
/// within a tokio runtime.
pub fn attached_signals() -> mpsc::UnboundedReceiver<i32> {
    use tokio::signal::unix::{SignalKind, signal};
    let (sender, receiver) = mpsc::unbounded_channel();
    for kind in [
        SignalKind::interrupt(),
        SignalKind::terminate(),
        SignalKind::hangup(),
        SignalKind::quit(),
    ] {
        let Ok(mut stream) = signal(kind) else {
            continue;
        };
        let sender = sender.clone();
        tokio::spawn(async move {
            while stream.recv().await.is_some() {
                if sender.send(kind.as_raw_value()).is_err() {
                    return;
                }
            }
        });
    }
    receiver
}
