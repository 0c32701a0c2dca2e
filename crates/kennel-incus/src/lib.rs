//! A typed async client for the parts of Incus's REST API that kennel's
//! Incus backend uses, over Incus's unix socket (hyper, HTTP/1.1).
//!
//! * [`Client::connect`] / [`Client::connect_default`]: the admin socket
//!   (`/var/lib/incus/unix.socket`, group `incus-admin`) or incus-user's
//!   (`/var/lib/incus/unix.socket.user`, group `incus`, the user's own
//!   restricted project `user-<uid>`); [`Client::server`] says which driver,
//!   version and project, and whether the connection is restricted.
//! * Images: [`Client::images`], [`Client::image_alias`],
//!   [`Client::import_image`] (split: metadata + rootfs tarballs),
//!   [`Client::delete_image`], aliases, [`Client::publish_instance`].
//! * Instances: [`Client::create_instance`] from a [`NewInstance`],
//!   start / stop / delete, [`Client::instance_state`],
//!   [`Client::instances`] filtered by `user.*` config keys,
//!   [`Client::update_instance_config`].
//! * Exec: [`Client::exec`] collects output over websockets;
//!   [`Client::exec_interactive`] gives a pty as `AsyncRead + AsyncWrite`
//!   with window-size changes, signals and the exit code.
//! * Files: [`Client::push_file`], [`Client::pull_file`].
//!
//! Every call that starts a background operation returns once it has ended,
//! its failure as [`IncusError::OperationFailed`] (or a more precise variant).
//! This crate never prints; it logs through `tracing`.

mod client;
mod error;
mod exec;
mod files;
mod images;
mod instances;
mod networks;
mod streamed;
mod transport;
mod types;

pub use client::{ADMIN_SOCKET, Client, USER_SOCKET};
pub use error::IncusError;
pub use exec::{
    ExecControl, ExecExit, ExecOutput, ExecRequest, ExecStream, InteractiveExec, TerminalSize,
};
pub use networks::{Network, Profile};
pub use types::{
    ConfigMap, DeviceMap, FileSpec, Image, ImageAlias, ImageAliasName, ImageSource, Instance,
    InstanceState, NewInstance, Operation, PulledFile, ServerInfo, StopOptions,
};
