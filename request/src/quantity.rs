//! Kubernetes quantities (`resource.Quantity`), the whole grammar, and what each meaning asks
//! of one: bytes, milli-units, a whole count, and GPU memory, where a bare number means MiB
//! as in HAMi's `nvidia.com/gpumem`.
//!
//! ```text
//! quantity ::= [sign] number [suffix]
//! number   ::= digits | digits "." [digits] | "." digits
//! suffix   ::= binary (Ki Mi Gi Ti Pi Ei) | decimal (m k M G T P E) | ("e" | "E") [sign] digits
//! ```
//!
//! A quantity is kept exactly (digits × 10^e × 2^b) and rounded up only when converted, as
//! Kubernetes rounds a quantity up to a whole unit.

use thiserror::Error;

const MIB: u128 = 1 << 20;
/// Digits of a number (and of an exponent) beyond which the value cannot fit anything we use.
const MAX_DIGITS: usize = 30;
const MAX_EXPONENT: i32 = 60;

/// What a quantity may be written as, for error messages.
pub const ACCEPTED: &str = "a Kubernetes quantity: a number (512, 1.5, .5, 1e9) with an optional suffix Ki Mi Gi Ti Pi Ei (powers of 1024) or m k M G T P E (powers of 1000)";

/// A quantity that cannot be used as asked.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum QuantityError {
    #[error("{text:?} is not {ACCEPTED}")]
    Malformed { text: String },
    #[error("{text:?} is too large")]
    Overflow { text: String },
    #[error("{text:?} must be greater than zero")]
    NotPositive { text: String },
    #[error("{text:?} is not a whole number")]
    NotWhole { text: String },
}

/// A parsed quantity: `digits × 10^exp10 × 2^exp2`, negative when `negative`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantity {
    negative: bool,
    digits: u128,
    exp10: i32,
    exp2: u32,
    /// Written without a suffix or exponent (`512`, `1.5`).
    bare: bool,
}

impl Quantity {
    /// Parses `text` (surrounding blanks ignored).
    pub fn parse(text: &str) -> Result<Quantity, QuantityError> {
        let malformed = || QuantityError::Malformed {
            text: text.to_owned(),
        };
        let trimmed = text.trim();
        let (negative, rest) = split_sign(trimmed);
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, suffix) = rest.split_at(number_end);
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
            return Err(malformed());
        }
        let significant = format!("{whole}{fraction}");
        let significant = significant.trim_start_matches('0');
        if significant.len() > MAX_DIGITS {
            return Err(QuantityError::Overflow {
                text: text.to_owned(),
            });
        }
        let digits: u128 = if significant.is_empty() {
            0
        } else {
            significant.parse().map_err(|_| malformed())?
        };
        let fraction_len = i32::try_from(fraction.len()).map_err(|_| malformed())?;
        let (exp10, exp2) = match suffix {
            "" => (0, 0),
            "Ki" => (0, 10),
            "Mi" => (0, 20),
            "Gi" => (0, 30),
            "Ti" => (0, 40),
            "Pi" => (0, 50),
            "Ei" => (0, 60),
            "m" => (-3, 0),
            "k" => (3, 0),
            "M" => (6, 0),
            "G" => (9, 0),
            "T" => (12, 0),
            "P" => (15, 0),
            "E" => (18, 0),
            exponent if exponent.starts_with(['e', 'E']) => {
                let (exponent_negative, exponent_digits) = split_sign(&exponent[1..]);
                if exponent_digits.is_empty()
                    || exponent_digits.len() > 3
                    || !exponent_digits.chars().all(|c| c.is_ascii_digit())
                {
                    return Err(malformed());
                }
                let value: i32 = exponent_digits.parse().map_err(|_| malformed())?;
                if value > MAX_EXPONENT {
                    return Err(QuantityError::Overflow {
                        text: text.to_owned(),
                    });
                }
                (if exponent_negative { -value } else { value }, 0)
            }
            _ => return Err(malformed()),
        };
        Ok(Quantity {
            negative,
            digits,
            exp10: exp10 - fraction_len,
            exp2,
            bare: suffix.is_empty(),
        })
    }

    /// Written as a plain number, without a suffix or exponent.
    pub fn is_bare(&self) -> bool {
        self.bare
    }

    /// The quantity × `numerator` / `denominator`, rounded up; `None` when it does not fit.
    /// Negative quantities give `None` too (callers refuse them first).
    fn ceil_scaled(&self, numerator: u128, denominator: u128) -> Option<u128> {
        if self.negative {
            return None;
        }
        if self.digits == 0 {
            return Some(0);
        }
        let up = 10u128.checked_pow(u32::try_from(self.exp10.max(0)).ok()?)?;
        let top = self
            .digits
            .checked_mul(numerator)?
            .checked_mul(1u128.checked_shl(self.exp2)?)?
            .checked_mul(up)?;
        let down_exponent = u32::try_from((-self.exp10).max(0)).ok()?;
        match 10u128.checked_pow(down_exponent) {
            Some(down) => Some(top.div_ceil(denominator.checked_mul(down)?)),
            // Below 10^-38 of a unit, yet above zero: the next whole unit.
            None => Some(1),
        }
    }

    /// Whether the quantity × `numerator` / `denominator` is a whole number.
    fn is_whole_scaled(&self, numerator: u128, denominator: u128) -> bool {
        let down_exponent = (-self.exp10).max(0);
        let Some(down) = u32::try_from(down_exponent)
            .ok()
            .and_then(|e| 10u128.checked_pow(e))
        else {
            return self.digits == 0;
        };
        let up = u32::try_from(self.exp10.max(0))
            .ok()
            .and_then(|e| 10u128.checked_pow(e));
        let top = up
            .and_then(|up| self.digits.checked_mul(up))
            .and_then(|v| v.checked_mul(numerator))
            .and_then(|v| v.checked_mul(1u128.checked_shl(self.exp2)?));
        match (top, denominator.checked_mul(down)) {
            (Some(top), Some(bottom)) => top % bottom == 0,
            // Too large to hold: a value that large with no fractional digits left is whole.
            _ => down_exponent == 0,
        }
    }
}

fn split_sign(text: &str) -> (bool, &str) {
    match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    }
}

fn positive(text: &str, quantity: &Quantity) -> Result<(), QuantityError> {
    if quantity.negative || quantity.digits == 0 {
        return Err(QuantityError::NotPositive {
            text: text.to_owned(),
        });
    }
    Ok(())
}

fn fit(text: &str, value: Option<u128>) -> Result<u64, QuantityError> {
    value
        .and_then(|v| u64::try_from(v).ok())
        .ok_or_else(|| QuantityError::Overflow {
            text: text.to_owned(),
        })
}

/// Device memory a container asks for, in bytes: a bare number is MiB (HAMi's `gpumem`,
/// `hami.io/gpu-memory: 3000`), anything else a quantity of bytes (`1.5Gi`, `500M`, `1e9`).
/// Must be positive; a fractional byte rounds up.
pub fn gpu_memory_bytes(text: &str) -> Result<u64, QuantityError> {
    let quantity = Quantity::parse(text)?;
    positive(text, &quantity)?;
    let unit = if quantity.is_bare() { MIB } else { 1 };
    fit(text, quantity.ceil_scaled(unit, 1))
}

/// Device memory in MiB, rounded up (the scheduler's unit): [`gpu_memory_bytes`] / 2^20.
pub fn gpu_memory_mib(text: &str) -> Result<u64, QuantityError> {
    let bytes = gpu_memory_bytes(text)?;
    Ok(bytes.div_ceil(1 << 20))
}

/// A Kubernetes `memory` resource (a bare number is bytes) in MiB, rounded up.
pub fn memory_mib(text: &str) -> Result<u64, QuantityError> {
    let quantity = Quantity::parse(text)?;
    if quantity.negative {
        return Err(QuantityError::NotPositive {
            text: text.to_owned(),
        });
    }
    fit(text, quantity.ceil_scaled(1, MIB))
}

/// A Kubernetes `cpu` resource in milli-cores, rounded up (`500m` → 500, `2` → 2000).
pub fn cpu_milli(text: &str) -> Result<u64, QuantityError> {
    let quantity = Quantity::parse(text)?;
    if quantity.negative {
        return Err(QuantityError::NotPositive {
            text: text.to_owned(),
        });
    }
    fit(text, quantity.ceil_scaled(1000, 1))
}

/// A whole, non-negative count (`2`, `1k`, `20e-1`): devices, percentages.
pub fn count(text: &str) -> Result<u64, QuantityError> {
    let quantity = Quantity::parse(text)?;
    if quantity.negative && quantity.digits != 0 {
        return Err(QuantityError::NotPositive {
            text: text.to_owned(),
        });
    }
    if !quantity.is_whole_scaled(1, 1) {
        return Err(QuantityError::NotWhole {
            text: text.to_owned(),
        });
    }
    fit(text, quantity.ceil_scaled(1, 1))
}

/// `bytes` written as a quantity that [`gpu_memory_bytes`] reads back exactly: `Gi`, `Mi` or
/// `Ki` when it is a whole number of them, else with an exponent (`1000000000e0`), since a bare
/// number would mean MiB. For what one component writes and another reads (the scheduler's
/// bind annotations).
pub fn exact_bytes(bytes: u64) -> String {
    for (suffix, unit) in [("Gi", 1u64 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)] {
        if bytes.is_multiple_of(unit) {
            return format!("{}{suffix}", bytes / unit);
        }
    }
    format!("{bytes}e0")
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const GIB: u64 = 1 << 30;

    #[test]
    fn gpu_memory_accepts_every_spelling_users_write() {
        assert_eq!(gpu_memory_bytes("3000"), Ok(3000 << 20), "bare is MiB");
        assert_eq!(gpu_memory_bytes("1.5Gi"), Ok(GIB + GIB / 2));
        assert_eq!(gpu_memory_bytes("1536Mi"), Ok(1536 << 20));
        assert_eq!(gpu_memory_bytes("0.5Gi"), Ok(GIB / 2));
        assert_eq!(gpu_memory_bytes("1e9"), Ok(1_000_000_000));
        assert_eq!(gpu_memory_bytes("500M"), Ok(500_000_000));
        assert_eq!(gpu_memory_bytes("1G"), Ok(1_000_000_000));
        assert_eq!(gpu_memory_bytes(".5Gi"), Ok(GIB / 2));
        assert_eq!(gpu_memory_bytes(" 4Gi "), Ok(4 * GIB));
        assert_eq!(gpu_memory_bytes("1.5"), Ok(3 << 19), "bare 1.5 is 1.5 MiB");
        assert_eq!(gpu_memory_bytes("1500m"), Ok(2), "1.5 bytes rounds up");
        assert_eq!(gpu_memory_bytes("+2Ki"), Ok(2048));
    }

    #[test]
    fn malformed_and_non_positive_memory_is_refused_naming_the_grammar() {
        for text in [
            "", "Gi", "4GB", "1..5Gi", "1.5.5", "0x10", "4 Gi", "e3", "1e", "1e+",
        ] {
            let err = gpu_memory_bytes(text).unwrap_err();
            assert!(
                matches!(err, QuantityError::Malformed { .. }),
                "{text:?}: {err}"
            );
            assert!(err.to_string().contains("Kubernetes quantity"), "{err}");
        }
        for text in ["0", "0Mi", "-1Gi", "0.0"] {
            assert!(
                matches!(
                    gpu_memory_bytes(text),
                    Err(QuantityError::NotPositive { .. })
                ),
                "{text:?}"
            );
        }
        for text in ["99999999999999999999Ti", "1e61", "16Ei"] {
            assert!(
                matches!(gpu_memory_bytes(text), Err(QuantityError::Overflow { .. })),
                "{text:?}"
            );
        }
    }

    #[test]
    fn cpu_memory_and_counts_parse_like_kubernetes() {
        assert_eq!(cpu_milli("500m"), Ok(500));
        assert_eq!(cpu_milli("2"), Ok(2000));
        assert_eq!(cpu_milli("0.5"), Ok(500));
        assert_eq!(cpu_milli("0"), Ok(0));
        assert_eq!(memory_mib("1Gi"), Ok(1024));
        assert_eq!(memory_mib("512Mi"), Ok(512));
        assert_eq!(memory_mib("1G"), Ok(954));
        assert_eq!(
            memory_mib("1048576"),
            Ok(1),
            "a memory resource's bare number is bytes"
        );
        assert_eq!(count("3"), Ok(3));
        assert_eq!(count("1k"), Ok(1000));
        assert_eq!(count("20e-1"), Ok(2));
        assert_eq!(count("0"), Ok(0));
        assert!(matches!(count("1.5"), Err(QuantityError::NotWhole { .. })));
        assert!(matches!(
            count("-1"),
            Err(QuantityError::NotPositive { .. })
        ));
        assert!(matches!(
            memory_mib("lots"),
            Err(QuantityError::Malformed { .. })
        ));
        assert!(matches!(
            cpu_milli("1Xi"),
            Err(QuantityError::Malformed { .. })
        ));
    }

    /// An independent model of the grammar: the value as an exact fraction of bytes.
    fn model_bytes(whole: u64, fraction: &str, suffix: &str) -> Option<u128> {
        let numerator: u128 = format!("{whole}{fraction}").parse().ok()?;
        let mut denominator = 10u128.pow(fraction.len() as u32);
        let multiplier: u128 = match suffix {
            "" => 1 << 20,
            "Ki" => 1 << 10,
            "Mi" => 1 << 20,
            "Gi" => 1 << 30,
            "Ti" => 1 << 40,
            "k" => 1_000,
            "M" => 1_000_000,
            "G" => 1_000_000_000,
            "T" => 1_000_000_000_000,
            "m" => {
                denominator *= 1000;
                1
            }
            _ => unreachable!(),
        };
        Some((numerator * multiplier).div_ceil(denominator))
    }

    proptest! {
        #[test]
        fn exact_bytes_reads_back_as_the_same_bytes(bytes in 1u64..=u64::MAX >> 1) {
            prop_assert_eq!(gpu_memory_bytes(&exact_bytes(bytes)), Ok(bytes));
        }
    }

    proptest! {
        #[test]
        fn every_quantity_parses_to_the_exact_bytes_rounded_up(
            whole in 0u64..100_000,
            fraction in "[0-9]{0,4}",
            suffix in prop::sample::select(vec!["", "Ki", "Mi", "Gi", "Ti", "k", "M", "G", "T", "m"]),
        ) {
            let text = if fraction.is_empty() {
                format!("{whole}{suffix}")
            } else {
                format!("{whole}.{fraction}{suffix}")
            };
            let expected = model_bytes(whole, &fraction, suffix).unwrap();
            let got = gpu_memory_bytes(&text);
            if expected == 0 {
                prop_assert!(matches!(got, Err(QuantityError::NotPositive { .. })), "{}", text);
            } else {
                prop_assert_eq!(got, Ok(u64::try_from(expected).unwrap()), "{}", text);
            }
        }

        #[test]
        fn exponents_are_powers_of_ten(mantissa in 1u64..1000, exponent in 0i32..12) {
            let text = format!("{mantissa}e{exponent}");
            prop_assert_eq!(
                gpu_memory_bytes(&text),
                Ok(mantissa * 10u64.pow(exponent as u32))
            );
        }

        #[test]
        fn nothing_panics(text in "\\PC{0,40}") {
            let _ = gpu_memory_bytes(&text);
            let _ = cpu_milli(&text);
            let _ = count(&text);
            let _ = memory_mib(&text);
        }
    }
}
