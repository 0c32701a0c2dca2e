//! Secrets the user keeps on the host (`kennel secret`), for the egress
//! proxy to put into an agent's requests: the agent only ever sees a
//! placeholder.
//!
//! A secret is a name (`ANTHROPIC_API_KEY`) and where its value comes
//! from: a value kennel keeps ([`Source::Stored`]) or a command that
//! prints it, run each time it is needed ([`Source::Command`]). Values are
//! kept in the Secret Service keyring when one answers on the session bus,
//! else in `<data>/secrets/secrets.toml` (the directory 0700, the file
//! 0600, never through a symlink). The keyring cannot list what it holds,
//! so with it the names, sources and times are kept in
//! `<data>/secrets/index.toml`, without values.
//!
//! Values never reach an error message, a log line or `Debug` output
//! ([`SecretValue`]); the copies kennel makes of them are zeroed when
//! dropped, as far as it holds them itself (the TOML parser's and the
//! keyring client's own buffers are not).

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::error::CliError;
use crate::text::escape_controls;

/// The longest secret name.
pub const MAX_NAME_LEN: usize = 128;
/// The longest value, in bytes: a token, not a file.
pub const MAX_VALUE_LEN: usize = 65_536;
/// How long a [`Source::Command`] may take.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// The variable that picks the store: `file`, `keyring`, or `auto` (unset).
pub const STORE_ENV: &str = "KENNEL_SECRET_STORE";
/// The keyring's service attribute; the user attribute is the secret's name.
pub const KEYRING_SERVICE: &str = "kennel";

/// How long the keyring may take to answer the probe before kennel uses
/// the file store.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one keyring call may take (it may ask the user to unlock it).
const KEYRING_TIMEOUT: Duration = Duration::from_secs(120);
/// The keyring user of the probe: not a valid secret name, so never one.
const PROBE_USER: &str = "-kennel-probe-";
const SECRETS_FILE: &str = "secrets.toml";
const INDEX_FILE: &str = "index.toml";

/// Where a secret's value comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// A value kennel keeps (in the keyring or the file).
    Stored,
    /// A command (`sh -c`) whose output is the value, run each time.
    Command(String),
}

/// Which store holds the values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    Keyring,
    File,
}

impl fmt::Display for StoreKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StoreKind::Keyring => "keyring",
            StoreKind::File => "file",
        })
    }
}

/// A secret as `kennel secret ls` shows it: never its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecretInfo {
    pub name: String,
    pub source: Source,
    pub store: StoreKind,
    /// When it was last set, in seconds since the epoch.
    pub updated: i64,
}

/// A secret's value: `Debug` shows `<redacted>`, there is no `Display`,
/// and the memory is zeroed when it is dropped.
pub struct SecretValue(Zeroizing<String>);

impl SecretValue {
    pub fn new(value: String) -> SecretValue {
        SecretValue(Zeroizing::new(value))
    }

    /// The value itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Whether `name` can name a secret: `[A-Za-z_][A-Za-z0-9_]*`, at most
/// [`MAX_NAME_LEN`] characters. The error says what is wrong.
pub fn validate_name(name: &str) -> Result<(), String> {
    let Some(first) = name.chars().next() else {
        return Err("the name is empty".into());
    };
    if name.chars().count() > MAX_NAME_LEN {
        return Err(format!(
            "it is {} characters long, more than {MAX_NAME_LEN}",
            name.chars().count()
        ));
    }
    if first.is_ascii_digit() {
        return Err("it starts with a digit".into());
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_'))
    {
        return Err(format!(
            "it contains `{}`",
            escape_controls(&bad.to_string())
        ));
    }
    Ok(())
}

/// [`validate_name`] as the usage error (exit 2) a command reports, with
/// the rule in its hint.
pub fn check_name(name: &str) -> Result<(), CliError> {
    validate_name(name).map_err(|why| {
        CliError::usage(format!(
            "`{}` is not a secret name: {why}",
            escape_controls(name)
        ))
        .with_hint(NAME_RULE)
    })
}

const NAME_RULE: &str = "a name is letters, digits and `_`, not starting with a digit, at most 128 \
                         characters: usually the variable the agent reads, such as ANTHROPIC_API_KEY";

/// Whether `value` can be a secret's value: not empty, one line (no CR,
/// LF or NUL, nor any other control character but tab: it goes into an
/// HTTP header), at most [`MAX_VALUE_LEN`] bytes. The error says which
/// rule it breaks, never the value.
pub fn validate_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("the value is empty".into());
    }
    if value.len() > MAX_VALUE_LEN {
        return Err(format!("the value is longer than {MAX_VALUE_LEN} bytes"));
    }
    for (what, c) in [
        ("a carriage return (CR)", '\r'),
        ("a line feed (LF)", '\n'),
        ("a NUL byte", '\0'),
    ] {
        if value.contains(c) {
            return Err(format!("the value contains {what}"));
        }
    }
    if let Some(c) = value.chars().find(|c| c.is_ascii_control() && *c != '\t') {
        return Err(format!(
            "the value contains a control character (0x{:02x})",
            c as u32
        ));
    }
    Ok(())
}

/// The secrets of one user: names and sources in a file under the data
/// directory, values there or in the keyring.
#[derive(Debug)]
pub struct SecretStore {
    kind: StoreKind,
    dir: PathBuf,
}

impl SecretStore {
    /// The store under `data_dir` (kennel's data directory). The keyring
    /// when a Secret Service answers on the session bus
    /// (`DBUS_SESSION_BUS_ADDRESS`) within 2 s, unless the file store
    /// already holds secrets; else the file store. `KENNEL_SECRET_STORE`
    /// = `file` or `keyring` decides instead. Nothing is created until a
    /// secret is set.
    pub fn open(data_dir: &Path) -> Result<SecretStore, CliError> {
        let dir = data_dir.join("secrets");
        let wanted = std::env::var(STORE_ENV).unwrap_or_default();
        let in_file = fs::symlink_metadata(dir.join(SECRETS_FILE)).is_ok();
        let kind = choose(&wanted, in_file, keyring_answers)?;
        Ok(SecretStore { kind, dir })
    }

    /// The file store under `data_dir`, whatever the environment says.
    pub fn open_file(data_dir: &Path) -> SecretStore {
        SecretStore {
            kind: StoreKind::File,
            dir: data_dir.join("secrets"),
        }
    }

    pub fn kind(&self) -> StoreKind {
        self.kind
    }

    /// Where the values are, for people: `the Secret Service keyring`, or
    /// the file and its mode.
    pub fn describe(&self) -> String {
        match self.kind {
            StoreKind::Keyring => "the Secret Service keyring".into(),
            StoreKind::File => format!("{} (mode 0600)", self.file().display()),
        }
    }

    /// The file that lists the secrets: `secrets.toml` (with the values)
    /// or, with the keyring, `index.toml`.
    pub fn file(&self) -> PathBuf {
        self.dir.join(match self.kind {
            StoreKind::File => SECRETS_FILE,
            StoreKind::Keyring => INDEX_FILE,
        })
    }

    /// What `kennel doctor` checks: the directory and file are the user's
    /// own, not symlinks, and closed to others. The number of secrets.
    pub fn check(&self) -> Result<usize, CliError> {
        Ok(self.read()?.secrets.len())
    }

    /// Keeps `value` as the secret `name`, replacing what was there.
    pub fn set(&self, name: &str, value: &str) -> Result<(), CliError> {
        check_name(name)?;
        validate_value(value).map_err(|why| {
            CliError::usage(format!("secret {name} cannot be stored: {why}"))
                .with_hint("a value is one line of text: a token, a key, a password")
        })?;
        let _lock = self.lock()?;
        let mut document = self.read()?;
        let value = match self.kind {
            StoreKind::File => Some(Zeroizing::new(value.to_string())),
            StoreKind::Keyring => {
                keyring_set(name, value)?;
                None
            }
        };
        document.secrets.insert(
            name.to_string(),
            Entry {
                command: None,
                value,
                updated: now(),
            },
        );
        self.write(&document)
    }

    /// Keeps `command` as the secret `name`: its output (`sh -c`) is the
    /// value, each time it is asked for.
    pub fn set_command(&self, name: &str, command: &str) -> Result<(), CliError> {
        check_name(name)?;
        if command.trim().is_empty() {
            return Err(CliError::usage(format!(
                "secret {name}: the command is empty"
            )));
        }
        if command.contains(['\r', '\n', '\0']) {
            return Err(CliError::usage(format!(
                "secret {name}: the command is more than one line"
            ))
            .with_hint("put the commands in a script and store the script's path"));
        }
        let _lock = self.lock()?;
        let mut document = self.read()?;
        let previous = document.secrets.insert(
            name.to_string(),
            Entry {
                command: Some(command.to_string()),
                value: None,
                updated: now(),
            },
        );
        // A value the keyring kept for this name goes: no stale copy.
        if self.kind == StoreKind::Keyring && previous.is_some_and(|entry| entry.command.is_none())
        {
            keyring_delete(name)?;
        }
        self.write(&document)
    }

    /// Every secret, by name; never a value.
    pub fn list(&self) -> Result<Vec<SecretInfo>, CliError> {
        let document = self.read()?;
        Ok(document
            .secrets
            .into_iter()
            .map(|(name, entry)| SecretInfo {
                name,
                source: entry.source(),
                store: self.kind,
                updated: entry.updated,
            })
            .collect())
    }

    /// Forgets the secret `name`; `false` when there was none.
    pub fn remove(&self, name: &str) -> Result<bool, CliError> {
        check_name(name)?;
        if !check_dir(&self.dir)? {
            return Ok(false);
        }
        let _lock = self.lock()?;
        let mut document = self.read()?;
        let Some(entry) = document.secrets.remove(name) else {
            return Ok(false);
        };
        if self.kind == StoreKind::Keyring && entry.command.is_none() {
            keyring_delete(name)?;
        }
        self.write(&document)?;
        Ok(true)
    }

    /// The value of the secret `name`, or `None` when there is no such
    /// secret. A [`Source::Command`] runs now (`sh -c`, at most 30 s; its
    /// output less one trailing newline); an error names the secret and
    /// the command, never a value.
    pub fn value(&self, name: &str) -> Result<Option<SecretValue>, CliError> {
        check_name(name)?;
        let mut document = self.read()?;
        let Some(entry) = document.secrets.remove(name) else {
            return Ok(None);
        };
        if let Some(command) = &entry.command {
            return run_command(name, command, COMMAND_TIMEOUT).map(Some);
        }
        match self.kind {
            StoreKind::File => match entry.value {
                Some(value) => Ok(Some(SecretValue(value))),
                None => Err(CliError::kennel(format!(
                    "secret {name} in {} has neither a value nor a command",
                    self.file().display()
                ))
                .with_hint(format!("set it again: kennel secret set {name}"))),
            },
            StoreKind::Keyring => match keyring_get(name)? {
                Some(value) => Ok(Some(value)),
                None => Err(CliError::kennel(format!(
                    "secret {name} is listed in {}, but the keyring has no value for it",
                    self.file().display()
                ))
                .with_hint(format!("set it again: kennel secret set {name}"))),
            },
        }
    }

    /// The listing file, checked; empty when there is none yet.
    fn read(&self) -> Result<Document, CliError> {
        if !check_dir(&self.dir)? {
            return Ok(Document::default());
        }
        let path = self.file();
        let mut file = match fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&path)
        {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Document::default());
            }
            Err(error) if error.raw_os_error() == Some(libc::ELOOP) => {
                return Err(refused_link(&path));
            }
            Err(error) => return Err(io_error("cannot read", &path, &error)),
        };
        let meta = file
            .metadata()
            .map_err(|error| io_error("cannot read", &path, &error))?;
        if !meta.is_file() {
            return Err(CliError::kennel(format!(
                "refusing to use {}: it is not a regular file",
                path.display()
            ))
            .with_hint(format!("move it away: mv {0} {0}.old", path.display())));
        }
        check_owned(&path, &meta, 0o600)?;
        let mut text = Zeroizing::new(String::new());
        file.read_to_string(&mut text)
            .map_err(|error| io_error("cannot read", &path, &error))?;
        let document = toml::from_str::<Document>(&text).map_err(|error| {
            // The message alone: the error's own text quotes the line,
            // which may hold a value.
            let line = error
                .span()
                .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
            CliError::kennel(format!(
                "{}{} is not a secrets file kennel can read: {}",
                path.display(),
                line.map(|line| format!(":{line}")).unwrap_or_default(),
                error.message()
            ))
            .with_hint("fix or remove the file, then set the secrets again")
        })?;
        // A name edited in by hand is checked as one set here.
        if let Some((name, why)) = document
            .secrets
            .keys()
            .find_map(|name| validate_name(name).err().map(|why| (name, why)))
        {
            return Err(CliError::kennel(format!(
                "{}: `{}` is not a secret name: {why}",
                path.display(),
                escape_controls(name)
            ))
            .with_hint(NAME_RULE));
        }
        Ok(document)
    }

    /// Replaces the listing file atomically (a 0600 file in the same
    /// directory, renamed over it); removes it when no secret is left.
    fn write(&self, document: &Document) -> Result<(), CliError> {
        let path = self.file();
        if document.secrets.is_empty() {
            return match fs::remove_file(&path) {
                Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                    Err(io_error("cannot remove", &path, &error))
                }
                _ => Ok(()),
            };
        }
        let body = Zeroizing::new(toml::to_string(document).map_err(|error| {
            CliError::kennel(format!("cannot write {}: {error}", path.display()))
        })?);
        let mut temp = tempfile::Builder::new()
            .prefix(".secrets-")
            .suffix(".tmp")
            .permissions(fs::Permissions::from_mode(0o600))
            .tempfile_in(&self.dir)
            .map_err(|error| io_error("cannot write in", &self.dir, &error))?;
        let file = temp.as_file_mut();
        file.write_all(FILE_HEADER.as_bytes())
            .and_then(|()| file.write_all(body.as_bytes()))
            .and_then(|()| file.sync_all())
            .map_err(|error| io_error("cannot write", temp.path(), &error))?;
        temp.persist(&path)
            .map_err(|error| io_error("cannot write", &path, &error.error))?;
        if let Ok(dir) = File::open(&self.dir) {
            let _ = dir.sync_all();
        }
        Ok(())
    }

    /// Makes the directory (0700) if needed and holds every other
    /// kennel's changes off until dropped (an advisory lock on it).
    fn lock(&self) -> Result<File, CliError> {
        if let Some(parent) = self.dir.parent() {
            fs::create_dir_all(parent)
                .map_err(|error| io_error("cannot create", parent, &error))?;
        }
        match fs::DirBuilder::new().mode(0o700).create(&self.dir) {
            Err(error) if error.kind() != std::io::ErrorKind::AlreadyExists => {
                return Err(io_error("cannot create", &self.dir, &error));
            }
            _ => {}
        }
        check_dir(&self.dir)?;
        let dir = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_DIRECTORY)
            .open(&self.dir)
            .map_err(|error| io_error("cannot open", &self.dir, &error))?;
        dir.lock()
            .map_err(|error| io_error("cannot lock", &self.dir, &error))?;
        Ok(dir)
    }
}

/// Which store [`SecretStore::open`] uses: what `KENNEL_SECRET_STORE`
/// says (`wanted`), else the file when it holds secrets (`in_file`: they
/// stay found there), else the keyring when it `answers`.
fn choose(
    wanted: &str,
    in_file: bool,
    answers: impl FnOnce() -> bool,
) -> Result<StoreKind, CliError> {
    match wanted {
        "file" => Ok(StoreKind::File),
        "keyring" => {
            if answers() {
                Ok(StoreKind::Keyring)
            } else {
                Err(CliError::kennel(format!(
                    "{STORE_ENV}=keyring, but no Secret Service answers on the session bus"
                ))
                .with_hint(format!(
                    "start your desktop's keyring (gnome-keyring, KeePassXC), or unset \
                     {STORE_ENV} to keep secrets in a file"
                )))
            }
        }
        "" | "auto" => Ok(if !in_file && answers() {
            StoreKind::Keyring
        } else {
            StoreKind::File
        }),
        other => Err(CliError::usage(format!(
            "{STORE_ENV}=`{}` is not a secret store",
            escape_controls(other)
        ))
        .with_hint(format!("set {STORE_ENV} to `file`, `keyring` or `auto`"))),
    }
}

const FILE_HEADER: &str =
    "# kennel's secrets (`kennel secret set|ls|rm`). Keep this file mode 0600.\n\n";

/// The listing file: `secrets.toml` with values, `index.toml` without.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    #[serde(default)]
    secrets: BTreeMap<String, Entry>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    command: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value: Option<Zeroizing<String>>,
    updated: i64,
}

impl Entry {
    fn source(&self) -> Source {
        match &self.command {
            Some(command) => Source::Command(command.clone()),
            None => Source::Stored,
        }
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs() as i64)
        .unwrap_or(0)
}

fn io_error(what: &str, path: &Path, error: &std::io::Error) -> CliError {
    CliError::kennel(format!("{what} {}: {error}", path.display()))
}

fn refused_link(path: &Path) -> CliError {
    CliError::kennel(format!(
        "refusing to use {}: it is a symbolic link",
        path.display()
    ))
    .with_hint(format!(
        "kennel keeps secrets only in a directory and file of your own: remove the link \
         (rm {}) and set the secrets again",
        path.display()
    ))
}

/// Whether the secrets directory exists, refusing one that is a symlink,
/// not a directory, not the user's or open to others.
fn check_dir(dir: &Path) -> Result<bool, CliError> {
    let meta = match fs::symlink_metadata(dir) {
        Ok(meta) => meta,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(error) => return Err(io_error("cannot read", dir, &error)),
    };
    if meta.file_type().is_symlink() {
        return Err(refused_link(dir));
    }
    if !meta.is_dir() {
        return Err(CliError::kennel(format!(
            "refusing to use {}: it is not a directory",
            dir.display()
        ))
        .with_hint(format!(
            "move it away (it is kennel's place for secrets): mv {0} {0}.old",
            dir.display()
        )));
    }
    check_owned(dir, &meta, 0o700)?;
    Ok(true)
}

/// Refuses a file or directory that is not the user's own, or that
/// others may read or write (any bit beyond `mode`'s owner bits).
fn check_owned(path: &Path, meta: &fs::Metadata, mode: u32) -> Result<(), CliError> {
    let uid = nix::unistd::getuid().as_raw();
    if meta.uid() != uid {
        return Err(CliError::kennel(format!(
            "refusing to use {}: it belongs to uid {}, not to you (uid {uid})",
            path.display(),
            meta.uid()
        ))
        .with_hint(format!(
            "remove it (as its owner or root) and set the secrets again: rm -r {}",
            path.display()
        )));
    }
    let found = meta.mode() & 0o7777;
    if found & 0o077 != 0 {
        return Err(CliError::kennel(format!(
            "refusing to use {}: its mode is {found:04o}, open to others; it must be {mode:04o}",
            path.display()
        ))
        .with_hint(format!("chmod {mode:o} {}", path.display())));
    }
    Ok(())
}

/// Runs a [`Source::Command`]: `sh -c COMMAND`, no stdin, at most
/// `timeout`; its stdout less one trailing newline is the value.
fn run_command(name: &str, command: &str, timeout: Duration) -> Result<SecretValue, CliError> {
    use std::os::unix::process::CommandExt;
    let shown = escape_controls(command);
    let fix = format!(
        "run `{shown}` yourself to see what it does; `kennel secret set {name} --command …` \
         replaces it"
    );
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: a timeout ends what it started too.
        .process_group(0)
        .spawn()
        .map_err(|error| {
            CliError::kennel(format!(
                "secret {name}: cannot run its command `{shown}`: {error}"
            ))
        })?;
    let pid = child.id();
    let (sender, outputs) = mpsc::channel();
    if let Some(mut stdout) = child.stdout.take() {
        let sender = sender.clone();
        std::thread::spawn(move || {
            let mut out = Zeroizing::new(Vec::with_capacity(MAX_VALUE_LEN + 2));
            let _ = (&mut stdout)
                .take(MAX_VALUE_LEN as u64 + 2)
                .read_to_end(&mut out);
            // Whatever is left, so that the command is not stopped by a full pipe.
            let _ = std::io::copy(&mut stdout, &mut std::io::sink());
            let _ = sender.send((true, out));
        });
    }
    if let Some(mut stderr) = child.stderr.take() {
        std::thread::spawn(move || {
            let mut tail = Vec::new();
            let mut chunk = [0u8; 4096];
            while let Ok(read) = stderr.read(&mut chunk) {
                if read == 0 {
                    break;
                }
                tail.extend_from_slice(&chunk[..read]);
                if tail.len() > 8192 {
                    tail.drain(..tail.len() - 4096);
                }
            }
            let _ = sender.send((false, Zeroizing::new(tail)));
        });
    }
    let deadline = Instant::now() + timeout;
    let kill = |child: &mut std::process::Child| {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = child.wait();
    };
    let timed_out = || {
        CliError::kennel(format!(
            "secret {name}: its command `{shown}` did not finish in {} s",
            timeout.as_secs_f64()
        ))
        .with_hint(fix.clone())
    };
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                kill(&mut child);
                return Err(timed_out());
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(error) => {
                kill(&mut child);
                return Err(CliError::kennel(format!(
                    "secret {name}: cannot wait for its command `{shown}`: {error}"
                )));
            }
        }
    };
    // Both pipes, until whatever the command left running lets them go.
    let (mut stdout, mut stderr) = (None, None);
    while stdout.is_none() || stderr.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        match outputs.recv_timeout(left) {
            Ok((true, out)) => stdout = Some(out),
            Ok((false, err)) => stderr = Some(err),
            Err(_) => {
                kill(&mut child);
                return Err(timed_out());
            }
        }
    }
    let (stdout, stderr) = (stdout.unwrap_or_default(), stderr.unwrap_or_default());
    if !status.success() {
        let how = match status.code() {
            Some(code) => format!("exited with status {code}"),
            None => "was killed by a signal".into(),
        };
        let tail = stderr_tail(&stderr);
        return Err(CliError::kennel(format!(
            "secret {name}: its command `{shown}` {how}{}",
            if tail.is_empty() {
                String::new()
            } else {
                format!(": {tail}")
            }
        ))
        .with_hint(fix));
    }
    let mut bytes: &[u8] = &stdout;
    if let Some(rest) = bytes.strip_suffix(b"\n") {
        bytes = rest.strip_suffix(b"\r").unwrap_or(rest);
    }
    let unusable = |why: &str| {
        CliError::kennel(format!(
            "secret {name}: the output of its command `{shown}` cannot be a value: {why}"
        ))
        .with_hint(fix.clone())
    };
    let text = std::str::from_utf8(bytes).map_err(|_| unusable("it is not UTF-8 text"))?;
    validate_value(text).map_err(|why| unusable(&why))?;
    Ok(SecretValue::new(text.to_string()))
}

/// The last lines of a failed command's stderr, made safe to show: at
/// most three lines, 300 characters.
fn stderr_tail(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect();
    let tail = lines[lines.len().saturating_sub(3)..].join(" / ");
    let tail = escape_controls(&tail);
    let count = tail.chars().count();
    if count > 300 {
        format!("…{}", tail.chars().skip(count - 300).collect::<String>())
    } else {
        tail
    }
}

/// Runs `work` (a keyring call) on a thread of its own — the keyring's
/// D-Bus client runs its own async runtime, which cannot start inside
/// kennel's — and waits for it at most `limit`.
fn on_own_thread<T: Send + 'static>(
    limit: Duration,
    work: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (sender, receiver) = mpsc::channel();
    std::thread::Builder::new()
        .name("kennel-keyring".into())
        .spawn(move || {
            let _ = sender.send(work());
        })
        .ok()?;
    receiver.recv_timeout(limit).ok()
}

fn keyring_entry(name: &str) -> keyring::Result<keyring::Entry> {
    let credential =
        keyring::secret_service::SsCredential::new_with_target(None, KEYRING_SERVICE, name)?;
    Ok(keyring::Entry::new_with_credential(Box::new(credential)))
}

/// Whether a Secret Service answers on the session bus, within 2 s.
fn keyring_answers() -> bool {
    if std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_none_or(|address| address.is_empty()) {
        return false;
    }
    let answer = on_own_thread(PROBE_TIMEOUT, || {
        keyring_entry(PROBE_USER).and_then(|entry| entry.get_password().map(Zeroizing::new))
    });
    match answer {
        Some(Ok(_) | Err(keyring::Error::NoEntry | keyring::Error::Ambiguous(_))) => true,
        Some(Err(error)) => {
            tracing::debug!("the Secret Service keyring does not answer: {error}");
            false
        }
        None => {
            tracing::debug!("the Secret Service keyring did not answer in 2 s");
            false
        }
    }
}

/// A keyring failure, never with a value in it.
fn keyring_error(name: &str, what: &str, error: keyring::Error) -> CliError {
    let why = match error {
        keyring::Error::BadEncoding(mut bytes) => {
            zeroize::Zeroize::zeroize(&mut bytes);
            "the value it holds is not UTF-8 text".to_string()
        }
        keyring::Error::Ambiguous(found) => {
            format!("it holds {} items for this name", found.len())
        }
        other => other.to_string(),
    };
    CliError::kennel(format!(
        "secret {name}: cannot {what} the Secret Service keyring: {why}"
    ))
    .with_hint(format!(
        "is the keyring unlocked? {STORE_ENV}=file keeps secrets in a file instead"
    ))
}

fn keyring_timeout(name: &str, what: &str) -> CliError {
    CliError::kennel(format!(
        "secret {name}: the Secret Service keyring did not answer in {} s ({what})",
        KEYRING_TIMEOUT.as_secs()
    ))
    .with_hint(format!(
        "is it waiting for you to unlock it? {STORE_ENV}=file keeps secrets in a file instead"
    ))
}

fn keyring_set(name: &str, value: &str) -> Result<(), CliError> {
    let owned = name.to_string();
    let value = Zeroizing::new(value.to_string());
    on_own_thread(KEYRING_TIMEOUT, move || {
        keyring_entry(&owned).and_then(|entry| entry.set_password(&value))
    })
    .ok_or_else(|| keyring_timeout(name, "storing"))?
    .map_err(|error| keyring_error(name, "store it in", error))
}

fn keyring_get(name: &str) -> Result<Option<SecretValue>, CliError> {
    let owned = name.to_string();
    match on_own_thread(KEYRING_TIMEOUT, move || {
        keyring_entry(&owned).and_then(|entry| entry.get_password().map(SecretValue::new))
    })
    .ok_or_else(|| keyring_timeout(name, "reading"))?
    {
        Ok(value) => Ok(Some(value)),
        Err(keyring::Error::NoEntry) => Ok(None),
        Err(error) => Err(keyring_error(name, "read it from", error)),
    }
}

fn keyring_delete(name: &str) -> Result<(), CliError> {
    let owned = name.to_string();
    match on_own_thread(KEYRING_TIMEOUT, move || {
        keyring_entry(&owned).and_then(|entry| entry.delete_credential())
    })
    .ok_or_else(|| keyring_timeout(name, "removing"))?
    {
        Ok(()) | Err(keyring::Error::NoEntry) => Ok(()),
        Err(error) => Err(keyring_error(name, "remove it from", error)),
    }
}

/// The hosts secret `name` may be sent to: your `[secrets.NAME]` binding,
/// else the catalog's for that variable; none when it is bound nowhere (a
/// stored secret no binding names is never sent).
pub fn bound_hosts(context: &crate::context::Context, name: &str) -> Vec<String> {
    // A login kept by `kennel login`: its token endpoint and access hosts.
    if let Some(oauth) = context
        .catalog
        .agents()
        .find(|agent| crate::oauth_vault::secret_name(&agent.name) == name)
        .and_then(|agent| agent.oauth.as_ref())
    {
        return oauth
            .token_endpoint()
            .map(|(host, _)| host)
            .into_iter()
            .chain(oauth.hosts.iter().cloned())
            .collect();
    }
    context
        .config
        .file
        .secrets
        .get(name)
        .or_else(|| context.catalog.credential(name))
        .map(|binding| binding.hosts.clone())
        .unwrap_or_default()
}

/// The names in the user's secret store, for the Plan (which brokered
/// credentials have a value besides the host's environment). A store that
/// cannot be read is a warning: its secrets are then not brokered.
pub fn stored_names(data_dir: &Path) -> std::collections::BTreeSet<String> {
    match SecretStore::open(data_dir).and_then(|store| store.list()) {
        Ok(secrets) => secrets.into_iter().map(|secret| secret.name).collect(),
        Err(error) => {
            crate::report::warn(&format!(
                "cannot read your secrets ({}): none is passed to the agent",
                error.message
            ));
            Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ExitKind;

    fn store() -> (tempfile::TempDir, SecretStore) {
        let data = tempfile::tempdir().expect("tempdir");
        let store = SecretStore::open_file(data.path());
        (data, store)
    }

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).expect("exists").mode() & 0o7777
    }

    fn exposed(store: &SecretStore, name: &str) -> Option<String> {
        store
            .value(name)
            .expect("value")
            .map(|value| value.expose().to_string())
    }

    #[test]
    fn set_list_value_remove_round_trip() {
        let (data, store) = store();
        assert!(store.list().expect("empty list").is_empty());
        assert_eq!(exposed(&store, "ANTHROPIC_API_KEY"), None);
        store.set("ANTHROPIC_API_KEY", "sk-ant-1\tx").expect("set");
        store
            .set_command("GH_TOKEN", "printf 'gho_abc\\n'")
            .expect("set");
        store.set("ANTHROPIC_API_KEY", "sk-ant-2").expect("replace");

        let listed = store.list().expect("list");
        let names: Vec<&str> = listed.iter().map(|info| info.name.as_str()).collect();
        assert_eq!(names, ["ANTHROPIC_API_KEY", "GH_TOKEN"]);
        assert_eq!(listed[0].source, Source::Stored);
        assert_eq!(
            listed[1].source,
            Source::Command("printf 'gho_abc\\n'".into())
        );
        assert!(listed.iter().all(|info| info.store == StoreKind::File));
        assert!(listed[0].updated > 1_700_000_000);
        assert_eq!(
            exposed(&store, "ANTHROPIC_API_KEY").as_deref(),
            Some("sk-ant-2")
        );
        assert_eq!(exposed(&store, "GH_TOKEN").as_deref(), Some("gho_abc"));
        // Another store on the same directory sees the same secrets.
        let again = SecretStore::open_file(data.path());
        assert_eq!(again.list().expect("list"), listed);

        assert!(store.remove("ANTHROPIC_API_KEY").expect("rm"));
        assert!(!store.remove("ANTHROPIC_API_KEY").expect("rm again"));
        assert_eq!(exposed(&store, "ANTHROPIC_API_KEY"), None);
        assert!(store.remove("GH_TOKEN").expect("rm"));
        // No secret left, no file left (the store is free to change).
        assert!(!store.file().exists());
        assert!(store.list().expect("list").is_empty());
    }

    #[test]
    fn the_directory_is_0700_and_the_file_0600() {
        let (data, store) = store();
        store.set("TOKEN", "v1").expect("set");
        let dir = data.path().join("secrets");
        assert_eq!(store.file(), dir.join("secrets.toml"));
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&store.file()), 0o600);
        store.set("TOKEN", "v2").expect("set again");
        assert_eq!(mode(&store.file()), 0o600);
        // Nothing left behind by the atomic write.
        let entries: Vec<_> = fs::read_dir(&dir).expect("dir").flatten().collect();
        assert_eq!(entries.len(), 1, "{entries:?}");
        assert_eq!(store.check().expect("check"), 1);
        assert!(
            store
                .describe()
                .ends_with("secrets/secrets.toml (mode 0600)")
        );
    }

    #[test]
    fn a_symlinked_directory_is_refused() {
        let (data, store) = store();
        let elsewhere = data.path().join("elsewhere");
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&elsewhere)
            .expect("dir");
        std::os::unix::fs::symlink(&elsewhere, data.path().join("secrets")).expect("link");
        for error in [
            store.set("TOKEN", "value").expect_err("set refused"),
            store.list().expect_err("list refused"),
            store.check().expect_err("check refused"),
        ] {
            assert_eq!(error.kind, ExitKind::Kennel);
            assert!(error.message.contains("symbolic link"), "{}", error.message);
            assert!(error.hint.expect("hint").contains("rm "));
        }
        assert_eq!(fs::read_dir(&elsewhere).expect("dir").count(), 0);
    }

    #[test]
    fn a_symlinked_file_is_refused_and_not_followed() {
        let (data, store) = store();
        store.set("TOKEN", "value").expect("set");
        let target = data.path().join("other.toml");
        fs::rename(store.file(), &target).expect("move");
        std::os::unix::fs::symlink(&target, store.file()).expect("link");
        let error = store.list().expect_err("refused");
        assert!(error.message.contains("symbolic link"), "{}", error.message);
        let error = store.set("OTHER", "x").expect_err("refused");
        assert!(error.message.contains("symbolic link"), "{}", error.message);
        assert!(store.value("TOKEN").is_err());
        assert!(
            fs::symlink_metadata(store.file())
                .expect("link")
                .is_symlink()
        );
    }

    #[test]
    fn modes_open_to_others_are_refused_with_the_fix() {
        let (data, store) = store();
        store.set("TOKEN", "value").expect("set");
        fs::set_permissions(store.file(), fs::Permissions::from_mode(0o644)).expect("chmod");
        let error = store.list().expect_err("refused");
        assert!(error.message.contains("0644"), "{}", error.message);
        assert_eq!(
            error.hint.as_deref(),
            Some(format!("chmod 600 {}", store.file().display()).as_str())
        );
        fs::set_permissions(store.file(), fs::Permissions::from_mode(0o600)).expect("chmod");
        let dir = data.path().join("secrets");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod");
        let error = store.check().expect_err("refused");
        assert_eq!(
            error.hint.as_deref(),
            Some(format!("chmod 700 {}", dir.display()).as_str())
        );
    }

    #[test]
    fn a_file_of_another_user_is_refused() {
        if !nix::unistd::getuid().is_root() {
            return; // only root can give a file away
        }
        let (_data, store) = store();
        store.set("TOKEN", "value").expect("set");
        nix::unistd::chown(&store.file(), Some(nix::unistd::Uid::from_raw(12345)), None)
            .expect("chown");
        let error = store.list().expect_err("refused");
        assert!(error.message.contains("uid 12345"), "{}", error.message);
    }

    #[test]
    fn values_must_be_one_line_and_errors_never_echo_them() {
        for (value, says) in [
            ("", "empty"),
            ("sekrit\r", "carriage return (CR)"),
            ("sek\nrit", "line feed (LF)"),
            ("sek\0rit", "NUL byte"),
            ("sek\x1brit", "control character (0x1b)"),
        ] {
            let why = validate_value(value).expect_err(says);
            assert!(why.contains(says), "{why}");
            assert!(value.is_empty() || !why.contains("sek"), "{why}");
        }
        assert!(validate_value(&"x".repeat(MAX_VALUE_LEN + 1)).is_err());
        assert!(validate_value("sk-ant-api03_AbC-/+=\tü").is_ok());

        let (_data, store) = store();
        let error = store.set("TOKEN", "sekrit\nline").expect_err("refused");
        assert_eq!(error.kind, ExitKind::Usage);
        assert!(!format!("{error}").contains("sekrit"), "{error}");
        assert!(store.list().expect("list").is_empty());
    }

    #[test]
    fn names_are_checked() {
        for name in ["ANTHROPIC_API_KEY", "_x", "a1", &"N".repeat(MAX_NAME_LEN)] {
            assert_eq!(validate_name(name), Ok(()), "{name}");
        }
        for (name, says) in [
            ("", "empty"),
            ("1PASSWORD", "starts with a digit"),
            ("MY-KEY", "contains `-`"),
            ("A B", "contains ` `"),
            ("X\x1b", "contains `\\x1b`"),
        ] {
            let why = validate_name(name).expect_err(name);
            assert!(why.contains(says), "{name}: {why}");
        }
        assert!(validate_name(&"N".repeat(MAX_NAME_LEN + 1)).is_err());
        let (_data, store) = store();
        for error in [
            store.set("MY-KEY", "value").expect_err("set"),
            store
                .set_command("MY-KEY", "true")
                .expect_err("set_command"),
            store.remove("MY-KEY").expect_err("remove"),
        ] {
            assert_eq!(error.kind, ExitKind::Usage);
            assert!(
                error.message.contains("`MY-KEY` is not a secret name"),
                "{}",
                error.message
            );
        }
    }

    #[test]
    fn a_command_runs_each_time_and_one_newline_is_stripped() {
        let (data, store) = store();
        let counter = data.path().join("count");
        let command = format!(
            "echo run >> {0}; printf 'tok-%s\\r\\n' $(wc -l < {0})",
            counter.display()
        );
        store.set_command("TOKEN", &command).expect("set");
        assert!(!counter.exists(), "not run when set");
        assert_eq!(exposed(&store, "TOKEN").as_deref(), Some("tok-1"));
        assert_eq!(exposed(&store, "TOKEN").as_deref(), Some("tok-2"));

        store.set_command("TWO", "printf 'a\\n\\n'").expect("set");
        let error = store.value("TWO").expect_err("two newlines");
        assert!(error.message.contains("line feed"), "{}", error.message);
        assert!(store.set_command("TOKEN", "  ").is_err());
        assert!(store.set_command("TOKEN", "true\nfalse").is_err());
    }

    #[test]
    fn a_failing_command_names_the_secret_and_its_stderr_never_the_value() {
        let (_data, store) = store();
        store
            .set_command(
                "TOKEN",
                "printf 'would-be-%s' value; echo 'first' >&2; echo 'not logged in' >&2; exit 3",
            )
            .expect("set");
        let error = store.value("TOKEN").expect_err("fails");
        let shown = format!("{error}");
        assert!(!shown.contains("would-be-value"), "{shown}");
        assert!(
            shown.starts_with("error: secret TOKEN: its command"),
            "{shown}"
        );
        assert!(
            shown.contains("exited with status 3: first / not logged in"),
            "{shown}"
        );
        assert!(
            error
                .hint
                .expect("hint")
                .contains("kennel secret set TOKEN --command")
        );

        // Nothing the command printed on stdout shows, even unusable.
        let error =
            run_command("T", "printf 'sek%s' rit; exit 1", COMMAND_TIMEOUT).expect_err("fails");
        assert_eq!(
            error.message,
            "secret T: its command `printf 'sek%s' rit; exit 1` exited with status 1"
        );
        let error =
            run_command("T", "printf 'sek%s\\001' rit", COMMAND_TIMEOUT).expect_err("control");
        assert!(!error.message.contains("sekrit"), "{}", error.message);
        assert!(
            error.message.contains("control character (0x01)"),
            "{}",
            error.message
        );
    }

    #[test]
    fn a_command_that_does_not_finish_is_stopped() {
        let started = Instant::now();
        let error = run_command("T", "sleep 30", Duration::from_millis(200)).expect_err("slow");
        assert!(
            error.message.contains("did not finish in 0.2 s"),
            "{}",
            error.message
        );
        // A child left holding the output is stopped as well.
        let error = run_command("T", "(sleep 30) & printf x", Duration::from_millis(200))
            .expect_err("held");
        assert!(
            error.message.contains("did not finish"),
            "{}",
            error.message
        );
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn a_value_is_redacted_in_debug() {
        let value = SecretValue::new("sk-very-secret".into());
        assert_eq!(format!("{value:?}"), "<redacted>");
        assert_eq!(format!("{:?}", Some(&value)), "Some(<redacted>)");
        assert_eq!(value.expose(), "sk-very-secret");
    }

    #[test]
    fn info_serialises_without_values() {
        let info = |source| SecretInfo {
            name: "GH_TOKEN".into(),
            source,
            store: StoreKind::File,
            updated: 1_700_000_000,
        };
        assert_eq!(
            serde_json::to_value([
                info(Source::Stored),
                info(Source::Command("gh auth token".into()))
            ])
            .expect("json"),
            serde_json::json!([
                {"name": "GH_TOKEN", "source": "stored", "store": "file", "updated": 1_700_000_000},
                {"name": "GH_TOKEN", "source": {"command": "gh auth token"}, "store": "file",
                 "updated": 1_700_000_000},
            ])
        );
        assert_eq!(
            serde_json::to_value(StoreKind::Keyring).expect("json"),
            "keyring"
        );
    }

    #[test]
    fn a_command_replaces_a_stored_value_in_the_file() {
        let (_data, store) = store();
        store.set("TOKEN", "sekrit-value").expect("set");
        assert!(
            fs::read_to_string(store.file())
                .expect("file")
                .contains("sekrit-value")
        );
        store.set_command("TOKEN", "printf other").expect("set");
        assert!(
            !fs::read_to_string(store.file())
                .expect("file")
                .contains("sekrit-value")
        );
    }

    #[test]
    fn an_unreadable_file_is_reported_without_its_text() {
        let (data, store) = store();
        store.set("TOKEN", "value").expect("set");
        fs::write(
            store.file(),
            "[secrets.TOKEN]\nvalue = \"sekrit\"\nupdated = \"x\"\n",
        )
        .expect("write");
        let error = store.list().expect_err("bad file");
        assert!(!format!("{error}").contains("sekrit"), "{error}");
        assert!(
            error.message.starts_with(&format!(
                "{}:3 is not a secrets file",
                data.path().join("secrets/secrets.toml").display()
            )),
            "{}",
            error.message
        );
    }

    #[test]
    fn a_bad_name_in_the_file_is_refused() {
        let (_data, store) = store();
        store.set("TOKEN", "value").expect("set");
        fs::write(
            store.file(),
            "[secrets.\"A\\u001b[2J\"]\nvalue = \"v\"\nupdated = 1\n",
        )
        .expect("write");
        let error = store.list().expect_err("bad name");
        assert!(
            error
                .message
                .ends_with("`A\\x1b[2J` is not a secret name: it contains `\\x1b`"),
            "{}",
            error.message
        );
    }

    #[test]
    fn removing_from_no_store_creates_nothing() {
        let (data, store) = store();
        assert!(!store.remove("TOKEN").expect("rm"));
        assert!(!data.path().join("secrets").exists());
    }

    #[test]
    fn the_store_is_chosen() {
        let never = || -> bool { panic!("not asked") };
        assert_eq!(choose("file", false, never).expect("file"), StoreKind::File);
        assert_eq!(choose("", true, never).expect("file"), StoreKind::File);
        assert_eq!(
            choose("", false, || true).expect("keyring"),
            StoreKind::Keyring
        );
        assert_eq!(
            choose("auto", false, || false).expect("file"),
            StoreKind::File
        );
        assert_eq!(
            choose("keyring", true, || true).expect("keyring"),
            StoreKind::Keyring
        );
        assert_eq!(
            choose("keyring", false, || false).expect_err("none").kind,
            ExitKind::Kennel
        );
        let error = choose("vault", false, never).expect_err("unknown");
        assert_eq!(error.kind, ExitKind::Usage);
        assert!(error.message.contains("KENNEL_SECRET_STORE=`vault`"));
    }

    /// The keyring store against a real Secret Service: only with
    /// `KENNEL_TEST_KEYRING=1` (it writes to the user's keyring), e.g.
    /// under `dbus-run-session` with `gnome-keyring-daemon --unlock`.
    #[test]
    fn keyring_round_trip_when_asked() {
        if std::env::var_os("KENNEL_TEST_KEYRING").is_none() {
            return;
        }
        assert!(
            keyring_answers(),
            "KENNEL_TEST_KEYRING is set, but no keyring answers"
        );
        let data = tempfile::tempdir().expect("tempdir");
        let store = SecretStore {
            kind: StoreKind::Keyring,
            dir: data.path().join("secrets"),
        };
        let name = format!("KENNEL_TEST_{}", std::process::id());
        store.set(&name, "sk-in-the-keyring").expect("set");
        assert_eq!(exposed(&store, &name).as_deref(), Some("sk-in-the-keyring"));
        let index = fs::read_to_string(store.file()).expect("index");
        assert!(!index.contains("sk-in-the-keyring"), "{index}");
        assert_eq!(store.list().expect("list")[0].store, StoreKind::Keyring);
        // A command replaces the value, in the keyring too.
        store
            .set_command(&name, "printf from-command")
            .expect("command");
        assert_eq!(
            keyring_get(&name)
                .expect("get")
                .map(|v| v.expose().to_string()),
            None
        );
        assert_eq!(exposed(&store, &name).as_deref(), Some("from-command"));
        store.set(&name, "again").expect("set");
        assert!(store.remove(&name).expect("rm"));
        assert_eq!(
            keyring_get(&name)
                .expect("get")
                .map(|v| v.expose().to_string()),
            None
        );
        assert_eq!(exposed(&store, &name), None);
    }

    /// Without a session bus there is no keyring to ask (this machine's
    /// tests run without one), and the store is the file.
    #[test]
    fn without_a_session_bus_the_store_is_the_file() {
        if std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some()
            || std::env::var_os(STORE_ENV).is_some()
        {
            return;
        }
        let data = tempfile::tempdir().expect("tempdir");
        let store = SecretStore::open(data.path()).expect("open");
        assert_eq!(store.kind(), StoreKind::File);
        assert!(
            !data.path().join("secrets").exists(),
            "open creates nothing"
        );
    }
}
