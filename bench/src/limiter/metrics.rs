//! Figures of merit from a tenant's busy-time series: share over a window, convergence time,
//! longest overshoot. Pure functions, so the harness's arithmetic is tested on its own.

/// A tenant's cumulative busy ns at monotonic instants (ns), in time order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BusySeries {
    points: Vec<(u64, u64)>,
}

impl BusySeries {
    /// Appends a point; out-of-order or decreasing points are ignored.
    pub fn push(&mut self, at_ns: u64, busy_ns: u64) {
        if let Some(&(last_at, last_busy)) = self.points.last() {
            if at_ns <= last_at {
                return;
            }
            self.points.push((at_ns, busy_ns.max(last_busy)));
        } else {
            self.points.push((at_ns, busy_ns));
        }
    }

    /// Cumulative busy at `at_ns`, interpolated linearly between points.
    pub fn busy_at(&self, at_ns: u64) -> f64 {
        let Some(&(first_at, first_busy)) = self.points.first() else {
            return 0.0;
        };
        if at_ns <= first_at {
            return first_busy as f64;
        }
        let after = self.points.partition_point(|&(t, _)| t < at_ns);
        match (
            self.points.get(after.wrapping_sub(1)),
            self.points.get(after),
        ) {
            (Some(&(t0, b0)), Some(&(t1, b1))) => {
                let f = (at_ns - t0) as f64 / (t1 - t0) as f64;
                b0 as f64 + f * (b1 as f64 - b0 as f64)
            }
            (Some(&(_, b)), None) => b as f64,
            _ => first_busy as f64,
        }
    }

    /// Share of the device in `[from_ns, to_ns]` (0..=1 on a device that runs one kernel at a
    /// time).
    pub fn share(&self, from_ns: u64, to_ns: u64) -> f64 {
        if to_ns <= from_ns {
            return 0.0;
        }
        (self.busy_at(to_ns) - self.busy_at(from_ns)) / (to_ns - from_ns) as f64
    }

    /// The start of the first interval between points in which the tenant kept the device
    /// busy more than `min_share` of the time: when it really started running kernels, after
    /// its process and driver start-up (`None`: it never did).
    pub fn started_busy_ns(&self, min_share: f64) -> Option<u64> {
        self.points
            .windows(2)
            .find(|pair| {
                let ((t0, b0), (t1, b1)) = (pair[0], pair[1]);
                (b1 - b0) as f64 > min_share * (t1 - t0) as f64
            })
            .map(|pair| pair[0].0)
    }

    /// First and last instants of the series.
    pub fn span(&self) -> Option<(u64, u64)> {
        Some((self.points.first()?.0, self.points.last()?.0))
    }
}

/// Seconds from `start_ns` to the start of the first sliding window of `window_ns` (stepped by
/// half a window) whose share is within `enter_pp` of `cap`, after which every window stays
/// within `stay_pp` up to `end_ns`. `None`: never settled. Two bands, because a converged limiter still shows
/// window-to-window noise (a kernel more or less in a window) that is not a failure to converge.
pub fn convergence_s(
    series: &BusySeries,
    start_ns: u64,
    end_ns: u64,
    cap: f64,
    (enter_pp, stay_pp): (f64, f64),
    window_ns: u64,
) -> Option<f64> {
    let step = (window_ns / 2).max(1);
    let mut settled_at: Option<u64> = None;
    let mut at = start_ns;
    while at + window_ns <= end_ns {
        let error_pp = (series.share(at, at + window_ns) - cap).abs() * 100.0;
        match settled_at {
            Some(_) if error_pp > stay_pp => settled_at = None,
            None if error_pp <= enter_pp => settled_at = Some(at),
            _ => {}
        }
        at += step;
    }
    settled_at.map(|t| (t - start_ns) as f64 / 1e9)
}

/// Seconds from `start_ns` to the end of the first window of `window_ns` (stepped by half a
/// window) whose share is at most `enter`, after which every window stays at most `stay`.
/// `None`: the share never came down for good.
pub fn came_down_s(
    series: &BusySeries,
    start_ns: u64,
    end_ns: u64,
    (enter, stay): (f64, f64),
    window_ns: u64,
) -> Option<f64> {
    let step = (window_ns / 2).max(1);
    let mut down_at: Option<u64> = None;
    let mut at = start_ns;
    while at + window_ns <= end_ns {
        let share = series.share(at, at + window_ns);
        match down_at {
            Some(_) if share > stay => down_at = None,
            None if share <= enter => down_at = Some(at + window_ns),
            _ => {}
        }
        at += step;
    }
    down_at.map(|t| (t - start_ns) as f64 / 1e9)
}

/// Longest stretch, in seconds, of consecutive `window_ns` windows in `[start_ns, end_ns]`
/// whose share exceeds `cap + margin_pp`.
pub fn longest_overshoot_s(
    series: &BusySeries,
    start_ns: u64,
    end_ns: u64,
    cap: f64,
    margin_pp: f64,
    window_ns: u64,
) -> f64 {
    let mut longest = 0u64;
    let mut current = 0u64;
    let mut at = start_ns;
    while at + window_ns <= end_ns {
        if series.share(at, at + window_ns) > cap + margin_pp / 100.0 {
            current += window_ns;
            longest = longest.max(current);
        } else {
            current = 0;
        }
        at += window_ns;
    }
    longest as f64 / 1e9
}

/// Median of `values` (0 for none).
pub fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    /// A tenant busy at `early` share for the first `switch` seconds, then at `late`.
    fn series(early: f64, late: f64, switch: u64, seconds: u64) -> BusySeries {
        let mut s = BusySeries::default();
        let mut busy = 0.0;
        for tenth in 0..=seconds * 10 {
            let share = if tenth < switch * 10 { early } else { late };
            s.push(tenth * S / 10, busy as u64);
            busy += share * (S / 10) as f64;
        }
        s
    }

    #[test]
    fn share_is_busy_time_over_wall_time() {
        let s = series(0.3, 0.3, 0, 5);
        assert!((s.share(S, 4 * S) - 0.3).abs() < 1e-9);
        assert!(
            (s.share(S / 20, S / 20 + S / 10) - 0.3).abs() < 1e-9,
            "interpolated"
        );
    }

    #[test]
    fn convergence_is_when_the_share_settles_within_tolerance() {
        let s = series(0.9, 0.3, 2, 8);
        let t = convergence_s(&s, 0, 8 * S, 0.3, (3.0, 6.0), S).expect("settles");
        assert!((t - 2.0).abs() <= 0.5, "settled at {t}");
        let never = series(0.9, 0.5, 2, 8);
        assert_eq!(convergence_s(&never, 0, 8 * S, 0.3, (3.0, 6.0), S), None);
        // Noise inside the wider band after entering the narrow one is still converged.
        let noisy = series(0.9, 0.34, 2, 4);
        let t = convergence_s(&noisy, 0, 4 * S, 0.3, (3.0, 6.0), S);
        assert_eq!(t, None, "34 % never enters ±3 points of 30 %");
        let near = series(0.9, 0.32, 2, 4);
        assert!(convergence_s(&near, 0, 4 * S, 0.3, (3.0, 6.0), S).is_some());
    }

    #[test]
    fn a_series_starts_being_busy_where_its_share_first_rises() {
        let mut s = BusySeries::default();
        for (at, busy) in [(10, 0), (20, 0), (30, 1), (40, 9), (50, 15)] {
            s.push(at, busy);
        }
        assert_eq!(
            s.started_busy_ns(0.05),
            Some(20),
            "1 ns in 10 is start-up noise at 10 %"
        );
        assert_eq!(s.started_busy_ns(0.5), Some(30));
        assert_eq!(BusySeries::default().started_busy_ns(0.05), None);
    }

    #[test]
    fn came_down_is_the_end_of_the_first_window_below_the_band() {
        let s = series(0.9, 0.3, 2, 6);
        let t = came_down_s(&s, 2 * S, 6 * S, (0.35, 0.4), S / 2).expect("comes down");
        assert!((t - 0.5).abs() < 1e-9, "down after {t} s");
        assert_eq!(came_down_s(&s, 0, 2 * S, (0.35, 0.4), S / 2), None);
    }

    #[test]
    fn overshoot_counts_the_longest_run_above_cap_plus_margin() {
        let s = series(0.6, 0.3, 2, 6);
        let over = longest_overshoot_s(&s, 0, 6 * S, 0.3, 10.0, S / 4);
        assert!((over - 2.0).abs() < 1e-9, "overshoot {over}");
        assert_eq!(
            longest_overshoot_s(&series(0.35, 0.35, 0, 4), 0, 4 * S, 0.3, 10.0, S / 4),
            0.0
        );
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&mut []), 0.0);
    }
}
