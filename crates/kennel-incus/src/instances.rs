//! Instances: create, start, stop, delete, state, list, config.

use hyper::Method;
use hyper::header::{self, HeaderValue};
use serde_json::json;

use crate::client::{Client, segment};
use crate::error::IncusError;
use crate::transport::RequestBody;
use crate::types::{
    ConfigMap, ImageSource, Instance, InstanceState, NewInstance, RawInstancePut, RawInstancesPost,
    RawSource, StopOptions,
};

impl Client {
    /// Create a container (and start it, with [`NewInstance::start`]);
    /// returns once Incus has done so.
    pub async fn create_instance(&self, spec: &NewInstance) -> Result<(), IncusError> {
        let action = format!("creating instance {}", spec.name);
        let source = match &spec.source {
            ImageSource::Alias(alias) => RawSource {
                kind: "image",
                alias: Some(alias),
                fingerprint: None,
                mode: None,
                server: None,
                protocol: None,
            },
            ImageSource::Fingerprint(fingerprint) => RawSource {
                kind: "image",
                alias: None,
                fingerprint: Some(fingerprint),
                mode: None,
                server: None,
                protocol: None,
            },
            ImageSource::Remote {
                server,
                protocol,
                alias,
            } => RawSource {
                kind: "image",
                alias: Some(alias),
                fingerprint: None,
                mode: Some("pull"),
                server: Some(server),
                protocol: Some(protocol),
            },
        };
        let body = RawInstancesPost {
            name: &spec.name,
            kind: "container",
            source,
            config: &spec.config,
            devices: &spec.devices,
            profiles: spec.profiles.as_deref(),
            ephemeral: spec.ephemeral,
            start: spec.start,
        };
        self.operation(
            &action,
            Method::POST,
            "/1.0/instances",
            RequestBody::json(&body)?,
        )
        .await
        .map(|_| ())
    }

    pub async fn start_instance(&self, name: &str) -> Result<(), IncusError> {
        self.change_state(
            &format!("starting instance {name}"),
            name,
            json!({ "action": "start" }),
        )
        .await
    }

    /// Stop: init gets SIGPWR and `timeout` to end, or with `force` the
    /// container is killed. An ephemeral one is deleted by Incus.
    pub async fn stop_instance(&self, name: &str, options: StopOptions) -> Result<(), IncusError> {
        let timeout = options
            .timeout
            .map(|timeout| i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(-1);
        self.change_state(
            &format!("stopping instance {name}"),
            name,
            json!({ "action": "stop", "force": options.force, "timeout": timeout }),
        )
        .await
    }

    /// Starts killing an instance and returns without waiting for it to
    /// stop (an ephemeral one is then deleted by Incus): for a caller whose
    /// user is waiting on something else, such as an agent's exit code.
    pub async fn kill_instance_in_background(&self, name: &str) -> Result<(), IncusError> {
        let action = format!("stopping instance {name}");
        self.start_operation(
            &action,
            Method::PUT,
            &format!("/1.0/instances/{}/state", segment(name)),
            Vec::new(),
            RequestBody::json(&json!({ "action": "stop", "force": true, "timeout": -1 }))?,
        )
        .await
        .map(|_| ())
    }

    async fn change_state(
        &self,
        action: &str,
        name: &str,
        body: serde_json::Value,
    ) -> Result<(), IncusError> {
        self.operation(
            action,
            Method::PUT,
            &format!("/1.0/instances/{}/state", segment(name)),
            RequestBody::json(&body)?,
        )
        .await
        .map(|_| ())
    }

    /// Delete a stopped instance.
    pub async fn delete_instance(&self, name: &str) -> Result<(), IncusError> {
        self.operation(
            &format!("deleting instance {name}"),
            Method::DELETE,
            &format!("/1.0/instances/{}", segment(name)),
            RequestBody::Empty,
        )
        .await
        .map(|_| ())
    }

    /// Stop (killing it) if it runs, then delete; an instance that is not
    /// there is fine, and so is an ephemeral one that goes away on its own.
    pub async fn force_delete_instance(&self, name: &str) -> Result<(), IncusError> {
        let force = StopOptions {
            force: true,
            timeout: None,
        };
        match self.instance(name).await {
            Err(err) if err.is_not_found() => return Ok(()),
            Err(err) => return Err(err),
            Ok(instance) if instance.status != "Stopped" => {
                match self.stop_instance(name, force).await {
                    Ok(()) => {}
                    Err(err) if err.is_not_found() => return Ok(()),
                    Err(err) => return Err(err),
                }
            }
            Ok(_) => {}
        }
        match self.delete_instance(name).await {
            Err(err) if err.is_not_found() => Ok(()),
            other => other,
        }
    }

    pub async fn instance(&self, name: &str) -> Result<Instance, IncusError> {
        self.get(
            &format!("reading instance {name}"),
            &format!("/1.0/instances/{}", segment(name)),
        )
        .await
    }

    /// What runs: status, init's pid, process count.
    pub async fn instance_state(&self, name: &str) -> Result<InstanceState, IncusError> {
        self.get(
            &format!("reading the state of instance {name}"),
            &format!("/1.0/instances/{}/state", segment(name)),
        )
        .await
    }

    /// The project's instances; with `config_filter`, only those whose
    /// config (their own or from a profile) has each key set to its value,
    /// e.g. `[("user.kennel.session", "s1")]`.
    pub async fn instances(
        &self,
        config_filter: &[(&str, &str)],
    ) -> Result<Vec<Instance>, IncusError> {
        let mut path = "/1.0/instances?recursion=1".to_string();
        // Incus's filter language (`expanded_config.<key> eq <value>`, joined
        // by `and`) splits on whitespace and mangles quotes: only plain
        // tokens go to the server. The test below is the real one.
        let plain = |text: &str| {
            !text.is_empty()
                && text
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || b"._-:/@+".contains(&byte))
        };
        if !config_filter.is_empty()
            && config_filter
                .iter()
                .all(|(key, value)| plain(key) && plain(value))
        {
            let clauses: Vec<String> = config_filter
                .iter()
                .map(|(key, value)| format!("expanded_config.{key} eq {value}"))
                .collect();
            let filter = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("filter", &clauses.join(" and "))
                .finish();
            path.push('&');
            path.push_str(&filter);
        }
        let instances: Vec<Instance> = self.get("listing instances", &path).await?;
        // The filter itself: the server may not have applied it.
        Ok(instances
            .into_iter()
            .filter(|instance| {
                config_filter.iter().all(|(key, value)| {
                    instance.expanded_config.get(*key).map(String::as_str) == Some(*value)
                })
            })
            .collect())
    }

    /// Change an instance's own config: set keys from `set`, remove those in
    /// `remove`. Read-modify-write with the ETag, so a concurrent change is
    /// refused rather than lost.
    pub async fn update_instance_config(
        &self,
        name: &str,
        set: &ConfigMap,
        remove: &[&str],
    ) -> Result<(), IncusError> {
        let action = format!("updating the config of instance {name}");
        let path = format!("/1.0/instances/{}", segment(name));
        let answer = self
            .call(
                &action,
                Method::GET,
                &path,
                Vec::new(),
                RequestBody::Empty,
                None,
            )
            .await?;
        let etag = answer.headers.get(header::ETAG).cloned();
        let mut instance: Instance = answer.metadata(&action)?;
        for key in remove {
            instance.config.remove(*key);
        }
        instance
            .config
            .extend(set.iter().map(|(key, value)| (key.clone(), value.clone())));
        let body = RawInstancePut {
            architecture: &instance.architecture,
            config: &instance.config,
            devices: &instance.devices,
            ephemeral: instance.ephemeral,
            profiles: &instance.profiles,
        };
        let headers: Vec<(header::HeaderName, HeaderValue)> = etag
            .into_iter()
            .map(|etag| (header::IF_MATCH, etag))
            .collect();
        let operation = self
            .start_operation(
                &action,
                Method::PUT,
                &path,
                headers,
                RequestBody::json(&body)?,
            )
            .await?;
        self.wait(&action, &operation, self.operation_timeout())
            .await
            .map(|_| ())
    }
}
