//! The cluster: one namespace of it, through its API (kube-rs), as the
//! user's kubeconfig allows.

use std::time::Duration;

use futures_util::AsyncReadExt;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{
    Api, AttachParams, DeleteParams, DynamicObject, LogParams, Patch, PatchParams, PostParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::await_condition;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};

use crate::pod::{AGENT_CONTAINER, MANAGED_BY, SessionPod};

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("no kubeconfig to reach a cluster with ({0})")]
    Kubeconfig(String),
    #[error("the cluster's API: {0}")]
    Api(#[from] kube::Error),
    #[error("Pod {pod}: {what}")]
    Pod { pod: String, what: String },
    #[error("Pod {pod} did not {what} within {seconds} s{}", still.as_deref().map(|why| format!(" ({why})")).unwrap_or_default())]
    Timeout {
        pod: String,
        what: &'static str,
        seconds: u64,
        /// Why it still waits, as the cluster says (not scheduled, and the
        /// scheduler's reason; its container still being made).
        still: Option<String>,
    },
}

impl ClusterError {
    /// The cluster refused the user's account this (HTTP 403).
    pub fn is_forbidden(&self) -> bool {
        matches!(self, ClusterError::Api(kube::Error::Api(status)) if status.code == 403)
    }
}

/// How a session's Pod is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// By kennel, as a plain Pod.
    Pod,
    /// By agent-sandbox's controller, from a `Sandbox` that owns it
    /// ([`crate::sandbox`]).
    Sandbox,
}

/// How long agent-sandbox's controller may take to make a Sandbox's Pod.
const SANDBOX_POD_TIMEOUT: Duration = Duration::from_secs(30);

/// Which cluster, as the user's configuration names it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterSettings {
    /// None: `KUBECONFIG`, else `~/.kube/config`.
    pub kubeconfig: Option<std::path::PathBuf>,
    pub context: Option<String>,
    pub namespace: Option<String>,
}

/// Where kennel's sessions go: a namespace of a cluster.
#[derive(Clone)]
pub struct Cluster {
    client: kube::Client,
    namespace: String,
}

/// What a command run in a Pod ([`Cluster::exec`]) did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Executed {
    pub exit_code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Where a Pod is ([`Cluster::pod_state`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodState {
    /// Made, its container not started yet.
    Pending,
    Running,
    Ended(Ended),
}

/// How a Pod's agent ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    pub exit_code: i32,
    /// The container's own word for it (`Completed`, `Error`, `OOMKilled`).
    pub reason: Option<String>,
}

impl Cluster {
    /// The cluster `settings` name: its kubeconfig's context (the current
    /// one when None), in its namespace (the context's, else `default`).
    pub async fn connect(settings: &ClusterSettings) -> Result<Cluster, ClusterError> {
        let kubeconfig = match &settings.kubeconfig {
            Some(path) => Kubeconfig::read_from(path).map_err(|error| {
                ClusterError::Kubeconfig(format!("{}: {error}", path.display()))
            })?,
            None => Kubeconfig::read().map_err(|error| {
                ClusterError::Kubeconfig(format!("{error}; set KUBECONFIG or write ~/.kube/config"))
            })?,
        };
        let options = KubeConfigOptions {
            context: settings.context.clone(),
            ..Default::default()
        };
        let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .map_err(|error| ClusterError::Kubeconfig(error.to_string()))?;
        // A cluster that does not answer is said soon (`kennel doctor`,
        // `clean` and `ls` ask every backend); reads have no limit, since
        // an agent's terminal may be quiet for as long as it likes.
        config.connect_timeout = Some(Duration::from_secs(10));
        config.read_timeout = None;
        let namespace = settings
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let client = kube::Client::try_from(config)?;
        Ok(Cluster { client, namespace })
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The API server's version (`v1.35.4`): the cluster answers.
    pub async fn version(&self) -> Result<String, ClusterError> {
        Ok(self.client.apiserver_version().await?.git_version)
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn claims(&self) -> Api<PersistentVolumeClaim> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn policies(&self) -> Api<NetworkPolicy> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn storage_classes(&self) -> Api<StorageClass> {
        Api::all(self.client.clone())
    }

    fn sandboxes(&self) -> Api<DynamicObject> {
        Api::namespaced_with(
            self.client.clone(),
            &self.namespace,
            &crate::sandbox::api_resource(),
        )
    }

    /// Whether the cluster serves agent-sandbox's `Sandbox` (its CRDs are
    /// installed).
    pub async fn has_sandboxes(&self) -> Result<bool, ClusterError> {
        let group_version = format!("{}/{}", crate::sandbox::GROUP, crate::sandbox::VERSION);
        match self.client.list_api_group_resources(&group_version).await {
            Ok(list) => Ok(list
                .resources
                .iter()
                .any(|resource| resource.name == crate::sandbox::PLURAL)),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
            Err(error) => Err(error.into()),
        }
    }

    /// Creates the session's NetworkPolicy (before the Pod: the Pod is
    /// never there without its walls asked for), its Secret and its Pod
    /// (as `workload` says: by kennel, or by agent-sandbox's controller
    /// from a Sandbox, once that Pod exists); the policy and the Secret are
    /// then owned by the Pod or the Sandbox, so that they go when it does.
    /// What was made is removed again when a step fails.
    pub async fn create(
        &self,
        session: &SessionPod,
        workload: Workload,
    ) -> Result<String, ClusterError> {
        // The home's claim first, and kept whatever happens next: it is
        // the agent's home on this repository, not the session's.
        if let Some(claim) = &session.home_claim {
            match self.claims().create(&PostParams::default(), claim).await {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 409 => {}
                Err(error) => return Err(error.into()),
            }
        }
        let policy = create_named(&self.policies(), session.policy.as_ref()).await?;
        let secret = match create_named(&self.secrets(), session.secret.as_ref()).await {
            Ok(secret) => secret,
            Err(error) => return Err(self.undo(error, policy, None).await),
        };
        let made = match workload {
            Workload::Pod => self
                .pods()
                .create(&PostParams::default(), &session.pod)
                .await
                .map(|pod| (pod.metadata, "v1".to_string(), "Pod")),
            Workload::Sandbox => {
                let sandbox = crate::sandbox::sandbox_for(&session.pod);
                self.sandboxes()
                    .create(&PostParams::default(), &sandbox)
                    .await
                    .map(|sandbox| {
                        let api_version =
                            format!("{}/{}", crate::sandbox::GROUP, crate::sandbox::VERSION);
                        (sandbox.metadata, api_version, crate::sandbox::KIND)
                    })
            }
        };
        let (metadata, api_version, kind) = match made {
            Ok(made) => made,
            Err(error) => return Err(self.undo(error.into(), policy, secret).await),
        };
        let name = metadata.name.clone().unwrap_or_default();
        if workload == Workload::Sandbox
            && let Err(error) = self.await_sandbox_pod(&name).await
        {
            let _ = self.delete(&name).await;
            return Err(self.undo(error, policy, secret).await);
        }
        if let Some(uid) = metadata.uid {
            let owner = OwnerReference {
                api_version,
                kind: kind.to_string(),
                name: name.clone(),
                uid,
                ..Default::default()
            };
            let patch = serde_json::json!({"metadata": {"ownerReferences": [owner]}});
            let patch = Patch::Merge(&patch);
            if let Some(secret) = &secret {
                self.secrets()
                    .patch(secret, &PatchParams::default(), &patch)
                    .await?;
            }
            if let Some(policy) = &policy {
                self.policies()
                    .patch(policy, &PatchParams::default(), &patch)
                    .await?;
            }
        }
        Ok(name)
    }

    /// Waits until agent-sandbox's controller has made the Sandbox `name`'s
    /// Pod (named after it): every later wait is on that Pod.
    async fn await_sandbox_pod(&self, name: &str) -> Result<(), ClusterError> {
        let appeared = await_condition(self.pods(), name, |pod: Option<&Pod>| pod.is_some());
        match tokio::time::timeout(SANDBOX_POD_TIMEOUT, appeared).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(ClusterError::Pod {
                pod: name.to_string(),
                what: error.to_string(),
            }),
            Err(_) => Err(ClusterError::Timeout {
                pod: name.to_string(),
                what: "appear (made by agent-sandbox's controller from its Sandbox: is the \
                       controller running?)",
                seconds: SANDBOX_POD_TIMEOUT.as_secs(),
                still: None,
            }),
        }
    }

    /// Removes the policy and Secret [`Cluster::create`] made before
    /// `error` stopped it; the error.
    async fn undo(
        &self,
        error: ClusterError,
        policy: Option<String>,
        secret: Option<String>,
    ) -> ClusterError {
        if let Some(secret) = secret {
            let _ = self
                .secrets()
                .delete(&secret, &DeleteParams::default())
                .await;
        }
        if let Some(policy) = policy {
            let _ = self
                .policies()
                .delete(&policy, &DeleteParams::default())
                .await;
        }
        error
    }

    /// Waits until the running Pod's walls hold: from inside its agent's
    /// container, a connection to its node (the kubelet's port, which
    /// answers anything that may reach it) is refused. A NetworkPolicy is
    /// enforced some time after a Pod starts (about 1.3 s on the test
    /// cluster), so the agent starts only after this. Needs perl in the
    /// image (perl-base is in every kennel image).
    pub async fn wait_walled(
        &self,
        name: &str,
        timeout: Duration,
    ) -> Result<Duration, ClusterError> {
        let started = std::time::Instant::now();
        let node = self
            .pods()
            .get(name)
            .await?
            .status
            .and_then(|status| status.host_ip)
            .ok_or_else(|| ClusterError::Pod {
                pod: name.to_string(),
                what: "it has no node address yet".to_string(),
            })?;
        let probe = format!(
            "use IO::Socket::INET; exit(IO::Socket::INET->new(PeerAddr => '{node}', \
             PeerPort => 10250, Timeout => 1) ? 0 : 1)"
        );
        while started.elapsed() < timeout {
            let reached = self.exec(name, &["perl", "-e", &probe], b"").await?;
            match reached.exit_code {
                1 => return Ok(started.elapsed()),
                0 => tokio::time::sleep(Duration::from_millis(100)).await,
                code => {
                    return Err(ClusterError::Pod {
                        pod: name.to_string(),
                        what: format!(
                            "the network probe failed (exit {code}): {}",
                            String::from_utf8_lossy(&reached.stderr).trim()
                        ),
                    });
                }
            }
        }
        Err(ClusterError::Timeout {
            pod: name.to_string(),
            what: "refuse a connection to its node (its NetworkPolicy is not enforced: does \
                   the cluster's network plugin enforce policies?)",
            seconds: timeout.as_secs(),
            still: None,
        })
    }

    /// Waits until the Pod's agent has started (or already ended).
    pub async fn wait_started(&self, name: &str, timeout: Duration) -> Result<(), ClusterError> {
        let pod = self
            .await_pod(name, timeout, "start", |pod| {
                is_running(pod) || agent_ended(pod).is_some()
            })
            .await?;
        match cannot_start(pod.as_ref()) {
            Some(reason) => Err(ClusterError::Pod {
                pod: name.to_string(),
                what: format!("the agent's container cannot start: {reason}"),
            }),
            None if pod.is_none() => Err(gone(name)),
            None => Ok(()),
        }
    }

    /// Waits until the Pod's agent has ended; how it ended.
    pub async fn wait_ended(&self, name: &str, timeout: Duration) -> Result<Ended, ClusterError> {
        let pod = self
            .await_pod(name, timeout, "end", |pod| agent_ended(pod).is_some())
            .await?;
        if let Some(ended) = agent_ended(pod.as_ref()) {
            return Ok(ended);
        }
        Err(match cannot_start(pod.as_ref()) {
            Some(reason) => ClusterError::Pod {
                pod: name.to_string(),
                what: reason,
            },
            None => gone(name),
        })
    }

    /// The Pod once `done` holds for it, or once it cannot get there by
    /// waiting (its container cannot be made, the node refused or evicted
    /// it, or the Pod is gone: None).
    async fn await_pod(
        &self,
        name: &str,
        timeout: Duration,
        what: &'static str,
        done: impl Fn(Option<&Pod>) -> bool,
    ) -> Result<Option<Pod>, ClusterError> {
        let condition = await_condition(self.pods(), name, move |pod: Option<&Pod>| {
            pod.is_none() || done(pod) || cannot_start(pod).is_some()
        });
        match tokio::time::timeout(timeout, condition).await {
            Ok(found) => found.map_err(|error| ClusterError::Pod {
                pod: name.to_string(),
                what: error.to_string(),
            }),
            Err(_) => {
                // Say why it still waits; a failed read only loses the why.
                let pod = self.pods().get_opt(name).await.ok().flatten();
                Err(ClusterError::Timeout {
                    pod: name.to_string(),
                    what,
                    seconds: timeout.as_secs(),
                    still: pod.as_ref().and_then(why_waiting),
                })
            }
        }
    }

    /// Everything the agent wrote (stdout and stderr, as the node keeps it).
    pub async fn logs(&self, name: &str) -> Result<Vec<u8>, ClusterError> {
        let params = LogParams {
            container: Some(AGENT_CONTAINER.to_string()),
            ..Default::default()
        };
        let stream = self.pods().log_stream(name, &params).await?;
        let mut bytes = Vec::new();
        std::pin::pin!(stream)
            .read_to_end(&mut bytes)
            .await
            .map_err(|error| ClusterError::Pod {
                pod: name.to_string(),
                what: format!("reading its log: {error}"),
            })?;
        Ok(bytes)
    }

    /// Runs `argv` in the Pod's agent container with `input` on its
    /// standard input (then closed), and waits for it: what it wrote (an
    /// error past 64 MiB of either stream), and its exit code. (How kennel
    /// sends what a Pod cannot mount, and reads what it needs back.)
    pub async fn exec(
        &self,
        name: &str,
        argv: &[&str],
        input: &[u8],
    ) -> Result<Executed, ClusterError> {
        let failed = |what: String| ClusterError::Pod {
            pod: name.to_string(),
            what,
        };
        let mut process = self
            .pods()
            .exec(name, argv.to_vec(), &in_agent(true, false))
            .await?;
        let status = process.take_status();
        let (Some(mut stdin), Some(stdout), Some(stderr), Some(status)) =
            (process.stdin(), process.stdout(), process.stderr(), status)
        else {
            return Err(failed(
                "the exec stream has no stdin, stdout or stderr".into(),
            ));
        };
        let send = async {
            stdin.write_all(input).await?;
            stdin.shutdown().await
        };
        let (sent, stdout, stderr) = tokio::join!(send, read_all(stdout), read_all(stderr));
        if let Err(error) = stdout.as_ref().and(stderr.as_ref()) {
            // Too much, or the stream broke: the command is abandoned.
            process.abort();
            return Err(failed(format!("reading the command's output: {error}")));
        }
        let exit_code = finished(process, status, &failed).await?;
        sent.map_err(|error| failed(format!("sending the command's input: {error}")))?;
        let (stdout, stderr) = (
            stdout.map_err(|error| failed(format!("reading the command's output: {error}")))?,
            stderr.map_err(|error| failed(format!("reading the command's errors: {error}")))?,
        );
        Ok(Executed {
            exit_code,
            stdout,
            stderr,
        })
    }

    /// Starts `argv` in the Pod's agent container attached to kennel: its
    /// stdin and stdout, and on a terminal (`tty`) a pty whose size kennel
    /// sets, else stderr apart. The caller drives the streams and reads
    /// the exit code from its status ([`exit_code`]).
    pub async fn exec_attached(
        &self,
        name: &str,
        argv: &[String],
        tty: bool,
    ) -> Result<kube::api::AttachedProcess, ClusterError> {
        Ok(self
            .pods()
            .exec(name, argv.to_vec(), &in_agent(true, tty))
            .await?)
    }

    /// Runs `argv` in the Pod (no input) with its standard output written
    /// to `out`, at most `limit` bytes of it (the command is abandoned
    /// past that): its exit code and what it wrote to stderr (the first
    /// 64 KiB). For output kennel does not hold in memory, such as the
    /// agent's commits on their way back.
    pub async fn exec_to(
        &self,
        name: &str,
        argv: &[String],
        out: &mut (impl tokio::io::AsyncWrite + Unpin),
        limit: u64,
    ) -> Result<Executed, ClusterError> {
        let failed = |what: String| ClusterError::Pod {
            pod: name.to_string(),
            what,
        };
        let mut process = self
            .pods()
            .exec(name, argv.to_vec(), &in_agent(false, false))
            .await?;
        let status = process.take_status();
        let (Some(mut stdout), Some(stderr), Some(status)) =
            (process.stdout(), process.stderr(), status)
        else {
            return Err(failed("the exec stream has no stdout or stderr".into()));
        };
        let copy = async {
            let mut written = 0u64;
            let mut chunk = vec![0u8; 64 * 1024];
            loop {
                let n = stdout.read(&mut chunk).await?;
                if n == 0 {
                    return Ok::<bool, std::io::Error>(true);
                }
                written += n as u64;
                if written > limit {
                    return Ok(false);
                }
                out.write_all(&chunk[..n]).await?;
            }
        };
        let errors = async {
            let mut kept = Vec::new();
            let _ = stderr.take(64 * 1024).read_to_end(&mut kept).await;
            kept
        };
        let (copied, stderr) = tokio::join!(copy, errors);
        let within =
            copied.map_err(|error| failed(format!("reading the command's output: {error}")))?;
        if !within {
            process.abort();
            return Err(failed(format!(
                "`{}` wrote more than {limit} bytes",
                argv.join(" ")
            )));
        }
        out.flush()
            .await
            .map_err(|error| failed(format!("writing the command's output: {error}")))?;
        let exit_code = finished(process, status, &failed).await?;
        Ok(Executed {
            exit_code,
            stdout: Vec::new(),
            stderr,
        })
    }

    /// Whether the cluster has the StorageClass `name` (a cluster-wide
    /// object: an account limited to its namespace may not be let read it).
    pub async fn has_storage_class(&self, name: &str) -> Result<bool, ClusterError> {
        Ok(self.storage_classes().get_opt(name).await?.is_some())
    }

    /// The cluster's default StorageClass, if it has one (the one a claim
    /// that names none gets).
    pub async fn default_storage_class(&self) -> Result<Option<String>, ClusterError> {
        Ok(self
            .storage_classes()
            .list(&Default::default())
            .await?
            .items
            .into_iter()
            .find(|class| {
                class
                    .metadata
                    .annotations
                    .as_ref()
                    .is_some_and(|annotations| {
                        annotations
                            .get("storageclass.kubernetes.io/is-default-class")
                            .is_some_and(|value| value == "true")
                    })
            })
            .and_then(|class| class.metadata.name))
    }

    /// Where the Pod `name` is: `None` when it is gone.
    pub async fn pod_state(&self, name: &str) -> Result<Option<PodState>, ClusterError> {
        let Some(pod) = self.pods().get_opt(name).await? else {
            return Ok(None);
        };
        if let Some(ended) = agent_ended(Some(&pod)) {
            return Ok(Some(PodState::Ended(ended)));
        }
        Ok(Some(
            match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
                Some("Running") => PodState::Running,
                Some("Succeeded") | Some("Failed") => PodState::Ended(Ended {
                    exit_code: -1,
                    reason: None,
                }),
                _ => PodState::Pending,
            },
        ))
    }

    /// The Pods kennel made that carry every label of `labels`
    /// (`key=value` pairs), by name, with their labels.
    pub async fn pods_labelled(
        &self,
        labels: &[(&str, &str)],
    ) -> Result<Vec<(String, std::collections::BTreeMap<String, String>)>, ClusterError> {
        let mut selector = vec![format!("{}={}", MANAGED_BY.0, MANAGED_BY.1)];
        selector.extend(labels.iter().map(|(key, value)| format!("{key}={value}")));
        let params = kube::api::ListParams::default().labels(&selector.join(","));
        Ok(self
            .pods()
            .list(&params)
            .await?
            .items
            .into_iter()
            .map(|pod| {
                (
                    pod.metadata.name.unwrap_or_default(),
                    pod.metadata.labels.unwrap_or_default(),
                )
            })
            .collect())
    }

    /// Unpacks `tree` into the Pod's directory `target`, as the Pod's user
    /// (modes kept, owners the user's).
    pub async fn send_tree(
        &self,
        name: &str,
        tree: &crate::tree::Tree,
        target: &str,
    ) -> Result<(), ClusterError> {
        let unpacked = self
            .exec(
                name,
                &["tar", "-x", "-p", "-f", "-", "-C", target],
                &tree.tar,
            )
            .await?;
        if unpacked.exit_code != 0 {
            return Err(ClusterError::Pod {
                pod: name.to_string(),
                what: format!(
                    "unpacking into {target} failed (tar exit {}): {}",
                    unpacked.exit_code,
                    String::from_utf8_lossy(&unpacked.stderr).trim()
                ),
            });
        }
        Ok(())
    }

    /// Is the Secret `name` there?
    pub async fn secret_exists(&self, name: &str) -> Result<bool, ClusterError> {
        Ok(self.secrets().get_opt(name).await?.is_some())
    }

    /// Deletes the session's Sandbox, if it has one, and its Pod now (its
    /// Secret and policy go with their owner); what is already gone is
    /// not an error.
    pub async fn delete(&self, name: &str) -> Result<(), ClusterError> {
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            ..DeleteParams::background()
        };
        // Its Sandbox first, if it has one: a Pod deleted under a live
        // Sandbox is made again by the controller. Where the cluster has no
        // Sandboxes (404) or the account may not touch them (403, and so
        // never made one), there is none.
        match self.sandboxes().delete(name, &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if matches!(status.code, 403 | 404) => {}
            Err(error) => return Err(error.into()),
        }
        match self.pods().delete(name, &params).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(error) => Err(error.into()),
        }
    }
}

/// An exec in the agent's container: with stdin or not, on a pty (whose
/// output is one stream) or with stderr apart.
fn in_agent(stdin: bool, tty: bool) -> AttachParams {
    AttachParams::default()
        .container(AGENT_CONTAINER)
        .stdin(stdin)
        .stdout(true)
        .stderr(!tty)
        .tty(tty)
}

/// The exit code of an exec whose streams are done: its final status,
/// once its task has ended.
async fn finished(
    process: kube::api::AttachedProcess,
    status: impl std::future::Future<
        Output = Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Status>,
    >,
    failed: &impl Fn(String) -> ClusterError,
) -> Result<i32, ClusterError> {
    let status = status.await;
    process
        .join()
        .await
        .map_err(|error| failed(format!("exec: {error}")))?;
    match status {
        Some(status) => exit_code(Some(&status))
            .ok_or_else(|| failed(format!("exec ended without an exit code: {status:?}"))),
        None => Err(failed("exec ended without a status".into())),
    }
}

/// Creates `object`, if there is one; the name it was given.
async fn create_named<K>(api: &Api<K>, object: Option<&K>) -> Result<Option<String>, ClusterError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    match object {
        Some(object) => Ok(api
            .create(&PostParams::default(), object)
            .await?
            .meta()
            .name
            .clone()),
        None => Ok(None),
    }
}

/// The most of a command's output [`Cluster::exec`] holds: what runs in a
/// Pod is the agent's, and may write without end.
const EXEC_OUTPUT_LIMIT: u64 = 64 << 20;

async fn read_all(stream: impl AsyncRead + Unpin) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    stream
        .take(EXEC_OUTPUT_LIMIT + 1)
        .read_to_end(&mut bytes)
        .await?;
    if bytes.len() as u64 > EXEC_OUTPUT_LIMIT {
        return Err(std::io::Error::other(format!(
            "more than {EXEC_OUTPUT_LIMIT} bytes"
        )));
    }
    Ok(bytes)
}

/// The exit code an exec's final status gives: `Success` is 0, a failure
/// names its code as the cause `ExitCode`.
pub fn exit_code(
    status: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Status>,
) -> Option<i32> {
    let status = status?;
    if status.status.as_deref() == Some("Success") {
        return Some(0);
    }
    status
        .details
        .as_ref()?
        .causes
        .as_ref()?
        .iter()
        .find(|cause| cause.reason.as_deref() == Some("ExitCode"))?
        .message
        .as_deref()?
        .parse()
        .ok()
}

fn gone(name: &str) -> ClusterError {
    ClusterError::Pod {
        pod: name.to_string(),
        what: "it is gone (deleted by someone else, or evicted)".to_string(),
    }
}

fn is_running(pod: Option<&Pod>) -> bool {
    pod.and_then(|pod| pod.status.as_ref())
        .and_then(|status| status.phase.as_deref())
        == Some("Running")
}

/// How the agent's container ended, once it has.
fn agent_ended(pod: Option<&Pod>) -> Option<Ended> {
    let status = agent_status(pod?)?;
    let terminated = status.state.as_ref()?.terminated.as_ref()?;
    Some(Ended {
        exit_code: terminated.exit_code,
        reason: terminated.reason.clone(),
    })
}

/// Why the agent will not start by waiting longer: the node refused or
/// evicted the Pod before its agent ended (a node under disk or memory
/// pressure), or the agent's container cannot be made (its image cannot
/// be had, its command or config is wrong).
fn cannot_start(pod: Option<&Pod>) -> Option<String> {
    let pod = pod?;
    let status = pod.status.as_ref()?;
    if status.phase.as_deref() == Some("Failed") && agent_ended(Some(pod)).is_none() {
        return Some(match (status.reason.as_deref(), &status.message) {
            (Some(reason), message) => format!("the node refused it: {}", said(reason, message)),
            (None, Some(message)) => format!("the node refused it: {message}"),
            (None, None) => "it failed before its agent started".to_string(),
        });
    }
    let status = agent_status(pod)?;
    let waiting = status.state.as_ref()?.waiting.as_ref()?;
    let reason = waiting.reason.as_deref()?;
    matches!(
        reason,
        "ErrImagePull"
            | "ImagePullBackOff"
            | "ErrImageNeverPull"
            | "InvalidImageName"
            | "CreateContainerConfigError"
            | "CreateContainerError"
            | "RunContainerError"
    )
    .then(|| said(reason, &waiting.message))
}

/// Why a Pod that may yet start has not: the scheduler's reason while it
/// has no node (no node fits, a claim is not bound), else its agent's
/// container's state while that is being made.
fn why_waiting(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    let unscheduled = status
        .conditions
        .iter()
        .flatten()
        .find(|condition| condition.type_ == "PodScheduled" && condition.status == "False");
    if let Some(condition) = unscheduled {
        let reason = condition.reason.as_deref().unwrap_or("not scheduled");
        return Some(said(reason, &condition.message));
    }
    let waiting = agent_status(pod)?.state.as_ref()?.waiting.as_ref()?;
    Some(said(waiting.reason.as_deref()?, &waiting.message))
}

/// What the cluster said of something: its reason, and its message if any
/// (`Unschedulable: 0/1 nodes are available: …`).
fn said(reason: &str, message: &Option<String>) -> String {
    match message {
        Some(message) => format!("{reason}: {message}"),
        None => reason.to_string(),
    }
}

fn agent_status(pod: &Pod) -> Option<&k8s_openapi::api::core::v1::ContainerStatus> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|status| status.name == AGENT_CONTAINER)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "kennel-x"},
            "status": status,
        }))
        .expect("a Pod")
    }

    /// What the kubelet wrote for a Pod it refused under DiskPressure (the
    /// cause of a CI run in which every Kubernetes test waited minutes).
    #[test]
    fn a_pod_the_node_refused_cannot_start_and_says_why() {
        let refused = pod(serde_json::json!({
            "phase": "Failed",
            "reason": "Evicted",
            "message": "The node had condition: [DiskPressure]. ",
        }));
        assert_eq!(
            cannot_start(Some(&refused)).as_deref(),
            Some("the node refused it: Evicted: The node had condition: [DiskPressure]. ")
        );
        // An agent that ran and failed ended; it is not a refusal.
        let ended = pod(serde_json::json!({
            "phase": "Failed",
            "containerStatuses": [{
                "name": AGENT_CONTAINER, "image": "i", "imageID": "", "ready": false,
                "restartCount": 0,
                "state": {"terminated": {"exitCode": 3, "reason": "Error"}},
            }],
        }));
        assert_eq!(cannot_start(Some(&ended)), None);
        assert_eq!(agent_ended(Some(&ended)).map(|e| e.exit_code), Some(3));
        // Still being made: it may yet start.
        let creating = pod(serde_json::json!({
            "phase": "Pending",
            "containerStatuses": [{
                "name": AGENT_CONTAINER, "image": "i", "imageID": "", "ready": false,
                "restartCount": 0,
                "state": {"waiting": {"reason": "ContainerCreating"}},
            }],
        }));
        assert_eq!(cannot_start(Some(&creating)), None);
        assert_eq!(why_waiting(&creating).as_deref(), Some("ContainerCreating"));
    }

    #[test]
    fn a_pod_without_a_node_waits_for_the_schedulers_reason() {
        let unscheduled = pod(serde_json::json!({
            "phase": "Pending",
            "conditions": [{
                "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                "message": "0/1 nodes are available: 1 Insufficient memory.",
            }],
        }));
        assert_eq!(cannot_start(Some(&unscheduled)), None);
        let why = why_waiting(&unscheduled);
        assert_eq!(
            why.as_deref(),
            Some("Unschedulable: 0/1 nodes are available: 1 Insufficient memory.")
        );
        let error = ClusterError::Timeout {
            pod: "kennel-x".to_string(),
            what: "start",
            seconds: 180,
            still: why,
        };
        assert_eq!(
            error.to_string(),
            "Pod kennel-x did not start within 180 s (Unschedulable: 0/1 nodes are \
             available: 1 Insufficient memory.)"
        );
    }
}
