//! Feature references: `registry/repository[:tag][@sha256:<hex>]`.
//!
//! The grammar is the OCI distribution one (lowercase repository path
//! components, tags of at most 128 characters, sha256 digests), with one
//! devcontainer rule on top: the registry is never implied. Docker's habit of
//! reading `node:1` as `docker.io/library/node:1` would turn a typo in a
//! devcontainer.json into a download from a registry nobody named.

use std::fmt;

use crate::OciError;

/// The tag a reference without tag or digest stands for, as for images.
const DEFAULT_TAG: &str = "latest";

/// A reference longer than this is refused before any other check: no
/// registry accepts one, and the error message quotes it.
const MAX_REFERENCE_LEN: usize = 512;

/// A parsed feature reference.
///
/// `registry` is lowercased (host names are case-insensitive, and the
/// lowercase form is what [`FetchOptions::plain_http_hosts`] is compared
/// with). A reference with a digest fetches by digest, whatever its tag: the
/// digest is the stronger promise, and the fetched manifest is checked
/// against it.
///
/// [`FetchOptions::plain_http_hosts`]: crate::FetchOptions::plain_http_hosts
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FeatureReference {
    /// `host` or `host:port`, lowercase: `ghcr.io`, `localhost:5000`.
    pub registry: String,
    /// The path inside the registry: `devcontainers/features/node`.
    pub repository: String,
    /// The tag; `latest` when the reference names neither tag nor digest.
    pub tag: Option<String>,
    /// `sha256:` and 64 lowercase hex digits, when the reference pins one.
    pub digest: Option<String>,
}

impl FeatureReference {
    /// Parses `ghcr.io/devcontainers/features/node:1`, `…/node` (tag `latest`), `…/node@sha256:<64 hex>`, `localhost:5000/x/y:2`.
    /// A reference without a registry host (first component without '.' or ':' and not `localhost`) is an error: features have no default registry.
    ///
    /// `…/node:1@sha256:<hex>` keeps both; the digest decides what is
    /// fetched. Only sha256 digests are accepted, since only those can be
    /// verified here.
    pub fn parse(text: &str) -> Result<FeatureReference, OciError> {
        let invalid = |reason: String| OciError::InvalidReference {
            reference: text.to_string(),
            reason,
        };
        if text.is_empty() {
            return Err(invalid("the reference is empty".into()));
        }
        if text.len() > MAX_REFERENCE_LEN {
            return Err(invalid(format!(
                "the reference is longer than {MAX_REFERENCE_LEN} characters"
            )));
        }
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid(
                "the reference contains whitespace or control characters".into(),
            ));
        }

        let (name, digest) = match text.split_once('@') {
            Some((name, digest)) => (name, Some(digest)),
            None => (text, None),
        };
        if let Some(digest) = digest
            && !is_sha256_digest(digest)
        {
            return Err(invalid(format!(
                "`{digest}` is not a digest of the form sha256:<64 lowercase hex digits>"
            )));
        }

        let Some((registry, path)) = name.split_once('/') else {
            return Err(invalid(format!("there is no '/': {NEEDS_REGISTRY}")));
        };
        let registry_lower = registry.to_ascii_lowercase();
        if !(registry.contains('.') || registry.contains(':') || registry_lower == "localhost") {
            return Err(invalid(format!(
                "`{registry}` is not a registry host: {NEEDS_REGISTRY}"
            )));
        }
        validate_registry(registry).map_err(&invalid)?;

        // The registry is split off, so any ':' left introduces the tag.
        let (repository, tag) = match path.rsplit_once(':') {
            Some((repository, tag)) => (repository, Some(tag)),
            None => (path, None),
        };
        validate_repository(repository).map_err(&invalid)?;
        if let Some(tag) = tag
            && !is_tag(tag)
        {
            return Err(invalid(format!(
                "`{tag}` is not a tag (letters, digits, '_', '.', '-'; at most 128; not starting with '.' or '-')"
            )));
        }

        let tag = match (tag, digest) {
            (Some(tag), _) => Some(tag.to_string()),
            (None, Some(_)) => None,
            (None, None) => Some(DEFAULT_TAG.to_string()),
        };
        Ok(FeatureReference {
            registry: registry_lower,
            repository: repository.to_string(),
            tag,
            digest: digest.map(str::to_string),
        })
    }

    /// The registry's host without its port, lowercase: `localhost` for
    /// `localhost:5000`, `[::1]` for `[::1]:5000`.
    pub fn registry_host(&self) -> &str {
        let registry = self.registry.as_str();
        if registry.starts_with('[') {
            // A bracketed IPv6 literal keeps its brackets: its colons are
            // not a port separator.
            return match registry.find(']') {
                Some(end) => &registry[..=end],
                None => registry,
            };
        }
        registry.split(':').next().unwrap_or(registry)
    }

    /// What the manifest is fetched by: the digest when pinned, else the tag.
    pub(crate) fn manifest_ref(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or(DEFAULT_TAG)
    }
}

/// Writes the reference back in its canonical form (registry lowercased,
/// the implied `latest` spelled out): the form every error message quotes.
impl fmt::Display for FeatureReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// Why a reference must start with a registry, for both ways to miss it.
const NEEDS_REGISTRY: &str = "a feature reference starts with its registry host and then a path \
     (e.g. ghcr.io/devcontainers/features/node:1), since features have no default registry";

/// `sha256:` and exactly 64 lowercase hex digits.
pub(crate) fn is_sha256_digest(text: &str) -> bool {
    text.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

/// `host[:port]`, where host is DNS labels or a bracketed IPv6 literal.
fn validate_registry(registry: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("`{registry}` is not a registry host: {why}"));
    let (host, port) = if let Some(rest) = registry.strip_prefix('[') {
        let Some((inside, after)) = rest.split_once(']') else {
            return bad("an IPv6 literal lacks its closing ']'");
        };
        if inside.is_empty() || !inside.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return bad("the IPv6 literal holds something else than hex digits and ':'");
        }
        match after {
            "" => (None, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (None, Some(port)),
                None => return bad("only ':port' may follow an IPv6 literal"),
            },
        }
    } else {
        match registry.split_once(':') {
            Some((host, port)) => (Some(host), Some(port)),
            None => (Some(registry), None),
        }
    };
    if let Some(host) = host {
        let label_ok = |label: &str| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        };
        if host.is_empty() || host.len() > 253 || !host.split('.').all(label_ok) {
            return bad("the host name is not made of letters, digits, '-' and '.'");
        }
    }
    if let Some(port) = port
        && !(!port.is_empty()
            && port.len() <= 5
            && port.bytes().all(|b| b.is_ascii_digit())
            && port.parse::<u32>().is_ok_and(|p| (1..=65535).contains(&p)))
    {
        return bad("the port is not a number from 1 to 65535");
    }
    Ok(())
}

/// Lowercase components separated by '/', each `[a-z0-9]+` joined by
/// `.`, `_`, `__` or runs of `-` (the OCI distribution grammar).
fn validate_repository(repository: &str) -> Result<(), String> {
    if repository.is_empty() {
        return Err("the repository path after the registry is empty".into());
    }
    for component in repository.split('/') {
        if !is_path_component(component) {
            return Err(format!(
                "`{component}` in `{repository}` is not a repository path component \
                 (lowercase letters and digits, joined by '.', '_', '__' or '-')"
            ));
        }
    }
    Ok(())
}

fn is_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let (Some(&first), Some(&last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    if !alnum(first) || !alnum(last) {
        return false;
    }
    // Between alphanumeric runs: one '.', one or two '_', or any run of '-'.
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let separator = &component[start..i];
        let ok = separator == "."
            || separator == "_"
            || separator == "__"
            || separator.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
fn is_tag(tag: &str) -> bool {
    let bytes = tag.as_bytes();
    match bytes.first() {
        Some(&b) if b.is_ascii_alphanumeric() || b == b'_' => {}
        _ => return false,
    }
    bytes.len() <= 128
        && bytes
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_components() {
        for good in ["node", "a1", "a.b", "a_b", "a__b", "a---b", "go-lang"] {
            assert!(is_path_component(good), "{good}");
        }
        for bad in ["", "Node", "-a", "a-", "a..b", "a___b", "a._b", "_a", "a b"] {
            assert!(!is_path_component(bad), "{bad}");
        }
    }

    #[test]
    fn tags() {
        assert!(is_tag("1"));
        assert!(is_tag("_x.Y-1"));
        assert!(is_tag(&"a".repeat(128)));
        assert!(!is_tag(&"a".repeat(129)));
        assert!(!is_tag(".1"));
        assert!(!is_tag("-1"));
        assert!(!is_tag(""));
        assert!(!is_tag("a/b"));
    }
}
