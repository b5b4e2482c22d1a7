//! `hami bench_limiter` (placeholder until its owner fills it in).

use clap::Args;

#[derive(Args)]
pub struct LimiterArgs {}

pub fn run(_args: LimiterArgs) -> anyhow::Result<()> {
    anyhow::bail!("not built yet")
}
