//! `hami simulate`: replays an openb trace through the placement policies with the FGD
//! paper's protocol and prints, per policy, the unallocated devices at 100 % arrived,
//! the fragmentation at 80 % and the decision time; `--json` and `--plot` for machines
//! and people.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use hami_scheduler::plot::{Window, allocation_svg};
use hami_scheduler::policy::NodePolicy;
use hami_scheduler::sim::{self, PolicySummary};
use hami_scheduler::trace::Trace;

#[derive(Args)]
pub struct SimulateArgs {
    /// Task list (openb_pod_list_*.csv).
    #[arg(long)]
    trace: PathBuf,
    /// Node list (openb_node_list_gpu_node.csv).
    #[arg(long)]
    nodes: PathBuf,
    /// Policies, comma-separated: random, dotprod, clustering, packing, bestfit, fgd, ours,
    /// binpack, spread; `paper` = the paper's six; `all` = the six and ours.
    #[arg(long, default_value = "all")]
    policy: String,
    /// Seeds: a range `42-51`, a list `42,43`, or one seed.
    #[arg(long, default_value = "42-51")]
    seeds: String,
    /// Print one JSON object keyed by policy instead of the table.
    #[arg(long)]
    json: bool,
    /// Also write the allocation curves (median and quartiles over seeds) as SVG.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    /// Runs in parallel (default: the available cores).
    #[arg(long)]
    jobs: Option<usize>,
}

pub fn run(args: SimulateArgs) -> anyhow::Result<()> {
    let policies = parse_policies(&args.policy)?;
    let seeds = parse_seeds(&args.seeds)?;
    let trace = Trace::load(&args.nodes, &args.trace)?;
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, std::num::NonZero::get));
    let summaries = sim::evaluate(&trace, &policies, &seeds, jobs);
    if let Some(path) = &args.plot {
        let name = args
            .trace
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let title = format!("{name}: allocated vs arrived ({} seeds)", seeds.len());
        std::fs::write(path, allocation_svg(&summaries, &title, Window::default()))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if args.json {
        let object: serde_json::Map<String, serde_json::Value> = summaries
            .iter()
            .map(|s| Ok((s.policy.clone(), serde_json::to_value(s)?)))
            .collect::<Result<_, serde_json::Error>>()?;
        println!("{}", serde_json::to_string_pretty(&object)?);
    } else {
        let empty = sim::empty_cluster_fragmentation(&trace, &sim::target_workload(&trace));
        println!(
            "trace {} on {} nodes, seeds {}; empty-cluster fragmentation {empty:.2}%",
            args.trace.display(),
            trace.nodes.len(),
            args.seeds
        );
        print_table(&summaries);
    }
    Ok(())
}

fn print_table(summaries: &[PolicySummary]) {
    println!(
        "{:<11} {:>17} {:>11} {:>12} {:>10} {:>8} {:>10} {:>9}",
        "policy",
        "unalloc@100 %",
        "frag@80 %",
        "fragamt@80 %",
        "alloc@130",
        "failed",
        "decide µs",
        "p99 µs"
    );
    for s in summaries {
        println!(
            "{:<11} {:>9.2} ± {:<5.2} {:>11.1} {:>12.1} {:>10.2} {:>8.0} {:>10.1} {:>9.1}",
            s.policy,
            s.unallocated_at_100.mean,
            s.unallocated_at_100.sd,
            s.frag_rate_at_80.mean,
            s.frag_amount_at_80.mean,
            s.allocated_at_130.mean,
            s.failed_tasks.mean,
            s.decision_us_mean,
            s.decision_us_p99,
        );
    }
}

fn parse_policies(text: &str) -> anyhow::Result<Vec<NodePolicy>> {
    let mut out = Vec::new();
    for name in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match name {
            "paper" => out.extend(NodePolicy::PAPER),
            "all" => out.extend(NodePolicy::PAPER.into_iter().chain([NodePolicy::Ours])),
            other => out.push(other.parse()?),
        }
    }
    out.dedup();
    if out.is_empty() {
        bail!("no policy given");
    }
    Ok(out)
}

fn parse_seeds(text: &str) -> anyhow::Result<Vec<u64>> {
    let mut seeds = Vec::new();
    for part in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let bad = || format!("bad seed `{part}`: expected N or N-M");
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u64, u64) =
                    (a.parse().with_context(bad)?, b.parse().with_context(bad)?);
                if a > b {
                    bail!("bad seed range `{part}`: {a} > {b}");
                }
                seeds.extend(a..=b);
            }
            None => seeds.push(part.parse().with_context(bad)?),
        }
    }
    if seeds.is_empty() {
        bail!("no seed given");
    }
    Ok(seeds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_and_policies_parse_and_bad_input_is_named() {
        assert_eq!(parse_seeds("42-44,50").unwrap(), vec![42, 43, 44, 50]);
        assert!(
            parse_seeds("5-3")
                .unwrap_err()
                .to_string()
                .contains("5 > 3")
        );
        assert!(
            parse_seeds("x")
                .unwrap_err()
                .to_string()
                .contains("bad seed `x`")
        );
        assert_eq!(parse_policies("paper").unwrap().len(), 6);
        assert_eq!(
            parse_policies("fgd,ours").unwrap(),
            vec![NodePolicy::Fgd, NodePolicy::Ours]
        );
        assert!(parse_policies("nope").is_err());
    }
}
