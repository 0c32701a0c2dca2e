//! Credential broker overhead on loopback, brokered vs direct HTTPS, in one run.
//!
//! cargo run --release -p kennel-proxy --example broker_bench
//!
//! Environment (all optional):
//!   BENCH_REQUESTS  keep-alive requests per side (default 2000, min 200)
//!   BENCH_CONNS     fresh connections per side (default 200, min 50)
//!   BENCH_BYTES     bytes per download / upload (default 256 MiB)
//!   BENCH_ROUNDS    transfers per side and direction, interleaved; the median
//!                   counts (default 3)
//!   BENCH_STRICT    when 1, exit 1 if a target is missed
//!
//! A tiny hyper + rustls HTTP/1.1 server with its own rcgen CA stands in for
//! an API: under `/v1/` it answers 401 unless `x-api-key` holds the real
//! value. The client talks to it either directly (TLS to the server, sending
//! the real value) or through the proxy (CONNECT, TLS with the session CA,
//! sending the placeholder, which the broker swaps for the value; the
//! response is scrubbed for echoes of it). The proxy runs in allowlist mode
//! with its full path (hosts table, trusted address, decision log).
//!
//! Latency: small GETs on one keep-alive connection per side, interleaved
//! direct/broker; and the first request of a fresh connection (TCP, CONNECT,
//! full TLS handshakes, GET), interleaved too.
//! Throughput: a large response body (download) and a large request body
//! (upload), direct vs brokered, with the process's CPU time per GiB.
//! Loopback only; bounded in time.

// An example is a program: it owns its terminal and its exit code.
#![allow(clippy::print_stdout, clippy::print_stderr, clippy::exit)]

#[path = "../tests/support/pki.rs"]
mod pki;
use pki::{TestPki, provider, test_pki};

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use kennel_proxy::{Credential, Listen, NetworkMode, Place, Policy, ProxyConfig, SessionCa};
use nix::sys::resource::{UsageWho, getrusage};
use rustls::client::Resumption;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;

const HARD_LIMIT: Duration = Duration::from_secs(150);
const HOST: &str = "api.test";
const KEY_HEADER: &str = "x-api-key";
// Same length: the broker keeps Content-Length (as with real placeholders,
// which have the value's shape).
const PLACEHOLDER: &str = "kph_PLACEHOLDER_0123456789abcdef0";
const VALUE: &str = "kv_realSECRETvalue/9876543210+xyz";
const WARM_UP: usize = 50;
const CHUNK: usize = 256 * 1024;
const MIB: f64 = (1u64 << 20) as f64;
const LATENCY_TARGET: Duration = Duration::from_millis(2);
const THROUGHPUT_TARGET: f64 = 0.8;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    match tokio::time::timeout(HARD_LIMIT, run()).await {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(_) => {
            eprintln!("broker bench: gave up after {HARD_LIMIT:?}");
            std::process::exit(2);
        }
    }
}

async fn run() -> bool {
    let requests = env_num("BENCH_REQUESTS", 2000).max(200) as usize;
    let conns = env_num("BENCH_CONNS", 200).max(50) as usize;
    let bytes = env_num("BENCH_BYTES", 256 << 20).max(1 << 20);
    let rounds = env_num("BENCH_ROUNDS", 3).max(1) as usize;
    let strict = std::env::var("BENCH_STRICT").is_ok_and(|v| v == "1");

    let pki = test_pki(&[HOST]);
    let data = random_chunk();
    let server = api_server(&pki, data.clone()).await;
    let ca = Arc::new(SessionCa::generate("bench").expect("session ca"));
    let dir = tempfile::tempdir().expect("tempdir");
    let loopback: IpAddr = "127.0.0.1".parse().expect("ip");
    let config = ProxyConfig {
        policy: Policy {
            mode: NetworkMode::Allowlist,
            allow: vec![HOST.into()],
            deny: vec![],
        },
        hosts: BTreeMap::from([(HOST.to_string(), vec![loopback])]),
        log_file: Some(dir.path().join("net.jsonl")),
        session: "bench".into(),
        trusted_addrs: vec![(loopback, 32)],
        sni_ports: vec![server.port()],
        credentials: vec![Credential {
            name: "API_KEY".into(),
            placeholder: PLACEHOLDER.into(),
            value: VALUE.into(),
            hosts: vec![HOST.into()],
            places: vec![Place::Header {
                name: KEY_HEADER.into(),
            }],
            methods: vec!["GET".into(), "POST".into()],
            paths: vec!["/v1/*".into()],
            refresh: None,
        }],
        ca: Some(ca.clone()),
        upstream_roots: vec![pki.ca_pem.as_bytes().to_vec()],
        ..ProxyConfig::default()
    };
    let proxy = kennel_proxy::start(config, Listen::Tcp("127.0.0.1:0".parse().expect("addr")))
        .await
        .expect("proxy");
    let Listen::Tcp(proxy_addr) = proxy.local_addr().clone() else {
        unreachable!()
    };
    let direct = Side::Direct {
        server,
        tls: connector(&pki.ca_pem, true),
    };
    let broker = Side::Broker {
        proxy: proxy_addr,
        port: server.port(),
        tls: connector(ca.cert_pem(), true),
    };
    // Fresh connections: full handshakes, as a new process (curl, git) makes.
    let direct_fresh = Side::Direct {
        server,
        tls: connector(&pki.ca_pem, false),
    };
    let broker_fresh = Side::Broker {
        proxy: proxy_addr,
        port: server.port(),
        tls: connector(ca.cert_pem(), false),
    };
    let authority = format!("{HOST}:{}", server.port());

    println!(
        "kennel-proxy credential broker benchmark (loopback, {} CPUs)",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );

    // 1a. Keep-alive requests.
    let mut d_conn = direct.open().await;
    let mut b_conn = broker.open().await;
    for _ in 0..WARM_UP {
        small_get(&mut d_conn, &authority, VALUE).await;
        small_get(&mut b_conn, &authority, PLACEHOLDER).await;
    }
    let mut d_times = Vec::with_capacity(requests);
    let mut b_times = Vec::with_capacity(requests);
    for _ in 0..requests {
        d_times.push(small_get(&mut d_conn, &authority, VALUE).await);
        b_times.push(small_get(&mut b_conn, &authority, PLACEHOLDER).await);
    }
    drop((d_conn, b_conn));
    let (d50, d95) = percentiles(&mut d_times);
    let (b50, b95) = percentiles(&mut b_times);
    let added = b50.saturating_sub(d50);
    let latency_ok = added < LATENCY_TARGET;
    println!(
        "\nkeep-alive HTTPS GET (bound header swapped, tiny body), {requests} requests each, interleaved"
    );
    println!(
        "  direct   median {:>8.1} µs   p95 {:>8.1} µs",
        us(d50),
        us(d95)
    );
    println!(
        "  broker   median {:>8.1} µs   p95 {:>8.1} µs",
        us(b50),
        us(b95)
    );
    println!(
        "  added    median {:>8.1} µs   p95 {:>8.1} µs   ratio {:.2}x   target < {} µs: {}",
        us(added),
        us(b95.saturating_sub(d95)),
        b50.as_secs_f64() / d50.as_secs_f64(),
        LATENCY_TARGET.as_micros(),
        verdict(latency_ok)
    );

    // 1b. First request of a fresh connection.
    for _ in 0..WARM_UP.min(conns) {
        fresh_get(&direct_fresh, &authority, VALUE).await;
        fresh_get(&broker_fresh, &authority, PLACEHOLDER).await;
    }
    let mut d_fresh = Vec::with_capacity(conns);
    let mut b_fresh = Vec::with_capacity(conns);
    for _ in 0..conns {
        d_fresh.push(fresh_get(&direct_fresh, &authority, VALUE).await);
        b_fresh.push(fresh_get(&broker_fresh, &authority, PLACEHOLDER).await);
    }
    let (d50, d95) = percentiles(&mut d_fresh);
    let (b50, b95) = percentiles(&mut b_fresh);
    println!(
        "\nfirst request on a fresh connection (TCP [+ CONNECT] + full TLS handshake(s) + GET), {conns} each"
    );
    println!(
        "  direct   median {:>8.1} µs   p95 {:>8.1} µs",
        us(d50),
        us(d95)
    );
    println!(
        "  broker   median {:>8.1} µs   p95 {:>8.1} µs",
        us(b50),
        us(b95)
    );
    println!(
        "  added    median {:>8.1} µs   p95 {:>8.1} µs   ratio {:.2}x   (no target)",
        us(b50.saturating_sub(d50)),
        us(b95.saturating_sub(d95)),
        b50.as_secs_f64() / d50.as_secs_f64(),
    );

    // 2. Throughput, one fresh keep-alive connection per side for all rounds.
    let mut d_conn = direct.open().await;
    let mut b_conn = broker.open().await;
    let mut dl = [Vec::new(), Vec::new(), Vec::new()];
    let mut ul = [Vec::new(), Vec::new()];
    for _ in 0..rounds {
        dl[0].push(download(&mut d_conn, &authority, "/v1/download", Some(VALUE), bytes).await);
        dl[1].push(
            download(
                &mut b_conn,
                &authority,
                "/v1/download",
                Some(PLACEHOLDER),
                bytes,
            )
            .await,
        );
        // Diagnostic: the same tunnel without a placeholder (nothing swapped,
        // no response scrubbing): TLS termination alone.
        dl[2].push(download(&mut b_conn, &authority, "/open/download", None, bytes).await);
        ul[0].push(upload(&mut d_conn, &authority, data.clone(), VALUE, bytes).await);
        ul[1].push(upload(&mut b_conn, &authority, data.clone(), PLACEHOLDER, bytes).await);
    }
    drop((d_conn, b_conn));
    let [dl_d, dl_b, dl_open] = dl.map(|mut v| median(&mut v));
    let [ul_d, ul_b] = ul.map(|mut v| median(&mut v));
    let dl_ratio = dl_b.mib_s / dl_d.mib_s;
    let ul_ratio = ul_b.mib_s / ul_d.mib_s;
    let dl_ok = dl_ratio >= THROUGHPUT_TARGET;
    let ul_ok = ul_ratio >= THROUGHPUT_TARGET;
    println!(
        "\nHTTPS throughput, {:.0} MiB per transfer, median of {rounds} (CPU: the whole process, client + proxy + server)",
        bytes as f64 / MIB
    );
    println!("                              MiB/s     ratio   CPU s/GiB   cores busy");
    let row = |label: &str, t: &Transfer, direct: Option<&Transfer>, tail: &str| {
        let ratio = direct.map_or(String::new(), |d| {
            format!("{:.1} %", t.mib_s / d.mib_s * 100.0)
        });
        println!(
            "  {label:<25} {:>8.1}  {ratio:>8}   {:>9.2}   {:>10.2}{tail}",
            t.mib_s, t.cpu_s_per_gib, t.cores
        );
    };
    let dl_tail = format!("   target >= 80 %: {}", verdict(dl_ok));
    let ul_tail = format!("   target >= 80 %: {}", verdict(ul_ok));
    row("download direct", &dl_d, None, "");
    row("download broker", &dl_b, Some(&dl_d), &dl_tail);
    row(
        "download broker, no swap",
        &dl_open,
        Some(&dl_d),
        "   (diagnostic)",
    );
    row("upload direct", &ul_d, None, "");
    row("upload broker", &ul_b, Some(&ul_d), &ul_tail);
    println!(
        "  (no swap: the same tunnel, a request without the placeholder, so no response scrubbing;\n   \
         CPU s/GiB: user + system time of the whole process per GiB moved; what the broker\n   \
         adds over direct is its own cost: download +{:.2} (no swap +{:.2}), upload +{:.2})",
        dl_b.cpu_s_per_gib - dl_d.cpu_s_per_gib,
        dl_open.cpu_s_per_gib - dl_d.cpu_s_per_gib,
        ul_b.cpu_s_per_gib - ul_d.cpu_s_per_gib,
    );

    let stats = proxy.stats();
    println!(
        "\nproxy decisions: {} allowed, {} denied",
        stats.allowed, stats.denied
    );
    proxy.shutdown().await;

    println!("\ngoals");
    println!(
        "  added latency per keep-alive request < 2 ms (median, {:.0} µs): {}",
        us(added),
        verdict(latency_ok)
    );
    println!(
        "  download through the broker >= 80 % of direct ({:.1} %):    {}",
        dl_ratio * 100.0,
        verdict(dl_ok)
    );
    println!(
        "  upload through the broker >= 80 % of direct ({:.1} %):      {}",
        ul_ratio * 100.0,
        verdict(ul_ok)
    );
    let ok = latency_ok && dl_ok && ul_ok;
    !strict || ok
}

fn verdict(ok: bool) -> &'static str {
    if ok { "ok" } else { "MISSED" }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// (median, p95)
fn percentiles(samples: &mut [Duration]) -> (Duration, Duration) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    (at(0.5), at(0.95))
}

/// One bulk transfer: rate, and the CPU the whole process spent on it.
#[derive(Clone, Copy)]
struct Transfer {
    mib_s: f64,
    cpu_s_per_gib: f64,
    cores: f64,
}

fn median(samples: &mut [Transfer]) -> Transfer {
    samples.sort_by(|a, b| a.mib_s.total_cmp(&b.mib_s));
    samples[samples.len() / 2]
}

/// User + system CPU time of the whole process.
fn cpu_time() -> Duration {
    let usage = getrusage(UsageWho::RUSAGE_SELF).expect("getrusage");
    let tv = |t: nix::sys::time::TimeVal| {
        Duration::new(t.tv_sec() as u64, 0) + Duration::from_micros(t.tv_usec() as u64)
    };
    tv(usage.user_time()) + tv(usage.system_time())
}

fn transfer(bytes: u64, wall: Duration, cpu: Duration) -> Transfer {
    Transfer {
        mib_s: bytes as f64 / MIB / wall.as_secs_f64(),
        cpu_s_per_gib: cpu.as_secs_f64() / (bytes as f64 / (1u64 << 30) as f64),
        cores: cpu.as_secs_f64() / wall.as_secs_f64(),
    }
}

/// Incompressible bytes (xorshift), so that every byte value occurs and the
/// response scrubber meets bytes that can start the value.
fn random_chunk() -> Bytes {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut out = Vec::with_capacity(CHUNK);
    while out.len() < CHUNK {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    Bytes::from(out)
}

/// A body of `left` bytes, cut from one shared chunk (no copying).
struct Source {
    chunk: Bytes,
    left: u64,
}

impl Source {
    fn empty() -> Self {
        Self {
            chunk: Bytes::new(),
            left: 0,
        }
    }
    fn of(chunk: Bytes, left: u64) -> Self {
        Self { chunk, left }
    }
    fn text(text: String) -> Self {
        let left = text.len() as u64;
        Self {
            chunk: Bytes::from(text),
            left,
        }
    }
}

impl Body for Source {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = self.left.min(self.chunk.len() as u64) as usize;
        self.left -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..n)))))
    }
    fn is_end_stream(&self) -> bool {
        self.left == 0
    }
    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

// ---- the stand-in API ----------------------------------------------------

/// `/v1/small` (200, 3 bytes), `/v1/download?bytes=N` (N bytes), `POST
/// /v1/upload` (reads the body, answers its length); `/v1/*` requires the
/// real value in `x-api-key`. `/open/download` is `/v1/download` without it.
async fn api_server(pki: &TestPki, data: Bytes) -> SocketAddr {
    let acceptor = pki.acceptor();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind api");
    let addr = listener.local_addr().expect("api addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            let acceptor = acceptor.clone();
            let data = data.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let service = service_fn(move |req: Request<Incoming>| {
                    let data = data.clone();
                    async move { Ok::<_, Infallible>(answer(req, data).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    addr
}

async fn answer(req: Request<Incoming>, data: Bytes) -> Response<Source> {
    let reply = |status: StatusCode, body: Source| {
        let mut resp = Response::new(body);
        *resp.status_mut() = status;
        resp
    };
    let path = req.uri().path().to_string();
    if path.starts_with("/v1/")
        && req.headers().get(KEY_HEADER).map(|v| v.as_bytes()) != Some(VALUE.as_bytes())
    {
        return reply(StatusCode::UNAUTHORIZED, Source::text("no key\n".into()));
    }
    match (req.method(), path.as_str()) {
        (&Method::GET, "/v1/small") => reply(StatusCode::OK, Source::text("ok\n".into())),
        (&Method::GET, "/v1/download" | "/open/download") => {
            let bytes = req
                .uri()
                .query()
                .and_then(|q| q.strip_prefix("bytes="))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            reply(StatusCode::OK, Source::of(data, bytes))
        }
        (&Method::POST, "/v1/upload") => {
            let mut body = req.into_body();
            let mut got = 0u64;
            while let Some(frame) = body.frame().await {
                let Ok(frame) = frame else {
                    return reply(StatusCode::BAD_REQUEST, Source::empty());
                };
                if let Some(data) = frame.data_ref() {
                    got += data.len() as u64;
                }
            }
            reply(StatusCode::OK, Source::text(got.to_string()))
        }
        _ => reply(StatusCode::NOT_FOUND, Source::empty()),
    }
}

// ---- the client ----------------------------------------------------------

fn connector(pem: &str, resume: bool) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(pem.as_bytes()).expect("pem"))
        .expect("root");
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    if !resume {
        config.resumption = Resumption::disabled();
    }
    TlsConnector::from(Arc::new(config))
}

type Sender = SendRequest<Source>;

enum Side {
    /// TLS straight to the server.
    Direct {
        server: SocketAddr,
        tls: TlsConnector,
    },
    /// CONNECT through the proxy, TLS with the session CA's certificate.
    Broker {
        proxy: SocketAddr,
        port: u16,
        tls: TlsConnector,
    },
}

impl Side {
    async fn open(&self) -> Sender {
        let name = ServerName::try_from(HOST).expect("name");
        let (tcp, tls) = match self {
            Side::Direct { server, tls } => {
                let tcp = TcpStream::connect(server).await.expect("connect server");
                (tcp, tls)
            }
            Side::Broker { proxy, port, tls } => {
                let mut tcp = TcpStream::connect(proxy).await.expect("connect proxy");
                open_tunnel(&mut tcp, *port).await;
                (tcp, tls)
            }
        };
        tcp.set_nodelay(true).expect("nodelay");
        let stream = tls.connect(name, tcp).await.expect("TLS handshake");
        handshake(stream).await
    }
}

async fn open_tunnel(stream: &mut TcpStream, port: u16) {
    let request = format!("CONNECT {HOST}:{port} HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("write CONNECT");
    let mut head = Vec::with_capacity(128);
    let mut buf = [0u8; 256];
    // The proxy sends nothing after its head until we do: reading chunks is safe.
    while !head.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut buf).await.expect("read head");
        assert!(n > 0, "proxy closed: {}", String::from_utf8_lossy(&head));
        head.extend_from_slice(&buf[..n]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
}

async fn handshake<S>(stream: S) -> Sender
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("HTTP handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender
}

fn request(
    method: Method,
    target: &str,
    authority: &str,
    key: Option<&str>,
    body: Source,
) -> Request<Source> {
    let mut builder = Request::builder()
        .method(method)
        .uri(target)
        .header("host", authority);
    if let Some(key) = key {
        builder = builder.header(KEY_HEADER, key);
    }
    builder.body(body).expect("request")
}

/// Send, read the whole answer; its status and body length.
async fn exchange(sender: &mut Sender, req: Request<Source>) -> (StatusCode, u64, Bytes) {
    sender.ready().await.expect("connection ready");
    let resp = sender.send_request(req).await.expect("response");
    let status = resp.status();
    let mut body = resp.into_body();
    let mut got = 0u64;
    let mut last = Bytes::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.expect("body").into_data() {
            got += data.len() as u64;
            last = data;
        }
    }
    (status, got, last)
}

async fn small_get(sender: &mut Sender, authority: &str, key: &str) -> Duration {
    let req = request(
        Method::GET,
        "/v1/small",
        authority,
        Some(key),
        Source::empty(),
    );
    let start = Instant::now();
    let (status, got, _) = exchange(sender, req).await;
    let took = start.elapsed();
    assert_eq!((status, got), (StatusCode::OK, 3), "small GET");
    took
}

async fn fresh_get(side: &Side, authority: &str, key: &str) -> Duration {
    let start = Instant::now();
    let mut sender = side.open().await;
    small_get(&mut sender, authority, key).await;
    start.elapsed()
}

async fn download(
    sender: &mut Sender,
    authority: &str,
    path: &str,
    key: Option<&str>,
    bytes: u64,
) -> Transfer {
    let target = format!("{path}?bytes={bytes}");
    let req = request(Method::GET, &target, authority, key, Source::empty());
    let cpu = cpu_time();
    let start = Instant::now();
    let (status, got, _) = exchange(sender, req).await;
    let wall = start.elapsed();
    let cpu = cpu_time().saturating_sub(cpu);
    assert_eq!((status, got), (StatusCode::OK, bytes), "download {path}");
    transfer(bytes, wall, cpu)
}

async fn upload(
    sender: &mut Sender,
    authority: &str,
    data: Bytes,
    key: &str,
    bytes: u64,
) -> Transfer {
    let req = request(
        Method::POST,
        "/v1/upload",
        authority,
        Some(key),
        Source::of(data, bytes),
    );
    let cpu = cpu_time();
    let start = Instant::now();
    let (status, _, body) = exchange(sender, req).await;
    let wall = start.elapsed();
    let cpu = cpu_time().saturating_sub(cpu);
    assert_eq!(status, StatusCode::OK, "upload");
    assert_eq!(body, bytes.to_string(), "upload length");
    transfer(bytes, wall, cpu)
}
