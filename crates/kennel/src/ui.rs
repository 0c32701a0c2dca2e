//! What the binary writes to stdout: a command's data, ended quietly when
//! the reader goes away.

use std::io::Write;

use kennel_lib::CliError;

/// `println!` for what a command prints on stdout (its data). A reader
/// that went away (`kennel net log | head -1`) ends kennel at once, quietly
/// and with success, as it would `cat`; `println!` would panic.
macro_rules! outln {
    () => {
        $crate::ui::write_stdout(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::ui::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// Writes to stdout (see [`outln!`]).
pub fn write_stdout(text: std::fmt::Arguments<'_>) {
    let mut stdout = std::io::stdout().lock();
    if let Err(error) = stdout.write_fmt(text) {
        stdout_failed(&error);
    }
}

/// Bytes to stdout, flushed (see [`outln!`]).
pub fn write_stdout_bytes(bytes: &[u8]) {
    let mut stdout = std::io::stdout().lock();
    if let Err(error) = stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        stdout_failed(&error);
    }
}

fn stdout_failed(error: &std::io::Error) -> ! {
    if error.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("kennel: error: cannot write to stdout: {error}");
    std::process::exit(kennel_lib::error::ExitKind::Kennel.code());
}

/// The version of the shape of every JSON document kennel prints: each
/// one is an object whose first key is `"version"`. It goes up when a
/// change could break a reader (a field removed or renamed, or its type
/// changed); new fields leave it as it is.
pub const JSON_VERSION: u32 = 1;

/// A list as a command's data: `{"version": 1, "<name>": [...]}`.
pub fn print_json_list(name: &str, items: &impl serde::Serialize) -> Result<i32, CliError> {
    struct Listed<'a, T> {
        name: &'a str,
        items: &'a T,
    }
    impl<T: serde::Serialize> serde::Serialize for Listed<'_, T> {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeMap;
            let mut map = serializer.serialize_map(Some(2))?;
            map.serialize_entry("version", &JSON_VERSION)?;
            map.serialize_entry(self.name, self.items)?;
            map.end()
        }
    }
    write_json(&Listed { name, items })
}

/// An object as a command's data: `"version": 1`, then its own fields.
pub fn print_json_object(value: &impl serde::Serialize) -> Result<i32, CliError> {
    #[derive(serde::Serialize)]
    struct Versioned<'a, T: serde::Serialize> {
        version: u32,
        #[serde(flatten)]
        value: &'a T,
    }
    write_json(&Versioned {
        version: JSON_VERSION,
        value,
    })
}

/// A Plan (`--dry-run`, `kennel inspect`; a typed one, or one recorded by
/// another kennel): it carries its own version.
pub fn print_plan(plan: &impl serde::Serialize) -> Result<i32, CliError> {
    write_json(plan)
}

/// JSON on stdout, pretty: the one way every `--json` prints. Nothing is
/// printed when it cannot be serialised.
fn write_json(value: &impl serde::Serialize) -> Result<i32, CliError> {
    let json = serde_json::to_string_pretty(value)
        .map_err(|error| CliError::kennel(format!("cannot write JSON: {error}")))?;
    outln!("{json}");
    Ok(0)
}

/// Rows under their headers, each column as wide as its widest cell, two
/// spaces between columns, the last one unpadded: the one way kennel
/// draws a table.
pub fn table<R: AsRef<[String]>>(headers: &[&str], rows: &[R]) -> String {
    let mut widths: Vec<usize> = headers
        .iter()
        .map(|header| header.chars().count())
        .collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row.as_ref()) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (cell, width) in cells.zip(&widths) {
            let pad = width.saturating_sub(cell.chars().count());
            text.push_str(cell);
            text.push_str(&" ".repeat(pad + 2));
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut headers.iter().copied());
    for row in rows {
        line(&mut row.as_ref().iter().map(String::as_str));
    }
    out
}

/// How kennel's notes and warnings look on stderr: `kennel: …`,
/// `kennel: warning: …`, `kennel: WARNING: …` for what an agent may have
/// tried. `--quiet` silences the notes; warnings and alarms always show.
pub struct Stderr {
    pub quiet: bool,
}

impl kennel_lib::report::Reporter for Stderr {
    fn note(&self, text: &str) {
        if !self.quiet {
            eprintln!("kennel: {text}");
        }
    }

    fn warn(&self, text: &str) {
        eprintln!("kennel: warning: {text}");
    }

    fn alarm(&self, text: &str) {
        eprintln!("kennel: WARNING: {text}");
    }

    /// A spinner with the latest line on a terminal (not with `-v`, which
    /// shows every line, nor `--quiet`); elsewhere, notes.
    fn progress(&self, title: &str) -> Box<dyn kennel_lib::report::Progress> {
        use std::io::IsTerminal;
        if self.quiet || kennel_lib::report::verbosity() > 0 || !std::io::stderr().is_terminal() {
            self.note(title);
            return Box::new(kennel_lib::report::Notes);
        }
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {prefix} [{elapsed}] {wide_msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        // The title without its parenthesis: the bar's line is short.
        bar.set_prefix(title.split(" (").next().unwrap_or(title).to_string());
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        Box::new(Spinner(bar))
    }
}

/// [`Stderr::progress`] on a terminal: the latest line beside a spinner,
/// cleared when the work ends.
struct Spinner(indicatif::ProgressBar);

impl kennel_lib::report::Progress for Spinner {
    fn step(&mut self, line: &str) {
        self.output(line);
    }

    fn output(&mut self, line: &str) {
        let line = kennel_lib::text::escape_controls(line.trim());
        self.0
            .set_message(line.chars().take(120).collect::<String>());
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

/// kennel's log lines (`tracing`) on stderr. Without `-v` they are the
/// library's warnings and errors, and look like every other warning:
/// `kennel: warning: …`; with `-v` they carry their time and level, for
/// debugging. Colour only on a terminal, and never with `NO_COLOR`.
pub fn init_logging(verbose: u8) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_env("KENNEL_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let colour = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(colour);
    if verbose == 0 {
        builder.event_format(Plain).init();
    } else {
        builder.init();
    }
}

/// `kennel: warning: <message> <fields>` (see [`init_logging`]).
struct Plain;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for Plain
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        context: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let level = *event.metadata().level();
        let label = if level == tracing::Level::ERROR {
            "error: "
        } else if level == tracing::Level::WARN {
            "warning: "
        } else {
            ""
        };
        write!(writer, "kennel: {label}")?;
        context
            .field_format()
            .format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

#[cfg(test)]
mod tests {
    use super::table;

    #[test]
    fn a_table_aligns_on_characters_and_leaves_the_last_column_unpadded() {
        let rows = [
            ["kennel/claude:1".to_string(), "claude".into(), "12M".into()],
            ["kennel/base:2".to_string(), "-".into(), "café".into()],
        ];
        insta::assert_snapshot!(table(&["IMAGE", "AGENT", "SIZE"], &rows), @r"
        IMAGE            AGENT   SIZE
        kennel/claude:1  claude  12M
        kennel/base:2    -       café
        ");
    }
}
