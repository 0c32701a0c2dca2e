//! `kennel doctor`: what works here, and how to fix what does not.

use clap::Args;
use serde::Serialize;

use crate::cli::JsonFlag;
use crate::context::Context;
use crate::error::CliError;

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
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        println!("backends:");
        for check in &report.backends {
            print_check(check);
        }
        println!("checks:");
        for check in &report.checks {
            print_check(check);
        }
    }
    Ok(if usable { 0 } else { 1 })
}

fn print_check(check: &Check) {
    let mark = if check.ok { "ok  " } else { "FAIL" };
    println!("  [{mark}] {:16} {}", check.name, check.detail);
    if let Some(fix) = check.fix.as_ref().filter(|_| !check.ok) {
        println!("         {:16} fix: {fix}", "");
    }
}

/// The native backend is not built yet; report what the kernel would offer.
fn native_check() -> Check {
    let userns = std::fs::read_to_string("/proc/sys/user/max_user_namespaces")
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok())
        .is_some_and(|max| max > 0);
    let landlock = std::fs::read_to_string("/sys/kernel/security/lsm")
        .is_ok_and(|lsm| lsm.contains("landlock"));
    Check {
        name: "native".into(),
        ok: false,
        detail: format!(
            "not available in this version of kennel (kernel: user namespaces {}, landlock {})",
            if userns { "yes" } else { "no" },
            if landlock { "yes" } else { "unknown" }
        ),
        fix: Some("use docker or podman for now".into()),
    }
}
