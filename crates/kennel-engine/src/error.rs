//! Errors of the Docker / Podman backend, each with a hint for the user.

use std::path::PathBuf;

use crate::EngineKind;

/// What can go wrong while talking to a container engine.
///
/// `Display` says what happened; [`EngineError::hint`] says what the user can
/// do about it (the binary prints both).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The engine's socket is missing, refuses connections, or does not answer.
    #[error("{kind} is not reachable at {}: {reason}", socket.display())]
    Unreachable {
        kind: EngineKind,
        socket: PathBuf,
        reason: String,
        fix: Option<String>,
    },

    /// `connect_auto` found neither Docker nor Podman.
    #[error("no container engine is reachable ({details})")]
    NoEngine { details: String },

    /// `DOCKER_HOST` / `CONTAINER_HOST` names something kennel cannot use.
    #[error("{variable}={value} is not supported: {reason}")]
    UnsupportedHost {
        variable: &'static str,
        value: String,
        reason: String,
    },

    #[error("image {reference} not found")]
    ImageNotFound { reference: String },

    /// The build stream reported an error in `step`; `output_tail` holds
    /// the last lines of that step's output.
    #[error("building image {tag} failed: {message}")]
    BuildFailed {
        tag: String,
        /// The step that failed (`Step 3/4 : RUN …`), when one had started.
        step: Option<String>,
        message: String,
        output_tail: Vec<String>,
    },

    /// The image a build starts `FROM` is neither here nor pullable.
    #[error(
        "building image {tag} failed: its base image {image} is not available to {kind}: {message}"
    )]
    BaseImageUnavailable {
        kind: EngineKind,
        tag: String,
        image: String,
        message: String,
    },

    #[error("a container named {name} already exists")]
    NameConflict { name: String },

    /// The command of the Plan cannot be started inside the image.
    #[error("cannot run {command:?} in the sandbox: {message}")]
    CommandNotRunnable {
        command: String,
        message: String,
        /// 127 when the executable is missing, 126 when it cannot be executed.
        exit_code: i32,
    },

    /// The Plan asks for an init process and the engine has none.
    #[error("{kind} cannot provide an init process: {message}")]
    InitMissing { kind: EngineKind, message: String },

    /// Any other error reported by the engine's API.
    #[error("{action}: {message}")]
    Api {
        action: String,
        status: Option<u16>,
        message: String,
    },

    /// A local I/O failure (terminal, stdin, signals, spawning a process).
    #[error("{action}: {source}")]
    Io {
        action: String,
        #[source]
        source: std::io::Error,
    },

    /// The Plan cannot be carried out by this backend.
    #[error("invalid plan: {0}")]
    InvalidPlan(String),
}

impl EngineError {
    /// A short, actionable suggestion for the user, when there is one.
    pub fn hint(&self) -> Option<String> {
        match self {
            Self::Unreachable { fix, .. } => fix.clone(),
            Self::NoEngine { .. } => Some(
                "no engine reachable: install docker.io and start dockerd, or install podman \
                 (or use `--backend native`)"
                    .to_string(),
            ),
            Self::UnsupportedHost { variable, .. } => Some(format!(
                "kennel talks to local engines over a unix socket only: unset {variable} or \
                 set it to unix:///path/to/engine.sock"
            )),
            Self::ImageNotFound { reference } => Some(format!(
                "build it first (`kennel image build <agent>`), or check the name with \
                 `docker images` / `podman images` (looked for {reference})"
            )),
            Self::BuildFailed { .. } => Some(
                "the failing step's output is above; fix what it names (an agent's `install` \
                 recipe, or the network the build needs) and build again; `--no-cache` \
                 rebuilds layers that a stale cache may have kept"
                    .to_string(),
            ),
            Self::BaseImageUnavailable { kind, image, .. } => Some(format!(
                "set `base_image` under [defaults] in ~/.config/kennel/config.toml to a \
                 Debian 12 image this engine has (`{kind} images` lists them; `kennel config \
                 show --origin` says where it is set now), or fix the engine's access to the \
                 registry (`{kind} pull {image}` shows why it fails)"
            )),
            Self::NameConflict { name } => Some(format!(
                "remove the old container with `docker rm -f {name}` (or `podman rm -f {name}`)"
            )),
            Self::CommandNotRunnable { command, .. } => Some(format!(
                "`{command}` is not installed (or not executable) in the image; rebuild the \
                 image or pass a different command"
            )),
            Self::InitMissing {
                kind: EngineKind::Podman,
                ..
            } => Some(
                "install podman's init: `apt install catatonit` (or set init_path in \
                 /etc/containers/containers.conf to /usr/bin/tini)"
                    .to_string(),
            ),
            Self::InitMissing {
                kind: EngineKind::Docker,
                ..
            } => Some(
                "install docker's init (`docker-init`, shipped with docker.io / tini)".to_string(),
            ),
            Self::Api {
                status: Some(409), ..
            } => {
                Some("the object is in use; retry with --force or remove what uses it".to_string())
            }
            Self::Api { .. } | Self::Io { .. } | Self::InvalidPlan(_) => None,
        }
    }

    /// The process exit code kennel should use when this error ends a run
    /// (125 = kennel failed before the agent ran, as `docker run` does).
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::CommandNotRunnable { exit_code, .. } => *exit_code,
            _ => 125,
        }
    }

    pub(crate) fn io(action: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            action: action.into(),
            source,
        }
    }

    /// Map a bollard error for `action`.
    pub(crate) fn api(action: impl Into<String>, err: bollard::errors::Error) -> Self {
        let action = action.into();
        match err {
            bollard::errors::Error::DockerResponseServerError {
                status_code,
                message,
            } => Self::Api {
                action,
                status: Some(status_code),
                message: message.trim().to_string(),
            },
            other => Self::Api {
                action,
                status: None,
                message: other.to_string(),
            },
        }
    }

    /// The HTTP status the engine answered with, when this is an API error.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } => *status,
            _ => None,
        }
    }
}

/// The HTTP status of a bollard error, if the engine answered.
pub(crate) fn status_of(err: &bollard::errors::Error) -> Option<u16> {
    match err {
        bollard::errors::Error::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}
