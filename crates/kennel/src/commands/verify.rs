//! `kennel verify`: escape probes against each backend, on this machine.

use clap::Args;

use crate::cli::JsonFlag;
use kennel_lib::error::CliError;
use kennel_lib::verify::{self, Outcome, VerifyRequest};

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The backend to try (docker, podman, native, incus; default: the one `kennel run` would use)
    #[arg(long, short = 'b', value_name = "NAME", conflicts_with = "all")]
    pub backend: Option<String>,
    /// Try every backend (those that do not work here are skipped, with why)
    #[arg(long)]
    pub all: bool,
    /// Only this class of probes (files, privilege, host, network, planted, credentials); repeatable
    #[arg(long, value_name = "CLASS")]
    pub only: Vec<String>,
    /// The workspace mode of the sandboxes (direct, worktree, clone; default: your configuration's)
    #[arg(long, value_parser = ["direct", "worktree", "clone"])]
    pub mode: Option<String>,
    #[command(flatten)]
    pub json: JsonFlag,
}

pub async fn run(args: VerifyArgs) -> Result<i32, CliError> {
    for class in &args.only {
        if !verify::CLASSES.contains(&class.as_str()) {
            return Err(
                CliError::usage(format!("--only {class}: no such class of probes"))
                    .with_hint(format!("the classes: {}", verify::CLASSES.join(", "))),
            );
        }
    }
    let backends = match (&args.backend, args.all) {
        (_, true) => verify::all_backends(),
        (Some(name), false) => vec![name.clone()],
        (None, false) => {
            let context = kennel_lib::context::Context::load_here()?;
            let requested = context
                .config
                .file
                .defaults
                .backend
                .clone()
                .unwrap_or_else(|| "auto".into());
            let (_, choice) = kennel_lib::backend::select(&requested, true).await?;
            vec![choice.backend]
        }
    };
    let kennel = std::env::current_exe()
        .map_err(|error| CliError::kennel(format!("cannot find kennel's own program: {error}")))?;
    let request = VerifyRequest {
        backends,
        only: args.only.clone(),
        kennel,
        mode: args.mode.clone(),
    };
    let report = verify::verify(&request).await?;
    if args.json.json {
        crate::ui::print_json_object(&report)?;
    } else {
        let rows: Vec<[String; 5]> = report
            .results
            .iter()
            .map(|result| {
                [
                    result.backend.clone(),
                    result.class.clone(),
                    result.probe.clone(),
                    match result.outcome {
                        Outcome::Held => "held",
                        Outcome::Escaped => "ESCAPED",
                        Outcome::Skipped => "skipped",
                    }
                    .to_string(),
                    result.detail.clone(),
                ]
            })
            .collect();
        crate::ui::write_stdout(format_args!(
            "{}",
            crate::ui::table(&["BACKEND", "CLASS", "PROBE", "RESULT", "DETAIL"], &rows)
        ));
        for (backend, (held, escaped, skipped)) in verify::by_backend(&report) {
            kennel_lib::report::note(&format!(
                "{backend}: {held} held, {escaped} escaped, {skipped} skipped"
            ));
        }
    }
    if report.interrupted {
        kennel_lib::report::warn(
            "interrupted: the probes that ran are above; everything kennel verify made is removed",
        );
        return Ok(130);
    }
    Ok(if report.escaped > 0 { 1 } else { 0 })
}
