//! `hami`: the one command for people. Thin: each verb lives in `commands/` and calls the crates.

mod commands;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "hami",
    version,
    about = "GPU slices for containers: caps, simulation, benchmarks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The simulated device: environment and status.
    Sim(commands::sim::SimArgs),
    /// Run a program under libhami.so with a private ledger entry (no containerd needed).
    Run(commands::run::RunArgs),
    /// Live view of the node's ledger: devices, containers, caps and use.
    Top(commands::top::TopArgs),
    /// Replay a cluster trace through the placement scheduler.
    Simulate(commands::simulate::SimulateArgs),
    /// Benchmarks: hook overhead, limiter accuracy.
    Bench(commands::bench::BenchArgs),
    /// Two tenants sharing the simulated device, caps shown live.
    Demo(commands::demo::DemoArgs),
}

fn main() {
    let cli = Cli::parse();
    if let Err(error) = run(cli) {
        // `{:#}` prints the whole chain of causes on one line, never a backtrace.
        eprintln!("hami: {error:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Sim(args) => commands::sim::run(args),
        Command::Run(args) => commands::run::run(args),
        Command::Top(args) => commands::top::run(args),
        Command::Simulate(args) => commands::simulate::run(args),
        Command::Bench(args) => commands::bench::run(args),
        Command::Demo(args) => commands::demo::run(args),
    }
}
