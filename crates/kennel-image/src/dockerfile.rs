//! A repository's Dockerfile (a devcontainer's `build.dockerfile`), read
//! into stages of instructions that kennel runs itself in a build
//! container whose only network is kennel's proxy — an engine's builder
//! would give the repository's `RUN` steps the engine's own network.
//!
//! What the Dockerfile reference defines for building a filesystem is
//! understood: `FROM … AS`, `ARG`, `ENV`, `RUN` (shell and exec form),
//! `COPY`/`ADD` (`--from`, `--chown`, `--chmod`), `WORKDIR`, `USER`,
//! `SHELL`, `LABEL`, `CMD`, `ENTRYPOINT`. `EXPOSE`, `VOLUME`,
//! `HEALTHCHECK`, `STOPSIGNAL` and `MAINTAINER` say nothing about the
//! filesystem and are dropped. Anything that would reach the host
//! (`RUN --mount=type=secret|ssh`, `--network`, `--security`) or that
//! kennel does not run (`ONBUILD`, heredocs, `ADD` from a URL) is refused
//! by line.

use std::collections::BTreeMap;

/// A command as a Dockerfile writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Shell form: run by the stage's `SHELL` (`/bin/sh -c`).
    Shell(String),
    /// Exec form: this argv.
    Exec(Vec<String>),
}

/// `COPY` or `ADD`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopySpec {
    pub sources: Vec<String>,
    pub target: String,
    /// `--from=STAGE|INDEX|IMAGE`.
    pub from: Option<String>,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    /// `ADD`: a local archive is unpacked at the target.
    pub add: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Instruction {
    Run(Command),
    Copy(CopySpec),
    Env(Vec<(String, String)>),
    /// Names with their defaults.
    Arg(Vec<(String, Option<String>)>),
    Workdir(String),
    User(String),
    Shell(Vec<String>),
    Label(Vec<(String, String)>),
    Cmd(Command),
    Entrypoint(Command),
}

/// One `FROM` and what follows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// The image or earlier stage, before `ARG` expansion.
    pub from: String,
    pub name: Option<String>,
    pub line: usize,
    pub instructions: Vec<(usize, Instruction)>,
}

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    /// `ARG`s before the first `FROM` (usable in `FROM` lines).
    pub global_args: Vec<(String, Option<String>)>,
    pub stages: Vec<Stage>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {reason}")]
pub struct DockerfileError {
    pub file: String,
    pub line: usize,
    pub reason: String,
}

impl Dockerfile {
    /// Parses `text` (from `file`, for messages).
    pub fn parse(file: &str, text: &str) -> Result<Dockerfile, DockerfileError> {
        let fail = |line: usize, reason: String| DockerfileError {
            file: file.to_string(),
            line,
            reason,
        };
        for line in text
            .lines()
            .take_while(|line| line.trim_start().starts_with('#'))
        {
            let directive = line.trim_start_matches('#').trim();
            if let Some(escape) = directive.strip_prefix("escape=")
                && escape.trim() != "\\"
            {
                return Err(fail(
                    1,
                    "the `escape` directive is not understood here (only `\\`)".into(),
                ));
            }
        }
        let mut global_args = Vec::new();
        let mut stages: Vec<Stage> = Vec::new();
        for (line, instruction) in crate::steps::logical_lines(text) {
            let (keyword, rest) = instruction
                .split_once(char::is_whitespace)
                .map(|(keyword, rest)| (keyword, rest.trim()))
                .unwrap_or((instruction.as_str(), ""));
            let keyword = keyword.to_ascii_uppercase();
            if rest.contains("<<") && matches!(keyword.as_str(), "RUN" | "COPY" | "ADD") {
                let (_, after) = rest.split_once("<<").unwrap_or_default();
                if after.starts_with(|c: char| c.is_ascii_uppercase() || c == '-' || c == '"') {
                    return Err(fail(
                        line,
                        format!("`{keyword}` with a heredoc is not understood here"),
                    ));
                }
            }
            if keyword == "FROM" {
                let (flags, words) = flags(rest);
                if let Some(flag) = flags.iter().find(|(name, _)| name != "platform") {
                    return Err(fail(line, format!("`FROM --{}` is not understood", flag.0)));
                }
                let (from, name) = match words.as_slice() {
                    [image] => (image.clone(), None),
                    [image, r#as, name] if r#as.eq_ignore_ascii_case("as") => {
                        (image.clone(), Some(name.to_ascii_lowercase()))
                    }
                    _ => {
                        return Err(fail(
                            line,
                            format!("`FROM {rest}`: expected `FROM IMAGE [AS NAME]`"),
                        ));
                    }
                };
                stages.push(Stage {
                    from,
                    name,
                    line,
                    instructions: Vec::new(),
                });
                continue;
            }
            let parsed = match keyword.as_str() {
                "ARG" => Instruction::Arg(arg_pairs(rest).map_err(|reason| fail(line, reason))?),
                _ if stages.is_empty() => {
                    return Err(fail(
                        line,
                        format!("`{keyword}` before the first FROM (only ARG may come first)"),
                    ));
                }
                "RUN" => {
                    let (flags, _) = flags(rest);
                    for (name, value) in &flags {
                        let allowed =
                            name == "mount" && value.split(',').any(|part| part == "type=cache");
                        if !allowed {
                            return Err(fail(
                                line,
                                format!(
                                    "`RUN --{name}={value}` is not run by kennel (a build step never gets the host's secrets, sockets or network)"
                                ),
                            ));
                        }
                    }
                    Instruction::Run(
                        command(strip_flags(rest)).map_err(|reason| fail(line, reason))?,
                    )
                }
                "CMD" => Instruction::Cmd(command(rest).map_err(|reason| fail(line, reason))?),
                "ENTRYPOINT" => {
                    Instruction::Entrypoint(command(rest).map_err(|reason| fail(line, reason))?)
                }
                "SHELL" => match command(rest).map_err(|reason| fail(line, reason))? {
                    Command::Exec(argv) if !argv.is_empty() => Instruction::Shell(argv),
                    _ => return Err(fail(line, "`SHELL` takes a JSON array".into())),
                },
                "COPY" | "ADD" => Instruction::Copy(
                    copy_spec(rest, keyword == "ADD").map_err(|reason| fail(line, reason))?,
                ),
                "ENV" => Instruction::Env(
                    crate::steps::env_pairs(rest)
                        .or_else(|_| legacy_pair(rest))
                        .map_err(|reason| fail(line, reason))?,
                ),
                "LABEL" => Instruction::Label(
                    crate::steps::label_pairs(rest).map_err(|reason| fail(line, reason))?,
                ),
                "WORKDIR" if !rest.is_empty() => Instruction::Workdir(unquote(rest)),
                "USER" if !rest.is_empty() => Instruction::User(unquote(rest)),
                "EXPOSE" | "VOLUME" | "HEALTHCHECK" | "STOPSIGNAL" | "MAINTAINER" => continue,
                "ONBUILD" => {
                    return Err(fail(line, "`ONBUILD` is not understood here".into()));
                }
                other => {
                    return Err(fail(
                        line,
                        format!("`{other}` is not a Dockerfile instruction kennel knows"),
                    ));
                }
            };
            match stages.last_mut() {
                Some(stage) => stage.instructions.push((line, parsed)),
                None => {
                    if let Instruction::Arg(pairs) = parsed {
                        global_args.extend(pairs);
                    }
                }
            }
        }
        if stages.is_empty() {
            return Err(fail(1, "there is no FROM".into()));
        }
        Ok(Dockerfile {
            global_args,
            stages,
        })
    }

    /// The stages to build for `target` (its index; default the last).
    pub fn target_index(&self, target: Option<&str>) -> Option<usize> {
        match target {
            None => Some(self.stages.len() - 1),
            Some(name) => self
                .stages
                .iter()
                .position(|stage| stage.name.as_deref() == Some(&name.to_ascii_lowercase())),
        }
    }

    /// The stage `reference` names (a name or an index) among the first
    /// `before`, if it names one.
    pub fn stage_named(&self, reference: &str, before: usize) -> Option<usize> {
        let lower = reference.to_ascii_lowercase();
        self.stages[..before]
            .iter()
            .position(|stage| stage.name.as_deref() == Some(lower.as_str()))
            .or_else(|| {
                reference
                    .parse::<usize>()
                    .ok()
                    .filter(|index| *index < before)
            })
    }

    /// Every context path a `COPY`/`ADD` of the stages up to `last`
    /// reads (not `--from`).
    pub fn context_sources(&self, last: usize) -> Vec<String> {
        let mut out = Vec::new();
        for stage in &self.stages[..=last] {
            for (_, instruction) in &stage.instructions {
                if let Instruction::Copy(copy) = instruction
                    && copy.from.is_none()
                {
                    out.extend(copy.sources.iter().cloned());
                }
            }
        }
        out
    }
}

/// Leading `--name=value` flags and the words after them.
fn flags(text: &str) -> (Vec<(String, String)>, Vec<String>) {
    let mut flags = Vec::new();
    let mut words = Vec::new();
    for word in text.split_whitespace() {
        match word.strip_prefix("--") {
            Some(flag) if words.is_empty() => {
                let (name, value) = flag.split_once('=').unwrap_or((flag, ""));
                flags.push((name.to_string(), value.to_string()));
            }
            _ => words.push(word.to_string()),
        }
    }
    (flags, words)
}

/// `text` after its leading flags.
fn strip_flags(text: &str) -> &str {
    let mut rest = text.trim_start();
    while rest.starts_with("--") {
        rest = rest
            .split_once(char::is_whitespace)
            .map_or("", |(_, after)| after.trim_start());
    }
    rest
}

/// Shell or exec (a JSON array of strings) form.
fn command(text: &str) -> Result<Command, String> {
    let text = text.trim();
    if text.starts_with('[')
        && let Ok(argv) = serde_json::from_str::<Vec<String>>(text)
    {
        return Ok(Command::Exec(argv));
    }
    if text.is_empty() {
        return Err("an empty command".into());
    }
    Ok(Command::Shell(text.to_string()))
}

fn copy_spec(text: &str, add: bool) -> Result<CopySpec, String> {
    let (flag_list, _) = flags(text);
    let mut spec = CopySpec {
        sources: Vec::new(),
        target: String::new(),
        from: None,
        chown: None,
        chmod: None,
        add,
    };
    for (name, value) in flag_list {
        match name.as_str() {
            "from" if !add => spec.from = Some(value),
            "chown" => spec.chown = Some(value),
            "chmod" => spec.chmod = Some(value),
            "link" => {}
            other => return Err(format!("`--{other}` is not understood on COPY/ADD")),
        }
    }
    let rest = strip_flags(text);
    let mut words = if rest.starts_with('[') {
        serde_json::from_str::<Vec<String>>(rest).map_err(|_| "a bad JSON array".to_string())?
    } else {
        rest.split_whitespace().map(unquote).collect()
    };
    let Some(target) = words.pop().filter(|_| !words.is_empty()) else {
        return Err("expected SOURCE… TARGET".into());
    };
    if add
        && let Some(url) = words
            .iter()
            .find(|source| source.contains("://") || source.starts_with("git@"))
    {
        return Err(format!(
            "`ADD {url}`: kennel does not fetch for a Dockerfile on the host; download it in a RUN step (which goes through kennel's proxy)"
        ));
    }
    spec.sources = words;
    spec.target = target;
    Ok(spec)
}

/// `ARG NAME[=default] …`.
fn arg_pairs(text: &str) -> Result<Vec<(String, Option<String>)>, String> {
    let mut out = Vec::new();
    for word in text.split_whitespace() {
        let (name, default) = match word.split_once('=') {
            Some((name, value)) => (name, Some(unquote(value))),
            None => (word, None),
        };
        if !crate::steps::is_name(name) {
            return Err(format!("`ARG {text}`: `{name}` is not a variable name"));
        }
        out.push((name.to_string(), default));
    }
    if out.is_empty() {
        return Err("`ARG` without a name".into());
    }
    Ok(out)
}

/// The old `ENV NAME value with spaces` form.
fn legacy_pair(text: &str) -> Result<Vec<(String, String)>, String> {
    match text.split_once(char::is_whitespace) {
        Some((name, value)) if crate::steps::is_name(name) && !name.contains('=') => {
            Ok(vec![(name.to_string(), value.trim().to_string())])
        }
        _ => Err(format!("`ENV {text}`: expected NAME=VALUE")),
    }
}

fn unquote(text: &str) -> String {
    let text = text.trim();
    for quote in ['"', '\''] {
        if text.len() >= 2 && text.starts_with(quote) && text.ends_with(quote) {
            return text[1..text.len() - 1].to_string();
        }
    }
    text.to_string()
}

/// Build arguments as a stage sees them: the global defaults, replaced by
/// what devcontainer.json's `build.args` gives.
pub fn initial_args(
    dockerfile: &Dockerfile,
    given: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut args = BTreeMap::new();
    for (name, default) in &dockerfile.global_args {
        if let Some(value) = given.get(name).or(default.as_ref()) {
            args.insert(name.clone(), value.clone());
        }
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_devcontainer_dockerfile_reads() {
        let text = r#"# syntax=docker/dockerfile:1
ARG VARIANT=bookworm
FROM mcr.microsoft.com/devcontainers/base:${VARIANT} AS tools
RUN --mount=type=cache,target=/var/cache/apt apt-get update \
    && apt-get install -y jq
FROM tools
ARG TOOL_VERSION="1.2"
ENV GOPATH=/go PATH=/go/bin:$PATH
ENV LEGACY some value
COPY --chown=1000:1000 scripts/*.sh /usr/local/bin/
COPY --from=tools /usr/bin/jq /usr/local/bin/jq
ADD ["vendor/tool.tar.gz", "/opt/"]
WORKDIR /work
USER vscode
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN ["echo", "exec form"]
LABEL org.example.x="a b" y=z
EXPOSE 8080
CMD ["sleep", "infinity"]
"#;
        let parsed = Dockerfile::parse("Dockerfile", text).expect("parse");
        assert_eq!(
            parsed.global_args,
            [("VARIANT".to_string(), Some("bookworm".to_string()))]
        );
        assert_eq!(parsed.stages.len(), 2);
        assert_eq!(parsed.stages[0].name.as_deref(), Some("tools"));
        assert_eq!(parsed.stages[0].line, 3);
        assert!(matches!(
            &parsed.stages[0].instructions[0].1,
            Instruction::Run(Command::Shell(cmd)) if cmd.starts_with("apt-get update")
        ));
        let second = &parsed.stages[1].instructions;
        assert_eq!(
            second[2].1,
            Instruction::Env(vec![("LEGACY".into(), "some value".into())])
        );
        let Instruction::Copy(copy) = &second[3].1 else {
            panic!("{second:?}");
        };
        assert_eq!(copy.sources, ["scripts/*.sh"]);
        assert_eq!(copy.chown.as_deref(), Some("1000:1000"));
        assert_eq!(parsed.stage_named("tools", 1), Some(0));
        assert_eq!(parsed.stage_named("0", 1), Some(0));
        assert_eq!(parsed.stage_named("debian", 1), None);
        assert_eq!(parsed.target_index(Some("tools")), Some(0));
        assert_eq!(parsed.target_index(None), Some(1));
        assert_eq!(
            parsed.context_sources(1),
            ["scripts/*.sh", "vendor/tool.tar.gz"]
        );
        assert!(
            second
                .iter()
                .any(|(_, i)| matches!(i, Instruction::Shell(argv) if argv[0] == "/bin/bash"))
        );
        assert!(second.iter().any(|(_, i)| matches!(i, Instruction::Run(Command::Exec(argv)) if argv == &["echo", "exec form"])));
        let args = initial_args(
            &parsed,
            &[("VARIANT".to_string(), "trixie".to_string())].into(),
        );
        assert_eq!(args["VARIANT"], "trixie");
    }

    #[test]
    fn what_would_reach_the_host_is_refused_by_line() {
        for (text, line, words) in [
            (
                "FROM a\nRUN --mount=type=secret,id=x cat /run/secrets/x\n",
                2,
                "type=secret",
            ),
            ("FROM a\nRUN --mount=type=ssh git clone x\n", 2, "type=ssh"),
            ("FROM a\nRUN --network=host curl x\n", 2, "network"),
            ("FROM a\n\nADD https://evil.example/x /x\n", 3, "RUN step"),
            ("FROM a\nONBUILD RUN x\n", 2, "ONBUILD"),
            ("FROM a\nRUN <<EOF\necho\nEOF\n", 2, "heredoc"),
            ("RUN true\n", 1, "before the first FROM"),
            ("# escape=`\nFROM a\n", 1, "escape"),
            ("ARG X\n", 1, "no FROM"),
            ("FROM a\nFROBNICATE\n", 2, "FROBNICATE"),
        ] {
            let error = Dockerfile::parse(".devcontainer/Dockerfile", text).expect_err(text);
            assert_eq!(error.line, line, "{text}: {error}");
            assert!(error.to_string().contains(words), "{text}: {error}");
            assert!(
                error.to_string().starts_with(".devcontainer/Dockerfile:"),
                "{error}"
            );
        }
    }
}
