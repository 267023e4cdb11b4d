//! Hostile images: every byte of every metadata block of a populated image flipped, in turn.
//!
//! The populated image ([`populated`]) has a filesystem tree of more than one level, a
//! free-space tree, both superblock copies describing the same tree (two checkpoints in a
//! row), and journal records written by `fsync` after the last checkpoint, so mount replays.
//! Its metadata ([`Region`]s) are the two superblock copies, every node of both trees, and
//! every written sector of the journal.
//!
//! Each mutation flips one byte (`^ 0xFF`) and checks the image on a worker thread with a
//! time limit and a device request budget:
//!
//! * never a panic, never a hang, never unbounded work;
//! * mount either fails with `Corrupt`, `NotFormatted` or `Unsupported`, or succeeds; then
//!   fsck either reports the damage (`Err(Corrupt)` or a report that is not clean) or the
//!   volume is intact, and the walk either stops with `Corrupt` or shows exactly the volume
//!   as populated — never wrong data presented as right. The one other outcome allowed is an
//!   *older* volume after a flip in a superblock copy or in the journal: mount falls back to
//!   the other superblock copy, or replay stops at the damaged record; that volume must be one
//!   the image really held at a sync point (counted as `older`, not a violation).
//! * a flip in a tree node is always found by fsck (every node it reaches is verified).
//!
//! Re-sealed mutations ([`Mode::Resealed`]) flip one bit and then recompute the block's
//! checksum, so the damage reaches the decoders' semantic checks. Such an image may be a
//! valid volume with other contents, so only panics, hangs, unbounded work and errors other
//! than the corruption kinds are violations there.

use std::sync::Arc;
use std::time::Duration;

use bonsaifs::device::{QueuedRamDisk, RamDisk};
use bonsaifs::fs::OpenFlags;
use bonsaifs::volume::{FormatOptions, Volume};
use bonsaifs::wire::{BlockHeader, SUPERBLOCK_LEN, SUPERBLOCK_OFFSETS};
use bonsaifs::Error;

use crate::bounded::{budget_spent, budgeted, run_limited, Cut};
use crate::checker::{Tally, Violation};
use crate::image::{
    mount_mem_len, queued_config, walk, writes_on_image, Budget, HFs, BLOCK, SLOTS,
};
use crate::model::Tree;
use crate::pattern;

/// What a metadata region is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegionKind {
    /// Superblock copy 0 or 1.
    Superblock(usize),
    /// A node of tree `tree` (1: filesystem, 2: free space) at this block.
    Node {
        /// Tree id.
        tree: u64,
        /// Block number.
        block: u64,
    },
    /// A written journal sector.
    Log {
        /// Sector number.
        sector: u64,
    },
}

/// A range of metadata bytes in the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    /// What it is.
    pub kind: RegionKind,
    /// First byte in the image.
    pub start: usize,
    /// Length in bytes.
    pub len: usize,
}

/// The populated image and what it may show.
#[derive(Debug, Clone)]
pub struct Populated {
    /// The durable image (not unmounted: the journal holds records to replay).
    pub image: Vec<u8>,
    /// The volume at each sync point, oldest first; the last is what the image holds.
    pub states: Vec<Tree>,
    /// Every metadata region.
    pub regions: Vec<Region>,
}

/// How bytes are mutated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `^ 0xFF`, checksums left as they are.
    Flip,
    /// One bit flipped, then the block's checksum recomputed (superblocks and nodes only).
    Resealed,
}

impl Mode {
    fn resealed(self) -> bool {
        self == Mode::Resealed
    }
}

/// Build the populated image.
pub fn populated() -> Result<Populated, String> {
    let mut mem = vec![0u8; mount_mem_len()];
    let dev = QueuedRamDisk::new(queued_config(true, 32, 5));
    let mut fs =
        HFs::format(dev, &mut mem, FormatOptions::default()).map_err(|e| format!("format: {e}"))?;
    let mut uid = 1u32 << 28;
    for d in ["/A", "/B", "/A/many"] {
        fs.mkdir(d).map_err(|e| format!("mkdir {d}: {e}"))?;
    }
    // Enough inline files for a multi-leaf tree, plus files with extents and holes.
    for i in 0..40 {
        uid += 1;
        let fd = write_file(&mut fs, uid, &format!("/A/many/f{i:02}"), 0, 300 + 37 * i)?;
        fs.close(fd).map_err(|e| e.to_string())?;
    }
    for (p, off, len) in [
        ("/A/foo", 0, 10_000),
        ("/B/foo", 12_288, 4096),
        ("/B/bar", 0, 9000),
    ] {
        uid += 1;
        let fd = write_file(&mut fs, uid, p, off, len)?;
        fs.close(fd).map_err(|e| e.to_string())?;
    }
    fs.sync_all().map_err(|e| format!("sync_all: {e}"))?;
    fs.sync_all().map_err(|e| format!("sync_all: {e}"))?;
    let mut states = vec![walk(&mut fs, &Budget::default()).map_err(|e| e.to_string())?];
    // Journaled changes: an overwrite (a mapped block), a small append (bytes in the record),
    // a create and a rename; each fsync'd.
    let steps: [(&str, u64, usize); 3] = [
        ("/A/foo", 4096, 4096),
        ("/B/bar", 9000, 100),
        ("/B/new", 0, 500),
    ];
    for (p, off, len) in steps {
        uid += 1;
        let fd = write_file(&mut fs, uid, p, off, len)?;
        fs.fsync(fd).map_err(|e| format!("fsync {p}: {e}"))?;
        fs.close(fd).map_err(|e| e.to_string())?;
        states.push(walk(&mut fs, &Budget::default()).map_err(|e| e.to_string())?);
    }
    fs.rename("/A/many/f03", "/B/moved")
        .map_err(|e| format!("rename: {e}"))?;
    let fd = fs
        .open("/B/moved", OpenFlags::READ | OpenFlags::WRITE)
        .map_err(|e| e.to_string())?;
    fs.fsync(fd).map_err(|e| format!("fsync: {e}"))?;
    fs.close(fd).map_err(|e| e.to_string())?;
    states.push(walk(&mut fs, &Budget::default()).map_err(|e| e.to_string())?);
    let mut dev = fs.into_device();
    dev.power_cut();
    let mut image = dev.durable_image().to_vec();
    let regions = regions(&mut image)?;
    // The image must read back as the last state.
    let mut mem = vec![0u8; mount_mem_len()];
    let mut copy = image.clone();
    let mut fs = HFs::mount(
        RamDisk::new(&mut copy, 512).map_err(|e| format!("{e:?}"))?,
        &mut mem,
    )
    .map_err(|e| format!("mount: {e}"))?;
    let got = walk(&mut fs, &Budget::default()).map_err(|e| e.to_string())?;
    if Some(&got) != states.last() {
        return Err("the populated image does not read back as written".into());
    }
    Ok(Populated {
        image,
        states,
        regions,
    })
}

/// Open (creating) `path` and write `len` bytes of write `uid`'s pattern at `off`.
fn write_file<'b>(
    fs: &mut HFs<'b, QueuedRamDisk<'b>>,
    uid: u32,
    path: &str,
    off: u64,
    len: usize,
) -> Result<bonsaifs::fs::Fd, String> {
    let rw = OpenFlags::READ | OpenFlags::WRITE | OpenFlags::CREATE;
    let fd = fs.open(path, rw).map_err(|e| format!("open {path}: {e}"))?;
    fs.write_at(fd, off, &pattern::fill(uid, off, len))
        .map_err(|e| format!("write {path}: {e}"))?;
    Ok(fd)
}

/// The metadata regions of `image`: superblocks, tree nodes (from a read-only mount, which
/// does not replay), written journal sectors.
fn regions(image: &mut [u8]) -> Result<Vec<Region>, String> {
    let mut out = Vec::new();
    for (i, &off) in SUPERBLOCK_OFFSETS.iter().enumerate() {
        out.push(Region {
            kind: RegionKind::Superblock(i),
            start: off as usize,
            len: SUPERBLOCK_LEN,
        });
    }
    let mut mem = vec![0u8; mount_mem_len()];
    let dev = RamDisk::new(image, 512)
        .map_err(|e| format!("{e:?}"))?
        .read_only(true);
    let mut vol = Volume::<_, SLOTS>::mount(dev, &mut mem).map_err(|e| format!("mount: {e}"))?;
    let mut nodes = Vec::new();
    vol.visit_nodes(|tree, block| nodes.push((tree, u64::from(block))))
        .map_err(|e| format!("visit: {e}"))?;
    let sb = *vol.superblock();
    drop(vol);
    for (tree, block) in nodes {
        out.push(Region {
            kind: RegionKind::Node { tree, block },
            start: block as usize * BLOCK,
            len: BLOCK,
        });
    }
    let bs = sb.block_size.get() as usize;
    let log_start = sb.log_start.get() as usize * bs;
    let log_end = log_start + sb.log_blocks.get() as usize * bs;
    for s in (log_start..log_end.min(image.len())).step_by(512) {
        if image[s..s + 512].iter().any(|&b| b != 0) {
            out.push(Region {
                kind: RegionKind::Log {
                    sector: (s / 512) as u64,
                },
                start: s,
                len: 512,
            });
        }
    }
    Ok(out)
}

/// What one mutated image did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Mount refused it.
    Rejected(Error),
    /// Mount succeeded; fsck or the walk reported the damage.
    Detected(String),
    /// Intact: the walk showed the volume exactly as populated.
    Correct,
    /// An older volume of the image (superblock fallback or a shorter journal replay).
    Older(usize),
    /// Something the rules forbid.
    Bad(&'static str, String),
}

/// Check one mutated image (see the module docs for the rules).
pub fn judge(image: &mut [u8], pop: &Populated, region: Region, mode: Mode) -> Outcome {
    let mut mem = vec![0u8; mount_mem_len()];
    let Ok(dev) = RamDisk::new(image, 512) else {
        return Outcome::Bad("harness", "ram disk".into());
    };
    let mut fs = match HFs::mount(budgeted(dev), &mut mem) {
        Ok(fs) => fs,
        Err(e @ (Error::Corrupt | Error::NotFormatted | Error::Unsupported)) => {
            return Outcome::Rejected(e)
        }
        Err(e) if mode.resealed() && !matches!(e, Error::Io(_)) => return Outcome::Rejected(e),
        Err(e) => return Outcome::Bad("hostile-mount", format!("mount answered {e:?}")),
    };
    let mut scratch = Vec::new();
    let need = fs.fsck_scratch_len();
    let fsck = if need > 16 << 20 {
        Err(format!("fsck would need {need} bytes"))
    } else {
        scratch.resize(need, 0);
        match fs.fsck(&mut scratch) {
            Ok(r) if r.is_clean() => Ok(()),
            Ok(r) => Err(format!("fsck: {r:?}")),
            Err(e @ Error::Corrupt) => Err(format!("fsck: {e:?}")),
            Err(e) if mode.resealed() && !matches!(e, Error::Io(_)) => Err(format!("fsck: {e:?}")),
            Err(e) => return Outcome::Bad("hostile-fsck", format!("fsck answered {e:?}")),
        }
    };
    let walked = walk(&mut fs, &Budget::default());
    if budget_spent(fs.volume().device()) {
        return Outcome::Bad("unbounded", "exceeded the request budget".into());
    }
    if mode.resealed() {
        return match (fsck, walked) {
            (
                _,
                Err(crate::image::WalkError::Fs {
                    error: Error::Io(e),
                    what,
                }),
            ) => Outcome::Bad("hostile-walk", format!("{what}: Io({e:?})")),
            (Err(f), _) => Outcome::Detected(f),
            (Ok(()), Err(w)) => Outcome::Detected(w.to_string()),
            (Ok(()), Ok(_)) => Outcome::Correct,
        };
    }
    let last = pop.states.len() - 1;
    match walked {
        Err(crate::image::WalkError::Fs {
            error: Error::Corrupt,
            what,
        }) => Outcome::Detected(what),
        Err(e) => Outcome::Bad("hostile-walk", e.to_string()),
        Ok(tree) => {
            let idx = pop.states.iter().rposition(|s| *s == tree);
            let node = matches!(region.kind, RegionKind::Node { .. });
            match (idx, &fsck) {
                (Some(i), Ok(())) if node => Outcome::Bad(
                    "fsck-missed",
                    format!("fsck is clean on a damaged node; the volume reads as state {i}"),
                ),
                (Some(i), _) if i == last => match fsck {
                    Ok(()) => Outcome::Correct,
                    Err(f) => Outcome::Detected(f),
                },
                (Some(i), _) if !node => Outcome::Older(i),
                (Some(i), _) => Outcome::Bad(
                    "wrong-data",
                    format!("a damaged node gives the older volume of sync point {i}"),
                ),
                (None, f) => Outcome::Bad(
                    "wrong-data",
                    format!(
                        "the volume reads as none it ever held (fsck: {}): {}",
                        f.clone().err().unwrap_or_else(|| "clean".into()),
                        crate::oracle::describe_diff(&pop.states[last], &tree)
                    ),
                ),
            }
        }
    }
}

/// Mutate byte `offset` of `region` in `image` (and re-seal, in that mode).
pub fn mutate(image: &mut [u8], region: Region, offset: usize, mode: Mode) {
    let at = region.start + offset;
    match mode {
        Mode::Flip => image[at] ^= 0xFF,
        Mode::Resealed => {
            image[at] ^= 1 << (offset % 8);
            let block = &mut image[region.start..region.start + region.len];
            if !matches!(region.kind, RegionKind::Log { .. }) {
                BlockHeader::seal(block);
            }
        }
    }
}

/// Counts of a hostile run by outcome.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostileCounts {
    /// Mount refused the image.
    pub rejected: u64,
    /// fsck or the walk found the damage.
    pub detected: u64,
    /// The volume read back intact.
    pub correct: u64,
    /// An older volume (superblock fallback, shorter replay).
    pub older: u64,
}

/// Check every mutation `(region index, offset)` in `which`, each on a worker thread with a
/// time limit. Stops at the first hang (its thread keeps spinning).
pub fn check_mutations(
    pop: &Arc<Populated>,
    which: &[(usize, usize)],
    mode: Mode,
    limit: Duration,
) -> (Tally, HostileCounts) {
    let mut t = Tally::default();
    let mut c = HostileCounts::default();
    for &(ri, off) in which {
        let Some(&region) = pop.regions.get(ri) else {
            continue;
        };
        t.images_mutated += 1;
        let p = pop.clone();
        let r = run_limited(limit, move || {
            let mut img = p.image.clone();
            mutate(&mut img, region, off, mode);
            let mut for_writes = img.clone();
            let outcome = judge(&mut img, &p, region, mode);
            // Then change the damaged volume: the write paths must not panic or hang on it
            // either (a panic here is reported like one in the judging).
            writes_on_image(&mut for_writes);
            outcome
        });
        let context = format!("{:?} byte {off} ({mode:?})", region.kind);
        let bad = |kind: &str, detail: String| Violation {
            kind: kind.into(),
            detail,
            workload: "hostile".into(),
            context: context.clone(),
            repro: format!(
                "cargo run --release -p bonsaifs-harness -- hostile --region {ri} --offset {off}{}",
                if mode.resealed() { " --resealed" } else { "" }
            ),
        };
        match r {
            Ok(Outcome::Rejected(_)) => c.rejected += 1,
            Ok(Outcome::Detected(_)) => c.detected += 1,
            Ok(Outcome::Correct) => c.correct += 1,
            Ok(Outcome::Older(_)) => c.older += 1,
            Ok(Outcome::Bad(kind, detail)) => t.violations.push(bad(kind, detail)),
            Err(Cut::Panic(msg)) => t.violations.push(bad("panic", msg)),
            Err(Cut::Hang) => {
                t.violations
                    .push(bad("hang", format!("no answer within {limit:?}")));
                break;
            }
        }
    }
    (t, c)
}

/// Every `(region, offset)` of the populated image, each `stride`-th byte (1: every byte).
pub fn all_mutations(pop: &Populated, stride: usize, mode: Mode) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for (ri, r) in pop.regions.iter().enumerate() {
        if mode.resealed() && matches!(r.kind, RegionKind::Log { .. }) {
            continue;
        }
        out.extend((0..r.len).step_by(stride.max(1)).map(|o| (ri, o)));
    }
    out
}
