//! kennel's Kubernetes backend: a session is a Pod in a namespace of a
//! cluster, made from the same Plan as on every backend
//! ([`kennel_kube::waiting_pod_for`]).
//!
//! A Pod cannot mount the user's checkout, so sessions run in clone mode
//! only: kennel's clone of the session branch is packed and unpacked in
//! the Pod ([`kennel_kube::tar_of`]), the agent starts by exec once the
//! Pod's walls hold, and when it ends its work comes back as git objects —
//! a bundle made in the Pod, fetched into the host clone with every check
//! git has ([`kennel_git::Repo::receive_bundle`]) — never as files. The
//! review commands (`diff`, `merge`, `sync`) then read the host clone as
//! on every backend.
//!
//! Which cluster comes from the user's own config (`[kubernetes]`), never
//! a project's, and `auto` never chooses this backend: the user's code
//! goes to another machine only when the user names it.
//!
//! Registered by the binary:
//! `kennel_lib::backend::register(NAME, backend, Selection::ByName)`.

mod attached;
mod launch;

use std::time::Duration;

use async_trait::async_trait;
use kennel_core::config::KubernetesConfig;
use kennel_core::plan::{NetworkMode, Plan};
use kennel_kube::{Cluster, ClusterError, ClusterSettings, PodSettings, PodState};
use kennel_lib::backend::{
    Backend, Images, Launch, Observed, OutputSink, Remains, Sandbox, SandboxState, Stopped,
};
use kennel_lib::error::CliError;
use kennel_lib::sessions::Found;
use kennel_sessions::{Session, State};
use tokio::sync::OnceCell;

/// The name Plans and the registry store.
pub const NAME: &str = "kubernetes";

/// The backend, for `kennel_lib::backend::register`.
pub fn backend() -> Box<dyn Backend> {
    Box::new(KubeBackend::default())
}

#[derive(Default)]
pub struct KubeBackend {
    /// The user's `[kubernetes]` settings and the cluster they name,
    /// connected on first use.
    connected: OnceCell<(KubernetesConfig, Cluster)>,
}

/// A cluster failure as the user sees it, with the fix where there is one.
pub(crate) fn cluster_error(error: ClusterError) -> CliError {
    let hint = match &error {
        ClusterError::Kubeconfig(_) => Some(
            "name the cluster in your own config: `[kubernetes]` kubeconfig, context, namespace (`kennel config edit`); `kubectl config current-context` shows what kubectl uses",
        ),
        error if error.is_forbidden() => Some(
            "your account may not do this in that namespace: kennel needs to create, read and delete Pods, pods/exec, Secrets and NetworkPolicies there (the `edit` role)",
        ),
        ClusterError::Api(_) => Some("`kubectl version` checks that the cluster answers"),
        _ => None,
    };
    let mut out = CliError::kennel(format!("Kubernetes: {error}"));
    out.hint = hint.map(str::to_string);
    out
}

impl KubeBackend {
    /// The settings and the cluster, connected on first use.
    async fn connected(&self) -> Result<&(KubernetesConfig, Cluster), CliError> {
        self.connected
            .get_or_try_init(|| async {
                let settings = kennel_lib::context::user_config()?.file.kubernetes;
                let cluster = Cluster::connect(&ClusterSettings {
                    kubeconfig: settings.kubeconfig.clone(),
                    context: settings.context.clone(),
                    namespace: settings.namespace.clone(),
                })
                .await
                .map_err(cluster_error)?;
                tracing::debug!(namespace = cluster.namespace(), "connected to Kubernetes");
                Ok::<_, CliError>((settings, cluster))
            })
            .await
    }

    async fn cluster(&self) -> Result<&Cluster, CliError> {
        Ok(&self.connected().await?.1)
    }

    /// The cluster, or `None` (logged) when it does not answer.
    async fn answering(&self) -> Option<&Cluster> {
        match self.cluster().await {
            Ok(cluster) => Some(cluster),
            Err(error) => {
                tracing::debug!("Kubernetes does not answer: {}", error.message);
                None
            }
        }
    }
}

/// The Pod a session's handle (its sandbox's name) names.
fn pod_name(handle: &str) -> String {
    kennel_kube::object_name(handle).unwrap_or_else(|| handle.to_string())
}

/// The image as the cluster's nodes find it: under the user's registry
/// when they named one.
fn image_for(settings: &KubernetesConfig, plan: &Plan) -> String {
    match &settings.registry {
        Some(registry) if plan.image.managed => {
            format!(
                "{}/{}",
                registry.trim_end_matches('/'),
                plan.image.reference
            )
        }
        _ => plan.image.reference.clone(),
    }
}

async fn state_of(cluster: &Cluster, handle: &str) -> Result<SandboxState, CliError> {
    Ok(
        match cluster
            .pod_state(&pod_name(handle))
            .await
            .map_err(cluster_error)?
        {
            None => SandboxState::Missing,
            Some(PodState::Ended(ended)) => SandboxState::Ended(Some(ended.exit_code)),
            Some(PodState::Pending | PodState::Running) => SandboxState::Running,
        },
    )
}

/// What only `kennel start`'s sessions would need.
fn persistent_not_built() -> CliError {
    CliError::kennel(
        "the Kubernetes backend runs `kennel run` sessions only so far; persistent sessions (`kennel start`, attach, send, capture, logs, exec) are not built yet",
    )
    .with_hint("use `kennel run --backend kubernetes --mode clone AGENT`, or another backend for `kennel start`")
}

#[async_trait(?Send)]
impl Backend for KubeBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn runs_images(&self) -> bool {
        true
    }

    fn ends_with_owner(&self) -> bool {
        // A Pod outlives a kennel that was killed.
        false
    }

    fn persistent(&self, plan: &mut Plan) {
        kennel_lib::backend::persistent_in_sandbox(plan);
    }

    async fn connect(&self) -> Result<String, CliError> {
        let cluster = self.cluster().await?;
        let version = cluster.version().await.map_err(cluster_error)?;
        Ok(format!(
            "Kubernetes {version}, namespace {}",
            cluster.namespace()
        ))
    }

    async fn images(&self) -> Result<&dyn Images, CliError> {
        Err(CliError::usage(
            "kennel does not build images on a Kubernetes cluster: its nodes pull them",
        )
        .with_hint("build the agent's image with another backend (`kennel image build --backend docker AGENT`), push it to a registry your cluster pulls from, and name that registry in `[kubernetes] registry`"))
    }

    async fn sandbox_state(&self, handle: &str) -> Result<SandboxState, CliError> {
        state_of(self.cluster().await?, handle).await
    }

    async fn prepare<'a>(&'a self, plan: &Plan) -> Result<Box<dyn Launch + 'a>, CliError> {
        let (settings, cluster) = self.connected().await?;
        launch::KubeLaunch::new(cluster, settings, plan).map(|launch| Box::new(launch) as _)
    }

    async fn attach(&self, _found: &mut Found) -> Result<i32, CliError> {
        Err(persistent_not_built())
    }

    async fn exec(&self, _found: &mut Found, _command: Vec<String>) -> Result<i32, CliError> {
        Err(persistent_not_built())
    }

    async fn send(&self, _found: &mut Found, _text: &str, _enter: bool) -> Result<(), CliError> {
        Err(persistent_not_built())
    }

    async fn capture(
        &self,
        _found: &mut Found,
        _history: bool,
        _escapes: bool,
    ) -> Result<Vec<u8>, CliError> {
        Err(persistent_not_built())
    }

    async fn logs(
        &self,
        _found: &mut Found,
        _follow: bool,
        _sink: &mut OutputSink<'_>,
    ) -> Result<(), CliError> {
        Err(persistent_not_built())
    }

    async fn stop(&self, found: &mut Found, _grace: Duration) -> Result<Stopped, CliError> {
        let handle = found.sandbox_handle()?;
        let cluster = self.cluster().await?;
        let state = state_of(cluster, &handle).await?;
        cluster
            .delete(&pod_name(&handle))
            .await
            .map_err(cluster_error)?;
        found.mark(State::Stopped, None);
        Ok(match state {
            SandboxState::Running => Stopped::Now,
            _ => Stopped::Already,
        })
    }

    async fn kill(&self, found: &mut Found) -> Result<(), CliError> {
        let handle = found.sandbox_handle()?;
        self.remove_sandbox(&handle).await?;
        found.mark(State::Stopped, None);
        Ok(())
    }

    async fn remove(&self, found: &mut Found, force: bool) -> Result<(), CliError> {
        if let Some(done) = kennel_lib::backend::remove_without_sandbox(found, force) {
            return done;
        }
        let handle = found.sandbox_handle()?;
        let cluster = self.cluster().await?;
        if state_of(cluster, &handle).await? == SandboxState::Running && !force {
            return Err(found.running_error());
        }
        self.remove_sandbox(&handle).await
    }

    async fn observe(&self, session: &Session) -> Observed {
        let (handle, ephemeral) = match kennel_lib::backend::observe_locally(session) {
            Ok(asked) => asked,
            Err(known) => return known,
        };
        let Some(cluster) = self.answering().await else {
            return Observed::Unknown;
        };
        match state_of(cluster, handle).await {
            Ok(SandboxState::Running) if ephemeral => Observed::Orphaned,
            Ok(SandboxState::Running) => Observed::Running,
            Ok(SandboxState::Ended(_) | SandboxState::Missing) => {
                Observed::Ended(State::Stopped, None)
            }
            Err(error) => {
                tracing::debug!(
                    "cannot ask Kubernetes about {}: {}",
                    session.name,
                    error.message
                );
                Observed::Unknown
            }
        }
    }

    async fn remains(&self, session: &Session) -> Remains {
        let (Some(handle), Some(cluster)) = (&session.handle, self.answering().await) else {
            return Remains::Kept;
        };
        match state_of(cluster, handle).await {
            Ok(SandboxState::Missing) => Remains::Gone,
            _ => Remains::Kept,
        }
    }

    async fn discard(&self, session: &Session) -> Result<(), CliError> {
        match &session.handle {
            Some(handle) => self.remove_sandbox(handle).await,
            None => Ok(()),
        }
    }

    async fn sandboxes(&self, registry_label: &str) -> Option<Vec<Sandbox>> {
        let cluster = self.answering().await?;
        let registry = (kennel_core::settings::LABEL_REGISTRY, registry_label);
        match cluster.pods_labelled(&[registry]).await {
            Ok(pods) => Some(
                pods.into_iter()
                    .map(|(name, labels)| Sandbox {
                        session: labels.get(kennel_core::settings::LABEL_SESSION).cloned(),
                        id: name.clone(),
                        name,
                    })
                    .collect(),
            ),
            Err(error) => {
                tracing::warn!("cannot list the cluster's Pods: {error}");
                None
            }
        }
    }

    async fn remove_sandbox(&self, id: &str) -> Result<(), CliError> {
        self.cluster()
            .await?
            .delete(&pod_name(id))
            .await
            .map_err(cluster_error)
    }
}

/// The Pod for `plan` as the user's settings place it.
pub(crate) fn session_pod(
    settings: &KubernetesConfig,
    plan: &Plan,
) -> Result<kennel_kube::SessionPod, CliError> {
    let pod_settings = PodSettings {
        image: image_for(settings, plan),
        runtime_class: settings.runtime_class.clone(),
    };
    kennel_kube::waiting_pod_for(plan, &pod_settings)
        .map_err(|error| CliError::kennel(format!("Kubernetes: {error}")))
}

/// Does the Pod's network need its walls checked before the agent starts?
pub(crate) fn walled(plan: &Plan) -> bool {
    plan.network.mode != NetworkMode::Open
}
