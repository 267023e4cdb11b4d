//! Distinctive bytes for every write, so that a byte read back names the write it came from.
//!
//! Byte `off` of a file written by write `uid` is [`byte`]`(uid, off)`: never zero (so a hole
//! or a freshly allocated zero block never passes for data), different at every offset (a
//! block landing at the wrong place shows) and different per write (stale or foreign data —
//! bytes of an older write, of another file, of a freed block — shows).

use crate::rng::mix;

/// Eight pattern bytes for the aligned group `off / 8` of write `uid`.
fn group(uid: u32, g: u64) -> u64 {
    mix((u64::from(uid) << 40) ^ g ^ 0x5DEE_CE66_D1CE_4E5B)
}

/// Byte `i` of a group, never 0.
fn pick(h: u64, i: u64) -> u8 {
    let b = (h >> (8 * i)) as u8;
    if b == 0 {
        // A zero byte would look like a hole; the group's top bits are as random.
        ((h >> 57) as u8) | 1
    } else {
        b
    }
}

/// The byte that write `uid` puts at file offset `off` (never 0).
pub fn byte(uid: u32, off: u64) -> u8 {
    pick(group(uid, off / 8), off % 8)
}

/// The `len` bytes write `uid` puts at file offset `off`.
pub fn fill(uid: u32, off: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut h = group(uid, off / 8);
    for o in off..off + len as u64 {
        if o % 8 == 0 {
            h = group(uid, o / 8);
        }
        out.push(pick(h, o % 8));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_agrees_with_byte_and_never_writes_zero() {
        let v = fill(7, 5, 100);
        assert!(v.iter().all(|&b| b != 0));
        for (i, &b) in v.iter().enumerate() {
            assert_eq!(b, byte(7, 5 + i as u64));
        }
        assert_ne!(fill(8, 5, 100), v);
    }
}
