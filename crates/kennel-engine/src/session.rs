//! Persistent sessions (`kennel start` and the commands that follow it): a
//! Plan becomes a detached container; later commands exec into it, read its
//! state and logs, stop, kill and remove it.

use std::time::Duration;

use bollard::models::ExecConfig;
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, KillContainerOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, ResizeExecOptionsBuilder, StopContainerOptionsBuilder,
};
use futures_util::StreamExt;
use kennel_core::plan::Plan;
use tokio::io::AsyncWriteExt;
use tokio::signal::unix::{SignalKind, signal};
use tracing::debug;

use crate::error::{EngineError, status_of};
use crate::term::{AtEof, RawMode, pump_output, window_size};
use crate::{Engine, raw};

/// What the engine says about a session's container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerState {
    /// Created and not started yet, or running, paused or restarting.
    Running,
    /// Ended, with its exit code when the engine knows it.
    Exited(Option<i32>),
    /// The engine has no such container.
    Missing,
}

/// A container as the engine lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSummary {
    pub id: String,
    /// Without the leading `/` Docker puts there.
    pub name: String,
    /// Created, running, paused or restarting: not ended.
    pub running: bool,
    pub labels: std::collections::BTreeMap<String, String>,
}

/// Which of a container's streams a piece of output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputStream {
    Stdout,
    Stderr,
}

impl Engine {
    /// Every container (running or not) that carries `label` (`key=value`).
    pub async fn list_containers(&self, label: &str) -> Result<Vec<ContainerSummary>, EngineError> {
        // Plain JSON, for the same reason as [`Engine::state`].
        let filters = serde_json::json!({ "label": [label] }).to_string();
        let path = format!(
            "/v{}/containers/json?{}",
            self.api_version,
            raw::query([("all", "true"), ("filters", filters.as_str())])
        );
        let listed = crate::raw::get_json(&self.socket, &path)
            .await
            .map_err(|message| EngineError::Api {
                action: "listing containers".into(),
                status: None,
                message,
            })?;
        let text = |value: &serde_json::Value, key: &str| {
            value
                .get(key)
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        Ok(listed
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|container| ContainerSummary {
                id: text(container, "Id"),
                name: container
                    .pointer("/Names/0")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or_default()
                    .trim_start_matches('/')
                    .to_string(),
                running: !matches!(
                    text(container, "State").as_str(),
                    "exited" | "dead" | "stopped"
                ),
                labels: container
                    .get("Labels")
                    .and_then(serde_json::Value::as_object)
                    .map(|labels| {
                        labels
                            .iter()
                            .filter_map(|(key, value)| {
                                Some((key.clone(), value.as_str()?.to_string()))
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            })
            .collect())
    }

    /// The content of the regular file `path` in the container (running or
    /// ended), or `None` when there is no such file.
    pub async fn read_file(&self, id: &str, path: &str) -> Result<Option<Vec<u8>>, EngineError> {
        let options = bollard::query_parameters::DownloadFromContainerOptionsBuilder::default()
            .path(path)
            .build();
        let mut stream = self.docker.download_from_container(id, Some(options));
        let mut archive = Vec::new();
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(bytes) => archive.extend_from_slice(&bytes),
                Err(err) if status_of(&err) == Some(404) => return Ok(None),
                Err(err) => {
                    return Err(EngineError::api(format!("reading {path} in {id}"), err));
                }
            }
        }
        Ok(first_tar_file(&archive))
    }

    /// Creates and starts `plan`'s container without attaching to it; returns
    /// its id. The container is removed again when it cannot be started.
    pub async fn start_detached(&self, plan: &Plan) -> Result<String, EngineError> {
        if plan.tty || plan.stdin || plan.ephemeral {
            return Err(EngineError::InvalidPlan(
                "a detached sandbox has no tty or stdin and is not ephemeral".into(),
            ));
        }
        let config = self.container_config(plan)?;
        if !self.image_exists(&plan.image.reference).await? {
            return Err(EngineError::ImageNotFound {
                reference: plan.image.reference.clone(),
            });
        }
        let options = CreateContainerOptionsBuilder::default()
            .name(&plan.name)
            .build();
        let created = self.create(plan, options, config).await?;
        let id = created.id;
        if let Err(err) = self.docker.start_container(&id, None).await {
            self.remove(&id, true).await.ok();
            return Err(crate::run::start_error(self.kind, plan, err));
        }
        debug!(%id, name = %plan.name, "detached container started");
        Ok(id)
    }

    /// The container's state.
    pub async fn state(&self, id: &str) -> Result<ContainerState, EngineError> {
        // Read as plain JSON: Podman reports states (such as `stopped`, while
        // a container is being stopped) that bollard's typed model refuses.
        let path = format!("/v{}/containers/{id}/json", self.api_version);
        let info = crate::raw::get_json_if_found(&self.socket, &path)
            .await
            .map_err(|message| EngineError::Api {
                action: format!("inspecting container {id}"),
                status: None,
                message,
            })?;
        let Some(info) = info else {
            return Ok(ContainerState::Missing);
        };
        let status = info
            .pointer("/State/Status")
            .and_then(serde_json::Value::as_str);
        if matches!(status, Some("exited" | "dead")) {
            let code = info
                .pointer("/State/ExitCode")
                .and_then(serde_json::Value::as_i64);
            Ok(ContainerState::Exited(
                code.and_then(|code| i32::try_from(code).ok()),
            ))
        } else {
            Ok(ContainerState::Running)
        }
    }

    /// Runs `argv` in the running container, attached to kennel's stdio (a
    /// raw terminal and the window size with `tty`); returns its exit code.
    /// `env` adds variables (`TERM` for a tty).
    pub async fn exec(
        &self,
        id: &str,
        argv: &[String],
        env: &[String],
        tty: bool,
        stdin: bool,
    ) -> Result<i32, EngineError> {
        let exec_id = self.create_exec(id, argv, env, tty, stdin).await?;
        let attached = raw::exec_start(&self.socket, &self.api_version, &exec_id, tty).await?;
        let (reader, writer) = attached.stream.into_split();
        let mut output_task = tokio::spawn(pump_output(reader, attached.leftover, tty));
        let raw_mode = if tty {
            RawMode::enter()
                .map_err(|err| EngineError::io("setting the terminal to raw mode", err))?
        } else {
            None
        };
        let mut winch = if tty {
            self.resize_exec(&exec_id, true).await;
            signal(SignalKind::window_change()).ok()
        } else {
            None
        };
        let mut stdin_reader = None;
        let stdin_task = if stdin {
            let (reader, task) = kennel_term::forward_stdin(writer, AtEof::HalfClose)
                .map_err(|err| EngineError::io("reading stdin", err))?;
            stdin_reader = Some(reader);
            task
        } else {
            tokio::spawn(async move {
                let _writer = writer;
                std::future::pending::<()>().await;
            })
        };
        // The exec's output ends when its process does.
        loop {
            tokio::select! {
                joined = &mut output_task => {
                    if let Ok(Err(err)) = joined {
                        debug!(%err, "reading the exec's output ended with an error");
                    }
                    break;
                }
                Some(()) = async { match winch.as_mut() { Some(w) => w.recv().await, None => std::future::pending().await } } => {
                    self.resize_exec(&exec_id, false).await;
                }
            }
        }
        if let Some(mut reader) = stdin_reader.take() {
            reader.cancel();
        }
        stdin_task.abort();
        let _ = tokio::io::stdout().flush().await;
        drop(raw_mode);
        self.exec_code(&exec_id).await
    }

    /// Runs `argv` in the running container without a terminal or stdin;
    /// returns its exit code, stdout and stderr.
    pub async fn exec_output(
        &self,
        id: &str,
        argv: &[String],
    ) -> Result<(i32, Vec<u8>, Vec<u8>), EngineError> {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = self
            .exec_stream(id, argv, &mut |stream, bytes| match stream {
                OutputStream::Stdout => out.extend_from_slice(bytes),
                OutputStream::Stderr => err.extend_from_slice(bytes),
            })
            .await?;
        Ok((code, out, err))
    }

    async fn create_exec(
        &self,
        id: &str,
        argv: &[String],
        env: &[String],
        tty: bool,
        stdin: bool,
    ) -> Result<String, EngineError> {
        let config = ExecConfig {
            attach_stdin: Some(stdin),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            tty: Some(tty),
            env: (!env.is_empty()).then(|| env.to_vec()),
            cmd: Some(argv.to_vec()),
            ..Default::default()
        };
        match self.docker.create_exec(id, config).await {
            Ok(created) => Ok(created.id),
            Err(err) if status_of(&err) == Some(404) => Err(EngineError::Api {
                action: format!("running a command in {id}"),
                status: Some(404),
                message: "the container is gone".into(),
            }),
            Err(err) if status_of(&err) == Some(409) => Err(EngineError::Api {
                action: format!("running a command in {id}"),
                status: Some(409),
                message: "the container is not running".into(),
            }),
            Err(err) => Err(EngineError::api(format!("running a command in {id}"), err)),
        }
    }

    /// The exit code of a finished exec (it may take the engine a moment).
    pub(crate) async fn exec_code(&self, exec_id: &str) -> Result<i32, EngineError> {
        for attempt in 0..50 {
            let info = self
                .docker
                .inspect_exec(exec_id)
                .await
                .map_err(|err| EngineError::api("inspecting an exec", err))?;
            if info.running != Some(true)
                && let Some(code) = info.exit_code
            {
                return Ok(i32::try_from(code).unwrap_or(255));
            }
            tokio::time::sleep(Duration::from_millis(10 * (attempt + 1).min(10))).await;
        }
        Err(EngineError::Api {
            action: "waiting for an exec to end".into(),
            status: None,
            message: "the engine did not report its exit code".into(),
        })
    }

    async fn resize_exec(&self, exec_id: &str, retry: bool) {
        let Some((rows, cols)) = window_size() else {
            return;
        };
        let options = ResizeExecOptionsBuilder::default()
            .h(i32::from(rows))
            .w(i32::from(cols))
            .build();
        crate::run::resize_with_retries(retry, "exec tty", || {
            self.docker.resize_exec(exec_id, options.clone())
        })
        .await;
    }

    /// Stops the container: SIGTERM to its init, SIGKILL after `timeout`.
    /// A container already stopped or gone is fine.
    pub async fn stop(&self, id: &str, timeout: Duration) -> Result<(), EngineError> {
        let seconds = i32::try_from(timeout.as_secs()).unwrap_or(i32::MAX);
        let options = StopContainerOptionsBuilder::default().t(seconds).build();
        match self.docker.stop_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(err) if matches!(status_of(&err), Some(304 | 404)) => Ok(()),
            Err(err) => Err(EngineError::api(format!("stopping container {id}"), err)),
        }
    }

    /// SIGKILL to the container. A container already stopped or gone is fine.
    pub async fn kill_now(&self, id: &str) -> Result<(), EngineError> {
        let options = KillContainerOptionsBuilder::default()
            .signal("SIGKILL")
            .build();
        match self.docker.kill_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(err) if matches!(status_of(&err), Some(404 | 409)) => Ok(()),
            Err(err) => {
                // Podman and Docker answer 500 for "is not running".
                if err.to_string().contains("not running") {
                    Ok(())
                } else {
                    Err(EngineError::api(format!("killing container {id}"), err))
                }
            }
        }
    }

    /// Removes the container (`force`: even a running one). Gone is fine.
    pub async fn remove(&self, id: &str, force: bool) -> Result<(), EngineError> {
        let options = RemoveContainerOptionsBuilder::default()
            .force(force)
            .build();
        match self.docker.remove_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(err) if status_of(&err) == Some(404) => Ok(()),
            Err(err) => Err(EngineError::api(format!("removing container {id}"), err)),
        }
    }

    /// Copies the container's own output (the engine's log) to kennel's
    /// stdout and stderr; `follow` keeps copying until the container ends.
    pub async fn logs(
        &self,
        id: &str,
        follow: bool,
        sink: &mut (dyn FnMut(OutputStream, &[u8]) + Send),
    ) -> Result<(), EngineError> {
        let options = LogsOptionsBuilder::default()
            .follow(follow)
            .stdout(true)
            .stderr(true)
            .build();
        let mut stream = self.docker.logs(id, Some(options));
        while let Some(item) = stream.next().await {
            let item =
                item.map_err(|err| EngineError::api(format!("reading the logs of {id}"), err))?;
            match item {
                bollard::container::LogOutput::StdErr { message } => {
                    sink(OutputStream::Stderr, &message)
                }
                other => sink(OutputStream::Stdout, &other.into_bytes()),
            }
        }
        Ok(())
    }

    /// Runs `argv` in the running container `id` without a terminal and
    /// hands its output to `sink` as it comes; returns its exit code.
    pub async fn exec_stream(
        &self,
        id: &str,
        argv: &[String],
        sink: &mut (dyn FnMut(OutputStream, &[u8]) + Send),
    ) -> Result<i32, EngineError> {
        let exec_id = self.create_exec(id, argv, &[], false, false).await?;
        self.pump_exec(&exec_id, sink).await
    }

    /// Starts the created exec `exec_id`, hands its output to `sink` as it
    /// comes, and returns its exit code.
    pub(crate) async fn pump_exec(
        &self,
        exec_id: &str,
        sink: &mut (dyn FnMut(OutputStream, &[u8]) + Send),
    ) -> Result<i32, EngineError> {
        let started = self
            .docker
            .start_exec(exec_id, None)
            .await
            .map_err(|err| EngineError::api("starting a command in a container", err))?;
        if let bollard::exec::StartExecResults::Attached { mut output, .. } = started {
            while let Some(item) = output.next().await {
                match item {
                    Ok(bollard::container::LogOutput::StdErr { message }) => {
                        sink(OutputStream::Stderr, &message)
                    }
                    Ok(other) => sink(OutputStream::Stdout, &other.into_bytes()),
                    Err(error) => {
                        debug!(%error, "exec output ended with an error");
                        break;
                    }
                }
            }
        }
        self.exec_code(exec_id).await
    }
}

/// The content of the first entry of an uncompressed tar archive, when it
/// is a regular file.
fn first_tar_file(archive: &[u8]) -> Option<Vec<u8>> {
    let header = archive.get(..512)?;
    if !matches!(header[156], b'0' | 0) {
        return None;
    }
    let size_field = std::str::from_utf8(&header[124..136]).ok()?;
    let size =
        usize::from_str_radix(size_field.trim_matches(|c: char| c == '\0' || c == ' '), 8).ok()?;
    archive.get(512..512 + size).map(<[u8]>::to_vec)
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
#[cfg(test)]
mod tests {
    #[test]
    fn tar_entry() {
        let mut header = [0u8; 512];
        header[..4].copy_from_slice(b"exit");
        header[124..136].copy_from_slice(b"00000000003\0");
        header[156] = b'0';
        let mut archive = header.to_vec();
        archive.extend_from_slice(b"42\n");
        archive.resize(2048, 0);
        assert_eq!(
            super::first_tar_file(&archive).as_deref(),
            Some(&b"42\n"[..])
        );
        header[156] = b'5';
        assert_eq!(super::first_tar_file(&header), None);
        assert_eq!(super::first_tar_file(b"short"), None);
    }

    #[test]
    fn list_query() {
        assert_eq!(
            crate::raw::query([("all", "true"), ("filters", r#"{"label":["a.b=c d"]}"#)]),
            "all=true&filters=%7B%22label%22%3A%5B%22a.b%3Dc+d%22%5D%7D"
        );
    }
}
