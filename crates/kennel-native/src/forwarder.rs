//! The sandbox's way out in `allowlist` and `restricted` modes: a process
//! inside the sandbox's network namespace (which has only `lo`) accepts TCP
//! connections on 127.0.0.1:3128 and relays each one to kennel's proxy over
//! its Unix socket, bound into the sandbox. Plain `std`, a thread pair per
//! connection: the agent's HTTP traffic is a few connections at a time.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

/// Binds the forwarder's address (before the agent starts, so that the
/// agent's first connection finds it listening).
pub fn bind(listen: &str) -> io::Result<TcpListener> {
    TcpListener::bind(listen)
}

/// Serves `listener` forever, relaying every connection to `socket`.
pub fn serve(listener: TcpListener, socket: PathBuf) -> ! {
    loop {
        match listener.accept() {
            Ok((client, _)) => {
                let socket = socket.clone();
                let spawned = std::thread::Builder::new()
                    .stack_size(64 * 1024)
                    .spawn(move || relay(client, &socket));
                if spawned.is_err() {
                    // Out of threads: refuse this one (the client sees a reset).
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
        }
    }
}

fn relay(client: TcpStream, socket: &Path) {
    let Ok(proxy) = UnixStream::connect(socket) else {
        // kennel's proxy is gone: the client sees the connection close.
        return;
    };
    let _ = client.set_nodelay(true);
    let (Ok(client_read), Ok(proxy_write)) = (client.try_clone(), proxy.try_clone()) else {
        return;
    };
    let up = std::thread::Builder::new()
        .stack_size(64 * 1024)
        .spawn(move || {
            copy(client_read, proxy_write, |p| {
                let _ = p.shutdown(Shutdown::Write);
            })
        });
    copy(proxy, client, |c| {
        let _ = c.shutdown(Shutdown::Write);
    });
    if let Ok(up) = up {
        let _ = up.join();
    }
}

/// Copies until EOF or an error, then half-closes the writer.
fn copy<R: Read, W: Write>(mut from: R, mut to: W, close: impl FnOnce(&W)) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    close(&to);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn relays_both_ways_and_half_closes() {
        let dir = std::env::temp_dir().join(format!("kennel-fwd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let socket = dir.join("proxy.sock");
        let _ = std::fs::remove_file(&socket);
        let upstream = UnixListener::bind(&socket).expect("unix listen");
        let listener = bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        std::thread::spawn(move || serve(listener, socket));
        let echo = std::thread::spawn(move || {
            let (mut conn, _) = upstream.accept().expect("accept");
            let mut got = Vec::new();
            conn.read_to_end(&mut got).expect("read");
            conn.write_all(&got).expect("echo");
            got
        });
        let mut client = TcpStream::connect(addr).expect("connect");
        client
            .write_all(b"CONNECT x:443 HTTP/1.1\r\n\r\n")
            .expect("write");
        client.shutdown(Shutdown::Write).expect("half-close");
        let mut back = Vec::new();
        client.read_to_end(&mut back).expect("read back");
        assert_eq!(back, b"CONNECT x:443 HTTP/1.1\r\n\r\n");
        assert_eq!(echo.join().expect("echo"), back);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
