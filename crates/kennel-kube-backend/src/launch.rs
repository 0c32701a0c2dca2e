//! `kennel run` and `kennel start` on a cluster.
//!
//! `run`: the Pod made and walled in, the session's clone sent in, the
//! agent attached, its work brought back as git objects, the Pod deleted
//! — also when the agent fails or kennel is signalled.
//!
//! `start`: the same Pod, and the agent in tmux inside it (the persistent
//! session's command, started detached by exec: the Pod's waiting shell
//! adopts it). The Pod stays until `kennel stop` or `rm`; the session's
//! commands reach the agent by exec.

use std::time::Duration;

use async_trait::async_trait;
use kennel_core::plan::Plan;
use kennel_kube::{Cluster, PodSettings, SessionPod, Workload};
use kennel_lib::backend::Launch;
use kennel_lib::error::CliError;
use kennel_lib::image_build::BuildOptions;
use kennel_lib::proxy::{ProxySpec, SessionProxy};

use crate::attached::{self, AgentEnd};
use crate::cluster_error;
use crate::pod::{Work, bring_back, make_ready, signal_agent};

/// How long bringing the agent's work back may take once kennel was
/// signalled (the user wants kennel gone; the Pod is deleted after).
const SIGNALLED_BRING_BACK: Duration = Duration::from_secs(20);

/// A Plan about to run as a Pod.
pub(crate) struct KubeLaunch<'a> {
    cluster: &'a Cluster,
    settings: PodSettings,
    workload: Workload,
    warnings: Vec<String>,
    /// The agent's work could not be brought back: its Pod stays, so that
    /// nothing is lost.
    keep_pod: std::cell::Cell<bool>,
}

impl<'a> KubeLaunch<'a> {
    /// Checks that `plan` can run on a cluster and makes its Pod, before
    /// anything is created. (`kennel run` has its clone by now, and is
    /// refused here unless in clone mode; `kennel start` gets its clone
    /// later and is refused in [`Launch::start`].)
    pub(crate) fn new(
        cluster: &'a Cluster,
        placement: crate::Placement,
        plan: &Plan,
    ) -> Result<KubeLaunch<'a>, CliError> {
        if plan.ephemeral {
            Work::of(plan)?;
        }
        let crate::Placement {
            settings,
            workload,
            mut warnings,
        } = placement;
        warnings.extend(crate::session_pod(&settings, plan)?.warnings);
        Ok(KubeLaunch {
            cluster,
            settings,
            workload,
            warnings,
            keep_pod: std::cell::Cell::new(false),
        })
    }

    /// Everything between the Pod's creation and its deletion: the agent's
    /// exit code (128 + the signal when kennel was signalled).
    async fn run_in(
        &self,
        pod: &str,
        session: &SessionPod,
        plan: &Plan,
        work: &Work,
        proxy: Option<&SessionProxy>,
    ) -> Result<i32, CliError> {
        make_ready(self.cluster, pod, session, plan, work).await?;
        // The Pod has no network; the agent reaches kennel's proxy on this
        // machine through the cluster's API, for as long as it runs.
        let tunnel = match (proxy, &plan.network.proxy) {
            (Some(_), Some(inside)) => Some(crate::tunnel::open(
                self.cluster.clone(),
                pod.to_string(),
                inside.listen_address(),
                inside.socket.clone(),
            )),
            _ => None,
        };
        if tunnel.is_some() {
            crate::session::wait_listening(self.cluster, pod, plan).await?;
        }
        let argv = kennel_lib::backend::exec_argv(plan.command.clone());
        let end = attached::run(self.cluster, pod, &argv, plan.tty, plan.stdin).await;
        match end {
            Ok(AgentEnd::Exited(code)) => match bring_back(self.cluster, pod, work).await {
                Ok(()) => Ok(code),
                Err(error) => {
                    self.keep_pod.set(true);
                    Err(error.with_hint(format!(
                        "the agent exited {code}; its Pod {pod} is kept with its work (`kubectl exec {pod} -- git -C {workspace} log` reads it); `kennel clean` removes the Pod",
                        workspace = work.workspace
                    )))
                }
            },
            Ok(AgentEnd::Signalled(signo)) => {
                // Stop the agent, keep its work, then the Pod goes.
                signal_agent(self.cluster, pod, "TERM").await;
                let kept =
                    tokio::time::timeout(SIGNALLED_BRING_BACK, bring_back(self.cluster, pod, work))
                        .await;
                let failed = match kept {
                    Ok(Ok(())) => None,
                    Ok(Err(error)) => Some(error.message),
                    Err(_) => {
                        Some("the agent's work did not come back from the Pod in time".into())
                    }
                };
                if let Some(why) = failed {
                    self.keep(pod, &why);
                }
                Ok(128 + signo)
            }
            Err(error) => {
                // The exec broke, not the agent: its work may still be
                // there to keep.
                if let Err(lost) = bring_back(self.cluster, pod, work).await {
                    self.keep(pod, &lost.message);
                }
                Err(error)
            }
        }
    }

    /// Keeps the Pod `pod` (not deleted after the run) because the agent's
    /// work in it could not come back (`why`): nothing is lost.
    fn keep(&self, pod: &str, why: &str) {
        self.keep_pod.set(true);
        kennel_lib::report::warn(&format!(
            "{why}; Pod {pod} is kept with the agent's work (`kennel clean` removes it)"
        ));
    }

    /// The Pod made, run and deleted (kept when the agent's work could not
    /// come back).
    async fn run_pod(&self, plan: &Plan, proxy: Option<&SessionProxy>) -> Result<i32, CliError> {
        let work = Work::of(plan)?;
        let session = crate::session_pod(&self.settings, plan)?;
        tracing::info!(image = %plan.image.reference, "starting the session's Pod");
        let created = self
            .cluster
            .create(&session, self.workload)
            .await
            .map_err(cluster_error)?;
        let result = self.run_in(&created, &session, plan, &work, proxy).await;
        if self.keep_pod.get() {
            return result;
        }
        if let Err(error) = self.cluster.delete(&created).await {
            kennel_lib::report::warn(&format!(
                "cannot delete Pod {created}: {error} (`kennel clean` removes it)"
            ));
        }
        result
    }

    /// A persistent session's agent, in tmux in the ready Pod: the
    /// session's command (see `kennel_core::settings::session_command`)
    /// started in a session of its own, so that it outlives the exec that
    /// starts it.
    async fn start_agent(&self, pod: &str, plan: &Plan) -> Result<(), CliError> {
        let mut argv: Vec<String> = [
            "/bin/sh",
            "-c",
            "setsid -f \"$@\" </dev/null >/dev/null 2>&1",
            "kennel-start",
        ]
        .map(String::from)
        .to_vec();
        argv.extend(plan.command.iter().cloned());
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let started = self
            .cluster
            .exec(pod, &argv, b"")
            .await
            .map_err(cluster_error)?;
        if started.exit_code != 0 {
            return Err(CliError::kennel(format!(
                "cannot start the agent's session in Pod {pod} (exit {}): {}",
                started.exit_code,
                String::from_utf8_lossy(&started.stderr).trim()
            ))
            .with_hint("the image needs tmux and setsid (kennel's images have them)"));
        }
        crate::session::wait_session(self.cluster, pod).await
    }
}

#[async_trait(?Send)]
impl Launch for KubeLaunch<'_> {
    fn warnings(&self) -> Vec<String> {
        self.warnings.clone()
    }

    /// Nothing to build: the cluster's nodes pull the image (a Pod whose
    /// image they cannot have fails at once, naming it).
    async fn provision(
        &mut self,
        _recipes: &[kennel_image::Recipe],
        _options: &BuildOptions,
    ) -> Result<(), CliError> {
        Ok(())
    }

    async fn run(
        self: Box<Self>,
        plan: &Plan,
        proxy: Option<SessionProxy>,
    ) -> Result<i32, CliError> {
        let result = self.run_pod(plan, proxy.as_ref()).await;
        if let Some(proxy) = proxy {
            proxy.stop().await;
        }
        result
    }

    /// A Pod whose agent lives in tmux; recorded as running once the agent
    /// has started. With `allowlist` or `restricted`, the session's proxy
    /// daemon (which outlives kennel) serves the proxy and holds the
    /// tunnel to the Pod ([`crate::KubeBackend`]'s `keep_connected`); the
    /// agent starts once the tunnel listens in the Pod.
    async fn start(
        self: Box<Self>,
        plan: &Plan,
        proxy: Option<ProxySpec>,
        host: &kennel_core::host::HostContext,
        registry: &mut kennel_sessions::Registry,
        session_id: &str,
    ) -> Result<(), CliError> {
        // The Plan has its clone now (made after `prepare`).
        let work = Work::of(plan)?;
        let session = crate::session_pod(&self.settings, plan)?;
        let daemon = match proxy {
            Some(spec) => Some(
                kennel_lib::proxy_daemon::ProxyDaemon::spawn(
                    spec,
                    crate::NAME,
                    &kennel_core::settings::net_log_dir(host),
                )
                .await?,
            ),
            None => None,
        };
        let created = match self.cluster.create(&session, self.workload).await {
            Ok(created) => created,
            Err(error) => {
                if let Some(daemon) = daemon {
                    daemon.abort().await;
                }
                return Err(cluster_error(error));
            }
        };
        let started = async {
            make_ready(self.cluster, &created, &session, plan, &work).await?;
            if let Some(daemon) = daemon {
                daemon.watch(&plan.name)?;
                crate::session::wait_listening(self.cluster, &created, plan).await?;
            }
            self.start_agent(&created, plan).await
        }
        .await;
        if let Err(error) = started {
            // The daemon (if any) ends with the Pod.
            let _ = self.cluster.delete(&created).await;
            return Err(error);
        }
        Ok(registry.mark_running(session_id, &plan.name)?)
    }
}
