//! `kennel agents`: the catalog.

use clap::Args;

use crate::cli::JsonFlag;
use kennel_lib::context::Context;
use kennel_lib::error::CliError;

#[derive(Debug, Args)]
pub struct AgentsArgs {
    #[command(flatten)]
    pub json: JsonFlag,
}

pub fn run(args: AgentsArgs) -> Result<i32, CliError> {
    let context = Context::load_here()?;
    let agents: Vec<_> = context.catalog.agents().collect();
    if args.json.json {
        return crate::ui::print_json_list("agents", &agents);
    }
    let width = agents
        .iter()
        .map(|agent| agent.name.len())
        .max()
        .unwrap_or(5)
        .max(5);
    outln!("{:width$}  {:7}  DESCRIPTION", "AGENT", "RUNTIME");
    for agent in agents {
        let mut description = agent.description.clone();
        if agent.source != "built-in" {
            description.push_str(&format!(" [{}]", agent.source));
        }
        outln!(
            "{:width$}  {:7}  {}",
            agent.name,
            agent.runtime.as_str(),
            description
        );
        if !agent.caveat.is_empty() {
            outln!("{:width$}  {:7}  ! {}", "", "", agent.caveat);
        }
    }
    Ok(0)
}
