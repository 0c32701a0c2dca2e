//! `kennel run`: one ephemeral sandbox, attached to this terminal.

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::Args;
use kennel_core::plan::{NetworkMode, Plan};
use kennel_core::settings::RunRequest;

use crate::cli::NetworkArg;
use kennel_lib::checkout::Choice;
use kennel_lib::context::Context;
use kennel_lib::error::CliError;
use kennel_lib::launch::LaunchRequest;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The agent to run (`kennel agents` lists them; `shell` for a plain shell)
    pub agent: String,

    /// The workspace directory (default: the current directory; its git top level is mounted)
    #[arg(short, long, value_name = "DIR")]
    pub workspace: Option<PathBuf>,

    /// Where to run the sandbox
    #[arg(short, long, value_parser = crate::cli::backend_values())]
    pub backend: Option<String>,

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

    /// The workspace's devcontainer configuration to build on: NAME for .devcontainer/NAME/devcontainer.json, `none` for kennel's own image (default: .devcontainer/devcontainer.json or .devcontainer.json, or the only one)
    #[arg(long, value_name = "NAME")]
    pub devcontainer: Option<String>,

    /// Ignore the workspace's devcontainer configuration (the same as `--devcontainer none`)
    #[arg(long, conflicts_with = "devcontainer")]
    pub no_devcontainer: bool,

    /// Native backend: run even when the kernel lacks user namespaces, Landlock or seccomp (a warning says what is missing on every run)
    #[arg(long)]
    pub allow_weaker_sandbox: bool,

    /// Arguments passed to the agent (for `shell`: the command to run)
    #[arg(last = true, value_name = "AGENT_ARGS")]
    pub args: Vec<String>,
}

impl RunArgs {
    /// Decides the session's [`Choice`] from `--resume`, `--mode` and
    /// `--branch`.
    pub fn choose(&self, context: &Context, plan: &Plan) -> Result<Choice, CliError> {
        kennel_lib::checkout::choose(
            context,
            plan,
            self.resume.as_deref(),
            self.mode.as_deref(),
            self.branch.as_deref(),
        )
    }
}

/// The library's request for these arguments; `tty` says whether the Plan
/// gets a terminal.
impl RunArgs {
    pub fn launch_request(&self, tty: bool) -> LaunchRequest {
        LaunchRequest {
            agent: self.agent.clone(),
            workspace: self.workspace.clone(),
            dry_run: self.dry_run,
            accept_git_dir: self.accept_git_dir,
            resume: self.resume.clone(),
            mode: self.mode.clone(),
            branch: self.branch.clone(),
            devcontainer: match self.no_devcontainer {
                true => Some("none".into()),
                false => self.devcontainer.clone(),
            },
            warm_up: !self.dry_run,
            run: RunRequest {
                backend: self.backend.clone(),
                image: self.image.clone(),
                env: self.env.clone(),
                network: self.network.map(network_mode),
                allow: self.allow.clone(),
                no_yolo: self.no_yolo,
                host_config: self.host_config,
                args: self.args.clone(),
                tty,
                allow_weaker_sandbox: self.allow_weaker_sandbox,
                memory: self.memory.clone(),
                cpus: self.cpus,
                pids_limit: self.pids_limit,
                resume: self.resume.is_some(),
                ..Default::default()
            },
        }
    }
}

/// `--dry-run`: prints the Plan as it would run now (its slot, and in
/// worktree and clone modes its checkout), running and creating nothing.
pub fn print_dry_run(
    prepared: &mut kennel_lib::launch::Prepared,
    choice: &Choice,
    launch: &LaunchRequest,
    name: Option<&str>,
) -> Result<i32, CliError> {
    kennel_lib::launch::dry_run(prepared, choice, launch, name)?;
    crate::ui::print_plan(&prepared.plan.redacted())
}

pub async fn run(args: RunArgs) -> Result<i32, CliError> {
    let tty = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let launch = args.launch_request(tty);
    let mut prepared = kennel_lib::launch::prepare(&launch).await?;
    let choice = args.choose(&prepared.context, &prepared.plan)?;
    if args.dry_run {
        return print_dry_run(&mut prepared, &choice, &launch, None);
    }
    kennel_lib::launch::run(prepared, choice, &launch).await
}

fn network_mode(arg: NetworkArg) -> NetworkMode {
    match arg {
        NetworkArg::None => NetworkMode::None,
        NetworkArg::Allowlist => NetworkMode::Allowlist,
        NetworkArg::Restricted => NetworkMode::Restricted,
        NetworkArg::Open => NetworkMode::Open,
    }
}
