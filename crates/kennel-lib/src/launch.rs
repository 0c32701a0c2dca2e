//! `kennel run` and `kennel start` between the command line and the
//! backend: the Plan is built ([`prepare`]), the session registered, its
//! checkout made (worktree and clone modes) or its git control files
//! recorded (direct mode), the host prepared (agent home, identity files,
//! CA bundle), and the backend runs the sandbox ([`run`]) or starts it
//! detached ([`start`]).

use std::path::PathBuf;

use kennel_core::plan::{ImagePlan, Plan};
use kennel_core::settings::{self, RunRequest};
use kennel_sessions::{Mode, Registry, Session, State};

use crate::checkout::{Choice, WorkspaceMode};
use crate::context::Context;
use crate::error::CliError;

/// What the user asked `kennel run` or `kennel start` for.
#[derive(Debug, Clone, Default)]
pub struct LaunchRequest {
    /// The agent (`kennel agents` lists them).
    pub agent: String,
    /// The workspace directory (default: the current directory).
    pub workspace: Option<PathBuf>,
    /// Build the Plan only (connect to no engine unless `auto` asks).
    pub dry_run: bool,
    /// Direct mode: accept a `.git` that is not the one kennel saw last.
    pub accept_git_dir: bool,
    /// `--resume [SESSION]` (`Some("")`: the latest session).
    pub resume: Option<String>,
    /// `--mode`, `--branch`.
    pub mode: Option<String>,
    pub branch: Option<String>,
    /// `--devcontainer NAME` (`none`: none); default: the workspace's own.
    pub devcontainer: Option<String>,
    /// The run will follow in this process (`kennel run`, not `--dry-run`):
    /// the backend may start what it needs while the Plan is built.
    pub warm_up: bool,
    /// What the Plan is built from; `selected`, `on_host` and `host_git`
    /// are filled in by [`prepare`].
    pub run: RunRequest,
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
    /// The project's image kennel builds from the devcontainer (its
    /// Dockerfile and features), under the agent's layers.
    pub project: Option<kennel_image::devimage::DevImage>,
    /// The devcontainer.json is trusted (`kennel config trust`): the images
    /// and features it names may come from any registry.
    pub devcontainer_trusted: bool,
    pub plan: Plan,
}

/// Resolves the backend and builds the Plan for `launch`.
pub async fn prepare(launch: &LaunchRequest) -> Result<Prepared, CliError> {
    let cwd = std::env::current_dir()
        .map_err(|error| CliError::kennel(format!("no current directory: {error}")))?;
    let context = Context::load(Some(launch.workspace.as_deref().unwrap_or(&cwd)))?;
    let agent = context.catalog.get(&launch.agent)?;
    crate::timing::mark("agent lookup");
    let requested = launch
        .run
        .backend
        .clone()
        .or_else(|| context.config.file.defaults.backend.clone())
        .unwrap_or_else(|| "auto".into());
    let (backend, choice) = crate::backend::select(&requested, !launch.dry_run).await?;
    if launch.warm_up && !launch.dry_run {
        backend.warm_up();
    }
    crate::timing::mark("backend");
    let runs_images = backend.runs_images();
    if !runs_images && launch.run.image.is_some() {
        return Err(CliError::usage(format!(
            "--image needs a container engine: the {} backend runs the host's own programs",
            backend.name()
        ))
        .with_hint("use --backend docker or --backend podman"));
    }
    let mut found = Vec::new();
    let devcontainer = match &context.workspace {
        Some(workspace) => kennel_core::devcontainer::find(
            &workspace.root,
            launch.devcontainer.as_deref(),
            &mut found,
        )?,
        None => None,
    };
    for warning in found {
        crate::report::warn(&warning);
    }
    let devcontainer = devcontainer.map(|mut devcontainer| {
        devcontainer.trusted = context.is_trusted(&devcontainer.path, &devcontainer.digest);
        devcontainer
    });
    // The native backend runs the host's programs: the devcontainer's
    // build is not read (the Plan says it is not used).
    let (image_settings, project) = match runs_images && launch.run.image.is_none() {
        true => context.project_images(devcontainer.as_ref())?,
        false => (context.image_settings_for(None)?, None),
    };
    let recipes = match (&launch.run.image, runs_images) {
        (Some(_), _) | (None, false) => Vec::new(),
        (None, true) => kennel_image::recipes_for(agent, &image_settings),
    };
    let image = match (&launch.run.image, recipes.last()) {
        _ if !runs_images => ImagePlan {
            reference: "host".into(),
            managed: false,
            source: "host".into(),
        },
        (Some(reference), _) => ImagePlan {
            reference: reference.clone(),
            managed: false,
            source: "--image".into(),
        },
        (None, Some(recipe)) => ImagePlan {
            reference: recipe.tag.clone(),
            managed: true,
            source: image_source(&context, devcontainer.as_ref(), project.as_ref()),
        },
        (None, None) => return Err(CliError::kennel("no image recipe for this agent")),
    };
    let mut request = launch.run.clone();
    request.selected = Some(choice);
    request.on_host = !runs_images;
    let Some(workspace) = &context.workspace else {
        return Err(CliError::kennel("no workspace"));
    };
    request.host_git = workspace.git_user.clone();
    request.stored_secrets = crate::secrets::stored_names(&context.host.data_dir);
    request.devcontainer = devcontainer;
    if request
        .stored_secrets
        .contains(&crate::oauth_vault::secret_name(&agent.name))
    {
        request.stored_logins.insert(agent.name.clone());
    }
    let devcontainer_trusted = request
        .devcontainer
        .as_ref()
        .is_some_and(|devcontainer| devcontainer.trusted);
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
        project,
        devcontainer_trusted,
        plan,
    })
}

/// Where the agent's image starts from, for the Plan (`--dry-run`).
fn image_source(
    context: &Context,
    devcontainer: Option<&kennel_core::devcontainer::Devcontainer>,
    project: Option<&kennel_image::devimage::DevImage>,
) -> String {
    let root = context
        .workspace
        .as_ref()
        .map(|workspace| workspace.root.as_path());
    match (devcontainer, project) {
        (Some(devcontainer), _) if project.is_some() || devcontainer.image.is_some() => {
            let path = root
                .and_then(|root| devcontainer.path.strip_prefix(root).ok())
                .unwrap_or(&devcontainer.path);
            let what = match project {
                Some(image) if image.features.is_empty() => "build",
                Some(_) if devcontainer.build.is_some() => "build and features",
                Some(_) => "image and features",
                None => "image",
            };
            let trusted = if devcontainer.trusted {
                ", trusted"
            } else {
                ""
            };
            format!("devcontainer: {} ({what}{trusted})", path.display())
        }
        _ => match context.config.origin_of("defaults.base_image") {
            Some(origin) => format!("base_image ({origin})"),
            None => "kennel".into(),
        },
    }
}

/// `--dry-run`: finishes `prepared`'s Plan as [`run`] or [`start`] would
/// now — the slot the session would take, and in worktree and clone modes
/// the checkout it would get (`name`: the session's name, if given) —
/// creating nothing.
pub fn dry_run(
    prepared: &mut Prepared,
    choice: &Choice,
    request: &LaunchRequest,
    name: Option<&str>,
) -> Result<(), CliError> {
    let host = &prepared.context.host;
    let plan = &mut prepared.plan;
    let (slot, name, registry) = crate::sessions::preview(host, plan, choice.slot, name);
    settings::use_slot(plan, slot);
    if choice.mode != WorkspaceMode::Direct {
        let creates = crate::checkout::preview(
            registry.as_ref(),
            plan,
            choice,
            request.branch.as_deref(),
            slot,
            &name,
            host,
        )?;
        crate::report::note(&format!("--dry-run: {creates}; nothing was created"));
    }
    Ok(())
}

/// Runs `prepared` attached to this terminal until the agent ends: the
/// session is in the registry (best effort), direct mode is audited at the
/// end, worktree and clone modes get their checkout; the agent's exit code.
pub async fn run(
    prepared: Prepared,
    choice: Choice,
    request: &LaunchRequest,
) -> Result<i32, CliError> {
    let Prepared {
        context,
        agent,
        backend,
        image_settings,
        recipes,
        project,
        devcontainer_trusted,
        mut plan,
    } = prepared;
    let agent = &agent;
    let mode = choice.mode;
    direct_guard(&context, mode, request.accept_git_dir)?;

    // Direct mode: what the user's git control files look like before the
    // agent runs, read while the session is registered (recorded in the
    // data dir below, checked when the run ends).
    let audit = match (mode, &context.workspace) {
        (crate::checkout::WorkspaceMode::Direct, Some(workspace)) => {
            Some(crate::git_audit::begin(workspace))
        }
        _ => None,
    };

    // From here on the run is in the session registry (best effort: a
    // registry failure is a warning, never a reason not to run).
    crate::timing::mark("plan");
    let mut session = crate::sessions::Tracker::begin(
        &context.host,
        &mut plan,
        choice.slot,
        mode != crate::checkout::WorkspaceMode::Direct,
    )?;
    crate::timing::mark("registry");
    let mut checkout = None;
    let audit_key = audit.map(|audit| {
        let key = match session.id() {
            "" => format!("{}{}", crate::git_audit::UNREGISTERED, plan.name),
            id => id.to_string(),
        };
        audit.record(&context.host, &key, &plan.name);
        crate::timing::mark("git audit");
        key
    });
    let result: Result<i32, CliError> = async {
        if mode != crate::checkout::WorkspaceMode::Direct {
            checkout = Some(session.create_checkout(
                &context.host,
                &mut plan,
                &choice,
                request.branch.as_deref(),
            )?);
        }
        // Placeholders go into the Plan before the backend prepares it.
        let proxy = proxy_spec(&context, &mut plan)?;
        crate::timing::mark("broker");
        let mut launch = checked(backend.as_ref(), &plan, agent).await?;
        provision(
            launch.as_mut(),
            &recipes,
            (project, devcontainer_trusted),
            &context,
            &plan,
            &image_settings,
        )
        .await?;
        crate::timing::mark("image");
        let proxy = match proxy {
            Some(spec) => Some(crate::proxy::SessionProxy::launch(&spec).await?),
            None => None,
        };
        crate::timing::mark("proxy");
        session.running(&plan.name);
        crate::timing::mark("registry: running");
        let code = launch.run(&plan, proxy).await;
        crate::timing::mark("sandbox");
        code
    }
    .await;
    // The check of what the agent left in the user's git runs while the
    // end is recorded; the user hears of it before kennel exits.
    let checking = audit_key
        .as_ref()
        .map(|key| crate::git_audit::begin_finish(&context.host, key));
    session.end(&result);
    crate::timing::mark("registry: end");
    if let Some(home) = plan.mount(kennel_core::plan::MountPurpose::AgentHome)
        && home.source.is_dir()
    {
        sync_login(&context, &plan, &home.source, LoginStep::End);
    }
    if let Some(checking) = checking {
        checking.finish();
        crate::timing::mark("git audit: check");
    }
    if let Some(checkout) = &checkout
        && crate::checkout::commit_on_exit_enabled(Some(&context.config))
    {
        crate::checkout::commit_on_exit(checkout, session.name());
    }
    result
}

/// The session's proxy as its Plan asks, with its brokered credentials
/// (their placeholders put in the Plan's variables).
fn proxy_spec(
    context: &Context,
    plan: &mut Plan,
) -> Result<Option<crate::proxy::ProxySpec>, CliError> {
    let broker = crate::broker::prepare(context, plan)?;
    Ok(crate::proxy::ProxySpec::from_plan(plan)?.map(|mut spec| {
        spec.broker = broker;
        spec
    }))
}

/// A persistent session's Plan: the backend keeps the agent alive without
/// a terminal.
pub fn persistent(prepared: &mut Prepared) {
    prepared.plan.ephemeral = false;
    prepared.backend.persistent(&mut prepared.plan);
}

/// Starts `prepared` (made [`persistent`]) detached, as the session
/// `name` (default `<agent>-<n>`); the session, once it runs.
pub async fn start(
    prepared: Prepared,
    choice: Choice,
    request: &LaunchRequest,
    name: Option<String>,
) -> Result<Session, CliError> {
    let Prepared {
        context,
        agent,
        backend,
        image_settings,
        recipes,
        project,
        devcontainer_trusted,
        mut plan,
    } = prepared;
    direct_guard(&context, choice.mode, request.accept_git_dir)?;
    // Placeholders go into the Plan before the backend prepares it.
    let proxy = proxy_spec(&context, &mut plan)?;
    // Fail closed here, where the user sees it.
    let mut launch = checked(backend.as_ref(), &plan, &agent).await?;
    let mut registry = Registry::open(&crate::sessions::registry_path(&context.host))?;
    let session = crate::sessions::register(
        &mut registry,
        &context.host,
        &mut plan,
        name,
        Mode::Persistent,
        choice.slot,
    )?;
    if choice.mode == crate::checkout::WorkspaceMode::Direct
        && let Some(workspace) = &context.workspace
    {
        // Checked when the session has ended, however it ends.
        crate::git_audit::begin(workspace).record(&context.host, &session.id, &session.name);
    }
    if choice.mode != crate::checkout::WorkspaceMode::Direct
        && let Err(error) = crate::checkout::create(
            &mut registry,
            &context.host,
            &mut plan,
            &choice,
            request.branch.as_deref(),
            &session,
        )
    {
        if let Err(registry_error) =
            registry.mark_ended(&session.id, State::Failed, Some(error.kind.code()))
        {
            tracing::warn!("cannot record the failed start: {registry_error}");
        }
        return Err(error);
    }
    let started = async {
        provision(
            launch.as_mut(),
            &recipes,
            (project, devcontainer_trusted),
            &context,
            &plan,
            &image_settings,
        )
        .await?;
        // `allowlist` and `restricted`: the session's egress proxy lives as
        // long as its sandbox.
        launch
            .start(&plan, proxy, &context.host, &mut registry, &session.id)
            .await
    }
    .await;
    match started {
        Ok(()) => Ok(session),
        Err(error) => {
            if let Err(registry_error) =
                registry.mark_ended(&session.id, State::Failed, Some(error.kind.code()))
            {
                tracing::warn!("cannot record the failed start: {registry_error}");
            }
            Err(error)
        }
    }
}

/// The backend's check that `plan` can run here, with the Plan's warnings
/// and the backend's told.
async fn checked<'a>(
    backend: &'a dyn crate::backend::Backend,
    plan: &Plan,
    agent: &kennel_core::catalog::AgentSpec,
) -> Result<Box<dyn crate::backend::Launch + 'a>, CliError> {
    let launch = backend
        .prepare(plan)
        .await
        .map_err(|error| with_install_hint(error, agent))?;
    for warning in plan.warnings.iter().chain(&launch.warnings()) {
        crate::report::warn(warning);
    }
    Ok(launch)
}

/// What the sandbox runs (images) and what its mounts point at on the host.
async fn provision(
    launch: &mut (dyn crate::backend::Launch + '_),
    recipes: &[kennel_image::Recipe],
    (project, trusted): (Option<kennel_image::devimage::DevImage>, bool),
    context: &Context,
    plan: &Plan,
    images: &kennel_image::ImageSettings,
) -> Result<(), CliError> {
    let mut options = context.build_options(false)?;
    let policy = kennel_proxy::Policy {
        mode: plan.network.mode,
        allow: plan.network.allow.clone(),
        deny: plan.network.deny.clone(),
    };
    options.pulls = repository_base(context, plan, images, trusted).map(|chosen_by| {
        crate::image_build::PullPolicy {
            policy: policy.clone(),
            chosen_by,
        }
    });
    if let Some(image) = project {
        options.project = Some(std::sync::Arc::new(
            context.project_build(image, policy, trusted)?,
        ));
    }
    launch.provision(recipes, &options).await?;
    prepare_host(context, plan, images)
}

/// What chose the base image, when the repository did: its
/// devcontainer.json, or its `.kennel.toml`'s `base_image`.
fn repository_base(
    context: &Context,
    plan: &Plan,
    images: &kennel_image::ImageSettings,
    trusted_devcontainer: bool,
) -> Option<String> {
    let configured = context.config.file.defaults.base_image.as_deref();
    if let Some(path) = &plan.devcontainer
        && configured != Some(images.base_image.as_str())
    {
        // A trusted devcontainer.json's images may come from any registry.
        return (!trusted_devcontainer).then(|| path.display().to_string());
    }
    match context.config.origin_of("defaults.base_image") {
        Some(kennel_core::config::Origin::Project(path)) => Some(path.display().to_string()),
        _ => None,
    }
}

/// Direct mode: refuses symlinked git control files and a `.git` that is
/// not the one kennel recorded (see [`crate::git_audit::guard`]), and
/// audits any earlier session whose audit is still pending.
pub fn direct_guard(
    context: &Context,
    mode: WorkspaceMode,
    accept_git_dir: bool,
) -> Result<(), CliError> {
    if mode != crate::checkout::WorkspaceMode::Direct {
        return Ok(());
    }
    if crate::git_audit::anything_pending(&context.host)
        && let Ok(registry) =
            kennel_sessions::Registry::open(&crate::sessions::registry_path(&context.host))
    {
        crate::git_audit::settle(&context.host, &registry);
    }
    match &context.workspace {
        Some(workspace) => crate::git_audit::guard(&context.host, workspace, accept_git_dir),
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
            crate::report::warn(&format!(
                "cannot open the login store of {}: {error}",
                agent.name
            ));
            return;
        }
    };
    match step {
        LoginStep::Start => {
            let legacy = settings::shared_agent_home(&context.host, &agent.name);
            if store.migrate(&legacy) {
                crate::report::note(&format!(
                    "your {} login in {} now carries over to every repository's agent home (agent homes are per repository)",
                    agent.name,
                    legacy.display()
                ));
            }
            store.collect();
            store.give_to(home);
        }
        LoginStep::End => store.take_from(home),
    }
    for warning in &store.warnings {
        crate::report::warn(warning);
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
        crate::report::note(&format!(
            "{}'s home for this repository is new ({}): agent homes are per repository now, so nothing of one repository's home reaches another. Your earlier home stays in {}; only its login carries over. To use it here, copy it before the agent starts (`cp -a {}/. {}/`), or set `share_agent_home = true` under [defaults] in your config to share one home across repositories as before",
            plan.agent,
            base.display(),
            legacy.display(),
            legacy.display(),
            base.display()
        ));
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
