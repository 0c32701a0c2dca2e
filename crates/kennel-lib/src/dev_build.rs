//! The project's image from its devcontainer.json (a Dockerfile and
//! features, [`kennel_image::devimage::DevImage`]) built by kennel itself
//! on Docker or Podman: each stage in a workbench (a container with no
//! network but kennel's proxy, under the session's network policy), each
//! `RUN` an exec in it, each `COPY` the files kennel read from the
//! repository without following a link, and the result committed.
//!
//! The engine's own builder is never given the repository's steps: it
//! would run them with the engine's network, around the session's
//! allowlist.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use kennel_core::plan::NetworkMode;
use kennel_core::tree::{TreeEntry, TreeKind};
use kennel_engine::{
    Engine, OutputStream, Workbench, WorkbenchExec, WorkbenchNetwork, WorkbenchSpec,
};
use kennel_image::devimage::{DevBase, DevImage, Feature};
use kennel_image::dockerfile::{Command, CopySpec, Instruction, initial_args};
use kennel_image::expand;

use crate::error::CliError;
use crate::image_build::{BuildOptions, PullPolicy, StepOutput};

/// The most a `COPY --from` may carry.
const MAX_COPY_FROM: usize = 1 << 30;
/// A workbench's name: this, the project image's hash (first 12), the
/// stage, and the kennel process that builds it (`-relay` for its relay).
const WORKBENCH_PREFIX: &str = "kennel-build-";
/// The PATH of an image that sets none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Where features are unpacked while they install.
const FEATURES_DIR: &str = "/tmp/kennel-features";

/// What a project build needs beside the image: the session's network
/// policy and the image kennel's relay runs from.
#[derive(Debug, Clone)]
pub struct ProjectBuild {
    pub image: DevImage,
    pub policy: kennel_proxy::Policy,
    /// The user's CA certificates (PEM), trusted beside the system's when
    /// a feature is fetched from a registry.
    pub ca_bundle: Vec<u8>,
    /// The devcontainer.json is trusted: the images and features it names
    /// may come from any registry (its Dockerfile's `FROM`s are another
    /// file, not covered).
    pub trusted: bool,
    /// kennel's base layer on the user's own base image: it has `socat`.
    pub relay: kennel_image::Recipe,
}

/// The project's image for `devcontainer` in the workspace `root` (see
/// [`DevImage::load`]).
pub fn load(
    root: &Path,
    devcontainer: &kennel_core::devcontainer::Devcontainer,
) -> Result<Option<DevImage>, CliError> {
    for feature in devcontainer
        .features
        .iter()
        .filter(|feature| !feature.is_local())
    {
        kennel_oci::FeatureReference::parse(&feature.id).map_err(|error| {
            CliError::kennel(format!("{}: {error}", devcontainer.path.display()))
                .with_hint("name a feature as ./DIR (in the repository) or REGISTRY/PATH:TAG")
        })?;
    }
    Ok(DevImage::load(root, devcontainer)?)
}

/// Builds `project.image` unless the engine has it.
pub async fn ensure(
    engine: &Engine,
    project: &ProjectBuild,
    options: &BuildOptions,
) -> Result<(), CliError> {
    if !options.no_cache && engine.image_exists(&project.image.tag).await? {
        return Ok(());
    }
    remove_stale_workbenches(engine).await;
    let mut image = project.image.clone();
    fetch_features(&mut image, project).await?;
    let image = &image;
    let (log_path, log) = crate::image_build::open_log(
        &options.logs,
        &image.tag,
        &format!("building {} from {}", image.tag, image.source),
    )?;
    // `allowlist` and `restricted`: kennel's proxy, relayed into the
    // workbench by kennel's base layer (which has socat).
    let proxy = match project.policy.mode {
        NetworkMode::Allowlist | NetworkMode::Restricted => {
            let relay_options = BuildOptions {
                pulls: None,
                ..options.clone()
            };
            crate::image_build::ensure_layers(
                engine,
                std::slice::from_ref(&project.relay),
                &relay_options,
            )
            .await?;
            let spec = build_proxy_spec(image, &project.policy, options, &log_path);
            Some((
                crate::proxy::SessionProxy::launch(&spec).await?,
                spec.socket,
            ))
        }
        NetworkMode::None | NetworkMode::Open => None,
    };
    let bench_network = match (&proxy, project.policy.mode) {
        (Some((_, socket)), _) => WorkbenchNetwork::Proxy {
            socket: socket.clone(),
            relay_image: project.relay.tag.clone(),
        },
        (None, NetworkMode::Open) => WorkbenchNetwork::Engine,
        (None, _) => WorkbenchNetwork::None,
    };
    let mut build = Build {
        engine,
        image,
        pulls: options.pulls.clone(),
        network: bench_network,
        log,
        log_path,
        progress: crate::report::progress(&format!(
            "building {} from {} (first use; later runs reuse it; log: {})",
            image.tag,
            image.source,
            options.logs.display()
        )),
        temporary: Vec::new(),
        started: Instant::now(),
    };
    let result = build.run().await;
    for tag in std::mem::take(&mut build.temporary) {
        let _ = engine.remove_image(&tag, true).await;
    }
    let Build {
        mut log,
        progress,
        started,
        ..
    } = build;
    drop(progress);
    if let Some((proxy, _)) = proxy {
        proxy.stop().await;
    }
    if let Err(error) = &result {
        let _ = writeln!(log, "# kennel: the build failed: {}", error.message);
    }
    result?;
    crate::report::note(&format!("built {} in {:.0?}", image.tag, started.elapsed()));
    Ok(())
}

/// Fetches the features `image` names from a registry, each only when the
/// session's network policy lets the sandbox reach that registry (the
/// fetch is kennel's, on the host: a reference can carry data). Refused
/// otherwise, naming the feature.
async fn fetch_features(image: &mut DevImage, project: &ProjectBuild) -> Result<(), CliError> {
    let mut ignored = Vec::new();
    for feature in image.features.iter_mut().filter(|feature| feature.remote) {
        let reference = kennel_oci::FeatureReference::parse(&feature.id)
            .map_err(|error| CliError::kennel(format!("{}: {error}", image.source)))?;
        let host = reference.registry_host().to_string();
        if !project.trusted
            && !matches!(
                kennel_proxy::check_name(&project.policy, &host),
                kennel_proxy::Verdict::Allow
            )
        {
            return Err(CliError::kennel(format!(
                "{}: the feature {} comes from {host}, which this session's network policy does not allow",
                image.source, feature.id
            ))
            .with_hint(format!(
                "allow the registry (--allow {host}), trust this devcontainer.json (kennel config trust {}), or copy the feature into the repository and name it ./features/NAME",
                image.source
            )));
        }
        let options = kennel_oci::FetchOptions {
            extra_roots_pem: project.ca_bundle.clone(),
            ..kennel_oci::FetchOptions::default()
        };
        let fetched = kennel_oci::fetch(&reference, &options).await.map_err(|error| {
            let hint = error.hint();
            let error = CliError::kennel(format!(
                "{}: cannot fetch the feature {}: {error}",
                image.source, feature.id
            ));
            match hint {
                Some(hint) => error.with_hint(hint),
                None => error.with_hint("copy the feature into the repository and name it ./features/NAME, or run with --devcontainer none"),
            }
        })?;
        let files = fetched
            .files
            .into_iter()
            .map(|file| TreeEntry {
                path: file.path,
                mode: file.mode,
                kind: TreeKind::File(file.content),
            })
            .collect();
        *feature = Feature::from_files(&feature.request, files, &mut ignored)
            .map_err(|reason| CliError::kennel(format!("{}: {reason}", image.source)))?;
    }
    if !ignored.is_empty() {
        crate::report::warn(&format!(
            "{}: ignored, as it would reach the host or weaken the sandbox: {}",
            image.source,
            ignored.join(", ")
        ));
    }
    Ok(())
}

/// The build's proxy: the session's policy, the user's `[network]` facts,
/// no credentials; its decisions beside the build log.
pub fn build_proxy_spec(
    image: &DevImage,
    policy: &kennel_proxy::Policy,
    options: &BuildOptions,
    log_path: &Path,
) -> crate::proxy::ProxySpec {
    let name = format!("build-{}", &image.hash[..12]);
    crate::proxy::ProxySpec {
        session: name.clone(),
        mode: policy.mode,
        allow: policy.allow.clone(),
        deny: policy.deny.clone(),
        hosts: options.hosts.clone(),
        upstream: options.upstream.clone(),
        trusted: options.trusted.clone(),
        socket: options
            .proxy_dirs
            .join(&name)
            .join(kennel_core::plan::PROXY_SOCKET_NAME),
        log: log_path.with_extension("network.log"),
        broker: None,
    }
}

/// Workbenches (and relays) of a kennel that was killed.
async fn remove_stale_workbenches(engine: &Engine) {
    for (id, name) in engine.containers_named(WORKBENCH_PREFIX).await {
        let alive = name
            .trim_end_matches("-relay")
            .rsplit('-')
            .next()
            .and_then(|pid| pid.parse::<i32>().ok())
            .is_some_and(|pid| {
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
            });
        if !alive {
            tracing::info!(%name, "removing a build container left behind");
            let _ = engine.force_remove(&id).await;
        }
    }
}

/// One stage's state as its instructions run.
#[derive(Debug, Clone, Default)]
struct StageState {
    env: BTreeMap<String, String>,
    /// The variables this build set (the commit writes them).
    env_set: Vec<String>,
    args: BTreeMap<String, String>,
    workdir: String,
    user: String,
    shell: Vec<String>,
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    labels: Vec<(String, String)>,
}

impl StageState {
    fn from_image(config: kennel_engine::ImageRunConfig) -> StageState {
        let mut env: BTreeMap<String, String> = config
            .env
            .iter()
            .filter_map(|pair| pair.split_once('='))
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect();
        // As Docker's builder: an image without PATH gets the usual one.
        env.entry("PATH".into())
            .or_insert_with(|| DEFAULT_PATH.to_string());
        StageState {
            env,
            workdir: if config.working_dir.is_empty() {
                "/".into()
            } else {
                config.working_dir
            },
            user: config.user,
            shell: vec!["/bin/sh".into(), "-c".into()],
            entrypoint: config.entrypoint,
            cmd: config.cmd,
            ..StageState::default()
        }
    }

    /// What `$NAME` means in an instruction: the build's arguments, under
    /// the stage's variables.
    fn words(&self) -> BTreeMap<String, String> {
        let mut all = self.args.clone();
        all.extend(self.env.clone());
        all
    }

    fn set_env(&mut self, name: &str, value: String) {
        self.env.insert(name.to_string(), value);
        if !self.env_set.iter().any(|known| known == name) {
            self.env_set.push(name.to_string());
        }
    }

    /// The commit's changes: the variables set, the working directory,
    /// the user, the entrypoint and command (the workbench's own are
    /// replaced), the labels.
    fn changes(&self, labels: &BTreeMap<String, String>) -> Vec<String> {
        let mut out = Vec::new();
        for name in &self.env_set {
            if let Some(value) = self.env.get(name) {
                out.push(format!("ENV {name}={}", quote(value)));
            }
        }
        out.push(format!("WORKDIR {}", self.workdir));
        out.push(format!(
            "USER {}",
            if self.user.is_empty() {
                "root"
            } else {
                &self.user
            }
        ));
        let json = |argv: &Option<Vec<String>>| {
            serde_json::to_string(argv.as_deref().unwrap_or_default())
                .unwrap_or_else(|_| "[]".into())
        };
        out.push(format!("ENTRYPOINT {}", json(&self.entrypoint)));
        out.push(format!("CMD {}", json(&self.cmd)));
        for (key, value) in self
            .labels
            .iter()
            .map(|(key, value)| (key, value))
            .chain(labels.iter())
        {
            out.push(format!("LABEL {}={}", quote(key), quote(value)));
        }
        out
    }
}

/// A value for a commit's `ENV` or `LABEL`: in double quotes, with `\`,
/// `"` and `$` escaped (the engines expand `$` there).
fn quote(value: &str) -> String {
    let mut out = String::from("\"");
    for c in value.chars() {
        if matches!(c, '\\' | '"' | '$') {
            out.push('\\');
        }
        if c == '\n' {
            out.push_str("\\n");
            continue;
        }
        out.push(c);
    }
    out.push('"');
    out
}

struct Build<'a> {
    engine: &'a Engine,
    image: &'a DevImage,
    pulls: Option<PullPolicy>,
    network: WorkbenchNetwork,
    log: File,
    log_path: PathBuf,
    progress: Box<dyn crate::report::Progress>,
    /// Earlier stages, committed under temporary tags (removed at the end).
    temporary: Vec<String>,
    started: Instant,
}

impl Build<'_> {
    async fn run(&mut self) -> Result<(), CliError> {
        let (bench, mut state) = match &self.image.base {
            DevBase::Image(image) => {
                self.progress.step(&format!("FROM {image}"));
                let _ = writeln!(self.log, "FROM {image}");
                self.check_image(image).await?;
                let state = StageState::from_image(self.engine.image_run_config(image).await?);
                (self.workbench(image, 0).await?, state)
            }
            DevBase::Dockerfile {
                parsed,
                args,
                target,
                ..
            } => {
                let globals = initial_args(parsed, args);
                let mut stage_tags: Vec<String> = Vec::new();
                let mut last = None;
                for (index, stage) in parsed.stages[..=*target].iter().enumerate() {
                    let from = expand(&stage.from, &globals);
                    let base = match parsed.stage_named(&from, index) {
                        Some(earlier) => stage_tags[earlier].clone(),
                        None => {
                            self.check_image(&from).await?;
                            from.clone()
                        }
                    };
                    self.progress.step(&format!("FROM {from}"));
                    let _ = writeln!(self.log, "FROM {from}");
                    let mut state =
                        StageState::from_image(self.engine.image_run_config(&base).await?);
                    // Global arguments are known in a stage once it
                    // declares them again.
                    let bench = self.workbench(&base, index).await?;
                    let ran = self
                        .stage(&bench, &mut state, stage, &globals, args, &stage_tags)
                        .await;
                    if let Err(error) = ran {
                        self.engine.remove_workbench(bench).await;
                        return Err(error);
                    }
                    if index == *target {
                        last = Some((bench, state));
                    } else {
                        let tag = format!(
                            "kennel/devcontainer-stage:{}-{index}",
                            &self.image.hash[..12]
                        );
                        self.engine
                            .commit_workbench(bench, &tag, &state.changes(&BTreeMap::new()))
                            .await?;
                        self.temporary.push(tag.clone());
                        stage_tags.push(tag);
                    }
                }
                last.ok_or_else(|| CliError::kennel("the Dockerfile has no stage to build"))?
            }
        };
        let installed = self.features(&bench, &mut state).await;
        if let Err(error) = installed {
            self.engine.remove_workbench(bench).await;
            return Err(error);
        }
        self.progress.step("commit");
        let changes = state.changes(&self.image.labels);
        self.engine
            .commit_workbench(bench, &self.image.tag, &changes)
            .await?;
        Ok(())
    }

    /// A repository-named image the engine does not have is pulled only
    /// as the session's network policy allows — here, never: kennel does
    /// not ask the engine to pull during a project build.
    async fn check_image(&self, image: &str) -> Result<(), CliError> {
        if self.engine.image_exists(image).await? {
            return Ok(());
        }
        let chosen_by = self
            .pulls
            .as_ref()
            .map(|pulls| pulls.chosen_by.clone())
            .unwrap_or_else(|| self.image.source.clone());
        let host = crate::image_build::registry_host(image);
        Err(CliError::kennel(format!(
            "the image {image} (named by {chosen_by}) is not here; kennel does not pull the images a repository names (pulling reaches {host} from the engine, outside the session's network policy)"
        ))
        .with_hint(format!(
            "pull it yourself if you trust it (docker pull {image}), or run with --devcontainer none"
        )))
    }

    async fn workbench(&self, image: &str, stage: usize) -> Result<Workbench, CliError> {
        let spec = WorkbenchSpec {
            image: image.to_string(),
            name: format!(
                "{WORKBENCH_PREFIX}{}-{stage}-{}",
                &self.image.hash[..12],
                std::process::id()
            ),
            network: self.network.clone(),
        };
        Ok(self.engine.start_workbench(&spec).await?)
    }

    async fn stage(
        &mut self,
        bench: &Workbench,
        state: &mut StageState,
        stage: &kennel_image::dockerfile::Stage,
        globals: &BTreeMap<String, String>,
        given: &BTreeMap<String, String>,
        stage_tags: &[String],
    ) -> Result<(), CliError> {
        let parsed = match &self.image.base {
            DevBase::Dockerfile { parsed, .. } => parsed,
            DevBase::Image(_) => return Ok(()),
        };
        for (line, instruction) in &stage.instructions {
            match instruction {
                Instruction::Arg(pairs) => {
                    for (name, default) in pairs {
                        let value = given
                            .get(name)
                            .cloned()
                            .or_else(|| default.as_ref().map(|text| expand(text, &state.words())))
                            .or_else(|| globals.get(name).cloned());
                        if let Some(value) = value {
                            state.args.insert(name.clone(), value);
                        }
                    }
                }
                Instruction::Env(pairs) => {
                    for (name, value) in pairs {
                        let value = expand(value, &state.words());
                        state.set_env(name, value);
                    }
                }
                Instruction::Run(command) => {
                    let argv = match command {
                        Command::Shell(text) => {
                            let mut argv = state.shell.clone();
                            argv.push(text.clone());
                            argv
                        }
                        Command::Exec(argv) => argv.clone(),
                    };
                    let shown = format!("RUN {}", argv.last().cloned().unwrap_or_default());
                    self.step(bench, state, &shown, argv, Vec::new(), *line)
                        .await?;
                }
                Instruction::Copy(copy) => {
                    let copy = CopySpec {
                        sources: copy.sources.clone(),
                        target: expand(&copy.target, &state.words()),
                        ..copy.clone()
                    };
                    self.copy(bench, state, &copy, parsed, stage_tags, *line)
                        .await?;
                }
                Instruction::Workdir(dir) => {
                    let dir = absolute(&state.workdir, &expand(dir, &state.words()));
                    self.mkdir(bench, &dir).await?;
                    state.workdir = dir;
                }
                Instruction::User(user) => state.user = expand(user, &state.words()),
                Instruction::Shell(argv) => state.shell = argv.clone(),
                // kennel's own labels are kennel's to set (they decide
                // what `kennel image rm` and `prune` take).
                Instruction::Label(pairs) => state.labels.extend(
                    pairs
                        .iter()
                        .filter(|(key, _)| !key.starts_with("dev.kennel."))
                        .cloned(),
                ),
                Instruction::Cmd(command) => state.cmd = Some(exec_form(command)),
                Instruction::Entrypoint(command) => {
                    state.entrypoint = Some(exec_form(command));
                    state.cmd = None;
                }
            }
        }
        Ok(())
    }

    /// Runs one command as the stage's user in its working directory, with
    /// its variables (and `extra`) and kennel's proxy; its output to the
    /// log and the progress.
    async fn step(
        &mut self,
        bench: &Workbench,
        state: &StageState,
        shown: &str,
        argv: Vec<String>,
        extra: Vec<(String, String)>,
        line: usize,
    ) -> Result<(), CliError> {
        self.progress.step(shown);
        let _ = writeln!(self.log, "{shown}");
        let mut env: BTreeMap<String, String> = state.args.clone();
        env.extend(state.env.clone());
        env.extend(extra);
        if matches!(self.network, WorkbenchNetwork::Proxy { .. }) {
            let proxy = format!("http://127.0.0.1:{}", kennel_engine::RELAY_PORT);
            for key in ["http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"] {
                env.insert(key.to_string(), proxy.clone());
            }
            for key in ["no_proxy", "NO_PROXY"] {
                env.insert(key.to_string(), kennel_core::settings::NO_PROXY.to_string());
            }
        }
        let exec = WorkbenchExec {
            argv,
            env: env
                .iter()
                .map(|(name, value)| format!("{name}={value}"))
                .collect(),
            user: state.user.clone(),
            working_dir: state.workdir.clone(),
        };
        let mut output = StepOutput::default();
        let log = &mut self.log;
        let progress = &mut self.progress;
        let mut sink = |_: OutputStream, chunk: &[u8]| output.push(chunk, log, progress.as_mut());
        let code = self.engine.workbench_exec(bench, &exec, &mut sink).await?;
        let tail = output.finish(&mut self.log, self.progress.as_mut());
        if code != 0 {
            let place = match line {
                0 => self.image.source.clone(),
                line => format!("{}:{line}", self.dockerfile_name()),
            };
            return Err(crate::image_build::with_build_details(
                CliError::kennel(format!(
                    "building {} failed: {place}: a step exited with {code}",
                    self.image.tag
                )),
                Some(shown),
                &tail,
                &self.log_path,
            ));
        }
        Ok(())
    }

    fn dockerfile_name(&self) -> String {
        match &self.image.base {
            DevBase::Dockerfile { file, .. } => file.clone(),
            DevBase::Image(_) => self.image.source.clone(),
        }
    }

    async fn mkdir(&mut self, bench: &Workbench, dir: &str) -> Result<(), CliError> {
        let exec = WorkbenchExec {
            argv: vec!["mkdir".into(), "-p".into(), "--".into(), dir.into()],
            ..WorkbenchExec::default()
        };
        let mut output = Vec::new();
        let code = self
            .engine
            .workbench_exec(bench, &exec, &mut |_, chunk| {
                output.extend_from_slice(chunk)
            })
            .await?;
        if code != 0 {
            return Err(CliError::kennel(format!(
                "building {}: cannot make {dir}: {}",
                self.image.tag,
                String::from_utf8_lossy(&output).trim()
            )));
        }
        Ok(())
    }

    /// `COPY`/`ADD`: from the build context (what kennel read), or from an
    /// earlier stage or a local image (`--from`).
    async fn copy(
        &mut self,
        bench: &Workbench,
        state: &StageState,
        copy: &CopySpec,
        parsed: &kennel_image::dockerfile::Dockerfile,
        stage_tags: &[String],
        line: usize,
    ) -> Result<(), CliError> {
        let verb = if copy.add { "ADD" } else { "COPY" };
        let from = copy
            .from
            .as_ref()
            .map(|from| format!("--from={from} "))
            .unwrap_or_default();
        let shown = format!("{verb} {from}{} {}", copy.sources.join(" "), copy.target);
        self.progress.step(&shown);
        let _ = writeln!(self.log, "{shown}");
        let file = self.dockerfile_name();
        let fail = |reason: String| CliError::kennel(format!("{file}:{line}: `{shown}`: {reason}"));
        let target = absolute(&state.workdir, &copy.target);
        let into_dir = copy.target.ends_with('/')
            || copy.sources.len() > 1
            || copy
                .sources
                .iter()
                .any(|source| source.contains(['*', '?']));
        let owner = match &copy.chown {
            Some(chown) => self
                .owner(bench, &expand(chown, &state.words()))
                .await
                .map_err(fail)?,
            None => (0, 0),
        };
        let mode = match &copy.chmod {
            Some(text) => Some(
                u32::from_str_radix(text, 8)
                    .map_err(|_| fail(format!("`--chmod={text}` is not an octal mode")))?,
            ),
            None => None,
        };
        let mut archive = TarWriter::new(owner, mode);
        let mut unpack = Vec::new();
        // Whether the target is a directory the copy fills (else a file's
        // path, whose parent must exist).
        let mut fills_dir = into_dir;
        match &copy.from {
            None => {
                for source in &copy.sources {
                    let matches = self
                        .image
                        .context
                        .get(source)
                        .ok_or_else(|| fail(format!("{source} was not read")))?;
                    let many = into_dir || matches.len() > 1;
                    for (path, entries) in matches {
                        let name = path.rsplit('/').next().unwrap_or(path);
                        let top = entries.first().map(|entry| &entry.kind);
                        let top_is_dir = matches!(top, Some(TreeKind::Dir));
                        if copy.add
                            && is_archive(name)
                            && let Some(TreeKind::File(content)) = top
                        {
                            unpack.push(content.clone());
                            fills_dir = true;
                            continue;
                        }
                        fills_dir |= top_is_dir;
                        let place = if top_is_dir || !many {
                            target.clone()
                        } else {
                            format!("{}/{name}", target.trim_end_matches('/'))
                        };
                        for entry in entries {
                            archive
                                .add(&place, entry)
                                .map_err(|error| fail(error.to_string()))?;
                        }
                    }
                }
            }
            Some(from) => {
                let image = match parsed.stage_named(from, stage_tags.len()) {
                    Some(index) => stage_tags[index].clone(),
                    None => {
                        self.check_image(from).await?;
                        from.clone()
                    }
                };
                for source in &copy.sources {
                    let source = absolute("/", &expand(source, &state.words()));
                    let tar = self
                        .engine
                        .image_archive(&image, &source, MAX_COPY_FROM)
                        .await
                        .map_err(|error| fail(error.to_string()))?;
                    fills_dir |= archive
                        .add_from_archive(&tar, &target, into_dir)
                        .map_err(|error| fail(error.to_string()))?;
                }
            }
        }
        let dir = if fills_dir {
            target.clone()
        } else {
            Path::new(&target)
                .parent()
                .map(|parent| parent.display().to_string())
                .unwrap_or_else(|| "/".into())
        };
        self.mkdir(bench, &dir).await?;
        let bytes = archive.finish().map_err(|error| fail(error.to_string()))?;
        self.engine.workbench_put(bench, "/", bytes).await?;
        for content in unpack {
            self.engine.workbench_put(bench, &target, content).await?;
        }
        Ok(())
    }

    /// `--chown=USER[:GROUP]` as numbers, names looked up in the workbench.
    async fn owner(&mut self, bench: &Workbench, chown: &str) -> Result<(u64, u64), String> {
        let (user, group) = chown.split_once(':').unwrap_or((chown, ""));
        let uid = self.lookup(bench, "passwd", user).await?;
        let gid = match group {
            "" => match user.parse::<u64>() {
                Ok(_) => uid,
                Err(_) => self.lookup_gid_of(bench, user).await?,
            },
            group => self.lookup(bench, "group", group).await?,
        };
        Ok((uid, gid))
    }

    async fn lookup(
        &mut self,
        bench: &Workbench,
        database: &str,
        name: &str,
    ) -> Result<u64, String> {
        if let Ok(number) = name.parse::<u64>() {
            return Ok(number);
        }
        let out = self
            .query(
                bench,
                &format!("awk -F: -v n=\"$1\" '$1 == n {{ print $3; exit }}' /etc/{database}"),
                name,
            )
            .await?;
        out.trim()
            .parse()
            .map_err(|_| format!("`{name}` is not in the image's /etc/{database}"))
    }

    async fn lookup_gid_of(&mut self, bench: &Workbench, user: &str) -> Result<u64, String> {
        let out = self
            .query(
                bench,
                "awk -F: -v n=\"$1\" '$1 == n { print $4; exit }' /etc/passwd",
                user,
            )
            .await?;
        out.trim()
            .parse()
            .map_err(|_| format!("`{user}` is not in the image's /etc/passwd"))
    }

    async fn query(
        &mut self,
        bench: &Workbench,
        script: &str,
        arg: &str,
    ) -> Result<String, String> {
        let exec = WorkbenchExec {
            argv: vec![
                "sh".into(),
                "-c".into(),
                script.into(),
                "kennel".into(),
                arg.into(),
            ],
            ..WorkbenchExec::default()
        };
        let mut out = Vec::new();
        self.engine
            .workbench_exec(bench, &exec, &mut |stream, chunk| {
                if stream == OutputStream::Stdout {
                    out.extend_from_slice(chunk)
                }
            })
            .await
            .map_err(|error| error.to_string())?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// Each feature, in order: its files unpacked in a temporary
    /// directory, its `install.sh` run as root with its options, its
    /// `containerEnv` set.
    async fn features(
        &mut self,
        bench: &Workbench,
        state: &mut StageState,
    ) -> Result<(), CliError> {
        let features: Vec<Feature> = self.image.features.clone();
        for (index, feature) in features.iter().enumerate() {
            let dir = format!("{FEATURES_DIR}/{index}");
            let mut archive = TarWriter::new((0, 0), None);
            for entry in &feature.files {
                archive.add(&dir, entry).map_err(|error| {
                    CliError::kennel(format!("the feature {}: {error}", feature.id))
                })?;
            }
            let bytes = archive.finish().map_err(|error| {
                CliError::kennel(format!("the feature {}: {error}", feature.id))
            })?;
            self.mkdir(bench, &dir).await?;
            self.engine.workbench_put(bench, "/", bytes).await?;
            let mut extra: Vec<(String, String)> = feature.env.clone().into_iter().collect();
            for (name, value) in [
                ("_REMOTE_USER", "root"),
                ("_REMOTE_USER_HOME", "/root"),
                ("_CONTAINER_USER", "root"),
                ("_CONTAINER_USER_HOME", "/root"),
            ] {
                extra.push((name.to_string(), value.to_string()));
            }
            let root_state = StageState {
                user: String::new(),
                workdir: dir.clone(),
                ..state.clone()
            };
            let argv = vec![
                "sh".to_string(),
                "-c".to_string(),
                "chmod +x ./install.sh && ./install.sh".to_string(),
            ];
            self.step(
                bench,
                &root_state,
                &format!("feature {}", feature.id),
                argv,
                extra,
                0,
            )
            .await?;
            for (name, value) in &feature.container_env {
                let value = expand(value, &state.words());
                state.set_env(name, value);
            }
        }
        if !features.is_empty() {
            let exec = WorkbenchExec {
                argv: vec!["rm".into(), "-rf".into(), "--".into(), FEATURES_DIR.into()],
                ..WorkbenchExec::default()
            };
            self.engine
                .workbench_exec(bench, &exec, &mut |_, _| {})
                .await?;
        }
        Ok(())
    }
}

fn exec_form(command: &Command) -> Vec<String> {
    match command {
        Command::Exec(argv) => argv.clone(),
        Command::Shell(text) => vec!["/bin/sh".into(), "-c".into(), text.clone()],
    }
}

/// `path` made absolute against `dir`.
fn absolute(dir: &str, path: &str) -> String {
    if path.starts_with('/') {
        path.to_string()
    } else {
        format!("{}/{path}", dir.trim_end_matches('/'))
    }
}

fn is_archive(name: &str) -> bool {
    [
        ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz",
    ]
    .iter()
    .any(|suffix| name.ends_with(suffix))
}

/// A tar for `workbench_put` at `/`: entries under their absolute place
/// (without the leading `/`), owned as `--chown` says, links as links.
struct TarWriter {
    builder: tar::Builder<Vec<u8>>,
    owner: (u64, u64),
    mode: Option<u32>,
}

impl TarWriter {
    fn new(owner: (u64, u64), mode: Option<u32>) -> TarWriter {
        TarWriter {
            builder: tar::Builder::new(Vec::new()),
            owner,
            mode,
        }
    }

    /// `entry` (its path relative to a copied source) at `place`.
    fn add(&mut self, place: &str, entry: &TreeEntry) -> std::io::Result<()> {
        let path = match entry.path.as_str() {
            "" => place.trim_end_matches('/').to_string(),
            relative => format!("{}/{relative}", place.trim_end_matches('/')),
        };
        let path = path.trim_start_matches('/');
        if path.is_empty() {
            return Ok(());
        }
        let mut header = tar::Header::new_gnu();
        header.set_uid(self.owner.0);
        header.set_gid(self.owner.1);
        header.set_mtime(0);
        header.set_mode(self.mode.unwrap_or(entry.mode));
        match &entry.kind {
            TreeKind::File(content) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(content.len() as u64);
                self.builder
                    .append_data(&mut header, path, content.as_slice())
            }
            TreeKind::Dir => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_size(0);
                self.builder
                    .append_data(&mut header, path, std::io::empty())
            }
            TreeKind::Symlink(target) => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_size(0);
                self.builder.append_link(&mut header, path, target)
            }
        }
    }

    /// The entries of an engine's archive of one path (its last component
    /// at the top), re-rooted at `target`: a directory's content into
    /// it, a file to it (or into it, `into_dir`). Whether the copied path
    /// was a directory.
    fn add_from_archive(
        &mut self,
        archive: &[u8],
        target: &str,
        into_dir: bool,
    ) -> std::io::Result<bool> {
        let mut was_dir = false;
        let mut reader = tar::Archive::new(archive);
        let target = target
            .trim_end_matches('/')
            .trim_start_matches('/')
            .to_string();
        for entry in reader.entries()? {
            let mut entry = entry?;
            let path = entry.path()?.into_owned();
            let mut parts = path.components();
            let top = parts.next();
            let rest: PathBuf = parts.collect();
            if rest
                .components()
                .any(|part| !matches!(part, std::path::Component::Normal(_)))
            {
                return Err(std::io::Error::other(format!(
                    "{} leaves its directory",
                    path.display()
                )));
            }
            let is_dir = entry.header().entry_type().is_dir();
            let place = if rest.as_os_str().is_empty() {
                if is_dir {
                    was_dir = true;
                    continue;
                }
                match (into_dir, top) {
                    (true, Some(name)) => {
                        format!("{target}/{}", name.as_os_str().to_string_lossy())
                    }
                    _ => target.clone(),
                }
            } else {
                format!("{target}/{}", rest.display())
            };
            let mut header = entry.header().clone();
            header.set_uid(self.owner.0);
            header.set_gid(self.owner.1);
            if let Some(mode) = self.mode {
                header.set_mode(mode);
            }
            let link = entry.link_name()?.map(|link| link.into_owned());
            match link {
                Some(link) if header.entry_type().is_symlink() => {
                    self.builder.append_link(&mut header, &place, link)?;
                }
                // Hard links inside one copy: copied as their own files
                // would need the content; refuse rather than guess.
                Some(_) => {
                    return Err(std::io::Error::other(format!(
                        "{} is a hard link",
                        path.display()
                    )));
                }
                None => {
                    let mut content = Vec::new();
                    std::io::Read::read_to_end(&mut entry, &mut content)?;
                    self.builder
                        .append_data(&mut header, &place, content.as_slice())?;
                }
            }
        }
        Ok(was_dir)
    }

    fn finish(self) -> std::io::Result<Vec<u8>> {
        self.builder.into_inner()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_values_are_quoted() {
        assert_eq!(quote("a b"), "\"a b\"");
        assert_eq!(quote("x\"$y\\"), "\"x\\\"\\$y\\\\\"");
        let mut state = StageState {
            workdir: "/work".into(),
            ..StageState::default()
        };
        state.set_env("PATH", "/go/bin:/usr/bin".into());
        state.cmd = Some(vec!["sleep".into(), "infinity".into()]);
        let changes =
            state.changes(&[("dev.kennel.layer".to_string(), "devcontainer".to_string())].into());
        assert_eq!(
            changes,
            [
                "ENV PATH=\"/go/bin:/usr/bin\"",
                "WORKDIR /work",
                "USER root",
                "ENTRYPOINT []",
                "CMD [\"sleep\",\"infinity\"]",
                "LABEL \"dev.kennel.layer\"=\"devcontainer\""
            ]
        );
    }

    #[test]
    fn copied_entries_land_at_their_place() {
        let mut writer = TarWriter::new((1000, 1000), None);
        let file = |path: &str| TreeEntry {
            path: path.into(),
            mode: 0o755,
            kind: TreeKind::File(b"x".to_vec()),
        };
        writer.add("/usr/local/bin/", &file("")).expect("add");
        writer
            .add(
                "/opt/tools",
                &TreeEntry {
                    path: "a/b".into(),
                    mode: 0o644,
                    kind: TreeKind::Symlink("/etc/passwd".into()),
                },
            )
            .expect("add");
        let bytes = writer.finish().expect("tar");
        let mut archive = tar::Archive::new(bytes.as_slice());
        let entries: Vec<(String, u64)> = archive
            .entries()
            .expect("entries")
            .map(|entry| {
                let entry = entry.expect("entry");
                (
                    entry.path().expect("path").display().to_string(),
                    entry.header().uid().expect("uid"),
                )
            })
            .collect();
        assert_eq!(
            entries,
            [
                ("usr/local/bin".to_string(), 1000),
                ("opt/tools/a/b".to_string(), 1000)
            ]
        );
        assert_eq!(absolute("/work", "src"), "/work/src");
        assert_eq!(absolute("/work", "/src"), "/src");
    }
}
