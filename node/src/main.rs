//! `hami-node`: the node agent (`src/agent.rs`), and the sacrificial reclaim child it runs
//! (`hami-node reclaim-usage PATH...`, `src/reclaimer.rs`).

use clap::Parser;
use hami_node::agent::{self, AgentArgs};
use hami_node::reclaimer::{self, RECLAIM_COMMAND};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    // The reclaim child is spawned by the agent, not typed by people: no clap, no help text.
    if args.get(1).map(String::as_str) == Some(RECLAIM_COMMAND) {
        std::process::exit(reclaimer::run_child(&args[2..]));
    }
    agent::run(AgentArgs::parse())
}
