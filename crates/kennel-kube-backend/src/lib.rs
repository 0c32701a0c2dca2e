//! kennel's Kubernetes backend: a session is a Pod in a namespace of a
//! cluster, made from the same Plan as on every backend
//! ([`kennel_kube::waiting_pod_for`]).
//!
//! A Pod cannot mount the user's checkout, so sessions run in clone mode
//! only: kennel's clone of the session branch is packed and unpacked in
//! the Pod ([`kennel_kube::tar_of`]), the agent starts by exec once the
//! Pod's walls hold, and when it ends its work comes back as git objects —
//! a bundle made in the Pod, read by kennel and checked object by object
//! before it joins the host clone ([`kennel_git::Repo::receive_bundle`]) —
//! never as files. The
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
mod pod;
mod session;
mod tunnel;

use std::io::IsTerminal;
use std::time::Duration;

use async_trait::async_trait;
use kennel_core::config::{Config, KubernetesConfig};
use kennel_core::plan::{NetworkMode, Plan};
use kennel_kube::{
    Cluster, ClusterError, ClusterSettings, DEFAULT_HOME_SIZE, HomeVolume, PodSettings, PodState,
    Workload,
};
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
    /// The user's own config (its `[kubernetes]` table, and where each of
    /// its keys was set) and the cluster it names, connected on first use.
    connected: OnceCell<(Config, Cluster)>,
}

/// A cluster failure as the user sees it, with the fix where there is one.
pub(crate) fn cluster_error(error: ClusterError) -> CliError {
    let hint = match &error {
        ClusterError::Kubeconfig(_) => Some(
            "name the cluster in your own config: `[kubernetes]` kubeconfig, context, namespace (`kennel config edit`); `kubectl config current-context` shows what kubectl uses",
        ),
        error if error.is_forbidden() => Some(
            "your account may not do this in that namespace: kennel needs to create, read and delete Pods, pods/exec, Secrets, NetworkPolicies and PersistentVolumeClaims there (the `edit` role), and agent-sandbox's Sandboxes where the cluster has them (or set `[kubernetes] agent_sandbox = false`)",
        ),
        ClusterError::Api(_) => Some("`kubectl version` checks that the cluster answers"),
        _ => None,
    };
    let mut out = CliError::kennel(format!("Kubernetes: {error}"));
    out.hint = hint.map(str::to_string);
    out
}

impl KubeBackend {
    /// The user's config and the cluster, connected on first use.
    async fn connected(&self) -> Result<&(Config, Cluster), CliError> {
        self.connected
            .get_or_try_init(|| async {
                let config = kennel_lib::context::user_config()?;
                let settings = &config.file.kubernetes;
                let cluster = Cluster::connect(&ClusterSettings {
                    kubeconfig: settings.kubeconfig.as_deref().map(expand_home),
                    context: settings.context.clone(),
                    namespace: settings.namespace.clone(),
                })
                .await
                .map_err(cluster_error)?;
                tracing::debug!(namespace = cluster.namespace(), "connected to Kubernetes");
                Ok::<_, CliError>((config, cluster))
            })
            .await
    }

    async fn cluster(&self) -> Result<&Cluster, CliError> {
        Ok(&self.connected().await?.1)
    }

    /// The Pod of a persistent session whose agent must be running.
    async fn running<'a>(&'a self, found: &mut Found) -> Result<session::InPod<'a>, CliError> {
        let handle = found.sandbox_handle()?;
        let cluster = self.cluster().await?;
        let state = session::state(cluster, &handle).await?;
        if state == SandboxState::Running {
            return Ok(session::InPod {
                cluster,
                pod: pod_name(&handle),
            });
        }
        kennel_lib::backend::record_sandbox_state(found, state, false);
        Err(found.not_running())
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

/// `~/…` in the user's config, under their home.
fn expand_home(path: &std::path::Path) -> std::path::PathBuf {
    match (path.strip_prefix("~"), std::env::var_os("HOME")) {
        (Ok(rest), Some(home)) => std::path::Path::new(&home).join(rest),
        _ => path.to_path_buf(),
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

pub(crate) async fn state_of(cluster: &Cluster, handle: &str) -> Result<SandboxState, CliError> {
    let pod = cluster
        .pod_state(&pod_name(handle))
        .await
        .map_err(cluster_error)?;
    Ok(sandbox_state(pod.as_ref()))
}

/// A Pod's state as a sandbox's (`None`: the Pod is gone).
pub(crate) fn sandbox_state(pod: Option<&PodState>) -> SandboxState {
    match pod {
        None => SandboxState::Missing,
        Some(PodState::Ended(ended)) => SandboxState::Ended(Some(ended.exit_code)),
        Some(PodState::Pending | PodState::Running) => SandboxState::Running,
    }
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
        let (config, cluster) = self.connected().await?;
        let placement = placement(config, cluster, plan).await?;
        launch::KubeLaunch::new(cluster, placement, plan).map(|launch| Box::new(launch) as _)
    }

    async fn attach(&self, found: &mut Found) -> Result<i32, CliError> {
        let server = self.running(found).await?;
        kennel_lib::tmux::attach(&server).await
    }

    async fn exec(&self, found: &mut Found, command: Vec<String>) -> Result<i32, CliError> {
        let server = self.running(found).await?;
        let tty = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
        let argv = kennel_lib::backend::exec_argv(command);
        attached::run_for_user(server.cluster, &server.pod, argv, tty).await
    }

    async fn send(&self, found: &mut Found, text: &str, enter: bool) -> Result<(), CliError> {
        let server = self.running(found).await?;
        kennel_lib::tmux::send(&server, text, enter).await
    }

    async fn capture(
        &self,
        found: &mut Found,
        history: bool,
        escapes: bool,
    ) -> Result<Vec<u8>, CliError> {
        let server = self.running(found).await?;
        kennel_lib::tmux::capture(&server, history, escapes).await
    }

    async fn logs(
        &self,
        found: &mut Found,
        follow: bool,
        sink: &mut OutputSink<'_>,
    ) -> Result<(), CliError> {
        let handle = found.sandbox_handle()?;
        let cluster = self.cluster().await?;
        let pod = pod_name(&handle);
        let pod_state = cluster.pod_state(&pod).await.map_err(cluster_error)?;
        let state = session::state_in(cluster, &pod, pod_state.as_ref()).await;
        kennel_lib::backend::record_sandbox_state(found, state, false);
        // The Pod outlives its agent (for its logs and work) until stopped.
        if pod_state == Some(PodState::Running) {
            return session::logs(cluster, &pod, follow, sink).await;
        }
        match std::fs::read(session::saved_log(&found.session)) {
            Ok(log) => {
                sink(kennel_lib::backend::OutputStream::Stdout, &log);
                Ok(())
            }
            Err(_) => Err(CliError::kennel(format!(
                "the Pod of session {} is gone and kept no log",
                found.session.name
            ))),
        }
    }

    /// SIGTERM to the agent (its tmux pane's process group); after `grace`
    /// a hang-up; then its work comes back, its screen's log is kept, and
    /// the Pod is deleted (the session's clone is what lasts).
    async fn stop(&self, found: &mut Found, grace: Duration) -> Result<Stopped, CliError> {
        let handle = found.sandbox_handle()?;
        let cluster = self.cluster().await?;
        let state = session::state(cluster, &handle).await?;
        if state == SandboxState::Missing {
            kennel_lib::backend::record_sandbox_state(found, state, true);
            return Ok(Stopped::Already);
        }
        let pod = pod_name(&handle);
        let was_running = state == SandboxState::Running;
        if was_running {
            session::terminate(cluster, &pod, grace).await;
        }
        // The code the agent ended with, once it has (read again after
        // stopping a running agent: it has just written it).
        let code = match state {
            SandboxState::Ended(code) => code,
            _ => session::exit_code(cluster, &pod).await,
        };
        session::wind_up(cluster, &pod, &found.session).await?;
        found.mark(State::Stopped, code);
        Ok(match was_running {
            true => Stopped::Now,
            false => Stopped::Already,
        })
    }

    /// Every process of the agent's killed at once; its work (on disk in
    /// the Pod) still comes back before the Pod goes.
    async fn kill(&self, found: &mut Found) -> Result<(), CliError> {
        let handle = found.sandbox_handle()?;
        let cluster = self.cluster().await?;
        let pod = pod_name(&handle);
        if session::state(cluster, &handle).await? != SandboxState::Missing {
            pod::signal_agent(cluster, &pod, "KILL").await;
            session::wind_up(cluster, &pod, &found.session).await?;
        }
        found.mark(State::Stopped, None);
        Ok(())
    }

    async fn remove(&self, found: &mut Found, force: bool) -> Result<(), CliError> {
        if let Some(done) = kennel_lib::backend::remove_without_sandbox(found, force) {
            return done;
        }
        let handle = found.sandbox_handle()?;
        let cluster = self.cluster().await?;
        let state = session::state(cluster, &handle).await?;
        if state == SandboxState::Running && !force {
            return Err(found.running_error());
        }
        if state != SandboxState::Missing {
            let pod = pod_name(&handle);
            pod::signal_agent(cluster, &pod, "KILL").await;
            if let Err(error) = session::wind_up(cluster, &pod, &found.session).await {
                kennel_lib::report::warn(&error.message);
                cluster.delete(&pod).await.map_err(cluster_error)?;
            }
        }
        let _ = std::fs::remove_file(session::saved_log(&found.session));
        Ok(())
    }

    async fn observe(&self, session: &Session) -> Observed {
        let (handle, ephemeral) = match kennel_lib::backend::observe_locally(session) {
            Ok(asked) => asked,
            Err(known) => return known,
        };
        let Some(cluster) = self.answering().await else {
            return Observed::Unknown;
        };
        match session::state(cluster, handle).await {
            Ok(SandboxState::Running) if ephemeral => Observed::Orphaned,
            Ok(SandboxState::Running) => Observed::Running,
            Ok(SandboxState::Ended(Some(code))) if !ephemeral => {
                Observed::Ended(State::Exited, Some(code))
            }
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
            Ok(SandboxState::Missing) if !session::saved_log(session).exists() => Remains::Gone,
            _ => Remains::Kept,
        }
    }

    async fn discard(&self, session: &Session) -> Result<(), CliError> {
        let _ = std::fs::remove_file(session::saved_log(session));
        match &session.handle {
            Some(handle) => self.remove_sandbox(handle).await,
            None => Ok(()),
        }
    }

    /// The started session's tunnel to its proxy (see [`tunnel`]), held by
    /// the session's proxy daemon for as long as the Pod lives.
    async fn keep_connected(
        &self,
        handle: &str,
        proxy: &std::path::Path,
    ) -> Result<Option<Box<dyn std::any::Any>>, CliError> {
        let cluster = self.cluster().await?;
        let tunnel = tunnel::open(
            cluster.clone(),
            pod_name(handle),
            kennel_core::plan::listen_address(kennel_core::plan::PROXY_LISTEN_INSIDE),
            proxy.to_path_buf(),
        );
        Ok(Some(Box::new(tunnel)))
    }

    /// The running Pod's work, into the session's clone (before a review
    /// reads it). Nothing when the Pod is gone: its work came back when it
    /// was stopped.
    async fn bring_back(&self, session: &Session) -> Result<(), CliError> {
        let Some(handle) = &session.handle else {
            return Ok(());
        };
        let cluster = self.cluster().await?;
        let pod = pod_name(handle);
        if cluster.pod_state(&pod).await.map_err(cluster_error)? != Some(PodState::Running) {
            return Ok(());
        }
        let plan = session::plan_of(session)?;
        pod::bring_back(cluster, &pod, &pod::Work::of(&plan)?).await
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

/// Where and how a session's Pod is made, and what the user should know
/// about it.
pub(crate) struct Placement {
    pub(crate) settings: PodSettings,
    pub(crate) workload: Workload,
    pub(crate) warnings: Vec<String>,
}

/// `plan`'s [`Placement`], as the user's config and the cluster decide
/// (both questions to the cluster asked at once).
async fn placement(config: &Config, cluster: &Cluster, plan: &Plan) -> Result<Placement, CliError> {
    let settings = &config.file.kubernetes;
    let set_in = |key: &str| match config.origins.get(key) {
        Some(origin) => format!("`{key}` in {origin}"),
        None => format!("`{key}`"),
    };
    let ((home, warnings), workload) = tokio::try_join!(
        home_volume(settings, cluster, &set_in),
        workload(settings, cluster, &set_in)
    )?;
    Ok(Placement {
        settings: PodSettings {
            image: image_for(settings, plan),
            runtime_class: settings.runtime_class.clone(),
            home,
        },
        workload,
        warnings,
    })
}

/// The agent's home: a claim of the class `[kubernetes] storage_class`
/// names, else of the cluster's default class, else the Pod's own (said
/// in the warnings).
async fn home_volume(
    settings: &KubernetesConfig,
    cluster: &Cluster,
    set_in: &impl Fn(&str) -> String,
) -> Result<(HomeVolume, Vec<String>), CliError> {
    let size = settings
        .home_size
        .clone()
        .unwrap_or_else(|| DEFAULT_HOME_SIZE.to_string());
    if !kennel_kube::is_size(&size) {
        return Err(CliError::usage(format!(
            "Kubernetes: {} is `{size}`, which is not a size",
            set_in("kubernetes.home_size")
        ))
        .with_hint("write a Kubernetes quantity, such as \"10Gi\" or \"500Mi\""));
    }
    let claim = |storage_class| {
        Ok((
            HomeVolume::Claim {
                storage_class,
                size: size.clone(),
            },
            Vec::new(),
        ))
    };
    let without = match &settings.storage_class {
        Some(class) => {
            return match cluster.has_storage_class(class).await {
                Ok(true) => claim(Some(class.clone())),
                Ok(false) => Err(CliError::usage(format!(
                    "Kubernetes: the cluster has no StorageClass `{class}` ({})",
                    set_in("kubernetes.storage_class")
                ))
                .with_hint("`kubectl get storageclass` lists the cluster's classes; leave `storage_class` out for its default class")),
                // An account limited to its namespace: the claim will say.
                Err(error) if error.is_forbidden() => claim(Some(class.clone())),
                Err(error) => Err(cluster_error(error)),
            };
        }
        None => match cluster.default_storage_class().await {
            Ok(Some(_)) => return claim(None),
            Ok(None) => "the cluster has no default StorageClass",
            Err(error) if error.is_forbidden() => {
                "your account may not read the cluster's StorageClasses"
            }
            Err(error) => return Err(cluster_error(error)),
        },
    };
    Ok((
        HomeVolume::InPod,
        vec![format!(
            "Kubernetes: the agent's home is the Pod's own and goes with it ({without}); name a class in `[kubernetes] storage_class` to keep it between sessions"
        )],
    ))
}

/// How the Pod is made: through a Sandbox where the cluster has
/// agent-sandbox, unless `[kubernetes] agent_sandbox` says otherwise (the
/// cluster is not asked when it says false).
async fn workload(
    settings: &KubernetesConfig,
    cluster: &Cluster,
    set_in: &impl Fn(&str) -> String,
) -> Result<Workload, CliError> {
    if settings.agent_sandbox == Some(false) {
        return Ok(Workload::Pod);
    }
    match (settings.agent_sandbox, cluster.has_sandboxes().await) {
        (_, Ok(true)) => Ok(Workload::Sandbox),
        (None, Ok(false)) => Ok(Workload::Pod),
        (_, Ok(false)) => Err(CliError::usage(format!(
            "Kubernetes: the cluster has no agent-sandbox (no `sandboxes` in agents.x-k8s.io/v1beta1), and {} is true",
            set_in("kubernetes.agent_sandbox")
        ))
        .with_hint("install agent-sandbox on the cluster (kubernetes-sigs/agent-sandbox), or set `agent_sandbox = false` for plain Pods")),
        (None, Err(error)) if error.is_forbidden() => Ok(Workload::Pod),
        (_, Err(error)) => Err(cluster_error(error)),
    }
}

/// The Pod for `plan` as `settings` place it.
pub(crate) fn session_pod(
    settings: &PodSettings,
    plan: &Plan,
) -> Result<kennel_kube::SessionPod, CliError> {
    kennel_kube::waiting_pod_for(plan, settings)
        .map_err(|error| CliError::kennel(format!("Kubernetes: {error}")))
}

/// Does the Pod's network need its walls checked before the agent starts?
pub(crate) fn walled(plan: &Plan) -> bool {
    plan.network.mode != NetworkMode::Open
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_kubeconfig_under_the_home_is_found_there() {
        let home = std::env::var_os("HOME").map(std::path::PathBuf::from);
        let expanded = super::expand_home(std::path::Path::new("~/.kube/config"));
        if let Some(home) = home {
            assert_eq!(expanded, home.join(".kube/config"));
        }
        let plain = std::path::Path::new("/etc/kube/config");
        assert_eq!(super::expand_home(plain), plain);
        let tilde_user = std::path::Path::new("~alice/config");
        assert_eq!(super::expand_home(tilde_user), tilde_user);
    }
}
