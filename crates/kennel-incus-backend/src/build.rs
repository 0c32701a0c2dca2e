//! kennel's images built in Incus itself, from the recipe's steps, when
//! `base_image` names an Incus image (`local:ALIAS`, `images:debian/12`):
//! launch the base, run each step in it, publish under the recipe's tag.
//!
//! The build's network is kennel's own proxy, as a session's is: the
//! build container has no network device; the proxy's socket directory is
//! a disk device, and a relay in the container (perl, which every Debian
//! has: `perl-base` is essential) listens on 127.0.0.1:3128 and passes
//! each connection to the socket. The proxy runs in `restricted` mode (any
//! public host, never a private address: an image build reaches what a
//! Docker build reaches, and nothing of the machine's own networks).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kennel_core::plan::NetworkMode;
use kennel_image::{Recipe, Step};
use kennel_incus::{Client, ExecRequest, FileSpec, ImageSource, NewInstance, StopOptions};
use kennel_lib::error::CliError;
use kennel_lib::image_build::{BuildOptions, StepOutput};
use kennel_lib::proxy::{ProxySpec, SessionProxy};

use crate::images::{CONVERSION, CONVERSION_PROPERTY, ENV_PROPERTY, INIT, image_env};
use crate::incus_error;

/// The image property that says a layer was built in Incus from its steps
/// (converted images do not have it).
pub const BUILT_PROPERTY: &str = "kennel.built";
/// Where the proxy's socket directory is inside the build container.
const PROXY_DIR_INSIDE: &str = "/run/kennel-build";
const RELAY_PORT: u16 = 3128;
/// A build container's labels: the layer it builds (its hash's first 12)
/// and the kennel process that builds it.
const BUILD_LABEL: &str = "dev.kennel.build";
const BUILD_PID_LABEL: &str = "dev.kennel.build-pid";
/// Incus's default `PATH` for commands it runs, which a base image that is
/// not kennel's says nothing about.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The relay (perl, from `perl-base`): passes each connection on
/// 127.0.0.1:PORT (ARGV[1]) to the Unix socket ARGV[0].
const RELAY: &str = r#"
use strict; use warnings;
use Socket; use IO::Socket::INET; use IO::Socket::UNIX; use IO::Select;
my ($path, $port) = @ARGV;
my $listen = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => $port,
    Listen => 64, ReuseAddr => 1) or die "kennel relay: cannot listen: $!\n";
$SIG{CHLD} = 'IGNORE';
while (1) {
    my $client = $listen->accept or next;
    my $pid = fork();
    if (defined $pid && $pid == 0) {
        close $listen;
        my $proxy = IO::Socket::UNIX->new(Type => SOCK_STREAM, Peer => $path) or exit 1;
        my %peer = ($client => $proxy, $proxy => $client);
        my $select = IO::Select->new($client, $proxy);
        my $open = 2;
        while ($open > 0) {
            for my $from ($select->can_read) {
                my $read = sysread($from, my $buffer, 65536);
                if (!$read) {
                    $select->remove($from);
                    shutdown($peer{$from}, 1);
                    $open--;
                    next;
                }
                my $offset = 0;
                while ($offset < $read) {
                    my $written = syswrite($peer{$from}, $buffer, $read - $offset, $offset);
                    exit 0 unless $written;
                    $offset += $written;
                }
            }
        }
        exit 0;
    }
    close $client;
}
"#;

/// Builds `recipes` (base first) in Incus, each layer on the one before,
/// the first on `base`.
pub async fn build(
    client: &Client,
    recipes: &[Recipe],
    base: ImageSource,
    options: &BuildOptions,
) -> Result<(), CliError> {
    // A kennel layer's environment is a property of its image; others have
    // none.
    let mut from_env = match &base {
        ImageSource::Alias(alias) => image_env(client, alias).await,
        _ => BTreeMap::new(),
    };
    let mut from = base;
    for recipe in recipes {
        Layer::new(client, recipe, options)?
            .build(from, &from_env)
            .await?;
        from = ImageSource::Alias(recipe.tag.clone());
        from_env = image_env(client, &recipe.tag).await;
    }
    Ok(())
}

/// One layer's build: its container, proxy and log.
struct Layer<'a> {
    client: &'a Client,
    recipe: &'a Recipe,
    options: &'a BuildOptions,
    instance: String,
    log_path: PathBuf,
    log: File,
    started: Instant,
}

impl<'a> Layer<'a> {
    fn new(
        client: &'a Client,
        recipe: &'a Recipe,
        options: &'a BuildOptions,
    ) -> Result<Self, CliError> {
        let (log_path, log) =
            kennel_lib::image_build::start_log(&options.logs, recipe, " in Incus")?;
        Ok(Layer {
            client,
            recipe,
            options,
            instance: build_instance_name(recipe),
            log_path,
            log,
            started: Instant::now(),
        })
    }

    async fn build(
        mut self,
        from: ImageSource,
        from_env: &BTreeMap<String, String>,
    ) -> Result<(), CliError> {
        let steps = self.recipe.steps().map_err(|error| {
            CliError::kennel(format!(
                "cannot build {} in Incus: {error}",
                self.recipe.tag
            ))
        })?;
        self.remove_stale_builds().await;
        let proxy = SessionProxy::launch(&self.proxy_spec()).await?;
        let result = self.build_in_instance(from, from_env, &steps).await;
        proxy.stop().await;
        // Whatever happened, the build container goes.
        let _ = self.client.force_delete_instance(&self.instance).await;
        if let Err(error) = &result {
            let _ = writeln!(self.log, "# kennel: the build failed: {}", error.message);
        }
        result?;
        kennel_lib::report::note(&format!(
            "built {} in Incus in {:.0?}",
            self.recipe.tag,
            self.started.elapsed()
        ));
        Ok(())
    }

    /// Build containers of this layer left by a kennel that was killed.
    async fn remove_stale_builds(&self) {
        let key = crate::instance::label_key(BUILD_LABEL);
        let Ok(found) = self
            .client
            .instances(&[(key.as_str(), &self.recipe.hash[..12])])
            .await
        else {
            return;
        };
        for instance in found {
            let alive = instance
                .config
                .get(&crate::instance::label_key(BUILD_PID_LABEL))
                .and_then(|pid| pid.parse::<i32>().ok())
                .is_some_and(|pid| {
                    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
                });
            if !alive {
                tracing::info!(instance = %instance.name, "removing a build container left behind");
                let _ = self.client.force_delete_instance(&instance.name).await;
            }
        }
    }

    /// The build's proxy: any public host, with the user's `[network]`
    /// facts; its decisions beside the build log.
    fn proxy_spec(&self) -> ProxySpec {
        let name = format!("build-{}", &self.recipe.hash[..12]);
        ProxySpec {
            session: name.clone(),
            mode: NetworkMode::Restricted,
            allow: Vec::new(),
            deny: Vec::new(),
            hosts: self.options.hosts.clone(),
            upstream: self.options.upstream.clone(),
            trusted: self.options.trusted.clone(),
            socket: self
                .options
                .proxy_dirs
                .join(&name)
                .join(kennel_core::plan::PROXY_SOCKET_NAME),
            log: self.log_path.with_extension("network.log"),
            broker: None,
        }
    }

    async fn build_in_instance(
        &mut self,
        from: ImageSource,
        from_env: &BTreeMap<String, String>,
        steps: &[Step],
    ) -> Result<(), CliError> {
        let (uid, gid) = (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        );
        let proxy_dir = self.proxy_spec().socket;
        let proxy_dir = proxy_dir.parent().unwrap_or(Path::new("/"));
        let instance = NewInstance::from_image(&self.instance, from.clone())
            .config("security.privileged", "false")
            .config("security.nesting", "false")
            .config("boot.autostart", "false")
            // The relay runs as the user, who alone may reach the socket.
            .config("raw.idmap", format!("uid {uid} {uid}\ngid {gid} {gid}"))
            .config(
                crate::instance::label_key(BUILD_LABEL),
                &self.recipe.hash[..12],
            )
            .config(
                crate::instance::label_key(BUILD_PID_LABEL),
                std::process::id().to_string(),
            )
            .device("eth0", [("type", "none")])
            .device(
                "kennel-build-proxy",
                [
                    ("type", "disk".to_string()),
                    ("source", proxy_dir.display().to_string()),
                    ("path", PROXY_DIR_INSIDE.to_string()),
                ],
            )
            .start(true);
        let mut progress = kennel_lib::report::progress(&format!(
            "building {} in Incus (first use; later runs reuse it; log: {})",
            self.recipe.tag,
            self.log_path.display()
        ));
        progress.step(&format!("FROM {}", describe(&from)));
        self.client
            .create_instance(&instance)
            .await
            .map_err(|error| {
                let message = error.to_string();
                let mut cli = incus_error(error);
                if matches!(from, ImageSource::Remote { .. }) && message.contains("remote image") {
                    cli = cli.with_hint(
                        "Incus fetches `images:` names from images.linuxcontainers.org, which it cannot reach here: import a Debian image into your project (`incus image import META ROOTFS --alias NAME`) and set base_image = \"local:NAME\"",
                    );
                } else if message.contains("init") || message.contains("Failed to run") {
                    cli = cli.with_hint(
                        "the base image must start in a container (have an init at /sbin/init): images from images: do; a debootstrap rootfs needs one added",
                    );
                }
                cli
            })?;
        self.start_relay(uid, gid).await?;
        let mut env = from_env.clone();
        env.entry("PATH".to_string())
            .or_insert_with(|| DEFAULT_PATH.to_string());
        for step in steps {
            match step {
                // Every step runs as root here.
                Step::From(_) | Step::Root => {}
                Step::Env(pairs) => {
                    progress.step(&format!("ENV {}", join_pairs(pairs)));
                    for (key, value) in pairs {
                        let value = kennel_image::expand(value, &env);
                        env.insert(key.clone(), value);
                    }
                }
                Step::Copy { source, target } => {
                    progress.step(&format!("COPY {source} {target}"));
                    self.copy(source, target).await?;
                }
                Step::Run(command) => {
                    progress.step(&format!("RUN {command}"));
                    let _ = writeln!(self.log, "RUN {command}");
                    self.run(command, &env, progress.as_mut()).await?;
                }
            }
        }
        progress.step("kennel's init");
        self.install_init().await?;
        drop(progress);
        self.client
            .stop_instance(
                &self.instance,
                StopOptions {
                    force: true,
                    timeout: None,
                },
            )
            .await
            .map_err(incus_error)?;
        self.publish(&env).await
    }

    /// Starts the relay and waits until it listens.
    async fn start_relay(&mut self, uid: u32, gid: u32) -> Result<(), CliError> {
        let probe = self
            .exec_collected(ExecRequest::new(["sh", "-c", "command -v perl"]))
            .await?;
        if probe.0 != 0 {
            return Err(CliError::kennel(format!(
                "cannot build {} in Incus: its base image has no perl (perl-base), which kennel's build relays the network through",
                self.recipe.tag
            ))
            .with_hint("use a Debian-based image as base_image (every Debian has perl-base)"));
        }
        let socket = format!(
            "{PROXY_DIR_INSIDE}/{}",
            kennel_core::plan::PROXY_SOCKET_NAME
        );
        // Root brings the loopback up (a container without a network
        // device has it down unless its init raised it); the relay runs as
        // the user.
        let (code, output) = self
            .exec_collected(
                ExecRequest::new(["perl", "-e", RELAY_LO_UP]).timeout(Duration::from_secs(10)),
            )
            .await?;
        if code != 0 {
            return Err(self.failed("bring the build container's loopback up", &output));
        }
        self.client
            .exec_detached(
                &self.instance,
                &ExecRequest::new([
                    "perl".to_string(),
                    "-e".to_string(),
                    RELAY.to_string(),
                    socket,
                    RELAY_PORT.to_string(),
                ])
                .user(uid, gid),
            )
            .await
            .map_err(incus_error)?;
        let wait = format!(
            "i=0; while [ $i -lt 500 ] && ! grep -qs ':{RELAY_PORT:04X} ' /proc/net/tcp; do i=$((i+1)); sleep 0.01; done; grep -qs ':{RELAY_PORT:04X} ' /proc/net/tcp"
        );
        let (code, _) = self
            .exec_collected(ExecRequest::new(["sh", "-c", wait.as_str()]))
            .await?;
        if code != 0 {
            return Err(CliError::kennel(format!(
                "cannot build {} in Incus: the network relay in the build container did not start",
                self.recipe.tag
            )));
        }
        Ok(())
    }

    /// `COPY`: the recipe's files, unpacked at their place by the
    /// container's tar (which makes the directories).
    async fn copy(&mut self, source: &str, target: &str) -> Result<(), CliError> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, content) in self.recipe.files_for_copy(source, target) {
            let mut header = crate::images::root_file(content.len(), 0o644);
            builder
                .append_data(&mut header, path.trim_start_matches('/'), content)
                .map_err(|error| CliError::kennel(format!("cannot pack {source}: {error}")))?;
        }
        let archive = builder
            .into_inner()
            .map_err(|error| CliError::kennel(format!("cannot pack {source}: {error}")))?;
        let (code, output) = self
            .exec_collected(
                ExecRequest::new(["tar", "-x", "--no-same-owner", "-C", "/"]).stdin(archive),
            )
            .await?;
        if code != 0 {
            return Err(self.failed(&format!("COPY {source} {target}"), &output));
        }
        Ok(())
    }

    /// `RUN`: the command under `/bin/sh -c` as root, with the layer's
    /// environment and the relay as its proxy; its output to the log and
    /// the progress.
    async fn run(
        &mut self,
        command: &str,
        env: &BTreeMap<String, String>,
        progress: &mut dyn kennel_lib::report::Progress,
    ) -> Result<(), CliError> {
        let proxy = format!("http://127.0.0.1:{RELAY_PORT}");
        let mut request = ExecRequest::new(["/bin/sh", "-c", command]);
        for (key, value) in env {
            request = request.env(key, value);
        }
        for key in ["http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"] {
            request = request.env(key, &proxy);
        }
        for key in ["no_proxy", "NO_PROXY"] {
            request = request.env(key, kennel_core::settings::NO_PROXY);
        }
        let mut output = StepOutput::default();
        let log = &mut self.log;
        let mut on_output = |_fd: u8, chunk: &[u8]| output.push(chunk, log, progress);
        let code = self
            .client
            .exec_streamed(&self.instance, &request, None, None, &mut on_output)
            .await
            .map_err(incus_error)?;
        let tail = output.finish(&mut self.log, progress);
        if code != 0 {
            return Err(kennel_lib::image_build::with_build_details(
                CliError::kennel(format!(
                    "building {} in Incus failed: a step exited with {code}",
                    self.recipe.tag
                )),
                Some(&format!("RUN {command}")),
                &tail,
                &self.log_path,
            ));
        }
        Ok(())
    }

    /// kennel's init at `/usr/sbin/init` (and `/sbin/init`, where `/sbin`
    /// is not a link to it), replacing the image's own: sessions stop
    /// their container by signalling it.
    async fn install_init(&mut self) -> Result<(), CliError> {
        self.client
            .push_file(
                &self.instance,
                "/tmp/kennel-init",
                INIT.as_bytes().to_vec(),
                &FileSpec {
                    mode: 0o755,
                    ..FileSpec::default()
                },
            )
            .await
            .map_err(incus_error)?;
        let script = "set -e; rm -f /usr/sbin/init; mv /tmp/kennel-init /usr/sbin/init; \
                      if [ ! -e /sbin/init ]; then rm -f /sbin/init; ln -s /usr/sbin/init /sbin/init; fi";
        let (code, output) = self
            .exec_collected(ExecRequest::new(["sh", "-c", script]))
            .await?;
        if code != 0 {
            return Err(self.failed("install kennel's init", &output));
        }
        Ok(())
    }

    /// Publishes the stopped container under the recipe's tag, with its
    /// labels and environment (a rebuild replaces the image the tag named).
    async fn publish(&mut self, env: &BTreeMap<String, String>) -> Result<(), CliError> {
        let env_json = serde_json::to_string(env).unwrap_or_default();
        let description = format!("kennel {}", self.recipe.tag);
        let mut properties: Vec<(&str, &str)> = self
            .recipe
            .labels
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_str()))
            .collect();
        properties.push((ENV_PROPERTY, &env_json));
        properties.push(("description", &description));
        properties.push((CONVERSION_PROPERTY, CONVERSION));
        properties.push((BUILT_PROPERTY, "incus"));
        if let Ok(old) = self.client.image_alias(&self.recipe.tag).await {
            let _ = self.client.delete_image(&old.target).await;
        }
        self.client
            .publish_instance(&self.instance, Some(&self.recipe.tag), &properties)
            .await
            .map_err(incus_error)?;
        Ok(())
    }

    /// Runs `request` as root; its exit code and output (both streams).
    async fn exec_collected(&mut self, request: ExecRequest) -> Result<(i32, String), CliError> {
        let output = self
            .client
            .exec(&self.instance, &request)
            .await
            .map_err(incus_error)?;
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stderr));
        let _ = self.log.write_all(text.as_bytes());
        Ok((output.exit_code, text))
    }

    fn failed(&self, step: &str, output: &str) -> CliError {
        let lines: Vec<String> = output.lines().map(str::to_string).collect();
        let start = lines.len().saturating_sub(StepOutput::TAIL);
        kennel_lib::image_build::with_build_details(
            CliError::kennel(format!("building {} in Incus failed", self.recipe.tag)),
            Some(step),
            &lines[start..],
            &self.log_path,
        )
    }
}

/// Brings the loopback up: `SIOCSIFFLAGS` with up, loopback and running.
/// (`struct ifreq` is 40 bytes: the name, the flags, padding.)
const RELAY_LO_UP: &str = "use Socket; socket(my $s, PF_INET, SOCK_DGRAM, 0) or die \"socket: $!\\n\"; \
     my $ifr = pack('a16 s x22', 'lo', 0x1 | 0x8 | 0x40); ioctl($s, 0x8914, $ifr) or die \"lo up: $!\\n\";";

/// A build container's name: the recipe's hash and this process, so that
/// two kennels building the same layer do not collide.
fn build_instance_name(recipe: &Recipe) -> String {
    format!("kennel-build-{}-{}", &recipe.hash[..12], std::process::id())
}

fn describe(source: &ImageSource) -> String {
    match source {
        ImageSource::Alias(alias) => format!("local:{alias}"),
        ImageSource::Fingerprint(fingerprint) => fingerprint.clone(),
        ImageSource::Remote { server, alias, .. } => format!("{alias} from {server}"),
    }
}

fn join_pairs(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_containers_are_named_after_the_layer() {
        let recipe = kennel_image::base_recipe(&kennel_image::ImageSettings {
            base_image: "local:debian".into(),
            ca_certificates: Vec::new(),
            packages: Vec::new(),
            setup: None,
        });
        assert!(recipe.steps().is_ok());
        let name = build_instance_name(&recipe);
        assert!(name.starts_with(&format!("kennel-build-{}", &recipe.hash[..12])));
        assert_eq!(crate::instance::instance_name(&name), name);
    }
}
