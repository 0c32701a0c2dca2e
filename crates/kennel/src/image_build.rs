//! Building agent images with visible progress.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use kennel_engine::{BuildEvent, BuildRequest, Engine};
use kennel_image::Recipe;

use crate::error::CliError;

/// What happened to one layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    UpToDate,
    Built,
}

/// Builds each recipe (in order) that the engine does not have yet.
pub async fn ensure(
    engine: &Engine,
    recipes: &[Recipe],
    no_cache: bool,
) -> Result<Vec<Outcome>, CliError> {
    // The agent layer's tag hashes the base layer's tag, so when it exists
    // everything below it does too: one lookup on the hot path of `run`.
    if let Some(last) = recipes.last().filter(|_| !no_cache)
        && engine.image_exists(&last.tag).await?
    {
        return Ok(vec![Outcome::UpToDate; recipes.len()]);
    }
    let mut outcomes = Vec::new();
    for recipe in recipes {
        if !no_cache && engine.image_exists(&recipe.tag).await? {
            tracing::debug!(tag = %recipe.tag, "image up to date");
            outcomes.push(Outcome::UpToDate);
            continue;
        }
        build_one(engine, recipe, no_cache).await?;
        outcomes.push(Outcome::Built);
    }
    Ok(outcomes)
}

async fn build_one(engine: &Engine, recipe: &Recipe, no_cache: bool) -> Result<(), CliError> {
    let started = Instant::now();
    let request = BuildRequest {
        tag: recipe.tag.clone(),
        context_tar: recipe.context_tar()?,
        labels: recipe.labels.clone(),
        no_cache,
    };
    let interactive = std::io::stderr().is_terminal();
    let bar = if interactive {
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} {prefix} [{elapsed}] {wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_prefix(format!("building {}", recipe.tag));
        bar.enable_steady_tick(Duration::from_millis(120));
        Some(bar)
    } else {
        eprintln!(
            "kennel: building {} (first use; later runs reuse it)",
            recipe.tag
        );
        None
    };
    let mut on_event = |event: BuildEvent| match (&bar, event) {
        (Some(bar), BuildEvent::Step(line)) | (Some(bar), BuildEvent::Output(line)) => {
            bar.set_message(line.trim().chars().take(120).collect::<String>());
        }
        (None, BuildEvent::Step(line)) => eprintln!("kennel:   {}", line.trim()),
        (None, BuildEvent::Output(_)) => {}
    };
    let result = engine.build_image(request, &mut on_event).await;
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    result?;
    eprintln!("kennel: built {} in {:.0?}", recipe.tag, started.elapsed());
    Ok(())
}
