//! Picks the backend a command should use and connects its engine.

use kennel_core::plan::BackendChoice;
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

/// Resolves the requested backend (`auto` = Docker if reachable, else
/// Podman, else native). Returns the connected engine when one runs the Plan
/// (`connect_engine` false, as for `--dry-run`, connects only to resolve
/// `auto`).
pub async fn select(
    requested: &str,
    connect_engine: bool,
) -> Result<(Option<Engine>, BackendChoice), CliError> {
    let choice = |backend: &str, reason: String| BackendChoice {
        backend: backend.to_string(),
        reason,
    };
    match requested {
        "native" => Ok((None, choice("native", "requested".into()))),
        "docker" | "podman" if !connect_engine => Ok((None, choice(requested, "requested".into()))),
        "docker" | "podman" => {
            let engine = connect(requested).await?;
            let reason = format!(
                "requested; {} {} at {}",
                engine.label(),
                engine.version(),
                engine.socket().display()
            );
            Ok((Some(engine), choice(requested, reason)))
        }
        "auto" => match kennel_engine::connect_auto().await {
            Ok((engine, why)) => {
                let backend = engine.kind().to_string();
                tracing::info!(backend, "{why}");
                Ok((Some(engine), choice(&backend, format!("auto: {why}"))))
            }
            Err(error) => {
                let reason = format!(
                    "auto: no container engine is reachable ({error}); using the native backend"
                );
                tracing::info!("{reason}");
                Ok((None, choice("native", reason)))
            }
        },
        other => Err(CliError::usage(format!("unknown backend `{other}`"))
            .with_hint("choose one of: auto, docker, podman, native")),
    }
}
