//! `kennel ls`: the sessions in the registry.

use std::path::Path;

use clap::Args;
use kennel_core::host::HostContext;
use kennel_sessions::{Registry, Session};

use kennel_lib::error::CliError;

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Every session, not only the running ones and those ended in the last 24 hours
    #[arg(short, long)]
    pub all: bool,

    #[command(flatten)]
    pub json: crate::cli::JsonFlag,
}

pub fn run(args: LsArgs) -> Result<i32, CliError> {
    let host = HostContext::detect()?;
    let path = kennel_lib::sessions::registry_path(&host);
    // No registry yet: no sessions, and nothing to create for a listing.
    let sessions = if path.exists() {
        let mut registry = Registry::open(&path)?;
        let mut sessions = registry.list(args.all)?;
        kennel_lib::backend::settle(&mut registry, &mut sessions, args.all);
        // Direct-mode sessions found ended (however they ended): their
        // end-of-session check of the user's git control files.
        kennel_lib::git_audit::settle(&host, &registry);
        sessions
    } else {
        Vec::new()
    };
    if args.json.json {
        // One repository opened per workspace, however many sessions it has.
        let mut repos = std::collections::HashMap::new();
        let listed: Vec<Listed> = sessions
            .iter()
            .map(|session| Listed::of(session, &mut repos))
            .collect();
        return crate::ui::print_json_list("sessions", &listed);
    }
    if sessions.is_empty() {
        kennel_lib::report::note(&format!(
            "no sessions{}",
            if args.all {
                ""
            } else {
                " running or ended in the last 24 hours (`kennel ls --all` shows every one)"
            }
        ));
        return Ok(0);
    }
    crate::ui::write_stdout(format_args!(
        "{}",
        table(&sessions, kennel_sessions::now_ms(), &host.home)
    ));
    Ok(0)
}

/// A session as `kennel ls --json` prints it: the registry's fields, and
/// for a session with a checkout of its own (worktree or clone mode) its
/// branch and whether that has work the user's branch does not.
#[derive(serde::Serialize)]
struct Listed<'a> {
    #[serde(flatten)]
    session: &'a Session,
    #[serde(skip_serializing_if = "Option::is_none")]
    branch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    unmerged: Option<bool>,
}

impl<'a> Listed<'a> {
    fn of(
        session: &'a Session,
        repos: &mut std::collections::HashMap<std::path::PathBuf, Option<kennel_git::Repo>>,
    ) -> Listed<'a> {
        let checkout = kennel_lib::checkout::of_session(session).ok().flatten();
        let unmerged = checkout.as_ref().and_then(|checkout| {
            let repo = repos
                .entry(session.workspace.clone())
                .or_insert_with(|| kennel_git::Repo::open(&session.workspace).ok())
                .as_ref()?;
            repo.unmerged(checkout)
                .map_err(|error| tracing::debug!(%error, "cannot tell whether {} is merged", session.name))
                .ok()
        });
        Listed {
            session,
            branch: checkout.map(|checkout| checkout.branch),
            unmerged,
        }
    }
}

const HEADERS: [&str; 9] = [
    "ID",
    "NAME",
    "AGENT",
    "BACKEND",
    "STATE",
    "STARTED",
    "EXIT",
    "BRANCH",
    "WORKSPACE",
];

/// The human listing: one aligned row per session, newest first.
fn table(sessions: &[Session], now_ms: i64, home: &Path) -> String {
    let rows: Vec<[String; 9]> = sessions
        .iter()
        .map(|session| {
            [
                session.id.chars().take(8).collect(),
                session.name.clone(),
                session.agent.clone(),
                session.backend.clone(),
                if session.orphaned {
                    "orphaned".to_string()
                } else {
                    session.state.to_string()
                },
                ago(now_ms - session.started_at),
                session
                    .exit_code
                    .map(|code| code.to_string())
                    .unwrap_or_else(|| "-".into()),
                // Worktree and clone sessions: their branch.
                kennel_lib::checkout::of_session(session)
                    .ok()
                    .flatten()
                    .map(|checkout| checkout.branch)
                    .unwrap_or_else(|| "-".into()),
                tilde(&session.workspace, home),
            ]
        })
        .collect();
    crate::ui::table(&HEADERS, &rows)
}

/// `12s ago`, `5m ago`, `3h ago`, `2d ago`.
pub(crate) fn ago(elapsed_ms: i64) -> String {
    let seconds = (elapsed_ms / 1000).max(0);
    match seconds {
        0..60 => format!("{seconds}s ago"),
        60..3600 => format!("{}m ago", seconds / 60),
        3600..86400 => format!("{}h ago", seconds / 3600),
        _ => format!("{}d ago", seconds / 86400),
    }
}

fn tilde(path: &Path, home: &Path) -> String {
    match path.strip_prefix(home) {
        Ok(rest) if !home.as_os_str().is_empty() && home != Path::new("/") => {
            if rest.as_os_str().is_empty() {
                "~".into()
            } else {
                format!("~/{}", rest.display())
            }
        }
        _ => path.display().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kennel_sessions::{Limits, Mode, State};

    fn session(id: &str, state: State, started_at: i64, exit_code: Option<i32>) -> Session {
        Session {
            id: id.into(),
            name: format!("shell-{}", &id[..1]),
            agent: "shell".into(),
            workspace: "/home/alice/src/repo".into(),
            slot: 0,
            backend: "native".into(),
            handle: None,
            mode: Mode::Ephemeral,
            state,
            started_at,
            ended_at: None,
            exit_code,
            limits: Limits::default(),
            owner: None,
            orphaned: false,
            checkout: None,
            plan: None,
        }
    }

    #[test]
    fn table_is_aligned() {
        let now = 10_000_000;
        let mut worktree = session("2b3c4d5e6f70", State::Exited, now - 7_200_000, Some(3));
        worktree.checkout = Some(
            r#"{"mode":"worktree","dir":"/d/checkouts/2b3c4d5e6f70","branch":"kennel/shell-0","base":"abc","common_dir":"/home/alice/src/repo/.git","admin_dir":null}"#
                .into(),
        );
        let sessions = [
            session("1a2b3c4d5e6f", State::Running, now - 5_000, None),
            worktree,
        ];
        let text = table(&sessions, now, Path::new("/home/alice"));
        // BRANCH: a worktree or clone session's branch, `-` in direct mode.
        assert_eq!(
            text,
            "ID        NAME     AGENT  BACKEND  STATE    STARTED  EXIT  BRANCH          WORKSPACE\n\
             1a2b3c4d  shell-1  shell  native   running  5s ago   -     -               ~/src/repo\n\
             2b3c4d5e  shell-2  shell  native   exited   2h ago   3     kennel/shell-0  ~/src/repo\n"
        );
    }

    #[test]
    fn ages() {
        assert_eq!(ago(-5), "0s ago");
        assert_eq!(ago(59_999), "59s ago");
        assert_eq!(ago(60_000), "1m ago");
        assert_eq!(ago(86_400_000 * 3), "3d ago");
    }
}
