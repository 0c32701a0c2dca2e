//! The session's egress on a cluster: the Pod has no network at all (its
//! NetworkPolicy lets nothing out), and kennel's egress proxy stays on
//! this machine, as on every backend — its decisions logged here, its
//! brokered credentials never on the cluster. The agent reaches it through
//! the cluster's API:
//!
//! One exec in the Pod runs a small multiplexer (`tunnel_mux.pl`, in
//! perl, which every kennel image has): it listens on the address
//! `HTTP_PROXY` names and carries every connection it accepts over the
//! exec's stdin and stdout, in frames; kennel joins each connection to one
//! of its proxy's socket. One exec for all of them: an agent opening many
//! connections at once (a package manager does) is never refused for want
//! of a listener. If the exec ends (the agent may kill it), kennel starts
//! another.
//!
//! The Pod's end of the stream is the agent's to write: kennel reads its
//! frames as hostile (bounded in size and number, unknown connections
//! ignored), and what they carry goes only to kennel's proxy, which reads
//! it as it reads any sandbox's requests.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use kennel_kube::Cluster;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// The multiplexer run in the Pod.
const MUX: &str = include_str!("tunnel_mux.pl");
/// The wait after the multiplexer ended or failed to start, before the next.
const RETRY: Duration = Duration::from_millis(250);
/// The largest frame kennel reads (the multiplexer sends at most 64 KiB).
const MAX_FRAME: usize = 64 * 1024;
/// The most connections open at once; more are closed as they open.
const MAX_CONNECTIONS: usize = 512;
/// Frames of one connection waiting for the proxy to take them (each at
/// most [`MAX_FRAME`]): what the Pod sends faster than the proxy reads
/// waits in the Pod instead.
const QUEUED: usize = 16;

/// The tunnel of one Pod; it stops when dropped.
pub(crate) struct Tunnel {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Opens the tunnel: connections to `listen` (host and port:
/// `127.0.0.1`, 3128) in `pod` reach the proxy's Unix socket `socket` on
/// this machine.
pub(crate) fn open(
    cluster: Cluster,
    pod: String,
    (host, port): (&str, u16),
    socket: PathBuf,
) -> Tunnel {
    let argv = vec![
        "perl".to_string(),
        "-e".to_string(),
        MUX.to_string(),
        host.to_string(),
        port.to_string(),
    ];
    Tunnel {
        task: tokio::spawn(serve(cluster, pod, argv, socket)),
    }
}

async fn serve(cluster: Cluster, pod: String, argv: Vec<String>, socket: PathBuf) {
    loop {
        let why = match cluster.exec_attached(&pod, &argv, false).await {
            Ok(mut process) => match (process.stdin(), process.stdout()) {
                (Some(to_pod), Some(from_pod)) => {
                    let why = carry(from_pod, to_pod, &socket).await;
                    process.abort();
                    why
                }
                _ => "the exec has no stdin or stdout".to_string(),
            },
            Err(error) => error.to_string(),
        };
        tracing::debug!("the tunnel in Pod {pod} ended: {why}; starting it again");
        tokio::time::sleep(RETRY).await;
    }
}

/// A frame's type.
const OPENED: u8 = b'O';
const DATA: u8 = b'D';
const CLOSED: u8 = b'C';

/// Carries the multiplexer's connections until its stream ends; why it
/// ended.
async fn carry(
    mut from_pod: impl AsyncRead + Unpin,
    mut to_pod: impl AsyncWrite + Unpin + Send + 'static,
    socket: &std::path::Path,
) -> String {
    // Everything kennel sends the Pod goes through one writer.
    let (frames, mut outgoing) = mpsc::channel::<(u8, u32, Vec<u8>)>(64);
    let writer = tokio::spawn(async move {
        while let Some((kind, id, data)) = outgoing.recv().await {
            if to_pod.write_all(&frame(kind, id, &data)).await.is_err() {
                return;
            }
        }
    });
    let mut connections: HashMap<u32, mpsc::Sender<Option<Vec<u8>>>> = HashMap::new();
    let why = loop {
        let mut header = [0u8; 9];
        if let Err(error) = from_pod.read_exact(&mut header).await {
            break format!("its stream ended ({error})");
        }
        let kind = header[0];
        let id = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
        let length = u32::from_be_bytes([header[5], header[6], header[7], header[8]]) as usize;
        if length > MAX_FRAME {
            break format!("a frame of {length} bytes (at most {MAX_FRAME})");
        }
        let mut data = vec![0u8; length];
        if let Err(error) = from_pod.read_exact(&mut data).await {
            break format!("its stream ended in a frame ({error})");
        }
        match kind {
            OPENED => {
                connections.retain(|_, queue| !queue.is_closed());
                if connections.len() >= MAX_CONNECTIONS || connections.contains_key(&id) {
                    let _ = frames.send((CLOSED, id, Vec::new())).await;
                    continue;
                }
                let (queue, queued) = mpsc::channel(QUEUED);
                connections.insert(id, queue);
                tokio::spawn(join_to_proxy(
                    id,
                    socket.to_path_buf(),
                    queued,
                    frames.clone(),
                ));
            }
            DATA | CLOSED => {
                let message = (kind == DATA).then_some(data);
                if let Some(queue) = connections.get(&id)
                    && queue.send(message).await.is_err()
                {
                    connections.remove(&id);
                }
            }
            other => break format!("a frame of unknown type {other}"),
        }
    };
    drop(frames);
    drop(connections);
    writer.abort();
    why
}

/// One connection of the Pod's, joined to a connection to the proxy until
/// both directions have ended.
async fn join_to_proxy(
    id: u32,
    socket: PathBuf,
    mut from_pod: mpsc::Receiver<Option<Vec<u8>>>,
    to_pod: mpsc::Sender<(u8, u32, Vec<u8>)>,
) {
    let proxy = match tokio::net::UnixStream::connect(&socket).await {
        Ok(proxy) => proxy,
        Err(error) => {
            tracing::warn!(
                "the tunnel cannot reach kennel's proxy at {}: {error}",
                socket.display()
            );
            let _ = to_pod.send((CLOSED, id, Vec::new())).await;
            return;
        }
    };
    let (mut proxy_read, mut proxy_write) = proxy.into_split();
    let upstream = async {
        while let Some(Some(data)) = from_pod.recv().await {
            if proxy_write.write_all(&data).await.is_err() {
                break;
            }
        }
        let _ = proxy_write.shutdown().await;
    };
    let downstream = async {
        let mut chunk = vec![0u8; MAX_FRAME];
        loop {
            match proxy_read.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to_pod.send((DATA, id, chunk[..n].to_vec())).await.is_err() {
                        return;
                    }
                }
            }
        }
        let _ = to_pod.send((CLOSED, id, Vec::new())).await;
    };
    tokio::join!(upstream, downstream);
}

/// A frame as the multiplexer reads it.
fn frame(kind: u8, id: u32, data: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(9 + data.len());
    bytes.push(kind);
    bytes.extend_from_slice(&id.to_be_bytes());
    bytes.extend_from_slice(&(data.len() as u32).to_be_bytes());
    bytes.extend_from_slice(data);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::duplex;
    use tokio::net::UnixListener;

    /// A stand-in for kennel's proxy: answers every connection with what
    /// it read, in capitals, then closes.
    fn shouting_proxy(dir: &std::path::Path) -> PathBuf {
        let path = dir.join("proxy.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut read = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while let Ok(n) = stream.read(&mut chunk).await {
                        if n == 0 {
                            break;
                        }
                        read.extend_from_slice(&chunk[..n]);
                    }
                    let _ = stream.write_all(&read.to_ascii_uppercase()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        path
    }

    /// Reads frames from kennel until `id` has closed (within 10 s); what
    /// came for it.
    async fn answer_for(from_kennel: &mut (impl AsyncRead + Unpin), id: u32) -> Vec<u8> {
        tokio::time::timeout(Duration::from_secs(10), read_answer(from_kennel, id))
            .await
            .unwrap_or_else(|_| panic!("connection {id} was not closed within 10 s"))
    }

    async fn read_answer(from_kennel: &mut (impl AsyncRead + Unpin), id: u32) -> Vec<u8> {
        let mut answer = Vec::new();
        loop {
            let mut header = [0u8; 9];
            from_kennel.read_exact(&mut header).await.expect("a frame");
            let length = u32::from_be_bytes([header[5], header[6], header[7], header[8]]);
            let mut data = vec![0u8; length as usize];
            from_kennel.read_exact(&mut data).await.expect("its data");
            if u32::from_be_bytes([header[1], header[2], header[3], header[4]]) != id {
                continue;
            }
            match header[0] {
                DATA => answer.extend_from_slice(&data),
                CLOSED => return answer,
                other => panic!("kennel sent a frame of type {other}"),
            }
        }
    }

    /// The Pod's end of the stream is the agent's (it can write into the
    /// multiplexer's stdout): connections carry data both ways, frames for
    /// connections never opened are ignored, an open beyond the limit is
    /// closed at once, and a frame larger than any the multiplexer sends
    /// ends the stream before kennel allocates it.
    #[tokio::test]
    async fn hostile_frames_are_bounded_and_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = shouting_proxy(dir.path());
        let (pod_side, kennel_side) = duplex(1 << 20);
        let (from_pod, to_pod) = tokio::io::split(kennel_side);
        let carried = tokio::spawn(async move { carry(from_pod, to_pod, &socket).await });
        let (mut from_kennel, mut to_kennel) = tokio::io::split(pod_side);

        // Data for a connection that was never opened: ignored.
        to_kennel
            .write_all(&frame(DATA, 99, b"nobody"))
            .await
            .unwrap();
        // A connection, both ways.
        to_kennel.write_all(&frame(OPENED, 1, b"")).await.unwrap();
        to_kennel
            .write_all(&frame(DATA, 1, b"hello "))
            .await
            .unwrap();
        to_kennel
            .write_all(&frame(DATA, 1, b"proxy"))
            .await
            .unwrap();
        to_kennel.write_all(&frame(CLOSED, 1, b"")).await.unwrap();
        assert_eq!(answer_for(&mut from_kennel, 1).await, b"HELLO PROXY");

        // More open connections than allowed: the one past the limit is
        // closed at once (the others wait, still open).
        for id in 2..(2 + MAX_CONNECTIONS as u32) {
            to_kennel.write_all(&frame(OPENED, id, b"")).await.unwrap();
        }
        let over = 2 + MAX_CONNECTIONS as u32;
        to_kennel
            .write_all(&frame(OPENED, over, b""))
            .await
            .unwrap();
        to_kennel.write_all(&frame(DATA, over, b"x")).await.unwrap();
        assert_eq!(answer_for(&mut from_kennel, over).await, b"");

        // A frame claiming 4 GiB: the stream ends, nothing is allocated.
        let mut huge = vec![DATA];
        huge.extend_from_slice(&2u32.to_be_bytes());
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        to_kennel.write_all(&huge).await.unwrap();
        let why = tokio::time::timeout(Duration::from_secs(10), carried)
            .await
            .expect("carry ended")
            .expect("carry's task");
        assert!(why.contains("at most 65536"), "{why}");
    }
}
