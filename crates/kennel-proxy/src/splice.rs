//! Tunnel payload moved socket-to-socket with splice(2), never copied through
//! user space. Used for CONNECT tunnels once the policy checks are done.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::fcntl::{FcntlArg, OFlag, SpliceFFlags, fcntl, splice};
use nix::sys::socket::{Shutdown, shutdown};
use nix::unistd::pipe2;
use tokio::io::Interest;
use tokio::net::{TcpStream, UnixStream};

/// Pipe capacity asked for; the kernel may refuse (per-user pipe limits), in
/// which case the default (64 KiB) is used.
const PIPE_SIZE: i32 = 1024 * 1024;

/// A tunnel endpoint with a file descriptor.
pub(crate) enum Sock {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Sock {
    async fn ready(&self, interest: Interest) -> io::Result<()> {
        match self {
            Sock::Tcp(s) => s.ready(interest).await.map(drop),
            Sock::Unix(s) => s.ready(interest).await.map(drop),
        }
    }

    fn try_io<R>(&self, interest: Interest, f: impl FnOnce() -> io::Result<R>) -> io::Result<R> {
        match self {
            Sock::Tcp(s) => s.try_io(interest, f),
            Sock::Unix(s) => s.try_io(interest, f),
        }
    }

    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Sock::Tcp(s) => s.as_fd(),
            Sock::Unix(s) => s.as_fd(),
        }
    }

    fn shutdown_write(&self) {
        let _ = shutdown(self.fd().as_raw_fd(), Shutdown::Write);
    }
}

/// Move bytes from `src` to `dst` until `src` reaches end of stream, then
/// half-close `dst`. `count` grows as bytes are delivered.
pub(crate) async fn pump(src: &Sock, dst: &Sock, count: &AtomicU64) -> io::Result<()> {
    let (pipe_r, pipe_w) = pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC).map_err(io::Error::from)?;
    let cap = match fcntl(&pipe_w, FcntlArg::F_SETPIPE_SZ(PIPE_SIZE)) {
        Ok(size) if size > 0 => size as usize,
        _ => 64 * 1024,
    };
    let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
    loop {
        // The pipe is empty here: fill it from the source.
        let n = loop {
            src.ready(Interest::READABLE).await?;
            let moved = src.try_io(Interest::READABLE, || {
                splice(src.fd(), None, &pipe_w, None, cap, flags).map_err(io::Error::from)
            });
            match moved {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        };
        if n == 0 {
            dst.shutdown_write();
            return Ok(());
        }
        // Drain it completely into the destination.
        let mut left = n;
        while left > 0 {
            dst.ready(Interest::WRITABLE).await?;
            let moved = dst.try_io(Interest::WRITABLE, || {
                splice(&pipe_r, None, dst.fd(), None, left, flags).map_err(io::Error::from)
            });
            match moved {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(m) => {
                    left -= m;
                    count.fetch_add(m as u64, Ordering::Relaxed);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// `AsyncRead` and `AsyncWrite` for an enum of two variants that each
/// wrap an I/O stream: every call goes to the variant's stream.
macro_rules! either_io {
    ($name:ident, $a:ident, $b:ident) => {
        impl tokio::io::AsyncRead for $name {
            fn poll_read(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &mut tokio::io::ReadBuf<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                match self.get_mut() {
                    $name::$a(s) => std::pin::Pin::new(s).poll_read(cx, buf),
                    $name::$b(s) => std::pin::Pin::new(s).poll_read(cx, buf),
                }
            }
        }

        impl tokio::io::AsyncWrite for $name {
            fn poll_write(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                data: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                match self.get_mut() {
                    $name::$a(s) => std::pin::Pin::new(s).poll_write(cx, data),
                    $name::$b(s) => std::pin::Pin::new(s).poll_write(cx, data),
                }
            }
            fn poll_flush(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                match self.get_mut() {
                    $name::$a(s) => std::pin::Pin::new(s).poll_flush(cx),
                    $name::$b(s) => std::pin::Pin::new(s).poll_flush(cx),
                }
            }
            fn poll_shutdown(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                match self.get_mut() {
                    $name::$a(s) => std::pin::Pin::new(s).poll_shutdown(cx),
                    $name::$b(s) => std::pin::Pin::new(s).poll_shutdown(cx),
                }
            }
        }
    };
}
pub(crate) use either_io;

either_io!(Sock, Tcp, Unix);
