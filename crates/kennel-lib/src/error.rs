//! Errors as the user sees them: a message, a hint, and an exit code.

use std::fmt;

/// 2 for bad usage, 125 for kennel's own failure before the agent started,
/// 127 for an agent command that does not exist (as `docker run` does), the
/// same on every backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKind {
    Usage,
    Kennel,
    CommandNotFound,
}

impl ExitKind {
    pub fn code(self) -> i32 {
        match self {
            ExitKind::Usage => 2,
            ExitKind::Kennel => 125,
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
    kennel_engine::EngineError => |_: &kennel_engine::EngineError| false,
}

impl From<kennel_core::trust::TrustError> for CliError {
    fn from(error: kennel_core::trust::TrustError) -> CliError {
        CliError::kennel(error.to_string())
    }
}
