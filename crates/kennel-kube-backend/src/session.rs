//! A persistent session's Pod: its agent in tmux, reached by exec; its
//! state read from the Pod (the agent's exit code is a file the session's
//! command writes); and its end — the work brought back, the screen's log
//! kept on this machine, the Pod deleted.

use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use kennel_core::plan::Plan;
use kennel_core::settings::{self, session_tmux};
use kennel_kube::Cluster;
use kennel_lib::backend::{OutputSink, OutputStream, SandboxState};
use kennel_lib::error::CliError;
use kennel_sessions::Session;

use crate::{cluster_error, pod_name};

/// The most of an agent's screen log kept on this machine after its Pod
/// is gone.
const SAVED_LOG_LIMIT: u64 = 16 << 20;

/// A persistent session's tmux server, reached by exec into its Pod.
pub(crate) struct InPod<'a> {
    pub cluster: &'a Cluster,
    pub pod: String,
}

#[async_trait(?Send)]
impl kennel_lib::tmux::TmuxServer for InPod<'_> {
    async fn tmux(&self, args: &[&str]) -> Result<Vec<u8>, CliError> {
        let argv = session_tmux(args);
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let output = ask(self.cluster, &self.pod, &argv).await?;
        kennel_lib::tmux::tmux_output(
            args,
            &format!("Pod {}", self.pod),
            output.exit_code,
            output.stdout,
            &output.stderr,
        )
    }

    async fn tmux_attached(&self, args: &[&str]) -> Result<i32, CliError> {
        crate::attached::run_for_user(self.cluster, &self.pod, session_tmux(args), true).await
    }
}

/// The session's state: `Running` while its agent runs, `Ended` with the
/// agent's code once the session's command recorded one (the Pod waits on,
/// for its logs and work), `Missing` once the Pod is gone.
pub(crate) async fn state(cluster: &Cluster, handle: &str) -> Result<SandboxState, CliError> {
    let pod = pod_name(handle);
    let pod_state = cluster
        .pod_state(&pod)
        .await
        .map_err(crate::cluster_error)?;
    Ok(state_in(cluster, &pod, pod_state.as_ref()).await)
}

/// [`state`] of the Pod `pod`, whose own state was just read.
pub(crate) async fn state_in(
    cluster: &Cluster,
    pod: &str,
    pod_state: Option<&kennel_kube::PodState>,
) -> SandboxState {
    match crate::sandbox_state(pod_state) {
        // A Pod that has not started yet has no exit file to read either.
        SandboxState::Running => match exit_code(cluster, pod).await {
            Some(code) => SandboxState::Ended(Some(code)),
            None => SandboxState::Running,
        },
        other => other,
    }
}

/// The most an exec that only asks something of a Pod may take: the
/// files and programs it reads there are the agent's (a FIFO where a file
/// should be would hold it forever).
const ASK_TIMEOUT: Duration = Duration::from_secs(5);
/// The most a screen log's copy may take.
const SAVE_LOG_TIMEOUT: Duration = Duration::from_secs(30);

/// `argv` in the Pod, given at most [`ASK_TIMEOUT`].
pub(crate) async fn ask(
    cluster: &Cluster,
    pod: &str,
    argv: &[&str],
) -> Result<kennel_kube::Executed, CliError> {
    match tokio::time::timeout(ASK_TIMEOUT, cluster.exec(pod, argv, b"")).await {
        Ok(done) => done.map_err(cluster_error),
        Err(_) => Err(CliError::kennel(format!(
            "`{}` in Pod {pod} did not answer within {} s",
            argv.join(" "),
            ASK_TIMEOUT.as_secs()
        ))),
    }
}

/// The agent's exit code, once the session's command has recorded it
/// (the file is the agent's: at most a few bytes of it are read).
pub(crate) async fn exit_code(cluster: &Cluster, pod: &str) -> Option<i32> {
    let read = ask(
        cluster,
        pod,
        &["head", "-c", "32", settings::SESSION_EXIT_FILE],
    )
    .await
    .ok()?;
    if read.exit_code != 0 {
        return None;
    }
    String::from_utf8_lossy(&read.stdout).trim().parse().ok()
}

/// Waits (at most 10 s) until the session's tmux server answers in `pod`
/// (or its agent has already ended, its code recorded).
pub(crate) async fn wait_session(cluster: &Cluster, pod: &str) -> Result<(), CliError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let argv = session_tmux(&["has-session", "-t", settings::SESSION_TMUX_TARGET]);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    loop {
        let answered = ask(cluster, pod, &argv).await?;
        // Running, or already ended with its code recorded.
        if answered.exit_code == 0 || exit_code(cluster, pod).await.is_some() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(CliError::kennel(format!(
                "the agent's tmux session did not start in Pod {pod}: {}",
                String::from_utf8_lossy(&answered.stderr).trim()
            ))
            .with_hint("the image needs tmux (kennel's images have it)"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits (at most 20 s) until the session's tunnel listens in `pod` on
/// the address `HTTP_PROXY` names, so that the agent's first request finds
/// it.
pub(crate) async fn wait_listening(
    cluster: &Cluster,
    pod: &str,
    plan: &Plan,
) -> Result<(), CliError> {
    let listen = plan
        .network
        .proxy
        .as_ref()
        .map(|proxy| proxy.listen_inside.as_str())
        .unwrap_or(kennel_core::plan::PROXY_LISTEN_INSIDE);
    let (_, port) = kennel_core::plan::listen_address(listen);
    // A listening socket on that port in /proc/net/tcp (state 0A).
    let probe = format!("grep -qi ':{port:04X} [0-9A-F:]* 0A' /proc/net/tcp");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if ask(cluster, pod, &["sh", "-c", &probe])
            .await
            .is_ok_and(|answer| answer.exit_code == 0)
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(CliError::kennel(format!(
                "the tunnel to kennel's proxy does not listen in Pod {pod} on {listen}"
            ))
            .with_hint("the image needs socat (kennel's images have it); the proxy daemon's log says more (`kennel net log` names it)"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// SIGTERM to the agent; after `grace` a hang-up (tmux's server ends);
/// then at most 2 s more.
pub(crate) async fn terminate(cluster: &Cluster, pod: &str, grace: Duration) {
    let script = kennel_lib::tmux::terminate_agent_script();
    let signalled = ask(cluster, pod, &["sh", "-c", &script]).await;
    tracing::debug!(?signalled, "SIGTERM to the agent");
    if ended_within(cluster, pod, grace).await {
        return;
    }
    let server = InPod {
        cluster,
        pod: pod.to_string(),
    };
    kennel_lib::tmux::hang_up(&server).await;
    ended_within(cluster, pod, Duration::from_secs(2)).await;
}

async fn ended_within(cluster: &Cluster, pod: &str, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if exit_code(cluster, pod).await.is_some() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The end of a persistent session's Pod: its work back into the clone,
/// its screen's log kept on this machine (`kennel logs`), the Pod deleted.
/// The Pod stays when its work could not come back.
pub(crate) async fn wind_up(
    cluster: &Cluster,
    pod: &str,
    session: &Session,
) -> Result<(), CliError> {
    let plan = plan_of(session)?;
    crate::pod::bring_back(cluster, pod, &crate::pod::Work::of(&plan)?)
        .await
        .map_err(|error| {
            error.with_hint(format!(
                "the Pod {pod} is kept with the agent's work; `kennel rm --force {}` deletes it",
                session.name
            ))
        })?;
    save_log(cluster, pod, session).await;
    cluster.delete(pod).await.map_err(cluster_error)
}

/// Where a session's screen log is kept once its Pod is gone.
pub(crate) fn saved_log(session: &Session) -> PathBuf {
    let dir = kennel_core::host::HostContext::detect()
        .map(|host| settings::net_log_dir(&host))
        .unwrap_or_else(|_| std::env::temp_dir());
    dir.join(format!("{}.agent.log", session.id))
}

/// Copies the agent's screen log out of the Pod (bytes the agent wrote:
/// kept as they are, at most [`SAVED_LOG_LIMIT`], printed raw by `kennel
/// logs` as on every backend). Best effort.
async fn save_log(cluster: &Cluster, pod: &str, session: &Session) {
    let path = saved_log(session);
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let Ok(file) = tokio::fs::File::create(&path).await else {
        return;
    };
    let mut file = file;
    let argv: Vec<String> = [
        "tail",
        "-c",
        &SAVED_LOG_LIMIT.to_string(),
        settings::SESSION_LOG,
    ]
    .map(String::from)
    .to_vec();
    let copy = cluster.exec_to(pod, &argv, &mut file, SAVED_LOG_LIMIT + 1);
    match tokio::time::timeout(SAVE_LOG_TIMEOUT, copy).await {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => tracing::warn!("cannot keep the agent's log of Pod {pod}: {error}"),
        Err(_) => tracing::warn!("the agent's log of Pod {pod} did not come in time"),
    }
}

/// The Plan a session was recorded with.
pub(crate) fn plan_of(session: &Session) -> Result<Plan, CliError> {
    session
        .plan
        .as_deref()
        .and_then(|json| serde_json::from_str(json).ok())
        .ok_or_else(|| {
            CliError::kennel(format!(
                "session {} has no readable Plan: kennel cannot tell where its work is",
                session.name
            ))
        })
}

/// `kennel logs`: the agent's screen so far; with `follow`, until its tmux
/// session ends.
pub(crate) async fn logs(
    cluster: &Cluster,
    pod: &str,
    follow: bool,
    sink: &mut OutputSink<'_>,
) -> Result<(), CliError> {
    let log = settings::SESSION_LOG;
    let script = match follow {
        false => format!("tail -n +1 {log}"),
        true => {
            let socket = settings::SESSION_TMUX_SOCKET;
            let target = settings::SESSION_TMUX_TARGET;
            format!(
                "tail -n +1 -f {log} & t=$!; while tmux -S {socket} has-session -t {target} 2>/dev/null; do sleep 1; done; sleep 1; kill $t"
            )
        }
    };
    let argv: Vec<String> = ["sh".to_string(), "-c".to_string(), script].to_vec();
    let mut writer = SinkWriter { sink };
    cluster
        .exec_to(pod, &argv, &mut writer, u64::MAX)
        .await
        .map_err(cluster_error)?;
    Ok(())
}

/// An [`OutputSink`] as something exec can write the agent's stdout to.
struct SinkWriter<'a, 'b> {
    sink: &'a mut OutputSink<'b>,
}

impl tokio::io::AsyncWrite for SinkWriter<'_, '_> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _context: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        (self.sink)(OutputStream::Stdout, bytes);
        Poll::Ready(Ok(bytes.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _context: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: Pin<&mut Self>,
        _context: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
