//! Images: existence checks, builds from a tar context, listing, removal.

use std::collections::{BTreeMap, HashMap, VecDeque};

use bollard::query_parameters::{
    BuildImageOptionsBuilder, ListImagesOptionsBuilder, RemoveImageOptionsBuilder,
};
use futures_util::StreamExt;
use tracing::debug;

use crate::Engine;
use crate::error::{EngineError, status_of};

/// What to build: a tar archive with a `Dockerfile` at its root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildRequest {
    pub tag: String,
    pub context_tar: Vec<u8>,
    pub labels: BTreeMap<String, String>,
    pub no_cache: bool,
}

/// Progress of a build, one line at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildEvent {
    /// A new build step (`Step 2/5 : RUN …` from Docker, `STEP 2/5: RUN …` from Podman).
    Step(String),
    /// Any other line of output.
    Output(String),
}

/// One tagged image (an image with several tags appears once per tag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSummary {
    /// `repository:tag`, or the image id when the image has no tag.
    pub reference: String,
    pub id: String,
    /// Size in bytes.
    pub size: i64,
    /// Creation time, seconds since the epoch.
    pub created: i64,
    pub labels: BTreeMap<String, String>,
}

/// What Docker's classic builder wraps a step's stderr in.
const DOCKER_STDERR_COLOUR: &str = "\x1b[91m";
const DOCKER_COLOUR_RESET: &str = "\x1b[0m";

/// How many lines of the failing step's output an error keeps.
const TAIL_LINES: usize = 25;

fn is_step(line: &str) -> bool {
    let lower = line.trim_start().to_ascii_lowercase();
    lower.starts_with("step ") && lower[5..].starts_with(|c: char| c.is_ascii_digit())
}

/// Docker's classic builder's own lines between a step's output: not what
/// the step printed, so not kept for an error.
fn is_builder_chatter(line: &str) -> bool {
    line.starts_with(" ---> ")
        || line.starts_with("Removing intermediate container ")
        || line.starts_with("Successfully built ")
        || line.starts_with("Successfully tagged ")
}

/// The instruction of a step line: `FROM debian` from `Step 1/3 : FROM
/// debian` (Docker) or `STEP 1/3: FROM debian` (Podman).
fn step_instruction(step: &str) -> &str {
    step.split_once(':').map_or(step, |(_, rest)| rest).trim()
}

/// The image a `FROM` step names, when `step` is one.
fn from_image(step: &str) -> Option<&str> {
    let instruction = step_instruction(step);
    let (keyword, rest) = instruction.split_once(char::is_whitespace)?;
    keyword
        .eq_ignore_ascii_case("from")
        .then(|| rest.split_whitespace().next())
        .flatten()
}

/// The output of a build as it streams: split into lines, the step being
/// run, and the last lines of that step's own output for an error.
#[derive(Default)]
struct BuildOutput {
    pending: String,
    step: Option<String>,
    step_tail: VecDeque<String>,
}

impl BuildOutput {
    fn push(&mut self, text: &str, on_event: &mut (dyn FnMut(BuildEvent) + Send)) {
        self.pending.push_str(text);
        while let Some(pos) = self.pending.find('\n') {
            let line: String = self.pending.drain(..=pos).collect();
            // Docker colours a step's stderr red; the colour is not output.
            let line = line
                .trim_end_matches(['\n', '\r'])
                .replace(DOCKER_STDERR_COLOUR, "")
                .replace(DOCKER_COLOUR_RESET, "");
            if line.trim().is_empty() {
                continue;
            }
            if is_step(&line) {
                self.step = Some(line.trim().to_string());
                self.step_tail.clear();
                on_event(BuildEvent::Step(line));
            } else if is_builder_chatter(&line) {
                on_event(BuildEvent::Output(line));
            } else {
                if self.step_tail.len() == TAIL_LINES {
                    self.step_tail.pop_front();
                }
                self.step_tail.push_back(line.clone());
                on_event(BuildEvent::Output(line));
            }
        }
    }

    /// The error for a build that failed with `message`: a base image that
    /// could not be had when the failing step is a `FROM` of another image
    /// than kennel's own layers, a failed step otherwise.
    fn failed(
        mut self,
        kind: crate::EngineKind,
        tag: &str,
        message: String,
        on_event: &mut (dyn FnMut(BuildEvent) + Send),
    ) -> EngineError {
        self.push("\n", on_event);
        let message = message.trim().to_string();
        if let Some(image) = self.step.as_deref().and_then(from_image) {
            return EngineError::BaseImageUnavailable {
                kind,
                tag: tag.to_string(),
                image: image.to_string(),
                message,
            };
        }
        EngineError::BuildFailed {
            tag: tag.to_string(),
            step: self.step,
            message,
            output_tail: self.step_tail.into_iter().collect(),
        }
    }
}

fn not_found(err: &bollard::errors::Error) -> bool {
    status_of(err) == Some(404)
}

impl Engine {
    /// Does the engine have this image locally? (Never pulls.)
    pub async fn image_exists(&self, reference: &str) -> Result<bool, EngineError> {
        match self.docker.inspect_image(reference).await {
            Ok(_) => Ok(true),
            Err(err) if not_found(&err) => Ok(false),
            Err(err) => Err(EngineError::api(
                format!("inspecting image {reference}"),
                err,
            )),
        }
    }

    /// Build `req.tag` from `req.context_tar`, reporting progress to `on_event`.
    pub async fn build_image(
        &self,
        req: BuildRequest,
        on_event: &mut (dyn FnMut(BuildEvent) + Send),
    ) -> Result<(), EngineError> {
        let labels: HashMap<String, String> = req.labels.clone().into_iter().collect();
        let options = BuildImageOptionsBuilder::default()
            .dockerfile("Dockerfile")
            .t(&req.tag)
            .rm(true)
            .forcerm(true)
            .nocache(req.no_cache)
            .labels(&labels)
            .build();
        let body = bollard::body_full(req.context_tar.into());
        let mut stream = self.docker.build_image(options, None, Some(body));

        let mut output = BuildOutput::default();
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    if let Some(detail) = info.error_detail {
                        let message = detail
                            .message
                            .unwrap_or_else(|| "unknown error".to_string());
                        return Err(output.failed(self.kind, &req.tag, message, on_event));
                    }
                    if let Some(text) = info.stream.as_deref() {
                        output.push(text, on_event);
                    }
                    if let Some(status) = info.status.as_deref() {
                        output.push(&format!("{status}\n"), on_event);
                    }
                }
                Err(bollard::errors::Error::DockerStreamError { error }) => {
                    return Err(output.failed(self.kind, &req.tag, error, on_event));
                }
                Err(err) => {
                    let status = status_of(&err);
                    return match err {
                        bollard::errors::Error::DockerResponseServerError { message, .. }
                            if status.is_some_and(|code| (400..500).contains(&code)) =>
                        {
                            Err(output.failed(self.kind, &req.tag, message, on_event))
                        }
                        other => Err(EngineError::api(
                            format!("building image {}", req.tag),
                            other,
                        )),
                    };
                }
            }
        }
        output.push("\n", on_event);

        // Some engines end the stream without an error even though nothing was tagged.
        if !self.image_exists(&req.tag).await? {
            return Err(output.failed(
                self.kind,
                &req.tag,
                "the build ended but the image does not exist".to_string(),
                on_event,
            ));
        }
        debug!(tag = %req.tag, "image built");
        Ok(())
    }

    /// Images carrying a label filter such as `dev.kennel.managed=true` (or just a key).
    pub async fn list_images(&self, label_filter: &str) -> Result<Vec<ImageSummary>, EngineError> {
        let mut filters: HashMap<String, Vec<String>> = HashMap::new();
        if !label_filter.is_empty() {
            filters.insert("label".to_string(), vec![label_filter.to_string()]);
        }
        let options = ListImagesOptionsBuilder::default()
            .filters(&filters)
            .build();
        // Podman fails the whole listing when an image it is reading goes
        // away meanwhile (another kennel's `image rm`, a build's cleanup):
        // once the store has settled, the listing works.
        let mut attempt = 0;
        let images = loop {
            match self.docker.list_images(Some(options.clone())).await {
                Ok(images) => break images,
                Err(err) if attempt < 3 && err.to_string().contains("image not known") => {
                    attempt += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(100 * attempt)).await;
                }
                Err(err) => return Err(EngineError::api("listing images", err)),
            }
        };
        let mut out = Vec::new();
        for image in images {
            let labels: BTreeMap<String, String> = image.labels.into_iter().collect();
            let tags: Vec<String> = image
                .repo_tags
                .into_iter()
                .filter(|tag| tag != "<none>:<none>")
                .collect();
            if tags.is_empty() {
                out.push(ImageSummary {
                    reference: image.id.clone(),
                    id: image.id,
                    size: image.size,
                    created: image.created,
                    labels,
                });
            } else {
                for tag in tags {
                    out.push(ImageSummary {
                        reference: tag,
                        id: image.id.clone(),
                        size: image.size,
                        created: image.created,
                        labels: labels.clone(),
                    });
                }
            }
        }
        out.sort_by(|a, b| a.reference.cmp(&b.reference));
        Ok(out)
    }

    /// Remove an image (untag it; delete it when no tag is left). Its
    /// untagged parents stay (`noprune`): they are the build cache of
    /// other images, possibly being built at this moment (Podman failed a
    /// concurrent build with "layer not known" when they went).
    pub async fn remove_image(&self, reference: &str, force: bool) -> Result<(), EngineError> {
        let options = RemoveImageOptionsBuilder::default()
            .force(force)
            .noprune(true)
            .build();
        match self
            .docker
            .remove_image(reference, Some(options), None)
            .await
        {
            Ok(_) => Ok(()),
            Err(err) if not_found(&err) => Err(EngineError::ImageNotFound {
                reference: reference.to_string(),
            }),
            Err(err) => Err(EngineError::api(format!("removing image {reference}"), err)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_from_both_engines() {
        assert!(is_step("Step 1/3 : FROM debian"));
        assert!(is_step("STEP 2/3: RUN true"));
        assert!(!is_step("stepping through"));
        assert!(!is_step(" ---> Running in 1234"));
        assert_eq!(
            from_image("Step 1/3 : FROM debian:bookworm AS base"),
            Some("debian:bookworm")
        );
        assert_eq!(
            from_image("STEP 1/2: FROM kennel/base:0123"),
            Some("kennel/base:0123")
        );
        assert_eq!(from_image("Step 2/3 : RUN from here"), None);
    }

    fn feed(lines: &[&str]) -> (BuildOutput, Vec<BuildEvent>) {
        let mut output = BuildOutput::default();
        let mut events = Vec::new();
        for text in lines {
            output.push(text, &mut |event| events.push(event));
        }
        (output, events)
    }

    #[test]
    fn a_failed_step_keeps_its_own_output_only() {
        let (output, _) = feed(&[
            "Step 1/2 : FROM kennel/base:1\n",
            "base output\n",
            "Step 2/2 : RUN sh /tmp/kennel-install.sh\n",
            "\x1b[91mnpm error code E404\r\n\x1b[0m",
            "npm error 404 Not Found - GET https://registry.npmjs.org/nope\n",
            " ---> Running in 1234\n",
            "Removing intermediate container 1234\n",
        ]);
        let error = output.failed(
            crate::EngineKind::Docker,
            "kennel/x:1",
            "The command returned a non-zero code: 1\n".into(),
            &mut |_| {},
        );
        match error {
            EngineError::BuildFailed {
                step,
                output_tail,
                message,
                ..
            } => {
                assert_eq!(
                    step.as_deref(),
                    Some("Step 2/2 : RUN sh /tmp/kennel-install.sh")
                );
                assert_eq!(
                    output_tail,
                    vec![
                        "npm error code E404".to_string(),
                        "npm error 404 Not Found - GET https://registry.npmjs.org/nope".to_string()
                    ]
                );
                assert_eq!(message, "The command returned a non-zero code: 1");
            }
            other => panic!("expected BuildFailed, got {other:?}"),
        }
    }

    #[test]
    fn a_failed_from_is_an_unavailable_base_image() {
        let (output, _) = feed(&[
            "STEP 1/2: FROM debian:bookworm-slim\n",
            "Trying to pull docker.io/library/debian:bookworm-slim...\n",
        ]);
        let error = output.failed(
            crate::EngineKind::Podman,
            "kennel/base:1",
            "pinging container registry registry-1.docker.io: no such host".into(),
            &mut |_| {},
        );
        assert!(
            matches!(&error, EngineError::BaseImageUnavailable { image, .. } if image == "debian:bookworm-slim"),
            "{error:?}"
        );
        let hint = error.hint().unwrap_or_default();
        assert!(hint.contains("base_image"), "{hint}");
        assert!(!hint.contains("--no-cache"), "{hint}");
    }
}

/// An image's file system and settings, flattened (for a backend that runs
/// images the engine builds, as Incus does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportedImage {
    /// The image's `ENV`, as `KEY=VALUE`.
    pub env: Vec<String>,
    pub labels: BTreeMap<String, String>,
}

impl Engine {
    /// Writes `reference`'s root file system, all layers flattened, as an
    /// uncompressed tar to `out` (through a container that is created,
    /// never started, and removed), and returns its settings.
    pub async fn export_image(
        &self,
        reference: &str,
        out: &mut (dyn std::io::Write + Send),
    ) -> Result<ExportedImage, EngineError> {
        let inspected = self
            .docker
            .inspect_image(reference)
            .await
            .map_err(|err| EngineError::api(format!("inspecting image {reference}"), err))?;
        let config = inspected.config.unwrap_or_default();
        let id = self
            .create_unstarted(reference, &format!("creating a container of {reference}"))
            .await?;
        let exported = async {
            let mut stream = self.docker.export_container(&id);
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|err| {
                    EngineError::api(format!("exporting the file system of {reference}"), err)
                })?;
                out.write_all(&chunk).map_err(|err| {
                    EngineError::io(format!("writing the file system of {reference}"), err)
                })?;
            }
            Ok::<(), EngineError>(())
        }
        .await;
        if let Err(err) = self.remove(&id, true).await {
            debug!(%err, "cannot remove the export container");
        }
        exported?;
        Ok(ExportedImage {
            env: config.env.unwrap_or_default(),
            labels: config.labels.unwrap_or_default().into_iter().collect(),
        })
    }
}
