//! `kennel stop`: end a persistent session gracefully.
//!
//! SIGTERM goes to the agent; when it is still running after the timeout,
//! its terminal is closed (SIGHUP, as a closed terminal would), then the
//! sandbox is ended (see each backend's `stop`).

use std::time::Duration;

use clap::Args;

use kennel_lib::backend::Stopped;
use kennel_lib::error::CliError;

#[derive(Debug, Args)]
pub struct StopArgs {
    /// The session: its name, id or a unique id prefix (`kennel ls`)
    pub session: String,

    /// Seconds the agent gets to end after SIGTERM
    #[arg(short, long, value_name = "SECONDS", default_value_t = 10)]
    pub timeout: u64,
}

pub async fn run(args: StopArgs) -> Result<i32, CliError> {
    let mut found = kennel_lib::sessions::find(&args.session)?;
    let grace = Duration::from_secs(args.timeout);
    match found.backend()?.stop(&mut found, grace).await? {
        Stopped::Already => {
            kennel_lib::report::note(&format!("session {} is not running", found.session.name));
        }
        Stopped::Now => {
            kennel_lib::report::note(&format!("session {} stopped", found.session.name));
            kennel_lib::checkout::session_ended(&found.session);
        }
    }
    Ok(0)
}
