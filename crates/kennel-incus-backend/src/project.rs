//! What a restricted Incus project lets kennel mount: incus-user gives each
//! user a project that may mount only paths under the user's home (its
//! `restricted.devices.disk.paths`), while kennel also mounts the proxy's
//! socket directory from the runtime directory (`/run/user/UID`). Said once
//! by `kennel doctor` (and `auto`), with the command that fixes it, rather
//! than by a refused disk device in the middle of a run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kennel_lib::error::CliError;

/// The paths of `needed` that the project would refuse as disk sources,
/// or `None` when it allows them all.
pub fn refused_disk_paths(
    project: &BTreeMap<String, String>,
    needed: &[PathBuf],
) -> Option<Vec<PathBuf>> {
    let key = |name: &str| project.get(name).map(String::as_str).unwrap_or("");
    if key("restricted") != "true" {
        return None;
    }
    let refused: Vec<PathBuf> = match key("restricted.devices.disk") {
        // Any path, within `disk.paths` when it is set.
        "allow" => {
            let allowed: Vec<&Path> = key("restricted.devices.disk.paths")
                .split(',')
                .map(str::trim)
                .filter(|path| !path.is_empty())
                .map(Path::new)
                .collect();
            if allowed.is_empty() {
                return None;
            }
            needed
                .iter()
                .filter(|path| !allowed.iter().any(|root| path.starts_with(root)))
                .cloned()
                .collect()
        }
        // `managed` (the default) and `block`: no host path at all.
        _ => needed.to_vec(),
    };
    (!refused.is_empty()).then_some(refused)
}

/// The error for `refused`, with the command an administrator runs.
pub fn refusal(name: &str, project: &BTreeMap<String, String>, refused: &[PathBuf]) -> CliError {
    let listed: Vec<String> = refused
        .iter()
        .map(|path| path.display().to_string())
        .collect();
    let mut paths: Vec<String> = project
        .get("restricted.devices.disk.paths")
        .map(|paths| {
            paths
                .split(',')
                .map(str::trim)
                .filter(|path| !path.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    paths.extend(listed.iter().cloned());
    CliError::kennel(format!(
        "your Incus project {name} may not mount {} from the host, which kennel mounts into every sandbox (the agent's home, the proxy's socket)",
        listed.join(" or ")
    ))
    .with_hint(format!(
        "an Incus administrator runs: incus project set {name} restricted.devices.disk=allow restricted.devices.disk.paths={}",
        paths.join(",")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect()
    }

    #[test]
    fn what_a_project_refuses() {
        let needed = [
            PathBuf::from("/home/alice"),
            PathBuf::from("/run/user/1000"),
        ];
        // Not restricted (the default project, the admin socket).
        assert_eq!(refused_disk_paths(&project(&[]), &needed), None);
        // incus-user's project as it makes it: the home only.
        let user = project(&[
            ("restricted", "true"),
            ("restricted.devices.disk", "allow"),
            ("restricted.devices.disk.paths", "/home/alice"),
        ]);
        assert_eq!(
            refused_disk_paths(&user, &needed),
            Some(vec![PathBuf::from("/run/user/1000")])
        );
        let error = refusal("user-1000", &user, &[PathBuf::from("/run/user/1000")]);
        assert!(
            error.message.contains("/run/user/1000"),
            "{}",
            error.message
        );
        assert_eq!(
            error.hint.as_deref(),
            Some(
                "an Incus administrator runs: incus project set user-1000 restricted.devices.disk=allow restricted.devices.disk.paths=/home/alice,/run/user/1000"
            )
        );
        // Fixed as the hint says.
        let fixed = project(&[
            ("restricted", "true"),
            ("restricted.devices.disk", "allow"),
            (
                "restricted.devices.disk.paths",
                "/home/alice, /run/user/1000",
            ),
        ]);
        assert_eq!(refused_disk_paths(&fixed, &needed), None);
        // A prefix of a name is not its parent.
        let tricky = project(&[
            ("restricted", "true"),
            ("restricted.devices.disk", "allow"),
            ("restricted.devices.disk.paths", "/home/al,/run/user/1000"),
        ]);
        assert_eq!(
            refused_disk_paths(&tricky, &needed),
            Some(vec![PathBuf::from("/home/alice")])
        );
        // No host paths at all.
        let managed = project(&[("restricted", "true")]);
        assert_eq!(refused_disk_paths(&managed, &needed), Some(needed.to_vec()));
    }
}
