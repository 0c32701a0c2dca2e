//! The parts of Incus's API objects that kennel uses. Unknown fields are
//! ignored, missing ones default, so newer servers still parse.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Config keys and values (`limits.memory`, `user.kennel.session`, …).
pub type ConfigMap = BTreeMap<String, String>;
/// Devices by name, each a map of its keys (`type`, `source`, `path`, …).
pub type DeviceMap = BTreeMap<String, BTreeMap<String, String>>;

/// What the server says about itself and about this connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    /// REST API version (`1.0`).
    pub api_version: String,
    /// Incus's own version (`6.0.4`).
    pub server_version: String,
    /// Instance drivers (`lxc`, or `lxc | qemu`).
    pub driver: String,
    pub driver_version: String,
    pub kernel_version: String,
    /// Storage drivers in use (`dir`).
    pub storage: String,
    /// The project requests go to.
    pub project: String,
    /// Whether Incus trusts this connection at all.
    pub trusted: bool,
    /// `unix` on the admin socket, `tls` through incus-user.
    pub auth_method: String,
    /// Who Incus thinks we are: a user name, or a certificate fingerprint.
    pub auth_user: String,
    /// A restricted certificate (incus-user's) may reach only `allowed_projects`.
    pub restricted: bool,
    pub allowed_projects: Vec<String>,
    pub api_extensions: Vec<String>,
}

impl ServerInfo {
    pub fn has_extension(&self, name: &str) -> bool {
        self.api_extensions
            .iter()
            .any(|extension| extension == name)
    }
}

/// `GET /1.0` as sent.
#[derive(Debug, Deserialize)]
pub(crate) struct RawServer {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub api_extensions: Vec<String>,
    #[serde(default)]
    pub auth: String,
    #[serde(default)]
    pub auth_user_name: String,
    #[serde(default)]
    pub auth_user_method: String,
    #[serde(default)]
    pub environment: RawEnvironment,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawEnvironment {
    #[serde(default)]
    pub driver: String,
    #[serde(default)]
    pub driver_version: String,
    #[serde(default)]
    pub kernel_version: String,
    #[serde(default)]
    pub project: String,
    #[serde(default)]
    pub server_version: String,
    #[serde(default)]
    pub storage: String,
}

/// A trusted certificate, as far as a restricted client reads its own.
#[derive(Debug, Deserialize)]
pub(crate) struct RawCertificate {
    #[serde(default)]
    pub restricted: bool,
    #[serde(default)]
    pub projects: Vec<String>,
}

/// A background operation (`/1.0/operations/<id>`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Operation {
    pub id: String,
    #[serde(default)]
    pub class: String,
    #[serde(default)]
    pub description: String,
    /// `Running`, `Success`, `Failure`, `Cancelled`.
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub status_code: u16,
    /// Operation-specific results (an exec's `return`, a publish's `fingerprint`).
    #[serde(default)]
    pub metadata: Option<serde_json::Value>,
    /// Why it failed, when it did.
    #[serde(default)]
    pub err: String,
}

/// An image in the project's store.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Image {
    pub fingerprint: String,
    #[serde(default)]
    pub aliases: Vec<ImageAliasName>,
    /// Bytes, as stored (all of a split image's files).
    #[serde(default)]
    pub size: u64,
    /// From the image's metadata (RFC 3339).
    #[serde(default)]
    pub created_at: String,
    #[serde(default)]
    pub uploaded_at: String,
    #[serde(default)]
    pub architecture: String,
    /// `container` or `virtual-machine`.
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub public: bool,
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageAliasName {
    pub name: String,
    #[serde(default)]
    pub description: String,
}

/// `/1.0/images/aliases/<name>`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ImageAlias {
    pub name: String,
    /// The fingerprint it names.
    pub target: String,
    #[serde(default)]
    pub description: String,
    #[serde(rename = "type", default)]
    pub kind: String,
}

/// Where a new instance's root file system comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    Alias(String),
    Fingerprint(String),
    /// An image on a remote image server (`images:debian/12` is alias
    /// `debian/12` on `https://images.linuxcontainers.org`, protocol
    /// `simplestreams`), which Incus downloads and caches.
    Remote {
        server: String,
        protocol: String,
        alias: String,
    },
}

/// A container to create. Build with [`NewInstance::from_image`] and the
/// setters.
#[derive(Debug, Clone)]
pub struct NewInstance {
    pub name: String,
    pub source: ImageSource,
    pub config: ConfigMap,
    pub devices: DeviceMap,
    /// `None`: the project's `default` profile.
    pub profiles: Option<Vec<String>>,
    /// Deleted by Incus when it stops.
    pub ephemeral: bool,
    /// Started by the same operation that creates it (one round trip less).
    pub start: bool,
}

impl NewInstance {
    pub fn from_image(name: impl Into<String>, source: ImageSource) -> Self {
        NewInstance {
            name: name.into(),
            source,
            config: ConfigMap::new(),
            devices: DeviceMap::new(),
            profiles: None,
            ephemeral: false,
            start: false,
        }
    }

    pub fn config(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.config.insert(key.into(), value.into());
        self
    }

    /// A device; `keys` holds its `type` and the rest.
    pub fn device<K: Into<String>, V: Into<String>>(
        mut self,
        name: impl Into<String>,
        keys: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.devices.insert(
            name.into(),
            keys.into_iter()
                .map(|(key, value)| (key.into(), value.into()))
                .collect(),
        );
        self
    }

    pub fn profiles<S: Into<String>>(mut self, profiles: impl IntoIterator<Item = S>) -> Self {
        self.profiles = Some(profiles.into_iter().map(Into::into).collect());
        self
    }

    pub fn ephemeral(mut self, ephemeral: bool) -> Self {
        self.ephemeral = ephemeral;
        self
    }

    pub fn start(mut self, start: bool) -> Self {
        self.start = start;
        self
    }
}

/// `POST /1.0/instances` as sent.
#[derive(Debug, Serialize)]
pub(crate) struct RawInstancesPost<'a> {
    pub name: &'a str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub source: RawSource<'a>,
    pub config: &'a ConfigMap,
    pub devices: &'a DeviceMap,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profiles: Option<&'a [String]>,
    pub ephemeral: bool,
    pub start: bool,
}

#[derive(Debug, Serialize)]
pub(crate) struct RawSource<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alias: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<&'a str>,
    /// `pull` for a remote image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<&'a str>,
}

/// An instance's configuration and status.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Instance {
    pub name: String,
    /// `Running`, `Stopped`, `Frozen`, `Error`.
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub status_code: u16,
    /// `container` or `virtual-machine`.
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub architecture: String,
    /// The instance's own config (without its profiles').
    #[serde(default)]
    pub config: ConfigMap,
    #[serde(default)]
    pub devices: DeviceMap,
    /// With its profiles' config folded in.
    #[serde(default)]
    pub expanded_config: ConfigMap,
    #[serde(default)]
    pub expanded_devices: DeviceMap,
    #[serde(default)]
    pub profiles: Vec<String>,
    #[serde(default)]
    pub ephemeral: bool,
    #[serde(default)]
    pub created_at: String,
    #[serde(default)]
    pub project: String,
}

impl Instance {
    pub fn is_running(&self) -> bool {
        self.status == "Running"
    }
}

/// `PUT /1.0/instances/<name>` takes back what `GET` gave, minus the
/// read-only parts.
#[derive(Debug, Serialize)]
pub(crate) struct RawInstancePut<'a> {
    pub architecture: &'a str,
    pub config: &'a ConfigMap,
    pub devices: &'a DeviceMap,
    pub ephemeral: bool,
    pub profiles: &'a [String],
}

/// What is running: `/1.0/instances/<name>/state`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct InstanceState {
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub status_code: u16,
    /// The init process's pid on the host (0 when stopped).
    #[serde(default)]
    pub pid: i64,
    /// How many processes run in it (-1 when unknown).
    #[serde(default)]
    pub processes: i64,
}

/// How to stop an instance.
#[derive(Debug, Clone, Copy, Default)]
pub struct StopOptions {
    /// Kill at once instead of asking init to shut down.
    pub force: bool,
    /// How long init may take to shut down (Incus's default when `None`).
    pub timeout: Option<std::time::Duration>,
}

/// A file to push into an instance.
#[derive(Debug, Clone)]
pub struct FileSpec {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

impl Default for FileSpec {
    fn default() -> Self {
        FileSpec {
            mode: 0o644,
            uid: 0,
            gid: 0,
        }
    }
}

/// A file pulled out of an instance, with its owner and mode.
#[derive(Debug, Clone)]
pub struct PulledFile {
    pub content: Vec<u8>,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}
