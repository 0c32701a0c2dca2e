//! kennel end-to-end tests against real engines.
//!
//! The same behaviours run on every backend: `docker::exit_code_and_streams`,
//! `podman::…` (rootful, through /run/podman/podman.sock),
//! `podman_rootless::…` and `native::…` (kennel's own namespaces, Landlock
//! and seccomp: no engine, no image; what the suite asks the engine about a
//! container it reads from the sandboxed process's `/proc` entries instead,
//! and the two image tests do not apply). kennel runs as the non-root user
//! `kennel-e2e` when the tests run as root. Prepare the machine with
//! `scripts/e2e-setup.sh`.
//!
//! Without a ready backend (an engine; for native, `kennel doctor` reporting
//! it ok) a test prints SKIP and passes, unless `KENNEL_E2E=require` (CI),
//! which turns that into a failure.
//!
//!     cargo test -p kennel --test e2e                  # everything
//!     cargo test -p kennel --test e2e docker::          # one backend
//!     cargo test -p kennel --test e2e native::          # no engine needed
//!     cargo test -p kennel --test e2e agent_images      # the slow agent-image test
//!     cargo test -p kennel --test e2e agents_at_work    # real agents against a stand-in model

// Test code may print: why a test skipped, what it saw.
#![allow(clippy::print_stderr)]

#[path = "e2e/harness.rs"]
mod harness;

#[path = "e2e/cases.rs"]
mod cases;

#[path = "e2e/network.rs"]
mod network;

#[path = "e2e/sessions.rs"]
mod sessions;

#[path = "e2e/git.rs"]
mod git;

#[path = "e2e/escape_direct.rs"]
mod escape_direct;
#[path = "e2e/escape_git.rs"]
mod escape_git;

#[path = "e2e/agent_images.rs"]
mod agent_images;

#[path = "e2e/agents_at_work.rs"]
mod agents_at_work;

#[path = "e2e/images.rs"]
mod images;

#[path = "e2e/verify.rs"]
mod verify;

#[path = "e2e/escape_output.rs"]
mod escape_output;

#[path = "e2e/escape_homes.rs"]
mod escape_homes;

#[path = "e2e/git_identity.rs"]
mod git_identity;

#[path = "e2e/incus.rs"]
mod incus_only;

#[path = "e2e/kubernetes.rs"]
mod kubernetes;

#[path = "e2e/broker.rs"]
mod broker;

/// One module of tests per backend. A new behaviour: one line here (and its
/// function in `cases.rs`). A new backend: one `backend_suite!` line below.
macro_rules! backend_suite {
    ($module:ident, $backend:expr) => {
        mod $module {
            use crate::broker;
            use crate::cases;
            use crate::escape_direct;
            use crate::escape_git;
            use crate::escape_homes;
            use crate::escape_output;
            use crate::git;
            use crate::git_identity;
            use crate::harness::Backend;
            use crate::images;
            use crate::network;
            use crate::sessions;
            use crate::verify;
            const B: Backend = $backend;

            #[test]
            fn escape_git_filters() {
                escape_git::nested_repository_filters(B)
            }
            #[test]
            fn escape_git_alternates() {
                escape_git::alternates_mount(B)
            }
            #[test]
            fn escape_git_objects() {
                escape_git::replaced_object(B)
            }
            #[test]
            fn git_identity_inside() {
                git_identity::identity_inside(B)
            }
            #[test]
            fn git_worktree_sessions() {
                git::worktree_sessions(B)
            }
            #[test]
            fn git_merge_refusal() {
                git::merge_refusal(B)
            }
            #[test]
            fn git_worktree_start() {
                git::worktree_start(B)
            }
            #[test]
            fn git_checkout_under_home() {
                git::checkout_under_home(B)
            }
            #[test]
            fn git_direct_redirect_quarantined() {
                git::direct_redirect_quarantined(B)
            }
            #[test]
            fn escape_direct_submodule_and_worktree_config() {
                escape_direct::submodule_and_worktree_config(B)
            }
            #[test]
            fn escape_direct_worktree_admin_files() {
                escape_direct::worktree_admin_files(B)
            }
            #[test]
            fn escape_direct_git_file_redirect() {
                escape_direct::git_file_redirect(B)
            }
            #[test]
            fn escape_direct_config_named_programs() {
                escape_direct::config_named_programs(B)
            }
            #[test]
            fn escape_direct_replaced_git_dir_refused() {
                escape_direct::replaced_git_dir_refused(B)
            }
            #[test]
            fn escape_direct_embedded_repository() {
                escape_direct::embedded_repository(B)
            }
            #[test]
            fn escape_direct_persistent_audit() {
                escape_direct::persistent_audit(B)
            }
            #[test]
            fn git_resume_continues_checkout() {
                git::resume_continues_checkout(B)
            }
            #[test]
            fn git_clone_sync() {
                git::clone_sync(B)
            }
            #[test]
            fn host_config() {
                cases::host_config(B)
            }
            #[test]
            fn exit_code_and_streams() {
                cases::exit_code_and_streams(B)
            }
            #[test]
            fn stdin_passthrough() {
                cases::stdin_passthrough(B)
            }
            #[test]
            fn pty_and_resize() {
                cases::pty_and_resize(B)
            }
            #[test]
            fn sigterm_stops_sandbox() {
                cases::sigterm_stops_sandbox(B)
            }
            #[test]
            fn sigint_stops_sandbox() {
                cases::sigint_stops_sandbox(B)
            }
            #[test]
            fn identity_and_hardening() {
                cases::identity_and_hardening(B)
            }
            #[test]
            fn host_isolation() {
                cases::host_isolation(B)
            }
            #[test]
            fn environment() {
                cases::environment(B)
            }
            #[test]
            fn agent_credentials_in_plan() {
                cases::agent_credentials_in_plan(B)
            }
            #[test]
            fn git_safety() {
                cases::git_safety(B)
            }
            #[test]
            fn agent_state_persists() {
                cases::agent_state_persists(B)
            }
            #[test]
            fn dry_run_is_the_plan_that_runs() {
                cases::dry_run_is_the_plan_that_runs(B)
            }
            #[test]
            fn dry_run_is_the_plan_that_runs_with_a_checkout() {
                cases::dry_run_is_the_plan_that_runs_with_a_checkout(B)
            }
            #[test]
            fn dry_run() {
                cases::dry_run(B)
            }
            #[test]
            fn project_config_refused_user_config_allowed() {
                cases::project_config_refused_user_config_allowed(B)
            }
            #[test]
            fn config_defined_agent() {
                cases::config_defined_agent(B)
            }
            #[test]
            fn image_rm() {
                cases::image_rm(B)
            }
            #[test]
            fn image_build_is_cached() {
                cases::image_build_is_cached(B)
            }
            #[test]
            fn escape_output_diff() {
                escape_output::diff_escapes_control_characters(B)
            }
            #[test]
            fn escape_output_logs() {
                escape_output::logs_escape_control_characters(B)
            }
            #[test]
            fn escape_output_limits() {
                escape_output::limits_cover_every_process(B)
            }
            #[test]
            fn build_failure_is_explained() {
                images::build_failure_is_explained(B)
            }
            #[test]
            fn missing_command_fails_the_build() {
                images::missing_command_fails_the_build(B)
            }

            #[test]
            fn image_packages_and_setup() {
                images::image_packages_and_setup(B)
            }

            #[test]
            fn devcontainer() {
                images::devcontainer(B)
            }

            #[test]
            fn devcontainer_build() {
                images::devcontainer_build(B)
            }

            #[test]
            fn verify_holds_and_reports_an_escape() {
                verify::verify_holds_and_reports_an_escape(B)
            }

            #[test]
            fn verify_interrupted_leaves_nothing() {
                verify::verify_interrupted_leaves_nothing(B)
            }

            #[test]
            fn a_base_image_without_apt_is_named() {
                images::a_base_image_without_apt_is_named(B)
            }
            #[test]
            fn unknown_agent_is_usage_error() {
                cases::unknown_agent_is_usage_error(B)
            }
            #[test]
            fn network_allowlist() {
                network::allowlist(B)
            }
            #[test]
            fn network_restricted() {
                network::restricted(B)
            }
            #[test]
            fn network_none() {
                network::none(B)
            }
            #[test]
            fn broker_credential() {
                broker::brokered_credential(B)
            }
            #[test]
            fn broker_credential_in_a_session() {
                broker::brokered_credential_in_a_session(B)
            }

            #[test]
            fn broker_login() {
                broker::brokered_login(B)
            }
            #[test]
            fn network_open() {
                network::open(B)
            }
            #[test]
            fn network_detached() {
                network::detached(B)
            }
            #[test]
            fn sessions_lifecycle() {
                sessions::lifecycle(B)
            }
            #[test]
            fn sessions_real_state_and_kill() {
                sessions::real_state_and_kill(B)
            }
            #[test]
            fn timing_breakdown() {
                cases::timing_breakdown(B)
            }
            #[test]
            fn sessions_slots() {
                sessions::slots(B)
            }
            #[test]
            fn sessions_resume() {
                sessions::resume(B)
            }
            #[test]
            fn sessions_killed_kennel() {
                sessions::killed_kennel(B)
            }
            #[test]
            fn sessions_clean() {
                sessions::clean(B)
            }
            #[test]
            fn escape_homes_cross_repository() {
                escape_homes::cross_repository(B)
            }
            #[test]
            fn escape_homes_login_link_not_followed() {
                escape_homes::login_link_not_followed(B)
            }
            #[test]
            fn escape_homes_migration() {
                escape_homes::migration(B)
            }
            #[test]
            fn escape_homes_linked_project_config() {
                escape_homes::linked_project_config(B)
            }
        }
    };
}

backend_suite!(docker, Backend::Docker);
backend_suite!(podman, Backend::Podman);
backend_suite!(podman_rootless, Backend::PodmanRootless);
backend_suite!(native, Backend::Native);
backend_suite!(incus, Backend::Incus);
