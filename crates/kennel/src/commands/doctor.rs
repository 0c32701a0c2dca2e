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
        let backends = crate::ui::table(&["BACKEND", "STATUS", "DETAIL"], &rows(&report.backends));
        let checks = crate::ui::table(&["CHECK", "STATUS", "DETAIL"], &rows(&report.checks));
        crate::ui::write_stdout(format_args!("{backends}\n{checks}"));
    }
    Ok(if usable { 0 } else { 1 })
}

/// Table rows for `checks`: each one's status and what was found, and
/// under one that failed, its fix.
fn rows(checks: &[Check]) -> Vec<[String; 3]> {
    let mut rows = Vec::new();
    for check in checks {
        let status = if check.ok { "ok" } else { "FAIL" };
        rows.push([check.name.clone(), status.to_string(), check.detail.clone()]);
        if let Some(fix) = check.fix.as_ref().filter(|_| !check.ok) {
            rows.push([String::new(), String::new(), format!("fix: {fix}")]);
        }
    }
    rows
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

#[cfg(test)]
mod tests {
    use super::{Check, rows};

    /// What a user reads: a failing check's fix under it, a passing one's
    /// never.
    #[test]
    fn the_report_as_a_table() {
        let check = |name: &str, ok: bool, detail: &str| Check {
            name: name.into(),
            ok,
            detail: detail.into(),
            fix: Some(format!("the fix for {name}")),
        };
        let table = crate::ui::table(
            &["BACKEND", "STATUS", "DETAIL"],
            &rows(&[
                check("docker", true, "version 28.2.2 at /var/run/docker.sock"),
                check("podman-rootless", false, "no API socket"),
            ]),
        );
        insta::assert_snapshot!(table, @r"
        BACKEND          STATUS  DETAIL
        docker           ok      version 28.2.2 at /var/run/docker.sock
        podman-rootless  FAIL    no API socket
                                 fix: the fix for podman-rootless
        ");
    }
}
