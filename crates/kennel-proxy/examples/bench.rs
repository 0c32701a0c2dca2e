//! Egress proxy overhead on loopback, proxy vs direct, in one run.
//!
//! cargo run --release -p kennel-proxy --example bench
//!
//! Environment (all optional):
//!   BENCH_CONNS   connections per side for the latency test (default 1000, min 500)
//!   BENCH_BYTES   bytes per bulk transfer (default 1 GiB)
//!   BENCH_ROUNDS  bulk transfers per side, interleaved; the median counts (default 3)
//!   BENCH_STRICT  when 1, exit 1 if a target is missed
//!
//! Latency: TCP connect + (CONNECT + 200 through the proxy) + one byte echoed
//! back, for a fresh connection each time, interleaved direct/proxy.
//! Throughput: a source server streams BENCH_BYTES to the client, through a
//! CONNECT tunnel or directly. The proxy runs in allowlist mode with its full
//! policy path (hosts table, address check, decision log).
//! Loopback only; bounded to about two minutes.

// An example is a program: it owns its terminal and its exit code.
#![allow(clippy::print_stdout, clippy::print_stderr, clippy::exit)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use kennel_proxy::{Listen, NetworkMode, Policy, ProxyConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const HARD_LIMIT: Duration = Duration::from_secs(240);

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
            eprintln!("bench: gave up after {HARD_LIMIT:?}");
            std::process::exit(2);
        }
    }
}

async fn run() -> bool {
    let conns = env_num("BENCH_CONNS", 1000).max(500) as usize;
    let bytes = env_num("BENCH_BYTES", 1 << 30);
    let rounds = env_num("BENCH_ROUNDS", 3).max(1) as usize;
    let strict = std::env::var("BENCH_STRICT").is_ok_and(|v| v == "1");

    let echo = echo_server().await;
    let source = source_server().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut hosts = BTreeMap::new();
    hosts.insert(
        "bench.test".to_string(),
        vec!["127.0.0.1".parse().expect("ip")],
    );
    let config = ProxyConfig {
        policy: Policy {
            mode: NetworkMode::Allowlist,
            allow: vec!["bench.test".into()],
            deny: vec![],
        },
        hosts,
        log_file: Some(dir.path().join("net.jsonl")),
        session: "bench".into(),
        trusted_addrs: vec![("127.0.0.0".parse().expect("ip"), 8)],
        ..ProxyConfig::default()
    };
    let proxy = kennel_proxy::start(config, Listen::Tcp("127.0.0.1:0".parse().expect("addr")))
        .await
        .expect("proxy");
    let Listen::Tcp(proxy_addr) = proxy.local_addr().clone() else {
        unreachable!()
    };

    println!(
        "kennel-proxy benchmark (loopback, {} CPUs)",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );

    // Warm-up.
    for _ in 0..50 {
        direct_rtt(echo).await;
        proxy_rtt(proxy_addr, echo.port()).await;
    }
    let mut direct = Vec::with_capacity(conns);
    let mut proxied = Vec::with_capacity(conns);
    for _ in 0..conns {
        direct.push(direct_rtt(echo).await);
        proxied.push(proxy_rtt(proxy_addr, echo.port()).await);
    }
    let (d50, d90, d99) = percentiles(&mut direct);
    let (p50, p90, p99) = percentiles(&mut proxied);
    let added = p50.saturating_sub(d50);
    println!("\nconnection setup + first byte round trip, {conns} connections each");
    println!(
        "  direct   median {:>8.1} µs   p90 {:>8.1} µs   p99 {:>8.1} µs",
        us(d50),
        us(d90),
        us(d99)
    );
    println!(
        "  proxy    median {:>8.1} µs   p90 {:>8.1} µs   p99 {:>8.1} µs",
        us(p50),
        us(p90),
        us(p99)
    );
    println!(
        "  added    median {:>8.1} µs   ratio {:.2}x   target < 1000 µs: {}",
        us(added),
        p50.as_secs_f64() / d50.as_secs_f64(),
        verdict(added < Duration::from_millis(1))
    );

    let mut direct_rates = Vec::new();
    let mut proxy_rates = Vec::new();
    for _ in 0..rounds {
        direct_rates.push(direct_bulk(source, bytes).await);
        proxy_rates.push(proxy_bulk(proxy_addr, source.port(), bytes).await);
    }
    let dr = median_f64(&mut direct_rates);
    let pr = median_f64(&mut proxy_rates);
    let ratio = pr / dr;
    println!(
        "\nbulk throughput, {:.2} GiB per transfer, median of {rounds}",
        bytes as f64 / (1u64 << 30) as f64
    );
    println!("  direct   {:>8.2} GiB/s", dr);
    println!("  proxy    {:>8.2} GiB/s", pr);
    println!(
        "  ratio    {:>8.1} %      target >= 80 %: {}",
        ratio * 100.0,
        verdict(ratio >= 0.8)
    );

    let stats = proxy.stats();
    println!(
        "\nproxy decisions: {} allowed, {} denied",
        stats.allowed, stats.denied
    );
    proxy.shutdown().await;
    let ok = added < Duration::from_millis(1) && ratio >= 0.8;
    !strict || ok
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn percentiles(samples: &mut [Duration]) -> (Duration, Duration, Duration) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    (at(0.5), at(0.9), at(0.99))
}

fn median_f64(samples: &mut [f64]) -> f64 {
    samples.sort_by(|a, b| a.total_cmp(b));
    samples[samples.len() / 2]
}

async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let (mut r, mut w) = stream.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// Reads an 8-byte big-endian length, then writes that many bytes and closes.
async fn source_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut len = [0u8; 8];
                if stream.read_exact(&mut len).await.is_err() {
                    return;
                }
                let mut left = u64::from_be_bytes(len);
                let chunk = vec![0x5au8; 256 * 1024];
                while left > 0 {
                    let n = left.min(chunk.len() as u64) as usize;
                    if stream.write_all(&chunk[..n]).await.is_err() {
                        return;
                    }
                    left -= n as u64;
                }
                let _ = stream.shutdown().await;
            });
        }
    });
    addr
}

async fn direct_rtt(echo: SocketAddr) -> Duration {
    let start = Instant::now();
    let mut stream = TcpStream::connect(echo).await.expect("connect echo");
    stream.set_nodelay(true).expect("nodelay");
    round_trip(&mut stream).await;
    start.elapsed()
}

async fn proxy_rtt(proxy: SocketAddr, port: u16) -> Duration {
    let start = Instant::now();
    let mut stream = TcpStream::connect(proxy).await.expect("connect proxy");
    stream.set_nodelay(true).expect("nodelay");
    open_tunnel(&mut stream, port).await;
    round_trip(&mut stream).await;
    start.elapsed()
}

async fn open_tunnel(stream: &mut TcpStream, port: u16) {
    let request = format!("CONNECT bench.test:{port} HTTP/1.1\r\nHost: bench.test:{port}\r\n\r\n");
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

async fn round_trip(stream: &mut TcpStream) {
    stream.write_all(b"x").await.expect("write byte");
    let mut byte = [0u8; 1];
    stream.read_exact(&mut byte).await.expect("read byte");
}

async fn drain(stream: &mut TcpStream, bytes: u64) -> f64 {
    let start = Instant::now();
    stream
        .write_all(&bytes.to_be_bytes())
        .await
        .expect("write length");
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0u64;
    loop {
        let n = stream.read(&mut buf).await.expect("read bulk");
        if n == 0 {
            break;
        }
        got += n as u64;
    }
    assert_eq!(got, bytes, "short transfer");
    bytes as f64 / (1u64 << 30) as f64 / start.elapsed().as_secs_f64()
}

async fn direct_bulk(source: SocketAddr, bytes: u64) -> f64 {
    let mut stream = TcpStream::connect(source).await.expect("connect source");
    drain(&mut stream, bytes).await
}

async fn proxy_bulk(proxy: SocketAddr, port: u16, bytes: u64) -> f64 {
    let mut stream = TcpStream::connect(proxy).await.expect("connect proxy");
    open_tunnel(&mut stream, port).await;
    drain(&mut stream, bytes).await
}
