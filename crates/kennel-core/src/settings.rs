//! Settings → Plan: where every security decision is taken.
//!
//! Inputs are the merged config, the catalog entry, the host facts and the
//! command-line request; the output is a [`Plan`]. Nothing here runs or
//! mounts anything, so every rule below is unit-tested without an engine.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::catalog::AgentSpec;
use crate::config::Config;
use crate::credentials::CredentialBinding;
use crate::host::{HostContext, HostGit, Workspace};
use crate::plan::*;

/// What the user asked for on the command line.
#[derive(Debug, Clone, Default)]
pub struct RunRequest {
    pub backend: Option<String>,
    pub image: Option<String>,
    /// `-e KEY` or `-e KEY=VALUE`, in order.
    pub env: Vec<String>,
    pub network: Option<NetworkMode>,
    pub allow: Vec<String>,
    pub no_yolo: bool,
    pub host_config: bool,
    pub args: Vec<String>,
    pub tty: bool,
    /// The backend that will run the Plan (`auto` resolved), and why.
    pub selected: Option<BackendChoice>,
    /// The selected backend runs the host's own programs (no image): the
    /// host's system `PATH`, its `/etc` (so the CA bundle goes under
    /// `/run`), and no cgroup limits.
    pub on_host: bool,
    /// `--allow-weaker-sandbox`: accept a native sandbox without the kernel
    /// features that are missing.
    pub allow_weaker_sandbox: bool,
    /// `--memory`, `--cpus`, `--pids-limit`: override the configured limits.
    pub memory: Option<String>,
    pub cpus: Option<f64>,
    pub pids_limit: Option<i64>,
    /// `--resume`: add the agent's arguments that continue its last conversation.
    pub resume: bool,
    /// Your git identity as your own git config gives it for the workspace
    /// ([`Workspace::git_user`]); used when `git_identity = "user"`.
    pub host_git: HostGit,
    /// The names in your secret store (`kennel secret set`): the brokered
    /// credentials that have a value besides the host's environment.
    pub stored_secrets: std::collections::BTreeSet<String>,
    /// The agents whose subscription login kennel keeps (`kennel login`).
    pub stored_logins: std::collections::BTreeSet<String>,
    /// `kennel login`: this session takes a new login.
    pub login: bool,
    /// The workspace's devcontainer configuration, when one applies.
    pub devcontainer: Option<crate::devcontainer::Devcontainer>,
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("invalid variable name in `{0}`")]
    BadEnvName(String),
    #[error("invalid mount `{spec}` in {origin}: {reason}")]
    BadMount {
        spec: String,
        origin: String,
        reason: String,
    },
    #[error("invalid value for `{key}`: {reason}")]
    BadValue { key: String, reason: String },
    #[error("agent `{0}` has no command to run")]
    NoCommand(String),
    #[error(
        "kennel login keeps the login on the host through kennel's proxy, and --network {0} has none"
    )]
    LoginNeedsProxy(String),
}

impl PlanError {
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            PlanError::BadEnvName(_) => {
                "use -e NAME or -e NAME=VALUE, with NAME made of letters, digits and _".into()
            }
            PlanError::BadMount { .. } => {
                "write mounts as \"/absolute/host/path:/path/in/sandbox\" with an optional \":ro\""
                    .into()
            }
            PlanError::BadValue { key, .. } if key.starts_with("--") => {
                "see `kennel run --help`: sizes are written like 512m or 4g".into()
            }
            PlanError::BadValue { .. } => "see the configuration reference in the README".into(),
            PlanError::NoCommand(_) => "pass the command after `--`".into(),
            PlanError::LoginNeedsProxy(_) => {
                "log in with --network allowlist (the default) or restricted".into()
            }
        })
    }

    /// Errors in what the user typed are usage errors (exit 2).
    pub fn is_usage(&self) -> bool {
        match self {
            PlanError::BadEnvName(_) | PlanError::NoCommand(_) | PlanError::LoginNeedsProxy(_) => {
                true
            }
            // A bad flag, not a bad config file.
            PlanError::BadValue { key, .. } => key.starts_with("--"),
            _ => false,
        }
    }
}

/// Host variables that always pass when set: terminal, locale, time zone.
const PASSTHROUGH: &[&str] = &["TERM", "COLORTERM", "LANG", "LANGUAGE", "TZ", "NO_COLOR"];

/// Where kennel mounts the bundle of configured CA certificates.
pub const CA_BUNDLE_TARGET: &str = "/etc/kennel/ca-certificates.crt";

/// The same on the native backend, whose `/etc` is the host's own
/// (read-only, so no new mount point can be made in it); `/run` is private.
pub const NATIVE_CA_BUNDLE_TARGET: &str = "/run/kennel/ca-certificates.crt";

/// `PATH` on the native backend: the host's system directories (the user's
/// own home is not there, so nothing installed under it is either).
pub const NATIVE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn on_host(request: &RunRequest) -> bool {
    request.on_host
}

fn ca_target(request: &RunRequest) -> &'static str {
    if on_host(request) {
        NATIVE_CA_BUNDLE_TARGET
    } else {
        CA_BUNDLE_TARGET
    }
}

/// The session registry: `<kennel data dir>/sessions.db`.
pub fn registry_path(host: &HostContext) -> PathBuf {
    host.data_dir.join("sessions.db")
}

/// Names the registry a container belongs to (label `dev.kennel.registry`),
/// so that `kennel clean` only ever touches containers of its own sessions,
/// not those of another user or data directory on a shared engine.
pub fn registry_label(host: &HostContext) -> String {
    let path = registry_path(host);
    crate::trust::content_digest(path.as_os_str().as_encoded_bytes())[..16].to_string()
}

/// Container labels kennel sets and reads.
pub const LABEL_MANAGED: &str = "dev.kennel.managed";
pub const LABEL_REGISTRY: &str = "dev.kennel.registry";
pub const LABEL_SESSION: &str = "dev.kennel.session";

/// The agent home a session of `agent` on `repository` gets (slot 0):
/// `<data dir>/repo-homes/<repository key>/<agent>`, one per agent and
/// repository, so that nothing an agent leaves in its home (a line in
/// `~/.bashrc`, its settings, hooks or instruction files) reaches a session
/// on another repository. `repository` is the user's repository: the
/// workspace's canonical top level, also for worktree and clone sessions
/// (whose checkouts are made later and are not the key). `None`: the home
/// shared by every repository ([`shared_agent_home`]), as
/// `defaults.share_agent_home = true` asks.
pub fn agent_home(host: &HostContext, agent: &str, repository: Option<&Path>) -> PathBuf {
    match repository {
        Some(repository) => repository_homes(host, repository).join(agent),
        None => shared_agent_home(host, agent),
    }
}

/// `<data dir>/homes/<agent>`: the home every repository shared before
/// homes were per repository, and the one `share_agent_home = true` uses.
pub fn shared_agent_home(host: &HostContext, agent: &str) -> PathBuf {
    host.data_dir.join("homes").join(agent)
}

/// `<data dir>/repo-homes/<key>`: the agent homes of `repository`.
pub fn repository_homes(host: &HostContext, repository: &Path) -> PathBuf {
    host.data_dir
        .join("repo-homes")
        .join(repository_key(repository))
}

/// A readable, unique name for a repository path: its directory's name
/// (letters, digits, `-`, `_`, `.`; at most 32) and 16 hex digits of the
/// SHA-256 of the whole path.
pub fn repository_key(repository: &Path) -> String {
    let name: String = repository
        .file_name()
        .map(|name| name.to_string_lossy().to_string())
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .take(32)
        .collect();
    let name = name.trim_start_matches('.');
    let digest = crate::trust::content_digest(repository.as_os_str().as_encoded_bytes());
    if name.is_empty() {
        digest[..16].to_string()
    } else {
        format!("{name}-{}", &digest[..16])
    }
}

/// Whether agent homes are shared by every repository
/// (`defaults.share_agent_home`, default false).
pub fn share_agent_home(config: &Config) -> bool {
    config.file.defaults.share_agent_home.unwrap_or(false)
}

pub fn identity_dir(host: &HostContext) -> PathBuf {
    host.data_dir.join("identity").join(host.uid.to_string())
}

/// Where container backends keep kennel's seccomp profile.
pub fn seccomp_profile(host: &HostContext) -> PathBuf {
    host.data_dir.join("seccomp").join("kennel.json")
}

pub fn ca_bundle(host: &HostContext) -> PathBuf {
    host.data_dir.join("ca").join("bundle.crt")
}

/// The directory of the session's proxy socket on the host:
/// `$XDG_RUNTIME_DIR/kennel/proxy/<name>`, or under kennel's data directory
/// when `XDG_RUNTIME_DIR` is unset. `kennel run` creates it (mode 0700) and
/// removes it when the run ends.
pub fn proxy_dir(host: &HostContext, name: &str) -> PathBuf {
    proxy_dirs(host).join(name)
}

/// Where every proxy's socket directory is (see [`proxy_dir`]); image
/// builds that give their steps kennel's proxy put theirs here too.
pub fn proxy_dirs(host: &HostContext) -> PathBuf {
    runtime_base(host).join("proxy")
}

/// `$XDG_RUNTIME_DIR/kennel`, or kennel's data directory without it.
fn runtime_base(host: &HostContext) -> PathBuf {
    host.env
        .get("XDG_RUNTIME_DIR")
        .filter(|dir| Path::new(dir).is_absolute())
        .map(|dir| Path::new(dir).join("kennel"))
        .unwrap_or_else(|| host.data_dir.clone())
}

/// A native persistent session's directory (0700): its tmux socket and the
/// Plan its sandbox runs (`kennel exec` enters it with the same one).
pub fn native_session_dir(host: &HostContext, name: &str) -> PathBuf {
    runtime_base(host).join("sessions").join(name)
}

/// Everything a native persistent session's agent showed (`kennel logs`).
pub fn agent_log(host: &HostContext, name: &str) -> PathBuf {
    net_log_dir(host).join(format!("{name}.agent.log"))
}

/// Where the proxy's decisions for session `name` are logged.
pub fn net_log_dir(host: &HostContext) -> PathBuf {
    host.data_dir.join("logs")
}

pub fn net_log(host: &HostContext, name: &str) -> PathBuf {
    net_log_dir(host).join(format!("{name}.net.jsonl"))
}

/// The proxy URL every tool in the sandbox is pointed at.
pub fn proxy_url() -> String {
    format!("http://{PROXY_LISTEN_INSIDE}")
}

/// Variables that point the usual tools at kennel's proxy: curl, git, pip,
/// Python's `requests`/`urllib` (`http_proxy`, `https_proxy`, `no_proxy` and
/// their upper-case forms), npm (`npm_config_*`) and Node ≥ 24 (or 22.21+)
/// with `NODE_USE_ENV_PROXY=1`.
pub const PROXY_ENV: &[&str] = &[
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "http_proxy",
    "https_proxy",
    "npm_config_proxy",
    "npm_config_https_proxy",
];
pub const NO_PROXY: &str = "localhost,127.0.0.1,::1";

/// The command a container runs when the Plan uses the proxy: a forwarder
/// (`socat`, in every image kennel builds) listens on 127.0.0.1:3128 and
/// relays each connection to the proxy's Unix socket; the agent starts once
/// it listens (or after 2 s), as the same process (`exec`). The forwarder
/// is started from a subshell, so that the container's init adopts it (it is
/// never a child the agent could wait for), and in its own session, so that
/// a Ctrl-C on the agent's terminal does not reach it. Without `socat` (an `--image` that lacks it) the agent runs with
/// no network at all and a warning.
pub fn container_command(plan: &Plan) -> Vec<String> {
    let Some(proxy) = &plan.network.proxy else {
        return plan.command.clone();
    };
    let (host, port) = proxy.listen_address();
    let port_hex = format!("{port:04X}");
    let script = [
        "if command -v socat >/dev/null 2>&1; then".to_string(),
        format!(
            "( $(command -v setsid) socat TCP-LISTEN:{port},bind={host},fork,reuseaddr UNIX-CONNECT:{} </dev/null >/dev/null 2>&1 & );",
            proxy.socket_inside.display()
        ),
        format!(
            "i=0; while [ $i -lt 200 ] && ! grep -qs ':{port_hex} ' /proc/net/tcp; do i=$((i+1)); sleep 0.01; done;"
        ),
        "else echo \"kennel: warning: this image has no socat: the sandbox cannot reach kennel's proxy (no network)\" >&2; fi;".to_string(),
        "exec \"$@\"".to_string(),
    ]
    .join(" ");
    let mut command = vec![
        "sh".to_string(),
        "-c".to_string(),
        script,
        "kennel-net".to_string(),
    ];
    command.extend(plan.command.iter().cloned());
    command
}

/// The tmux socket of a persistent session (`kennel start`), inside the sandbox.
pub const SESSION_TMUX_SOCKET: &str = "/tmp/kennel-tmux.sock";
/// The tmux session that runs the agent.
pub const SESSION_TMUX_TARGET: &str = "agent";
/// Everything the agent's terminal showed (`kennel logs`), inside the sandbox.
pub const SESSION_LOG: &str = "/tmp/kennel-agent.log";
/// The agent's exit code, written when it ends.
pub const SESSION_EXIT_FILE: &str = "/tmp/kennel-exit";

/// The command of a persistent session: `command` runs in a detached tmux
/// session on [`SESSION_TMUX_SOCKET`] (what `kennel attach`, `send` and
/// `capture` talk to), its screen is appended to [`SESSION_LOG`], and the
/// container lives as long as the tmux session and exits with the agent's
/// own code. The agent starts only once the log is being written
/// (`tmux wait-for`), so no output is lost.
pub fn session_command(command: &[String]) -> Vec<String> {
    let socket = SESSION_TMUX_SOCKET;
    let target = SESSION_TMUX_TARGET;
    let exit_file = SESSION_EXIT_FILE;
    // The pane: wait for the go signal, run the agent, record its code. A
    // SIGTERM handler (not an ignore: the agent must still get SIGTERM)
    // keeps the wrapper alive to record the code after `kennel stop`.
    let pane = format!(
        "trap : TERM HUP; tmux -S {socket} wait-for kennel-go; \"$@\"; echo $? > {exit_file}"
    );
    let script = [
        format!("tmux -S {socket} new-session -d -s {target} -x 200 -y 50 -- sh -c '{pane}' kennel-agent \"$@\" || exit 125;"),
        format!("tmux -S {socket} pipe-pane -o -t {target} 'cat >> {log}';", log = SESSION_LOG),
        format!("tmux -S {socket} wait-for -S kennel-go;"),
        format!("while tmux -S {socket} has-session -t {target} 2>/dev/null; do sleep 1; done;"),
        format!("code=$(cat {exit_file} 2>/dev/null); exit ${{code:-0}}"),
    ]
    .join(" ");
    let mut out = vec![
        "sh".to_string(),
        "-c".to_string(),
        script,
        "kennel-session".to_string(),
    ];
    out.extend(command.iter().cloned());
    out
}

/// `tmux -S SOCKET ARGS…`: a command run in a persistent session's sandbox.
pub fn session_tmux(args: &[&str]) -> Vec<String> {
    let mut out = vec![
        "tmux".to_string(),
        "-S".to_string(),
        SESSION_TMUX_SOCKET.to_string(),
    ];
    out.extend(args.iter().map(|arg| arg.to_string()));
    out
}

pub fn build_plan(
    host: &HostContext,
    config: &Config,
    agent: &AgentSpec,
    workspace: &Workspace,
    image: ImagePlan,
    request: &RunRequest,
) -> Result<Plan, PlanError> {
    let defaults = &config.file.defaults;
    let backend = request
        .backend
        .clone()
        .or_else(|| defaults.backend.clone())
        .unwrap_or_else(|| "auto".into());

    let login_command = agent
        .oauth
        .as_ref()
        .filter(|_| request.login)
        .map(|oauth| oauth.command.clone());
    let command = if let Some(mut command) = login_command {
        // `kennel login`: the agent's own login command, as it is.
        command.extend(request.args.iter().cloned());
        command
    } else if agent.command_from_args && !request.args.is_empty() {
        request.args.clone()
    } else {
        let mut command = agent.command.clone();
        if !request.no_yolo {
            command.extend(agent.yolo.iter().cloned());
        }
        if request.resume {
            command.extend(agent.resume.iter().cloned());
        }
        command.extend(request.args.iter().cloned());
        command
    };
    if command.is_empty() {
        return Err(PlanError::NoCommand(agent.name.clone()));
    }

    let user = UserPlan {
        uid: host.uid,
        gid: host.gid,
        name: host.user.clone(),
        home: host.home.clone(),
        shell: "/bin/bash".into(),
    };

    let name = sandbox_name(&agent.name, &workspace.root);
    let mut warnings = Vec::new();
    let brokered = brokered_bindings(config, agent);
    let mut network = plan_network(host, config, agent, request, &name, &mut warnings)?;
    let mut mounts = plan_mounts(host, config, agent, workspace, request, &mut warnings)?;
    let mut env = plan_env(host, config, agent, request, &brokered, &mut warnings)?;
    plan_credentials(
        host,
        request,
        &brokered,
        &mut network,
        &mut env,
        &mut warnings,
    );
    plan_login(agent, request, &mut network, &mut warnings)?;
    if network
        .proxy
        .as_ref()
        .is_some_and(|proxy| !proxy.credentials.is_empty() || !proxy.logins.is_empty())
    {
        trust_session_ca(request, &mut network, &mut env, &mut mounts);
    }
    let mut command = command;
    let devcontainer = plan_devcontainer(request, workspace, &mut command, &mut env, &mut warnings);
    let git_identity = plan_git_identity(config, agent, &request.host_git, &mut warnings)?;
    if let Some(identity) = &git_identity {
        mounts.push(Mount {
            source: git_config_file(host, identity),
            target: GIT_CONFIG_INSIDE.into(),
            read_only: true,
            purpose: MountPurpose::GitIdentity,
        });
        // A GIT_CONFIG_SYSTEM the user passes with -e or `env` stays theirs.
        if !env.iter().any(|var| var.name == "GIT_CONFIG_SYSTEM") {
            env.push(EnvVar {
                name: "GIT_CONFIG_SYSTEM".into(),
                value: GIT_CONFIG_INSIDE.into(),
                origin: "kennel".into(),
                secret: false,
            });
            env.sort_by(|a, b| a.name.cmp(&b.name));
        }
    }
    if let Some(proxy) = &network.proxy {
        if let Some(dir) = proxy.socket.parent() {
            mounts.push(Mount {
                source: dir.to_path_buf(),
                target: PROXY_DIR_INSIDE.into(),
                read_only: true,
                purpose: MountPurpose::Proxy,
            });
        }
        let url = proxy_url();
        let mut set = |name: &str, value: &str| {
            // What the user set explicitly (`-e`, `defaults.env`) stays
            // theirs; a host's own proxy variables would point nowhere.
            if !env
                .iter()
                .any(|var| var.name == name && matches!(var.origin.as_str(), "flag" | "config"))
            {
                env.retain(|var| var.name != name);
                env.push(EnvVar {
                    name: name.into(),
                    value: value.into(),
                    origin: "kennel".into(),
                    secret: false,
                });
            }
        };
        for name in PROXY_ENV {
            set(name, &url);
        }
        set("NO_PROXY", NO_PROXY);
        set("no_proxy", NO_PROXY);
        set("NODE_USE_ENV_PROXY", "1");
        env.sort_by(|a, b| a.name.cmp(&b.name));
    }
    let limits = plan_limits(defaults, request)?;
    let image_config = &config.file.image;
    if on_host(request)
        && (image_config
            .packages
            .as_ref()
            .is_some_and(|p| !p.is_empty())
            || image_config.setup.is_some())
    {
        warnings.push(
            "[image] packages and setup are not installed: the native backend runs your host's own programs"
                .into(),
        );
    }
    if on_host(request) && (limits.memory.is_some() || limits.cpus.is_some()) {
        warnings.push(
            "the native backend cannot limit memory or CPU (it uses no cgroups): the memory \
             and cpus limits are not enforced (the pids limit is)"
                .into(),
        );
    }

    // kennel's own images carry their init; others rely on the engine's.
    let image_init = image.managed.then_some(IMAGE_INIT);

    let mut labels = BTreeMap::new();
    labels.insert(LABEL_MANAGED.into(), "true".into());
    labels.insert(LABEL_REGISTRY.into(), registry_label(host));
    labels.insert("dev.kennel.agent".into(), agent.name.clone());
    labels.insert(
        "dev.kennel.workspace".into(),
        workspace.root.display().to_string(),
    );

    Ok(Plan {
        version: PLAN_VERSION,
        agent: agent.name.clone(),
        name,
        backend,
        selected: request.selected.clone(),
        image,
        user,
        workspace: workspace.root.clone(),
        workdir: workspace.workdir.clone(),
        mounts,
        env,
        command,
        tty: request.tty,
        stdin: true,
        network,
        limits,
        security: SecurityPlan {
            cap_drop: vec!["ALL".into()],
            no_new_privileges: true,
            init: true,
            image_init: image_init.map(PathBuf::from),
            read_only_rootfs: false,
            seccomp_profile: Some(seccomp_profile(host)),
        },
        ephemeral: true,
        slot: 0,
        labels,
        warnings,
        allow_weaker_sandbox: request.allow_weaker_sandbox,
        git: None,
        git_identity,
        devcontainer,
    })
}

/// The workspace's devcontainer.json, where the backend runs images: its
/// constant variables (never over one kennel or you set), its lifecycle
/// commands before the agent (`command` wrapped), and one warning naming
/// what was ignored. The native backend runs the host's programs: it uses
/// none of it, and says so. Returns the file applied.
fn plan_devcontainer(
    request: &RunRequest,
    workspace: &Workspace,
    command: &mut Vec<String>,
    env: &mut Vec<EnvVar>,
    warnings: &mut Vec<String>,
) -> Option<PathBuf> {
    let devcontainer = request.devcontainer.as_ref()?;
    let path = devcontainer.path.display();
    if on_host(request) {
        warnings.push(format!(
            "{path} is not used: the native backend runs your host's own programs"
        ));
        return None;
    }
    for (name, value) in &devcontainer.env {
        if !env.iter().any(|var| &var.name == name) {
            env.push(EnvVar {
                name: name.clone(),
                value: value.clone(),
                origin: "devcontainer".into(),
                secret: false,
            });
        }
    }
    env.sort_by(|a, b| a.name.cmp(&b.name));
    if let Some(script) = devcontainer.lifecycle_script(&workspace.root) {
        let mut wrapped = vec![
            "sh".to_string(),
            "-c".to_string(),
            script,
            "kennel-devcontainer".to_string(),
        ];
        wrapped.append(command);
        *command = wrapped;
    }
    let ignored = &devcontainer.ignored;
    if !ignored.is_empty() {
        warnings.push(format!(
            "{path}: ignored, as it would reach the host, weaken the sandbox or is not supported: {}",
            ignored.join(", ")
        ));
    }
    Some(devcontainer.path.clone())
}

fn plan_mounts(
    host: &HostContext,
    config: &Config,
    agent: &AgentSpec,
    workspace: &Workspace,
    request: &RunRequest,
    warnings: &mut Vec<String>,
) -> Result<Vec<Mount>, PlanError> {
    let mount = |source: PathBuf, target: PathBuf, read_only, purpose| Mount {
        source,
        target,
        read_only,
        purpose,
    };
    let mut mounts = vec![
        mount(
            agent_home(
                host,
                &agent.name,
                (!share_agent_home(config)).then_some(workspace.root.as_path()),
            ),
            host.home.clone(),
            false,
            MountPurpose::AgentHome,
        ),
        mount(
            workspace.root.clone(),
            workspace.root.clone(),
            false,
            MountPurpose::Workspace,
        ),
    ];
    // Git control files: read-only; the directories that hold them are
    // mounted onto themselves (writable) so that the agent cannot rename
    // them away. Parents first. A path that is a symlink is never mounted
    // (the bind would follow it on the host): `Workspace::resolve` lists it
    // in `refused` instead, and direct mode refuses to start.
    let mut controls: Vec<(&PathBuf, bool)> = workspace
        .protected
        .iter()
        .map(|path| (path, true))
        .chain(workspace.pinned.iter().map(|path| (path, false)))
        .filter(|(path, _)| {
            std::fs::symlink_metadata(path).map_or(true, |meta| !meta.file_type().is_symlink())
        })
        .collect();
    controls.sort_by_key(|(path, _)| path.components().count());
    for (path, read_only) in controls {
        mounts.push(mount(
            path.clone(),
            path.clone(),
            read_only,
            MountPurpose::Protect,
        ));
    }
    let identity = identity_dir(host);
    mounts.push(mount(
        identity.join("passwd"),
        "/etc/passwd".into(),
        true,
        MountPurpose::Identity,
    ));
    mounts.push(mount(
        identity.join("group"),
        "/etc/group".into(),
        true,
        MountPurpose::Identity,
    ));
    if config
        .file
        .defaults
        .ca_certificates
        .as_ref()
        .is_some_and(|certs| !certs.is_empty())
    {
        mounts.push(mount(
            ca_bundle(host),
            ca_target(request).into(),
            true,
            MountPurpose::CaCertificates,
        ));
    }
    if request.host_config {
        for state in &agent.state {
            let path = host.expand(state);
            if path.exists() {
                mounts.push(mount(path.clone(), path, false, MountPurpose::HostConfig));
            } else {
                warnings.push(format!(
                    "--host-config: {} does not exist on the host; using kennel's copy",
                    path.display()
                ));
            }
        }
    }
    let origin = config
        .origin_of("defaults.mounts")
        .map(|o| o.to_string())
        .unwrap_or_default();
    for spec in config.file.defaults.mounts.iter().flatten() {
        mounts.push(parse_user_mount(host, spec, &origin)?);
    }
    Ok(mounts)
}

fn parse_user_mount(host: &HostContext, spec: &str, origin: &str) -> Result<Mount, PlanError> {
    let bad = |reason: &str| PlanError::BadMount {
        spec: spec.into(),
        origin: origin.into(),
        reason: reason.into(),
    };
    let parts: Vec<&str> = spec.split(':').collect();
    let (source, target, read_only) = match parts.as_slice() {
        [source, target] => (*source, *target, false),
        [source, target, "ro"] => (*source, *target, true),
        [source, target, "rw"] => (*source, *target, false),
        _ => return Err(bad("expected HOST:TARGET or HOST:TARGET:ro")),
    };
    let source = host.expand(source);
    let target = host.expand(target);
    if !source.is_absolute() || !target.is_absolute() {
        return Err(bad("both paths must be absolute (or start with ~/)"));
    }
    if !source.exists() {
        return Err(bad("the host path does not exist"));
    }
    Ok(Mount {
        source,
        target,
        read_only,
        purpose: MountPurpose::User,
    })
}

/// `text` quoted for a POSIX shell: one word, whatever it holds.
pub fn sh_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

pub fn valid_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn looks_secret(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    ["KEY", "TOKEN", "SECRET", "PASSWORD", "CREDENTIAL", "AUTH"]
        .iter()
        .any(|word| upper.contains(word))
}

/// The credentials the proxy may broker for `agent`, by the variable that
/// holds each: the catalog's bindings of the variables the agent lists in
/// `env`, and your own `[secrets.NAME]` (which replace a built-in binding
/// of the same variable).
pub fn brokered_bindings(
    config: &Config,
    agent: &AgentSpec,
) -> BTreeMap<String, (String, CredentialBinding)> {
    let mut brokered: BTreeMap<String, (String, CredentialBinding)> = agent
        .credentials
        .iter()
        .filter(|(_, binding)| binding.for_agent(&agent.name))
        .map(|(variable, binding)| (variable.clone(), (variable.clone(), binding.clone())))
        .collect();
    for (name, binding) in &config.file.secrets {
        let variable = binding.variable(name).to_string();
        if binding.for_agent(&agent.name) {
            brokered.insert(variable, (name.clone(), binding.clone()));
        } else {
            brokered.remove(&variable);
        }
    }
    brokered
}

/// The brokered credentials that have a value (the host's variable, or the
/// secret store): each in the proxy's plan, with an empty secret variable
/// that gets its placeholder when the session starts, and the session's
/// CA trusted inside. Without kennel's proxy (`none`, `open`) none is
/// passed, and `open` says so.
fn plan_credentials(
    host: &HostContext,
    request: &RunRequest,
    brokered: &BTreeMap<String, (String, CredentialBinding)>,
    network: &mut NetworkPlan,
    env: &mut Vec<EnvVar>,
    warnings: &mut Vec<String>,
) {
    let mut credentials = Vec::new();
    for (variable, (name, binding)) in brokered {
        // A value given with -e NAME=VALUE is in the sandbox already.
        if env.iter().any(|var| &var.name == variable) {
            continue;
        }
        let source = if host.env.contains_key(variable) {
            CredentialSource::Environment
        } else if request.stored_secrets.contains(name) {
            CredentialSource::Store
        } else {
            continue;
        };
        credentials.push(CredentialPlan {
            name: name.clone(),
            env: variable.clone(),
            hosts: binding.hosts.clone(),
            places: binding.places(),
            methods: binding.methods.clone(),
            paths: binding.paths.clone(),
            source,
        });
    }
    if credentials.is_empty() {
        return;
    }
    let Some(proxy) = network.proxy.as_mut() else {
        if network.mode == NetworkMode::Open {
            let names: Vec<&str> = credentials.iter().map(|c| c.env.as_str()).collect();
            warnings.push(format!(
                "{} not passed: kennel keeps credentials on the host and its proxy sends them, and an open network bypasses the proxy (use --network allowlist or restricted)",
                names.join(", ")
            ));
        }
        return;
    };
    for credential in &credentials {
        env.push(EnvVar {
            name: credential.env.clone(),
            value: String::new(),
            origin: "broker".into(),
            secret: true,
        });
    }
    env.sort_by(|a, b| a.name.cmp(&b.name));
    proxy.credentials = credentials;
}

/// The agent's subscription login, when kennel keeps one for it or this is
/// `kennel login`: its tokens stay with the proxy. Without kennel's proxy
/// there is nothing to keep them: `kennel login` is refused, and a session
/// runs with whatever login its home holds.
fn plan_login(
    agent: &AgentSpec,
    request: &RunRequest,
    network: &mut NetworkPlan,
    warnings: &mut Vec<String>,
) -> Result<(), PlanError> {
    let Some(oauth) = &agent.oauth else {
        return Ok(());
    };
    if !request.login && !request.stored_logins.contains(&agent.name) {
        return Ok(());
    }
    let Some((token_host, token_path)) = oauth.token_endpoint() else {
        return Ok(());
    };
    let Some(proxy) = network.proxy.as_mut() else {
        if request.login {
            return Err(PlanError::LoginNeedsProxy(
                network.mode.as_str().to_string(),
            ));
        }
        warnings.push(format!(
            "the {} login kennel keeps is not used: --network {} bypasses kennel's proxy",
            agent.name,
            network.mode.as_str()
        ));
        return Ok(());
    };
    if request.login {
        // The login must reach its token endpoint, and the agent checks
        // the new login where it is used.
        for host in std::iter::once(&token_host).chain(&oauth.hosts) {
            if !network.allow.contains(host) {
                network.allow.push(host.clone());
            }
        }
    }
    proxy.logins.push(LoginPlan {
        name: agent.name.clone(),
        token_host,
        token_path,
        hosts: oauth.hosts.clone(),
        header: oauth.header.to_ascii_lowercase(),
        capture: request.login,
    });
    Ok(())
}

/// The session's CA, trusted inside by the system's store and by Node:
/// the proxy terminates TLS for brokered hosts with it.
fn trust_session_ca(
    request: &RunRequest,
    network: &mut NetworkPlan,
    env: &mut Vec<EnvVar>,
    mounts: &mut Vec<Mount>,
) {
    let Some(proxy) = network.proxy.as_mut() else {
        return;
    };
    if let Some(dir) = proxy.socket.parent() {
        mounts.retain(|mount| mount.purpose != MountPurpose::CaCertificates);
        mounts.push(Mount {
            source: dir.join(SESSION_CA_BUNDLE),
            target: SYSTEM_CA_BUNDLE.into(),
            read_only: true,
            purpose: MountPurpose::CaCertificates,
        });
        mounts.push(Mount {
            source: dir.join(SESSION_CA_EXTRA),
            target: ca_target(request).into(),
            read_only: true,
            purpose: MountPurpose::CaCertificates,
        });
        env.retain(|var| var.name != "NODE_EXTRA_CA_CERTS" || var.origin != "kennel");
        if !env.iter().any(|var| var.name == "NODE_EXTRA_CA_CERTS") {
            env.push(EnvVar {
                name: "NODE_EXTRA_CA_CERTS".into(),
                value: ca_target(request).into(),
                origin: "kennel".into(),
                secret: false,
            });
            env.sort_by(|a, b| a.name.cmp(&b.name));
        }
    }
}

fn plan_env(
    host: &HostContext,
    config: &Config,
    agent: &AgentSpec,
    request: &RunRequest,
    brokered: &BTreeMap<String, (String, CredentialBinding)>,
    warnings: &mut Vec<String>,
) -> Result<Vec<EnvVar>, PlanError> {
    let mut env: BTreeMap<String, EnvVar> = BTreeMap::new();
    let mut set = |name: &str, value: &str, origin: &str| {
        let secret = origin != "kennel" && looks_secret(name);
        env.insert(
            name.into(),
            EnvVar {
                name: name.into(),
                value: value.into(),
                origin: origin.into(),
                secret,
            },
        );
    };
    let home = host.home.display().to_string();
    set("HOME", &home, "kennel");
    set("USER", &host.user, "kennel");
    set("LOGNAME", &host.user, "kennel");
    set("SHELL", "/bin/bash", "kennel");
    set("KENNEL", "1", "kennel");
    set("KENNEL_AGENT", &agent.name, "kennel");
    if config
        .file
        .defaults
        .ca_certificates
        .as_ref()
        .is_some_and(|certs| !certs.is_empty())
    {
        set("NODE_EXTRA_CA_CERTS", ca_target(request), "kennel");
    }
    if on_host(request) {
        // Container images set PATH themselves; on the host there is no image.
        set("PATH", NATIVE_PATH, "kennel");
    }
    for (name, value) in &host.env {
        if PASSTHROUGH.contains(&name.as_str()) || name.starts_with("LC_") {
            set(name, value, "host");
        }
    }
    for name in &agent.env {
        // A brokered credential's value stays on the host.
        if brokered.contains_key(name) {
            continue;
        }
        if let Some(value) = host.env.get(name) {
            set(name, value, "agent");
        }
    }
    // Names checked when the catalog was loaded.
    for (name, value) in &agent.set_env {
        set(name, value, "agent");
    }
    let mut from_spec =
        |spec: &str, origin: &str, warnings: &mut Vec<String>| -> Result<(), PlanError> {
            match spec.split_once('=') {
                Some((name, value)) => {
                    if !valid_env_name(name) {
                        return Err(PlanError::BadEnvName(spec.into()));
                    }
                    set(name, value, origin);
                }
                None => {
                    if !valid_env_name(spec) {
                        return Err(PlanError::BadEnvName(spec.into()));
                    }
                    if brokered.contains_key(spec) {
                        // Brokered: the proxy takes it from the host.
                        return Ok(());
                    }
                    match host.env.get(spec) {
                        Some(value) => set(spec, value, origin),
                        None => warnings.push(format!("{spec} is not set on the host; not passed")),
                    }
                }
            }
            Ok(())
        };
    for spec in config.file.defaults.env.iter().flatten() {
        from_spec(spec, "config", warnings)?;
    }
    for spec in &request.env {
        from_spec(spec, "flag", warnings)?;
    }
    Ok(env.into_values().collect())
}

fn plan_network(
    host: &HostContext,
    config: &Config,
    agent: &AgentSpec,
    request: &RunRequest,
    name: &str,
    warnings: &mut Vec<String>,
) -> Result<NetworkPlan, PlanError> {
    let defaults = &config.file.defaults;
    let mode = request
        .network
        .or(defaults.network)
        .unwrap_or(NetworkMode::Allowlist);
    let mut allow: Vec<String> = agent.domains.clone();
    allow.extend(defaults.allow.iter().flatten().cloned());
    allow.extend(request.allow.iter().cloned());
    allow.sort();
    allow.dedup();
    let deny = defaults.deny.clone().unwrap_or_default();
    let proxy = match mode {
        NetworkMode::Open => {
            warnings.push("network is open: the sandbox can reach any address".into());
            None
        }
        NetworkMode::None => None,
        NetworkMode::Allowlist | NetworkMode::Restricted => {
            if let Some(upstream) = &config.file.network.upstream_proxy {
                warnings.push(format!(
                    "network.upstream_proxy: connections go through {}, which resolves each \
                     name again and connects where its own DNS says: kennel checks the name and \
                     the addresses it resolves itself, but the private-address check and DNS \
                     rebinding protection depend on the upstream proxy (a name kennel cannot \
                     resolve is checked by name only)",
                    redact_userinfo(upstream)
                ));
            }
            let network = &config.file.network;
            let trusted = network.trusted.clone().unwrap_or_default();
            crate::config::parse_trusted(&trusted).map_err(|reason| PlanError::BadValue {
                key: "network.trusted".into(),
                reason: format!(
                    "{reason} (write address ranges as CIDR, e.g. \"10.1.0.0/16\" or \"fd00::/8\")"
                ),
            })?;
            let dir = proxy_dir(host, name);
            Some(ProxyPlan {
                listen_inside: PROXY_LISTEN_INSIDE.into(),
                socket: dir.join(PROXY_SOCKET_NAME),
                socket_inside: Path::new(PROXY_DIR_INSIDE).join(PROXY_SOCKET_NAME),
                log: net_log(host, name),
                hosts: network.hosts.clone().unwrap_or_default(),
                upstream: network.upstream_proxy.clone(),
                trusted,
                credentials: Vec::new(),
                logins: Vec::new(),
            })
        }
    };
    Ok(NetworkPlan {
        mode,
        allow,
        deny,
        enforced: true,
        proxy,
    })
}

/// The identity the agent's commits carry, from `defaults.git_identity`:
/// yours (falling back to the agent's, with a warning, when your git has no
/// `user.name` or `user.email`), the agent's, or a fixed one.
fn plan_git_identity(
    config: &Config,
    agent: &AgentSpec,
    host_git: &HostGit,
    warnings: &mut Vec<String>,
) -> Result<Option<GitIdentityPlan>, PlanError> {
    use crate::config::GitIdentitySetting;
    let default_branch = host_git.default_branch.clone();
    let mut note = None;
    let (source, name, email) = match &config.file.defaults.git_identity {
        None => return Ok(None),
        Some(GitIdentitySetting::Keyword(word)) if word == "user" => {
            match (&host_git.name, &host_git.email) {
                (Some(name), Some(email)) => ("user", name.clone(), email.clone()),
                // As on the host, where git would refuse to commit: the
                // agent's identity, and the Plan says why.
                _ => {
                    note = Some(
                        "your git config has no user.name or user.email: set them \
                         (`git config --global user.name …`, `user.email …`) to sign the \
                         agent's commits as you"
                            .to_string(),
                    );
                    let (name, email) = agent_author(agent);
                    ("agent", name, email)
                }
            }
        }
        Some(GitIdentitySetting::Keyword(word)) if word == "agent" => {
            let (name, email) = agent_author(agent);
            if agent.git_author.is_empty() {
                warnings.push(format!(
                    "git_identity = \"agent\": {} has no git_author in the catalog; its commits \
                     carry {name} <{email}>",
                    agent.name
                ));
            }
            ("agent", name, email)
        }
        Some(GitIdentitySetting::Keyword(word)) => {
            return Err(PlanError::BadValue {
                key: "defaults.git_identity".into(),
                reason: format!(
                    "`{word}` is not \"user\", \"agent\" or {{ name = \"…\", email = \"…\" }}"
                ),
            });
        }
        Some(GitIdentitySetting::Fixed(fixed)) => {
            ("config", fixed.name.clone(), fixed.email.clone())
        }
    };
    for (what, value) in [("name", &name), ("email", &email)] {
        if value.trim().is_empty() || value.contains(['\n', '\r', '\0']) {
            return Err(PlanError::BadValue {
                key: format!("git identity {what}"),
                reason: format!("{value:?} must be one non-empty line"),
            });
        }
    }
    let default_branch = default_branch
        .filter(|branch| !branch.is_empty() && !branch.contains(['\n', '\r', '\0', '"', '\\']));
    Ok(Some(GitIdentityPlan {
        source: source.into(),
        name,
        email,
        default_branch,
        note,
    }))
}

/// The agent's own identity: its catalog `git_author` (`Name <email>`), or
/// `<agent> (kennel) <<agent>@kennel.invalid>`.
fn agent_author(agent: &AgentSpec) -> (String, String) {
    let parsed = agent.git_author.trim().strip_suffix('>').and_then(|rest| {
        let (name, email) = rest.rsplit_once('<')?;
        let (name, email) = (name.trim(), email.trim());
        (!name.is_empty() && !email.is_empty()).then(|| (name.to_string(), email.to_string()))
    });
    parsed.unwrap_or_else(|| {
        (
            format!("{} (kennel)", agent.name),
            format!("{}@kennel.invalid", agent.name),
        )
    })
}

/// The git config file given to the sandbox for `identity`.
pub fn git_config_text(identity: &GitIdentityPlan) -> String {
    let quote = |value: &str| format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""));
    let mut text = format!(
        "# Written by kennel: the identity of this session's commits ({}).\n\
         [user]\n\tname = {}\n\temail = {}\n",
        identity.source,
        quote(&identity.name),
        quote(&identity.email)
    );
    if let Some(branch) = &identity.default_branch {
        text.push_str(&format!("[init]\n\tdefaultBranch = {}\n", quote(branch)));
    }
    text
}

/// Where kennel keeps the git config for `identity` on the host: named by
/// its content, so that sessions with different identities never share one.
pub fn git_config_file(host: &HostContext, identity: &GitIdentityPlan) -> PathBuf {
    use sha2::{Digest, Sha256};
    let digest = hex::encode(Sha256::digest(git_config_text(identity).as_bytes()));
    identity_dir(host).join(format!("git-{}.config", &digest[..16]))
}

/// `http://user:password@host:port` without its credentials.
fn redact_userinfo(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((_, host)) => format!("{scheme}://{host}"),
            None => url.to_string(),
        },
        None => url
            .rsplit_once('@')
            .map_or(url, |(_, host)| host)
            .to_string(),
    }
}

/// The limits: the command line's flags over the configuration.
fn plan_limits(
    defaults: &crate::config::Defaults,
    request: &RunRequest,
) -> Result<Limits, PlanError> {
    let positive = |key: &str, ok: bool, value: String| {
        if ok {
            Ok(())
        } else {
            Err(PlanError::BadValue {
                key: key.into(),
                reason: format!("`{value}` must be positive"),
            })
        }
    };
    let limits = Limits {
        pids: match request.pids_limit {
            Some(pids) => {
                positive("--pids-limit", pids > 0, pids.to_string())?;
                pids
            }
            None => {
                let pids = defaults.pids_limit.unwrap_or(1024);
                positive("defaults.pids_limit", pids > 0, pids.to_string())?;
                pids
            }
        },
        memory: match &request.memory {
            Some(memory) => Some(parse_bytes(memory, "--memory")?),
            None => defaults
                .memory
                .as_deref()
                .map(|memory| parse_bytes(memory, "defaults.memory"))
                .transpose()?,
        },
        cpus: match request.cpus {
            Some(cpus) => {
                positive("--cpus", cpus > 0.0 && cpus.is_finite(), cpus.to_string())?;
                Some(cpus)
            }
            None => defaults.cpus,
        },
    };
    Ok(limits)
}

/// Gives `plan` agent-home slot `slot`: its own home directory
/// ([`slot_home`]) next to the agent's home in the Plan.
pub fn use_slot(plan: &mut Plan, slot: i64) {
    plan.slot = slot;
    let Some(base) = base_home(plan) else {
        return;
    };
    for mount in &mut plan.mounts {
        if mount.purpose == MountPurpose::AgentHome {
            mount.source = slot_home(&base, slot);
        }
    }
}

/// The agent home of slot 0 of `plan`'s agent (that of its repository, or
/// the shared one), whatever slot the Plan has.
pub fn base_home(plan: &Plan) -> Option<PathBuf> {
    let home = plan.mount(MountPurpose::AgentHome)?;
    Some(home.source.parent()?.join(&plan.agent))
}

/// The agent home of `slot`: `base` (the agent's home) for slot 0,
/// `<agent>@<slot>` next to it for the others.
pub fn slot_home(base: &Path, slot: i64) -> PathBuf {
    if slot == 0 {
        return base.to_path_buf();
    }
    let agent = base
        .file_name()
        .map(|name| name.to_string_lossy().to_string())
        .unwrap_or_default();
    base.with_file_name(format!("{agent}@{slot}"))
}

/// Whether `plan`'s agent home is shared by every repository (rather than
/// its repository's own): slots are then counted across repositories.
pub fn home_is_shared(plan: &Plan, host: &HostContext) -> bool {
    base_home(plan).is_some_and(|base| base == shared_agent_home(host, &plan.agent))
}

/// Parses sizes such as `512m`, `4g`, `1073741824`; `key` names the setting.
fn parse_bytes(text: &str, key: &str) -> Result<i64, PlanError> {
    let bad = || PlanError::BadValue {
        key: key.into(),
        reason: format!("`{text}` is not a size like 512m or 4g"),
    };
    let lower = text.trim().to_ascii_lowercase();
    let lower = lower.trim_end_matches('b');
    let (digits, factor) = match lower.chars().last() {
        Some('k') => (&lower[..lower.len() - 1], 1i64 << 10),
        Some('m') => (&lower[..lower.len() - 1], 1 << 20),
        Some('g') => (&lower[..lower.len() - 1], 1 << 30),
        _ => (lower, 1),
    };
    let value: i64 = digits.parse().map_err(|_| bad())?;
    value
        .checked_mul(factor)
        .filter(|bytes| *bytes > 0)
        .ok_or_else(bad)
}

/// A random number for unique names (not for secrets): std's randomly
/// keyed hasher over the time and the process id.
pub fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    hasher.write_u32(std::process::id());
    hasher.finish()
}

/// A readable, unique container name: `kennel-<agent>-<dir>-<random>`.
pub fn sandbox_name(agent: &str, workspace: &Path) -> String {
    let dir: String = workspace
        .file_name()
        .map(|name| name.to_string_lossy().to_string())
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(24)
        .collect();
    let suffix = format!("{:08x}", random_u64() as u32);
    if dir.is_empty() {
        format!("kennel-{agent}-{suffix}")
    } else {
        format!("kennel-{agent}-{dir}-{suffix}")
    }
}

/// The `/etc/passwd` and `/etc/group` the sandbox sees: root, nobody and the
/// invoking user, so that `id -un` and `~` work for the user's own uid.
pub fn identity_files(user: &UserPlan) -> (String, String) {
    let mut passwd = String::from("root:x:0:0:root:/root:/bin/sh\n");
    let mut group = String::from("root:x:0:\n");
    if user.uid != 0 {
        passwd.push_str(&format!(
            "{}:x:{}:{}:{}:{}:{}\n",
            user.name,
            user.uid,
            user.gid,
            user.name,
            user.home.display(),
            user.shell
        ));
    }
    if user.gid != 0 {
        group.push_str(&format!("{}:x:{}:\n", user.name, user.gid));
    }
    passwd.push_str("nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n");
    group.push_str("nogroup:x:65534:\n");
    (passwd, group)
}

#[cfg(test)]
#[path = "settings_tests.rs"]
mod tests;
