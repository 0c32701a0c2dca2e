//! What `run` and `start` share about a session's Pod: making it ready for
//! the agent (started, walled in, the clone sent in), ending the agent,
//! and bringing its work back.

use std::time::Duration;

use kennel_core::plan::{GitPlan, MountPurpose, Plan};
use kennel_kube::{Cluster, SessionPod};
use kennel_lib::error::CliError;

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
/// The most making that bundle may take (git in the Pod is the agent's to
/// slow down).
const BUNDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// The session's clone (on the host) and where the Pod has it.
#[derive(Debug, Clone)]
pub(crate) struct Work {
    pub git: GitPlan,
    /// The workspace's directory in the Pod (the Plan's target).
    pub workspace: String,
}

impl Work {
    /// The clone of `plan`: a Pod cannot mount the checkout, so sessions
    /// run in clone mode only.
    pub(crate) fn of(plan: &Plan) -> Result<Work, CliError> {
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
        Ok(Work { git, workspace })
    }
}

/// Waits for the created Pod `pod` to start and its walls to hold, then
/// sends the session's clone in: what must be true before the agent runs.
pub(crate) async fn make_ready(
    cluster: &Cluster,
    pod: &str,
    session: &SessionPod,
    plan: &Plan,
    work: &Work,
) -> Result<(), CliError> {
    cluster
        .wait_started(pod, START_TIMEOUT)
        .await
        .map_err(|error| start_error(error, session))?;
    if crate::walled(plan) {
        let held = cluster
            .wait_walled(pod, WALLS_TIMEOUT)
            .await
            .map_err(cluster_error)?;
        tracing::debug!(?held, "the Pod's walls hold");
    }
    let tree = kennel_kube::tar_of(&work.git.dir, TREE_LIMIT)
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
    cluster
        .send_tree(pod, &tree, &work.workspace)
        .await
        .map_err(cluster_error)
}

/// Sends `signal` (`TERM`, `KILL`) to every process of the user's in the
/// Pod but its waiting shell, which outlives it (see
/// `kennel_kube::waiting_pod_for`).
pub(crate) async fn signal_agent(cluster: &Cluster, pod: &str, signal: &str) {
    let signal = format!("-{signal}");
    let sent = crate::session::ask(cluster, pod, &["kill", &signal, "-1"]).await;
    tracing::debug!(?sent, signal, "signal to the agent's processes");
}

/// The agent's work, back into the session's clone on the host: a bundle
/// made in the Pod (hostile bytes: the agent chose the `git` that made
/// it), at most [`BUNDLE_LIMIT`], received by the host's git with every
/// check ([`kennel_git::Repo::receive_bundle`]).
pub(crate) async fn bring_back(cluster: &Cluster, pod: &str, work: &Work) -> Result<(), CliError> {
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
    let argv = kennel_git::bundle_command(&work.workspace, &work.git.branch, &work.git.base);
    let made = tokio::time::timeout(
        BUNDLE_TIMEOUT,
        cluster.exec_to(pod, &argv, &mut out, BUNDLE_LIMIT),
    )
    .await
    .map_err(|_| {
        lost(format!(
            "git in the Pod did not finish within {} minutes",
            BUNDLE_TIMEOUT.as_secs() / 60
        ))
    })?
    .map_err(|error| lost(error.to_string()))?;
    if made.exit_code != 0 {
        return Err(lost(format!(
            "git in the Pod failed (exit {}): {}",
            made.exit_code,
            String::from_utf8_lossy(&made.stderr).trim()
        )));
    }
    let repo =
        kennel_git::Repo::open(&work.git.repository).map_err(kennel_lib::checkout::git_error)?;
    let checkout = kennel_git::Checkout {
        mode: kennel_git::CheckoutMode::Clone,
        dir: work.git.dir.clone(),
        branch: work.git.branch.clone(),
        base: work.git.base.clone(),
        common_dir: repo.common_dir().to_path_buf(),
        admin_dir: None,
        alternates: Vec::new(),
    };
    let received = repo
        .receive_bundle(&checkout, bundle.path())
        .map_err(|error| lost(error.to_string()))?;
    tracing::info!(branch = %work.git.branch, tip = %received.branch_tip, "the agent's work came back from the Pod");
    Ok(())
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
    if ["ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull"]
        .iter()
        .any(|reason| text.contains(reason))
    {
        out.hint = Some(format!(
            "the cluster's nodes cannot have the image {image}: push it to a registry they pull from and name it in `[kubernetes] registry`, or pass --image with one they have"
        ));
    }
    out
}
