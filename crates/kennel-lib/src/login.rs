//! `kennel login AGENT`: the agent's own subscription login, run in a
//! sandbox whose proxy keeps the tokens on the host (see
//! `kennel_proxy::oauth`). The agent writes sentinels to its credentials
//! file, which the login store carries to its other homes as before; every
//! later session of the agent brokers the kept login.

use kennel_proxy::LoginVault;

use crate::checkout::Choice;
use crate::error::CliError;
use crate::launch::{LaunchRequest, Prepared};
use crate::oauth_vault::StoreVault;

/// What `kennel login` did.
#[derive(Debug)]
pub struct LoginOutcome {
    /// The login command's exit code.
    pub code: i32,
    /// A new login is kept on the host.
    pub kept: bool,
    /// Where (the secret store, for people).
    pub store: String,
}

/// Refuses an agent whose login kennel cannot keep, naming those it can.
pub fn check_agent(prepared: &Prepared) -> Result<(), CliError> {
    if prepared.agent.oauth.is_some() {
        return Ok(());
    }
    let able: Vec<String> = prepared
        .context
        .catalog
        .agents()
        .filter(|agent| agent.oauth.is_some())
        .map(|agent| agent.name.clone())
        .collect();
    Err(CliError::usage(format!(
        "kennel cannot keep {}'s login on the host (it can for: {})",
        prepared.agent.name,
        able.join(", ")
    ))
    .with_hint(format!(
        "keep an API key instead: kennel secret set VARIABLE; or log in inside a session (`kennel run {}`), where the login stays in the agent's home",
        prepared.agent.name
    )))
}

/// Runs the agent's login command as `kennel run` would, then says
/// whether a new login was kept.
pub async fn login(
    prepared: Prepared,
    choice: Choice,
    launch: &LaunchRequest,
) -> Result<LoginOutcome, CliError> {
    check_agent(&prepared)?;
    let agent = prepared.agent.name.clone();
    let vault = StoreVault::new(&prepared.context.host.data_dir);
    let store = crate::secrets::SecretStore::open(&prepared.context.host.data_dir)?.describe();
    let read = |vault: &StoreVault| {
        vault.load(&agent).map_err(|why| {
            CliError::kennel(format!(
                "cannot read the {agent} login kept on the host: {why}"
            ))
        })
    };
    // A login that cannot be read is replaced by the new one.
    let before = read(&vault).ok().flatten();
    let code = crate::launch::run(prepared, choice, launch).await?;
    let after = read(&vault)?;
    Ok(LoginOutcome {
        code,
        kept: after.is_some() && after != before,
        store,
    })
}

/// `kennel logout AGENT`: forgets the kept login. The sentinels in the
/// agent's homes then match nothing: the agent asks for a login again.
pub fn logout(data_dir: &std::path::Path, agent: &str) -> Result<bool, CliError> {
    StoreVault::new(data_dir).forget(agent)
}
