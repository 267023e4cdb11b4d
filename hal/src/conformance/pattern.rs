//! The data the suite writes: a function of the absolute byte position on the device and of a
//! per-write key, so that data read from the wrong sector, stale data from an earlier write, or
//! a buffer the device never filled all fail to match.

/// The filler written into read buffers before a read; a device that never fills the buffer
/// leaves this behind, and it cannot match a pattern.
pub const POISON: u8 = 0xA5;

/// Mixes a 64-bit value (the SplitMix64 finaliser): neighbouring inputs give unrelated outputs.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The 8 pattern bytes of the 8-byte word at absolute byte offset `pos` (a multiple of 8).
fn word(key: u64, pos: u64) -> [u8; 8] {
    mix(key.rotate_left(29) ^ mix(pos / 8)).to_le_bytes()
}

/// Absolute byte offset of sector `lba` (saturating: huge LBAs only appear in requests that
/// must fail, and their buffers are never compared).
fn base(lba: u64, sector_size: u32) -> u64 {
    lba.saturating_mul(u64::from(sector_size))
}

/// Fills `buf` with the pattern for sectors starting at `lba` written under `key`.
pub fn fill(buf: &mut [u8], lba: u64, sector_size: u32, key: u64) {
    let start = base(lba, sector_size);
    let mut pos = start;
    for chunk in buf.chunks_mut(8) {
        let w = word(key, pos);
        let n = chunk.len();
        if let Some(src) = w.get(..n) {
            chunk.copy_from_slice(src);
        }
        pos = pos.wrapping_add(8);
    }
}

/// The first byte of `buf` that differs from the pattern, as `(index, got, want)`.
pub fn first_mismatch(buf: &[u8], lba: u64, sector_size: u32, key: u64) -> Option<(usize, u8, u8)> {
    let mut pos = base(lba, sector_size);
    for (c, chunk) in buf.chunks(8).enumerate() {
        let w = word(key, pos);
        for (i, (&got, &want)) in chunk.iter().zip(w.iter()).enumerate() {
            if got != want {
                return Some((c * 8 + i, got, want));
            }
        }
        pos = pos.wrapping_add(8);
    }
    None
}

/// FNV-1a over `buf`: compares what two reads of the same sectors returned on a device whose
/// contents the suite did not write (a read-only device).
pub fn hash(buf: &[u8]) -> u64 {
    buf.iter().fold(0xCBF2_9CE4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_depends_on_position_and_key() {
        let mut a = [0u8; 1024];
        fill(&mut a, 3, 512, 1);
        assert_eq!(first_mismatch(&a, 3, 512, 1), None);
        // The second sector of a two-sector write equals the one-sector pattern at lba 4.
        assert_eq!(first_mismatch(&a[512..], 4, 512, 1), None);
        assert!(first_mismatch(&a, 4, 512, 1).is_some());
        assert!(first_mismatch(&a, 3, 512, 2).is_some());
        a[700] ^= 1;
        let (i, got, want) = first_mismatch(&a, 3, 512, 1).unwrap();
        assert_eq!(i, 700);
        assert_eq!(got ^ 1, want);
        assert_ne!(hash(&a[..512]), hash(&a[512..]));
        assert!(first_mismatch(&[POISON; 512], 0, 512, 1).is_some());
    }
}
