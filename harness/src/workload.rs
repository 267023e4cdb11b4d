//! Workloads in the style of ACE (CrashMonkey's workload generator): short sequences of
//! operations, each followed by a persistence operation, over a small fixed namespace.
//!
//! The starting volume ([`BASE`]) holds two directories with two files each, of every data
//! layout: `/A/foo` (three blocks), `/A/bar` (inline), `/B/foo` (sparse: data, two holes,
//! data) and `/B/bar` (empty) — plus [`BULK_DIR`], small files no operation touches, which
//! give the filesystem tree a second level. The [`CATALOGUE`] has one entry per interesting operation on
//! it: create, mkdir, write (append, overwrite, into a hole, past the end), `DSYNC` write,
//! `NOWAIT | DSYNC` write (one ticket, and a burst of three in flight), truncate (grow,
//! shrink), rename (file, across directories, replacing a file, directory, replacing an empty
//! directory), unlink and rmdir. Some only succeed after another (create in `/B/C` needs
//! `mkdir /B/C`), which is what sequences of two and three explore.
//!
//! A [`Workload`] is a list of [`Step`]s: a catalogue index and a [`Persist`] choice. Its
//! spec string (`"3.1,1.2"` = catalogue op 3 then fsync, op 1 then fdatasync) names it in
//! reports and on the command line.

use std::fmt;

use crate::rng::Rng;

/// An operation of the catalogue, by path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `open(path, CREATE | EXCL)`.
    Create(&'static str),
    /// `mkdir(path)`.
    Mkdir(&'static str),
    /// A plain write of `len` bytes at `off`, or at the end of the file when `off` is `None`.
    Write {
        /// The file.
        path: &'static str,
        /// Offset, or append.
        off: Option<u64>,
        /// Length.
        len: usize,
    },
    /// A blocking `write_at_flags(.., DSYNC)`.
    DsyncWrite {
        /// The file.
        path: &'static str,
        /// Offset, or append.
        off: Option<u64>,
        /// Length.
        len: usize,
    },
    /// `write_at_flags(.., NOWAIT | DSYNC)` of each `(offset, length)` back to back (all in
    /// flight together), then `poll` until every ticket is reported.
    NowaitDsync {
        /// The file.
        path: &'static str,
        /// The writes.
        writes: &'static [(u64, usize)],
    },
    /// `truncate` to `size`.
    Truncate {
        /// The file.
        path: &'static str,
        /// New size.
        size: u64,
    },
    /// `rename(from, to)`.
    Rename(&'static str, &'static str),
    /// `unlink(path)`.
    Unlink(&'static str),
    /// `rmdir(path)`.
    Rmdir(&'static str),
}

impl Op {
    /// The file a persistence operation after this op syncs first (before the fallbacks).
    pub fn subject(&self) -> Option<&'static str> {
        match *self {
            Op::Create(p)
            | Op::Write { path: p, .. }
            | Op::DsyncWrite { path: p, .. }
            | Op::NowaitDsync { path: p, .. }
            | Op::Truncate { path: p, .. } => Some(p),
            Op::Rename(_, to) => Some(to),
            Op::Mkdir(_) | Op::Unlink(_) | Op::Rmdir(_) => None,
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = |off: Option<u64>| off.map_or("end".to_string(), |o| o.to_string());
        match *self {
            Op::Create(p) => write!(f, "create {p}"),
            Op::Mkdir(p) => write!(f, "mkdir {p}"),
            Op::Write { path, off, len } => write!(f, "write {path} @{} +{len}", at(off)),
            Op::DsyncWrite { path, off, len } => {
                write!(f, "dsync-write {path} @{} +{len}", at(off))
            }
            Op::NowaitDsync { path, writes } => {
                write!(f, "nowait-dsync {path}")?;
                for (o, l) in writes {
                    write!(f, " @{o}+{l}")?;
                }
                Ok(())
            }
            Op::Truncate { path, size } => write!(f, "truncate {path} {size}"),
            Op::Rename(a, b) => write!(f, "rename {a} {b}"),
            Op::Unlink(p) => write!(f, "unlink {p}"),
            Op::Rmdir(p) => write!(f, "rmdir {p}"),
        }
    }
}

/// What follows each operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Persist {
    /// Nothing.
    None,
    /// `fsync` of the op's file (or the first file that exists, for directory operations).
    Fsync,
    /// `fdatasync` of the same file.
    Fdatasync,
    /// `sync_all` (a checkpoint).
    SyncAll,
}

impl Persist {
    /// All four, in spec order (`0` .. `3`).
    pub const ALL: [Persist; 4] = [
        Persist::None,
        Persist::Fsync,
        Persist::Fdatasync,
        Persist::SyncAll,
    ];

    /// The spec digit.
    pub fn index(self) -> usize {
        match self {
            Persist::None => 0,
            Persist::Fsync => 1,
            Persist::Fdatasync => 2,
            Persist::SyncAll => 3,
        }
    }
}

impl fmt::Display for Persist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Persist::None => "none",
            Persist::Fsync => "fsync",
            Persist::Fdatasync => "fdatasync",
            Persist::SyncAll => "sync_all",
        })
    }
}

/// Files a persistence operation falls back to, in order, when the op has no file or it is
/// gone (the filesystem has no directory handles to fsync).
pub const FSYNC_FALLBACK: [&str; 8] = [
    "/A/foo", "/A/bar", "/B/foo", "/B/bar", "/A/baz", "/B/baz", "/A/qux", "/B/C/baz",
];

/// One entry of the starting volume: a directory, or a file and its writes `(offset, len)`.
#[derive(Debug, Clone, Copy)]
pub enum BaseEntry {
    /// A directory.
    Dir(&'static str),
    /// A file written with these writes, in order.
    File(&'static str, &'static [(u64, usize)]),
}

/// The starting volume (made durable by a clean unmount before any workload runs).
pub const BASE: [BaseEntry; 6] = [
    BaseEntry::Dir("/A"),
    BaseEntry::Dir("/B"),
    BaseEntry::File("/A/foo", &[(0, 10_000)]),
    BaseEntry::File("/A/bar", &[(0, 200)]),
    BaseEntry::File("/B/foo", &[(0, 300), (12_288, 4096)]),
    BaseEntry::File("/B/bar", &[]),
];

/// A directory of small files that only fills the tree: with it the filesystem tree has two
/// levels, so checkpoints copy an internal node too and crash states have more metadata
/// writes to choose from. No catalogue operation touches it.
pub const BULK_DIR: &str = "/Z";
/// Files in [`BULK_DIR`] (`/Z/f00`, ...).
pub const BULK_FILES: usize = 24;
/// Bytes in each (inline).
pub const BULK_BYTES: usize = 64;

/// Pattern ids of the base volume's writes start here (workload writes count from 1).
pub const BASE_UID: u32 = 1 << 24;

/// The operation catalogue (indices are part of workload specs: append only).
pub const CATALOGUE: [Op; 32] = [
    Op::Create("/A/baz"),
    Op::Create("/B/C/baz"),
    Op::Mkdir("/A/C"),
    Op::Mkdir("/B/C"),
    // Plain writes: append across a block boundary, append inline, inline → extents, append
    // to an empty file, overwrite across a boundary, overwrite a whole block, overwrite inline,
    // into a hole, past the end (leaving a hole).
    Op::Write {
        path: "/A/foo",
        off: None,
        len: 5000,
    },
    Op::Write {
        path: "/A/bar",
        off: None,
        len: 300,
    },
    Op::Write {
        path: "/A/bar",
        off: None,
        len: 6000,
    },
    Op::Write {
        path: "/B/bar",
        off: None,
        len: 100,
    },
    Op::Write {
        path: "/A/foo",
        off: Some(4000),
        len: 300,
    },
    Op::Write {
        path: "/A/foo",
        off: Some(0),
        len: 4096,
    },
    Op::Write {
        path: "/A/bar",
        off: Some(50),
        len: 100,
    },
    Op::Write {
        path: "/B/foo",
        off: Some(5000),
        len: 2000,
    },
    Op::Write {
        path: "/B/bar",
        off: Some(8192),
        len: 1000,
    },
    Op::DsyncWrite {
        path: "/A/foo",
        off: Some(8192),
        len: 4096,
    },
    Op::DsyncWrite {
        path: "/B/bar",
        off: None,
        len: 700,
    },
    Op::NowaitDsync {
        path: "/B/foo",
        writes: &[(12_288, 4096)],
    },
    Op::NowaitDsync {
        path: "/A/foo",
        writes: &[(10_000, 4096)],
    },
    // Three tickets in flight at once: fill a hole, overwrite, extend.
    Op::NowaitDsync {
        path: "/B/foo",
        writes: &[(4096, 4096), (0, 4096), (16_384, 4096)],
    },
    Op::Truncate {
        path: "/A/foo",
        size: 3000,
    },
    Op::Truncate {
        path: "/A/bar",
        size: 9000,
    },
    Op::Truncate {
        path: "/B/foo",
        size: 5000,
    },
    Op::Truncate {
        path: "/B/foo",
        size: 0,
    },
    Op::Rename("/A/foo", "/A/qux"),
    Op::Rename("/A/bar", "/B/baz"),
    Op::Rename("/A/foo", "/B/foo"),
    Op::Rename("/A/C", "/B/D"),
    Op::Rename("/B", "/A/C"),
    Op::Rename("/A/C", "/B/C"),
    Op::Unlink("/A/foo"),
    Op::Unlink("/B/bar"),
    Op::Rmdir("/A/C"),
    Op::Rmdir("/B/C"),
];

/// One operation and what follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Step {
    /// Index into [`CATALOGUE`].
    pub op: usize,
    /// The persistence operation after it.
    pub persist: Persist,
}

impl Step {
    /// The catalogue operation.
    pub fn operation(&self) -> &'static Op {
        &CATALOGUE[self.op % CATALOGUE.len()]
    }
}

/// A sequence of steps run on the starting volume.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Workload {
    /// The steps, in order.
    pub steps: Vec<Step>,
}

/// Steps of one length: every operation with every persistence choice.
pub const STEP_CHOICES: usize = CATALOGUE.len() * 4;

impl Workload {
    /// Number of workloads of length `len` (`STEP_CHOICES ^ len`).
    pub fn space(len: u32) -> u64 {
        (STEP_CHOICES as u64).pow(len)
    }

    /// Workload number `index` (in `0 .. space(len)`) of length `len`.
    pub fn nth(len: u32, mut index: u64) -> Workload {
        let mut steps = Vec::with_capacity(len as usize);
        for _ in 0..len {
            let c = (index % STEP_CHOICES as u64) as usize;
            index /= STEP_CHOICES as u64;
            steps.push(Step {
                op: c / 4,
                persist: Persist::ALL[c % 4],
            });
        }
        steps.reverse();
        Workload { steps }
    }

    /// `count` distinct workloads of length `len` drawn with `seed` (all of them if the space
    /// is smaller), in a stable order.
    pub fn sample(len: u32, count: usize, seed: u64) -> Vec<Workload> {
        let space = Workload::space(len);
        if count as u64 >= space {
            return (0..space).map(|i| Workload::nth(len, i)).collect();
        }
        let mut rng = Rng::new(seed);
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::with_capacity(count);
        while out.len() < count {
            let i = rng.below(space);
            if seen.insert(i) {
                out.push(Workload::nth(len, i));
            }
        }
        out
    }

    /// A workload decoded from arbitrary bytes (fuzzing): two bytes per step, at most `max`
    /// steps.
    pub fn from_bytes(bytes: &[u8], max: usize) -> Workload {
        let steps = bytes
            .chunks_exact(2)
            .take(max)
            .map(|c| Step {
                op: usize::from(c[0]) % CATALOGUE.len(),
                persist: Persist::ALL[usize::from(c[1]) % 4],
            })
            .collect();
        Workload { steps }
    }

    /// The fixed mixed workload of the CI power-cut and fault runs: every kind of operation
    /// and of persistence, `NOWAIT` tickets in flight, a checkpoint in the middle.
    pub fn mixed() -> Workload {
        let p = |op: usize, persist: Persist| Step { op, persist };
        use Persist::*;
        Workload {
            steps: vec![
                p(3, None),       // mkdir /B/C
                p(1, Fsync),      // create /B/C/baz
                p(4, None),       // append /A/foo
                p(8, Fdatasync),  // overwrite /A/foo across a block boundary
                p(17, None),      // three NOWAIT|DSYNC tickets on /B/foo
                p(6, Fsync),      // /A/bar inline → extents
                p(23, SyncAll),   // rename /A/bar → /B/baz, checkpoint
                p(11, Fsync),     // write into the hole of /B/foo
                p(18, None),      // truncate /A/foo (shrink: frees blocks)
                p(14, None),      // DSYNC append to /B/bar
                p(2, None),       // mkdir /A/C
                p(24, Fsync),     // rename /A/foo over /B/foo (replacing)
                p(25, Fdatasync), // rename /A/C → /B/D (directory)
                p(29, Fsync),     // unlink /B/bar
            ],
        }
    }

    /// The spec string, e.g. `"3.0,1.1"`.
    pub fn spec(&self) -> String {
        self.steps
            .iter()
            .map(|s| format!("{}.{}", s.op, s.persist.index()))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Parse a spec string (`op.persist` pairs separated by commas).
    pub fn parse(spec: &str) -> Result<Workload, String> {
        let mut steps = Vec::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (op, persist) = part
                .split_once('.')
                .ok_or_else(|| format!("step {part:?}: expected op.persist"))?;
            let op: usize = op
                .parse()
                .map_err(|_| format!("step {part:?}: bad op index"))?;
            let persist: usize = persist
                .parse()
                .map_err(|_| format!("step {part:?}: bad persist digit"))?;
            if op >= CATALOGUE.len() || persist >= 4 {
                return Err(format!(
                    "step {part:?}: op must be < {}, persist < 4",
                    CATALOGUE.len()
                ));
            }
            steps.push(Step {
                op,
                persist: Persist::ALL[persist],
            });
        }
        Ok(Workload { steps })
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.steps.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{} + {}", s.operation(), s.persist)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_round_trip_and_nth_covers_the_space() {
        let w = Workload::mixed();
        assert_eq!(Workload::parse(&w.spec()).unwrap(), w);
        let all: std::collections::HashSet<_> = (0..Workload::space(1))
            .map(|i| Workload::nth(1, i))
            .collect();
        assert_eq!(all.len(), STEP_CHOICES);
        let s = Workload::sample(2, 100, 5);
        let set: std::collections::HashSet<_> = s.iter().collect();
        assert_eq!(set.len(), 100);
        assert_eq!(Workload::nth(2, 1).spec(), "0.0,0.1");
        assert!(Workload::parse("99.1").is_err());
    }
}
