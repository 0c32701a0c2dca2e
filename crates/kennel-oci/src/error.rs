//! The one error type. Every message starts by naming the feature reference,
//! because a devcontainer.json may list several features and the person
//! reading the message has to know which one failed.

use std::time::Duration;

/// Why a feature could not be parsed, fetched or unpacked.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// The text is not a feature reference.
    #[error("invalid feature reference `{reference}`: {reason}")]
    InvalidReference { reference: String, reason: String },

    /// The caller's [`FetchOptions`](crate::FetchOptions) cannot be used
    /// (e.g. `extra_roots_pem` holds no usable certificate).
    #[error("feature `{reference}`: {reason}")]
    Options { reference: String, reason: String },

    /// No HTTP answer: DNS, connection, TLS or proxy failure, or a body cut
    /// off in transit.
    #[error("feature `{reference}`: cannot fetch {url}: {reason}")]
    Network {
        reference: String,
        url: String,
        reason: String,
    },

    /// The whole fetch took longer than [`FetchOptions::timeout`](crate::FetchOptions::timeout).
    #[error("feature `{reference}`: the fetch did not finish within {}s", .after.as_secs_f64())]
    Timeout { reference: String, after: Duration },

    /// The registry (or its token service) answered with an error status.
    #[error("feature `{reference}`: {url} answered HTTP {status}{}", message_suffix(.message))]
    Registry {
        reference: String,
        url: String,
        status: u16,
        /// The registry's own explanation, shortened, when it gave one.
        message: Option<String>,
    },

    /// Downloaded bytes do not hash to the digest they were asked for by.
    #[error(
        "feature `{reference}`: the {what} does not match its digest: expected {expected}, got {actual}"
    )]
    DigestMismatch {
        reference: String,
        /// `manifest` or `layer`.
        what: &'static str,
        expected: String,
        actual: String,
    },

    /// The manifest is not a devcontainer feature's: unreadable, too large,
    /// an index, or without a feature layer.
    #[error("feature `{reference}`: unusable manifest: {reason}")]
    Manifest { reference: String, reason: String },

    /// The layer is refused: an unsafe or unsupported entry, a limit
    /// exceeded, a broken archive, or no `devcontainer-feature.json`.
    #[error("feature `{reference}`: refused layer{}: {reason}", entry_suffix(.entry))]
    Layer {
        reference: String,
        /// The archive entry's path as written in the archive, when one entry is to blame.
        entry: Option<String>,
        reason: String,
    },
}

fn message_suffix(message: &Option<String>) -> String {
    message
        .as_deref()
        .map(|m| format!(": {m}"))
        .unwrap_or_default()
}

fn entry_suffix(entry: &Option<String>) -> String {
    entry
        .as_deref()
        .map(|e| format!(" (entry `{e}`)"))
        .unwrap_or_default()
}

impl OciError {
    /// What the person can do about it, when there is something to say
    /// beyond the message.
    pub fn hint(&self) -> Option<String> {
        match self {
            OciError::InvalidReference { .. } => Some(
                "write the feature as registry/path[:tag] or registry/path@sha256:<digest>, \
                 e.g. ghcr.io/devcontainers/features/node:1"
                    .into(),
            ),
            OciError::Options { .. } => Some(
                "extra CA certificates must be PEM (-----BEGIN CERTIFICATE-----) blocks".into(),
            ),
            OciError::Network { reason, .. } => {
                let lower = reason.to_ascii_lowercase();
                if lower.contains("not https") {
                    Some(
                        "registries, their token services and redirects must use HTTPS; plain \
                         HTTP is allowed only for the hosts listed as plain-HTTP hosts"
                            .into(),
                    )
                } else if lower.contains("certificate") || lower.contains("unknownissuer") {
                    Some(
                        "the registry's TLS certificate is not trusted: if a proxy intercepts \
                         TLS, add its CA to the system's certificates or to the extra CA \
                         certificates"
                            .into(),
                    )
                } else {
                    Some(
                        "check that the registry is reachable from here (HTTPS_PROXY and \
                         NO_PROXY are honoured)"
                            .into(),
                    )
                }
            }
            OciError::Timeout { .. } => {
                Some("the registry is slow or unreachable; retry, or allow a longer timeout".into())
            }
            OciError::Registry { status, .. } => match status {
                401 | 403 => Some(
                    "features are fetched anonymously: a private feature cannot be used; \
                     check the name, or publish the feature publicly"
                        .into(),
                ),
                404 => {
                    Some("check the feature's name and tag: the registry does not have them".into())
                }
                429 => Some("the registry limits its request rate; retry later".into()),
                500..=599 => Some("the registry failed; retry later".into()),
                _ => None,
            },
            OciError::DigestMismatch { .. } => Some(
                "the registry, or something between it and here, served other bytes than the \
                 ones published; nothing was used"
                    .into(),
            ),
            OciError::Manifest { .. } => Some(
                "the reference must name a devcontainer feature published with \
                 `devcontainer features publish` (or any OCI artifact with one tar layer)"
                    .into(),
            ),
            OciError::Layer { .. } => Some(
                "the feature's archive is not safe or not complete; nothing from it was used"
                    .into(),
            ),
        }
    }
}
