//! Real fetches, over plain HTTP, from the stand-in registry in `support`.

mod support;

use std::io::Write;
use std::net::TcpListener;
use std::time::Duration;

use kennel_oci::{FeatureReference, FetchOptions, OciError, fetch};
use support::{FEATURE_LAYER, Registry, dir, file, sha256, symlink, tar};

const REPO: &str = "features/hello";
const FEATURE_JSON: &[u8] = br#"{"id":"hello","version":"1.0.0","name":"Hello"}"#;
const INSTALL_SH: &[u8] = b"#!/bin/sh\necho hello\n";

fn options(registry: &Registry) -> FetchOptions {
    FetchOptions {
        plain_http_hosts: vec![registry.host()],
        timeout: Duration::from_secs(20),
        ..FetchOptions::default()
    }
}

fn reference(registry: &Registry, tail: &str) -> FeatureReference {
    let text = format!("{}/{REPO}{tail}", registry.host());
    FeatureReference::parse(&text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

/// The layer `devcontainer features publish` makes: a plain tar with `./`.
fn good_layer() -> Vec<u8> {
    tar(&[
        dir("./"),
        file("./devcontainer-feature.json", 0o644, FEATURE_JSON),
        file("./install.sh", 0o755, INSTALL_SH),
        dir("./lib/"),
        file("./lib/util.sh", 0o4755, b"util"),
    ])
}

/// Fetches, expecting a refusal, and checks that the message names the
/// reference.
async fn refused(registry: &Registry, tail: &str) -> OciError {
    let reference = reference(registry, tail);
    match fetch(&reference, &options(registry)).await {
        Ok(feature) => panic!("expected a refusal, got {} files", feature.files.len()),
        Err(error) => {
            let message = error.to_string();
            assert!(
                message.contains(&reference.to_string()),
                "{message:?} should name {reference}"
            );
            error
        }
    }
}

#[tokio::test]
async fn fetches_a_feature_through_the_token_exchange() {
    let registry = Registry::start(REPO);
    let digest = registry.publish("1", &good_layer(), FEATURE_LAYER);

    let feature = fetch(&reference(&registry, ":1"), &options(&registry))
        .await
        .expect("fetch");
    assert_eq!(feature.digest, digest);
    let files: Vec<(&str, u32, &[u8])> = feature
        .files
        .iter()
        .map(|f| (f.path.as_str(), f.mode, f.content.as_slice()))
        .collect();
    assert_eq!(
        files,
        [
            ("devcontainer-feature.json", 0o644, FEATURE_JSON),
            ("install.sh", 0o755, INSTALL_SH),
            // The setuid bit is dropped.
            ("lib/util.sh", 0o755, &b"util"[..]),
        ]
    );

    // The first manifest request went without a token and got 401; the
    // token came, anonymously, from the endpoint the challenge named; the
    // manifest and blob requests after that carried it.
    let log = registry.log();
    let seen: Vec<(&str, u16)> = log.iter().map(|l| (l.path.as_str(), l.status)).collect();
    assert_eq!(seen.len(), 4, "{seen:?}");
    assert_eq!(seen[0], ("/v2/features/hello/manifests/1", 401));
    assert!(seen[1].0.starts_with("/token?"), "{seen:?}");
    assert_eq!(seen[1].1, 200);
    assert_eq!(seen[2], ("/v2/features/hello/manifests/1", 200));
    assert!(
        seen[3].0.starts_with("/v2/features/hello/blobs/sha256:"),
        "{seen:?}"
    );
    assert_eq!(seen[3].1, 200);
    let bearer = format!("Bearer {}", support::TOKEN);
    let auth: Vec<Option<&str>> = log.iter().map(|l| l.authorization.as_deref()).collect();
    assert_eq!(
        auth,
        [None, None, Some(bearer.as_str()), Some(bearer.as_str())]
    );
}

#[tokio::test]
async fn the_default_tag_is_latest() {
    let registry = Registry::start(REPO);
    registry.publish("latest", &good_layer(), FEATURE_LAYER);
    let feature = fetch(&reference(&registry, ""), &options(&registry))
        .await
        .expect("fetch");
    assert_eq!(feature.files.len(), 3);
}

#[tokio::test]
async fn fetches_by_digest() {
    let registry = Registry::start(REPO);
    let digest = registry.publish("1", &good_layer(), FEATURE_LAYER);
    let by_digest = reference(&registry, &format!("@{digest}"));
    let feature = fetch(&by_digest, &options(&registry)).await.expect("fetch");
    assert_eq!(feature.digest, digest);
    assert!(
        registry
            .log()
            .iter()
            .any(|l| l.path == format!("/v2/{REPO}/manifests/{digest}") && l.status == 200)
    );
}

#[tokio::test]
async fn a_manifest_that_does_not_match_the_pinned_digest_is_refused() {
    let registry = Registry::start(REPO);
    registry.publish("1", &good_layer(), FEATURE_LAYER);
    // The registry serves some other manifest under the pinned digest.
    let pinned = sha256(b"what was published");
    let layer = good_layer();
    registry.put_manifest(
        &pinned,
        support::manifest_for(&sha256(&layer), layer.len(), FEATURE_LAYER),
    );
    match refused(&registry, &format!("@{pinned}")).await {
        OciError::DigestMismatch { what, expected, .. } => {
            assert_eq!(what, "manifest");
            assert_eq!(expected, pinned);
        }
        other => panic!("expected a digest mismatch, got {other:?}"),
    }
}

#[tokio::test]
async fn a_blob_whose_digest_does_not_match_is_refused() {
    let registry = Registry::start(REPO);
    let layer = good_layer();
    registry.publish("1", &layer, FEATURE_LAYER);
    // Same size, other bytes: only the digest can tell.
    let mut tampered = layer.clone();
    let at = tampered
        .windows(INSTALL_SH.len())
        .position(|w| w == INSTALL_SH)
        .expect("install.sh content");
    tampered[at + 15] = b'X';
    registry.put_blob(&sha256(&layer), tampered);
    let error = refused(&registry, ":1").await;
    match &error {
        OciError::DigestMismatch { what, expected, .. } => {
            assert_eq!(*what, "layer");
            assert_eq!(*expected, sha256(&layer));
        }
        other => panic!("expected a digest mismatch, got {other:?}"),
    }
    assert!(error.hint().is_some());
}

#[tokio::test]
async fn a_layer_with_dotdot_is_refused() {
    let registry = Registry::start(REPO);
    let layer = tar(&[
        file("./devcontainer-feature.json", 0o644, FEATURE_JSON),
        file("../evil", 0o755, b"pwned"),
    ]);
    registry.publish("1", &layer, FEATURE_LAYER);
    match refused(&registry, ":1").await {
        OciError::Layer { entry, reason, .. } => {
            assert_eq!(entry.as_deref(), Some("../evil"));
            assert!(reason.contains(".."), "{reason}");
        }
        other => panic!("expected a layer refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn a_layer_with_a_symlink_is_refused() {
    let registry = Registry::start(REPO);
    let layer = tar(&[
        file("./devcontainer-feature.json", 0o644, FEATURE_JSON),
        symlink("./install.sh", "/etc/shadow"),
    ]);
    registry.publish("1", &layer, FEATURE_LAYER);
    let error = refused(&registry, ":1").await;
    match &error {
        OciError::Layer { entry, reason, .. } => {
            assert_eq!(entry.as_deref(), Some("./install.sh"));
            assert!(reason.contains("symbolic link"), "{reason}");
        }
        other => panic!("expected a layer refusal, got {other:?}"),
    }
    assert!(error.to_string().contains("./install.sh"), "{error}");
}

#[tokio::test]
async fn a_layer_without_devcontainer_feature_json_is_refused() {
    let registry = Registry::start(REPO);
    let layer = tar(&[file("./install.sh", 0o755, INSTALL_SH)]);
    registry.publish("1", &layer, FEATURE_LAYER);
    match refused(&registry, ":1").await {
        OciError::Layer { entry, reason, .. } => {
            assert_eq!(entry, None);
            assert!(reason.contains("devcontainer-feature.json"), "{reason}");
        }
        other => panic!("expected a layer refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn a_gzipped_oci_layer_is_accepted() {
    let registry = Registry::start(REPO);
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(&good_layer()).expect("gzip");
    let gz = encoder.finish().expect("gzip");
    registry.publish("1", &gz, "application/vnd.oci.image.layer.v1.tar+gzip");
    let feature = fetch(&reference(&registry, ":1"), &options(&registry))
        .await
        .expect("fetch");
    assert_eq!(feature.files[0].path, "devcontainer-feature.json");
}

#[tokio::test]
async fn an_unknown_tag_is_a_404_with_a_hint() {
    let registry = Registry::start(REPO);
    registry.publish("1", &good_layer(), FEATURE_LAYER);
    let error = refused(&registry, ":2").await;
    match &error {
        OciError::Registry {
            status, message, ..
        } => {
            assert_eq!(*status, 404);
            assert_eq!(message.as_deref(), Some("NOT_FOUND: no such thing"));
        }
        other => panic!("expected a registry error, got {other:?}"),
    }
    assert!(error.hint().is_some_and(|h| h.contains("name and tag")));
}

#[tokio::test]
async fn oversized_manifests_are_cut_off() {
    for without_length in [false, true] {
        let registry = Registry::start(REPO);
        if without_length {
            registry.send_without_content_length();
        }
        let mut huge = br#"{"schemaVersion":2,"x":""#.to_vec();
        huge.resize(16 * 1024 * 1024 + 10, b'a');
        registry.put_manifest("1", huge);
        match refused(&registry, ":1").await {
            OciError::Manifest { reason, .. } => assert!(reason.contains("larger"), "{reason}"),
            other => panic!("expected a manifest error, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_blob_longer_than_stated_is_cut_off() {
    let registry = Registry::start(REPO);
    registry.send_without_content_length();
    let layer = good_layer();
    registry.publish("1", &layer, FEATURE_LAYER);
    let mut longer = layer.clone();
    longer.extend_from_slice(&[0; 4096]);
    registry.put_blob(&sha256(&layer), longer);
    match refused(&registry, ":1").await {
        OciError::Layer { entry, reason, .. } => {
            assert_eq!(entry, None);
            assert!(reason.contains("larger"), "{reason}");
        }
        other => panic!("expected a layer error, got {other:?}"),
    }
}

#[tokio::test]
async fn plain_http_is_used_only_for_listed_hosts() {
    let registry = Registry::start(REPO);
    registry.publish("1", &good_layer(), FEATURE_LAYER);
    let options = FetchOptions {
        timeout: Duration::from_secs(20),
        ..FetchOptions::default()
    };
    // HTTPS to a plain-HTTP server: the TLS handshake fails.
    match fetch(&reference(&registry, ":1"), &options).await {
        Err(OciError::Network { url, .. }) => assert!(url.starts_with("https://"), "{url}"),
        other => panic!("expected a network error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_silent_registry_times_out() {
    // Accepts connections (the kernel does) but never answers.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let host = listener.local_addr().expect("addr").to_string();
    let reference = FeatureReference::parse(&format!("{host}/{REPO}:1")).expect("parse");
    let options = FetchOptions {
        plain_http_hosts: vec![host],
        timeout: Duration::from_millis(300),
        ..FetchOptions::default()
    };
    let error = fetch(&reference, &options)
        .await
        .expect_err("must time out");
    assert!(matches!(error, OciError::Timeout { .. }), "{error:?}");
    assert!(error.to_string().contains(&reference.to_string()));
    drop(listener);
}

/// A real feature from ghcr.io, for a machine that can reach it:
/// `cargo test -p kennel-oci -- --ignored`.
#[tokio::test]
#[ignore = "needs ghcr.io"]
async fn fetches_a_published_feature_from_ghcr() {
    let reference =
        FeatureReference::parse("ghcr.io/devcontainers/features/common-utils:2").expect("parse");
    let feature = fetch(&reference, &FetchOptions::default())
        .await
        .expect("fetch");
    assert!(feature.digest.starts_with("sha256:"));
    assert!(
        feature
            .files
            .iter()
            .any(|f| f.path == "devcontainer-feature.json")
    );
    assert!(feature.files.iter().any(|f| f.path == "install.sh"));
}

#[tokio::test]
async fn https_with_an_extra_root_and_refused_without_it() {
    let (registry, ca_pem) = Registry::start_tls(REPO);
    let digest = registry.publish("1", &good_layer(), FEATURE_LAYER);
    let reference = reference(&registry, ":1");

    // The CA is not among the system roots: refused, with the TLS hint.
    let without = FetchOptions {
        timeout: Duration::from_secs(20),
        ..FetchOptions::default()
    };
    let error = fetch(&reference, &without).await.expect_err("untrusted");
    assert!(matches!(error, OciError::Network { .. }), "{error:?}");
    assert!(
        error.hint().is_some_and(|h| h.contains("certificate")),
        "{error:?}"
    );

    // Trusted beside the system roots: the token exchange and the
    // downloads all run over TLS.
    let with = FetchOptions {
        extra_roots_pem: ca_pem.into_bytes(),
        ..without
    };
    let feature = fetch(&reference, &with).await.expect("fetch over TLS");
    assert_eq!(feature.digest, digest);
    assert_eq!(feature.files.len(), 3);
}

#[tokio::test]
async fn a_plain_http_token_service_is_refused_unless_listed() {
    let registry = Registry::start(REPO);
    registry.publish("1", &good_layer(), FEATURE_LAYER);
    // The registry is reached as localhost:<port>, which is allowed over
    // plain HTTP; the token service it names is http://127.0.0.1:<port>,
    // which is not.
    let port = registry.addr.port();
    let reference = FeatureReference::parse(&format!("localhost:{port}/{REPO}:1")).expect("parse");
    let options = FetchOptions {
        plain_http_hosts: vec![format!("localhost:{port}")],
        timeout: Duration::from_secs(20),
        ..FetchOptions::default()
    };
    let error = fetch(&reference, &options).await.expect_err("refused");
    match &error {
        OciError::Network { url, reason, .. } => {
            assert!(
                url.starts_with(&format!("http://127.0.0.1:{port}/token")),
                "{url}"
            );
            assert!(reason.contains("not HTTPS"), "{reason}");
        }
        other => panic!("expected a network error, got {other:?}"),
    }
    assert!(error.hint().is_some_and(|h| h.contains("plain-HTTP")));
    assert!(
        !registry.log().iter().any(|l| l.path.starts_with("/token")),
        "no token was asked for"
    );
}
