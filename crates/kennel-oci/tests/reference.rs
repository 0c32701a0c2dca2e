//! Parsing feature references: what is accepted, and what is refused with a
//! message naming the text.

use kennel_oci::{FeatureReference, OciError};

const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn parse(text: &str) -> FeatureReference {
    FeatureReference::parse(text).unwrap_or_else(|e| panic!("{text} should parse: {e}"))
}

#[test]
fn registry_path_and_tag() {
    let r = parse("ghcr.io/devcontainers/features/node:1");
    assert_eq!(r.registry, "ghcr.io");
    assert_eq!(r.repository, "devcontainers/features/node");
    assert_eq!(r.tag.as_deref(), Some("1"));
    assert_eq!(r.digest, None);
    assert_eq!(r.registry_host(), "ghcr.io");
    assert_eq!(r.to_string(), "ghcr.io/devcontainers/features/node:1");
}

#[test]
fn no_tag_means_latest() {
    let r = parse("ghcr.io/devcontainers/features/node");
    assert_eq!(r.tag.as_deref(), Some("latest"));
    assert_eq!(r.to_string(), "ghcr.io/devcontainers/features/node:latest");
}

#[test]
fn digest_without_tag() {
    let text = format!("ghcr.io/devcontainers/features/node@sha256:{HEX}");
    let r = parse(&text);
    assert_eq!(r.tag, None);
    assert_eq!(r.digest, Some(format!("sha256:{HEX}")));
    assert_eq!(r.to_string(), text);
}

#[test]
fn tag_and_digest_are_both_kept() {
    let r = parse(&format!("ghcr.io/a/b:1.2@sha256:{HEX}"));
    assert_eq!(r.tag.as_deref(), Some("1.2"));
    assert_eq!(r.digest, Some(format!("sha256:{HEX}")));
}

#[test]
fn registry_with_port_and_localhost() {
    let r = parse("localhost:5000/x/y:2");
    assert_eq!(r.registry, "localhost:5000");
    assert_eq!(r.repository, "x/y");
    assert_eq!(r.tag.as_deref(), Some("2"));
    assert_eq!(r.registry_host(), "localhost");

    let r = parse("localhost/x");
    assert_eq!(r.registry_host(), "localhost");
    assert_eq!(r.repository, "x");

    let r = parse("127.0.0.1:8080/features/hello:v1.0_rc-1");
    assert_eq!(r.registry_host(), "127.0.0.1");
    assert_eq!(r.tag.as_deref(), Some("v1.0_rc-1"));

    let r = parse("[::1]:5000/a/b:1");
    assert_eq!(r.registry_host(), "[::1]");
    assert_eq!(r.registry, "[::1]:5000");
}

#[test]
fn the_registry_is_lowercased() {
    let r = parse("GHCR.io:443/org/features/x");
    assert_eq!(r.registry, "ghcr.io:443");
    assert_eq!(r.registry_host(), "ghcr.io");
}

#[test]
fn repository_separators() {
    let r = parse("registry.example.com/my-org/features__x/go.lang_1/a---b:latest");
    assert_eq!(r.repository, "my-org/features__x/go.lang_1/a---b");
}

#[test]
fn bad_references_are_refused_naming_the_text() {
    let long = format!("ghcr.io/{}", "a".repeat(600));
    let long_tag = format!("ghcr.io/a/b:{}", "t".repeat(129));
    let cases: Vec<(String, &str)> = vec![
        ("".into(), "empty"),
        ("node".into(), "registry"),
        ("node:1".into(), "registry"),
        ("devcontainers/features/node:1".into(), "registry"),
        ("ghcr.io".into(), "registry"),
        ("ghcr.io/".into(), "empty"),
        ("ghcr.io/devcontainers/features/Node".into(), "component"),
        ("ghcr.io/a//b".into(), "component"),
        ("ghcr.io/a/b/".into(), "component"),
        ("ghcr.io/a/-b".into(), "component"),
        ("ghcr.io/a/b:".into(), "tag"),
        ("ghcr.io/a/b:-1".into(), "tag"),
        ("ghcr.io/a/b:1:2".into(), "component"),
        (long_tag, "tag"),
        ("ghcr.io/a/b@sha256:abc".into(), "digest"),
        (format!("ghcr.io/a/b@sha512:{HEX}{HEX}"), "digest"),
        (
            format!("ghcr.io/a/b@sha256:{}", HEX.to_uppercase()),
            "digest",
        ),
        (format!("ghcr.io/a/b@sha256:{HEX}@sha256:{HEX}"), "digest"),
        ("ghcr.io/a b".into(), "whitespace"),
        ("ghcr.io/a\nb".into(), "whitespace"),
        ("ghcr.io:99999/a".into(), "port"),
        ("ghcr.io:/a".into(), "port"),
        ("ghcr..io/a".into(), "host"),
        ("-ghcr.io/a".into(), "host"),
        ("gh_cr.io/a".into(), "host"),
        ("[::1/a".into(), "IPv6"),
        (long, "longer"),
    ];
    for (text, word) in cases {
        match FeatureReference::parse(&text) {
            Err(error @ OciError::InvalidReference { .. }) => {
                let message = error.to_string();
                assert!(message.contains(&text), "{message:?} should quote {text:?}");
                assert!(message.contains(word), "{message:?} should say {word:?}");
                assert!(error.hint().is_some());
            }
            other => panic!("{text:?} should be refused, got {other:?}"),
        }
    }
}
