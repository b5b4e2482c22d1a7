//! `hami bench`: dispatch to one benchmark per file.

use clap::{Args, Subcommand};

#[derive(Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    which: Which,
}

#[derive(Subcommand)]
enum Which {
    /// Added cost of libhami.so per driver call against the same driver called directly.
    Hooks(super::bench_hooks::HooksArgs),
    /// Compute-cap accuracy: real processes under `hami run` on the simulated device.
    Limiter(super::bench_limiter::LimiterArgs),
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.which {
        Which::Hooks(a) => super::bench_hooks::run(a),
        Which::Limiter(a) => super::bench_limiter::run(a),
    }
}
