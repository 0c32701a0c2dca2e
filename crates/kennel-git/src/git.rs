//! Running the `git` binary: always an argument vector, never a shell
//! string, and always with the same defences, because some of the
//! repositories kennel runs git on were written by an agent.

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{GitError, Result};

/// `-c` settings on every git command kennel runs. Command-line settings
/// beat every config file, including files an agent could have written.
///
/// - `core.hooksPath=/dev/null`: no hook runs, whatever `hooks/` holds or a
///   config file says (`/dev/null/<hook>` never exists).
/// - `core.fsmonitor=false`: the fsmonitor setting is a command git runs on
///   every status-like operation.
/// - `gc.auto=0`, `maintenance.auto=false`: kennel's own commands never start
///   a background gc in the user's repository.
/// - `submodule.recurse=false`: no git runs inside submodules, whose own
///   config and hooks kennel has not vetted.
/// - `protocol.ext.allow=never`: no `ext::` transport (runs a command).
/// - `core.pager=cat`: never a pager (kennel captures output anyway).
///
/// Drivers defined in config (`filter.<x>.clean`, `diff.<x>.textconv`,
/// `merge.<x>.driver`) cannot be switched off by one setting; kennel never
/// reads an agent-writable config at all (see the crate docs), passes
/// `--no-ext-diff --no-textconv` to every diff, and switches off, by name,
/// every filter driver the trusted configs define wherever git reads or
/// writes files of a session ([`NoFilters`]).
const SAFE_CONFIG: &[&str] = &[
    "core.hooksPath=/dev/null",
    "core.fsmonitor=false",
    "gc.auto=0",
    "maintenance.auto=false",
    "submodule.recurse=false",
    "protocol.ext.allow=never",
    "core.pager=cat",
];

/// Variables that would point git at another repository, index, object
/// store or config than the one kennel names, or make it run a program.
/// kennel may itself run inside a git hook or alias, where some are set.
const CLEARED_ENV: &[&str] = &[
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_COMMON_DIR",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_NAMESPACE",
    "GIT_PREFIX",
    "GIT_QUARANTINE_PATH",
    "GIT_IMPLICIT_WORK_TREE",
    "GIT_CONFIG",
    "GIT_CONFIG_PARAMETERS",
    "GIT_CONFIG_COUNT",
    "GIT_EXTERNAL_DIFF",
    "GIT_DIFF_OPTS",
    "GIT_ATTR_SOURCE",
    "GIT_REPLACE_REF_BASE",
    "GIT_GRAFT_FILE",
    "GIT_SHALLOW_FILE",
    "GIT_SSH",
    "GIT_SSH_COMMAND",
    "GIT_ASKPASS",
    "GIT_TRACE2_EVENT",
];

/// The config that switches off every filter driver git could run for a
/// command on `git_dir` (see [`Cmd::without_filters`]): for each driver
/// that some config file git reads there defines (system, global, the
/// repository's, their includes), its `clean`, `smudge` and `process`
/// commands set to nothing, and `required` off. A driver that no config
/// defines never runs (an attribute naming it is a no-op), and an agent
/// cannot define one in a config git reads for kennel: the repository's
/// config is read-only in its sandbox, and nested repositories' configs
/// are never read (no submodule recursion).
#[derive(Debug, Clone, Default)]
pub(crate) struct NoFilters {
    settings: Vec<(String, String)>,
}

impl NoFilters {
    pub fn for_repo(git_dir: &Path) -> Result<NoFilters> {
        let output = Cmd::repo(git_dir, None)
            .args([
                "config",
                "--null",
                "--name-only",
                "--get-regexp",
                r"^filter\..*\.[a-z]*$",
            ])
            .run()?;
        // Exit 1: no such key.
        if output.status != Some(0) && output.status != Some(1) {
            return Err(failed(vec!["config".into(), "--get-regexp".into()], output));
        }
        let mut names: Vec<String> = split_z(&output.stdout)
            .into_iter()
            .filter_map(|key| {
                let rest = key.strip_prefix("filter.")?;
                let (name, _) = rest.rsplit_once('.')?;
                Some(name.to_string())
            })
            .collect();
        names.sort();
        names.dedup();
        let mut settings = Vec::new();
        for name in names {
            for (var, value) in [
                ("clean", ""),
                ("smudge", ""),
                ("process", ""),
                ("required", "false"),
            ] {
                settings.push((format!("filter.{name}.{var}"), value.to_string()));
            }
        }
        Ok(NoFilters { settings })
    }
}

/// One git invocation, built up then run.
pub(crate) struct Cmd {
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    cwd: Option<PathBuf>,
    input: Option<Input>,
}

/// What a command reads on its standard input.
enum Input {
    Bytes(Vec<u8>),
    /// An open file, read from its current offset (a bundle's pack, after
    /// its header).
    File(std::fs::File),
}

/// What a git command left behind.
pub(crate) struct Output {
    pub status: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Cmd {
    /// `git --no-pager -c … <args>`: with no repository chosen yet; the
    /// constructors below pin one.
    pub fn new() -> Cmd {
        let mut args: Vec<OsString> = vec!["--no-pager".into()];
        for setting in SAFE_CONFIG {
            args.push("-c".into());
            args.push((*setting).into());
        }
        Cmd {
            args,
            // Never an editor or a password prompt: kennel runs unattended.
            env: vec![
                ("GIT_EDITOR".into(), "true".into()),
                ("GIT_SEQUENCE_EDITOR".into(), "true".into()),
                ("GIT_TERMINAL_PROMPT".into(), "0".into()),
                ("GIT_PAGER".into(), "cat".into()),
                // A clone made partial by an agent must not make upload-pack
                // fetch from a remote of the agent's choosing (git >= 2.45.1
                // defaults to this; older ones honour the variable too).
                ("GIT_NO_LAZY_FETCH".into(), "1".into()),
            ],
            cwd: None,
            input: None,
        }
    }

    /// A git command on the repository whose git dir is `git_dir`, with
    /// `work_tree` as its working tree (or none). Naming both means git never
    /// discovers anything: a `.git` file or directory an agent planted in a
    /// working tree is never consulted.
    pub fn repo(git_dir: &Path, work_tree: Option<&Path>) -> Cmd {
        let mut cmd = Cmd::new();
        cmd.args.push(flag("--git-dir=", git_dir));
        if let Some(work_tree) = work_tree {
            cmd.args.push(flag("--work-tree=", work_tree));
            cmd.cwd = Some(work_tree.to_path_buf());
        } else {
            cmd.cwd = Some(git_dir.to_path_buf());
        }
        cmd
    }

    /// An extra `-c key=value` for this command only (must come before the
    /// subcommand).
    pub fn config(mut self, setting: &str) -> Cmd {
        self.args.push("-c".into());
        self.args.push(setting.into());
        self
    }

    /// No filter driver runs (see [`NoFilters`]). The settings go in
    /// through `GIT_CONFIG_COUNT` (command-line scope, like `-c`), so that a
    /// driver name with any character in it is passed as it is.
    pub fn without_filters(mut self, filters: &NoFilters) -> Cmd {
        if filters.settings.is_empty() {
            return self;
        }
        self.env.push((
            "GIT_CONFIG_COUNT".into(),
            filters.settings.len().to_string().into(),
        ));
        for (index, (key, value)) in filters.settings.iter().enumerate() {
            self.env
                .push((format!("GIT_CONFIG_KEY_{index}").into(), key.into()));
            self.env
                .push((format!("GIT_CONFIG_VALUE_{index}").into(), value.into()));
        }
        self
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Cmd {
        self.args.push(arg.as_ref().to_os_string());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|arg| arg.as_ref().to_os_string()));
        self
    }

    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Cmd {
        self.env
            .push((key.as_ref().to_os_string(), value.as_ref().to_os_string()));
        self
    }

    pub fn input(mut self, bytes: Vec<u8>) -> Cmd {
        self.input = Some(Input::Bytes(bytes));
        self
    }

    /// Standard input from `file`, from where its offset is now.
    pub fn input_file(mut self, file: std::fs::File) -> Cmd {
        self.input = Some(Input::File(file));
        self
    }

    /// The arguments as shown in logs and errors: without the
    /// [`SAFE_CONFIG`] every command starts with.
    fn display_args(&self) -> Vec<String> {
        self.args
            .iter()
            .skip(1 + 2 * SAFE_CONFIG.len())
            .map(|arg| arg.to_string_lossy().into_owned())
            .collect()
    }

    /// Runs it and returns whatever happened; only a git that cannot be
    /// started is an error.
    pub fn run(self) -> Result<Output> {
        let shown = self.display_args();
        tracing::debug!(args = ?shown, cwd = ?self.cwd, "git");
        let mut command = Command::new("git");
        command.args(&self.args);
        for key in CLEARED_ENV {
            command.env_remove(key);
        }
        for (key, value) in &self.env {
            command.env(key, value);
        }
        if let Some(cwd) = &self.cwd {
            command.current_dir(cwd);
        }
        let (stdin, bytes) = match self.input {
            Some(Input::Bytes(bytes)) => (Stdio::piped(), Some(bytes)),
            Some(Input::File(file)) => (Stdio::from(file), None),
            None => (Stdio::null(), None),
        };
        command
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().map_err(|error| match error.kind() {
            std::io::ErrorKind::NotFound if self.cwd.as_ref().is_none_or(|dir| dir.is_dir()) => {
                GitError::GitMissing
            }
            _ => GitError::Io {
                path: self.cwd.clone().unwrap_or_else(|| PathBuf::from("git")),
                source: error,
            },
        })?;
        // Feed stdin from a thread: git may fill its stdout pipe before it
        // has read all of its input.
        let writer = match (bytes, child.stdin.take()) {
            (Some(bytes), Some(mut stdin)) => Some(std::thread::spawn(move || {
                let _ = stdin.write_all(&bytes);
            })),
            _ => None,
        };
        let output = child.wait_with_output().map_err(|source| GitError::Io {
            path: PathBuf::from("git"),
            source,
        })?;
        if let Some(writer) = writer {
            let _ = writer.join();
        }
        let result = Output {
            status: output.status.code(),
            stdout: output.stdout,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        };
        if result.status != Some(0) {
            tracing::debug!(args = ?shown, status = ?result.status, stderr = %result.stderr.trim(), "git failed");
        }
        Ok(result)
    }

    /// Runs it; anything but exit 0 is [`GitError::GitFailed`].
    pub fn ok(self) -> Result<Vec<u8>> {
        let args = self.display_args();
        let output = self.run()?;
        if output.status == Some(0) {
            Ok(output.stdout)
        } else {
            Err(failed(args, output))
        }
    }

    /// Runs it and returns its standard output as trimmed text.
    pub fn text(self) -> Result<String> {
        let stdout = self.ok()?;
        Ok(String::from_utf8_lossy(&stdout).trim().to_string())
    }

    /// Runs it; exit 0 is `true`, exit 1 is `false` (git's "no" for
    /// `merge-base --is-ancestor`, `show-ref --verify`, `diff --quiet` …),
    /// anything else is a failure.
    pub fn yes(self) -> Result<bool> {
        let args = self.display_args();
        let output = self.run()?;
        match output.status {
            Some(0) => Ok(true),
            Some(1) => Ok(false),
            _ => Err(failed(args, output)),
        }
    }

    /// The arguments, for error messages of callers that read the status.
    pub fn shown(&self) -> Vec<String> {
        self.display_args()
    }
}

pub(crate) fn failed(args: Vec<String>, output: Output) -> GitError {
    GitError::GitFailed {
        args,
        status: output.status,
        stderr: output.stderr,
    }
}

fn flag(name: &str, path: &Path) -> OsString {
    let mut flag = OsString::from(name);
    flag.push(path.as_os_str());
    flag
}

/// Splits NUL-separated git output (`-z`), dropping empty entries.
pub(crate) fn split_z(bytes: &[u8]) -> Vec<String> {
    bytes
        .split(|byte| *byte == 0)
        .filter(|part| !part.is_empty())
        .map(|part| String::from_utf8_lossy(part).into_owned())
        .collect()
}

/// git's version as numbers: `git version 2.47.3` → `[2, 47, 3]`.
pub(crate) fn version() -> Result<(String, Vec<u32>)> {
    let text = Cmd::new().arg("--version").text()?;
    let number = text
        .strip_prefix("git version ")
        .unwrap_or(&text)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string();
    let parts = number
        .split('.')
        .map_while(|part| part.parse::<u32>().ok())
        .collect();
    Ok((number, parts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_nul_separated_output() {
        assert_eq!(split_z(b"a\0b c\0\0"), vec!["a", "b c"]);
        assert!(split_z(b"").is_empty());
    }

    #[test]
    fn reads_this_machines_git_version() {
        let (text, parts) = version().expect("git --version");
        assert!(parts.len() >= 2, "{text}");
        assert!(parts[0] >= 2, "{text}");
    }
}
