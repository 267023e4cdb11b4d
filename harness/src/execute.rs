//! The live run: a workload executed on bonsaifs over the recorded queued device, in lockstep
//! with the model.
//!
//! Every call's answer is compared with the model's prediction (the exact `Error` variant). An
//! operation that succeeds becomes a [`Concrete`] operation in the [`RunRecord`]; every sync
//! point the filesystem reports to the caller (a completed `fsync` / `fdatasync` / `sync_all`,
//! a `DSYNC` write that returned, a `NOWAIT | DSYNC` ticket reported by `poll` with success)
//! becomes an [`AckRec`] and an [`Event::Ack`] in the device log at that instant.
//!
//! With a fault injected ([`Injection`]), calls may fail with I/O errors: from the first one on
//! the run is *faulted*. A call that fails with `Io` (or `Corrupt`, `CacheFull`, `NoSpace`,
//! which turn the volume read-only part-way) is recorded as uncertain — it may have happened
//! or not — and other failures (`ReadOnly`, ...) as having changed nothing. The model keeps
//! going optimistically (uncertain operations applied), only to name inodes.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use bonsaifs::device::{FaultInjector, FaultPlan, IoError, QueuedRamDisk};
use bonsaifs::fs::{Fd, OpenFlags, Ticket, WriteFlags, WriteStatus};
use bonsaifs::inject::Bugs;
use bonsaifs::Error;

use crate::crash_disk::{CrashRecorder, Event, EventLog, Rules};
use crate::image::{mount_mem_len, queued_config, walk, BaseImage, Budget, HFs};
use crate::model::{Concrete, Ino, Model, Tree};
use crate::oracle::{AckKind, AckRec, Recorded, RunRecord};
use crate::pattern;
use crate::workload::{Op, Persist, Step, Workload, FSYNC_FALLBACK};

/// The device stack of a live run: fault injector over recorder over the queued RAM disk.
pub type LiveDev<'b> = FaultInjector<'b, CrashRecorder<QueuedRamDisk<'b>>>;
/// The filesystem of a live run.
pub type LiveFs<'b> = HFs<'b, LiveDev<'b>>;

/// The queued device's behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceModel {
    /// The device honours FUA (else the filesystem writes and flushes).
    pub fua: bool,
    /// Queue depth.
    pub queue_depth: u16,
    /// Seed of completion order and latency.
    pub seed: u64,
}

impl Default for DeviceModel {
    fn default() -> Self {
        DeviceModel {
            fua: true,
            queue_depth: 32,
            seed: 1,
        }
    }
}

/// A fault injected into the workload's requests (numbered from 0 after the mount).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Injection {
    /// Nothing fails.
    None,
    /// Request `k` fails with a media error; the device works again afterwards.
    FailAt(u64),
    /// Request `n` and every later one never happen (the power fails before request `n`).
    CutFrom(u64),
}

/// How to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunOptions {
    /// The device.
    pub device: DeviceModel,
    /// Deliberate bugs switched on after the mount.
    pub bugs: Bugs,
    /// A fault or power cut.
    pub injection: Injection,
    /// Stop at the end of the first step in which a call failed unexpectedly (after a power
    /// cut nothing the program does later reaches the disk, and a dead device only makes
    /// the filesystem wait for completions that come back failed).
    pub stop_on_fault: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            device: DeviceModel::default(),
            bugs: Bugs::empty(),
            injection: Injection::None,
            stop_on_fault: false,
        }
    }
}

/// What a live run did.
#[derive(Debug)]
pub struct LiveRun {
    /// Operations and acknowledgements, for the oracle.
    pub record: RunRecord,
    /// The device log.
    pub events: Vec<Event>,
    /// The device's durability rules.
    pub rules: Rules,
    /// Requests the workload submitted (after the mount, before the final walk).
    pub requests: u64,
    /// Number of the workload's first request (the mount's come before it).
    pub first_request: u64,
    /// Disagreements with the model, lost or repeated tickets, in-memory state wrong: each is
    /// a failure of the filesystem (or of the harness) in a run without faults.
    pub problems: Vec<String>,
    /// Calls that failed where the model predicted otherwise (expected only with faults).
    pub errors: Vec<(String, Error)>,
    /// The model at the end (uncertain operations applied).
    pub model: Model,
    /// What the filesystem showed at the end, before the crash.
    pub live_tree: Result<Tree, String>,
    /// Whether any call failed unexpectedly.
    pub faulted: bool,
    /// The volume had turned read-only by the end (after an I/O error).
    pub read_only_at_end: bool,
    /// The volume had shut down by the end (an I/O error stopped an operation that had
    /// started changing the in-memory state): it must refuse every call.
    pub shut_down_at_end: bool,
    /// The mount failed (nothing ran).
    pub mount_error: Option<Error>,
}

/// Errors after which an operation may be half done (the volume turns read-only).
fn uncertain_error(e: Error) -> bool {
    matches!(
        e,
        Error::Io(_) | Error::Corrupt | Error::CacheFull | Error::NoSpace
    )
}

/// How one call went, compared with the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Succeeded as predicted.
    Done,
    /// Failed as predicted, or failed without effect after a fault.
    NoEffect,
    /// Failed with an I/O-class error where it would have succeeded.
    Uncertain,
    /// Disagreed with the model in a way that stops the run.
    Stop,
}

/// Polls without progress before a ticket counts as lost.
const POLL_LIMIT: u64 = 1_000_000;
/// `WouldBlock` answers (each followed by a poll) before a `NOWAIT` write counts as stuck: on
/// a working device it is accepted after a few.
const WOULD_BLOCK_LIMIT: u64 = 100_000;

struct Exec<'r, 'b> {
    fs: &'r mut LiveFs<'b>,
    log: Rc<RefCell<EventLog>>,
    model: Model,
    record: RunRecord,
    problems: Vec<String>,
    errors: Vec<(String, Error)>,
    faulted: bool,
    uid: u32,
    /// Ticket → index of its operation in the record.
    tickets: HashMap<Ticket, usize>,
    reported: HashSet<Ticket>,
    fake_ino: Ino,
    stop_on_fault: bool,
    /// A fault or power cut is injected.
    injected: bool,
}

impl Exec<'_, '_> {
    fn ack(&mut self, kind: AckKind, upto: usize) {
        self.log.borrow_mut().events.push(Event::Ack);
        self.record.acks.push(AckRec { kind, upto });
    }

    /// Compare a call's answer with the model's prediction.
    fn classify(&mut self, what: &str, live: Result<(), Error>, pred: Result<(), Error>) -> Class {
        match (live, pred) {
            (Ok(()), Ok(())) => Class::Done,
            (Err(a), Err(b)) if a == b => Class::NoEffect,
            (Err(e), p) if uncertain_error(e) => {
                self.faulted = true;
                self.errors.push((what.to_string(), e));
                if p.is_ok() {
                    Class::Uncertain
                } else {
                    Class::NoEffect
                }
            }
            (Err(e), _) if self.faulted => {
                self.errors.push((what.to_string(), e));
                Class::NoEffect
            }
            // A failure the caller has not been told of yet (a queued ticket's write failed;
            // `poll` will report it) turned the volume read-only or shut it down: the call was
            // refused before it did anything.
            (Err(e @ (Error::ReadOnly | Error::ShutDown)), _) if self.injected => {
                self.faulted = true;
                self.errors.push((what.to_string(), e));
                Class::NoEffect
            }
            (live, pred) => {
                if !self.faulted {
                    self.problems.push(format!(
                        "{what}: the filesystem answered {live:?}, the model predicted {pred:?}"
                    ));
                } else {
                    self.errors.push((
                        format!("{what}: model lost track after a fault ({live:?} vs {pred:?})"),
                        live.err().unwrap_or(Error::InvalidArgument),
                    ));
                }
                Class::Stop
            }
        }
    }

    /// Record a concrete operation (and apply it to the model).
    fn push(&mut self, op: Concrete, certain: bool) -> usize {
        let _ = self.model.apply(&op);
        self.record.ops.push(Recorded { op, certain });
        self.record.ops.len() - 1
    }

    fn new_uid(&mut self) -> u32 {
        self.uid += 1;
        self.uid
    }

    fn fake(&mut self) -> Ino {
        self.fake_ino += 1;
        self.fake_ino
    }

    /// Open `path` read-write, compared with the model. `None` when it did not open.
    fn open(&mut self, path: &str) -> Option<(Fd, Ino)> {
        let pred = self.model.open_file(path);
        let live = self.fs.open(path, OpenFlags::READ | OpenFlags::WRITE);
        let c = self.classify(&format!("open {path}"), live.map(|_| ()), pred.map(|_| ()));
        match (c, live, pred) {
            (Class::Done, Ok(fd), Ok(ino)) => {
                if let Ok(st) = self.fs.fstat(fd) {
                    if st.ino != ino && !self.faulted {
                        self.problems
                            .push(format!("{path}: inode {} but the model has {ino}", st.ino));
                    }
                }
                Some((fd, ino))
            }
            (_, Ok(fd), _) => {
                let _ = self.fs.close(fd);
                None
            }
            _ => None,
        }
    }

    fn close(&mut self, fd: Fd, path: &str) {
        if let Err(e) = self.fs.close(fd) {
            self.problems.push(format!("close {path}: {e:?}"));
        }
    }

    /// Handle one `poll` report.
    fn report(&mut self, t: Ticket, r: Result<usize, Error>) {
        let Some(&op) = self.tickets.get(&t) else {
            self.problems
                .push(format!("poll reported unknown ticket {t:?}"));
            return;
        };
        if !self.reported.insert(t) {
            self.problems
                .push(format!("poll reported ticket {t:?} a second time"));
            return;
        }
        match r {
            Ok(_) => self.ack(AckKind::Write { op }, op + 1),
            Err(e) => {
                if !self.faulted && !uncertain_error(e) {
                    self.problems.push(format!("ticket {t:?} failed: {e:?}"));
                }
                self.faulted = true;
                self.errors.push((format!("ticket {t:?}"), e));
            }
        }
    }

    /// Poll once; true if something was reported.
    fn poll_once(&mut self) -> bool {
        match self.fs.poll() {
            Some((t, r)) => {
                self.report(t, r);
                true
            }
            None => false,
        }
    }

    /// Poll until every ticket in `want` is reported (bounded).
    fn wait_tickets(&mut self, want: &[Ticket]) {
        let mut idle = 0u64;
        while want.iter().any(|t| !self.reported.contains(t)) {
            if self.poll_once() {
                idle = 0;
            } else {
                idle += 1;
                if idle > POLL_LIMIT {
                    self.problems.push(format!(
                        "tickets {want:?} not reported after {POLL_LIMIT} polls: {}",
                        self.fs.pipeline_state()
                    ));
                    return;
                }
            }
        }
    }

    fn run_op(&mut self, op: &Op) -> bool {
        match *op {
            Op::Create(path) => {
                let pred = self.model.plan_create(path);
                let live = self.fs.open(
                    path,
                    OpenFlags::READ | OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::EXCL,
                );
                let c = self.classify(
                    &format!("create {path}"),
                    live.map(|_| ()),
                    pred.as_ref().map(|_| ()).map_err(|e| *e),
                );
                let ino = match live {
                    Ok(fd) => {
                        let ino = self.fs.fstat(fd).map(|m| m.ino);
                        self.close(fd, path);
                        ino.ok()
                    }
                    Err(_) => None,
                };
                if let (Class::Done | Class::Uncertain, Ok((parent, name))) = (c, pred) {
                    let ino = ino.unwrap_or_else(|| self.fake());
                    self.push(Concrete::Create { parent, name, ino }, c == Class::Done);
                }
                c != Class::Stop
            }
            Op::Mkdir(path) => {
                let pred = self.model.plan_create(path);
                let live = self.fs.mkdir(path);
                let c = self.classify(
                    &format!("mkdir {path}"),
                    live,
                    pred.as_ref().map(|_| ()).map_err(|e| *e),
                );
                if let (Class::Done | Class::Uncertain, Ok((parent, name))) = (c, pred) {
                    let ino = match self.fs.stat(path) {
                        Ok(m) => m.ino,
                        Err(_) => self.fake(),
                    };
                    self.push(Concrete::Mkdir { parent, name, ino }, c == Class::Done);
                }
                c != Class::Stop
            }
            Op::Write { path, off, len } | Op::DsyncWrite { path, off, len } => {
                let dsync = matches!(op, Op::DsyncWrite { .. });
                let Some((fd, ino)) = self.open(path) else {
                    return self.problems.is_empty() || self.faulted;
                };
                let off = off.unwrap_or_else(|| self.model.size(ino));
                let uid = self.new_uid();
                let data = pattern::fill(uid, off, len);
                let flags = if dsync {
                    WriteFlags::DSYNC
                } else {
                    WriteFlags::empty()
                };
                let live = self.fs.write_at_flags(fd, off, &data, flags);
                let ok = match live {
                    Ok(WriteStatus::Done(n)) if n == len => Ok(()),
                    Ok(other) => {
                        self.problems
                            .push(format!("write {path}: {other:?} for {len} bytes"));
                        Ok(())
                    }
                    Err(e) => Err(e),
                };
                let c = self.classify(&format!("{op}"), ok, Ok(()));
                if matches!(c, Class::Done | Class::Uncertain) {
                    let i = self.push(Concrete::Write { ino, off, len, uid }, c == Class::Done);
                    if dsync && c == Class::Done {
                        self.ack(AckKind::Write { op: i }, i + 1);
                    }
                }
                self.close(fd, path);
                c != Class::Stop
            }
            Op::NowaitDsync { path, writes } => {
                let Some((fd, ino)) = self.open(path) else {
                    return self.problems.is_empty() || self.faulted;
                };
                let mut mine = Vec::new();
                let mut go = true;
                for &(off, len) in writes {
                    let uid = self.new_uid();
                    let data = pattern::fill(uid, off, len);
                    let mut tries = 0u64;
                    let live = loop {
                        match self.fs.write_at_flags(
                            fd,
                            off,
                            &data,
                            WriteFlags::NOWAIT | WriteFlags::DSYNC,
                        ) {
                            Err(Error::WouldBlock) if tries < WOULD_BLOCK_LIMIT => {
                                tries += 1;
                                self.poll_once();
                            }
                            r => break r,
                        }
                    };
                    let c = match live {
                        Ok(WriteStatus::Queued(t)) => {
                            let i = self.push(Concrete::Write { ino, off, len, uid }, true);
                            self.tickets.insert(t, i);
                            mine.push(t);
                            Class::Done
                        }
                        Ok(WriteStatus::Done(n)) => {
                            self.problems
                                .push(format!("NOWAIT write of {len} bytes: Done({n})"));
                            Class::Stop
                        }
                        Err(Error::WouldBlock) if self.injected => {
                            // A dead device: the probe's read fails and restarts for ever
                            // (harness/tests/core_bugs.rs). Nothing was queued.
                            self.faulted = true;
                            self.errors.push((
                                format!("{op} @{off}: WouldBlock for ever"),
                                Error::WouldBlock,
                            ));
                            Class::NoEffect
                        }
                        Err(e) => self.classify(&format!("{op} @{off}"), Err(e), Ok(())),
                    };
                    if c == Class::Uncertain {
                        self.push(Concrete::Write { ino, off, len, uid }, false);
                    }
                    if c == Class::Stop {
                        go = false;
                        break;
                    }
                }
                self.wait_tickets(&mine);
                self.close(fd, path);
                go
            }
            Op::Truncate { path, size } => {
                let Some((fd, ino)) = self.open(path) else {
                    return self.problems.is_empty() || self.faulted;
                };
                let live = self.fs.truncate(fd, size);
                let c = self.classify(&format!("{op}"), live, Ok(()));
                if matches!(c, Class::Done | Class::Uncertain) {
                    self.push(Concrete::Truncate { ino, size }, c == Class::Done);
                }
                self.close(fd, path);
                c != Class::Stop
            }
            Op::Rename(from, to) => {
                let pred = self.model.plan_rename(from, to);
                let live = self.fs.rename(from, to);
                let c = self.classify(
                    &format!("{op}"),
                    live,
                    pred.as_ref().map(|_| ()).map_err(|e| *e),
                );
                if let (Class::Done | Class::Uncertain, Ok(Some(r))) = (c, pred) {
                    self.push(r, c == Class::Done);
                }
                c != Class::Stop
            }
            Op::Unlink(path) | Op::Rmdir(path) => {
                let (pred, live) = if matches!(op, Op::Unlink(_)) {
                    (self.model.plan_unlink(path), self.fs.unlink(path))
                } else {
                    (self.model.plan_rmdir(path), self.fs.rmdir(path))
                };
                let c = self.classify(
                    &format!("{op}"),
                    live,
                    pred.as_ref().map(|_| ()).map_err(|e| *e),
                );
                if let (Class::Done | Class::Uncertain, Ok(r)) = (c, pred) {
                    self.push(r, c == Class::Done);
                }
                c != Class::Stop
            }
        }
    }

    fn run_persist(&mut self, op: &Op, persist: Persist) -> bool {
        let upto = self.record.ops.len();
        match persist {
            Persist::None => true,
            Persist::SyncAll => {
                let r = self.fs.sync_all();
                let c = self.classify("sync_all", r, Ok(()));
                if c == Class::Done {
                    self.ack(AckKind::All, upto);
                }
                c != Class::Stop
            }
            Persist::Fsync | Persist::Fdatasync => {
                let target = op
                    .subject()
                    .into_iter()
                    .chain(FSYNC_FALLBACK)
                    .find(|p| self.model.open_file(p).is_ok());
                let Some(path) = target else {
                    return true;
                };
                let Some((fd, ino)) = self.open(path) else {
                    return self.problems.is_empty() || self.faulted;
                };
                let names = persist == Persist::Fsync;
                let r = if names {
                    self.fs.fsync(fd)
                } else {
                    self.fs.fdatasync(fd)
                };
                let c = self.classify(&format!("{persist} {path}"), r, Ok(()));
                if c == Class::Done {
                    self.ack(AckKind::File { ino, names }, upto);
                }
                self.close(fd, path);
                c != Class::Stop
            }
        }
    }

    fn run_step(&mut self, step: &Step) -> bool {
        let op = step.operation();
        self.run_op(op)
            && !(self.stop_on_fault && self.faulted)
            && self.run_persist(op, step.persist)
    }
}

/// Run `workload` on the base volume with `opts`.
pub fn execute(base: &BaseImage, workload: &Workload, opts: &RunOptions) -> LiveRun {
    let mut mem = vec![0u8; mount_mem_len()];
    let d = &opts.device;
    let q = QueuedRamDisk::from_image(
        queued_config(d.fua, d.queue_depth, d.seed),
        base.image.clone(),
    );
    let log = EventLog::shared();
    let rec = CrashRecorder::new(q, log.clone());
    let dev: LiveDev<'_> = FaultInjector::new(rec, FaultPlan::None, IoError::Media);
    let rules = Rules {
        volatile_cache: true,
        fua: d.fua,
    };
    let mut run = LiveRun {
        record: RunRecord::default(),
        events: Vec::new(),
        rules,
        requests: 0,
        first_request: 0,
        problems: Vec::new(),
        errors: Vec::new(),
        model: base.model.clone(),
        live_tree: Err("not run".into()),
        faulted: false,
        read_only_at_end: false,
        shut_down_at_end: false,
        mount_error: None,
    };
    let mut fs = match LiveFs::mount(dev, &mut mem) {
        Ok(fs) => fs,
        Err(e) => {
            run.mount_error = Some(e);
            run.events = std::mem::take(&mut log.borrow_mut().events);
            return run;
        }
    };
    if !opts.bugs.is_empty() {
        fs.inject_bugs(opts.bugs);
    }
    let start = fs.volume().device().submitted();
    run.first_request = start;
    match opts.injection {
        Injection::None => {}
        Injection::FailAt(k) => fs
            .volume_mut()
            .device_mut()
            .set_plan(FaultPlan::At(start + k)),
        Injection::CutFrom(n) => fs
            .volume_mut()
            .device_mut()
            .set_plan(FaultPlan::From(start + n)),
    }
    let mut ex = Exec {
        fs: &mut fs,
        log: log.clone(),
        model: base.model.clone(),
        record: RunRecord::default(),
        problems: Vec::new(),
        errors: Vec::new(),
        faulted: false,
        uid: 0,
        tickets: HashMap::new(),
        reported: HashSet::new(),
        fake_ino: 1 << 40,
        stop_on_fault: opts.stop_on_fault,
        injected: opts.injection != Injection::None,
    };
    for step in &workload.steps {
        if !ex.run_step(step) || (opts.stop_on_fault && ex.faulted) {
            break;
        }
    }
    // Collect what is still to be reported.
    if !(opts.stop_on_fault && ex.faulted) {
        let outstanding: Vec<Ticket> = ex
            .tickets
            .keys()
            .filter(|t| !ex.reported.contains(t))
            .copied()
            .collect();
        ex.wait_tickets(&outstanding);
    }
    // The workload's requests end here; the walk below only reads.
    let requests = ex.fs.volume().device().submitted() - start;
    let live_tree = walk(ex.fs, &Budget::default()).map_err(|e| e.to_string());
    run.read_only_at_end = ex.fs.volume().is_read_only();
    run.shut_down_at_end = ex.fs.volume().is_shut_down();
    if !ex.faulted && ex.problems.is_empty() {
        match &live_tree {
            Ok(t) if *t == ex.model.tree() => {}
            Ok(t) => ex.problems.push(format!(
                "the in-memory volume differs from the model: {}",
                crate::oracle::describe_diff(&ex.model.tree(), t)
            )),
            Err(e) => ex.problems.push(format!("walking the live volume: {e}")),
        }
    }
    run.record = std::mem::take(&mut ex.record);
    run.problems = std::mem::take(&mut ex.problems);
    run.errors = std::mem::take(&mut ex.errors);
    run.model = std::mem::take(&mut ex.model);
    run.faulted = ex.faulted;
    run.live_tree = live_tree;
    run.requests = requests;
    drop(fs.into_device());
    run.events = std::mem::take(&mut log.borrow_mut().events);
    run
}
