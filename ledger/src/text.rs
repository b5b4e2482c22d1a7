//! Fixed-size, NUL-padded ASCII fields (device UUIDs, container ids).
//!
//! Only printable, non-space ASCII is stored, so a field read back from a damaged file is either
//! a clean string or refused; it never carries control bytes into logs or paths.

use thiserror::Error;

/// Why a string cannot be stored in (or was not read from) a fixed text field.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum TextError {
    #[error("is empty")]
    Empty,
    #[error("is {len} bytes, at most {max} fit")]
    TooLong { len: usize, max: usize },
    #[error("contains a byte that is not printable ASCII ({byte:#04x})")]
    NotPrintable { byte: u8 },
    #[error("has bytes after its NUL padding")]
    BadPadding,
}

fn is_allowed(byte: u8) -> bool {
    byte.is_ascii_graphic()
}

/// Checks `text` for a field of `max` bytes.
pub(crate) fn check(text: &str, max: usize) -> Result<(), TextError> {
    if text.is_empty() {
        return Err(TextError::Empty);
    }
    if text.len() > max {
        return Err(TextError::TooLong {
            len: text.len(),
            max,
        });
    }
    match text.bytes().find(|&b| !is_allowed(b)) {
        Some(byte) => Err(TextError::NotPrintable { byte }),
        None => Ok(()),
    }
}

/// Writes `text` NUL-padded into `field`, after [`check`].
pub(crate) fn encode(text: &str, field: &mut [u8]) -> Result<(), TextError> {
    check(text, field.len())?;
    field.fill(0);
    field[..text.len()].copy_from_slice(text.as_bytes());
    Ok(())
}

/// Reads a NUL-padded field back; refuses empty fields, junk after the padding and
/// non-printable bytes.
pub(crate) fn decode(field: &[u8]) -> Result<String, TextError> {
    let len = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    if field[len..].iter().any(|&b| b != 0) {
        return Err(TextError::BadPadding);
    }
    let text = &field[..len];
    if text.is_empty() {
        return Err(TextError::Empty);
    }
    if let Some(&byte) = text.iter().find(|&&b| !is_allowed(b)) {
        return Err(TextError::NotPrintable { byte });
    }
    // Printable ASCII is valid UTF-8.
    Ok(text.iter().map(|&b| char::from(b)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_a_uuid() {
        let mut field = [0u8; 64];
        encode("GPU-8f2c1d", &mut field).unwrap();
        assert_eq!(decode(&field).unwrap(), "GPU-8f2c1d");
    }

    #[test]
    fn refuses_bad_fields() {
        let mut field = [0u8; 8];
        assert_eq!(encode("", &mut field), Err(TextError::Empty));
        assert_eq!(
            encode("123456789", &mut field),
            Err(TextError::TooLong { len: 9, max: 8 })
        );
        assert_eq!(
            encode("a b", &mut field),
            Err(TextError::NotPrintable { byte: b' ' })
        );
        assert_eq!(decode(b"ab\0c\0\0\0\0"), Err(TextError::BadPadding));
        assert_eq!(decode(&[0u8; 8]), Err(TextError::Empty));
        assert_eq!(
            decode(b"a\x07\0\0\0\0\0\0"),
            Err(TextError::NotPrintable { byte: 7 })
        );
    }
}
