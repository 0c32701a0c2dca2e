//! `kennel doctor`: what works here, and how to fix what does not.

use clap::Args;
use serde::Serialize;

use crate::cli::JsonFlag;
use kennel_lib::context::Context;
use kennel_lib::error::CliError;

#[derive(Debug, Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub json: JsonFlag,
}

/// One line of the report; `--json` prints a list of these under `checks`.
#[derive(Debug, Serialize)]
struct Check {
    name: String,
    ok: bool,
    detail: String,
    fix: Option<String>,
}

#[derive(Debug, Serialize)]
struct Report {
    backends: Vec<Check>,
    checks: Vec<Check>,
}

pub async fn run(args: DoctorArgs) -> Result<i32, CliError> {
    let mut backends: Vec<Check> = kennel_engine::probe_all()
        .await
        .into_iter()
        .map(|probe| Check {
            name: probe.name,
            ok: probe.available,
            detail: match (&probe.version, &probe.socket) {
                (Some(version), Some(socket)) if probe.available => {
                    format!("version {version} at {}", socket.display())
                }
                _ => probe.reason.clone(),
            },
            fix: probe.fix,
        })
        .collect();
    backends.push(native_check());

    let mut checks = Vec::new();
    let git = std::process::Command::new("git").arg("--version").output();
    checks.push(match git {
        Ok(output) if output.status.success() => Check {
            name: "git".into(),
            ok: true,
            detail: String::from_utf8_lossy(&output.stdout).trim().to_string(),
            fix: None,
        },
        _ => Check {
            name: "git".into(),
            ok: false,
            detail: "git was not found".into(),
            fix: Some("install git (apt-get install git)".into()),
        },
    });
    checks.push(match Context::load_here() {
        Ok(context) => Check {
            name: "config".into(),
            ok: true,
            detail: format!(
                "loaded ({}); {} agents in the catalog",
                context.host.user_config_file().display(),
                context.catalog.agents().count()
            ),
            fix: None,
        },
        Err(error) => Check {
            name: "config".into(),
            ok: false,
            detail: error.message,
            fix: error.hint,
        },
    });

    let usable = backends.iter().any(|backend| backend.ok);
    let report = Report { backends, checks };
    if args.json.json {
        crate::ui::print_json_object(&report)?;
    } else {
        outln!("backends:");
        for check in &report.backends {
            print_check(check);
        }
        outln!("checks:");
        for check in &report.checks {
            print_check(check);
        }
    }
    Ok(if usable { 0 } else { 1 })
}

fn print_check(check: &Check) {
    let mark = if check.ok { "ok  " } else { "FAIL" };
    outln!("  [{mark}] {:16} {}", check.name, check.detail);
    if let Some(fix) = check.fix.as_ref().filter(|_| !check.ok) {
        outln!("         {:16} fix: {fix}", "");
    }
}

/// The native backend: what this kernel offers, found by trying it.
fn native_check() -> Check {
    let probe = kennel_native::probe();
    let features = format!(
        "user namespaces {}, Landlock {}, seccomp {}",
        if probe.userns { "yes" } else { "no" },
        probe
            .landlock_abi
            .map_or("no".to_string(), |abi| format!("ABI {abi}")),
        if probe.seccomp { "yes" } else { "no" },
    );
    Check {
        name: "native".into(),
        ok: probe.available,
        detail: if probe.available {
            format!(
                "{features}; each sandbox has its own network namespace: `none` has only \
                 loopback, `allowlist` and `restricted` reach out through kennel's proxy \
                 alone, `open` shares the host's network"
            )
        } else {
            format!(
                "{} ({features}); kennel refuses unless --allow-weaker-sandbox",
                probe.reason
            )
        },
        fix: probe.fix,
    }
}
