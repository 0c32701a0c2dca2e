//! The session's egress on a cluster: the Pod has no network at all (its
//! NetworkPolicy lets nothing out), and kennel's egress proxy stays on
//! this machine, as on every backend — its decisions logged here, its
//! brokered credentials never on the cluster. The agent reaches it through
//! the cluster's API:
//!
//! kennel keeps [`ARMED`] listeners waiting in the Pod, each an exec of
//! `socat TCP-LISTEN:<port>,bind=127.0.0.1,reuseport STDIO` (the address
//! `HTTP_PROXY` names). A listener accepts one connection and relays it
//! over its exec's stdin and stdout; kennel joins that to a connection to
//! its proxy's socket, and arms another listener as soon as one is taken
//! (`reuseport` lets them all listen on the one port). An agent that opens
//! more connections at once than are armed waits for a listener (its
//! connection is refused only for the moment no listener is bound).
//!
//! The Pod's end of each stream is the agent's to write: what comes out of
//! it goes only to kennel's proxy, which reads it as it reads any
//! sandbox's requests.

use std::path::PathBuf;
use std::time::Duration;

use kennel_kube::Cluster;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// Listeners kept waiting in the Pod.
const ARMED: usize = 8;
/// The wait after a listener failed to start, before the next.
const RETRY: Duration = Duration::from_millis(250);

/// The tunnel of one Pod; it stops when dropped.
pub(crate) struct Tunnel {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a listener tells the tunnel.
enum Event {
    /// It has a connection (a new listener is needed).
    Taken,
    /// It ended without one.
    Failed(String),
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
        "socat".to_string(),
        format!("TCP-LISTEN:{port},bind={host},reuseaddr,reuseport"),
        "STDIO".to_string(),
    ];
    Tunnel {
        task: tokio::spawn(serve(cluster, pod, argv, socket)),
    }
}

async fn serve(cluster: Cluster, pod: String, argv: Vec<String>, socket: PathBuf) {
    let (events, mut received) = mpsc::unbounded_channel();
    let mut listeners = JoinSet::new();
    let mut armed = 0;
    loop {
        while armed < ARMED {
            listeners.spawn(listener(
                cluster.clone(),
                pod.clone(),
                argv.clone(),
                socket.clone(),
                events.clone(),
            ));
            armed += 1;
        }
        match received.recv().await {
            Some(Event::Taken) => armed -= 1,
            Some(Event::Failed(why)) => {
                armed -= 1;
                tracing::debug!("a tunnel listener in Pod {pod} ended: {why}");
                tokio::time::sleep(RETRY).await;
            }
            None => return,
        }
        // Reap the relays that are done.
        while listeners.try_join_next().is_some() {}
    }
}

/// One listener in the Pod: waits for a connection, then relays it to the
/// proxy until either side ends.
async fn listener(
    cluster: Cluster,
    pod: String,
    argv: Vec<String>,
    socket: PathBuf,
    events: mpsc::UnboundedSender<Event>,
) {
    let failed = |why: String| {
        let _ = events.send(Event::Failed(why));
    };
    let mut process = match cluster.exec_attached(&pod, &argv, false).await {
        Ok(process) => process,
        Err(error) => return failed(error.to_string()),
    };
    let (Some(mut to_pod), Some(mut from_pod)) = (process.stdin(), process.stdout()) else {
        return failed("the exec has no stdin or stdout".into());
    };
    // socat's complaints (a port it cannot bind) say why it failed.
    let complaints = process.stderr();
    let mut first = vec![0u8; 16 * 1024];
    let n = match from_pod.read(&mut first).await {
        Ok(0) | Err(_) => {
            let mut said = String::new();
            if let Some(mut stderr) = complaints {
                let _ = (&mut stderr).take(4096).read_to_string(&mut said).await;
            }
            return failed(format!("socat: {}", said.trim()));
        }
        Ok(n) => n,
    };
    let _ = events.send(Event::Taken);
    let proxy = match tokio::net::UnixStream::connect(&socket).await {
        Ok(proxy) => proxy,
        Err(error) => {
            tracing::warn!(
                "the tunnel cannot reach kennel's proxy at {}: {error}",
                socket.display()
            );
            process.abort();
            return;
        }
    };
    let (mut proxy_read, mut proxy_write) = proxy.into_split();
    let upstream = async {
        proxy_write.write_all(&first[..n]).await?;
        tokio::io::copy(&mut from_pod, &mut proxy_write).await?;
        proxy_write.shutdown().await
    };
    let downstream = async {
        tokio::io::copy(&mut proxy_read, &mut to_pod).await?;
        to_pod.shutdown().await
    };
    let (up, down) = tokio::join!(upstream, downstream);
    tracing::trace!(?up, ?down, "a tunnelled connection ended");
    drop(to_pod);
    drop(from_pod);
    let _ = process.join().await;
}
