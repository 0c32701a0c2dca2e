//! Shared helpers for the tests against a real incusd.
//!
//! A test skips (passes, saying why on stderr) when Incus is not there,
//! unless `KENNEL_E2E=require`, which makes that a failure. The image is
//! `kennel-test/bookworm` (scripts/incus-setup.sh imports it) unless
//! `KENNEL_INCUS_TEST_IMAGE` names another alias.

#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kennel_incus::{Client, ExecRequest, ImageSource, NewInstance};

pub fn required() -> bool {
    std::env::var("KENNEL_E2E").is_ok_and(|value| value == "require")
}

pub fn image() -> String {
    std::env::var("KENNEL_INCUS_TEST_IMAGE").unwrap_or_else(|_| "kennel-test/bookworm".to_string())
}

/// Skip (say why, return `None`) or, under `KENNEL_E2E=require`, fail.
pub fn skip<T>(reason: &str) -> Option<T> {
    assert!(!required(), "KENNEL_E2E=require but {reason}");
    eprintln!("SKIP: {reason} (set KENNEL_E2E=require to make this a failure)");
    None
}

/// The default connection, when Incus and the test image are there.
pub async fn client() -> Option<Client> {
    let client = match Client::connect_default().await {
        Ok(client) => client,
        Err(err) => return skip(&format!("Incus is not usable: {err}")),
    };
    match client.image_alias(&image()).await {
        Ok(_) => Some(client),
        Err(err) => skip(&format!(
            "test image {} is missing in project {} ({err}); run scripts/incus-setup.sh",
            image(),
            client.project()
        )),
    }
}

/// A name no other test (nor another run of this one) uses.
pub fn unique(what: &str) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    format!(
        "kennel-incus-test-{what}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A new container from the test image, started, deleted when the guard
/// goes (even when the test panics).
pub async fn running(client: &Client, what: &str) -> Instance {
    let name = unique(what);
    let guard = Instance::new(client, &name);
    client
        .create_instance(
            &NewInstance::from_image(&name, ImageSource::Alias(image()))
                .ephemeral(true)
                .start(true),
        )
        .await
        .expect("create and start a container");
    guard
}

/// Deletes the instance when dropped.
pub struct Instance {
    pub name: String,
    socket: std::path::PathBuf,
    project: String,
}

impl Instance {
    pub fn new(client: &Client, name: &str) -> Self {
        Instance {
            name: name.to_string(),
            socket: client.socket().to_path_buf(),
            project: client.project().to_string(),
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let (name, socket, project) =
            (self.name.clone(), self.socket.clone(), self.project.clone());
        // Drop cannot await, and this may run inside the test's runtime: a
        // thread with a runtime of its own, and a client of its own (the
        // test's client has connections driven by the blocked runtime).
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                let deleted = match Client::connect(&socket).await {
                    Ok(client) => {
                        client
                            .with_project(project)
                            .force_delete_instance(&name)
                            .await
                    }
                    Err(err) => Err(err),
                };
                if let Err(err) = deleted {
                    eprintln!("cleanup: deleting {name}: {err}");
                }
            });
        });
        let _ = cleanup.join();
    }
}

/// `sh -c script` in the instance, its output as text; panics on failure.
pub async fn sh(client: &Client, instance: &str, script: &str) -> (i32, String, String) {
    let output = client
        .exec(
            instance,
            &ExecRequest::new(["sh", "-c", script]).timeout(Duration::from_secs(60)),
        )
        .await
        .expect("exec");
    (
        output.exit_code,
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}
