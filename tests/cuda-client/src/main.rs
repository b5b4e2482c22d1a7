//! `hami-cuda-client`: a small CUDA program written with `cudarc` that allocates, copies,
//! launches and queries. It loads the driver at run time, so the same binary runs on the
//! simulated device (`eval "$(hami sim env)"`) and on a real GPU.

mod demo;
mod fill;
mod kernels;
mod spin;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "hami-cuda-client",
    version,
    about = "Allocate, copy, launch and query through the CUDA driver"
)]
struct Cli {
    /// Device ordinal.
    #[arg(long, default_value_t = 0, global = true)]
    device: usize,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Allocate, copy, run hami_fill and hami_spin, time them with events, and say what happened.
    Demo,
    /// Allocate in steps until the driver refuses; print JSON.
    FillUntilOom(fill::FillArgs),
    /// Launch hami_spin kernels back to back; print JSON with the launches completed.
    Spin(spin::SpinArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Demo => demo::run(cli.device),
        Command::FillUntilOom(args) => fill::run(cli.device, &args),
        Command::Spin(args) => spin::run(cli.device, &args),
    }
}
