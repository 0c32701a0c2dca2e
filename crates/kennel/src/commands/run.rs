//! `kennel run`: one ephemeral sandbox, attached to this terminal.

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::Args;
use kennel_core::plan::{ImagePlan, NetworkMode, Plan};
use kennel_core::settings::{self, RunRequest};

use crate::cli::{BackendArg, NetworkArg};
use crate::context::Context;
use crate::error::CliError;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The agent to run (`kennel agents` lists them; `shell` for a plain shell)
    pub agent: String,

    /// The workspace directory (default: the current directory; its git top level is mounted)
    #[arg(short, long, value_name = "DIR")]
    pub workspace: Option<PathBuf>,

    /// Where to run the sandbox
    #[arg(short, long, value_enum)]
    pub backend: Option<BackendArg>,

    /// Run this image instead of the agent's own
    #[arg(long, value_name = "REF")]
    pub image: Option<String>,

    /// Pass a variable: KEY takes the host's value, KEY=VALUE sets it (repeatable)
    #[arg(short, long = "env", value_name = "KEY[=VALUE]")]
    pub env: Vec<String>,

    /// Network policy for the sandbox
    #[arg(long, value_enum)]
    pub network: Option<NetworkArg>,

    /// An extra domain the agent may reach (repeatable)
    #[arg(long, value_name = "DOMAIN")]
    pub allow: Vec<String>,

    /// Do not add the agent's skip-permission flags
    #[arg(long)]
    pub no_yolo: bool,

    /// Mount the host's own config paths for this agent instead of kennel's copy
    #[arg(long)]
    pub host_config: bool,

    /// Print the Plan as JSON and run nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Direct mode: accept the workspace's `.git` although it is not the one
    /// kennel saw there last (inspect it first; see the error's hint)
    #[arg(long)]
    pub accept_git_dir: bool,

    /// Memory limit, like 512m or 4g (default: `defaults.memory`)
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<String>,

    /// CPU limit, in CPUs (default: `defaults.cpus`)
    #[arg(long, value_name = "N")]
    pub cpus: Option<f64>,

    /// Most processes the sandbox may have (default: `defaults.pids_limit`, 1024)
    #[arg(long, value_name = "N")]
    pub pids_limit: Option<i64>,

    /// Continue the agent's latest session in this workspace (or SESSION): its agent home, the agent's own resume flag, and in worktree and clone modes its checkout and branch
    #[arg(long, value_name = "SESSION", num_args = 0..=1, default_missing_value = "")]
    pub resume: Option<String>,

    /// How the session sees the repository: direct (your checkout), worktree (a git worktree on a branch of its own) or clone (a private clone; its branch comes back on `kennel sync`). Default: `defaults.mode`, else direct
    #[arg(long, value_name = "MODE", value_parser = clap::builder::PossibleValuesParser::new(kennel_core::config::WORKSPACE_MODES))]
    pub mode: Option<String>,

    /// Worktree and clone modes: the session's branch (default: kennel/<agent>-<slot>)
    #[arg(long, value_name = "NAME")]
    pub branch: Option<String>,

    /// Native backend: run even when the kernel lacks user namespaces, Landlock or seccomp (a warning says what is missing on every run)
    #[arg(long)]
    pub allow_weaker_sandbox: bool,

    /// Arguments passed to the agent (for `shell`: the command to run)
    #[arg(last = true, value_name = "AGENT_ARGS")]
    pub args: Vec<String>,
}

/// What a session continues and how it sees the repository, from
/// `--resume`, `--mode`, `--branch` and `defaults.mode`.
pub struct Choice {
    /// The agent-home slot: a free one, or that of the resumed session.
    pub slot: kennel_sessions::SlotRequest,
    pub mode: crate::checkout::WorkspaceMode,
    /// The session `--resume` continues.
    pub resumed: Option<kennel_sessions::Session>,
}

impl RunArgs {
    /// Decides [`Choice`]. A resumed session that had a checkout of its
    /// own is continued in its mode unless `--mode` says otherwise.
    pub fn choose(&self, context: &Context, plan: &Plan) -> Result<Choice, CliError> {
        use crate::checkout::WorkspaceMode;
        let resumed = match &self.resume {
            None => None,
            Some(query) => Some(crate::sessions::resumed_session(
                &context.host,
                plan,
                Some(query.as_str()).filter(|query| !query.is_empty()),
            )?),
        };
        let earlier_checkout = resumed
            .as_ref()
            .and_then(|session| crate::checkout::of_session(session).ok().flatten());
        let earlier_mode = resumed
            .as_ref()
            .and_then(|session| crate::checkout::earlier_mode(session, earlier_checkout.as_ref()));
        let mode = match (&self.mode, earlier_mode) {
            (None, Some(mode)) => mode,
            _ => crate::checkout::requested(self.mode.as_deref(), &context.config)?,
        };
        if self.branch.is_some() && mode == WorkspaceMode::Direct {
            return Err(
                CliError::usage("--branch needs --mode worktree or --mode clone")
                    .with_hint("direct mode runs in your checkout, on your branch"),
            );
        }
        if let (Some(branch), Some(checkout), Some(earlier)) =
            (&self.branch, &earlier_checkout, &resumed)
            && *branch != checkout.branch
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
}

/// `--dry-run`: prints the Plan (in the resumed session's slot, if any).
pub fn print_dry_run(choice: &Choice, plan: &mut Plan) -> Result<i32, CliError> {
    if choice.mode != crate::checkout::WorkspaceMode::Direct {
        eprintln!(
            "kennel: --dry-run creates no checkout: this Plan mounts your checkout; a {} session mounts its own instead (see `git` in the Plan's documentation)",
            choice.mode.as_str()
        );
    }
    if let kennel_sessions::SlotRequest::Exact(slot) = choice.slot {
        settings::use_slot(plan, slot);
    }
    let json = serde_json::to_string_pretty(&plan.redacted())
        .map_err(|error| CliError::kennel(format!("cannot serialise the plan: {error}")))?;
    outln!("{json}");
    Ok(0)
}

/// What `run` and `start` share: the loaded context, the agent's image
/// recipes, the backend (its engine connected unless `--dry-run`) and the
/// Plan.
pub struct Prepared {
    pub context: Context,
    pub agent: kennel_core::catalog::AgentSpec,
    pub backend: Box<dyn crate::backend::Backend>,
    pub image_settings: kennel_image::ImageSettings,
    pub recipes: Vec<kennel_image::Recipe>,
    pub plan: Plan,
}

/// Resolves the backend and builds the Plan for `args`; `tty` says whether
/// the Plan gets a terminal. `adjust` may change the request first.
pub async fn prepare(
    args: &RunArgs,
    tty: bool,
    adjust: impl FnOnce(&mut RunRequest, &Context, &kennel_core::catalog::AgentSpec),
) -> Result<Prepared, CliError> {
    let cwd = std::env::current_dir()
        .map_err(|error| CliError::kennel(format!("no current directory: {error}")))?;
    let context = Context::load(Some(args.workspace.as_deref().unwrap_or(&cwd)))?;
    let agent = context.catalog.get(&args.agent)?;
    let requested = args
        .backend
        .map(|backend| backend.as_str().to_string())
        .or_else(|| context.config.file.defaults.backend.clone())
        .unwrap_or_else(|| "auto".into());
    if !settings::BACKENDS.contains(&requested.as_str()) {
        return Err(CliError::usage(format!("unknown backend `{requested}`"))
            .with_hint("choose one of: auto, docker, podman, native"));
    }
    let (backend, choice) = crate::backend::select(&requested, !args.dry_run).await?;
    let runs_images = backend.runs_images();
    if !runs_images && args.image.is_some() {
        return Err(CliError::usage(format!(
            "--image needs a container engine: the {} backend runs the host's own programs",
            backend.name()
        ))
        .with_hint("use --backend docker or --backend podman"));
    }
    let image_settings = context.image_settings()?;
    let recipes = match (&args.image, runs_images) {
        (Some(_), _) | (None, false) => Vec::new(),
        (None, true) => kennel_image::recipes_for(agent, &image_settings),
    };
    let image = match (&args.image, recipes.last()) {
        _ if !runs_images => ImagePlan {
            reference: "host".into(),
            managed: false,
        },
        (Some(reference), _) => ImagePlan {
            reference: reference.clone(),
            managed: false,
        },
        (None, Some(recipe)) => ImagePlan {
            reference: recipe.tag.clone(),
            managed: true,
        },
        (None, None) => return Err(CliError::kennel("no image recipe for this agent")),
    };
    let mut request = RunRequest {
        backend: args.backend.map(|backend| backend.as_str().to_string()),
        image: args.image.clone(),
        env: args.env.clone(),
        network: args.network.map(network_mode),
        allow: args.allow.clone(),
        no_yolo: args.no_yolo,
        host_config: args.host_config,
        args: args.args.clone(),
        tty,
        selected: Some(choice),
        on_host: !runs_images,
        allow_weaker_sandbox: args.allow_weaker_sandbox,
        memory: args.memory.clone(),
        cpus: args.cpus,
        pids_limit: args.pids_limit,
        resume: args.resume.is_some(),
        host_git: Default::default(),
    };
    adjust(&mut request, &context, agent);
    let Some(workspace) = &context.workspace else {
        return Err(CliError::kennel("no workspace"));
    };
    request.host_git = workspace.git_user.clone();
    let plan = settings::build_plan(
        &context.host,
        &context.config,
        agent,
        workspace,
        image,
        &request,
    )?;

    let agent = agent.clone();
    Ok(Prepared {
        context,
        agent,
        backend,
        image_settings,
        recipes,
        plan,
    })
}

pub async fn run(args: RunArgs) -> Result<i32, CliError> {
    let tty = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let Prepared {
        context,
        agent,
        backend,
        image_settings,
        recipes,
        mut plan,
    } = prepare(&args, tty, |_, _, _| {}).await?;
    let agent = &agent;
    let choice = args.choose(&context, &plan)?;
    let mode = choice.mode;
    if args.dry_run {
        return print_dry_run(&choice, &mut plan);
    }
    direct_guard(&args, &context, mode)?;

    // From here on the run is in the session registry (best effort: a
    // registry failure is a warning, never a reason not to run).
    let mut session = crate::sessions::Tracker::begin(
        &context.host,
        &mut plan,
        choice.slot,
        mode != crate::checkout::WorkspaceMode::Direct,
    )?;
    let mut checkout = None;
    // Direct mode: what the user's git control files look like before the
    // agent runs (recorded in the data dir, checked when the run ends).
    let audit_key = (mode == crate::checkout::WorkspaceMode::Direct).then(|| match session.id() {
        "" => format!("{}{}", crate::git_audit::UNREGISTERED, plan.name),
        id => id.to_string(),
    });
    if let (Some(key), Some(workspace)) = (&audit_key, &context.workspace) {
        crate::git_audit::begin(&context.host, workspace, key, &plan.name);
    }
    let result: Result<i32, CliError> = async {
        if mode != crate::checkout::WorkspaceMode::Direct {
            checkout = Some(session.create_checkout(
                &context.host,
                &mut plan,
                &choice,
                args.branch.as_deref(),
            )?);
        }
        let mut launch = backend
            .prepare(&plan)
            .await
            .map_err(|error| with_install_hint(error, agent))?;
        for warning in plan.warnings.iter().chain(&launch.warnings()) {
            eprintln!("kennel: warning: {warning}");
        }
        launch
            .provision(
                &recipes,
                &crate::image_build::log_dir(&context.host.data_dir),
            )
            .await?;
        prepare_host(&context, &plan, &image_settings)?;
        let proxy = crate::proxy::SessionProxy::start(&context.config, &plan).await?;
        session.running(&plan.name);
        launch.run(&plan, proxy).await
    }
    .await;
    session.end(&result);
    if let Some(home) = plan.mount(kennel_core::plan::MountPurpose::AgentHome)
        && home.source.is_dir()
    {
        sync_login(&context, &plan, &home.source, LoginStep::End);
    }
    if let Some(key) = &audit_key {
        crate::git_audit::finish(&context.host, key);
    }
    if let Some(checkout) = &checkout
        && crate::checkout::commit_on_exit_enabled(Some(&context.config))
    {
        crate::checkout::commit_on_exit(checkout, session.name());
    }
    result
}

/// Direct mode: refuses symlinked git control files and a `.git` that is
/// not the one kennel recorded (see [`crate::git_audit::guard`]), and
/// audits any earlier session whose audit is still pending.
pub fn direct_guard(
    args: &RunArgs,
    context: &Context,
    mode: crate::checkout::WorkspaceMode,
) -> Result<(), CliError> {
    if mode != crate::checkout::WorkspaceMode::Direct {
        return Ok(());
    }
    if let Ok(registry) =
        kennel_sessions::Registry::open(&crate::sessions::registry_path(&context.host))
    {
        crate::git_audit::settle(&context.host, &registry);
    }
    match &context.workspace {
        Some(workspace) => crate::git_audit::guard(&context.host, workspace, args.accept_git_dir),
        None => Ok(()),
    }
}

/// An agent command that is not on the host (the native backend): the
/// hint says how the agent is installed.
pub fn with_install_hint(error: CliError, agent: &kennel_core::catalog::AgentSpec) -> CliError {
    if error.kind != crate::error::ExitKind::CommandNotFound {
        return error;
    }
    let install = agent.install.trim();
    if install.is_empty() {
        return error;
    }
    let hint = error.hint.clone().unwrap_or_default();
    error.with_hint(format!(
        "install {} on the host (its image recipe runs `{install}`); {hint}",
        agent.name
    ))
}

fn network_mode(arg: NetworkArg) -> NetworkMode {
    match arg {
        NetworkArg::None => NetworkMode::None,
        NetworkArg::Allowlist => NetworkMode::Allowlist,
        NetworkArg::Restricted => NetworkMode::Restricted,
        NetworkArg::Open => NetworkMode::Open,
    }
}

/// Creates what the Plan's mounts point at: the agent's home, the generated
/// identity files and the CA bundle. Files are written to a temporary name
/// and renamed, so a concurrent run never sees half a file.
pub fn prepare_host(
    context: &Context,
    plan: &Plan,
    images: &kennel_image::ImageSettings,
) -> Result<(), CliError> {
    let io_error = |what: &str, error: std::io::Error| {
        CliError::kennel(format!("cannot prepare {what}: {error}"))
    };
    if let Some(home) = plan.mount(kennel_core::plan::MountPurpose::AgentHome) {
        let base = settings::base_home(plan).unwrap_or_else(|| home.source.clone());
        let fresh = !base.exists();
        seed_home(&base, &home.source)
            .map_err(|error| io_error(&home.source.display().to_string(), error))?;
        if !settings::home_is_shared(plan, &context.host) {
            note_repository(plan, &base, fresh, &context.host);
        }
        sync_login(context, plan, &home.source, LoginStep::Start);
        make_mount_points(plan, home);
    }
    let identity = settings::identity_dir(&context.host);
    std::fs::create_dir_all(&identity)
        .map_err(|error| io_error(&identity.display().to_string(), error))?;
    let (passwd, group) = settings::identity_files(&plan.user);
    write_atomic(&identity.join("passwd"), passwd.as_bytes())
        .map_err(|error| io_error("/etc/passwd", error))?;
    write_atomic(&identity.join("group"), group.as_bytes())
        .map_err(|error| io_error("/etc/group", error))?;
    if let Some(git) = &plan.git_identity {
        write_atomic(
            &settings::git_config_file(&context.host, git),
            settings::git_config_text(git).as_bytes(),
        )
        .map_err(|error| io_error("the git identity", error))?;
    }
    if !images.ca_certificates.is_empty() {
        let bundle = settings::ca_bundle(&context.host);
        if let Some(parent) = bundle.parent() {
            std::fs::create_dir_all(parent).map_err(|error| io_error("the CA bundle", error))?;
        }
        write_atomic(&bundle, &images.ca_bundle())
            .map_err(|error| io_error("the CA bundle", error))?;
    }
    Ok(())
}

/// When the login store moves an agent's login (see `kennel_core::logins`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginStep {
    /// A session is about to start in `home`: take the logins changed in
    /// any of the agent's homes into the store, then copy the store in.
    Start,
    /// The session in `home` ended: take its changed login files back.
    End,
}

/// Moves the agent's login files (its catalog entry's `login`) between the
/// login store and the agent home `home`. Best effort: a failure costs a
/// warning (the agent may ask to log in again), never the run.
pub fn sync_login(context: &Context, plan: &Plan, home: &std::path::Path, step: LoginStep) {
    let Ok(agent) = context.catalog.get(&plan.agent) else {
        return;
    };
    let mut store = match kennel_core::logins::LoginStore::open(
        &context.host.data_dir,
        &agent.name,
        &agent.login,
    ) {
        Ok(Some(store)) => store,
        Ok(None) => return,
        Err(error) => {
            eprintln!(
                "kennel: warning: cannot open the login store of {}: {error}",
                agent.name
            );
            return;
        }
    };
    match step {
        LoginStep::Start => {
            let legacy = settings::shared_agent_home(&context.host, &agent.name);
            if store.migrate(&legacy) {
                eprintln!(
                    "kennel: your {} login in {} now carries over to every repository's agent home (agent homes are per repository)",
                    agent.name,
                    legacy.display()
                );
            }
            store.collect();
            store.give_to(home);
        }
        LoginStep::End => store.take_from(home),
    }
    for warning in &store.warnings {
        eprintln!("kennel: warning: {warning}");
    }
}

/// A repository's homes are named by a hash: a `repository` file next to
/// them says whose they are. When this is the repository's first home and
/// the agent had a shared home before (kennel before per-repository
/// homes), says once where the earlier home stayed and how to use it again.
fn note_repository(
    plan: &Plan,
    base: &std::path::Path,
    fresh: bool,
    host: &kennel_core::host::HostContext,
) {
    let Some(dir) = base.parent() else {
        return;
    };
    let repository = plan
        .git
        .as_ref()
        .map(|git| git.repository.clone())
        .unwrap_or_else(|| plan.workspace.clone());
    let note = dir.join("repository");
    if !note.exists() {
        let _ = write_atomic(&note, format!("{}\n", repository.display()).as_bytes());
    }
    let legacy = settings::shared_agent_home(host, &plan.agent);
    // Said once per data directory (and agent), not for every repository.
    let noted = host
        .data_dir
        .join("repo-homes")
        .join(format!(".noted-{}", plan.agent));
    if fresh && legacy.is_dir() && !noted.exists() {
        let _ = write_atomic(&noted, b"");
        eprintln!(
            "kennel: {}'s home for this repository is new ({}): agent homes are per repository now, so nothing of one repository's home reaches another. Your earlier home stays in {}; only its login carries over. To use it here, copy it before the agent starts (`cp -a {}/. {}/`), or set `share_agent_home = true` under [defaults] in your config to share one home across repositories as before",
            plan.agent,
            base.display(),
            legacy.display(),
            legacy.display(),
            base.display()
        );
    }
}

/// Creates, as the user, the mount points that the Plan's other mounts need
/// inside the agent's home (a workspace or a checkout under `$HOME`, such
/// as `~/.local/share/kennel/checkouts/<id>`). Otherwise a rootful engine
/// creates them, owned by root, in the agent's home on the host, where the
/// agent then cannot write (`~/.local` owned by root) and the user cannot
/// remove them. The agent's home is the agent's to write: kennel never
/// follows a symlink in it, and skips a mount point it cannot make (the
/// engine then makes it, as before).
fn make_mount_points(plan: &Plan, home: &kennel_core::plan::Mount) {
    use std::path::Component;
    for mount in &plan.mounts {
        if mount.purpose == kennel_core::plan::MountPurpose::AgentHome {
            continue;
        }
        let Ok(relative) = mount.target.strip_prefix(&home.target) else {
            continue;
        };
        let parts: Vec<_> = relative.components().collect();
        if parts.is_empty()
            || !parts
                .iter()
                .all(|part| matches!(part, Component::Normal(_)))
        {
            continue;
        }
        let is_dir = mount.source.is_dir();
        let mut path = home.source.clone();
        for (index, part) in parts.iter().enumerate() {
            path.push(part);
            let last = index + 1 == parts.len();
            let made = match std::fs::symlink_metadata(&path) {
                Ok(meta) if meta.file_type().is_symlink() => false,
                Ok(meta) => meta.is_dir() || last,
                Err(_) if last && !is_dir => std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .is_ok(),
                Err(_) => std::fs::create_dir(&path).is_ok(),
            };
            if !made {
                tracing::debug!(path = %path.display(), "cannot make the mount point in the agent's home");
                break;
            }
        }
    }
}

/// Creates the agent home `home`; a slot's home (any other than `base`, the
/// agent's own) starts as a copy of `base`, so that it has the agent's login
/// and settings, and keeps its own from then on. The copy is made under a
/// temporary name and renamed, so a session never sees half a home.
fn seed_home(base: &std::path::Path, home: &std::path::Path) -> std::io::Result<()> {
    if home.exists() {
        return Ok(());
    }
    if home == base || !base.is_dir() {
        return std::fs::create_dir_all(home);
    }
    let parent = home.parent().unwrap_or(base);
    std::fs::create_dir_all(parent)?;
    let temporary = tempfile::Builder::new()
        .prefix(".seed-")
        .tempdir_in(parent)?;
    let copy = temporary.path().join("home");
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg("--reflink=auto")
        .arg(base)
        .arg(&copy)
        .stdin(std::process::Stdio::null())
        .status()?;
    if !status.success() {
        return Err(std::io::Error::other(format!(
            "`cp -a {} {}` failed ({status})",
            base.display(),
            copy.display()
        )));
    }
    match std::fs::rename(&copy, home) {
        Ok(()) => Ok(()),
        // Another kennel seeded it first: theirs is as good.
        Err(_) if home.is_dir() => Ok(()),
        Err(error) => Err(error),
    }
}

fn write_atomic(path: &std::path::Path, content: &[u8]) -> std::io::Result<()> {
    if std::fs::read(path).is_ok_and(|existing| existing == content) {
        return Ok(());
    }
    let temporary = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&temporary, content)?;
    std::fs::rename(&temporary, path)
}
