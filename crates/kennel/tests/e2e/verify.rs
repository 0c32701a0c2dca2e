//! `kennel verify` (issue 17, first part): the escape probes as a user
//! runs them, on each backend.

use serde_json::Value;

use crate::harness::{BUILD_TIMEOUT, Backend, Ctx};

/// Every probe holds with kennel's defaults, every class reports, the
/// markers it planted are gone afterwards; with a weakened configuration
/// (`network = "open"`) the direct connection to this machine is
/// reported ESCAPED and the exit code is 1.
pub fn verify_holds_and_reports_an_escape(b: Backend) {
    if b == Backend::Incus {
        eprintln!("incus::verify: not yet (kennel verify tries docker, podman and native)");
        return;
    }
    let Some(t) = Ctx::with_shell_image(b, "verify") else {
        return;
    };
    t.write_config("", "");
    let out = t
        .kennel(&["verify", "--backend", b.kennel_backend(), "--json"])
        .timeout(BUILD_TIMEOUT)
        .run();
    out.assert_ok();
    let report: Value = out.json();
    let results = report["results"].as_array().cloned().unwrap_or_default();
    for class in ["files", "privilege", "network"] {
        assert!(
            results
                .iter()
                .any(|r| r["class"] == class && r["outcome"] == "held"),
            "{class} held\n{out}"
        );
    }
    assert_eq!(report["escaped"], 0, "{out}");
    assert!(
        results.iter().filter(|r| r["probe"] == "marker").count() >= 3,
        "markers in the home, kennel's directories and another repository\n{out}"
    );
    // Nothing of verify's is left in the user's home.
    let marker = report["marker"].as_str().unwrap_or_default().to_string();
    assert!(marker.starts_with(".kennel-verify-"), "{out}");
    let left = usize::from(t.user.home.join(&marker).exists());
    assert_eq!(left, 0, "verify's markers are removed");

    if b.has_engine() {
        t.write_config("network = \"open\"", "");
        let weak = t
            .kennel(&[
                "verify",
                "--backend",
                b.kennel_backend(),
                "--only",
                "network",
            ])
            .timeout(BUILD_TIMEOUT)
            .run();
        weak.assert_code(1);
        assert!(
            weak.stdout
                .lines()
                .any(|line| line.contains("direct-tcp") && line.contains("ESCAPED")),
            "{weak}"
        );
    }
    let usage = t.kennel(&["verify", "--only", "nonsense"]).run();
    usage.assert_code(2);
}
