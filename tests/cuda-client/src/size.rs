//! Byte sizes on the command line: `64Mi`, `1Gi`, `4096`.

/// Parses a byte size with an optional binary suffix (`Ki`, `Mi`, `Gi`).
pub fn parse(text: &str) -> Result<usize, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let number: usize = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size like 64Mi"))?;
    let shift = match unit {
        "" => 0,
        "Ki" => 10,
        "Mi" => 20,
        "Gi" => 30,
        _ => {
            return Err(format!(
                "{text:?}: unknown unit {unit:?} (use Ki, Mi or Gi)"
            ));
        }
    };
    number
        .checked_mul(1 << shift)
        .filter(|bytes| *bytes > 0)
        .ok_or_else(|| format!("{text:?} is not a positive size that fits in memory"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_use_binary_units() {
        assert_eq!(parse("64Mi"), Ok(64 << 20));
        assert_eq!(parse("4096"), Ok(4096));
        assert!(parse("64MB").is_err());
        assert!(parse("0").is_err());
        assert!(parse("-1").is_err());
    }
}
