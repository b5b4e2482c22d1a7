//! Kubernetes resource quantities (`500m`, `2`, `1Gi`, `512Mi`, `1G`) as the extender
//! needs them: CPU in milli-cores, memory in MiB, counts as whole numbers.

use thiserror::Error;

/// A quantity the extender cannot read.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum QuantityError {
    #[error(
        "`{0}` is not a quantity (expected digits with an optional suffix such as m, Ki, Mi, Gi, k, M, G)"
    )]
    Malformed(String),
    #[error("`{0}` is too large")]
    Overflow(String),
    #[error("`{0}` is not a whole number")]
    NotWhole(String),
}

/// Splits `12.5Gi` into (12.5 as numerator/denominator, "Gi").
fn split(text: &str) -> Result<(u128, u128, &str), QuantityError> {
    let text = text.trim();
    let end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(end);
    let bad = || QuantityError::Malformed(text.to_owned());
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && frac.is_empty() || frac.len() > 9 {
        return Err(bad());
    }
    let digits = format!("{whole}{frac}");
    let numerator: u128 = digits.parse().map_err(|_| bad())?;
    Ok((numerator, 10u128.pow(frac.len() as u32), unit))
}

fn multiplier(unit: &str, text: &str) -> Result<(u128, u128), QuantityError> {
    Ok(match unit {
        "" => (1, 1),
        "m" => (1, 1000),
        "k" => (1_000, 1),
        "M" => (1_000_000, 1),
        "G" => (1_000_000_000, 1),
        "T" => (1_000_000_000_000, 1),
        "Ki" => (1 << 10, 1),
        "Mi" => (1 << 20, 1),
        "Gi" => (1 << 30, 1),
        "Ti" => (1 << 40, 1),
        _ => return Err(QuantityError::Malformed(text.to_owned())),
    })
}

/// Value × `scale`, rounded up, as u64.
fn scaled(text: &str, scale: u128, divide: u128) -> Result<u64, QuantityError> {
    let (num, den, unit) = split(text)?;
    let (mul, div) = multiplier(unit, text)?;
    let over = || QuantityError::Overflow(text.trim().to_owned());
    let top = num
        .checked_mul(mul)
        .and_then(|v| v.checked_mul(scale))
        .ok_or_else(over)?;
    let bottom = den * div * divide;
    u64::try_from(top.div_ceil(bottom)).map_err(|_| over())
}

/// CPU in milli-cores (`500m` → 500, `2` → 2000).
pub fn cpu_milli(text: &str) -> Result<u64, QuantityError> {
    scaled(text, 1000, 1)
}

/// Memory in MiB, rounded up (`1Gi` → 1024, `1G` → 954).
pub fn memory_mib(text: &str) -> Result<u64, QuantityError> {
    scaled(text, 1, 1 << 20)
}

/// A whole count (`2` → 2); extended resources must be whole.
pub fn count(text: &str) -> Result<u64, QuantityError> {
    let (num, den, unit) = split(text)?;
    let (mul, div) = multiplier(unit, text)?;
    let top = num * mul;
    if top % (den * div) != 0 {
        return Err(QuantityError::NotWhole(text.trim().to_owned()));
    }
    u64::try_from(top / (den * div)).map_err(|_| QuantityError::Overflow(text.trim().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_memory_and_counts_parse_like_kubernetes() {
        assert_eq!(cpu_milli("500m"), Ok(500));
        assert_eq!(cpu_milli("2"), Ok(2000));
        assert_eq!(cpu_milli("0.5"), Ok(500));
        assert_eq!(memory_mib("1Gi"), Ok(1024));
        assert_eq!(memory_mib("512Mi"), Ok(512));
        assert_eq!(memory_mib("1G"), Ok(954));
        assert_eq!(memory_mib("1048576"), Ok(1));
        assert_eq!(count("3"), Ok(3));
        assert_eq!(count("1k"), Ok(1000));
        assert_eq!(count("1.5"), Err(QuantityError::NotWhole("1.5".into())));
        assert!(matches!(
            memory_mib("lots"),
            Err(QuantityError::Malformed(_))
        ));
        assert!(matches!(cpu_milli("1Xi"), Err(QuantityError::Malformed(_))));
        assert!(matches!(
            memory_mib("99999999999999999999Ti"),
            Err(QuantityError::Overflow(_))
        ));
    }
}
