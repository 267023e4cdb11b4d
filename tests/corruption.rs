//! One byte corrupted in each metadata block of a populated image, in turn: every read of it
//! returns `Corrupt`, never a wrong value and never a panic; fsck never calls such an image
//! clean. Superblock copies: one bad copy falls back to the other, both bad fail the mount.

mod common;

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use bonsaifs::btree::InsertMode;
use bonsaifs::device::{QueuedRamDisk, RamDisk};
use bonsaifs::volume::Volume;
use bonsaifs::wire::{
    tree_id, Key, HEADER_LEN, INTERNAL_PTR_LEN, LEAF_ITEM_LEN, MAGIC, SUPERBLOCK_LEN,
    SUPERBLOCK_OFFSETS,
};
use bonsaifs::Error;
use common::*;
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

const BS: usize = 4096;
const IMAGE_BYTES: u64 = 16 << 20;
const KEYS: u64 = 3000;
/// Byte positions corrupted per metadata block.
const POSITIONS_PER_BLOCK: usize = 3;

/// A volume mounted read-only over a borrowed image (no copy per probe; nothing is written).
type RoVol<'m, 'b> = Volume<'b, RamDisk<'m, 'b>, SLOTS>;

/// A populated image and what it holds.
struct Populated {
    image: Vec<u8>,
    values: BTreeMap<Key, Vec<u8>>,
}

/// Format 16 MiB, insert `KEYS` items of varying size in random order, checkpoint
/// (`checkpoints` times: the later ones change nothing), return the durable image.
fn populate(checkpoints: usize) -> Populated {
    let img = format_image(IMAGE_BYTES, BS as u32);
    let mut rng = SmallRng::seed_from_u64(0xC0FF_EE00);
    let mut values = BTreeMap::new();
    let mut order: Vec<u64> = (0..KEYS).collect();
    order.shuffle(&mut rng);
    let (level, durable, _) = with_mounted(&img, 11, |vol| {
        let max = vol.max_value_len();
        for &i in &order {
            let key = Key::new(16 + i / 3, 1 + (i % 3) as u8, i * 4096);
            let len = if rng.gen_ratio(1, 25) {
                max
            } else {
                rng.gen_range(0..300)
            };
            let v: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            vol.insert(key, &v, InsertMode::Create).unwrap();
            values.insert(key, v);
        }
        for _ in 0..checkpoints {
            vol.checkpoint().unwrap();
        }
        assert_clean(vol);
        vol.fs_root().level
    });
    assert!(level >= 2, "fs tree too shallow: root level {level}");
    Populated {
        image: durable,
        values,
    }
}

/// Every node of both trees, as `(tree_id, block)`.
fn metadata_blocks(image: &mut [u8]) -> Vec<(u64, u64)> {
    let mut mem = mem(BS);
    let dev = RamDisk::new(image, 512).unwrap().read_only(true);
    let mut vol = RoVol::mount(dev, &mut mem).expect("mount");
    let mut nodes = Vec::new();
    vol.visit_nodes(|t, b| nodes.push((t, u64::from(b))))
        .expect("visit");
    nodes
}

/// Byte offsets (within the block) to corrupt: one in the header, one in the item / pointer
/// array, one in the last 64 bytes.
fn positions(block: &[u8], rng: &mut SmallRng) -> [usize; POSITIONS_PER_BLOCK] {
    let kind = block[32];
    let nitems = usize::from(u16::from_le_bytes([block[34], block[35]]));
    let item_len = if kind == 2 {
        LEAF_ITEM_LEN
    } else {
        INTERNAL_PTR_LEN
    };
    let items_end = (HEADER_LEN + nitems * item_len).clamp(HEADER_LEN + 1, BS);
    [
        rng.gen_range(0..HEADER_LEN),
        rng.gen_range(HEADER_LEN..items_end),
        rng.gen_range(BS - 64..BS),
    ]
}

/// Scan the fs tree with `next`: every item it returns must be an original one, in order,
/// until `Corrupt` for `block` (the volume's `last_corrupt`) stops it (returns whether it did).
fn scan_hits_corrupt(
    vol: &mut RoVol<'_, '_>,
    values: &BTreeMap<Key, Vec<u8>>,
    block: u64,
) -> Result<bool, String> {
    let mut from = Key::MIN;
    let mut inclusive = true;
    let mut expect = values.iter();
    loop {
        match vol.next(&from, inclusive, |k, v| (k, v.to_vec())) {
            Ok(Some((k, v))) => {
                // Items under the bad node are skipped only by an error, never silently.
                match expect.next() {
                    Some((ek, ev)) if *ek == k && *ev == v => {}
                    other => {
                        return Err(format!(
                            "scan returned {k:?} ({} bytes), expected {:?}",
                            v.len(),
                            other.map(|(k, _)| k)
                        ))
                    }
                }
                from = k;
                inclusive = false;
            }
            Ok(None) if expect.next().is_some() => {
                return Err("scan ended early without an error".into())
            }
            Ok(None) => return Ok(false),
            Err(Error::Corrupt) if vol.last_corrupt().map(u64::from) == Some(block) => {
                return Ok(true)
            }
            Err(e) => return Err(format!("scan: unexpected error {e:?}")),
        }
    }
}

/// Mount `image` (with one block corrupted), read everything, fsck; `Err` describes what went
/// wrong. `tree` / `block` name the corrupted node.
fn probe(
    image: &mut [u8],
    mem: &mut [u8],
    values: &BTreeMap<Key, Vec<u8>>,
    tree: u64,
    block: u64,
    scan: bool,
) -> Result<(), String> {
    let dev = RamDisk::new(image, 512).unwrap().read_only(true);
    let mut vol = RoVol::mount(dev, mem).map_err(|e| format!("mount failed: {e:?}"))?;
    // `Corrupt` itself names no block; the volume remembers the node that failed its checks.
    let is_target = |vol: &RoVol<'_, '_>, e: &Error| {
        *e == Error::Corrupt && vol.last_corrupt().map(u64::from) == Some(block)
    };

    // Point lookups: the exact value or Corrupt for the bad block.
    let mut corrupt_gets = 0usize;
    for (k, v) in values {
        match vol.get(k, |got| got == v.as_slice()) {
            Ok(Some(true)) => {}
            Ok(Some(false)) => return Err(format!("get {k:?}: wrong value")),
            Ok(None) => return Err(format!("get {k:?}: missing")),
            Err(e) if is_target(&vol, &e) => corrupt_gets += 1,
            Err(e) => return Err(format!("get {k:?}: unexpected error {e:?}")),
        }
    }

    let scan_hit_corrupt = scan && scan_hits_corrupt(&mut vol, values, block)?;

    // The free-space tree, walked whole.
    let free_walk = vol.for_each_free_run(|_, _, _| {});
    match (tree, free_walk) {
        (tree_id::FS, Ok(())) => {
            if corrupt_gets == 0 {
                return Err("no lookup reported Corrupt for an fs-tree node".into());
            }
            if scan && !scan_hit_corrupt {
                return Err("the scan never reported Corrupt for an fs-tree node".into());
            }
        }
        (tree_id::FREE, Err(e)) if is_target(&vol, &e) => {
            if corrupt_gets != 0 || scan_hit_corrupt {
                return Err("a free-tree node broke an fs-tree read".into());
            }
        }
        (t, r) => return Err(format!("free-tree walk (tree {t}): {r:?}")),
    }

    // fsck must never call this image clean.
    let mut bits = vec![0u8; (vol.space_info().total_blocks as usize).div_ceil(8)];
    match vol.fsck(&mut bits) {
        Ok(rep) if rep.is_clean() => return Err(format!("fsck says clean: {rep:?}")),
        Ok(rep) if rep.bad_nodes == 0 || rep.first_bad != Some(block) => {
            return Err(format!("fsck did not name the bad node: {rep:?}"))
        }
        Ok(_) => {}
        Err(Error::Corrupt) => {}
        Err(e) => return Err(format!("fsck: unexpected error {e:?}")),
    }
    Ok(())
}

/// Corrupt each position of each node in `nodes`, in turn, in `image` (restored after each);
/// returns the number of cases and the failures.
fn sweep(
    image: &mut [u8],
    values: &BTreeMap<Key, Vec<u8>>,
    nodes: &[(u64, u64)],
) -> (usize, Vec<String>) {
    let mut mem = mem(BS);
    let mut failures = Vec::new();
    let mut cases = 0usize;
    for &(tree, block) in nodes {
        let base = block as usize * BS;
        let bytes = &image[base..base + BS];
        assert_eq!(u32::from_le_bytes(bytes[..4].try_into().unwrap()), MAGIC);
        assert!(
            matches!(bytes[32], 2 | 3),
            "block {block}: kind {}",
            bytes[32]
        );
        let mut rng = SmallRng::seed_from_u64(block);
        for (i, pos) in positions(bytes, &mut rng).into_iter().enumerate() {
            let mask: u8 = rng.gen_range(1..=255);
            // The full scan costs as much as the lookups: run it for one position per block.
            let scan = i == block as usize % POSITIONS_PER_BLOCK;
            image[base + pos] ^= mask;
            let r = catch_unwind(AssertUnwindSafe(|| {
                probe(image, &mut mem, values, tree, block, scan)
            }));
            image[base + pos] ^= mask;
            cases += 1;
            let what = match r {
                Ok(Ok(())) => continue,
                Ok(Err(msg)) => msg,
                Err(p) => format!(
                    "PANIC: {}",
                    p.downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default()
                ),
            };
            failures.push(format!(
                "tree {tree} block {block} byte {pos} ^= {mask:#04x}: {what}"
            ));
        }
    }
    (cases, failures)
}

#[test]
fn one_corrupt_byte_in_any_metadata_block_is_reported_never_misread() {
    let started = Instant::now();
    let Populated { mut image, values } = populate(1);
    let nodes = metadata_blocks(&mut image);
    let fs_nodes = nodes.iter().filter(|(t, _)| *t == tree_id::FS).count();
    let free_nodes = nodes.len() - fs_nodes;
    assert!(
        fs_nodes > 100 && free_nodes >= 1,
        "{fs_nodes} / {free_nodes}"
    );

    // Independent cases: spread them over the cores, each thread with its own image.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
    let chunk = nodes.len().div_ceil(threads);
    let results: Vec<(usize, Vec<String>, bool)> = std::thread::scope(|sc| {
        let handles: Vec<_> = nodes
            .chunks(chunk)
            .map(|part| {
                let (values, pristine) = (&values, &image);
                sc.spawn(move || {
                    let mut img = pristine.clone();
                    let (cases, failures) = sweep(&mut img, values, part);
                    (cases, failures, img == *pristine)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let cases: usize = results.iter().map(|r| r.0).sum();
    let failures: Vec<String> = results.iter().flat_map(|r| r.1.clone()).collect();
    assert!(results.iter().all(|r| r.2), "a probe changed the image");
    eprintln!(
        "{cases} corruptions over {fs_nodes} fs + {free_nodes} free-tree nodes \
         ({threads} threads) in {:?}",
        started.elapsed()
    );
    assert!(
        failures.is_empty(),
        "{} of {cases} corruptions mishandled:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Generation recorded in superblock copy `i` of `image`.
fn copy_generation(image: &[u8], i: usize) -> u64 {
    let off = SUPERBLOCK_OFFSETS[i] as usize;
    u64::from_le_bytes(image[off + 8..off + 16].try_into().unwrap())
}

/// Byte positions inside a superblock copy's checksummed sector: the magic, the rest of the
/// header, the body.
fn sb_positions(rng: &mut SmallRng) -> [usize; 3] {
    [
        rng.gen_range(0..4),
        rng.gen_range(4..HEADER_LEN),
        rng.gen_range(HEADER_LEN..SUPERBLOCK_LEN),
    ]
}

fn corrupt_copy(image: &mut [u8], i: usize, pos: usize, mask: u8) {
    image[SUPERBLOCK_OFFSETS[i] as usize + pos] ^= mask;
}

fn assert_all_present(vol: &mut Vol<'_>, values: &BTreeMap<Key, Vec<u8>>) {
    for (k, v) in values {
        let got = vol.get(k, |x| x.to_vec()).unwrap();
        assert_eq!(got.as_deref(), Some(v.as_slice()), "{k:?}");
    }
}

fn mount_fails(image: &[u8]) -> Result<(), String> {
    let mut m = mem(BS);
    let dev = QueuedRamDisk::from_image(cfg(image.len() as u64, 5), image.to_vec());
    match catch_unwind(AssertUnwindSafe(|| Vol::mount(dev, &mut m).err())) {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err("mount succeeded with both superblock copies corrupt".into()),
        Err(_) => Err("mount panicked".into()),
    }
}

/// After format + one checkpoint, copy 0 holds generation 2 (the populated tree) and copy 1
/// generation 1 (format: the empty tree, whose blocks generation 2 freed but could not reuse
/// before its own checkpoint). A bad newest copy falls back to the empty volume, consistent
/// and writable; a bad older copy changes nothing.
#[test]
fn one_bad_superblock_copy_falls_back_to_the_other() {
    let Populated { mut image, values } = populate(1);
    assert_eq!(
        (copy_generation(&image, 0), copy_generation(&image, 1)),
        (2, 1)
    );
    let mut rng = SmallRng::seed_from_u64(0x5B);
    for copy in 0..2 {
        for pos in sb_positions(&mut rng) {
            let mask = rng.gen_range(1..=255u8);
            corrupt_copy(&mut image, copy, pos, mask);
            let (_, after, _) = with_mounted(&image, 21 + pos as u64, |vol| {
                let survivor = 1 - copy;
                assert_eq!(
                    vol.committed_generation(),
                    copy_generation(&image, survivor),
                    "copy {copy} byte {pos}"
                );
                let rep = assert_clean(vol);
                if copy == 0 {
                    // The format-time (empty) volume.
                    assert_eq!(rep.fs_items, 0);
                    for k in values.keys() {
                        assert_eq!(vol.get(k, |_| ()).unwrap(), None, "{k:?}");
                    }
                    // Still a working volume: write, checkpoint (into the bad copy's slot).
                    let k = Key::new(99, 1, 0);
                    vol.insert(k, b"after fallback", InsertMode::Create)
                        .unwrap();
                    vol.checkpoint().unwrap();
                    assert_clean(vol);
                } else {
                    assert_eq!(rep.fs_items, KEYS);
                    assert_all_present(vol, &values);
                }
            });
            if copy == 0 {
                with_mounted(&after, 3, |vol| {
                    assert_eq!(vol.committed_generation(), 2);
                    let got = vol.get(&Key::new(99, 1, 0), |v| v.to_vec()).unwrap();
                    assert_eq!(got.as_deref(), Some(&b"after fallback"[..]));
                    assert_clean(vol);
                });
            }
            corrupt_copy(&mut image, copy, pos, mask);
        }
    }
    // Both copies bad: mount fails cleanly.
    let mut errs = Vec::new();
    for _ in 0..3 {
        let (p0, p1) = (
            sb_positions(&mut rng)[rng.gen_range(0..3)],
            sb_positions(&mut rng)[rng.gen_range(0..3)],
        );
        corrupt_copy(&mut image, 0, p0, 0x41);
        corrupt_copy(&mut image, 1, p1, 0x08);
        if let Err(e) = mount_fails(&image) {
            errs.push(format!("bytes {p0} / {p1}: {e}"));
        }
        corrupt_copy(&mut image, 0, p0, 0x41);
        corrupt_copy(&mut image, 1, p1, 0x08);
    }
    assert!(errs.is_empty(), "{errs:?}");
}

/// With a second (empty) checkpoint both copies point at the same trees: either bad copy
/// leaves every item readable.
#[test]
fn either_bad_copy_of_identical_checkpoints_loses_nothing() {
    let Populated { mut image, values } = populate(2);
    assert_eq!(
        (copy_generation(&image, 0), copy_generation(&image, 1)),
        (2, 3)
    );
    let mut rng = SmallRng::seed_from_u64(0x5C);
    for copy in 0..2 {
        for pos in sb_positions(&mut rng) {
            let mask = rng.gen_range(1..=255u8);
            corrupt_copy(&mut image, copy, pos, mask);
            with_mounted(&image, 31 + pos as u64, |vol| {
                assert_eq!(
                    vol.committed_generation(),
                    copy_generation(&image, 1 - copy),
                    "copy {copy} byte {pos}"
                );
                let rep = assert_clean(vol);
                assert_eq!(rep.fs_items, KEYS);
                assert_all_present(vol, &values);
            });
            corrupt_copy(&mut image, copy, pos, mask);
        }
    }
    corrupt_copy(&mut image, 0, 9, 0x10);
    corrupt_copy(&mut image, 1, 100, 0x01);
    mount_fails(&image).unwrap();
}

/// A log record whose checksum holds but whose `MAP` names a run far larger than the volume
/// (a crafted image: a flipped bit re-sealed) makes mount answer `Corrupt` at once. Replay
/// used to claim such a run block by block — billions of tree lookups, a hang.
#[test]
#[cfg(feature = "journal")]
fn a_sealed_log_record_mapping_a_huge_run_is_corrupt_not_a_hang() {
    use bonsaifs::fs::{Fs, OpenFlags};
    use bonsaifs::volume::FormatOptions;
    use bonsaifs::wire::log::{LogHeader, LogOp, RecordWriter, LOG_COMMIT, LOG_HEADER_LEN};
    use bonsaifs::wire::Superblock;
    use zerocopy::FromBytes;

    type F<'m, 'b> = Fs<'b, RamDisk<'m, 'b>, SLOTS, 4>;
    const SECTOR: usize = 512;
    let mut image = vec![0u8; 8 << 20];
    let mut mem = common::mem(BS);
    // A file with an 8 KiB write made durable by fsync: a log record that maps blocks.
    let ino = {
        let dev = RamDisk::new(&mut image, SECTOR as u32).unwrap();
        let opts = FormatOptions {
            block_size: BS as u32,
            ..FormatOptions::default()
        };
        let mut fs: F<'_, '_> = Fs::format(dev, &mut mem, opts).unwrap();
        let fd = fs.open("/f", OpenFlags::WRITE | OpenFlags::CREATE).unwrap();
        fs.write_at(fd, 0, &[7u8; 8192]).unwrap();
        fs.fsync(fd).unwrap();
        let ino = fs.fstat(fd).unwrap().ino;
        let _ = fs.into_device(); // a power cut: no checkpoint
        ino
    };
    // Replace the first record with one of the same place in the chain holding one MAP of
    // 2^32 - 1 blocks, sealed so its checksum holds.
    let sb = Superblock::read_from_prefix(&image[SUPERBLOCK_OFFSETS[0] as usize..])
        .unwrap()
        .0;
    let at = (sb.log_start.get() as usize) * BS;
    let (h, _) = LogHeader::read_from_prefix(&image[at..]).unwrap();
    assert_eq!(h.seq.get(), 0, "the first record of the log");
    let sectors = h.sectors.get() as usize;
    let mut rec = vec![0u8; sectors * SECTOR];
    let mut w = RecordWriter::new(&mut rec).unwrap();
    w.push(&LogOp::Map {
        ino,
        fblk: 0,
        block: 100,
        count: u32::MAX,
        size: 8192,
        sum: None,
    })
    .unwrap();
    w.seal(SECTOR, h.epoch.get(), 0, h.prev_crc.get(), LOG_COMMIT)
        .unwrap();
    assert!(rec.len() > LOG_HEADER_LEN);
    image[at..at + rec.len()].copy_from_slice(&rec);
    // Mount replays the log: Corrupt, quickly. (On a thread with a deadline, so that a
    // regression fails the test instead of hanging the suite.)
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let dev = RamDisk::new(&mut image, SECTOR as u32).unwrap();
        let _ = tx.send(F::mount(dev, &mut mem).map(|_| ()));
    });
    let r = rx
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("mount did not answer within 20 s");
    assert!(matches!(r, Err(Error::Corrupt)), "mount answered {r:?}");
}
