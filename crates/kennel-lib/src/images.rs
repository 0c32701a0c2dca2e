//! `kennel image`: the images kennel builds for agents, where a backend
//! keeps them ([`crate::backend::Images`]).

use std::collections::BTreeSet;

use kennel_image::{LABEL_AGENT, LABEL_LAYER};
use serde::Serialize;

use crate::backend::{Backend, Images};
use crate::context::Context;
use crate::error::CliError;
use crate::image_build::Outcome;

/// The backend whose images these are: `requested` (`auto`: the first
/// that answers). A backend without images is refused.
pub async fn backend_with_images(requested: &str) -> Result<Box<dyn Backend>, CliError> {
    let (backend, choice) = crate::backend::select(requested, true).await?;
    match backend.images().await {
        Ok(_) => Ok(backend),
        // `auto` found no engine: say why, rather than what native lacks.
        Err(error) if requested == "auto" => Err(error.with_hint(choice.reason)),
        Err(error) => Err(error),
    }
}

/// One agent's image after [`build`]: its tag, and whether anything was built.
pub struct Built {
    pub agent: String,
    pub tag: String,
    pub up_to_date: bool,
}

/// Builds the images of `agents` (every name is checked first, so a typo
/// fails before any build starts).
pub async fn build(
    context: &Context,
    images: &dyn Images,
    agents: &[String],
    no_cache: bool,
) -> Result<Vec<Built>, CliError> {
    let (settings, project) = context.project_images(context.devcontainer().as_ref())?;
    let agents = agents
        .iter()
        .map(|name| context.catalog.get(name))
        .collect::<Result<Vec<_>, _>>()?;
    let mut options = context.build_options(no_cache)?;
    if let Some(image) = project {
        // No session: the build reaches what an image build may, any
        // public host (as Incus builds do), never a private address.
        let policy = kennel_proxy::Policy {
            mode: kennel_core::plan::NetworkMode::Restricted,
            allow: Vec::new(),
            deny: Vec::new(),
        };
        options.project = Some(std::sync::Arc::new(
            context.project_build(image, policy, false)?,
        ));
    }
    let mut built = Vec::new();
    for agent in agents {
        let recipes = kennel_image::recipes_for(agent, &settings);
        let outcomes = images.ensure(&recipes, &options).await?;
        built.push(Built {
            agent: agent.name.clone(),
            tag: recipes
                .last()
                .map(|recipe| recipe.tag.clone())
                .unwrap_or_default(),
            up_to_date: outcomes.iter().all(|outcome| *outcome == Outcome::UpToDate),
        });
    }
    Ok(built)
}

/// Tags that the current config's recipes produce, for every agent.
fn current_tags(context: &Context) -> Result<BTreeSet<String>, CliError> {
    let (settings, project) = context.project_images(context.devcontainer().as_ref())?;
    let mut tags: BTreeSet<String> = context
        .catalog
        .agents()
        .flat_map(|agent| kennel_image::recipes_for(agent, &settings))
        .map(|recipe| recipe.tag)
        .collect();
    tags.extend(project.map(|image| image.tag));
    Ok(tags)
}

/// An image kennel built (`kennel image ls`).
#[derive(Debug, Serialize)]
pub struct Listed {
    pub reference: String,
    pub id: String,
    pub agent: Option<String>,
    pub layer: Option<String>,
    /// The workspace a devcontainer image was built for.
    pub project: Option<String>,
    pub size: i64,
    pub created: i64,
    /// A current recipe builds it (otherwise it is stale).
    pub current: bool,
}

/// Every image kennel built in `images`.
pub async fn list(context: &Context, images: &dyn Images) -> Result<Vec<Listed>, CliError> {
    let current = current_tags(context)?;
    Ok(images
        .list()
        .await?
        .into_iter()
        .map(|image| Listed {
            current: current.contains(&image.reference),
            agent: image.labels.get(LABEL_AGENT).cloned(),
            layer: image.labels.get(LABEL_LAYER).cloned(),
            project: image.labels.get(kennel_image::LABEL_PROJECT).cloned(),
            reference: image.reference,
            id: image.id,
            size: image.size,
            created: image.created,
        })
        .collect())
}

/// Removes images by reference, or every image of an agent; the references
/// removed.
pub async fn remove(
    context: &Context,
    store: &dyn Images,
    targets: &[String],
    force: bool,
) -> Result<Vec<String>, CliError> {
    let images = store.list().await?;
    let mut removed = Vec::new();
    for target in targets {
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
            crate::report::note(&format!("no images for agent {target}"));
        }
        for reference in references {
            store.remove(&reference, force).await?;
            removed.push(reference);
        }
    }
    Ok(removed)
}

/// Removes the images no current recipe builds (`all`: every one); the
/// references removed. One still in use is kept, and said so.
pub async fn prune(
    context: &Context,
    store: &dyn Images,
    all: bool,
) -> Result<Vec<String>, CliError> {
    let current = current_tags(context)?;
    let images = store.list().await?;
    // Agent layers first, base layers last: a layer cannot go while an
    // image built on it stays.
    let mut stale: Vec<_> = images
        .iter()
        .filter(|image| all || !current.contains(&image.reference))
        .collect();
    stale.sort_by_key(
        |image| match image.labels.get(LABEL_LAYER).map(String::as_str) {
            Some("devcontainer") => 3,
            Some("base") => 2,
            Some("project") => 1,
            _ => 0,
        },
    );
    let mut removed = Vec::new();
    for image in stale {
        match store.remove(&image.reference, false).await {
            Ok(()) => removed.push(image.reference.clone()),
            Err(error) => crate::report::note(&format!("kept {}: {error}", image.reference)),
        }
    }
    Ok(removed)
}
