//! What can go wrong between kennel and Incus, sorted by what a caller does
//! about it.

use std::path::PathBuf;
use std::time::Duration;

/// An error from [`crate::Client`].
///
/// `action` fields say what the client was doing ("creating instance k1"),
/// `message` fields carry Incus's own words.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IncusError {
    /// No socket file: Incus is not installed or its daemon never ran.
    #[error(
        "no Incus socket at {}: is incusd running (or incus-user, for the user socket)?",
        path.display()
    )]
    SocketMissing { path: PathBuf },

    /// The socket exists but nobody accepts connections on it.
    #[error(
        "Incus does not answer on {}: incusd (or incus-user) is not running",
        path.display()
    )]
    NotRunning { path: PathBuf },

    /// This user may not use the socket (file permissions), or Incus does
    /// not trust the connection.
    #[error("permission denied on {}: {reason}", path.display())]
    PermissionDenied { path: PathBuf, reason: String },

    /// The instance, image, alias, file or operation does not exist.
    #[error("{action}: not found ({message})")]
    NotFound { action: String, message: String },

    /// Something of that name already exists.
    #[error("{action}: already exists ({message})")]
    AlreadyExists { action: String, message: String },

    /// Incus refused: the project's restrictions or the caller's rights.
    #[error("{action}: forbidden ({message})")]
    Forbidden { action: String, message: String },

    /// Any other error answer, with its HTTP status.
    #[error("{action}: Incus answered {status}: {message}")]
    Api {
        action: String,
        status: u16,
        message: String,
    },

    /// A background operation (create, start, exec, …) ended in failure.
    #[error("{action} failed: {message}")]
    OperationFailed { action: String, message: String },

    /// Incus did not answer, or the operation did not end, in time.
    #[error("{action}: no result within {} s", timeout.as_secs_f64())]
    Timeout { action: String, timeout: Duration },

    #[error("{action}: {source}")]
    Io {
        action: String,
        #[source]
        source: std::io::Error,
    },

    /// An answer this client cannot read (not JSON, a missing field, a
    /// websocket that broke the protocol).
    #[error("{action}: unexpected answer from Incus: {message}")]
    Protocol { action: String, message: String },
}

impl IncusError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, IncusError::NotFound { .. })
    }

    pub fn is_already_exists(&self) -> bool {
        matches!(self, IncusError::AlreadyExists { .. })
    }

    /// An error answer, sorted by Incus's status code. A restricted
    /// project's refusals ("Use of low-level config \"raw.lxc\" … is
    /// forbidden", "Disk source path \"/tmp\" not allowed") come as 500s.
    pub(crate) fn from_status(action: &str, status: u16, message: String) -> Self {
        let action = action.to_string();
        let refused = message.contains("forbidden") || message.contains("not allowed");
        match status {
            404 => IncusError::NotFound { action, message },
            409 => IncusError::AlreadyExists { action, message },
            403 => IncusError::Forbidden { action, message },
            400 | 500 if refused => IncusError::Forbidden { action, message },
            _ => IncusError::Api {
                action,
                status,
                message,
            },
        }
    }

    /// A failed operation. Incus 6.0 reports a duplicate instance name only
    /// as the database's constraint failing, after the 202.
    pub(crate) fn operation_failed(action: &str, message: String) -> Self {
        let action = action.to_string();
        if message.contains("UNIQUE constraint failed") || message.contains("already exists") {
            IncusError::AlreadyExists { action, message }
        } else {
            IncusError::OperationFailed { action, message }
        }
    }

    pub(crate) fn protocol(action: &str, message: impl Into<String>) -> Self {
        IncusError::Protocol {
            action: action.to_string(),
            message: message.into(),
        }
    }

    pub(crate) fn io(action: &str, source: std::io::Error) -> Self {
        IncusError::Io {
            action: action.to_string(),
            source,
        }
    }
}
