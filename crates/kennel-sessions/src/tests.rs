use super::*;

fn new_session(agent: &str) -> NewSession {
    NewSession {
        name: None,
        agent: agent.into(),
        workspace: "/home/alice/repo".into(),
        slot: SlotRequest::Free,
        slots_per_workspace: true,
        owner: None,
        backend: "native".into(),
        ends_with_owner: true,
        mode: Mode::Ephemeral,
        limits: Limits {
            pids: Some(4096),
            memory: Some(1 << 30),
            cpus: Some(1.5),
        },
        plan: Some(r#"{"version":1}"#.into()),
    }
}

fn registry() -> (tempfile::TempDir, Registry) {
    let dir = tempfile::tempdir().expect("tempdir");
    let registry = Registry::open(&dir.path().join("data/sessions.db")).expect("open");
    (dir, registry)
}

#[test]
fn crud() {
    let (_dir, mut registry) = registry();
    assert_eq!(registry.schema_version().expect("version"), SCHEMA_VERSION);
    let session = registry.insert(&new_session("shell")).expect("insert");
    assert_eq!(session.id.len(), 12);
    assert!(session.id.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(session.name, "shell-1");
    assert_eq!(session.state, State::Created);

    registry
        .mark_running(&session.id, "kennel-shell-abc")
        .expect("running");
    let running = registry.get(&session.id).expect("get");
    assert_eq!(running.state, State::Running);
    assert_eq!(running.handle.as_deref(), Some("kennel-shell-abc"));
    assert_eq!(running.plan.as_deref(), Some(r#"{"version":1}"#));
    assert_eq!(running.limits, new_session("shell").limits);

    registry
        .mark_ended(&session.id, State::Exited, Some(3))
        .expect("ended");
    let ended = registry.get("shell-1").expect("by name");
    assert_eq!(ended.state, State::Exited);
    assert_eq!(ended.exit_code, Some(3));
    assert!(ended.ended_at.expect("ended_at") >= ended.started_at);
    assert!(matches!(
        registry.mark_ended(&session.id, State::Running, None),
        Err(RegistryError::NotEnded(State::Running))
    ));

    let second = registry.insert(&new_session("shell")).expect("insert");
    assert_eq!(second.name, "shell-2");
    let other = registry.insert(&new_session("claude")).expect("insert");
    assert_eq!(other.name, "claude-1");
    let listed = registry.list(true).expect("list");
    assert_eq!(listed.len(), 3);
    assert_eq!(listed.iter().filter(|s| s.plan.is_some()).count(), 0);

    registry.remove(&second.id).expect("remove");
    assert!(matches!(
        registry.get(&second.id),
        Err(RegistryError::NotFound(_))
    ));
    assert!(matches!(
        registry.remove(&second.id),
        Err(RegistryError::NotFound(_))
    ));
    assert!(matches!(
        registry.mark_running("000000000000", "x"),
        Err(RegistryError::NotFound(_))
    ));
    assert_eq!(registry.list(true).expect("list").len(), 2);
}

#[test]
fn given_names_are_unique() {
    let (_dir, mut registry) = registry();
    let mut named = new_session("shell");
    named.name = Some("kennel-shell-x".into());
    registry.insert(&named).expect("insert");
    let error = registry.insert(&named).expect_err("duplicate");
    assert!(matches!(error, RegistryError::NameTaken(_)), "{error}");
    assert!(error.hint().is_some());
    // A given name does not disturb the numbering.
    assert_eq!(
        registry.insert(&new_session("shell")).expect("insert").name,
        "shell-1"
    );
}

fn insert_with_id(registry: &Registry, id: &str, name: &str) {
    registry
        .connection
        .execute(
            "INSERT INTO sessions (id, name, agent, workspace, backend, mode, state, started_at)
             VALUES (?1, ?2, 'shell', '/w', 'docker', 'ephemeral', 'running', 1)",
            [id, name],
        )
        .expect("insert");
}

#[test]
fn lookup_by_prefix_and_name() {
    let (_dir, registry) = registry();
    insert_with_id(&registry, "abc123000000", "first");
    insert_with_id(&registry, "abc456000000", "second");
    // A name that is also another session's id prefix.
    insert_with_id(&registry, "def000000000", "abc4");

    assert_eq!(registry.get("abc123").expect("prefix").name, "first");
    assert_eq!(registry.get("abc123000000").expect("id").name, "first");
    assert_eq!(registry.get("second").expect("name").id, "abc456000000");
    // The exact name wins over the prefix it also is.
    assert_eq!(registry.get("abc4").expect("name").id, "def000000000");

    let error = registry.get("abc").expect_err("ambiguous");
    match &error {
        RegistryError::Ambiguous { query, candidates } => {
            assert_eq!(query, "abc");
            assert_eq!(candidates.len(), 2, "{candidates:?}");
        }
        other => panic!("not ambiguous: {other}"),
    }
    assert!(error.is_lookup() && error.hint().is_some());
    assert!(
        error.to_string().contains("abc123000000 (first)"),
        "{error}"
    );
    assert!(matches!(
        registry.get("zzz"),
        Err(RegistryError::NotFound(_))
    ));
    assert!(matches!(registry.get(""), Err(RegistryError::NotFound(_))));
    // LIKE wildcards mean nothing here.
    assert!(matches!(registry.get("%"), Err(RegistryError::NotFound(_))));
}

#[test]
fn list_hides_old_ended_sessions() {
    let (_dir, mut registry) = registry();
    let running = registry.insert(&new_session("shell")).expect("insert");
    registry.mark_running(&running.id, "h").expect("running");
    let recent = registry.insert(&new_session("shell")).expect("insert");
    registry
        .mark_ended(&recent.id, State::Exited, Some(0))
        .expect("ended");
    let old = registry.insert(&new_session("shell")).expect("insert");
    registry
        .mark_ended(&old.id, State::Failed, None)
        .expect("ended");
    let two_days_ago = now_ms() - 2 * RECENT.as_millis() as i64;
    registry
        .connection
        .execute(
            "UPDATE sessions SET started_at = ?2, ended_at = ?2 WHERE id = ?1",
            params![old.id, two_days_ago],
        )
        .expect("age");

    let shown: Vec<String> = registry
        .list(false)
        .expect("list")
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(shown.len(), 2);
    assert!(shown.contains(&running.id) && shown.contains(&recent.id));
    let all = registry.list(true).expect("list");
    assert_eq!(all.len(), 3);
    // Newest first.
    assert_eq!(all.last().expect("last").id, old.id);
}

#[test]
fn migrates_a_version_1_registry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sessions.db");
    {
        // What a kennel with schema version 1 wrote, by raw SQL.
        let connection = Connection::open(&path).expect("open");
        connection
            .execute_batch(
                "CREATE TABLE sessions (
                    id TEXT PRIMARY KEY NOT NULL, name TEXT NOT NULL UNIQUE,
                    agent TEXT NOT NULL, workspace TEXT NOT NULL,
                    slot INTEGER NOT NULL DEFAULT 0, backend TEXT NOT NULL, handle TEXT,
                    mode TEXT NOT NULL CHECK (mode IN ('ephemeral', 'persistent')),
                    state TEXT NOT NULL
                    CHECK (state IN ('created', 'running', 'exited', 'failed', 'stopped')),
                    started_at INTEGER NOT NULL, ended_at INTEGER, exit_code INTEGER, plan TEXT);
                 INSERT INTO sessions (id, name, agent, workspace, backend, handle, mode, state,
                                       started_at, ended_at, exit_code)
                 VALUES ('0123456789ab', 'claude-1', 'claude', '/w', 'docker', 'kennel-claude-1',
                         'ephemeral', 'exited', 1000, 2000, 0);
                 PRAGMA user_version = 1;",
            )
            .expect("v1 schema");
    }
    let mut registry = Registry::open(&path).expect("migrates");
    assert_eq!(registry.schema_version().expect("version"), SCHEMA_VERSION);
    let old = registry.get("0123").expect("old row survives");
    assert_eq!(old.name, "claude-1");
    assert_eq!(old.state, State::Exited);
    assert_eq!(old.exit_code, Some(0));
    assert_eq!(old.limits, Limits::default());
    let new = registry.insert(&new_session("claude")).expect("insert");
    assert_eq!(new.name, "claude-2");
    assert_eq!(registry.get(&new.id).expect("get").limits.pids, Some(4096));
    drop(registry);
    // Opening again is a no-op.
    let registry = Registry::open(&path).expect("reopen");
    assert_eq!(registry.list(true).expect("list").len(), 2);
    assert_eq!(registry.integrity_check().expect("check"), "ok");
}

#[test]
fn closing_keeps_the_log_and_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sessions.db");
    let wal = dir.path().join("sessions.db-wal");
    let first = {
        let mut registry = Registry::open(&path).expect("open");
        registry.insert(&new_session("claude")).expect("insert")
    };
    // Closed without a checkpoint: the log (and what was committed in it)
    // stays, so the next process's first commit does not make a new one.
    assert!(
        wal.exists(),
        "the log was checkpointed and deleted at close"
    );
    let mut registry = Registry::open(&path).expect("reopen");
    assert_eq!(registry.get(&first.id).expect("get").name, first.name);
    let second = registry.insert(&new_session("claude")).expect("insert");
    drop(registry);
    // A reader that knows nothing of kennel sees both commits.
    let connection = Connection::open(&path).expect("open");
    let rows: i64 = connection
        .query_row("SELECT count(*) FROM sessions", [], |row| row.get(0))
        .expect("count");
    assert_eq!(rows, 2, "{second:?}");
}

#[test]
fn lookups_search_an_index_not_every_session() {
    // Whatever the registry holds, a new session's queries go through the
    // state index (live sessions), never every row of the agent's.
    let (_dir, mut registry) = registry();
    for _ in 0..50 {
        let session = registry.insert(&new_session("claude")).expect("insert");
        registry
            .mark_ended(&session.id, State::Exited, Some(0))
            .expect("end");
    }
    let plan = |sql: &str, params: &[&dyn rusqlite::ToSql]| -> Vec<String> {
        registry
            .connection
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .expect("explain")
            .query_map(params, |row| row.get::<_, String>(3))
            .expect("plan")
            .collect::<rusqlite::Result<_>>()
            .expect("rows")
    };
    let live = plan(LIVE_SLOTS, &[&"claude", &"/home/alice/repo"]);
    assert!(
        live.iter()
            .any(|step| step.contains("sessions_state_ended")),
        "{live:?}"
    );
    // A lookup by id prefix (`kennel attach 3f2a`) searches the id's index.
    let lookup = plan(&lookup_sql(), &[&"3f2a"]);
    assert!(
        lookup.iter().all(|step| !step.starts_with("SCAN")),
        "{lookup:?}"
    );
}

#[test]
fn refuses_a_registry_from_a_newer_kennel() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sessions.db");
    Connection::open(&path)
        .expect("open")
        .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .expect("version");
    let error = Registry::open(&path).expect_err("too new");
    assert!(matches!(error, RegistryError::TooNew { .. }), "{error}");
    assert!(error.hint().is_some());
}

#[test]
fn a_failed_migration_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sessions.db");
    {
        let connection = Connection::open(&path).expect("open");
        // Version 1 claimed, but the table lacks what step 2 needs to index.
        connection
            .execute_batch("CREATE TABLE sessions (id TEXT); PRAGMA user_version = 1;")
            .expect("broken v1");
    }
    let error = Registry::open(&path).expect_err("cannot migrate");
    assert!(
        matches!(error, RegistryError::Migrate { version: 2, .. }),
        "{error}"
    );
    let connection = Connection::open(&path).expect("open");
    let version: u32 = connection
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .expect("version");
    assert_eq!(version, 1);
    let columns: i64 = connection
        .query_row(
            "SELECT count(*) FROM pragma_table_info('sessions')",
            [],
            |row| row.get(0),
        )
        .expect("columns");
    assert_eq!(columns, 1);
}

#[test]
fn parallel_writers_through_separate_handles() {
    const THREADS: usize = 8;
    const PER_THREAD: usize = 50;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sessions.db");
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(THREADS));
    let threads: Vec<_> = (0..THREADS)
        .map(|thread| {
            let path = path.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || -> Result<()> {
                // Everyone opens (and so creates and migrates) at once.
                barrier.wait();
                let mut registry = Registry::open(&path)?;
                let agent = format!("agent{}", thread % 3);
                for n in 0..PER_THREAD {
                    let session = registry.insert(&new_session(&agent))?;
                    registry.mark_running(&session.id, &format!("handle-{thread}-{n}"))?;
                    registry.mark_ended(&session.id, State::Exited, Some(n as i32))?;
                    registry.get(&session.id)?;
                }
                Ok(())
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("thread").expect("no registry error");
    }
    let registry = Registry::open(&path).expect("open");
    let sessions = registry.list(true).expect("list");
    assert_eq!(sessions.len(), THREADS * PER_THREAD);
    assert!(sessions.iter().all(|s| s.state == State::Exited));
    let names: std::collections::BTreeSet<_> = sessions.iter().map(|s| &s.name).collect();
    assert_eq!(names.len(), THREADS * PER_THREAD, "names are unique");
    assert_eq!(registry.integrity_check().expect("check"), "ok");
}

#[test]
fn live_sessions_of_one_agent_get_distinct_slots() {
    let (_dir, mut registry) = registry();
    let slots: Vec<i64> = (0..3)
        .map(|_| registry.insert(&new_session("shell")).expect("insert").slot)
        .collect();
    assert_eq!(slots, [0, 1, 2]);
    // Another agent has its own slots.
    assert_eq!(
        registry
            .insert(&new_session("claude"))
            .expect("insert")
            .slot,
        0
    );
    // An ended session frees its slot; the lowest free one is taken.
    let first = registry.get("shell-1").expect("get");
    registry
        .mark_ended(&first.id, State::Exited, Some(0))
        .expect("end");
    assert_eq!(
        registry.insert(&new_session("shell")).expect("insert").slot,
        0
    );
    assert_eq!(
        registry.insert(&new_session("shell")).expect("insert").slot,
        3
    );
}

/// Each repository has its own agent homes, so its own slots; with one
/// home shared by every repository, slots count across repositories.
#[test]
fn slots_are_per_workspace_unless_homes_are_shared() {
    let (_dir, mut registry) = registry();
    let in_repo = |workspace: &str, per_workspace: bool| {
        let mut new = new_session("shell");
        new.workspace = workspace.into();
        new.slots_per_workspace = per_workspace;
        new
    };
    let slot =
        |registry: &mut Registry, new: &NewSession| registry.insert(new).expect("insert").slot;
    assert_eq!(slot(&mut registry, &in_repo("/r/a", true)), 0);
    assert_eq!(slot(&mut registry, &in_repo("/r/a", true)), 1);
    assert_eq!(slot(&mut registry, &in_repo("/r/b", true)), 0);
    // Shared homes: every live session of the agent holds its slot.
    assert_eq!(slot(&mut registry, &in_repo("/r/c", false)), 2);
}

#[test]
fn an_exact_slot_is_refused_while_held() {
    let (_dir, mut registry) = registry();
    let held = registry.insert(&new_session("shell")).expect("insert");
    let mut resume = new_session("shell");
    resume.slot = SlotRequest::Exact(0);
    match registry.insert(&resume) {
        Err(RegistryError::SlotBusy { slot: 0, name, .. }) => assert_eq!(name, held.name),
        other => panic!("expected SlotBusy, got {other:?}"),
    }
    resume.slot = SlotRequest::Exact(5);
    assert_eq!(registry.insert(&resume).expect("insert").slot, 5);
}

/// A process that has exited: a child we reaped.
fn dead_owner() -> Owner {
    let mut child = std::process::Command::new("true").spawn().expect("spawn");
    let pid = i64::from(child.id());
    let start = process_start(pid).unwrap_or(1);
    child.wait().expect("wait");
    Owner { pid, start }
}

#[test]
fn a_zombie_is_not_alive() {
    // A child that has exited but is not collected yet.
    let mut child = std::process::Command::new("true").spawn().expect("spawn");
    let pid = i64::from(child.id());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| !stat.contains(") Z "))
        .unwrap_or(false)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "never became a zombie"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(Owner::of(pid).is_none());
    child.wait().expect("wait");
}

#[test]
fn sessions_of_a_killed_kennel_are_reaped() {
    let (_dir, mut registry) = registry();
    assert!(Owner::current().expect("owner").is_alive());
    let dead = dead_owner();
    assert!(!dead.is_alive());

    // One agent each: inserting a session reaps the stale ones of its agent.
    let mut starting = new_session("claude");
    starting.owner = Some(dead);
    starting.mode = Mode::Persistent;
    let starting = registry.insert(&starting).expect("insert");

    let mut native_run = new_session("codex");
    native_run.owner = Some(dead);
    let native_run = registry.insert(&native_run).expect("insert");
    registry
        .mark_running(&native_run.id, "sandbox")
        .expect("running");

    // A container run whose kennel died may still run: the engine decides.
    let mut docker_run = new_session("shell");
    docker_run.owner = Some(dead);
    docker_run.backend = "docker".into();
    docker_run.ends_with_owner = false;
    let docker_run = registry.insert(&docker_run).expect("insert");
    registry
        .mark_running(&docker_run.id, "kennel-x")
        .expect("running");

    let mut alive = new_session("shell");
    alive.owner = Owner::current();
    let alive = registry.insert(&alive).expect("insert");

    assert_eq!(registry.reap().expect("reap"), 2);
    assert_eq!(
        registry.get(&starting.id).expect("get").state,
        State::Failed
    );
    assert_eq!(
        registry.get(&native_run.id).expect("get").state,
        State::Stopped
    );
    assert_eq!(
        registry.get(&docker_run.id).expect("get").state,
        State::Running
    );
    assert_eq!(registry.get(&alive.id).expect("get").state, State::Created);
    // Their slots are free again; the docker run's and the live one's are not.
    assert_eq!(
        registry
            .insert(&new_session("claude"))
            .expect("insert")
            .slot,
        0
    );
    assert_eq!(
        registry.insert(&new_session("codex")).expect("insert").slot,
        0
    );
    assert_eq!(
        registry.insert(&new_session("shell")).expect("insert").slot,
        2
    );
}

#[test]
fn latest_is_per_agent_and_workspace() {
    let (_dir, mut registry) = registry();
    assert!(
        registry
            .latest("shell", Path::new("/home/alice/repo"))
            .expect("latest")
            .is_none()
    );
    let older = registry.insert(&new_session("shell")).expect("insert");
    registry.mark_running(&older.id, "a").expect("running");
    std::thread::sleep(std::time::Duration::from_millis(5));
    let mut elsewhere = new_session("shell");
    elsewhere.workspace = "/home/alice/other".into();
    let elsewhere = registry.insert(&elsewhere).expect("insert");
    registry.mark_running(&elsewhere.id, "b").expect("running");
    // Never got to run: not something to resume.
    let failed = registry.insert(&new_session("shell")).expect("insert");
    registry
        .mark_ended(&failed.id, State::Failed, Some(125))
        .expect("end");

    let latest = registry
        .latest("shell", Path::new("/home/alice/repo"))
        .expect("latest")
        .expect("some");
    assert_eq!(latest.id, older.id);
    let other = registry
        .latest("shell", Path::new("/home/alice/other"))
        .expect("latest")
        .expect("some");
    assert_eq!(other.id, elsewhere.id);
    assert!(
        registry
            .latest("claude", Path::new("/home/alice/repo"))
            .expect("latest")
            .is_none()
    );
}

#[test]
fn checkout_is_recorded_and_cleared() {
    let (_dir, mut registry) = registry();
    let session = registry.insert(&new_session("shell")).expect("insert");
    assert_eq!(session.checkout, None);
    registry
        .set_checkout(&session.id, Some("{\"branch\":\"kennel/shell-0\"}"))
        .expect("set");
    let got = registry.get(&session.id).expect("get");
    assert_eq!(
        got.checkout.as_deref(),
        Some("{\"branch\":\"kennel/shell-0\"}")
    );
    assert_eq!(registry.list(true).expect("list")[0].checkout, got.checkout);
    registry.set_checkout(&session.id, None).expect("clear");
    assert_eq!(registry.get(&session.id).expect("get").checkout, None);
    assert!(registry.set_checkout("000000000000", None).is_err());
}

#[test]
fn a_checkout_moves_to_the_session_that_continues_it_once() {
    let (_dir, mut registry) = registry();
    let earlier = registry.insert(&new_session("shell")).expect("insert");
    let first = registry.insert(&new_session("shell")).expect("insert");
    let second = registry.insert(&new_session("shell")).expect("insert");
    let json = "{\"branch\":\"kennel/shell-0\"}";
    registry.set_checkout(&earlier.id, Some(json)).expect("set");

    let moved = registry
        .move_checkout(&earlier.id, &first.id)
        .expect("move");
    assert_eq!(moved.as_deref(), Some(json));
    assert_eq!(registry.get(&earlier.id).expect("get").checkout, None);
    assert_eq!(
        registry.get(&first.id).expect("get").checkout.as_deref(),
        Some(json)
    );
    // Taken already: a second continuation gets nothing, and the first
    // keeps it.
    let again = registry
        .move_checkout(&earlier.id, &second.id)
        .expect("move");
    assert_eq!(again, None);
    assert_eq!(registry.get(&second.id).expect("get").checkout, None);
    assert!(registry.get(&first.id).expect("get").checkout.is_some());
    // Unknown sessions are errors, and nothing moves.
    assert!(registry.move_checkout("000000000000", &second.id).is_err());
    assert!(registry.move_checkout(&first.id, "000000000000").is_err());
    assert!(registry.get(&first.id).expect("get").checkout.is_some());
}

#[test]
fn native_sessions_of_an_older_registry_end_with_their_owner() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sessions.db");
    {
        // A registry at schema 4, with a running native and docker session
        // whose kennel is gone.
        let connection = rusqlite::Connection::open(&path).expect("open");
        for step in &MIGRATIONS[..4] {
            connection.execute_batch(step).expect("migrate");
        }
        connection
            .pragma_update(None, "user_version", 4)
            .expect("version");
        let dead = dead_owner();
        for (id, backend) in [("aaaaaaaaaaaa", "native"), ("bbbbbbbbbbbb", "docker")] {
            connection
                .execute(
                    "INSERT INTO sessions (id, name, agent, workspace, backend, handle, mode,
                                           state, started_at, owner_pid, owner_start)
                     VALUES (?1, ?1, 'shell', '/w', ?2, 'h', 'ephemeral', 'running', 0, ?3, ?4)",
                    rusqlite::params![id, backend, dead.pid, dead.start],
                )
                .expect("insert");
        }
    }
    let mut registry = Registry::open(&path).expect("open migrates");
    assert_eq!(registry.reap().expect("reap"), 1);
    assert_eq!(
        registry.get("aaaaaaaaaaaa").expect("get").state,
        State::Stopped
    );
    assert_eq!(
        registry.get("bbbbbbbbbbbb").expect("get").state,
        State::Running
    );
}

#[test]
fn peeking_at_a_slot_takes_nothing() {
    let (_dir, mut registry) = registry();
    let workspace = Path::new("/home/alice/repo");
    assert_eq!(
        registry
            .peek_slot("codex", Some(workspace), SlotRequest::Free)
            .expect("peek"),
        0
    );
    let mut live = new_session("codex");
    live.owner = Owner::current();
    let live = registry.insert(&live).expect("insert");
    registry.mark_running(&live.id, "sandbox").expect("running");
    for _ in 0..2 {
        assert_eq!(
            registry
                .peek_slot("codex", Some(workspace), SlotRequest::Free)
                .expect("peek"),
            1
        );
    }
    assert!(matches!(
        registry.peek_slot("codex", Some(workspace), SlotRequest::Exact(0)),
        Err(RegistryError::SlotBusy { .. })
    ));
    // The name the next session would get, twice the same: nothing taken.
    for _ in 0..2 {
        assert_eq!(registry.peek_name("codex").expect("peek"), "codex-2");
    }
    assert_eq!(registry.peek_name("aider").expect("peek"), "aider-1");
    assert_eq!(registry.list(true).expect("list").len(), 1);
    let next = registry.insert(&new_session("codex")).expect("insert");
    assert_eq!(next.name, "codex-2");
}

#[test]
fn the_plan_made_from_a_new_session_is_recorded_in_its_insert() {
    let (_dir, mut registry) = registry();
    let session = registry
        .insert_with_plan(&new_session("shell"), |session| {
            Some(format!(
                r#"{{"id":"{}","slot":{}}}"#,
                session.id, session.slot
            ))
        })
        .expect("insert");
    let expected = format!(r#"{{"id":"{}","slot":0}}"#, session.id);
    assert_eq!(session.plan.as_deref(), Some(expected.as_str()));
    // Read back through a second handle: the Plan was committed with the row.
    let reader = Registry::open(registry.path()).expect("reopen");
    assert_eq!(
        reader.get(&session.id).expect("get").plan.as_deref(),
        Some(expected.as_str())
    );
}
