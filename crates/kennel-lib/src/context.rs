//! Loads what most commands need: host facts, the workspace, the merged
//! config and the catalog, in that order (the project config lives in the
//! workspace, and the catalog takes agents from the config).

use std::path::{Path, PathBuf};

use kennel_core::catalog::Catalog;
use kennel_core::config::{Config, ConfigSources};
use kennel_core::host::{HostContext, Workspace};
use kennel_core::trust::TrustStore;
use kennel_image::ImageSettings;

use crate::error::CliError;

pub struct Context {
    pub host: HostContext,
    pub workspace: Option<Workspace>,
    pub config: Config,
    pub catalog: Catalog,
}

impl Context {
    /// Loads everything; with `workspace` None the project layer is skipped.
    pub fn load(workspace: Option<&Path>) -> Result<Context, CliError> {
        let host = HostContext::detect()?;
        crate::timing::mark("host");
        let resolving = match workspace {
            Some(dir) => Some(Workspace::begin(dir, &host.home)?),
            None => None,
        };
        crate::timing::mark("workspace");
        Context::with_workspace(host, resolving)
    }

    /// Like [`Context::load`], for commands that read the config of the
    /// current directory when it is a usable workspace, and skip it otherwise.
    pub fn load_here() -> Result<Context, CliError> {
        let host = HostContext::detect()?;
        crate::timing::mark("host");
        let resolving = Workspace::begin(&host.cwd, &host.home).ok();
        crate::timing::mark("workspace");
        Context::with_workspace(host, resolving)
    }

    /// The config and the catalog, loaded while the workspace's git config
    /// is read (a git process, see [`Workspace::begin`]).
    fn with_workspace(
        host: HostContext,
        resolving: Option<kennel_core::host::Resolving>,
    ) -> Result<Context, CliError> {
        let config = load_config(&host, resolving.as_ref().map(|resolving| resolving.root()))?;
        crate::timing::mark("config");
        let catalog = Catalog::with_overrides(&config.file.agents)?;
        crate::timing::mark("catalog");
        let workspace = resolving.map(kennel_core::host::Resolving::finish);
        crate::timing::mark("git config");
        Ok(Context {
            host,
            workspace,
            config,
            catalog,
        })
    }

    /// The image settings of this workspace: its default devcontainer's
    /// image, if it has one (see [`Context::image_settings_for`]).
    pub fn image_settings(&self) -> Result<ImageSettings, CliError> {
        self.image_settings_for(self.devcontainer().as_ref())
    }

    /// The workspace's default devcontainer configuration, if it has one
    /// that reads.
    pub fn devcontainer(&self) -> Option<kennel_core::devcontainer::Devcontainer> {
        let workspace = self.workspace.as_ref()?;
        kennel_core::devcontainer::find(&workspace.root, None, &mut Vec::new())
            .ok()
            .flatten()
    }

    /// The image settings: the base image is the project's image when
    /// the devcontainer has a Dockerfile or features, else its `image`
    /// when it names one, else `base_image`; the CA certificates and
    /// `[image]`'s project layer from the config.
    pub fn image_settings_for(
        &self,
        devcontainer: Option<&kennel_core::devcontainer::Devcontainer>,
    ) -> Result<ImageSettings, CliError> {
        Ok(self.project_images(devcontainer)?.0)
    }

    /// [`Context::image_settings_for`], with the project's image kennel
    /// builds from the devcontainer (its Dockerfile and features), if any.
    pub fn project_images(
        &self,
        devcontainer: Option<&kennel_core::devcontainer::Devcontainer>,
    ) -> Result<(ImageSettings, Option<kennel_image::devimage::DevImage>), CliError> {
        let project = match (devcontainer, &self.workspace) {
            (Some(devcontainer), Some(workspace)) => {
                crate::dev_build::load(&workspace.root, devcontainer)?
            }
            _ => None,
        };
        let defaults = &self.config.file.defaults;
        let base = project
            .as_ref()
            .map(|image| image.tag.clone())
            .or_else(|| devcontainer.and_then(|devcontainer| devcontainer.image.clone()))
            .or_else(|| defaults.base_image.clone())
            .unwrap_or_else(|| "debian:bookworm-slim".into());
        let ca: Vec<PathBuf> = defaults
            .ca_certificates
            .iter()
            .flatten()
            .map(|path| self.host.expand(&path.to_string_lossy()))
            .collect();
        let image = &self.config.file.image;
        let settings = ImageSettings::load(&base, &ca)?.with_project(
            image.packages.as_deref().unwrap_or_default(),
            image.setup.as_deref(),
        );
        Ok((settings, project))
    }

    /// Is the file at `path` trusted with the content of `digest`
    /// (`kennel config trust`)? A trust store that cannot be read trusts
    /// nothing.
    pub fn is_trusted(&self, path: &std::path::Path, digest: &str) -> bool {
        !digest.is_empty()
            && TrustStore::load(&self.host.trust_file())
                .is_ok_and(|store| store.is_trusted_digest(path, digest))
    }

    /// How the project's image is built: under `policy` (the session's
    /// network policy), relayed by kennel's base layer on the user's own
    /// base image; `trusted`: the devcontainer.json is trusted.
    pub fn project_build(
        &self,
        image: kennel_image::devimage::DevImage,
        policy: kennel_proxy::Policy,
        trusted: bool,
    ) -> Result<crate::dev_build::ProjectBuild, CliError> {
        let own = self.image_settings_for(None)?;
        Ok(crate::dev_build::ProjectBuild {
            image,
            policy,
            ca_bundle: own.ca_bundle(),
            trusted,
            relay: kennel_image::base_recipe(&own),
        })
    }

    /// How images are built: logs under the data directory, the user's
    /// `[network]` facts for a backend that gives its builds kennel's proxy.
    pub fn build_options(
        &self,
        no_cache: bool,
    ) -> Result<crate::image_build::BuildOptions, CliError> {
        let network = &self.config.file.network;
        Ok(crate::image_build::BuildOptions {
            no_cache,
            logs: crate::image_build::log_dir(&self.host.data_dir),
            hosts: network.hosts.clone().unwrap_or_default(),
            upstream: network.upstream_proxy.clone(),
            trusted: network.trusted_ranges().map_err(|reason| {
                CliError::usage(format!("invalid value for `network.trusted`: {reason}"))
            })?,
            proxy_dirs: kennel_core::settings::proxy_dirs(&self.host),
            pulls: None,
            project: None,
        })
    }
}

pub fn project_file(workspace: &Workspace) -> PathBuf {
    workspace.root.join(PROJECT_FILE)
}

/// The project config's name, at the workspace's top level.
const PROJECT_FILE: &str = ".kennel.toml";

/// The system's and the user's own config, never a project's: where a
/// backend that sends the user's code to another machine reads which one.
pub fn user_config() -> Result<Config, CliError> {
    load_config(&HostContext::detect()?, None)
}

/// The merged config; `root`: the workspace's top level, whose
/// `.kennel.toml` is the project layer.
fn load_config(host: &HostContext, root: Option<&Path>) -> Result<Config, CliError> {
    let trust = TrustStore::load(&host.trust_file())?;
    let sources = ConfigSources {
        system: Some(host.system_config_file()),
        user: Some(host.user_config_file()),
        project: root.map(|root| root.join(PROJECT_FILE)),
        env: host.env.clone(),
    };
    Ok(Config::load(&sources, &trust)?)
}

/// `kennel config trust [FILE]`: records the exact content of `file` (by
/// default the workspace's `.kennel.toml`) as trusted, so that it may widen
/// policy; the file and the digest of what was trusted. Read as `kennel
/// run` reads it: never through a link.
pub fn trust(file: Option<PathBuf>) -> Result<(PathBuf, String), CliError> {
    let context = Context::load_here().or_else(|_| {
        // The project config may be the very thing that fails to load.
        let host = kennel_core::host::HostContext::detect()?;
        let workspace = kennel_core::host::Workspace::resolve(&host.cwd, &host.home).ok();
        Ok::<_, CliError>(Context {
            host,
            workspace,
            config: kennel_core::config::Config::load(
                &Default::default(),
                &TrustStore::in_memory(),
            )?,
            catalog: kennel_core::catalog::Catalog::builtin()?,
        })
    })?;
    let file = match file {
        Some(file) => file,
        None => context
            .workspace
            .as_ref()
            .map(project_file)
            .ok_or_else(|| CliError::usage("no workspace here; name the file to trust"))?,
    };
    // Read as `kennel run` reads it: never through a link (a link to a
    // trusted file would otherwise lend that file's trust to the link).
    let content = match kennel_core::trust::read_config_file(&file) {
        Ok(Some(content)) => content,
        Ok(None) => {
            return Err(CliError::usage(format!(
                "cannot read {}: no such file",
                file.display()
            )));
        }
        Err(kennel_core::trust::ReadError::Link) => {
            return Err(CliError::usage(format!(
                "refusing to trust {}: it is a symbolic link",
                file.display()
            ))
            .with_hint(
                "kennel never follows a link to a project config; replace the link with a regular file (a copy of what you trust) and trust that",
            ));
        }
        Err(error) => {
            return Err(CliError::usage(format!(
                "cannot trust {}: {error}",
                file.display()
            )));
        }
    };
    let mut store = TrustStore::load(&context.host.trust_file())?;
    store.trust(&file, &content);
    store.save()?;
    Ok((file, kennel_core::trust::content_digest(&content)))
}
