//! Hostile bytes through the on-disk decoders: superblock parsing and B-tree node
//! verification. Nothing here may panic, overflow or read out of bounds, whatever the input.
//!
//! Input layout: `blocknr: u64 LE`, `owner: u8`, `level: u8`, `generation: u64 LE`, then the
//! block bytes (padded with zeros or cut to 512 and 4096 bytes). Each block is tried as is
//! (checksum path) and re-sealed, so that mutations past the checksum reach the layout checks
//! and the accessors instead of all failing on the crc.
#![no_main]

use bonsaifs::wire::{BlockHeader, BlockNr, Key, NodeRef, Superblock, SUPERBLOCK_LEN};
use libfuzzer_sys::fuzz_target;

/// Takes `N` bytes from the front of `data`, advancing it (missing bytes read as zero).
fn take<const N: usize>(data: &mut &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    let n = data.len().min(N);
    out[..n].copy_from_slice(&data[..n]);
    *data = &data[n..];
    out
}

/// Walks every accessor of a verified node; none may panic.
fn walk(node: &NodeRef<'_>) {
    let n = node.len();
    let _ = node.used();
    let _ = node.capacity();
    let _ = node.is_empty();
    let _ = node.level();
    let _ = node.generation();
    let _ = node.block();
    for i in 0..n + 2 {
        let key = node.key(i);
        if node.is_leaf() {
            let _ = node.value(i);
        } else {
            let _ = node.child(i);
        }
        let _ = node.item_size(i);
        if let Ok(k) = key {
            // check_layout guarantees strictly increasing keys, so each one is found.
            assert_eq!(node.search(&k), Ok(i), "verified node: key {i} not found");
            let _ = node.child_index(&k);
        }
    }
    for k in [
        Key::MIN,
        Key::MAX,
        Key::new(1, 1, 1),
        Key::new(u64::MAX / 2, 0x80, 0),
    ] {
        let _ = node.search(&k);
        let _ = node.child_index(&k);
    }
}

/// Verifies `block` against the given expectations and, if it passes, walks it.
fn try_node(block: &[u8], blocknr: u64, owner: u64, level: u8, generation: u64) {
    // Block numbers are `BlockNr`s in memory: a larger address names no block.
    let Ok(blocknr) = BlockNr::try_from(blocknr) else {
        return;
    };
    if let Ok(node) = NodeRef::verify(block, blocknr, owner, level, generation) {
        walk(&node);
    }
}

fuzz_target!(|data: &[u8]| {
    // The superblock decoder, for both copies, as given and re-sealed.
    let _ = Superblock::parse(data, 0);
    let _ = Superblock::parse(data, 1);
    if data.len() >= SUPERBLOCK_LEN {
        let mut sb = data[..SUPERBLOCK_LEN].to_vec();
        BlockHeader::seal(&mut sb);
        let _ = Superblock::parse(&sb, 0);
        let _ = Superblock::parse(&sb, 1);
    }

    // The node decoder, with the expected address / owner / level / generation taken from
    // the front of the input and the rest padded or cut to a block.
    let mut rest = data;
    let blocknr = u64::from_le_bytes(take::<8>(&mut rest));
    let owner = u64::from(take::<1>(&mut rest)[0] % 4);
    let level = take::<1>(&mut rest)[0] % 10;
    let generation = u64::from_le_bytes(take::<8>(&mut rest));
    for size in [512usize, 4096] {
        let mut buf = vec![0u8; size];
        let n = rest.len().min(size);
        buf[..n].copy_from_slice(&rest[..n]);
        try_node(&buf, blocknr, owner, level, generation);

        BlockHeader::seal(&mut buf);
        try_node(&buf, blocknr, owner, level, generation);
        // Expectations that match the header, so the layout checks always run.
        if let Some(h) = BlockHeader::parse(&buf) {
            let (b, o, l, g) = (h.blocknr.get(), h.owner.get(), h.level, h.generation.get());
            try_node(&buf, b, o, l, g);
        }
    }
});
