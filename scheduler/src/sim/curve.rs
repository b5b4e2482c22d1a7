//! The paper's binning: events grouped by arrived demand rounded to a whole percent of
//! capacity, averaged per bin; an empty bin borrows the bins beside it.

use super::Event;

/// The cluster at one arrived percentage, averaged over its events.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CurvePoint {
    pub arrived_pct: u32,
    /// Allocated device compute, % of capacity (the unallocated % is 100 minus this).
    pub allocated_pct: f64,
    /// Fragmentation amount, % of capacity.
    pub frag_amount_pct: f64,
    /// Fragmentation amount over free device compute, %.
    pub frag_rate_pct: f64,
}

/// One run's curve, one point per arrived percentage.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Curve {
    points: Vec<Option<CurvePoint>>,
}

#[derive(Default, Clone, Copy)]
struct Bin {
    n: u32,
    allocated: f64,
    amount: f64,
    rate: f64,
}

impl Curve {
    /// Bins `events` of a cluster with `capacity_milli` of device compute.
    pub fn from_events(events: &[Event], capacity_milli: u64) -> Self {
        let capacity = capacity_milli.max(1) as f64;
        let mut bins: Vec<Bin> = Vec::new();
        for e in events {
            let x = (100.0 * e.arrived_milli as f64 / capacity).round() as usize;
            if bins.len() <= x {
                bins.resize(x + 1, Bin::default());
            }
            let rate = if e.free_milli == 0 {
                0.0
            } else {
                100.0 * e.fragmented_milli / e.free_milli as f64
            };
            let b = &mut bins[x];
            b.n += 1;
            b.allocated += 100.0 * e.allocated_milli as f64 / capacity;
            b.amount += 100.0 * e.fragmented_milli / capacity;
            b.rate += rate;
        }
        let point = |x: usize, bins: &[&Bin]| {
            let n: u32 = bins.iter().map(|b| b.n).sum();
            (n > 0).then(|| {
                let n = f64::from(n);
                CurvePoint {
                    arrived_pct: u32::try_from(x).unwrap_or(u32::MAX),
                    allocated_pct: bins.iter().map(|b| b.allocated).sum::<f64>() / n,
                    frag_amount_pct: bins.iter().map(|b| b.amount).sum::<f64>() / n,
                    frag_rate_pct: bins.iter().map(|b| b.rate).sum::<f64>() / n,
                }
            })
        };
        let points = (0..bins.len())
            .map(|x| {
                point(x, &[&bins[x]]).or_else(|| {
                    let mut around = Vec::new();
                    if x > 0 {
                        around.push(&bins[x - 1]);
                    }
                    if let Some(b) = bins.get(x + 1) {
                        around.push(b);
                    }
                    point(x, &around)
                })
            })
            .collect();
        Curve { points }
    }

    /// The point at `arrived_pct`, if the run reached it.
    pub fn at(&self, arrived_pct: u32) -> Option<CurvePoint> {
        self.points.get(arrived_pct as usize).copied().flatten()
    }

    /// Every point, in order of arrived percentage.
    pub fn points(&self) -> impl Iterator<Item = CurvePoint> + '_ {
        self.points.iter().flatten().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(arrived: u64, allocated: u64) -> Event {
        Event {
            arrived_milli: arrived,
            allocated_milli: allocated,
            fragmented_milli: 0.0,
            free_milli: 1000 - allocated,
        }
    }

    #[test]
    fn bins_average_and_empty_bins_borrow_neighbours() {
        // Capacity 1000: arrivals at 10 %, 10.4 % (bin 10), 12 % (bin 12); bin 11 is empty.
        let events = [event(100, 100), event(104, 90), event(120, 120)];
        let c = Curve::from_events(&events, 1000);
        assert!((c.at(10).unwrap().allocated_pct - 9.5).abs() < 1e-9);
        let eleven = c.at(11).unwrap();
        assert!((eleven.allocated_pct - (10.0 + 9.0 + 12.0) / 3.0).abs() < 1e-9);
        assert_eq!(c.at(13), None);
        assert_eq!(c.at(5), None);
    }
}
