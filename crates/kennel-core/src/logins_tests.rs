use std::os::unix::fs::symlink;
use std::path::Path;

use super::*;

const LOGIN: &str = "~/.agent/creds.json";

fn rel() -> PathBuf {
    PathBuf::from(".agent/creds.json")
}

fn store(data: &Path) -> LoginStore {
    LoginStore::open(data, "agent", &[LOGIN.to_string()])
        .expect("open")
        .expect("a store")
}

fn write(home: &Path, text: &str) {
    std::fs::create_dir_all(home.join(".agent")).unwrap();
    std::fs::write(home.join(".agent/creds.json"), text).unwrap();
}

fn read(home: &Path) -> Option<String> {
    std::fs::read_to_string(home.join(".agent/creds.json")).ok()
}

#[test]
fn login_paths_are_plain_names_under_home() {
    assert_eq!(
        login_relative("~/.claude/.credentials.json"),
        Some(PathBuf::from(".claude/.credentials.json"))
    );
    for bad in [
        "~/",
        "~",
        "/etc/passwd",
        ".claude/x",
        "~/../x",
        "~/a/../../x",
        "~/./x",
    ] {
        assert_eq!(login_relative(bad), None, "{bad}");
    }
}

#[test]
fn no_store_without_login_files() {
    let dir = tempfile::tempdir().unwrap();
    assert!(
        LoginStore::open(dir.path(), "shell", &[])
            .unwrap()
            .is_none()
    );
    assert!(
        LoginStore::open(dir.path(), "x", &["/etc/shadow".into()])
            .unwrap()
            .is_none()
    );
}

/// A login made in one repository's home reaches another's; nothing else
/// of the home does, and a stale copy never overwrites a newer login.
#[test]
fn a_login_carries_over_and_the_newest_wins() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (a, b) = (dir.path().join("home-a"), dir.path().join("home-b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();

    // Session on A: nothing to give yet; the agent logs in, and more.
    let mut s = store(&data);
    s.migrate(&dir.path().join("no-legacy"));
    s.collect();
    s.give_to(&a);
    drop(s);
    write(&a, "login-1");
    std::fs::write(a.join(".bashrc"), "touch /tmp/pwned\n").unwrap();
    let mut s = store(&data);
    s.take_from(&a);
    drop(s);

    // Session on B: the login is there, the rest is not.
    let mut s = store(&data);
    s.collect();
    s.give_to(&b);
    assert!(s.warnings.is_empty(), "{:?}", s.warnings);
    drop(s);
    assert_eq!(read(&b).as_deref(), Some("login-1"));
    assert!(!b.join(".bashrc").exists());

    // B refreshes its token (a session that was never ended by kennel, as
    // a persistent one); A still holds the old one. The next session
    // anywhere takes B's, and A's stale copy does not win it back.
    write(&b, "login-2");
    let mut s = store(&data);
    s.collect();
    s.give_to(&a);
    drop(s);
    assert_eq!(read(&a).as_deref(), Some("login-2"));
    let mut s = store(&data);
    s.collect();
    s.take_from(&a);
    s.give_to(&b);
    drop(s);
    assert_eq!(read(&b).as_deref(), Some("login-2"));
}

/// A home is the agent's: a login file that is a link, or a directory on
/// its path that is a link, is neither read nor written through.
#[test]
fn links_in_a_home_are_never_followed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let secret = dir.path().join("host-secret");
    std::fs::write(&secret, "host-private-key").unwrap();
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let (a, b) = (dir.path().join("home-a"), dir.path().join("home-b"));
    std::fs::create_dir_all(a.join(".agent")).unwrap();
    std::fs::create_dir_all(&b).unwrap();

    // The file is a link to a host secret: not taken into the store.
    symlink(&secret, a.join(".agent/creds.json")).unwrap();
    let mut s = store(&data);
    s.migrate(&dir.path().join("no-legacy"));
    s.give_to(&a);
    s.take_from(&a);
    assert!(
        s.warnings.iter().any(|w| w.contains("symbolic link")),
        "{:?}",
        s.warnings
    );
    drop(s);
    let mut s = store(&data);
    s.give_to(&b);
    drop(s);
    assert_eq!(read(&b), None, "a linked file's target must not be carried");
    assert!(
        read_under(&data.join("logins/agent/files"), &rel())
            .unwrap()
            .is_none()
    );

    // The directory is a link: the login is not written through it.
    write(&b, "login-1");
    let mut s = store(&data);
    s.take_from(&b);
    drop(s);
    std::fs::remove_file(a.join(".agent/creds.json")).unwrap();
    std::fs::remove_dir(a.join(".agent")).unwrap();
    symlink(&outside, a.join(".agent")).unwrap();
    let mut s = store(&data);
    s.give_to(&a);
    assert!(
        s.warnings.iter().any(|w| w.contains("symbolic link")),
        "{:?}",
        s.warnings
    );
    drop(s);
    assert!(
        !outside.join("creds.json").exists(),
        "written through a link"
    );

    // A link at the file's own name: its target is neither read nor written.
    std::fs::remove_file(a.join(".agent")).unwrap();
    std::fs::create_dir_all(a.join(".agent")).unwrap();
    symlink(&secret, a.join(".agent/creds.json")).unwrap();
    let mut s = store(&data);
    s.give_to(&a);
    assert!(!s.warnings.is_empty());
    drop(s);
    assert_eq!(
        std::fs::read_to_string(&secret).unwrap(),
        "host-private-key"
    );
    // write_under itself replaces a link, never writes through it.
    write_under(&a, &rel(), b"login-1").unwrap();
    assert_eq!(
        std::fs::read_to_string(&secret).unwrap(),
        "host-private-key"
    );
    assert_eq!(read(&a).as_deref(), Some("login-1"));
}

#[test]
fn oversized_and_special_files_are_not_carried() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir_all(home.join(".agent")).unwrap();
    std::fs::write(
        home.join(".agent/creds.json"),
        vec![b'x'; MAX_LOGIN_BYTES as usize + 1],
    )
    .unwrap();
    assert!(matches!(
        read_under(&home, &rel()),
        Err(LoginError::TooLarge)
    ));
    std::fs::remove_file(home.join(".agent/creds.json")).unwrap();
    nix::unistd::mkfifo(
        &home.join(".agent/creds.json"),
        Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    assert!(matches!(
        read_under(&home, &rel()),
        Err(LoginError::NotFile)
    ));
}

/// The first run after the upgrade: the shared home's login files seed the
/// store (the user stays logged in); nothing else of it is copied.
#[test]
fn the_shared_home_seeds_the_store_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let legacy = data.join("homes/agent");
    write(&legacy, "old-login");
    std::fs::write(legacy.join(".bashrc"), "echo from-legacy\n").unwrap();
    let home = dir.path().join("repo-home");
    std::fs::create_dir_all(&home).unwrap();
    let mut s = store(&data);
    assert!(s.migrate(&legacy));
    s.give_to(&home);
    drop(s);
    assert_eq!(read(&home).as_deref(), Some("old-login"));
    assert!(!home.join(".bashrc").exists());
    // Only once: a later login in the legacy home is not a migration.
    write(&legacy, "later");
    let mut s = store(&data);
    assert!(!s.migrate(&legacy));
}
