//! The crash device: records every write a workload sends to the device, then rebuilds the
//! images a power cut could leave, CrashMonkey-style.
//!
//! # Recording
//!
//! [`CrashRecorder`] wraps any [`BlockDevice`] and appends to a shared [`EventLog`]: each
//! write (with a copy of its bytes and its FUA flag), flush and discard when it is accepted,
//! and each completion. The harness adds an [`Event::Ack`] each time the filesystem reports a
//! sync point to the caller, so the log also says what the caller was promised, and when.
//! Tags are replaced by the recorder's own (and restored on completion), so the log never
//! depends on how the filesystem numbers its requests.
//!
//! # Crash points and crash states
//!
//! [`for_each_crash_point`] replays the log over the starting image with the durability rules
//! of `src/device/mod.rs`: a completed write is durable if it was FUA (on a device that honours
//! FUA) or the device has no volatile cache, or once a flush *submitted after it completed*
//! completes. At every barrier — just before a flush or a FUA write completes — and at the end
//! of the log it stops at a [`CrashPoint`]: the durable image, every write not yet durable (in
//! flight or completed and unflushed, each with the sectors no later durable write superseded)
//! and the number of acknowledgements so far. A crash state is the durable image plus any
//! subset of those writes ([`CrashPoint::states`]: every subset up to
//! [`StateBudget::exhaustive_max`] writes, else seeded samples), optionally with one 512-byte
//! sector of one kept write torn: its old contents or garbage ([`Tear`]). Crash states inside
//! the interval between two barriers are subsets of the next barrier's, so stopping at
//! barriers loses nothing.
//!
//! Images are compared by a [`Fingerprint`]: the XOR of a hash of every sector, updated per
//! written sector, so identical states reached in different ways are checked once.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use bonsaifs::device::{BlockDevice, Busy, Command, Completion, Geometry, IoError, Request, Tag};

use crate::rng::{mix, Rng};

/// Sector size the crash states are built with (the harness devices use 512-byte sectors).
pub const SECTOR: usize = 512;

/// One thing that happened on the device or at the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A write was accepted by the device.
    Write {
        /// Request id (the recorder's, in submit order).
        id: u64,
        /// First sector.
        lba: u64,
        /// The bytes written.
        data: Vec<u8>,
        /// Force unit access.
        fua: bool,
    },
    /// A flush was accepted.
    Flush {
        /// Request id.
        id: u64,
    },
    /// A discard was accepted.
    Discard {
        /// Request id.
        id: u64,
        /// First sector.
        lba: u64,
        /// Sectors.
        count: u64,
    },
    /// A write, flush or discard completed.
    Done {
        /// Request id.
        id: u64,
        /// Whether the device reported success.
        ok: bool,
    },
    /// The filesystem acknowledged a sync point to its caller (the harness numbers them).
    Ack,
}

/// The log a [`CrashRecorder`] appends to (shared with the harness, which adds acks).
#[derive(Debug, Default)]
pub struct EventLog {
    /// Everything, in order.
    pub events: Vec<Event>,
    /// Reads seen (not logged: they change nothing).
    pub reads: u64,
    next_id: u64,
}

impl EventLog {
    /// A new, shareable, empty log.
    pub fn shared() -> Rc<RefCell<EventLog>> {
        Rc::new(RefCell::new(EventLog::default()))
    }

    /// Requests accepted so far (reads included): the id the next one gets. Ids number
    /// requests in submit order from 0, as `FaultInjector` does.
    pub fn requests(&self) -> u64 {
        self.next_id
    }

    /// Number of acknowledgements logged so far.
    pub fn acks(&self) -> usize {
        self.events
            .iter()
            .filter(|e| matches!(e, Event::Ack))
            .count()
    }
}

/// A device wrapper that logs every state-changing request and completion.
pub struct CrashRecorder<D> {
    inner: D,
    log: Rc<RefCell<EventLog>>,
    /// Recorder tag → (caller's tag, request id, logged or not).
    tags: HashMap<Tag, (Tag, u64, bool)>,
    next_tag: Tag,
}

impl<D> CrashRecorder<D> {
    /// Wrap `inner`, logging into `log`.
    pub fn new(inner: D, log: Rc<RefCell<EventLog>>) -> Self {
        CrashRecorder {
            inner,
            log,
            tags: HashMap::new(),
            next_tag: 0,
        }
    }

    /// The wrapped device.
    pub fn inner(&self) -> &D {
        &self.inner
    }

    /// The wrapped device, mutably.
    pub fn inner_mut(&mut self) -> &mut D {
        &mut self.inner
    }

    /// Unwrap.
    pub fn into_inner(self) -> D {
        self.inner
    }
}

impl<'b, D: BlockDevice<'b>> BlockDevice<'b> for CrashRecorder<D> {
    fn geometry(&self) -> Geometry {
        self.inner.geometry()
    }

    fn submit(&mut self, req: Request<'b>) -> Result<(), Busy<'b>> {
        let orig = req.tag;
        let mut tag = self.next_tag;
        while self.tags.contains_key(&tag) {
            tag = tag.wrapping_add(1);
        }
        self.next_tag = tag.wrapping_add(1);
        let id = self.log.borrow().next_id;
        let event = match &req.command {
            Command::Write { lba, buf, fua } => Some(Event::Write {
                id,
                lba: *lba,
                data: buf.to_vec(),
                fua: *fua,
            }),
            Command::Flush => Some(Event::Flush { id }),
            Command::Discard { lba, count } => Some(Event::Discard {
                id,
                lba: *lba,
                count: *count,
            }),
            Command::Read { .. } => None,
        };
        let logged = event.is_some();
        match self.inner.submit(Request {
            tag,
            command: req.command,
        }) {
            Ok(()) => {
                let mut log = self.log.borrow_mut();
                log.next_id += 1;
                match event {
                    Some(e) => log.events.push(e),
                    None => log.reads += 1,
                }
                self.tags.insert(tag, (orig, id, logged));
                Ok(())
            }
            Err(Busy(mut r)) => {
                r.tag = orig;
                Err(Busy(r))
            }
        }
    }

    fn poll(&mut self) -> Option<Completion<'b>> {
        let mut c = self.inner.poll()?;
        if let Some((orig, id, logged)) = self.tags.remove(&c.tag) {
            c.tag = orig;
            if logged {
                self.log.borrow_mut().events.push(Event::Done {
                    id,
                    ok: c.result.is_ok(),
                });
            }
        }
        Some(c)
    }

    fn in_flight(&self) -> usize {
        self.inner.in_flight()
    }

    /// Passed through; a read the device carried out counts as a request.
    fn read_now(&mut self, lba: u64, buf: &mut [u8]) -> Option<Result<(), IoError>> {
        let r = self.inner.read_now(lba, buf)?;
        let mut log = self.log.borrow_mut();
        log.next_id += 1;
        log.reads += 1;
        Some(r)
    }

    /// Passed through; a write the device carried out is logged as accepted and completed
    /// at once.
    fn write_now(&mut self, lba: u64, buf: &[u8]) -> Option<Result<(), IoError>> {
        let r = self.inner.write_now(lba, buf)?;
        let mut log = self.log.borrow_mut();
        let id = log.next_id;
        log.next_id += 1;
        log.events.push(Event::Write {
            id,
            lba,
            data: buf.to_vec(),
            fua: false,
        });
        log.events.push(Event::Done { id, ok: r.is_ok() });
        Some(r)
    }
}

/// The durability rules of the recorded device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// Writes are acknowledged before they are durable.
    pub volatile_cache: bool,
    /// FUA writes are durable at completion.
    pub fua: bool,
}

impl Rules {
    /// The rules of a device with this geometry.
    pub fn of(geo: &Geometry) -> Self {
        Rules {
            volatile_cache: geo.volatile_cache,
            fua: geo.fua,
        }
    }
}

/// A 64-bit fingerprint of a whole image (XOR of per-sector hashes).
pub type Fingerprint = u64;

/// Hash of sector `index` holding `bytes`.
pub fn sector_hash(index: u64, bytes: &[u8]) -> u64 {
    let mut h = mix(index ^ 0xA076_1D64_78BD_642F);
    for w in bytes.chunks(8) {
        let mut b = [0u8; 8];
        b[..w.len()].copy_from_slice(w);
        h = (h ^ u64::from_le_bytes(b))
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .rotate_left(29);
    }
    mix(h)
}

/// Fingerprint of a whole image.
pub fn fingerprint(image: &[u8]) -> Fingerprint {
    image
        .chunks(SECTOR)
        .enumerate()
        .fold(0, |acc, (i, s)| acc ^ sector_hash(i as u64, s))
}

/// A write that is not durable at a crash point.
#[derive(Debug, Clone)]
pub struct Pending<'a> {
    /// Request id.
    pub id: u64,
    /// First sector.
    pub lba: u64,
    /// Its bytes.
    pub data: &'a [u8],
    /// Per sector: still able to reach the media (no later durable write superseded it).
    pub live: Vec<bool>,
    /// Completed (true) or still in flight (false).
    pub completed: bool,
}

/// One instant at which the power may fail.
#[derive(Debug)]
pub struct CrashPoint<'a> {
    /// Position in the event log (events before it have happened).
    pub at: usize,
    /// What is on stable media for sure.
    pub durable: &'a [u8],
    /// Its fingerprint.
    pub durable_fp: Fingerprint,
    /// Writes that may or may not have reached the media, in submit order.
    pub pending: &'a [Pending<'a>],
    /// Acknowledgements the caller had received.
    pub acks: usize,
}

/// How many crash states to take per crash point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateBudget {
    /// Enumerate every subset when at most this many writes are pending (12 → 4096 states).
    pub exhaustive_max: usize,
    /// Otherwise, this many seeded samples (the empty and the full subset always among them).
    pub samples: usize,
    /// Extra states per crash point with one sector of one kept write torn.
    pub torn: usize,
    /// Seed of the sampling.
    pub seed: u64,
}

impl Default for StateBudget {
    /// The budget: exhaustive up to 12 writes, else 1000 samples, no torn sectors.
    fn default() -> Self {
        StateBudget {
            exhaustive_max: 12,
            samples: 1000,
            torn: 0,
            seed: 1,
        }
    }
}

/// How a torn sector reads after the crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tear {
    /// The sector kept its contents from before the write.
    Old,
    /// The sector holds garbage (seeded).
    Garbage(u64),
}

/// One crash state: which pending writes reached the media, and an optional torn sector.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CrashState {
    /// `kept[i]`: pending write `i` reached the media.
    pub kept: Vec<bool>,
    /// `(pending index, sector within the write, how)`: one torn sector of a kept write.
    pub tear: Option<(usize, usize, Tear)>,
}

impl CrashState {
    /// A short description: the kept writes as a bit string, and the tear.
    pub fn describe(&self) -> String {
        let bits: String = self
            .kept
            .iter()
            .map(|&k| if k { '1' } else { '0' })
            .collect();
        match self.tear {
            None => format!("kept [{bits}]"),
            Some((w, s, t)) => format!("kept [{bits}] torn write {w} sector {s} {t:?}"),
        }
    }
}

impl CrashPoint<'_> {
    /// The crash states to check at this point, within `budget`.
    pub fn states(&self, budget: &StateBudget) -> Vec<CrashState> {
        let n = self.pending.len();
        let mut out = Vec::new();
        let mut rng = Rng::new(budget.seed ^ mix(self.at as u64));
        if n <= budget.exhaustive_max.min(20) {
            for mask in 0..(1u64 << n) {
                out.push(CrashState {
                    kept: (0..n).map(|i| mask & (1 << i) != 0).collect(),
                    tear: None,
                });
            }
        } else {
            let mut seen = HashSet::new();
            for full in [false, true] {
                let s = CrashState {
                    kept: vec![full; n],
                    tear: None,
                };
                seen.insert(s.kept.clone());
                out.push(s);
            }
            // Samples of three shapes: uniform subsets, prefixes (submit order), and the full
            // set minus a few writes; the attempts are bounded so a tiny space ends.
            let mut tries = 0;
            while out.len() < budget.samples.max(2) && tries < budget.samples * 20 {
                tries += 1;
                let kept: Vec<bool> = match tries % 3 {
                    0 => (0..n).map(|_| rng.below(2) == 1).collect(),
                    1 => {
                        let cut = rng.below(n as u64 + 1) as usize;
                        (0..n).map(|i| i < cut).collect()
                    }
                    _ => {
                        let mut k = vec![true; n];
                        for _ in 0..=rng.below(3) {
                            k[rng.below(n as u64) as usize] = false;
                        }
                        k
                    }
                };
                if seen.insert(kept.clone()) {
                    out.push(CrashState { kept, tear: None });
                }
            }
        }
        // Torn variants: a kept write of the full set or of a random subset, one live sector
        // of it old or garbage.
        let with_sectors: Vec<usize> = (0..n)
            .filter(|&i| self.pending[i].live.iter().any(|&l| l))
            .collect();
        if !with_sectors.is_empty() {
            for t in 0..budget.torn {
                let w = with_sectors[rng.below(with_sectors.len() as u64) as usize];
                let live: Vec<usize> = (0..self.pending[w].live.len())
                    .filter(|&s| self.pending[w].live[s])
                    .collect();
                let s = live[rng.below(live.len() as u64) as usize];
                let mut kept: Vec<bool> = if t % 2 == 0 {
                    vec![true; n]
                } else {
                    (0..n).map(|_| rng.below(2) == 1).collect()
                };
                kept[w] = true;
                let tear = if rng.below(2) == 0 {
                    Tear::Old
                } else {
                    Tear::Garbage(rng.next_u64())
                };
                out.push(CrashState {
                    kept,
                    tear: Some((w, s, tear)),
                });
            }
        }
        out
    }

    /// The sectors a crash state changes relative to the durable image, in order: `(sector,
    /// new bytes)` (later entries win).
    fn writes_of<'s>(&'s self, st: &'s CrashState) -> impl Iterator<Item = (u64, SectorBytes<'s>)> {
        self.pending
            .iter()
            .enumerate()
            .filter(move |(i, _)| st.kept.get(*i).copied().unwrap_or(false))
            .flat_map(move |(i, p)| {
                p.data
                    .chunks(SECTOR)
                    .enumerate()
                    .filter(move |(s, _)| p.live.get(*s).copied().unwrap_or(false))
                    .filter_map(move |(s, bytes)| match st.tear {
                        Some((w, ts, Tear::Old)) if w == i && ts == s => None,
                        Some((w, ts, Tear::Garbage(seed))) if w == i && ts == s => {
                            Some((p.lba + s as u64, SectorBytes::Garbage(seed)))
                        }
                        _ => Some((p.lba + s as u64, SectorBytes::Data(bytes))),
                    })
            })
    }

    /// The fingerprint of a crash state's image, without building it.
    pub fn state_fingerprint(&self, st: &CrashState) -> Fingerprint {
        let mut last: HashMap<u64, SectorBytes<'_>> = HashMap::new();
        for (sector, bytes) in self.writes_of(st) {
            last.insert(sector, bytes);
        }
        let mut fp = self.durable_fp;
        let mut buf = [0u8; SECTOR];
        for (sector, bytes) in last {
            let start = sector as usize * SECTOR;
            let Some(old) = self.durable.get(start..start + SECTOR) else {
                continue;
            };
            fp ^= sector_hash(sector, old);
            fp ^= sector_hash(sector, bytes.get(&mut buf));
        }
        fp
    }

    /// Build a crash state's image into `out`.
    pub fn build(&self, st: &CrashState, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(self.durable);
        let mut buf = [0u8; SECTOR];
        for (sector, bytes) in self.writes_of(st) {
            let start = sector as usize * SECTOR;
            if let Some(dst) = out.get_mut(start..start + SECTOR) {
                dst.copy_from_slice(bytes.get(&mut buf));
            }
        }
    }
}

/// A sector's new contents in a crash state.
#[derive(Debug, Clone, Copy)]
enum SectorBytes<'a> {
    Data(&'a [u8]),
    Garbage(u64),
}

impl<'a> SectorBytes<'a> {
    fn get<'s>(&self, buf: &'s mut [u8; SECTOR]) -> &'s [u8]
    where
        'a: 's,
    {
        match *self {
            SectorBytes::Data(d) => d,
            SectorBytes::Garbage(seed) => {
                let mut r = Rng::new(seed);
                for b in buf.iter_mut() {
                    *b = r.next_u64() as u8;
                }
                buf
            }
        }
    }
}

/// Copy `data` into `image` at sector `lba`, sector by sector where `live` allows; keeps the
/// fingerprint `fp` up to date.
fn persist(image: &mut [u8], fp: &mut Fingerprint, lba: u64, data: &[u8], live: &[bool]) {
    for (s, bytes) in data.chunks(SECTOR).enumerate() {
        if !live.get(s).copied().unwrap_or(true) {
            continue;
        }
        let sector = lba + s as u64;
        let start = sector as usize * SECTOR;
        if let Some(dst) = image.get_mut(start..start + bytes.len()) {
            *fp ^= sector_hash(sector, dst);
            dst.copy_from_slice(bytes);
            *fp ^= sector_hash(sector, dst);
        }
    }
}

/// Mark sectors `lba .. lba + count` of every pending write dead (a later durable write or
/// discard covers them).
fn supersede(pending: &mut [Pending<'_>], lba: u64, count: u64) {
    for p in pending.iter_mut() {
        for (s, live) in p.live.iter_mut().enumerate() {
            let sector = p.lba + s as u64;
            if sector >= lba && sector < lba + count {
                *live = false;
            }
        }
    }
}

/// The durable image after the whole log (what a power cut at the very end, with nothing
/// unflushed kept, leaves).
pub fn durable_after(base: &[u8], rules: Rules, events: &[Event]) -> Vec<u8> {
    let mut out = Vec::new();
    for_each_crash_point(base, fingerprint(base), rules, events, |p| {
        if p.at == events.len() {
            out = p.durable.to_vec();
        }
    });
    out
}

/// Replay `events` over `base` (whose fingerprint is `base_fp`) and call `f` at every crash
/// point: before each flush or FUA write completes, and at the end.
pub fn for_each_crash_point(
    base: &[u8],
    base_fp: Fingerprint,
    rules: Rules,
    events: &[Event],
    mut f: impl FnMut(&CrashPoint<'_>),
) {
    let mut durable = base.to_vec();
    let mut fp = base_fp;
    let mut pending: Vec<Pending<'_>> = Vec::new();
    // Flush id → ids of the writes completed when it was submitted.
    let mut flushes: HashMap<u64, Vec<u64>> = HashMap::new();
    let mut discards: HashMap<u64, (u64, u64)> = HashMap::new();
    let mut fua_writes: HashSet<u64> = HashSet::new();
    let mut acks = 0;
    for (at, e) in events.iter().enumerate() {
        match e {
            Event::Write { id, lba, data, fua } => {
                if *fua && rules.fua {
                    fua_writes.insert(*id);
                }
                pending.push(Pending {
                    id: *id,
                    lba: *lba,
                    data,
                    live: vec![true; data.len().div_ceil(SECTOR)],
                    completed: false,
                });
            }
            Event::Flush { id } => {
                let covered = pending
                    .iter()
                    .filter(|p| p.completed)
                    .map(|p| p.id)
                    .collect();
                flushes.insert(*id, covered);
            }
            Event::Discard { id, lba, count } => {
                discards.insert(*id, (*lba, *count));
            }
            Event::Ack => acks += 1,
            Event::Done { id, ok } => {
                let barrier = flushes.contains_key(id) || fua_writes.contains(id);
                if barrier && *ok {
                    f(&CrashPoint {
                        at,
                        durable: &durable,
                        durable_fp: fp,
                        pending: &pending,
                        acks,
                    });
                }
                if let Some(i) = pending.iter().position(|p| p.id == *id) {
                    if !*ok {
                        // A failed write may have reached the media or not: it stays
                        // pending (in flight) for good.
                        continue;
                    }
                    if fua_writes.contains(id) || !rules.volatile_cache {
                        let p = pending.remove(i);
                        persist(&mut durable, &mut fp, p.lba, p.data, &p.live);
                        let count = p.live.len() as u64;
                        supersede(&mut pending, p.lba, count);
                    } else if let Some(p) = pending.get_mut(i) {
                        p.completed = true;
                    }
                } else if let Some(covered) = flushes.remove(id) {
                    if *ok {
                        // In completion order is submit order here: the harness applies kept
                        // writes in the order they were accepted.
                        let mut keep = Vec::new();
                        for p in std::mem::take(&mut pending) {
                            if covered.contains(&p.id) {
                                persist(&mut durable, &mut fp, p.lba, p.data, &p.live);
                                let count = p.live.len() as u64;
                                supersede(&mut keep, p.lba, count);
                            } else {
                                keep.push(p);
                            }
                        }
                        pending = keep;
                    }
                } else if let Some((lba, count)) = discards.remove(id) {
                    if *ok {
                        let start = lba as usize * SECTOR;
                        let end = (start + count as usize * SECTOR).min(durable.len());
                        if let Some(dst) = durable.get_mut(start..end) {
                            for (s, chunk) in dst.chunks_mut(SECTOR).enumerate() {
                                let sector = lba + s as u64;
                                fp ^= sector_hash(sector, chunk);
                                chunk.fill(0);
                                fp ^= sector_hash(sector, chunk);
                            }
                        }
                        supersede(&mut pending, lba, count);
                    }
                }
            }
        }
    }
    f(&CrashPoint {
        at: events.len(),
        durable: &durable,
        durable_fp: fp,
        pending: &pending,
        acks,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(id: u64, lba: u64, byte: u8, fua: bool) -> Event {
        Event::Write {
            id,
            lba,
            data: vec![byte; SECTOR],
            fua,
        }
    }

    #[test]
    fn flush_covers_only_writes_completed_before_it() {
        let base = vec![0u8; 8 * SECTOR];
        let rules = Rules {
            volatile_cache: true,
            fua: true,
        };
        let ev = vec![
            w(0, 1, 1, false),
            Event::Done { id: 0, ok: true },
            w(1, 2, 2, false),
            Event::Flush { id: 2 },
            Event::Done { id: 1, ok: true },
            Event::Done { id: 2, ok: true },
            Event::Ack,
            w(3, 3, 3, true),
            Event::Done { id: 3, ok: true },
        ];
        let mut points = Vec::new();
        for_each_crash_point(&base, fingerprint(&base), rules, &ev, |p| {
            points.push((
                p.at,
                p.pending.iter().map(|p| p.id).collect::<Vec<_>>(),
                p.durable[SECTOR],
                p.acks,
            ));
        });
        // Before the flush completes: both writes pending. Before the FUA write completes:
        // write 1 (completed after the flush was submitted) and the FUA write pending.
        assert_eq!(
            points,
            vec![
                (5, vec![0, 1], 0, 0),
                (8, vec![1, 3], 1, 1),
                (9, vec![1], 1, 1)
            ]
        );
        let end = durable_after(&base, rules, &ev);
        assert_eq!((end[SECTOR], end[2 * SECTOR], end[3 * SECTOR]), (1, 0, 3));
    }

    #[test]
    fn states_are_exhaustive_then_sampled_and_fingerprints_match_images() {
        let base = vec![0u8; 64 * SECTOR];
        let rules = Rules {
            volatile_cache: true,
            fua: true,
        };
        let mut ev = Vec::new();
        for i in 0..14u64 {
            ev.push(Event::Write {
                id: i,
                lba: i * 2,
                data: vec![i as u8 + 1; 2 * SECTOR],
                fua: false,
            });
        }
        let budget = StateBudget {
            exhaustive_max: 12,
            samples: 300,
            torn: 4,
            seed: 9,
        };
        let mut img = Vec::new();
        for_each_crash_point(&base, fingerprint(&base), rules, &ev[..3], |p| {
            let st = p.states(&budget);
            assert_eq!(st.len(), 8 + 4);
            for s in &st {
                p.build(s, &mut img);
                assert_eq!(
                    p.state_fingerprint(s),
                    fingerprint(&img),
                    "{}",
                    s.describe()
                );
            }
        });
        for_each_crash_point(&base, fingerprint(&base), rules, &ev, |p| {
            let st = p.states(&budget);
            assert_eq!(st.len(), 300 + 4);
            let set: HashSet<_> = st.iter().collect();
            assert_eq!(set.len(), st.len());
        });
    }
}
