//! Profiles and networks, read: what a new instance's NIC is attached to.

use serde::Deserialize;

use crate::client::Client;
use crate::error::IncusError;
use crate::types::{ConfigMap, DeviceMap};

/// A profile's configuration and devices.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Profile {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub config: ConfigMap,
    #[serde(default)]
    pub devices: DeviceMap,
}

/// A network (`managed` ones are Incus's own, with its `config`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Network {
    #[serde(default)]
    pub name: String,
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub managed: bool,
    #[serde(default)]
    pub config: ConfigMap,
}

fn segment(name: &str) -> String {
    url::form_urlencoded::byte_serialize(name.as_bytes()).collect()
}

impl Client {
    /// The profile `name` of this client's project.
    pub async fn profile(&self, name: &str) -> Result<Profile, IncusError> {
        self.get(
            &format!("reading profile {name}"),
            &format!("/1.0/profiles/{}", segment(name)),
        )
        .await
    }

    /// The network `name` as this client's project sees it.
    pub async fn network(&self, name: &str) -> Result<Network, IncusError> {
        self.get(
            &format!("reading network {name}"),
            &format!("/1.0/networks/{}", segment(name)),
        )
        .await
    }
}
