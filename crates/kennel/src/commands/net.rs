//! `kennel net`: what the sandbox's network did.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use kennel_core::settings;
use kennel_proxy::Decision;

use kennel_lib::context::Context;
use kennel_lib::error::CliError;

#[derive(Debug, Subcommand)]
pub enum NetCommand {
    /// Show the egress proxy's decisions for a session (default: the most recent one)
    Log(LogArgs),
}

#[derive(Debug, Args)]
pub struct LogArgs {
    /// The session (sandbox name, as in the Plan's `name`)
    #[arg(long, value_name = "NAME")]
    pub session: Option<String>,

    /// Only the refused connections
    #[arg(long)]
    pub denied: bool,

    #[command(flatten)]
    pub json: crate::cli::JsonFlag,
}

pub fn run(command: NetCommand) -> Result<i32, CliError> {
    match command {
        NetCommand::Log(args) => log(args),
    }
}

fn log(args: LogArgs) -> Result<i32, CliError> {
    let context = Context::load(None)?;
    let dir = settings::net_log_dir(&context.host);
    let path = match &args.session {
        Some(name) => {
            if name.is_empty() || name.contains('/') || name.starts_with('.') {
                return Err(CliError::usage(format!("`{name}` is not a session name")));
            }
            let path = settings::net_log(&context.host, name);
            if !path.exists() {
                return Err(
                    CliError::kennel(format!("no network log for session `{name}`"))
                        .with_hint(format!("logs are in {}", dir.display())),
                );
            }
            path
        }
        None => most_recent(&dir).ok_or_else(|| {
            CliError::kennel("no network log yet").with_hint(
                "a log is written for every `kennel run` in allowlist or restricted mode",
            )
        })?,
    };
    let mut decisions =
        kennel_proxy::read_log(&path).map_err(|error| CliError::kennel(error.to_string()))?;
    if args.denied {
        decisions.retain(Decision::is_denied);
    }
    if args.json.json {
        return crate::ui::print_json_list("decisions", &decisions);
    }
    let session = path
        .file_name()
        .map(|name| {
            name.to_string_lossy()
                .trim_end_matches(".net.jsonl")
                .to_string()
        })
        .unwrap_or_default();
    if decisions.is_empty() {
        kennel_lib::report::note(&format!(
            "session {session}: no {}connections",
            if args.denied { "refused " } else { "" }
        ));
    } else if args.session.is_none() {
        kennel_lib::report::note(&format!("session {session}"));
    }
    let refused_hosts = agent_of(&context, &session)
        .map(|agent| agent.refused_hosts.clone())
        .unwrap_or_default();
    for decision in &decisions {
        let mut line = human(decision);
        if decision.is_denied()
            && let Some(why) = refused_hosts.get(&decision.host)
        {
            line.push_str(&format!(" — not needed: {why}"));
        }
        outln!("{line}");
    }
    Ok(0)
}

/// The catalog entry of the agent that ran in the sandbox named `sandbox`
/// (the log's name, the session's handle), if the registry still knows it.
fn agent_of<'a>(
    context: &'a Context,
    sandbox: &str,
) -> Option<&'a kennel_core::catalog::AgentSpec> {
    let registry = kennel_sessions::Registry::open(&settings::registry_path(&context.host)).ok()?;
    let sessions = registry.list(true).ok()?;
    let found = sessions
        .iter()
        .find(|session| session.handle.as_deref() == Some(sandbox))?;
    context.catalog.get(&found.agent).ok()
}

/// The newest `*.net.jsonl` in `dir`.
fn most_recent(dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter(|entry| entry.file_name().to_string_lossy().ends_with(".net.jsonl"))
        .filter_map(|entry| Some((entry.metadata().ok()?.modified().ok()?, entry.path())))
        .max()
        .map(|(_, path)| path)
}

/// `TIME VERDICT METHOD HOST:PORT → ADDR REASON ↑UP ↓DOWN`.
fn human(decision: &Decision) -> String {
    let host = if decision.host.contains(':') {
        format!("[{}]", decision.host)
    } else {
        decision.host.clone()
    };
    let addr = decision
        .addr
        .map(|addr| addr.to_string())
        .unwrap_or_else(|| "-".into());
    let mut line = format!(
        "{} {:<5} {} {host}:{} → {addr} {} ↑{} ↓{}",
        decision.time,
        decision.verdict,
        decision.method,
        decision.port,
        decision.reason,
        decision.bytes_up,
        decision.bytes_down,
    );
    if let Some(credential) = &decision.credential {
        let what = if decision.is_denied() {
            "refused"
        } else {
            "injected"
        };
        line.push_str(&format!(" [credential {credential} {what}]"));
    }
    if !decision.detail.is_empty() {
        line.push_str(&format!(" ({})", decision.detail));
    }
    line
}
