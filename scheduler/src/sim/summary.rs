//! Statistics over the seeds of one policy: the paper's headline numbers and the
//! allocation curve's median and quartiles.

use serde::Serialize;

use super::RunResult;
use crate::policy::NodePolicy;

/// Mean, sample standard deviation, median and quartiles of one quantity over seeds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Stat {
    pub mean: f64,
    pub sd: f64,
    pub median: f64,
    pub p25: f64,
    pub p75: f64,
    pub n: usize,
}

impl Stat {
    /// Statistics of `values` (all zero when empty).
    pub fn of(values: &[f64]) -> Stat {
        let n = values.len();
        if n == 0 {
            return Stat {
                mean: 0.0,
                sd: 0.0,
                median: 0.0,
                p25: 0.0,
                p75: 0.0,
                n,
            };
        }
        let mean = values.iter().sum::<f64>() / n as f64;
        let var = if n > 1 {
            values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64
        } else {
            0.0
        };
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        Stat {
            mean,
            sd: var.sqrt(),
            median: quantile(&sorted, 0.5),
            p25: quantile(&sorted, 0.25),
            p75: quantile(&sorted, 0.75),
            n,
        }
    }
}

/// Linear-interpolated quantile of sorted values.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// One policy over its seeds.
#[derive(Debug, Clone, Serialize)]
pub struct PolicySummary {
    pub policy: String,
    pub seeds: Vec<u64>,
    /// Unallocated device compute at 100 % arrived, % of capacity.
    pub unallocated_at_100: Stat,
    /// Fragmentation rate at 80 % arrived, %.
    pub frag_rate_at_80: Stat,
    /// Fragmentation amount at 80 % arrived, % of capacity.
    pub frag_amount_at_80: Stat,
    /// Allocated % at 130 % arrived (the end of the run).
    pub allocated_at_130: Stat,
    pub failed_tasks: Stat,
    pub tasks: Stat,
    /// Mean decision time, microseconds.
    pub decision_us_mean: f64,
    /// 99th percentile of decision time, microseconds.
    pub decision_us_p99: f64,
    /// Allocated % per arrived %: (x, statistics over seeds).
    pub curve: Vec<(u32, Stat)>,
}

/// Summarises the runs of one policy.
pub fn summarize(policy: NodePolicy, runs: &[RunResult]) -> PolicySummary {
    let curves: Vec<_> = runs.iter().map(RunResult::curve).collect();
    let at = |x: u32, f: fn(&super::CurvePoint) -> f64| -> Stat {
        Stat::of(
            &curves
                .iter()
                .filter_map(|c| c.at(x))
                .map(|p| f(&p))
                .collect::<Vec<_>>(),
        )
    };
    let max_x = curves
        .iter()
        .flat_map(|c| c.points().map(|p| p.arrived_pct))
        .max()
        .unwrap_or(0);
    let curve = (0..=max_x)
        .map(|x| (x, at(x, |p| p.allocated_pct)))
        .filter(|(_, s)| s.n > 0)
        .collect();
    let mut times: Vec<u64> = runs
        .iter()
        .flat_map(|r| r.decision_ns.iter().copied())
        .collect();
    times.sort_unstable();
    let p99 = times
        .get(times.len().saturating_sub(1) * 99 / 100)
        .copied()
        .unwrap_or(0);
    let mean = times.iter().sum::<u64>() as f64 / times.len().max(1) as f64;
    PolicySummary {
        policy: policy.name().to_owned(),
        seeds: runs.iter().map(|r| r.seed).collect(),
        unallocated_at_100: at(100, |p| 100.0 - p.allocated_pct),
        frag_rate_at_80: at(80, |p| p.frag_rate_pct),
        frag_amount_at_80: at(80, |p| p.frag_amount_pct),
        allocated_at_130: at(130, |p| p.allocated_pct),
        failed_tasks: Stat::of(&runs.iter().map(|r| r.failed as f64).collect::<Vec<_>>()),
        tasks: Stat::of(&runs.iter().map(|r| r.tasks as f64).collect::<Vec<_>>()),
        decision_us_mean: mean / 1000.0,
        decision_us_p99: p99 as f64 / 1000.0,
        curve,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_matches_hand_computed_values() {
        let s = Stat::of(&[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(s.mean, 2.5);
        assert!((s.sd - (5.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert_eq!(s.median, 2.5);
        assert_eq!(s.p25, 1.75);
        assert_eq!(s.p75, 3.25);
        assert_eq!(Stat::of(&[]).n, 0);
    }
}
