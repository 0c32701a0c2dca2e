//! The command line, defined once: help, the man page and shell completions
//! are all generated from these types.

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "kennel",
    version,
    about = "Run terminal AI coding agents in a sandbox",
    long_about = "kennel runs terminal AI coding agents (Claude Code, Codex, Gemini CLI, Aider, …) inside a \
                  sandbox on your machine: the agent gets your repository and its own state, and nothing \
                  else of your host.",
    after_help = "Start with `kennel run shell` to look around inside the sandbox.",
    propagate_version = true
)]
pub struct Cli {
    /// More log output on stderr (-v info, -vv debug, -vvv trace); KENNEL_LOG overrides
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Fewer messages on stderr: no notes (warnings and errors still show)
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run an agent in an ephemeral sandbox, attached to this terminal
    Run(crate::commands::run::RunArgs),
    /// Start an agent in a persistent session, detached (`kennel attach` attaches)
    Start(crate::commands::start::StartArgs),
    /// List sessions: running ones and those ended in the last 24 hours
    Ls(crate::commands::ls::LsArgs),
    /// Print the Plan a session ran with (as `--dry-run` prints one)
    Inspect(crate::commands::inspect::InspectArgs),
    /// Attach this terminal to a session's agent; C-b d detaches and leaves it running
    Attach(crate::commands::attach::AttachArgs),
    /// Run a command in a session's sandbox
    Exec(crate::commands::exec::ExecArgs),
    /// Print what a session's agent showed (-f follows)
    Logs(crate::commands::logs::LogsArgs),
    /// Type text into a session's agent (then Enter)
    Send(crate::commands::send::SendArgs),
    /// Print the screen of a session's agent
    Capture(crate::commands::capture::CaptureArgs),
    /// Stop a session: SIGTERM to the agent, then stop the sandbox
    Stop(crate::commands::stop::StopArgs),
    /// Kill a session's sandbox now
    Kill(crate::commands::kill::KillArgs),
    /// Remove a session's sandbox and forget the session
    Rm(crate::commands::rm::RmArgs),
    /// Show a worktree or clone session's changes against the commit it started from
    Diff(crate::commands::diff::DiffArgs),
    /// Merge a worktree or clone session's branch into your current branch
    Merge(crate::commands::merge::MergeArgs),
    /// Bring a worktree or clone session's changes into your checkout, uncommitted
    Apply(crate::commands::apply::ApplyArgs),
    /// Remove a worktree or clone session's checkout and branch (asks first unless --force)
    Discard(crate::commands::discard::DiscardArgs),
    /// Bring a clone session's branch into your repository
    Sync(crate::commands::sync::SyncArgs),
    /// Remove what sessions left behind (asks first unless --force)
    Clean(crate::commands::clean::CleanArgs),
    /// List the agents kennel knows
    Agents(crate::commands::agents::AgentsArgs),
    /// Build, list and remove agent images
    #[command(subcommand)]
    Image(crate::commands::image::ImageCommand),
    /// Check what works on this machine, and how to fix what does not
    Doctor(crate::commands::doctor::DoctorArgs),
    /// Try to break out of the sandbox on this machine: escape probes on each backend
    Verify(crate::commands::verify::VerifyArgs),
    /// Show the merged configuration, or trust a project's config file
    #[command(subcommand)]
    Config(crate::commands::config::ConfigCommand),
    /// Show what the sandbox's network did: the egress proxy's decisions
    #[command(subcommand)]
    Net(crate::commands::net::NetCommand),
    /// Keep secrets on the host, for the egress proxy to put into the agent's requests
    #[command(
        subcommand,
        long_about = "Keep secrets on the host, for kennel's egress proxy to put into the agent's \
                      requests: the agent sees only a placeholder. Values are kept in the Secret \
                      Service keyring when one answers, else in a file only you can read \
                      (KENNEL_SECRET_STORE=file chooses the file); `kennel doctor` says where."
    )]
    Secret(crate::commands::secret::SecretCommand),
    /// Log an agent in to its subscription; kennel keeps the tokens on the host, the agent gets sentinels
    #[command(
        long_about = "Log an agent in to its subscription (Claude Pro/Max): the agent's own login \
                      command runs in a sandbox, and kennel's proxy keeps what the vendor's token \
                      endpoint answers on the host, in the secret store. The agent gets sentinel \
                      tokens of the same shape; kennel's proxy puts the real access token into \
                      its requests and refreshes the tokens itself. Every later session of the \
                      agent uses the kept login."
    )]
    Login(crate::commands::login::LoginArgs),
    /// Forget the subscription login kennel keeps for an agent
    Logout(crate::commands::login::LogoutArgs),
    /// Print a shell completion script
    Completions(crate::commands::completions::CompletionsArgs),
    /// Print the man page (roff)
    #[command(hide = true)]
    Man,
    /// Internal: the program of a native persistent session's tmux pane
    #[command(name = "__native-session", hide = true)]
    NativeSession(PaneArgs),
}

/// Shared `--json` switch.
#[derive(Debug, Clone, Copy, Args)]
pub struct JsonFlag {
    /// Print machine-readable JSON on stdout
    #[arg(long)]
    pub json: bool,
}

/// `--backend`'s values: `auto` and every backend kennel knows, registered
/// ones included (so the binary must register them before parsing).
pub fn backend_values() -> clap::builder::PossibleValuesParser {
    let mut values = vec!["auto"];
    values.extend(kennel_lib::backend::names());
    clap::builder::PossibleValuesParser::new(values)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NetworkArg {
    None,
    Allowlist,
    Restricted,
    Open,
}

/// `kennel __native-session DIR ID` (internal).
#[derive(Debug, clap::Args)]
pub struct PaneArgs {
    /// The session's directory
    pub dir: std::path::PathBuf,
    /// The session's id in the registry
    pub id: String,
}
