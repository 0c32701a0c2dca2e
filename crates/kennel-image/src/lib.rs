//! kennel-image: agent recipes → Dockerfiles, content-hashed tags and build
//! contexts.
//!
//! Every agent image is two or three layers: a base layer (the configured
//! base image plus git, ripgrep, curl, tini, socat — the proxy forwarder —
//! and the CA certificates), with `[image]` a project layer (its packages
//! and setup script), and an agent layer (the agent's runtime and its
//! install recipe). Tags carry a hash of everything that goes into the build, so an
//! unchanged recipe is never rebuilt and a changed one always is.

use std::collections::BTreeMap;
use std::path::PathBuf;

use kennel_core::catalog::{AgentSpec, Runtime};
use kennel_core::settings::sh_quote;
use sha2::{Digest, Sha256};

/// Bumped whenever the generated Dockerfiles change shape, so that old tags
/// are never mistaken for new recipes.
const RECIPE_FORMAT: &str = "kennel-recipe-1";

/// Label keys kennel puts on the images it builds.
pub const LABEL_MANAGED: &str = "dev.kennel.managed";
pub const LABEL_AGENT: &str = "dev.kennel.agent";
pub const LABEL_LAYER: &str = "dev.kennel.layer";
pub const LABEL_RECIPE: &str = "dev.kennel.recipe";
/// The workspace a devcontainer image was built for.
pub const LABEL_PROJECT: &str = "dev.kennel.project";

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("cannot read CA certificate {path} (from `defaults.ca_certificates`): {source}")]
    CaCertificate {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} (from `defaults.ca_certificates`) does not look like a PEM certificate")]
    NotPem { path: PathBuf },
    #[error("cannot assemble the build context: {0}")]
    Context(std::io::Error),
}

impl ImageError {
    pub fn hint(&self) -> Option<String> {
        match self {
            ImageError::CaCertificate { .. } | ImageError::NotPem { .. } => Some(
                "list PEM files (such as /etc/ssl/certs/ca-certificates.crt) in `ca_certificates` under [defaults]"
                    .into(),
            ),
            ImageError::Context(_) => None,
        }
    }
}

/// What every image of one configuration shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSettings {
    pub base_image: String,
    /// (file name, PEM content) of the extra CA certificates.
    pub ca_certificates: Vec<(String, Vec<u8>)>,
    /// `[image] packages`: installed in the project layer.
    pub packages: Vec<String>,
    /// `[image] setup`: run as root in the project layer, after them.
    pub setup: Option<String>,
}

impl ImageSettings {
    /// Reads the configured CA files; a missing or non-PEM file is an error
    /// that names it.
    pub fn load(base_image: &str, ca_paths: &[PathBuf]) -> Result<ImageSettings, ImageError> {
        let mut ca_certificates = Vec::new();
        for (index, path) in ca_paths.iter().enumerate() {
            let content = std::fs::read(path).map_err(|source| ImageError::CaCertificate {
                path: path.clone(),
                source,
            })?;
            if !content
                .windows(27)
                .any(|window| window == b"-----BEGIN CERTIFICATE-----")
            {
                return Err(ImageError::NotPem { path: path.clone() });
            }
            ca_certificates.push((format!("kennel-{index}.crt"), content));
        }
        Ok(ImageSettings {
            base_image: base_image.to_string(),
            ca_certificates,
            packages: Vec::new(),
            setup: None,
        })
    }

    /// With `[image]`'s packages and setup script (the project layer).
    pub fn with_project(mut self, packages: &[String], setup: Option<&str>) -> ImageSettings {
        self.packages = packages.to_vec();
        self.setup = setup
            .filter(|script| !script.trim().is_empty())
            .map(str::to_string);
        self
    }

    /// All configured certificates in one PEM bundle (mounted into sandboxes).
    pub fn ca_bundle(&self) -> Vec<u8> {
        let mut bundle = Vec::new();
        for (_, content) in &self.ca_certificates {
            bundle.extend_from_slice(content);
            if !content.ends_with(b"\n") {
                bundle.push(b'\n');
            }
        }
        bundle
    }
}

/// One buildable layer: a Dockerfile and the files next to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipe {
    pub tag: String,
    pub dockerfile: String,
    pub files: BTreeMap<String, Vec<u8>>,
    pub labels: BTreeMap<String, String>,
    pub hash: String,
}

impl Recipe {
    fn new(
        repository: &str,
        layer: &str,
        agent: &str,
        dockerfile: String,
        files: BTreeMap<String, Vec<u8>>,
    ) -> Recipe {
        let mut hasher = Sha256::new();
        hasher.update(RECIPE_FORMAT.as_bytes());
        hasher.update([0]);
        hasher.update(dockerfile.as_bytes());
        for (name, content) in &files {
            hasher.update([0]);
            hasher.update(name.as_bytes());
            hasher.update([0]);
            hasher.update(content);
        }
        let hash = hex::encode(hasher.finalize());
        let mut labels = BTreeMap::new();
        labels.insert(LABEL_MANAGED.to_string(), "true".to_string());
        labels.insert(LABEL_LAYER.to_string(), layer.to_string());
        labels.insert(LABEL_AGENT.to_string(), agent.to_string());
        labels.insert(LABEL_RECIPE.to_string(), hash.clone());
        Recipe {
            tag: format!("{repository}:{}", &hash[..12]),
            dockerfile,
            files,
            labels,
            hash,
        }
    }

    /// The build context as a tar archive with the Dockerfile at its root.
    pub fn context_tar(&self) -> Result<Vec<u8>, ImageError> {
        let mut builder = tar::Builder::new(Vec::new());
        let mut add = |name: &str, content: &[u8]| -> std::io::Result<()> {
            let mut header = tar::Header::new_gnu();
            header.set_size(content.len() as u64);
            header.set_mode(0o644);
            header.set_mtime(0);
            header.set_cksum();
            builder.append_data(&mut header, name, content)
        };
        add("Dockerfile", self.dockerfile.as_bytes()).map_err(ImageError::Context)?;
        for (name, content) in &self.files {
            add(name, content).map_err(ImageError::Context)?;
        }
        builder.into_inner().map_err(ImageError::Context)
    }
}

const BASE_PACKAGES: &[&str] = &[
    "bash",
    "ca-certificates",
    "curl",
    "git",
    // `ip`: a system container's init brings its loopback up (Incus).
    "iproute2",
    "less",
    "openssh-client",
    "procps",
    "ripgrep",
    "socat",
    "tini",
    "tmux",
    "xz-utils",
];

/// The trust store the images use; tools that carry their own CA list are
/// pointed at it so that configured certificates work everywhere.
const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

pub fn base_recipe(settings: &ImageSettings) -> Recipe {
    let mut files = BTreeMap::new();
    // An empty marker keeps `COPY ca/` valid when no certificate is configured.
    files.insert("ca/.keep".to_string(), Vec::new());
    for (name, content) in &settings.ca_certificates {
        files.insert(format!("ca/{name}"), content.clone());
    }
    // `USER root`: a devcontainer's image may end as another user; kennel's
    // layers install as root (the sandbox's own user is set at run time).
    let dockerfile = format!(
        r#"FROM {base}
USER root
COPY ca/ /usr/local/share/ca-certificates/kennel/
RUN set -eu; export DEBIAN_FRONTEND=noninteractive; \
    if ! command -v apt-get >/dev/null 2>&1; then \
        PRETTY_NAME=; . /etc/os-release 2>/dev/null || true; \
        echo "kennel: the base image is ${{PRETTY_NAME:-not Debian or Ubuntu}}; kennel installs its packages with apt-get (Debian, Ubuntu), which it does not have" >&2; \
        exit 1; \
    fi; \
    apt-get update -q; \
    apt-get install -y -q --no-install-recommends {packages}; \
    rm -f /usr/local/share/ca-certificates/kennel/.keep; \
    update-ca-certificates; \
    rm -rf /var/lib/apt/lists/*
ENV LANG=C.UTF-8 \
    SSL_CERT_FILE={bundle} \
    REQUESTS_CA_BUNDLE={bundle} \
    PIP_CERT={bundle} \
    GIT_SSL_CAINFO={bundle} \
    NODE_EXTRA_CA_CERTS={bundle}
"#,
        base = settings.base_image,
        packages = BASE_PACKAGES.join(" "),
        bundle = SYSTEM_BUNDLE,
    );
    Recipe::new("kennel/base", "base", "", dockerfile, files)
}

/// Commands that install a runtime on top of the base layer. Nothing of
/// root's may stay in `/tmp` (Node 22's npm leaves a root-owned
/// `/tmp/node-compile-cache` that the sandbox's user could not use).
fn runtime_setup(runtime: Runtime) -> Option<&'static str> {
    match runtime {
        Runtime::None | Runtime::Native => None,
        // Debian 12's Node is 18, too old for most agents; the `node` package
        // on the npm registry brings a current Node binary through the same
        // registry the agents come from. Debian's Node 18 only bootstraps it
        // (with npm fetched from the registry: Debian's npm pulls in hundreds
        // of packages and doubles the build time), and is removed afterwards.
        Runtime::Node => Some(
            "set -eu; export DEBIAN_FRONTEND=noninteractive NPM_CONFIG_PREFIX=/usr/local; \
             apt-get update -q; apt-get install -y -q --no-install-recommends nodejs libstdc++6; \
             mkdir -p /tmp/npm; curl -fsSL https://registry.npmjs.org/npm/-/npm-10.9.2.tgz | tar -xz -C /tmp/npm; \
             node /tmp/npm/package/bin/npm-cli.js install -g --no-fund --no-audit --no-update-notifier npm@10; hash -r; \
             npm install -g --no-fund --no-audit --no-update-notifier node@22; hash -r; \
             apt-get purge -y -q nodejs; apt-get autoremove -y -q; \
             rm -rf /var/lib/apt/lists/* /root/.npm /tmp/npm /tmp/node-compile-cache; node --version; npm --version",
        ),
        Runtime::Python => Some(
            "set -eu; export DEBIAN_FRONTEND=noninteractive; \
             apt-get update -q; apt-get install -y -q --no-install-recommends python3 python3-venv; \
             python3 -m venv /opt/kennel/python; rm -rf /var/lib/apt/lists/*",
        ),
    }
}

/// The project layer, when `[image]` asks for one: its packages (the
/// names are checked when the config is read: one word each), then its
/// setup script, as root.
pub fn project_recipe(settings: &ImageSettings, base: &Recipe) -> Option<Recipe> {
    if settings.packages.is_empty() && settings.setup.is_none() {
        return None;
    }
    let mut dockerfile = format!("FROM {}\n", base.tag);
    if !settings.packages.is_empty() {
        let packages: Vec<String> = settings
            .packages
            .iter()
            .map(|name| sh_quote(name))
            .collect();
        dockerfile.push_str(&format!(
            "RUN set -eu; export DEBIAN_FRONTEND=noninteractive; \\\n    \
             apt-get update -q; \\\n    \
             apt-get install -y -q --no-install-recommends {}; \\\n    \
             rm -rf /var/lib/apt/lists/*\n",
            packages.join(" ")
        ));
    }
    let mut files = BTreeMap::new();
    if let Some(setup) = &settings.setup {
        files.insert(
            "setup.sh".to_string(),
            format!("set -eu\n{setup}\n").into_bytes(),
        );
        dockerfile.push_str(
            "COPY setup.sh /tmp/kennel-setup.sh\nRUN sh /tmp/kennel-setup.sh && rm -f /tmp/kennel-setup.sh\n",
        );
    }
    Some(Recipe::new(
        "kennel/project",
        "project",
        "",
        dockerfile,
        files,
    ))
}

pub fn agent_recipe(agent: &AgentSpec, base: &Recipe) -> Recipe {
    let mut dockerfile = format!("FROM {}\n", base.tag);
    if agent.runtime == Runtime::Node {
        // Node from the `node` package makes npm compute its global prefix
        // inside that package; pin it so `npm install -g` lands on PATH.
        // npm's update notice and funding lines are noise in build output.
        dockerfile.push_str(
            "ENV NPM_CONFIG_PREFIX=/usr/local NPM_CONFIG_UPDATE_NOTIFIER=false NPM_CONFIG_FUND=false\n",
        );
    }
    if agent.runtime == Runtime::Python {
        dockerfile
            .push_str("ENV VIRTUAL_ENV=/opt/kennel/python PATH=/opt/kennel/python/bin:$PATH\n");
    }
    if let Some(setup) = runtime_setup(agent.runtime) {
        dockerfile.push_str(&format!("RUN {setup}\n"));
    }
    let mut files = BTreeMap::new();
    if !agent.install.trim().is_empty() {
        files.insert(
            "install.sh".to_string(),
            format!("set -eu\n{}\n", agent.install).into_bytes(),
        );
        dockerfile.push_str(
            "COPY install.sh /tmp/kennel-install.sh\nRUN sh /tmp/kennel-install.sh && rm -rf /tmp/kennel-install.sh /root/.npm /root/.cache /tmp/node-compile-cache\n",
        );
    }
    if let Some(check) = check_script(agent) {
        files.insert("check.sh".to_string(), check.into_bytes());
        dockerfile.push_str(
            "COPY check.sh /tmp/kennel-check.sh\nRUN sh /tmp/kennel-check.sh && rm -f /tmp/kennel-check.sh\n",
        );
    }
    Recipe::new(
        &format!("kennel/{}", agent.name),
        "agent",
        &agent.name,
        dockerfile,
        files,
    )
}

/// The last step of an agent's image: its command must be on PATH and (with
/// the catalog's `version` arguments) run, so that an install recipe that
/// "succeeded" without installing the agent fails the build, with the
/// reason, instead of the first run with `exec: …: not found`.
fn check_script(agent: &AgentSpec) -> Option<String> {
    let command = agent.command.first()?;
    let name = sh_quote(&agent.name);
    let mut script = format!(
        "# kennel: is agent {agent} installed, and does it run?\n\
         agent={name}\n\
         cmd={command}\n\
         if ! command -v \"$cmd\" >/dev/null 2>&1; then\n\
         \x20   echo \"kennel: agent $agent: the install finished, but its command '$cmd' is not on PATH ($PATH)\" >&2\n\
         \x20   exit 127\n\
         fi\n",
        agent = agent.name,
        command = sh_quote(command),
    );
    if agent.version.is_empty() {
        script.push_str("echo \"kennel: agent $agent: $(command -v \"$cmd\")\"\n");
    } else {
        let args: Vec<String> = agent.version.iter().map(|arg| sh_quote(arg)).collect();
        let args = args.join(" ");
        script.push_str(&format!(
            "if out=$(timeout 120 \"$cmd\" {args} </dev/null 2>&1); then\n\
             \x20   echo \"kennel: agent $agent runs: $(printf '%s\\n' \"$out\" | head -n 1)\"\n\
             else\n\
             \x20   status=$?\n\
             \x20   printf '%s\\n' \"$out\" | tail -n 20 >&2\n\
             \x20   echo \"kennel: agent $agent: '$cmd {shown}' failed (exit $status): it is installed but does not run\" >&2\n\
             \x20   exit 1\n\
             fi\n",
            shown = agent.version.join(" ").replace(['\'', '"', '$', '`', '\\'], ""),
        ));
    }
    Some(script)
}

/// The layers to build for `agent`, in build order (base first).
pub fn recipes_for(agent: &AgentSpec, settings: &ImageSettings) -> Vec<Recipe> {
    let mut recipes = vec![base_recipe(settings)];
    if let Some(project) = project_recipe(settings, &recipes[0]) {
        recipes.push(project);
    }
    let below = recipes
        .last()
        .cloned()
        .unwrap_or_else(|| base_recipe(settings));
    recipes.push(agent_recipe(agent, &below));
    recipes
}

pub mod devimage;
pub mod dockerfile;
mod steps;

pub use steps::{Step, StepError, expand};

#[cfg(test)]
mod tests {
    use super::*;
    use kennel_core::catalog::Catalog;

    fn settings() -> ImageSettings {
        ImageSettings {
            base_image: "debian:bookworm-slim".into(),
            ca_certificates: Vec::new(),
            packages: Vec::new(),
            setup: None,
        }
    }

    #[test]
    fn image_packages_and_setup_make_a_project_layer_under_the_agent() {
        let catalog = Catalog::builtin().expect("catalog");
        let claude = catalog.get("claude").expect("claude");
        assert_eq!(
            recipes_for(claude, &settings()).len(),
            2,
            "no [image]: no layer"
        );
        let with = settings().with_project(&["golang".into(), "make".into()], Some("touch /opt/x"));
        let recipes = recipes_for(claude, &with);
        assert_eq!(recipes.len(), 3);
        let project = &recipes[1];
        assert!(
            project.tag.starts_with("kennel/project:"),
            "{}",
            project.tag
        );
        assert_eq!(project.labels[LABEL_LAYER], "project");
        assert!(
            project
                .dockerfile
                .starts_with(&format!("FROM {}\n", recipes[0].tag))
        );
        assert!(
            project
                .dockerfile
                .contains("apt-get install -y -q --no-install-recommends 'golang' 'make'"),
            "{}",
            project.dockerfile
        );
        assert_eq!(project.files["setup.sh"], b"set -eu\ntouch /opt/x\n");
        assert!(
            recipes[2]
                .dockerfile
                .starts_with(&format!("FROM {}\n", project.tag))
        );
        // Another package list, another project layer and agent layer.
        let other = settings().with_project(&["golang".into()], Some("touch /opt/x"));
        let again = recipes_for(claude, &other);
        assert_ne!(again[1].tag, project.tag);
        assert_ne!(again[2].tag, recipes[2].tag);
        // A blank script is none.
        assert_eq!(
            recipes_for(claude, &settings().with_project(&[], Some("  "))).len(),
            2
        );
    }

    #[test]
    fn tags_are_stable_for_the_same_recipe() {
        let catalog = Catalog::builtin().expect("catalog");
        let claude = catalog.get("claude").expect("claude");
        assert_eq!(
            recipes_for(claude, &settings()),
            recipes_for(claude, &settings())
        );
        let tag = &recipes_for(claude, &settings())[1].tag;
        assert!(tag.starts_with("kennel/claude:"), "{tag}");
        assert_eq!(tag.len(), "kennel/claude:".len() + 12);
    }

    #[test]
    fn any_change_gives_a_new_tag() {
        let catalog = Catalog::builtin().expect("catalog");
        let mut claude = catalog.get("claude").expect("claude").clone();
        let before = recipes_for(&claude, &settings())[1].tag.clone();
        claude.install.push_str(" && true");
        assert_ne!(
            recipes_for(&claude, &settings())[1].tag,
            before,
            "install change"
        );
        let other_base = ImageSettings {
            base_image: "debian:trixie".into(),
            ..settings()
        };
        assert_ne!(
            recipes_for(&claude, &other_base)[1].tag,
            recipes_for(&claude, &settings())[1].tag,
            "base change"
        );
        let with_ca = ImageSettings {
            ca_certificates: vec![(
                "kennel-0.crt".into(),
                b"-----BEGIN CERTIFICATE-----\n".to_vec(),
            )],
            ..settings()
        };
        assert_ne!(
            base_recipe(&with_ca).tag,
            base_recipe(&settings()).tag,
            "CA change"
        );
    }

    #[test]
    fn context_has_dockerfile_and_certificates() {
        let with_ca = ImageSettings {
            ca_certificates: vec![(
                "kennel-0.crt".into(),
                b"-----BEGIN CERTIFICATE-----\nx\n".to_vec(),
            )],
            ..settings()
        };
        let tar_bytes = base_recipe(&with_ca).context_tar().expect("tar");
        let mut archive = tar::Archive::new(tar_bytes.as_slice());
        let names: Vec<String> = archive
            .entries()
            .expect("entries")
            .map(|entry| {
                entry
                    .expect("entry")
                    .path()
                    .expect("path")
                    .display()
                    .to_string()
            })
            .collect();
        assert_eq!(names, vec!["Dockerfile", "ca/.keep", "ca/kennel-0.crt"]);
    }

    #[test]
    fn missing_or_bad_certificate_is_named() {
        let missing = ImageSettings::load("x", &[PathBuf::from("/nonexistent/corp.crt")]);
        assert!(matches!(missing, Err(ImageError::CaCertificate { .. })));
        let dir = std::env::temp_dir().join(format!("kennel-image-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let junk = dir.join("junk.crt");
        std::fs::write(&junk, "not a cert").expect("write");
        assert!(matches!(
            ImageSettings::load("x", &[junk]),
            Err(ImageError::NotPem { .. })
        ));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn node_agents_install_onto_path() {
        let catalog = Catalog::builtin().expect("catalog");
        let codex = recipes_for(catalog.get("codex").expect("codex"), &settings());
        assert!(
            codex[1]
                .dockerfile
                .contains("ENV NPM_CONFIG_PREFIX=/usr/local")
        );
    }

    #[test]
    fn python_agents_get_a_virtualenv_on_path() {
        let catalog = Catalog::builtin().expect("catalog");
        let aider = recipes_for(catalog.get("aider").expect("aider"), &settings());
        assert!(
            aider[1]
                .dockerfile
                .contains("python3 -m venv /opt/kennel/python")
        );
        assert!(
            aider[1]
                .dockerfile
                .contains("PATH=/opt/kennel/python/bin:$PATH")
        );
    }

    #[test]
    fn every_agent_layer_ends_by_running_its_command() {
        let catalog = Catalog::builtin().expect("catalog");
        for agent in catalog.agents() {
            let recipe = &recipes_for(agent, &settings())[1];
            assert!(
                recipe
                    .dockerfile
                    .trim_end()
                    .ends_with("RUN sh /tmp/kennel-check.sh && rm -f /tmp/kennel-check.sh"),
                "{}: {}",
                agent.name,
                recipe.dockerfile
            );
            let check = String::from_utf8(recipe.files["check.sh"].clone()).expect("utf-8");
            assert!(
                check.contains(&format!("cmd='{}'", agent.command[0])),
                "{check}"
            );
        }
    }

    #[test]
    fn check_script_snapshot() {
        let catalog = Catalog::builtin().expect("catalog");
        let codex = recipes_for(catalog.get("codex").expect("codex"), &settings());
        insta::assert_snapshot!(String::from_utf8_lossy(&codex[1].files["check.sh"]));
    }

    #[test]
    fn base_dockerfile_snapshot() {
        insta::assert_snapshot!(base_recipe(&settings()).dockerfile);
    }
}
