//! A filter driver the user's own global config defines (as `git lfs
//! install` or git-crypt do) never runs when kennel writes a Pod's files
//! into the clone, whatever the agent's `.gitattributes` select.
//!
//! Its own test binary: every git process of it reads `~/.gitconfig` from a
//! home of its own ([`isolate_with_home`]), which the other tests must not.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;
use kennel_git::bundle_command;

/// This binary's home: its `.gitconfig` defines the `marker` filter, whose
/// commands leave a file in `markers/`.
fn home() -> PathBuf {
    let home = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kennel-git-bundle-filters-home");
    let _ = std::fs::remove_dir_all(&home);
    let markers = home.join("markers");
    std::fs::create_dir_all(&markers).expect("mkdir");
    let script = home.join("marker-filter.sh");
    std::fs::write(
        &script,
        format!("#!/bin/sh\ntouch \"{}/$1\"\ncat\n", markers.display()),
    )
    .expect("write");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::write(
        home.join(".gitconfig"),
        format!(
            "[filter \"marker\"]\n\tclean = {script} clean\n\tsmudge = {script} smudge\n\trequired = true\n",
            script = script.display()
        ),
    )
    .expect("write");
    home
}

#[test]
fn the_users_global_filter_never_runs_on_the_pods_files() {
    let home = home();
    isolate_with_home(&home);
    let markers_dir = home.join("markers");
    let fixture = Fixture::new();
    let repo = fixture.open();
    let checkout = repo
        .create_clone(&fixture.session_dir("pod-0"), "kennel/pod-0")
        .expect("clone");
    let pod = fixture.root().join("pod");
    assert!(
        Command::new("cp")
            .arg("-a")
            .arg(&checkout.dir)
            .arg(&pod)
            .status()
            .expect("cp")
            .success()
    );
    // The agent's attributes select the user's filter for every file.
    write(&pod, ".gitattributes", "* filter=marker\n");
    write(&pod, "secret.txt", "what the smudge filter would read\n");
    write(&pod, "src/a.txt", "changed\n");

    // The Pod's git does not read the user's config.
    let bundle = fixture.root().join("bundle");
    let argv = bundle_command(
        pod.to_str().expect("utf-8"),
        &checkout.branch,
        &checkout.base,
    );
    let output = Command::new(&argv[0])
        .args(&argv[1..])
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&bundle).expect("bundle file"))
        .output()
        .expect("bundle command");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(markers(&markers_dir), Vec::<String>::new(), "set-up");

    repo.receive_bundle(&checkout, &bundle).expect("received");
    assert_eq!(markers(&markers_dir), Vec::<String>::new(), "receive");
    assert_eq!(
        read(&checkout.dir, "secret.txt"),
        "what the smudge filter would read\n"
    );
    let diff = String::from_utf8(repo.diff(&checkout, false).expect("diff")).expect("utf-8");
    assert!(diff.contains("+changed"), "{diff}");
    assert_eq!(markers(&markers_dir), Vec::<String>::new(), "diff");

    // The filter is live for git that does not switch it off: this test
    // would see it run.
    std::fs::remove_file(checkout.dir.join("secret.txt")).expect("rm");
    git(
        &checkout.dir,
        &["checkout", "kennel/worktree", "--", "secret.txt"],
    );
    assert_eq!(markers(&markers_dir), vec!["smudge".to_string()]);
}
