//! kennel's Docker and Podman backend, over the Docker Engine API.
//!
//! * [`connect`] / [`connect_auto`] find an engine's unix socket (Docker:
//!   `DOCKER_HOST` or `/var/run/docker.sock`; Podman: `CONTAINER_HOST`, the
//!   rootful socket for root, else the user's rootless socket, starting
//!   `podman system service` when nothing answers) and negotiate the API version.
//! * [`Engine::run`] carries out a [`kennel_core::Plan`]: create, attach, wait,
//!   start; raw terminal, window size and signals are handled on the way.
//! * Images: [`Engine::build_image`], [`Engine::list_images`], [`Engine::remove_image`].
//! * [`probe_all`] says, for `kennel doctor`, what works here and how to fix what does not.
//!
//! This crate never prints; it logs through `tracing`.

mod cache;
mod connect;
mod error;
mod images;
mod raw;
mod run;
mod seccomp;
mod session;
mod term;
mod workbench;

pub use connect::{Engine, EngineKind, Probe, connect, connect_auto, probe_all};
pub use error::EngineError;
pub use images::{BuildEvent, BuildRequest, ExportedImage, ImageSummary};
pub use session::{ContainerState, ContainerSummary, OutputStream};
pub use workbench::{
    ImageRunConfig, RELAY_PORT, Workbench, WorkbenchExec, WorkbenchNetwork, WorkbenchSpec,
};
