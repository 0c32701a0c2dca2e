//! The kennel binary: parses the command line, runs one command, and turns
//! its result into an exit code. Everything else lives in the library crates.

// The binary owns the terminal and the exit code; the libraries never print or exit.
#![allow(clippy::print_stdout, clippy::print_stderr, clippy::exit)]

#[macro_use]
mod ui;

mod cli;
mod commands;
mod confirm;

use clap::Parser;

use crate::cli::{Cli, Command};
use kennel_lib::error::CliError;

fn main() {
    kennel_lib::timing::start();
    register_backends();
    // The native backend's helper: before anything can start a thread (a
    // user namespace cannot be made by a multi-threaded process). Then the
    // egress proxy daemon of a detached session (`kennel start`).
    {
        let mut args = std::env::args_os().skip(1);
        match args.next() {
            Some(arg) if arg == kennel_native::HELPER_ARG => {
                let fd = args.next();
                kennel_native::helper_main(fd.as_deref().and_then(|fd| fd.to_str()));
            }
            Some(arg) if arg == kennel_native::ENTER_ARG => {
                let fd = args.next();
                kennel_native::enter_main(fd.as_deref().and_then(|fd| fd.to_str()));
            }
            Some(arg) if arg == kennel_lib::proxy_daemon::ARG => kennel_lib::proxy_daemon::main(),
            _ => {}
        }
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            // clap uses 2 for usage errors and 0 for --help/--version.
            std::process::exit(error.exit_code());
        }
    };
    ui::init_logging(cli.verbose);
    kennel_lib::report::set_verbosity(cli.verbose);
    kennel_lib::report::set_reporter(Box::new(ui::Stderr { quiet: cli.quiet }));
    kennel_lib::timing::mark("parse");
    let code = match dispatch(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("kennel: {error}");
            error.kind.code()
        }
    };
    kennel_lib::timing::mark("shutdown");
    kennel_lib::timing::report();
    std::process::exit(code);
}

/// Backends that live in crates of their own, one line each, before
/// anything asks for a backend by name (the proxy daemon and the command
/// line's `--backend` values included). See
/// `kennel_lib::backend::register`.
fn register_backends() {
    kennel_lib::backend::register(
        kennel_incus_backend::NAME,
        kennel_incus_backend::backend,
        kennel_lib::backend::Selection::Auto,
    );
    // A cluster is another machine: only when the user names it.
    kennel_lib::backend::register(
        kennel_kube_backend::NAME,
        kennel_kube_backend::backend,
        kennel_lib::backend::Selection::ByName,
    );
}

/// Runs an async command to its end. The runtime is shut down without
/// waiting for its threads: everything the command awaited has finished,
/// the process exits next, and joining the threads cost about a millisecond
/// of every command (measured on `kennel run -b native`).
fn block_on(
    command: impl std::future::Future<Output = Result<i32, CliError>>,
) -> Result<i32, CliError> {
    let runtime = kennel_lib::runtime()?;
    let result = runtime.block_on(command);
    runtime.shutdown_background();
    result
}

fn dispatch(cli: Cli) -> Result<i32, CliError> {
    match cli.command {
        Command::Run(args) => block_on(commands::run::run(args)),
        Command::Start(args) => block_on(commands::start::run(args)),
        Command::Ls(args) => commands::ls::run(args),
        Command::Inspect(args) => commands::inspect::run(args),
        Command::Attach(args) => block_on(commands::attach::run(args)),
        Command::Exec(args) => block_on(commands::exec::run(args)),
        Command::Logs(args) => block_on(commands::logs::run(args)),
        Command::Send(args) => block_on(commands::send::run(args)),
        Command::Capture(args) => block_on(commands::capture::run(args)),
        Command::Stop(args) => block_on(commands::stop::run(args)),
        Command::Kill(args) => block_on(commands::kill::run(args)),
        Command::Rm(args) => block_on(commands::rm::run(args)),
        Command::Diff(args) => block_on(commands::diff::run(args)),
        Command::Merge(args) => block_on(commands::merge::run(args)),
        Command::Apply(args) => block_on(commands::apply::run(args)),
        Command::Discard(args) => block_on(commands::discard::run(args)),
        Command::Sync(args) => block_on(commands::sync::run(args)),
        Command::Clean(args) => block_on(commands::clean::run(args)),
        Command::Agents(args) => commands::agents::run(args),
        Command::Image(command) => block_on(commands::image::run(command)),
        Command::Doctor(args) => block_on(commands::doctor::run(args)),
        Command::Verify(args) => block_on(commands::verify::run(args)),
        Command::Config(command) => commands::config::run(command),
        Command::Net(command) => commands::net::run(command),
        Command::Secret(command) => commands::secret::run(command),
        Command::Login(args) => block_on(commands::login::login(args)),
        Command::Logout(args) => commands::login::logout(args),
        Command::Completions(args) => commands::completions::run(args),
        Command::Man => commands::completions::man(),
        Command::NativeSession(args) => kennel_lib::native_session::pane_main(&args.dir, &args.id),
    }
}
