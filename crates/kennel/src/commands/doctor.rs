//! `kennel doctor`: what works here, and how to fix what does not.

use clap::Args;

use crate::cli::JsonFlag;
use kennel_lib::doctor::Check;
use kennel_lib::error::CliError;

#[derive(Debug, Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub json: JsonFlag,
}

pub async fn run(args: DoctorArgs) -> Result<i32, CliError> {
    let report = kennel_lib::doctor::report().await;
    if args.json.json {
        crate::ui::print_json_object(&report)?;
    } else {
        let backends = crate::ui::table(&["BACKEND", "STATUS", "DETAIL"], &rows(&report.backends));
        let checks = crate::ui::table(&["CHECK", "STATUS", "DETAIL"], &rows(&report.checks));
        crate::ui::write_stdout(format_args!("{backends}\n{checks}"));
    }
    Ok(if report.usable() { 0 } else { 1 })
}

/// Table rows for `checks`: each one's status and what was found, and
/// under one that failed, its fix.
fn rows(checks: &[Check]) -> Vec<[String; 3]> {
    let mut rows = Vec::new();
    for check in checks {
        let status = if check.ok { "ok" } else { "FAIL" };
        rows.push([check.name.clone(), status.to_string(), check.detail.clone()]);
        if let Some(fix) = check.fix.as_ref().filter(|_| !check.ok) {
            rows.push([String::new(), String::new(), format!("fix: {fix}")]);
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::rows;
    use kennel_lib::doctor::Check;

    /// What a user reads: a failing check's fix under it, a passing one's
    /// never.
    #[test]
    fn the_report_as_a_table() {
        let check = |name: &str, ok: bool, detail: &str| Check {
            name: name.into(),
            ok,
            detail: detail.into(),
            fix: Some(format!("the fix for {name}")),
        };
        let table = crate::ui::table(
            &["BACKEND", "STATUS", "DETAIL"],
            &rows(&[
                check("docker", true, "version 28.2.2 at /var/run/docker.sock"),
                check("podman-rootless", false, "no API socket"),
            ]),
        );
        insta::assert_snapshot!(table, @r"
        BACKEND          STATUS  DETAIL
        docker           ok      version 28.2.2 at /var/run/docker.sock
        podman-rootless  FAIL    no API socket
                                 fix: the fix for podman-rootless
        ");
    }
}
