//! Building agent images with visible progress, a full log on disk, and the
//! failing step's own output when a build fails.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use kennel_engine::{BuildEvent, BuildRequest, Engine, EngineError};
use kennel_image::Recipe;

use crate::error::CliError;

/// How to build: whether layers already built count, where the logs go,
/// and the network a backend that runs the steps itself gives them (the
/// engines' builders have their own).
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// Build every layer again.
    pub no_cache: bool,
    /// One log per image tag ([`log_file`]).
    pub logs: PathBuf,
    /// The user's `[network]` facts: names resolved before DNS, an
    /// upstream proxy, trusted ranges.
    pub hosts: std::collections::BTreeMap<String, Vec<std::net::IpAddr>>,
    pub upstream: Option<String>,
    pub trusted: Vec<(std::net::IpAddr, u8)>,
    /// Where a build's proxy puts its socket directory (short enough for a
    /// Unix socket's path; see `kennel_core::settings::proxy_dirs`).
    pub proxy_dirs: PathBuf,
    /// Set when the repository chose the base image (its devcontainer.json
    /// or `.kennel.toml`): a base image the engine does not have is pulled
    /// only from a registry the session's network policy lets the sandbox
    /// reach, so that a repository cannot make the engine contact a host
    /// the user did not allow (an image's name can carry data).
    pub pulls: Option<PullPolicy>,
    /// The project's image from its devcontainer.json (a Dockerfile or
    /// features), built by kennel before the layers that go on it.
    pub project: Option<std::sync::Arc<crate::dev_build::ProjectBuild>>,
}

/// Where a repository-chosen base image may be pulled from.
#[derive(Debug, Clone)]
pub struct PullPolicy {
    pub policy: kennel_proxy::Policy,
    /// What chose the image, for the message (`…/devcontainer.json`).
    pub chosen_by: String,
}

/// The registry host an image reference is pulled from, as Docker reads
/// it: the first component when it names a host (`ghcr.io/…`,
/// `localhost:5000/…`), else Docker Hub.
pub fn registry_host(reference: &str) -> String {
    let name = reference.split('@').next().unwrap_or(reference);
    match name.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => first
            .rsplit_once(':')
            .map_or(first, |(host, _)| host)
            .to_ascii_lowercase(),
        _ => "docker.io".to_string(),
    }
}

/// Refuses to build on `base` when the engine does not have it and
/// `pulls` does not allow its registry.
async fn check_pull(engine: &Engine, base: &str, pulls: &PullPolicy) -> Result<(), CliError> {
    if engine.image_exists(base).await? {
        return Ok(());
    }
    let host = registry_host(base);
    if matches!(
        kennel_proxy::check_name(&pulls.policy, &host),
        kennel_proxy::Verdict::Allow
    ) {
        return Ok(());
    }
    Err(CliError::kennel(format!(
        "the base image {base} (chosen by {}) is not here, and pulling it would reach {host}, which this session's network policy does not allow",
        pulls.chosen_by
    ))
    .with_hint(format!(
        "pull it yourself if you trust it (docker pull {base}), allow the registry (--allow {host}), trust the file that names it (kennel config trust FILE), or run with --devcontainer none"
    )))
}

/// What happened to one layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    UpToDate,
    Built,
}

/// Where build logs go: one file per image tag, rewritten by each build of
/// that tag (`<data dir>/logs/builds/kennel-claude-0123456789ab.log`).
pub fn log_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("logs").join("builds")
}

/// The build log of `tag` in `log_dir`.
pub fn log_file(log_dir: &Path, tag: &str) -> PathBuf {
    let name: String = tag
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    log_dir.join(format!("{name}.log"))
}

/// Builds each recipe (in order) that the engine does not have yet, on
/// the project's image (built first) when there is one. The whole output
/// of each build is kept under `log_dir`; `-v` also prints it.
pub async fn ensure(
    engine: &Engine,
    recipes: &[Recipe],
    options: &BuildOptions,
) -> Result<Vec<Outcome>, CliError> {
    if let Some(project) = &options.project {
        // The agent's layer exists: so does everything under it (the one
        // lookup of the hot path, not repeated by `ensure_layers`).
        if let Some(last) = recipes.last().filter(|_| !options.no_cache)
            && engine.image_exists(&last.tag).await?
        {
            return Ok(vec![Outcome::UpToDate; recipes.len()]);
        }
        crate::dev_build::ensure(engine, project, options).await?;
    }
    ensure_layers(engine, recipes, options).await
}

/// [`ensure`] without the project's image.
pub async fn ensure_layers(
    engine: &Engine,
    recipes: &[Recipe],
    options: &BuildOptions,
) -> Result<Vec<Outcome>, CliError> {
    let (no_cache, log_dir) = (options.no_cache, options.logs.as_path());
    // The agent layer's tag hashes the base layer's tag, so when it exists
    // everything below it does too: one lookup on the hot path of `run`.
    if let Some(last) = recipes.last().filter(|_| !no_cache)
        && engine.image_exists(&last.tag).await?
    {
        return Ok(vec![Outcome::UpToDate; recipes.len()]);
    }
    if let (Some(pulls), Some(base)) = (
        &options.pulls,
        recipes.first().and_then(kennel_image::Recipe::base),
    ) {
        check_pull(engine, &base, pulls).await?;
    }
    let mut outcomes = Vec::new();
    for recipe in recipes {
        if !no_cache && engine.image_exists(&recipe.tag).await? {
            tracing::debug!(tag = %recipe.tag, "image up to date");
            outcomes.push(Outcome::UpToDate);
            continue;
        }
        match build_one(engine, recipe, no_cache, log_dir).await {
            // Podman reads every image of its store to find cached layers,
            // and fails when one is being removed meanwhile (another
            // kennel's `image rm`): once more finds the store settled.
            Err(error) if error.message.contains(STORE_RACE) => {
                tracing::info!(tag = %recipe.tag, "the engine's store changed during the build; building again");
                build_one(engine, recipe, no_cache, log_dir).await?;
            }
            other => other?,
        }
        outcomes.push(Outcome::Built);
    }
    Ok(outcomes)
}

/// What Podman says when an image it looks at for cached layers went
/// away during the build.
const STORE_RACE: &str = "layer not known";

async fn build_one(
    engine: &Engine,
    recipe: &Recipe,
    no_cache: bool,
    log_dir: &Path,
) -> Result<(), CliError> {
    let started = Instant::now();
    let request = BuildRequest {
        tag: recipe.tag.clone(),
        context_tar: recipe.context_tar()?,
        labels: recipe.labels.clone(),
        no_cache,
    };
    let (log_path, mut log) = start_log(log_dir, recipe, "")?;

    let mut progress = crate::report::progress(&format!(
        "building {} (first use; later runs reuse it; log: {})",
        recipe.tag,
        log_path.display()
    ));
    let mut on_event = |event: BuildEvent| match &event {
        BuildEvent::Step(line) => {
            let _ = writeln!(log, "{line}");
            progress.step(line);
        }
        BuildEvent::Output(line) => {
            let _ = writeln!(log, "{line}");
            progress.output(line);
        }
    };
    let result = engine.build_image(request, &mut on_event).await;
    drop(progress);
    if let Err(error) = &result {
        let _ = writeln!(log, "# kennel: the build failed: {error}");
    }
    result.map_err(|error| build_error(error, &log_path))?;
    crate::report::note(&format!(
        "built {} in {:.0?}",
        recipe.tag,
        started.elapsed()
    ));
    Ok(())
}

/// A new build log for `recipe` in `log_dir` (replacing the last one),
/// opened with what is built `place` and the recipe's Dockerfile.
pub fn start_log(
    log_dir: &Path,
    recipe: &Recipe,
    place: &str,
) -> Result<(PathBuf, File), CliError> {
    let mut header = format!("building {}{place}\n# Dockerfile:", recipe.tag);
    for line in recipe.dockerfile.lines() {
        header.push_str(&format!("\n#   {line}"));
    }
    open_log(log_dir, &recipe.tag, &header)
}

/// A new build log for `tag` in `log_dir`, opened with `header` (as a
/// `# kennel:` comment).
pub fn open_log(log_dir: &Path, tag: &str, header: &str) -> Result<(PathBuf, File), CliError> {
    let log_path = log_file(log_dir, tag);
    let mut log = std::fs::create_dir_all(log_dir)
        .and_then(|()| File::create(&log_path))
        .map_err(|error| {
            CliError::kennel(format!(
                "cannot write the build log {}: {error}",
                log_path.display()
            ))
        })?;
    let _ = writeln!(log, "# kennel: {header}");
    Ok((log_path, log))
}

/// A failed build as the user sees it: what failed, the failing step and
/// its last lines of output, and where the whole log is.
fn build_error(error: EngineError, log_path: &Path) -> CliError {
    let (step, output_tail) = match &error {
        EngineError::BuildFailed {
            step, output_tail, ..
        } => (step.clone(), output_tail.clone()),
        _ => (None, Vec::new()),
    };
    with_build_details(
        CliError::from(error),
        step.as_deref(),
        &output_tail,
        log_path,
    )
}

/// `error` with the failing step, its last lines of output (escaped: a
/// build's output is not the user's terminal's business) and the log's path
/// added to its message: the shape of every failed build, whoever built.
pub fn with_build_details(
    mut error: CliError,
    step: Option<&str>,
    output_tail: &[String],
    log_path: &Path,
) -> CliError {
    let mut details = String::new();
    if let Some(step) = step {
        details.push_str(&format!(
            "\n  failing step: {}",
            crate::text::escape_controls(step)
        ));
    }
    if !output_tail.is_empty() {
        details.push_str(&format!(
            "\n  its last {} lines of output:",
            output_tail.len()
        ));
        for line in output_tail {
            details.push_str(&format!("\n  | {}", crate::text::escape_controls(line)));
        }
    }
    details.push_str(&format!("\n  full build log: {}", log_path.display()));
    error.message.push_str(&details);
    error
}

/// A build step's output as it comes: each line to the log and the
/// progress, the last [`StepOutput::TAIL`] kept for the error message.
#[derive(Default)]
pub struct StepOutput {
    lines: LineSplitter,
    tail: std::collections::VecDeque<String>,
}

impl StepOutput {
    /// The lines a failed step's message shows.
    pub const TAIL: usize = 20;

    pub fn push(
        &mut self,
        chunk: &[u8],
        log: &mut File,
        progress: &mut dyn crate::report::Progress,
    ) {
        for line in self.lines.push(chunk) {
            self.keep(line, log, progress);
        }
    }

    fn keep(&mut self, line: String, log: &mut File, progress: &mut dyn crate::report::Progress) {
        let _ = writeln!(log, "{line}");
        progress.output(&line);
        if self.tail.len() == Self::TAIL {
            self.tail.pop_front();
        }
        self.tail.push_back(line);
    }

    /// The rest (a last line without a newline) and the tail.
    pub fn finish(
        mut self,
        log: &mut File,
        progress: &mut dyn crate::report::Progress,
    ) -> Vec<String> {
        for line in self.lines.finish() {
            self.keep(line, log, progress);
        }
        self.tail.into()
    }
}

/// Output chunks as lines (a line may span chunks).
#[derive(Default)]
struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    fn push(&mut self, chunk: &[u8]) -> Vec<String> {
        self.pending.extend_from_slice(chunk);
        let mut lines = Vec::new();
        while let Some(end) = self.pending.iter().position(|byte| *byte == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            lines.push(
                String::from_utf8_lossy(&line[..line.len() - 1])
                    .trim_end_matches('\r')
                    .to_string(),
            );
        }
        lines
    }

    fn finish(&mut self) -> Vec<String> {
        if self.pending.is_empty() {
            return Vec::new();
        }
        let rest = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        vec![rest]
    }
}

#[cfg(test)]
mod tests {
    use super::{LineSplitter, registry_host};

    #[test]
    fn output_in_lines_across_chunks() {
        let mut lines = LineSplitter::default();
        assert!(lines.push(b"Get:1 http").is_empty());
        assert_eq!(
            lines.push(b"://deb\r\nGet:2\nx"),
            ["Get:1 http://deb", "Get:2"]
        );
        assert_eq!(lines.finish(), ["x"]);
        assert!(lines.finish().is_empty());
    }

    #[test]
    fn registry_hosts_as_docker_reads_them() {
        for (reference, host) in [
            ("debian:bookworm", "docker.io"),
            ("kennel-test/bookworm:latest", "docker.io"),
            (
                "mcr.microsoft.com/devcontainers/rust:1",
                "mcr.microsoft.com",
            ),
            ("ghcr.io/acme/dev@sha256:0123", "ghcr.io"),
            ("localhost:5000/dev:1", "localhost"),
            ("Registry.Example.COM:443/x", "registry.example.com"),
            ("evil.example/c2VjcmV0", "evil.example"),
        ] {
            assert_eq!(registry_host(reference), host, "{reference}");
        }
    }
}
