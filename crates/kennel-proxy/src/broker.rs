//! The credential broker: real secrets stay in the proxy, the sandbox holds
//! placeholders, and the proxy swaps one for the other only where a
//! credential is bound (host, method, path, place in the request).
//!
//! This module is the pure part: the types the configuration is made of, the
//! session CA, and the swap on a request head. `terminate.rs` serves the TLS
//! connections it applies to.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::ops::Range;
use std::process::Stdio;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use hyper::Method;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::http::request::Parts;
use hyper::http::uri::PathAndQuery;
use memchr::memmem;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode, utf8_percent_encode};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use serde::{Deserialize, Serialize};

use crate::ProxyError;
use crate::oauth::{LoginTokens, LoginVault, OAuthLogin};
use crate::policy::pattern_matches;

/// How long the session CA and the certificates it signs are valid.
const VALIDITY: Duration = Duration::from_secs(7 * 24 * 3600);
/// Certificates start this long before they are made, for clocks that lag.
const BACKDATE: Duration = Duration::from_secs(3600);
/// A host's certificate is made again after this long, well within
/// `VALIDITY`, so that a long session never serves an expired one.
const LEAF_REFRESH: Duration = Duration::from_secs(24 * 3600);

/// One brokered credential.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Credential {
    /// The secret's name, as logged and shown to the agent.
    pub name: String,
    /// What the sandbox holds instead of the value.
    pub placeholder: String,
    /// The real value: never logged, never in a response or error of the proxy.
    pub value: String,
    /// Exact names or `*.example.com`, matched like the policy's allow rules.
    pub hosts: Vec<String>,
    /// Where the placeholder may appear in a request, and is swapped.
    pub places: Vec<Place>,
    /// Upper-case methods; empty means any.
    pub methods: Vec<String>,
    /// Path prefixes (`/repos/acme/app/`); empty means any. A trailing `*`
    /// is ignored (`/v1/*` is `/v1/`).
    pub paths: Vec<String>,
    /// A command (argument vector) the proxy runs on the host for a new
    /// value when the server answers 401 to a request it was injected into
    /// (at most once a minute). The placeholder stays the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh: Option<Vec<String>>,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("name", &self.name)
            .field("placeholder", &self.placeholder)
            .field("value", &"<redacted>")
            .field("hosts", &self.hosts)
            .field("places", &self.places)
            .field("methods", &self.methods)
            .field("paths", &self.paths)
            .field("refresh", &self.refresh.is_some())
            .finish()
    }
}

/// A place in a request where a credential's placeholder may appear.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Place {
    /// Anywhere in the value of this header (`x-api-key: <placeholder>`,
    /// `authorization: Bearer <placeholder>`). Names are case-insensitive.
    Header { name: String },
    /// The user or the password inside `Authorization: Basic base64(user:password)`
    /// (git over HTTPS sends `x-access-token:<token>`).
    Basic,
    /// The value of this query parameter, percent-encoded or not.
    Query { param: String },
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Place::Header { name } => write!(f, "header {}", name.to_ascii_lowercase()),
            Place::Basic => f.write_str("Authorization: Basic"),
            Place::Query { param } => write!(f, "query parameter {param}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("cannot make a certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("the session CA is not usable: {0}")]
    BadCa(String),
    #[error("TLS set-up: {0}")]
    Tls(#[from] rustls::Error),
}

/// A per-session certificate authority. Its key never leaves the host: the
/// sandbox only ever gets [`SessionCa::cert_pem`].
pub struct SessionCa {
    cert_pem: String,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl fmt::Debug for SessionCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionCa")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

impl SessionCa {
    /// A new CA (EC P-256, valid for about 7 days) named after the session.
    pub fn generate(session: &str) -> Result<SessionCa, BrokerError> {
        SessionCa::generate_for(session, &[])
    }

    /// A CA that may only sign for `hosts` (their names and subdomains, and
    /// the IP literals among them), through name constraints every TLS
    /// client of the sandbox enforces: trusting it inside lets nothing
    /// else be impersonated. No hosts: unconstrained.
    pub fn generate_for(session: &str, hosts: &[String]) -> Result<SessionCa, BrokerError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, format!("kennel session {session}"));
        name.push(DnType::OrganizationName, "kennel");
        params.distinguished_name = name;
        // Signs leaf certificates only, never another CA.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        if !hosts.is_empty() {
            params.name_constraints = Some(name_constraints(hosts));
        }
        set_validity(&mut params);
        let cert = params.self_signed(&key)?;
        Ok(SessionCa {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA as [`SessionCa::generate`] made it, from its two PEM texts (the
    /// proxy daemon receives them over a pipe).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<SessionCa, BrokerError> {
        let key = KeyPair::from_pem(key_pem)
            .map_err(|_| BrokerError::BadCa("the key is not a PEM private key".into()))?;
        let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|_| BrokerError::BadCa("the certificate is not PEM".into()))?;
        let key_der = PrivatePkcs8KeyDer::from(key.serialize_der()).into();
        let signer = provider()
            .key_provider
            .load_private_key(key_der)
            .map_err(|_| BrokerError::BadCa("the key is not usable for signing".into()))?;
        rustls::sign::CertifiedKey::new(vec![cert.clone()], signer)
            .keys_match()
            .map_err(|_| BrokerError::BadCa("the key does not belong to the certificate".into()))?;
        let issuer = Issuer::from_ca_cert_der(&cert, key)?;
        Ok(SessionCa {
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.to_string(),
            issuer,
        })
    }

    /// The CA certificate, for the sandbox's trust store.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA's private key. Only for handing the CA to the proxy process.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// A certificate for `host` (a name or an IP literal) and its key.
    fn leaf(
        &self,
        host: &str,
    ) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), BrokerError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(vec![host.to_string()])?;
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, host);
        params.distinguished_name = name;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params);
        let cert = params.signed_by(&key, &self.issuer)?;
        let key_der = PrivatePkcs8KeyDer::from(key.serialize_der()).into();
        Ok((cert.der().clone(), key_der))
    }
}

/// Permitted: each host's name (a `*.domain` pattern as its domain, which
/// covers the subdomains) or address; excluded: every address when no host
/// is one (an address is not constrained by DNS names alone).
fn name_constraints(hosts: &[String]) -> rcgen::NameConstraints {
    use rcgen::{CidrSubnet, GeneralSubtree};
    let mut permitted = Vec::new();
    for host in hosts {
        let host = host.trim_end_matches('.');
        match host.trim_matches(['[', ']']).parse::<std::net::IpAddr>() {
            Ok(addr) => {
                let prefix = if addr.is_ipv4() { 32 } else { 128 };
                permitted.push(GeneralSubtree::IpAddress(CidrSubnet::from_addr_prefix(
                    addr, prefix,
                )));
            }
            Err(_) => permitted.push(GeneralSubtree::DnsName(
                host.strip_prefix("*.").unwrap_or(host).to_ascii_lowercase(),
            )),
        }
    }
    let mut excluded = Vec::new();
    if !permitted
        .iter()
        .any(|subtree| matches!(subtree, GeneralSubtree::IpAddress(_)))
    {
        excluded.push(GeneralSubtree::IpAddress(CidrSubnet::from_v4_prefix(
            [0; 4], 0,
        )));
        excluded.push(GeneralSubtree::IpAddress(CidrSubnet::from_v6_prefix(
            [0; 16], 0,
        )));
    }
    rcgen::NameConstraints {
        permitted_subtrees: permitted,
        excluded_subtrees: excluded,
    }
}

fn set_validity(params: &mut CertificateParams) {
    let now = SystemTime::now();
    params.not_before = (now - BACKDATE).into();
    params.not_after = (now + VALIDITY).into();
}

/// Only `ring`: it is what rcgen signs with, and aws-lc-rs would need a C
/// toolchain and cmake to build. Named explicitly so that another crate in
/// the binary enabling a second provider cannot make rustls' default ambiguous.
// rustls 0.23.48 deprecates ring's provider because its key exchange is not
// post-quantum (that needs aws-lc-rs); X25519 and the NIST curves remain.
#[allow(deprecated)]
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

const HTTP11: &[u8] = b"http/1.1";

/// Check the credentials as `start()` receives them. Errors name the
/// credential, never its value.
pub(crate) fn validate(credentials: &[Credential]) -> Result<(), ProxyError> {
    let bad = |credential: &Credential, why: &str| ProxyError::BadCredential {
        name: credential.name.clone(),
        why: why.to_string(),
    };
    for credential in credentials {
        for (what, text) in [
            ("value", &credential.value),
            ("placeholder", &credential.placeholder),
        ] {
            if text.is_empty() {
                return Err(bad(credential, &format!("its {what} is empty")));
            }
            if text.contains(['\r', '\n', '\0']) {
                return Err(bad(
                    credential,
                    &format!("its {what} contains a line break or a NUL byte"),
                ));
            }
        }
        if credential.hosts.is_empty() {
            return Err(bad(credential, "it is bound to no host"));
        }
        if credential.places.is_empty() {
            return Err(bad(credential, "it is bound to no place in a request"));
        }
        if credential
            .refresh
            .as_ref()
            .is_some_and(|argv| argv.first().is_none_or(String::is_empty))
        {
            return Err(bad(credential, "its refresh command is empty"));
        }
        // A placeholder inside another placeholder or inside a value would be
        // found again after a swap, or swapped twice.
        for other in credentials {
            if !std::ptr::eq(other, credential)
                && other.placeholder.contains(&credential.placeholder)
            {
                return Err(bad(
                    credential,
                    &format!(
                        "its placeholder occurs in the placeholder of {:?}",
                        other.name
                    ),
                ));
            }
            if other.value.contains(&credential.placeholder) {
                return Err(bad(
                    credential,
                    &format!("its placeholder occurs in the value of {:?}", other.name),
                ));
            }
        }
    }
    Ok(())
}

/// The broker as the running proxy holds it.
pub(crate) struct Broker {
    /// The credentials with their current values: a refresh puts a new
    /// list here, and each request uses the list it found.
    credentials: RwLock<Arc<[Credential]>>,
    /// Per credential (same order): its refreshes so far.
    refreshes: Vec<Mutex<Refreshes>>,
    ca: Arc<SessionCa>,
    upstream_tls: Arc<ClientConfig>,
    /// Per host: when its certificate was made, and the TLS server set-up with it.
    server_tls: Mutex<HashMap<String, (Instant, Arc<ServerConfig>)>>,
    /// Subscription logins whose tokens the proxy keeps out of the sandbox
    /// (see `oauth.rs`), and where the host keeps them.
    logins: Vec<OAuthLogin>,
    vault: Option<Arc<dyn LoginVault>>,
}

impl Broker {
    pub(crate) fn new(
        mut credentials: Vec<Credential>,
        ca: Arc<SessionCa>,
        upstream_roots: &[Vec<u8>],
        logins: Vec<OAuthLogin>,
        vault: Option<Arc<dyn LoginVault>>,
    ) -> Result<Self, ProxyError> {
        let mut roots = RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for error in &native.errors {
            tracing::warn!(%error, "cannot read some of the system's CA certificates");
        }
        let (added, ignored) = roots.add_parsable_certificates(native.certs);
        tracing::debug!(
            added,
            ignored,
            "system CA certificates for brokered upstreams"
        );
        for (index, bundle) in upstream_roots.iter().enumerate() {
            let bad = |why: String| ProxyError::BadUpstreamRoots { index, why };
            let mut found = 0;
            for cert in CertificateDer::pem_slice_iter(bundle) {
                let cert = cert.map_err(|error| bad(error.to_string()))?;
                roots.add(cert).map_err(|error| bad(error.to_string()))?;
                found += 1;
            }
            if found == 0 {
                return Err(bad("no PEM certificate in it".into()));
            }
        }
        let mut upstream_tls = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(BrokerError::from)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        upstream_tls.alpn_protocols = vec![HTTP11.to_vec()];
        // Only the credentials given have refresh commands; a login's
        // access token (added below, or when one is made) is refreshed
        // through its token endpoint instead.
        let refreshes = credentials.iter().map(|_| Mutex::default()).collect();
        if let Some(vault) = &vault {
            for login in &logins {
                match vault.load(&login.name) {
                    Ok(Some(tokens)) => credentials.push(login.credential(&tokens)),
                    Ok(None) => {}
                    Err(why) => tracing::warn!(
                        login = %login.name,
                        "the kept login cannot be read; the session starts without it: {why}"
                    ),
                }
            }
        }
        Ok(Self {
            refreshes,
            credentials: RwLock::new(credentials.into()),
            ca,
            upstream_tls: Arc::new(upstream_tls),
            server_tls: Mutex::new(HashMap::new()),
            logins,
            vault,
        })
    }

    /// The login whose token endpoint is `host` and `path`, if any.
    pub(crate) fn token_endpoint(&self, host: &str, path: &str) -> Option<&OAuthLogin> {
        self.logins
            .iter()
            .find(|login| login.token_host == host && login.token_path == path)
    }

    pub(crate) fn vault(&self) -> Option<&Arc<dyn LoginVault>> {
        self.vault.as_ref()
    }

    /// The access token this proxy injects for `login` now, if it has one.
    pub(crate) fn login_value(&self, login: &OAuthLogin) -> Option<String> {
        let name = login.credential_name();
        self.credentials()
            .iter()
            .find(|credential| credential.name == name)
            .map(|credential| credential.value.clone())
    }

    /// Injects `tokens`' access token for `login` from now on.
    pub(crate) fn set_login(&self, login: &OAuthLogin, tokens: &LoginTokens) {
        let credential = login.credential(tokens);
        let mut slot = self.credentials_mut();
        let mut credentials = slot.to_vec();
        match credentials
            .iter_mut()
            .find(|other| other.name == credential.name)
        {
            Some(other) => *other = credential,
            None => credentials.push(credential),
        }
        *slot = credentials.into();
    }

    /// Is TLS to this (normalized) host terminated, because a credential is bound to it?
    pub(crate) fn terminates(&self, host: &str) -> bool {
        self.credentials()
            .iter()
            .any(|credential| bound_to_host(credential, host))
            || self.logins.iter().any(|login| {
                login.token_host == host
                    || login
                        .hosts
                        .iter()
                        .any(|pattern| pattern_matches(pattern, host))
            })
    }

    pub(crate) fn upstream_tls(&self) -> Arc<ClientConfig> {
        self.upstream_tls.clone()
    }

    /// The TLS server set-up presenting a certificate for `host`, signed by
    /// the session CA.
    pub(crate) fn server_tls(&self, host: &str) -> Result<Arc<ServerConfig>, BrokerError> {
        let cached = |cache: &HashMap<String, (Instant, Arc<ServerConfig>)>| {
            cache
                .get(host)
                .filter(|(made, _)| made.elapsed() < LEAF_REFRESH)
                .map(|(_, config)| config.clone())
        };
        if let Some(config) = cached(&self.lock_cache()) {
            return Ok(config);
        }
        // Made outside the lock: two connections racing for a new host make
        // two certificates, and the second one is kept.
        let (cert, key) = self.ca.leaf(host)?;
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)?;
        // hyper serves HTTP/1.1 only on the client side.
        config.alpn_protocols = vec![HTTP11.to_vec()];
        let config = Arc::new(config);
        self.lock_cache()
            .insert(host.to_string(), (Instant::now(), config.clone()));
        Ok(config)
    }

    fn lock_cache(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, Arc<ServerConfig>)>> {
        match self.server_tls.lock() {
            Ok(cache) => cache,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// The list to replace (a refresh, a login): writers take turns.
    fn credentials_mut(&self) -> std::sync::RwLockWriteGuard<'_, Arc<[Credential]>> {
        match self.credentials.write() {
            Ok(slot) => slot,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// The credentials with their current values.
    fn credentials(&self) -> Arc<[Credential]> {
        match self.credentials.read() {
            Ok(credentials) => credentials.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// See [`swap`].
    pub(crate) fn swap(&self, host: &str, parts: &mut Parts) -> Result<Injected, NotBound> {
        swap(&self.credentials(), host, parts)
    }

    /// See [`check_plain`].
    pub(crate) fn check_plain(&self, host: &str, parts: &Parts) -> Result<(), NotBound> {
        check_plain(&self.credentials(), host, parts)
    }

    /// The server answered 401 to a request `injected` went into: a refresh
    /// of each of those credentials that has a command, unless one is
    /// running or started less than [`REFRESH_INTERVAL`] ago. Returns what
    /// to log with the request, and the refreshes to run (in the
    /// background: see [`Broker::refresh`]).
    pub(crate) fn unauthorized(&self, injected: &Injected) -> (String, Vec<Refresh>) {
        let credentials = self.credentials();
        let mut notes = Vec::new();
        let mut due = Vec::new();
        for &index in &injected.refreshable {
            let (Some(credential), Some(state)) =
                (credentials.get(index), self.refreshes.get(index))
            else {
                continue;
            };
            let Some(argv) = &credential.refresh else {
                continue;
            };
            if lock(state).claim(Instant::now()) {
                notes.push(format!(
                    "refresh of credential {} started after 401",
                    credential.name
                ));
                due.push(Refresh {
                    index,
                    name: credential.name.clone(),
                    argv: argv.clone(),
                });
            } else {
                notes.push(format!(
                    "credential {} not refreshed after 401: a refresh is running or ran less than {} s ago",
                    credential.name,
                    REFRESH_INTERVAL.as_secs()
                ));
            }
        }
        (notes.join("; "), due)
    }

    /// Run a refresh [`Broker::unauthorized`] claimed, and on success put
    /// its value in place. The error says why, never with the value or the
    /// command's output (at most the last line of its stderr).
    pub(crate) async fn refresh(&self, refresh: Refresh, timeout: Duration) -> Result<(), String> {
        let result = match run_refresh(&refresh.argv, timeout).await {
            Ok(value) => self.replace_value(refresh.index, value),
            Err(why) => Err(why),
        };
        if let Some(state) = self.refreshes.get(refresh.index) {
            lock(state).running = false;
        }
        result
    }

    fn replace_value(&self, index: usize, value: String) -> Result<(), String> {
        let mut slot = self.credentials_mut();
        if let Some(other) = slot
            .iter()
            .find(|other| value.contains(other.placeholder.as_str()))
        {
            return Err(format!(
                "the new value contains the placeholder of {:?}",
                other.name
            ));
        }
        let mut credentials = slot.to_vec();
        let Some(credential) = credentials.get_mut(index) else {
            return Err("no such credential".into());
        };
        credential.value = value;
        *slot = credentials.into();
        Ok(())
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// A credential is refreshed at most once in this long.
pub(crate) const REFRESH_INTERVAL: Duration = Duration::from_secs(60);
/// A refresh command still running after this long is killed.
pub(crate) const REFRESH_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest value a refresh command may print.
const MAX_REFRESHED_VALUE: usize = 64 * 1024;

/// One credential's refreshes.
#[derive(Debug, Default)]
struct Refreshes {
    /// When the last one started.
    last: Option<Instant>,
    running: bool,
}

impl Refreshes {
    /// May a refresh start `now`? If so, it is now running.
    fn claim(&mut self, now: Instant) -> bool {
        let recent = self
            .last
            .is_some_and(|last| now.saturating_duration_since(last) < REFRESH_INTERVAL);
        if self.running || recent {
            return false;
        }
        self.last = Some(now);
        self.running = true;
        true
    }
}

/// A refresh [`Broker::unauthorized`] claimed, to run.
pub(crate) struct Refresh {
    index: usize,
    pub(crate) name: String,
    argv: Vec<String>,
}

/// Run a refresh command (stdin `/dev/null`, its own process group, all of
/// it killed after `timeout`) and take its output as the new value.
async fn run_refresh(argv: &[String], timeout: Duration) -> Result<String, String> {
    use tokio::io::AsyncReadExt as _;

    let Some((program, args)) = argv.split_first() else {
        return Err("its refresh command is empty".into());
    };
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: a timeout ends what it started too.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| format!("cannot run its refresh command: {error}"))?;
    let group = child.id().and_then(|pid| i32::try_from(pid).ok());
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let work = async {
        let out = async {
            let mut out = Vec::new();
            if let Some(stdout) = stdout.as_mut() {
                // One byte more than a value and a CRLF: too long is then seen.
                let _ = stdout
                    .take(MAX_REFRESHED_VALUE as u64 + 3)
                    .read_to_end(&mut out)
                    .await;
                // The rest, so that the command is not stopped by a full pipe.
                let _ = tokio::io::copy(stdout, &mut tokio::io::sink()).await;
            }
            out
        };
        let err = async {
            let mut tail = Vec::new();
            let mut chunk = [0u8; 4096];
            if let Some(stderr) = stderr.as_mut() {
                while let Ok(read) = stderr.read(&mut chunk).await {
                    if read == 0 {
                        break;
                    }
                    tail.extend_from_slice(&chunk[..read]);
                    if tail.len() > 8192 {
                        tail.drain(..tail.len() - 4096);
                    }
                }
            }
            tail
        };
        let (out, tail) = tokio::join!(out, err);
        (out, tail, child.wait().await)
    };
    let Ok((out, tail, status)) = tokio::time::timeout(timeout, work).await else {
        if let Some(group) = group {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(group),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = child.wait().await;
        return Err(format!(
            "its refresh command did not finish within {} s",
            timeout.as_secs_f64()
        ));
    };
    let status = status.map_err(|error| format!("cannot wait for its refresh command: {error}"))?;
    if !status.success() {
        let how = match status.code() {
            Some(code) => format!("exited with status {code}"),
            None => "was killed by a signal".into(),
        };
        let last = last_line(&tail);
        return Err(if last.is_empty() {
            format!("its refresh command {how}")
        } else {
            format!("its refresh command {how}: {last}")
        });
    }
    refreshed_value(out)
}

/// The value in a refresh command's output: one trailing line break (LF or
/// CRLF) removed, then checked like a value (see [`validate`]). The error
/// never shows the output.
fn refreshed_value(mut out: Vec<u8>) -> Result<String, String> {
    if out.last() == Some(&b'\n') {
        out.pop();
        if out.last() == Some(&b'\r') {
            out.pop();
        }
    }
    if out.len() > MAX_REFRESHED_VALUE {
        return Err(format!(
            "the output of its refresh command is longer than {MAX_REFRESHED_VALUE} bytes"
        ));
    }
    let unusable = |why: &str| format!("the output of its refresh command {why}");
    let value = String::from_utf8(out).map_err(|_| unusable("is not UTF-8 text"))?;
    if value.is_empty() {
        return Err(unusable("is empty"));
    }
    if value.contains(['\r', '\n', '\0']) {
        return Err(unusable("contains a line break or a NUL byte"));
    }
    Ok(value)
}

/// The last non-empty line of a command's stderr, escaped and shortened:
/// what may be logged of it.
fn last_line(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let line = text
        .lines()
        .map(str::trim)
        .rfind(|line| !line.is_empty())
        .unwrap_or("");
    let mut shown: String = line
        .chars()
        .take(200)
        .flat_map(char::escape_debug)
        .collect();
    if line.chars().count() > 200 {
        shown.push('…');
    }
    shown
}

/// Swap placeholders for values in a request to `host` (normalized) over a
/// terminated TLS connection. `Ok` lists the credentials injected (none: the
/// request is unchanged); `Err` refuses the whole request.
fn swap(credentials: &[Credential], host: &str, parts: &mut Parts) -> Result<Injected, NotBound> {
    let found = occurring(credentials, parts);
    for (credential, spots) in &found {
        check_binding(credential, spots, host, &parts.method, parts.uri.path())?;
    }
    let mut injected = Injected::default();
    for (credential, _) in found {
        inject(credential, parts, &mut injected.echoes)?;
        injected.names.push(credential.name.clone());
        if credential.refresh.is_some()
            && let Some(index) = credentials
                .iter()
                .position(|other| std::ptr::eq(other, credential))
        {
            injected.refreshable.push(index);
        }
    }
    Ok(injected)
}

/// A plain-HTTP request may carry no placeholder at all: credentials are only
/// sent over TLS the proxy verified.
fn check_plain(credentials: &[Credential], host: &str, parts: &Parts) -> Result<(), NotBound> {
    let Some((credential, spots)) = occurring(credentials, parts).into_iter().next() else {
        return Ok(());
    };
    let why = if bound_to_host(credential, host) {
        "it is only sent over HTTPS, and this is a plain http:// request".to_string()
    } else {
        let first = spots.first().map(Spot::to_string).unwrap_or_default();
        format!("it appeared in {first}, and it is not bound to {host}")
    };
    Err(NotBound {
        credential: credential.name.clone(),
        why,
    })
}

/// Every credential whose placeholder occurs in the request head, with where
/// it occurs.
fn occurring<'a>(credentials: &'a [Credential], parts: &Parts) -> Vec<(&'a Credential, Vec<Spot>)> {
    credentials
        .iter()
        .filter_map(|credential| {
            let found = spots(credential.placeholder.as_bytes(), parts);
            (!found.is_empty()).then_some((credential, found))
        })
        .collect()
}

/// The credentials injected into one request.
#[derive(Default)]
pub(crate) struct Injected {
    names: Vec<String>,
    /// What was written into the request, and what the client had there
    /// instead: the value itself, and each encoded form of it (a header
    /// value, a Basic token, a query value) that a server could echo.
    echoes: Vec<(Vec<u8>, Vec<u8>)>,
    /// Which of them (indices in the broker's list) have a refresh command.
    refreshable: Vec<usize>,
}

impl Injected {
    /// For the log: the names, comma-separated, or `None`.
    pub(crate) fn names(&self) -> Option<String> {
        (!self.names.is_empty()).then(|| self.names.join(","))
    }

    /// What hides the injected values again in the response.
    pub(crate) fn scrubber(&self) -> Option<Scrubber> {
        Scrubber::new(self.echoes.clone())
    }
}

/// Why a request carrying a placeholder is refused. Its text is shown to the
/// agent and logged: it names the credential and never holds its value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("credential {credential}: {why}")]
pub(crate) struct NotBound {
    pub(crate) credential: String,
    pub(crate) why: String,
}

fn bound_to_host(credential: &Credential, host: &str) -> bool {
    credential
        .hosts
        .iter()
        .any(|pattern| pattern_matches(pattern, host))
}

/// Where in a request head a placeholder was seen.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Spot {
    /// As is, in this header's value.
    Header(HeaderName),
    /// In the decoded credentials of `Authorization: Basic`.
    Basic,
    /// In the (decoded) value of this query parameter.
    Query(String),
    /// Somewhere no [`Place`] can name (the URL path, a percent-encoded header, …).
    Unbindable(String),
}

impl fmt::Display for Spot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Spot::Header(name) => write!(f, "header {name}"),
            Spot::Basic => f.write_str("Authorization: Basic"),
            Spot::Query(param) => write!(f, "query parameter {param}"),
            Spot::Unbindable(what) => f.write_str(what),
        }
    }
}

impl Spot {
    fn bound_by(&self, place: &Place) -> bool {
        match (self, place) {
            (Spot::Header(seen), Place::Header { name }) => {
                seen.as_str().eq_ignore_ascii_case(name.trim())
            }
            (Spot::Basic, Place::Basic) => true,
            (Spot::Query(seen), Place::Query { param }) => seen == param,
            _ => false,
        }
    }
}

/// Every spot of `placeholder` in the request head.
fn spots(placeholder: &[u8], parts: &Parts) -> Vec<Spot> {
    let mut found = Vec::new();
    for (name, value) in &parts.headers {
        let raw = value.as_bytes();
        if contains(raw, placeholder) {
            found.push(Spot::Header(name.clone()));
        }
        if hidden_by_percent_encoding(raw, placeholder) {
            found.push(Spot::Unbindable(format!("header {name}, percent-encoded")));
        }
        if name == header::AUTHORIZATION
            && basic_credentials(raw).is_some_and(|decoded| contains(&decoded, placeholder))
        {
            found.push(Spot::Basic);
        }
        if contains(name.as_str().as_bytes(), &placeholder.to_ascii_lowercase()) {
            found.push(Spot::Unbindable("a header name".into()));
        }
    }
    let path = parts.uri.path().as_bytes();
    if contains(path, placeholder)
        || contains(&percent_decode(path).collect::<Vec<u8>>(), placeholder)
    {
        found.push(Spot::Unbindable("the URL path".into()));
    }
    let query = parts.uri.query().unwrap_or("");
    let mut in_query = false;
    for (name, value) in query_pairs(query) {
        let decoded_name: Vec<u8> = percent_decode(name.as_bytes()).collect();
        if contains(name.as_bytes(), placeholder) || contains(&decoded_name, placeholder) {
            found.push(Spot::Unbindable("a query parameter name".into()));
            in_query = true;
        }
        if contains(value.as_bytes(), placeholder)
            || contains(
                &percent_decode(value.as_bytes()).collect::<Vec<u8>>(),
                placeholder,
            )
        {
            found.push(Spot::Query(
                String::from_utf8_lossy(&decoded_name).into_owned(),
            ));
            in_query = true;
        }
    }
    // Whatever the split above missed (a placeholder spanning `&` or `=`).
    if !in_query
        && (contains(query.as_bytes(), placeholder)
            || contains(
                &percent_decode(query.as_bytes()).collect::<Vec<u8>>(),
                placeholder,
            ))
    {
        found.push(Spot::Unbindable("the query string".into()));
    }
    // The request target in absolute form (`https://host/…`) has an authority too.
    if parts
        .uri
        .authority()
        .is_some_and(|authority| contains(authority.as_str().as_bytes(), placeholder))
    {
        found.push(Spot::Unbindable("the request target".into()));
    }
    found
}

fn check_binding(
    credential: &Credential,
    spots: &[Spot],
    host: &str,
    method: &Method,
    path: &str,
) -> Result<(), NotBound> {
    let refuse = |why: String| NotBound {
        credential: credential.name.clone(),
        why,
    };
    if !bound_to_host(credential, host) {
        return Err(refuse(format!(
            "it is bound to {}, not to {host}",
            credential.hosts.join(", ")
        )));
    }
    if let Some(spot) = spots
        .iter()
        .find(|spot| !credential.places.iter().any(|place| spot.bound_by(place)))
    {
        let places: Vec<String> = credential.places.iter().map(Place::to_string).collect();
        return Err(refuse(format!(
            "it appeared in {spot}, but it may only be sent in {}",
            places.join(", ")
        )));
    }
    if !credential.methods.is_empty()
        && !credential
            .methods
            .iter()
            .any(|allowed| allowed.trim().eq_ignore_ascii_case(method.as_str()))
    {
        return Err(refuse(format!(
            "method {method} is not one of {}",
            credential.methods.join(", ")
        )));
    }
    if !credential.paths.is_empty() {
        let decoded = percent_decode(path.as_bytes()).decode_utf8_lossy();
        // Servers resolve `..`; a prefix check on an unresolved path would be
        // escaped by `/allowed/../elsewhere`. Some treat `\` as `/` too.
        if decoded
            .split(['/', '\\'])
            .any(|segment| segment == "." || segment == "..")
        {
            return Err(refuse(format!("path {path} has . or .. segments")));
        }
        let under = credential.paths.iter().any(|prefix| {
            let prefix = prefix.trim();
            decoded.starts_with(prefix.strip_suffix('*').unwrap_or(prefix))
        });
        if !under {
            return Err(refuse(format!(
                "path {path} is not under {}",
                credential.paths.join(", ")
            )));
        }
    }
    Ok(())
}

/// Replace the placeholder by the value in every bound place; add to
/// `echoes` each (written, what the client had) pair.
fn inject(
    credential: &Credential,
    parts: &mut Parts,
    echoes: &mut Vec<(Vec<u8>, Vec<u8>)>,
) -> Result<(), NotBound> {
    let placeholder = credential.placeholder.as_bytes();
    let value = credential.value.as_bytes();
    echoes.push((value.to_vec(), placeholder.to_vec()));
    let unusable = |place: &str| NotBound {
        credential: credential.name.clone(),
        why: format!("its value cannot be written into {place}"),
    };
    let header_places: Vec<&str> = credential
        .places
        .iter()
        .filter_map(|place| match place {
            Place::Header { name } => Some(name.trim()),
            _ => None,
        })
        .collect();
    let basic = credential.places.contains(&Place::Basic);
    for (name, slot) in parts.headers.iter_mut() {
        let raw = slot.as_bytes();
        let mut new = None;
        if header_places
            .iter()
            .any(|bound| name.as_str().eq_ignore_ascii_case(bound))
            && contains(raw, placeholder)
        {
            new = Some(replace_all(raw, placeholder, value));
        }
        if basic
            && name == header::AUTHORIZATION
            && let Some(decoded) = basic_credentials(new.as_deref().unwrap_or(raw))
            && contains(&decoded, placeholder)
        {
            // `Basic ` as the client spelled it (basic_credentials checked it is there).
            let (scheme, token) = raw.trim_ascii_start().split_at(6);
            let new_token = BASE64.encode(replace_all(&decoded, placeholder, value));
            echoes.push((new_token.as_bytes().to_vec(), token.trim_ascii().to_vec()));
            let mut text = scheme.to_vec();
            text.extend_from_slice(new_token.as_bytes());
            new = Some(text);
        }
        if let Some(new) = new {
            echoes.push((new.clone(), raw.to_vec()));
            let mut header_value =
                HeaderValue::from_bytes(&new).map_err(|_| unusable(&format!("header {name}")))?;
            // Keeps http's Debug (and anything that honours it) from showing it.
            header_value.set_sensitive(true);
            *slot = header_value;
        }
    }
    let params: Vec<&str> = credential
        .places
        .iter()
        .filter_map(|place| match place {
            Place::Query { param } => Some(param.as_str()),
            _ => None,
        })
        .collect();
    if let Some(query) = parts.uri.query()
        && !params.is_empty()
    {
        let rewritten = rewrite_query(query, &params, &credential.placeholder, &credential.value);
        if rewritten != query {
            let encoded_value = utf8_percent_encode(&credential.value, QUERY_VALUE).to_string();
            echoes.push((encoded_value.into_bytes(), placeholder.to_vec()));
            let path_and_query = format!("{}?{rewritten}", parts.uri.path());
            let mut uri_parts = parts.uri.clone().into_parts();
            uri_parts.path_and_query = Some(
                PathAndQuery::from_maybe_shared(path_and_query)
                    .map_err(|_| unusable("the query"))?,
            );
            parts.uri = hyper::Uri::from_parts(uri_parts).map_err(|_| unusable("the query"))?;
        }
    }
    Ok(())
}

/// Characters a query value needs no escape for (RFC 3986 unreserved).
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The query with the placeholder replaced in the values of `params`. Only
/// the placeholder's own characters change: the rest stays encoded exactly
/// as the client had it, and the value is percent-encoded.
fn rewrite_query(query: &str, params: &[&str], placeholder: &str, value: &str) -> String {
    let encoded_value = utf8_percent_encode(value, QUERY_VALUE).to_string();
    let pieces: Vec<String> = query
        .split('&')
        .map(|piece| {
            let Some((name, raw_value)) = piece.split_once('=') else {
                return piece.to_string();
            };
            let decoded_name =
                String::from_utf8_lossy(&percent_decode(name.as_bytes()).collect::<Vec<u8>>())
                    .into_owned();
            if !params.contains(&decoded_name.as_str()) {
                return piece.to_string();
            }
            let spans = decode_with_spans(raw_value);
            let decoded: Vec<u8> = spans.iter().map(|(byte, _)| *byte).collect();
            let mut out = String::with_capacity(piece.len());
            out.push_str(name);
            out.push('=');
            let mut raw_at = 0;
            let mut at = 0;
            while let Some(offset) = find(&decoded[at..], placeholder.as_bytes()) {
                let first = &spans[at + offset].1;
                let last = &spans[at + offset + placeholder.len() - 1].1;
                out.push_str(&raw_value[raw_at..first.start]);
                out.push_str(&encoded_value);
                raw_at = last.end;
                at += offset + placeholder.len();
            }
            out.push_str(&raw_value[raw_at..]);
            out
        })
        .collect();
    pieces.join("&")
}

/// Each percent-decoded byte of `raw`, with the range of `raw` it came from.
fn decode_with_spans(raw: &str) -> Vec<(u8, Range<usize>)> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        let hex = bytes
            .get(at + 1..at + 3)
            .and_then(|pair| std::str::from_utf8(pair).ok())
            .and_then(|pair| u8::from_str_radix(pair, 16).ok());
        match (bytes[at], hex) {
            (b'%', Some(byte)) => {
                out.push((byte, at..at + 3));
                at += 3;
            }
            (byte, _) => {
                out.push((byte, at..at + 1));
                at += 1;
            }
        }
    }
    out
}

/// `name=value` pairs of a query, still encoded (`a&b=1` gives `("a", "")`, `("b", "1")`).
fn query_pairs(query: &str) -> impl Iterator<Item = (&str, &str)> {
    query
        .split('&')
        .filter(|piece| !piece.is_empty())
        .map(|piece| piece.split_once('=').unwrap_or((piece, "")))
}

/// The decoded `user:password` of an `Authorization: Basic …` value.
fn basic_credentials(value: &[u8]) -> Option<Vec<u8>> {
    let value = value.trim_ascii_start();
    let scheme = value.get(..6)?;
    if !scheme.eq_ignore_ascii_case(b"basic ") {
        return None;
    }
    BASE64.decode(value[6..].trim_ascii()).ok()
}

/// Does the placeholder occur once the value's literal occurrences are set
/// aside and the rest is percent-decoded (`%41BC` for `ABC`)?
fn hidden_by_percent_encoding(raw: &[u8], placeholder: &[u8]) -> bool {
    // NUL is never part of a placeholder (see `validate`), so it separates
    // the pieces around a literal occurrence without joining them.
    let rest = replace_all(raw, placeholder, b"\0");
    contains(&percent_decode(&rest).collect::<Vec<u8>>(), placeholder)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return None;
    }
    memmem::find(haystack, needle)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    find(haystack, needle).is_some()
}

pub(crate) fn replace_all(haystack: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut rest = haystack;
    while let Some(at) = find(rest, needle) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(with);
        rest = &rest[at + needle.len()..];
    }
    out.extend_from_slice(rest);
    out
}

/// Puts placeholders back where an upstream echoes an injected value (an
/// error message quoting the key, a debugging endpoint), in response headers
/// and a streamed response body. Compressed bodies are not looked into.
///
/// In a body, the earliest occurrence of any value is replaced, and of the
/// values occurring there the longest (a whole echoed header value before the
/// value in it); then the search goes on after it. The result does not depend
/// on how the body is cut into chunks. A chunk is searched where it is (a SIMD
/// search per value) and passed on as it came, without a copy, when nothing
/// in it is replaced. Only its end that could be the start of a value
/// continuing in the next chunk is held back: at most the longest value less
/// one byte, and nothing when its last bytes start no value.
pub(crate) struct Scrubber {
    /// The longest value first; equally long ones in a fixed order.
    needles: Vec<Needle>,
    longest: usize,
    /// Which bytes some value starts with.
    starts: [bool; 256],
    /// The end of the body so far that may be the start of a value.
    carry: Vec<u8>,
    /// For `scan`, kept to reuse their memory: where each needle occurs
    /// next, and what was found (where, which needle).
    next: Vec<usize>,
    found: Vec<(usize, usize)>,
}

/// A value to hide, and what replaces it.
struct Needle {
    finder: memmem::Finder<'static>,
    placeholder: Vec<u8>,
}

/// "No further occurrence", for [`Scrubber::scan`].
const NOWHERE: usize = usize::MAX;

impl Needle {
    fn value(&self) -> &[u8] {
        self.finder.needle()
    }

    fn len(&self) -> usize {
        self.finder.needle().len()
    }

    /// Where the value next occurs (whole) in `buf` from `from`, or [`NOWHERE`].
    fn find(&self, buf: &[u8], from: usize) -> usize {
        self.finder
            .find(&buf[from..])
            .map_or(NOWHERE, |offset| from + offset)
    }
}

impl Scrubber {
    fn new(mut pairs: Vec<(Vec<u8>, Vec<u8>)>) -> Option<Self> {
        // The longest first: a whole echoed header value before the value in it.
        pairs.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.cmp(b)));
        pairs.dedup();
        pairs.retain(|(written, had)| written != had && !written.is_empty());
        let longest = pairs.iter().map(|(value, _)| value.len()).max()?;
        let mut starts = [false; 256];
        for (value, _) in &pairs {
            starts[usize::from(value[0])] = true;
        }
        let needles = pairs
            .into_iter()
            .map(|(value, placeholder)| Needle {
                finder: memmem::Finder::new(&value).into_owned(),
                placeholder,
            })
            .collect();
        Some(Self {
            needles,
            longest,
            starts,
            carry: Vec::new(),
            next: Vec::new(),
            found: Vec::new(),
        })
    }

    /// Replacing keeps the body's length (placeholders of the value's shape).
    pub(crate) fn keeps_length(&self) -> bool {
        self.needles
            .iter()
            .all(|needle| needle.len() == needle.placeholder.len())
    }

    pub(crate) fn headers(&self, headers: &mut HeaderMap) {
        for slot in headers.values_mut() {
            let mut bytes = slot.as_bytes().to_vec();
            let mut changed = false;
            for needle in &self.needles {
                if needle.finder.find(&bytes).is_some() {
                    bytes = replace_all(&bytes, needle.value(), &needle.placeholder);
                    changed = true;
                }
            }
            if changed {
                // A placeholder is always a valid header value where the
                // value was; fall back to an empty value rather than the secret.
                *slot = HeaderValue::from_bytes(&bytes).unwrap_or(HeaderValue::from_static(""));
            }
        }
    }

    /// The next piece of the body, scrubbed, onto `out`: none, one or two
    /// pieces (the bytes held back last time, then this chunk, sliced). The
    /// end of `data` may be held back until the next call (or
    /// [`Scrubber::finish`]).
    pub(crate) fn push(&mut self, data: Bytes, out: &mut VecDeque<Bytes>) {
        if data.is_empty() {
            return;
        }
        let reach = self.longest - 1;
        let mut from = 0;
        if !self.carry.is_empty() {
            // The held-back bytes, and as much of `data` as a value starting
            // in them can cover: that is enough to decide each of them, and
            // only this (at most twice the longest value) is copied.
            let held = self.carry.len();
            let mut joint = std::mem::take(&mut self.carry);
            joint.extend_from_slice(&data[..data.len().min(reach)]);
            let joint = Bytes::from(joint);
            if data.len() <= reach {
                // All of `data` is in `joint`.
                let end = self.scan(&joint, 0, joint.len(), false);
                self.emit(&joint, 0, end, out);
                self.carry.extend_from_slice(&joint[end..]);
                return;
            }
            let end = self.scan(&joint, 0, held, false);
            self.emit(&joint, 0, end, out);
            // A value found in the held-back bytes may end inside `data`.
            from = end - held;
        }
        let end = self.scan(&data, from, data.len(), false);
        self.emit(&data, from, end, out);
        self.carry.extend_from_slice(&data[end..]);
    }

    /// What was held back, scrubbed, onto `out`.
    pub(crate) fn finish(&mut self, out: &mut VecDeque<Bytes>) {
        let rest = Bytes::from(std::mem::take(&mut self.carry));
        let end = self.scan(&rest, 0, rest.len(), true);
        self.emit(&rest, 0, end, out);
    }

    /// Find the values to replace in `buf` from `from`, deciding positions
    /// below `limit` only, into `self.found`. Unless `last` (nothing follows
    /// `buf`), a position from which the rest of `buf` is the start of a
    /// value (that may continue after `buf`) is not decided, nor any after
    /// it. Returns where the decided part of `buf` ends (a value found may
    /// end past `limit`).
    fn scan(&mut self, buf: &[u8], from: usize, limit: usize, last: bool) -> usize {
        let mut next = std::mem::take(&mut self.next);
        let mut found = std::mem::take(&mut self.found);
        next.clear();
        found.clear();
        next.extend(self.needles.iter().map(|needle| needle.find(buf, from)));
        let undecided = |at: usize| {
            if last {
                buf.len()
            } else {
                self.held_from(buf, at)
            }
            .min(limit)
        };
        let mut at = from;
        let mut stop = undecided(at);
        loop {
            // The earliest occurrence from `at`; the longest value of those
            // there (the needles are in that order).
            let (mut best, mut which) = (NOWHERE, 0);
            for (index, needle) in self.needles.iter().enumerate() {
                if next[index] < at {
                    next[index] = needle.find(buf, at);
                }
                if next[index] < best {
                    (best, which) = (next[index], index);
                }
            }
            if best >= stop {
                break;
            }
            found.push((best, which));
            at = best + self.needles[which].len();
            if at > stop {
                stop = undecided(at);
            }
        }
        self.next = next;
        self.found = found;
        at.max(stop)
    }

    /// The first position from `at` where the rest of `buf` is a proper
    /// prefix of a value (so whether the value is there depends on what
    /// comes next), or the end of `buf`. Every value starting before the
    /// last `longest − 1` bytes is whole in `buf`: only those are looked at.
    fn held_from(&self, buf: &[u8], at: usize) -> usize {
        let first = at.max(buf.len().saturating_sub(self.longest - 1));
        (first..buf.len())
            .find(|&position| {
                let rest = &buf[position..];
                self.starts[usize::from(rest[0])]
                    && self
                        .needles
                        .iter()
                        .any(|needle| needle.len() > rest.len() && needle.value().starts_with(rest))
            })
            .unwrap_or(buf.len())
    }

    /// `buf[from..end]` with what `scan` found replaced, onto `out`: a slice
    /// of `buf` (no copy) when nothing was.
    fn emit(&self, buf: &Bytes, from: usize, end: usize, out: &mut VecDeque<Bytes>) {
        if self.found.is_empty() {
            if end > from {
                out.push_back(buf.slice(from..end));
            }
            return;
        }
        let mut text = Vec::with_capacity(end - from + self.found.len() * self.longest);
        let mut at = from;
        for &(position, which) in &self.found {
            let needle = &self.needles[which];
            text.extend_from_slice(&buf[at..position]);
            text.extend_from_slice(&needle.placeholder);
            at = position + needle.len();
        }
        text.extend_from_slice(&buf[at..end]);
        if !text.is_empty() {
            out.push_back(Bytes::from(text));
        }
    }
}

#[cfg(test)]
mod tests;
