//! `hami bench_hooks` (placeholder until its owner fills it in).

use clap::Args;

#[derive(Args)]
pub struct HooksArgs {}

pub fn run(_args: HooksArgs) -> anyhow::Result<()> {
    anyhow::bail!("not built yet")
}
