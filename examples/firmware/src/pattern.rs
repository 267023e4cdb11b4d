//! The bytes every workload write carries, derivable from a 64-bit seed printed in the log.
//!
//! Byte `i` of a write with seed `s` is byte `i % 8` (little-endian) of
//! `splitmix64(s + i / 8)`. The host checker (`cli/src/bin/bonsaifs-fwcheck.rs`) computes
//! the same function; keep the two in step.

/// SplitMix64's output function (a bijective 64-bit mixer).
pub const fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Fill `buf` with the pattern of `seed`, starting at pattern byte `start`.
pub fn fill(buf: &mut [u8], seed: u64, start: u64) {
    for (i, b) in buf.iter_mut().enumerate() {
        let n = start + i as u64;
        *b = (splitmix64(seed.wrapping_add(n / 8)) >> (8 * (n % 8))) as u8;
    }
}

/// Whether `buf` holds the pattern of `seed` from pattern byte `start`; the first mismatching
/// index otherwise.
pub fn check(buf: &[u8], seed: u64, start: u64) -> Result<(), usize> {
    for (i, &b) in buf.iter().enumerate() {
        let n = start + i as u64;
        if b != (splitmix64(seed.wrapping_add(n / 8)) >> (8 * (n % 8))) as u8 {
            return Err(i);
        }
    }
    Ok(())
}
