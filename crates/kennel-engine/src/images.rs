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

/// How many lines of build output an error keeps.
const TAIL_LINES: usize = 20;

fn is_step(line: &str) -> bool {
    let lower = line.trim_start().to_ascii_lowercase();
    lower.starts_with("step ") && lower[5..].starts_with(|c: char| c.is_ascii_digit())
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

        let mut tail: VecDeque<String> = VecDeque::with_capacity(TAIL_LINES);
        let mut pending = String::new();
        let mut emit = |text: &str, tail: &mut VecDeque<String>, pending: &mut String| {
            pending.push_str(text);
            while let Some(pos) = pending.find('\n') {
                let line: String = pending.drain(..=pos).collect();
                let line = line.trim_end_matches(['\n', '\r']).to_string();
                if line.trim().is_empty() {
                    continue;
                }
                if tail.len() == TAIL_LINES {
                    tail.pop_front();
                }
                tail.push_back(line.clone());
                if is_step(&line) {
                    on_event(BuildEvent::Step(line));
                } else {
                    on_event(BuildEvent::Output(line));
                }
            }
        };
        let failed = |message: String, tail: &VecDeque<String>| EngineError::BuildFailed {
            tag: req.tag.clone(),
            message: message.trim().to_string(),
            output_tail: tail.iter().cloned().collect(),
        };

        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    if let Some(detail) = info.error_detail {
                        emit("\n", &mut tail, &mut pending);
                        let message = detail
                            .message
                            .unwrap_or_else(|| "unknown error".to_string());
                        return Err(failed(message, &tail));
                    }
                    if let Some(text) = info.stream.as_deref() {
                        emit(text, &mut tail, &mut pending);
                    }
                    if let Some(status) = info.status.as_deref() {
                        emit(&format!("{status}\n"), &mut tail, &mut pending);
                    }
                }
                Err(bollard::errors::Error::DockerStreamError { error }) => {
                    emit("\n", &mut tail, &mut pending);
                    return Err(failed(error, &tail));
                }
                Err(err) => {
                    emit("\n", &mut tail, &mut pending);
                    let status = status_of(&err);
                    return match err {
                        bollard::errors::Error::DockerResponseServerError { message, .. }
                            if status.is_some_and(|code| (400..500).contains(&code)) =>
                        {
                            Err(failed(message, &tail))
                        }
                        other => Err(EngineError::api(
                            format!("building image {}", req.tag),
                            other,
                        )),
                    };
                }
            }
        }
        emit("\n", &mut tail, &mut pending);

        // Some engines end the stream without an error even though nothing was tagged.
        if !self.image_exists(&req.tag).await? {
            return Err(failed(
                "the build ended but the image does not exist".to_string(),
                &tail,
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
        let images = self
            .docker
            .list_images(Some(options))
            .await
            .map_err(|err| EngineError::api("listing images", err))?;
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

    /// Remove an image (untag it; delete it when no tag is left).
    pub async fn remove_image(&self, reference: &str, force: bool) -> Result<(), EngineError> {
        let options = RemoveImageOptionsBuilder::default().force(force).build();
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
    use super::is_step;

    #[test]
    fn steps_from_both_engines() {
        assert!(is_step("Step 1/3 : FROM debian"));
        assert!(is_step("STEP 2/3: RUN true"));
        assert!(!is_step("stepping through"));
        assert!(!is_step(" ---> Running in 1234"));
    }
}
