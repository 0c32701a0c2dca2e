//! The project's own image from its devcontainer.json: a Dockerfile
//! (`build`) and features, which kennel builds itself in a workbench
//! (see `kennel_engine::Workbench`), under the tag
//! `kennel/devcontainer:<hash>`. The hash covers the Dockerfile, its
//! arguments and target, every file of the build context a `COPY` or
//! `ADD` reads, and every feature's files and options: an unchanged
//! devcontainer never rebuilds, and any change does.
//!
//! Everything here comes from the repository. Its files are read with
//! [`kennel_core::tree`] (no link followed, links copied as links, the
//! read bounded), and paths that leave the context are refused.

use std::collections::BTreeMap;
use std::path::{Component, Path};

use kennel_core::devcontainer::{Devcontainer, FeatureRequest};
use kennel_core::tree::{Tree, TreeEntry, TreeError, TreeKind, TreeLimits};
use sha2::{Digest, Sha256};

use crate::dockerfile::{Dockerfile, DockerfileError};
use crate::{LABEL_LAYER, LABEL_MANAGED, LABEL_RECIPE};

const FORMAT: &str = "kennel-devimage-1";

/// What the project's image starts from.
#[derive(Debug, Clone)]
pub enum DevBase {
    /// devcontainer.json's `image`.
    Image(String),
    /// `build`: the Dockerfile, its arguments and the stage built.
    Dockerfile {
        /// Workspace-relative, for messages.
        file: String,
        parsed: Dockerfile,
        args: BTreeMap<String, String>,
        target: usize,
    },
}

/// One feature, ready to install.
#[derive(Debug, Clone)]
pub struct Feature {
    pub id: String,
    /// What devcontainer.json asked for.
    pub request: FeatureRequest,
    /// From a registry: fetched when the image is built (its files are
    /// empty until then; the image's hash covers its reference).
    pub remote: bool,
    /// Its files (`devcontainer-feature.json`, `install.sh`, …).
    pub files: Vec<TreeEntry>,
    /// Its options as `install.sh` reads them (`VERSION=1.22`).
    pub env: BTreeMap<String, String>,
    /// Its `containerEnv`: variables of the image.
    pub container_env: Vec<(String, String)>,
}

/// The project's image, as kennel builds it.
#[derive(Debug, Clone)]
pub struct DevImage {
    pub tag: String,
    pub hash: String,
    /// The devcontainer.json (for messages and labels).
    pub source: String,
    pub base: DevBase,
    /// Each `COPY`/`ADD` source of the build context, with what it
    /// matched: (the match's context-relative path, its entries).
    pub context: BTreeMap<String, Vec<(String, Vec<TreeEntry>)>>,
    pub features: Vec<Feature>,
    pub labels: BTreeMap<String, String>,
    /// What of the features kennel ignored (named in a warning).
    pub ignored: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum DevImageError {
    #[error("{0}")]
    Dockerfile(#[from] DockerfileError),
    #[error("{file}: {source}")]
    Read { file: String, source: TreeError },
    #[error("{file}: {reason}")]
    Invalid { file: String, reason: String },
}

impl DevImageError {
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            DevImageError::Dockerfile(_) => {
                "fix the Dockerfile, or run with --devcontainer none to use kennel's own image".into()
            }
            DevImageError::Read { .. } => {
                "kennel reads a build context and features without following links; replace the link with the file, or run with --devcontainer none".into()
            }
            DevImageError::Invalid { .. } => "run with --devcontainer none to use kennel's own image".into(),
        })
    }
}

impl DevImage {
    /// The project's image for `devcontainer` in the workspace `root`, or
    /// `None` when it only names an image (kennel builds on that image
    /// directly). A feature from a registry is named by its reference
    /// here and fetched when the image is built.
    pub fn load(
        root: &Path,
        devcontainer: &Devcontainer,
    ) -> Result<Option<DevImage>, DevImageError> {
        if devcontainer.build.is_none() && devcontainer.features.is_empty() {
            return Ok(None);
        }
        let relative_config = devcontainer
            .path
            .strip_prefix(root)
            .unwrap_or(&devcontainer.path)
            .to_path_buf();
        let config_dir = relative_config
            .parent()
            .unwrap_or(Path::new(""))
            .to_path_buf();
        let source = relative_config.display().to_string();
        let invalid = |file: &str, reason: String| DevImageError::Invalid {
            file: file.to_string(),
            reason,
        };
        let mut tree = Tree::open(root, TreeLimits::default()).map_err(|source_error| {
            DevImageError::Read {
                file: root.display().to_string(),
                source: source_error,
            }
        })?;
        let mut hasher = Sha256::new();
        let mut feed = |part: &[u8]| {
            hasher.update((part.len() as u64).to_le_bytes());
            hasher.update(part);
        };
        feed(FORMAT.as_bytes());
        let mut context = BTreeMap::new();
        let base = match (&devcontainer.build, &devcontainer.image) {
            (Some(build), _) => {
                let file = inside(&config_dir, &build.dockerfile).ok_or_else(|| {
                    invalid(
                        &source,
                        format!(
                            "`build.dockerfile` {} leaves the workspace",
                            build.dockerfile
                        ),
                    )
                })?;
                let context_dir = inside(&config_dir, &build.context).ok_or_else(|| {
                    invalid(
                        &source,
                        format!("`build.context` {} leaves the workspace", build.context),
                    )
                })?;
                let text = read_file(&mut tree, &file)?;
                let parsed = Dockerfile::parse(&file, &text)?;
                let target = parsed
                    .target_index(build.target.as_deref())
                    .ok_or_else(|| {
                        invalid(
                            &source,
                            format!(
                                "`build.target` {} is not a stage of {file}",
                                build.target.as_deref().unwrap_or_default()
                            ),
                        )
                    })?;
                feed(b"dockerfile");
                feed(text.as_bytes());
                feed(format!("{target}").as_bytes());
                for (name, value) in &build.args {
                    feed(name.as_bytes());
                    feed(value.as_bytes());
                }
                let ignore = DockerIgnore::read(&mut tree, &context_dir, &file)?;
                for pattern in parsed.context_sources(target) {
                    let matched = resolve(&mut tree, &context_dir, &pattern, &ignore)?;
                    feed(b"source");
                    feed(pattern.as_bytes());
                    for (path, entries) in &matched {
                        feed(path.as_bytes());
                        for entry in entries {
                            feed_entry(&mut feed, entry);
                        }
                    }
                    context.insert(pattern, matched);
                }
                DevBase::Dockerfile {
                    file,
                    parsed,
                    args: build.args.clone(),
                    target,
                }
            }
            (None, Some(image)) => {
                feed(b"image");
                feed(image.as_bytes());
                DevBase::Image(image.clone())
            }
            (None, None) => {
                return Err(invalid(
                    &source,
                    "features need an `image` or a `build` to install onto".into(),
                ));
            }
        };
        let mut features = Vec::new();
        let mut ignored = Vec::new();
        for request in &devcontainer.features {
            let feature = if request.is_local() {
                let dir = inside(&config_dir, &request.id).ok_or_else(|| {
                    invalid(
                        &source,
                        format!("the feature {} leaves the workspace", request.id),
                    )
                })?;
                let files = tree
                    .read(&dir)
                    .map_err(|error| DevImageError::Read {
                        file: dir.clone(),
                        source: error,
                    })?
                    .ok_or_else(|| {
                        invalid(&dir, format!("the feature {} is not there", request.id))
                    })?;
                Feature::from_files(request, files, &mut ignored)
                    .map_err(|reason| invalid(&source, reason))?
            } else {
                Feature {
                    id: request.id.clone(),
                    request: request.clone(),
                    remote: true,
                    files: Vec::new(),
                    env: request
                        .options
                        .iter()
                        .map(|(name, value)| (option_name(name), value.clone()))
                        .collect(),
                    container_env: Vec::new(),
                }
            };
            feed(b"feature");
            feed(feature.id.as_bytes());
            for (name, value) in &feature.env {
                feed(name.as_bytes());
                feed(value.as_bytes());
            }
            for entry in &feature.files {
                feed_entry(&mut feed, entry);
            }
            features.push(feature);
        }
        let hash = hex::encode(hasher.finalize());
        let mut labels = BTreeMap::new();
        labels.insert(LABEL_MANAGED.to_string(), "true".to_string());
        labels.insert(LABEL_LAYER.to_string(), "devcontainer".to_string());
        labels.insert(LABEL_RECIPE.to_string(), hash.clone());
        labels.insert(crate::LABEL_PROJECT.to_string(), root.display().to_string());
        Ok(Some(DevImage {
            tag: format!("kennel/devcontainer:{}", &hash[..12]),
            hash,
            source,
            base,
            context,
            features,
            labels,
            ignored,
        }))
    }
}

fn feed_entry(feed: &mut impl FnMut(&[u8]), entry: &TreeEntry) {
    feed(entry.path.as_bytes());
    feed(&entry.mode.to_le_bytes());
    match &entry.kind {
        TreeKind::File(content) => {
            feed(b"f");
            feed(content);
        }
        TreeKind::Symlink(target) => {
            feed(b"l");
            feed(target.as_bytes());
        }
        TreeKind::Dir => feed(b"d"),
    }
}

/// `relative` (from devcontainer.json's `dir`) as a workspace-relative
/// path, if it stays in the workspace.
fn inside(dir: &Path, relative: &str) -> Option<String> {
    let mut parts: Vec<String> = dir
        .components()
        .filter_map(|part| match part {
            Component::Normal(name) => Some(name.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect();
    for part in Path::new(relative).components() {
        match part {
            Component::Normal(name) => parts.push(name.to_string_lossy().into_owned()),
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            _ => return None,
        }
    }
    Some(parts.join("/"))
}

fn read_file(tree: &mut Tree, file: &str) -> Result<String, DevImageError> {
    let entries = tree
        .read(file)
        .map_err(|source| DevImageError::Read {
            file: file.to_string(),
            source,
        })?
        .ok_or_else(|| DevImageError::Invalid {
            file: file.to_string(),
            reason: "it is not there".into(),
        })?;
    match entries.into_iter().next().map(|entry| entry.kind) {
        Some(TreeKind::File(bytes)) => {
            String::from_utf8(bytes).map_err(|_| DevImageError::Invalid {
                file: file.to_string(),
                reason: "it is not UTF-8 text".into(),
            })
        }
        _ => Err(DevImageError::Invalid {
            file: file.to_string(),
            reason: "it is not a regular file".into(),
        }),
    }
}

/// `.dockerignore` patterns (the Dockerfile's own `<Dockerfile>.dockerignore`
/// first, else the context's).
#[derive(Debug, Default)]
struct DockerIgnore {
    /// (negated, pattern components).
    patterns: Vec<(bool, Vec<String>)>,
}

impl DockerIgnore {
    fn read(
        tree: &mut Tree,
        context: &str,
        dockerfile: &str,
    ) -> Result<DockerIgnore, DevImageError> {
        for file in [
            format!("{dockerfile}.dockerignore"),
            join(context, ".dockerignore"),
        ] {
            let found = tree.read(&file).map_err(|source| DevImageError::Read {
                file: file.clone(),
                source,
            })?;
            if let Some(entries) = found {
                let text = match entries.into_iter().next().map(|entry| entry.kind) {
                    Some(TreeKind::File(bytes)) => String::from_utf8_lossy(&bytes).into_owned(),
                    _ => continue,
                };
                let mut patterns = Vec::new();
                for line in text.lines() {
                    let line = line.trim();
                    if line.is_empty() || line.starts_with('#') {
                        continue;
                    }
                    let (negated, pattern) = match line.strip_prefix('!') {
                        Some(rest) => (true, rest.trim()),
                        None => (false, line),
                    };
                    let parts: Vec<String> = pattern
                        .split('/')
                        .filter(|part| !part.is_empty() && *part != ".")
                        .map(str::to_string)
                        .collect();
                    if !parts.is_empty() {
                        patterns.push((negated, parts));
                    }
                }
                return Ok(DockerIgnore { patterns });
            }
        }
        Ok(DockerIgnore::default())
    }

    /// Is the context path `path` left out? A pattern that matches the
    /// path or one of its parents counts; the last that counts decides.
    fn excludes(&self, path: &str) -> bool {
        let parts: Vec<&str> = path.split('/').filter(|part| !part.is_empty()).collect();
        let mut excluded = false;
        for (negated, pattern) in &self.patterns {
            let hit = (1..=parts.len()).any(|end| path_matches(pattern, &parts[..end]));
            if hit {
                excluded = !negated;
            }
        }
        excluded
    }
}

/// A `/`-split pattern (`*`, `?`, `**`) against path components.
fn path_matches(pattern: &[String], parts: &[&str]) -> bool {
    match pattern.split_first() {
        None => parts.is_empty(),
        Some((first, rest)) if first == "**" => {
            (0..=parts.len()).any(|skip| path_matches(rest, &parts[skip..]))
        }
        Some((first, rest)) => match parts.split_first() {
            Some((part, others)) => wildcard(first, part) && path_matches(rest, others),
            None => false,
        },
    }
}

/// `*` and `?` in one component.
pub(crate) fn wildcard(pattern: &str, text: &str) -> bool {
    let (pattern, text): (Vec<char>, Vec<char>) =
        (pattern.chars().collect(), text.chars().collect());
    let (mut p, mut t, mut star, mut mark) = (0, 0, None, 0);
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == '?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == '*' {
            star = Some(p);
            mark = t;
            p += 1;
        } else if let Some(at) = star {
            p = at + 1;
            mark += 1;
            t = mark;
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|c| *c == '*')
}

fn join(dir: &str, name: &str) -> String {
    match dir {
        "" => name.to_string(),
        dir => format!("{dir}/{name}"),
    }
}

/// What the `COPY` source `pattern` matches in the context `context`:
/// each match's context-relative path and its entries (a directory's
/// whole content), without what `.dockerignore` leaves out.
fn resolve(
    tree: &mut Tree,
    context: &str,
    pattern: &str,
    ignore: &DockerIgnore,
) -> Result<Vec<(String, Vec<TreeEntry>)>, DevImageError> {
    let outside = || DevImageError::Invalid {
        file: pattern.to_string(),
        reason: "a COPY source must stay in the build context".into(),
    };
    let mut parts = Vec::new();
    for part in Path::new(pattern.trim_start_matches('/')).components() {
        match part {
            Component::Normal(name) => parts.push(name.to_string_lossy().into_owned()),
            Component::CurDir => {}
            _ => return Err(outside()),
        }
    }
    // Expand wildcards one component at a time.
    let mut candidates = vec![String::new()];
    for part in &parts {
        let mut next = Vec::new();
        for dir in candidates {
            if part.contains(['*', '?', '[']) {
                let listed = tree
                    .list(&join(context, &dir))
                    .map_err(|source| DevImageError::Read {
                        file: join(context, &dir),
                        source,
                    })?
                    .unwrap_or_default();
                next.extend(
                    listed
                        .into_iter()
                        .filter(|name| wildcard(part, name))
                        .map(|name| join(&dir, &name)),
                );
            } else {
                next.push(join(&dir, part));
            }
        }
        candidates = next;
    }
    let mut out = Vec::new();
    for path in candidates {
        if !path.is_empty() && ignore.excludes(&path) {
            continue;
        }
        let full = join(context, &path);
        let Some(entries) = tree.read(&full).map_err(|source| DevImageError::Read {
            file: full.clone(),
            source,
        })?
        else {
            continue;
        };
        let kept: Vec<TreeEntry> = entries
            .into_iter()
            .filter(|entry| entry.path.is_empty() || !ignore.excludes(&join(&path, &entry.path)))
            .collect();
        out.push((path, kept));
    }
    if out.is_empty() {
        return Err(DevImageError::Invalid {
            file: join(context, pattern),
            reason: "COPY or ADD names nothing in the build context".into(),
        });
    }
    Ok(out)
}

impl Feature {
    /// A feature's install from its files: its options as variables (the
    /// defaults of its devcontainer-feature.json, then what devcontainer.json
    /// gives), its `containerEnv`, and what of it kennel ignores.
    pub fn from_files(
        request: &FeatureRequest,
        files: Vec<TreeEntry>,
        ignored: &mut Vec<String>,
    ) -> Result<Feature, String> {
        let manifest = files
            .iter()
            .find(|entry| entry.path == "devcontainer-feature.json")
            .and_then(|entry| match &entry.kind {
                TreeKind::File(bytes) => Some(bytes.clone()),
                _ => None,
            })
            .ok_or_else(|| {
                format!(
                    "the feature {} has no devcontainer-feature.json",
                    request.id
                )
            })?;
        if !files
            .iter()
            .any(|entry| entry.path == "install.sh" && matches!(entry.kind, TreeKind::File(_)))
        {
            return Err(format!("the feature {} has no install.sh", request.id));
        }
        let text = String::from_utf8_lossy(&manifest);
        let manifest: serde_json::Value = jsonc_value(&text).map_err(|reason| {
            format!(
                "the feature {}: devcontainer-feature.json: {reason}",
                request.id
            )
        })?;
        let mut env = BTreeMap::new();
        if let Some(serde_json::Value::Object(options)) = manifest.get("options") {
            for (name, option) in options {
                if let Some(default) = option.get("default") {
                    let value = match default {
                        serde_json::Value::String(text) => text.clone(),
                        other => other.to_string(),
                    };
                    env.insert(option_name(name), value);
                }
            }
        }
        for (name, value) in &request.options {
            env.insert(option_name(name), value.clone());
        }
        let mut container_env = Vec::new();
        if let Some(serde_json::Value::Object(vars)) = manifest.get("containerEnv") {
            for (name, value) in vars {
                match value.as_str() {
                    Some(value) if kennel_core::settings::valid_env_name(name) => {
                        container_env.push((name.clone(), value.to_string()));
                    }
                    _ => ignored.push(format!("{}: containerEnv.{name}", request.id)),
                }
            }
        }
        for key in [
            "privileged",
            "capAdd",
            "securityOpt",
            "mounts",
            "init",
            "entrypoint",
            "onCreateCommand",
            "updateContentCommand",
            "postCreateCommand",
            "postStartCommand",
            "postAttachCommand",
        ] {
            if manifest.get(key).is_some() {
                ignored.push(format!("{}: {key}", request.id));
            }
        }
        Ok(Feature {
            id: request.id.clone(),
            request: request.clone(),
            remote: !request.is_local(),
            files,
            env,
            container_env,
        })
    }
}

fn jsonc_value(text: &str) -> Result<serde_json::Value, String> {
    serde_json::from_str(text).map_err(|error| error.to_string())
}

/// An option's variable name, as the spec makes it: anything but
/// letters, digits and `_` becomes `_`, a leading run of digits and `_`
/// becomes one `_`, and all is upper case.
pub fn option_name(name: &str) -> String {
    let replaced: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let trimmed = replaced.trim_start_matches(|c: char| c.is_ascii_digit() || c == '_');
    let prefix = if trimmed.len() != replaced.len() {
        "_"
    } else {
        ""
    };
    format!("{prefix}{trimmed}").to_ascii_uppercase()
}

/// Does any instruction of the stages built use `instruction`? (For tests.)
#[cfg(test)]
fn uses(image: &DevImage, check: impl Fn(&crate::dockerfile::Instruction) -> bool) -> bool {
    match &image.base {
        DevBase::Dockerfile { parsed, target, .. } => {
            parsed.stages[..=*target].iter().any(|stage| {
                stage
                    .instructions
                    .iter()
                    .any(|(_, instruction)| check(instruction))
            })
        }
        DevBase::Image(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn devcontainer(root: &Path, text: &str) -> Devcontainer {
        let path = root.join(".devcontainer/devcontainer.json");
        std::fs::create_dir_all(path.parent().expect("dir")).expect("mkdir");
        std::fs::write(&path, text).expect("write");
        kennel_core::devcontainer::parse(&path, text).expect("parse")
    }

    fn write(root: &Path, relative: &str, text: &str) {
        let path = root.join(relative);
        std::fs::create_dir_all(path.parent().expect("dir")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }

    #[test]
    fn the_tag_follows_the_dockerfile_the_context_and_the_features() {
        let dir = tempfile::tempdir().expect("dir");
        let root = dir.path();
        write(
            root,
            ".devcontainer/Dockerfile",
            "FROM base\nCOPY tools/ /opt/tools/\nCOPY *.txt /opt/\nRUN true\n",
        );
        write(root, ".devcontainer/tools/a.sh", "echo a");
        write(root, ".devcontainer/tools/skip.log", "noise");
        write(root, ".devcontainer/notes.txt", "n");
        write(root, ".devcontainer/.dockerignore", "**/*.log\n");
        write(
            root,
            ".devcontainer/features/hello/devcontainer-feature.json",
            r#"{ "id": "hello", "options": { "greeting": { "type": "string", "default": "hi" }, "loud-ness": { "type": "boolean", "default": false } }, "containerEnv": { "HELLO_HOME": "/opt/hello" }, "privileged": true }"#,
        );
        write(
            root,
            ".devcontainer/features/hello/install.sh",
            "echo $GREETING",
        );
        let config = devcontainer(
            root,
            r#"{ "build": { "dockerfile": "Dockerfile" }, "features": { "./features/hello": { "greeting": "hey" } } }"#,
        );
        let image = DevImage::load(root, &config).expect("load").expect("some");
        assert!(
            image.tag.starts_with("kennel/devcontainer:"),
            "{}",
            image.tag
        );
        let tools = &image.context["tools/"];
        let paths: Vec<&str> = tools[0].1.iter().map(|entry| entry.path.as_str()).collect();
        assert_eq!(paths, ["", "a.sh"], "the .dockerignore'd log is left out");
        assert_eq!(image.context["*.txt"][0].0, "notes.txt");
        let feature = &image.features[0];
        assert_eq!(feature.env["GREETING"], "hey");
        assert_eq!(feature.env["LOUD_NESS"], "false");
        assert_eq!(
            feature.container_env,
            [("HELLO_HOME".to_string(), "/opt/hello".to_string())]
        );
        assert!(
            image
                .ignored
                .iter()
                .any(|item| item.ends_with("privileged"))
        );
        assert!(uses(&image, |instruction| matches!(
            instruction,
            crate::dockerfile::Instruction::Run(_)
        )));
        // Unchanged: the same tag. A context file, the feature, the
        // Dockerfile: another.
        let again = DevImage::load(root, &config).expect("load").expect("some");
        assert_eq!(again.tag, image.tag);
        write(root, ".devcontainer/tools/skip.log", "ignored change");
        let ignored_change = DevImage::load(root, &config).expect("load").expect("some");
        assert_eq!(ignored_change.tag, image.tag);
        let mut tags = vec![image.tag.clone()];
        for (file, text) in [
            (".devcontainer/tools/a.sh", "echo b"),
            (".devcontainer/features/hello/install.sh", "echo changed"),
            (
                ".devcontainer/Dockerfile",
                "FROM base\nCOPY tools/ /opt/tools/\nCOPY *.txt /opt/\nRUN false\n",
            ),
        ] {
            write(root, file, text);
            let changed = DevImage::load(root, &config).expect("load").expect("some");
            assert!(!tags.contains(&changed.tag), "{file}");
            tags.push(changed.tag);
        }
    }

    #[test]
    fn nothing_leaves_the_workspace_or_follows_a_link() {
        let dir = tempfile::tempdir().expect("dir");
        let root = dir.path().join("repo");
        write(&dir.path().join("outside"), "secret", "host secret");
        write(
            &root,
            ".devcontainer/Dockerfile",
            "FROM base\nCOPY ../../outside/secret /x\n",
        );
        let config = devcontainer(&root, r#"{ "build": { "dockerfile": "Dockerfile" } }"#);
        let error = DevImage::load(&root, &config).expect_err("outside");
        assert!(
            error.to_string().contains("stay in the build context"),
            "{error}"
        );
        // A context reaching out of the workspace.
        let config = devcontainer(
            &root,
            r#"{ "build": { "dockerfile": "Dockerfile", "context": "../.." } }"#,
        );
        let error = DevImage::load(&root, &config).expect_err("outside");
        assert!(
            error.to_string().contains("leaves the workspace"),
            "{error}"
        );
        // A link in the context is copied as a link, never read through.
        write(
            &root,
            ".devcontainer/Dockerfile",
            "FROM base\nCOPY conf /etc/conf\n",
        );
        symlink(dir.path().join("outside"), root.join(".devcontainer/conf")).expect("link");
        let config = devcontainer(&root, r#"{ "build": { "dockerfile": "Dockerfile" } }"#);
        let image = DevImage::load(&root, &config).expect("load").expect("some");
        assert!(matches!(
            image.context["conf"][0].1[0].kind,
            TreeKind::Symlink(_)
        ));
        // A Dockerfile that is a link is refused.
        std::fs::remove_file(root.join(".devcontainer/Dockerfile")).expect("rm");
        symlink(
            dir.path().join("outside/secret"),
            root.join(".devcontainer/Dockerfile"),
        )
        .expect("link");
        let error = DevImage::load(&root, &config).expect_err("link");
        assert!(
            error.to_string().contains("not a regular file") || error.to_string().contains("link"),
            "{error}"
        );
    }

    #[test]
    fn option_names_as_the_spec_makes_them() {
        assert_eq!(option_name("version"), "VERSION");
        assert_eq!(option_name("install-tools"), "INSTALL_TOOLS");
        assert_eq!(option_name("1st.option"), "_ST_OPTION");
        assert!(wildcard("*.sh", "a.sh"));
        assert!(!wildcard("*.sh", "a.shx"));
        assert!(wildcard("a?c*", "abcdef"));
        let ignore = DockerIgnore {
            patterns: vec![
                (false, vec!["**".into(), "*.log".into()]),
                (true, vec!["keep.log".into()]),
                (false, vec!["target".into()]),
            ],
        };
        assert!(ignore.excludes("deep/x.log"));
        assert!(!ignore.excludes("keep.log"));
        assert!(ignore.excludes("target/debug/x"));
        assert!(!ignore.excludes("src/main.rs"));
    }
}
