//! The words of the compute knobs (`hami.io/gpu-compute-policy`, `hami.io/gpu-priority`,
//! `hami run --policy/--priority`), read into the ledger's enums: one spelling for every
//! crate, case-insensitive, surrounding blanks ignored.

pub use hami_ledger::{ComputePolicy, Priority};

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
