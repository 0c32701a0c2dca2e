//! kennel's egress proxy.
//!
//! An HTTP/1.1 proxy (CONNECT tunnels and plain absolute-URI forwarding) that
//! allows or refuses every connection according to a [`Policy`] and logs each
//! decision as one JSON line ([`Decision`]).
//!
//! How a request is decided:
//!
//! 1. [`check_name`] on the requested host (`none` refuses everything;
//!    `deny` wins; `allowlist` needs an `allow` match).
//! 2. The name is resolved by the proxy itself: first [`ProxyConfig::hosts`],
//!    then IP literals, then the system resolver.
//! 3. *Every* resolved address must pass [`check_addr`] (public addresses
//!    only in `allowlist` and `restricted`), unless it lies in one of
//!    [`ProxyConfig::trusted_addrs`].
//! 4. The proxy connects only to addresses it checked (no second lookup, so DNS
//!    rebinding cannot swap in a private address).
//! 5. CONNECT to a port in [`ProxyConfig::sni_ports`] (443 by default) must
//!    start with a TLS ClientHello whose SNI, when present, equals the CONNECT
//!    host.
//!
//! Refusals are `403` with an `X-Kennel-Reason: <code>` header (see
//! [`Reason`]); a destination that cannot be reached is `502 connect-failed`.
//!
//! Tunnels are moved with splice(2) once the checks are done (no copy
//! through user space); byte counts are exact. There is no idle timeout on
//! tunnels: they end when either side closes, or at [`ProxyHandle::shutdown`].
//!
//! ## Upstream proxy
//!
//! With [`ProxyConfig::upstream`], tunnels are opened with CONNECT through the
//! upstream and plain requests are forwarded to it in absolute form. The name
//! check is unchanged. The proxy still tries to resolve the destination (hosts
//! table, literal, system resolver) and, if that succeeds, every address must
//! pass the address check exactly as without an upstream. If the name does
//! *not* resolve locally (common behind corporate proxies), the request is
//! allowed on the name check alone and handed to the upstream by name; the
//! upstream then resolves it, so the address check and DNS-rebinding
//! protection are the upstream's responsibility in that case. The upstream's
//! own address is never address-checked: the user configured it (it is
//! typically on a private network).
//!
//! ## Credential broker
//!
//! A secret such as an API key can stay on the host: the sandbox gets a
//! random *placeholder* of the same shape, and [`ProxyConfig::credentials`]
//! binds each [`Credential`] to hosts, methods, path prefixes and [`Place`]s
//! in a request (a header, `Authorization: Basic`, a query parameter).
//!
//! * CONNECT to a port in `sni_ports` of a host some credential is bound to
//!   is authorized exactly like any tunnel (policy, resolution, address
//!   checks, upstream proxy, SNI). Then, instead of splicing, the proxy
//!   terminates the client's TLS with a certificate for that host signed by
//!   the per-session CA ([`SessionCa`], [`ProxyConfig::ca`]; the sandbox
//!   trusts its certificate, its key never leaves the proxy), and opens its
//!   own TLS connection to the real server, verified against the system's
//!   roots plus [`ProxyConfig::upstream_roots`]. Both sides speak HTTP/1.1
//!   (ALPN `http/1.1`); requests and bodies are streamed through, one
//!   upstream connection per client connection.
//! * Every request on it must name the CONNECT host (`Host`, or the
//!   authority of an absolute target), else `403 bad-request`. Then every
//!   placeholder in the request head is looked for: in each header value (as
//!   is, and percent-decoded), inside `Authorization: Basic`, in the URL path
//!   and query (also percent-decoded). A credential whose placeholder occurs
//!   is injected only if the host, method and path are bound and *every*
//!   occurrence is in a bound place (a percent-encoded placeholder in a
//!   header, or one in the URL path, is in none); then the placeholder is
//!   replaced by the value there (Basic re-encoded, a query value
//!   percent-encoded). A path prefix never matches a path with `.` or `..`
//!   segments. Otherwise
//!   the whole request is refused with `403 credential-not-bound` and a
//!   plain-text body naming the credential and why. Requests without a
//!   placeholder pass unchanged. Each request is logged with
//!   [`Decision::credential`]; the tunnel itself is logged when it closes.
//! * Where a value was injected, the response's headers and body have the
//!   value replaced by the placeholder again, should the server echo it
//!   (uncompressed bodies only).
//! * A credential with [`Credential::refresh`] (a command, e.g. `sh -c 'gh
//!   auth token'`) is refreshed when the server answers `401` to a request
//!   it was injected into: the command runs on the host in the background
//!   (stdin `/dev/null`, its own process group, killed after 30 s), at most
//!   once a minute per credential; its output, one trailing line break
//!   removed, must be a usable value (non-empty, one line, no
//!   placeholder), and then it is injected from the next request on, for
//!   the same placeholder. The 401 request's log line says a refresh
//!   started (or why not); the outcome is a `tracing` line naming the
//!   credential, with at most the last line of the command's stderr, never
//!   its output.
//! * A WebSocket handshake (`Connection: upgrade`, `Upgrade: websocket`)
//!   keeps its upgrade headers and is swapped like any request; when the
//!   server answers `101`, both connections are handed over and the bytes
//!   are copied both ways, unread, until either side closes; the request
//!   is logged then, with those bytes.
//! * A plain-HTTP request carrying a placeholder is refused with
//!   `credential-not-bound`: credentials are only sent over TLS the proxy
//!   verified.
//! * The client's TLS failing (it does not trust the session CA) or the
//!   server's certificate failing verification is logged as a
//!   `connect-failed` denial saying which, and the connection is closed.
//!
//! Every other host is spliced as before and never decrypted. The real
//! value never appears in the log, in an error, in a response the proxy
//! makes, or in `Debug` output.

pub mod broker;
mod log;
pub mod oauth;
mod policy;
mod server;
mod splice;
mod terminate;
mod tls;
mod upstream;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

pub use crate::broker::{BrokerError, Credential, Place, SessionCa};
pub use crate::log::{Decision, read_log};
pub use crate::oauth::{LoginTokens, LoginVault, OAuthLogin};
pub use crate::policy::{NetworkMode, Policy, Reason, Verdict, check_addr, check_name, is_public};
pub use crate::server::{ProxyHandle, start};
#[doc(hidden)]
pub use crate::tls::build_client_hello;

/// The HTTP header carrying the reason code of a refusal.
pub const REASON_HEADER: &str = "x-kennel-reason";

/// Everything the proxy needs besides where to listen.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub policy: Policy,
    /// Name mapping consulted before DNS, like `/etc/hosts`: name -> addresses
    /// (e.g. from a `[network.hosts]` config table). Names are matched
    /// case-insensitively. The mapped addresses still go through the address
    /// check (see `trusted_addrs`). An empty list means "does not resolve"
    /// (no DNS lookup is made): refused as `resolve-failed`, or handed to the
    /// upstream proxy by name when there is one.
    pub hosts: BTreeMap<String, Vec<IpAddr>>,
    /// Upstream HTTP proxy to chain to, `http://[user:password@]host[:port]`
    /// (port 80 when omitted). See the crate documentation for how address
    /// checks apply when chaining.
    pub upstream: Option<String>,
    /// JSON-lines decision log, appended to (created with mode 0600).
    pub log_file: Option<PathBuf>,
    /// Session name written into each log record.
    pub session: String,
    /// **Dangerous.** Networks (address, prefix length) exempt from the
    /// address check in `allowlist` and `restricted` modes, for the user's own
    /// test or corporate hosts. Anything listed here is reachable from the
    /// sandbox whenever a permitted name resolves into it: never put
    /// 169.254.0.0/16 or a whole private range here casually. Empty by default.
    pub trusted_addrs: Vec<(IpAddr, u8)>,
    /// CONNECT ports on which the client must speak TLS first and whose SNI
    /// must match the CONNECT host. Default `[443]`.
    pub sni_ports: Vec<u16>,
    /// Brokered credentials (see the crate documentation). Empty by default:
    /// no TLS is ever terminated.
    pub credentials: Vec<Credential>,
    /// The session CA that signs the certificates shown to the sandbox for
    /// brokered hosts. Required when `credentials` is not empty.
    pub ca: Option<Arc<SessionCa>>,
    /// PEM bundles trusted, besides the system's roots, when verifying the
    /// real servers of brokered hosts.
    pub upstream_roots: Vec<Vec<u8>>,
    /// Subscription logins whose tokens stay on the host (see [`oauth`]):
    /// TLS to their token endpoints and access-token hosts is terminated.
    pub logins: Vec<OAuthLogin>,
    /// Where the host keeps the logins' tokens; without one, logins pass
    /// unbrokered.
    pub vault: Option<Arc<dyn LoginVault>>,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            policy: Policy::default(),
            hosts: BTreeMap::new(),
            upstream: None,
            log_file: None,
            session: String::new(),
            trusted_addrs: Vec::new(),
            sni_ports: vec![443],
            credentials: Vec::new(),
            ca: None,
            upstream_roots: Vec::new(),
            logins: Vec::new(),
            vault: None,
        }
    }
}

/// Where the proxy listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// A Unix socket, set to mode 0600 right after bind (put it in a 0700
    /// directory to close that window) and removed on shutdown. A stale socket
    /// at the path (nobody listening) is replaced; a live one is an error.
    Unix(PathBuf),
    /// A loopback TCP address (port 0 picks a free port); any other address
    /// is refused so that the proxy is never reachable from outside the machine.
    Tcp(SocketAddr),
}

/// Decisions so far (one per log record).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub allowed: u64,
    pub denied: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("the proxy may only listen on loopback, not on {0}")]
    NotLoopback(SocketAddr),
    #[error("cannot listen on {what}: {source}")]
    Bind {
        what: String,
        source: std::io::Error,
    },
    #[error("bad upstream proxy {url:?}: {why}")]
    BadUpstream { url: String, why: String },
    #[error("bad trusted address {addr}/{prefix}: prefix too long")]
    BadTrusted { addr: IpAddr, prefix: u8 },
    #[error("proxy log {}: {source}", path.display())]
    LogFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("credentials are configured but there is no session CA to terminate TLS with")]
    NoSessionCa,
    /// A credential that cannot be used; `why` never holds its value.
    #[error("credential {name:?}: {why}")]
    BadCredential { name: String, why: String },
    #[error("upstream_roots bundle {index}: {why}")]
    BadUpstreamRoots { index: usize, why: String },
    #[error("credential broker: {0}")]
    Broker(#[from] BrokerError),
    #[error("proxy log {} line {line}: {source}", path.display())]
    LogParse {
        path: PathBuf,
        line: usize,
        source: serde_json::Error,
    },
}
