//! The agent catalog: built-in entries (from `catalog/builtin.toml`) with the
//! user's `[agents.NAME]` tables merged over them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::AgentOverride;
use crate::credentials::{CredentialBinding, OAuthBinding};

/// `catalog/builtin.toml`, parsed at build time (see `build.rs`).
const BUILTIN: &str = include_str!(concat!(env!("OUT_DIR"), "/builtin-catalog.json"));

/// What the agent's image needs besides the base layer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Runtime {
    /// Nothing beyond the base layer.
    #[default]
    None,
    /// Node.js 22 with npm.
    Node,
    /// Python 3 in a virtualenv at /opt/kennel/python.
    Python,
    /// Only curl and a shell, for vendor install scripts.
    Native,
}

impl Runtime {
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::None => "none",
            Runtime::Node => "node",
            Runtime::Python => "python",
            Runtime::Native => "native",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSpec {
    #[serde(default, skip_deserializing)]
    pub name: String,
    pub description: String,
    pub command: Vec<String>,
    /// Flags that switch off the agent's own permission prompts.
    #[serde(default)]
    pub yolo: Vec<String>,
    /// Arguments that continue the agent's most recent conversation in the
    /// working directory; added after `yolo` by `--resume`. Empty: the agent
    /// has no such flag and resumes only through its kept home.
    #[serde(default)]
    pub resume: Vec<String>,
    #[serde(default)]
    pub runtime: Runtime,
    /// Shell script run as root while building the agent's image.
    #[serde(default)]
    pub install: String,
    /// Paths (under `~`) where the agent keeps config, login and history.
    #[serde(default)]
    pub state: Vec<String>,
    /// The agent's login: files (under `~`) that carry over from one
    /// repository's agent home to every other's, through kennel's login
    /// store (see `logins`). Nothing else of a home does. Regular files
    /// only, at most 1 MiB each; settings, hooks or anything that runs must
    /// never be listed here.
    #[serde(default)]
    pub login: Vec<String>,
    /// Variables passed from the host when set (credentials, settings).
    #[serde(default)]
    pub env: Vec<String>,
    /// Variables the agent always gets, with these values: switches that
    /// keep it from reaching for what the sandbox refuses anyway (update
    /// checks, downloads of metadata it has a copy of). `-e` and
    /// `defaults.env` override them.
    #[serde(default)]
    pub set_env: BTreeMap<String, String>,
    /// Hosts the agent needs to reach.
    #[serde(default)]
    pub domains: Vec<String>,
    /// Hosts the agent reaches for that it does not need, and what for:
    /// kennel keeps refusing them, and `kennel net log` says so beside each
    /// refusal.
    #[serde(default)]
    pub refused_hosts: BTreeMap<String, String>,
    /// For `shell`: the user's arguments replace the command.
    #[serde(default)]
    pub command_from_args: bool,
    /// Arguments that make the command print its version and exit; every
    /// agent image is built with a last step that runs the command with
    /// them, so that a broken install fails the build rather than the first
    /// run. Empty: only check that the command is on PATH.
    #[serde(default = "default_version_args")]
    pub version: Vec<String>,
    /// `Name <email>` for the agent's commits when `git_identity = "agent"`;
    /// empty: `<agent> (kennel) <<agent>@kennel.invalid>`.
    #[serde(default)]
    pub git_author: String,
    /// Why the agent may not install or start everywhere (e.g. it installs
    /// only from its vendor's site); shown by `kennel agents` and with a
    /// failed build. Empty when it installs from a package registry.
    #[serde(default)]
    pub caveat: String,
    /// The vendor page the facts were checked against.
    #[serde(default)]
    pub docs: String,
    /// Fields that could not be confirmed from vendor material.
    #[serde(default)]
    pub unverified: Vec<String>,
    /// Where the entry comes from: `built-in`, `config`, or `built-in+config`.
    #[serde(default, skip_deserializing)]
    pub source: String,
    /// The built-in bindings of the variables in `env` that are brokered
    /// credentials (filled from the catalog's `[credentials]` table).
    #[serde(
        default,
        skip_deserializing,
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub credentials: BTreeMap<String, CredentialBinding>,
    /// The agent's subscription login, brokered (filled from the catalog's
    /// `[oauth]` table): `kennel login` works for it.
    #[serde(default, skip_deserializing, skip_serializing_if = "Option::is_none")]
    pub oauth: Option<OAuthBinding>,
}

fn default_version_args() -> Vec<String> {
    vec!["--version".to_string()]
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("the built-in catalog is invalid: {0}")]
    Builtin(String),
    #[error("agent `{name}` from your config has no `command`")]
    MissingCommand { name: String },
    #[error("agent `{name}`: {message}")]
    Invalid { name: String, message: String },
    #[error("unknown agent `{name}`")]
    Unknown {
        name: String,
        suggestions: Vec<String>,
    },
}

impl CatalogError {
    pub fn hint(&self) -> Option<String> {
        match self {
            CatalogError::MissingCommand { name } => {
                Some(format!("add `command = [\"...\"]` under [agents.{name}] in your config"))
            }
            CatalogError::Unknown { suggestions, .. } if !suggestions.is_empty() => Some(format!(
                "did you mean {}? `kennel agents` lists every agent",
                suggestions.iter().map(|name| format!("`{name}`")).collect::<Vec<_>>().join(" or ")
            )),
            CatalogError::Unknown { .. } => {
                Some("`kennel agents` lists every agent; add your own under [agents.NAME] in your config".into())
            }
            _ => None,
        }
    }

    /// Unknown agents are a usage error (exit 2); the rest are kennel's own.
    pub fn is_usage(&self) -> bool {
        matches!(self, CatalogError::Unknown { .. })
    }
}

#[derive(Debug, Clone)]
pub struct Catalog {
    agents: BTreeMap<String, AgentSpec>,
    credentials: BTreeMap<String, CredentialBinding>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BuiltinFile {
    agents: BTreeMap<String, AgentSpec>,
    #[serde(default)]
    credentials: BTreeMap<String, CredentialBinding>,
    #[serde(default)]
    oauth: BTreeMap<String, OAuthBinding>,
}

impl Catalog {
    pub fn builtin() -> Result<Catalog, CatalogError> {
        let file: BuiltinFile = serde_json::from_str(BUILTIN)
            .map_err(|error| CatalogError::Builtin(error.to_string()))?;
        for (name, binding) in &file.credentials {
            binding.check(name).map_err(|message| {
                CatalogError::Builtin(format!("[credentials.{name}]: {message}"))
            })?;
        }
        for (agent, login) in &file.oauth {
            if !file.agents.contains_key(agent) {
                return Err(CatalogError::Builtin(format!(
                    "[oauth.{agent}]: no such agent"
                )));
            }
            login.check(agent).map_err(CatalogError::Builtin)?;
        }
        let mut oauth = file.oauth;
        let agents = file
            .agents
            .into_iter()
            .map(|(name, mut spec)| {
                spec.name = name.clone();
                spec.source = "built-in".into();
                spec.credentials = bindings_for(&spec.env, &file.credentials);
                spec.oauth = oauth.remove(&name);
                (name, spec)
            })
            .collect();
        Ok(Catalog {
            agents,
            credentials: file.credentials,
        })
    }

    /// The built-in binding of variable `name`, if it is a brokered
    /// credential.
    pub fn credential(&self, name: &str) -> Option<&CredentialBinding> {
        self.credentials.get(name)
    }

    /// The built-in catalog with the user's agent tables applied.
    pub fn with_overrides(
        overrides: &BTreeMap<String, AgentOverride>,
    ) -> Result<Catalog, CatalogError> {
        let mut catalog = Catalog::builtin()?;
        for (name, over) in overrides {
            if !valid_name(name) {
                return Err(CatalogError::Invalid {
                    name: name.clone(),
                    message: "agent names may use only lowercase letters, digits and '-'".into(),
                });
            }
            let spec = match catalog.agents.remove(name) {
                Some(base) => apply(base, over, "built-in+config"),
                None => {
                    let Some(command) = over.command.clone() else {
                        return Err(CatalogError::MissingCommand { name: name.clone() });
                    };
                    let blank = AgentSpec {
                        name: name.clone(),
                        description: format!("{name} (from your config)"),
                        command,
                        yolo: Vec::new(),
                        resume: Vec::new(),
                        runtime: Runtime::None,
                        install: String::new(),
                        state: Vec::new(),
                        login: Vec::new(),
                        env: Vec::new(),
                        set_env: BTreeMap::new(),
                        refused_hosts: BTreeMap::new(),
                        domains: Vec::new(),
                        command_from_args: false,
                        // Your own agent may have no --version: only its
                        // presence is checked unless `version` says how.
                        version: Vec::new(),
                        git_author: String::new(),
                        caveat: String::new(),
                        docs: String::new(),
                        unverified: Vec::new(),
                        source: String::new(),
                        credentials: BTreeMap::new(),
                        oauth: None,
                    };
                    apply(blank, over, "config")
                }
            };
            if spec.command.is_empty() && !spec.command_from_args {
                return Err(CatalogError::MissingCommand { name: name.clone() });
            }
            if let Some(bad) = spec
                .login
                .iter()
                .find(|path| crate::logins::login_relative(path).is_none())
            {
                return Err(CatalogError::Invalid {
                    name: name.clone(),
                    message: format!(
                        "login path `{bad}` must be a file under ~/ (like ~/.myagent/auth.json), without `.` or `..`"
                    ),
                });
            }
            if let Some(bad) = spec
                .set_env
                .keys()
                .find(|variable| !crate::settings::valid_env_name(variable))
            {
                return Err(CatalogError::Invalid {
                    name: name.clone(),
                    message: format!(
                        "set_env: `{bad}` is not a variable name (letters, digits and `_`, not starting with a digit)"
                    ),
                });
            }
            if let Some(oauth) = &spec.oauth {
                oauth.check(name).map_err(|message| CatalogError::Invalid {
                    name: name.clone(),
                    message,
                })?;
            }
            let mut spec = spec;
            spec.credentials = bindings_for(&spec.env, &catalog.credentials);
            catalog.agents.insert(name.clone(), spec);
        }
        Ok(catalog)
    }

    pub fn get(&self, name: &str) -> Result<&AgentSpec, CatalogError> {
        self.agents.get(name).ok_or_else(|| CatalogError::Unknown {
            name: name.to_string(),
            suggestions: self.closest(name),
        })
    }

    pub fn agents(&self) -> impl Iterator<Item = &AgentSpec> {
        self.agents.values()
    }

    fn closest(&self, name: &str) -> Vec<String> {
        let mut scored: Vec<(f64, &String)> = self
            .agents
            .keys()
            .map(|candidate| (strsim::jaro_winkler(name, candidate), candidate))
            .filter(|(score, candidate)| *score > 0.7 || candidate.starts_with(name))
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        scored
            .into_iter()
            .take(3)
            .map(|(_, candidate)| candidate.clone())
            .collect()
    }
}

/// The bindings of the variables in `env` that the catalog brokers.
fn bindings_for(
    env: &[String],
    credentials: &BTreeMap<String, CredentialBinding>,
) -> BTreeMap<String, CredentialBinding> {
    env.iter()
        .filter_map(|variable| {
            credentials
                .get(variable)
                .map(|binding| (variable.clone(), binding.clone()))
        })
        .collect()
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
}

fn apply(mut spec: AgentSpec, over: &AgentOverride, source: &str) -> AgentSpec {
    if let Some(value) = &over.description {
        spec.description = value.clone();
    }
    if let Some(value) = &over.command {
        spec.command = value.clone();
    }
    if let Some(value) = &over.yolo {
        spec.yolo = value.clone();
    }
    if let Some(value) = &over.resume {
        spec.resume = value.clone();
    }
    if let Some(value) = over.runtime {
        spec.runtime = value;
    }
    if let Some(value) = &over.install {
        spec.install = value.clone();
    }
    if let Some(value) = &over.state {
        spec.state = value.clone();
    }
    if let Some(value) = &over.login {
        spec.login = value.clone();
    }
    if let Some(value) = &over.env {
        spec.env = value.clone();
    }
    if let Some(value) = &over.domains {
        spec.domains = value.clone();
    }
    if let Some(value) = over.command_from_args {
        spec.command_from_args = value;
    }
    if let Some(value) = &over.version {
        spec.version = value.clone();
    }
    if let Some(value) = &over.set_env {
        spec.set_env = value.clone();
    }
    if let Some(value) = &over.refused_hosts {
        spec.refused_hosts = value.clone();
    }
    if let Some(value) = &over.oauth {
        spec.oauth = Some(value.clone());
    }
    if let Some(value) = &over.git_author {
        spec.git_author = value.clone();
    }
    spec.source = source.to_string();
    spec
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_paths_are_files_under_home() {
        let catalog = Catalog::builtin().expect("builtin parses");
        for agent in catalog.agents() {
            for path in &agent.login {
                assert!(
                    crate::logins::login_relative(path).is_some(),
                    "{}: login {path}",
                    agent.name
                );
            }
        }
        assert_eq!(
            catalog.get("claude").unwrap().login,
            ["~/.claude/.credentials.json"]
        );
        let bad: AgentOverride = toml::from_str(r#"login = ["~/../.ssh/id_ed25519"]"#).unwrap();
        let overrides = BTreeMap::from([("claude".to_string(), bad)]);
        assert!(matches!(
            Catalog::with_overrides(&overrides),
            Err(CatalogError::Invalid { .. })
        ));
    }

    #[test]
    fn builtin_catalog_parses_and_has_shell() {
        let catalog = Catalog::builtin().expect("builtin parses");
        let shell = catalog.get("shell").expect("shell");
        assert!(shell.command_from_args);
        assert_eq!(shell.runtime, Runtime::None);
    }

    #[test]
    fn every_builtin_agent_is_complete() {
        let catalog = Catalog::builtin().expect("builtin parses");
        for agent in catalog.agents().filter(|agent| agent.name != "shell") {
            assert!(!agent.command.is_empty(), "{} has no command", agent.name);
            assert!(
                !agent.install.is_empty(),
                "{} has no install recipe",
                agent.name
            );
            assert!(
                !agent.description.is_empty(),
                "{} has no description",
                agent.name
            );
            assert_ne!(
                agent.runtime,
                Runtime::None,
                "{} needs a runtime",
                agent.name
            );
        }
    }

    #[test]
    fn unknown_agent_suggests_close_names() {
        let catalog = Catalog::builtin().expect("builtin parses");
        match catalog.get("claud") {
            Err(CatalogError::Unknown { suggestions, .. }) => {
                assert_eq!(suggestions.first().map(String::as_str), Some("claude"))
            }
            other => panic!("expected Unknown, got {other:?}"),
        }
    }

    #[test]
    fn config_can_add_and_override_agents() {
        let mut overrides = BTreeMap::new();
        overrides.insert(
            "hello".to_string(),
            AgentOverride {
                command: Some(vec!["echo".into(), "hi".into()]),
                ..Default::default()
            },
        );
        overrides.insert(
            "claude".to_string(),
            AgentOverride {
                yolo: Some(vec![]),
                ..Default::default()
            },
        );
        let catalog = Catalog::with_overrides(&overrides).expect("valid");
        assert_eq!(
            catalog.get("hello").expect("hello").command,
            vec!["echo", "hi"]
        );
        assert_eq!(catalog.get("hello").expect("hello").source, "config");
        let claude = catalog.get("claude").expect("claude");
        assert!(claude.yolo.is_empty());
        assert_eq!(claude.source, "built-in+config");
        assert!(!claude.install.is_empty(), "fields not overridden are kept");
    }

    #[test]
    fn builtin_resume_arguments() {
        let catalog = Catalog::builtin().expect("builtin parses");
        let resume = |name: &str| catalog.get(name).expect(name).resume.clone();
        assert_eq!(resume("claude"), vec!["--continue"]);
        assert_eq!(resume("codex"), vec!["resume", "--last"]);
        assert!(resume("shell").is_empty());
        assert!(resume("amp").is_empty(), "no documented flag");
        for agent in catalog.agents() {
            assert!(
                agent.resume.iter().all(|arg| !arg.trim().is_empty()),
                "{} has a blank resume argument",
                agent.name
            );
        }
    }

    #[test]
    fn config_resume_replaces_builtin_and_defaults_to_empty() {
        // Through serde, as a user's `[agents.NAME]` table arrives.
        let claude: AgentOverride =
            toml::from_str(r#"resume = ["--resume", "abc"]"#).expect("valid table");
        let mine: AgentOverride = toml::from_str(r#"command = ["mine"]"#).expect("valid table");
        let mut overrides = BTreeMap::new();
        overrides.insert("claude".to_string(), claude);
        overrides.insert("mine".to_string(), mine);
        let catalog = Catalog::with_overrides(&overrides).expect("valid");
        let claude = catalog.get("claude").expect("claude");
        assert_eq!(claude.resume, vec!["--resume", "abc"]);
        assert_eq!(claude.yolo, vec!["--dangerously-skip-permissions"]);
        assert!(catalog.get("mine").expect("mine").resume.is_empty());
        assert_eq!(
            catalog.get("codex").expect("codex").resume,
            vec!["resume", "--last"],
            "agents without an override keep theirs"
        );
    }

    #[test]
    fn version_arguments_default_and_override() {
        let asked: AgentOverride = toml::from_str(
            r#"command = ["mine"]
version = ["version", "--short"]"#,
        )
        .expect("valid table");
        let plain: AgentOverride = toml::from_str(r#"command = ["other"]"#).expect("valid table");
        let quiet_claude: AgentOverride = toml::from_str("version = []").expect("valid table");
        let mut overrides = BTreeMap::new();
        overrides.insert("mine".to_string(), asked);
        overrides.insert("other".to_string(), plain);
        overrides.insert("claude".to_string(), quiet_claude);
        let catalog = Catalog::with_overrides(&overrides).expect("valid");
        assert_eq!(
            catalog.get("mine").expect("mine").version,
            vec!["version", "--short"]
        );
        assert!(
            catalog.get("other").expect("other").version.is_empty(),
            "your own agents are only checked for presence unless they say how"
        );
        assert!(catalog.get("claude").expect("claude").version.is_empty());
        assert_eq!(
            catalog.get("codex").expect("codex").version,
            vec!["--version"]
        );
    }

    #[test]
    fn agents_that_install_from_a_vendor_site_only_say_so() {
        let catalog = Catalog::builtin().expect("builtin parses");
        // What a recipe that installs from a package registry contains.
        const REGISTRY_ROUTES: &[&str] = &[
            "npm install",
            "pip install",
            "go install",
            "cargo install",
            "https://registry.npmjs.org/",
        ];
        for agent in catalog.agents() {
            let from_registry = REGISTRY_ROUTES
                .iter()
                .any(|route| agent.install.contains(route));
            if !agent.install.is_empty() && !from_registry {
                assert!(
                    !agent.caveat.is_empty(),
                    "{}: an agent that installs only from its vendor's site needs a caveat",
                    agent.name
                );
            }
        }
        assert!(
            !catalog
                .get("cursor-agent")
                .expect("cursor")
                .caveat
                .is_empty()
        );
        assert!(catalog.get("goose").expect("goose").caveat.is_empty());
    }

    /// `curl URL | sh` succeeds with an empty script when the download
    /// fails, and the recipe goes on as if it had installed something.
    #[test]
    fn no_recipe_pipes_a_download_into_a_shell() {
        let catalog = Catalog::builtin().expect("builtin parses");
        for agent in catalog.agents() {
            for line in agent.install.lines() {
                let piped = line.split('|').skip(1).any(|stage| {
                    let program = stage.split_whitespace().find(|word| !word.contains('='));
                    matches!(program, Some("sh" | "bash"))
                });
                assert!(!piped, "{}: {line}", agent.name);
            }
        }
    }

    #[test]
    fn config_agent_without_command_is_refused() {
        let mut overrides = BTreeMap::new();
        overrides.insert("nothing".to_string(), AgentOverride::default());
        assert!(matches!(
            Catalog::with_overrides(&overrides),
            Err(CatalogError::MissingCommand { .. })
        ));
    }
}
