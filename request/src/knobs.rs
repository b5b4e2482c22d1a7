//! The words of the compute knobs (`hami.io/gpu-compute-policy`, `hami.io/gpu-priority`,
//! `hami run --policy/--priority`) read into the ledger's enums, and of the device placement
//! knob (`hami.io/gpu-scheduler-policy`): one spelling for every crate, case-insensitive,
//! surrounding blanks ignored.

pub use hami_ledger::{ComputePolicy, Priority};

/// How devices that fit are chosen among (on a node by the shim, across a node's devices by
/// the scheduler).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PlacementPolicy {
    /// Fill the most committed device first, keeping whole devices free.
    #[default]
    Binpack,
    /// Use the least committed device first.
    Spread,
}

/// What a placement policy may be written as.
pub const ACCEPTED_PLACEMENT_POLICIES: &str = "binpack, spread";

/// `binpack` or `spread`; `None` for anything else.
pub fn placement_policy(text: &str) -> Option<PlacementPolicy> {
    match text.trim().to_ascii_lowercase().as_str() {
        "binpack" => Some(PlacementPolicy::Binpack),
        "spread" => Some(PlacementPolicy::Spread),
        _ => None,
    }
}

/// What a compute policy may be written as.
pub const ACCEPTED_POLICIES: &str = "hard, burst";
/// What a priority may be written as (`low` is HAMi's word for normal).
pub const ACCEPTED_PRIORITIES: &str = "high, normal, low";

/// `hard` or `burst`; `None` for anything else.
pub fn compute_policy(text: &str) -> Option<ComputePolicy> {
    match text.trim().to_ascii_lowercase().as_str() {
        "hard" => Some(ComputePolicy::Hard),
        "burst" => Some(ComputePolicy::Burst),
        _ => None,
    }
}

/// `high`, `normal` or `low` (which is `Normal`); `None` for anything else.
pub fn priority(text: &str) -> Option<Priority> {
    match text.trim().to_ascii_lowercase().as_str() {
        "high" => Some(Priority::High),
        "normal" | "low" => Some(Priority::Normal),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_read_whatever_their_case() {
        assert_eq!(compute_policy(" Burst "), Some(ComputePolicy::Burst));
        assert_eq!(compute_policy("hard"), Some(ComputePolicy::Hard));
        assert_eq!(compute_policy("soft"), None);
        assert_eq!(priority("LOW"), Some(Priority::Normal));
        assert_eq!(priority("high"), Some(Priority::High));
        assert_eq!(priority("urgent"), None);
    }
}
