//! The listener, CONNECT tunnels and plain-HTTP forwarding.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::service::service_fn;
use hyper::upgrade::Upgraded;
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::broker::{self, Broker, Scrubber};
use crate::log::{Decision, LogSink, rfc3339};
use crate::policy::{
    NetworkMode, Policy, Reason, Verdict, check_addr, check_name, cidr_contains, normalize_host,
};
use crate::splice::{Sock, pump};
use crate::terminate;
use crate::tls::{Hello, MAX_HELLO, parse_client_hello};
use crate::upstream::Upstream;
use crate::{Listen, ProxyConfig, ProxyError, REASON_HEADER, Stats};

pub(crate) const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
pub(crate) const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
const TUNNEL_BUF: usize = 256 * 1024;

/// A running proxy. Dropping it stops the proxy too (without waiting).
pub struct ProxyHandle {
    listen: Listen,
    counters: Arc<Counters>,
    shutdown_tx: watch::Sender<bool>,
    accept: Option<JoinHandle<()>>,
    done_rx: Option<mpsc::Receiver<()>>,
    unix_path: Option<PathBuf>,
}

impl ProxyHandle {
    /// Where the proxy listens (for TCP, with the real port).
    pub fn local_addr(&self) -> &Listen {
        &self.listen
    }

    /// Decisions so far.
    pub fn stats(&self) -> Stats {
        Stats {
            allowed: self.counters.allowed.load(Ordering::Relaxed),
            denied: self.counters.denied.load(Ordering::Relaxed),
        }
    }

    /// Stop accepting, close every open connection and tunnel (each is logged),
    /// and remove the Unix socket. Waits at most a few seconds.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown_tx.send(true);
        if let Some(accept) = self.accept.take() {
            let _ = accept.await;
        }
        self.remove_socket();
        if let Some(mut done) = self.done_rx.take() {
            // Every task holds the sender; recv() is None once all are gone.
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, done.recv()).await;
        }
    }

    fn remove_socket(&mut self) {
        if let Some(path) = self.unix_path.take()
            && let Err(error) = std::fs::remove_file(&path)
            && error.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(%error, path = %path.display(), "cannot remove the proxy socket");
        }
    }
}

impl Drop for ProxyHandle {
    fn drop(&mut self) {
        let _ = self.shutdown_tx.send(true);
        self.remove_socket();
    }
}

#[derive(Default)]
struct Counters {
    allowed: AtomicU64,
    denied: AtomicU64,
}

pub(crate) struct Shared {
    policy: Policy,
    hosts: HashMap<String, Vec<IpAddr>>,
    upstream: Option<Upstream>,
    log: LogSink,
    session: String,
    trusted: Vec<(IpAddr, u8)>,
    sni_ports: Vec<u16>,
    /// Present when credentials are configured.
    pub(crate) broker: Option<Broker>,
    counters: Arc<Counters>,
    pub(crate) shutdown: watch::Receiver<bool>,
    /// Dropped when the last task holding `Shared` ends.
    _alive: mpsc::Sender<()>,
}

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// Start the proxy. Returns once it is listening.
pub async fn start(config: ProxyConfig, listen: Listen) -> Result<ProxyHandle, ProxyError> {
    for &(addr, prefix) in &config.trusted_addrs {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(ProxyError::BadTrusted { addr, prefix });
        }
    }
    let upstream = config
        .upstream
        .as_deref()
        .map(Upstream::parse)
        .transpose()?;
    let broker = if config.credentials.is_empty() && config.logins.is_empty() {
        None
    } else {
        broker::validate(&config.credentials)?;
        let ca = config.ca.ok_or(ProxyError::NoSessionCa)?;
        Some(Broker::new(
            config.credentials,
            ca,
            &config.upstream_roots,
            config.logins,
            config.vault,
        )?)
    };
    let log = LogSink::open(config.log_file.as_deref())?;
    let mut hosts = HashMap::new();
    for (name, addrs) in config.hosts {
        let key = normalize_host(&name).unwrap_or_else(|| name.to_ascii_lowercase());
        hosts.entry(key).or_insert_with(Vec::new).extend(addrs);
    }

    let (listener, listen, unix_path) = bind(listen).await?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (alive_tx, done_rx) = mpsc::channel(1);
    let counters = Arc::new(Counters::default());
    let shared = Arc::new(Shared {
        policy: config.policy,
        hosts,
        upstream,
        log,
        session: config.session,
        trusted: config.trusted_addrs,
        sni_ports: config.sni_ports,
        broker,
        counters: counters.clone(),
        shutdown: shutdown_rx.clone(),
        _alive: alive_tx,
    });
    tracing::info!(listen = ?listen, mode = shared.policy.mode.as_str(), "egress proxy listening");
    let accept = tokio::spawn(accept_loop(listener, shared, shutdown_rx));
    Ok(ProxyHandle {
        listen,
        counters,
        shutdown_tx,
        accept: Some(accept),
        done_rx: Some(done_rx),
        unix_path,
    })
}

async fn bind(listen: Listen) -> Result<(Listener, Listen, Option<PathBuf>), ProxyError> {
    match listen {
        Listen::Tcp(addr) => {
            if !addr.ip().to_canonical().is_loopback() {
                return Err(ProxyError::NotLoopback(addr));
            }
            let bind_err = |source| ProxyError::Bind {
                what: addr.to_string(),
                source,
            };
            let listener = TcpListener::bind(addr).await.map_err(bind_err)?;
            let real = listener.local_addr().map_err(bind_err)?;
            Ok((Listener::Tcp(listener), Listen::Tcp(real), None))
        }
        Listen::Unix(path) => {
            let bind_err = |source| ProxyError::Bind {
                what: path.display().to_string(),
                source,
            };
            if let Ok(meta) = std::fs::symlink_metadata(&path) {
                if !meta.file_type().is_socket() {
                    return Err(bind_err(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        "the path exists and is not a socket",
                    )));
                }
                if std::os::unix::net::UnixStream::connect(&path).is_ok() {
                    return Err(bind_err(io::Error::new(
                        io::ErrorKind::AddrInUse,
                        "another process is listening on this socket",
                    )));
                }
                std::fs::remove_file(&path).map_err(bind_err)?;
            }
            let listener = UnixListener::bind(&path).map_err(bind_err)?;
            if let Err(source) =
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            {
                let _ = std::fs::remove_file(&path);
                return Err(bind_err(source));
            }
            Ok((
                Listener::Unix(listener),
                Listen::Unix(path.clone()),
                Some(path),
            ))
        }
    }
}

async fn accept_loop(listener: Listener, shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.changed() => break,
            accepted = accept(&listener) => accepted,
        };
        match accepted {
            Ok(Accepted::Tcp(stream)) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve(stream, shared.clone()));
            }
            Ok(Accepted::Unix(stream)) => {
                tokio::spawn(serve(stream, shared.clone()));
            }
            Err(error) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(%error, "proxy accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

enum Accepted {
    Tcp(TcpStream),
    Unix(tokio::net::UnixStream),
}

async fn accept(listener: &Listener) -> io::Result<Accepted> {
    match listener {
        Listener::Tcp(l) => l.accept().await.map(|(s, _)| Accepted::Tcp(s)),
        Listener::Unix(l) => l.accept().await.map(|(s, _)| Accepted::Unix(s)),
    }
}

async fn serve<IO>(io: IO, shared: Arc<Shared>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut shutdown = shared.shutdown.clone();
    let service_shared = shared.clone();
    let service = service_fn(move |req| {
        let shared = service_shared.clone();
        async move { Ok::<_, Infallible>(handle(shared, req).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::select! {
        result = conn => {
            if let Err(error) = result {
                tracing::debug!(%error, "proxy client connection ended with an error");
            }
        }
        _ = shutdown.changed() => {}
    }
}

/// A request in flight, until it is logged.
#[derive(Clone)]
pub(crate) struct Pending {
    time: SystemTime,
    started: Instant,
    method: String,
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) addr: Option<IpAddr>,
    pub(crate) via: Option<String>,
    /// The brokered credential(s) injected, or refused.
    pub(crate) credential: Option<String>,
}

impl Pending {
    pub(crate) fn new(method: &Method) -> Self {
        Self {
            time: SystemTime::now(),
            started: Instant::now(),
            method: method.as_str().to_string(),
            host: String::new(),
            port: 0,
            addr: None,
            via: None,
            credential: None,
        }
    }

    fn set_host(&mut self, raw: &str, port: u16) {
        self.host = normalize_host(raw).unwrap_or_else(|| raw.chars().take(255).collect());
        self.port = port;
    }
}

/// Allowed: the addresses to connect to (empty when the name did not resolve
/// and an upstream proxy will), and why it was allowed.
struct Target {
    addrs: Vec<IpAddr>,
    why: &'static str,
}

struct Refusal {
    reason: Reason,
    addr: Option<IpAddr>,
    detail: String,
}

impl Shared {
    pub(crate) fn record(
        &self,
        p: &Pending,
        verdict: Result<&str, Reason>,
        detail: String,
        up: u64,
        down: u64,
    ) {
        let (verdict, reason) = match verdict {
            Ok(why) => {
                self.counters.allowed.fetch_add(1, Ordering::Relaxed);
                ("allow", why.to_string())
            }
            Err(reason) => {
                self.counters.denied.fetch_add(1, Ordering::Relaxed);
                ("deny", reason.code().to_string())
            }
        };
        self.log.write(&Decision {
            time: rfc3339(p.time),
            session: self.session.clone(),
            method: p.method.clone(),
            host: p.host.clone(),
            port: p.port,
            addr: p.addr,
            verdict: verdict.to_string(),
            reason,
            detail,
            via: p.via.clone(),
            credential: p.credential.clone(),
            bytes_up: up,
            bytes_down: down,
            duration_ms: p.started.elapsed().as_millis() as u64,
        });
    }

    /// Log a denial and build the refusal response.
    pub(crate) fn refuse(
        &self,
        p: &Pending,
        reason: Reason,
        detail: String,
    ) -> Response<ProxyBody> {
        self.record(p, Err(reason), detail.clone(), 0, 0);
        refusal(self.policy.mode, reason, &p.host, &detail)
    }

    pub(crate) fn mode(&self) -> NetworkMode {
        self.policy.mode
    }

    fn is_trusted(&self, addr: IpAddr) -> bool {
        self.trusted
            .iter()
            .any(|&(net, prefix)| cidr_contains(net, prefix, addr))
    }

    /// The whole policy for one destination: name, resolution, every address.
    async fn authorize(&self, host: &str, port: u16) -> Result<Target, Refusal> {
        if let Verdict::Deny(reason) = check_name(&self.policy, host) {
            let detail = match reason {
                Reason::ModeNone => "the network is off for this session".to_string(),
                Reason::NotAllowlisted => format!("{host} is not on the allow list"),
                Reason::Denied => format!("{host} matches a deny rule"),
                _ => format!("{host:?} is not a valid host name"),
            };
            return Err(Refusal {
                reason,
                addr: None,
                detail,
            });
        }
        let addrs = match self.resolve(host, port).await {
            Ok(addrs) => addrs,
            Err(_) if self.upstream.is_some() => {
                // The upstream resolves it (see the crate docs).
                return Ok(Target {
                    addrs: Vec::new(),
                    why: self.allow_reason(false),
                });
            }
            Err(why) => {
                return Err(Refusal {
                    reason: Reason::ResolveFailed,
                    addr: None,
                    detail: why,
                });
            }
        };
        let mut trusted = false;
        for &addr in &addrs {
            if self.policy.mode != NetworkMode::Open && self.is_trusted(addr) {
                trusted = true;
                continue;
            }
            if let Verdict::Deny(reason) = check_addr(&self.policy, addr) {
                let detail = format!("{host} resolves to {addr}, which is not a public address");
                return Err(Refusal {
                    reason,
                    addr: Some(addr),
                    detail,
                });
            }
        }
        Ok(Target {
            addrs,
            why: self.allow_reason(trusted),
        })
    }

    fn allow_reason(&self, trusted: bool) -> &'static str {
        match self.policy.mode {
            _ if trusted => "trusted-address",
            NetworkMode::Allowlist => "allowlisted",
            NetworkMode::Restricted => "public-address",
            NetworkMode::Open => "open",
            NetworkMode::None => "mode-none",
        }
    }

    /// `hosts` table, then IP literal, then the system resolver.
    async fn resolve(&self, host: &str, port: u16) -> Result<Vec<IpAddr>, String> {
        let key =
            normalize_host(host).ok_or_else(|| format!("{host:?} is not a valid host name"))?;
        if let Some(addrs) = self.hosts.get(&key) {
            return if addrs.is_empty() {
                Err(format!("{key} maps to no address"))
            } else {
                Ok(addrs.clone())
            };
        }
        if let Ok(ip) = key.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        match tokio::time::timeout(
            RESOLVE_TIMEOUT,
            tokio::net::lookup_host((key.as_str(), port)),
        )
        .await
        {
            Ok(Ok(found)) => {
                let mut addrs: Vec<IpAddr> = Vec::new();
                for sa in found {
                    if !addrs.contains(&sa.ip()) {
                        addrs.push(sa.ip());
                    }
                }
                if addrs.is_empty() {
                    Err(format!("{key} has no address"))
                } else {
                    Ok(addrs)
                }
            }
            Ok(Err(error)) => Err(format!("cannot resolve {key}: {error}")),
            Err(_) => Err(format!("resolving {key} timed out")),
        }
    }

    async fn connect_upstream(&self, upstream: &Upstream) -> Result<TcpStream, String> {
        // The upstream is the user's own configuration: no address check.
        let addrs = self.resolve(&upstream.host, upstream.port).await?;
        connect_any(&addrs, upstream.port)
            .await
            .map(|(stream, _)| stream)
            .map_err(|why| format!("upstream proxy {}: {why}", upstream.display))
    }
}

async fn connect_any(addrs: &[IpAddr], port: u16) -> Result<(TcpStream, IpAddr), String> {
    let mut last = String::from("no address to connect to");
    for &addr in addrs {
        let sa = SocketAddr::new(addr, port);
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(sa)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return Ok((stream, addr));
            }
            Ok(Err(error)) => last = format!("cannot connect to {sa}: {error}"),
            Err(_) => last = format!("connecting to {sa} timed out"),
        }
    }
    Err(last)
}

pub(crate) fn authority(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<ProxyBody> {
    if req.method() == Method::CONNECT {
        connect(shared, req).await
    } else {
        forward(shared, req).await
    }
}

// ---------------------------------------------------------------------------
// CONNECT

async fn connect(shared: Arc<Shared>, req: Request<Incoming>) -> Response<ProxyBody> {
    let mut p = Pending::new(req.method());
    let Some((raw_host, port)) = req
        .uri()
        .authority()
        .map(|a| (a.host().to_string(), a.port_u16()))
    else {
        return shared.refuse(&p, Reason::BadRequest, "CONNECT needs host:port".into());
    };
    p.set_host(&raw_host, port.unwrap_or(0));
    let port = match port {
        Some(port) if port != 0 => port,
        _ => return shared.refuse(&p, Reason::BadRequest, "CONNECT needs host:port".into()),
    };
    let target = match shared.authorize(&raw_host, port).await {
        Ok(target) => target,
        Err(refusal) => {
            p.addr = refusal.addr;
            return shared.refuse(&p, refusal.reason, refusal.detail);
        }
    };
    let (server, leftover) = match &shared.upstream {
        None => match connect_any(&target.addrs, port).await {
            Ok((stream, addr)) => {
                p.addr = Some(addr);
                (stream, Vec::new())
            }
            Err(why) => {
                p.addr = target.addrs.first().copied();
                return shared.refuse(&p, Reason::ConnectFailed, why);
            }
        },
        Some(upstream) => {
            p.via = Some(upstream.display.clone());
            p.addr = target.addrs.first().copied();
            let opened = async {
                let stream = shared.connect_upstream(upstream).await?;
                upstream
                    .open_tunnel(stream, &authority(&p.host, port))
                    .await
            };
            match opened.await {
                Ok(opened) => opened,
                Err(why) => return shared.refuse(&p, Reason::ConnectFailed, why),
            }
        }
    };
    let sni_check = shared.sni_ports.contains(&port);
    // A TLS port of a host with a bound credential: terminated, not spliced.
    let terminated = sni_check
        && shared
            .broker
            .as_ref()
            .is_some_and(|broker| broker.terminates(&p.host));
    let on_upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(error) => {
                shared.record(
                    &p,
                    Ok(target.why),
                    format!("client went away: {error}"),
                    0,
                    0,
                );
                return;
            }
        };
        if terminated {
            terminate::serve(shared, p, target.why, upgraded, server, leftover).await;
        } else {
            tunnel(shared, p, target.why, upgraded, server, leftover, sni_check).await;
        }
    });
    let mut resp = Response::new(ProxyBody::empty());
    *resp.status_mut() = StatusCode::OK;
    resp
}

/// The client end of a tunnel: the raw socket when hyper hands it back (the
/// usual case, spliced), else hyper's upgraded stream (copied).
pub(crate) enum ClientEnd {
    Raw(Sock),
    Upgraded(TokioIo<Upgraded>),
}

impl ClientEnd {
    /// The client stream plus whatever hyper had already read past the
    /// CONNECT request head.
    pub(crate) fn from_upgraded(upgraded: Upgraded) -> (Self, Vec<u8>) {
        let upgraded = match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(parts) => {
                return (
                    ClientEnd::Raw(Sock::Tcp(parts.io.into_inner())),
                    parts.read_buf.to_vec(),
                );
            }
            Err(upgraded) => upgraded,
        };
        match upgraded.downcast::<TokioIo<UnixStream>>() {
            Ok(parts) => (
                ClientEnd::Raw(Sock::Unix(parts.io.into_inner())),
                parts.read_buf.to_vec(),
            ),
            Err(upgraded) => (ClientEnd::Upgraded(TokioIo::new(upgraded)), Vec::new()),
        }
    }

    async fn read_some(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            ClientEnd::Raw(s) => s.read(buf).await,
            ClientEnd::Upgraded(s) => s.read(buf).await,
        }
    }

    async fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            ClientEnd::Raw(s) => s.write_all(buf).await,
            ClientEnd::Upgraded(s) => s.write_all(buf).await,
        }
    }
}

crate::splice::either_io!(ClientEnd, Raw, Upgraded);

async fn tunnel(
    shared: Arc<Shared>,
    p: Pending,
    why: &'static str,
    upgraded: Upgraded,
    server: TcpStream,
    leftover: Vec<u8>,
    sni_check: bool,
) {
    let (mut client, early) = ClientEnd::from_upgraded(upgraded);
    let mut server = Sock::Tcp(server);
    // What the client sent before the tunnel was up (with a TLS port: its
    // whole ClientHello), replayed to the server first.
    let first = if sni_check {
        match read_hello(&mut client, early, &p.host).await {
            Ok(hello) => hello,
            Err((reason, detail)) => {
                shared.record(&p, Err(reason), detail, 0, 0);
                return; // dropping both streams closes them
            }
        }
    } else {
        early
    };
    let up = Arc::new(AtomicU64::new(0));
    let down = Arc::new(AtomicU64::new(0));
    let mut shutdown = shared.shutdown.clone();
    let mut detail = String::new();
    {
        let run = async {
            if !first.is_empty() {
                server.write_all(&first).await?;
                up.fetch_add(first.len() as u64, Ordering::Relaxed);
            }
            if !leftover.is_empty() {
                client.write_all(&leftover).await?;
                down.fetch_add(leftover.len() as u64, Ordering::Relaxed);
            }
            match &mut client {
                ClientEnd::Raw(client) => {
                    tokio::try_join!(pump(client, &server, &up), pump(&server, client, &down))
                        .map(drop)
                }
                ClientEnd::Upgraded(io) => {
                    let mut counted = Counted {
                        inner: io,
                        up: up.clone(),
                        down: down.clone(),
                    };
                    tokio::io::copy_bidirectional_with_sizes(
                        &mut counted,
                        &mut server,
                        TUNNEL_BUF,
                        TUNNEL_BUF,
                    )
                    .await
                    .map(drop)
                }
            }
        };
        tokio::select! {
            result = run => {
                if let Err(error) = result {
                    detail = format!("tunnel ended: {error}");
                }
            }
            _ = shutdown.changed() => detail = "proxy shut down".to_string(),
        }
    }
    shared.record(
        &p,
        Ok(why),
        detail,
        up.load(Ordering::Relaxed),
        down.load(Ordering::Relaxed),
    );
}

/// Read (and keep) the client's ClientHello, starting from the bytes already
/// read; check its SNI against `host`.
pub(crate) async fn read_hello(
    client: &mut ClientEnd,
    early: Vec<u8>,
    host: &str,
) -> Result<Vec<u8>, (Reason, String)> {
    let read = async {
        let mut buf = early;
        let mut chunk = vec![0u8; 16 * 1024];
        loop {
            match parse_client_hello(&buf) {
                Hello::Complete(sni) => return Ok((buf, sni)),
                Hello::NotTls => {
                    return Err("the client did not start with a TLS ClientHello".to_string());
                }
                Hello::Incomplete if buf.len() >= MAX_HELLO => {
                    return Err("ClientHello too long".to_string());
                }
                Hello::Incomplete => {}
            }
            let n = client
                .read_some(&mut chunk)
                .await
                .map_err(|e| format!("reading the ClientHello: {e}"))?;
            if n == 0 {
                return Err("the client closed before sending a TLS ClientHello".to_string());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    let (buf, sni) = match tokio::time::timeout(HELLO_TIMEOUT, read).await {
        Ok(Ok(found)) => found,
        Ok(Err(why)) => return Err((Reason::NotTls, why)),
        Err(_) => return Err((Reason::NotTls, "no TLS ClientHello within 10 s".to_string())),
    };
    if let Some(sni) = sni
        && normalize_host(&sni).as_deref() != Some(host)
    {
        return Err((
            Reason::SniMismatch,
            format!("TLS server name {sni:?} is not the CONNECT host {host}"),
        ));
    }
    Ok(buf)
}

/// Counts bytes read from (up) and written to (down) the client.
pub(crate) struct Counted<T> {
    pub(crate) inner: T,
    pub(crate) up: Arc<AtomicU64>,
    pub(crate) down: Arc<AtomicU64>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        self.up
            .fetch_add((buf.filled().len() - before) as u64, Ordering::Relaxed);
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = result {
            self.down.fetch_add(n as u64, Ordering::Relaxed);
        }
        result
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

// ---------------------------------------------------------------------------
// Plain HTTP

async fn forward(shared: Arc<Shared>, req: Request<Incoming>) -> Response<ProxyBody> {
    let mut p = Pending::new(req.method());
    let uri = req.uri().clone();
    let Some(auth) = uri.authority().cloned() else {
        if let Some(host) = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
        {
            p.set_host(host, 0);
        }
        let detail = "not a proxy request: the URL must be absolute (http://host/path)".to_string();
        return shared.refuse(&p, Reason::BadRequest, detail);
    };
    let port = auth.port_u16().unwrap_or(80);
    p.set_host(auth.host(), port);
    if !uri
        .scheme_str()
        .is_some_and(|s| s.eq_ignore_ascii_case("http"))
    {
        let detail = "only http:// URLs are forwarded; use CONNECT for https".to_string();
        return shared.refuse(&p, Reason::BadRequest, detail);
    }
    if port == 0 {
        return shared.refuse(&p, Reason::BadRequest, "port 0".into());
    }
    let (parts, body) = req.into_parts();
    if let Some(broker) = &shared.broker
        && let Err(not_bound) = broker.check_plain(&p.host, &parts)
    {
        p.credential = Some(not_bound.credential.clone());
        return shared.refuse(&p, Reason::CredentialNotBound, not_bound.to_string());
    }
    let target = match shared.authorize(auth.host(), port).await {
        Ok(target) => target,
        Err(refusal) => {
            p.addr = refusal.addr;
            return shared.refuse(&p, refusal.reason, refusal.detail);
        }
    };
    let stream = match &shared.upstream {
        None => match connect_any(&target.addrs, port).await {
            Ok((stream, addr)) => {
                p.addr = Some(addr);
                stream
            }
            Err(why) => {
                p.addr = target.addrs.first().copied();
                return shared.refuse(&p, Reason::ConnectFailed, why);
            }
        },
        Some(upstream) => {
            p.via = Some(upstream.display.clone());
            p.addr = target.addrs.first().copied();
            match shared.connect_upstream(upstream).await {
                Ok(stream) => stream,
                Err(why) => return shared.refuse(&p, Reason::ConnectFailed, why),
            }
        }
    };

    let (mut sender, conn) = match hyper::client::conn::http1::handshake::<_, CountingBody>(
        TokioIo::new(stream),
    )
    .await
    {
        Ok(pair) => pair,
        Err(error) => {
            return shared.refuse(
                &p,
                Reason::ConnectFailed,
                format!("HTTP handshake: {error}"),
            );
        }
    };
    let mut shutdown = shared.shutdown.clone();
    tokio::spawn(async move {
        tokio::select! {
            result = conn => if let Err(error) = result {
                tracing::debug!(%error, "proxy origin connection ended with an error");
            },
            _ = shutdown.changed() => {}
        }
    });

    let mut headers = parts.headers;
    strip_hop_by_hop(&mut headers);
    // The Host header always names the URL's host: no virtual-host fronting
    // past the policy check.
    let host_header = match (port, p.host.contains(':')) {
        (80, true) => format!("[{}]", p.host),
        (80, false) => p.host.clone(),
        _ => authority(&p.host, port),
    };
    match HeaderValue::from_str(&host_header) {
        Ok(value) => {
            headers.insert(header::HOST, value);
        }
        Err(_) => return shared.refuse(&p, Reason::BadRequest, "bad host".into()),
    }
    let out_uri = match &shared.upstream {
        Some(upstream) => {
            if let Some(auth) = upstream
                .auth
                .as_deref()
                .and_then(|a| HeaderValue::from_str(a).ok())
            {
                headers.insert(header::PROXY_AUTHORIZATION, auth);
            }
            let path = uri.path_and_query().map(|pq| pq.as_str()).unwrap_or("/");
            format!("http://{host_header}{path}").parse::<Uri>()
        }
        None => uri
            .path_and_query()
            .map(|pq| pq.as_str())
            .unwrap_or("/")
            .parse::<Uri>(),
    };
    let Ok(out_uri) = out_uri else {
        return shared.refuse(&p, Reason::BadRequest, "bad request target".into());
    };
    let up = Arc::new(AtomicU64::new(0));
    let mut out = Request::new(CountingBody {
        inner: body.into(),
        counter: up.clone(),
    });
    *out.method_mut() = parts.method;
    *out.uri_mut() = out_uri;
    *out.version_mut() = Version::HTTP_11;
    *out.headers_mut() = headers;

    let resp = match sender.send_request(out).await {
        Ok(resp) => resp,
        Err(error) => {
            let detail = format!("the server did not answer: {error}");
            shared.record(
                &p,
                Err(Reason::ConnectFailed),
                detail.clone(),
                up.load(Ordering::Relaxed),
                0,
            );
            return refusal(shared.policy.mode, Reason::ConnectFailed, &p.host, &detail);
        }
    };
    let (mut parts, body) = resp.into_parts();
    let log = HttpLog {
        shared: shared.clone(),
        pending: p,
        why: target.why,
        up,
        down: 0,
        detail: String::new(),
    };
    let relayed = ProxyBody::relay(body, &parts.headers, log, None);
    strip_hop_by_hop(&mut parts.headers);
    Response::from_parts(parts, relayed)
}

pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        HeaderName::from_static("proxy-connection"),
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
}

/// Logs a forwarded request when its response body is done (or dropped).
pub(crate) struct HttpLog {
    pub(crate) shared: Arc<Shared>,
    pub(crate) pending: Pending,
    pub(crate) why: &'static str,
    pub(crate) up: Arc<AtomicU64>,
    pub(crate) down: u64,
    /// Logged with the request.
    pub(crate) detail: String,
}

impl Drop for HttpLog {
    fn drop(&mut self) {
        let up = self.up.load(Ordering::Relaxed);
        let detail = std::mem::take(&mut self.detail);
        self.shared
            .record(&self.pending, Ok(self.why), detail, up, self.down);
    }
}

/// The request body on its way to the server, counted.
pub(crate) struct CountingBody {
    pub(crate) inner: RequestBody,
    pub(crate) counter: Arc<AtomicU64>,
}

/// A request body: the client's, streamed, or one the proxy read whole and
/// rewrote (a token request of a subscription login, see `oauth.rs`).
pub(crate) enum RequestBody {
    Streamed(Incoming),
    Full(Option<Bytes>),
}

impl From<Incoming> for RequestBody {
    fn from(body: Incoming) -> Self {
        RequestBody::Streamed(body)
    }
}

impl Body for CountingBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let result = match &mut self.inner {
            RequestBody::Streamed(inner) => Pin::new(inner).poll_frame(cx),
            RequestBody::Full(data) => Poll::Ready(data.take().map(|data| Ok(Frame::data(data)))),
        };
        if let Poll::Ready(Some(Ok(frame))) = &result
            && let Some(data) = frame.data_ref()
        {
            self.counter.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        result
    }
    fn is_end_stream(&self) -> bool {
        match &self.inner {
            RequestBody::Streamed(inner) => inner.is_end_stream(),
            RequestBody::Full(data) => data.is_none(),
        }
    }
    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            RequestBody::Streamed(inner) => inner.size_hint(),
            RequestBody::Full(data) => {
                SizeHint::with_exact(data.as_ref().map_or(0, |data| data.len() as u64))
            }
        }
    }
}

/// What the proxy answers with: its own short bodies, or a relayed response.
pub(crate) enum ProxyBody {
    Full(Option<Bytes>),
    Relay {
        inner: Incoming,
        /// The server's body ends when it closes (no length, not chunked).
        close_delimited: bool,
        /// Boxed: it makes the variant large.
        log: Box<HttpLog>,
        /// Brokered requests: hides injected values the server echoes.
        scrub: Option<Box<Scrubbing>>,
    },
}

impl ProxyBody {
    fn empty() -> Self {
        ProxyBody::Full(None)
    }

    /// The server's response body `inner` on its way to the client;
    /// `head` is the server's response head (read for how the body ends).
    pub(crate) fn relay(
        inner: Incoming,
        head: &hyper::http::HeaderMap,
        log: HttpLog,
        scrubber: Option<Scrubber>,
    ) -> Self {
        let close_delimited = !head.contains_key(hyper::header::CONTENT_LENGTH)
            && !head.contains_key(hyper::header::TRANSFER_ENCODING);
        ProxyBody::Relay {
            inner,
            close_delimited,
            log: Box::new(log),
            scrub: scrubber.map(|scrubber| {
                Box::new(Scrubbing {
                    scrubber,
                    queue: VecDeque::new(),
                    trailers: None,
                    done: false,
                })
            }),
        }
    }
}

type PolledFrame = Option<Result<Frame<Bytes>, hyper::Error>>;

/// Is `error` the connection's end without TLS `close_notify` (an
/// unexpected end of file below hyper)?
fn ended_without_close_notify(error: &hyper::Error) -> bool {
    let mut source = std::error::Error::source(error);
    while let Some(inner) = source {
        if let Some(io) = inner.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::UnexpectedEof
        {
            return true;
        }
        source = inner.source();
    }
    false
}

/// A relayed body on its way through a [`Scrubber`].
pub(crate) struct Scrubbing {
    scrubber: Scrubber,
    /// Scrubbed data not sent yet (a chunk gives one or two pieces, the
    /// body's end what the scrubber held back).
    queue: VecDeque<Bytes>,
    /// A trailers frame held back while the scrubber's last bytes go out.
    trailers: Option<Frame<Bytes>>,
    /// The server's body has ended.
    done: bool,
}

enum Step {
    Send(PolledFrame),
    /// Everything was held back: read more from the server.
    PollAgain,
}

impl Scrubbing {
    /// What is still to send before reading from the server again, or once
    /// its body ended.
    fn pending(&mut self) -> Option<PolledFrame> {
        if let Some(data) = self.queue.pop_front() {
            return Some(Some(Ok(Frame::data(data))));
        }
        if let Some(frame) = self.trailers.take() {
            return Some(Some(Ok(frame)));
        }
        self.done.then_some(None)
    }

    /// What to send for what the server's body yielded.
    fn step(&mut self, polled: PolledFrame) -> Step {
        match polled {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => self.scrubber.push(data, &mut self.queue),
                Err(trailers) => {
                    self.scrubber.finish(&mut self.queue);
                    self.trailers = Some(trailers);
                }
            },
            Some(Err(error)) => return Step::Send(Some(Err(error))),
            None => {
                self.done = true;
                self.scrubber.finish(&mut self.queue);
            }
        }
        match self.pending() {
            Some(frame) => Step::Send(frame),
            None => Step::PollAgain,
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ProxyBody::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            ProxyBody::Relay {
                inner,
                close_delimited,
                log,
                scrub,
            } => {
                if let Some(pending) = scrub.as_deref_mut().and_then(Scrubbing::pending) {
                    return Poll::Ready(pending);
                }
                loop {
                    let mut polled = std::task::ready!(Pin::new(&mut *inner).poll_frame(cx));
                    // A body that ends when the server closes, from a TLS
                    // server that closed without `close_notify` (many do):
                    // its end, as curl and Node read it. Passed on as an
                    // error, the client got a response cut short — and,
                    // under load, without its last bytes.
                    if *close_delimited
                        && let Some(Err(error)) = &polled
                        && ended_without_close_notify(error)
                    {
                        polled = None;
                    }
                    if let Some(Ok(frame)) = &polled
                        && let Some(data) = frame.data_ref()
                    {
                        log.down += data.len() as u64;
                    }
                    let Some(scrub) = scrub.as_deref_mut() else {
                        return Poll::Ready(polled);
                    };
                    if let Step::Send(frame) = scrub.step(polled) {
                        return Poll::Ready(frame);
                    }
                }
            }
        }
    }
    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Full(data) => data.is_none(),
            ProxyBody::Relay {
                inner, scrub: None, ..
            } => inner.is_end_stream(),
            // Held-back bytes or trailers may still come.
            ProxyBody::Relay {
                scrub: Some(scrub), ..
            } => scrub.done && scrub.queue.is_empty() && scrub.trailers.is_none(),
        }
    }
    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Full(data) => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            ProxyBody::Relay {
                scrub: Some(scrub), ..
            } if !scrub.scrubber.keeps_length() => SizeHint::default(),
            ProxyBody::Relay { inner, .. } => inner.size_hint(),
        }
    }
}

pub(crate) fn refusal(
    mode: NetworkMode,
    reason: Reason,
    host: &str,
    detail: &str,
) -> Response<ProxyBody> {
    let shown = if host.is_empty() { "HOST" } else { host };
    let hint = match reason {
        Reason::ModeNone => format!(
            "This session runs with --network none. To reach {shown}: kennel run --network allowlist --allow {shown}"
        ),
        Reason::NotAllowlisted => {
            format!(
                "To allow it: kennel run --allow {shown} (or add it to network.allow in the kennel config)"
            )
        }
        Reason::Denied => {
            "It matches network.deny in the kennel config; deny rules win over --allow.".to_string()
        }
        Reason::PrivateAddress => format!(
            "kennel never lets the sandbox reach private, loopback, link-local or cloud-metadata addresses in {} mode.",
            mode.as_str()
        ),
        Reason::ResolveFailed => {
            "Check the name, or map it in the [network.hosts] table of the kennel config."
                .to_string()
        }
        Reason::SniMismatch => "The TLS server name must equal the CONNECT host.".to_string(),
        Reason::NotTls => "Tunnels to TLS ports must start with a TLS ClientHello.".to_string(),
        Reason::BadRequest => {
            "kennel's proxy forwards absolute http:// URLs and CONNECT host:port requests."
                .to_string()
        }
        Reason::ConnectFailed => {
            "The network policy allowed it, but the server could not be reached.".to_string()
        }
        Reason::CredentialNotBound => "kennel puts a credential's real value in place of its placeholder only on HTTPS requests to the hosts, methods, paths and places (header, Basic auth, query parameter) it is bound to; nothing was sent.".to_string(),
    };
    let text = format!(
        "kennel: connection to {shown} refused ({}): {detail}\n{hint}\n",
        reason.code()
    );
    let status = if reason == Reason::ConnectFailed {
        StatusCode::BAD_GATEWAY
    } else {
        StatusCode::FORBIDDEN
    };
    let mut resp = Response::new(ProxyBody::Full(Some(Bytes::from(text))));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(
        HeaderName::from_static(REASON_HEADER),
        HeaderValue::from_static(reason.code()),
    );
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}
