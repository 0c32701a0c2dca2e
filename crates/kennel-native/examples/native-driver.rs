//! A stand-in for the kennel binary in kennel-native's integration tests
//! (tests/enter.rs): it dispatches the helper arguments first thing, as
//! kennel's `main` does, and drives the library as the test user. Built by
//! `cargo test -p kennel-native` with the library under test, so the tests
//! never run a stale or half-edited kennel.
//!
//! ```text
//! native-driver run PLAN.json             kennel_native::run
//! native-driver enter PLAN.json INIT_PID  kennel_native::enter
//! native-driver standby PLAN.json         a standby helper, then the Plan
//!                                         in it; the stages marked, one
//!                                         `stage: NAME` line each
//! native-driver standby-unused            a standby helper, dropped
//! ```
//!
//! A library error is one `driver-error: KIND: message` line on stderr and
//! the error's exit code.

// An example is a program: it owns its terminal and its exit code.
#![allow(clippy::print_stderr, clippy::exit)]

use std::ffi::OsString;
use std::path::Path;

use kennel_native::{NativeError, NativeOptions};

fn main() {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let arg = |i: usize| args.get(i).and_then(|arg| arg.to_str());
    match arg(0) {
        Some(kennel_native::HELPER_ARG) => kennel_native::helper_main(arg(1)),
        Some(kennel_native::ENTER_ARG) => kennel_native::enter_main(arg(1)),
        Some("run") => {
            let plan = read_plan(arg(1));
            finish(kennel_native::run(&plan, &NativeOptions::default()))
        }
        Some("standby") => {
            let options = NativeOptions {
                stages: true,
                ..Default::default()
            };
            // As kennel starts it: from a thread of its own, which ends
            // only when the run is over.
            let standby = kennel_native::standby_in_thread(&options).wait();
            let plan = read_plan(arg(1));
            let result = standby.and_then(|standby| {
                Ok(kennel_native::prepare(&plan, &options)?.with_standby(standby))
            });
            let result = result.and_then(|prepared| prepared.run());
            for (stage, _) in kennel_native::take_stages() {
                eprintln!("stage: {stage}");
            }
            finish(result)
        }
        Some("standby-unused") => {
            let standby = kennel_native::standby_in_thread(&NativeOptions::default()).wait();
            finish(standby.map(drop).map(|()| 0))
        }
        Some("enter") => {
            let plan = read_plan(arg(1));
            let Some(pid) = arg(2).and_then(|pid| pid.parse().ok()) else {
                usage()
            };
            finish(kennel_native::enter(&plan, pid, &NativeOptions::default()))
        }
        _ => usage(),
    }
}

fn usage() -> ! {
    eprintln!(
        "usage: native-driver run PLAN.json | enter PLAN.json INIT_PID | standby PLAN.json \
         | standby-unused"
    );
    std::process::exit(2)
}

fn read_plan(path: Option<&str>) -> kennel_core::Plan {
    let Some(path) = path else { usage() };
    let plan = std::fs::read(Path::new(path))
        .map_err(|error| error.to_string())
        .and_then(|json| serde_json::from_slice(&json).map_err(|error| error.to_string()));
    match plan {
        Ok(plan) => plan,
        Err(error) => {
            eprintln!("driver-error: Plan: {path}: {error}");
            std::process::exit(2)
        }
    }
}

fn finish(result: Result<i32, NativeError>) -> ! {
    match result {
        Ok(code) => std::process::exit(code),
        Err(error) => {
            let kind = match &error {
                NativeError::Unavailable { .. } => "Unavailable",
                NativeError::CommandNotFound { .. } => "CommandNotFound",
                NativeError::Other(_) => "Other",
            };
            eprintln!("driver-error: {kind}: {error}");
            std::process::exit(error.exit_code())
        }
    }
}
