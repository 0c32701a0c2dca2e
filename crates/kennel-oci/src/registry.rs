//! The part of the OCI distribution protocol a feature needs: one manifest,
//! one blob, and the anonymous bearer-token exchange in front of both.
//!
//! Written on reqwest rather than taken from an OCI client crate so that
//! every download stops at a size cap while it is read (a hostile registry
//! can answer with an endless manifest), and so that TLS runs on the
//! workspace's ring-based rustls with the system roots read here.

use std::sync::Arc;

use reqwest::header::{ACCEPT, HeaderMap, WWW_AUTHENTICATE};
use reqwest::{Response, StatusCode};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use tracing::debug;

use crate::layer::{self, Compression};
use crate::reference::is_sha256_digest;
use crate::{FeatureReference, FetchOptions, FetchedFeature, OciError};

/// The manifest media type features are published with.
const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// An image index: a list of manifests, which a feature never is.
const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
/// The layer `devcontainer features publish` writes: a plain tar.
const FEATURE_LAYER: &str = "application/vnd.devcontainers.layer.v1+tar";
/// Generic OCI layers, accepted when a feature was pushed with other tools.
const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
const OCI_LAYER_TAR_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// The most bytes read for a manifest or a layer blob.
pub(crate) const MAX_DOWNLOAD: u64 = 16 * 1024 * 1024;
/// The most bytes read from a token service's answer or an error body.
const MAX_SMALL_BODY: u64 = 64 * 1024;
/// Redirects followed per request (blobs usually redirect once, to a CDN).
const MAX_REDIRECTS: usize = 10;

/// Which download a size or digest complaint is about.
#[derive(Clone, Copy)]
enum Part {
    Manifest,
    Layer,
    Token,
}

/// One fetch's connection to one registry, holding the bearer token once
/// the registry asked for one.
struct Session<'a> {
    reference: &'a FeatureReference,
    /// The reference as error messages quote it.
    name: String,
    http: reqwest::Client,
    /// `https://ghcr.io` (or `http://…` for a host in `plain_http_hosts`).
    base: String,
    plain_http_hosts: Arc<Vec<String>>,
    token: Option<String>,
}

pub(crate) async fn fetch(
    reference: &FeatureReference,
    options: &FetchOptions,
) -> Result<FetchedFeature, OciError> {
    check_fields(reference)?;
    let mut session = Session::new(reference, options)?;
    let name = session.name.clone();

    let manifest_url = format!(
        "{}/v2/{}/manifests/{}",
        session.base,
        reference.repository,
        reference.manifest_ref()
    );
    let (body, header_digest) = session
        .get(
            &manifest_url,
            Some(MANIFEST_MEDIA_TYPE),
            MAX_DOWNLOAD,
            Part::Manifest,
        )
        .await?;
    let digest = sha256_digest(&body);
    if let Some(expected) = &reference.digest
        && *expected != digest
    {
        return Err(OciError::DigestMismatch {
            reference: name,
            what: "manifest",
            expected: expected.clone(),
            actual: digest,
        });
    }
    // A registry that states the digest and serves other bytes is either
    // broken or tampered with; either way the bytes are not what was
    // published. Other algorithms than sha256 are not checked.
    if let Some(stated) = header_digest
        && stated.starts_with("sha256:")
        && stated != digest
    {
        return Err(OciError::DigestMismatch {
            reference: name,
            what: "manifest",
            expected: stated,
            actual: digest,
        });
    }

    let (layer, compression) = pick_layer(&name, &body)?;
    let blob_url = format!(
        "{}/v2/{}/blobs/{}",
        session.base, reference.repository, layer.digest
    );
    // The declared size bounds the read: a registry that sends more is
    // cut off instead of being believed.
    let (blob, _) = session
        .get(&blob_url, None, layer.size, Part::Layer)
        .await?;
    let actual = sha256_digest(&blob);
    if actual != layer.digest {
        return Err(OciError::DigestMismatch {
            reference: name,
            what: "layer",
            expected: layer.digest,
            actual,
        });
    }
    let files = layer::unpack(&name, &blob, compression)?;
    debug!(reference = %name, %digest, files = files.len(), "fetched feature");
    Ok(FetchedFeature { digest, files })
}

/// The fields are public, so a reference may not come from
/// [`FeatureReference::parse`]; they go into URLs, so they must be what
/// parse would have made (a repository of `../x` is not).
fn check_fields(reference: &FeatureReference) -> Result<(), OciError> {
    let text = reference.to_string();
    let reparsed = FeatureReference::parse(&text)?;
    let tag = match (&reference.tag, &reference.digest) {
        (None, None) => reparsed.tag.as_deref(), // parse supplies `latest`
        (tag, _) => tag.as_deref(),
    };
    if reparsed.registry != reference.registry
        || reparsed.repository != reference.repository
        || reparsed.tag.as_deref() != tag
        || reparsed.digest != reference.digest
    {
        return Err(OciError::InvalidReference {
            reference: text,
            reason: "its fields are not what parsing it gives (e.g. an uppercase registry, \
                     or ':' or '@' inside a field)"
                .into(),
        });
    }
    Ok(())
}

impl<'a> Session<'a> {
    fn new(reference: &'a FeatureReference, options: &FetchOptions) -> Result<Self, OciError> {
        let name = reference.to_string();
        let plain_http_hosts: Arc<Vec<String>> = Arc::new(
            options
                .plain_http_hosts
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
        );
        let scheme = if plain_http_hosts.contains(&reference.registry) {
            "http"
        } else {
            "https"
        };
        let tls = tls_config(&name, &options.extra_roots_pem)?;
        let redirect_hosts = Arc::clone(&plain_http_hosts);
        let redirects = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= MAX_REDIRECTS {
                attempt.error("too many redirects")
            } else if attempt.url().scheme() == "https"
                || plain_http_allowed(&redirect_hosts, attempt.url())
            {
                attempt.follow()
            } else {
                let refused = format!("refusing a redirect to {}: not HTTPS", attempt.url());
                attempt.error(refused)
            }
        });
        // No proxy is set here, so reqwest reads HTTP(S)_PROXY, ALL_PROXY
        // and NO_PROXY from the environment.
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .redirect(redirects)
            .connect_timeout(options.timeout)
            .user_agent(concat!("kennel-oci/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| OciError::Options {
                reference: name.clone(),
                reason: format!("cannot set up the HTTP client: {}", error_chain(&e)),
            })?;
        Ok(Session {
            reference,
            base: format!("{scheme}://{}", reference.registry),
            name,
            http,
            plain_http_hosts,
            token: None,
        })
    }

    /// GETs `url`, answering one 401 with the bearer-token exchange, and
    /// returns the body (at most `limit` bytes) and any
    /// `Docker-Content-Digest` header.
    async fn get(
        &mut self,
        url: &str,
        accept: Option<&str>,
        limit: u64,
        part: Part,
    ) -> Result<(Vec<u8>, Option<String>), OciError> {
        let mut authenticated_retry = false;
        loop {
            let mut request = self.http.get(url);
            if let Some(accept) = accept {
                request = request.header(ACCEPT, accept);
            }
            if let Some(token) = &self.token {
                request = request.bearer_auth(token);
            }
            debug!(%url, with_token = self.token.is_some(), "GET");
            let response = request.send().await.map_err(|e| self.network(url, &e))?;
            let status = response.status();
            if status == StatusCode::UNAUTHORIZED
                && !authenticated_retry
                && let Some(challenge) = bearer_challenge(response.headers())
            {
                self.token = Some(self.fetch_token(&challenge).await?);
                authenticated_retry = true;
                continue;
            }
            if !status.is_success() {
                return Err(self.registry_error(response).await);
            }
            let stated_digest = response
                .headers()
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok())
                .map(|v| v.trim().to_string());
            let body = self.read_capped(response, limit, part).await?;
            return Ok((body, stated_digest));
        }
    }

    /// The anonymous token exchange: GET the realm the registry named, with
    /// its service and the pull scope, and take `token` (or the OAuth2
    /// `access_token`) from the JSON answer.
    async fn fetch_token(&self, challenge: &Challenge) -> Result<String, OciError> {
        let mut realm = url::Url::parse(&challenge.realm).map_err(|e| OciError::Network {
            reference: self.name.clone(),
            url: challenge.realm.clone(),
            reason: format!("the registry names a token service that is not a URL: {e}"),
        })?;
        // The token travels back over this connection: no plain HTTP
        // unless the caller allowed it for that host.
        if realm.scheme() != "https" && !plain_http_allowed(&self.plain_http_hosts, &realm) {
            return Err(OciError::Network {
                reference: self.name.clone(),
                url: realm.to_string(),
                reason: "refusing a token service that is not HTTPS".into(),
            });
        }
        let scope = challenge
            .scope
            .clone()
            .unwrap_or_else(|| format!("repository:{}:pull", self.reference.repository));
        {
            let mut query = realm.query_pairs_mut();
            if let Some(service) = &challenge.service {
                query.append_pair("service", service);
            }
            query.append_pair("scope", &scope);
        }
        let url = realm.to_string();
        debug!(%url, "fetching an anonymous token");
        let response = self
            .http
            .get(realm)
            .send()
            .await
            .map_err(|e| self.network(&url, &e))?;
        if !response.status().is_success() {
            return Err(self.registry_error(response).await);
        }
        let body = self
            .read_capped(response, MAX_SMALL_BODY, Part::Token)
            .await?;

        #[derive(Deserialize)]
        struct TokenAnswer {
            token: Option<String>,
            access_token: Option<String>,
        }
        let answer: TokenAnswer = serde_json::from_slice(&body).map_err(|e| OciError::Network {
            reference: self.name.clone(),
            url: url.clone(),
            reason: format!("the token service's answer is not JSON: {e}"),
        })?;
        answer
            .token
            .filter(|t| !t.is_empty())
            .or(answer.access_token.filter(|t| !t.is_empty()))
            .ok_or_else(|| OciError::Network {
                reference: self.name.clone(),
                url,
                reason: "the token service's answer holds no token".into(),
            })
    }

    /// Reads a body, failing as soon as it grows past `limit`.
    async fn read_capped(
        &self,
        mut response: Response,
        limit: u64,
        part: Part,
    ) -> Result<Vec<u8>, OciError> {
        let url = response.url().to_string();
        let too_large = || {
            let reason = match part {
                Part::Manifest => format!("the manifest is larger than {limit} bytes"),
                Part::Layer => format!("the layer blob is larger than its stated {limit} bytes"),
                Part::Token => format!("the token service's answer is larger than {limit} bytes"),
            };
            match part {
                Part::Manifest => OciError::Manifest {
                    reference: self.name.clone(),
                    reason,
                },
                Part::Layer => OciError::Layer {
                    reference: self.name.clone(),
                    entry: None,
                    reason,
                },
                Part::Token => OciError::Network {
                    reference: self.name.clone(),
                    url: url.clone(),
                    reason,
                },
            }
        };
        if response.content_length().is_some_and(|n| n > limit) {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.network(&url, &e))? {
            if (body.len() + chunk.len()) as u64 > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// An error status, with the registry's own message when its body is
    /// the distribution spec's `{"errors":[{"code","message"}]}`.
    async fn registry_error(&self, response: Response) -> OciError {
        let status = response.status().as_u16();
        let url = response.url().to_string();
        let message = match self
            .read_capped(response, MAX_SMALL_BODY, Part::Token)
            .await
        {
            Ok(body) => error_message(&body),
            Err(_) => None,
        };
        OciError::Registry {
            reference: self.name.clone(),
            url,
            status,
            message,
        }
    }

    fn network(&self, url: &str, error: &reqwest::Error) -> OciError {
        OciError::Network {
            reference: self.name.clone(),
            url: url.to_string(),
            reason: error_chain(error),
        }
    }
}

/// rustls on ring, trusting the system's roots (rustls-native-certs reads
/// `/etc/ssl/certs` or `SSL_CERT_FILE`/`SSL_CERT_DIR`, so a TLS-intercepting
/// proxy's CA installed there works) plus the caller's extra roots.
fn tls_config(name: &str, extra_roots_pem: &[u8]) -> Result<rustls::ClientConfig, OciError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    let options_error = |reason: String| OciError::Options {
        reference: name.to_string(),
        reason,
    };
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for error in &native.errors {
        debug!(%error, "a system certificate could not be loaded");
    }
    let (added, ignored) = roots.add_parsable_certificates(native.certs);
    debug!(added, ignored, "system roots");

    if !extra_roots_pem.iter().all(u8::is_ascii_whitespace) {
        let mut count = 0;
        for cert in CertificateDer::pem_slice_iter(extra_roots_pem) {
            let cert = cert.map_err(|e| {
                options_error(format!("the extra CA certificates are not valid PEM: {e}"))
            })?;
            roots.add(cert).map_err(|e| {
                options_error(format!("an extra CA certificate cannot be used: {e}"))
            })?;
            count += 1;
        }
        if count == 0 {
            return Err(options_error(
                "the extra CA certificates hold no PEM certificate".into(),
            ));
        }
    }

    let config = rustls::ClientConfig::builder_with_provider(ring_provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| options_error(format!("cannot set up TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

/// ring, named explicitly as kennel-proxy does: it is the workspace's one
/// provider (aws-lc-rs would need cmake and a C toolchain), and naming it
/// keeps a second provider elsewhere in the binary from making rustls'
/// process default ambiguous.
// rustls 0.23.48 deprecates ring's provider because its key exchange is not
// post-quantum (that needs aws-lc-rs); X25519 and the NIST curves remain.
#[allow(deprecated)]
fn ring_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Whether `url` is plain HTTP to a `host:port` the caller allowed.
fn plain_http_allowed(hosts: &[String], url: &url::Url) -> bool {
    if url.scheme() != "http" {
        return false;
    }
    let Some(host) = url.host_str() else {
        return false;
    };
    let host = host.to_ascii_lowercase();
    match url.port() {
        Some(port) => hosts.contains(&format!("{host}:{port}")),
        None => hosts.contains(&host) || hosts.contains(&format!("{host}:80")),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    schema_version: u32,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    layers: Vec<Descriptor>,
    /// Present in an index only.
    #[serde(default)]
    manifests: Option<serde_json::Value>,
}

#[derive(Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    media_type: String,
    digest: String,
    size: u64,
}

/// The feature's layer: the one devcontainers layer, or failing that the
/// one generic OCI tar layer.
fn pick_layer(name: &str, body: &[u8]) -> Result<(Descriptor, Compression), OciError> {
    let unusable = |reason: String| OciError::Manifest {
        reference: name.to_string(),
        reason,
    };
    let manifest: Manifest = serde_json::from_slice(body)
        .map_err(|e| unusable(format!("not an OCI image manifest: {e}")))?;
    if manifest.media_type.as_deref() == Some(INDEX_MEDIA_TYPE) || manifest.manifests.is_some() {
        return Err(unusable(
            "it is an image index (a list of manifests), not a feature".into(),
        ));
    }
    if manifest.schema_version != 2 {
        return Err(unusable(format!(
            "schemaVersion is {}, not 2",
            manifest.schema_version
        )));
    }
    let of_type = |types: &[&str]| -> Vec<Descriptor> {
        manifest
            .layers
            .iter()
            .filter(|l| types.contains(&l.media_type.as_str()))
            .cloned()
            .collect()
    };
    let mut candidates = of_type(&[FEATURE_LAYER]);
    if candidates.is_empty() {
        candidates = of_type(&[OCI_LAYER_TAR, OCI_LAYER_TAR_GZIP]);
    }
    let layer = match candidates.len() {
        1 => candidates.remove(0),
        0 => {
            let seen: Vec<&str> = manifest
                .layers
                .iter()
                .map(|l| l.media_type.as_str())
                .collect();
            return Err(unusable(format!(
                "no layer of type {FEATURE_LAYER} (layers: {})",
                if seen.is_empty() {
                    "none".to_string()
                } else {
                    seen.join(", ")
                }
            )));
        }
        n => {
            return Err(unusable(format!(
                "{n} candidate layers; a feature has exactly one"
            )));
        }
    };
    if !is_sha256_digest(&layer.digest) {
        return Err(unusable(format!(
            "the layer's digest `{}` is not sha256:<64 lowercase hex digits>",
            layer.digest
        )));
    }
    if layer.size > MAX_DOWNLOAD {
        return Err(unusable(format!(
            "the layer is {} bytes, more than the {} MiB a feature may have",
            layer.size,
            MAX_DOWNLOAD >> 20
        )));
    }
    let compression = if layer.media_type == OCI_LAYER_TAR_GZIP {
        Compression::Gzip
    } else {
        Compression::None
    };
    Ok((layer, compression))
}

/// `sha256:<hex>` of `bytes`.
fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// A `WWW-Authenticate: Bearer realm="…",service="…",scope="…"` challenge.
#[derive(Debug, PartialEq, Eq)]
struct Challenge {
    realm: String,
    service: Option<String>,
    scope: Option<String>,
}

/// The first Bearer challenge among the response's WWW-Authenticate
/// headers. A Basic challenge is not answered: features are fetched
/// anonymously.
fn bearer_challenge(headers: &HeaderMap) -> Option<Challenge> {
    headers
        .get_all(WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(parse_bearer_challenge)
}

fn parse_bearer_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim_start();
    let (scheme, rest) = header.split_once(char::is_whitespace)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut realm = None;
    let mut service = None;
    let mut scope = None;
    let mut rest = rest.trim_start();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let key = key.trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            // A quoted-string, where '\' escapes the next character.
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, escaped)) = chars.next() {
                            value.push(escaped);
                        }
                    }
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => value.push(c),
                }
            }
            (value, &quoted[end?..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        match key.as_str() {
            "realm" => realm = Some(value),
            "service" => service = Some(value),
            "scope" => scope = Some(value),
            _ => {}
        }
        rest = remaining.trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
    Some(Challenge {
        realm: realm?,
        service,
        scope,
    })
}

/// `CODE: message` from a distribution-spec error body, shortened and
/// stripped of control characters (the text comes from the registry).
fn error_message(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Errors {
        errors: Vec<ErrorItem>,
    }
    #[derive(Deserialize)]
    struct ErrorItem {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    let errors: Errors = serde_json::from_slice(body).ok()?;
    let first = errors.errors.into_iter().next()?;
    let text = match (first.code.is_empty(), first.message.is_empty()) {
        (true, true) => return None,
        (false, true) => first.code,
        (true, false) => first.message,
        (false, false) => format!("{}: {}", first.code, first.message),
    };
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect();
    Some(clean)
}

/// The error and its sources, joined: reqwest's own message alone rarely
/// says what went wrong (the TLS or DNS cause is in the sources).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_challenges() {
        assert_eq!(
            parse_bearer_challenge(
                r#"Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:devcontainers/features/node:pull""#
            ),
            Some(Challenge {
                realm: "https://ghcr.io/token".into(),
                service: Some("ghcr.io".into()),
                scope: Some("repository:devcontainers/features/node:pull".into()),
            })
        );
        assert_eq!(
            parse_bearer_challenge(r#"bearer  realm = "http://x/t\"q" , service=reg"#),
            Some(Challenge {
                realm: "http://x/t\"q".into(),
                service: Some("reg".into()),
                scope: None,
            })
        );
        assert_eq!(parse_bearer_challenge(r#"Basic realm="x""#), None);
        assert_eq!(parse_bearer_challenge(r#"Bearer service="x""#), None);
        assert_eq!(
            parse_bearer_challenge(r#"Bearer realm="unterminated"#),
            None
        );
    }

    #[test]
    fn picks_the_feature_layer() {
        let digest = format!("sha256:{}", "a".repeat(64));
        let manifest = |layers: &str| {
            format!(
                r#"{{"schemaVersion":2,"mediaType":"{MANIFEST_MEDIA_TYPE}","config":{{}},"layers":[{layers}]}}"#
            )
        };
        let layer =
            |media: &str| format!(r#"{{"mediaType":"{media}","digest":"{digest}","size":10}}"#);

        let (l, c) =
            pick_layer("r", manifest(&layer(FEATURE_LAYER)).as_bytes()).expect("feature layer");
        assert_eq!(
            (l.media_type.as_str(), c),
            (FEATURE_LAYER, Compression::None)
        );
        let (_, c) =
            pick_layer("r", manifest(&layer(OCI_LAYER_TAR_GZIP)).as_bytes()).expect("gzip layer");
        assert_eq!(c, Compression::Gzip);
        // The devcontainers layer wins over generic ones.
        let both = format!("{},{}", layer(OCI_LAYER_TAR), layer(FEATURE_LAYER));
        let (l, _) = pick_layer("r", manifest(&both).as_bytes()).expect("feature layer");
        assert_eq!(l.media_type, FEATURE_LAYER);

        for (body, word) in [
            (manifest(&layer("application/octet-stream")), "no layer"),
            (
                manifest(&format!(
                    "{},{}",
                    layer(FEATURE_LAYER),
                    layer(FEATURE_LAYER)
                )),
                "exactly one",
            ),
            (
                format!(r#"{{"schemaVersion":2,"mediaType":"{INDEX_MEDIA_TYPE}","manifests":[]}}"#),
                "index",
            ),
            (
                manifest(&layer(FEATURE_LAYER)).replace(&digest, "sha256:abc"),
                "digest",
            ),
            (
                manifest(&layer(FEATURE_LAYER)).replace("\"size\":10", "\"size\":99999999"),
                "MiB",
            ),
            ("not json".to_string(), "not an OCI"),
        ] {
            match pick_layer("r", body.as_bytes()) {
                Err(OciError::Manifest { reason, .. }) => {
                    assert!(reason.contains(word), "{reason}")
                }
                other => panic!(
                    "expected a manifest error for {body}, got {:?}",
                    other.map(|(l, _)| l.media_type)
                ),
            }
        }
    }

    #[test]
    fn plain_http_only_for_listed_hosts() {
        let hosts = vec!["127.0.0.1:5000".to_string(), "reg.local".to_string()];
        let url = |u: &str| url::Url::parse(u).expect("url");
        assert!(plain_http_allowed(
            &hosts,
            &url("http://127.0.0.1:5000/token")
        ));
        assert!(!plain_http_allowed(
            &hosts,
            &url("http://127.0.0.1:5001/token")
        ));
        assert!(plain_http_allowed(&hosts, &url("http://REG.local/x")));
        assert!(!plain_http_allowed(&hosts, &url("https://127.0.0.1:5000/")));
    }

    #[test]
    fn registry_error_messages_are_short_and_clean() {
        let body = br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest\nunknown"}]}"#;
        assert_eq!(
            error_message(body).as_deref(),
            Some("MANIFEST_UNKNOWN: manifest unknown")
        );
        assert_eq!(error_message(b"<html>"), None);
    }

    #[test]
    fn hand_made_references_are_checked() {
        let good = FeatureReference {
            registry: "ghcr.io".into(),
            repository: "a/b".into(),
            tag: None,
            digest: None,
        };
        check_fields(&good).expect("no tag and no digest stands for latest");
        for bad in [
            FeatureReference {
                repository: "a/../b".into(),
                ..good.clone()
            },
            FeatureReference {
                registry: "GHCR.io".into(),
                ..good.clone()
            },
            FeatureReference {
                registry: "docker".into(),
                ..good.clone()
            },
            FeatureReference {
                tag: Some("1@sha256:x".into()),
                ..good.clone()
            },
            FeatureReference {
                repository: "a/b:1".into(),
                tag: Some("2".into()),
                ..good.clone()
            },
            FeatureReference {
                digest: Some("sha256:abc".into()),
                ..good.clone()
            },
        ] {
            match check_fields(&bad) {
                Err(OciError::InvalidReference { .. }) => {}
                other => panic!("{bad:?} should be refused, got {other:?}"),
            }
        }
    }

    #[test]
    fn bad_extra_roots_are_refused() {
        match tls_config("r", b"not a certificate") {
            Err(OciError::Options { reason, .. }) => assert!(reason.contains("PEM"), "{reason}"),
            other => panic!("expected an options error, got {:?}", other.map(|_| ())),
        }
        tls_config("r", b"  \n").expect("blank extra roots are no roots");
    }
}
