//! The native backend: sandboxes made from kernel features around the host's
//! own programs (`kennel-native`); a persistent session's sandbox runs in the
//! pane of a private tmux server on the host (`native_session`).

use std::time::Duration;

use async_trait::async_trait;
use kennel_core::host::HostContext;
use kennel_core::plan::Plan;
use kennel_sessions::{Owner, Session, State};

use super::{Backend, Launch, Observed, OutputSink, Remains, Sandbox, Stopped};
use crate::error::{CliError, ExitKind};
use crate::native_session::{NativeSession, kill, signal, wait_gone};
use crate::proxy::{ProxySpec, SessionProxy};
use crate::sessions::Found;

#[derive(Default)]
pub struct NativeBackend {
    /// The helper [`Backend::warm_up`] is starting, for the next prepare.
    standby: std::sync::Mutex<Option<kennel_native::StandbyStarting>>,
}

/// A native-backend error as the user sees it: exit 127 when the agent's
/// command is not on the host, kennel's own failure (125) otherwise.
pub fn native_error(error: &kennel_native::NativeError) -> CliError {
    let kind = match error {
        kennel_native::NativeError::CommandNotFound { .. } => ExitKind::CommandNotFound,
        _ => ExitKind::Kennel,
    };
    let mut out = CliError::new(kind, error.to_string());
    out.hint = error.hint();
    out
}

/// The helper's options: its stages marked when the timing is asked for.
fn native_options() -> kennel_native::NativeOptions {
    kennel_native::NativeOptions {
        stages: crate::timing::enabled(),
        ..Default::default()
    }
}

/// Runs a prepared native sandbox until it ends, with the session's proxy
/// (if any) serving meanwhile, then stops the proxy. The sandbox's helper
/// blocks, so it runs on a blocking thread while the proxy's tasks keep the
/// runtime's workers.
pub async fn run_prepared(
    prepared: kennel_native::Prepared,
    proxy: Option<SessionProxy>,
) -> Result<i32, CliError> {
    let result = tokio::task::spawn_blocking(move || prepared.run()).await;
    for (stage, at) in kennel_native::take_stages() {
        crate::timing::add(stage.into(), at);
    }
    if let Some(proxy) = proxy {
        proxy.stop().await;
    }
    result
        .map_err(|error| CliError::kennel(format!("the native sandbox failed: {error}")))?
        .map_err(|error| native_error(&error))
}

/// A Plan about to run natively: the sandbox is prepared.
struct NativeLaunch {
    prepared: kennel_native::Prepared,
}

#[async_trait(?Send)]
impl Launch for NativeLaunch {
    fn warnings(&self) -> Vec<String> {
        self.prepared.warnings().to_vec()
    }

    async fn provision(
        &mut self,
        _recipes: &[kennel_image::Recipe],
        _options: &crate::image_build::BuildOptions,
    ) -> Result<(), CliError> {
        Ok(())
    }

    async fn run(
        self: Box<Self>,
        plan: &Plan,
        proxy: Option<SessionProxy>,
    ) -> Result<i32, CliError> {
        tracing::info!(name = %plan.name, "starting native sandbox");
        run_prepared(self.prepared, proxy).await
    }

    /// The sandbox runs in the pane of a tmux server of its own (see
    /// `native_session`), whose process becomes the session's owner; the
    /// pane prepares the sandbox again and runs the proxy.
    async fn start(
        self: Box<Self>,
        plan: &Plan,
        proxy: Option<ProxySpec>,
        host: &HostContext,
        registry: &mut kennel_sessions::Registry,
        session_id: &str,
    ) -> Result<(), CliError> {
        let session = NativeSession::of(host, &plan.name);
        tracing::info!(name = %plan.name, "starting native session");
        let owner = session.start(plan, proxy, session_id)?;
        let recorded = registry
            .set_owner(session_id, owner)
            .and_then(|()| registry.mark_running(session_id, &session.dir.display().to_string()));
        if let Err(error) = recorded {
            session.close();
            return Err(error.into());
        }
        session.go()
    }
}

/// How long `kennel exec` waits for a session's sandbox that is starting.
const SANDBOX_START_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// A native persistent session's files, and its kennel if it runs.
fn session_of(found: &mut Found) -> Result<(NativeSession, Option<Owner>), CliError> {
    found.require_persistent()?;
    let host = HostContext::detect()?;
    let native = NativeSession::of_session(&host, &found.session)?;
    let owner = found
        .session
        .owner
        .filter(|owner| !found.session.state.is_ended() && owner.is_alive());
    if owner.is_none() && !found.session.state.is_ended() {
        // Its kennel is gone, and the sandbox with it.
        found.mark(State::Stopped, None);
    }
    Ok((native, owner))
}

/// [`session_of`] a session that must be running.
fn running(found: &mut Found) -> Result<(NativeSession, Owner), CliError> {
    match session_of(found)? {
        (native, Some(owner)) => Ok((native, owner)),
        (_, None) => Err(found.not_running()),
    }
}

#[async_trait(?Send)]
impl Backend for NativeBackend {
    fn name(&self) -> &'static str {
        "native"
    }

    fn ends_with_owner(&self) -> bool {
        true
    }

    fn runs_images(&self) -> bool {
        false
    }

    fn persistent(&self, _plan: &mut Plan) {
        // The sandbox keeps its terminal: it is the pane of the session's
        // tmux server on the host (`native_session`).
    }

    async fn connect(&self) -> Result<String, CliError> {
        Ok("no engine: the host's own programs".into())
    }

    async fn images(&self) -> Result<&dyn super::Images, CliError> {
        Err(
            CliError::kennel("the native backend runs the host's own programs: it has no images")
                .with_hint(
                    "kennel image works on docker or podman; `kennel doctor` shows which work here",
                ),
        )
    }

    async fn sandbox_state(&self, handle: &str) -> Result<super::SandboxState, CliError> {
        // A native session's proxy runs in the session's own pane, not in a
        // daemon that watches it; nothing asks this.
        Err(CliError::kennel(format!(
            "the native backend does not watch sandbox {handle} from outside"
        )))
    }

    /// The helper starts now, while kennel prepares the run (from a thread
    /// of its own: see [`kennel_native::standby_in_thread`]); it waits for
    /// the Plan.
    fn warm_up(&self) {
        let starting = kennel_native::standby_in_thread(&native_options());
        if let Ok(mut slot) = self.standby.lock() {
            *slot = Some(starting);
        }
    }

    /// The sandbox is prepared here, where the user sees a failure (an
    /// agent not installed on the host: exit 127), not in a pane.
    async fn prepare<'a>(&'a self, plan: &Plan) -> Result<Box<dyn Launch + 'a>, CliError> {
        let mut prepared = kennel_native::prepare(plan, &native_options())
            .map_err(|error| native_error(&error))?;
        let starting = self.standby.lock().ok().and_then(|mut slot| slot.take());
        match starting.map(kennel_native::StandbyStarting::wait) {
            Some(Ok(standby)) => prepared = prepared.with_standby(standby),
            // The run starts its own helper, and reports what fails then.
            Some(Err(error)) => tracing::debug!("no standby helper: {error}"),
            None => {}
        }
        Ok(Box::new(NativeLaunch { prepared }))
    }

    async fn attach(&self, found: &mut Found) -> Result<i32, CliError> {
        crate::tmux::attach(&running(found)?.0).await
    }

    /// The command enters the running sandbox, confined as its agent is.
    async fn exec(&self, found: &mut Found, command: Vec<String>) -> Result<i32, CliError> {
        let (session, owner) = running(found)?;
        let mut plan = session.plan()?;
        plan.command = command;
        // Right after `kennel start` the session's kennel may still be
        // making its sandbox (starting its proxy first): wait for it while
        // that kennel lives.
        let deadline = std::time::Instant::now() + SANDBOX_START_WAIT;
        let init = loop {
            match kennel_native::sandbox_init_of(owner.pid as u32) {
                Some(init) => break init,
                None if owner.is_alive() && std::time::Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                None => {
                    return Err(CliError::kennel(format!(
                        "the sandbox of session {} is not running",
                        found.session.name
                    )));
                }
            }
        };
        let entered = tokio::task::spawn_blocking(move || {
            kennel_native::enter(&plan, init, &kennel_native::NativeOptions::default())
        })
        .await
        .map_err(|error| CliError::kennel(format!("the native exec failed: {error}")))?;
        match entered {
            Ok(code) => Ok(code),
            Err(error) => Err(native_error(&error)),
        }
    }

    async fn send(&self, found: &mut Found, text: &str, enter: bool) -> Result<(), CliError> {
        crate::tmux::send(&running(found)?.0, text, enter).await
    }

    async fn capture(
        &self,
        found: &mut Found,
        history: bool,
        escapes: bool,
    ) -> Result<Vec<u8>, CliError> {
        crate::tmux::capture(&running(found)?.0, history, escapes).await
    }

    async fn logs(
        &self,
        found: &mut Found,
        follow: bool,
        sink: &mut OutputSink<'_>,
    ) -> Result<(), CliError> {
        let (session, owner) = session_of(found)?;
        session.logs(owner.filter(|_| follow), sink)
    }

    /// SIGTERM to the session's kennel, which forwards it to the agent;
    /// after `grace` the tmux server is closed (SIGHUP), and after 2 s more
    /// the session's kennel is killed (the sandbox dies with it).
    async fn stop(&self, found: &mut Found, grace: Duration) -> Result<Stopped, CliError> {
        let (session, owner) = session_of(found)?;
        if let Some(owner) = owner {
            signal(owner, libc::SIGTERM);
            if !wait_gone(owner, grace) {
                session.hang_up();
                if !wait_gone(owner, Duration::from_secs(2)) {
                    kill(owner);
                }
            }
        }
        session.close();
        match owner {
            Some(_) => {
                let code = found.session.exit_code;
                found.mark(State::Stopped, code);
                Ok(Stopped::Now)
            }
            None => Ok(Stopped::Already),
        }
    }

    async fn kill(&self, found: &mut Found) -> Result<(), CliError> {
        let (session, owner) = session_of(found)?;
        if let Some(owner) = owner {
            kill(owner);
            found.mark(State::Stopped, None);
        }
        session.close();
        Ok(())
    }

    async fn remove(&self, found: &mut Found, force: bool) -> Result<(), CliError> {
        let (session, owner) = session_of(found)?;
        if let Some(owner) = owner {
            if !force {
                return Err(found.running_error());
            }
            kill(owner);
        }
        session.remove();
        Ok(())
    }

    /// The registry's word stands: a native session's kennel records how it
    /// ends, and `reap` finds the ones whose kennel died.
    async fn observe(&self, _session: &Session) -> Observed {
        Observed::Unknown
    }

    /// Its directory (tmux server, Plan), if its kennel could not clean up.
    async fn remains(&self, session: &Session) -> Remains {
        let left = session
            .handle
            .as_deref()
            .is_some_and(|dir| std::path::Path::new(dir).exists());
        if left { Remains::Files } else { Remains::Kept }
    }

    async fn discard(&self, session: &Session) -> Result<(), CliError> {
        let host = HostContext::detect()?;
        NativeSession::of_session(&host, session)?.close();
        Ok(())
    }

    /// Native sandboxes die with their kennel: none outlives its session.
    async fn sandboxes(&self, _registry_label: &str) -> Option<Vec<Sandbox>> {
        Some(Vec::new())
    }

    async fn remove_sandbox(&self, id: &str) -> Result<(), CliError> {
        Err(CliError::kennel(format!(
            "the native backend has no sandbox {id} to remove"
        )))
    }
}
