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
    let mut rows = Vec::new();
    for agent in agents {
        let mut description = agent.description.clone();
        if agent.source != "built-in" {
            description.push_str(&format!(" [{}]", agent.source));
        }
        rows.push([
            agent.name.clone(),
            agent.runtime.as_str().to_string(),
            description,
        ]);
        if !agent.caveat.is_empty() {
            rows.push([String::new(), String::new(), format!("! {}", agent.caveat)]);
        }
    }
    crate::ui::write_stdout(format_args!(
        "{}",
        crate::ui::table(&["AGENT", "RUNTIME", "DESCRIPTION"], &rows)
    ));
    Ok(0)
}
