//! A workbench: a container in which kennel runs a repository's build
//! steps itself (its Dockerfile, its devcontainer features) and which it
//! then commits as an image. An engine's own builder would run those
//! steps with the engine's network; a workbench has none but kennel's
//! proxy: the container's network is `none`, and a relay beside it (a
//! second container in the same network namespace, made from an image
//! kennel built, with `socat`) passes 127.0.0.1:3128 to the proxy's
//! socket. Nothing of the host is mounted into the workbench itself.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use bollard::models::{
    ContainerConfig, ContainerCreateBody, ExecConfig, HostConfig, Mount, MountType,
};
use bollard::query_parameters::{
    CommitContainerOptionsBuilder, CreateContainerOptionsBuilder,
    DownloadFromContainerOptionsBuilder, RemoveContainerOptionsBuilder,
    UploadToContainerOptionsBuilder,
};
use futures_util::StreamExt;

use crate::error::{EngineError, status_of};
use crate::{Engine, EngineKind, OutputStream};

/// The port the relay listens on inside the workbench.
pub const RELAY_PORT: u16 = 3128;
/// Where the relay finds the proxy's socket directory.
const RELAY_PROXY_DIR: &str = "/run/kennel/proxy";

/// The network a workbench's steps get.
#[derive(Debug, Clone)]
pub enum WorkbenchNetwork {
    /// None at all.
    None,
    /// The engine's own (the session's network is `open`).
    Engine,
    /// kennel's proxy at `socket` (a Unix socket), relayed by a container
    /// of `relay_image` (which has `socat`).
    Proxy {
        socket: PathBuf,
        relay_image: String,
    },
}

/// What a workbench is made of.
#[derive(Debug, Clone)]
pub struct WorkbenchSpec {
    pub image: String,
    /// The container's name (the relay's is this with `-relay`).
    pub name: String,
    pub network: WorkbenchNetwork,
}

/// A running workbench (and its relay).
#[derive(Debug)]
pub struct Workbench {
    pub id: String,
    relay: Option<String>,
}

/// What an image says about how it runs, as a commit must keep it.
#[derive(Debug, Clone, Default)]
pub struct ImageRunConfig {
    pub env: Vec<String>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub working_dir: String,
    pub user: String,
    pub labels: HashMap<String, String>,
}

/// One command in a workbench.
#[derive(Debug, Clone, Default)]
pub struct WorkbenchExec {
    pub argv: Vec<String>,
    /// `NAME=value`.
    pub env: Vec<String>,
    /// `USER` as a Dockerfile gives it (empty: root).
    pub user: String,
    pub working_dir: String,
}

impl Engine {
    /// How `reference` runs: its variables, entrypoint, command, working
    /// directory, user and labels.
    pub async fn image_run_config(&self, reference: &str) -> Result<ImageRunConfig, EngineError> {
        let inspect = self
            .docker
            .inspect_image(reference)
            .await
            .map_err(|err| EngineError::api(format!("inspecting image {reference}"), err))?;
        let config = inspect.config.unwrap_or_default();
        Ok(ImageRunConfig {
            env: config.env.unwrap_or_default(),
            entrypoint: config.entrypoint.filter(|argv| !argv.is_empty()),
            cmd: config.cmd.filter(|argv| !argv.is_empty()),
            working_dir: config.working_dir.unwrap_or_default(),
            user: config.user.unwrap_or_default(),
            labels: config.labels.unwrap_or_default(),
        })
    }

    /// Creates and starts a workbench; with a proxy, its relay too, and
    /// waits until the relay listens.
    pub async fn start_workbench(&self, spec: &WorkbenchSpec) -> Result<Workbench, EngineError> {
        let action = |what: &str| format!("{what} the build container {}", spec.name);
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            // A shell that waits: each step is an exec. PID 1 ignores
            // SIGTERM; the container is removed by force.
            entrypoint: Some(vec![
                "/bin/sh".into(),
                "-c".into(),
                "while :; do sleep 3600; done".into(),
            ]),
            cmd: Some(Vec::new()),
            user: Some("0:0".into()),
            working_dir: Some("/".into()),
            host_config: Some(HostConfig {
                network_mode: match spec.network {
                    WorkbenchNetwork::Engine => None,
                    _ => Some("none".into()),
                },
                ..Default::default()
            }),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::default()
            .name(&spec.name)
            .build();
        let created = self
            .docker
            .create_container(Some(options), body)
            .await
            .map_err(|err| EngineError::api(action("creating"), err))?;
        let mut bench = Workbench {
            id: created.id,
            relay: None,
        };
        let started = async {
            self.docker
                .start_container(&bench.id, None)
                .await
                .map_err(|err| EngineError::api(action("starting"), err))?;
            if let WorkbenchNetwork::Proxy {
                socket,
                relay_image,
            } = &spec.network
            {
                bench.relay = Some(
                    self.start_relay(spec, &bench.id, socket, relay_image)
                        .await?,
                );
            }
            Ok::<(), EngineError>(())
        }
        .await;
        match started {
            Ok(()) => Ok(bench),
            Err(error) => {
                self.remove_workbench(bench).await;
                Err(error)
            }
        }
    }

    async fn start_relay(
        &self,
        spec: &WorkbenchSpec,
        bench: &str,
        socket: &std::path::Path,
        relay_image: &str,
    ) -> Result<String, EngineError> {
        let name = format!("{}-relay", spec.name);
        let action = |what: &str| format!("{what} the build's network relay {name}");
        let (dir, file) = match (socket.parent(), socket.file_name()) {
            (Some(dir), Some(file)) => (dir, file.to_string_lossy().into_owned()),
            _ => {
                return Err(EngineError::InvalidPlan(format!(
                    "the proxy socket {} has no directory",
                    socket.display()
                )));
            }
        };
        // The socket's directory is the user's (0700): the relay runs as
        // the user. Rootless Podman's root is the user.
        let user = if self.kind == EngineKind::Podman && self.rootless {
            "0:0".to_string()
        } else {
            format!(
                "{}:{}",
                nix::unistd::getuid().as_raw(),
                nix::unistd::getgid().as_raw()
            )
        };
        let listen = format!("TCP-LISTEN:{RELAY_PORT},bind=127.0.0.1,fork,reuseaddr");
        let connect = format!("UNIX-CONNECT:{RELAY_PROXY_DIR}/{file}");
        let body = ContainerCreateBody {
            image: Some(relay_image.to_string()),
            entrypoint: Some(vec!["socat".into(), listen, connect]),
            cmd: Some(Vec::new()),
            user: Some(user),
            host_config: Some(HostConfig {
                network_mode: Some(format!("container:{bench}")),
                mounts: Some(vec![Mount {
                    source: Some(dir.to_string_lossy().into_owned()),
                    target: Some(RELAY_PROXY_DIR.into()),
                    typ: Some(MountType::BIND),
                    read_only: Some(true),
                    ..Default::default()
                }]),
                cap_drop: Some(vec!["ALL".into()]),
                security_opt: Some(vec!["no-new-privileges".into()]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::default().name(&name).build();
        let created = self
            .docker
            .create_container(Some(options), body)
            .await
            .map_err(|err| EngineError::api(action("creating"), err))?;
        self.docker
            .start_container(&created.id, None)
            .await
            .map_err(|err| EngineError::api(action("starting"), err))?;
        // Listening: the port is in the shared namespace's table.
        let port = format!(":{RELAY_PORT:04X} ");
        for _ in 0..300 {
            let (code, out, _) = self
                .exec_output(
                    &created.id,
                    &["cat".to_string(), "/proc/net/tcp".to_string()],
                )
                .await
                .unwrap_or((1, Vec::new(), Vec::new()));
            if code == 0 && String::from_utf8_lossy(&out).contains(&port) {
                return Ok(created.id);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = self.force_remove(&created.id).await;
        Err(EngineError::Api {
            action: action("waiting for"),
            status: None,
            message: "the relay did not listen".into(),
        })
    }

    /// Runs `exec` in the workbench, handing its output to `sink`; its
    /// exit code.
    pub async fn workbench_exec(
        &self,
        bench: &Workbench,
        exec: &WorkbenchExec,
        sink: &mut (dyn FnMut(OutputStream, &[u8]) + Send),
    ) -> Result<i32, EngineError> {
        let config = ExecConfig {
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            env: Some(exec.env.clone()),
            cmd: Some(exec.argv.clone()),
            user: Some(if exec.user.is_empty() {
                "0:0".to_string()
            } else {
                exec.user.clone()
            }),
            working_dir: (!exec.working_dir.is_empty()).then(|| exec.working_dir.clone()),
            ..Default::default()
        };
        let created = self
            .docker
            .create_exec(&bench.id, config)
            .await
            .map_err(|err| EngineError::api("running a build step", err))?;
        self.pump_exec(&created.id, sink).await
    }

    /// Unpacks `archive` (a tar, which may be compressed) at `dir` in the
    /// workbench, as the engine does for `docker cp`.
    pub async fn workbench_put(
        &self,
        bench: &Workbench,
        dir: &str,
        archive: Vec<u8>,
    ) -> Result<(), EngineError> {
        let options = UploadToContainerOptionsBuilder::default().path(dir).build();
        self.docker
            .upload_to_container(&bench.id, Some(options), bollard::body_full(archive.into()))
            .await
            .map_err(|err| {
                EngineError::api(format!("copying files to {dir} in a build container"), err)
            })
    }

    /// `path` of the workbench as a tar (its last component at the top),
    /// at most `limit` bytes.
    pub async fn workbench_get(
        &self,
        bench: &Workbench,
        path: &str,
        limit: usize,
    ) -> Result<Vec<u8>, EngineError> {
        let options = DownloadFromContainerOptionsBuilder::default()
            .path(path)
            .build();
        let mut stream = self
            .docker
            .download_from_container(&bench.id, Some(options));
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|err| {
                EngineError::api(format!("copying {path} out of a build container"), err)
            })?;
            out.extend_from_slice(&chunk);
            if out.len() > limit {
                return Err(EngineError::Api {
                    action: format!("copying {path} out of a build container"),
                    status: None,
                    message: format!("it is larger than {limit} bytes"),
                });
            }
        }
        Ok(out)
    }

    /// `path` of the image `image` as a tar (see [`Engine::workbench_get`]):
    /// read from a container that is created, never started, and removed.
    pub async fn image_archive(
        &self,
        image: &str,
        path: &str,
        limit: usize,
    ) -> Result<Vec<u8>, EngineError> {
        let id = self
            .create_unstarted(image, &format!("reading {path} of {image}"))
            .await?;
        let bench = Workbench { id, relay: None };
        let archive = self.workbench_get(&bench, path, limit).await;
        self.remove_workbench(bench).await;
        archive
    }

    /// A container of `image` that is created to be read, never started
    /// (its command does not exist, it has no network); its id.
    pub(crate) async fn create_unstarted(
        &self,
        image: &str,
        action: &str,
    ) -> Result<String, EngineError> {
        let body = ContainerCreateBody {
            image: Some(image.to_string()),
            entrypoint: Some(vec!["/nonexistent".into()]),
            cmd: Some(Vec::new()),
            host_config: Some(HostConfig {
                network_mode: Some("none".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let created = self
            .docker
            .create_container(
                None::<bollard::query_parameters::CreateContainerOptions>,
                body,
            )
            .await
            .map_err(|err| EngineError::api(action, err))?;
        Ok(created.id)
    }

    /// Stops the workbench and commits it as `tag`, with `changes`
    /// (Dockerfile instructions: `ENV`, `WORKDIR`, `USER`, `ENTRYPOINT`,
    /// `CMD`, `LABEL`) applied; the workbench goes.
    pub async fn commit_workbench(
        &self,
        bench: Workbench,
        tag: &str,
        changes: &[String],
    ) -> Result<(), EngineError> {
        if let Some(relay) = &bench.relay {
            let _ = self.force_remove(relay).await;
        }
        let _ = self
            .docker
            .kill_container(
                &bench.id,
                None::<bollard::query_parameters::KillContainerOptions>,
            )
            .await;
        for _ in 0..100 {
            if !matches!(
                self.state(&bench.id).await,
                Ok(crate::ContainerState::Running)
            ) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (repo, tag_part) = tag.rsplit_once(':').unwrap_or((tag, "latest"));
        let options = CommitContainerOptionsBuilder::default()
            .container(&bench.id)
            .repo(repo)
            .tag(tag_part)
            .pause(false)
            .changes(&changes.join("\n"))
            .build();
        let committed = self
            .docker
            .commit_container(options, ContainerConfig::default())
            .await
            .map_err(|err| EngineError::api(format!("committing the build of {tag}"), err));
        self.remove_workbench(bench).await;
        committed.map(|_| ())
    }

    /// Removes the workbench and its relay, whatever state they are in.
    pub async fn remove_workbench(&self, bench: Workbench) {
        if let Some(relay) = &bench.relay {
            let _ = self.force_remove(relay).await;
        }
        let _ = self.force_remove(&bench.id).await;
    }

    /// Containers (running or not) whose name starts with `prefix`: their
    /// ids and names. (Workbenches are found by name: a label on them
    /// would be committed into the image and carried by every container
    /// made from it.)
    pub async fn containers_named(&self, prefix: &str) -> Vec<(String, String)> {
        let mut filters: HashMap<String, Vec<String>> = HashMap::new();
        filters.insert("name".into(), vec![prefix.to_string()]);
        let options = bollard::query_parameters::ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        match self.docker.list_containers(Some(options)).await {
            Ok(found) => found
                .into_iter()
                .filter_map(|container| {
                    let name = container.names?.into_iter().next()?;
                    let name = name.trim_start_matches('/').to_string();
                    name.starts_with(prefix).then_some((container.id?, name))
                })
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Removes a container by force.
    pub async fn force_remove(&self, id: &str) -> Result<(), EngineError> {
        let options = RemoveContainerOptionsBuilder::default().force(true).build();
        match self.docker.remove_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(err) if status_of(&err) == Some(404) => Ok(()),
            Err(err) => Err(EngineError::api(format!("removing container {id}"), err)),
        }
    }
}
