//! `kennel doctor`'s findings: which backends work here, and what else
//! kennel needs, each with the fix for what does not work.

use serde::Serialize;

use crate::context::Context;

/// One line of the report; `--json` prints a list of these under `checks`.
#[derive(Debug, Serialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
    pub fix: Option<String>,
}

/// Everything `kennel doctor` found.
#[derive(Debug, Serialize)]
pub struct Report {
    pub backends: Vec<Check>,
    pub checks: Vec<Check>,
}

impl Report {
    /// Whether any backend works here.
    pub fn usable(&self) -> bool {
        self.backends.iter().any(|backend| backend.ok)
    }
}

/// Tries every backend and what else kennel needs.
pub async fn report() -> Report {
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
    // Backends from other crates: working when they connect.
    for backend in crate::backend::registered_backends() {
        backends.push(match backend.connect().await {
            Ok(found) => Check {
                name: backend.name().into(),
                ok: true,
                detail: found,
                fix: None,
            },
            Err(error) => Check {
                name: backend.name().into(),
                ok: false,
                detail: error.message,
                fix: error.hint,
            },
        });
    }
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
    checks.push(secrets_check());

    Report { backends, checks }
}

/// Where `kennel secret` keeps secrets, and that the file store, if
/// there is one, is the user's own and closed to others.
fn secrets_check() -> Check {
    let found = kennel_core::host::HostContext::detect()
        .map_err(crate::CliError::from)
        .and_then(|host| crate::secrets::SecretStore::open(&host.data_dir))
        .and_then(|store| Ok((store.check()?, store.describe())));
    match found {
        Ok((count, place)) => Check {
            name: "secrets".into(),
            ok: true,
            detail: match count {
                0 => format!("kept in {place}; none yet"),
                1 => format!("kept in {place}; 1 secret"),
                count => format!("kept in {place}; {count} secrets"),
            },
            fix: None,
        },
        Err(error) => Check {
            name: "secrets".into(),
            ok: false,
            detail: error.message,
            fix: error.hint,
        },
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
