//! Picks the backend a command should use and connects its engine.

use kennel_engine::{Engine, EngineKind};

use crate::error::CliError;

/// Connects the engine named by `backend` (`auto`, `docker`, `podman`).
pub async fn connect(backend: &str) -> Result<Engine, CliError> {
    let engine = match backend {
        "docker" => kennel_engine::connect(EngineKind::Docker).await?,
        "podman" => kennel_engine::connect(EngineKind::Podman).await?,
        "auto" => {
            let (engine, why) = kennel_engine::connect_auto().await?;
            tracing::info!(backend = engine.label(), "{why}");
            engine
        }
        "native" => {
            return Err(CliError::kennel("the native backend runs no container engine")
                .with_hint("this command needs docker or podman; `kennel doctor` shows which engines work here"))
        }
        other => {
            return Err(CliError::usage(format!("unknown backend `{other}`"))
                .with_hint("choose one of: auto, docker, podman, native"))
        }
    };
    tracing::debug!(engine = engine.label(), version = engine.version(), socket = %engine.socket().display(), "connected");
    Ok(engine)
}
