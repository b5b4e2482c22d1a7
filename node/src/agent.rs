//! The node agent behind `hami-node` (stub while the backstop lands).

use clap::Parser;

/// `hami-node` flags.
#[derive(Debug, Parser)]
pub struct AgentArgs {}

pub fn run(_args: AgentArgs) -> anyhow::Result<()> {
    anyhow::bail!("not built yet")
}
