//! Fetches a devcontainer Feature published as an OCI artifact.
//!
//! A feature reference such as `ghcr.io/devcontainers/features/node:1`
//! names an OCI manifest (`application/vnd.oci.image.manifest.v1+json`)
//! whose one layer, of type `application/vnd.devcontainers.layer.v1+tar`,
//! is a tar of the feature's files: `devcontainer-feature.json`,
//! `install.sh` and whatever else they use
//! (<https://containers.dev/implementors/features-distribution/>).
//!
//! [`fetch`] downloads that manifest and layer, anonymously (features are
//! public; registries such as ghcr.io still want an anonymous bearer token,
//! which is obtained as the registry's 401 answer directs), checks both
//! against their sha256 digests, and unpacks the layer **in memory** into
//! [`FeatureFile`]s. Nothing is written to disk: anyone can publish a
//! feature, so the archive is treated as hostile, and the caller decides
//! where the checked files go.
//!
//! Limits, all refusals rather than truncations:
//! - a manifest or layer blob of at most 16 MiB, cut off while downloading;
//! - at most 2000 archive entries and 64 MiB of file content;
//! - only regular files and directories: no absolute paths, no `..`, no
//!   symbolic or hard links, no devices; each path at most once.
//!
//! The library prints nothing; it logs through `tracing` at debug level.

mod error;
mod layer;
mod reference;
mod registry;

use std::time::Duration;

pub use error::OciError;
pub use reference::FeatureReference;

/// One file of a fetched feature: its path relative to the feature's root (no leading `./`), its mode, its bytes. Directories are implied.
///
/// `path` uses `/` separators and never has `.`, `..` or empty components.
/// `mode` keeps the permission bits (`0o777`) only: setuid, setgid and
/// sticky bits from a stranger's archive are dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureFile {
    pub path: String,
    pub mode: u32,
    pub content: Vec<u8>,
}

/// A feature fetched and unpacked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedFeature {
    /// The manifest digest (`sha256:<hex>`), computed from the bytes
    /// received: pin it to fetch exactly this feature again.
    pub digest: String,
    /// The files in archive order; `devcontainer-feature.json` is among them.
    pub files: Vec<FeatureFile>,
}

/// How to reach the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchOptions {
    /// Extra CA certificates, PEM, trusted beside the system roots (for a
    /// private registry or a TLS-intercepting proxy whose CA the system
    /// does not have). Empty for none.
    pub extra_roots_pem: Vec<u8>,
    /// `host:port` registries (as written in the reference) allowed over
    /// plain HTTP, for tests and local registries. Everything else is
    /// HTTPS only, redirects and token services included.
    pub plain_http_hosts: Vec<String>,
    /// The whole fetch, token exchange and download included, must finish
    /// within this; it is also the connect timeout of each connection.
    pub timeout: Duration,
}

impl Default for FetchOptions {
    /// No extra roots, HTTPS only, one minute.
    fn default() -> Self {
        FetchOptions {
            extra_roots_pem: Vec::new(),
            plain_http_hosts: Vec::new(),
            timeout: Duration::from_secs(60),
        }
    }
}

/// Fetches the feature `reference` names and unpacks it in memory.
///
/// The manifest is checked against the reference's digest when it has one,
/// and against the registry's `Docker-Content-Digest` header when it sends
/// one; the layer is always checked against the digest in the manifest.
/// Proxies are taken from `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY` and
/// `NO_PROXY`, as reqwest reads them.
///
/// Must run inside a tokio runtime with the time driver enabled.
pub async fn fetch(
    reference: &FeatureReference,
    options: &FetchOptions,
) -> Result<FetchedFeature, OciError> {
    match tokio::time::timeout(options.timeout, registry::fetch(reference, options)).await {
        Ok(result) => result,
        Err(_) => Err(OciError::Timeout {
            reference: reference.to_string(),
            after: options.timeout,
        }),
    }
}
