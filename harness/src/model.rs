//! The namespace model: inodes (numbered as the filesystem numbers them), directories and file
//! bytes, with the operations of a workload in two forms.
//!
//! * **By path** ([`Model::create`], [`Model::rename`], ...): what the live run does. Each
//!   predicts the filesystem's answer (the exact `Error` variant, with the checks in the order
//!   `src/fs/mod.rs` makes them) and, on success, returns the [`Concrete`] operation it became.
//! * **Concrete** ([`Model::apply`]): an operation pinned to inode identities, replayed by the
//!   oracle on other starting states (some earlier operations absent). It applies only where
//!   its identities still hold — a rename moves the inode it moved in the live run, a write
//!   goes to the inode it went to — and otherwise fails without changing anything.

use std::collections::BTreeMap;

use bonsaifs::Error;

use crate::pattern;

/// An inode number (the filesystem's own, so the model and the volume agree on identities).
pub type Ino = u64;

/// The root directory's inode number.
pub const ROOT: Ino = bonsaifs::wire::items::ROOT_INO;

/// What a volume shows: every path (the root excluded) mapped to `None` for a directory or the
/// bytes of a file. Two volumes that show the same tree are the same to a user.
pub type Tree = BTreeMap<String, Option<Vec<u8>>>;

/// One inode.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Node {
    /// A directory: its parent and its entries by name.
    Dir {
        /// The directory holding it (the root is its own parent).
        parent: Ino,
        /// Name → inode.
        entries: BTreeMap<String, Ino>,
    },
    /// A file and its bytes.
    File {
        /// The whole contents (holes as zeros).
        data: Vec<u8>,
    },
}

/// An operation pinned to inode identities: what the oracle replays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Concrete {
    /// Create an empty file `ino` as `parent/name`.
    Create {
        /// Directory.
        parent: Ino,
        /// Entry name.
        name: String,
        /// The new inode.
        ino: Ino,
    },
    /// Create the empty directory `ino` as `parent/name`.
    Mkdir {
        /// Directory.
        parent: Ino,
        /// Entry name.
        name: String,
        /// The new inode.
        ino: Ino,
    },
    /// Write `len` bytes of write `uid`'s pattern at `off` of file `ino`.
    Write {
        /// File.
        ino: Ino,
        /// Byte offset.
        off: u64,
        /// Length.
        len: usize,
        /// The write's pattern identity (see [`crate::pattern`]).
        uid: u32,
    },
    /// Set the size of file `ino`.
    Truncate {
        /// File.
        ino: Ino,
        /// New size.
        size: u64,
    },
    /// Move inode `src` from `from_dir/from` to `to_dir/to`, replacing what is there.
    Rename {
        /// The inode moved.
        src: Ino,
        /// Source directory.
        from_dir: Ino,
        /// Source name.
        from: String,
        /// Target directory.
        to_dir: Ino,
        /// Target name.
        to: String,
    },
    /// Remove file `ino`, named `parent/name`.
    Unlink {
        /// Directory.
        parent: Ino,
        /// Entry name.
        name: String,
        /// The file.
        ino: Ino,
    },
    /// Remove the empty directory `ino`, named `parent/name`.
    Rmdir {
        /// Directory.
        parent: Ino,
        /// Entry name.
        name: String,
        /// The directory removed.
        ino: Ino,
    },
}

impl Concrete {
    /// The file whose data or existence this operation changes (what `fdatasync` of that file
    /// must make durable), if any.
    pub fn data_subject(&self) -> Option<Ino> {
        match *self {
            Concrete::Create { ino, .. }
            | Concrete::Write { ino, .. }
            | Concrete::Truncate { ino, .. } => Some(ino),
            _ => None,
        }
    }

    /// The inode this operation names (moves) — part of what `fsync` of that file covers.
    pub fn name_subject(&self) -> Option<Ino> {
        match *self {
            Concrete::Rename { src, .. } => Some(src),
            _ => self.data_subject(),
        }
    }
}

/// The model: every inode of the volume.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Model {
    nodes: BTreeMap<Ino, Node>,
}

type R<T> = Result<T, Error>;

/// Components of an absolute path as `src/fs/path.rs` splits them (empty ones skipped). The
/// harness only uses plain names, so `.` / `..` / over-long names never occur.
fn components(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|c| !c.is_empty())
}

/// The directory part and the last name of `path`.
fn split_last(path: &str) -> R<(&str, &str)> {
    let trimmed = path.trim_end_matches('/');
    let (dir, name) = match trimmed.rfind('/') {
        Some(i) => (&trimmed[..i], &trimmed[i + 1..]),
        None => ("", trimmed),
    };
    if name.is_empty() || name == "." || name == ".." {
        return Err(Error::InvalidPath);
    }
    Ok((dir, name))
}

impl Model {
    /// A model holding only the empty root directory.
    pub fn new() -> Self {
        let mut nodes = BTreeMap::new();
        nodes.insert(
            ROOT,
            Node::Dir {
                parent: ROOT,
                entries: BTreeMap::new(),
            },
        );
        Model { nodes }
    }

    /// Insert `node` as inode `ino` named `parent/name` (used to build a model from a walk).
    pub fn insert_named(&mut self, parent: Ino, name: &str, ino: Ino, node: Node) -> R<()> {
        match self.nodes.get_mut(&parent) {
            Some(Node::Dir { entries, .. }) => {
                if entries.insert(name.to_string(), ino).is_some() {
                    return Err(Error::AlreadyExists);
                }
            }
            _ => return Err(Error::NotADirectory),
        }
        self.nodes.insert(ino, node);
        Ok(())
    }

    /// The inode `ino`, if it exists.
    pub fn node(&self, ino: Ino) -> Option<&Node> {
        self.nodes.get(&ino)
    }

    /// Number of inodes (the root included).
    pub fn inode_count(&self) -> usize {
        self.nodes.len()
    }

    fn is_dir(&self, ino: Ino) -> bool {
        matches!(self.nodes.get(&ino), Some(Node::Dir { .. }))
    }

    fn entry(&self, dir: Ino, name: &str) -> Option<Ino> {
        match self.nodes.get(&dir) {
            Some(Node::Dir { entries, .. }) => entries.get(name).copied(),
            _ => None,
        }
    }

    fn dir_len(&self, dir: Ino) -> usize {
        match self.nodes.get(&dir) {
            Some(Node::Dir { entries, .. }) => entries.len(),
            _ => 0,
        }
    }

    /// Resolve `path` to an inode, as `Fs::resolve` does.
    pub fn resolve(&self, path: &str) -> R<Ino> {
        let mut cur = ROOT;
        for c in components(path) {
            if !self.is_dir(cur) {
                return Err(Error::NotADirectory);
            }
            cur = self.entry(cur, c).ok_or(Error::NotFound)?;
        }
        Ok(cur)
    }

    /// Resolve the directory holding `path`'s last component.
    fn resolve_parent<'p>(&self, path: &'p str) -> R<(Ino, &'p str)> {
        let (dir, name) = split_last(path)?;
        let d = self.resolve(dir)?;
        if !self.is_dir(d) {
            return Err(Error::NotADirectory);
        }
        Ok((d, name))
    }

    /// The file at `path`, as `open` without `CREATE` finds it.
    pub fn open_file(&self, path: &str) -> R<Ino> {
        let (dir, name) = self.resolve_parent(path)?;
        match self.entry(dir, name) {
            None => Err(Error::NotFound),
            Some(i) if self.is_dir(i) => Err(Error::IsADirectory),
            Some(i) => Ok(i),
        }
    }

    /// The bytes of file `ino` (empty if it is not a file).
    pub fn data(&self, ino: Ino) -> &[u8] {
        match self.nodes.get(&ino) {
            Some(Node::File { data }) => data,
            _ => &[],
        }
    }

    /// Size of file `ino`.
    pub fn size(&self, ino: Ino) -> u64 {
        self.data(ino).len() as u64
    }

    /// Predict `open(path, CREATE | EXCL)` or `mkdir(path)`: the directory and the new name.
    pub fn plan_create(&self, path: &str) -> R<(Ino, String)> {
        let (parent, name) = self.resolve_parent(path)?;
        if self.entry(parent, name).is_some() {
            return Err(Error::AlreadyExists);
        }
        Ok((parent, name.to_string()))
    }

    /// `open(path, CREATE | EXCL)` creating inode `ino`; the concrete operation it became.
    pub fn create(&mut self, path: &str, ino: Ino) -> R<Concrete> {
        let (parent, name) = self.plan_create(path)?;
        self.apply_ok(Concrete::Create { parent, name, ino })
    }

    /// `mkdir(path)` creating inode `ino`.
    pub fn mkdir(&mut self, path: &str, ino: Ino) -> R<Concrete> {
        let (parent, name) = self.plan_create(path)?;
        self.apply_ok(Concrete::Mkdir { parent, name, ino })
    }

    /// Predict `rmdir(path)`: the concrete operation it becomes, without applying it.
    pub fn plan_rmdir(&self, path: &str) -> R<Concrete> {
        let (parent, name) = self.resolve_parent(path)?;
        let ino = self.entry(parent, name).ok_or(Error::NotFound)?;
        if !self.is_dir(ino) {
            return Err(Error::NotADirectory);
        }
        if self.dir_len(ino) != 0 {
            return Err(Error::DirectoryNotEmpty);
        }
        Ok(Concrete::Rmdir {
            parent,
            name: name.to_string(),
            ino,
        })
    }

    /// Predict `unlink(path)`.
    pub fn plan_unlink(&self, path: &str) -> R<Concrete> {
        let (parent, name) = self.resolve_parent(path)?;
        let ino = self.entry(parent, name).ok_or(Error::NotFound)?;
        if self.is_dir(ino) {
            return Err(Error::IsADirectory);
        }
        Ok(Concrete::Unlink {
            parent,
            name: name.to_string(),
            ino,
        })
    }

    /// Predict `rename(from, to)`: `Ok(None)` when it succeeds without changing anything
    /// (renaming a name onto itself).
    pub fn plan_rename(&self, from: &str, to: &str) -> R<Option<Concrete>> {
        let (fdir, fname) = self.resolve_parent(from)?;
        let (tdir, tname) = self.resolve_parent(to)?;
        let src = self.entry(fdir, fname).ok_or(Error::NotFound)?;
        if self.is_dir(src) && self.below(tdir, src) {
            return Err(Error::InvalidPath);
        }
        if let Some(dst) = self.entry(tdir, tname) {
            if dst == src {
                return Ok(None);
            }
            match (self.is_dir(src), self.is_dir(dst)) {
                (true, false) => return Err(Error::NotADirectory),
                (false, true) => return Err(Error::IsADirectory),
                (true, true) if self.dir_len(dst) != 0 => return Err(Error::DirectoryNotEmpty),
                _ => {}
            }
        }
        Ok(Some(Concrete::Rename {
            src,
            from_dir: fdir,
            from: fname.to_string(),
            to_dir: tdir,
            to: tname.to_string(),
        }))
    }

    /// Is `dir` the directory `anc` or below it?
    fn below(&self, mut dir: Ino, anc: Ino) -> bool {
        for _ in 0..=self.nodes.len() {
            if dir == anc {
                return true;
            }
            if dir == ROOT {
                return false;
            }
            dir = match self.nodes.get(&dir) {
                Some(Node::Dir { parent, .. }) => *parent,
                _ => return false,
            };
        }
        false
    }

    fn apply_ok(&mut self, op: Concrete) -> R<Concrete> {
        self.apply(&op)?;
        Ok(op)
    }

    /// Apply a concrete operation where its identities hold; otherwise fail and change
    /// nothing.
    pub fn apply(&mut self, op: &Concrete) -> R<()> {
        match op {
            Concrete::Create { parent, name, ino } | Concrete::Mkdir { parent, name, ino } => {
                if !self.is_dir(*parent) {
                    return Err(Error::NotADirectory);
                }
                if self.entry(*parent, name).is_some() || self.nodes.contains_key(ino) {
                    return Err(Error::AlreadyExists);
                }
                let node = if matches!(op, Concrete::Mkdir { .. }) {
                    Node::Dir {
                        parent: *parent,
                        entries: BTreeMap::new(),
                    }
                } else {
                    Node::File { data: Vec::new() }
                };
                self.insert_named(*parent, name, *ino, node)
            }
            Concrete::Write { ino, off, len, uid } => match self.nodes.get_mut(ino) {
                Some(Node::File { data }) => {
                    let start = usize::try_from(*off).map_err(|_| Error::TooLarge)?;
                    let end = start + len;
                    if data.len() < end {
                        data.resize(end, 0);
                    }
                    data[start..end].copy_from_slice(&pattern::fill(*uid, *off, *len));
                    Ok(())
                }
                Some(Node::Dir { .. }) => Err(Error::IsADirectory),
                None => Err(Error::NotFound),
            },
            Concrete::Truncate { ino, size } => match self.nodes.get_mut(ino) {
                Some(Node::File { data }) => {
                    data.resize(usize::try_from(*size).map_err(|_| Error::TooLarge)?, 0);
                    Ok(())
                }
                Some(Node::Dir { .. }) => Err(Error::IsADirectory),
                None => Err(Error::NotFound),
            },
            Concrete::Rename {
                src,
                from_dir,
                from,
                to_dir,
                to,
            } => {
                if self.entry(*from_dir, from) != Some(*src) || !self.is_dir(*to_dir) {
                    return Err(Error::NotFound);
                }
                let src_dir = self.is_dir(*src);
                if src_dir && self.below(*to_dir, *src) {
                    return Err(Error::InvalidPath);
                }
                let dst = self.entry(*to_dir, to);
                if let Some(dst) = dst {
                    if dst == *src {
                        return Ok(());
                    }
                    match (src_dir, self.is_dir(dst)) {
                        (true, false) => return Err(Error::NotADirectory),
                        (false, true) => return Err(Error::IsADirectory),
                        (true, true) if self.dir_len(dst) != 0 => {
                            return Err(Error::DirectoryNotEmpty)
                        }
                        _ => {}
                    }
                    self.nodes.remove(&dst);
                }
                if let Some(Node::Dir { entries, .. }) = self.nodes.get_mut(from_dir) {
                    entries.remove(from);
                }
                if let Some(Node::Dir { entries, .. }) = self.nodes.get_mut(to_dir) {
                    entries.insert(to.clone(), *src);
                }
                if let Some(Node::Dir { parent, .. }) = self.nodes.get_mut(src) {
                    *parent = *to_dir;
                }
                Ok(())
            }
            Concrete::Unlink { parent, name, ino } | Concrete::Rmdir { parent, name, ino } => {
                if self.entry(*parent, name) != Some(*ino) {
                    return Err(Error::NotFound);
                }
                let want_dir = matches!(op, Concrete::Rmdir { .. });
                if self.is_dir(*ino) != want_dir {
                    return Err(if want_dir {
                        Error::NotADirectory
                    } else {
                        Error::IsADirectory
                    });
                }
                if want_dir && self.dir_len(*ino) != 0 {
                    return Err(Error::DirectoryNotEmpty);
                }
                if let Some(Node::Dir { entries, .. }) = self.nodes.get_mut(parent) {
                    entries.remove(name);
                }
                self.nodes.remove(ino);
                Ok(())
            }
        }
    }

    /// What the volume shows for this model.
    pub fn tree(&self) -> Tree {
        let mut out = Tree::new();
        let mut stack = vec![(String::new(), ROOT)];
        while let Some((prefix, dir)) = stack.pop() {
            if let Some(Node::Dir { entries, .. }) = self.nodes.get(&dir) {
                for (name, &ino) in entries {
                    let path = format!("{prefix}/{name}");
                    match self.nodes.get(&ino) {
                        Some(Node::Dir { .. }) => {
                            out.insert(path.clone(), None);
                            stack.push((path, ino));
                        }
                        Some(Node::File { data }) => {
                            out.insert(path, Some(data.clone()));
                        }
                        None => {}
                    }
                }
            }
        }
        out
    }

    /// Every (path, inode) pair, the root excluded.
    pub fn paths(&self) -> Vec<(String, Ino)> {
        let mut out = Vec::new();
        let mut stack = vec![(String::new(), ROOT)];
        while let Some((prefix, dir)) = stack.pop() {
            if let Some(Node::Dir { entries, .. }) = self.nodes.get(&dir) {
                for (name, &ino) in entries {
                    let path = format!("{prefix}/{name}");
                    if self.is_dir(ino) {
                        stack.push((path.clone(), ino));
                    }
                    out.push((path, ino));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rename_replaces_and_moves_directories() {
        let mut m = Model::new();
        m.mkdir("/A", 2).unwrap();
        m.mkdir("/B", 3).unwrap();
        m.create("/A/f", 4).unwrap();
        m.create("/B/g", 5).unwrap();
        m.apply(&Concrete::Write {
            ino: 4,
            off: 2,
            len: 3,
            uid: 9,
        })
        .unwrap();
        let r = m.plan_rename("/A/f", "/B/g").unwrap().unwrap();
        m.apply(&r).unwrap();
        let t = m.tree();
        assert_eq!(t.len(), 3);
        assert_eq!(t["/B/g"].as_ref().unwrap().len(), 5);
        assert_eq!(m.plan_rename("/B", "/B/x"), Err(Error::InvalidPath));
        assert_eq!(m.plan_rmdir("/B"), Err(Error::DirectoryNotEmpty));
        // The same rename replayed where its source is gone fails and changes nothing.
        let before = m.clone();
        assert!(m.apply(&r).is_err());
        assert_eq!(m, before);
        let mv = m.plan_rename("/B", "/A/C").unwrap().unwrap();
        m.apply(&mv).unwrap();
        assert!(m.tree().contains_key("/A/C/g"));
        assert_eq!(m.resolve("/A/C"), Ok(3));
    }
}
