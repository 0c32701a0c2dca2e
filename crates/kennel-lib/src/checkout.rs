//! Worktree and clone modes (issue 6): a session's own checkout of the
//! user's repository, on its own branch, and what the review commands
//! (`diff`, `merge`, `apply`, `discard`, `sync`) share.
//!
//! The git side (creating checkouts, what to mount, the review operations
//! and their safety) is `kennel-git`'s; this module wires it into sessions:
//! it creates the checkout once the registry has given the session its id
//! and slot, rewrites the Plan to mount the checkout instead of the user's
//! checkout, records the checkout in the registry, and commits what the
//! agent left uncommitted when the session ends.

use std::path::{Path, PathBuf};

use kennel_core::host::HostContext;
use kennel_core::plan::{GitPlan, Mount, MountPurpose, Plan};
use kennel_git::{Checkout, CheckoutMode, GitError, Identity, Repo, TreeEntry};
use kennel_sessions::{Registry, Session};

use crate::error::CliError;

/// How a session sees the repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkspaceMode {
    /// The user's checkout itself.
    Direct,
    Worktree,
    Clone,
}

impl WorkspaceMode {
    pub fn parse(text: &str) -> Option<WorkspaceMode> {
        match text {
            "direct" => Some(WorkspaceMode::Direct),
            "worktree" => Some(WorkspaceMode::Worktree),
            "clone" => Some(WorkspaceMode::Clone),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            WorkspaceMode::Direct => "direct",
            WorkspaceMode::Worktree => "worktree",
            WorkspaceMode::Clone => "clone",
        }
    }
}

/// The mode a run asks for: `--mode`, else `defaults.mode`, else direct.
pub fn requested(
    flag: Option<&str>,
    config: &kennel_core::config::Config,
) -> Result<WorkspaceMode, CliError> {
    let (text, origin) = match flag {
        Some(text) => (text.to_string(), "--mode".to_string()),
        None => match &config.file.defaults.mode {
            Some(text) => (
                text.clone(),
                config
                    .origin_of("defaults.mode")
                    .map(|origin| format!("defaults.mode ({origin})"))
                    .unwrap_or_else(|| "defaults.mode".into()),
            ),
            None => return Ok(WorkspaceMode::Direct),
        },
    };
    WorkspaceMode::parse(&text).ok_or_else(|| {
        CliError::usage(format!("{origin}: `{text}` is not a workspace mode")).with_hint(format!(
            "choose one of: {}",
            kennel_core::config::WORKSPACE_MODES.join(", ")
        ))
    })
}

/// The mode a checkout was made for.
pub fn mode_of(checkout: &Checkout) -> WorkspaceMode {
    match checkout.mode {
        CheckoutMode::Worktree => WorkspaceMode::Worktree,
        CheckoutMode::Clone => WorkspaceMode::Clone,
    }
}

/// The mode a session ran in, when it had a checkout of its own: that of
/// `checkout`, its recorded one, or else the one its Plan names (after a
/// discard or a continuation).
pub fn earlier_mode(session: &Session, checkout: Option<&Checkout>) -> Option<WorkspaceMode> {
    match checkout {
        Some(checkout) => Some(mode_of(checkout)),
        None => plan_of(session)?
            .git
            .and_then(|git| WorkspaceMode::parse(&git.mode)),
    }
}

fn plan_of(session: &Session) -> Option<Plan> {
    serde_json::from_str(session.plan.as_deref()?).ok()
}

/// A git failure as the user sees it: refusals (a dirty checkout, a
/// conflict, a taken branch name…) are usage errors (exit 2), the rest
/// kennel's own failures (exit 125).
pub fn git_error(error: GitError) -> CliError {
    let mut out = if error.is_refusal() {
        CliError::usage(error.to_string())
    } else {
        CliError::kennel(error.to_string())
    };
    out.hint = error.hint();
    out
}

/// `<kennel data dir>/checkouts`: where sessions' worktrees and clones live.
pub fn checkouts_dir(host: &HostContext) -> PathBuf {
    host.data_dir.join("checkouts")
}

/// Gives the session its checkout and rewrites `plan` to run in it. With
/// `--resume` of a session that had a checkout in this mode, the session
/// takes that one over (its branch, its commits, what it left uncommitted);
/// otherwise a new one is made in `<data dir>/checkouts/<sandbox name>` on
/// the branch `branch`, or `kennel/<agent>-<slot>`, or — when an earlier
/// session left that branch — `kennel/<session name>`. Both are recorded in
/// the registry. On failure nothing is left and nothing is taken over.
/// [`preview`] is the same decision, made of nothing.
pub fn create(
    registry: &mut Registry,
    host: &HostContext,
    plan: &mut Plan,
    choice: &Choice,
    branch: Option<&str>,
    session: &Session,
) -> Result<Checkout, CliError> {
    let repo = Repo::open(&plan.workspace).map_err(git_error)?;
    if let Some(earlier) = &choice.resumed
        && let Some(checkout) = take_over(registry, &repo, plan, choice.mode, earlier, session)?
    {
        crate::report::note(&format!(
            "session {} continues branch {} of session {} ({} in {})",
            session.name,
            checkout.branch,
            earlier.name,
            choice.mode.as_str(),
            checkout.dir.display()
        ));
        return Ok(checkout);
    }
    let mode = choice.mode;
    let dir = checkout_dir(host, plan);
    let created = on_branch(
        plan,
        branch,
        session.slot,
        &session.name,
        |branch| match mode {
            WorkspaceMode::Clone => repo.create_clone(&dir, branch),
            _ => repo.create_worktree(&dir, branch),
        },
    );
    let checkout = created.map_err(git_error)?;
    if checkout.mode == CheckoutMode::Worktree && !checkout.branch.contains('/') {
        crate::report::warn(&format!(
            "the branch {} is not in a directory of branches (like kennel/…): the agent can move every branch of your repository (refs/heads is writable to it)",
            checkout.branch
        ));
    }
    if let Err(error) = record(registry, &repo, plan, &checkout, session) {
        if let Err(discard_error) = repo.discard(&checkout) {
            tracing::warn!(
                "cannot remove the checkout {}: {discard_error}",
                dir.display()
            );
        }
        let _ = registry.set_checkout(&session.id, None);
        return Err(error);
    }
    crate::report::note(&format!(
        "session {} works on branch {} ({} in {})",
        session.name,
        checkout.branch,
        mode.as_str(),
        checkout.dir.display()
    ));
    Ok(checkout)
}

/// `--dry-run`: rewrites `plan` to run in the checkout [`create`] would
/// give a session now (the resumed session's, or a new one in the slot
/// and under the name the session would get), creating nothing, and says
/// what running it would create. Refuses what `create` would refuse.
pub fn preview(
    registry: Option<&Registry>,
    plan: &mut Plan,
    choice: &Choice,
    branch: Option<&str>,
    slot: i64,
    name: &str,
    host: &HostContext,
) -> Result<String, CliError> {
    let repo = Repo::open(&plan.workspace).map_err(git_error)?;
    if let Some(earlier) = &choice.resumed {
        // What take_over would move: the earlier session's checkout, when
        // the registry still records it, in this mode, and it is there.
        let current = registry.and_then(|registry| registry.get(&earlier.id).ok());
        if let Some(checkout) = current
            .as_ref()
            .and_then(|row| of_session(row).ok().flatten())
            && mode_of(&checkout) == choice.mode
            && checkout.dir.is_dir()
        {
            rewrite_plan(&repo, plan, &checkout)?;
            return Ok(format!(
                "the session would continue branch {} of session {} ({} in {})",
                checkout.branch,
                earlier.name,
                choice.mode.as_str(),
                checkout.dir.display()
            ));
        }
    }
    let mode = match choice.mode {
        WorkspaceMode::Clone => CheckoutMode::Clone,
        _ => CheckoutMode::Worktree,
    };
    let dir = checkout_dir(host, plan);
    let checkout = on_branch(plan, branch, slot, name, |branch| {
        repo.plan_checkout(mode, &dir, branch)
    })
    .map_err(git_error)?;
    rewrite_plan(&repo, plan, &checkout)?;
    Ok(format!(
        "the session would create branch {} at {} and its {} in {}",
        checkout.branch,
        &checkout.base[..checkout.base.len().min(12)],
        choice.mode.as_str(),
        checkout.dir.display()
    ))
}

/// Where a new checkout of the session running `plan` goes: named after
/// its sandbox, which is what the user sees in `kennel ls` and `--dry-run`.
fn checkout_dir(host: &HostContext, plan: &Plan) -> PathBuf {
    checkouts_dir(host).join(&plan.name)
}

/// `make` on the session's branch: `branch`, else `kennel/<agent>-<slot>`,
/// else (an earlier session left that one) `kennel/<session name>`.
fn on_branch<T>(
    plan: &Plan,
    branch: Option<&str>,
    slot: i64,
    name: &str,
    make: impl Fn(&str) -> Result<T, GitError>,
) -> Result<T, GitError> {
    match branch {
        Some(branch) => make(branch),
        None => match make(&format!("kennel/{}-{}", plan.agent, slot)) {
            Err(GitError::BranchExists { .. }) => make(&format!("kennel/{name}")),
            other => other,
        },
    }
}

/// `--resume`: moves the earlier session's checkout to `session` when it
/// has one in `mode` that is still there. `None`: there is nothing to
/// continue (never had one, discarded, another mode, already continued by
/// another session), and a new checkout is made.
fn take_over(
    registry: &mut Registry,
    repo: &Repo,
    plan: &mut Plan,
    mode: WorkspaceMode,
    earlier: &Session,
    session: &Session,
) -> Result<Option<Checkout>, CliError> {
    let Some(json) = registry.move_checkout(&earlier.id, &session.id)? else {
        if plan_of(earlier).is_some_and(|plan| plan.git.is_some()) {
            crate::report::note(&format!(
                "session {}'s checkout is not continued: {}",
                earlier.name,
                successor_note(successor(registry, earlier).as_ref())
            ));
        }
        return Ok(None);
    };
    let give_back = |registry: &mut Registry| {
        if let Err(error) = registry.move_checkout(&session.id, &earlier.id) {
            tracing::warn!(
                "cannot give the checkout back to session {}: {error}",
                earlier.name
            );
        }
    };
    let checkout: Checkout = match serde_json::from_str(&json) {
        Ok(checkout) => checkout,
        Err(error) => {
            give_back(registry);
            return Err(CliError::kennel(format!(
                "the registry's record of the checkout of session {} is unreadable: {error}",
                earlier.name
            )));
        }
    };
    if mode_of(&checkout) != mode || !checkout.dir.is_dir() {
        give_back(registry);
        crate::report::note(&format!(
            "session {}'s checkout ({} in {}) is not continued: {}",
            earlier.name,
            mode_of(&checkout).as_str(),
            checkout.dir.display(),
            if checkout.dir.is_dir() {
                format!("this session runs in {} mode", mode.as_str())
            } else {
                "its directory is gone".to_string()
            }
        ));
        return Ok(None);
    }
    if let Err(error) = record(registry, repo, plan, &checkout, session) {
        give_back(registry);
        return Err(error);
    }
    Ok(Some(checkout))
}

/// Where a session's checkout (none recorded any more) went: to `next`,
/// which continues it (`--resume` moved it), or it was discarded.
fn successor_note(next: Option<&Session>) -> String {
    match next {
        Some(other) => format!("session {} continues it (--resume)", other.name),
        None => "it was discarded".to_string(),
    }
}

/// The session that now has the checkout `session` had (the one with a
/// checkout in the same directory).
fn successor(registry: &Registry, session: &Session) -> Option<Session> {
    let dir = plan_of(session)?.git?.dir;
    registry.list(true).ok()?.into_iter().find(|other| {
        other.id != session.id
            && of_session(other)
                .ok()
                .flatten()
                .is_some_and(|checkout| checkout.dir == dir)
    })
}

/// Rewrites `plan` to run in `checkout` and records both for `session`.
fn record(
    registry: &mut Registry,
    repo: &Repo,
    plan: &mut Plan,
    checkout: &Checkout,
    session: &Session,
) -> Result<(), CliError> {
    rewrite_plan(repo, plan, checkout)?;
    let json = serde_json::to_string(checkout)
        .map_err(|error| CliError::kennel(format!("cannot record the checkout: {error}")))?;
    registry.set_checkout(&session.id, Some(&json))?;
    if let Ok(plan_json) = serde_json::to_string(&plan.redacted()) {
        registry.set_plan(&session.id, &plan_json)?;
    }
    Ok(())
}

/// The Plan for running in `checkout`: its directory is the workspace, the
/// user's checkout is not mounted at all, and git's own paths are mounted
/// as `kennel-git` says, in its order (parents first). A checkout not made
/// yet ([`preview`]) is described by its commit's tree, as it will be
/// checked out.
fn rewrite_plan(repo: &Repo, plan: &mut Plan, checkout: &Checkout) -> Result<(), CliError> {
    let made = checkout.dir.is_dir();
    let git_mounts = match (made, checkout.mode) {
        (false, _) => repo.planned_mounts(checkout),
        (true, CheckoutMode::Worktree) => repo.mounts_for_worktree(checkout),
        (true, CheckoutMode::Clone) => repo.mounts_for_clone(checkout),
    }
    .map_err(git_error)?;
    // What the checkout has at `relative`: on disk once made, else in the
    // commit it is made from.
    let entry = |relative: &Path| -> Result<Option<TreeEntry>, CliError> {
        if made {
            let meta = std::fs::symlink_metadata(checkout.dir.join(relative)).ok();
            return Ok(meta.map(|meta| {
                if meta.is_dir() {
                    TreeEntry::Directory
                } else if meta.is_file() {
                    TreeEntry::File
                } else {
                    TreeEntry::Symlink
                }
            }));
        }
        repo.entry_in(&checkout.base, relative).map_err(git_error)
    };
    let old = plan.workspace.clone();
    let relative = plan
        .workdir
        .strip_prefix(&old)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    // A directory the commit does not have (untracked, ignored) is not there.
    plan.workdir = if entry(&relative)? == Some(TreeEntry::Directory) {
        checkout.dir.join(relative)
    } else {
        checkout.dir.clone()
    };
    let position = plan
        .mounts
        .iter()
        .position(|mount| mount.purpose == MountPurpose::Workspace)
        .unwrap_or(plan.mounts.len());
    plan.mounts.retain(|mount| {
        !(mount.purpose == MountPurpose::Workspace
            || (mount.purpose == MountPurpose::Protect && mount.source.starts_with(&old)))
    });
    let position = position.min(plan.mounts.len());
    let mut mounts: Vec<Mount> = git_mounts
        .into_iter()
        .map(|mount| Mount {
            purpose: if mount.target == checkout.dir {
                MountPurpose::Workspace
            } else {
                MountPurpose::Git
            },
            source: mount.host,
            target: mount.target,
            read_only: mount.read_only,
        })
        .collect();
    // The project's config stays read-only in the checkout too (promise 5).
    if entry(Path::new(".kennel.toml"))? == Some(TreeEntry::File) {
        let project = checkout.dir.join(".kennel.toml");
        mounts.push(Mount {
            source: project.clone(),
            target: project,
            read_only: true,
            purpose: MountPurpose::Protect,
        });
    }
    plan.mounts.splice(position..position, mounts);
    plan.workspace = checkout.dir.clone();
    plan.git = Some(GitPlan {
        mode: match checkout.mode {
            CheckoutMode::Worktree => "worktree".into(),
            CheckoutMode::Clone => "clone".into(),
        },
        branch: checkout.branch.clone(),
        base: checkout.base.clone(),
        dir: checkout.dir.clone(),
        repository: repo.toplevel().to_path_buf(),
    });
    Ok(())
}

/// Whether the configuration (of `workspace`) wants uncommitted work
/// committed when a session ends (`defaults.commit_on_exit`, default true).
pub fn commit_on_exit_enabled(config: Option<&kennel_core::config::Config>) -> bool {
    config
        .and_then(|config| config.file.defaults.commit_on_exit)
        .unwrap_or(true)
}

/// Commits what the agent left uncommitted to the session branch. Never
/// loses work: a failure is a warning, and the checkout stays. In worktree
/// mode, first checks that the agent replaced no object of the shared
/// object store (issue 11, class 7), and warns if it did (`merge` and
/// `apply` then refuse).
pub fn commit_on_exit(checkout: &Checkout, session_name: &str) {
    if checkout.mode == CheckoutMode::Worktree {
        match checkout.verify_objects() {
            Ok(problems) if problems.is_empty() => {}
            Ok(problems) => {
                let error = GitError::ObjectsTampered { problems };
                crate::report::warn(&format!(
                    "session {session_name}: {error}; {}",
                    error.hint().unwrap_or_default()
                ));
            }
            Err(error) => crate::report::warn(&format!(
                "cannot check the object store after session {session_name}: {error}"
            )),
        }
    }
    let message = format!("kennel: uncommitted work of session {session_name}");
    let author = Identity {
        name: "kennel".into(),
        email: "kennel@localhost".into(),
    };
    match checkout.commit_all(&message, &author) {
        Ok(Some(commit)) => crate::report::note(&format!(
            "committed the uncommitted work of session {session_name} to {} ({})",
            checkout.branch,
            &commit[..commit.len().min(12)]
        )),
        Ok(None) => {}
        Err(error) => crate::report::warn(&format!(
            "cannot commit the uncommitted work of session {session_name}: {error}; it stays in {}",
            checkout.dir.display()
        )),
    }
}

/// The checkout a registry row records.
pub fn of_session(session: &Session) -> Result<Option<Checkout>, CliError> {
    let Some(json) = &session.checkout else {
        return Ok(None);
    };
    serde_json::from_str(json).map(Some).map_err(|error| {
        CliError::kennel(format!(
            "the registry's record of the checkout of session {} is unreadable: {error}",
            session.name
        ))
    })
}

/// A session with a checkout, as the review commands find it.
pub struct Reviewed {
    pub found: crate::sessions::Found,
    /// The user's repository (the session's original workspace).
    pub repo: Repo,
    pub checkout: Checkout,
}

impl Reviewed {
    pub fn running(&self) -> bool {
        !self.found.session.state.is_ended()
    }
}

/// Finds `query`, refreshes its state from its backend, and opens its
/// checkout and the user's repository. A session that has ended gets its
/// uncommitted work committed first (unless `commit_on_exit = false`), for
/// persistent sessions and for runs whose kennel did not get to it.
pub async fn review(query: &str) -> Result<Reviewed, CliError> {
    let mut found = crate::sessions::find(query)?;
    crate::backend::refresh(
        &mut found.registry,
        std::slice::from_mut(&mut found.session),
    )
    .await;
    let session = &found.session;
    let Some(checkout) = of_session(session)? else {
        if plan_of(session).is_some_and(|plan| plan.git.is_some()) {
            let next = successor(&found.registry, session);
            let message = format!(
                "session {} has no checkout any more: {}",
                session.name,
                successor_note(next.as_ref())
            );
            let hint = match next {
                Some(other) => format!("review it as session {}", other.name),
                None => "`kennel ls --all` shows the sessions that have a branch".into(),
            };
            return Err(CliError::usage(message).with_hint(hint));
        }
        return Err(CliError::usage(format!(
            "session {} has no checkout of its own: it ran in direct mode, in your checkout",
            session.name
        ))
        .with_hint(
            "sessions started with --mode worktree or --mode clone have a branch to review; a direct-mode session's changes are in your checkout (`git diff`)",
        ));
    };
    // A sandbox on another machine works on a copy: its work first.
    if found.session.handle.is_some()
        && let Ok(backend) = crate::backend::by_name(&found.session.backend)
    {
        backend.bring_back(&found.session).await?;
    }
    let repo = Repo::open(&found.session.workspace).map_err(git_error)?;
    let reviewed = Reviewed {
        found,
        repo,
        checkout,
    };
    if !reviewed.running() {
        let config = crate::context::Context::load(Some(&reviewed.found.session.workspace))
            .ok()
            .map(|context| context.config);
        if commit_on_exit_enabled(config.as_ref()) && reviewed.checkout.dir.is_dir() {
            commit_on_exit(&reviewed.checkout, &reviewed.found.session.name);
        }
    }
    Ok(reviewed)
}

/// For `stop` and `kill`: the session has just ended; commit what its
/// agent left uncommitted.
pub fn session_ended(session: &Session) {
    let Ok(Some(checkout)) = of_session(session) else {
        // Direct mode: what the agent may have left in the user's `.git`,
        // against what was recorded when the session started.
        if let Ok(host) = kennel_core::host::HostContext::detect() {
            crate::git_audit::finish(&host, &session.id);
        }
        return;
    };
    let config = crate::context::Context::load(Some(&session.workspace))
        .ok()
        .map(|context| context.config);
    if commit_on_exit_enabled(config.as_ref()) && checkout.dir.is_dir() {
        commit_on_exit(&checkout, &session.name);
    }
}

/// For `rm`: a forgotten session's branch and checkout are left as they
/// are (its work is never lost); say where, and how to remove them.
pub fn warn_left_behind(session: &Session) {
    let Ok(Some(checkout)) = of_session(session) else {
        return;
    };
    let how = match checkout.mode {
        CheckoutMode::Worktree => format!(
            "`git worktree remove --force {}` and `git branch -D {}`",
            checkout.dir.display(),
            checkout.branch
        ),
        CheckoutMode::Clone => format!(
            "`rm -rf {}` and `git branch -D {}`",
            checkout.dir.display(),
            checkout.branch
        ),
    };
    crate::report::note(&format!(
        "branch {} and the checkout {} stay in {} (`kennel discard` before `kennel rm` removes them; now: {how})",
        checkout.branch,
        checkout.dir.display(),
        session.workspace.display()
    ));
}

/// What a session continues and how it sees the repository, from
/// `--resume`, `--mode`, `--branch` and `defaults.mode`.
pub struct Choice {
    /// The agent-home slot: a free one, or that of the resumed session.
    pub slot: kennel_sessions::SlotRequest,
    pub mode: WorkspaceMode,
    /// The session `--resume` continues.
    pub resumed: Option<kennel_sessions::Session>,
}

/// Decides [`Choice`] from `--resume` (`Some("")`: the latest session),
/// `--mode` and `--branch`. A resumed session that had a checkout of its
/// own is continued in its mode unless `--mode` says otherwise.
pub fn choose(
    context: &crate::context::Context,
    plan: &Plan,
    resume: Option<&str>,
    requested_mode: Option<&str>,
    branch: Option<&str>,
) -> Result<Choice, CliError> {
    let resumed = match resume {
        None => None,
        Some(query) => Some(crate::sessions::resumed_session(
            &context.host,
            plan,
            Some(query).filter(|query| !query.is_empty()),
        )?),
    };
    let earlier_checkout = resumed
        .as_ref()
        .and_then(|session| of_session(session).ok().flatten());
    let earlier_mode = resumed
        .as_ref()
        .and_then(|session| earlier_mode(session, earlier_checkout.as_ref()));
    let mode = match (requested_mode, earlier_mode) {
        (None, Some(mode)) => mode,
        _ => requested(requested_mode, &context.config)?,
    };
    if branch.is_some() && mode == WorkspaceMode::Direct {
        return Err(
            CliError::usage("--branch needs --mode worktree or --mode clone")
                .with_hint("direct mode runs in your checkout, on your branch"),
        );
    }
    if let (Some(branch), Some(checkout), Some(earlier)) = (branch, &earlier_checkout, &resumed)
        && branch != checkout.branch
    {
        return Err(CliError::usage(format!(
            "--resume continues session {} on its branch {}; --branch asks for {branch}",
            earlier.name, checkout.branch
        ))
        .with_hint("leave out --branch to continue that branch, or --resume for a new one"));
    }
    Ok(Choice {
        slot: match &resumed {
            Some(session) => kennel_sessions::SlotRequest::Exact(session.slot),
            None => kennel_sessions::SlotRequest::Free,
        },
        mode,
        resumed,
    })
}
