//! The FUSE adapter behind `bonsaifs mount`: kernel requests, which name inodes and file
//! handles, mapped onto the path-and-handle API of [`Fs`].
//!
//! * **Inodes.** `Fs` has no lookup by inode number, so the adapter remembers, for every inode
//!   the kernel knows (from `lookup`, `create`, `mkdir`), its parent inode and its name, and
//!   rebuilds the path from those links. Renames change one link; `forget` drops links the
//!   kernel no longer holds. The filesystem's root is inode 1, as FUSE's is; inode numbers are
//!   never reused by `Fs`, so the generation is always 0.
//! * **File handles** map to `Fs` handles ([`Fd`]); directory handles hold a listing taken at
//!   the first `readdir` (or a `readdir` at offset 0, i.e. `rewinddir`), and a `readdir` offset
//!   is an index into it.
//! * **Unlinking an open file.** `Fs` frees a file's blocks at `unlink`, and its handles turn
//!   stale; POSIX keeps an open file readable and writable until its last close. So a file that
//!   is still open when it is unlinked (or renamed over) is moved to a hidden name in the root,
//!   `.bonsaifs-orphan-<inode>`, and removed at its last `release` (or at unmount, or, after a
//!   crash, at the next mount). Such names in the root are reserved: hidden from listings and
//!   lookups, refused for new files.
//! * **Attributes.** The format stores no mode, owner or access time: files show as `0644`,
//!   directories as `0755`, owned by the user who mounted; `chmod`, `chown` and `utimes`
//!   succeed without effect. Sizes are changed with `truncate`.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bonsaifs::fs::{Fd, FileKind, Fs, Metadata, OpenFlags as FsOpen};
use bonsaifs::wire::items::ROOT_INO;
use bonsaifs::Error;
use bonsaifs_hal::image_file::ImageFile;
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenAccMode, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use nix::libc;

use crate::image::{join, SLOTS};

/// Open-file handles of a mounted filesystem (the CLI's other commands need 4).
pub const MOUNT_HANDLES: usize = 256;

/// The filesystem type the mount serves.
pub type MountFs = Fs<'static, ImageFile<'static>, SLOTS, MOUNT_HANDLES>;

/// How long the kernel may cache names and attributes. Every change goes through this
/// process, so the cache only goes stale through our own replies; one second is plenty.
const TTL: Duration = Duration::from_secs(1);

/// Names in the root that hold files unlinked while still open.
pub const ORPHAN_PREFIX: &str = ".bonsaifs-orphan-";

const _: () = assert!(ROOT_INO == INodeNo::ROOT.0);

/// The errno for a filesystem error.
pub fn errno(e: Error) -> Errno {
    match e {
        Error::NotFound => Errno::ENOENT,
        Error::AlreadyExists => Errno::EEXIST,
        Error::NotADirectory => Errno::ENOTDIR,
        Error::IsADirectory => Errno::EISDIR,
        Error::DirectoryNotEmpty => Errno::ENOTEMPTY,
        Error::NoSpace => Errno::ENOSPC,
        Error::NameTooLong => Errno::ENAMETOOLONG,
        Error::InvalidPath | Error::InvalidArgument => Errno::EINVAL,
        Error::ReadOnly => Errno::EROFS,
        Error::TooManyOpenFiles => Errno::EMFILE,
        Error::BadHandle => Errno::EBADF,
        Error::TooLarge => Errno::EFBIG,
        Error::WouldBlock => Errno::EAGAIN,
        Error::Corrupt
        | Error::Io(_)
        | Error::CacheFull
        | Error::ShutDown
        | Error::NotFormatted
        | Error::Unsupported => Errno::EIO,
    }
}

type Res<T> = Result<T, Errno>;

trait OrErrno<T> {
    fn or_errno(self) -> Res<T>;
}

impl<T> OrErrno<T> for bonsaifs::Result<T> {
    fn or_errno(self) -> Res<T> {
        self.map_err(errno)
    }
}

/// Where an inode the kernel knows sits in the tree.
#[derive(Debug)]
struct Node {
    parent: u64,
    name: String,
    /// Lookups the kernel has not forgotten yet.
    lookups: u64,
}

#[derive(Debug)]
struct OpenFile {
    fd: Fd,
    ino: u64,
}

#[derive(Debug)]
struct OpenDir {
    ino: u64,
    /// `.`, `..` and the entries, taken at the first `readdir`.
    listing: Option<Vec<(u64, FileType, String)>>,
}

/// Everything the mount holds: the filesystem and the kernel-facing tables.
pub struct State {
    fs: MountFs,
    read_only: bool,
    uid: u32,
    gid: u32,
    nodes: HashMap<u64, Node>,
    files: HashMap<u64, OpenFile>,
    dirs: HashMap<u64, OpenDir>,
    /// Open file handles per inode.
    open: HashMap<u64, u32>,
    /// Inodes unlinked while open, now at `/ORPHAN_PREFIX<ino>`.
    orphans: HashSet<u64>,
    next_fh: u64,
}

fn orphan_name(ino: u64) -> String {
    format!("{ORPHAN_PREFIX}{ino}")
}

fn is_reserved(parent: u64, name: &str) -> bool {
    parent == ROOT_INO && name.starts_with(ORPHAN_PREFIX)
}

fn file_type(kind: FileKind) -> FileType {
    match kind {
        FileKind::File => FileType::RegularFile,
        FileKind::Dir => FileType::Directory,
    }
}

fn secs(t: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(t)
}

impl State {
    /// Take over a mounted filesystem. On a writable one, files left unlinked-but-open by a
    /// crash are removed first; returns how many.
    pub fn new(mut fs: MountFs) -> bonsaifs::Result<(Self, usize)> {
        let read_only = fs.volume().is_read_only();
        let mut removed = 0;
        if !read_only {
            let mut cursor = fs.read_dir("/")?;
            let mut stale = Vec::new();
            while let Some(e) = fs.read_dir_next(&mut cursor)? {
                if e.kind == FileKind::File && e.name().starts_with(ORPHAN_PREFIX) {
                    stale.push(join("/", e.name()));
                }
            }
            for p in stale {
                fs.unlink(&p)?;
                removed += 1;
            }
        }
        let mut nodes = HashMap::new();
        nodes.insert(
            ROOT_INO,
            Node {
                parent: ROOT_INO,
                name: String::new(),
                lookups: 1,
            },
        );
        let state = State {
            fs,
            read_only,
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
            nodes,
            files: HashMap::new(),
            dirs: HashMap::new(),
            open: HashMap::new(),
            orphans: HashSet::new(),
            next_fh: 1,
        };
        Ok((state, removed))
    }

    /// Is the filesystem mounted read-only?
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// End the mount: close every handle, remove orphans, and on a writable filesystem
    /// unmount it (a checkpoint: everything written is durable when this returns `Ok`).
    pub fn shutdown(mut self) -> bonsaifs::Result<()> {
        for (_, f) in self.files.drain() {
            let _ = self.fs.close(f.fd);
        }
        let mut first_err = None;
        if !self.read_only {
            for ino in std::mem::take(&mut self.orphans) {
                if let Err(e) = self.fs.unlink(&join("/", &orphan_name(ino))) {
                    first_err.get_or_insert(e);
                }
            }
            if let Err(e) = self.fs.unmount() {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// The path of a known inode.
    fn path(&self, ino: u64) -> Res<String> {
        let mut names = Vec::new();
        let mut cur = ino;
        while cur != ROOT_INO {
            let n = self.nodes.get(&cur).ok_or(Errno::ENOENT)?;
            names.push(n.name.as_str());
            cur = n.parent;
            if names.len() > 100_000 {
                return Err(Errno::EIO);
            }
        }
        let mut p = String::new();
        for n in names.iter().rev() {
            p.push('/');
            p.push_str(n);
        }
        if p.is_empty() {
            p.push('/');
        }
        Ok(p)
    }

    /// The path of `name` in directory `parent`, and the name as UTF-8.
    fn child<'n>(&self, parent: u64, name: &'n OsStr) -> Res<(String, &'n str)> {
        let name = name.to_str().ok_or(Errno::EINVAL)?;
        Ok((join(&self.path(parent)?, name), name))
    }

    /// The path for a new name: reserved names are refused.
    fn new_child<'n>(&self, parent: u64, name: &'n OsStr) -> Res<(String, &'n str)> {
        let (p, n) = self.child(parent, name)?;
        if is_reserved(parent, n) {
            return Err(Errno::EPERM);
        }
        Ok((p, n))
    }

    fn attr(&self, m: &Metadata) -> FileAttr {
        let bs = u64::from(self.fs.statfs().block_size);
        let mut blocks = m.blocks * (bs / 512);
        if blocks == 0 {
            // Small files live inline in the tree; do not look sparse.
            blocks = m.size.div_ceil(512);
        }
        let nlink = if self.orphans.contains(&m.ino) {
            0
        } else {
            m.nlink
        };
        FileAttr {
            ino: INodeNo(m.ino),
            size: m.size,
            blocks,
            atime: secs(m.mtime),
            mtime: secs(m.mtime),
            ctime: secs(m.ctime.max(m.mtime)),
            crtime: secs(m.ctime),
            kind: file_type(m.kind),
            perm: match m.kind {
                FileKind::File => 0o644,
                FileKind::Dir => 0o755,
            },
            nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: bs as u32,
            flags: 0,
        }
    }

    /// Note one more kernel reference to `ino`, named `name` in `parent`.
    fn remember(&mut self, ino: u64, parent: u64, name: &str) {
        if ino == ROOT_INO {
            return;
        }
        let n = self.nodes.entry(ino).or_insert_with(|| Node {
            parent,
            name: String::new(),
            lookups: 0,
        });
        n.parent = parent;
        n.name = name.to_string();
        n.lookups += 1;
    }

    /// Move the link of a known inode (after a rename).
    fn relink(&mut self, ino: u64, parent: u64, name: &str) {
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.parent = parent;
            n.name = name.to_string();
        }
    }

    fn stat_path(&mut self, path: &str) -> Res<Metadata> {
        self.fs.stat(path).or_errno()
    }

    fn lookup(&mut self, parent: u64, name: &OsStr) -> Res<FileAttr> {
        let (path, name) = self.child(parent, name)?;
        if is_reserved(parent, name) {
            return Err(Errno::ENOENT);
        }
        let m = self.stat_path(&path)?;
        self.remember(m.ino, parent, name);
        Ok(self.attr(&m))
    }

    fn forget(&mut self, ino: u64, n: u64) {
        if ino == ROOT_INO {
            return;
        }
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.lookups = node.lookups.saturating_sub(n);
            // An orphan keeps its link while it is open (its path is how it is removed).
            if node.lookups == 0 && !self.orphans.contains(&ino) {
                self.nodes.remove(&ino);
            }
        }
    }

    fn getattr(&mut self, ino: u64, fh: Option<u64>) -> Res<FileAttr> {
        if let Some(f) = fh.and_then(|fh| self.files.get(&fh)) {
            if f.ino == ino {
                let fd = f.fd;
                if let Ok(m) = self.fs.fstat(fd) {
                    return Ok(self.attr(&m));
                }
            }
        }
        let path = self.path(ino)?;
        let m = self.stat_path(&path)?;
        if m.ino != ino {
            return Err(Errno::ENOENT);
        }
        Ok(self.attr(&m))
    }

    fn truncate(&mut self, ino: u64, fh: Option<u64>, size: u64) -> Res<()> {
        if self.read_only {
            return Err(Errno::EROFS);
        }
        if let Some(f) = fh.and_then(|fh| self.files.get(&fh)) {
            if f.ino == ino {
                let fd = f.fd;
                match self.fs.truncate(fd, size) {
                    Err(Error::BadHandle) => {} // opened read-only: go by path
                    r => return r.or_errno(),
                }
            }
        }
        let path = self.path(ino)?;
        let fd = self
            .fs
            .open(&path, FsOpen::READ | FsOpen::WRITE)
            .or_errno()?;
        let r = self.fs.truncate(fd, size);
        let _ = self.fs.close(fd);
        r.or_errno()
    }

    fn add_file(&mut self, fd: Fd, ino: u64) -> u64 {
        let fh = self.next_fh;
        self.next_fh += 1;
        self.files.insert(fh, OpenFile { fd, ino });
        *self.open.entry(ino).or_insert(0) += 1;
        fh
    }

    fn open_flags(flags: i32) -> FsOpen {
        let acc = OpenFlags(flags).acc_mode();
        let mut f = FsOpen::READ;
        if acc != OpenAccMode::O_RDONLY {
            f |= FsOpen::WRITE;
            if flags & libc::O_TRUNC != 0 {
                f |= FsOpen::TRUNC;
            }
        }
        f
    }

    fn open(&mut self, ino: u64, flags: i32) -> Res<u64> {
        let path = self.path(ino)?;
        let fd = self.fs.open(&path, Self::open_flags(flags)).or_errno()?;
        Ok(self.add_file(fd, ino))
    }

    fn create(&mut self, parent: u64, name: &OsStr, flags: i32) -> Res<(FileAttr, u64)> {
        let (path, name) = self.new_child(parent, name)?;
        let mut f = Self::open_flags(flags) | FsOpen::CREATE;
        if flags & libc::O_EXCL != 0 {
            f |= FsOpen::EXCL;
        }
        let fd = self.fs.open(&path, f).or_errno()?;
        let m = match self.fs.fstat(fd) {
            Ok(m) => m,
            Err(e) => {
                let _ = self.fs.close(fd);
                return Err(errno(e));
            }
        };
        self.remember(m.ino, parent, name);
        let fh = self.add_file(fd, m.ino);
        Ok((self.attr(&m), fh))
    }

    fn mknod(&mut self, parent: u64, name: &OsStr, mode: u32) -> Res<FileAttr> {
        if mode & libc::S_IFMT != libc::S_IFREG {
            return Err(Errno::EPERM);
        }
        let (path, name) = self.new_child(parent, name)?;
        let fd = self
            .fs
            .open(&path, FsOpen::WRITE | FsOpen::CREATE | FsOpen::EXCL)
            .or_errno()?;
        let m = self.fs.fstat(fd);
        let _ = self.fs.close(fd);
        let m = m.or_errno()?;
        self.remember(m.ino, parent, name);
        Ok(self.attr(&m))
    }

    fn file(&self, fh: u64) -> Res<Fd> {
        self.files.get(&fh).map(|f| f.fd).ok_or(Errno::EBADF)
    }

    fn read(&mut self, fh: u64, offset: u64, size: u32) -> Res<Vec<u8>> {
        let fd = self.file(fh)?;
        let mut buf = vec![0u8; size as usize];
        let mut got = 0;
        while got < buf.len() {
            match self.fs.read_at(fd, offset + got as u64, &mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(_) if got > 0 => break,
                Err(e) => return Err(errno(e)),
            }
        }
        buf.truncate(got);
        Ok(buf)
    }

    fn write(&mut self, fh: u64, offset: u64, data: &[u8]) -> Res<u32> {
        let fd = self.file(fh)?;
        let mut done = 0;
        let mut checkpointed = false;
        while done < data.len() {
            match self.fs.write_at(fd, offset + done as u64, &data[done..]) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(Error::NoSpace)
                    if !checkpointed && self.space_is_pending(data.len() - done) =>
                {
                    // Work around the library refusing data writes while the free space is
                    // only space freed since the last checkpoint (reusable after one): make
                    // it reusable and try once more.
                    checkpointed = true;
                    self.fs.sync_all().or_errno()?;
                }
                Err(_) if done > 0 => break,
                Err(e) => return Err(errno(e)),
            }
        }
        if done == 0 && !data.is_empty() {
            return Err(Errno::EIO);
        }
        Ok(done as u32)
    }

    /// Does the volume report clearly more free space than `bytes` need, so that a `NoSpace`
    /// can only mean space freed since the last checkpoint and not yet reusable?
    fn space_is_pending(&self, bytes: usize) -> bool {
        let s = self.fs.statfs();
        let need = (bytes as u64).div_ceil(u64::from(s.block_size));
        s.free_blocks > 2 * need + 64
    }

    fn release(&mut self, fh: u64) -> Res<()> {
        let f = self.files.remove(&fh).ok_or(Errno::EBADF)?;
        let r = self.fs.close(f.fd).or_errno();
        let left = self.open.get_mut(&f.ino).map_or(0, |c| {
            *c = c.saturating_sub(1);
            *c
        });
        if left == 0 {
            self.open.remove(&f.ino);
            if self.orphans.remove(&f.ino) {
                self.fs.unlink(&join("/", &orphan_name(f.ino))).or_errno()?;
                self.nodes.remove(&f.ino);
            }
        }
        r
    }

    fn fsync(&mut self, fh: u64, datasync: bool) -> Res<()> {
        let fd = self.file(fh)?;
        if self.read_only {
            return Ok(());
        }
        if datasync {
            self.fs.fdatasync(fd).or_errno()
        } else {
            self.fs.fsync(fd).or_errno()
        }
    }

    /// Make the namespace durable: `fsync` of any open file writes one journal record that
    /// covers every change so far; with no file open, a checkpoint.
    fn fsyncdir(&mut self) -> Res<()> {
        if self.read_only {
            return Ok(());
        }
        let fds: Vec<Fd> = self.files.values().map(|f| f.fd).collect();
        for fd in fds {
            if self.fs.fsync(fd).is_ok() {
                return Ok(());
            }
        }
        self.fs.sync_all().or_errno()
    }

    fn mkdir(&mut self, parent: u64, name: &OsStr) -> Res<FileAttr> {
        let (path, name) = self.new_child(parent, name)?;
        self.fs.mkdir(&path).or_errno()?;
        let m = self.stat_path(&path)?;
        self.remember(m.ino, parent, name);
        Ok(self.attr(&m))
    }

    /// Move open file `ino` at `path` to its orphan name.
    fn orphan(&mut self, ino: u64, path: &str) -> Res<()> {
        let name = orphan_name(ino);
        self.fs.rename(path, &join("/", &name)).or_errno()?;
        self.orphans.insert(ino);
        let lookups = self.nodes.get(&ino).map_or(0, |n| n.lookups);
        self.nodes.insert(
            ino,
            Node {
                parent: ROOT_INO,
                name,
                lookups,
            },
        );
        Ok(())
    }

    fn is_open(&self, ino: u64) -> bool {
        self.open.get(&ino).is_some_and(|&c| c > 0)
    }

    fn unlink(&mut self, parent: u64, name: &OsStr) -> Res<()> {
        let (path, name) = self.child(parent, name)?;
        if is_reserved(parent, name) {
            return Err(Errno::ENOENT);
        }
        let m = self.stat_path(&path)?;
        if m.kind == FileKind::Dir {
            return Err(Errno::EISDIR);
        }
        if self.is_open(m.ino) {
            return self.orphan(m.ino, &path);
        }
        self.fs.unlink(&path).or_errno()?;
        self.nodes.remove(&m.ino);
        Ok(())
    }

    fn rmdir(&mut self, parent: u64, name: &OsStr) -> Res<()> {
        let (path, name) = self.child(parent, name)?;
        if is_reserved(parent, name) {
            return Err(Errno::ENOENT);
        }
        let m = self.stat_path(&path)?;
        self.fs.rmdir(&path).or_errno()?;
        self.nodes.remove(&m.ino);
        Ok(())
    }

    fn rename(
        &mut self,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: RenameFlags,
    ) -> Res<()> {
        if flags.intersects(RenameFlags::RENAME_EXCHANGE | RenameFlags::RENAME_WHITEOUT) {
            return Err(Errno::EINVAL);
        }
        let (from, fname) = self.child(parent, name)?;
        if is_reserved(parent, fname) {
            return Err(Errno::ENOENT);
        }
        let (to, tname) = self.new_child(newparent, newname)?;
        let src = self.stat_path(&from)?;
        let dst = match self.fs.stat(&to) {
            Ok(m) => Some(m),
            Err(Error::NotFound) => None,
            Err(e) => return Err(errno(e)),
        };
        let mut orphaned = None;
        if let Some(d) = dst {
            if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                return Err(Errno::EEXIST);
            }
            if d.ino != src.ino
                && src.kind == FileKind::File
                && d.kind == FileKind::File
                && self.is_open(d.ino)
            {
                self.orphan(d.ino, &to)?;
                orphaned = Some(d.ino);
            }
        }
        if let Err(e) = self.fs.rename(&from, &to) {
            if let Some(ino) = orphaned {
                // Put the target back where it was.
                if self.fs.rename(&join("/", &orphan_name(ino)), &to).is_ok() {
                    self.orphans.remove(&ino);
                    self.relink(ino, newparent, tname);
                }
            }
            return Err(errno(e));
        }
        if let Some(d) = dst {
            if d.ino != src.ino && orphaned.is_none() {
                self.nodes.remove(&d.ino);
            }
        }
        self.relink(src.ino, newparent, tname);
        Ok(())
    }

    fn opendir(&mut self, ino: u64) -> Res<u64> {
        let path = self.path(ino)?;
        let m = self.stat_path(&path)?;
        if m.kind != FileKind::Dir {
            return Err(Errno::ENOTDIR);
        }
        let fh = self.next_fh;
        self.next_fh += 1;
        self.dirs.insert(fh, OpenDir { ino, listing: None });
        Ok(fh)
    }

    fn listing(&mut self, ino: u64) -> Res<Vec<(u64, FileType, String)>> {
        let path = self.path(ino)?;
        let parent = self.nodes.get(&ino).map_or(ROOT_INO, |n| n.parent);
        let mut out = vec![
            (ino, FileType::Directory, ".".to_string()),
            (parent, FileType::Directory, "..".to_string()),
        ];
        let mut cursor = self.fs.read_dir(&path).or_errno()?;
        while let Some(e) = self.fs.read_dir_next(&mut cursor).or_errno()? {
            if is_reserved(ino, e.name()) {
                continue;
            }
            out.push((e.ino, file_type(e.kind), e.name().to_string()));
        }
        Ok(out)
    }

    fn readdir(&mut self, ino: u64, fh: u64, offset: u64, reply: &mut ReplyDirectory) -> Res<()> {
        let fresh = match self.dirs.get(&fh) {
            Some(d) if d.ino == ino => offset == 0 || d.listing.is_none(),
            _ => return Err(Errno::EBADF),
        };
        if fresh {
            let l = self.listing(ino)?;
            if let Some(d) = self.dirs.get_mut(&fh) {
                d.listing = Some(l);
            }
        }
        let listing = self
            .dirs
            .get(&fh)
            .and_then(|d| d.listing.as_ref())
            .ok_or(Errno::EBADF)?;
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        for (i, (ino, kind, name)) in listing.iter().enumerate().skip(start) {
            if reply.add(INodeNo(*ino), i as u64 + 1, *kind, name) {
                break;
            }
        }
        Ok(())
    }

    fn releasedir(&mut self, fh: u64) -> Res<()> {
        self.dirs.remove(&fh).map(|_| ()).ok_or(Errno::EBADF)
    }

    fn statfs(&self, reply: ReplyStatfs) {
        let s = self.fs.statfs();
        reply.statfs(
            s.total_blocks,
            s.free_blocks,
            s.free_blocks,
            s.inodes + s.free_blocks,
            s.free_blocks,
            s.block_size,
            s.name_max,
            s.block_size,
        );
    }
}

/// The [`Filesystem`] handed to `fuser`: the state behind a lock, shared with the mount
/// command, which takes it back for the final checkpoint once the session ends.
pub struct BonsaiFuse {
    state: Arc<Mutex<Option<State>>>,
}

impl BonsaiFuse {
    /// Serve `state`; the returned handle gets it back after the session.
    pub fn new(state: State) -> (Self, Arc<Mutex<Option<State>>>) {
        let shared = Arc::new(Mutex::new(Some(state)));
        (
            BonsaiFuse {
                state: shared.clone(),
            },
            shared,
        )
    }

    fn lock(&self) -> MutexGuard<'_, Option<State>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> Res<T>) -> Res<T> {
        match self.lock().as_mut() {
            Some(s) => f(s),
            None => Err(Errno::EIO),
        }
    }
}

fn empty(reply: ReplyEmpty, r: Res<()>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

fn entry(reply: ReplyEntry, r: Res<FileAttr>) {
    match r {
        Ok(a) => reply.entry(&TTL, &a, Generation(0)),
        Err(e) => reply.error(e),
    }
}

fn attr(reply: ReplyAttr, r: Res<FileAttr>) {
    match r {
        Ok(a) => reply.attr(&TTL, &a),
        Err(e) => reply.error(e),
    }
}

fn opened(reply: ReplyOpen, r: Res<u64>) {
    match r {
        Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
        Err(e) => reply.error(e),
    }
}

impl Filesystem for BonsaiFuse {
    fn destroy(&mut self) {}

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        entry(reply, self.with(|s| s.lookup(parent.0, name)));
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        let _ = self.with(|s| {
            s.forget(ino.0, nlookup);
            Ok(())
        });
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        attr(reply, self.with(|s| s.getattr(ino.0, fh.map(|f| f.0))));
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        // Mode, owner and times are not stored: accepted and ignored (see the module doc).
        let r = self.with(|s| {
            let fh = fh.map(|f| f.0);
            if let Some(size) = size {
                s.truncate(ino.0, fh, size)?;
            }
            s.getattr(ino.0, fh)
        });
        attr(reply, r);
    }

    fn mknod(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        entry(reply, self.with(|s| s.mknod(parent.0, name, mode)));
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        entry(reply, self.with(|s| s.mkdir(parent.0, name)));
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(reply, self.with(|s| s.unlink(parent.0, name)));
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(reply, self.with(|s| s.rmdir(parent.0, name)));
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        empty(
            reply,
            self.with(|s| s.rename(parent.0, name, newparent.0, newname, flags)),
        );
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        opened(reply, self.with(|s| s.open(ino.0, flags.0)));
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.with(|s| s.read(fh.0, offset, size)) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.with(|s| s.write(fh.0, offset, data)) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close(2): nothing to write back (every write went to the filesystem already), and
        // close does not promise durability.
        empty(reply, self.with(|s| s.file(fh.0).map(|_| ())));
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        empty(reply, self.with(|s| s.release(fh.0)));
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        empty(reply, self.with(|s| s.fsync(fh.0, datasync)));
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        opened(reply, self.with(|s| s.opendir(ino.0)));
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        match self.with(|s| s.readdir(ino.0, fh.0, offset, &mut reply)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        empty(reply, self.with(|s| s.releasedir(fh.0)));
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        empty(reply, self.with(State::fsyncdir));
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.lock().as_ref() {
            Some(s) => s.statfs(reply),
            None => reply.error(Errno::EIO),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        match self.with(|s| s.create(parent.0, name, flags)) {
            Ok((a, fh)) => {
                reply.created(&TTL, &a, Generation(0), FileHandle(fh), FopenFlags::empty())
            }
            Err(e) => reply.error(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_errnos() {
        let cases = [
            (Error::NotFound, libc::ENOENT),
            (Error::AlreadyExists, libc::EEXIST),
            (Error::NotADirectory, libc::ENOTDIR),
            (Error::IsADirectory, libc::EISDIR),
            (Error::DirectoryNotEmpty, libc::ENOTEMPTY),
            (Error::NoSpace, libc::ENOSPC),
            (Error::NameTooLong, libc::ENAMETOOLONG),
            (Error::InvalidPath, libc::EINVAL),
            (Error::ReadOnly, libc::EROFS),
            (Error::Corrupt, libc::EIO),
            (Error::Io(bonsaifs::IoError::Media), libc::EIO),
            (Error::TooManyOpenFiles, libc::EMFILE),
            (Error::BadHandle, libc::EBADF),
        ];
        for (e, want) in cases {
            assert_eq!(i32::from(errno(e)), want, "{e:?}");
        }
    }

    #[test]
    fn open_flags() {
        assert_eq!(State::open_flags(libc::O_RDONLY), FsOpen::READ);
        assert_eq!(
            State::open_flags(libc::O_RDONLY | libc::O_TRUNC),
            FsOpen::READ
        );
        assert_eq!(
            State::open_flags(libc::O_WRONLY | libc::O_TRUNC),
            FsOpen::READ | FsOpen::WRITE | FsOpen::TRUNC
        );
        assert_eq!(
            State::open_flags(libc::O_RDWR | libc::O_APPEND),
            FsOpen::READ | FsOpen::WRITE
        );
    }

    /// A fresh filesystem on an image in `dir`, wrapped in the adapter's state.
    fn state(dir: &std::path::Path) -> State {
        use bonsaifs::volume::{memory_needed, FormatOptions};
        let dev =
            ImageFile::create(dir.join("t.img"), 16 << 20, crate::image::SECTOR_SIZE).unwrap();
        let mem = Box::leak(
            vec![0u8; memory_needed(crate::image::SECTOR_SIZE as usize, 4096, SLOTS)]
                .into_boxed_slice(),
        );
        let opts = FormatOptions {
            block_size: 4096,
            log_blocks: None,
            uuid: [1; 16],
        };
        let fs = MountFs::format(dev, mem, opts).unwrap();
        State::new(fs).unwrap().0
    }

    fn os(s: &str) -> &OsStr {
        OsStr::new(s)
    }

    #[test]
    fn inodes_follow_renames_and_forgets() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = state(dir.path());
        let a = s.mkdir(ROOT_INO, os("a")).unwrap().ino.0;
        let b = s.mkdir(a, os("b")).unwrap().ino.0;
        let (f, fh) = s.create(b, os("f"), libc::O_RDWR).unwrap();
        let f = f.ino.0;
        assert_eq!(s.write(fh, 0, b"hello").unwrap(), 5);
        assert_eq!(s.path(f).unwrap(), "/a/b/f");
        // Moving a directory moves everything the kernel knows below it.
        s.rename(ROOT_INO, os("a"), ROOT_INO, os("z"), RenameFlags::empty())
            .unwrap();
        assert_eq!(s.path(f).unwrap(), "/z/b/f");
        assert_eq!(s.read(fh, 0, 100).unwrap(), b"hello");
        assert_eq!(s.getattr(f, None).unwrap().size, 5);
        s.release(fh).unwrap();
        assert_eq!(
            s.rename(b, os("f"), ROOT_INO, os("z"), RenameFlags::RENAME_NOREPLACE),
            Err(Errno::EEXIST)
        );
        assert_eq!(
            s.rename(ROOT_INO, os("z"), b, os("x"), RenameFlags::empty()),
            Err(Errno::EINVAL)
        );
        // lookup + forget: the link goes when the kernel forgets the last lookup.
        s.lookup(b, os("f")).unwrap();
        s.forget(f, 2);
        assert_eq!(s.path(f), Err(Errno::ENOENT));
        assert_eq!(s.lookup(b, os("missing")).unwrap_err(), Errno::ENOENT);
    }

    #[test]
    fn an_unlinked_open_file_lives_until_its_last_release() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = state(dir.path());
        let (a, fh) = s.create(ROOT_INO, os("f"), libc::O_RDWR).unwrap();
        let ino = a.ino.0;
        s.write(fh, 0, &[7; 10_000]).unwrap();
        let fh2 = s.open(ino, libc::O_RDONLY).unwrap();
        s.unlink(ROOT_INO, os("f")).unwrap();
        assert_eq!(s.lookup(ROOT_INO, os("f")).unwrap_err(), Errno::ENOENT);
        let names: Vec<String> = s
            .listing(ROOT_INO)
            .unwrap()
            .into_iter()
            .map(|e| e.2)
            .collect();
        assert_eq!(names, [".", ".."], "the orphan is hidden");
        s.write(fh, 10_000, &[8; 100]).unwrap();
        assert_eq!(s.getattr(ino, Some(fh)).unwrap().nlink, 0);
        assert_eq!(s.read(fh2, 9_990, 200).unwrap().len(), 110);
        s.release(fh).unwrap();
        assert_eq!(s.read(fh2, 0, 1).unwrap(), [7]);
        s.release(fh2).unwrap();
        assert_eq!(s.fs.statfs().inodes, 1, "removed at the last release");
        assert_eq!(
            s.create(ROOT_INO, os(&orphan_name(3)), 0).unwrap_err(),
            Errno::EPERM
        );
        s.shutdown().unwrap();
    }

    #[test]
    fn reserved_names() {
        assert!(is_reserved(ROOT_INO, &orphan_name(42)));
        assert!(!is_reserved(5, &orphan_name(42)));
        assert!(!is_reserved(ROOT_INO, "bonsaifs-orphan-1"));
    }
}
