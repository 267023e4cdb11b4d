//! The filesystem API: paths and handles over the volume's tree.
//!
//! [`Fs`] owns a mounted [`Volume`] and a fixed table of `H` open files. Every call does
//! bounded work: a path lookup is one tree descent per component, nothing scans a directory
//! or the volume, and `statfs` reads counters.
//!
//! Durability: every change joins the running transaction. [`Fs::fsync`] and
//! [`Fs::fdatasync`] make it durable with one log record (`journal.rs`; a checkpoint without
//! the `journal` feature); [`Fs::sync_all`] and [`Fs::unmount`] checkpoint it. After a power
//! cut the volume is exactly as of the last completed one of those calls.

mod check;
mod data;
mod dir;
mod handle;
mod inode;
#[cfg(feature = "journal")]
mod journal;
// Without `journal` nothing is logged and `fsync` checkpoints (see `journal_off.rs`).
#[cfg(not(feature = "journal"))]
#[path = "journal_off.rs"]
mod journal;
mod memo;
#[cfg(feature = "nowait")]
mod nowait_read;
mod path;
#[cfg(feature = "nowait")]
mod pipeline;
// Without `nowait` nothing is ever queued: the blocking calls' hooks into the pipeline are
// empty, and the NOWAIT API (flags, tickets, `poll`) is not compiled at all.
#[cfg(not(feature = "nowait"))]
#[path = "pipeline_off.rs"]
mod pipeline;
mod tail;

pub use crate::wire::items::FileKind;
pub use check::FsckReport;
pub use data::MAX_FILE_SIZE;
pub use dir::{DirEntry, ReadDir};
pub use handle::{Fd, OpenFlags};
#[cfg(feature = "nowait")]
pub use nowait_read::ReadFlags;
#[cfg(feature = "nowait")]
pub use pipeline::{Ticket, WriteFlags, WriteStatus, MAX_TICKETS, MAX_TICKET_BLOCKS};

use handle::Handles;
#[cfg(feature = "journal")]
use journal::Journal;

use crate::wire::log::LogOp;

use crate::device::BlockDevice;
use crate::error::{Error, Result};
use crate::volume::{FormatOptions, Parts, Volume, DELETE_KEEP_OPS};
use crate::wire::items::{FileKind as Kind, InodeItem, ROOT_INO};
use crate::wire::Superblock;
use zerocopy::FromZeros;

/// What [`Fs::stat`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Metadata {
    /// Inode number.
    pub ino: u64,
    /// File or directory.
    pub kind: FileKind,
    /// Size in bytes (directories: number of entries).
    pub size: u64,
    /// Names referring to it (always 1: no hard links).
    pub nlink: u32,
    /// Data blocks allocated.
    pub blocks: u64,
    /// Last modification, in the units of the clock given to [`Fs::set_clock`] (0 without).
    pub mtime: u64,
    /// Creation / change time, same units.
    pub ctime: u64,
}

/// What [`Fs::statfs`] reports (from counters: O(1)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct StatFs {
    /// Block size in bytes.
    pub block_size: u32,
    /// Blocks on the volume.
    pub total_blocks: u64,
    /// Blocks free (including those freed since the last checkpoint).
    pub free_blocks: u64,
    /// Files and directories, the root included.
    pub inodes: u64,
    /// Longest name.
    pub name_max: u32,
}

/// How [`Fs::seek`] moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum SeekFrom {
    /// From the start.
    Start(u64),
    /// From the end.
    End(i64),
    /// From the current position.
    Current(i64),
}

/// A mounted filesystem over device `D`, with an `N`-slot cache and `H` handles.
pub struct Fs<'b, D: BlockDevice<'b>, const N: usize, const H: usize = 8> {
    vol: Volume<'b, D, N>,
    handles: Handles<H>,
    clock: Option<fn() -> u64>,
    #[cfg(feature = "journal")]
    journal: Journal,
    #[cfg(feature = "nowait")]
    pipe: pipeline::Pipeline,
    memo: memo::Memo,
    /// The file being appended to by whole blocks (see `tail.rs`).
    tail: Option<tail::Tail>,
}

impl<'b, D: BlockDevice<'b>, const N: usize, const H: usize> Fs<'b, D, N, H> {
    /// A filesystem over the volume [`Volume::assemble`] builds from `dev`, `parts` and `sb`,
    /// with nothing open or pending.
    ///
    /// The volume is built last, right where it goes: built first (or passed in, as a
    /// `Volume::format` or `Volume::mount` result) it was built elsewhere and copied in,
    /// kilobytes at a time. One call for format and mount (not inlined into both) builds the
    /// struct where the caller's `fs` lives.
    #[inline(never)]
    fn over(dev: D, parts: Parts<'b>, sb: &Superblock) -> Self {
        Fs {
            handles: Handles::new(),
            clock: None,
            #[cfg(feature = "journal")]
            journal: Journal::default(),
            #[cfg(feature = "nowait")]
            pipe: pipeline::Pipeline::default(),
            memo: memo::Memo::default(),
            tail: None,
            vol: Volume::assemble(dev, parts, sb),
        }
    }

    /// Format `dev` (with a root directory) and mount it.
    ///
    /// The block size must be at least 2048 bytes so that a directory entry with a 255-byte
    /// name fits in a tree item.
    /// The device must hold at most `BlockNr::MAX` blocks of that size
    /// ([`crate::wire::BlockNr`]).
    pub fn format(dev: D, mem: &'b mut [u8], opts: FormatOptions) -> Result<Self> {
        if opts.block_size < 2048 {
            return Err(Error::InvalidArgument);
        }
        let mut sb = Superblock::new_zeroed();
        let parts = Volume::<D, N>::format_parts(&dev, mem, opts, &mut sb)?;
        // The volume is built inside the filesystem, not moved in (see `over`).
        let mut fs = Self::over(dev, parts, &sb);
        fs.format_root()?;
        Ok(fs)
    }

    /// The rest of [`format`](Self::format), on the filesystem built in place: the volume's
    /// writes, then the root directory, checkpointed.
    fn format_root(&mut self) -> Result<()> {
        self.vol.format_write()?;
        // (No clock yet: its times are 0. The root is its own parent; the count becomes 1.)
        self.create_inode(ROOT_INO, Kind::Dir, ROOT_INO)?;
        self.vol.checkpoint()
    }

    /// Mount the filesystem on `dev`.
    pub fn mount(mut dev: D, mem: &'b mut [u8]) -> Result<Self> {
        let mut sb = Superblock::new_zeroed();
        let parts = Volume::<D, N>::mount_parts(&mut dev, mem, &mut sb)?;
        if sb.block_size.get() < 2048 {
            return Err(Error::Unsupported);
        }
        // Built in place, as in `format`.
        let mut fs = Self::over(dev, parts, &sb);
        fs.mount_root()?;
        Ok(fs)
    }

    /// The rest of [`mount`](Self::mount), on the filesystem built in place: the root must
    /// be a directory, and a writable volume replays its journal.
    fn mount_root(&mut self) -> Result<()> {
        let mut root = InodeItem::new_zeroed();
        match self.load_inode(ROOT_INO, &mut root) {
            Ok(()) if root.kind == Kind::Dir as u8 => {}
            Ok(()) | Err(Error::NotFound) => return Err(Error::Corrupt),
            Err(e) => return Err(e),
        }
        if !self.vol.is_read_only() {
            self.replay()?;
        }
        Ok(())
    }

    /// Finish queued writes, checkpoint, and give the device back. A read-only or shut-down
    /// volume writes nothing (see [`Error::ShutDown`]); its device comes back as it is.
    ///
    /// On an error the device is dropped with the filesystem. Firmware that must keep the
    /// device whatever happens (to reset it, or to retry) calls [`sync_all`](Self::sync_all)
    /// instead, which does the same work in place and leaves the filesystem mounted, and
    /// then [`into_device`](Self::into_device), which cannot fail: after a successful
    /// `sync_all` nothing is lost by it.
    pub fn unmount(mut self) -> Result<D> {
        // All the work happens in place; only the device moves out at the end (moving the
        // whole volume by value cost kilobytes of stack on small targets).
        if !self.vol.is_shut_down() {
            self.settle()?;
            self.quiesce()?;
            self.vol.finish()?;
        }
        Ok(self.vol.into_device())
    }

    /// Give the device back without writing anything (what a power cut does).
    pub fn into_device(self) -> D {
        self.vol.into_device()
    }

    /// The volume underneath (counters, the raw tree, the device).
    pub fn volume(&self) -> &Volume<'b, D, N> {
        &self.vol
    }

    /// The volume underneath, mutably. Appends the filesystem still holds in memory (see
    /// `tail.rs`) are put into the tree first; if that fails the volume turns read-only.
    pub fn volume_mut(&mut self) -> &mut Volume<'b, D, N> {
        // A failure has already turned the volume read-only; the caller sees that there.
        let _ = self.settle();
        &mut self.vol
    }

    /// Checkpoint, with everything the filesystem holds in memory put into the tree first.
    fn checkpoint(&mut self) -> Result<()> {
        self.settle()?;
        self.vol.checkpoint()
    }

    /// Use `clock` for modification and change times (any monotonic unit).
    pub fn set_clock(&mut self, clock: fn() -> u64) {
        self.clock = Some(clock);
    }

    /// Resolve `path` to `(inode, kind)`.
    fn resolve(&mut self, path: &[u8]) -> Result<(u64, Kind)> {
        let mut cur = ROOT_INO;
        let mut kind = Kind::Dir;
        for c in path::components(path) {
            let c = c?;
            if kind != Kind::Dir {
                return Err(Error::NotADirectory);
            }
            match c {
                b"." => {}
                b".." => cur = self.read_inode(cur)?.parent.get(),
                name => {
                    let f = self.lookup(cur, name)?.ok_or(Error::NotFound)?;
                    cur = f.ino;
                    kind = f.kind;
                }
            }
        }
        Ok((cur, kind))
    }

    /// Resolve the directory holding `path`'s last component; returns it and the name. For a
    /// `change` of the namespace the volume must be writable, and appends held in memory are
    /// put into the tree first.
    fn resolve_parent<'p>(&mut self, path: &'p str, change: bool) -> Result<(u64, &'p [u8])> {
        if change {
            self.writable()?;
            self.settle()?;
        }
        let (dir, name) = path::split_last(path.as_bytes())?;
        let (ino, kind) = self.resolve(dir)?;
        if kind != Kind::Dir {
            return Err(Error::NotADirectory);
        }
        Ok((ino, name))
    }

    /// Run `f` as one all-or-nothing operation of up to `tree_ops` tree changes: the space it
    /// may need is reserved first, so it fails with `NoSpace` before changing anything.
    fn op<R>(
        &mut self,
        tree_ops: u32,
        adds: bool,
        f: impl FnOnce(&mut Self) -> Result<R>,
    ) -> Result<R> {
        // Only the call of `f` is generic: the rest is compiled once (`op` has many callers).
        let before = self.op_begin(tree_ops, adds)?;
        let r = f(self);
        self.vol.end_op();
        r.map_err(|e| self.op_failed(before, e))
    }

    /// The start of [`Fs::op`]: returns the mutation count to compare against on failure.
    fn op_begin(&mut self, tree_ops: u32, adds: bool) -> Result<u32> {
        self.writable()?;
        let before = self.vol.mutations();
        self.vol.begin_op(tree_ops, adds)?;
        Ok(before)
    }

    /// An operation begun at mutation count `before` failed with `e`.
    ///
    /// It may have stopped half-way (a block allocated but not mapped, a name removed but not
    /// added): nothing of it may reach a checkpoint or the log, and if it changed anything in
    /// memory the volume shuts down rather than show it. The durable state is whole; a
    /// remount continues from it.
    #[inline(never)]
    fn op_failed(&mut self, before: u32, e: Error) -> Error {
        if matches!(
            e,
            Error::Io(_) | Error::Corrupt | Error::CacheFull | Error::NoSpace
        ) && self.vol.fail_since(before, e)
        {
            self.fail_tickets(Error::ShutDown);
        }
        e
    }

    fn writable(&self) -> Result<()> {
        self.vol.writable()
    }

    /// Open (and with `CREATE`, create) the file at `path`.
    pub fn open(&mut self, path: &str, flags: OpenFlags) -> Result<Fd> {
        let writes = flags.intersects(OpenFlags::WRITE | OpenFlags::APPEND | OpenFlags::TRUNC);
        if writes || flags.contains(OpenFlags::CREATE) {
            self.writable()?;
        }
        if flags.contains(OpenFlags::TRUNC) && !flags.contains(OpenFlags::WRITE) {
            return Err(Error::InvalidArgument);
        }
        if flags.intersects(OpenFlags::CREATE | OpenFlags::TRUNC) {
            self.settle()?;
        }
        let (dir, name) = self.resolve_parent(path, false)?;
        let ino = match self.lookup(dir, name)? {
            Some(f) if flags.contains(OpenFlags::CREATE | OpenFlags::EXCL) => {
                let _ = f;
                return Err(Error::AlreadyExists);
            }
            Some(f) if f.kind == Kind::Dir => return Err(Error::IsADirectory),
            Some(f) => f.ino,
            None if flags.contains(OpenFlags::CREATE) => {
                // Check the handle table first so a full table fails before anything changes.
                if self.handles.count() >= H {
                    return Err(Error::TooManyOpenFiles);
                }
                self.create_in(dir, name, Kind::File, None)?
            }
            None => return Err(Error::NotFound),
        };
        let fd = self.handles.open(ino, flags)?;
        if flags.contains(OpenFlags::TRUNC) {
            if let Err(e) = self.resize(ino, 0) {
                let _ = self.handles.close(fd);
                return Err(e);
            }
        }
        Ok(fd)
    }

    /// Close a handle.
    pub fn close(&mut self, fd: Fd) -> Result<()> {
        let o = self.handles.get(fd)?;
        self.settle_ino(o.ino)?;
        self.handles.close(fd)
    }

    /// Read from the handle's position; returns bytes read (0 at end of file).
    pub fn read(&mut self, fd: Fd, buf: &mut [u8]) -> Result<usize> {
        // (`read_at` checks the handle and its flags.)
        let pos = self.handles.get(fd)?.pos;
        let n = self.read_at(fd, pos, buf)?;
        self.handles.get_mut(fd)?.pos = pos + n as u64;
        Ok(n)
    }

    /// Read at `offset` without moving the handle's position.
    pub fn read_at(&mut self, fd: Fd, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let o = self.handles.get(fd)?;
        if !o.flags.contains(OpenFlags::READ) {
            return Err(Error::BadHandle);
        }
        let inode = self.read_inode(o.ino)?;
        self.read_data(o.ino, &inode, offset, buf)
    }

    /// Write at the handle's position (or the end, with `APPEND`); returns bytes written.
    pub fn write(&mut self, fd: Fd, data: &[u8]) -> Result<usize> {
        let o = self.handles.get(fd)?;
        let pos = if o.flags.contains(OpenFlags::APPEND) {
            self.read_inode(o.ino)?.size.get()
        } else {
            o.pos
        };
        let n = self.write_at(fd, pos, data)?;
        self.handles.get_mut(fd)?.pos = pos + n as u64;
        Ok(n)
    }

    /// Write at `offset` without moving the handle's position.
    pub fn write_at(&mut self, fd: Fd, offset: u64, data: &[u8]) -> Result<usize> {
        self.write_at_inner(fd, offset, data, true)
    }

    /// [`write_at`](Self::write_at); `tail` lets whole-block appends take the fast path of
    /// `tail.rs` (queued writes do not: their data and log operation must be in place at once).
    fn write_at_inner(&mut self, fd: Fd, offset: u64, data: &[u8], tail: bool) -> Result<usize> {
        let o = self.handles.get(fd)?;
        if !o.flags.intersects(OpenFlags::WRITE | OpenFlags::APPEND) {
            return Err(Error::BadHandle);
        }
        self.writable()?;
        if tail {
            // The tail's file exists (unlinking it settles and drops the tail).
            if let Some(n) = self.append_fast(o.ino, offset, data)? {
                let rest = data.get(n..).unwrap_or(&[]);
                if rest.is_empty() {
                    return Ok(n);
                }
                // The rest (a partial block, or blocks the fast path could not place) goes the
                // general way; if that fails, this is a short write of what is done.
                let more = self
                    .write_at_inner(fd, offset + n as u64, rest, false)
                    .unwrap_or(0);
                self.start_tail(o.ino, offset + (n + more) as u64);
                return Ok(n + more);
            }
        }
        self.settle()?;
        // A handle whose file was unlinked is stale, even for an empty write.
        self.load_inode(o.ino, &mut InodeItem::new_zeroed())?;
        // Up front, the space a copy-on-write of every block touched may take (split extent,
        // new mapping, freed block: a few tree changes each), so a write fails before it starts
        // rather than half-way.
        let blocks = if data.is_empty() {
            0
        } else {
            // (`offset` in its block, plus the data, rounded up to whole blocks.)
            self.blk_of(self.in_blk(offset) + data.len() as u64 + self.bs() - 1)
        };
        // Tree changes are reserved for the mapping; each block's allocation reserves the rest
        // as it goes (a write that runs out part-way is a short write).
        let tree_ops = 4 + blocks.min(4) as u32;
        // (One closure for both tries: one instance of `op`.)
        let write = |fs: &mut Self| fs.write_data(o.ino, offset, data);
        let n = match self.op(tree_ops, true, write) {
            // Space freed since the last checkpoint is reusable after one: take it and retry.
            Err(Error::NoSpace) if self.vol.pending_free() > 0 => {
                self.checkpoint()?;
                self.op(tree_ops, true, write)?
            }
            r => r?,
        };
        self.log_write(o.ino, offset, data.get(..n).unwrap_or(data))?;
        if tail {
            self.start_tail(o.ino, offset + n as u64);
        }
        Ok(n)
    }

    /// Move the handle's position; returns the new position.
    pub fn seek(&mut self, fd: Fd, to: SeekFrom) -> Result<u64> {
        let o = self.handles.get(fd)?;
        let size = self.read_inode(o.ino)?.size.get();
        let base = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::Current(d) => o.pos.checked_add_signed(d),
            SeekFrom::End(d) => size.checked_add_signed(d),
        };
        let pos = base
            .filter(|&p| p <= MAX_FILE_SIZE)
            .ok_or(Error::InvalidArgument)?;
        self.handles.get_mut(fd)?.pos = pos;
        Ok(pos)
    }

    /// Set the file's size: shrinking frees blocks, growing leaves a hole (reads as zeros).
    pub fn truncate(&mut self, fd: Fd, size: u64) -> Result<()> {
        let o = self.handles.get(fd)?;
        if !o.flags.intersects(OpenFlags::WRITE | OpenFlags::APPEND) {
            return Err(Error::BadHandle);
        }
        self.settle()?;
        self.resize(o.ino, size)
    }

    /// Make the file's data and metadata durable: one log record (plus the file's new data
    /// blocks), not a checkpoint. Every change before it, to any file, becomes durable too.
    /// Without the `journal` feature it is a checkpoint, as [`sync_all`](Self::sync_all).
    pub fn fsync(&mut self, fd: Fd) -> Result<()> {
        let o = self.handles.get(fd)?;
        self.load_inode(o.ino, &mut InodeItem::new_zeroed())?;
        self.settle()?;
        self.quiesce()?;
        self.sync_log()
    }

    /// Set the size of `ino`, as one logged operation.
    fn resize(&mut self, ino: u64, size: u64) -> Result<()> {
        let grows = size > self.read_inode(ino)?.size.get();
        self.op(8, grows, |fs| fs.set_size(ino, size))?;
        self.log(&LogOp::SetSize { ino, size });
        Ok(())
    }

    /// Make the file's data (and the metadata needed to read it) durable. The log never
    /// carries timestamp-only changes (replay stamps its own times), so the record is the same
    /// one `fsync` writes: both cost the data blocks, one record and at most one flush.
    pub fn fdatasync(&mut self, fd: Fd) -> Result<()> {
        self.fsync(fd)
    }

    /// Switch deliberate bugs on (tests of the checkers only; see [`crate::inject`]). The
    /// switches last until the volume is unmounted.
    #[cfg(feature = "inject-bugs")]
    pub fn inject_bugs(&mut self, bugs: crate::inject::Bugs) {
        self.vol.inject_bugs(bugs);
    }

    /// Make every change so far durable (a checkpoint).
    pub fn sync_all(&mut self) -> Result<()> {
        self.settle()?;
        self.quiesce()?;
        self.checkpoint()
    }

    /// Metadata of `path`.
    pub fn stat(&mut self, path: &str) -> Result<Metadata> {
        let (ino, _) = self.resolve(path.as_bytes())?;
        self.stat_ino(ino)
    }

    /// Metadata of an open file.
    pub fn fstat(&mut self, fd: Fd) -> Result<Metadata> {
        let o = self.handles.get(fd)?;
        self.stat_ino(o.ino)
    }

    fn stat_ino(&mut self, ino: u64) -> Result<Metadata> {
        let mut i = InodeItem::new_zeroed();
        self.load_inode(ino, &mut i)?;
        Ok(Metadata {
            ino,
            // (`load_inode` checked the kind.)
            kind: if i.kind == Kind::Dir as u8 {
                Kind::Dir
            } else {
                Kind::File
            },
            size: i.size.get(),
            nlink: i.nlink.get(),
            blocks: i.blocks.get(),
            mtime: i.mtime.get(),
            ctime: i.ctime.get(),
        })
    }

    /// Space and inode counters.
    pub fn statfs(&self) -> StatFs {
        let s = self.vol.space_info();
        StatFs {
            block_size: s.block_size,
            total_blocks: s.total_blocks,
            free_blocks: s.free_blocks,
            inodes: self.vol.inode_count(),
            name_max: crate::wire::items::NAME_MAX as u32,
        }
    }

    /// Create the directory `path`.
    pub fn mkdir(&mut self, path: &str) -> Result<()> {
        let (dir, name) = self.resolve_parent(path, true)?;
        self.create_in(dir, name, Kind::Dir, None).map(|_| ())
    }

    /// Remove the empty directory `path`.
    pub fn rmdir(&mut self, path: &str) -> Result<()> {
        let (dir, name) = self.resolve_parent(path, true)?;
        self.remove_in(dir, name, Some(Kind::Dir))
    }

    /// Remove the file `path`. Handles still open on it turn stale (calls on them fail with
    /// `NotFound`); its blocks are freed at once.
    pub fn unlink(&mut self, path: &str) -> Result<()> {
        let (dir, name) = self.resolve_parent(path, true)?;
        self.remove_in(dir, name, Some(Kind::File))
    }

    /// Rename `from` to `to`, atomically, replacing `to` as POSIX `rename` does: a file may
    /// replace a file, a directory may replace an empty directory. A directory cannot move
    /// into itself or below itself (`InvalidPath`).
    pub fn rename(&mut self, from: &str, to: &str) -> Result<()> {
        let (fdir, fname) = self.resolve_parent(from, true)?;
        let (tdir, tname) = self.resolve_parent(to, false)?;
        self.rename_in(fdir, fname, tdir, tname)
    }

    /// Create `name` in directory `dir` (the journal replays this with the logged inode number
    /// in `expect`). Returns the new inode.
    fn create_in(&mut self, dir: u64, name: &[u8], kind: Kind, expect: Option<u64>) -> Result<u64> {
        if self.lookup(dir, name)?.is_some() {
            return Err(Error::AlreadyExists);
        }
        // (The number left in `ino`: the operation's own result stays in registers.)
        let mut ino = 0;
        self.op(6, true, |fs| {
            ino = fs.vol.alloc_id();
            fs.create_inode(ino, kind, dir)?;
            if expect.is_some_and(|e| e != ino) {
                return Err(Error::Corrupt);
            }
            fs.add_entry(dir, name, ino, kind)
        })?;
        self.log(&LogOp::Create {
            parent: dir,
            ino,
            kind: kind as u8,
            name,
        });
        Ok(ino)
    }

    /// Remove `name` from `dir`: a file, or an empty directory. `want` is what the caller
    /// expects it to be (`None` from replay: either).
    fn remove_in(&mut self, dir: u64, name: &[u8], want: Option<Kind>) -> Result<()> {
        let f = self.lookup(dir, name)?.ok_or(Error::NotFound)?;
        match (want, f.kind) {
            (Some(Kind::Dir), Kind::File) => return Err(Error::NotADirectory),
            (Some(Kind::File), Kind::Dir) => return Err(Error::IsADirectory),
            _ => {}
        }
        if f.kind == Kind::Dir && self.read_inode(f.ino)?.size.get() != 0 {
            return Err(Error::DirectoryNotEmpty);
        }
        self.op(6, false, |fs| {
            fs.remove_entry(dir, name)?;
            fs.delete_inode(f.ino)
        })?;
        self.log(&LogOp::Remove { parent: dir, name });
        Ok(())
    }

    /// Rename `fdir/fname` to `tdir/tname` (POSIX replace rules).
    fn rename_in(&mut self, fdir: u64, fname: &[u8], tdir: u64, tname: &[u8]) -> Result<()> {
        let src = self.lookup(fdir, fname)?.ok_or(Error::NotFound)?;
        let mut i = InodeItem::new_zeroed();
        if src.kind == Kind::Dir {
            // The target directory must not be the source or below it.
            let mut d = tdir;
            for _ in 0..1_000_000u32 {
                if d == src.ino {
                    return Err(Error::InvalidPath);
                }
                if d == ROOT_INO {
                    break;
                }
                self.load_inode(d, &mut i)?;
                d = i.parent.get();
            }
        }
        let dst = self.lookup(tdir, tname)?;
        if let Some(dst) = dst {
            if dst.ino == src.ino {
                return Ok(());
            }
            match (src.kind, dst.kind) {
                (Kind::Dir, Kind::File) => return Err(Error::NotADirectory),
                (Kind::File, Kind::Dir) => return Err(Error::IsADirectory),
                (Kind::Dir, Kind::Dir) => {
                    self.load_inode(dst.ino, &mut i)?;
                    if i.size.get() != 0 {
                        return Err(Error::DirectoryNotEmpty);
                    }
                }
                _ => {}
            }
        }
        self.op(DELETE_KEEP_OPS, false, |fs| {
            if let Some(dst) = dst {
                fs.remove_entry(tdir, tname)?;
                fs.delete_inode(dst.ino)?;
            }
            fs.remove_entry(fdir, fname)?;
            fs.add_entry(tdir, tname, src.ino, src.kind)?;
            if src.kind == Kind::Dir && fdir != tdir {
                let mut i = InodeItem::new_zeroed();
                fs.load_inode(src.ino, &mut i)?;
                i.parent = tdir.into();
                fs.write_inode(src.ino, &i)?;
            }
            Ok(())
        })?;
        self.log(&LogOp::Rename {
            from_dir: fdir,
            to_dir: tdir,
            from: fname,
            to: tname,
        });
        Ok(())
    }

    /// Borrow an open file as an `embedded_io` reader / writer / seeker.
    pub fn file(&mut self, fd: Fd) -> File<'_, 'b, D, N, H> {
        File { fs: self, fd }
    }
}

/// An open file borrowed from its [`Fs`], implementing `embedded_io::{Read, Write, Seek}`.
pub struct File<'f, 'b, D: BlockDevice<'b>, const N: usize, const H: usize> {
    fs: &'f mut Fs<'b, D, N, H>,
    fd: Fd,
}

impl<'b, D: BlockDevice<'b>, const N: usize, const H: usize> File<'_, 'b, D, N, H> {
    /// The handle.
    pub fn fd(&self) -> Fd {
        self.fd
    }
}

impl<'b, D: BlockDevice<'b>, const N: usize, const H: usize> embedded_io::ErrorType
    for File<'_, 'b, D, N, H>
{
    type Error = Error;
}

impl<'b, D: BlockDevice<'b>, const N: usize, const H: usize> embedded_io::Read
    for File<'_, 'b, D, N, H>
{
    fn read(&mut self, buf: &mut [u8]) -> Result<usize> {
        self.fs.read(self.fd, buf)
    }
}

impl<'b, D: BlockDevice<'b>, const N: usize, const H: usize> embedded_io::Write
    for File<'_, 'b, D, N, H>
{
    fn write(&mut self, buf: &[u8]) -> Result<usize> {
        self.fs.write(self.fd, buf)
    }
    fn flush(&mut self) -> Result<()> {
        self.fs.fsync(self.fd)
    }
}

impl<'b, D: BlockDevice<'b>, const N: usize, const H: usize> embedded_io::Seek
    for File<'_, 'b, D, N, H>
{
    fn seek(&mut self, pos: embedded_io::SeekFrom) -> Result<u64> {
        let to = match pos {
            embedded_io::SeekFrom::Start(n) => SeekFrom::Start(n),
            embedded_io::SeekFrom::End(d) => SeekFrom::End(d),
            embedded_io::SeekFrom::Current(d) => SeekFrom::Current(d),
        };
        self.fs.seek(self.fd, to)
    }
}
