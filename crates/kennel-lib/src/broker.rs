//! The session's brokered credentials, made ready on the host just before
//! its proxy starts: each value read (the host's environment or the secret
//! store), a placeholder of its shape put in the sandbox's variable, and
//! the session's own CA made. The values and the CA's key go to the proxy
//! only (in this process, or over the proxy daemon's stdin); the Plan, the
//! registry and every printed text hold placeholders at most.

use serde::{Deserialize, Serialize};

use kennel_core::plan::{CredentialSource, Plan};

use crate::context::Context;
use crate::error::CliError;

/// What the proxy needs to broker: credentials with their values, the
/// session CA (certificate and key, PEM) and the configured CA
/// certificates (trusted for upstreams, and beside the session CA inside).
#[derive(Clone, Serialize, Deserialize)]
pub struct BrokerSpec {
    pub credentials: Vec<kennel_proxy::Credential>,
    pub ca_cert: String,
    pub ca_key: String,
    pub extra_ca: Vec<u8>,
    /// Subscription logins the proxy keeps on the host, in the vault under
    /// `data_dir` (see [`crate::oauth_vault`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub logins: Vec<kennel_proxy::OAuthLogin>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for BrokerSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerSpec")
            .field("credentials", &self.credentials)
            .field("ca_key", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// Reads the values of the Plan's brokered credentials, puts a fresh
/// placeholder in each one's variable and makes the session's CA; `None`
/// when the Plan brokers nothing. The Plan's logins are read by the proxy
/// itself, from the vault, when it starts.
pub fn prepare(context: &Context, plan: &mut Plan) -> Result<Option<BrokerSpec>, CliError> {
    let Some((planned, logins)) = plan
        .network
        .proxy
        .as_ref()
        .map(|proxy| (proxy.credentials.clone(), proxy.logins.clone()))
        .filter(|(credentials, logins)| !credentials.is_empty() || !logins.is_empty())
    else {
        return Ok(None);
    };
    let mut store = None;
    let mut credentials = Vec::new();
    for credential in planned {
        let mut refresh = None;
        let value = match credential.source {
            CredentialSource::Environment => context
                .host
                .env
                .get(&credential.env)
                .cloned()
                .ok_or_else(|| {
                    CliError::kennel(format!(
                        "{} is no longer set in your environment",
                        credential.env
                    ))
                })?,
            CredentialSource::Store => {
                // Opened once, for the first credential that needs it.
                let store = match &mut store {
                    Some(store) => store,
                    None => {
                        store.insert(crate::secrets::SecretStore::open(&context.host.data_dir)?)
                    }
                };
                refresh = refresh_command(store, &credential.name)?;
                store
                    .value(&credential.name)?
                    .ok_or_else(|| {
                        CliError::kennel(format!("the secret {} has no value", credential.name))
                            .with_hint(format!(
                                "store one with `kennel secret set {}`",
                                credential.name
                            ))
                    })?
                    .expose()
                    .to_string()
            }
        };
        crate::secrets::validate_value(&value).map_err(|reason| {
            CliError::usage(format!("the value of {}: {reason}", credential.name))
        })?;
        let placeholder = kennel_core::credentials::placeholder(&value)
            .map_err(|error| CliError::kennel(format!("cannot make a placeholder: {error}")))?;
        if let Some(var) = plan.env.iter_mut().find(|var| var.name == credential.env) {
            var.value = placeholder.clone();
        }
        credentials.push(kennel_proxy::Credential {
            name: credential.name.clone(),
            placeholder,
            value,
            hosts: credential.hosts.clone(),
            places: credential.places.iter().map(to_proxy_place).collect(),
            methods: credential.methods.clone(),
            paths: credential.paths.clone(),
            refresh,
        });
    }
    let logins: Vec<kennel_proxy::OAuthLogin> = logins
        .into_iter()
        .map(|login| kennel_proxy::OAuthLogin {
            name: login.name,
            token_host: login.token_host,
            token_path: login.token_path,
            hosts: login.hosts,
            header: login.header,
            capture: login.capture,
        })
        .collect();
    // The CA may sign for these names only.
    let hosts: Vec<String> = credentials
        .iter()
        .flat_map(|credential| credential.hosts.iter().cloned())
        .chain(logins.iter().flat_map(|login| {
            std::iter::once(login.token_host.clone()).chain(login.hosts.iter().cloned())
        }))
        .collect();
    let ca = kennel_proxy::SessionCa::generate_for(&plan.name, &hosts).map_err(|error| {
        CliError::kennel(format!(
            "cannot make the session's certificate authority: {error}"
        ))
    })?;
    Ok(Some(BrokerSpec {
        credentials,
        ca_cert: ca.cert_pem().to_string(),
        ca_key: ca.key_pem().to_string(),
        // The configured CA files only: which base image is irrelevant
        // (and finding the devcontainer again would read it again).
        extra_ca: context.image_settings_for(None)?.ca_bundle(),
        data_dir: (!logins.is_empty()).then(|| context.host.data_dir.clone()),
        logins,
    }))
}

/// For a secret whose value is a command's output: that command, for the
/// proxy to run again when the server answers 401 (the value has expired).
fn refresh_command(
    store: &crate::secrets::SecretStore,
    name: &str,
) -> Result<Option<Vec<String>>, CliError> {
    use crate::secrets::Source;
    Ok(store
        .list()?
        .into_iter()
        .find(|info| info.name == name)
        .and_then(|info| match info.source {
            Source::Command(command) => Some(vec!["sh".to_string(), "-c".to_string(), command]),
            Source::Stored => None,
        }))
}

fn to_proxy_place(place: &kennel_core::credentials::CredentialPlace) -> kennel_proxy::Place {
    use kennel_core::credentials::CredentialPlace;
    match place {
        CredentialPlace::Header { name } => kennel_proxy::Place::Header { name: name.clone() },
        CredentialPlace::Basic => kennel_proxy::Place::Basic,
        CredentialPlace::Query { param } => kennel_proxy::Place::Query {
            param: param.clone(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_secrets_get_their_command_as_refresh() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = crate::secrets::SecretStore::open_file(dir.path());
        store.set("STORED", "a-value").expect("set");
        store
            .set_command("FROM_GH", "gh auth token")
            .expect("set command");
        assert_eq!(
            refresh_command(&store, "FROM_GH").expect("list"),
            Some(vec!["sh".into(), "-c".into(), "gh auth token".into()])
        );
        assert_eq!(refresh_command(&store, "STORED").expect("list"), None);
        assert_eq!(refresh_command(&store, "MISSING").expect("list"), None);
    }
}
