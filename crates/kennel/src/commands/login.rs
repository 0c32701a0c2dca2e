//! `kennel login AGENT` and `kennel logout AGENT`: a subscription login
//! whose tokens kennel keeps on the host.

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::Args;
use kennel_core::host::HostContext;
use kennel_core::settings::RunRequest;
use kennel_lib::error::CliError;
use kennel_lib::launch::LaunchRequest;

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The agent to log in (`claude`)
    pub agent: String,

    /// The workspace directory whose agent home the login starts in
    /// (default: the current directory); the login reaches every other
    /// home of the agent too
    #[arg(short, long, value_name = "DIR")]
    pub workspace: Option<PathBuf>,

    /// Where to run the login's sandbox
    #[arg(short, long, value_parser = crate::cli::backend_values())]
    pub backend: Option<String>,

    /// Run this image instead of the agent's own
    #[arg(long, value_name = "REF")]
    pub image: Option<String>,

    /// Print the Plan as JSON and run nothing
    #[arg(long)]
    pub dry_run: bool,

    /// Native backend: run even when the kernel lacks user namespaces, Landlock or seccomp
    #[arg(long)]
    pub allow_weaker_sandbox: bool,

    /// Arguments added to the agent's login command
    #[arg(last = true, value_name = "ARGS")]
    pub args: Vec<String>,
}

#[derive(Debug, Args)]
pub struct LogoutArgs {
    /// The agent whose kept login kennel forgets
    pub agent: String,
}

pub async fn login(args: LoginArgs) -> Result<i32, CliError> {
    let tty = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let launch = LaunchRequest {
        agent: args.agent.clone(),
        workspace: args.workspace.clone(),
        dry_run: args.dry_run,
        accept_git_dir: false,
        resume: None,
        mode: None,
        branch: None,
        // The login needs the agent only, not the project's set-up.
        devcontainer: Some("none".into()),
        warm_up: !args.dry_run,
        run: RunRequest {
            backend: args.backend.clone(),
            image: args.image.clone(),
            args: args.args.clone(),
            tty,
            allow_weaker_sandbox: args.allow_weaker_sandbox,
            login: true,
            ..Default::default()
        },
    };
    let mut prepared = kennel_lib::launch::prepare(&launch).await?;
    kennel_lib::login::check_agent(&prepared)?;
    let choice = kennel_lib::checkout::choose(&prepared.context, &prepared.plan, None, None, None)?;
    if args.dry_run {
        return crate::commands::run::print_dry_run(&mut prepared, &choice, &launch, None);
    }
    let outcome = kennel_lib::login::login(prepared, choice, &launch).await?;
    if outcome.kept {
        kennel_lib::report::note(&format!(
            "{} login kept on the host, in {}: the agent has sentinels, and kennel's proxy sends and refreshes the real tokens",
            args.agent, outcome.store
        ));
        return Ok(outcome.code);
    }
    if outcome.code != 0 {
        return Ok(outcome.code);
    }
    Err(CliError::kennel(format!(
        "no new {} login was kept: the login did not reach its token endpoint",
        args.agent
    ))
    .with_hint("finish the login in the agent (paste the code it asks for); `kennel net log` shows what it reached"))
}

pub fn logout(args: LogoutArgs) -> Result<i32, CliError> {
    let host = HostContext::detect()?;
    if kennel_lib::login::logout(&host.data_dir, &args.agent)? {
        kennel_lib::report::note(&format!(
            "{} login forgotten: the agent asks for a login again",
            args.agent
        ));
        Ok(0)
    } else {
        Err(
            CliError::usage(format!("kennel keeps no {} login", args.agent)).with_hint(
                "`kennel secret ls` lists what kennel keeps (logins as KENNEL_LOGIN_<AGENT>)",
            ),
        )
    }
}
