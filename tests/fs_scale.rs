//! Scale: a directory of 10,000 entries (cold lookup cost in device reads, blocks dirtied by a
//! create, readdir exactly-once under concurrent changes), large files (a 1 GiB sparse file,
//! 100 MiB written in shuffled 4 KiB pieces, 100 MiB of sequential appends and their extent
//! count), and a volume filled to `NoSpace` by random operations, then emptied.
//!
//! Costs are counted (device requests through `Trace`, extent items), never timed. Figures
//! are printed (`cargo test --test fs_scale -- --nocapture` shows them).

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use bonsaifs::device::{BlockDevice, QueuedRamDisk, RamDisk, Trace};
use bonsaifs::fs::{Fs, OpenFlags};
use bonsaifs::volume::{memory_needed, FormatOptions};
use bonsaifs::Error;
use common::{cfg, count_extents, mem, SLOTS};
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

const BS: u64 = 4096;
const MIB: u64 = 1 << 20;

/// fsck the filesystem (blocks and namespace); panics unless clean. Returns the block report.
fn fsck<'b, D: BlockDevice<'b>, const N: usize, const H: usize>(
    fs: &mut Fs<'b, D, N, H>,
) -> bonsaifs::fsck::Report {
    let mut scratch = vec![0u8; fs.fsck_scratch_len()];
    let rep = fs.fsck(&mut scratch).expect("fsck ran");
    assert!(rep.is_clean(), "fsck: {rep:?}");
    rep.blocks
}

// ------------------------------------------------------------------- a 10,000-entry directory

type TFs<'b> = Fs<'b, Trace<QueuedRamDisk<'b>>, SLOTS>;

const ENTRIES: usize = 10_000;

fn entry_name(i: usize) -> String {
    format!("/entry-{i:05}")
}

/// Blocks one checkpoint writes (requests, without the superblock copy) after `f` changed the
/// volume, less what an empty checkpoint writes.
fn checkpoint_writes(fs: &mut TFs<'_>, f: impl FnOnce(&mut TFs<'_>)) -> u64 {
    fs.sync_all().unwrap();
    fs.volume_mut().device_mut().reset_counters();
    fs.sync_all().unwrap();
    let empty = fs.volume().device().counters().writes;
    f(fs);
    fs.volume_mut().device_mut().reset_counters();
    fs.sync_all().unwrap();
    let c = fs.volume().device().counters();
    c.writes - empty
}

#[test]
fn directory_of_10000_entries() {
    let mut mems: Vec<Vec<u8>> = (0..3).map(|_| mem(4096)).collect();
    let mut mems = mems.iter_mut();
    let dev = Trace::new(QueuedRamDisk::new(cfg(64 * MIB, 11)));
    let mut fs = TFs::format(dev, mems.next().unwrap(), FormatOptions::default()).unwrap();
    let create = OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::EXCL;
    for i in 0..ENTRIES {
        let fd = fs.open(&entry_name(i), create).unwrap();
        fs.close(fd).unwrap();
    }
    fs.sync_all().unwrap();
    assert_eq!(fs.stat("/").unwrap().size, ENTRIES as u64);
    assert_eq!(fs.statfs().inodes, ENTRIES as u64 + 1);

    // Cold cache: remount, then one stat of a name.
    let dev = fs.unmount().unwrap();
    let mut fs = TFs::mount(dev, mems.next().unwrap()).unwrap();
    let height = u64::from(fs.volume().fs_root().level) + 1;
    let free_height = u64::from(fs.volume().free_root().level) + 1;
    let mut reads = Vec::new();
    for i in [4242, 17, 9999, 5000] {
        fs.volume_mut().device_mut().reset_counters();
        let md = fs.stat(&entry_name(i)).unwrap();
        assert_eq!(md.size, 0);
        reads.push(fs.volume().device().counters().reads);
    }
    eprintln!(
        "10,000 entries: fs tree height {height} (free tree {free_height}); device reads of \
         stat after a cold mount: {} (then {:?} for more names)",
        reads[0],
        &reads[1..]
    );
    assert!(
        reads[0] <= height + 1,
        "a cold stat read {} blocks, tree height {height}",
        reads[0]
    );

    // Blocks a create dirties: what the next checkpoint writes, less an empty checkpoint.
    let mut dirtied = Vec::new();
    for i in 0..8 {
        let w = checkpoint_writes(&mut fs, |fs| {
            let fd = fs.open(&format!("/new-{i}"), create).unwrap();
            fs.close(fd).unwrap();
        });
        dirtied.push(w);
    }
    let unlinked = checkpoint_writes(&mut fs, |fs| fs.unlink("/new-0").unwrap());
    eprintln!(
        "blocks written by the checkpoint after one create (less an empty checkpoint): {dirtied:?}; \
         after one unlink: {unlinked}"
    );
    let bound = 3 * height + free_height + 2;
    let worst = dirtied.iter().copied().max().unwrap_or(0);
    assert!(
        worst <= bound,
        "one create dirtied {worst} blocks (height {height}, free tree height {free_height}, \
         bound {bound})"
    );

    // readdir under concurrent changes: every surviving entry exactly once, entries removed
    // before they were returned never, entries added during the walk at most once.
    let mut rng = SmallRng::seed_from_u64(0x5eed);
    let mut live: BTreeSet<String> = BTreeSet::new();
    let mut rd = fs.read_dir("/").unwrap();
    while let Some(e) = fs.read_dir_next(&mut rd).unwrap() {
        live.insert(e.name().to_string());
    }
    assert_eq!(live.len(), ENTRIES + 7, "entries + /new-1..7");
    let original: BTreeSet<String> = live.clone();
    let mut seen: HashMap<String, u32> = HashMap::new();
    let mut removed_unseen: HashSet<String> = HashSet::new();
    let mut added: HashSet<String> = HashSet::new();
    let mut rd = fs.read_dir("/").unwrap();
    let mut next_new = 0;
    let mut batches = 0;
    'walk: loop {
        for _ in 0..rng.gen_range(1..700) {
            match fs.read_dir_next(&mut rd).unwrap() {
                Some(e) => {
                    let name = e.name().to_string();
                    assert!(
                        !removed_unseen.contains(&name),
                        "{name} returned after it was removed"
                    );
                    assert!(live.contains(&name), "{name} returned but does not exist");
                    *seen.entry(name).or_default() += 1;
                }
                None => break 'walk,
            }
        }
        batches += 1;
        // Remove a few entries (some already returned, most not), add a few new ones.
        let names: Vec<String> = live.iter().cloned().collect();
        for _ in 0..rng.gen_range(0..40) {
            let victim = names.choose(&mut rng).unwrap().clone();
            if !live.contains(&victim) {
                continue;
            }
            fs.unlink(&format!("/{victim}")).unwrap();
            live.remove(&victim);
            if !seen.contains_key(&victim) {
                removed_unseen.insert(victim);
            }
        }
        for _ in 0..rng.gen_range(0..30) {
            let name = format!("added-{next_new:05}");
            next_new += 1;
            let fd = fs.open(&format!("/{name}"), create).unwrap();
            fs.close(fd).unwrap();
            live.insert(name.clone());
            added.insert(name);
        }
        if batches % 5 == 0 {
            fs.sync_all().unwrap();
        }
    }
    let dup: Vec<_> = seen.iter().filter(|(_, &n)| n > 1).collect();
    assert!(dup.is_empty(), "entries returned more than once: {dup:?}");
    let missed: Vec<_> = live
        .iter()
        .filter(|n| original.contains(*n) && !seen.contains_key(*n))
        .collect();
    assert!(
        missed.is_empty(),
        "{} surviving entries never returned, e.g. {:?}",
        missed.len(),
        &missed[..missed.len().min(5)]
    );
    let added_seen = added.iter().filter(|n| seen.contains_key(*n)).count();
    eprintln!(
        "readdir under changes: {batches} batches, {} removed before being returned, {} added \
         ({} of them returned)",
        removed_unseen.len(),
        added.len(),
        added_seen
    );
    // A final listing is exactly the live set.
    let mut all = BTreeSet::new();
    let mut rd = fs.read_dir("/").unwrap();
    while let Some(e) = fs.read_dir_next(&mut rd).unwrap() {
        assert!(
            all.insert(e.name().to_string()),
            "duplicate in a quiet listing"
        );
    }
    assert_eq!(all, live);
    fs.sync_all().unwrap();
    let dev = fs.unmount().unwrap();
    let mut fs = TFs::mount(dev, mems.next().unwrap()).unwrap();
    assert_eq!(fs.stat("/").unwrap().size, live.len() as u64);
    fsck(&mut fs);
}

// ------------------------------------------------------------------- large files

type RFs<'m, 'b> = Fs<'b, RamDisk<'m, 'b>, SLOTS>;

/// Deterministic bytes of "piece" `piece` (any length).
fn piece_bytes(piece: u64, buf: &mut [u8]) {
    let mut x = piece.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    for chunk in buf.chunks_mut(8) {
        x ^= x >> 33;
        x = x.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
        x ^= x >> 29;
        let b = x.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
}

fn checksum(b: &[u8]) -> u64 {
    // FNV-1a over 8-byte words.
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for w in b.chunks(8) {
        let mut a = [0u8; 8];
        a[..w.len()].copy_from_slice(w);
        h = (h ^ u64::from_le_bytes(a)).wrapping_mul(0x100_0000_01b3);
    }
    h
}

#[test]
fn sparse_file_of_1_gib() {
    let mut disk = vec![0u8; (32 * MIB) as usize];
    let mut m1 = vec![0u8; memory_needed(512, 4096, SLOTS)];
    let mut m2 = vec![0u8; memory_needed(512, 4096, SLOTS)];
    let dev = RamDisk::new(&mut disk, 512).unwrap();
    let mut fs = RFs::format(dev, &mut m1, FormatOptions::default()).unwrap();
    let free0 = fs.statfs().free_blocks;
    let fd = fs
        .open(
            "/sparse",
            OpenFlags::READ | OpenFlags::WRITE | OpenFlags::CREATE,
        )
        .unwrap();
    const GIB: u64 = 1 << 30;
    // (offset, length) of the written pieces: unaligned, across block boundaries, far apart.
    let pieces: Vec<(u64, usize)> = vec![
        (0, 100),
        (4095, 2),
        (123_456_789, 10_000),
        (512 * MIB + 17, 70_000),
        (777 * MIB, 4096),
        (GIB - 5000, 5000),
    ];
    for (i, &(off, len)) in pieces.iter().enumerate() {
        let mut b = vec![0u8; len];
        piece_bytes(i as u64, &mut b);
        assert_eq!(fs.write_at(fd, off, &b), Ok(len));
    }
    fs.truncate(fd, GIB).unwrap();
    let expect = |off: u64, len: usize| -> Vec<u8> {
        let mut v = vec![0u8; len];
        for (i, &(po, pl)) in pieces.iter().enumerate() {
            let (s, e) = (po.max(off), (po + pl as u64).min(off + len as u64));
            if s < e {
                let mut b = vec![0u8; pl];
                piece_bytes(i as u64, &mut b);
                v[(s - off) as usize..(e - off) as usize]
                    .copy_from_slice(&b[(s - po) as usize..(e - po) as usize]);
            }
        }
        v
    };
    let check = |fs: &mut RFs<'_, '_>, fd| {
        assert_eq!(fs.fstat(fd).unwrap().size, GIB);
        let mut rng = SmallRng::seed_from_u64(3);
        let mut ranges: Vec<(u64, usize)> = pieces
            .iter()
            .map(|&(o, l)| (o.saturating_sub(3), l + 6))
            .collect();
        for _ in 0..300 {
            ranges.push((rng.gen_range(0..GIB), rng.gen_range(1..70_000)));
        }
        ranges.push((GIB - 10, 100));
        for (off, len) in ranges {
            let mut buf = vec![0xEEu8; len];
            let n = fs.read_at(fd, off, &mut buf).unwrap();
            let len = len.min((GIB - off) as usize);
            assert_eq!(n, len, "read at {off}");
            assert!(buf[..n] == expect(off, n)[..], "bytes at {off}..+{n}");
        }
        let mut buf = [0u8; 10];
        assert_eq!(fs.read_at(fd, GIB, &mut buf), Ok(0));
    };
    check(&mut fs, fd);
    let blocks = fs.fstat(fd).unwrap().blocks;
    fs.close(fd).unwrap();
    let storage = fs.unmount().unwrap().into_storage();
    let dev = RamDisk::new(storage, 512).unwrap();
    let mut fs = RFs::mount(dev, &mut m2).unwrap();
    let fd = fs.open("/sparse", OpenFlags::READ).unwrap();
    check(&mut fs, fd);
    let rep = fsck(&mut fs);
    assert_eq!(rep.data_blocks, blocks);
    let ino = fs.fstat(fd).unwrap().ino;
    let extents = count_extents(&mut fs, ino);
    eprintln!("1 GiB sparse file: {blocks} data blocks in {extents} extents");
    let touched: BTreeSet<u64> = pieces
        .iter()
        .flat_map(|&(o, l)| o / BS..(o + l as u64).div_ceil(BS))
        .collect();
    assert_eq!(
        blocks,
        touched.len() as u64,
        "data blocks: the ones the pieces touch"
    );
    fs.close(fd).unwrap();
    fs.unlink("/sparse").unwrap();
    fs.sync_all().unwrap();
    fs.sync_all().unwrap();
    assert_eq!(fs.statfs().free_blocks, free0);
    fsck(&mut fs);
}

const BIG: u64 = 100 * MIB;
const PIECE: u64 = 4096;

#[test]
fn file_of_100_mib_in_shuffled_pieces() {
    let mut disk = vec![0u8; (160 * MIB) as usize];
    let mut m1 = vec![0u8; memory_needed(512, 4096, SLOTS)];
    let mut m2 = vec![0u8; memory_needed(512, 4096, SLOTS)];
    let dev = RamDisk::new(&mut disk, 512).unwrap();
    let mut fs = RFs::format(dev, &mut m1, FormatOptions::default()).unwrap();
    let fd = fs
        .open("/shuffled", OpenFlags::WRITE | OpenFlags::CREATE)
        .unwrap();
    let n = BIG / PIECE;
    let mut order: Vec<u64> = (0..n).collect();
    order.shuffle(&mut SmallRng::seed_from_u64(0xC0FFEE));
    let mut buf = vec![0u8; PIECE as usize];
    let mut sums = vec![0u64; n as usize];
    for (k, &p) in order.iter().enumerate() {
        piece_bytes(p, &mut buf);
        sums[p as usize] = checksum(&buf);
        assert_eq!(fs.write_at(fd, p * PIECE, &buf), Ok(PIECE as usize));
        if k as u64 % (n / 4) == n / 4 - 1 {
            fs.sync_all().unwrap();
        }
    }
    assert_eq!(fs.fstat(fd).unwrap().size, BIG);
    let ino = fs.fstat(fd).unwrap().ino;
    fs.close(fd).unwrap();
    let storage = fs.unmount().unwrap().into_storage();
    let dev = RamDisk::new(storage, 512).unwrap();
    let mut fs = RFs::mount(dev, &mut m2).unwrap();
    let fd = fs.open("/shuffled", OpenFlags::READ).unwrap();
    let mut chunk = vec![0u8; MIB as usize];
    let mut bad = Vec::new();
    for c in 0..BIG / MIB {
        assert_eq!(fs.read(fd, &mut chunk), Ok(MIB as usize));
        for (j, piece) in chunk.chunks(PIECE as usize).enumerate() {
            let p = c * (MIB / PIECE) + j as u64;
            if checksum(piece) != sums[p as usize] {
                bad.push(p);
            }
        }
    }
    assert_eq!(fs.read(fd, &mut chunk), Ok(0));
    assert!(
        bad.is_empty(),
        "{} pieces differ, first {:?}",
        bad.len(),
        &bad[..bad.len().min(8)]
    );
    let extents = count_extents(&mut fs, ino);
    let rep = fsck(&mut fs);
    assert_eq!(rep.data_blocks, BIG / BS);
    eprintln!(
        "100 MiB in {n} shuffled 4 KiB pieces: {extents} extents, fs tree {} nodes",
        rep.fs_nodes
    );
    fs.close(fd).unwrap();
}

/// Append 100 MiB in 4 KiB writes (checkpointing every `sync_every` bytes if given); returns
/// the extent count.
fn appends(sync_every: Option<u64>) -> u64 {
    let mut disk = vec![0u8; (160 * MIB) as usize];
    let mut m1 = vec![0u8; memory_needed(512, 4096, SLOTS)];
    let mut m2 = vec![0u8; memory_needed(512, 4096, SLOTS)];
    let dev = RamDisk::new(&mut disk, 512).unwrap();
    let mut fs = RFs::format(dev, &mut m1, FormatOptions::default()).unwrap();
    let fd = fs
        .open(
            "/log",
            OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::APPEND,
        )
        .unwrap();
    let mut buf = vec![0u8; PIECE as usize];
    for p in 0..BIG / PIECE {
        piece_bytes(p, &mut buf);
        assert_eq!(fs.write(fd, &buf), Ok(PIECE as usize));
        if let Some(every) = sync_every {
            if (p + 1) * PIECE % every == 0 {
                fs.sync_all().unwrap();
            }
        }
    }
    let ino = fs.fstat(fd).unwrap().ino;
    assert_eq!(fs.fstat(fd).unwrap().size, BIG);
    fs.close(fd).unwrap();
    let storage = fs.unmount().unwrap().into_storage();
    let dev = RamDisk::new(storage, 512).unwrap();
    let mut fs = RFs::mount(dev, &mut m2).unwrap();
    let fd = fs.open("/log", OpenFlags::READ).unwrap();
    let mut chunk = vec![0u8; MIB as usize];
    for c in 0..BIG / MIB {
        assert_eq!(fs.read(fd, &mut chunk), Ok(MIB as usize));
        for (j, piece) in chunk.chunks(PIECE as usize).enumerate() {
            piece_bytes(c * (MIB / PIECE) + j as u64, &mut buf);
            assert!(
                piece == &buf[..],
                "piece {} differs",
                c * (MIB / PIECE) + j as u64
            );
        }
    }
    fs.close(fd).unwrap();
    let extents = count_extents(&mut fs, ino);
    let rep = fsck(&mut fs);
    assert_eq!(rep.data_blocks, BIG / BS);
    extents
}

#[test]
fn sequential_appends_of_100_mib_make_few_extents() {
    let extents = appends(None);
    eprintln!("100 MiB of 4 KiB appends, no checkpoint in between: {extents} extents");
    assert!(extents <= 4, "{extents} extents");
}

#[test]
fn sequential_appends_of_100_mib_with_syncs_make_few_extents() {
    let extents = appends(Some(10 * MIB));
    eprintln!("100 MiB of 4 KiB appends, sync_all every 10 MiB: {extents} extents");
    assert!(
        extents <= 4,
        "{extents} extents with a sync_all every 10 MiB"
    );
}

// ------------------------------------------------------------------- filling the volume

type QFs<'b> = Fs<'b, QueuedRamDisk<'b>, SLOTS>;

#[derive(Debug, Clone, Default)]
struct Tree {
    files: BTreeMap<String, Vec<u8>>,
    dirs: BTreeSet<String>,
}

#[derive(Debug)]
enum FillOp {
    Create { path: String, len: usize },
    Append { path: String, len: usize },
    Overwrite { path: String, off: u64, len: usize },
    Mkdir { path: String },
    Sync,
}

fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    piece_bytes(seed, &mut b);
    b
}

/// Compare every file and directory of `t` with the filesystem (and nothing more exists).
fn compare_tree(fs: &mut QFs<'_>, t: &Tree, what: &str) {
    assert_eq!(
        fs.statfs().inodes,
        (t.files.len() + t.dirs.len() + 1) as u64,
        "{what}: inode count"
    );
    for d in std::iter::once("").chain(t.dirs.iter().map(String::as_str)) {
        let mut rd = fs.read_dir(if d.is_empty() { "/" } else { d }).unwrap();
        let mut names = BTreeSet::new();
        while let Some(e) = fs.read_dir_next(&mut rd).unwrap() {
            names.insert(format!("{d}/{}", e.name()));
        }
        let want: BTreeSet<String> = t
            .files
            .keys()
            .chain(t.dirs.iter())
            .filter(|p| p.rsplit_once('/').map(|(dir, _)| dir) == Some(d))
            .cloned()
            .collect();
        assert_eq!(names, want, "{what}: entries of {d}/");
    }
    for (p, data) in &t.files {
        let fd = fs
            .open(p, OpenFlags::READ)
            .unwrap_or_else(|e| panic!("{what}: open {p}: {e:?}"));
        let mut buf = vec![0u8; data.len() + 1];
        let n = fs.read_at(fd, 0, &mut buf).unwrap();
        assert_eq!(n, data.len(), "{what}: size of {p}");
        assert!(buf[..n] == data[..], "{what}: contents of {p}");
        fs.close(fd).unwrap();
    }
}

/// Free space as the allocator sees it: counter, runs of the free-space tree, tree levels.
fn free_shape(fs: &mut QFs<'_>) -> String {
    let free = fs.statfs().free_blocks;
    let mut runs = Vec::new();
    fs.volume_mut()
        .for_each_free_run(|_, len, _| runs.push(len))
        .unwrap();
    runs.sort_unstable_by(|a, b| b.cmp(a));
    let total: u64 = runs.iter().sum();
    format!(
        "{free} blocks free: {total} in {} free-tree runs (largest {:?}), the rest in the \
         allocator reserve; fs tree level {}, free tree level {}; one tree change reserves \
         {} blocks",
        runs.len(),
        &runs[..runs.len().min(4)],
        fs.volume().fs_root().level,
        fs.volume().free_root().level,
        fs.volume().op_blocks()
    )
}

/// Every path of `t` (files and directories).
fn names(t: &Tree) -> BTreeSet<String> {
    t.files.keys().chain(t.dirs.iter()).cloned().collect()
}

/// Mount a durable image and check it is a consistent state: fsck clean, its namespace one of
/// `allowed`, every inode reachable from the root, every file readable.
fn check_image(image: Vec<u8>, allowed: &[&BTreeSet<String>]) -> Result<(), String> {
    let mut m = mem(4096);
    let dev = QueuedRamDisk::from_image(cfg(image.len() as u64, 5), image);
    let mut fs = QFs::mount(dev, &mut m).map_err(|e| format!("mount: {e:?}"))?;
    let mut scratch = vec![0u8; fs.fsck_scratch_len()];
    let rep = fs.fsck(&mut scratch).map_err(|e| format!("fsck: {e:?}"))?;
    if !rep.is_clean() {
        return Err(format!("fsck: {rep:?}"));
    }
    let mut found = BTreeSet::new();
    let mut stack = vec![String::new()];
    while let Some(d) = stack.pop() {
        let mut rd = fs
            .read_dir(if d.is_empty() { "/" } else { &d })
            .map_err(|e| format!("read_dir {d}/: {e:?}"))?;
        while let Some(e) = fs.read_dir_next(&mut rd).map_err(|e| format!("{e:?}"))? {
            let p = format!("{d}/{}", e.name());
            if e.kind == bonsaifs::fs::FileKind::Dir {
                stack.push(p.clone());
            } else {
                let fd = fs
                    .open(&p, OpenFlags::READ)
                    .map_err(|e| format!("open {p}: {e:?}"))?;
                let size = fs.fstat(fd).map_err(|e| format!("{e:?}"))?.size;
                let mut buf = vec![0u8; size as usize];
                fs.read_at(fd, 0, &mut buf)
                    .map_err(|e| format!("read {p}: {e:?}"))?;
                fs.close(fd).map_err(|e| format!("{e:?}"))?;
            }
            found.insert(p);
        }
    }
    let inodes = fs.statfs().inodes;
    if inodes != found.len() as u64 + 1 {
        return Err(format!(
            "{inodes} inodes counted, {} reachable from the root",
            found.len() + 1
        ));
    }
    if !allowed.iter().any(|a| **a == found) {
        let a = allowed[0];
        let gone: Vec<_> = a.difference(&found).collect();
        let extra: Vec<_> = found.difference(a).collect();
        return Err(format!(
            "namespace neither before nor after the operation: vs before, missing {gone:?}, \
             extra {extra:?}"
        ));
    }
    Ok(())
}

#[test]
fn fill_to_no_space_then_empty() {
    let mut violations = Vec::new();
    for seed in [0xF111, 2, 3] {
        violations.extend(fill_and_empty(seed));
    }
    assert!(violations.is_empty(), "{violations:#?}");
}

/// Fill a 4 MiB volume with random creates, writes and mkdirs until even tiny ones fail with
/// `NoSpace`; check it, remount, empty it. Returns what went wrong.
fn fill_and_empty(rng_seed: u64) -> Vec<String> {
    let mut mems: Vec<Vec<u8>> = (0..3).map(|_| mem(4096)).collect();
    let mut mems = mems.iter_mut();
    let dev = QueuedRamDisk::new(cfg(4 * MIB, rng_seed ^ 21));
    let mut fs = QFs::format(dev, mems.next().unwrap(), FormatOptions::default()).unwrap();
    let free0 = fs.statfs().free_blocks;
    let mut rng = SmallRng::seed_from_u64(rng_seed);
    let mut t = Tree::default();
    let mut violations: Vec<String> = Vec::new();
    let mut no_space = 0;
    let mut early = 0;
    let mut short = 0;
    let (mut ops, mut ok) = (0, 0);
    let mut seed = 1000u64;
    let mut in_a_row = 0;
    let mut free_at_first = None;
    // Random sizes first; after a while of NoSpace, tiny ones only, until 20 fail in a row.
    while in_a_row < 20 && ops < 20_000 {
        ops += 1;
        let tiny = no_space >= 30;
        seed += 1;
        let dirs: Vec<&String> = t.dirs.iter().collect();
        let files: Vec<&String> = t.files.keys().collect();
        let in_dir = |rng: &mut SmallRng| -> String {
            if dirs.is_empty() || rng.gen_bool(0.3) {
                String::new()
            } else {
                dirs[rng.gen_range(0..dirs.len())].clone()
            }
        };
        let len = |rng: &mut SmallRng| match rng.gen_range(0..10) {
            _ if tiny => rng.gen_range(1..100),
            0..=3 => rng.gen_range(1..900),
            4..=7 => rng.gen_range(900..16_384),
            _ => rng.gen_range(16_384..65_536),
        };
        let op = match rng.gen_range(0..100) {
            0..=39 => FillOp::Create {
                path: format!("{}/f{seed}", in_dir(&mut rng)),
                len: len(&mut rng),
            },
            40..=69 if !files.is_empty() => FillOp::Append {
                path: files[rng.gen_range(0..files.len())].clone(),
                len: len(&mut rng),
            },
            70..=84 if !files.is_empty() => {
                let path = files[rng.gen_range(0..files.len())].clone();
                let size = t.files[&path].len() as u64;
                FillOp::Overwrite {
                    path,
                    off: rng.gen_range(0..size + 1),
                    len: len(&mut rng),
                }
            }
            85..=94 => FillOp::Mkdir {
                path: format!("{}/d{seed}", in_dir(&mut rng)),
            },
            _ => FillOp::Sync,
        };
        let inodes_before = fs.statfs().inodes;
        let gen_before = fs.volume().committed_generation();
        let names_before = names(&t);
        let r: Result<(), Error> = match &op {
            FillOp::Create { path, len } => {
                let data = bytes(seed, *len);
                match fs.open(path, OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::EXCL) {
                    Ok(fd) => {
                        t.files.insert(path.clone(), Vec::new());
                        let r = fs.write(fd, &data);
                        fs.close(fd).unwrap();
                        match r {
                            Ok(n) => {
                                // A short write when the volume fills up part-way (POSIX).
                                if n < data.len() {
                                    short += 1;
                                }
                                if n == 0 || n > data.len() {
                                    violations.push(format!("op {ops} {op:?}: write -> Ok({n})"));
                                }
                                t.files
                                    .insert(path.clone(), data[..n.min(data.len())].to_vec());
                                Ok(())
                            }
                            Err(e) => Err(e),
                        }
                    }
                    Err(e) => Err(e),
                }
            }
            FillOp::Append { path, len } | FillOp::Overwrite { path, len, .. } => {
                let data = bytes(seed, *len);
                let fd = fs.open(path, OpenFlags::WRITE).unwrap();
                let old = t.files[path].clone();
                let off = match op {
                    FillOp::Overwrite { off, .. } => off,
                    _ => old.len() as u64,
                };
                let r = fs.write_at(fd, off, &data);
                fs.close(fd).unwrap();
                let written = match r {
                    Ok(n) => {
                        if n < data.len() {
                            short += 1;
                        }
                        if n == 0 || n > data.len() {
                            violations.push(format!("op {ops} {op:?}: write_at -> Ok({n})"));
                        }
                        n.min(data.len())
                    }
                    Err(_) => data.len(),
                };
                let mut new = old.clone();
                let end = off as usize + written;
                if new.len() < end {
                    new.resize(end, 0);
                }
                new[off as usize..end].copy_from_slice(&data[..written]);
                let r = r.map(drop);
                match r {
                    Ok(()) => {
                        t.files.insert(path.clone(), new);
                    }
                    Err(_) => {
                        // A failed write: the file keeps its size, and every byte is its old
                        // one or the new one.
                        let fd = fs.open(path, OpenFlags::READ).unwrap();
                        let mut got = vec![0u8; end.max(old.len()) + 1];
                        let n = fs.read_at(fd, 0, &mut got).unwrap();
                        fs.close(fd).unwrap();
                        if n != old.len() {
                            violations.push(format!(
                                "op {ops} {op:?} failed with {r:?} but the size went {} -> {n}",
                                old.len()
                            ));
                        }
                        let mixed =
                            (0..n.min(old.len())).all(|i| got[i] == old[i] || got[i] == new[i]);
                        if !mixed {
                            violations.push(format!(
                                "op {ops} {op:?} failed with {r:?} and left bytes that are \
                                 neither old nor new"
                            ));
                        }
                        got.truncate(n);
                        t.files.insert(path.clone(), got);
                    }
                }
                r
            }
            FillOp::Mkdir { path } => {
                let r = fs.mkdir(path);
                if r.is_ok() {
                    t.dirs.insert(path.clone());
                }
                r
            }
            FillOp::Sync => fs.sync_all(),
        };
        if !matches!(op, FillOp::Sync) && fs.volume().committed_generation() != gen_before {
            // The volume checkpointed on its own (to reuse space freed since the last one).
            // What a power cut now brings back must be a consistent state: the namespace as
            // before or after this operation, every inode reachable, fsck clean.
            early += 1;
            let image = fs.volume().device().durable_image().to_vec();
            if let Err(e) = check_image(image, &[&names_before, &names(&t)]) {
                violations.push(format!(
                    "op {ops} {op:?} ({r:?}) checkpointed on its own; the durable state: {e}"
                ));
            }
        }
        match r {
            Ok(()) => {
                ok += 1;
                in_a_row = 0;
            }
            Err(Error::NoSpace) => {
                no_space += 1;
                in_a_row += 1;
                free_at_first.get_or_insert(fs.statfs().free_blocks);
                // A failed create / mkdir must not leave anything behind.
                let inodes_after = fs.statfs().inodes;
                let expect = match &op {
                    FillOp::Create { path, .. } if t.files.contains_key(path) => inodes_before + 1,
                    _ => inodes_before,
                };
                if inodes_after != expect {
                    violations.push(format!(
                        "op {ops} {op:?} failed with NoSpace; inode count {inodes_before} -> \
                         {inodes_after} (expected {expect})"
                    ));
                }
                if let FillOp::Create { path, .. } | FillOp::Mkdir { path } = &op {
                    let exists = fs.stat(path).is_ok();
                    let modelled = t.files.contains_key(path) || t.dirs.contains(path);
                    if exists != modelled {
                        violations.push(format!(
                            "op {ops} {op:?} failed with NoSpace; the name exists: {exists}"
                        ));
                    }
                }
            }
            Err(e) => {
                violations.push(format!("op {ops} {op:?} failed with {e:?} (not NoSpace)"));
                break;
            }
        }
    }
    eprintln!(
        "filling 4 MiB (seed {rng_seed:#x}): {ops} ops, {ok} ok ({short} short writes), \
         {no_space} NoSpace, {early} checkpoints the volume made on its own; {} files, {} dirs; \
         free blocks of {free0}: {free_at_first:?} at the first NoSpace, {} at the end",
        t.files.len(),
        t.dirs.len(),
        fs.statfs().free_blocks
    );
    assert!(no_space > 0, "the volume never filled up");

    // Still usable: the namespace and bytes are as written, and a clean remount keeps them.
    compare_tree(&mut fs, &t, "after NoSpace");
    let dev = match fs.unmount() {
        Ok(dev) => dev,
        Err(e) => {
            violations.push(format!("unmount after NoSpace failed: {e:?}"));
            return violations;
        }
    };
    let mut fs = QFs::mount(dev, mems.next().unwrap()).unwrap();
    compare_tree(&mut fs, &t, "after remount");
    fsck(&mut fs);

    // Empty it: every delete must work on a full volume. (Failures are summarised: the first
    // one with the shape of free space at that moment, then a count.)
    let mut failed = 0;
    let mut first_fail = None;
    for p in t.files.keys() {
        if let Err(e) = fs.unlink(p) {
            failed += 1;
            first_fail.get_or_insert_with(|| format!("unlink {p}: {e:?}; {}", free_shape(&mut fs)));
        }
    }
    let mut dirs: Vec<&String> = t.dirs.iter().collect();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.matches('/').count()));
    for d in dirs {
        if let Err(e) = fs.rmdir(d) {
            failed += 1;
            first_fail.get_or_insert_with(|| format!("rmdir {d}: {e:?}; {}", free_shape(&mut fs)));
        }
    }
    if let Some(f) = first_fail {
        violations.push(format!(
            "seed {rng_seed:#x}: {failed} of {} deletes failed on the full volume; the first: {f}",
            t.files.len() + t.dirs.len()
        ));
    }
    fs.sync_all().unwrap();
    fs.sync_all().unwrap();
    let s = fs.statfs();
    let rep = fsck(&mut fs);
    eprintln!(
        "emptied: free blocks {} (after format {free0}), inodes {}, fsck leaked {}, \
         data blocks {}",
        s.free_blocks, s.inodes, rep.leaked, rep.data_blocks
    );
    if s.free_blocks != free0 {
        violations.push(format!(
            "free blocks {} after emptying, {free0} after format",
            s.free_blocks
        ));
    }
    if s.inodes != 1 {
        violations.push(format!("{} inodes after emptying", s.inodes));
    }
    if rep.leaked != 0 || rep.data_blocks != 0 {
        violations.push(format!("after emptying: {rep:?}"));
    }
    violations
}

/// A full volume whose free space is fragmented (many short free runs) must still be emptied:
/// fill it with 5-block files, delete every other one, fill up again with one-block files,
/// then delete everything. Prints how much was free when creates started failing.
#[test]
fn deletes_work_when_free_space_is_fragmented() {
    let mut m = mem(4096);
    let dev = QueuedRamDisk::new(cfg(4 * MIB, 4));
    let mut fs = QFs::format(dev, &mut m, FormatOptions::default()).unwrap();
    let w = OpenFlags::WRITE | OpenFlags::CREATE;
    let data = bytes(1, 5 * BS as usize);
    let mut files = Vec::new();
    for i in 0.. {
        let p = format!("/f{i}");
        let fd = match fs.open(&p, w) {
            Ok(fd) => fd,
            Err(Error::NoSpace) => break,
            Err(e) => panic!("create {p}: {e:?}"),
        };
        let r = fs.write(fd, &data);
        fs.close(fd).unwrap();
        files.push(p);
        match r {
            Ok(n) if n == data.len() => {}
            Ok(_) | Err(Error::NoSpace) => break,
            Err(e) => panic!("write: {e:?}"),
        }
    }
    fs.sync_all().unwrap();
    let mut kept = Vec::new();
    for (i, p) in files.into_iter().enumerate() {
        if i % 2 == 0 {
            fs.unlink(&p)
                .unwrap_or_else(|e| panic!("unlink {p}: {e:?}"));
        } else {
            kept.push(p);
        }
    }
    fs.sync_all().unwrap();
    fs.sync_all().unwrap();
    // Fill up again with one-block files: they take the reserve and the short runs.
    let small = bytes(2, 3000);
    for i in 0.. {
        let p = format!("/g{i}");
        let fd = match fs.open(&p, w) {
            Ok(fd) => fd,
            Err(Error::NoSpace) => break,
            Err(e) => panic!("create {p}: {e:?}"),
        };
        let r = fs.write(fd, &small);
        fs.close(fd).unwrap();
        kept.push(p);
        match r {
            Ok(n) if n == small.len() => {}
            Ok(_) | Err(Error::NoSpace) => break,
            Err(e) => panic!("write: {e:?}"),
        }
    }
    fs.sync_all().unwrap();
    let shape = free_shape(&mut fs);
    eprintln!(
        "fragmented volume, creates fail with NoSpace; {} files to delete; {shape}",
        kept.len()
    );
    for p in &kept {
        if let Err(e) = fs.unlink(p) {
            panic!(
                "unlink {p} failed with {e:?} ({} files left to delete); free space: {shape}",
                kept.len()
            );
        }
    }
}
