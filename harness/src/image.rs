//! Volumes and images: the starting volume every workload runs on, mounting an image, walking
//! a mounted volume into a [`Tree`] (bounded, for hostile images), and the compact run-length
//! form images take in the fuzz corpora.

use std::collections::HashMap;
use std::sync::OnceLock;

use bonsaifs::device::{BlockDevice, QueuedConfig, QueuedRamDisk, RamDisk};
use bonsaifs::fs::{FileKind, Fs, OpenFlags};
use bonsaifs::volume::{memory_needed, FormatOptions};
use bonsaifs::wire::{BlockHeader, MAGIC, SUPERBLOCK_LEN, SUPERBLOCK_OFFSETS};
use bonsaifs::Error;

use crate::bounded::budgeted;

use crate::crash_disk::{fingerprint, Fingerprint};
use crate::model::{Ino, Model, Node, Tree, ROOT};
use crate::pattern;
use crate::workload::{BaseEntry, BASE, BASE_UID, BULK_BYTES, BULK_DIR, BULK_FILES};

/// Size of every harness volume: small, so that a crash state is cheap to build and mount.
pub const IMAGE_BYTES: usize = 1 << 20;
/// Filesystem block size.
pub const BLOCK: usize = 4096;
/// Cache slots.
pub const SLOTS: usize = 32;
/// Open-file handles.
pub const HANDLES: usize = 8;

/// The filesystem type over device `D`, as the harness mounts it.
pub type HFs<'b, D> = Fs<'b, D, SLOTS, HANDLES>;

/// Bytes of memory a mount needs.
pub fn mount_mem_len() -> usize {
    memory_needed(512, BLOCK, SLOTS)
}

/// The queued RAM disk a live run uses: out-of-order completion, volatile write cache.
pub fn queued_config(fua: bool, queue_depth: u16, seed: u64) -> QueuedConfig {
    QueuedConfig {
        sector_size: 512,
        sector_count: (IMAGE_BYTES / 512) as u64,
        queue_depth,
        volatile_cache: true,
        fua,
        min_polls: 1,
        max_polls: 4,
        seed,
    }
}

/// The starting volume: its image, fingerprint and model (with the filesystem's inode numbers).
#[derive(Debug, Clone)]
pub struct BaseImage {
    /// The durable image after a clean unmount.
    pub image: Vec<u8>,
    /// Its fingerprint.
    pub fingerprint: Fingerprint,
    /// What it holds.
    pub model: Model,
    /// Each file's writes `(offset, length, pattern uid)`.
    pub writes: HashMap<Ino, Vec<(u64, usize, u32)>>,
}

/// The starting volume every workload runs on (built once per process).
pub fn base() -> &'static BaseImage {
    static BASE_IMAGE: OnceLock<BaseImage> = OnceLock::new();
    BASE_IMAGE.get_or_init(|| build_base().unwrap_or_else(|e| panic!("building the base: {e}")))
}

/// Format a volume, create [`BASE`] in it, unmount; read it back into a model and check that
/// the model holds exactly what was written.
fn build_base() -> Result<BaseImage, String> {
    let mut mem = vec![0u8; mount_mem_len()];
    let dev = QueuedRamDisk::new(queued_config(true, 32, 3));
    let mut fs =
        HFs::format(dev, &mut mem, FormatOptions::default()).map_err(|e| format!("format: {e}"))?;
    let mut uid = BASE_UID;
    let mut want = Model::new();
    let mut base_writes: HashMap<Ino, Vec<(u64, usize, u32)>> = HashMap::new();
    for entry in BASE {
        match entry {
            BaseEntry::Dir(p) => {
                fs.mkdir(p).map_err(|e| format!("mkdir {p}: {e}"))?;
                let ino = fs.stat(p).map_err(|e| format!("stat {p}: {e}"))?.ino;
                want.mkdir(p, ino).map_err(|e| format!("model {p}: {e}"))?;
            }
            BaseEntry::File(p, writes) => {
                let fd = fs
                    .open(p, OpenFlags::READ | OpenFlags::WRITE | OpenFlags::CREATE)
                    .map_err(|e| format!("create {p}: {e}"))?;
                let ino = fs.fstat(fd).map_err(|e| format!("fstat {p}: {e}"))?.ino;
                want.create(p, ino).map_err(|e| format!("model {p}: {e}"))?;
                for &(off, len) in writes {
                    fs.write_at(fd, off, &pattern::fill(uid, off, len))
                        .map_err(|e| format!("write {p}: {e}"))?;
                    want.apply(&crate::model::Concrete::Write { ino, off, len, uid })
                        .map_err(|e| format!("model write {p}: {e}"))?;
                    base_writes.entry(ino).or_default().push((off, len, uid));
                    uid += 1;
                }
                fs.close(fd).map_err(|e| format!("close {p}: {e}"))?;
            }
        }
    }
    fs.mkdir(BULK_DIR)
        .map_err(|e| format!("mkdir {BULK_DIR}: {e}"))?;
    let dir = fs.stat(BULK_DIR).map_err(|e| e.to_string())?.ino;
    want.mkdir(BULK_DIR, dir).map_err(|e| e.to_string())?;
    for i in 0..BULK_FILES {
        let p = format!("{BULK_DIR}/f{i:02}");
        let fd = fs
            .open(&p, OpenFlags::READ | OpenFlags::WRITE | OpenFlags::CREATE)
            .map_err(|e| format!("create {p}: {e}"))?;
        let ino = fs.fstat(fd).map_err(|e| e.to_string())?.ino;
        want.create(&p, ino).map_err(|e| e.to_string())?;
        fs.write_at(fd, 0, &pattern::fill(uid, 0, BULK_BYTES))
            .map_err(|e| format!("write {p}: {e}"))?;
        let w = crate::model::Concrete::Write {
            ino,
            off: 0,
            len: BULK_BYTES,
            uid,
        };
        want.apply(&w).map_err(|e| e.to_string())?;
        base_writes
            .entry(ino)
            .or_default()
            .push((0, BULK_BYTES, uid));
        uid += 1;
        fs.close(fd).map_err(|e| e.to_string())?;
    }
    let mut image = fs
        .unmount()
        .map_err(|e| format!("unmount: {e}"))?
        .durable_image()
        .to_vec();
    let mut mem = vec![0u8; mount_mem_len()];
    let mut fs = mount_ram(&mut image, &mut mem).map_err(|e| format!("mount: {e}"))?;
    let model = walk_model(&mut fs, &Budget::default()).map_err(|e| format!("walk: {e}"))?;
    if model != want {
        return Err("the base volume does not read back as written".into());
    }
    drop(fs);
    Ok(BaseImage {
        fingerprint: fingerprint(&image),
        image,
        model,
        writes: base_writes,
    })
}

/// Mount `image` over a RAM disk (no queue, no volatile cache: recovery as it runs after a
/// reboot).
pub fn mount_ram<'m, 'b>(
    image: &'m mut [u8],
    mem: &'b mut [u8],
) -> Result<HFs<'b, RamDisk<'m, 'b>>, Error> {
    let dev = RamDisk::new(image, 512).map_err(Error::Io)?;
    HFs::mount(dev, mem)
}

/// Limits of a walk, so that a hostile image cannot make it run forever or exhaust memory.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Entries listed in total.
    pub entries: usize,
    /// Directory depth.
    pub depth: usize,
    /// Largest file read whole.
    pub file_bytes: u64,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            entries: 10_000,
            depth: 64,
            file_bytes: 64 << 20,
        }
    }
}

/// Why a walk stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalkError {
    /// A filesystem call failed.
    Fs {
        /// The call and path.
        what: String,
        /// Its error.
        error: Error,
    },
    /// The volume shows something impossible (a name listed twice, a size beyond the budget,
    /// a short read, a cycle).
    Impossible(String),
}

impl std::fmt::Display for WalkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WalkError::Fs { what, error } => write!(f, "{what}: {error:?}"),
            WalkError::Impossible(s) => f.write_str(s),
        }
    }
}

fn fs_err(what: impl Into<String>) -> impl FnOnce(Error) -> WalkError {
    let what = what.into();
    move |error| WalkError::Fs { what, error }
}

/// One listed entry of a walk: path, inode, and the file bytes (`None` for a directory).
type Walked = (String, Ino, u64, Option<Vec<u8>>);

/// Walk the whole namespace: every directory listed, every file read whole.
fn walk_entries<'b, D: BlockDevice<'b>>(
    fs: &mut HFs<'b, D>,
    budget: &Budget,
) -> Result<Vec<Walked>, WalkError> {
    let mut out: Vec<Walked> = Vec::new();
    let mut stack = vec![(String::new(), ROOT, 0usize)];
    let mut seen_dirs = std::collections::HashSet::new();
    seen_dirs.insert(ROOT);
    while let Some((prefix, dir_ino, depth)) = stack.pop() {
        if depth > budget.depth {
            return Err(WalkError::Impossible(format!(
                "{prefix}: deeper than {depth}"
            )));
        }
        let shown = if prefix.is_empty() { "/" } else { &prefix };
        let mut cur = fs
            .read_dir(shown)
            .map_err(fs_err(format!("read_dir {shown}")))?;
        let mut names = std::collections::HashSet::new();
        while let Some(e) = fs
            .read_dir_next(&mut cur)
            .map_err(fs_err(format!("read_dir_next {shown}")))?
        {
            if out.len() >= budget.entries {
                return Err(WalkError::Impossible(format!(
                    "more than {} entries",
                    budget.entries
                )));
            }
            let name = e.name().to_string();
            if name.is_empty() || name.contains('/') || !names.insert(name.clone()) {
                return Err(WalkError::Impossible(format!(
                    "{shown}: bad or repeated name {name:?}"
                )));
            }
            let path = format!("{prefix}/{name}");
            match e.kind {
                FileKind::Dir => {
                    if !seen_dirs.insert(e.ino) {
                        return Err(WalkError::Impossible(format!(
                            "{path}: directory {} listed twice",
                            e.ino
                        )));
                    }
                    out.push((path.clone(), e.ino, dir_ino, None));
                    stack.push((path, e.ino, depth + 1));
                }
                FileKind::File => {
                    let fd = fs
                        .open(&path, OpenFlags::READ)
                        .map_err(fs_err(format!("open {path}")))?;
                    let r = read_whole(fs, fd, &path, budget);
                    let c = fs.close(fd).map_err(fs_err(format!("close {path}")));
                    let data = r?;
                    c?;
                    out.push((path, e.ino, dir_ino, Some(data)));
                }
            }
        }
    }
    Ok(out)
}

fn read_whole<'b, D: BlockDevice<'b>>(
    fs: &mut HFs<'b, D>,
    fd: bonsaifs::fs::Fd,
    path: &str,
    budget: &Budget,
) -> Result<Vec<u8>, WalkError> {
    let size = fs.fstat(fd).map_err(fs_err(format!("fstat {path}")))?.size;
    if size > budget.file_bytes {
        return Err(WalkError::Impossible(format!("{path}: size {size}")));
    }
    let mut data = vec![0u8; size as usize + 1];
    let mut got = 0;
    while got < data.len() {
        let n = fs
            .read_at(fd, got as u64, &mut data[got..])
            .map_err(fs_err(format!("read {path} @{got}")))?;
        if n == 0 {
            break;
        }
        got += n;
    }
    if got as u64 != size {
        return Err(WalkError::Impossible(format!(
            "{path}: read {got} bytes of a {size}-byte file"
        )));
    }
    data.truncate(got);
    Ok(data)
}

/// What the mounted volume shows.
pub fn walk<'b, D: BlockDevice<'b>>(
    fs: &mut HFs<'b, D>,
    budget: &Budget,
) -> Result<Tree, WalkError> {
    Ok(walk_entries(fs, budget)?
        .into_iter()
        .map(|(p, _, _, d)| (p, d))
        .collect())
}

/// The mounted volume as a model (with its inode numbers).
pub fn walk_model<'b, D: BlockDevice<'b>>(
    fs: &mut HFs<'b, D>,
    budget: &Budget,
) -> Result<Model, WalkError> {
    let mut m = Model::new();
    // Entries come parents first (a directory is listed before its children are walked).
    for (path, ino, parent, data) in walk_entries(fs, budget)? {
        let name = path.rsplit('/').next().unwrap_or("");
        let node = match data {
            None => Node::Dir {
                parent,
                entries: Default::default(),
            },
            Some(data) => Node::File { data },
        };
        m.insert_named(parent, name, ino, node)
            .map_err(|e| WalkError::Impossible(format!("{path}: {e:?}")))?;
    }
    Ok(m)
}

/// Run-length form of an image: `0x00 n:u32le` = `n` zero bytes, `0x01 n:u16le bytes` = `n`
/// literal bytes. Real images are mostly zeros, so a 1 MiB image takes a few KiB.
pub fn rle_encode(image: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < image.len() {
        let zeros = image[i..].iter().take_while(|&&b| b == 0).count();
        if zeros >= 8 || i + zeros == image.len() {
            let n = zeros.min(u32::MAX as usize);
            out.push(0);
            out.extend_from_slice(&(n as u32).to_le_bytes());
            i += n;
            continue;
        }
        // Literal run: until 8 zeros in a row or 65535 bytes.
        let mut j = i;
        while j < image.len() && j - i < u16::MAX as usize {
            if image[j..].iter().take(8).all(|&b| b == 0) && image.len() - j >= 8 {
                break;
            }
            j += 1;
        }
        out.push(1);
        out.extend_from_slice(&((j - i) as u16).to_le_bytes());
        out.extend_from_slice(&image[i..j]);
        i = j;
    }
    out
}

/// Decode [`rle_encode`]'s form into an image of exactly `len` bytes (cut or zero-padded).
/// Any bytes decode to something: malformed runs are cut short.
pub fn rle_decode(mut data: &[u8], len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    while out.len() < len && !data.is_empty() {
        let tag = data[0];
        data = &data[1..];
        if tag % 2 == 0 {
            let mut n = [0u8; 4];
            let k = data.len().min(4);
            n[..k].copy_from_slice(&data[..k]);
            data = &data[k..];
            let n = (u32::from_le_bytes(n) as usize).min(len - out.len());
            out.resize(out.len() + n, 0);
        } else {
            let mut n = [0u8; 2];
            let k = data.len().min(2);
            n[..k].copy_from_slice(&data[..k]);
            data = &data[k..];
            let n = (u16::from_le_bytes(n) as usize)
                .min(data.len())
                .min(len - out.len());
            out.extend_from_slice(&data[..n]);
            data = &data[n..];
        }
    }
    out.resize(len, 0);
    out
}

/// One `mount_image` fuzz case (`fuzz/fuzz_targets/mount_image.rs`), here so that a stable
/// test can replay the committed corpus: one flags byte, then an image in [`rle_encode`]'s
/// form. Flag bit 0 re-seals the superblock copies and every block that starts with the block
/// magic, so that mutations past the checksums reach the decoders' semantic checks. Mount,
/// fsck, a walk of the whole namespace and `statfs` run under the request budget, then
/// [`exercise_writes`], a second fsck and an unmount; their answers do not
/// matter, only that none panics, overflows or runs unbounded.
pub fn mount_image_case(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let mut image = rle_decode(rest, IMAGE_BYTES);
    if flags & 1 != 0 {
        reseal(&mut image);
    }
    let mut mem = vec![0u8; mount_mem_len()];
    let Ok(dev) = RamDisk::new(&mut image, 512) else {
        return;
    };
    let Ok(mut fs) = HFs::mount(budgeted(dev), &mut mem) else {
        return;
    };
    fsck_bounded(&mut fs);
    let walked = walk(&mut fs, &Budget::default());
    let _ = fs.statfs();
    exercise_writes(&mut fs, walked.ok());
    fsck_bounded(&mut fs);
    let _ = fs.unmount();
}

/// fsck, unless a hostile block count or inode count asks for more than 16 MiB of scratch.
fn fsck_bounded<'b, D: BlockDevice<'b>>(fs: &mut HFs<'b, D>) {
    let need = fs.fsck_scratch_len();
    if need <= 16 << 20 {
        let mut scratch = vec![0u8; need];
        let _ = fs.fsck(&mut scratch);
    }
}

/// Mount `image` (under the request budget) and run [`exercise_writes`] on it; the answers do
/// not matter, only that nothing panics, overflows or runs unbounded. The hostile-image checks
/// call this after judging what an image reads as.
pub fn writes_on_image(image: &mut [u8]) {
    let mut mem = vec![0u8; mount_mem_len()];
    let Ok(dev) = RamDisk::new(image, 512) else {
        return;
    };
    let Ok(mut fs) = HFs::mount(budgeted(dev), &mut mem) else {
        return;
    };
    let walked = walk(&mut fs, &Budget::default());
    exercise_writes(&mut fs, walked.ok());
    let _ = fs.unmount();
}

/// Writes on a possibly hostile volume, then `sync_all`: these run the paths that decode what
/// is on disk and then change it (extents cut and freed, directory entries removed, free runs
/// merged), which a read-only walk never reaches. `walked` is what a walk showed, if it
/// finished; the seed images' names are tried as well.
pub fn exercise_writes<'b, D: BlockDevice<'b>>(fs: &mut HFs<'b, D>, walked: Option<Tree>) {
    let mut paths: Vec<(String, bool)> = walked
        .map(|tree| tree.into_iter().map(|(p, d)| (p, d.is_some())).collect())
        .unwrap_or_default();
    for (p, file) in [
        ("/A/f", true),
        ("/B/g", true),
        ("/M/001", true),
        ("/M", false),
    ] {
        if !paths.iter().any(|(q, _)| q == p) {
            paths.push((p.to_string(), file));
        }
    }
    write_paths(fs, &paths);
    let _ = fs.sync_all();
}

/// [`exercise_writes`]'s operations. `paths` are `(path, is_file)`; at most 8 of each kind
/// are used.
fn write_paths<'b, D: BlockDevice<'b>>(fs: &mut HFs<'b, D>, paths: &[(String, bool)]) {
    let bytes: Vec<u8> = (0..9000u32).map(|i| (i % 251) as u8).collect();
    for (path, _) in paths.iter().filter(|(_, f)| *f).take(8) {
        if let Ok(fd) = fs.open(path, OpenFlags::READ | OpenFlags::WRITE) {
            let size = fs.fstat(fd).map(|m| m.size).unwrap_or(0);
            let _ = fs.write_at(fd, 0, &bytes[..100]);
            let _ = fs.write_at(fd, size, &bytes);
            let _ = fs.truncate(fd, size / 2);
            let _ = fs.fsync(fd);
            let _ = fs.close(fd);
        }
        let _ = fs.rename(path, "/renamed");
        let _ = fs.unlink("/renamed");
    }
    if let Ok(fd) = fs.open("/new", OpenFlags::WRITE | OpenFlags::CREATE) {
        let _ = fs.write(fd, &bytes);
        let _ = fs.fsync(fd);
        let _ = fs.close(fd);
    }
    let _ = fs.mkdir("/nd");
    let _ = fs.rename("/new", "/nd/new");
    // Deepest first, so that emptied directories can go.
    let mut dirs: Vec<&String> = paths.iter().filter(|(_, f)| !*f).map(|(p, _)| p).collect();
    dirs.sort_by_key(|p| std::cmp::Reverse(p.matches('/').count()));
    for dir in dirs.into_iter().take(8) {
        let _ = fs.rmdir(dir);
    }
}

/// Re-seal what a checksum guards: both superblock copies and every block starting with the
/// block magic.
fn reseal(image: &mut [u8]) {
    for off in SUPERBLOCK_OFFSETS {
        let off = off as usize;
        BlockHeader::seal(&mut image[off..off + SUPERBLOCK_LEN]);
    }
    for block in image.chunks_mut(BLOCK).skip(2) {
        if block[..4] == MAGIC.to_le_bytes() {
            BlockHeader::seal(block);
        }
    }
}

/// A small real image for fuzz seeds: `/A/f` inline, `/B/g` sparse (a few bytes in two blocks),
/// `files` tiny files in `/M` (enough of them give the tree more than one level), two
/// checkpoints; with `journal`, then a rename and a write fsync'd (records to replay) and the
/// power cut. File bytes are few so that the run-length form stays a few KiB.
pub fn seed_image(files: usize, journal: bool) -> Result<Vec<u8>, String> {
    let mut mem = vec![0u8; mount_mem_len()];
    let dev = QueuedRamDisk::new(queued_config(true, 32, 9));
    let mut fs =
        HFs::format(dev, &mut mem, FormatOptions::default()).map_err(|e| format!("format: {e}"))?;
    let rw = OpenFlags::READ | OpenFlags::WRITE | OpenFlags::CREATE;
    for d in ["/A", "/B", "/M"] {
        fs.mkdir(d).map_err(|e| format!("mkdir {d}: {e}"))?;
    }
    put(&mut fs, rw, "/A/f", &[(0, b"inline file")])?;
    put(
        &mut fs,
        rw,
        "/B/g",
        &[(0, b"first block"), (8192, b"third block")],
    )?;
    for i in 0..files {
        put(
            &mut fs,
            rw,
            &format!("/M/{i:03}"),
            &[(0, format!("{i}").as_bytes())],
        )?;
    }
    fs.sync_all().map_err(|e| format!("sync_all: {e}"))?;
    fs.sync_all().map_err(|e| format!("sync_all: {e}"))?;
    if journal {
        fs.rename("/A/f", "/B/f")
            .map_err(|e| format!("rename: {e}"))?;
        let fd = fs
            .open("/B/g", OpenFlags::READ | OpenFlags::WRITE)
            .map_err(|e| format!("open: {e}"))?;
        fs.write_at(fd, 4096, b"second block")
            .map_err(|e| format!("write: {e}"))?;
        fs.fsync(fd).map_err(|e| format!("fsync: {e}"))?;
        fs.close(fd).map_err(|e| format!("close: {e}"))?;
    }
    let mut dev = fs.into_device();
    dev.power_cut();
    Ok(dev.durable_image().to_vec())
}

/// Open `p` with `flags`, write each `(offset, bytes)`, close.
fn put<'b>(
    fs: &mut HFs<'b, QueuedRamDisk<'b>>,
    flags: OpenFlags,
    p: &str,
    writes: &[(u64, &[u8])],
) -> Result<(), String> {
    let fd = fs.open(p, flags).map_err(|e| format!("open {p}: {e}"))?;
    for (off, d) in writes {
        fs.write_at(fd, *off, d)
            .map_err(|e| format!("write {p}: {e}"))?;
    }
    fs.close(fd).map_err(|e| format!("close {p}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_volume_reads_back_and_rle_round_trips() {
        let b = base();
        assert_eq!(b.model.inode_count(), 8 + BULK_FILES);
        let mut img = b.image.clone();
        let mut mem = vec![0u8; mount_mem_len()];
        let fs = mount_ram(&mut img, &mut mem).unwrap();
        assert!(
            fs.volume().fs_root().level >= 1,
            "the base tree has one level"
        );
        drop(fs);
        let enc = rle_encode(&b.image);
        assert!(enc.len() < 64 << 10, "rle {} bytes", enc.len());
        assert_eq!(rle_decode(&enc, b.image.len()), b.image);
        assert_eq!(rle_decode(&[1, 3, 0, 9, 9], 4), vec![9, 9, 0, 0]);
    }
}
