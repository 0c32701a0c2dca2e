//! The session's egress proxy: started by `kennel run` before the sandbox
//! (in `allowlist` and `restricted` modes), stopped after it, its socket
//! directory removed. `kennel start` runs the same proxy in a daemon of its
//! own ([`crate::proxy_daemon`]), from the same [`ProxySpec`].

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use kennel_core::plan::{NetworkMode, Plan};
use kennel_proxy::{Listen, Policy, ProxyConfig, ProxyHandle};
use serde::{Deserialize, Serialize};

use crate::error::CliError;

/// Everything one session's proxy needs, taken from the config and the Plan
/// (serialisable: `kennel start` hands it to the proxy daemon).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProxySpec {
    /// The session (the Plan's `name`), written into each log record.
    pub session: String,
    pub mode: NetworkMode,
    pub allow: Vec<String>,
    pub deny: Vec<String>,
    /// `[network] hosts`.
    pub hosts: BTreeMap<String, Vec<IpAddr>>,
    /// `[network] upstream_proxy`.
    pub upstream: Option<String>,
    /// `[network] trusted`, parsed.
    pub trusted: Vec<(IpAddr, u8)>,
    /// The proxy's Unix socket; its directory is created (0700) and removed.
    pub socket: PathBuf,
    /// The decision log (`kennel net log`).
    pub log: PathBuf,
    /// The brokered credentials and the session's CA (see
    /// [`crate::broker`]); filled when the session starts, never from the
    /// Plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker: Option<crate::broker::BrokerSpec>,
}

impl ProxySpec {
    /// The proxy the Plan asks for (none for `none` and `open`): the Plan
    /// says everything about it.
    pub fn from_plan(plan: &Plan) -> Result<Option<ProxySpec>, CliError> {
        let Some(proxy) = &plan.network.proxy else {
            return Ok(None);
        };
        let trusted = kennel_core::config::parse_trusted(&proxy.trusted).map_err(|reason| {
            CliError::kennel(format!("invalid value for `network.trusted`: {reason}"))
        })?;
        Ok(Some(ProxySpec {
            session: plan.name.clone(),
            mode: plan.network.mode,
            allow: plan.network.allow.clone(),
            deny: plan.network.deny.clone(),
            hosts: proxy.hosts.clone(),
            upstream: proxy.upstream.clone(),
            trusted,
            socket: proxy.socket.clone(),
            log: proxy.log.clone(),
            broker: None,
        }))
    }

    fn proxy_config(&self) -> Result<ProxyConfig, CliError> {
        let (logins, vault) = match &self.broker {
            Some(broker) if !broker.logins.is_empty() => {
                let vault: Option<std::sync::Arc<dyn kennel_proxy::LoginVault>> = broker
                    .data_dir
                    .as_deref()
                    .map(|dir| std::sync::Arc::new(crate::oauth_vault::StoreVault::new(dir)) as _);
                (broker.logins.clone(), vault)
            }
            _ => (Vec::new(), None),
        };
        let (credentials, ca, upstream_roots) = match &self.broker {
            Some(broker) => {
                let ca = kennel_proxy::SessionCa::from_pem(&broker.ca_cert, &broker.ca_key)
                    .map_err(|error| {
                        CliError::kennel(format!("the session's certificate authority: {error}"))
                    })?;
                let roots = match broker.extra_ca.is_empty() {
                    true => Vec::new(),
                    false => vec![broker.extra_ca.clone()],
                };
                (
                    broker.credentials.clone(),
                    Some(std::sync::Arc::new(ca)),
                    roots,
                )
            }
            None => (Vec::new(), None, Vec::new()),
        };
        Ok(ProxyConfig {
            policy: Policy {
                mode: self.mode,
                allow: self.allow.clone(),
                deny: self.deny.clone(),
            },
            hosts: self.hosts.clone(),
            upstream: self.upstream.clone(),
            log_file: Some(self.log.clone()),
            session: self.session.clone(),
            trusted_addrs: self.trusted.clone(),
            credentials,
            ca,
            upstream_roots,
            logins,
            vault,
            ..ProxyConfig::default()
        })
    }

    /// The session CA's files in the proxy's directory (which the sandbox
    /// mounts): with the system's and the configured certificates, over the
    /// system store; with the configured ones alone, for Node.
    fn write_trust(&self, dir: &Path) -> Result<(), CliError> {
        let Some(broker) = &self.broker else {
            return Ok(());
        };
        let mut extra = broker.extra_ca.clone();
        if !extra.is_empty() && !extra.ends_with(b"\n") {
            extra.push(b'\n');
        }
        extra.extend_from_slice(broker.ca_cert.as_bytes());
        // The host's store stands for the image's: the same Debian roots,
        // with whatever this machine's administrator added.
        let mut bundle = std::fs::read(kennel_core::plan::SYSTEM_CA_BUNDLE).unwrap_or_default();
        if !bundle.is_empty() && !bundle.ends_with(b"\n") {
            bundle.push(b'\n');
        }
        bundle.extend_from_slice(&extra);
        for (name, content) in [
            (kennel_core::plan::SESSION_CA_BUNDLE, &bundle),
            (kennel_core::plan::SESSION_CA_EXTRA, &extra),
        ] {
            let path = dir.join(name);
            std::fs::write(&path, content).map_err(|error| {
                CliError::kennel(format!("cannot write {}: {error}", path.display()))
            })?;
        }
        Ok(())
    }

    /// The socket's directory (mounted into the sandbox).
    pub fn dir(&self) -> Result<&Path, CliError> {
        self.socket
            .parent()
            .ok_or_else(|| CliError::kennel("the proxy socket has no directory"))
    }
}

pub struct SessionProxy {
    handle: Option<ProxyHandle>,
    dir: PathBuf,
}

impl SessionProxy {
    /// Starts the proxy the Plan asks for (none for `none` and `open`).
    pub async fn start(plan: &Plan) -> Result<Option<SessionProxy>, CliError> {
        match ProxySpec::from_plan(plan)? {
            Some(spec) => Ok(Some(SessionProxy::launch(&spec).await?)),
            None => Ok(None),
        }
    }

    /// Creates the socket's 0700 directory and starts the proxy on it.
    pub async fn launch(spec: &ProxySpec) -> Result<SessionProxy, CliError> {
        let io_error = |what: &Path, error: std::io::Error| {
            CliError::kennel(format!("cannot prepare {}: {error}", what.display()))
        };
        let dir = spec.dir()?.to_path_buf();
        if let Some(base) = dir.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(base)
                .map_err(|error| io_error(base, error))?;
            remove_stale(base);
        }
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(error) => return Err(io_error(&dir, error)),
        }
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|error| io_error(&dir, error))?;
        // From here on, dropping `session` removes the directory.
        let mut session = SessionProxy { handle: None, dir };
        if let Some(logs) = spec.log.parent() {
            std::fs::create_dir_all(logs).map_err(|error| io_error(logs, error))?;
        }
        spec.write_trust(&session.dir)?;
        let handle = kennel_proxy::start(spec.proxy_config()?, Listen::Unix(spec.socket.clone()))
            .await
            .map_err(|error| {
                CliError::kennel(format!("cannot start the egress proxy: {error}")).with_hint(
                    "see `network.*` in the configuration reference, or run with --network none",
                )
            })?;
        tracing::info!(socket = %spec.socket.display(), log = %spec.log.display(), "egress proxy started");
        session.handle = Some(handle);
        Ok(session)
    }

    /// Stops the proxy (open tunnels are closed) and removes its directory.
    pub async fn stop(mut self) {
        if let Some(handle) = self.handle.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), handle.shutdown()).await;
        }
        // Drop removes the directory.
    }
}

impl Drop for SessionProxy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Socket directories of sessions that ended without cleaning up (kennel was
/// killed): nobody listens on their socket, and they are older than a minute.
fn remove_stale(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        let old = entry
            .metadata()
            .and_then(|meta| meta.modified())
            .ok()
            .and_then(|time| time.elapsed().ok())
            .is_some_and(|age| age > Duration::from_secs(60));
        let socket = dir.join(kennel_core::plan::PROXY_SOCKET_NAME);
        if old && std::os::unix::net::UnixStream::connect(&socket).is_err() {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}
