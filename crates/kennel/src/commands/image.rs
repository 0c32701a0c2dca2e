//! `kennel image build|ls|rm|prune`.

use clap::{Args, Subcommand};

use crate::cli::JsonFlag;
use kennel_lib::context::Context;
use kennel_lib::error::CliError;
use kennel_lib::images;

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Build the images of one or more agents (a no-op when they are up to date)
    Build(BuildArgs),
    /// List the images kennel built
    Ls(LsArgs),
    /// Remove images, by reference or by agent name
    Rm(RmArgs),
    /// Remove images that no current recipe uses
    Prune(PruneArgs),
}

#[derive(Debug, Args)]
pub struct EngineArgs {
    /// The engine to use (default: from config)
    #[arg(short, long, value_parser = crate::cli::backend_values())]
    pub backend: Option<String>,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Agents whose images to build
    #[arg(required = true, value_name = "AGENT")]
    pub agents: Vec<String>,
    /// Rebuild every layer from scratch
    #[arg(long)]
    pub no_cache: bool,
    #[command(flatten)]
    pub engine: EngineArgs,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    #[command(flatten)]
    pub json: JsonFlag,
    #[command(flatten)]
    pub engine: EngineArgs,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Image references (kennel/claude:…) or agent names
    #[arg(required = true, value_name = "REF|AGENT")]
    pub targets: Vec<String>,
    /// Remove even if a container uses the image
    #[arg(short, long)]
    pub force: bool,
    #[command(flatten)]
    pub engine: EngineArgs,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Remove every kennel image, current or not
    #[arg(long)]
    pub all: bool,
    #[command(flatten)]
    pub engine: EngineArgs,
}

pub async fn run(command: ImageCommand) -> Result<i32, CliError> {
    let context = Context::load_here()?;
    let engine_args = match &command {
        ImageCommand::Build(args) => &args.engine,
        ImageCommand::Ls(args) => &args.engine,
        ImageCommand::Rm(args) => &args.engine,
        ImageCommand::Prune(args) => &args.engine,
    };
    let requested = engine_args
        .backend
        .clone()
        .or_else(|| context.config.file.defaults.backend.clone())
        .unwrap_or_else(|| "auto".into());
    let backend = images::backend_with_images(&requested).await?;
    let store = backend.images().await?;
    match command {
        ImageCommand::Build(args) => {
            for built in images::build(&context, store, &args.agents, args.no_cache).await? {
                let how = if built.up_to_date {
                    "is up to date"
                } else {
                    "is ready"
                };
                kennel_lib::report::note(&format!("{}: {} {how}", built.agent, built.tag));
                outln!("{}", built.tag);
            }
        }
        ImageCommand::Ls(args) => {
            let listed = images::list(&context, store).await?;
            if args.json.json {
                return crate::ui::print_json_list("images", &listed);
            }
            let rows: Vec<[String; 6]> = listed
                .iter()
                .map(|image| {
                    let label = |value: &Option<String>| {
                        value
                            .as_deref()
                            .filter(|value| !value.is_empty())
                            .unwrap_or("-")
                            .to_string()
                    };
                    [
                        image.reference.clone(),
                        label(&image.agent),
                        label(&image.layer),
                        format!("{:.0}M", image.size as f64 / 1_048_576.0),
                        if image.current { "current" } else { "stale" }.to_string(),
                        label(&image.project),
                    ]
                })
                .collect();
            crate::ui::write_stdout(format_args!(
                "{}",
                crate::ui::table(
                    &["IMAGE", "AGENT", "LAYER", "SIZE", "STATUS", "PROJECT"],
                    &rows
                )
            ));
        }
        ImageCommand::Rm(args) => {
            let removed = images::remove(&context, store, &args.targets, args.force).await?;
            for reference in &removed {
                outln!("{reference}");
            }
            kennel_lib::report::note(&format!("removed {} image(s)", removed.len()));
        }
        ImageCommand::Prune(args) => {
            let removed = images::prune(&context, store, args.all).await?;
            for reference in &removed {
                outln!("{reference}");
            }
            kennel_lib::report::note(&format!("removed {} image(s)", removed.len()));
        }
    }
    Ok(0)
}
