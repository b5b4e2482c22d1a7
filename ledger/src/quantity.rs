//! Memory sizes written as Kubernetes quantities.
//!
//! A bare number means MiB, as in HAMi's `nvidia.com/gpumem`, so that users moving from HAMi keep
//! their numbers. Anything with a suffix follows Kubernetes: `Ki Mi Gi Ti Pi` are powers of 1024,
//! `k M G T P` powers of 1000.

use thiserror::Error;

const MIB: u64 = 1 << 20;

/// Why a memory quantity was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum QuantityError {
    #[error("empty value")]
    Empty,
    #[error("\"{0}\" is not a whole number followed by an optional unit")]
    Malformed(String),
    #[error("unknown unit \"{0}\"")]
    UnknownUnit(String),
    #[error("must be greater than zero")]
    Zero,
    #[error("too large")]
    Overflow,
}

/// Parses a memory quantity into bytes (`"512"` is 512 MiB, `"4Gi"` is 4 GiB, `"1G"` is 10^9 bytes).
pub fn parse_memory_bytes(text: &str) -> Result<u64, QuantityError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(QuantityError::Empty);
    }
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(digits_end);
    if digits.is_empty() {
        return Err(QuantityError::Malformed(text.to_owned()));
    }
    let number: u64 = digits.parse().map_err(|_| QuantityError::Overflow)?;
    let multiplier: u64 = match unit {
        "" => MIB,
        "Ki" => 1 << 10,
        "Mi" => MIB,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "P" => 1_000_000_000_000_000,
        other if other.starts_with('.') => return Err(QuantityError::Malformed(text.to_owned())),
        other => return Err(QuantityError::UnknownUnit(other.to_owned())),
    };
    let bytes = number
        .checked_mul(multiplier)
        .ok_or(QuantityError::Overflow)?;
    if bytes == 0 {
        return Err(QuantityError::Zero);
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_number_is_mebibytes_like_hami_gpumem() {
        assert_eq!(parse_memory_bytes("512"), Ok(512 * MIB));
        assert_eq!(parse_memory_bytes(" 3000 "), Ok(3000 * MIB));
    }

    #[test]
    fn binary_and_decimal_suffixes_follow_kubernetes() {
        assert_eq!(parse_memory_bytes("4Gi"), Ok(4 << 30));
        assert_eq!(parse_memory_bytes("1536Mi"), Ok(1536 * MIB));
        assert_eq!(parse_memory_bytes("64Ki"), Ok(64 << 10));
        assert_eq!(parse_memory_bytes("1G"), Ok(1_000_000_000));
        assert_eq!(parse_memory_bytes("500M"), Ok(500_000_000));
        assert_eq!(parse_memory_bytes("2k"), Ok(2_000));
    }

    #[test]
    fn malformed_values_are_refused_with_the_reason() {
        assert_eq!(parse_memory_bytes(""), Err(QuantityError::Empty));
        assert_eq!(
            parse_memory_bytes("Gi"),
            Err(QuantityError::Malformed("Gi".into()))
        );
        assert_eq!(
            parse_memory_bytes("1.5Gi"),
            Err(QuantityError::Malformed("1.5Gi".into()))
        );
        assert_eq!(
            parse_memory_bytes("4GB"),
            Err(QuantityError::UnknownUnit("GB".into()))
        );
        assert_eq!(
            parse_memory_bytes("-1"),
            Err(QuantityError::Malformed("-1".into()))
        );
        assert_eq!(parse_memory_bytes("0Mi"), Err(QuantityError::Zero));
        assert_eq!(
            parse_memory_bytes("99999999999999999999"),
            Err(QuantityError::Overflow)
        );
        assert_eq!(
            parse_memory_bytes("20000000Pi"),
            Err(QuantityError::Overflow)
        );
    }
}
