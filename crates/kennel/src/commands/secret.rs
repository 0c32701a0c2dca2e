//! `kennel secret set|ls|rm`: secrets kept on the host, never printed.

use std::io::{IsTerminal, Read};

use clap::{Args, Subcommand};
use zeroize::Zeroizing;

use crate::cli::JsonFlag;
use kennel_core::host::HostContext;
use kennel_lib::error::CliError;
use kennel_lib::secrets::{self, SecretStore, Source};
use kennel_lib::text::escape_controls;

#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Store a secret: a value (typed at a prompt, or read from stdin), a
    /// variable's value, or a command that prints it
    #[command(after_help = "Examples:\n  \
        kennel secret set ANTHROPIC_API_KEY                      # asks for the value, not echoed\n  \
        pass show anthropic | kennel secret set ANTHROPIC_API_KEY\n  \
        kennel secret set OPENAI_API_KEY --from-env OPENAI_API_KEY\n  \
        kennel secret set GH_TOKEN --command 'gh auth token'")]
    Set(SetArgs),
    /// List the secrets: name, where the value comes from, where it is
    /// kept, when it was set (never a value)
    Ls(LsArgs),
    /// Forget a secret
    Rm(RmArgs),
}

#[derive(Debug, Args)]
pub struct SetArgs {
    /// The secret's name: letters, digits and `_`, usually the variable the
    /// agent reads (ANTHROPIC_API_KEY)
    #[arg(value_name = "NAME")]
    pub name: String,

    /// Read the value from stdin (one trailing newline is dropped); the
    /// default when stdin is not a terminal. On a terminal, kennel asks
    /// for the value without echoing it
    #[arg(long, group = "source")]
    pub stdin: bool,

    /// Take the value from the variable VAR of kennel's environment, now
    #[arg(long, value_name = "VAR", group = "source")]
    pub from_env: Option<String>,

    /// Store a command instead of a value: it runs (`sh -c`) each time a
    /// session starts, and what it prints is the value
    #[arg(long, value_name = "COMMAND", group = "source")]
    pub command: Option<String>,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    #[command(flatten)]
    pub json: JsonFlag,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// The secret to forget
    #[arg(value_name = "NAME")]
    pub name: String,
}

pub fn run(command: SecretCommand) -> Result<i32, CliError> {
    let host = HostContext::detect()?;
    match command {
        SecretCommand::Set(args) => set(&host, args),
        SecretCommand::Ls(args) => ls(&host, args),
        SecretCommand::Rm(args) => rm(&host, args),
    }
}

fn set(host: &HostContext, args: SetArgs) -> Result<i32, CliError> {
    // Before a prompt: a bad name is known without the value.
    secrets::check_name(&args.name)?;
    if args
        .name
        .starts_with(kennel_lib::oauth_vault::SECRET_PREFIX)
    {
        return Err(CliError::usage(format!(
            "{} is where `kennel login` keeps a login",
            args.name
        ))
        .with_hint("log in with `kennel login AGENT`; `kennel logout AGENT` forgets it"));
    }
    let name = &args.name;
    let store = SecretStore::open(&host.data_dir)?;
    if let Some(command) = &args.command {
        store.set_command(name, command)?;
        kennel_lib::report::note(&format!(
            "secret {name} stored in {}: `{}` runs each time a session starts",
            store.describe(),
            escape_controls(command)
        ));
        return Ok(0);
    }
    let (value, from) = match &args.from_env {
        Some(var) => (from_env(var)?, format!("the value of ${var}")),
        None if args.stdin || !std::io::stdin().is_terminal() => {
            (read_stdin()?, "the value read from stdin".to_string())
        }
        None => (prompt(name)?, "the value typed".to_string()),
    };
    secrets::validate_value(&value).map_err(|why| {
        let mut hint = "a secret's value is one line of text: a token, a key".to_string();
        if from.ends_with("stdin") {
            hint.push_str(" (one trailing newline is dropped)");
        }
        CliError::usage(format!("{from} cannot be secret {name}: {why}")).with_hint(hint)
    })?;
    store.set(name, &value)?;
    kennel_lib::report::note(&format!("secret {name} stored in {}", store.describe()));
    Ok(0)
}

/// `--from-env VAR`: the variable's value, now.
fn from_env(var: &str) -> Result<Zeroizing<String>, CliError> {
    match std::env::var_os(var) {
        None => Err(CliError::usage(format!(
            "--from-env: `{}` is not set in kennel's environment",
            escape_controls(var)
        ))
        .with_hint(format!(
            "export {0}=… first, or pipe the value in: kennel secret set NAME --stdin",
            escape_controls(var)
        ))),
        Some(value) => value
            .into_string()
            .map(Zeroizing::new)
            .map_err(|_| CliError::usage(format!("--from-env: the value of ${var} is not UTF-8"))),
    }
}

/// Stdin, less one trailing newline (`\n` or `\r\n`); read into a buffer
/// that is zeroed when dropped and never grows (so never copied).
fn read_stdin() -> Result<Zeroizing<String>, CliError> {
    let limit = secrets::MAX_VALUE_LEN + 3;
    let mut bytes = Zeroizing::new(Vec::with_capacity(limit));
    std::io::stdin()
        .lock()
        .take(limit as u64 - 1)
        .read_to_end(&mut bytes)
        .map_err(|error| CliError::kennel(format!("cannot read stdin: {error}")))?;
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
    }
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| CliError::usage("the value read from stdin is not UTF-8 text"))?;
    Ok(Zeroizing::new(text.to_string()))
}

/// Asks on the terminal, without echo.
fn prompt(name: &str) -> Result<Zeroizing<String>, CliError> {
    rpassword::prompt_password(format!("Value of {name} (not shown): "))
        .map(Zeroizing::new)
        .map_err(|error| {
            CliError::kennel(format!("cannot read the value from the terminal: {error}"))
                .with_hint("pipe it in instead: kennel secret set NAME --stdin")
        })
}

/// A secret as `ls` shows it: with the hosts it may be sent to.
#[derive(serde::Serialize)]
struct Listed<'a> {
    #[serde(flatten)]
    secret: &'a kennel_lib::secrets::SecretInfo,
    hosts: Vec<String>,
}

fn ls(host: &HostContext, args: LsArgs) -> Result<i32, CliError> {
    let store = SecretStore::open(&host.data_dir)?;
    let secrets = store.list()?;
    let context = kennel_lib::context::Context::load(None)?;
    let listed: Vec<Listed> = secrets
        .iter()
        .map(|secret| Listed {
            secret,
            hosts: kennel_lib::secrets::bound_hosts(&context, &secret.name),
        })
        .collect();
    if args.json.json {
        return crate::ui::print_json_list("secrets", &listed);
    }
    if listed.is_empty() {
        kennel_lib::report::note(&format!(
            "no secrets in {} (`kennel secret set NAME` stores one)",
            store.describe()
        ));
        return Ok(0);
    }
    let now = kennel_sessions::now_ms();
    let rows: Vec<[String; 5]> = listed
        .iter()
        .map(|Listed { secret, hosts }| {
            [
                secret.name.clone(),
                match hosts.is_empty() {
                    true => "- (not bound: add [secrets.NAME])".to_string(),
                    false => hosts.join(", "),
                },
                match &secret.source {
                    Source::Stored => "stored".to_string(),
                    Source::Command(command) => format!("command: {}", escape_controls(command)),
                },
                secret.store.to_string(),
                crate::commands::ls::ago(now - secret.updated * 1000),
            ]
        })
        .collect();
    crate::ui::write_stdout(format_args!(
        "{}",
        crate::ui::table(&["NAME", "HOSTS", "SOURCE", "STORE", "UPDATED"], &rows)
    ));
    Ok(0)
}

fn rm(host: &HostContext, args: RmArgs) -> Result<i32, CliError> {
    let store = SecretStore::open(&host.data_dir)?;
    if store.remove(&args.name)? {
        kennel_lib::report::note(&format!("secret {} removed", args.name));
        return Ok(0);
    }
    let known: Vec<String> = store
        .list()?
        .into_iter()
        .map(|secret| secret.name)
        .collect();
    Err(
        CliError::usage(format!("no secret named `{}`", args.name)).with_hint(
            if known.is_empty() {
                "there are no secrets; `kennel secret set NAME` stores one".to_string()
            } else {
                format!("the secrets are: {}", known.join(", "))
            },
        ),
    )
}
