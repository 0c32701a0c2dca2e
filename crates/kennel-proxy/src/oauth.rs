//! Subscription logins: an agent's OAuth tokens stay on the host.
//!
//! An agent that logs in with a subscription (Claude Pro/Max) gets an access
//! token and a refresh token from its vendor's token endpoint, and keeps
//! refreshing them there. With an [`OAuthLogin`], the proxy terminates TLS
//! to that endpoint and reads its answers:
//!
//! * In a login session ([`OAuthLogin::capture`], `kennel login`), the
//!   answer to an authorization-code exchange is taken: the real tokens go
//!   to the host's [`LoginVault`], and the agent gets *sentinels* of the
//!   same shape in their place, which it writes to its credentials file.
//! * The access sentinel is a brokered credential like any other: swapped
//!   for the real access token in the bound header of requests to the bound
//!   hosts, refused anywhere else.
//! * When the agent refreshes with the refresh sentinel, the proxy takes
//!   the login's lock (shared by every kennel process of the user), and
//!   either answers from the vault (another session refreshed already and
//!   the token there is fresh) or sends the real refresh token to the
//!   endpoint itself, keeps what it answers, and hands the agent the same
//!   sentinels again. kennel is the only holder of the rotating refresh
//!   token; the sandbox never sees one.
//!
//! Every other request to the endpoint passes unchanged (a refresh with a
//! token that is not the sentinel, an authorization code outside a login
//! session). The real tokens never appear in a response, a log line or an
//! error.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::http::request::Parts;
use hyper::http::response;
use hyper::{Response, StatusCode};
use serde::{Deserialize, Serialize};

use crate::broker::{Credential, Injected, Place, replace_all};
use crate::policy::Reason;
use crate::server::{Pending, ProxyBody, RequestBody};
use crate::terminate::{Terminated, client_head};

/// The largest token request the proxy reads.
const MAX_REQUEST: usize = 64 * 1024;
/// The largest token response the proxy reads.
const MAX_RESPONSE: usize = 1024 * 1024;
/// A kept access token that expires sooner than this is refreshed rather
/// than handed out again.
const FRESH_FOR_SECS: u64 = 300;
/// When the endpoint gives no `expires_in`.
const DEFAULT_LIFETIME_SECS: u64 = 3600;

/// An agent's subscription login, brokered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OAuthLogin {
    /// The login's name (the agent's): the vault's key, and with `-login`
    /// the access token's credential name in the log.
    pub name: String,
    /// The token endpoint: host (normalized) and path, HTTPS on 443.
    pub token_host: String,
    pub token_path: String,
    /// Hosts the access token is sent to, and in which header
    /// (`authorization` for `Bearer …`).
    pub hosts: Vec<String>,
    pub header: String,
    /// Take a new login from an authorization-code exchange (`kennel
    /// login`); other sessions only refresh the one they were given.
    #[serde(default)]
    pub capture: bool,
}

impl OAuthLogin {
    /// The name of the access token's credential: `claude-login`.
    pub fn credential_name(&self) -> String {
        format!("{}-login", self.name)
    }

    /// The access token as a brokered credential.
    pub(crate) fn credential(&self, tokens: &LoginTokens) -> Credential {
        Credential {
            name: self.credential_name(),
            placeholder: tokens.access_sentinel.clone(),
            value: tokens.access.clone(),
            hosts: self.hosts.clone(),
            places: vec![Place::Header {
                name: self.header.clone(),
            }],
            methods: Vec::new(),
            paths: Vec::new(),
            refresh: None,
        }
    }
}

/// A login's tokens as the host keeps them, with the sentinels the agent
/// has in their place.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginTokens {
    pub access: String,
    pub refresh: String,
    /// When the access token expires, in seconds since the epoch.
    pub expires_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    pub access_sentinel: String,
    pub refresh_sentinel: String,
}

impl fmt::Debug for LoginTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginTokens")
            .field("access", &"<redacted>")
            .field("refresh", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .field("scope", &self.scope)
            .field("access_sentinel", &self.access_sentinel)
            .field("refresh_sentinel", &self.refresh_sentinel)
            .finish()
    }
}

/// Where the host keeps logins: shared by every kennel process of the
/// user, so that one refresh token has one owner at a time. The calls
/// block (file locks, the keyring); the proxy makes them off its
/// event loop.
pub trait LoginVault: Send + Sync + fmt::Debug {
    /// Waits until login `name` is this caller's alone; held until the
    /// returned guard is dropped.
    fn lock(&self, name: &str) -> Result<Box<dyn Send>, String>;
    /// The kept tokens of login `name`, if any.
    fn load(&self, name: &str) -> Result<Option<LoginTokens>, String>;
    /// Keeps `tokens` as login `name`.
    fn save(&self, name: &str, tokens: &LoginTokens) -> Result<(), String>;
}

/// A token request's body, as sent: JSON (Claude Code) or a form.
#[derive(Debug, Clone, PartialEq)]
enum TokenRequest {
    Json(serde_json::Map<String, serde_json::Value>),
    Form(Vec<(String, String)>),
}

impl TokenRequest {
    fn parse(content_type: Option<&str>, body: &[u8]) -> Option<TokenRequest> {
        let is_form = content_type.is_some_and(|value| {
            value
                .to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        });
        if is_form {
            return Some(TokenRequest::Form(
                url::form_urlencoded::parse(body).into_owned().collect(),
            ));
        }
        match serde_json::from_slice::<serde_json::Value>(body) {
            Ok(serde_json::Value::Object(map)) => Some(TokenRequest::Json(map)),
            _ => None,
        }
    }

    fn field(&self, name: &str) -> Option<&str> {
        match self {
            TokenRequest::Json(map) => map.get(name).and_then(|value| value.as_str()),
            TokenRequest::Form(pairs) => pairs
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.as_str()),
        }
    }

    fn set(&mut self, name: &str, value: &str) {
        match self {
            TokenRequest::Json(map) => {
                map.insert(name.into(), value.into());
            }
            TokenRequest::Form(pairs) => {
                for (key, old) in pairs.iter_mut() {
                    if key == name {
                        *old = value.to_string();
                    }
                }
            }
        }
    }

    fn to_bytes(&self) -> Vec<u8> {
        match self {
            TokenRequest::Json(map) => serde_json::to_vec(map).unwrap_or_default(),
            TokenRequest::Form(pairs) => url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(pairs)
                .finish()
                .into_bytes(),
        }
    }
}

/// What a token endpoint's successful answer gave.
#[derive(Debug, PartialEq)]
struct Issued {
    access: String,
    refresh: Option<String>,
    expires_in: Option<u64>,
    scope: Option<String>,
}

fn parse_issued(body: &[u8]) -> Option<Issued> {
    let serde_json::Value::Object(map) = serde_json::from_slice(body).ok()? else {
        return None;
    };
    let text = |key: &str| map.get(key).and_then(|v| v.as_str()).map(str::to_string);
    Some(Issued {
        access: text("access_token").filter(|token| usable(token))?,
        refresh: text("refresh_token").filter(|token| usable(token)),
        expires_in: map.get("expires_in").and_then(|value| value.as_u64()),
        scope: text("scope"),
    })
}

/// A token the proxy can put in a header: one line of visible text.
fn usable(token: &str) -> bool {
    !token.is_empty() && token.len() <= 16 * 1024 && token.bytes().all(|b| b.is_ascii_graphic())
}

/// The endpoint's answer with the real tokens turned into the sentinels:
/// the two fields, and any other place they occur.
fn with_sentinels(body: &[u8], tokens: &LoginTokens) -> Vec<u8> {
    let mut out = match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(mut map)) => {
            if map.contains_key("access_token") {
                map.insert("access_token".into(), tokens.access_sentinel.clone().into());
            }
            if map.contains_key("refresh_token") {
                map.insert(
                    "refresh_token".into(),
                    tokens.refresh_sentinel.clone().into(),
                );
            }
            serde_json::to_vec(&map).unwrap_or_default()
        }
        _ => body.to_vec(),
    };
    for (real, sentinel) in [
        (&tokens.access, &tokens.access_sentinel),
        (&tokens.refresh, &tokens.refresh_sentinel),
    ] {
        if !real.is_empty() {
            out = replace_all(&out, real.as_bytes(), sentinel.as_bytes());
        }
    }
    out
}

/// The answer the proxy gives itself, from tokens another session
/// refreshed: what a token endpoint would say, with the sentinels.
fn local_answer(tokens: &LoginTokens, now: u64) -> Vec<u8> {
    let mut map = serde_json::Map::new();
    map.insert("token_type".into(), "Bearer".into());
    map.insert("access_token".into(), tokens.access_sentinel.clone().into());
    map.insert(
        "refresh_token".into(),
        tokens.refresh_sentinel.clone().into(),
    );
    map.insert(
        "expires_in".into(),
        tokens.expires_at.saturating_sub(now).into(),
    );
    if let Some(scope) = &tokens.scope {
        map.insert("scope".into(), scope.clone().into());
    }
    serde_json::to_vec(&map).unwrap_or_default()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// Runs a blocking vault call off the event loop.
async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(call)
        .await
        .map_err(|error| format!("the vault call failed: {error}"))?
}

/// A POST to `login`'s token endpoint, on a terminated tunnel.
pub(crate) async fn token_request(
    tunnel: &Terminated,
    login: &OAuthLogin,
    mut p: Pending,
    mut parts: Parts,
    body: Incoming,
    injected: Injected,
) -> Response<ProxyBody> {
    let shared = tunnel.shared().clone();
    let body = match Limited::new(body, MAX_REQUEST).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            return shared.refuse(
                &p,
                Reason::BadRequest,
                format!(
                    "the token request's body could not be read (at most {} KiB): {error}",
                    MAX_REQUEST / 1024
                ),
            );
        }
    };
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok());
    let request = TokenRequest::parse(content_type, &body);
    // The proxy reads the answer: uncompressed, please.
    parts.headers.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    let vault = shared
        .broker
        .as_ref()
        .and_then(|broker| broker.vault().cloned());
    let Some((vault, mut request)) = vault.zip(request) else {
        return pass_through(tunnel, p, parts, body, injected).await;
    };
    match request.field("grant_type") {
        Some("refresh_token") => {
            let offered = request
                .field("refresh_token")
                .unwrap_or_default()
                .to_string();
            let name = login.name.clone();
            let known = {
                let vault = vault.clone();
                blocking(move || vault.load(&name)).await
            };
            match known {
                Ok(Some(tokens)) if !offered.is_empty() && tokens.refresh_sentinel == offered => {}
                _ => return pass_through(tunnel, p, parts, body, injected).await,
            }
            p.credential = Some(login.credential_name());
            refresh(tunnel, login, &vault, p, parts, &mut request).await
        }
        Some("authorization_code") if login.capture => {
            p.credential = Some(login.credential_name());
            capture(tunnel, login, &vault, p, parts, body).await
        }
        _ => pass_through(tunnel, p, parts, body, injected).await,
    }
}

/// Sends the request as it came (any other credential already swapped) and
/// relays the answer, scrubbed of what was injected.
async fn pass_through(
    tunnel: &Terminated,
    p: Pending,
    parts: Parts,
    body: Bytes,
    injected: Injected,
) -> Response<ProxyBody> {
    let up = Arc::new(AtomicU64::new(0));
    let resp = match tunnel.send(parts, RequestBody::Full(Some(body)), &up).await {
        Ok(resp) => resp,
        Err(error) => return tunnel.no_answer(&p, &up, &error),
    };
    tunnel.relay(p, resp, &injected, up, String::new())
}

/// Sends the token request and reads the server's answer whole. What
/// fails is logged for `p` and answered here (`Err`): no answer, an
/// unreadable one, or a compressed one (the proxy asked for none, and one
/// it cannot read for tokens is not passed on either: it would carry them).
async fn exchange(
    tunnel: &Terminated,
    login: &OAuthLogin,
    p: &Pending,
    parts: Parts,
    body: Vec<u8>,
    up: &Arc<AtomicU64>,
) -> Result<(response::Parts, Bytes), Response<ProxyBody>> {
    let resp = match tunnel
        .send(parts, RequestBody::Full(Some(body.into())), up)
        .await
    {
        Ok(resp) => resp,
        Err(error) => return Err(tunnel.no_answer(p, up, &error)),
    };
    let (head, body) = resp.into_parts();
    let failed = |detail: String| {
        tunnel.shared().record(
            p,
            Err(Reason::ConnectFailed),
            detail.clone(),
            up.load(Ordering::Relaxed),
            0,
        );
        bad_gateway(detail)
    };
    let is_compressed = head
        .headers
        .get(header::CONTENT_ENCODING)
        .is_some_and(|value| value.as_bytes() != b"identity");
    if is_compressed {
        return Err(failed(format!(
            "login {}: the token endpoint answered compressed, which kennel cannot read",
            login.name
        )));
    }
    match Limited::new(body, MAX_RESPONSE).collect().await {
        Ok(collected) => Ok((head, collected.to_bytes())),
        Err(error) => Err(failed(format!(
            "login {}: the token endpoint's answer could not be read (at most {} KiB): {error}",
            login.name,
            MAX_RESPONSE / 1024
        ))),
    }
}

fn bad_gateway(detail: String) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::Full(Some(Bytes::from(detail + "\n"))));
    *resp.status_mut() = StatusCode::BAD_GATEWAY;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// The answer to the agent: the server's head (less what no longer fits
/// the body) with `body`.
fn answer(mut head: response::Parts, body: Vec<u8>) -> Response<ProxyBody> {
    client_head(&mut head);
    set_length(&mut head.headers, body.len());
    Response::from_parts(head, ProxyBody::Full(Some(body.into())))
}

fn set_length(headers: &mut HeaderMap, length: usize) {
    headers.remove(header::TRANSFER_ENCODING);
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
}

/// The agent refreshes with the sentinel: under the login's lock, answer
/// from the vault when another session refreshed already, else refresh
/// with the real token and keep what the endpoint gives.
async fn refresh(
    tunnel: &Terminated,
    login: &OAuthLogin,
    vault: &Arc<dyn LoginVault>,
    p: Pending,
    mut parts: Parts,
    request: &mut TokenRequest,
) -> Response<ProxyBody> {
    let shared = tunnel.shared().clone();
    let Some(broker) = shared.broker.as_ref() else {
        return shared.refuse(&p, Reason::BadRequest, "no credential broker".into());
    };
    let name = login.name.clone();
    let locked = {
        let vault = vault.clone();
        blocking(move || {
            let guard = vault.lock(&name)?;
            let tokens = vault.load(&name)?;
            Ok((guard, tokens))
        })
        .await
    };
    let (guard, tokens) = match locked {
        Ok((guard, Some(tokens))) => (guard, tokens),
        Ok((_, None)) => {
            return shared.refuse(
                &p,
                Reason::CredentialNotBound,
                format!(
                    "the login {} is no longer kept on the host: log in again with `kennel login {}`",
                    login.name, login.name
                ),
            );
        }
        Err(why) => {
            return shared.refuse(
                &p,
                Reason::ConnectFailed,
                format!("the login {} cannot be read on the host: {why}", login.name),
            );
        }
    };
    let now = unix_now();
    let current = broker.login_value(login);
    if tokens.expires_at > now + FRESH_FOR_SECS && current.as_deref() != Some(&tokens.access) {
        broker.set_login(login, &tokens);
        drop(guard);
        let body = local_answer(&tokens, now);
        let down = body.len() as u64;
        shared.record(
            &p,
            Ok(tunnel.why()),
            format!(
                "login {}: refreshed by another session, answered from the host",
                login.name
            ),
            0,
            down,
        );
        let mut resp = Response::new(ProxyBody::Full(Some(body.into())));
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        return resp;
    }

    request.set("refresh_token", &tokens.refresh);
    let body = request.to_bytes();
    set_length(&mut parts.headers, body.len());
    let up = Arc::new(AtomicU64::new(0));
    let (head, answered) = match exchange(tunnel, login, &p, parts, body, &up).await {
        Ok(read) => read,
        Err(resp) => return resp,
    };
    let issued = (head.status == StatusCode::OK)
        .then(|| parse_issued(&answered))
        .flatten();
    let (body, detail) = match issued {
        Some(issued) => {
            let renewed = LoginTokens {
                access: issued.access,
                refresh: issued.refresh.unwrap_or_else(|| tokens.refresh.clone()),
                expires_at: now + issued.expires_in.unwrap_or(DEFAULT_LIFETIME_SECS),
                scope: issued.scope.or_else(|| tokens.scope.clone()),
                access_sentinel: tokens.access_sentinel.clone(),
                refresh_sentinel: tokens.refresh_sentinel.clone(),
            };
            let saved = {
                let (vault, name, renewed) = (vault.clone(), login.name.clone(), renewed.clone());
                blocking(move || vault.save(&name, &renewed)).await
            };
            broker.set_login(login, &renewed);
            let mut body = with_sentinels(&answered, &renewed);
            // The old tokens, should the answer repeat them.
            body = with_sentinels(&body, &tokens);
            let detail = match saved {
                Ok(()) => format!("login {}: refreshed by kennel on the host", login.name),
                Err(why) => {
                    tracing::warn!(login = %login.name, "the refreshed login could not be kept: {why}");
                    format!(
                        "login {}: refreshed, but not kept on the host ({why}); the next session logs in again",
                        login.name
                    )
                }
            };
            (body, detail)
        }
        None => (
            with_sentinels(&answered, &tokens),
            format!(
                "login {}: the token endpoint refused the refresh ({})",
                login.name, head.status
            ),
        ),
    };
    drop(guard);
    shared.record(
        &p,
        Ok(tunnel.why()),
        detail,
        up.load(Ordering::Relaxed),
        body.len() as u64,
    );
    answer(head, body)
}

/// `kennel login`: the authorization-code exchange goes as it is; a
/// successful answer's tokens are kept on the host and the agent gets
/// sentinels.
async fn capture(
    tunnel: &Terminated,
    login: &OAuthLogin,
    vault: &Arc<dyn LoginVault>,
    p: Pending,
    parts: Parts,
    body: Bytes,
) -> Response<ProxyBody> {
    let shared = tunnel.shared().clone();
    let Some(broker) = shared.broker.as_ref() else {
        return shared.refuse(&p, Reason::BadRequest, "no credential broker".into());
    };
    let up = Arc::new(AtomicU64::new(0));
    let (head, answered) = match exchange(tunnel, login, &p, parts, body.to_vec(), &up).await {
        Ok(read) => read,
        Err(resp) => return resp,
    };
    let issued = (head.status == StatusCode::OK)
        .then(|| parse_issued(&answered))
        .flatten();
    let Some(Issued {
        access,
        refresh: Some(refresh),
        expires_in,
        scope,
    }) = issued
    else {
        shared.record(
            &p,
            Ok(tunnel.why()),
            format!(
                "login {}: no login in the answer ({}); passed on as it is",
                login.name, head.status
            ),
            up.load(Ordering::Relaxed),
            answered.len() as u64,
        );
        return answer(head, answered.to_vec());
    };
    let sentinels = kennel_core::credentials::placeholder(&access).and_then(|access_sentinel| {
        kennel_core::credentials::placeholder(&refresh)
            .map(|refresh_sentinel| (access_sentinel, refresh_sentinel))
    });
    let (access_sentinel, refresh_sentinel) = match sentinels {
        Ok(pair) => pair,
        Err(why) => {
            let detail = format!("login {}: no sentinel could be made: {why}", login.name);
            shared.record(&p, Err(Reason::ConnectFailed), detail.clone(), 0, 0);
            return bad_gateway(detail);
        }
    };
    let tokens = LoginTokens {
        access,
        refresh,
        expires_at: unix_now() + expires_in.unwrap_or(DEFAULT_LIFETIME_SECS),
        scope,
        access_sentinel,
        refresh_sentinel,
    };
    let saved = {
        let (vault, name, tokens) = (vault.clone(), login.name.clone(), tokens.clone());
        blocking(move || {
            let _guard = vault.lock(&name)?;
            vault.save(&name, &tokens)
        })
        .await
    };
    if let Err(why) = saved {
        // Without a kept login the agent must not think it has one.
        let detail = format!(
            "login {}: cannot keep the login on the host: {why}",
            login.name
        );
        shared.record(&p, Err(Reason::ConnectFailed), detail.clone(), 0, 0);
        return bad_gateway(detail);
    }
    broker.set_login(login, &tokens);
    let body = with_sentinels(&answered, &tokens);
    shared.record(
        &p,
        Ok(tunnel.why()),
        format!(
            "login {}: kept on the host; the agent has sentinels",
            login.name
        ),
        up.load(Ordering::Relaxed),
        body.len() as u64,
    );
    answer(head, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> LoginTokens {
        LoginTokens {
            access: "sk-ant-oat01-REALaccess".into(),
            refresh: "sk-ant-ort01-REALrefresh".into(),
            expires_at: 2_000_000_000,
            scope: Some("user:inference".into()),
            access_sentinel: "sk-ant-oat01-SENTaccess".into(),
            refresh_sentinel: "sk-ant-ort01-SENTrefresh".into(),
        }
    }

    #[test]
    fn json_and_form_requests_are_read_and_rewritten() {
        let json = br#"{"grant_type":"refresh_token","refresh_token":"S","client_id":"c"}"#;
        let mut request = TokenRequest::parse(Some("application/json"), json).expect("json");
        assert_eq!(request.field("grant_type"), Some("refresh_token"));
        request.set("refresh_token", "REAL");
        let again = TokenRequest::parse(None, &request.to_bytes()).expect("json again");
        assert_eq!(again.field("refresh_token"), Some("REAL"));
        assert_eq!(again.field("client_id"), Some("c"));

        let form = b"grant_type=refresh_token&refresh_token=S%2Bx&scope=a+b";
        let mut request = TokenRequest::parse(
            Some("application/x-www-form-urlencoded; charset=utf-8"),
            form,
        )
        .expect("form");
        assert_eq!(request.field("refresh_token"), Some("S+x"));
        request.set("refresh_token", "R/E=AL");
        assert_eq!(
            String::from_utf8(request.to_bytes()).expect("text"),
            "grant_type=refresh_token&refresh_token=R%2FE%3DAL&scope=a+b"
        );
        assert_eq!(TokenRequest::parse(None, b"not json"), None);
        assert_eq!(TokenRequest::parse(None, b"[1]"), None);
    }

    #[test]
    fn answers_are_read_only_when_they_carry_a_usable_access_token() {
        let issued = parse_issued(
            br#"{"access_token":"A","refresh_token":"R","expires_in":28800,"scope":"s"}"#,
        )
        .expect("issued");
        assert_eq!(
            issued,
            Issued {
                access: "A".into(),
                refresh: Some("R".into()),
                expires_in: Some(28800),
                scope: Some("s".into())
            }
        );
        assert!(parse_issued(br#"{"access_token":"A"}"#).is_some_and(|i| i.refresh.is_none()));
        assert_eq!(parse_issued(br#"{"error":"invalid_grant"}"#), None);
        assert_eq!(parse_issued(br#"{"access_token":"A\r\nB"}"#), None);
        assert_eq!(parse_issued(br#"{"access_token":""}"#), None);
        assert_eq!(parse_issued(b"<html>"), None);
    }

    #[test]
    fn the_agent_gets_sentinels_and_never_a_real_token() {
        let t = tokens();
        let body = format!(
            r#"{{"access_token":"{}","refresh_token":"{}","expires_in":60,"account":{{"echo":"{}"}}}}"#,
            t.access, t.refresh, t.refresh
        );
        let out = String::from_utf8(with_sentinels(body.as_bytes(), &t)).expect("text");
        assert!(!out.contains("REAL"), "{out}");
        let value: serde_json::Value = serde_json::from_str(&out).expect("json");
        assert_eq!(value["access_token"], t.access_sentinel.as_str());
        assert_eq!(value["refresh_token"], t.refresh_sentinel.as_str());
        assert_eq!(value["account"]["echo"], t.refresh_sentinel.as_str());
        assert_eq!(value["expires_in"], 60);
        // Not JSON (an error page echoing the token): replaced all the same.
        let page = format!("bad token {}", t.refresh);
        assert_eq!(
            with_sentinels(page.as_bytes(), &t),
            format!("bad token {}", t.refresh_sentinel).into_bytes()
        );
    }

    #[test]
    fn a_local_answer_says_what_the_endpoint_would() {
        let t = tokens();
        let value: serde_json::Value =
            serde_json::from_slice(&local_answer(&t, 1_999_999_000)).expect("json");
        assert_eq!(value["access_token"], t.access_sentinel.as_str());
        assert_eq!(value["refresh_token"], t.refresh_sentinel.as_str());
        assert_eq!(value["expires_in"], 1000);
        assert_eq!(value["token_type"], "Bearer");
        assert_eq!(value["scope"], "user:inference");
        assert!(!format!("{t:?}").contains("REAL"));
    }
}
