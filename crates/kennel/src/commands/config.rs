//! `kennel config show` and `kennel config trust`.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::cli::JsonFlag;
use kennel_lib::context::Context;
use kennel_lib::error::CliError;

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the merged configuration
    Show(ShowArgs),
    /// Trust a project config file's exact content (it may then widen policy)
    Trust(TrustArgs),
    /// Print the paths kennel reads config from and keeps data in
    Paths(PathsArgs),
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Say where each value came from
    #[arg(long)]
    pub origin: bool,
    #[command(flatten)]
    pub json: JsonFlag,
}

#[derive(Debug, Args)]
pub struct TrustArgs {
    /// The file to trust (default: .kennel.toml of the current workspace)
    pub file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct PathsArgs {
    #[command(flatten)]
    pub json: JsonFlag,
}

pub fn run(command: ConfigCommand) -> Result<i32, CliError> {
    match command {
        ConfigCommand::Show(args) => show(args),
        ConfigCommand::Trust(args) => trust(args),
        ConfigCommand::Paths(args) => paths(args),
    }
}

fn show(args: ShowArgs) -> Result<i32, CliError> {
    let context = Context::load_here()?;
    let entries = context.config.entries();
    if args.json.json {
        let json: Vec<_> = entries
            .iter()
            .map(|(key, value, origin)| {
                let value: toml::Value = toml::from_str::<toml::Table>(&format!("v = {value}"))
                    .ok()
                    .and_then(|mut table| table.remove("v"))
                    .unwrap_or(toml::Value::String(value.clone()));
                serde_json::json!({ "key": key, "value": value, "origin": origin })
            })
            .collect();
        return crate::ui::print_json_list("entries", &json);
    }
    let width = entries
        .iter()
        .map(|(key, _, _)| key.len())
        .max()
        .unwrap_or(0);
    for (key, value, origin) in entries {
        if args.origin {
            outln!("{key:width$} = {value}    # {origin}");
        } else {
            outln!("{key} = {value}");
        }
    }
    Ok(0)
}

fn trust(args: TrustArgs) -> Result<i32, CliError> {
    let (file, digest) = kennel_lib::context::trust(args.file)?;
    kennel_lib::report::note(&format!(
        "trusted {} (sha256 {}); editing it revokes the trust",
        file.display(),
        &digest[..digest.len().min(16)]
    ));
    Ok(0)
}

fn paths(args: PathsArgs) -> Result<i32, CliError> {
    let host = kennel_core::host::HostContext::detect()?;
    let rows = [
        ("system_config", host.system_config_file()),
        ("user_config", host.user_config_file()),
        ("data_dir", host.data_dir.clone()),
        ("trust_store", host.trust_file()),
    ];
    if args.json.json {
        // In the order the text shows them.
        struct Ordered<'a>(&'a [(&'a str, PathBuf)]);
        impl serde::Serialize for Ordered<'_> {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_map(self.0.iter().map(|(name, path)| (name, path)))
            }
        }
        return crate::ui::print_json_object(&Ordered(&rows));
    } else {
        for (name, path) in rows {
            outln!("{name:14} {}", path.display());
        }
    }
    Ok(0)
}
