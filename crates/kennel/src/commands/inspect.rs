//! `kennel inspect`: the Plan a session ran with, as the registry recorded
//! it (secrets redacted) — the same document `--dry-run` prints.

use clap::Args;

use kennel_lib::error::CliError;

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The session: its name, id or a unique id prefix (`kennel ls`)
    pub session: String,
}

pub fn run(args: InspectArgs) -> Result<i32, CliError> {
    let found = kennel_lib::sessions::find(&args.session)?;
    let Some(plan) = found.session.plan.as_deref() else {
        return Err(CliError::kennel(format!(
            "session {} has no recorded Plan (it never got that far)",
            found.session.name
        )));
    };
    // As `--dry-run` prints it (its field order); a Plan of another kennel
    // version as it was recorded.
    if let Ok(plan) = serde_json::from_str::<kennel_core::plan::Plan>(plan) {
        return crate::ui::print_plan(&plan);
    }
    let plan: serde_json::Value = serde_json::from_str(plan).map_err(|error| {
        CliError::kennel(format!(
            "the recorded Plan of session {} is not JSON: {error}",
            found.session.name
        ))
    })?;
    crate::ui::print_plan(&plan)
}
