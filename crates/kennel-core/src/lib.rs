//! kennel-core: configuration, the agent catalog, settings resolution and the
//! Plan. Nothing here talks to an engine or prints.

pub mod catalog;
pub mod config;
pub mod credentials;
pub mod devcontainer;
pub mod host;
pub mod logins;
pub mod plan;
pub mod seccomp;
pub mod settings;
pub mod tree;
pub mod trust;

pub use plan::Plan;
