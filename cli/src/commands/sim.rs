//! `hami sim` (placeholder until its owner fills it in).

use clap::Args;

#[derive(Args)]
pub struct SimArgs {}

pub fn run(_args: SimArgs) -> anyhow::Result<()> {
    anyhow::bail!("not built yet")
}
