//! CI: every byte of every metadata block of a populated image flipped in turn (and re-sealed
//! bit flips on every 4th byte): never a panic, a hang or wrong data presented as right.

use bonsaifs_harness::campaign::default_threads;
use bonsaifs_harness::ci;
use bonsaifs_harness::hostile::{all_mutations, populated, Mode, RegionKind};

#[test]
fn the_populated_image_has_every_kind_of_metadata() {
    let p = populated().unwrap();
    let count = |f: fn(&RegionKind) -> bool| p.regions.iter().filter(|r| f(&r.kind)).count();
    assert_eq!(count(|k| matches!(k, RegionKind::Superblock(_))), 2);
    // A filesystem tree of more than one level, and the free-space tree.
    assert!(count(|k| matches!(k, RegionKind::Node { tree: 1, .. })) >= 3);
    assert!(count(|k| matches!(k, RegionKind::Node { tree: 2, .. })) >= 1);
    assert!(count(|k| matches!(k, RegionKind::Log { .. })) >= 2);
    assert!(p.states.len() >= 4);
    let every = all_mutations(&p, 1, Mode::Flip).len();
    let bytes: usize = p.regions.iter().map(|r| r.len).sum();
    assert_eq!(every, bytes);
}

#[test]
fn every_metadata_byte_flipped_is_rejected_detected_or_harmless() {
    let s = ci::hostile_image(default_threads());
    println!("{s}");
    eprintln!("{s}");
    for v in s.tally.violations.iter().take(10) {
        eprintln!("{v}");
    }
    assert!(s.complete);
    assert!(s.tally.images_mutated > 40_000, "{s}");
    assert!(s.tally.violations.is_empty(), "{s}");
}
