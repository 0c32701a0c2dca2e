//! Brokered credentials: which variables hold a secret kennel's proxy keeps
//! on the host, the hosts it may go to and where in a request it may be.
//!
//! The built-in catalog binds the usual agents' keys (`[credentials.NAME]`
//! in `catalog/builtin.toml`); the user binds more, or narrows a built-in
//! one, under `[secrets.NAME]` in their own config (a project's
//! `.kennel.toml` may not: it is the repository's, and a binding decides
//! where a secret may be sent). The sandbox gets a placeholder of the same
//! shape in the variable; the proxy swaps it for the value in the bound
//! places of requests to the bound hosts, over HTTPS only.

use serde::{Deserialize, Serialize};

/// A variable's binding, as the catalog and the user's config write it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialBinding {
    /// The variable the agent reads (default: the secret's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// Hosts it may be sent to: exact names or `*.example.com`.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// The request header that may carry it (`x-api-key`, or
    /// `authorization` for `Bearer …`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// It may be the user or password of HTTP Basic auth (git over HTTPS).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub basic: bool,
    /// The query parameter that may carry it (`?key=…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// Methods it may be sent with (empty: any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// Path prefixes it may be sent to (empty: any), e.g.
    /// `/repos/acme/app/` for one repository's API.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// The agents that get it (empty: every agent that lists the variable
    /// in its `env`, and for a user's own secret, every agent).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub agents: Vec<String>,
}

/// Where in a request a credential may be: what the proxy looks at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum CredentialPlace {
    Header { name: String },
    Basic,
    Query { param: String },
}

impl CredentialBinding {
    /// The variable the agent reads for secret `name`.
    pub fn variable<'a>(&'a self, name: &'a str) -> &'a str {
        self.env.as_deref().unwrap_or(name)
    }

    pub fn places(&self) -> Vec<CredentialPlace> {
        let mut places = Vec::new();
        if let Some(name) = &self.header {
            places.push(CredentialPlace::Header {
                name: name.to_ascii_lowercase(),
            });
        }
        if self.basic {
            places.push(CredentialPlace::Basic);
        }
        if let Some(param) = &self.query {
            places.push(CredentialPlace::Query {
                param: param.clone(),
            });
        }
        places
    }

    /// Whether agent `agent` gets it.
    pub fn for_agent(&self, agent: &str) -> bool {
        self.agents.is_empty() || self.agents.iter().any(|name| name == agent)
    }

    /// What is wrong with the binding of secret `name`, if anything.
    pub fn check(&self, name: &str) -> Result<(), String> {
        if !crate::settings::valid_env_name(name) {
            return Err(format!(
                "`{name}` is not a secret name (letters, digits and `_`, not starting with a digit)"
            ));
        }
        if let Some(variable) = &self.env
            && !crate::settings::valid_env_name(variable)
        {
            return Err(format!("env: `{variable}` is not a variable name"));
        }
        if self.hosts.is_empty() {
            return Err("hosts: name at least one host it may be sent to".into());
        }
        if let Some(bad) = self.hosts.iter().find(|host| !valid_host_pattern(host)) {
            return Err(format!(
                "hosts: `{bad}` is not a host name or `*.domain` pattern"
            ));
        }
        if self.places().is_empty() {
            return Err(
                "say where the secret may be sent: `header = \"…\"`, `basic = true` or `query = \"…\"`"
                    .into(),
            );
        }
        if let Some(header) = &self.header
            && (header.is_empty() || !header.bytes().all(is_token_byte))
        {
            return Err(format!("header: `{header}` is not a header name"));
        }
        if let Some(bad) = self
            .methods
            .iter()
            .find(|method| method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()))
        {
            return Err(format!(
                "methods: `{bad}` is not a method (upper case, like GET)"
            ));
        }
        if let Some(bad) = self.paths.iter().find(|path| !path.starts_with('/')) {
            return Err(format!("paths: `{bad}` must start with `/`"));
        }
        Ok(())
    }
}

/// An agent's subscription login (`[oauth.AGENT]` in the catalog): its
/// tokens stay on the host, the agent gets sentinels (see
/// `kennel_proxy::oauth`). `kennel login AGENT` runs `command` in a
/// sandbox whose proxy keeps what the token endpoint answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthBinding {
    /// The agent's own login command.
    pub command: Vec<String>,
    /// The token endpoint: `https://HOST/PATH` (port 443).
    pub token_url: String,
    /// Hosts the access token is sent to.
    pub hosts: Vec<String>,
    /// The header that carries it (`authorization` for `Bearer …`).
    pub header: String,
}

impl OAuthBinding {
    /// The token endpoint's host and path; `None` when `token_url` is not
    /// `https://HOST/PATH` on the default port, without query or user.
    pub fn token_endpoint(&self) -> Option<(String, String)> {
        let rest = self.token_url.strip_prefix("https://")?;
        let (host, path) = rest.split_at(rest.find('/')?);
        let plain = |text: &str| !text.contains(['?', '#', '@', ':']);
        (valid_host_pattern(host) && !host.starts_with("*.") && plain(host) && plain(path))
            .then(|| (host.to_ascii_lowercase(), path.to_string()))
    }

    /// What is wrong with the login of agent `agent`, if anything.
    pub fn check(&self, agent: &str) -> Result<(), String> {
        if self.command.is_empty() {
            return Err(format!("[oauth.{agent}]: command is empty"));
        }
        if self.token_endpoint().is_none() {
            return Err(format!(
                "[oauth.{agent}]: token_url `{}` is not https://HOST/PATH",
                self.token_url
            ));
        }
        if self.hosts.is_empty() || !self.hosts.iter().all(|host| valid_host_pattern(host)) {
            return Err(format!("[oauth.{agent}]: hosts must name hosts"));
        }
        if self.header.is_empty() || !self.header.bytes().all(is_token_byte) {
            return Err(format!(
                "[oauth.{agent}]: header `{}` is not a header name",
                self.header
            ));
        }
        Ok(())
    }
}

fn is_token_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

fn valid_host_pattern(pattern: &str) -> bool {
    let name = pattern.strip_prefix("*.").unwrap_or(pattern);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// A kind of character: its test, and the characters of the kind.
type CharKind = (fn(&u8) -> bool, &'static [u8]);

/// A placeholder for `value`: as long as it, with the same prefix (what
/// clients check: `sk-ant-api03-`, `ghp_`, `github_pat_`) and random
/// characters of the same kinds after it, so that an agent accepts it and
/// nothing of the value is in it.
pub fn placeholder(value: &str) -> Result<String, String> {
    let prefix_len = shape_prefix(value);
    let prefix = &value[..prefix_len];
    let rest = &value[prefix_len..];
    let mut alphabet: Vec<u8> = Vec::new();
    // Each kind of character the secret part has, as the placeholder's
    // alphabet.
    let kinds: [CharKind; 3] = [
        (u8::is_ascii_lowercase, b"abcdefghijklmnopqrstuvwxyz"),
        (u8::is_ascii_uppercase, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ"),
        (u8::is_ascii_digit, b"0123456789"),
    ];
    for (has, letters) in kinds {
        if rest.as_bytes().iter().any(has) {
            alphabet.extend_from_slice(letters);
        }
    }
    if alphabet.is_empty() {
        alphabet.extend_from_slice(b"abcdefghijklmnopqrstuvwxyz0123456789");
    }
    // Keep separators where they are (`-`, `_`, `.`): some clients split
    // on them.
    let mut random = vec![0u8; rest.len()];
    getrandom::fill(&mut random).map_err(|error| format!("no randomness: {error}"))?;
    let mut out = String::with_capacity(value.len());
    out.push_str(prefix);
    for (byte, noise) in rest.bytes().zip(random) {
        if matches!(byte, b'-' | b'_' | b'.') {
            out.push(byte as char);
        } else {
            out.push(alphabet[usize::from(noise) % alphabet.len()] as char);
        }
    }
    // Astronomically unlikely, but a placeholder must never be the value.
    if out == value {
        return placeholder(value);
    }
    Ok(out)
}

/// How much of a token is its kind rather than its secret: up to and with
/// the last `-` or `_` in its first 16 characters, and never more than a
/// third of it (so that a short or separator-rich value keeps most of its
/// characters random).
fn shape_prefix(value: &str) -> usize {
    if !value.is_ascii() {
        return 0;
    }
    let head = &value[..value.len().min(16)];
    let end = head.rfind(['-', '_']).map(|index| index + 1).unwrap_or(0);
    if end * 3 > value.len() { 0 } else { end }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_keep_the_shape_and_nothing_else() {
        for value in [
            "sk-ant-api03-AbCdEf0123456789abcdefABCDEF0123456789-xyzXYZ_0123",
            "ghp_0123456789abcdefABCDEF0123456789abcd",
            "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOP",
            "AIzaSyA0123456789abcdefghijklmnopqrstu",
            "short",
        ] {
            let fake = placeholder(value).expect("placeholder");
            assert_eq!(fake.len(), value.len(), "{fake}");
            assert_ne!(fake, value);
            let prefix = &value[..shape_prefix(value)];
            assert!(fake.starts_with(prefix), "{fake} keeps {prefix}");
            // No run of 6 characters of the value's secret part survives.
            let secret = &value[prefix.len()..];
            for window in secret.as_bytes().windows(6) {
                let window = std::str::from_utf8(window).expect("ascii");
                if window.chars().all(char::is_alphanumeric) {
                    assert!(
                        !fake[prefix.len()..].contains(window),
                        "{fake} has {window}"
                    );
                }
            }
            assert_ne!(placeholder(value).expect("again"), fake, "random each time");
        }
        assert_eq!(
            shape_prefix("sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123456789"),
            13
        );
        assert_eq!(shape_prefix("ghp_abcdefghijklmnopqrstuvwxyz0123456789"), 4);
        // Digits only stay digits.
        let fake = placeholder("12345678901234567890").expect("digits");
        assert!(fake.bytes().all(|b| b.is_ascii_digit()), "{fake}");
    }

    #[test]
    fn bindings_are_checked() {
        let good = CredentialBinding {
            hosts: vec!["api.github.com".into(), "*.githubusercontent.com".into()],
            header: Some("Authorization".into()),
            basic: true,
            methods: vec!["GET".into()],
            paths: vec!["/repos/acme/app/".into()],
            ..CredentialBinding::default()
        };
        assert_eq!(good.check("GITHUB_TOKEN"), Ok(()));
        assert_eq!(
            good.places(),
            [
                CredentialPlace::Header {
                    name: "authorization".into()
                },
                CredentialPlace::Basic
            ]
        );
        let cases: [(&str, CredentialBinding, &str); 6] = [
            ("1BAD", good.clone(), "not a secret name"),
            (
                "X",
                CredentialBinding {
                    hosts: vec![],
                    ..good.clone()
                },
                "hosts",
            ),
            (
                "X",
                CredentialBinding {
                    hosts: vec!["http://x".into()],
                    ..good.clone()
                },
                "hosts",
            ),
            (
                "X",
                CredentialBinding {
                    header: None,
                    basic: false,
                    ..good.clone()
                },
                "say where",
            ),
            (
                "X",
                CredentialBinding {
                    methods: vec!["get".into()],
                    ..good.clone()
                },
                "methods",
            ),
            (
                "X",
                CredentialBinding {
                    paths: vec!["repos".into()],
                    ..good.clone()
                },
                "paths",
            ),
        ];
        for (name, binding, expected) in cases {
            let error = binding.check(name).expect_err(expected);
            assert!(error.contains(expected), "{error}");
        }
    }
}
