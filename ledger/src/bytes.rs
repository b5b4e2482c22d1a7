//! Native-endian field access in byte images of the immutable parts.
//!
//! Node and limits files are built and checked as plain byte images (written with
//! write-then-rename, read with one `read`), so their fields are placed with the offsets of the
//! `#[repr(C)]` layout structs rather than through a mapping. The files never leave the node,
//! so native byte order is the node's byte order.

/// Reads the `u64` at `offset`; the caller has checked the image length against the layout.
pub(crate) fn get_u64(image: &[u8], offset: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&image[offset..offset + 8]);
    u64::from_ne_bytes(word)
}

/// Reads the `u32` at `offset`; the caller has checked the image length against the layout.
pub(crate) fn get_u32(image: &[u8], offset: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&image[offset..offset + 4]);
    u32::from_ne_bytes(word)
}

pub(crate) fn put_u64(image: &mut [u8], offset: usize, value: u64) {
    image[offset..offset + 8].copy_from_slice(&value.to_ne_bytes());
}

pub(crate) fn put_u32(image: &mut [u8], offset: usize, value: u32) {
    image[offset..offset + 4].copy_from_slice(&value.to_ne_bytes());
}

/// FNV-1a over `image`, with the 8 bytes at `skip` (the checksum field itself) read as zero.
pub(crate) fn checksum(image: &[u8], skip: usize) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    image
        .iter()
        .enumerate()
        .fold(OFFSET_BASIS, |hash, (at, &byte)| {
            let byte = if (skip..skip + 8).contains(&at) {
                0
            } else {
                byte
            };
            (hash ^ u64::from(byte)).wrapping_mul(PRIME)
        })
}
