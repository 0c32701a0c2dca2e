//! Errors as the user sees them: a message, a hint, and an exit code.

use std::fmt;

/// 2 for bad usage, 125 for kennel's own failure before the agent started,
/// 126 for an agent command that cannot be run and 127 for one that does
/// not exist (as `docker run` does), the same on every backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKind {
    Usage,
    Kennel,
    CannotExecute,
    CommandNotFound,
}

impl ExitKind {
    pub fn code(self) -> i32 {
        match self {
            ExitKind::Usage => 2,
            ExitKind::Kennel => 125,
            ExitKind::CannotExecute => 126,
            ExitKind::CommandNotFound => 127,
        }
    }
}

#[derive(Debug)]
pub struct CliError {
    pub kind: ExitKind,
    pub message: String,
    pub hint: Option<String>,
}

impl CliError {
    pub fn new(kind: ExitKind, message: impl Into<String>) -> CliError {
        CliError {
            kind,
            message: message.into(),
            hint: None,
        }
    }

    pub fn usage(message: impl Into<String>) -> CliError {
        CliError::new(ExitKind::Usage, message)
    }

    pub fn kennel(message: impl Into<String>) -> CliError {
        CliError::new(ExitKind::Kennel, message)
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> CliError {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error: {}", self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

macro_rules! from_subsystem {
    ($($error:ty => $usage:expr),* $(,)?) => {$(
        impl From<$error> for CliError {
            fn from(error: $error) -> CliError {
                #[allow(clippy::redundant_closure_call)]
                let kind = if ($usage)(&error) { ExitKind::Usage } else { ExitKind::Kennel };
                CliError { kind, message: error.to_string(), hint: error.hint() }
            }
        }
    )*};
}

from_subsystem! {
    kennel_core::config::ConfigError => |_: &kennel_core::config::ConfigError| false,
    kennel_core::catalog::CatalogError => |e: &kennel_core::catalog::CatalogError| e.is_usage(),
    kennel_core::settings::PlanError => |e: &kennel_core::settings::PlanError| e.is_usage(),
    kennel_core::host::HostError => |_: &kennel_core::host::HostError| false,
    kennel_image::ImageError => |_: &kennel_image::ImageError| false,
    kennel_core::devcontainer::DevcontainerError => |e: &kennel_core::devcontainer::DevcontainerError| e.is_usage(),
    kennel_image::devimage::DevImageError => |_: &kennel_image::devimage::DevImageError| false,
}

/// An engine's failure: kennel's own (125), unless the agent's command is
/// what could not run (126, 127).
impl From<kennel_engine::EngineError> for CliError {
    fn from(error: kennel_engine::EngineError) -> CliError {
        let kind = match error.exit_code() {
            126 => ExitKind::CannotExecute,
            127 => ExitKind::CommandNotFound,
            _ => ExitKind::Kennel,
        };
        CliError {
            kind,
            message: error.to_string(),
            hint: error.hint(),
        }
    }
}

impl From<kennel_core::trust::TrustError> for CliError {
    fn from(error: kennel_core::trust::TrustError) -> CliError {
        CliError::kennel(error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::{CliError, ExitKind};
    use kennel_engine::EngineError;

    /// An engine that cannot run the agent's command exits as `docker run`
    /// does; any other engine failure is kennel's own.
    #[test]
    fn engine_errors_keep_their_exit_codes() {
        let not_runnable = |exit_code| EngineError::CommandNotRunnable {
            command: "agent".into(),
            message: "exec failed".into(),
            exit_code,
        };
        assert_eq!(CliError::from(not_runnable(127)).kind.code(), 127);
        assert_eq!(CliError::from(not_runnable(126)).kind.code(), 126);
        let other = CliError::from(EngineError::InvalidPlan("no image".into()));
        assert_eq!(other.kind, ExitKind::Kennel);
        assert_eq!(other.kind.code(), 125);
    }
}
