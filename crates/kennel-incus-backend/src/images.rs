//! kennel's images in Incus: each built by the container engine on this
//! machine (Docker or Podman, from the same recipe and with the same
//! content-hashed tag) and converted: its file system flattened, an init
//! added, its `ENV` and labels kept as image properties, imported under the
//! tag as an alias. An unchanged recipe is never converted again. When
//! `base_image` names an Incus image, Incus builds them itself, step by
//! step ([`crate::build`]).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use async_trait::async_trait;
use kennel_incus::Client;
use kennel_lib::backend::{Images, StoredImage};
use kennel_lib::error::CliError;
use kennel_lib::image_build::{BuildOptions, Outcome};

use crate::incus_error;

/// The image property that holds the image's environment (JSON object).
pub(crate) const ENV_PROPERTY: &str = "kennel.env";
/// The image property that says how kennel converted it: an image of
/// another conversion (an older init, say) is converted again, although
/// its tag (the recipe's hash) is the same.
pub(crate) const CONVERSION_PROPERTY: &str = "kennel.conversion";
pub(crate) const CONVERSION: &str = "2";

/// The init every converted image gets at `/usr/sbin/init` (where LXC
/// starts it; `/sbin` is a link there): bring the loopback up (a container
/// with no network device has only that, down; kennel's proxy forwarder
/// listens on it), allow no core dumps (its children's memory could hold
/// what the agent's does), keep the container alive, reap orphans (the shell reaps
/// any child in `wait`), and end on SIGPWR (what `incus stop` sends) or
/// SIGTERM (what a session's wrapper sends when the agent has ended).
pub(crate) const INIT: &str = "#!/bin/sh
# kennel: the container's init. Brings the loopback up, keeps the container
# alive and reaps orphans; stops on SIGPWR (incus stop) or SIGTERM (the
# agent has ended).
ip link set lo up 2>/dev/null
ulimit -c 0
trap 'exit 0' PWR TERM INT
while :; do
    sleep 2147483647 &
    wait $!
done
";

pub struct IncusImages {
    client: Client,
}

impl IncusImages {
    pub fn new(client: &Client) -> IncusImages {
        IncusImages {
            client: client.clone(),
        }
    }

    /// Whether Incus has an image under `alias`, converted as this kennel
    /// converts.
    async fn has(&self, alias: &str) -> Result<bool, CliError> {
        let target = match self.client.image_alias(alias).await {
            Ok(found) => found.target,
            Err(error) if error.is_not_found() => return Ok(false),
            Err(error) => return Err(incus_error(error)),
        };
        let image = self.client.image(&target).await.map_err(incus_error)?;
        Ok(image
            .properties
            .get(CONVERSION_PROPERTY)
            .map(String::as_str)
            == Some(CONVERSION))
    }

    /// Builds `recipe`'s image on the engine (already done by the caller)
    /// and imports it into Incus under its tag.
    async fn convert(
        &self,
        engine: &kennel_engine::Engine,
        recipe: &kennel_image::Recipe,
        no_cache: bool,
    ) -> Result<(), CliError> {
        // Another kennel may have converted it while the engine built.
        if !no_cache && self.has(&recipe.tag).await? {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let dir = tempfile::tempdir().map_err(|error| {
            CliError::kennel(format!("cannot make a temporary directory: {error}"))
        })?;
        let exported_path = dir.path().join("exported.tar");
        let mut exported_file = std::fs::File::create(&exported_path).map_err(|error| {
            CliError::kennel(format!("cannot write {}: {error}", exported_path.display()))
        })?;
        let exported = engine.export_image(&recipe.tag, &mut exported_file).await?;
        drop(exported_file);
        let rootfs = dir.path().join("rootfs.tar");
        with_init(&exported_path, &rootfs)?;
        let _ = std::fs::remove_file(&exported_path);
        let meta = dir.path().join("meta.tar");
        let mut properties: BTreeMap<String, String> = exported.labels.clone();
        properties.extend(recipe.labels.clone());
        let env: BTreeMap<String, String> = exported
            .env
            .iter()
            .filter_map(|pair| pair.split_once('='))
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect();
        properties.insert(
            ENV_PROPERTY.to_string(),
            serde_json::to_string(&env).unwrap_or_default(),
        );
        properties.insert("description".into(), format!("kennel {}", recipe.tag));
        properties.insert(CONVERSION_PROPERTY.into(), CONVERSION.into());
        write_metadata(&meta, &properties)?;
        if no_cache {
            // A rebuild replaces the image the tag named.
            if let Ok(old) = self.client.image_alias(&recipe.tag).await {
                let _ = self.client.delete_image(&old.target).await;
            }
        } else if self.has(&recipe.tag).await? {
            // Another kennel converted it while this one did: keep theirs
            // (deleting it would pull it from under their new instance).
            return Ok(());
        }
        match self
            .client
            .import_image(&meta, &rootfs, Some(&recipe.tag))
            .await
        {
            Ok(_) => {}
            // Another kennel imported the same bytes a moment before: its
            // alias follows.
            Err(error) if error.is_already_exists() => {
                self.await_other_kennel(&recipe.tag, error).await?;
            }
            Err(error) => return Err(incus_error(error)),
        }
        kennel_lib::report::note(&format!(
            "converted {} for Incus in {:.0?}",
            recipe.tag,
            started.elapsed()
        ));
        Ok(())
    }
}

impl IncusImages {
    /// Builds in Incus each layer it does not have (every one with
    /// `no_cache`), the first on `base`.
    async fn build_in_incus(
        &self,
        recipes: &[kennel_image::Recipe],
        base: kennel_incus::ImageSource,
        options: &BuildOptions,
    ) -> Result<Vec<Outcome>, CliError> {
        let mut outcomes = Vec::new();
        let mut first_missing = None;
        for (index, recipe) in recipes.iter().enumerate() {
            if first_missing.is_none() && (options.no_cache || !self.has(&recipe.tag).await?) {
                first_missing = Some(index);
            }
            outcomes.push(if first_missing.is_some() {
                Outcome::Built
            } else {
                Outcome::UpToDate
            });
        }
        if let Some(index) = first_missing {
            let base = match index.checked_sub(1) {
                Some(below) => kennel_incus::ImageSource::Alias(recipes[below].tag.clone()),
                None => base,
            };
            crate::build::build(&self.client, &recipes[index..], base, options).await?;
        }
        Ok(outcomes)
    }
}

impl IncusImages {
    /// Waits (a little) for the image another kennel is making under
    /// `tag`; `error` (what made us wait) when it does not come.
    pub(crate) async fn await_other_kennel(
        &self,
        tag: &str,
        error: kennel_incus::IncusError,
    ) -> Result<(), CliError> {
        for _ in 0..100 {
            if self.has(tag).await? {
                return Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        Err(incus_error(error))
    }
}

#[async_trait(?Send)]
impl Images for IncusImages {
    async fn ensure(
        &self,
        recipes: &[kennel_image::Recipe],
        options: &BuildOptions,
    ) -> Result<Vec<Outcome>, CliError> {
        let no_cache = options.no_cache;
        // The agent layer's tag hashes the base layer's: when Incus has it,
        // nothing below it changed either.
        if let Some(last) = recipes.last().filter(|_| !no_cache)
            && self.has(&last.tag).await?
        {
            return Ok(vec![Outcome::UpToDate; recipes.len()]);
        }
        if let Some(base) = recipes
            .first()
            .and_then(kennel_image::Recipe::base)
            .and_then(|base| crate::instance::incus_reference(&base))
        {
            return self.build_in_incus(recipes, base, options).await;
        }
        let (engine, _) = kennel_engine::connect_auto().await.map_err(|error| {
            CliError::kennel(format!(
                "building kennel's images for Incus needs Docker or Podman on this machine: kennel builds them there and converts them ({error})"
            ))
            .with_hint("install and start Docker or Podman, or set `base_image` to an Incus image (`local:ALIAS`, `images:debian/12`): Incus then builds them itself")
        })?;
        let mut outcomes = kennel_lib::image_build::ensure(&engine, recipes, options).await?;
        // Only the agent's own image runs; the layers below it live on in
        // the engine, where they are built.
        if let Some(last) = recipes.last() {
            self.convert(&engine, last, options.no_cache).await?;
            if let Some(outcome) = outcomes.last_mut() {
                *outcome = Outcome::Built;
            }
        }
        Ok(outcomes)
    }

    async fn list(&self) -> Result<Vec<StoredImage>, CliError> {
        let images = self.client.images().await.map_err(incus_error)?;
        Ok(images
            .into_iter()
            .filter(|image| {
                image
                    .properties
                    .get(kennel_image::LABEL_MANAGED)
                    .is_some_and(|value| value == "true")
            })
            .map(|image| StoredImage {
                reference: image
                    .aliases
                    .first()
                    .map(|alias| alias.name.clone())
                    .unwrap_or_else(|| image.fingerprint.clone()),
                id: image.fingerprint.chars().take(12).collect(),
                size: i64::try_from(image.size).unwrap_or(i64::MAX),
                created: epoch_seconds(&image.uploaded_at).unwrap_or(0),
                labels: image
                    .properties
                    .into_iter()
                    .filter(|(key, _)| key != ENV_PROPERTY)
                    .collect(),
            })
            .collect())
    }

    async fn remove(&self, reference: &str, _force: bool) -> Result<(), CliError> {
        let fingerprint = match self.client.image_alias(reference).await {
            Ok(alias) => alias.target,
            Err(error) if error.is_not_found() => reference.to_string(),
            Err(error) => return Err(incus_error(error)),
        };
        self.client
            .delete_image(&fingerprint)
            .await
            .map_err(incus_error)
    }
}

/// The environment an image was built with (kennel's images; none for
/// others).
pub async fn image_env(client: &Client, reference: &str) -> BTreeMap<String, String> {
    let alias = reference.strip_prefix("local:").unwrap_or(reference);
    let Ok(alias) = client.image_alias(alias).await else {
        return BTreeMap::new();
    };
    let Ok(image) = client.image(&alias.target).await else {
        return BTreeMap::new();
    };
    image
        .properties
        .get(ENV_PROPERTY)
        .and_then(|json| serde_json::from_str(json).ok())
        .unwrap_or_default()
}

/// The engine's flattened file system with kennel's init added (replacing
/// whatever was at `usr/sbin/init`).
fn with_init(exported: &Path, out: &Path) -> Result<(), CliError> {
    let fail = |what: &str, error: std::io::Error| {
        CliError::kennel(format!("cannot {what} for Incus: {error}"))
    };
    let input =
        std::fs::File::open(exported).map_err(|error| fail("read the exported image", error))?;
    let output = std::fs::File::create(out).map_err(|error| fail("write the image", error))?;
    let mut archive = tar::Archive::new(std::io::BufReader::new(input));
    let mut builder = tar::Builder::new(std::io::BufWriter::new(output));
    let entries = archive
        .entries()
        .map_err(|error| fail("read the exported image", error))?;
    for entry in entries {
        let mut entry = entry.map_err(|error| fail("read the exported image", error))?;
        let path = entry
            .path()
            .map_err(|error| fail("read the exported image", error))?;
        let trimmed = path.to_string_lossy().trim_start_matches("./").to_string();
        if trimmed == "usr/sbin/init" || trimmed == "sbin/init" && !is_link(&entry) {
            continue;
        }
        let header = entry.header().clone();
        builder
            .append(&header, &mut entry)
            .map_err(|error| fail("write the image", error))?;
    }
    let mut header = root_file(INIT.len(), 0o755);
    builder
        .append_data(&mut header, "usr/sbin/init", INIT.as_bytes())
        .map_err(|error| fail("write the image", error))?;
    builder
        .into_inner()
        .and_then(|mut writer| writer.flush())
        .map_err(|error| fail("write the image", error))
}

/// A tar header for a regular file of root's.
pub(crate) fn root_file(size: usize, mode: u32) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_size(size as u64);
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    header.set_entry_type(tar::EntryType::Regular);
    header
}

fn is_link<R: std::io::Read>(entry: &tar::Entry<'_, R>) -> bool {
    entry.header().entry_type().is_symlink()
}

/// Incus's `metadata.yaml` (architecture, creation date, properties), as
/// the tar Incus wants beside the rootfs.
fn write_metadata(path: &Path, properties: &BTreeMap<String, String>) -> Result<(), CliError> {
    let fail = |error: std::io::Error| {
        CliError::kennel(format!("cannot write the image's metadata: {error}"))
    };
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0);
    // Incus writes the container's name into /etc/hostname when it makes
    // one (the engine's export leaves the file empty).
    let mut yaml = format!(
        "architecture: {}\ncreation_date: {created}\ntemplates:\n  /etc/hostname:\n    when: [create, copy]\n    template: hostname.tpl\nproperties:\n",
        std::env::consts::ARCH
    );
    for (key, value) in properties {
        // JSON strings are YAML double-quoted scalars.
        yaml.push_str(&format!(
            "  {}: {}\n",
            serde_json::Value::String(key.clone()),
            serde_json::Value::String(value.clone())
        ));
    }
    let file = std::fs::File::create(path).map_err(fail)?;
    let mut builder = tar::Builder::new(file);
    let mut header = tar::Header::new_gnu();
    header.set_size(yaml.len() as u64);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    builder
        .append_data(&mut header, "metadata.yaml", yaml.as_bytes())
        .map_err(fail)?;
    let template = "{{ instance.name }}\n";
    let mut header = tar::Header::new_gnu();
    header.set_size(template.len() as u64);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    builder
        .append_data(&mut header, "templates/hostname.tpl", template.as_bytes())
        .map_err(fail)?;
    builder.into_inner().map(drop).map_err(fail)
}

/// Seconds since the epoch of an RFC 3339 time (`2026-12-05T06:51:02.5Z`).
fn epoch_seconds(text: &str) -> Option<i64> {
    let (date, time) = text.split_once('T')?;
    let mut date = date.split('-').map(|part| part.parse::<i64>().ok());
    let (year, month, day) = (date.next()??, date.next()??, date.next()??);
    let time = time.get(..8)?;
    let mut clock = time.split(':').map(|part| part.parse::<i64>().ok());
    let (hour, minute, second) = (clock.next()??, clock.next()??, clock.next()??);
    // Days from the civil date (Howard Hinnant's algorithm).
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    Some(days * 86_400 + hour * 3_600 + minute * 60 + second)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incus_times_as_epoch_seconds() {
        assert_eq!(epoch_seconds("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            epoch_seconds("2026-12-05T06:51:02.123456Z"),
            Some(1_796_453_462)
        );
        assert_eq!(epoch_seconds("garbage"), None);
    }

    #[test]
    fn the_init_replaces_the_images_own() {
        let dir = tempfile::tempdir().expect("tmp");
        let exported = dir.path().join("in.tar");
        {
            let mut builder = tar::Builder::new(std::fs::File::create(&exported).expect("tar"));
            for (path, content) in [("etc/hostname", "x\n"), ("usr/sbin/init", "systemd\n")] {
                let mut header = tar::Header::new_gnu();
                header.set_size(content.len() as u64);
                header.set_mode(0o644);
                builder
                    .append_data(&mut header, path, content.as_bytes())
                    .expect("append");
            }
            builder.finish().expect("finish");
        }
        let out = dir.path().join("out.tar");
        with_init(&exported, &out).expect("with init");
        let mut archive = tar::Archive::new(std::fs::File::open(&out).expect("open"));
        let mut found = BTreeMap::new();
        for entry in archive.entries().expect("entries") {
            let mut entry = entry.expect("entry");
            let mut text = String::new();
            std::io::Read::read_to_string(&mut entry, &mut text).expect("read");
            found.insert(
                entry.path().expect("path").display().to_string(),
                (text, entry.header().mode().expect("mode")),
            );
        }
        assert_eq!(found["etc/hostname"].0, "x\n");
        assert_eq!(found["usr/sbin/init"], (INIT.to_string(), 0o755));
        assert_eq!(found.len(), 2);
    }
}
