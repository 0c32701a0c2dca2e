//! `kennel run` on a cluster: the Pod made and walled in, the session's
//! clone sent in, the agent attached, its work brought back as git
//! objects, the Pod deleted — also when the agent fails or kennel is
//! signalled.

use std::time::Duration;

use async_trait::async_trait;
use kennel_core::config::KubernetesConfig;
use kennel_core::plan::{GitPlan, MountPurpose, Plan};
use kennel_kube::{Cluster, SessionPod};
use kennel_lib::backend::Launch;
use kennel_lib::error::CliError;
use kennel_lib::image_build::BuildOptions;
use kennel_lib::proxy::{ProxySpec, SessionProxy};

use crate::attached::{self, AgentEnd};
use crate::cluster_error;

/// How long a Pod may take to start (its image pulled, its volumes made).
const START_TIMEOUT: Duration = Duration::from_secs(180);
/// How long its NetworkPolicy may take to hold once it runs.
const WALLS_TIMEOUT: Duration = Duration::from_secs(30);
/// The most of the session's clone that is sent to a Pod.
const TREE_LIMIT: u64 = 2 << 30;
/// The most the agent's work may weigh on its way back (a bundle of the
/// commits and files the session added to its start).
const BUNDLE_LIMIT: u64 = 2 << 30;
/// How long bringing the agent's work back may take once kennel was
/// signalled (the user wants kennel gone; the Pod is deleted after).
const SIGNALLED_BRING_BACK: Duration = Duration::from_secs(20);

/// A Plan about to run as a Pod.
pub(crate) struct KubeLaunch<'a> {
    cluster: &'a Cluster,
    session: SessionPod,
    git: GitPlan,
    /// The workspace's directory in the Pod (the Plan's target).
    workspace: String,
    warnings: Vec<String>,
    /// The agent's work could not be brought back: its Pod stays, so that
    /// nothing is lost.
    keep_pod: std::cell::Cell<bool>,
}

impl<'a> KubeLaunch<'a> {
    /// Checks that `plan` can run on a cluster (clone mode: a Pod cannot
    /// mount the checkout) and makes its Pod, before anything is created.
    pub(crate) fn new(
        cluster: &'a Cluster,
        settings: &KubernetesConfig,
        plan: &Plan,
    ) -> Result<KubeLaunch<'a>, CliError> {
        let git = match &plan.git {
            Some(git) if git.mode == "clone" => git.clone(),
            _ => {
                return Err(CliError::usage(
                    "the Kubernetes backend runs sessions in clone mode only: a Pod cannot mount your checkout",
                )
                .with_hint(
                    "add `--mode clone` (the session gets its own clone, sent to the Pod; `kennel diff` and `kennel merge` review what comes back), or set `mode = \"clone\"` under [defaults]",
                ));
            }
        };
        let workspace = plan
            .mount(MountPurpose::Workspace)
            .map(|mount| mount.target.clone())
            .unwrap_or_else(|| plan.workspace.clone());
        let workspace = workspace
            .to_str()
            .ok_or_else(|| {
                CliError::kennel(format!(
                    "the workspace path {} is not UTF-8: a Pod cannot have it",
                    workspace.display()
                ))
            })?
            .to_string();
        let session = crate::session_pod(settings, plan)?;
        let mut warnings = session.warnings.clone();
        warnings.push(
            "Kubernetes: the agent's home is the Pod's own and goes with it (its logins and state are not kept between sessions yet)"
                .to_string(),
        );
        Ok(KubeLaunch {
            cluster,
            session,
            git,
            workspace,
            warnings,
            keep_pod: std::cell::Cell::new(false),
        })
    }

    fn pod(&self) -> String {
        self.session.pod.metadata.name.clone().unwrap_or_default()
    }

    /// Everything between the Pod's creation and its deletion: the agent's
    /// exit code (128 + the signal when kennel was signalled).
    async fn run_in(&self, pod: &str, plan: &Plan) -> Result<i32, CliError> {
        self.cluster
            .wait_started(pod, START_TIMEOUT)
            .await
            .map_err(|error| start_error(error, &self.session))?;
        if crate::walled(plan) {
            let held = self
                .cluster
                .wait_walled(pod, WALLS_TIMEOUT)
                .await
                .map_err(cluster_error)?;
            tracing::debug!(?held, "the Pod's walls hold");
        }
        let tree = kennel_kube::tar_of(&self.git.dir, TREE_LIMIT)
            .map_err(|error| CliError::kennel(format!("Kubernetes: {error}")))?;
        if !tree.left_out.is_empty() {
            kennel_lib::report::warn(&format!(
                "not sent to the Pod (neither a file, a directory nor a link): {}",
                tree.left_out
                    .iter()
                    .map(|path| path.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        self.cluster
            .send_tree(pod, &tree, &self.workspace)
            .await
            .map_err(cluster_error)?;
        let argv = kennel_lib::backend::exec_argv(plan.command.clone());
        let end = attached::run(self.cluster, pod, &argv, plan.tty, plan.stdin).await;
        match end {
            Ok(AgentEnd::Exited(code)) => match self.bring_back(pod).await {
                Ok(()) => Ok(code),
                Err(error) => {
                    self.keep_pod.set(true);
                    Err(error.with_hint(format!(
                        "the agent exited {code}; its Pod {pod} is kept with its work (`kubectl exec {pod} -- git -C {workspace} log` reads it); `kennel clean` removes the Pod",
                        workspace = self.workspace
                    )))
                }
            },
            Ok(AgentEnd::Signalled(signo)) => {
                // Stop the agent, keep its work, then the Pod goes.
                self.end_agent(pod).await;
                match tokio::time::timeout(SIGNALLED_BRING_BACK, self.bring_back(pod)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => kennel_lib::report::warn(&error.message),
                    Err(_) => kennel_lib::report::warn(
                        "the agent's work did not come back from the Pod in time; it is lost",
                    ),
                }
                Ok(128 + signo)
            }
            Err(error) => {
                // The exec broke, not the agent: its work may still be
                // there to keep.
                if let Err(lost) = self.bring_back(pod).await {
                    kennel_lib::report::warn(&lost.message);
                }
                Err(error)
            }
        }
    }

    /// SIGTERM to everything the agent's user runs in the Pod but the
    /// Pod's own first process.
    async fn end_agent(&self, pod: &str) {
        let ended = self.cluster.exec(pod, &["kill", "-TERM", "-1"], b"").await;
        tracing::debug!(?ended, "SIGTERM to the agent");
    }

    /// The agent's work, back into the session's clone on the host: a
    /// bundle made in the Pod (hostile bytes: the agent chose the `git`
    /// that made it), at most [`BUNDLE_LIMIT`], fetched by the host's git
    /// with every check ([`kennel_git::Repo::receive_bundle`]).
    async fn bring_back(&self, pod: &str) -> Result<(), CliError> {
        let lost = |why: String| {
            CliError::kennel(format!(
                "the agent's work in Pod {pod} could not be brought back: {why}"
            ))
        };
        let bundle = tempfile::Builder::new()
            .prefix("kennel-pod-")
            .suffix(".bundle")
            .tempfile()
            .map_err(|error| lost(format!("a temporary file: {error}")))?;
        let file = bundle
            .reopen()
            .map_err(|error| lost(format!("a temporary file: {error}")))?;
        let mut out = tokio::fs::File::from_std(file);
        let argv = kennel_git::bundle_command(&self.workspace, &self.git.branch, &self.git.base);
        let made = self
            .cluster
            .exec_to(pod, &argv, &mut out, BUNDLE_LIMIT)
            .await
            .map_err(|error| lost(error.to_string()))?;
        if made.exit_code != 0 {
            return Err(lost(format!(
                "git in the Pod failed (exit {}): {}",
                made.exit_code,
                String::from_utf8_lossy(&made.stderr).trim()
            )));
        }
        let repo = kennel_git::Repo::open(&self.git.repository)
            .map_err(kennel_lib::checkout::git_error)?;
        let checkout = kennel_git::Checkout {
            mode: kennel_git::CheckoutMode::Clone,
            dir: self.git.dir.clone(),
            branch: self.git.branch.clone(),
            base: self.git.base.clone(),
            common_dir: repo.common_dir().to_path_buf(),
            admin_dir: None,
            alternates: Vec::new(),
        };
        let received = repo
            .receive_bundle(&checkout, bundle.path())
            .map_err(|error| lost(error.to_string()))?;
        tracing::info!(branch = %self.git.branch, tip = %received.branch_tip, "the agent's work came back from the Pod");
        Ok(())
    }
}

/// A Pod that cannot start, as the user sees it.
fn start_error(error: kennel_kube::ClusterError, session: &SessionPod) -> CliError {
    let image = session
        .pod
        .spec
        .as_ref()
        .and_then(|spec| spec.containers.first())
        .and_then(|container| container.image.clone())
        .unwrap_or_default();
    let text = error.to_string();
    let mut out = cluster_error(error);
    if text.contains("ErrImagePull")
        || text.contains("ImagePullBackOff")
        || text.contains("ErrImageNeverPull")
    {
        out.hint = Some(format!(
            "the cluster's nodes cannot have the image {image}: push it to a registry they pull from and name it in `[kubernetes] registry`, or pass --image with one they have"
        ));
    }
    out
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
        // The egress proxy is not in the Pod yet: its policy keeps the Pod
        // off the network instead (said in the warnings).
        if let Some(proxy) = proxy {
            proxy.stop().await;
        }
        let pod = self.pod();
        tracing::info!(pod, image = %plan.image.reference, "starting the session's Pod");
        let created = self
            .cluster
            .create(&self.session)
            .await
            .map_err(cluster_error)?;
        let result = self.run_in(&created, plan).await;
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

    async fn start(
        self: Box<Self>,
        _plan: &Plan,
        _proxy: Option<ProxySpec>,
        _host: &kennel_core::host::HostContext,
        _registry: &mut kennel_sessions::Registry,
        _session_id: &str,
    ) -> Result<(), CliError> {
        Err(crate::persistent_not_built())
    }
}
