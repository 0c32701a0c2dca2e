//! Run a Plan from a JSON file, attached, and exit with its exit code.
//!
//! ```text
//! run_plan PLAN.json [docker|podman|auto]
//! ```
//!
//! Used by the integration tests (which feed stdin and send signals to this
//! process) and handy for trying the backend by hand. `RUST_LOG=debug` logs.

// An example is a program: it owns its terminal.
#![allow(clippy::print_stderr)]

use std::process::ExitCode;

use kennel_engine::{EngineKind, connect, connect_auto};

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().collect();
    let Some(path) = args.get(1) else {
        eprintln!("usage: run_plan PLAN.json [docker|podman|auto]");
        return ExitCode::from(2);
    };
    let which = args.get(2).map(String::as_str).unwrap_or("auto");
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("run_plan: {err}");
            return ExitCode::from(125);
        }
    };
    let code = runtime.block_on(async {
        let text = std::fs::read_to_string(path).map_err(|err| format!("{path}: {err}"))?;
        let plan: kennel_core::Plan =
            serde_json::from_str(&text).map_err(|err| format!("{path}: {err}"))?;
        let engine = match which {
            "docker" => connect(EngineKind::Docker).await,
            "podman" => connect(EngineKind::Podman).await,
            _ => connect_auto().await.map(|(engine, _)| engine),
        };
        let engine = engine.map_err(|err| describe(&err))?;
        engine.run(&plan).await.map_err(|err| describe(&err))
    });
    match code {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(255)),
        Err(message) => {
            eprintln!("run_plan: {message}");
            ExitCode::from(125)
        }
    }
}

fn describe(err: &kennel_engine::EngineError) -> String {
    match err.hint() {
        Some(hint) => format!("{err}\n  hint: {hint}"),
        None => err.to_string(),
    }
}
