//! `kennel secret`: values in, never out. Each test is a user of its own
//! (a temporary HOME and XDG dirs, no session bus: the file store).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;

use common::{Sandbox, output};

const VALUE: &str = "sk-ant-api03-sekrit-value";

fn secret(sandbox: &Sandbox, args: &[&str]) -> Command {
    let mut full = vec!["secret"];
    full.extend_from_slice(args);
    sandbox.kennel(&full)
}

fn store_dir(sandbox: &Sandbox) -> PathBuf {
    sandbox.home.join(".local/share/kennel/secrets")
}

/// Runs with `input` on stdin (never a terminal here).
fn with_stdin(command: &mut Command, input: &str) -> (i32, String, String) {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("waits");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn set_from_stdin_then_ls_and_rm_never_show_the_value() {
    let sandbox = Sandbox::new();
    let (code, stdout, stderr) = with_stdin(
        &mut secret(&sandbox, &["set", "ANTHROPIC_API_KEY", "--stdin"]),
        &format!("{VALUE}\n"),
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, "");
    let home = sandbox.home.display().to_string();
    insta::assert_snapshot!(stderr.replace(&home, "~"), @"kennel: secret ANTHROPIC_API_KEY stored in ~/.local/share/kennel/secrets/secrets.toml (mode 0600)");

    // Kept, less the newline, in a file only the user can read.
    let dir = store_dir(&sandbox);
    let file = dir.join("secrets.toml");
    let mode = |path: &PathBuf| {
        std::fs::metadata(path)
            .expect("exists")
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&file), 0o600);
    let kept = std::fs::read_to_string(&file).expect("file");
    assert!(kept.contains(&format!("\"{VALUE}\"")), "{kept}");

    let (code, stdout, stderr) = output(&mut secret(&sandbox, &["ls"]));
    assert_eq!(code, 0, "{stderr}");
    assert!(!stdout.contains(VALUE) && !stderr.contains(VALUE));
    assert!(
        stdout.starts_with(
            "NAME               HOSTS              SOURCE  STORE  UPDATED\nANTHROPIC_API_KEY  api.anthropic.com  stored  file   "
        ),
        "{stdout}"
    );

    let (code, stdout, stderr) = output(&mut secret(&sandbox, &["ls", "--json"]));
    assert_eq!(code, 0, "{stderr}");
    assert!(!stdout.contains(VALUE));
    let listed: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(listed["version"], 1);
    assert_eq!(listed["secrets"][0]["name"], "ANTHROPIC_API_KEY");
    assert_eq!(listed["secrets"][0]["hosts"][0], "api.anthropic.com");
    assert_eq!(listed["secrets"][0]["source"], "stored");
    assert_eq!(listed["secrets"][0]["store"], "file");
    assert!(listed["secrets"][0]["updated"].as_i64().expect("time") > 1_700_000_000);

    let (code, _, stderr) = output(&mut secret(&sandbox, &["rm", "ANTHROPIC_API_KEY"]));
    assert_eq!(code, 0, "{stderr}");
    insta::assert_snapshot!(stderr, @"kennel: secret ANTHROPIC_API_KEY removed");
    let (code, stdout, stderr) = output(&mut secret(&sandbox, &["ls", "--json"]));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&stdout).expect("json")["secrets"],
        serde_json::json!([])
    );
    assert!(
        !std::fs::read_dir(&dir).expect("dir").any(|entry| entry
            .is_ok_and(|entry| std::fs::read_to_string(entry.path())
                .is_ok_and(|text| text.contains(VALUE))))
    );
}

#[test]
fn set_from_env_and_a_command() {
    let sandbox = Sandbox::new();
    let data = sandbox.home.join("elsewhere/data");
    let (code, _, stderr) = output(
        secret(&sandbox, &["set", "OPENAI_API_KEY", "--from-env", "MY_KEY"])
            .env("MY_KEY", VALUE)
            .env("XDG_DATA_HOME", &data),
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains(
            &data
                .join("kennel/secrets/secrets.toml")
                .display()
                .to_string()
        ),
        "{stderr}"
    );
    assert!(!stderr.contains(VALUE));

    let (code, _, stderr) = output(
        secret(&sandbox, &["set", "GH_TOKEN", "--command", "gh auth token"])
            .env("XDG_DATA_HOME", &data),
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.ends_with(": `gh auth token` runs each time a session starts\n"),
        "{stderr}"
    );

    let (code, stdout, stderr) =
        output(secret(&sandbox, &["ls", "--json"]).env("XDG_DATA_HOME", &data));
    assert_eq!(code, 0, "{stderr}");
    assert!(!stdout.contains(VALUE));
    let listed: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    let secrets = listed["secrets"].as_array().expect("list");
    assert_eq!(secrets.len(), 2);
    assert_eq!(secrets[0]["name"], "GH_TOKEN");
    assert_eq!(
        secrets[0]["source"],
        serde_json::json!({"command": "gh auth token"})
    );
    assert_eq!(secrets[1]["name"], "OPENAI_API_KEY");
    // Not in the default data directory.
    assert!(!store_dir(&sandbox).exists());
}

/// The table as users read it (a file written three days ago, so that the
/// age is stable), and the empty listing.
#[test]
fn ls_table_snapshot() {
    let sandbox = Sandbox::new();
    let (code, stdout, stderr) = output(&mut secret(&sandbox, &["ls"]));
    assert_eq!((code, stdout.as_str()), (0, ""));
    let home = sandbox.home.display().to_string();
    insta::assert_snapshot!(stderr.replace(&home, "~"), @"kennel: no secrets in ~/.local/share/kennel/secrets/secrets.toml (mode 0600) (`kennel secret set NAME` stores one)");

    let dir = store_dir(&sandbox);
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let then = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_secs()
        - 3 * 86_400
        - 60;
    let file = dir.join("secrets.toml");
    std::fs::write(
        &file,
        format!(
            "[secrets.ANTHROPIC_API_KEY]\nvalue = \"{VALUE}\"\nupdated = {then}\n\n\
             [secrets.GH_TOKEN]\ncommand = \"gh auth token\"\nupdated = {then}\n"
        ),
    )
    .expect("file");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let (code, stdout, stderr) = output(&mut secret(&sandbox, &["ls"]));
    assert_eq!(code, 0, "{stderr}");
    insta::assert_snapshot!(stdout, @r"
    NAME               HOSTS                       SOURCE                  STORE  UPDATED
    ANTHROPIC_API_KEY  api.anthropic.com           stored                  file   3d ago
    GH_TOKEN           api.github.com, github.com  command: gh auth token  file   3d ago
    ");
}

#[test]
fn errors_users_see() {
    let sandbox = Sandbox::new();
    let (code, _, stderr) = with_stdin(&mut secret(&sandbox, &["set", "MY-KEY"]), VALUE);
    assert_eq!(code, 2, "{stderr}");
    insta::assert_snapshot!(stderr, @r"
    kennel: error: `MY-KEY` is not a secret name: it contains `-`
      hint: a name is letters, digits and `_`, not starting with a digit, at most 128 characters: usually the variable the agent reads, such as ANTHROPIC_API_KEY
    ");

    let (code, _, stderr) = with_stdin(
        &mut secret(&sandbox, &["set", "TOKEN"]),
        &format!("{VALUE}\nsecond line\n"),
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(!stderr.contains(VALUE));
    insta::assert_snapshot!(stderr, @r"
    kennel: error: the value read from stdin cannot be secret TOKEN: the value contains a line feed (LF)
      hint: a secret's value is one line of text: a token, a key (one trailing newline is dropped)
    ");

    let (code, _, stderr) = with_stdin(&mut secret(&sandbox, &["set", "TOKEN"]), "");
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("the value read from stdin cannot be secret TOKEN: the value is empty"),
        "{stderr}"
    );

    let (code, _, stderr) = output(&mut secret(
        &sandbox,
        &["set", "TOKEN", "--from-env", "NOT_SET"],
    ));
    assert_eq!(code, 2, "{stderr}");
    insta::assert_snapshot!(stderr, @r"
    kennel: error: --from-env: `NOT_SET` is not set in kennel's environment
      hint: export NOT_SET=… first, or pipe the value in: kennel secret set NAME --stdin
    ");

    // One source at most.
    let (code, _, stderr) = output(&mut secret(
        &sandbox,
        &["set", "TOKEN", "--stdin", "--command", "true"],
    ));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("cannot be used with"), "{stderr}");

    // Nothing was stored by any of them.
    assert!(!store_dir(&sandbox).join("secrets.toml").exists());

    let (code, _, stderr) = output(&mut secret(&sandbox, &["rm", "NOPE"]));
    assert_eq!(code, 2, "{stderr}");
    insta::assert_snapshot!(stderr, @r"
    kennel: error: no secret named `NOPE`
      hint: there are no secrets; `kennel secret set NAME` stores one
    ");
    for name in ["B_TOKEN", "A_TOKEN"] {
        let (code, _, stderr) = with_stdin(&mut secret(&sandbox, &["set", name]), VALUE);
        assert_eq!(code, 0, "{stderr}");
    }
    let (code, _, stderr) = output(&mut secret(&sandbox, &["rm", "NOPE"]));
    assert_eq!(code, 2, "{stderr}");
    insta::assert_snapshot!(stderr, @r"
    kennel: error: no secret named `NOPE`
      hint: the secrets are: A_TOKEN, B_TOKEN
    ");
    let (code, _, stderr) = output(&mut secret(&sandbox, &["rm", "1X"]));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("`1X` is not a secret name: it starts with a digit"),
        "{stderr}"
    );
}

/// A store kennel refuses to use: it says so, with the fix, and so does
/// `kennel doctor`.
#[test]
fn an_unsafe_store_is_refused_and_doctor_says_how_to_fix_it() {
    let sandbox = Sandbox::new();
    let (code, stdout, _) = output(&mut sandbox.kennel(&["doctor"]));
    assert!(code == 0 || code == 1);
    let home = sandbox.home.display().to_string();
    let row = |stdout: &str| {
        stdout
            .lines()
            .skip_while(|line| !line.starts_with("secrets "))
            .take(2)
            .collect::<Vec<_>>()
            .join("\n")
            .replace(&home, "~")
    };
    insta::assert_snapshot!(row(&stdout), @"secrets  ok      kept in ~/.local/share/kennel/secrets/secrets.toml (mode 0600); none yet");

    let elsewhere = sandbox.home.join("elsewhere");
    std::fs::create_dir_all(&elsewhere).expect("dir");
    std::fs::create_dir_all(store_dir(&sandbox).parent().expect("parent")).expect("data");
    std::os::unix::fs::symlink(&elsewhere, store_dir(&sandbox)).expect("link");
    let (code, _, stderr) = with_stdin(&mut secret(&sandbox, &["set", "TOKEN"]), VALUE);
    assert_eq!(code, 125, "{stderr}");
    assert!(stderr.contains("it is a symbolic link"), "{stderr}");
    assert_eq!(std::fs::read_dir(&elsewhere).expect("dir").count(), 0);
    let (_, stdout, _) = output(&mut sandbox.kennel(&["doctor"]));
    insta::assert_snapshot!(row(&stdout), @r"
    secrets  FAIL    refusing to use ~/.local/share/kennel/secrets: it is a symbolic link
                     fix: kennel keeps secrets only in a directory and file of your own: remove the link (rm ~/.local/share/kennel/secrets) and set the secrets again
    ");
}

/// `kennel login` is for agents whose login kennel can keep; the secret
/// that holds one is `kennel login`'s alone; `logout` of nothing says so.
#[test]
fn login_and_logout_refuse_what_they_cannot_do() {
    let sandbox = Sandbox::new();
    let (code, _, stderr) = output(&mut sandbox.kennel(&["login", "shell", "--dry-run"]));
    assert_eq!(code, 2, "{stderr}");
    insta::assert_snapshot!(stderr, @r"
    kennel: error: kennel cannot keep shell's login on the host (it can for: claude)
      hint: keep an API key instead: kennel secret set VARIABLE; or log in inside a session (`kennel run shell`), where the login stays in the agent's home
    ");
    // (`--from-env`: kennel refuses before reading any input.)
    let (code, _, stderr) = output(&mut secret(
        &sandbox,
        &["set", "KENNEL_LOGIN_CLAUDE", "--from-env", "HOME"],
    ));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("kennel login AGENT"), "{stderr}");
    assert!(!store_dir(&sandbox).join("secrets.toml").exists());
    let (code, _, stderr) = output(&mut sandbox.kennel(&["logout", "claude"]));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("kennel keeps no claude login"), "{stderr}");
}
