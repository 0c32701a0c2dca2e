//! A stand-in OCI registry on 127.0.0.1, in plain threads: `/v2/`,
//! manifests and blobs behind a bearer token that only its own token
//! endpoint (named in `WWW-Authenticate`, as ghcr.io does) hands out.

#![allow(dead_code)] // each test file uses a different part

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use sha2::{Digest, Sha256};

pub const TOKEN: &str = "stand-in-token-1234";
pub const SERVICE: &str = "stand-in-registry";
pub const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const FEATURE_LAYER: &str = "application/vnd.devcontainers.layer.v1+tar";

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// What one request looked like, for asserting on the auth exchange.
#[derive(Debug, Clone)]
pub struct Logged {
    pub path: String,
    pub authorization: Option<String>,
    pub status: u16,
}

#[derive(Default)]
struct State {
    repository: String,
    /// Tag or digest -> manifest bytes.
    manifests: HashMap<String, Vec<u8>>,
    blobs: HashMap<String, Vec<u8>>,
    /// Send bodies without Content-Length (ended by closing), to exercise
    /// the streaming cap.
    no_content_length: bool,
    log: Vec<Logged>,
}

pub struct Registry {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Registry {
    /// A plain-HTTP registry.
    pub fn start(repository: &str) -> Registry {
        Registry::start_with(repository, None)
    }

    /// An HTTPS registry whose certificate (for 127.0.0.1) a fresh CA
    /// signed; returns the CA's PEM, which no system trusts.
    pub fn start_tls(repository: &str) -> (Registry, String) {
        let (config, ca_pem) = tls_server_config();
        (Registry::start_with(repository, Some(config)), ca_pem)
    }

    fn start_with(repository: &str, tls: Option<Arc<rustls::ServerConfig>>) -> Registry {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(Mutex::new(State {
            repository: repository.to_string(),
            ..State::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let state = Arc::clone(&state);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                    let state = Arc::clone(&state);
                    let tls = tls.clone();
                    std::thread::spawn(move || match tls {
                        None => serve(&mut { stream }, &format!("http://{addr}"), &state),
                        Some(config) => {
                            let Ok(connection) = rustls::ServerConnection::new(config) else {
                                return;
                            };
                            let mut stream = rustls::StreamOwned::new(connection, stream);
                            serve(&mut stream, &format!("https://{addr}"), &state);
                            stream.conn.send_close_notify();
                            let _ = stream.flush();
                        }
                    });
                }
            })
        };
        Registry {
            addr,
            state,
            stop,
            thread: Some(thread),
        }
    }

    /// `127.0.0.1:<port>`, as a reference and `plain_http_hosts` write it.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    pub fn put_manifest(&self, reference: &str, bytes: Vec<u8>) {
        self.lock().manifests.insert(reference.to_string(), bytes);
    }

    pub fn put_blob(&self, digest: &str, bytes: Vec<u8>) {
        self.lock().blobs.insert(digest.to_string(), bytes);
    }

    pub fn send_without_content_length(&self) {
        self.lock().no_content_length = true;
    }

    pub fn log(&self) -> Vec<Logged> {
        self.lock().log.clone()
    }

    /// Publishes `layer` as a feature under `tag`, the way
    /// `devcontainer features publish` lays it out; returns the manifest's
    /// digest.
    pub fn publish(&self, tag: &str, layer: &[u8], layer_type: &str) -> String {
        let layer_digest = sha256(layer);
        let manifest = manifest_for(&layer_digest, layer.len(), layer_type);
        let digest = sha256(&manifest);
        self.put_blob(&layer_digest, layer.to_vec());
        self.put_manifest(tag, manifest.clone());
        self.put_manifest(&digest, manifest);
        digest
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("registry state")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

pub fn manifest_for(layer_digest: &str, layer_size: usize, layer_type: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": {
            "mediaType": "application/vnd.devcontainers",
            "digest": sha256(b"{}"),
            "size": 2
        },
        "layers": [{
            "mediaType": layer_type,
            "digest": layer_digest,
            "size": layer_size,
            "annotations": { "org.opencontainers.image.title": "devcontainer-feature-hello.tgz" }
        }],
        "annotations": { "com.github.package.type": "devcontainer_feature" }
    }))
    .expect("manifest json")
}

/// Reads the request head byte by byte (so that nothing past it is
/// consumed), answers, and closes.
fn serve<S: Read + Write>(stream: &mut S, base: &str, state: &Mutex<State>) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 64 * 1024 {
            return;
        }
        match stream.read(&mut byte) {
            // A TLS handshake (0x16) or other binary: not HTTP, hang up
            // at once rather than wait for a head that never comes.
            Ok(1) if head.is_empty() && !byte[0].is_ascii_uppercase() => return,
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut authorization = None;
    for line in lines {
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("authorization")
        {
            authorization = Some(value.trim().to_string());
        }
    }
    let mut parts = request_line.split_whitespace();
    let (Some(method), Some(path)) = (parts.next(), parts.next()) else {
        return;
    };

    let mut guard = state.lock().expect("registry state");
    let repository = guard.repository.clone();
    let authorized = authorization.as_deref() == Some(&format!("Bearer {TOKEN}"));
    let challenge = format!(
        "WWW-Authenticate: Bearer realm=\"{base}/token\",service=\"{SERVICE}\",scope=\"repository:{repository}:pull\"\r\n"
    );
    let not_found = br#"{"errors":[{"code":"NOT_FOUND","message":"no such thing"}]}"#.to_vec();

    let (status, headers, body): (u16, String, Vec<u8>) = if method != "GET" {
        (405, String::new(), Vec::new())
    } else if let Some(query) = path.strip_prefix("/token?") {
        let expected_scope = format!(
            "scope=repository%3A{}%3Apull",
            repository.replace('/', "%2F")
        );
        let expected_service = format!("service={SERVICE}");
        if query.split('&').any(|p| p == expected_scope)
            && query.split('&').any(|p| p == expected_service)
        {
            (
                200,
                "Content-Type: application/json\r\n".into(),
                format!(r#"{{"token":"{TOKEN}"}}"#).into_bytes(),
            )
        } else {
            (
                400,
                String::new(),
                format!("bad token request {query}").into_bytes(),
            )
        }
    } else if !authorized {
        (
            401,
            challenge,
            br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#.to_vec(),
        )
    } else if path == "/v2/" {
        (200, String::new(), b"{}".to_vec())
    } else if let Some(reference) = path.strip_prefix(&format!("/v2/{repository}/manifests/")) {
        match guard.manifests.get(reference) {
            Some(bytes) => (
                200,
                format!(
                    "Content-Type: {MANIFEST_TYPE}\r\nDocker-Content-Digest: {}\r\n",
                    sha256(bytes)
                ),
                bytes.clone(),
            ),
            None => (404, String::new(), not_found),
        }
    } else if let Some(digest) = path.strip_prefix(&format!("/v2/{repository}/blobs/")) {
        match guard.blobs.get(digest) {
            Some(bytes) => (
                200,
                "Content-Type: application/octet-stream\r\n".into(),
                bytes.clone(),
            ),
            None => (404, String::new(), not_found),
        }
    } else {
        (404, String::new(), not_found)
    };
    guard.log.push(Logged {
        path: path.to_string(),
        authorization,
        status,
    });
    let no_length = guard.no_content_length && status == 200;
    drop(guard);

    let length = if no_length {
        String::new()
    } else {
        format!("Content-Length: {}\r\n", body.len())
    };
    let head = format!("HTTP/1.1 {status} X\r\n{headers}{length}Connection: close\r\n\r\n");
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(&body);
    let _ = stream.flush();
}

/// A CA and a server certificate it signed for 127.0.0.1, as a rustls
/// server config on ring (the workspace's provider).
fn tls_server_config() -> (Arc<rustls::ServerConfig>, String) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("ca key");
    let mut ca = CertificateParams::default();
    ca.distinguished_name
        .push(DnType::CommonName, "kennel-oci test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca_cert = ca.self_signed(&ca_key).expect("ca cert");
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("params");
    leaf.is_ca = IsCa::ExplicitNoCa;
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = leaf.signed_by(&key, &issuer).expect("leaf cert");

    #[allow(deprecated)] // ring's provider, as in the library
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .expect("server config");
    (Arc::new(config), ca_cert.pem())
}

/// A tar whose entries are written with raw headers, so that names the
/// tar crate's builder refuses (`../evil`) can be made too.
pub fn tar(entries: &[Entry]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        let mut header = tar::Header::new_gnu();
        let name = entry.name.as_bytes();
        header.as_old_mut().name[..name.len()].copy_from_slice(name);
        header.set_entry_type(entry.kind);
        header.set_mode(entry.mode);
        header.set_mtime(1_700_000_000);
        let data: &[u8] = if entry.kind == tar::EntryType::Regular {
            &entry.data
        } else {
            &[]
        };
        header.set_size(data.len() as u64);
        if let Some(target) = &entry.link {
            header.as_old_mut().linkname[..target.len()].copy_from_slice(target.as_bytes());
        }
        header.set_cksum();
        builder.append(&header, data).expect("append");
    }
    builder.into_inner().expect("finish tar")
}

pub struct Entry {
    pub name: String,
    pub kind: tar::EntryType,
    pub mode: u32,
    pub data: Vec<u8>,
    pub link: Option<String>,
}

pub fn file(name: &str, mode: u32, data: &[u8]) -> Entry {
    Entry {
        name: name.into(),
        kind: tar::EntryType::Regular,
        mode,
        data: data.to_vec(),
        link: None,
    }
}

pub fn dir(name: &str) -> Entry {
    Entry {
        name: name.into(),
        kind: tar::EntryType::Directory,
        mode: 0o755,
        data: Vec::new(),
        link: None,
    }
}

pub fn symlink(name: &str, target: &str) -> Entry {
    Entry {
        name: name.into(),
        kind: tar::EntryType::Symlink,
        mode: 0o777,
        data: Vec::new(),
        link: Some(target.into()),
    }
}
