//! The virtual view of a device: what memory queries report inside a container.
//!
//! HAMi-core returned `CUDA_ERROR_INVALID_VALUE` once usage passed the cap (breaking pods with
//! small caps) and never consulted the real free memory. Here total is the cap, free is the
//! smaller of what the cap leaves and what the device really has, and nothing underflows.

/// Memory as reported to the application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryView {
    pub total: u64,
    pub free: u64,
    pub used: u64,
}

/// The view of a device with cap `limit` (`u64::MAX`: uncapped), container usage `used` and
/// the driver's real `real_total`/`real_free`.
pub fn memory_view(limit: u64, used: u64, real_total: u64, real_free: u64) -> MemoryView {
    let total = limit.min(real_total);
    let free = total.saturating_sub(used).min(real_free);
    MemoryView {
        total,
        free,
        used: total - free,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn a_capped_device_reports_the_slice() {
        let view = memory_view(1024 * MIB, 256 * MIB, 80 * 1024 * MIB, 70 * 1024 * MIB);
        assert_eq!(
            view,
            MemoryView {
                total: 1024 * MIB,
                free: 768 * MIB,
                used: 256 * MIB
            }
        );
    }

    #[test]
    fn free_never_exceeds_what_the_device_really_has() {
        let view = memory_view(1024 * MIB, 0, 80 * 1024 * MIB, 100 * MIB);
        assert_eq!(view.free, 100 * MIB);
    }

    #[test]
    fn usage_above_the_cap_reports_zero_free_not_an_error() {
        let view = memory_view(300 * MIB, 345 * MIB, 80 * 1024 * MIB, 70 * 1024 * MIB);
        assert_eq!(
            view,
            MemoryView {
                total: 300 * MIB,
                free: 0,
                used: 300 * MIB
            }
        );
    }

    #[test]
    fn uncapped_reports_the_device() {
        let view = memory_view(u64::MAX, 10 * MIB, 1024 * MIB, 500 * MIB);
        assert_eq!(view.total, 1024 * MIB);
        assert_eq!(view.free, 500 * MIB);
    }

    proptest! {
        #[test]
        fn free_plus_used_is_total_and_within_bounds(limit: u64, used: u64, real_total: u64, real_free: u64) {
            let view = memory_view(limit, used, real_total, real_free);
            prop_assert!(view.total <= limit && view.total <= real_total);
            prop_assert!(view.free <= view.total && view.free <= real_free);
            prop_assert_eq!(view.free + view.used, view.total);
        }
    }
}
