//! The client: connecting, the project in use, requests and operations.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper::Method;
use hyper::header::{HeaderName, HeaderValue};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::de::DeserializeOwned;
use tracing::debug;

use crate::error::IncusError;
use crate::transport::{Answer, Call, RequestBody, Transport};
use crate::types::{Operation, RawCertificate, RawServer, ServerInfo};

/// incusd's own socket: full access, for root and group `incus-admin`.
pub const ADMIN_SOCKET: &str = "/var/lib/incus/unix.socket";
/// incus-user's socket: each user of group `incus` gets a restricted project
/// of their own (`user-<uid>`).
pub const USER_SOCKET: &str = "/var/lib/incus/unix.socket.user";

/// How long a plain request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a background operation may take, unless set otherwise.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(300);

/// Characters escaped in one path segment (a name, a fingerprint, an alias
/// with a `/`).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// One path segment, escaped.
pub(crate) fn segment(text: &str) -> String {
    utf8_percent_encode(text, SEGMENT).to_string()
}

/// A connection to one Incus daemon, in one project. Cheap to clone; clones
/// share idle connections.
///
/// Those connections are driven by tasks on the tokio runtime that opened
/// them: use a client (and its clones) within one runtime. A client used
/// from another runtime while the first one is blocked waits for its
/// request's timeout.
#[derive(Clone)]
pub struct Client {
    pub(crate) transport: Arc<Transport>,
    project: String,
    operation_timeout: Duration,
    server: Arc<ServerInfo>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("socket", &self.transport.socket())
            .field("project", &self.project)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connect to the socket at `path` and ask who we are there.
    ///
    /// Through incus-user the connection is a certificate restricted to the
    /// user's project: that project is used. Elsewhere `default` is.
    pub async fn connect(path: impl Into<PathBuf>) -> Result<Client, IncusError> {
        let path = path.into();
        let transport = Arc::new(Transport::new(path.clone()));
        let mut client = Client {
            transport,
            project: "default".to_string(),
            operation_timeout: OPERATION_TIMEOUT,
            server: Arc::new(placeholder_server()),
        };
        let raw: RawServer = client.get_raw("asking Incus who we are", "/1.0").await?;
        if raw.auth != "trusted" {
            return Err(IncusError::PermissionDenied {
                path,
                reason: format!(
                    "Incus does not trust this connection (auth: {:?})",
                    raw.auth
                ),
            });
        }
        let (restricted, allowed_projects) = if raw.auth_user_method == "tls" {
            // A client certificate: incus-user's, which may be limited to
            // some projects. It may read its own entry.
            let certificate: RawCertificate = client
                .get_raw(
                    "reading this connection's certificate",
                    &format!("/1.0/certificates/{}", segment(&raw.auth_user_name)),
                )
                .await?;
            (certificate.restricted, certificate.projects)
        } else {
            (false, Vec::new())
        };
        if restricted && let [only] = allowed_projects.as_slice() {
            client.project = only.clone();
        }
        client.server = Arc::new(server_info(
            raw,
            client.project.clone(),
            restricted,
            allowed_projects,
        ));
        debug!(socket = %path.display(), project = %client.project, "connected to Incus");
        Ok(client)
    }

    /// Connect the way kennel should by default:
    ///
    /// 1. `INCUS_SOCKET`, when set;
    /// 2. the user socket, when it exists and answers (the user's own,
    ///    restricted project) — except for root: incus-user would set up a
    ///    `user-0` project with a bridge of its own for it;
    /// 3. the admin socket.
    pub async fn connect_default() -> Result<Client, IncusError> {
        if let Some(path) = std::env::var_os("INCUS_SOCKET").filter(|path| !path.is_empty()) {
            return Client::connect(PathBuf::from(path)).await;
        }
        if !nix::unistd::geteuid().is_root() && Path::new(USER_SOCKET).exists() {
            match Client::connect(USER_SOCKET).await {
                Ok(client) => return Ok(client),
                Err(err) => {
                    debug!(%err, "the user socket does not serve us; trying the admin socket")
                }
            }
        }
        Client::connect(ADMIN_SOCKET).await
    }

    /// The same connection, in another project.
    pub fn with_project(mut self, project: impl Into<String>) -> Client {
        self.project = project.into();
        let mut server = (*self.server).clone();
        server.project = self.project.clone();
        self.server = Arc::new(server);
        self
    }

    /// How long create, start, stop, delete, import… may take (5 minutes
    /// unless set).
    pub fn with_operation_timeout(mut self, timeout: Duration) -> Client {
        self.operation_timeout = timeout;
        self
    }

    pub fn socket(&self) -> &Path {
        self.transport.socket()
    }

    pub fn project(&self) -> &str {
        &self.project
    }

    /// What [`Client::connect`] learnt about the server and this connection.
    pub fn server_info(&self) -> &ServerInfo {
        &self.server
    }

    /// Ask the server again (its version, driver, the project in use, …).
    pub async fn server(&self) -> Result<ServerInfo, IncusError> {
        let raw: RawServer = self.get("asking Incus about itself", "/1.0").await?;
        // The project Incus served the request in (our `?project=`).
        let project = if raw.environment.project.is_empty() {
            self.project.clone()
        } else {
            raw.environment.project.clone()
        };
        Ok(server_info(
            raw,
            project,
            self.server.restricted,
            self.server.allowed_projects.clone(),
        ))
    }

    /// The configuration of the project this client works in (its
    /// `restricted.*` keys say what it may do).
    pub async fn project_config(&self) -> Result<crate::types::ConfigMap, IncusError> {
        #[derive(serde::Deserialize)]
        struct RawProject {
            #[serde(default)]
            config: crate::types::ConfigMap,
        }
        let project =
            url::form_urlencoded::byte_serialize(self.project.as_bytes()).collect::<String>();
        let raw: RawProject = self
            .get(
                &format!("reading project {}", self.project),
                &format!("/1.0/projects/{project}"),
            )
            .await?;
        Ok(raw.config)
    }

    // ------------------------------------------------------------ requests

    /// `path` with this client's project added to its query.
    pub(crate) fn url(&self, path: &str) -> String {
        let separator = if path.contains('?') { '&' } else { '?' };
        let project = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("project", &self.project)
            .finish();
        format!("{path}{separator}{project}")
    }

    /// A request in this client's project, its answer whatever it is.
    pub(crate) async fn call(
        &self,
        action: &str,
        method: Method,
        path: &str,
        headers: Vec<(HeaderName, HeaderValue)>,
        body: RequestBody,
        timeout: Option<Duration>,
    ) -> Result<Answer, IncusError> {
        let url = self.url(path);
        self.transport
            .call(
                action,
                Call {
                    method,
                    path: &url,
                    headers,
                    body,
                    timeout: timeout.unwrap_or(REQUEST_TIMEOUT),
                },
            )
            .await
    }

    /// `GET path` (without a project), its metadata as `T`.
    async fn get_raw<T: DeserializeOwned>(
        &self,
        action: &str,
        path: &str,
    ) -> Result<T, IncusError> {
        self.transport
            .call(
                action,
                Call {
                    method: Method::GET,
                    path,
                    headers: Vec::new(),
                    body: RequestBody::Empty,
                    timeout: REQUEST_TIMEOUT,
                },
            )
            .await?
            .metadata(action)
    }

    /// `GET path` in this project, its metadata as `T`.
    pub(crate) async fn get<T: DeserializeOwned>(
        &self,
        action: &str,
        path: &str,
    ) -> Result<T, IncusError> {
        self.call(
            action,
            Method::GET,
            path,
            Vec::new(),
            RequestBody::Empty,
            None,
        )
        .await?
        .metadata(action)
    }

    /// A request answered synchronously; its metadata is ignored.
    pub(crate) async fn sync(
        &self,
        action: &str,
        method: Method,
        path: &str,
        body: RequestBody,
    ) -> Result<(), IncusError> {
        self.call(action, method, path, Vec::new(), body, None)
            .await?
            .envelope(action)
            .map(|_| ())
    }

    /// A request that starts a background operation, and the wait for it.
    pub(crate) async fn operation(
        &self,
        action: &str,
        method: Method,
        path: &str,
        body: RequestBody,
    ) -> Result<Operation, IncusError> {
        let operation = self
            .start_operation(action, method, path, Vec::new(), body)
            .await?;
        self.wait(action, &operation, self.operation_timeout).await
    }

    /// A request answered with a background operation (`202`), not waited for.
    pub(crate) async fn start_operation(
        &self,
        action: &str,
        method: Method,
        path: &str,
        headers: Vec<(HeaderName, HeaderValue)>,
        body: RequestBody,
    ) -> Result<Operation, IncusError> {
        // Uploads may take long to send: the operation's time, not a request's.
        let answer = self
            .call(
                action,
                method,
                path,
                headers,
                body,
                Some(self.operation_timeout),
            )
            .await?;
        let operation: Operation = answer.metadata(action)?;
        if operation.id.is_empty() {
            return Err(IncusError::protocol(
                action,
                "the answer names no operation",
            ));
        }
        Ok(operation)
    }

    /// Wait until the operation ends; its failure becomes an error.
    pub(crate) async fn wait(
        &self,
        action: &str,
        operation: &Operation,
        timeout: Duration,
    ) -> Result<Operation, IncusError> {
        // Incus stops waiting at `timeout` itself (whole seconds); our own
        // limit leaves it a moment to say so.
        let seconds = timeout.as_secs().max(1);
        let path = format!(
            "/1.0/operations/{}/wait?timeout={seconds}",
            segment(&operation.id)
        );
        let answer = self
            .call(
                action,
                Method::GET,
                &path,
                Vec::new(),
                RequestBody::Empty,
                Some(timeout + Duration::from_secs(5)),
            )
            .await?;
        // A failed operation comes back as an error envelope carrying its
        // `err`, under a 200.
        let envelope = match answer.envelope(action) {
            Ok(envelope) => envelope,
            Err(IncusError::Api { message, .. }) if is_deadline(&message) => {
                return Err(IncusError::Timeout {
                    action: action.to_string(),
                    timeout,
                });
            }
            Err(IncusError::Api { message, .. }) => {
                return Err(IncusError::operation_failed(action, message));
            }
            Err(err) => return Err(err),
        };
        let finished: Operation = serde_json::from_value(envelope.metadata)
            .map_err(|err| IncusError::protocol(action, format!("operation: {err}")))?;
        match finished.status.as_str() {
            "Success" => Ok(finished),
            "Running" | "Pending" => Err(IncusError::Timeout {
                action: action.to_string(),
                timeout,
            }),
            _ => Err(IncusError::operation_failed(
                action,
                if finished.err.is_empty() {
                    format!("operation ended as {}", finished.status)
                } else {
                    finished.err
                },
            )),
        }
    }

    pub(crate) fn operation_timeout(&self) -> Duration {
        self.operation_timeout
    }
}

fn is_deadline(message: &str) -> bool {
    message.contains("context deadline exceeded")
}

fn placeholder_server() -> ServerInfo {
    ServerInfo {
        api_version: String::new(),
        server_version: String::new(),
        driver: String::new(),
        driver_version: String::new(),
        kernel_version: String::new(),
        storage: String::new(),
        project: "default".to_string(),
        trusted: false,
        auth_method: String::new(),
        auth_user: String::new(),
        restricted: false,
        allowed_projects: Vec::new(),
        api_extensions: Vec::new(),
    }
}

fn server_info(
    raw: RawServer,
    project: String,
    restricted: bool,
    allowed_projects: Vec<String>,
) -> ServerInfo {
    ServerInfo {
        api_version: raw.api_version,
        server_version: raw.environment.server_version,
        driver: raw.environment.driver,
        driver_version: raw.environment.driver_version,
        kernel_version: raw.environment.kernel_version,
        storage: raw.environment.storage,
        project,
        trusted: raw.auth == "trusted",
        auth_method: raw.auth_user_method,
        auth_user: raw.auth_user_name,
        restricted,
        allowed_projects,
        api_extensions: raw.api_extensions,
    }
}
