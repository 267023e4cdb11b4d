//! The filesystem API against an in-memory model built from std collections.
//!
//! Random sequences of every `Fs` operation (open with any flag combination, close, read,
//! write, positional I/O, seek, truncate, fsync, sync_all, stat, fstat, statfs, mkdir, rmdir,
//! unlink, rename, full and incremental readdir, clean remount, power cut) run on bonsaifs
//! over the queued RAM disk (out-of-order completion, volatile write cache) and on the model.
//! Every result must agree: the `Ok` value (bytes read, sizes, kinds, listings in insertion
//! order) or the exact `Error` variant.
//!
//! The model decides errors as POSIX does, with bonsaifs's documented choices where they
//! differ: paths per `src/fs/path.rs` (empty components and a trailing `/` ignored, `.`/`..`
//! never a last component to create or remove), no hard links (`nlink == 1`), directories
//! cannot be opened as files, an unlinked (or replaced) file's handles turn stale, and only
//! `sync_all` / `fsync` / `fdatasync` / unmount are sync points: a power cut brings back the
//! last one exactly. The model keeps a durable snapshot at each sync point for that.
//!
//! The namespace is small (a few directories and names, plus odd spellings with `.`, `..`,
//! `//`, a trailing `/`, a path through a file, an over-long name) so operations collide.
//! After every remount and power cut, and at the end of each sequence, the whole tree is
//! compared with the model and fsck must be clean (its data-block count equal to the blocks
//! the model says the files map).

mod common;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use bonsaifs::device::QueuedRamDisk;
use bonsaifs::fs::{Fd, FileKind, Fs, Metadata, OpenFlags, ReadDir, SeekFrom};
use bonsaifs::volume::FormatOptions;
use bonsaifs::Error;
use common::{cfg, mem, SLOTS};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// Handles in the table (small, so `TooManyOpenFiles` happens).
const H: usize = 4;
/// Disk size: large enough that a sequence never runs out of space (which would make the
/// volume checkpoint on its own, something the model does not do).
const DISK: u64 = 4 << 20;
const BS: u64 = 4096;

type F<'b> = Fs<'b, QueuedRamDisk<'b>, SLOTS, H>;

// ------------------------------------------------------------------------------- paths

/// Groups of the path pool: common names first, odd spellings last.
const PATH_GROUPS: [&[&str]; 4] = [
    &["/a", "/b", "/d0", "/d1", "/s", "/z/f0", "/z/f1"],
    &[
        "/d0/a", "/d0/b", "/d0/s", "/d0/d1", "/d1/a", "/d1/b", "/d1/s",
    ],
    &[
        "/d0/s/a", "/d0/s/b", "/d0/s/s", "/d1/s/a", "/d1/s/b", "/d0/d1/a",
    ],
    &[
        "/",
        "",
        "/d0/..",
        "/d0/./a",
        "d1//b/",
        "/d0/s/../b",
        "/d1/s/..",
        "/a/x",
        "/d0/a/..",
        "/d0/.",
        "/d9/a",
        "./d0/s/./a",
        "LONG256",
        "LONG255",
        "/d0/a\0b",
        "/d0/s/../../b",
    ],
];

/// The path pool; operations name paths by index.
fn paths() -> &'static [String] {
    static P: OnceLock<Vec<String>> = OnceLock::new();
    P.get_or_init(|| {
        PATH_GROUPS
            .iter()
            .flat_map(|g| g.iter())
            .map(|p| match *p {
                "LONG256" => format!("/d0/{}", "n".repeat(256)),
                "LONG255" => format!("/{}", "m".repeat(255)),
                p => p.to_string(),
            })
            .collect()
    })
}

/// A path index, most often a plain name at the top or one level down.
fn path_strategy() -> impl Strategy<Value = usize> {
    let mut base = 0;
    let mut r = Vec::new();
    for g in PATH_GROUPS {
        r.push(base..base + g.len());
        base += g.len();
    }
    prop_oneof![
        5 => r[0].clone(),
        4 => r[1].clone(),
        2 => r[2].clone(),
        1 => r[3].clone(),
    ]
}

fn path(i: usize) -> &'static str {
    let p = paths();
    &p[i % p.len()]
}

/// `src/fs/path.rs`: components, skipping empty ones, each checked.
fn components(path: &str) -> impl Iterator<Item = Result<&str, Error>> {
    path.split('/')
        .filter(|c| !c.is_empty())
        .map(check_component)
}

fn check_component(c: &str) -> Result<&str, Error> {
    if c.len() > 255 {
        Err(Error::NameTooLong)
    } else if c.as_bytes().contains(&0) {
        Err(Error::InvalidPath)
    } else {
        Ok(c)
    }
}

/// `src/fs/path.rs`: the directory part and a real last name.
fn split_last(path: &str) -> Result<(&str, &str), Error> {
    let trimmed = path.trim_end_matches('/');
    let (dir, name) = match trimmed.rfind('/') {
        Some(i) => (&trimmed[..i], &trimmed[i + 1..]),
        None => ("", trimmed),
    };
    if name.is_empty() || name == "." || name == ".." {
        return Err(Error::InvalidPath);
    }
    Ok((dir, check_component(name)?))
}

// ------------------------------------------------------------------------------- ops

#[derive(Debug, Clone, Copy)]
struct Data {
    seed: u8,
    len: usize,
}

impl Data {
    /// Bytes that differ at every position (a misplaced block shows) and per write (`seed`).
    fn bytes(self) -> Vec<u8> {
        (0..self.len as u64)
            .map(|i| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8 ^ self.seed)
            .collect()
    }
}

#[derive(Debug, Clone, Copy)]
enum Whence {
    Start(u64),
    Current(i64),
    End(i64),
}

#[derive(Debug, Clone)]
enum Op {
    Open {
        path: usize,
        flags: u8,
    },
    Close {
        h: usize,
    },
    Read {
        h: usize,
        len: usize,
        via_file: bool,
    },
    ReadAt {
        h: usize,
        off: u64,
        len: usize,
    },
    Write {
        h: usize,
        data: Data,
        via_file: bool,
    },
    WriteAt {
        h: usize,
        off: u64,
        data: Data,
    },
    Seek {
        h: usize,
        to: Whence,
        via_file: bool,
    },
    Truncate {
        h: usize,
        size: u64,
    },
    Fsync {
        h: usize,
        data_only: bool,
    },
    SyncAll,
    Stat {
        path: usize,
    },
    Fstat {
        h: usize,
    },
    StatFs,
    Mkdir {
        path: usize,
    },
    Rmdir {
        path: usize,
    },
    Unlink {
        path: usize,
    },
    Rename {
        from: usize,
        to: usize,
    },
    ReadDir {
        path: usize,
    },
    OpenDir {
        path: usize,
    },
    DirNext {
        c: usize,
    },
    Remount,
    PowerCut,
}

/// An op as it reads best in a failure: paths and flags spelled out.
fn show(op: &Op) -> String {
    let q = |i: usize| {
        let p = path(i);
        if p.len() > 40 {
            format!("\"{}…\" ({} bytes)", &p[..20], p.len())
        } else {
            format!("{p:?}")
        }
    };
    match *op {
        Op::Open { path, flags } => {
            format!(
                "Open({}, {:?})",
                q(path),
                OpenFlags::from_bits_truncate(flags)
            )
        }
        Op::Stat { path } => format!("Stat({})", q(path)),
        Op::Mkdir { path } => format!("Mkdir({})", q(path)),
        Op::Rmdir { path } => format!("Rmdir({})", q(path)),
        Op::Unlink { path } => format!("Unlink({})", q(path)),
        Op::ReadDir { path } => format!("ReadDir({})", q(path)),
        Op::OpenDir { path } => format!("OpenDir({})", q(path)),
        Op::Rename { from, to } => format!("Rename({}, {})", q(from), q(to)),
        ref o => format!("{o:?}"),
    }
}

fn flags_strategy() -> impl Strategy<Value = u8> {
    let r = OpenFlags::READ.bits();
    let w = OpenFlags::WRITE.bits();
    let c = OpenFlags::CREATE.bits();
    let x = OpenFlags::EXCL.bits();
    let t = OpenFlags::TRUNC.bits();
    let a = OpenFlags::APPEND.bits();
    prop_oneof![
        5 => Just(r | w | c),
        2 => Just(r),
        2 => Just(w | c | t),
        2 => Just(w | c | a),
        1 => Just(r | w | c | x),
        1 => Just(r | w),
        1 => Just(r | a | c),
        3 => 0..64u8,
    ]
}

fn len_strategy() -> impl Strategy<Value = usize> {
    prop_oneof![
        6 => 1..900usize,
        2 => 900..8192usize,
        1 => 8192..65536usize,
        // Whole blocks: successive ones through a handle take the append fast path.
        1 => (1..4usize).prop_map(|k| k * 4096),
    ]
}

fn off_strategy() -> impl Strategy<Value = u64> {
    prop_oneof![4 => 0..2048u64, 3 => 0..70_000u64, 1 => 0..(1u64 << 20)]
}

fn data_strategy() -> impl Strategy<Value = Data> {
    (any::<u8>(), len_strategy()).prop_map(|(seed, len)| Data { seed, len })
}

fn op() -> impl Strategy<Value = Op> {
    let np = path_strategy;
    let h = 0..8usize;
    prop_oneof![
        // First: shrinking turns the ops a failure does not need into this one.
        1 => Just(Op::StatFs),
        9 => (np(), flags_strategy()).prop_map(|(path, flags)| Op::Open { path, flags }),
        4 => h.clone().prop_map(|h| Op::Close { h }),
        3 => (h.clone(), 0..70_000usize, any::<bool>())
            .prop_map(|(h, len, via_file)| Op::Read { h, len, via_file }),
        2 => (h.clone(), off_strategy(), 0..70_000usize)
            .prop_map(|(h, off, len)| Op::ReadAt { h, off, len }),
        6 => (h.clone(), data_strategy(), any::<bool>())
            .prop_map(|(h, data, via_file)| Op::Write { h, data, via_file }),
        4 => (h.clone(), off_strategy(), data_strategy())
            .prop_map(|(h, off, data)| Op::WriteAt { h, off, data }),
        2 => (
            h.clone(),
            prop_oneof![
                off_strategy().prop_map(Whence::Start),
                (-5000..5000i64).prop_map(Whence::Current),
                (-5000..5000i64).prop_map(Whence::End),
            ],
            any::<bool>()
        )
            .prop_map(|(h, to, via_file)| Op::Seek { h, to, via_file }),
        3 => (h.clone(), prop_oneof![off_strategy(), 0..1_100_000u64])
            .prop_map(|(h, size)| Op::Truncate { h, size }),
        1 => (h.clone(), any::<bool>()).prop_map(|(h, data_only)| Op::Fsync { h, data_only }),
        2 => Just(Op::SyncAll),
        3 => np().prop_map(|path| Op::Stat { path }),
        1 => h.clone().prop_map(|h| Op::Fstat { h }),
        5 => np().prop_map(|path| Op::Mkdir { path }),
        2 => np().prop_map(|path| Op::Rmdir { path }),
        3 => np().prop_map(|path| Op::Unlink { path }),
        5 => (np(), np()).prop_map(|(from, to)| Op::Rename { from, to }),
        2 => np().prop_map(|path| Op::ReadDir { path }),
        1 => np().prop_map(|path| Op::OpenDir { path }),
        2 => (0..4usize).prop_map(|c| Op::DirNext { c }),
        1 => Just(Op::Remount),
        1 => Just(Op::PowerCut),
    ]
}

// ------------------------------------------------------------------------------- model

const ROOT: u64 = 0;

#[derive(Debug, Clone)]
struct Entry {
    name: String,
    ino: u64,
    seq: u64,
}

#[derive(Debug, Clone)]
enum Node {
    File {
        data: Rc<Vec<u8>>,
        /// Stored inline in the tree (no data block).
        inline: bool,
        /// File blocks that have a data block (what `Metadata::blocks` counts).
        mapped: BTreeSet<u64>,
    },
    Dir {
        parent: u64,
        /// In insertion (sequence) order.
        entries: Vec<Entry>,
        next_seq: u64,
    },
}

#[derive(Debug, Clone)]
struct Rec {
    node: Node,
    /// The inode number bonsaifs gave it, once seen.
    fs_ino: Option<u64>,
}

#[derive(Debug, Clone)]
struct State {
    nodes: BTreeMap<u64, Rec>,
    next_ino: u64,
}

#[derive(Debug, Clone)]
struct Handle {
    fd: Fd,
    node: u64,
    flags: OpenFlags,
    pos: u64,
    closed: bool,
}

#[derive(Debug, Clone)]
struct Cursor {
    rd: ReadDir,
    dir: u64,
    next: u64,
}

/// What `stat` must say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Want {
    node: u64,
    kind: FileKind,
    size: u64,
    blocks: u64,
}

struct Model {
    cur: State,
    /// As of the last sync point.
    durable: State,
    handles: Vec<Handle>,
    cursors: Vec<Cursor>,
    inline_max: u64,
}

type R<T> = Result<T, Error>;

/// A directory listing: name, kind, node (model) or inode number (bonsaifs).
type Listing = Vec<(String, FileKind, u64)>;

impl Model {
    fn new(inline_max: u64) -> Self {
        let mut nodes = BTreeMap::new();
        nodes.insert(
            ROOT,
            Rec {
                node: Node::Dir {
                    parent: ROOT,
                    entries: Vec::new(),
                    next_seq: 0,
                },
                fs_ino: Some(bonsaifs::wire::items::ROOT_INO),
            },
        );
        let s = State { nodes, next_ino: 1 };
        Model {
            cur: s.clone(),
            durable: s,
            handles: Vec::new(),
            cursors: Vec::new(),
            inline_max,
        }
    }

    fn node(&self, ino: u64) -> &Node {
        &self.cur.nodes[&ino].node
    }

    fn node_mut(&mut self, ino: u64) -> &mut Node {
        &mut self.cur.nodes.get_mut(&ino).expect("model node").node
    }

    fn is_dir(&self, ino: u64) -> bool {
        matches!(self.node(ino), Node::Dir { .. })
    }

    fn entries(&self, dir: u64) -> &[Entry] {
        match self.node(dir) {
            Node::Dir { entries, .. } => entries,
            Node::File { .. } => panic!("model: entries of a file"),
        }
    }

    fn lookup(&self, dir: u64, name: &str) -> Option<u64> {
        self.entries(dir)
            .iter()
            .find(|e| e.name == name)
            .map(|e| e.ino)
    }

    fn resolve(&self, path: &str) -> R<u64> {
        let mut cur = ROOT;
        for c in components(path) {
            let c = c?;
            if !self.is_dir(cur) {
                return Err(Error::NotADirectory);
            }
            match c {
                "." => {}
                ".." => {
                    if let Node::Dir { parent, .. } = self.node(cur) {
                        cur = *parent;
                    }
                }
                name => cur = self.lookup(cur, name).ok_or(Error::NotFound)?,
            }
        }
        Ok(cur)
    }

    fn resolve_parent<'p>(&self, path: &'p str) -> R<(u64, &'p str)> {
        let (dir, name) = split_last(path)?;
        let d = self.resolve(dir)?;
        if !self.is_dir(d) {
            return Err(Error::NotADirectory);
        }
        Ok((d, name))
    }

    fn new_node(&mut self, node: Node) -> u64 {
        let ino = self.cur.next_ino;
        self.cur.next_ino += 1;
        self.cur.nodes.insert(ino, Rec { node, fs_ino: None });
        ino
    }

    fn add_entry(&mut self, dir: u64, name: &str, ino: u64) {
        if let Node::Dir {
            entries, next_seq, ..
        } = self.node_mut(dir)
        {
            entries.push(Entry {
                name: name.to_string(),
                ino,
                seq: *next_seq,
            });
            *next_seq += 1;
        }
    }

    fn remove_entry(&mut self, dir: u64, name: &str) {
        if let Node::Dir { entries, .. } = self.node_mut(dir) {
            entries.retain(|e| e.name != name);
        }
    }

    fn open_count(&self) -> usize {
        self.handles.iter().filter(|h| !h.closed).count()
    }

    /// Open: the node to hand a handle to (created if needed).
    fn open(&mut self, path: &str, flags: OpenFlags) -> R<u64> {
        if flags.contains(OpenFlags::TRUNC) && !flags.contains(OpenFlags::WRITE) {
            return Err(Error::InvalidArgument);
        }
        let (dir, name) = self.resolve_parent(path)?;
        let ino = match self.lookup(dir, name) {
            Some(_) if flags.contains(OpenFlags::CREATE | OpenFlags::EXCL) => {
                return Err(Error::AlreadyExists)
            }
            Some(i) if self.is_dir(i) => return Err(Error::IsADirectory),
            Some(i) => i,
            None if flags.contains(OpenFlags::CREATE) => {
                if self.open_count() >= H {
                    return Err(Error::TooManyOpenFiles);
                }
                let ino = self.new_node(Node::File {
                    data: Rc::new(Vec::new()),
                    inline: false,
                    mapped: BTreeSet::new(),
                });
                self.add_entry(dir, name, ino);
                ino
            }
            None => return Err(Error::NotFound),
        };
        if self.open_count() >= H {
            return Err(Error::TooManyOpenFiles);
        }
        if flags.contains(OpenFlags::TRUNC) {
            self.set_size(ino, 0);
        }
        Ok(ino)
    }

    /// A handle that is open, with `need` access (any of), on a file that still exists.
    fn usable(&self, h: usize, need: OpenFlags) -> R<Handle> {
        let hd = &self.handles[h];
        if hd.closed || !(need.is_empty() || hd.flags.intersects(need)) {
            return Err(Error::BadHandle);
        }
        self.alive(hd)?;
        Ok(hd.clone())
    }

    fn alive(&self, hd: &Handle) -> R<()> {
        if self.cur.nodes.contains_key(&hd.node) {
            Ok(())
        } else {
            Err(Error::NotFound)
        }
    }

    fn data(&self, ino: u64) -> &[u8] {
        match self.node(ino) {
            Node::File { data, .. } => data,
            Node::Dir { .. } => panic!("model: data of a directory"),
        }
    }

    fn read_at(&self, ino: u64, off: u64, len: usize) -> Vec<u8> {
        let d = self.data(ino);
        let off = (off as usize).min(d.len());
        d[off..(off + len).min(d.len())].to_vec()
    }

    /// bonsaifs's data layout: inline while small, else blocks (what `blocks` counts).
    fn write_node(&mut self, ino: u64, off: u64, bytes: &[u8]) {
        let inline_max = self.inline_max;
        if let Node::File {
            data,
            inline,
            mapped,
        } = self.node_mut(ino)
        {
            let size = data.len() as u64;
            let end = off + bytes.len() as u64;
            let new_size = size.max(end);
            if (*inline || size == 0) && new_size <= inline_max {
                *inline = true;
            } else {
                if *inline {
                    *inline = false;
                    mapped.insert(0);
                }
                mapped.extend(off / BS..=(end - 1) / BS);
            }
            let d = Rc::make_mut(data);
            if d.len() < end as usize {
                d.resize(end as usize, 0);
            }
            d[off as usize..end as usize].copy_from_slice(bytes);
        }
    }

    fn set_size(&mut self, ino: u64, new: u64) {
        let inline_max = self.inline_max;
        if let Node::File {
            data,
            inline,
            mapped,
        } = self.node_mut(ino)
        {
            let size = data.len() as u64;
            if new == size {
                return;
            }
            if *inline && new <= inline_max {
                if new == 0 {
                    *inline = false;
                }
            } else {
                if *inline {
                    *inline = false;
                    mapped.insert(0);
                }
                if new < size {
                    let first = new.div_ceil(BS);
                    mapped.retain(|&b| b < first);
                }
            }
            Rc::make_mut(data).resize(new as usize, 0);
        }
    }

    fn stat_node(&self, ino: u64) -> Want {
        match self.node(ino) {
            Node::File { data, mapped, .. } => Want {
                node: ino,
                kind: FileKind::File,
                size: data.len() as u64,
                blocks: mapped.len() as u64,
            },
            Node::Dir { entries, .. } => Want {
                node: ino,
                kind: FileKind::Dir,
                size: entries.len() as u64,
                blocks: 0,
            },
        }
    }

    fn stat(&self, path: &str) -> R<Want> {
        Ok(self.stat_node(self.resolve(path)?))
    }

    fn mkdir(&mut self, path: &str) -> R<()> {
        let (dir, name) = self.resolve_parent(path)?;
        if self.lookup(dir, name).is_some() {
            return Err(Error::AlreadyExists);
        }
        let ino = self.new_node(Node::Dir {
            parent: dir,
            entries: Vec::new(),
            next_seq: 0,
        });
        self.add_entry(dir, name, ino);
        Ok(())
    }

    fn rmdir(&mut self, path: &str) -> R<()> {
        let (dir, name) = self.resolve_parent(path)?;
        let ino = self.lookup(dir, name).ok_or(Error::NotFound)?;
        if !self.is_dir(ino) {
            return Err(Error::NotADirectory);
        }
        if !self.entries(ino).is_empty() {
            return Err(Error::DirectoryNotEmpty);
        }
        self.remove_entry(dir, name);
        self.cur.nodes.remove(&ino);
        Ok(())
    }

    fn unlink(&mut self, path: &str) -> R<()> {
        let (dir, name) = self.resolve_parent(path)?;
        let ino = self.lookup(dir, name).ok_or(Error::NotFound)?;
        if self.is_dir(ino) {
            return Err(Error::IsADirectory);
        }
        self.remove_entry(dir, name);
        self.cur.nodes.remove(&ino);
        Ok(())
    }

    fn rename(&mut self, from: &str, to: &str) -> R<()> {
        let (fdir, fname) = self.resolve_parent(from)?;
        let (tdir, tname) = self.resolve_parent(to)?;
        let src = self.lookup(fdir, fname).ok_or(Error::NotFound)?;
        let src_dir = self.is_dir(src);
        if src_dir {
            // Not into itself or below itself.
            let mut d = tdir;
            loop {
                if d == src {
                    return Err(Error::InvalidPath);
                }
                if d == ROOT {
                    break;
                }
                d = match self.node(d) {
                    Node::Dir { parent, .. } => *parent,
                    Node::File { .. } => unreachable!(),
                };
            }
        }
        if let Some(dst) = self.lookup(tdir, tname) {
            if dst == src {
                return Ok(());
            }
            match (src_dir, self.is_dir(dst)) {
                (true, false) => return Err(Error::NotADirectory),
                (false, true) => return Err(Error::IsADirectory),
                (true, true) if !self.entries(dst).is_empty() => {
                    return Err(Error::DirectoryNotEmpty)
                }
                _ => {}
            }
            self.remove_entry(tdir, tname);
            self.cur.nodes.remove(&dst);
        }
        self.remove_entry(fdir, fname);
        self.add_entry(tdir, tname, src);
        if src_dir {
            if let Node::Dir { parent, .. } = self.node_mut(src) {
                *parent = tdir;
            }
        }
        Ok(())
    }

    fn listing(&self, path: &str) -> R<(u64, Listing)> {
        let dir = self.resolve(path)?;
        if !self.is_dir(dir) {
            return Err(Error::NotADirectory);
        }
        let v = self
            .entries(dir)
            .iter()
            .map(|e| (e.name.clone(), self.stat_node(e.ino).kind, e.ino))
            .collect();
        Ok((dir, v))
    }

    /// Record (or check) which bonsaifs inode number a model node has; numbers are unique.
    fn learn(&mut self, node: u64, fs_ino: u64) {
        let rec = self.cur.nodes.get_mut(&node).expect("model node");
        match rec.fs_ino {
            Some(i) => assert_eq!(i, fs_ino, "inode number of a node changed"),
            None => {
                rec.fs_ino = Some(fs_ino);
                let dup = self
                    .cur
                    .nodes
                    .iter()
                    .filter(|(_, r)| r.fs_ino == Some(fs_ino))
                    .count();
                assert_eq!(dup, 1, "inode number {fs_ino} given to two live nodes");
            }
        }
    }

    fn sync_point(&mut self) {
        self.durable = self.cur.clone();
    }

    fn restart(&mut self, power_cut: bool) {
        if power_cut {
            self.cur = self.durable.clone();
        } else {
            self.sync_point();
        }
        self.handles.clear();
        self.cursors.clear();
    }

    fn add_handle(&mut self, hd: Handle) {
        if self.handles.iter().filter(|h| h.closed).count() >= 2 {
            if let Some(i) = self.handles.iter().position(|h| h.closed) {
                self.handles.remove(i);
            }
        }
        self.handles.push(hd);
    }

    fn mapped_blocks(&self) -> u64 {
        self.cur
            .nodes
            .values()
            .map(|r| match &r.node {
                Node::File { mapped, .. } => mapped.len() as u64,
                Node::Dir { .. } => 0,
            })
            .sum()
    }
}

fn check_meta(m: &mut Model, got: R<Metadata>, want: R<Want>, what: &str) {
    match (got, want) {
        (Ok(g), Ok(w)) => {
            assert_eq!(
                (g.kind, g.size, g.nlink, g.blocks),
                (w.kind, w.size, 1, w.blocks),
                "{what}: metadata (kind, size, nlink, blocks)"
            );
            m.learn(w.node, g.ino);
        }
        (g, w) => assert_eq!(g.map(|_| ()), w.map(|_| ()), "{what}"),
    }
}

// ------------------------------------------------------------------------------- runner

static SEQUENCES: AtomicU64 = AtomicU64::new(0);
static OPS: AtomicU64 = AtomicU64::new(0);
static OK_OPS: AtomicU64 = AtomicU64::new(0);
static MOUNTS: AtomicU64 = AtomicU64::new(0);
static MAX_LEVEL: AtomicU64 = AtomicU64::new(0);

fn oc<T>(r: &R<T>) -> Option<Error> {
    r.as_ref().err().copied()
}

static TALLY: std::sync::Mutex<BTreeMap<(&'static str, String), u64>> =
    std::sync::Mutex::new(BTreeMap::new());

thread_local! {
    /// What the sequence is doing (shown with a failure).
    static CTX: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
    /// The op running (its index), for the failure's listing.
    static AT: std::cell::Cell<usize> = const { std::cell::Cell::new(usize::MAX) };
    /// This sequence's tally, merged into `TALLY` when it passes (shrinking runs do not).
    static LOCAL_TALLY: std::cell::RefCell<BTreeMap<(&'static str, String), u64>> =
        const { std::cell::RefCell::new(BTreeMap::new()) };
}

fn tally(op: &Op, outcome: Option<Error>) {
    let name = match op {
        Op::Open { .. } => "open",
        Op::Close { .. } => "close",
        Op::Read { .. } => "read",
        Op::ReadAt { .. } => "read_at",
        Op::Write { .. } => "write",
        Op::WriteAt { .. } => "write_at",
        Op::Seek { .. } => "seek",
        Op::Truncate { .. } => "truncate",
        Op::Fsync { .. } => "fsync",
        Op::SyncAll => "sync_all",
        Op::Stat { .. } => "stat",
        Op::Fstat { .. } => "fstat",
        Op::StatFs => "statfs",
        Op::Mkdir { .. } => "mkdir",
        Op::Rmdir { .. } => "rmdir",
        Op::Unlink { .. } => "unlink",
        Op::Rename { .. } => "rename",
        Op::ReadDir { .. } => "readdir",
        Op::OpenDir { .. } => "opendir",
        Op::DirNext { .. } => "dirnext",
        Op::Remount => "remount",
        Op::PowerCut => "powercut",
    };
    let what = outcome.map_or("Ok".to_string(), |e| format!("{e:?}"));
    LOCAL_TALLY.with(|t| *t.borrow_mut().entry((name, what)).or_default() += 1);
}

/// Files up to this size are inline (no data block).
fn inline_max() -> u64 {
    base_image();
    INLINE_MAX.load(Ordering::Relaxed)
}

static INLINE_MAX: AtomicU64 = AtomicU64::new(0);

/// What every sequence starts from (already durable): a few directories and files of each
/// layout (inline, multi-block, sparse), and a directory of inline files big enough that the
/// tree has more than one level.
enum Setup {
    Dir(String),
    File(String, Vec<(u64, Data)>),
}

fn setup() -> Vec<Setup> {
    let d = |seed: u8, len: usize| Data { seed, len };
    let mut v = vec![
        Setup::Dir("/d0".into()),
        Setup::Dir("/d1".into()),
        Setup::Dir("/d0/s".into()),
        Setup::File("/a".into(), vec![(0, d(1, 600))]),
        Setup::File("/d0/a".into(), vec![(0, d(2, 900))]),
        Setup::File("/d0/b".into(), vec![(0, d(3, 20_000))]),
        Setup::File("/d1/a".into(), vec![(0, d(4, 700))]),
        Setup::File("/d1/b".into(), vec![(0, d(5, 100)), (300_000, d(6, 3000))]),
        Setup::File("/d0/s/b".into(), vec![(0, d(7, 5000))]),
        Setup::Dir("/z".into()),
    ];
    for i in 0..24u8 {
        v.push(Setup::File(format!("/z/f{i}"), vec![(0, d(100 + i, 800))]));
    }
    v
}

fn apply_setup(m: &mut Model) {
    for s in setup() {
        match s {
            Setup::Dir(p) => m.mkdir(&p).expect("model setup"),
            Setup::File(p, writes) => {
                let ino = m
                    .open(&p, OpenFlags::WRITE | OpenFlags::CREATE)
                    .expect("model setup");
                for (off, data) in writes {
                    m.write_node(ino, off, &data.bytes());
                }
            }
        }
    }
    m.sync_point();
}

fn base_image() -> &'static [u8] {
    static IMG: OnceLock<Vec<u8>> = OnceLock::new();
    IMG.get_or_init(|| {
        let mut m = mem(4096);
        let dev = QueuedRamDisk::new(cfg(DISK, 7));
        let mut fs = F::format(dev, &mut m, FormatOptions::default()).expect("format");
        INLINE_MAX.store(fs.inline_max() as u64, Ordering::Relaxed);
        for s in setup() {
            match s {
                Setup::Dir(p) => fs.mkdir(&p).expect("setup"),
                Setup::File(p, writes) => {
                    let fd = fs
                        .open(&p, OpenFlags::WRITE | OpenFlags::CREATE)
                        .expect("setup");
                    for (off, data) in writes {
                        fs.write_at(fd, off, &data.bytes()).expect("setup");
                    }
                    fs.close(fd).expect("setup");
                }
            }
        }
        fs.unmount().expect("unmount").durable_image().to_vec()
    })
}

/// Memory for each mount of a sequence, all alive together: a device keeps the lifetime of
/// the memory it was mounted with, so remounting the same device (no image copy) needs a
/// fresh buffer each time.
type Mems<'b> = std::slice::IterMut<'b, Vec<u8>>;

fn mount<'b>(dev: QueuedRamDisk<'b>, mems: &mut Mems<'b>, m: &mut Model) -> F<'b> {
    let mut fs = F::mount(dev, mems.next().expect("memory for a mount")).expect("mount");
    MOUNTS.fetch_add(1, Ordering::Relaxed);
    check_all(&mut fs, m, true);
    fs
}

fn run(ops: &[Op], seed: u64) {
    let mounts = 2 + ops
        .iter()
        .filter(|o| matches!(o, Op::Remount | Op::PowerCut))
        .count();
    let mut mems: Vec<Vec<u8>> = (0..mounts).map(|_| mem(4096)).collect();
    let mut mems = mems.iter_mut();
    let mut dev = QueuedRamDisk::from_image(cfg(DISK, seed), base_image().to_vec());
    // Half the sequences on a device with the synchronous fast path (whole data blocks then
    // bypass the cache); the other half queue everything.
    dev.set_sync_path(seed % 2 == 1);
    CTX.with(|c| *c.borrow_mut() = "the first mount".to_string());
    AT.with(|a| a.set(usize::MAX));
    let mut model = Model::new(inline_max());
    apply_setup(&mut model);
    let fs = mount(dev, &mut mems, &mut model);
    run_mounted(fs, &mut mems, ops, &mut model);
}

/// Compare the whole namespace and every file's bytes with the model; with `fsck`, check the
/// volume too (only right after a mount: no running transaction).
fn check_all(fs: &mut F<'_>, m: &mut Model, fsck: bool) {
    assert_eq!(
        fs.statfs().inodes,
        m.cur.nodes.len() as u64,
        "statfs inode count"
    );
    let mut stack = vec![(String::new(), ROOT)];
    while let Some((p, _)) = stack.pop() {
        let shown = if p.is_empty() { "/" } else { p.as_str() };
        let got = list(fs, shown).unwrap_or_else(|e| panic!("listing {shown}: {e:?}"));
        let (_, want) = m.listing(shown).expect("model listing");
        compare_listing(m, &got, &want, shown);
        for (name, kind, node) in want {
            let child = format!("{p}/{name}");
            let w = m.stat_node(node);
            check_meta(m, fs.stat(&child), Ok(w), &format!("check stat {child}"));
            match kind {
                FileKind::Dir => stack.push((child, node)),
                FileKind::File => {
                    let fd = fs.open(&child, OpenFlags::READ).expect("open for check");
                    let want = m.data(node);
                    let mut buf = vec![0u8; want.len() + 1];
                    let n = fs.read_at(fd, 0, &mut buf).expect("read for check");
                    assert_eq!(n, want.len(), "{child}: length");
                    if buf[..n] != *want {
                        let at = buf.iter().zip(want).position(|(a, b)| a != b).unwrap_or(0);
                        panic!("{child}: contents differ from byte {at}");
                    }
                    fs.close(fd).expect("close");
                }
            }
        }
    }
    if fsck {
        // Blocks and namespace (inodes named once, sizes, extents, counters).
        let mut scratch = vec![0u8; fs.fsck_scratch_len()];
        let rep = fs.fsck(&mut scratch).expect("fsck ran");
        assert!(rep.is_clean(), "fsck: {rep:?}");
        assert_eq!(
            rep.blocks.data_blocks,
            m.mapped_blocks(),
            "fsck data blocks vs blocks the files map"
        );
    }
    MAX_LEVEL.fetch_max(u64::from(fs.volume().fs_root().level), Ordering::Relaxed);
}

fn list(fs: &mut F<'_>, path: &str) -> R<Listing> {
    let mut rd = fs.read_dir(path)?;
    let mut v = Vec::new();
    while let Some(e) = fs.read_dir_next(&mut rd)? {
        v.push((e.name().to_string(), e.kind, e.ino));
        assert!(v.len() < 10_000, "listing of {path} does not end");
    }
    Ok(v)
}

fn compare_listing(
    m: &mut Model,
    got: &[(String, FileKind, u64)],
    want: &[(String, FileKind, u64)],
    what: &str,
) {
    let gs: HashSet<(&str, FileKind)> = got.iter().map(|(n, k, _)| (n.as_str(), *k)).collect();
    let ws: HashSet<(&str, FileKind)> = want.iter().map(|(n, k, _)| (n.as_str(), *k)).collect();
    assert_eq!(gs.len(), got.len(), "{what}: a name listed twice: {got:?}");
    assert_eq!(gs, ws, "{what}: listing as a set");
    let go: Vec<&str> = got.iter().map(|(n, _, _)| n.as_str()).collect();
    let wo: Vec<&str> = want.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(go, wo, "{what}: listing order (insertion order)");
    for ((_, _, gi), (_, _, node)) in got.iter().zip(want) {
        m.learn(*node, *gi);
    }
}

fn pick(len: usize, i: usize) -> Option<usize> {
    (len > 0).then(|| i % len)
}

/// A handle of the model's list: mostly an open one (when there is one), sometimes any
/// (closed ones included).
fn pick_handle(m: &Model, i: usize) -> Option<usize> {
    let open: Vec<usize> = (0..m.handles.len())
        .filter(|&j| !m.handles[j].closed)
        .collect();
    if i < 6 && !open.is_empty() {
        Some(open[i % open.len()])
    } else {
        pick(m.handles.len(), i)
    }
}

fn run_mounted<'b>(mut fs: F<'b>, mems: &mut Mems<'b>, ops: &[Op], m: &mut Model) {
    use embedded_io::{Read as _, Seek as _, Write as _};
    for (i, op) in ops.iter().enumerate() {
        let at = format!("op #{i} {}", show(op));
        CTX.with(|c| c.borrow_mut().clone_from(&at));
        AT.with(|a| a.set(i));
        let gen_before = fs.volume().committed_generation();
        let mut synced = false;
        OPS.fetch_add(1, Ordering::Relaxed);
        let outcome = match *op {
            Op::Open { path: p, flags } => {
                let flags = OpenFlags::from_bits_truncate(flags);
                let want = m.open(path(p), flags);
                let got = fs.open(path(p), flags);
                assert_eq!(got.map(|_| ()), want.map(|_| ()), "{at}");
                if let (Ok(fd), Ok(node)) = (got, want) {
                    m.add_handle(Handle {
                        fd,
                        node,
                        flags,
                        pos: 0,
                        closed: false,
                    });
                }
                oc(&want)
            }
            Op::Close { h } => {
                let Some(h) = pick_handle(m, h) else {
                    continue;
                };
                let want = if m.handles[h].closed {
                    Err(Error::BadHandle)
                } else {
                    Ok(())
                };
                assert_eq!(fs.close(m.handles[h].fd), want, "{at}");
                m.handles[h].closed = true;
                oc(&want)
            }
            Op::Read { h, len, via_file } => {
                let Some(h) = pick_handle(m, h) else {
                    continue;
                };
                let want = m
                    .usable(h, OpenFlags::READ)
                    .map(|hd| m.read_at(hd.node, hd.pos, len));
                let fd = m.handles[h].fd;
                let mut buf = vec![0u8; len];
                let got = if via_file {
                    fs.file(fd).read(&mut buf)
                } else {
                    fs.read(fd, &mut buf)
                };
                compare_read(got, &buf, &want, &at);
                if let Ok(w) = &want {
                    m.handles[h].pos += w.len() as u64;
                }
                oc(&want)
            }
            Op::ReadAt { h, off, len } => {
                let Some(h) = pick_handle(m, h) else {
                    continue;
                };
                let want = m
                    .usable(h, OpenFlags::READ)
                    .map(|hd| m.read_at(hd.node, off, len));
                let mut buf = vec![0u8; len];
                let got = fs.read_at(m.handles[h].fd, off, &mut buf);
                compare_read(got, &buf, &want, &at);
                oc(&want)
            }
            Op::Write { h, data, via_file } => {
                let Some(h) = pick_handle(m, h) else {
                    continue;
                };
                let bytes = data.bytes();
                let want = m.usable(h, OpenFlags::WRITE | OpenFlags::APPEND).map(|hd| {
                    let pos = if hd.flags.contains(OpenFlags::APPEND) {
                        m.data(hd.node).len() as u64
                    } else {
                        hd.pos
                    };
                    m.write_node(hd.node, pos, &bytes);
                    m.handles[h].pos = pos + bytes.len() as u64;
                    bytes.len()
                });
                let fd = m.handles[h].fd;
                let got = if via_file {
                    fs.file(fd).write(&bytes)
                } else {
                    fs.write(fd, &bytes)
                };
                assert_eq!(got, want, "{at}");
                oc(&want)
            }
            Op::WriteAt { h, off, data } => {
                let Some(h) = pick_handle(m, h) else {
                    continue;
                };
                let bytes = data.bytes();
                let want = m.usable(h, OpenFlags::WRITE | OpenFlags::APPEND).map(|hd| {
                    m.write_node(hd.node, off, &bytes);
                    bytes.len()
                });
                assert_eq!(fs.write_at(m.handles[h].fd, off, &bytes), want, "{at}");
                oc(&want)
            }
            Op::Seek { h, to, via_file } => {
                let Some(h) = pick_handle(m, h) else {
                    continue;
                };
                let hd = m.handles[h].clone();
                let want = m.usable(h, OpenFlags::empty()).and_then(|hd| {
                    let size = m.data(hd.node).len() as u64;
                    match to {
                        Whence::Start(n) => Some(n),
                        Whence::Current(d) => hd.pos.checked_add_signed(d),
                        Whence::End(d) => size.checked_add_signed(d),
                    }
                    .ok_or(Error::InvalidArgument)
                });
                let to = match to {
                    Whence::Start(n) => SeekFrom::Start(n),
                    Whence::Current(d) => SeekFrom::Current(d),
                    Whence::End(d) => SeekFrom::End(d),
                };
                let got = if via_file {
                    let to = match to {
                        SeekFrom::Start(n) => embedded_io::SeekFrom::Start(n),
                        SeekFrom::Current(d) => embedded_io::SeekFrom::Current(d),
                        SeekFrom::End(d) => embedded_io::SeekFrom::End(d),
                    };
                    fs.file(hd.fd).seek(to)
                } else {
                    fs.seek(hd.fd, to)
                };
                assert_eq!(got, want, "{at}");
                if let Ok(p) = want {
                    m.handles[h].pos = p;
                }
                oc(&want)
            }
            Op::Truncate { h, size } => {
                let Some(h) = pick_handle(m, h) else {
                    continue;
                };
                let want = m
                    .usable(h, OpenFlags::WRITE | OpenFlags::APPEND)
                    .map(|hd| m.set_size(hd.node, size));
                assert_eq!(fs.truncate(m.handles[h].fd, size), want, "{at}");
                oc(&want)
            }
            Op::Fsync { h, data_only } => {
                let Some(h) = pick_handle(m, h) else {
                    continue;
                };
                let want = m.usable(h, OpenFlags::empty()).map(drop);
                let fd = m.handles[h].fd;
                let got = if data_only {
                    fs.fdatasync(fd)
                } else {
                    fs.fsync(fd)
                };
                assert_eq!(got, want, "{at}");
                if want.is_ok() {
                    m.sync_point();
                    synced = true;
                }
                oc(&want)
            }
            Op::SyncAll => {
                fs.sync_all().unwrap_or_else(|e| panic!("{at}: {e:?}"));
                m.sync_point();
                synced = true;
                None
            }
            Op::Stat { path: p } => {
                let want = m.stat(path(p));
                check_meta(m, fs.stat(path(p)), want, &at);
                oc(&want)
            }
            Op::Fstat { h } => {
                let Some(h) = pick_handle(m, h) else {
                    continue;
                };
                let want = m
                    .usable(h, OpenFlags::empty())
                    .map(|hd| m.stat_node(hd.node));
                check_meta(m, fs.fstat(m.handles[h].fd), want, &at);
                oc(&want)
            }
            Op::StatFs => {
                let s = fs.statfs();
                assert_eq!(s.inodes, m.cur.nodes.len() as u64, "{at}: inodes");
                assert_eq!((s.block_size, s.name_max), (BS as u32, 255), "{at}");
                assert!(s.free_blocks <= s.total_blocks, "{at}: {s:?}");
                None
            }
            Op::Mkdir { path: p } => {
                let want = m.mkdir(path(p));
                assert_eq!(fs.mkdir(path(p)), want, "{at}");
                oc(&want)
            }
            Op::Rmdir { path: p } => {
                let want = m.rmdir(path(p));
                assert_eq!(fs.rmdir(path(p)), want, "{at}");
                oc(&want)
            }
            Op::Unlink { path: p } => {
                let want = m.unlink(path(p));
                assert_eq!(fs.unlink(path(p)), want, "{at}");
                oc(&want)
            }
            Op::Rename { from, to } => {
                let want = m.rename(path(from), path(to));
                assert_eq!(fs.rename(path(from), path(to)), want, "{at}");
                oc(&want)
            }
            Op::ReadDir { path: p } => {
                let want = m.listing(path(p));
                let got = list(&mut fs, path(p));
                match (&got, &want) {
                    (Ok(g), Ok((_, w))) => compare_listing(m, g, w, &at),
                    _ => assert_eq!(
                        got.map(|_| ()),
                        want.as_ref().map(|_| ()).map_err(|e| *e),
                        "{at}"
                    ),
                }
                oc(&want)
            }
            Op::OpenDir { path: p } => {
                let want = m.listing(path(p));
                let got = fs.read_dir(path(p));
                assert_eq!(
                    got.map(|_| ()),
                    want.as_ref().map(|_| ()).map_err(|e| *e),
                    "{at}"
                );
                if let (Ok(rd), Ok((dir, _))) = (got, want.as_ref()) {
                    if m.cursors.len() >= 4 {
                        m.cursors.remove(0);
                    }
                    m.cursors.push(Cursor {
                        rd,
                        dir: *dir,
                        next: 0,
                    });
                }
                oc(&want)
            }
            Op::DirNext { c } => {
                let Some(c) = pick(m.cursors.len(), c) else {
                    continue;
                };
                let cur = m.cursors[c].clone();
                let want = if m.cur.nodes.contains_key(&cur.dir) {
                    Ok(m.entries(cur.dir)
                        .iter()
                        .find(|e| e.seq >= cur.next)
                        .cloned())
                } else {
                    Err(Error::NotFound)
                };
                let mut rd = cur.rd;
                let got = fs.read_dir_next(&mut rd);
                match (&got, &want) {
                    (Ok(Some(g)), Ok(Some(w))) => {
                        let k = m.stat_node(w.ino).kind;
                        assert_eq!((g.name(), g.kind), (w.name.as_str(), k), "{at}");
                        m.learn(w.ino, g.ino);
                        m.cursors[c].next = w.seq + 1;
                    }
                    (Ok(None), Ok(None)) => {}
                    (Err(g), Err(w)) if g == w => {}
                    _ => panic!("{at}: got {got:?}, want {want:?}"),
                }
                m.cursors[c].rd = rd;
                oc(&want)
            }
            Op::Remount => {
                let dev = fs
                    .unmount()
                    .unwrap_or_else(|e| panic!("{at}: unmount: {e:?}"));
                m.restart(false);
                fs = mount(dev, mems, m);
                continue;
            }
            Op::PowerCut => {
                let mut dev = fs.into_device();
                dev.power_cut();
                m.restart(true);
                fs = mount(dev, mems, m);
                continue;
            }
        };
        if outcome.is_none() {
            OK_OPS.fetch_add(1, Ordering::Relaxed);
        }
        tally(op, outcome);
        MAX_LEVEL.fetch_max(u64::from(fs.volume().fs_root().level), Ordering::Relaxed);
        if !synced {
            assert_eq!(
                fs.volume().committed_generation(),
                gen_before,
                "{at}: the volume checkpointed on its own (the model only syncs when asked)"
            );
        }
    }
    // The end: close what is open, compare everything live, then remount and compare (and
    // fsck) again.
    for hd in m.handles.iter_mut().filter(|h| !h.closed) {
        assert_eq!(fs.close(hd.fd), Ok(()), "closing at the end");
        hd.closed = true;
    }
    check_all(&mut fs, m, false);
    CTX.with(|c| *c.borrow_mut() = "the final check and remount".to_string());
    let dev = fs.unmount().expect("final unmount");
    m.restart(false);
    mount(dev, mems, m);
}

fn compare_read(got: R<usize>, buf: &[u8], want: &R<Vec<u8>>, at: &str) {
    match (got, want) {
        (Ok(n), Ok(w)) => {
            assert_eq!(n, w.len(), "{at}: bytes read");
            if buf[..n] != w[..] {
                let p = buf.iter().zip(w).position(|(a, b)| a != b).unwrap_or(0);
                panic!("{at}: bytes differ from offset {p} of the read");
            }
        }
        (g, w) => assert_eq!(g, w.as_ref().map(|v| v.len()).map_err(|e| *e), "{at}"),
    }
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

#[test]
fn fs_matches_model() {
    let config = Config {
        cases: cases(),
        max_shrink_iters: 4000,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let strategy = (prop::collection::vec(op(), 60..120), any::<u64>());
    let t = std::time::Instant::now();
    // Shrinking replays many failing sequences: keep their panics quiet, remember the last.
    static LAST_PANIC: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());
    // (Only this thread's panics, while the runner runs: other tests keep the usual output.)
    static FAILED_AT: AtomicU64 = AtomicU64::new(u64::MAX);
    static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);
    let me = std::thread::current().id();
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().id() == me && QUIET.load(Ordering::Relaxed) {
            let ctx = CTX.with(|c| c.borrow().clone());
            *LAST_PANIC.lock().unwrap_or_else(|e| e.into_inner()) =
                format!("{info}\n(during: {ctx})");
            FAILED_AT.store(AT.with(|a| a.get()) as u64, Ordering::Relaxed);
        } else {
            prev(info);
        }
    }));
    let r = runner.run(&strategy, |(ops, seed)| {
        LOCAL_TALLY.with(|t| t.borrow_mut().clear());
        run(&ops, seed);
        SEQUENCES.fetch_add(1, Ordering::Relaxed);
        let mut all = TALLY.lock().unwrap();
        LOCAL_TALLY.with(|t| {
            for (k, n) in t.borrow_mut().iter() {
                *all.entry(k.clone()).or_default() += n;
            }
        });
        Ok(())
    });
    QUIET.store(false, Ordering::Relaxed);
    if std::env::var_os("FS_MODEL_TALLY").is_some() {
        for ((op, what), n) in TALLY.lock().unwrap().iter() {
            eprintln!("{op:>10} {what:<20} {n}");
        }
    }
    eprintln!(
        "fs_model: {} sequences run, {} ops ({} succeeded), {} mounts, max fs tree level {}, \
         {:.1?}",
        SEQUENCES.load(Ordering::Relaxed),
        OPS.load(Ordering::Relaxed),
        OK_OPS.load(Ordering::Relaxed),
        MOUNTS.load(Ordering::Relaxed),
        MAX_LEVEL.load(Ordering::Relaxed),
        t.elapsed()
    );
    match r {
        Ok(()) => {}
        Err(proptest::test_runner::TestError::Fail(why, (ops, seed))) => {
            let last = LAST_PANIC.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let upto = FAILED_AT.load(Ordering::Relaxed).min(ops.len() as u64 - 1) as usize;
            let mut s = String::new();
            for (i, op) in ops.iter().enumerate().take(upto + 1) {
                if !matches!(op, Op::StatFs) {
                    s += &format!("  #{i}: {}\n", show(op));
                }
            }
            panic!(
                "{why}\nminimal sequence (seed {seed}; up to the failing op, StatFs ops left \
                 out; handles and cursors are indices into the open ones):\n{s}{last}"
            );
        }
        Err(e) => panic!("{e}"),
    }
}

/// `Fs::unlink` documents that handles still open on the file "turn stale (calls on them fail
/// with `NotFound`)". Every call on a stale handle except `close` is checked here, and all the
/// ones that do not fail with `NotFound` are listed in one failure.
#[test]
fn stale_handles_fail_with_not_found() {
    let mut m = mem(4096);
    let dev = QueuedRamDisk::from_image(cfg(DISK, 5), base_image().to_vec());
    let mut fs = F::mount(dev, &mut m).expect("mount");
    let rw = OpenFlags::READ | OpenFlags::WRITE | OpenFlags::CREATE;
    let fd = fs.open("/victim", rw).unwrap();
    let ap = fs
        .open("/victim", OpenFlags::WRITE | OpenFlags::APPEND)
        .unwrap();
    fs.write(fd, b"some bytes").unwrap();
    fs.unlink("/victim").unwrap();
    let mut buf = [0u8; 4];
    let calls: Vec<(&str, R<()>)> = vec![
        ("read", fs.read(fd, &mut buf).map(drop)),
        ("read_at", fs.read_at(fd, 0, &mut buf).map(drop)),
        ("read (empty buffer)", fs.read(fd, &mut []).map(drop)),
        ("write", fs.write(fd, b"x").map(drop)),
        ("write (APPEND handle)", fs.write(ap, b"x").map(drop)),
        ("write_at", fs.write_at(fd, 0, b"x").map(drop)),
        ("write (empty)", fs.write(fd, b"").map(drop)),
        ("write_at (empty)", fs.write_at(fd, 0, b"").map(drop)),
        ("truncate", fs.truncate(fd, 1)),
        ("fstat", fs.fstat(fd).map(drop)),
        ("seek End", fs.seek(fd, SeekFrom::End(0)).map(drop)),
        ("seek Start", fs.seek(fd, SeekFrom::Start(0)).map(drop)),
        ("seek Current", fs.seek(fd, SeekFrom::Current(0)).map(drop)),
        ("fsync", fs.fsync(fd)),
        ("fdatasync", fs.fdatasync(fd)),
    ];
    let wrong: Vec<String> = calls
        .iter()
        .filter(|(_, r)| *r != Err(Error::NotFound))
        .map(|(c, r)| format!("{c} -> {r:?}"))
        .collect();
    assert_eq!(fs.close(fd), Ok(()), "close of a stale handle");
    assert_eq!(fs.close(ap), Ok(()), "close of a stale handle");
    assert!(
        wrong.is_empty(),
        "calls on a stale handle (file unlinked) that do not fail with NotFound: {wrong:#?}"
    );
}

/// Create `/s` holding `initial` bytes (inline) durably, then apply `writes` (offset, length,
/// seed; a length of 0 truncates to the offset) through one handle, `fsync`, cut the power and
/// mount: the volume must check clean and hold exactly the fsynced bytes.
fn fsync_then_power_cut(initial: usize, writes: &[(u64, usize, u8)]) {
    let mut m1 = mem(4096);
    let mut m2 = mem(4096);
    let dev = QueuedRamDisk::new(cfg(DISK, 9));
    let mut fs = F::format(dev, &mut m1, FormatOptions::default()).expect("format");
    let rw = OpenFlags::READ | OpenFlags::WRITE | OpenFlags::CREATE;
    let mut want = Data {
        seed: 99,
        len: initial,
    }
    .bytes();
    let fd = fs.open("/s", rw).unwrap();
    if initial > 0 {
        assert_eq!(fs.write(fd, &want), Ok(initial));
    }
    fs.sync_all().unwrap();
    for &(off, len, seed) in writes {
        if len == 0 {
            fs.truncate(fd, off).unwrap();
            want.resize(off as usize, 0);
            continue;
        }
        let b = Data { seed, len }.bytes();
        assert_eq!(fs.write_at(fd, off, &b), Ok(len));
        let end = off as usize + len;
        if want.len() < end {
            want.resize(end, 0);
        }
        want[off as usize..end].copy_from_slice(&b);
    }
    fs.fsync(fd).unwrap();
    let mut dev = fs.into_device();
    dev.power_cut();
    let mut fs = F::mount(dev, &mut m2).expect("mount after power cut");
    let mut scratch = vec![0u8; fs.fsck_scratch_len()];
    let rep = fs.fsck(&mut scratch).expect("fsck ran");
    assert!(
        rep.is_clean(),
        "fsck after writes {writes:?}, fsync, power cut: {rep:?}"
    );
    let fd = fs.open("/s", OpenFlags::READ).unwrap();
    let mut back = vec![0u8; want.len() + 1];
    assert_eq!(fs.read_at(fd, 0, &mut back), Ok(want.len()));
    assert!(back[..want.len()] == want[..], "bytes after replay");
}

/// `fsync` of a file that grew out of inline into blocks (two writes to the same block, the
/// second one extending it), then a power cut. (Found by `fs_matches_model`: replay claimed
/// the second, longer MAP run only if entirely free, so its new block stayed allocatable and
/// became a tree node too, a double reference.)
#[test]
fn fsync_of_a_file_grown_into_blocks_then_power_cut() {
    fsync_then_power_cut(0, &[(0, 986, 0), (986, 3111, 1)]);
}

/// A block written by a large write (logged as a MAP of the block), then a small write into
/// it (logged by value), then a large write of it again (a second MAP of the same block),
/// `fsync`, power cut. (Found by `fs_matches_model`.)
#[test]
fn fsync_of_small_and_mapped_writes_to_one_block_then_power_cut() {
    fsync_then_power_cut(0, &[(0, 1000, 0), (10, 10, 1), (0, 1000, 2)]);
}

/// The same with a truncate (which zeroes the tail of the block it ends in) between the two
/// large writes of one block. (Found by `fs_matches_model`.)
#[test]
fn fsync_of_truncate_between_mapped_writes_to_one_block_then_power_cut() {
    fsync_then_power_cut(0, &[(0, 1000, 0), (1, 0, 0), (0, 1000, 2)]);
}
