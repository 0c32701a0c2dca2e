//! The Plan: everything about one sandboxed run, as plain data.
//!
//! Every security decision is taken while the Plan is built (see
//! [`crate::settings`]); a backend only carries it out. `kennel run --dry-run`
//! prints it as JSON, and the field names below are part of kennel's stable
//! output (documented in the README under "The Plan").

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Version of the Plan's JSON structure; bumped on incompatible changes.
pub const PLAN_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub version: u32,
    /// Catalog name of the agent (`shell`, `claude`, …).
    pub agent: String,
    /// Name given to the container (or native sandbox) for this run.
    pub name: String,
    /// The backend the user asked for (`auto`, `docker`, `podman`, `native`).
    pub backend: String,
    /// The backend that runs this Plan and why it was chosen (set by `kennel
    /// run`, which resolves `auto`; absent when nothing was resolved).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selected: Option<BackendChoice>,
    pub image: ImagePlan,
    pub user: UserPlan,
    /// The workspace root on the host; mounted read-write at the same path.
    pub workspace: PathBuf,
    /// Working directory inside the sandbox (the invocation directory).
    pub workdir: PathBuf,
    pub mounts: Vec<Mount>,
    pub env: Vec<EnvVar>,
    /// The full command line run inside the sandbox (argv, never a shell string).
    pub command: Vec<String>,
    /// Allocate a pseudo-terminal (true when kennel's stdin and stdout are terminals).
    pub tty: bool,
    /// Keep stdin open and forward kennel's stdin to the agent.
    pub stdin: bool,
    pub network: NetworkPlan,
    pub limits: Limits,
    pub security: SecurityPlan,
    /// Ephemeral runs are removed when they end.
    pub ephemeral: bool,
    /// The agent-home slot: 0 is the agent's home, each further slot a home
    /// of its own (seeded from slot 0), so that parallel sessions of one
    /// agent never share one.
    #[serde(default)]
    pub slot: i64,
    /// Labels put on the container so that kennel can find its own.
    pub labels: BTreeMap<String, String>,
    /// Things the user should know about this run (printed before it starts).
    pub warnings: Vec<String>,
    /// The user accepted a weaker sandbox (`--allow-weaker-sandbox`): the
    /// native backend runs without the kernel features that are missing
    /// instead of refusing, and says so on every run.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_weaker_sandbox: bool,
    /// Worktree and clone modes: the session's own checkout, on its own
    /// branch (absent in direct mode, where the workspace is the user's
    /// checkout itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git: Option<GitPlan>,
    /// Whose identity the agent's commits carry (see [`GitIdentityPlan`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_identity: Option<GitIdentityPlan>,
    /// The workspace's devcontainer.json this Plan follows: its image under
    /// the agent's, its variables, its lifecycle commands (in `command`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devcontainer: Option<PathBuf>,
}

/// The session's own checkout (`--mode worktree` or `--mode clone`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitPlan {
    /// `worktree` or `clone`.
    pub mode: String,
    /// The session's branch in the user's repository, e.g. `kennel/claude-0`.
    pub branch: String,
    /// The commit the session started from.
    pub base: String,
    /// The checkout's directory on the host (also the Plan's `workspace`).
    pub dir: PathBuf,
    /// The user's repository (its top level), where the review commands work.
    pub repository: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendChoice {
    /// `docker`, `podman` or `native`.
    pub backend: String,
    /// Why: what was requested, or what `auto` found.
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImagePlan {
    /// The image reference the sandbox runs.
    pub reference: String,
    /// True when kennel builds `reference` from the agent's recipe (false for `--image`).
    pub managed: bool,
    /// Where the image's base comes from: `kennel` (its default base),
    /// `base_image` (the config), `devcontainer: PATH` (the project's
    /// image or build), `--image`, or `host` (the native backend).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserPlan {
    pub uid: u32,
    pub gid: u32,
    pub name: String,
    /// `$HOME` inside the sandbox (the same path as the user's home on the host).
    pub home: PathBuf,
    pub shell: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// Path on the host.
    pub source: PathBuf,
    /// Path inside the sandbox.
    pub target: PathBuf,
    pub read_only: bool,
    pub purpose: MountPurpose,
}

/// Why a mount is there; tests and `--dry-run` readers rely on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MountPurpose {
    /// The workspace itself (read-write).
    Workspace,
    /// A path inside the workspace that is re-mounted read-only (`.git/hooks`, …).
    Protect,
    /// kennel's per-agent home, mounted as `$HOME`.
    AgentHome,
    /// One of the agent's state paths from the host (`--host-config`).
    HostConfig,
    /// Files kennel generates for the sandbox (`/etc/passwd`, `/etc/group`).
    Identity,
    /// The git config kennel generates with the session's git identity
    /// (`/run/kennel/git/config`, named by `GIT_CONFIG_SYSTEM`). Unlike
    /// [`MountPurpose::Identity`], the native backend mounts it too.
    GitIdentity,
    /// A CA bundle made from the configured `ca_certificates`.
    CaCertificates,
    /// A mount the user configured (`mounts` in their config).
    User,
    /// The directory holding kennel's egress proxy socket for this session
    /// (`allowlist` and `restricted` modes): the sandbox's only way out.
    Proxy,
    /// Worktree mode: a part of the user's repository's git dir that git
    /// needs in the worktree (the object store, the session branch's ref
    /// directory, the worktree's registration), or that stays read-only
    /// (config, hooks, the `.git` file); clone mode: the clone's `.git`,
    /// config and hooks. Applied in the Plan's order, parents first.
    Git,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvVar {
    pub name: String,
    pub value: String,
    /// Where the variable came from: `kennel`, `host`, `agent`, `config`, `flag`.
    pub origin: String,
    /// Credential values are redacted when the Plan is printed.
    pub secret: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NetworkMode {
    None,
    Allowlist,
    Restricted,
    Open,
}

impl NetworkMode {
    pub const ALL: [NetworkMode; 4] = [Self::None, Self::Allowlist, Self::Restricted, Self::Open];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Allowlist => "allowlist",
            Self::Restricted => "restricted",
            Self::Open => "open",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|mode| mode.as_str() == text)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkPlan {
    pub mode: NetworkMode,
    /// Domains the sandbox may reach in `allowlist` mode.
    pub allow: Vec<String>,
    /// Domains always refused (win over `allow`).
    pub deny: Vec<String>,
    /// True when the mode is enforced by construction: `none` and `open`
    /// trivially; `allowlist` and `restricted` because the sandbox has no
    /// network of its own and reaches out only through kennel's proxy.
    pub enforced: bool,
    /// kennel's egress proxy for this run (`allowlist` and `restricted`).
    #[serde(default)]
    pub proxy: Option<ProxyPlan>,
}

/// How the sandbox reaches kennel's egress proxy: a forwarder inside the
/// sandbox listens on `listen_inside` and relays each connection to the
/// proxy's Unix socket, whose directory is mounted at [`PROXY_DIR_INSIDE`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyPlan {
    /// `127.0.0.1:3128`: what `HTTP_PROXY` and friends point at.
    pub listen_inside: String,
    /// The proxy's Unix socket on the host (created by `kennel run`).
    pub socket: PathBuf,
    /// The same socket as the sandbox sees it.
    pub socket_inside: PathBuf,
    /// Where `kennel run` appends the session's decisions (`kennel net log`).
    pub log: PathBuf,
    /// `[network] hosts`: names the proxy resolves itself.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub hosts: BTreeMap<String, Vec<std::net::IpAddr>>,
    /// `[network] upstream_proxy` (its credentials redacted in a printed
    /// Plan).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// `[network] trusted`: address ranges exempt from the private-address
    /// check.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted: Vec<String>,
    /// Credentials the proxy brokers: the sandbox has a placeholder in each
    /// one's variable, the proxy the value.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub credentials: Vec<CredentialPlan>,
    /// Subscription logins whose tokens the proxy keeps on the host: the
    /// sandbox has sentinels (in the agent's own credentials file).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub logins: Vec<LoginPlan>,
}

impl ProxyPlan {
    /// `listen_inside` as the host and port a forwarder binds.
    pub fn listen_address(&self) -> (&str, u16) {
        listen_address(&self.listen_inside)
    }
}

/// A forwarder's `host:port` (such as [`PROXY_LISTEN_INSIDE`]) as the host
/// and port it binds (`127.0.0.1`, 3128 where it does not say).
pub fn listen_address(listen: &str) -> (&str, u16) {
    let (host, port) = listen.rsplit_once(':').unwrap_or(("127.0.0.1", "3128"));
    (host, port.parse().unwrap_or(3128))
}

/// A subscription login brokered in this session (see
/// [`crate::credentials::OAuthBinding`]). No token is ever in the Plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginPlan {
    /// The login's name: the agent's.
    pub name: String,
    /// The token endpoint the proxy reads.
    pub token_host: String,
    pub token_path: String,
    /// Where the access token may be sent, and in which header.
    pub hosts: Vec<String>,
    pub header: String,
    /// `kennel login`: a new login is taken from this session.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub capture: bool,
}

/// A credential kennel's proxy brokers in this session (see
/// [`crate::credentials`]). The value is never in the Plan: the proxy
/// reads it on the host when it starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialPlan {
    /// The secret's name (`kennel secret ls`, the decision log).
    pub name: String,
    /// The variable that holds its placeholder in the sandbox.
    pub env: String,
    pub hosts: Vec<String>,
    pub places: Vec<crate::credentials::CredentialPlace>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// Where its value comes from.
    pub source: CredentialSource,
}

/// Where a brokered credential's value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CredentialSource {
    /// The host's variable of the credential's `env`.
    Environment,
    /// The secret store (`kennel secret set NAME`).
    Store,
}

/// In the proxy's directory when it brokers credentials: the session's
/// CA certificate with the system's and the configured ones (mounted over
/// [`SYSTEM_CA_BUNDLE`]), and with the configured ones alone (what
/// `NODE_EXTRA_CA_CERTS` names).
pub const SESSION_CA_BUNDLE: &str = "ca-certificates.crt";
pub const SESSION_CA_EXTRA: &str = "extra-ca.crt";
/// The system's trust store in Debian (and in kennel's images).
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Whose name and email the agent's commits carry, and where they came
/// from. Given to git inside as its system config ([`GIT_CONFIG_INSIDE`],
/// named by `GIT_CONFIG_SYSTEM`), so that `git config user.name` answers
/// and the agent's own global config may still override it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitIdentityPlan {
    /// `user` (your git config), `agent` (the agent's own), `config`
    /// (`git_identity = { name, email }`).
    pub source: String,
    pub name: String,
    pub email: String,
    /// Your `init.defaultBranch`, when you set one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_branch: Option<String>,
    /// Why the identity is not the one asked for (e.g. your git config has
    /// no `user.name`, so the agent's is used).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Where the generated git config is mounted inside the sandbox.
pub const GIT_CONFIG_INSIDE: &str = "/run/kennel/git/config";

/// The init in every image kennel builds (Debian's `tini` package).
pub const IMAGE_INIT: &str = "/usr/bin/tini";

/// Where the proxy's socket directory is mounted inside the sandbox.
pub const PROXY_DIR_INSIDE: &str = "/run/kennel/proxy";
/// The proxy socket's file name inside that directory.
pub const PROXY_SOCKET_NAME: &str = "proxy.sock";
/// The forwarder's address inside the sandbox.
pub const PROXY_LISTEN_INSIDE: &str = "127.0.0.1:3128";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    pub pids: i64,
    /// Memory limit in bytes.
    pub memory: Option<i64>,
    /// CPU limit, in CPUs (fractional).
    pub cpus: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityPlan {
    /// Linux capabilities removed: always `ALL`.
    pub cap_drop: Vec<String>,
    pub no_new_privileges: bool,
    /// Run an init as PID 1 that forwards signals and reaps zombies.
    pub init: bool,
    /// The image's own init, run as PID 1 in place of the engine's: every
    /// image kennel builds has tini ([`IMAGE_INIT`]), so no engine needs an
    /// init of its own (rootful Podman without `catatonit` has none). None:
    /// the engine provides it (`--image`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_init: Option<PathBuf>,
    /// The root filesystem of the sandbox is read-only (the workspace, `$HOME`
    /// and `/tmp` stay writable).
    pub read_only_rootfs: bool,
    /// kennel's own seccomp profile for container engines, where the
    /// backend writes it (Podman reads it from this path; Docker is handed
    /// its content). Native installs its own filter; None: the engine's
    /// default profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seccomp_profile: Option<PathBuf>,
}

impl Plan {
    /// The Plan as printed by `--dry-run`: credential values replaced.
    pub fn redacted(&self) -> Plan {
        let mut plan = self.clone();
        for var in plan.env.iter_mut().filter(|var| var.secret) {
            var.value = "<redacted>".to_string();
        }
        if let Some(upstream) = plan
            .network
            .proxy
            .as_mut()
            .and_then(|proxy| proxy.upstream.as_mut())
        {
            *upstream = mark_userinfo(upstream);
        }
        plan
    }

    /// The first mount of `purpose` (the agent home: the only one).
    pub fn mount(&self, purpose: MountPurpose) -> Option<&Mount> {
        self.mounts.iter().find(|mount| mount.purpose == purpose)
    }

    pub fn env_value(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|var| var.name == name)
            .map(|var| var.value.as_str())
    }
}

/// `url` with the user info (credentials) replaced by `<redacted>`.
fn mark_userinfo(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), url),
    };
    match rest.rsplit_once('@') {
        Some((_, host)) => format!("{scheme}<redacted>@{host}"),
        None => url.to_string(),
    }
}
