//! kennel's library: everything the `kennel` binary does on the host
//! between the command line and the sandbox. A command resolves its
//! [`context::Context`] (host, config, catalog, workspace), builds a Plan
//! (`kennel_core::settings`), picks a [`backend::Backend`] by name, and
//! records the session in the registry ([`sessions`]); worktree and clone
//! modes get a [`checkout`], direct mode a [`git_audit`], and the sandbox's
//! egress goes through a [`proxy`].
//!
//! The library never prints: what the user should hear goes through
//! [`report`], whose look the binary owns.

pub mod backend;
pub mod broker;
pub mod checkout;
pub mod cleanup;
pub mod context;
pub mod dev_build;
pub mod doctor;
pub mod error;
pub mod git_audit;
pub mod image_build;
pub mod images;
pub mod launch;
pub mod login;
pub mod native_session;
pub mod oauth_vault;
pub mod proxy;
pub mod proxy_daemon;
pub mod report;
pub mod secrets;
pub mod sessions;
pub mod text;
pub mod timing;
pub mod tmux;
pub mod verify;

pub use error::{CliError, ExitKind};

/// The async runtime a command runs on (two workers: kennel waits on
/// sockets and processes, it does not compute).
pub fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|error| CliError::kennel(format!("cannot start the async runtime: {error}")))
}
