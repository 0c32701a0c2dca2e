//! `kennel clean`: list what sessions left behind (`kennel_lib::cleanup`),
//! ask, remove.

use clap::Args;
use kennel_core::host::HostContext;
use kennel_core::settings;
use kennel_sessions::Registry;

use kennel_lib::backend::Backends;
use kennel_lib::cleanup;
use kennel_lib::error::CliError;

#[derive(Debug, Args)]
pub struct CleanArgs {
    /// Remove the leftovers without asking
    #[arg(short, long)]
    pub force: bool,
}

pub async fn run(args: CleanArgs) -> Result<i32, CliError> {
    let host = HostContext::detect()?;
    let path = settings::registry_path(&host);
    let mut registry = if path.exists() {
        Some(Registry::open(&path)?)
    } else {
        None
    };
    let sessions = match &mut registry {
        Some(registry) => {
            registry.reap()?;
            registry.list(true)?
        }
        None => Vec::new(),
    };
    let mut backends = Backends::default();
    let leftovers = cleanup::find(&host, registry.as_mut(), &sessions, &mut backends).await?;
    if leftovers.is_empty() {
        kennel_lib::report::note("nothing to clean");
        return Ok(0);
    }
    kennel_lib::report::note(&format!("{} leftover(s):", leftovers.len()));
    for leftover in &leftovers {
        eprintln!("  {}", leftover.describe());
    }
    if !args.force
        && !crate::confirm::ask(
            "Remove them?",
            CliError::usage(
                "kennel clean asks before removing anything, and stdin is not a terminal",
            )
            .with_hint("`kennel clean --force` removes the leftovers listed without asking"),
        )?
    {
        kennel_lib::report::note("nothing removed");
        return Ok(0);
    }
    let mut failed = 0;
    for leftover in &leftovers {
        if let Err(error) = cleanup::remove(leftover, registry.as_mut(), &mut backends).await {
            kennel_lib::report::note(&format!("{error}"));
            failed += 1;
        }
    }
    // Direct-mode sessions that have ended by now: their git audit.
    if let Some(registry) = &registry {
        kennel_lib::git_audit::settle(&host, registry);
    }
    if failed > 0 {
        return Err(CliError::kennel(format!(
            "{failed} of {} leftovers could not be removed",
            leftovers.len()
        )));
    }
    kennel_lib::report::note(&format!("removed {} leftover(s)", leftovers.len()));
    Ok(0)
}
