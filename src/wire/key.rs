//! Tree keys: `(object id, item type, offset)`, ordered in that order.

use zerocopy::little_endian::U64;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Encoded length of a key on disk.
pub const KEY_LEN: usize = core::mem::size_of::<KeyBytes>();

/// A tree key. Every tree uses the same key so that one B+tree implementation (and one copy
/// of its code in flash) serves all of them; a tree gives its own meaning to the three fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Key {
    /// Object the item belongs to (inode number; for the free-space tree, the extent start).
    pub id: u64,
    /// Item type within the object.
    pub kind: u8,
    /// Position within the object (file offset, name hash, sequence number, …).
    pub offset: u64,
}

impl Key {
    /// The smallest key.
    pub const MIN: Key = Key {
        id: 0,
        kind: 0,
        offset: 0,
    };
    /// The largest key.
    pub const MAX: Key = Key {
        id: u64::MAX,
        kind: u8::MAX,
        offset: u64::MAX,
    };

    /// Build a key.
    pub const fn new(id: u64, kind: u8, offset: u64) -> Self {
        Key { id, kind, offset }
    }
}

/// The order of two values known to differ: `Less` if the first is below the second.
#[inline(always)]
fn less_or_greater(less: bool) -> core::cmp::Ordering {
    if less {
        core::cmp::Ordering::Less
    } else {
        core::cmp::Ordering::Greater
    }
}

impl Ord for Key {
    /// By `id`, then `kind`, then `offset`.
    // One out-of-line copy: every tree search and cursor step compares keys.
    #[inline(never)]
    fn cmp(&self, other: &Self) -> core::cmp::Ordering {
        // Field by field, each an equality test then one ordered compare (smaller on Thumb
        // than the tuple compare, which works out both `<` and `>` of every u64).
        if self.id != other.id {
            return less_or_greater(self.id < other.id);
        }
        if self.kind != other.kind {
            return less_or_greater(self.kind < other.kind);
        }
        if self.offset == other.offset {
            return core::cmp::Ordering::Equal;
        }
        less_or_greater(self.offset < other.offset)
    }
}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<core::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// The on-disk encoding of a [`Key`] (17 bytes, little-endian, unaligned).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct KeyBytes {
    /// [`Key::id`].
    pub id: U64,
    /// [`Key::kind`].
    pub kind: u8,
    /// [`Key::offset`].
    pub offset: U64,
}

impl From<Key> for KeyBytes {
    fn from(k: Key) -> Self {
        KeyBytes {
            id: k.id.into(),
            kind: k.kind,
            offset: k.offset.into(),
        }
    }
}

impl From<&KeyBytes> for Key {
    fn from(k: &KeyBytes) -> Self {
        Key {
            id: k.id.get(),
            kind: k.kind,
            offset: k.offset.get(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_is_id_kind_offset() {
        assert!(Key::new(1, 9, 9) < Key::new(2, 0, 0));
        assert!(Key::new(1, 1, 9) < Key::new(1, 2, 0));
        assert!(Key::new(1, 1, 1) < Key::new(1, 1, 2));
        assert_eq!(KEY_LEN, 17);
        let k = Key::new(0x0102_0304_0506_0708, 3, u64::MAX - 1);
        assert_eq!(Key::from(&KeyBytes::from(k)), k);
    }
}
