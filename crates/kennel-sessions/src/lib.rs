//! kennel's session registry: every sandbox kennel starts, in an embedded
//! SQLite database (`<kennel data dir>/sessions.db`).
//!
//! Several kennel processes use the registry at once: the database is in WAL
//! mode, every connection waits up to [`BUSY_TIMEOUT`] for a lock instead of
//! failing, and every read-then-write runs in an `IMMEDIATE` transaction so
//! that two writers never deadlock on a lock upgrade.
//!
//! The schema is versioned with `PRAGMA user_version`: [`MIGRATIONS`] holds
//! one SQL step per version, and opening a registry applies the missing steps
//! in one transaction. A registry written by an older kennel therefore opens
//! in a newer one; a registry from a newer kennel is refused, not damaged.
//!
//! This crate never prints: every failure is a [`RegistryError`], with a
//! hint for the user where there is one.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::{Deserialize, Serialize};

/// How long a connection waits for another kennel process's lock.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How long an ended session stays in `kennel ls` without `--all`.
pub const RECENT: Duration = Duration::from_secs(24 * 60 * 60);

/// The schema, one step per version: step `i` takes the database from
/// version `i` to version `i + 1`. Only ever append to this list.
pub const MIGRATIONS: &[&str] = &[
    // 1: the sessions table.
    "CREATE TABLE sessions (
        id          TEXT PRIMARY KEY NOT NULL,
        name        TEXT NOT NULL UNIQUE,
        agent       TEXT NOT NULL,
        workspace   TEXT NOT NULL,
        slot        INTEGER NOT NULL DEFAULT 0,
        backend     TEXT NOT NULL,
        handle      TEXT,
        mode        TEXT NOT NULL CHECK (mode IN ('ephemeral', 'persistent')),
        state       TEXT NOT NULL
                    CHECK (state IN ('created', 'running', 'exited', 'failed', 'stopped')),
        started_at  INTEGER NOT NULL,
        ended_at    INTEGER,
        exit_code   INTEGER,
        plan        TEXT
    );",
    // 2: resource limits, and an index for `kennel ls`.
    "ALTER TABLE sessions ADD COLUMN pids INTEGER;
     ALTER TABLE sessions ADD COLUMN memory INTEGER;
     ALTER TABLE sessions ADD COLUMN cpus REAL;
     CREATE INDEX sessions_state_ended ON sessions (state, ended_at);
     CREATE INDEX sessions_agent_workspace ON sessions (agent, workspace, started_at);",
    // 3: the kennel process that owns a session (its pid and start time),
    // to tell a live `kennel run` from one that was killed.
    "ALTER TABLE sessions ADD COLUMN owner_pid INTEGER;
     ALTER TABLE sessions ADD COLUMN owner_start INTEGER;",
    // 4: the session's own git checkout (worktree or clone mode), as JSON;
    // NULL in direct mode, and once the checkout is discarded.
    "ALTER TABLE sessions ADD COLUMN checkout TEXT;",
    // 5: whether the session's sandbox ends with its owning kennel (the
    // backend says so when the session is made; before this column only
    // the native backend's did).
    "ALTER TABLE sessions ADD COLUMN ends_with_owner INTEGER NOT NULL DEFAULT 0;
     UPDATE sessions SET ends_with_owner = 1 WHERE backend = 'native';",
];

/// The schema version this kennel writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot create the directory of the session registry {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open the session registry {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "the session registry {path} has schema version {found}; this kennel knows versions up to {known}"
    )]
    TooNew {
        path: PathBuf,
        found: u32,
        known: u32,
    },
    #[error("cannot migrate the session registry {path} to schema version {version}: {source}")]
    Migrate {
        path: PathBuf,
        version: u32,
        source: rusqlite::Error,
    },
    #[error("session registry: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("no session matches `{0}`")]
    NotFound(String),
    #[error("`{query}` matches several sessions: {}", candidates.join(", "))]
    Ambiguous {
        query: String,
        candidates: Vec<String>,
    },
    #[error("a session named `{0}` already exists")]
    NameTaken(String),
    #[error("slot {slot} of {agent} is in use by session {name}")]
    SlotBusy {
        agent: String,
        slot: i64,
        name: String,
    },
    #[error("`{0}` is not a state a session ends in")]
    NotEnded(State),
    #[error("the session registry holds a {what} kennel does not know: `{value}`")]
    Unknown { what: &'static str, value: String },
}

impl RegistryError {
    /// What the user can do about it.
    pub fn hint(&self) -> Option<String> {
        match self {
            RegistryError::CreateDir { .. } | RegistryError::Open { .. } => Some(
                "check that kennel's data directory is writable (XDG_DATA_HOME, default ~/.local/share/kennel)"
                    .into(),
            ),
            RegistryError::TooNew { .. } => {
                Some("upgrade kennel: a newer kennel has used this registry".into())
            }
            RegistryError::Migrate { path, .. } => Some(format!(
                "the registry was left unchanged; move {} aside to start a fresh one",
                path.display()
            )),
            RegistryError::NotFound(_) => {
                Some("`kennel ls --all` lists sessions with their ids and names".into())
            }
            RegistryError::Ambiguous { .. } => {
                Some("give more characters of the id, or the session's name".into())
            }
            RegistryError::NameTaken(_) => Some("choose another name".into()),
            RegistryError::SlotBusy { name, .. } => Some(format!(
                "session {name} is still running with that agent home: `kennel attach {name}`, or `kennel stop {name}` first"
            )),
            RegistryError::Sql(rusqlite::Error::SqliteFailure(error, _))
                if error.code == rusqlite::ErrorCode::DatabaseBusy =>
            {
                Some("another kennel process held the registry for too long; try again".into())
            }
            _ => None,
        }
    }

    /// The user named a session that is not there, or not uniquely.
    pub fn is_lookup(&self) -> bool {
        matches!(
            self,
            RegistryError::NotFound(_)
                | RegistryError::Ambiguous { .. }
                | RegistryError::SlotBusy { .. }
        )
    }
}

pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

/// Ephemeral sessions are removed when they end (`kennel run`); persistent
/// ones outlive the command that started them (`kennel start`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Ephemeral,
    Persistent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Registered; the sandbox is not started yet.
    Created,
    Running,
    /// The agent ended; `exit_code` says how.
    Exited,
    /// kennel failed to start or to run the sandbox.
    Failed,
    /// Stopped by the user or found gone.
    Stopped,
}

macro_rules! text_enum {
    ($type:ident, $what:literal, $($variant:ident => $text:literal),* $(,)?) => {
        impl $type {
            pub fn as_str(self) -> &'static str {
                match self { $($type::$variant => $text),* }
            }
        }
        impl fmt::Display for $type {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl FromStr for $type {
            type Err = RegistryError;
            fn from_str(text: &str) -> Result<$type> {
                match text {
                    $($text => Ok($type::$variant),)*
                    _ => Err(RegistryError::Unknown { what: $what, value: text.into() }),
                }
            }
        }
    };
}

text_enum!(Mode, "mode", Ephemeral => "ephemeral", Persistent => "persistent");
text_enum!(State, "state", Created => "created", Running => "running", Exited => "exited",
    Failed => "failed", Stopped => "stopped");

impl State {
    /// The session is over.
    pub fn is_ended(self) -> bool {
        matches!(self, State::Exited | State::Failed | State::Stopped)
    }
}

/// Resource limits a session ran with (`None`: no limit).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    pub pids: Option<i64>,
    /// Bytes.
    pub memory: Option<i64>,
    pub cpus: Option<f64>,
}

/// Which slot a new session takes. A slot is a separate agent home: no two
/// live sessions of one agent ever share one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotRequest {
    /// The lowest slot no live session of the agent holds.
    Free,
    /// This slot (`--resume`); refused while a live session holds it.
    Exact(i64),
}

/// What the caller knows of a session before it starts.
#[derive(Debug, Clone)]
pub struct NewSession {
    /// A unique name; `None` gives `<agent>-<n>`.
    pub name: Option<String>,
    pub agent: String,
    pub workspace: PathBuf,
    pub slot: SlotRequest,
    /// Slots count per agent and workspace (each repository has its own
    /// agent homes) rather than per agent across every workspace (one home
    /// shared by all repositories).
    pub slots_per_workspace: bool,
    /// The kennel process the session lives and dies with (`kennel run`),
    /// or that starts it (`kennel start`, until it is running).
    pub owner: Option<Owner>,
    /// The backend's name (`docker`, `podman`, `native`).
    pub backend: String,
    /// The sandbox ends when its owner does (the backend says; see
    /// [`Registry::reap`]).
    pub ends_with_owner: bool,
    pub mode: Mode,
    pub limits: Limits,
    /// The Plan, as JSON (redacted: the registry is not a secret store).
    pub plan: Option<String>,
}

/// One row of the registry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Session {
    /// 12 hexadecimal digits.
    pub id: String,
    pub name: String,
    pub agent: String,
    pub workspace: PathBuf,
    pub slot: i64,
    pub backend: String,
    /// The container's id or name, or the native sandbox's name.
    pub handle: Option<String>,
    pub mode: Mode,
    pub state: State,
    /// Unix time in milliseconds.
    pub started_at: i64,
    pub ended_at: Option<i64>,
    pub exit_code: Option<i32>,
    pub limits: Limits,
    /// The kennel process that owns the session (see [`NewSession::owner`]).
    #[serde(skip)]
    pub owner: Option<Owner>,
    /// An ephemeral session whose kennel is gone while its sandbox still
    /// runs (kennel was killed). Not stored: set by whoever asked the backend.
    pub orphaned: bool,
    /// The session's git checkout (worktree or clone mode) as JSON; `None`
    /// in direct mode and once discarded.
    #[serde(skip)]
    pub checkout: Option<String>,
    /// The Plan as JSON; not loaded by [`Registry::list`].
    #[serde(skip)]
    pub plan: Option<String>,
}

/// A process, by pid and start time (so that a reused pid is not mistaken
/// for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub pid: i64,
    /// Clock ticks after boot (`/proc/<pid>/stat`, field 22).
    pub start: i64,
}

impl Owner {
    /// This process.
    pub fn current() -> Option<Owner> {
        Owner::of(i64::from(std::process::id()))
    }

    /// Process `pid`, if it runs.
    pub fn of(pid: i64) -> Option<Owner> {
        Some(Owner {
            pid,
            start: process_start(pid)?,
        })
    }

    /// The process still runs (and is the same process).
    pub fn is_alive(&self) -> bool {
        process_start(self.pid) == Some(self.start)
    }
}

/// The owner recorded in a row's `owner_pid` and `owner_start`.
fn owner_from(pid: Option<i64>, start: Option<i64>) -> Option<Owner> {
    Some(Owner {
        pid: pid?,
        start: start?,
    })
}

/// The start time of process `pid`, when it runs (a zombie has ended: its
/// parent just has not collected it yet).
fn process_start(pid: i64) -> Option<i64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count
    // fields from the last `)`.
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    if matches!(fields.next(), Some("Z" | "X" | "x")) {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

/// A connection to the registry. Open one per thread or process; they may
/// all use the same file at once.
pub struct Registry {
    connection: Connection,
    path: PathBuf,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("path", &self.path)
            .finish()
    }
}

/// Pages the write-ahead log may hold before a commit checkpoints it
/// (about ten `kennel run`s; see [`Registry::open`]).
const WAL_PAGES: u32 = 100;

const COLUMNS: &str = "id, name, agent, workspace, slot, backend, handle, mode, state, \
                       started_at, ended_at, exit_code, pids, memory, cpus, owner_pid, owner_start, \
                       checkout";

impl Registry {
    /// Opens (creating if need be) the registry at `path` and brings its
    /// schema up to [`SCHEMA_VERSION`].
    pub fn open(path: &Path) -> Result<Registry> {
        if let Some(parent) = path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
        {
            std::fs::create_dir_all(parent).map_err(|source| RegistryError::CreateDir {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        create_private(path);
        let open_error = |source| RegistryError::Open {
            path: path.to_path_buf(),
            source,
        };
        let connection = Connection::open(path).map_err(open_error)?;
        connection.busy_timeout(BUSY_TIMEOUT).map_err(open_error)?;
        // Changing the journal mode takes an exclusive lock; when many
        // processes open a new registry at once it can report busy without
        // waiting, so retry within the busy timeout.
        let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
        loop {
            match connection
                .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0))
            {
                Ok(_) => break,
                Err(error) if is_busy(&error) && std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(error) => return Err(open_error(error)),
            }
        }
        // Durable against a process crash without an fsync per commit (a
        // power loss can lose the last commits, never corrupt the file).
        connection
            .pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_error)?;
        // The last connection to close would checkpoint the log into the
        // database and delete it (two fsyncs), and the next process's first
        // commit would make a new log (two more: its header and the
        // directory): every kennel command paid them. The log stays
        // instead, and the commit that grows it past WAL_PAGES checkpoints
        // it. Kept small, because the first connection of every process
        // reads the whole log (measured on `kennel run`, registry stages
        // per run: 1.7 ms checkpointing at close, 2.0 ms with SQLite's
        // default of 1000 pages, 1.3 ms with 100).
        connection
            .set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)
            .map_err(open_error)?;
        connection
            .pragma_update(None, "wal_autocheckpoint", WAL_PAGES)
            .map_err(open_error)?;
        connection
            .pragma_update(None, "foreign_keys", "ON")
            .map_err(open_error)?;
        let mut registry = Registry {
            connection,
            path: path.to_path_buf(),
        };
        registry.migrate()?;
        Ok(registry)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema version of the database.
    pub fn schema_version(&self) -> Result<u32> {
        Ok(self
            .connection
            .pragma_query_value(None, "user_version", |row| row.get(0))?)
    }

    fn migrate(&mut self) -> Result<()> {
        // Cheap check first: most opens find the schema current.
        let found = self.schema_version()?;
        if found == SCHEMA_VERSION {
            return Ok(());
        }
        let path = self.path.clone();
        let transaction = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Read again under the write lock: another process may have migrated.
        let found: u32 = transaction.pragma_query_value(None, "user_version", |row| row.get(0))?;
        if found > SCHEMA_VERSION {
            return Err(RegistryError::TooNew {
                path,
                found,
                known: SCHEMA_VERSION,
            });
        }
        for (index, step) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            let version = index as u32 + 1;
            transaction
                .execute_batch(step)
                .and_then(|()| transaction.pragma_update(None, "user_version", version))
                .map_err(|source| RegistryError::Migrate {
                    path: path.clone(),
                    version,
                    source,
                })?;
        }
        transaction.commit()?;
        Ok(())
    }

    /// Registers a session in state `created`, with a fresh id (and a fresh
    /// `<agent>-<n>` name unless one is given).
    pub fn insert(&mut self, new: &NewSession) -> Result<Session> {
        self.insert_with_plan(new, |_| new.plan.clone())
    }

    /// [`Registry::insert`], with the Plan `plan` makes from the session
    /// (its id and slot) recorded in the same transaction: one commit where
    /// an insert and an update were two.
    pub fn insert_with_plan(
        &mut self,
        new: &NewSession,
        plan: impl FnOnce(&Session) -> Option<String>,
    ) -> Result<Session> {
        let transaction = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let name = match &new.name {
            Some(name) => {
                let taken: bool = transaction.query_row(
                    "SELECT EXISTS (SELECT 1 FROM sessions WHERE name = ?1)",
                    [name],
                    |row| row.get(0),
                )?;
                if taken {
                    return Err(RegistryError::NameTaken(name.clone()));
                }
                name.clone()
            }
            None => next_name(&transaction, &new.agent)?,
        };
        let workspace = new.workspace.to_string_lossy();
        let slot = take_slot(
            &transaction,
            &new.agent,
            new.slots_per_workspace.then_some(workspace.as_ref()),
            new.slot,
        )?;
        let mut id = new_id();
        while transaction
            .query_row("SELECT 1 FROM sessions WHERE id = ?1", [&id], |_| Ok(()))
            .optional()?
            .is_some()
        {
            id = new_id();
        }
        let session = Session {
            id,
            name,
            agent: new.agent.clone(),
            workspace: new.workspace.clone(),
            slot,
            backend: new.backend.clone(),
            handle: None,
            mode: new.mode,
            state: State::Created,
            started_at: now_ms(),
            ended_at: None,
            exit_code: None,
            limits: new.limits,
            owner: new.owner,
            orphaned: false,
            checkout: None,
            plan: None,
        };
        let session = Session {
            plan: plan(&session),
            ..session
        };
        transaction.execute(
            "INSERT INTO sessions (id, name, agent, workspace, slot, backend, handle, mode, state,
                                   started_at, ended_at, exit_code, pids, memory, cpus, plan,
                                   owner_pid, owner_start, ends_with_owner)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, NULL, ?7, ?8, ?9, NULL, NULL, ?10, ?11, ?12, ?13,
                     ?14, ?15, ?16)",
            params![
                session.id,
                session.name,
                session.agent,
                session.workspace.to_string_lossy(),
                session.slot,
                session.backend,
                session.mode.as_str(),
                session.state.as_str(),
                session.started_at,
                session.limits.pids,
                session.limits.memory,
                session.limits.cpus,
                session.plan,
                session.owner.map(|owner| owner.pid),
                session.owner.map(|owner| owner.start),
                new.ends_with_owner,
            ],
        )?;
        transaction.commit()?;
        Ok(session)
    }

    /// The sandbox started: `handle` is the container's id or name, or the
    /// native sandbox's name.
    pub fn mark_running(&mut self, id: &str, handle: &str) -> Result<()> {
        let changed = self.connection.execute(
            "UPDATE sessions SET state = 'running', handle = ?2 WHERE id = ?1",
            params![id, handle],
        )?;
        found(changed, id)
    }

    /// The session ended in `state` (`exited`, `failed` or `stopped`).
    pub fn mark_ended(&mut self, id: &str, state: State, exit_code: Option<i32>) -> Result<()> {
        if !state.is_ended() {
            return Err(RegistryError::NotEnded(state));
        }
        let changed = self.connection.execute(
            "UPDATE sessions SET state = ?2, exit_code = ?3, ended_at = ?4 WHERE id = ?1",
            params![id, state.as_str(), exit_code, now_ms()],
        )?;
        found(changed, id)
    }

    /// Records the process the session now lives and dies with.
    pub fn set_owner(&mut self, id: &str, owner: Owner) -> Result<()> {
        let changed = self.connection.execute(
            "UPDATE sessions SET owner_pid = ?2, owner_start = ?3 WHERE id = ?1",
            params![id, owner.pid, owner.start],
        )?;
        found(changed, id)
    }

    /// Records (or, with `None`, forgets) the session's git checkout (JSON).
    pub fn set_checkout(&mut self, id: &str, checkout: Option<&str>) -> Result<()> {
        let changed = self.connection.execute(
            "UPDATE sessions SET checkout = ?2 WHERE id = ?1",
            params![id, checkout],
        )?;
        found(changed, id)
    }

    /// Moves the checkout of session `from` to session `to` (which
    /// continues it) and returns it; `None` when `from` has none (any more:
    /// another session may have taken it over). One transaction, so two
    /// sessions never both get the checkout.
    pub fn move_checkout(&mut self, from: &str, to: &str) -> Result<Option<String>> {
        let transaction = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let checkout: Option<String> = transaction
            .query_row(
                "SELECT checkout FROM sessions WHERE id = ?1",
                params![from],
                |row| row.get(0),
            )
            .optional()?
            .ok_or_else(|| RegistryError::NotFound(from.to_string()))?;
        if checkout.is_some() {
            found(
                transaction.execute(
                    "UPDATE sessions SET checkout = ?2 WHERE id = ?1",
                    params![to, checkout],
                )?,
                to,
            )?;
            transaction.execute(
                "UPDATE sessions SET checkout = NULL WHERE id = ?1",
                params![from],
            )?;
        }
        transaction.commit()?;
        Ok(checkout)
    }

    /// Replaces the session's Plan (JSON).
    pub fn set_plan(&mut self, id: &str, plan: &str) -> Result<()> {
        let changed = self.connection.execute(
            "UPDATE sessions SET plan = ?2 WHERE id = ?1",
            params![id, plan],
        )?;
        found(changed, id)
    }

    /// Records sessions that can no longer be what the registry says: ones
    /// still `created` whose kennel is gone (it died while starting them:
    /// `failed`), and running sessions whose sandbox ends with their kennel
    /// ([`NewSession::ends_with_owner`]) when it is gone (the sandbox died
    /// with it, and a kennel that saw the agent end records it: `stopped`).
    /// Returns how many changed.
    pub fn reap(&mut self) -> Result<usize> {
        let transaction = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let reaped = reap_in(&transaction, None)?;
        transaction.commit()?;
        Ok(reaped)
    }

    /// The slot [`Registry::insert`] would give a session of `agent` now
    /// (in `workspace` when slots count per workspace), without taking it:
    /// what `--dry-run` shows. Nothing is written.
    pub fn peek_slot(
        &mut self,
        agent: &str,
        workspace: Option<&Path>,
        request: SlotRequest,
    ) -> Result<i64> {
        // Reaping writes; the transaction is rolled back when dropped.
        let transaction = self.connection.transaction()?;
        let workspace = workspace.map(|path| path.to_string_lossy().into_owned());
        take_slot(&transaction, agent, workspace.as_deref(), request)
    }

    /// The name [`Registry::insert`] would give a session of `agent` that
    /// brings none (`<agent>-<n>`), without taking it: what `--dry-run`
    /// shows. Nothing is written.
    pub fn peek_name(&self, agent: &str) -> Result<String> {
        next_name(&self.connection, agent)
    }

    /// The newest session of `agent` in `workspace` that got as far as
    /// running (the one `--resume` continues).
    pub fn latest(&self, agent: &str, workspace: &Path) -> Result<Option<Session>> {
        let mut statement = self.connection.prepare_cached(&format!(
            "SELECT {COLUMNS}, plan FROM sessions
             WHERE agent = ?1 AND workspace = ?2 AND state NOT IN ('created', 'failed')
             ORDER BY started_at DESC, id LIMIT 1"
        ))?;
        statement
            .query_row(params![agent, workspace.to_string_lossy()], read_row)
            .optional()?
            .transpose()
    }

    /// Newest first. Without `all`: the sessions not ended, and those that
    /// ended within [`RECENT`].
    pub fn list(&self, all: bool) -> Result<Vec<Session>> {
        let cutoff = if all {
            i64::MIN
        } else {
            now_ms() - RECENT.as_millis() as i64
        };
        let mut statement = self.connection.prepare_cached(&format!(
            "SELECT {COLUMNS}, NULL FROM sessions
             WHERE state IN ('created', 'running') OR ended_at IS NULL OR ended_at >= ?1
             ORDER BY started_at DESC, id"
        ))?;
        let rows = statement.query_map([cutoff], read_row)?;
        rows.map(|row| row?).collect()
    }

    /// A session by exact id, exact name, or unique id prefix (ids are
    /// hex: the prefix's range, which the id's index finds, holds every
    /// id that starts with it; without the range SQLite read every row).
    pub fn get(&self, query: &str) -> Result<Session> {
        if query.is_empty() {
            return Err(RegistryError::NotFound(query.into()));
        }
        let mut statement = self.connection.prepare_cached(&lookup_sql())?;
        let matches = statement
            .query_map([query], read_row)?
            .map(|row| row?)
            .collect::<Result<Vec<Session>>>()?;
        // An exact id wins over a name, a name over a prefix.
        if let Some(session) = matches.iter().find(|session| session.id == query) {
            return Ok(session.clone());
        }
        if let Some(session) = matches.iter().find(|session| session.name == query) {
            return Ok(session.clone());
        }
        match matches.len() {
            0 => Err(RegistryError::NotFound(query.into())),
            1 => Ok(matches.into_iter().next().expect("one match")),
            _ => Err(RegistryError::Ambiguous {
                query: query.into(),
                candidates: matches
                    .iter()
                    .map(|session| format!("{} ({})", session.id, session.name))
                    .collect(),
            }),
        }
    }

    /// Forgets a session (by exact id).
    pub fn remove(&mut self, id: &str) -> Result<()> {
        let changed = self
            .connection
            .execute("DELETE FROM sessions WHERE id = ?1", [id])?;
        found(changed, id)
    }

    /// `PRAGMA integrity_check`: `"ok"` when the database is sound.
    pub fn integrity_check(&self) -> Result<String> {
        Ok(self
            .connection
            .query_row("PRAGMA integrity_check", [], |row| row.get(0))?)
    }
}

fn found(changed: usize, id: &str) -> Result<()> {
    if changed == 0 {
        Err(RegistryError::NotFound(id.into()))
    } else {
        Ok(())
    }
}

fn is_busy(error: &rusqlite::Error) -> bool {
    matches!(error, rusqlite::Error::SqliteFailure(error, _)
        if matches!(error.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked))
}

/// Marks stale sessions (see [`Registry::reap`]) of `agent` (or of every
/// agent) as ended.
fn reap_in(connection: &Connection, agent: Option<&str>) -> Result<usize> {
    let mut statement = connection.prepare_cached(
        "SELECT id, state, ends_with_owner, owner_pid, owner_start FROM sessions
         WHERE state IN ('created', 'running') AND (?1 IS NULL OR agent = ?1)",
    )?;
    let stale: Vec<(String, State)> = statement
        .query_map([agent], |row| {
            let owner = owner_from(row.get(3)?, row.get(4)?);
            let state: String = row.get(1)?;
            let ends_with_owner: bool = row.get(2)?;
            let gone = owner.is_some_and(|owner| !owner.is_alive());
            let verdict = match state.as_str() {
                "created" if gone => Some(State::Failed),
                "running" if gone && ends_with_owner => Some(State::Stopped),
                _ => None,
            };
            let id: String = row.get(0)?;
            Ok(verdict.map(|verdict| (id, verdict)))
        })?
        .filter_map(|row| row.transpose())
        .collect::<rusqlite::Result<_>>()?;
    for (id, state) in &stale {
        connection.execute(
            "UPDATE sessions SET state = ?2, ended_at = ?3 WHERE id = ?1",
            params![id, state.as_str(), now_ms()],
        )?;
    }
    Ok(stale.len())
}

/// [`Registry::get`]'s query: exact id or name, then id prefix.
fn lookup_sql() -> String {
    format!(
        "SELECT {COLUMNS}, plan FROM sessions WHERE id = ?1 OR name = ?1
         UNION ALL
         SELECT {COLUMNS}, plan FROM sessions
         WHERE id BETWEEN ?1 AND ?1 || '~' AND substr(id, 1, length(?1)) = ?1
               AND id != ?1 AND name != ?1"
    )
}

/// The slots and names of `agent`'s live sessions (in workspace ?2 unless
/// it is NULL). Found through the state index: the registry keeps every
/// session that ever ran, and through the agent's index SQLite read each
/// of the agent's rows, with its Plan (`+agent` keeps it off that index;
/// with a thousand ended sessions every `kennel run` paid 4–8 ms for it).
const LIVE_SLOTS: &str = "SELECT slot, name FROM sessions
     WHERE +agent = ?1 AND state IN ('created', 'running') AND (?2 IS NULL OR workspace = ?2)";

/// The slot a new session of `agent` takes, after reaping stale sessions:
/// among the live sessions of `agent` in `workspace` (its agent homes are
/// that repository's), or of `agent` anywhere when `workspace` is `None`.
fn take_slot(
    connection: &Connection,
    agent: &str,
    workspace: Option<&str>,
    request: SlotRequest,
) -> Result<i64> {
    reap_in(connection, Some(agent))?;
    let mut statement = connection.prepare_cached(LIVE_SLOTS)?;
    let held: Vec<(i64, String)> = statement
        .query_map(params![agent, workspace], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    match request {
        SlotRequest::Exact(slot) => match held.iter().find(|(used, _)| *used == slot) {
            Some((_, name)) => Err(RegistryError::SlotBusy {
                agent: agent.into(),
                slot,
                name: name.clone(),
            }),
            None => Ok(slot),
        },
        SlotRequest::Free => Ok((0..)
            .find(|slot| !held.iter().any(|(used, _)| used == slot))
            .unwrap_or(0)),
    }
}

/// `<agent>-<n>`, one more than the highest `n` in use.
fn next_name(connection: &Connection, agent: &str) -> Result<String> {
    let prefix = format!("{agent}-");
    let mut statement = connection
        .prepare_cached("SELECT name FROM sessions WHERE substr(name, 1, length(?1)) = ?1")?;
    let highest = statement
        .query_map([&prefix], |row| row.get::<_, String>(0))?
        .filter_map(|name| name.ok()?.strip_prefix(&prefix)?.parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    Ok(format!("{prefix}{}", highest + 1))
}

/// The row as a [`Session`]; the outer error is SQLite's, the inner one a
/// value this kennel does not know.
fn read_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Result<Session>> {
    let mode = match row.get::<_, String>(7)?.parse::<Mode>() {
        Ok(mode) => mode,
        Err(error) => return Ok(Err(error)),
    };
    let state = match row.get::<_, String>(8)?.parse::<State>() {
        Ok(state) => state,
        Err(error) => return Ok(Err(error)),
    };
    Ok(Ok(Session {
        id: row.get(0)?,
        name: row.get(1)?,
        agent: row.get(2)?,
        workspace: PathBuf::from(row.get::<_, String>(3)?),
        slot: row.get(4)?,
        backend: row.get(5)?,
        handle: row.get(6)?,
        mode,
        state,
        started_at: row.get(9)?,
        ended_at: row.get(10)?,
        exit_code: row.get(11)?,
        limits: Limits {
            pids: row.get(12)?,
            memory: row.get(13)?,
            cpus: row.get(14)?,
        },
        owner: owner_from(row.get(15)?, row.get(16)?),
        orphaned: false,
        checkout: row.get(17)?,
        plan: row.get(18)?,
    }))
}

/// Creates the database file readable by its owner only (the Plans in it
/// name the user's paths and settings). Best effort: SQLite creates the
/// file itself if this fails, and gives its `-wal` and `-shm` files the
/// same permissions.
fn create_private(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        let _ = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path);
    }
    #[cfg(not(unix))]
    let _ = path;
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as i64)
        .unwrap_or(0)
}

/// 12 random hexadecimal digits.
fn new_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::io::Read;
    let mut bytes = [0u8; 6];
    let random = std::fs::File::open("/dev/urandom")
        .and_then(|mut file| file.read_exact(&mut bytes))
        .is_ok();
    if !random {
        // std's hasher keys are random per process; mix in time and pid.
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_i64(now_ms());
        hasher.write_u32(std::process::id());
        hasher.write_u64(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|elapsed| elapsed.subsec_nanos() as u64)
                .unwrap_or(0),
        );
        bytes.copy_from_slice(&hasher.finish().to_le_bytes()[..6]);
    }
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests;
