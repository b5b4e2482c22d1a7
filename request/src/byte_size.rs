//! Byte sizes as users write them in environment variables (`CUDA_DEVICE_MEMORY_LIMIT`,
//! `HAMI_FAKEGPU_MEMORY`, ...): a bare number is bytes, every suffix a power of 1024.
//!
//! HAMi-core parses `CUDA_DEVICE_MEMORY_LIMIT` with `strtoul`, so `8Gi` became an 8-byte cap and
//! garbage became "no limit" (hami-core notes §3). Here every suffix is a power of 1024 — the
//! HAMi convention (`8g` is 8 GiB) and the Kubernetes binary one (`8Gi`) agree on it, and a
//! user migrating from HAMi who writes `8G` means GiB too — and anything that is not a size is
//! an error, never a silent default.

use thiserror::Error;

/// Why a size string was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SizeError {
    #[error("empty size")]
    Empty,
    #[error("size {0:?} does not start with a decimal number")]
    NoNumber(String),
    #[error("size {0:?} has an unknown unit (use bytes or k, m, g, t with optional i, e.g. 8Gi)")]
    UnknownUnit(String),
    #[error("size {0:?} has more than 9 fractional digits")]
    TooPrecise(String),
    #[error("size {0:?} does not fit in 64 bits")]
    Overflow(String),
    #[error("size {0:?} is zero; unset the variable for no cap")]
    Zero(String),
}

/// Parses `8Gi`, `8g`, `8G`, `8192m`, `8192Mi`, `1.5GiB`, `4096` (bytes) into bytes.
///
/// Zero is refused: HAMi-core read 0 as "no limit", so accepting it as a zero cap would turn a
/// migrated configuration into a container that can allocate nothing without saying why.
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(SizeError::Empty);
    }
    let number_end = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(number_end);
    let (whole, fraction) = match number.split_once('.') {
        Some((whole, fraction)) => (whole, fraction),
        None => (number, ""),
    };
    if whole.is_empty() || fraction.contains('.') || (number.contains('.') && fraction.is_empty()) {
        return Err(SizeError::NoNumber(text.to_owned()));
    }
    if fraction.len() > 9 {
        return Err(SizeError::TooPrecise(text.to_owned()));
    }
    let multiplier =
        unit_multiplier(unit).ok_or_else(|| SizeError::UnknownUnit(text.to_owned()))?;
    let overflow = || SizeError::Overflow(text.to_owned());
    let whole: u128 = whole.parse().map_err(|_| overflow())?;
    // The fraction is scaled to nanos so `1.5Gi` is exact and `0.1` bytes rounds down.
    let nanos: u128 = if fraction.is_empty() {
        0
    } else {
        let digits: u128 = fraction
            .parse()
            .map_err(|_| SizeError::NoNumber(text.to_owned()))?;
        digits * 10u128.pow(9 - u32::try_from(fraction.len()).map_err(|_| overflow())?)
    };
    let bytes = whole
        .checked_mul(u128::from(multiplier))
        .and_then(|w| w.checked_add(nanos * u128::from(multiplier) / 1_000_000_000))
        .ok_or_else(overflow)?;
    let bytes = u64::try_from(bytes).map_err(|_| overflow())?;
    if bytes == 0 {
        return Err(SizeError::Zero(text.to_owned()));
    }
    Ok(bytes)
}

fn unit_multiplier(unit: &str) -> Option<u64> {
    let lower = unit.to_ascii_lowercase();
    let stem = lower
        .strip_suffix("ib")
        .or_else(|| lower.strip_suffix('i'))
        .or_else(|| lower.strip_suffix('b'))
        .unwrap_or(&lower);
    let power = match stem {
        "" if lower.is_empty() || lower == "b" => 0,
        "k" => 1,
        "m" => 2,
        "g" => 3,
        "t" => 4,
        _ => return None,
    };
    Some(1u64 << (10 * power))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const GIB: u64 = 1 << 30;
    const MIB: u64 = 1 << 20;

    #[test]
    fn every_documented_spelling_of_eight_gib_is_eight_gib() {
        for text in [
            "8Gi",
            "8g",
            "8G",
            "8GiB",
            "8gb",
            "8192m",
            "8192Mi",
            "8192MiB",
            "8589934592",
        ] {
            assert_eq!(parse_size(text), Ok(8 * GIB), "{text}");
        }
    }

    #[test]
    fn fractions_are_exact() {
        assert_eq!(parse_size("1.5Gi"), Ok(GIB + GIB / 2));
        assert_eq!(parse_size("0.5m"), Ok(MIB / 2));
        assert_eq!(parse_size(" 256Mi "), Ok(256 * MIB));
    }

    #[test]
    fn garbage_is_refused_with_the_reason() {
        assert_eq!(parse_size(""), Err(SizeError::Empty));
        assert!(matches!(parse_size("abc"), Err(SizeError::NoNumber(_))));
        assert!(matches!(parse_size("-1"), Err(SizeError::NoNumber(_))));
        assert!(matches!(
            parse_size("0x100"),
            Err(SizeError::UnknownUnit(_))
        ));
        assert!(matches!(parse_size("8Gx"), Err(SizeError::UnknownUnit(_))));
        assert!(matches!(parse_size("8 Gi"), Err(SizeError::UnknownUnit(_))));
        assert!(matches!(parse_size("1..5g"), Err(SizeError::NoNumber(_))));
        assert!(matches!(parse_size("5."), Err(SizeError::NoNumber(_))));
        assert!(matches!(parse_size("0"), Err(SizeError::Zero(_))));
        assert!(matches!(
            parse_size("99999999999t"),
            Err(SizeError::Overflow(_))
        ));
        assert!(matches!(
            parse_size("99999999999999999999999999999"),
            Err(SizeError::Overflow(_))
        ));
    }

    proptest! {
        #[test]
        fn never_panics(text in "\\PC*") {
            let _ = parse_size(&text);
        }

        #[test]
        fn mebibytes_round_trip(mib in 1u64..(1 << 40)) {
            prop_assert_eq!(parse_size(&format!("{mib}m")), Ok(mib * MIB));
            prop_assert_eq!(parse_size(&format!("{mib}Mi")), Ok(mib * MIB));
            prop_assert_eq!(parse_size(&format!("{mib}")), Ok(mib));
        }

        #[test]
        fn units_scale_by_1024(n in 1u64..(1 << 20), unit in prop::sample::select(vec!["k", "m", "g"])) {
            let smaller = match unit { "k" => "", "m" => "k", _ => "m" };
            let big = parse_size(&format!("{n}{unit}")).unwrap();
            let small = parse_size(&format!("{}{smaller}", n * 1024)).unwrap();
            prop_assert_eq!(big, small);
        }

        #[test]
        fn anything_accepted_is_a_positive_size(text in "[0-9]{1,4}(\\.[0-9]{1,3})?[kKmMgGtT]?i?[bB]?") {
            if let Ok(bytes) = parse_size(&text) {
                prop_assert!(bytes > 0);
            }
        }
    }
}
