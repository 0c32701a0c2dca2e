//! kennel-incus against the real incusd (scripts/incus-setup.sh prepares
//! it). Each test skips when Incus is not there, unless `KENNEL_E2E=require`.
//!
//! As root the client uses the admin socket and project `default`;
//! `the_user_socket_works_for_the_test_user` runs
//! `as_the_test_user` again as the e2e test user, through incus-user.

// Test code may print: why a test skipped, what it saw.
#![allow(clippy::print_stderr)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use kennel_incus::{
    Client, ExecRequest, FileSpec, ImageSource, IncusError, NewInstance, StopOptions, TerminalSize,
};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LIMIT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------- connect

#[tokio::test]
async fn a_missing_socket_is_reported_as_such() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("no.socket");
    let err = Client::connect(&path).await.expect_err("no socket");
    assert!(
        matches!(&err, IncusError::SocketMissing { path: reported } if reported == &path),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_socket_nobody_listens_on_is_reported_as_not_running() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("dead.socket");
    drop(std::os::unix::net::UnixListener::bind(&path).expect("bind"));
    let err = Client::connect(&path).await.expect_err("nobody listens");
    assert!(matches!(err, IncusError::NotRunning { .. }), "{err:?}");
}

#[tokio::test]
async fn server_info_names_the_driver_and_the_project() {
    let Some(client) = client().await else { return };
    let info = client.server().await.expect("server info");
    assert_eq!(info.api_version, "1.0");
    assert!(info.driver.contains("lxc"), "{info:?}");
    assert!(!info.server_version.is_empty(), "{info:?}");
    assert!(info.trusted);
    assert_eq!(info.project, client.project());
    assert!(info.has_extension("container_exec_recording"), "{info:?}");
    if running_as_root() {
        assert_eq!(client.socket(), Path::new(kennel_incus::ADMIN_SOCKET));
        assert_eq!(info.project, "default");
        assert_eq!(info.auth_method, "unix");
        assert!(!info.restricted);
    }
}

fn running_as_root() -> bool {
    // The effective uid, from /proc (no libc call needed).
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("Uid:"))
                .and_then(|line| line.split_whitespace().nth(2).map(|uid| uid == "0"))
        })
        .unwrap_or(false)
}

// ----------------------------------------------------------------- images

/// A minimal split image: metadata.yaml, and a rootfs with one file.
fn tiny_image(dir: &Path, marker: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let tarball = |name: &str, entries: &[(&str, &[u8])]| {
        let path = dir.join(name);
        let mut builder = tar::Builder::new(std::fs::File::create(&path).expect("create"));
        for (entry, content) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(content.len() as u64);
            header.set_mode(0o644);
            header.set_mtime(1_700_000_000);
            header.set_cksum();
            builder
                .append_data(&mut header, entry, *content)
                .expect("append");
        }
        builder.finish().expect("finish");
        path
    };
    let metadata = format!(
        "architecture: {}\ncreation_date: 1700000000\nproperties:\n  description: kennel-incus test {marker}\n",
        std::env::consts::ARCH
    );
    (
        tarball("meta.tar", &[("metadata.yaml", metadata.as_bytes())]),
        tarball("rootfs.tar", &[("etc/marker", marker.as_bytes())]),
    )
}

#[tokio::test]
async fn the_test_image_is_listed_with_its_alias() {
    let Some(client) = client().await else { return };
    let alias = client.image_alias(&image()).await.expect("alias");
    let images = client.images().await.expect("images");
    let listed = images
        .iter()
        .find(|listed| listed.fingerprint == alias.target)
        .expect("the alias's image is listed");
    assert!(listed.aliases.iter().any(|entry| entry.name == image()));
    assert!(listed.size > 1_000_000, "{listed:?}");
    assert!(!listed.created_at.is_empty());
    assert_eq!(listed.kind, "container");
    let missing = client
        .image_alias("kennel-incus-test-no-such-alias")
        .await
        .expect_err("no such alias");
    assert!(missing.is_not_found(), "{missing:?}");
}

#[tokio::test]
async fn an_imported_image_gets_its_fingerprint_and_aliases() {
    let Some(client) = client().await else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let alias = unique("image");
    let (metadata, rootfs) = tiny_image(dir.path(), &alias);
    let expected = {
        let mut hash = Sha256::new();
        hash.update(std::fs::read(&metadata).expect("read"));
        hash.update(std::fs::read(&rootfs).expect("read"));
        hex::encode(hash.finalize())
    };

    let image = client
        .import_image(&metadata, &rootfs, Some(&alias))
        .await
        .expect("import");
    assert_eq!(image.fingerprint, expected);
    assert!(image.aliases.iter().any(|entry| entry.name == alias));
    assert_eq!(
        image.properties.get("description").map(String::as_str),
        Some(format!("kennel-incus test {alias}").as_str())
    );

    // The same bytes again: Incus has them already.
    let again = client
        .import_image(&metadata, &rootfs, None)
        .await
        .expect_err("a second import");
    assert!(again.is_already_exists(), "{again:?}");

    let second = format!("{alias}/second");
    client
        .add_image_alias(&second, &expected, "a second name")
        .await
        .expect("add alias");
    assert_eq!(
        client.image_alias(&second).await.expect("alias").target,
        expected
    );
    let taken = client
        .add_image_alias(&second, &expected, "")
        .await
        .expect_err("taken");
    assert!(taken.is_already_exists(), "{taken:?}");
    client
        .remove_image_alias(&second)
        .await
        .expect("remove alias");
    assert!(
        client
            .image_alias(&second)
            .await
            .expect_err("gone")
            .is_not_found()
    );

    client.delete_image(&expected).await.expect("delete");
    assert!(
        client
            .image(&expected)
            .await
            .expect_err("gone")
            .is_not_found()
    );
    assert!(
        client
            .image_alias(&alias)
            .await
            .expect_err("gone")
            .is_not_found()
    );
}

#[tokio::test]
async fn a_published_instance_becomes_an_image() {
    let Some(client) = client().await else { return };
    let name = unique("publish");
    let _source = Instance::new(&client, &name);
    client
        .create_instance(&NewInstance::from_image(&name, ImageSource::Alias(image())))
        .await
        .expect("create");
    client
        .push_file(
            &name,
            "/etc/kennel-published",
            "yes\n",
            &FileSpec::default(),
        )
        .await
        .expect("push");
    let alias = unique("published");
    let image = client
        .publish_instance(
            &name,
            Some(&alias),
            &[("description", "published by a test")],
        )
        .await
        .expect("publish");
    assert!(image.aliases.iter().any(|entry| entry.name == alias));
    assert_eq!(
        client.image_alias(&alias).await.expect("alias").target,
        image.fingerprint
    );

    let copy = unique("from-published");
    let _copy = Instance::new(&client, &copy);
    client
        .create_instance(&NewInstance::from_image(
            &copy,
            ImageSource::Fingerprint(image.fingerprint.clone()),
        ))
        .await
        .expect("create from the published image");
    let file = client
        .pull_file(&copy, "/etc/kennel-published")
        .await
        .expect("pull");
    assert_eq!(file.content, b"yes\n");
    client
        .force_delete_instance(&copy)
        .await
        .expect("delete copy");
    client
        .delete_image(&image.fingerprint)
        .await
        .expect("delete image");
}

// -------------------------------------------------------------- instances

#[tokio::test]
async fn an_instance_lives_through_create_start_update_stop_delete() {
    let Some(client) = client().await else { return };
    let name = unique("life");
    let session = unique("session");
    let _guard = Instance::new(&client, &name);
    client
        .create_instance(
            &NewInstance::from_image(&name, ImageSource::Alias(image()))
                .config("user.kennel.session", &session)
                .config("limits.processes", "500")
                .device(
                    "scratch",
                    [("type", "disk"), ("path", "/scratch"), ("source", "/tmp")],
                )
                .profiles(["default"]),
        )
        .await
        .expect("create");
    let created = client.instance(&name).await.expect("instance");
    assert_eq!(created.status, "Stopped");
    assert_eq!(created.kind, "container");
    assert!(!created.ephemeral);
    assert_eq!(created.profiles, ["default"]);
    assert!(created.devices.contains_key("scratch"));
    assert!(created.expanded_devices.contains_key("root"));

    let again = client
        .create_instance(&NewInstance::from_image(&name, ImageSource::Alias(image())))
        .await
        .expect_err("the name is taken");
    assert!(again.is_already_exists(), "{again:?}");

    let found = client
        .instances(&[("user.kennel.session", session.as_str())])
        .await
        .expect("list");
    assert_eq!(
        found
            .iter()
            .map(|instance| instance.name.as_str())
            .collect::<Vec<_>>(),
        [name.as_str()]
    );

    let started = Instant::now();
    client.start_instance(&name).await.expect("start");
    eprintln!("start: {:?}", started.elapsed());
    let state = client.instance_state(&name).await.expect("state");
    assert_eq!(state.status, "Running");
    assert!(state.pid > 0, "{state:?}");
    assert!(state.processes >= 1, "{state:?}");
    assert!(client.instance(&name).await.expect("instance").is_running());

    let mut set = BTreeMap::new();
    set.insert("user.kennel.note".to_string(), "two words".to_string());
    client
        .update_instance_config(&name, &set, &["user.kennel.session"])
        .await
        .expect("update config");
    let updated = client.instance(&name).await.expect("instance");
    assert_eq!(
        updated.config.get("user.kennel.note").map(String::as_str),
        Some("two words")
    );
    assert!(!updated.config.contains_key("user.kennel.session"));
    assert!(
        client
            .instances(&[("user.kennel.session", session.as_str())])
            .await
            .expect("list")
            .is_empty()
    );
    // A value with a space is filtered here, not by the server.
    let noted = client
        .instances(&[("user.kennel.note", "two words")])
        .await
        .expect("list");
    assert!(noted.iter().any(|instance| instance.name == name));

    // SIGPWR to the image's init: a clean stop.
    let stopped = Instant::now();
    client
        .stop_instance(
            &name,
            StopOptions {
                force: false,
                timeout: Some(Duration::from_secs(30)),
            },
        )
        .await
        .expect("stop");
    eprintln!("clean stop: {:?}", stopped.elapsed());
    assert_eq!(
        client.instance_state(&name).await.expect("state").status,
        "Stopped"
    );
    client.delete_instance(&name).await.expect("delete");
    let gone = client.instance(&name).await.expect_err("deleted");
    assert!(gone.is_not_found(), "{gone:?}");
    let again = client.delete_instance(&name).await.expect_err("deleted");
    assert!(again.is_not_found(), "{again:?}");
}

#[tokio::test]
async fn starting_a_missing_instance_fails_with_not_found() {
    let Some(client) = client().await else { return };
    let err = client
        .start_instance(&unique("missing"))
        .await
        .expect_err("no such instance");
    assert!(err.is_not_found(), "{err:?}");
}

#[tokio::test]
async fn an_ephemeral_instance_goes_away_when_stopped() {
    let Some(client) = client().await else { return };
    let instance = running(&client, "ephemeral").await;
    client
        .stop_instance(
            &instance.name,
            StopOptions {
                force: true,
                timeout: None,
            },
        )
        .await
        .expect("stop");
    // Incus deletes it right after the stop operation ends.
    let deadline = Instant::now() + LIMIT;
    loop {
        match client.instance(&instance.name).await {
            Err(err) if err.is_not_found() => break,
            Err(err) => panic!("{err}"),
            Ok(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Ok(found) => panic!("still there: {found:?}"),
        }
    }
}

// ------------------------------------------------------------------- exec

#[tokio::test]
async fn exec_collects_stdout_stderr_and_the_exit_code() {
    let Some(client) = client().await else { return };
    let instance = running(&client, "exec").await;
    let script = r#"printf 'out1\n'; printf 'err1\n' >&2; printf '\000\001\002bin'; printf 'err2' >&2; exit 3"#;
    let output = client
        .exec(&instance.name, &ExecRequest::new(["sh", "-c", script]))
        .await
        .expect("exec");
    assert_eq!(output.exit_code, 3);
    assert_eq!(output.stdout, b"out1\n\x00\x01\x02bin");
    assert_eq!(output.stderr, b"err1\nerr2");

    // The same through record-output.
    let recorded = client
        .exec_recorded(&instance.name, &ExecRequest::new(["sh", "-c", script]))
        .await
        .expect("exec_recorded");
    assert_eq!(recorded, output);
}

#[tokio::test]
async fn exec_sets_env_cwd_user_and_feeds_stdin() {
    let Some(client) = client().await else { return };
    let instance = running(&client, "exec-env").await;
    let request = ExecRequest::new(["sh", "-c", "id -u; id -g; pwd; echo \"$GREETING\"; wc -c"])
        .env("GREETING", "hello there")
        .cwd("/tmp")
        .user(1234, 2345)
        .stdin(vec![b'x'; 200_000]);
    let output = client.exec(&instance.name, &request).await.expect("exec");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "1234\n2345\n/tmp\nhello there\n200000\n",
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(output.exit_code, 0);

    // Large output arrives whole.
    let (code, stdout, _) = sh(
        &client,
        &instance.name,
        "head -c 3000000 /dev/zero | tr '\\0' y",
    )
    .await;
    assert_eq!(code, 0);
    assert_eq!(stdout.len(), 3_000_000);
}

#[tokio::test]
async fn exec_gives_up_after_its_timeout() {
    let Some(client) = client().await else { return };
    let instance = running(&client, "exec-timeout").await;
    let started = Instant::now();
    let err = client
        .exec(
            &instance.name,
            &ExecRequest::new(["sleep", "600"]).timeout(Duration::from_secs(1)),
        )
        .await
        .expect_err("sleep outlives the timeout");
    assert!(matches!(err, IncusError::Timeout { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    // Dropping its sockets ended the command too.
    let deadline = Instant::now() + LIMIT;
    loop {
        // No procps in the image: count the command lines by hand.
        let script = "for c in /proc/[0-9]*/cmdline; do tr '\\0' ' ' <$c; echo; done | grep -c '^sleep 600' || true";
        let (_, running, _) = sh(&client, &instance.name, script).await;
        if running.trim() == "0" {
            break;
        }
        assert!(Instant::now() < deadline, "sleep 600 still runs: {running}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn exec_of_a_missing_program_reports_it() {
    let Some(client) = client().await else { return };
    let instance = running(&client, "exec-missing").await;
    match client
        .exec(&instance.name, &ExecRequest::new(["/no/such/program"]))
        .await
    {
        Ok(output) => assert_eq!(output.exit_code, 127, "{output:?}"),
        Err(err) => assert!(err.to_string().contains("not found"), "{err}"),
    }
    let stopped = unique("stopped");
    let _guard = Instance::new(&client, &stopped);
    client
        .create_instance(&NewInstance::from_image(
            &stopped,
            ImageSource::Alias(image()),
        ))
        .await
        .expect("create");
    let err = client
        .exec(&stopped, &ExecRequest::new(["true"]))
        .await
        .expect_err("not running");
    assert!(err.to_string().contains("not running"), "{err:?}");
}

#[tokio::test]
async fn an_interactive_exec_is_a_terminal() {
    let Some(client) = client().await else { return };
    let instance = running(&client, "interactive").await;
    let mut session = client
        .exec_interactive(
            &instance.name,
            &ExecRequest::new(["sh", "-c", "read x; echo got:$x; stty size; exit 7"])
                .env("TERM", "dumb"),
            TerminalSize { cols: 80, rows: 24 },
        )
        .await
        .expect("interactive exec");
    session
        .control()
        .resize(TerminalSize {
            cols: 100,
            rows: 30,
        })
        .expect("resize");
    // Give the resize a moment to land before the shell asks for the size.
    tokio::time::sleep(Duration::from_millis(200)).await;
    session.stream().write_all(b"hi\n").await.expect("write");
    let mut output = Vec::new();
    tokio::time::timeout(LIMIT, session.stream().read_to_end(&mut output))
        .await
        .expect("output ends in time")
        .expect("read");
    let text = String::from_utf8_lossy(&output);
    assert!(text.contains("got:hi"), "{text:?}");
    // A pty: the input is echoed, lines end in CR LF.
    assert!(text.contains("hi\r\n"), "{text:?}");
    assert!(text.contains("30 100"), "{text:?}");
    assert_eq!(session.wait().await.expect("exit code"), 7);
}

#[tokio::test]
async fn an_interactive_exec_takes_signals() {
    let Some(client) = client().await else { return };
    let instance = running(&client, "signal").await;
    let session = client
        .exec_interactive(
            &instance.name,
            &ExecRequest::new(["sleep", "600"]),
            TerminalSize { cols: 80, rows: 24 },
        )
        .await
        .expect("interactive exec");
    let (_stream, control, exit) = session.into_parts();
    tokio::time::sleep(Duration::from_millis(200)).await;
    control.signal(15).expect("signal");
    let code = tokio::time::timeout(LIMIT, exit.wait())
        .await
        .expect("ends in time")
        .expect("exit code");
    // Killed by SIGTERM: 128 + 15 by Incus's count.
    assert_eq!(code, 143);
}

// ------------------------------------------------------------------ files

#[tokio::test]
async fn files_go_in_and_out_with_mode_and_owner() {
    let Some(client) = client().await else { return };
    let instance = running(&client, "files").await;
    let content: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    client
        .push_file(
            &instance.name,
            "/tmp/pushed",
            content.clone(),
            &FileSpec {
                mode: 0o640,
                uid: 1000,
                gid: 1001,
            },
        )
        .await
        .expect("push");
    let (_, stat, _) = sh(&client, &instance.name, "stat -c '%a %u %g %s' /tmp/pushed").await;
    assert_eq!(stat, "640 1000 1001 100000\n");

    let pulled = client
        .pull_file(&instance.name, "/tmp/pushed")
        .await
        .expect("pull");
    assert_eq!(pulled.content, content);
    assert_eq!(pulled.mode, Some(0o640));
    assert_eq!((pulled.uid, pulled.gid), (Some(1000), Some(1001)));

    let missing = client
        .pull_file(&instance.name, "/tmp/not-there")
        .await
        .expect_err("missing");
    assert!(missing.is_not_found(), "{missing:?}");
    let directory = client
        .pull_file(&instance.name, "/tmp")
        .await
        .expect_err("a directory");
    assert!(directory.to_string().contains("directory"), "{directory}");
}

// ------------------------------------------------------- the user project

/// Run `as_the_test_user` as the e2e test user (its own restricted project
/// through incus-user), from root.
#[test]
fn the_user_socket_works_for_the_test_user() {
    let user = std::env::var("KENNEL_E2E_USER").unwrap_or_else(|_| "kennel-e2e".to_string());
    if !running_as_root() {
        let _: Option<()> =
            skip("the user-project test starts as root (it switches to the test user)");
        return;
    }
    if !Path::new(kennel_incus::USER_SOCKET).exists() {
        let _: Option<()> = skip("incus-user's socket is missing; run scripts/incus-setup.sh");
        return;
    }
    let home = match std::process::Command::new("getent")
        .args(["passwd", &user])
        .output()
    {
        Ok(output) if output.status.success() => String::from_utf8_lossy(&output.stdout)
            .trim()
            .split(':')
            .nth(5)
            .unwrap_or_default()
            .to_string(),
        _ => {
            let _: Option<()> = skip(&format!("no test user {user}; run scripts/e2e-setup.sh"));
            return;
        }
    };
    // The user must be able to run this binary; a checkout under a
    // directory only root may enter (/root) needs a copy.
    let built = std::env::current_exe().expect("test binary");
    let usable = std::process::Command::new("runuser")
        .args(["-u", &user, "--", "test", "-x"])
        .arg(&built)
        .status()
        .is_ok_and(|status| status.success());
    let copy_dir = tempfile::Builder::new()
        .prefix("kennel-incus-test-bin-")
        .tempdir()
        .expect("tempdir");
    let exe = if usable {
        built
    } else {
        use std::os::unix::fs::PermissionsExt;
        let copy = copy_dir.path().join("incus-tests");
        std::fs::copy(&built, &copy).expect("copy the test binary");
        for path in [copy_dir.path(), copy.as_path()] {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        copy
    };
    let output = std::process::Command::new("runuser")
        .args(["-u", &user, "--", "env", "-i"])
        .arg(format!("HOME={home}"))
        .arg(format!("USER={user}"))
        .arg("PATH=/usr/local/bin:/usr/bin:/bin")
        .arg("KENNEL_E2E=require")
        .arg("RUST_BACKTRACE=1")
        .arg(&exe)
        .args([
            "--exact",
            "as_the_test_user",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .output()
        .expect("runuser");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "as {user}: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    eprintln!("{stderr}");
}

/// What kennel will do as a user: its own project, a container with the
/// user's workspace bind-mounted and the user's uid mapped to itself.
#[tokio::test]
#[ignore = "run as the test user by the_user_socket_works_for_the_test_user"]
async fn as_the_test_user() {
    let client = Client::connect_default()
        .await
        .expect("connect as the user");
    let info = client.server().await.expect("server info");
    let uid = std::fs::metadata(std::env::var("HOME").expect("HOME"))
        .map(|meta| std::os::unix::fs::MetadataExt::uid(&meta))
        .expect("home");
    assert_eq!(client.socket(), Path::new(kennel_incus::USER_SOCKET));
    assert_eq!(info.project, format!("user-{uid}"));
    assert!(info.restricted, "{info:?}");
    assert_eq!(info.auth_method, "tls");
    assert_eq!(info.allowed_projects, std::slice::from_ref(&info.project));
    let admin = Client::connect(kennel_incus::ADMIN_SOCKET)
        .await
        .expect_err("the admin socket is for group incus-admin");
    assert!(
        matches!(admin, IncusError::PermissionDenied { .. }),
        "{admin:?}"
    );
    client
        .image_alias(&image())
        .await
        .expect("the test image in the user's project");

    // The project's restrictions, as Incus words them.
    let name = unique("user-raw");
    let _raw = Instance::new(&client, &name);
    let forbidden = client
        .create_instance(
            &NewInstance::from_image(&name, ImageSource::Alias(image()))
                .config("raw.lxc", "lxc.init.cmd = /bin/sleep infinity"),
        )
        .await
        .expect_err("raw.lxc is not for restricted projects");
    eprintln!("raw.lxc: {forbidden}");
    assert!(
        matches!(forbidden, IncusError::Forbidden { .. }),
        "{forbidden:?}"
    );
    let outside = client
        .create_instance(
            &NewInstance::from_image(&name, ImageSource::Alias(image())).device(
                "tmp",
                [("type", "disk"), ("source", "/tmp"), ("path", "/mnt")],
            ),
        )
        .await
        .expect_err("only the home directory may be mounted");
    eprintln!("disk outside home: {outside}");
    assert!(
        matches!(outside, IncusError::Forbidden { .. }),
        "{outside:?}"
    );

    let workspace = tempfile::Builder::new()
        .prefix("kennel-incus-test-")
        .tempdir_in(std::env::var("HOME").expect("HOME"))
        .expect("workspace in the home directory");
    std::fs::write(workspace.path().join("from-host"), "host\n").expect("write");
    let name = unique("user");
    let _guard = Instance::new(&client, &name);
    let started = Instant::now();
    client
        .create_instance(
            &NewInstance::from_image(&name, ImageSource::Alias(image()))
                .ephemeral(true)
                .start(true)
                .device(
                    "workspace",
                    [
                        ("type", "disk"),
                        ("source", workspace.path().to_str().expect("UTF-8")),
                        ("path", "/workspace"),
                    ],
                ),
        )
        .await
        .expect("create and start with the workspace");
    eprintln!("create+start in the user project: {:?}", started.elapsed());
    let instance = client.instance(&name).await.expect("instance");
    assert!(
        instance
            .expanded_config
            .get("raw.idmap")
            .is_some_and(|map| map.contains(&format!("uid {uid} {uid}"))),
        "the default profile maps the user's uid: {:?}",
        instance.expanded_config
    );
    let output = client
        .exec(
            &name,
            &ExecRequest::new([
                "sh",
                "-c",
                "cat /workspace/from-host; id -u; echo made > /workspace/from-container; stat -c '%u' /workspace/from-host",
            ])
            .user(uid, uid)
            .cwd("/workspace"),
        )
        .await
        .expect("exec as the user");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!("host\n{uid}\n{uid}\n"),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    // A terminal through incus-user too.
    let mut session = client
        .exec_interactive(
            &name,
            &ExecRequest::new(["sh", "-c", "read x; echo got:$x; exit 7"]).user(uid, uid),
            TerminalSize { cols: 80, rows: 24 },
        )
        .await
        .expect("interactive exec");
    session.stream().write_all(b"hi\n").await.expect("write");
    let mut terminal = Vec::new();
    tokio::time::timeout(LIMIT, session.stream().read_to_end(&mut terminal))
        .await
        .expect("output ends in time")
        .expect("read");
    assert!(String::from_utf8_lossy(&terminal).contains("got:hi"));
    assert_eq!(session.wait().await.expect("exit code"), 7);

    let made = workspace.path().join("from-container");
    let owner = std::fs::metadata(&made)
        .map(|meta| std::os::unix::fs::MetadataExt::uid(&meta))
        .expect("the container's file on the host");
    assert_eq!(
        owner, uid,
        "the file the container made belongs to the user"
    );
    client.force_delete_instance(&name).await.expect("delete");
}
