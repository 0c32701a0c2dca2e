//! `kennel image build|ls|rm|prune`.

use std::collections::BTreeSet;

use clap::{Args, Subcommand};
use kennel_image::{LABEL_AGENT, LABEL_MANAGED};

use crate::cli::{BackendArg, JsonFlag};
use kennel_lib::context::Context;
use kennel_lib::error::CliError;
use kennel_lib::image_build::Outcome;

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
    #[arg(short, long, value_enum)]
    pub backend: Option<BackendArg>,
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
    let backend = engine_args
        .backend
        .map(|backend| backend.as_str().to_string())
        .or_else(|| context.config.file.defaults.backend.clone())
        .unwrap_or_else(|| "auto".into());
    let (backend, choice) = kennel_lib::backend::select(&backend, true).await?;
    let engine = backend
        .engine()
        .await
        .map_err(|error| error.with_hint(choice.reason))?;
    match command {
        ImageCommand::Build(args) => build(&context, engine, args).await,
        ImageCommand::Ls(args) => ls(&context, engine, args).await,
        ImageCommand::Rm(args) => rm(&context, engine, args).await,
        ImageCommand::Prune(args) => prune(&context, engine, args).await,
    }
}

async fn build(
    context: &Context,
    engine: &kennel_engine::Engine,
    args: BuildArgs,
) -> Result<i32, CliError> {
    let settings = context.image_settings()?;
    // Resolve every name first, so a typo fails before any build starts.
    let agents = args
        .agents
        .iter()
        .map(|name| context.catalog.get(name))
        .collect::<Result<Vec<_>, _>>()?;
    for agent in agents {
        let recipes = kennel_image::recipes_for(agent, &settings);
        let outcomes = kennel_lib::image_build::ensure(
            engine,
            &recipes,
            args.no_cache,
            &kennel_lib::image_build::log_dir(&context.host.data_dir),
        )
        .await?;
        let tag = recipes
            .last()
            .map(|recipe| recipe.tag.as_str())
            .unwrap_or_default();
        if outcomes.iter().all(|outcome| *outcome == Outcome::UpToDate) {
            kennel_lib::report::note(&format!("{}: {tag} is up to date", agent.name));
        } else {
            kennel_lib::report::note(&format!("{}: {tag} is ready", agent.name));
        }
        outln!("{tag}");
    }
    Ok(0)
}

/// Tags that the current config's recipes produce, for every agent.
fn current_tags(context: &Context) -> Result<BTreeSet<String>, CliError> {
    let settings = context.image_settings()?;
    Ok(context
        .catalog
        .agents()
        .flat_map(|agent| kennel_image::recipes_for(agent, &settings))
        .map(|recipe| recipe.tag)
        .collect())
}

async fn ls(
    context: &Context,
    engine: &kennel_engine::Engine,
    args: LsArgs,
) -> Result<i32, CliError> {
    let current = current_tags(context)?;
    let images = engine.list_images(&format!("{LABEL_MANAGED}=true")).await?;
    if args.json.json {
        let rows: Vec<_> = images
            .iter()
            .map(|image| {
                serde_json::json!({
                    "reference": image.reference,
                    "id": image.id,
                    "agent": image.labels.get(LABEL_AGENT),
                    "layer": image.labels.get(kennel_image::LABEL_LAYER),
                    "size": image.size,
                    "created": image.created,
                    "current": current.contains(&image.reference),
                })
            })
            .collect();
        return crate::ui::print_json(&rows);
    }
    let rows: Vec<[String; 5]> = images
        .iter()
        .map(|image| {
            let label = |key: &str| {
                image
                    .labels
                    .get(key)
                    .map(String::as_str)
                    .filter(|value| !value.is_empty())
                    .unwrap_or("-")
                    .to_string()
            };
            let status = if current.contains(&image.reference) {
                "current"
            } else {
                "stale"
            };
            [
                image.reference.clone(),
                label(LABEL_AGENT),
                label(kennel_image::LABEL_LAYER),
                format!("{:.0}M", image.size as f64 / 1_048_576.0),
                status.to_string(),
            ]
        })
        .collect();
    crate::ui::write_stdout(format_args!(
        "{}",
        crate::ui::table(&["IMAGE", "AGENT", "LAYER", "SIZE", "STATUS"], &rows)
    ));
    Ok(0)
}

async fn rm(
    context: &Context,
    engine: &kennel_engine::Engine,
    args: RmArgs,
) -> Result<i32, CliError> {
    let images = engine.list_images(&format!("{LABEL_MANAGED}=true")).await?;
    let mut removed = 0;
    for target in &args.targets {
        let references: Vec<String> = if context.catalog.get(target).is_ok() {
            images
                .iter()
                .filter(|image| image.labels.get(LABEL_AGENT) == Some(target))
                .map(|image| image.reference.clone())
                .collect()
        } else {
            vec![target.clone()]
        };
        if references.is_empty() {
            kennel_lib::report::note(&format!("no images for agent {target}"));
        }
        for reference in references {
            engine.remove_image(&reference, args.force).await?;
            outln!("{reference}");
            removed += 1;
        }
    }
    kennel_lib::report::note(&format!("removed {removed} image(s)"));
    Ok(0)
}

async fn prune(
    context: &Context,
    engine: &kennel_engine::Engine,
    args: PruneArgs,
) -> Result<i32, CliError> {
    let current = current_tags(context)?;
    let images = engine.list_images(&format!("{LABEL_MANAGED}=true")).await?;
    let mut removed = 0;
    // Agent layers first: a base layer cannot go while an image built on it stays.
    let mut stale: Vec<_> = images
        .iter()
        .filter(|image| args.all || !current.contains(&image.reference))
        .collect();
    stale.sort_by_key(|image| {
        image
            .labels
            .get(kennel_image::LABEL_LAYER)
            .map(|layer| layer == "base")
    });
    for image in stale {
        match engine.remove_image(&image.reference, false).await {
            Ok(()) => {
                outln!("{}", image.reference);
                removed += 1;
            }
            Err(error) => kennel_lib::report::note(&format!("kept {}: {error}", image.reference)),
        }
    }
    kennel_lib::report::note(&format!("removed {removed} image(s)"));
    Ok(0)
}
