//! The oracle: which volumes may a crash leave, given what the caller was promised?
//!
//! A live run records every operation that changed the volume as a [`Concrete`] operation
//! (pinned to inode identities) and every sync point the filesystem acknowledged as an
//! [`AckRec`]. After `k` acknowledgements, DESIGN.md's durability contract allows exactly the
//! volumes obtained from the starting volume by applying, in their original order, a subset of
//! the operations that
//!
//! 1. contains every *required* operation — and each of those still succeeds where it is
//!    applied (so the directory a synced file was created in exists, and so on):
//!    * a completed `sync_all`: every operation before it;
//!    * a completed `fsync(f)`: every operation before it that created, wrote, truncated or
//!      renamed `f`; `fdatasync(f)`: the same without renames;
//!    * a reported `DSYNC` write (blocking, or a `NOWAIT` ticket): that write;
//! 2. otherwise takes each operation whole or not at all (clause 2: all-or-nothing, rename
//!    atomic) — which also means no file holds bytes that no applied write put there.
//!
//! Clause 3 (`fsck` clean) is the checker's. Operations whose call failed with an I/O error
//! are never required: they may have happened or not.
//!
//! [`Promise::Api`] is stronger, as `Fs::fsync`'s documentation promises: *every* change
//! before any acknowledged sync point is durable (the journal commits in order). The checker
//! holds the filesystem to it and, when a volume misses it, asks [`Promise::Contract`] too to
//! say which promise was broken. Volumes that are allowed but are not the result of a prefix of
//! the operations (a later operation durable, an earlier one not) are counted as
//! [`Verdict::ok_out_of_order`]: legal, but worth knowing.

use std::cell::RefCell;
use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};

use crate::model::{Concrete, Ino, Model, Tree};
use crate::pattern;

/// What one acknowledgement promised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckKind {
    /// `sync_all` completed.
    All,
    /// `fsync` (`names: true`) or `fdatasync` of file `ino` completed.
    File {
        /// The file.
        ino: Ino,
        /// Whether its names (renames) are covered too.
        names: bool,
    },
    /// The `DSYNC` write recorded as operation `op` was reported.
    Write {
        /// Index into the run's operations.
        op: usize,
    },
}

/// One acknowledgement: what it promised and how many operations had been recorded before it
/// (everything it covers under [`Promise::Api`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckRec {
    /// The promise.
    pub kind: AckKind,
    /// Operations `0 .. upto` precede it.
    pub upto: usize,
}

/// An operation of the run and whether it certainly happened (in memory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// The operation.
    pub op: Concrete,
    /// False when its call failed with an I/O error: it may have happened or not.
    pub certain: bool,
}

/// Everything the oracle needs from a live run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunRecord {
    /// Operations that changed (or may have changed) the volume, in order.
    pub ops: Vec<Recorded>,
    /// Acknowledgements, in the order the caller received them.
    pub acks: Vec<AckRec>,
}

/// Which promise to check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Promise {
    /// DESIGN.md's durability contract (see the module docs).
    Contract,
    /// `Fs::fsync`'s documentation: every sync point makes every earlier change durable.
    Api,
}

/// Why a volume is not allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Broken {
    /// Both promises are broken and some subset of the operations (without the required ones)
    /// explains the volume: acknowledged data or operations were lost.
    LostDurable(String),
    /// A file holds bytes no write to any file that had its path ever put there: stale,
    /// foreign or garbage data.
    ForeignData(String),
    /// No subset of whole operations explains the volume (an operation is half there).
    NotAtomic(String),
    /// The contract holds but the stronger API promise does not (an earlier change lost while
    /// a later acknowledged one survived).
    ApiOnly(String),
    /// Too many unsynced operations to enumerate; the volume matched no prefix.
    Unverified(String),
}

impl Broken {
    /// Short name of the kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Broken::LostDurable(_) => "lost-durable",
            Broken::ForeignData(_) => "foreign-data",
            Broken::NotAtomic(_) => "not-atomic",
            Broken::ApiOnly(_) => "api-promise",
            Broken::Unverified(_) => "unverified",
        }
    }

    /// The explanation.
    pub fn detail(&self) -> &str {
        match self {
            Broken::LostDurable(s)
            | Broken::ForeignData(s)
            | Broken::NotAtomic(s)
            | Broken::ApiOnly(s)
            | Broken::Unverified(s) => s,
        }
    }
}

/// A volume the oracle accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Verdict {
    /// Allowed, but not the result of any prefix of the operations.
    pub ok_out_of_order: bool,
}

/// More free (unrequired) operations than this are not enumerated (2^12 subsets).
pub const MAX_FREE: usize = 12;

/// The allowed volumes for one number of acknowledgements, as tree hashes.
#[derive(Debug, Default)]
struct Allowed {
    /// Every subset with the required operations (computed only when a volume is not a
    /// prefix); `None` inside: too many free operations to enumerate.
    api: std::cell::OnceCell<Option<HashSet<u64>>>,
    prefix: HashSet<u64>,
}

/// The oracle of one live run.
#[derive(Debug)]
pub struct Oracle {
    base: Model,
    record: RunRecord,
    cache: RefCell<HashMap<usize, std::rc::Rc<Allowed>>>,
    /// Path → every file inode that was ever at that path (for the foreign-data diagnosis).
    owners: HashMap<String, HashSet<Ino>>,
    /// Inode → its writes `(off, len, uid)`, the base's included.
    writes: HashMap<Ino, Vec<(u64, usize, u32)>>,
}

fn tree_hash(t: &Tree) -> u64 {
    let mut h = DefaultHasher::new();
    t.hash(&mut h);
    h.finish()
}

impl Oracle {
    /// The oracle of a run that started from `base` (whose files were written by
    /// `base_writes`: inode → `(off, len, uid)`).
    pub fn new(
        base: &Model,
        base_writes: &HashMap<Ino, Vec<(u64, usize, u32)>>,
        record: RunRecord,
    ) -> Self {
        let mut owners: HashMap<String, HashSet<Ino>> = HashMap::new();
        let mut m = base.clone();
        let mut note = |m: &Model| {
            for (p, ino) in m.paths() {
                owners.entry(p).or_default().insert(ino);
            }
        };
        note(&m);
        for r in &record.ops {
            let _ = m.apply(&r.op);
            note(&m);
        }
        // Renames replayed on other subsets can put a file at any path a rename names; the
        // candidates above come from the live order only, which is enough for a diagnosis.
        let mut writes = base_writes.clone();
        for r in &record.ops {
            if let Concrete::Write { ino, off, len, uid } = r.op {
                writes.entry(ino).or_default().push((off, len, uid));
            }
        }
        Oracle {
            base: base.clone(),
            record,
            cache: RefCell::new(HashMap::new()),
            owners,
            writes,
        }
    }

    /// The run's record.
    pub fn record(&self) -> &RunRecord {
        &self.record
    }

    /// Which operations are required after `acks` acknowledgements, under `promise`.
    pub fn required(&self, acks: usize, promise: Promise) -> Vec<bool> {
        let ops = &self.record.ops;
        let mut req = vec![false; ops.len()];
        for a in self.record.acks.iter().take(acks) {
            let upto = a.upto.min(ops.len());
            match (promise, a.kind) {
                (Promise::Api, _) | (Promise::Contract, AckKind::All) => {
                    req[..upto].iter_mut().for_each(|r| *r = true)
                }
                (Promise::Contract, AckKind::File { ino, names }) => {
                    for (i, r) in ops[..upto].iter().enumerate() {
                        let subject = if names {
                            r.op.name_subject()
                        } else {
                            r.op.data_subject()
                        };
                        if subject == Some(ino) {
                            req[i] = true;
                        }
                    }
                }
                (Promise::Contract, AckKind::Write { op }) => {
                    if let Some(r) = req.get_mut(op) {
                        *r = true;
                    }
                }
            }
        }
        // An operation whose outcome is unknown is never required.
        for (r, op) in req.iter_mut().zip(ops) {
            *r &= op.certain;
        }
        req
    }

    /// Hashes of every volume allowed with these required operations, or `None` when more
    /// than [`MAX_FREE`] operations are free. With `check_required`, a subset in which a
    /// required operation fails is not a volume the promise allows.
    fn allowed_set(&self, req: &[bool], check_required: bool) -> Option<HashSet<u64>> {
        let free = req.iter().filter(|&&r| !r).count();
        if free > MAX_FREE {
            return None;
        }
        let mut out = HashSet::new();
        self.enumerate(0, self.base.clone(), req, check_required, &mut out);
        Some(out)
    }

    /// Depth-first over the operations from `i`: required ones applied, free ones both taken
    /// and skipped (the model is cloned only at those branches).
    fn enumerate(
        &self,
        mut i: usize,
        mut m: Model,
        req: &[bool],
        check_required: bool,
        out: &mut HashSet<u64>,
    ) {
        let ops = &self.record.ops;
        while i < ops.len() {
            if req[i] {
                if m.apply(&ops[i].op).is_err() && check_required {
                    return;
                }
            } else {
                self.enumerate(i + 1, m.clone(), req, check_required, out);
                let _ = m.apply(&ops[i].op);
            }
            i += 1;
        }
        out.insert(tree_hash(&m.tree()));
    }

    fn allowed(&self, acks: usize) -> std::rc::Rc<Allowed> {
        if let Some(a) = self.cache.borrow().get(&acks) {
            return a.clone();
        }
        let req = self.required(acks, Promise::Api);
        // Prefixes at or after the last required operation.
        let first = req.iter().rposition(|&r| r).map_or(0, |i| i + 1);
        let mut prefix = HashSet::new();
        let mut m = self.base.clone();
        for (i, r) in self.record.ops.iter().enumerate() {
            if i >= first {
                prefix.insert(tree_hash(&m.tree()));
            }
            let _ = m.apply(&r.op);
        }
        prefix.insert(tree_hash(&m.tree()));
        let a = std::rc::Rc::new(Allowed {
            api: std::cell::OnceCell::new(),
            prefix,
        });
        self.cache.borrow_mut().insert(acks, a.clone());
        a
    }

    /// Judge a recovered volume after `acks` acknowledgements.
    pub fn check(&self, got: &Tree, acks: usize) -> Result<Verdict, Broken> {
        let h = tree_hash(got);
        let allowed = self.allowed(acks);
        if allowed.prefix.contains(&h) {
            return Ok(Verdict::default());
        }
        let api = allowed
            .api
            .get_or_init(|| self.allowed_set(&self.required(acks, Promise::Api), true));
        match api {
            Some(set) if set.contains(&h) => {
                return Ok(Verdict {
                    ok_out_of_order: true,
                })
            }
            Some(_) => {}
            None => {
                return Err(Broken::Unverified(format!(
                    "{} operations, more than {MAX_FREE} unsynced: matched no prefix",
                    self.record.ops.len()
                )))
            }
        }
        // Diagnose.
        if let Some(foreign) = self.foreign_bytes(got) {
            return Err(Broken::ForeignData(foreign));
        }
        let contract = self.allowed_set(&self.required(acks, Promise::Contract), true);
        if contract.as_ref().is_some_and(|s| s.contains(&h)) {
            return Err(Broken::ApiOnly(format!(
                "an operation before an acknowledged sync point is missing while the contract \
                 holds (acks {acks}); {}",
                self.closest(got, acks)
            )));
        }
        let none_required = vec![false; self.record.ops.len()];
        let any = self.allowed_set(&none_required, false);
        if any.as_ref().is_some_and(|s| s.contains(&h)) {
            return Err(Broken::LostDurable(format!(
                "acknowledged operations are missing (acks {acks}); {}",
                self.closest(got, acks)
            )));
        }
        Err(Broken::NotAtomic(format!(
            "no set of whole operations gives this volume (acks {acks}); {}",
            self.closest(got, acks)
        )))
    }

    /// Judge what the filesystem shows *in memory* at the end of a run (no crash): every
    /// operation that succeeded is there; those that failed with an I/O error may or may not
    /// be. `None` when too many operations are uncertain to enumerate.
    pub fn check_in_memory(&self, got: &Tree) -> Option<Result<(), String>> {
        let req: Vec<bool> = self.record.ops.iter().map(|r| r.certain).collect();
        let set = self.allowed_set(&req, false)?;
        if set.contains(&tree_hash(got)) {
            Some(Ok(()))
        } else {
            let mut m = self.base.clone();
            for r in self.record.ops.iter().filter(|r| r.certain) {
                let _ = m.apply(&r.op);
            }
            Some(Err(format!(
                "the in-memory volume is not the operations that succeeded (plus any of those \
                 that failed with I/O errors): {}",
                describe_diff(&m.tree(), got)
            )))
        }
    }

    /// A file byte that no write to any inode ever at that path explains.
    fn foreign_bytes(&self, got: &Tree) -> Option<String> {
        for (path, data) in got {
            let Some(data) = data else { continue };
            let owners = self.owners.get(path);
            for (off, &b) in data.iter().enumerate() {
                if b == 0 {
                    continue;
                }
                let off = off as u64;
                let explained = owners.into_iter().flatten().any(|ino| {
                    self.writes
                        .get(ino)
                        .into_iter()
                        .flatten()
                        .any(|&(o, l, uid)| {
                            off >= o && off < o + l as u64 && pattern::byte(uid, off) == b
                        })
                });
                if !explained {
                    return Some(format!(
                        "{path} byte {off} = {b:#04x}: written by no write to a file ever named {path}"
                    ));
                }
            }
        }
        None
    }

    /// How the volume differs from the required prefix (the state just after the last
    /// required operation), for the report.
    fn closest(&self, got: &Tree, acks: usize) -> String {
        let req = self.required(acks, Promise::Api);
        let mut m = self.base.clone();
        for (i, r) in self.record.ops.iter().enumerate() {
            if req[i] {
                let _ = m.apply(&r.op);
            }
        }
        describe_diff(&m.tree(), got)
    }
}

/// A short description of how `got` differs from `want`.
pub fn describe_diff(want: &Tree, got: &Tree) -> String {
    let mut parts = Vec::new();
    for (p, w) in want {
        match got.get(p) {
            None => parts.push(format!("{p} missing")),
            Some(g) if g == w => {}
            Some(None) => parts.push(format!("{p} is a directory")),
            Some(Some(g)) => match w {
                None => parts.push(format!("{p} is a file")),
                Some(w) if w.len() != g.len() => {
                    parts.push(format!("{p} size {} (expected {})", g.len(), w.len()))
                }
                Some(w) => {
                    let at = w.iter().zip(g).position(|(a, b)| a != b).unwrap_or(0);
                    parts.push(format!("{p} differs from byte {at}"))
                }
            },
        }
    }
    for p in got.keys().filter(|p| !want.contains_key(*p)) {
        parts.push(format!("{p} unexpected"));
    }
    if parts.is_empty() {
        "same as the required prefix".into()
    } else {
        format!("vs the required prefix: {}", parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (Model, Vec<Recorded>) {
        let mut m = Model::new();
        m.mkdir("/A", 2).unwrap();
        let ops = vec![
            Recorded {
                op: Concrete::Create {
                    parent: 2,
                    name: "f".into(),
                    ino: 3,
                },
                certain: true,
            },
            Recorded {
                op: Concrete::Write {
                    ino: 3,
                    off: 0,
                    len: 10,
                    uid: 1,
                },
                certain: true,
            },
            Recorded {
                op: Concrete::Create {
                    parent: 2,
                    name: "g".into(),
                    ino: 4,
                },
                certain: true,
            },
        ];
        (m, ops)
    }

    #[test]
    fn fsync_requires_the_file_and_its_creation() {
        let (base, ops) = setup();
        let record = RunRecord {
            ops: ops.clone(),
            acks: vec![AckRec {
                kind: AckKind::File {
                    ino: 3,
                    names: true,
                },
                upto: 2,
            }],
        };
        let o = Oracle::new(&base, &HashMap::new(), record);
        let mut m = base.clone();
        // Before the ack anything goes, including nothing.
        assert!(o.check(&m.tree(), 0).is_ok());
        // After it, the empty volume lost the fsync'd file.
        assert!(matches!(o.check(&m.tree(), 1), Err(Broken::LostDurable(_))));
        for r in &ops[..2] {
            m.apply(&r.op).unwrap();
        }
        assert_eq!(o.check(&m.tree(), 1), Ok(Verdict::default()));
        // g present without f: allowed by the contract only if f is there; here f is there.
        let mut only_g = base.clone();
        only_g.apply(&ops[2].op).unwrap();
        assert!(o.check(&only_g.tree(), 0).unwrap().ok_out_of_order);
        // A torn write: half the bytes.
        let mut torn = m.tree();
        if let Some(Some(d)) = torn.get_mut("/A/f") {
            d.truncate(5);
        }
        assert!(matches!(o.check(&torn, 1), Err(Broken::NotAtomic(_))));
        // Foreign bytes.
        let mut foreign = m.tree();
        if let Some(Some(d)) = foreign.get_mut("/A/f") {
            d[3] ^= 0x55;
        }
        assert!(matches!(o.check(&foreign, 1), Err(Broken::ForeignData(_))));
    }

    #[test]
    fn api_promise_is_stronger_than_the_contract() {
        let (base, ops) = setup();
        // fsync of g after everything: the API promise requires f's write too.
        let record = RunRecord {
            ops: ops.clone(),
            acks: vec![AckRec {
                kind: AckKind::File {
                    ino: 4,
                    names: true,
                },
                upto: 3,
            }],
        };
        let o = Oracle::new(&base, &HashMap::new(), record);
        let mut m = base.clone();
        m.apply(&ops[2].op).unwrap();
        assert!(matches!(o.check(&m.tree(), 1), Err(Broken::ApiOnly(_))));
    }
}
