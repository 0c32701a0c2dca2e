use super::*;

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Request;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::UnixTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const GH_PLACEHOLDER: &str = "ghp_PLACEHOLDERplaceholder0000000000000";
const GH_VALUE: &str = "ghp_realREALrealREALrealREALrealREAL1234";
const AN_PLACEHOLDER: &str = "sk-ant-PLACEHOLDER-000000000000";
const AN_VALUE: &str = "sk-ant-real/value+with=odd&chars";

fn github() -> Credential {
    Credential {
        name: "GITHUB_TOKEN".into(),
        placeholder: GH_PLACEHOLDER.into(),
        value: GH_VALUE.into(),
        hosts: vec!["github.com".into(), "*.github.com".into()],
        places: vec![
            Place::Header {
                name: "Authorization".into(),
            },
            Place::Basic,
        ],
        methods: vec!["GET".into(), "POST".into()],
        paths: vec!["/repos/acme/app/*".into(), "/acme/app.git/".into()],
        refresh: None,
    }
}

fn anthropic() -> Credential {
    Credential {
        name: "ANTHROPIC_API_KEY".into(),
        placeholder: AN_PLACEHOLDER.into(),
        value: AN_VALUE.into(),
        hosts: vec!["api.anthropic.com".into()],
        places: vec![
            Place::Header {
                name: "x-api-key".into(),
            },
            Place::Query {
                param: "key".into(),
            },
        ],
        methods: Vec::new(),
        paths: Vec::new(),
        refresh: None,
    }
}

fn both() -> Vec<Credential> {
    vec![github(), anthropic()]
}

fn head(method: &str, uri: &str, headers: &[(&str, &str)]) -> Parts {
    let mut builder = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(()).expect("request").into_parts().0
}

fn header<'a>(parts: &'a Parts, name: &str) -> &'a str {
    parts
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

fn basic(user_password: &str) -> String {
    format!("Basic {}", BASE64.encode(user_password))
}

fn refused(result: Result<Injected, NotBound>) -> NotBound {
    match result {
        Ok(injected) => panic!("not refused; injected {:?}", injected.names()),
        Err(not_bound) => {
            let text = not_bound.to_string();
            assert!(
                !text.contains(GH_VALUE) && !text.contains(AN_VALUE),
                "{text}"
            );
            not_bound
        }
    }
}

#[test]
fn header_placeholder_is_swapped() {
    let mut parts = head(
        "POST",
        "/v1/messages",
        &[
            ("x-api-key", AN_PLACEHOLDER),
            ("content-type", "application/json"),
        ],
    );
    let injected = swap(&both(), "api.anthropic.com", &mut parts).expect("bound");
    assert_eq!(injected.names().as_deref(), Some("ANTHROPIC_API_KEY"));
    assert_eq!(header(&parts, "x-api-key"), AN_VALUE);
    assert!(parts.headers["x-api-key"].is_sensitive());
    assert_eq!(header(&parts, "content-type"), "application/json");
    assert!(!format!("{:?}", parts.headers).contains(AN_VALUE));
}

#[test]
fn bearer_authorization_is_swapped_inside_the_value() {
    let mut parts = head(
        "GET",
        "/repos/acme/app/pulls",
        &[("authorization", &format!("Bearer {GH_PLACEHOLDER}"))],
    );
    let injected = swap(&both(), "api.github.com", &mut parts).expect("bound");
    assert_eq!(injected.names().as_deref(), Some("GITHUB_TOKEN"));
    assert_eq!(
        header(&parts, "authorization"),
        format!("Bearer {GH_VALUE}")
    );
}

#[test]
fn basic_password_and_user_parts_are_swapped() {
    for (sent, expected) in [
        (
            format!("x-access-token:{GH_PLACEHOLDER}"),
            format!("x-access-token:{GH_VALUE}"),
        ),
        (
            format!("{GH_PLACEHOLDER}:x-oauth-basic"),
            format!("{GH_VALUE}:x-oauth-basic"),
        ),
    ] {
        let mut parts = head(
            "GET",
            "/acme/app.git/info/refs?service=git-upload-pack",
            &[("authorization", &basic(&sent))],
        );
        let injected = swap(&both(), "github.com", &mut parts).expect("bound");
        assert_eq!(header(&parts, "authorization"), basic(&expected));
        // An echo of the header, or of its token alone, is scrubbed back.
        let mut headers = HeaderMap::new();
        headers.insert("x-echo", parts.headers["authorization"].clone());
        let token = basic(&expected).split_off(6);
        headers.insert("x-token", HeaderValue::from_str(&token).expect("token"));
        injected.scrubber().expect("scrubber").headers(&mut headers);
        assert_eq!(headers["x-echo"], basic(&sent).as_str());
        assert_eq!(headers["x-token"], basic(&sent)[6..]);
    }
    // Scheme spelled differently by the client: kept.
    let sent = format!("BASIC {}", BASE64.encode(format!("u:{GH_PLACEHOLDER}")));
    let mut parts = head("GET", "/acme/app.git/", &[("authorization", &sent)]);
    swap(&both(), "github.com", &mut parts).expect("bound");
    assert_eq!(
        header(&parts, "authorization"),
        format!("BASIC {}", BASE64.encode(format!("u:{GH_VALUE}")))
    );
}

#[test]
fn basic_is_refused_where_only_a_header_is_bound() {
    let mut only_header = github();
    only_header.places = vec![Place::Header {
        name: "authorization".into(),
    }];
    let mut parts = head(
        "GET",
        "/repos/acme/app/",
        &[("authorization", &basic(&format!("x:{GH_PLACEHOLDER}")))],
    );
    let not_bound = refused(swap(&[only_header], "github.com", &mut parts));
    assert!(
        not_bound.why.contains("Authorization: Basic"),
        "{}",
        not_bound.why
    );
}

#[test]
fn query_value_is_swapped_and_re_encoded() {
    // The client percent-encoded the placeholder's `-`; the other parameters
    // keep their exact encoding.
    let encoded = AN_PLACEHOLDER.replace('-', "%2D");
    let uri = format!("/v1/models?a=1%202&key={encoded}&b=x+y&key2={AN_PLACEHOLDER}x");
    let mut unbound_neighbour = head("GET", &uri, &[]);
    // `key2` is another parameter: refused.
    let not_bound = refused(swap(&both(), "api.anthropic.com", &mut unbound_neighbour));
    assert!(
        not_bound.why.contains("query parameter key2"),
        "{}",
        not_bound.why
    );

    let uri = format!("/v1/models?a=1%202&key={encoded}&b=x+y");
    let mut parts = head("GET", &uri, &[]);
    let injected = swap(&both(), "api.anthropic.com", &mut parts).expect("bound");
    let expected_value = "sk-ant-real%2Fvalue%2Bwith%3Dodd%26chars";
    assert_eq!(
        parts.uri.query(),
        Some(format!("a=1%202&key={expected_value}&b=x+y").as_str())
    );
    assert_eq!(parts.uri.path(), "/v1/models");
    // Decoding gives the value back.
    let decoded: Vec<u8> = percent_decode(expected_value.as_bytes()).collect();
    assert_eq!(decoded, AN_VALUE.as_bytes());
    // A server echoing the URL it got shows the client its placeholder.
    let mut scrub = injected.scrubber().expect("scrubber");
    let echoed = format!("you asked for {}", parts.uri);
    assert_eq!(
        String::from_utf8(scrubbed(&mut scrub, [echoed.as_bytes()])).expect("utf8"),
        format!("you asked for /v1/models?a=1%202&key={AN_PLACEHOLDER}&b=x+y")
    );

    // Not encoded at all, in the middle of the value.
    let mut parts = head("GET", &format!("/x?key=pre{AN_PLACEHOLDER}post"), &[]);
    swap(&both(), "api.anthropic.com", &mut parts).expect("bound");
    assert_eq!(
        parts.uri.query(),
        Some(format!("key=pre{expected_value}post").as_str())
    );
}

#[test]
fn placeholder_in_an_unbound_header_is_refused() {
    let mut parts = head(
        "POST",
        "/v1/messages",
        &[("x-api-key", AN_PLACEHOLDER), ("x-debug", AN_PLACEHOLDER)],
    );
    let before = parts.headers.clone();
    let not_bound = refused(swap(&both(), "api.anthropic.com", &mut parts));
    assert_eq!(not_bound.credential, "ANTHROPIC_API_KEY");
    assert!(
        not_bound.why.contains("header x-debug"),
        "{}",
        not_bound.why
    );
    assert!(
        not_bound.why.contains("header x-api-key"),
        "{}",
        not_bound.why
    );
    // Nothing was swapped before the refusal.
    assert_eq!(parts.headers, before);
}

#[test]
fn placeholder_hidden_by_percent_encoding_or_in_the_path_is_refused() {
    let encoded: String = AN_PLACEHOLDER
        .bytes()
        .map(|b| format!("%{b:02X}"))
        .collect();
    let mut parts = head("GET", "/", &[("x-api-key", &encoded)]);
    let not_bound = refused(swap(&both(), "api.anthropic.com", &mut parts));
    assert!(
        not_bound.why.contains("percent-encoded"),
        "{}",
        not_bound.why
    );

    for path in [
        format!("/keys/{AN_PLACEHOLDER}"),
        format!("/keys/{encoded}"),
    ] {
        let mut parts = head("GET", &path, &[("x-api-key", AN_PLACEHOLDER)]);
        let not_bound = refused(swap(&both(), "api.anthropic.com", &mut parts));
        assert!(not_bound.why.contains("the URL path"), "{}", not_bound.why);
    }

    let mut parts = head("GET", &format!("/x?{AN_PLACEHOLDER}=1"), &[]);
    let not_bound = refused(swap(&both(), "api.anthropic.com", &mut parts));
    assert!(
        not_bound.why.contains("query parameter name"),
        "{}",
        not_bound.why
    );
}

#[test]
fn wrong_host_method_or_path_is_refused() {
    let auth = format!("Bearer {GH_PLACEHOLDER}");
    let cases = [
        (
            "GET",
            "/repos/acme/app/",
            "evil.example",
            "not to evil.example",
        ),
        (
            "GET",
            "/repos/acme/app/",
            "github.com.evil.example",
            "not to",
        ),
        (
            "DELETE",
            "/repos/acme/app/",
            "api.github.com",
            "method DELETE",
        ),
        ("GET", "/repos/other/app/", "api.github.com", "not under"),
        (
            "GET",
            "/repos/acme/application",
            "api.github.com",
            "not under",
        ),
        (
            "GET",
            "/repos/acme/app/../../other/",
            "api.github.com",
            ". or ..",
        ),
        (
            "GET",
            "/repos/acme/app/%2e%2e/x",
            "api.github.com",
            ". or ..",
        ),
    ];
    for (method, path, host, why) in cases {
        let mut parts = head(method, path, &[("authorization", &auth)]);
        let not_bound = refused(swap(&both(), host, &mut parts));
        assert_eq!(not_bound.credential, "GITHUB_TOKEN");
        assert!(
            not_bound.why.contains(why),
            "{method} {host}{path}: {}",
            not_bound.why
        );
        assert_eq!(header(&parts, "authorization"), auth, "left as it was");
    }
    // Lower-case method names in the configuration still match.
    let mut lower = github();
    lower.methods = vec!["get".into()];
    let mut parts = head("GET", "/repos/acme/app/x", &[("authorization", &auth)]);
    swap(&[lower], "github.com", &mut parts).expect("bound");
}

#[test]
fn two_credentials_in_one_request() {
    let mut two_hosts = anthropic();
    two_hosts.hosts.push("api.github.com".into());
    let credentials = vec![github(), two_hosts];
    let mut parts = head(
        "POST",
        &format!("/repos/acme/app/hooks?key={AN_PLACEHOLDER}"),
        &[
            ("authorization", &format!("token {GH_PLACEHOLDER}")),
            ("x-api-key", AN_PLACEHOLDER),
        ],
    );
    let injected = swap(&credentials, "api.github.com", &mut parts).expect("bound");
    assert_eq!(
        injected.names().as_deref(),
        Some("GITHUB_TOKEN,ANTHROPIC_API_KEY")
    );
    assert_eq!(header(&parts, "authorization"), format!("token {GH_VALUE}"));
    assert_eq!(header(&parts, "x-api-key"), AN_VALUE);
    assert!(
        parts
            .uri
            .query()
            .is_some_and(|q| q.starts_with("key=sk-ant-real%2F"))
    );

    // One of the two not bound: the whole request is refused.
    let mut parts = head(
        "POST",
        "/repos/acme/app/hooks",
        &[
            ("authorization", &format!("token {GH_PLACEHOLDER}")),
            ("x-api-key", AN_PLACEHOLDER),
        ],
    );
    let not_bound = refused(swap(&both(), "api.github.com", &mut parts));
    assert_eq!(not_bound.credential, "ANTHROPIC_API_KEY");
    assert_eq!(
        header(&parts, "authorization"),
        format!("token {GH_PLACEHOLDER}")
    );
}

#[test]
fn requests_without_a_placeholder_are_unchanged() {
    let mut parts = head(
        "PATCH",
        "/anything/../at/all?q=%41",
        &[
            ("authorization", "Bearer something-else"),
            ("x-api-key", "mine"),
        ],
    );
    let before = (
        parts.uri.clone(),
        parts.headers.clone(),
        parts.method.clone(),
    );
    let injected = swap(&both(), "api.github.com", &mut parts).expect("nothing to refuse");
    assert_eq!(injected.names(), None);
    assert!(injected.scrubber().is_none());
    assert_eq!((parts.uri, parts.headers, parts.method), before);
}

#[test]
fn plain_http_with_a_placeholder_is_refused() {
    let parts = head(
        "GET",
        "http://api.github.com/repos/acme/app/",
        &[("authorization", &format!("Bearer {GH_PLACEHOLDER}"))],
    );
    let not_bound = check_plain(&both(), "api.github.com", &parts).expect_err("refused");
    assert!(
        not_bound.why.contains("only sent over HTTPS"),
        "{}",
        not_bound.why
    );

    let parts = head(
        "GET",
        "http://evil.example/",
        &[("x-api-key", AN_PLACEHOLDER)],
    );
    let not_bound = check_plain(&both(), "evil.example", &parts).expect_err("refused");
    assert_eq!(not_bound.credential, "ANTHROPIC_API_KEY");
    assert!(
        not_bound.why.contains("not bound to evil.example"),
        "{}",
        not_bound.why
    );

    let parts = head("GET", "http://evil.example/", &[("x-api-key", "nothing")]);
    assert_eq!(check_plain(&both(), "evil.example", &parts), Ok(()));
}

#[test]
fn validate_rejects_unusable_credentials_without_showing_the_value() {
    assert!(validate(&both()).is_ok());
    type Change = fn(&mut Credential);
    let cases: Vec<(Change, &str)> = vec![
        (
            |c| c.value = "line\r\nInjected: yes".into(),
            "value contains a line break",
        ),
        (
            |c| c.value = "trailing\n".into(),
            "value contains a line break",
        ),
        (|c| c.value = "nul\0".into(), "NUL"),
        (|c| c.value = String::new(), "value is empty"),
        (|c| c.placeholder = "a\rb".into(), "placeholder contains"),
        (|c| c.placeholder = String::new(), "placeholder is empty"),
        (|c| c.hosts.clear(), "no host"),
        (|c| c.places.clear(), "no place"),
        (|c| c.refresh = Some(Vec::new()), "refresh command is empty"),
        (
            |c| c.refresh = Some(vec![String::new()]),
            "refresh command is empty",
        ),
    ];
    for (change, why) in cases {
        let mut credential = github();
        change(&mut credential);
        let error = validate(&[credential.clone()]).expect_err(why).to_string();
        assert!(
            error.contains("GITHUB_TOKEN") && error.contains(why),
            "{error}"
        );
        if !credential.value.is_empty() {
            assert!(!error.contains(&credential.value), "{error}");
        }
    }
    // Placeholders overlapping each other.
    let mut inner = anthropic();
    inner.placeholder = GH_PLACEHOLDER[..10].to_string();
    let error = validate(&[github(), inner])
        .expect_err("overlap")
        .to_string();
    assert!(error.contains("ANTHROPIC_API_KEY"), "{error}");
}

#[test]
fn debug_and_serde_of_a_credential() {
    let credential = github();
    let debug = format!("{credential:?}");
    assert!(
        debug.contains("<redacted>") && debug.contains("GITHUB_TOKEN"),
        "{debug}"
    );
    assert!(!debug.contains(GH_VALUE), "{debug}");

    let json = serde_json::to_value(&anthropic().places).expect("json");
    assert_eq!(
        json,
        serde_json::json!([
            {"kind": "header", "name": "x-api-key"},
            {"kind": "query", "param": "key"},
        ])
    );
    let basic: Place = serde_json::from_str(r#"{"kind":"basic"}"#).expect("basic");
    assert_eq!(basic, Place::Basic);
    let text = serde_json::to_string(&credential).expect("json");
    let back: Credential = serde_json::from_str(&text).expect("back");
    assert_eq!(back, credential);
}

fn verify_leaf(
    ca_pem: &str,
    leaf: &CertificateDer<'static>,
    host: &str,
) -> Result<(), rustls::Error> {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).expect("ca pem"))
        .expect("root");
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .expect("verifier");
    verifier
        .verify_server_cert(
            leaf,
            &[],
            &ServerName::try_from(host.to_string()).expect("name"),
            &[],
            UnixTime::now(),
        )
        .map(drop)
}

use rustls::pki_types::ServerName;

#[test]
fn session_ca_signs_certificates_for_hosts() {
    let ca = SessionCa::generate("s-1").expect("ca");
    assert!(ca.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
    assert!(ca.key_pem().contains("PRIVATE KEY"));
    assert!(!format!("{ca:?}").contains(ca.key_pem()));

    let other = SessionCa::generate("s-1").expect("ca");
    assert_ne!(ca.cert_pem(), other.cert_pem());
    assert_ne!(ca.key_pem(), other.key_pem());

    let (leaf, _) = ca.leaf("api.github.com").expect("leaf");
    verify_leaf(ca.cert_pem(), &leaf, "api.github.com").expect("valid for its host");
    assert!(verify_leaf(ca.cert_pem(), &leaf, "evil.example").is_err());
    assert!(verify_leaf(other.cert_pem(), &leaf, "api.github.com").is_err());
    let (ip_leaf, _) = ca.leaf("127.0.0.1").expect("ip leaf");
    verify_leaf(ca.cert_pem(), &ip_leaf, "127.0.0.1").expect("valid for its address");

    // The proxy daemon's copy, from the two PEM texts, signs for the same CA.
    let copy = SessionCa::from_pem(ca.cert_pem(), ca.key_pem()).expect("from pem");
    let (leaf, _) = copy.leaf("github.com").expect("leaf");
    verify_leaf(ca.cert_pem(), &leaf, "github.com").expect("chain to the original");

    assert!(matches!(
        SessionCa::from_pem(ca.cert_pem(), other.key_pem()),
        Err(BrokerError::BadCa(_))
    ));
    assert!(SessionCa::from_pem("junk", ca.key_pem()).is_err());
    assert!(SessionCa::from_pem(ca.cert_pem(), "junk").is_err());
}

/// A CA made for the bound hosts signs for nothing else that a TLS client
/// would accept: other names, other addresses.
#[test]
fn session_ca_is_constrained_to_the_bound_hosts() {
    let ca = SessionCa::generate_for(
        "s-2",
        &["api.github.com".to_string(), "*.example.org".to_string()],
    )
    .expect("ca");
    for good in ["api.github.com", "x.example.org", "a.b.example.org"] {
        let (leaf, _) = ca.leaf(good).expect("leaf");
        verify_leaf(ca.cert_pem(), &leaf, good).unwrap_or_else(|error| panic!("{good}: {error}"));
    }
    for bad in ["evil.example", "github.com.evil.example", "127.0.0.1"] {
        let (leaf, _) = ca.leaf(bad).expect("leaf");
        assert!(
            verify_leaf(ca.cert_pem(), &leaf, bad).is_err(),
            "the constrained CA must not be trusted for {bad}"
        );
    }
    // An address among the hosts: that address, and no other.
    let ca = SessionCa::generate_for("s-3", &["127.0.0.1".to_string()]).expect("ca");
    let (leaf, _) = ca.leaf("127.0.0.1").expect("leaf");
    verify_leaf(ca.cert_pem(), &leaf, "127.0.0.1").expect("its address");
    let (leaf, _) = ca.leaf("127.0.0.2").expect("leaf");
    assert!(verify_leaf(ca.cert_pem(), &leaf, "127.0.0.2").is_err());
}

#[test]
fn scrubber_replaces_values_split_across_chunks() {
    let injected = Injected {
        names: vec!["GITHUB_TOKEN".into(), "ANTHROPIC_API_KEY".into()],
        echoes: both()
            .into_iter()
            .map(|c| (c.value.into_bytes(), c.placeholder.into_bytes()))
            .collect(),
        refreshable: Vec::new(),
    };
    let body = format!("echo: {GH_VALUE} and {AN_VALUE}, again {GH_VALUE}.");
    let expected = format!("echo: {GH_PLACEHOLDER} and {AN_PLACEHOLDER}, again {GH_PLACEHOLDER}.");
    for size in [1, 2, 3, 7, 40, 1000] {
        let mut scrub = injected.scrubber().expect("scrubber");
        let out = scrubbed(&mut scrub, body.as_bytes().chunks(size));
        assert_eq!(
            String::from_utf8(out).expect("utf8"),
            expected,
            "chunks of {size}"
        );
    }
    let scrub = injected.scrubber().expect("scrubber");
    assert!(!scrub.keeps_length());
    let mut headers = HeaderMap::new();
    headers.insert("x-echo", HeaderValue::from_static(AN_VALUE));
    scrub.headers(&mut headers);
    assert_eq!(headers["x-echo"], AN_PLACEHOLDER);
}

/// The body scrubbed as it would be relayed: `chunks` pushed one by one, then
/// the end.
fn scrubbed<'a>(scrub: &mut Scrubber, chunks: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut pieces = VecDeque::new();
    for chunk in chunks {
        scrub.push(Bytes::copy_from_slice(chunk), &mut pieces);
    }
    scrub.finish(&mut pieces);
    assert!(pieces.iter().all(|piece| !piece.is_empty()), "empty piece");
    pieces.into_iter().flatten().collect()
}

/// (value, placeholder) pairs.
type Pairs<'a> = &'a [(&'a [u8], &'a [u8])];

/// The scrubber's rule applied to a whole body at once, the simple way: at
/// each position the longest value occurring there (the first in the
/// scrubber's order), else the byte as it is.
fn scrubbed_whole(pairs: Pairs, body: &[u8]) -> Vec<u8> {
    let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = pairs
        .iter()
        .map(|(value, placeholder)| (value.to_vec(), placeholder.to_vec()))
        .collect();
    pairs.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.cmp(b)));
    pairs.dedup();
    pairs.retain(|(value, placeholder)| value != placeholder && !value.is_empty());
    let mut out = Vec::new();
    let mut at = 0;
    while at < body.len() {
        match pairs
            .iter()
            .find(|(value, _)| body[at..].starts_with(value))
        {
            Some((value, placeholder)) => {
                out.extend_from_slice(placeholder);
                at += value.len();
            }
            None => {
                out.push(body[at]);
                at += 1;
            }
        }
    }
    out
}

fn scrubber_of(pairs: Pairs) -> Scrubber {
    Scrubber::new(
        pairs
            .iter()
            .map(|(value, placeholder)| (value.to_vec(), placeholder.to_vec()))
            .collect(),
    )
    .expect("scrubber")
}

/// `body` cut into two and into three pieces at every position (empty
/// pieces included), and into single bytes.
fn every_cut(body: &[u8]) -> Vec<Vec<&[u8]>> {
    let mut cuts = vec![body.chunks(1).collect::<Vec<_>>()];
    for i in 0..=body.len() {
        for j in i..=body.len() {
            cuts.push(vec![&body[..i], &body[i..j], &body[j..]]);
        }
    }
    cuts
}

#[test]
fn scrubber_replaces_a_value_split_at_every_position() {
    let basic_header = format!("Basic {}", BASE64.encode(format!("x:{GH_VALUE}")));
    let basic_had = format!("Basic {}", BASE64.encode(format!("x:{GH_PLACEHOLDER}")));
    let pairs: Pairs = &[
        (GH_VALUE.as_bytes(), GH_PLACEHOLDER.as_bytes()),
        (AN_VALUE.as_bytes(), AN_PLACEHOLDER.as_bytes()),
        (basic_header.as_bytes(), basic_had.as_bytes()),
    ];
    // Back to back, a value in a longer one, a near miss, a prefix at the end.
    let body = format!(
        "{GH_VALUE}{AN_VALUE}.{basic_header}|{}~{}",
        &GH_VALUE[..GH_VALUE.len() - 1],
        &basic_header[..10]
    );
    let expected = format!(
        "{GH_PLACEHOLDER}{AN_PLACEHOLDER}.{basic_had}|{}~{}",
        &GH_VALUE[..GH_VALUE.len() - 1],
        &basic_header[..10]
    );
    assert_eq!(scrubbed_whole(pairs, body.as_bytes()), expected.as_bytes());
    for cut in every_cut(body.as_bytes()) {
        let sizes: Vec<usize> = cut.iter().map(|piece| piece.len()).collect();
        let out = scrubbed(&mut scrubber_of(pairs), cut);
        assert_eq!(
            String::from_utf8(out).expect("utf8"),
            expected,
            "cut {sizes:?}"
        );
    }
}

#[test]
fn scrubber_with_overlapping_values() {
    // (value, placeholder) pairs, body, scrubbed body.
    let cases: &[(Pairs, &str, &str)] = &[
        // The earliest occurrence wins, then the search goes on after it.
        (&[(b"abc", b"111"), (b"bcd", b"222")], "abcd", "111d"),
        (&[(b"abc", b"111"), (b"bcd", b"222")], "xbcdabc", "x222111"),
        // At one position the longest value wins; its prefix alone is
        // replaced only once the rest is known not to follow.
        (
            &[(b"abc", b"111"), (b"abcdef", b"222222")],
            "abcdefabcdeXabc",
            "222222111deX111",
        ),
        // A value in a longer one that starts earlier.
        (
            &[(b"cd", b"__"), (b"abcdef", b"######")],
            "abcdefcd",
            "######__",
        ),
        // A value overlapping itself.
        (&[(b"aab", b"XYZ")], "aaab", "aXYZ"),
        (&[(b"abab", b"QQQQ")], "abababab", "QQQQQQQQ"),
        (&[(b"abab", b"QQQQ")], "ababa", "QQQQa"),
        // Placeholders of another length.
        (&[(b"ab", b""), (b"b", b"Bee")], "abba", "Beea"),
        // One byte.
        (&[(b"a", b"A")], "banana", "bAnAnA"),
    ];
    for (pairs, body, expected) in cases {
        assert_eq!(
            String::from_utf8(scrubbed_whole(pairs, body.as_bytes())).expect("utf8"),
            *expected,
            "{body}"
        );
        for cut in every_cut(body.as_bytes()) {
            let sizes: Vec<usize> = cut.iter().map(|piece| piece.len()).collect();
            let out = scrubbed(&mut scrubber_of(pairs), cut);
            assert_eq!(
                String::from_utf8(out).expect("utf8"),
                *expected,
                "{body} cut {sizes:?}"
            );
        }
    }
}

/// Random values over a small alphabet (so that they overlap, nest and
/// repeat), random bodies, random chunks: the same as the whole-body rule.
#[test]
fn scrubber_matches_the_whole_body_rule_on_random_input() {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut random = move |below: usize| {
        // xorshift64*
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % below
    };
    for round in 0..3000 {
        let word = |random: &mut dyn FnMut(usize) -> usize, alphabet: &[u8], max: usize| {
            let len = 1 + random(max);
            (0..len)
                .map(|_| alphabet[random(alphabet.len())])
                .collect::<Vec<u8>>()
        };
        let pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..1 + random(4))
            .map(|_| (word(&mut random, b"abc", 7), word(&mut random, b"XYZ", 8)))
            .collect();
        let body = {
            let len = random(120);
            (0..len).map(|_| b"abcd"[random(4)]).collect::<Vec<u8>>()
        };
        let borrowed: Vec<(&[u8], &[u8])> = pairs
            .iter()
            .map(|(value, placeholder)| (value.as_slice(), placeholder.as_slice()))
            .collect();
        let expected = scrubbed_whole(&borrowed, &body);
        let mut chunks = Vec::new();
        let mut at = 0;
        while at < body.len() {
            let size = match random(4) {
                0 => 0,
                1 => 1,
                2 => random(8),
                _ => random(40),
            }
            .min(body.len() - at);
            chunks.push(&body[at..at + size]);
            at += size;
        }
        let out = scrubbed(&mut scrubber_of(&borrowed), chunks.iter().copied());
        assert_eq!(
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(&expected),
            "round {round}: values {:?}, body {:?}, chunks {:?}",
            borrowed
                .iter()
                .map(|(value, _)| String::from_utf8_lossy(value))
                .collect::<Vec<_>>(),
            String::from_utf8_lossy(&body),
            chunks.iter().map(|chunk| chunk.len()).collect::<Vec<_>>()
        );
    }
}

/// A chunk in which nothing is replaced goes on as it came (the same
/// memory), less the end that may start a value; that end goes out on its
/// own, ahead of the next chunk.
#[test]
fn scrubber_passes_chunks_on_without_copying() {
    let mut scrub = scrubber_of(&[(GH_VALUE.as_bytes(), GH_PLACEHOLDER.as_bytes())]);
    let mut out = VecDeque::new();

    let first = Bytes::from(vec![b'.'; 4096]);
    scrub.push(first.clone(), &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].as_ptr(), out[0].len()), (first.as_ptr(), 4096));
    out.clear();

    // Ends with `ghp_r`, the start of the value: held back.
    let mut second = vec![b'-'; 4096];
    second[4091..].copy_from_slice(&GH_VALUE.as_bytes()[..5]);
    let second = Bytes::from(second);
    scrub.push(second.clone(), &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].as_ptr(), out[0].len()), (second.as_ptr(), 4091));
    out.clear();

    // Not continued: the held-back bytes, then this chunk, uncopied.
    let third = Bytes::from(vec![b'+'; 4096]);
    scrub.push(third.clone(), &mut out);
    assert_eq!(out.len(), 2);
    assert_eq!(out[0], &GH_VALUE.as_bytes()[..5]);
    assert_eq!((out[1].as_ptr(), out[1].len()), (third.as_ptr(), 4096));
    out.clear();

    // Continued: replaced (this chunk is copied, with the placeholder in it).
    scrub.push(Bytes::from_static(&GH_VALUE.as_bytes()[..5]), &mut out);
    assert!(out.is_empty());
    let mut fourth = GH_VALUE.as_bytes()[5..].to_vec();
    fourth.extend_from_slice(b" and more");
    scrub.push(Bytes::from(fourth), &mut out);
    scrub.finish(&mut out);
    let rest: Vec<u8> = out.into_iter().flatten().collect();
    assert_eq!(rest, format!("{GH_PLACEHOLDER} and more").as_bytes());
}

/// hyper reassembles a request head that arrives one byte per read; the swap
/// sees the whole head.
#[tokio::test]
async fn swap_on_a_request_arriving_one_byte_at_a_time() {
    // A duplex buffer of one byte: every read on the server side gets one byte.
    let (mut client, server) = tokio::io::duplex(1);
    let service = hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
        let (mut parts, _body) = req.into_parts();
        let text = match swap(&both(), "api.anthropic.com", &mut parts) {
            Ok(injected) => format!(
                "{} key={} query={}",
                injected.names().unwrap_or_default(),
                header(&parts, "x-api-key"),
                parts.uri.query().unwrap_or("")
            ),
            Err(not_bound) => format!("refused: {not_bound}"),
        };
        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(text))))
    });
    let served = tokio::spawn(
        hyper::server::conn::http1::Builder::new()
            .serve_connection(hyper_util::rt::TokioIo::new(server), service),
    );
    let request = format!(
        "GET /v1/models?key={AN_PLACEHOLDER} HTTP/1.1\r\nHost: api.anthropic.com\r\n\
         X-Api-Key: {AN_PLACEHOLDER}\r\nConnection: close\r\n\r\n"
    );
    let exchange = async {
        for byte in request.as_bytes() {
            client.write_all(&[*byte]).await.expect("write");
        }
        let mut reply = Vec::new();
        client.read_to_end(&mut reply).await.expect("read");
        String::from_utf8(reply).expect("utf8")
    };
    let reply = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .expect("in time");
    assert!(
        reply.ends_with(&format!(
            "ANTHROPIC_API_KEY key={AN_VALUE} query=key=sk-ant-real%2Fvalue%2Bwith%3Dodd%26chars"
        )),
        "{reply}"
    );
    served.await.expect("join").expect("served");
}

#[test]
fn a_refresh_runs_at_most_once_a_minute_and_never_twice_at_once() {
    let start = Instant::now();
    let mut state = Refreshes::default();
    assert!(state.claim(start));
    // Running: no second one, even much later.
    assert!(!state.claim(start + Duration::from_secs(1)));
    assert!(!state.claim(start + Duration::from_secs(120)));
    state.running = false;
    assert!(!state.claim(start + Duration::from_secs(59)));
    assert!(state.claim(start + REFRESH_INTERVAL));
    state.running = false;
    // A clock reading before the last start counts as recent.
    assert!(!state.claim(start));
}

#[test]
fn a_refreshed_value_loses_one_line_break_and_is_checked() {
    let ok = |out: &str| refreshed_value(out.as_bytes().to_vec());
    assert_eq!(ok("tok\n").as_deref(), Ok("tok"));
    assert_eq!(ok("tok\r\n").as_deref(), Ok("tok"));
    assert_eq!(ok("tok").as_deref(), Ok("tok"));
    assert_eq!(ok(" tok ").as_deref(), Ok(" tok "));
    for (out, why) in [
        ("", "is empty"),
        ("\n", "is empty"),
        ("\r\n", "is empty"),
        ("tok\n\n", "line break"),
        ("tok\r", "line break"),
        ("secret-one\nsecret-two\n", "line break"),
        ("nul\0byte", "NUL"),
    ] {
        let error = ok(out).expect_err(out);
        assert!(error.contains(why), "{out:?}: {error}");
        assert!(
            !error.contains("secret") && !error.contains("tok"),
            "{error}"
        );
    }
    let error = refreshed_value(vec![0xff, 0xfe]).expect_err("not UTF-8");
    assert!(error.contains("UTF-8"), "{error}");
    let long = "a".repeat(MAX_REFRESHED_VALUE + 1);
    assert!(ok(&long).expect_err("too long").contains("longer"));
    assert!(ok(&format!("{}\r\n", &long[1..])).is_ok());
}

#[test]
fn only_the_last_line_of_stderr_is_shown_escaped() {
    assert_eq!(last_line(b"first\nsecond\n\n"), "second");
    assert_eq!(last_line(b""), "");
    assert_eq!(
        last_line(b"bell\x07 and \x1b[31m"),
        "bell\\u{7} and \\u{1b}[31m"
    );
    let long = last_line("x".repeat(500).as_bytes());
    assert_eq!(long.chars().count(), 201);
}

fn sh(script: &str) -> Vec<String> {
    vec!["sh".into(), "-c".into(), script.into()]
}

#[tokio::test]
async fn a_refresh_command_gives_its_output_or_why_not() {
    let timeout = Duration::from_secs(10);
    assert_eq!(
        run_refresh(&sh("printf 'new-token\\r\\n'"), timeout).await,
        Ok("new-token".to_string())
    );
    // Stdin is /dev/null: a command reading it ends instead of waiting.
    assert_eq!(
        run_refresh(&sh("cat; echo read"), timeout).await,
        Ok("read".to_string())
    );
    let error = run_refresh(
        &sh("echo secret-out; echo noise >&2; echo 'token expired' >&2; exit 3"),
        timeout,
    )
    .await
    .expect_err("fails");
    assert_eq!(
        error,
        "its refresh command exited with status 3: token expired"
    );
    let error = run_refresh(&sh("echo secret-out; echo more"), timeout)
        .await
        .expect_err("two lines");
    assert!(!error.contains("secret-out"), "{error}");
    let error = run_refresh(&["/nonexistent/refresh".to_string()], timeout)
        .await
        .expect_err("no such program");
    assert!(error.contains("cannot run"), "{error}");
}

#[tokio::test]
async fn a_refresh_command_that_hangs_is_killed_with_what_it_started() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pid_file = dir.path().join("pid");
    // A grandchild holding stdout open, in the command's process group.
    let script = format!("sleep 30 & echo $! > '{}'; wait", pid_file.display());
    let started = Instant::now();
    let error = run_refresh(&sh(&script), Duration::from_millis(300))
        .await
        .expect_err("timed out");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(error.contains("did not finish within 0.3 s"), "{error}");
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .expect("pid")
        .trim()
        .parse()
        .expect("a pid");
    // Gone (or a zombie until init reaps it) shortly after.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let alive = state
            .rsplit(')')
            .next()
            .is_some_and(|rest| !rest.trim_start().starts_with('Z'));
        if !alive {
            break;
        }
        assert!(Instant::now() < deadline, "sleep {pid} still runs: {state}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_refresh_replaces_the_value_and_keeps_the_placeholder() {
    let mut refreshing = github();
    refreshing.refresh = Some(sh("echo ghp_NEWnewNEWnew"));
    let ca = Arc::new(SessionCa::generate("refresh-test").expect("ca"));
    let broker =
        Broker::new(vec![anthropic(), refreshing], ca, &[], Vec::new(), None).expect("broker");
    let request = || {
        head(
            "GET",
            "/repos/acme/app/issues",
            &[("authorization", &format!("token {GH_PLACEHOLDER}"))],
        )
    };
    let mut parts = request();
    let injected = broker.swap("api.github.com", &mut parts).expect("bound");
    assert_eq!(injected.refreshable, [1]);

    let (note, due) = broker.unauthorized(&injected);
    assert_eq!(note, "refresh of credential GITHUB_TOKEN started after 401");
    assert_eq!(due.len(), 1);
    // Claimed: a second 401 meanwhile starts nothing.
    let (note, again) = broker.unauthorized(&injected);
    assert!(again.is_empty() && note.contains("not refreshed"), "{note}");
    for refresh in due {
        broker
            .refresh(refresh, Duration::from_secs(10))
            .await
            .expect("refreshed");
    }
    let mut parts = request();
    let injected = broker.swap("api.github.com", &mut parts).expect("bound");
    assert_eq!(
        parts.headers["authorization"], "token ghp_NEWnewNEWnew",
        "the new value, for the same placeholder"
    );
    // The scrubber hides the new value.
    let mut headers = HeaderMap::new();
    headers.insert("x-echo", HeaderValue::from_static("ghp_NEWnewNEWnew"));
    injected.scrubber().expect("scrubber").headers(&mut headers);
    assert_eq!(headers["x-echo"], GH_PLACEHOLDER);
    // Within the minute: not again.
    let (_, due) = broker.unauthorized(&injected);
    assert!(due.is_empty());

    // A new value holding a placeholder is refused; the old one stays.
    let error = broker
        .replace_value(1, format!("x{AN_PLACEHOLDER}"))
        .expect_err("refused");
    assert!(error.contains("ANTHROPIC_API_KEY"), "{error}");
    let mut parts = request();
    broker.swap("api.github.com", &mut parts).expect("bound");
    assert_eq!(parts.headers["authorization"], "token ghp_NEWnewNEWnew");
    // Credentials without a command are never refreshed.
    let mut parts = head("GET", "/v1/models", &[("x-api-key", AN_PLACEHOLDER)]);
    let injected = broker.swap("api.anthropic.com", &mut parts).expect("bound");
    assert!(broker.unauthorized(&injected).1.is_empty());
}
