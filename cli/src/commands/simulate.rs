//! `hami simulate` (placeholder until its owner fills it in).

use clap::Args;

#[derive(Args)]
pub struct SimulateArgs {}

pub fn run(_args: SimulateArgs) -> anyhow::Result<()> {
    anyhow::bail!("not built yet")
}
