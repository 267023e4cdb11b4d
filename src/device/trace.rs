//! A pass-through [`BlockDevice`] wrapper that counts, and on the host records, every request.
//!
//! # Why it exists
//!
//! The design sets cost targets in device requests ("a 4 KiB `DSYNC` overwrite costs the data
//! block, one log block and one flush"), and the crash tests replay what the filesystem asked
//! of the device. Both need to *see* the request stream without changing it. Wrapping the
//! device rather than instrumenting the filesystem keeps the filesystem code free of test
//! hooks and works with any driver, in firmware as on the host.
//!
//! # What it keeps
//!
//! * [`TraceCounters`], always (no allocation, so also in firmware): requests by kind, sectors
//!   and bytes moved, counted when a request is *accepted* by `submit` (a [`Busy`] answer
//!   counts nothing, since the caller will submit the same request again), and failed
//!   completions, counted when `poll` returns them.
//! * With `std` (or in tests), an optional log of [`TraceEntry`]s: one `Submit` per accepted
//!   request and one `Complete` per completion, numbered in the order they happened. To report
//!   the kind and range of a completion, whose [`Completion`] carries only the tag, the tracer
//!   remembers `(tag, kind, lba, sectors)` per request in flight. Without `std` the entry
//!   types still exist (they are plain data) but nothing is logged.
//!
//! The wrapper never alters, reorders, delays or drops a request or a completion.

use super::{BlockDevice, Busy, Command, CommandKind, Completion, Geometry, IoError, Request, Tag};

#[cfg(any(test, feature = "std"))]
use std::vec::Vec;

/// Request counters of a [`Trace`]. Requests are counted when accepted by `submit`; `errors`
/// counts completions whose result was an error.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct TraceCounters {
    /// Read requests.
    pub reads: u64,
    /// Write requests, with or without FUA.
    pub writes: u64,
    /// Write requests with FUA (also counted in `writes`).
    pub fua_writes: u64,
    /// Flush requests.
    pub flushes: u64,
    /// Discard requests.
    pub discards: u64,
    /// Whole sectors named by read requests.
    pub sectors_read: u64,
    /// Whole sectors named by write requests.
    pub sectors_written: u64,
    /// Bytes of read buffers.
    pub bytes_read: u64,
    /// Bytes of write buffers.
    pub bytes_written: u64,
    /// Completions that reported an error.
    pub errors: u64,
}

/// One thing that happened at the device boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum TraceEvent {
    /// A request was accepted by `submit`.
    Submit {
        /// The request's tag.
        tag: Tag,
        /// What it asks for.
        kind: CommandKind,
        /// First sector (0 for a flush).
        lba: u64,
        /// Sectors covered (buffer length / sector size for reads and writes, the count for a
        /// discard, 0 for a flush).
        sectors: u64,
    },
    /// `poll` returned the request's completion.
    Complete {
        /// The completion's tag.
        tag: Tag,
        /// The kind of the request it completes.
        kind: CommandKind,
        /// First sector of that request.
        lba: u64,
        /// Sectors covered by that request.
        sectors: u64,
        /// Whether the device reported success.
        ok: bool,
    },
}

/// A numbered [`TraceEvent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct TraceEntry {
    /// Position of the event among the logged events, counting from 0; keeps increasing
    /// across `Trace::take_log` and `Trace::clear_log`.
    pub seq: u64,
    /// What happened.
    pub event: TraceEvent,
}

/// A request's identity, remembered while it is in flight.
#[cfg(any(test, feature = "std"))]
#[derive(Debug, Clone, Copy)]
struct Meta {
    tag: Tag,
    kind: CommandKind,
    lba: u64,
    sectors: u64,
}

/// Wraps a [`BlockDevice`], passing every request and completion through unchanged while
/// counting them (and, with `std`, optionally logging them).
///
/// ```
/// use bonsaifs::device::{flush, write_blocks, RamDisk, Trace};
///
/// let mut data = [1u8; 1024];
/// let mut storage = [0u8; 8 * 512];
/// let mut disk = Trace::new(RamDisk::new(&mut storage, 512).unwrap());
/// write_blocks(&mut disk, 0, &mut data, true).result.unwrap();
/// flush(&mut disk).unwrap();
/// let c = disk.counters();
/// assert_eq!((c.writes, c.fua_writes, c.sectors_written, c.flushes), (1, 1, 2, 1));
/// ```
#[derive(Debug)]
pub struct Trace<D> {
    inner: D,
    counters: TraceCounters,
    #[cfg(any(test, feature = "std"))]
    logging: bool,
    #[cfg(any(test, feature = "std"))]
    log: Vec<TraceEntry>,
    #[cfg(any(test, feature = "std"))]
    next_seq: u64,
    #[cfg(any(test, feature = "std"))]
    in_flight: Vec<Meta>,
}

impl<D> Trace<D> {
    /// Wraps `inner` with zeroed counters and logging off.
    pub fn new(inner: D) -> Self {
        Self {
            inner,
            counters: TraceCounters::default(),
            #[cfg(any(test, feature = "std"))]
            logging: false,
            #[cfg(any(test, feature = "std"))]
            log: Vec::new(),
            #[cfg(any(test, feature = "std"))]
            next_seq: 0,
            #[cfg(any(test, feature = "std"))]
            in_flight: Vec::new(),
        }
    }

    /// The counters so far.
    pub fn counters(&self) -> TraceCounters {
        self.counters
    }

    /// Sets every counter back to zero (the log is untouched).
    pub fn reset_counters(&mut self) {
        self.counters = TraceCounters::default();
    }

    /// The wrapped device.
    pub fn inner(&self) -> &D {
        &self.inner
    }

    /// The wrapped device, mutably. Requests submitted or polled through it bypass the tracer.
    pub fn inner_mut(&mut self) -> &mut D {
        &mut self.inner
    }

    /// Unwraps the device.
    pub fn into_inner(self) -> D {
        self.inner
    }
}

#[cfg(any(test, feature = "std"))]
impl<D> Trace<D> {
    /// Turns the request log on or off. Turning it off keeps what was logged.
    pub fn set_logging(&mut self, on: bool) {
        self.logging = on;
    }

    /// Whether requests are being logged.
    pub fn is_logging(&self) -> bool {
        self.logging
    }

    /// The events logged so far, oldest first.
    pub fn log(&self) -> &[TraceEntry] {
        &self.log
    }

    /// Returns the events logged so far and empties the log.
    pub fn take_log(&mut self) -> Vec<TraceEntry> {
        core::mem::take(&mut self.log)
    }

    /// Empties the log.
    pub fn clear_log(&mut self) {
        self.log.clear();
    }

    fn record(&mut self, event: TraceEvent) {
        if self.logging {
            self.log.push(TraceEntry {
                seq: self.next_seq,
                event,
            });
            self.next_seq += 1;
        }
    }
}

/// `(kind, lba, sectors, bytes)` of a command, for a device with `sector_size`.
fn describe(command: &Command<'_>, sector_size: u32) -> (CommandKind, u64, u64, u64) {
    let sectors_of = |len: usize| match sector_size {
        0 => 0,
        ss => (len / ss as usize) as u64,
    };
    match command {
        Command::Read { lba, buf } | Command::Write { lba, buf, .. } => (
            command.kind(),
            *lba,
            sectors_of(buf.len()),
            buf.len() as u64,
        ),
        Command::Flush => (CommandKind::Flush, 0, 0, 0),
        Command::Discard { lba, count } => (CommandKind::Discard, *lba, *count, 0),
    }
}

impl<'b, D: BlockDevice<'b>> BlockDevice<'b> for Trace<D> {
    fn geometry(&self) -> Geometry {
        self.inner.geometry()
    }

    fn submit(&mut self, req: Request<'b>) -> Result<(), Busy<'b>> {
        let tag = req.tag;
        let (kind, lba, sectors, bytes) = describe(&req.command, self.inner.geometry().sector_size);
        #[cfg(any(test, feature = "std"))]
        if self.inner.in_flight() == 0 {
            // Anything remembered belongs to requests the device no longer holds (dropped by a
            // power cut, or reaped through `inner_mut`).
            self.in_flight.clear();
        }
        self.inner.submit(req)?;
        let c = &mut self.counters;
        let add = |n: &mut u64, v: u64| *n = n.saturating_add(v);
        match kind {
            CommandKind::Read => {
                add(&mut c.reads, 1);
                add(&mut c.sectors_read, sectors);
                add(&mut c.bytes_read, bytes);
            }
            CommandKind::Write | CommandKind::WriteFua => {
                add(&mut c.writes, 1);
                if kind == CommandKind::WriteFua {
                    add(&mut c.fua_writes, 1);
                }
                add(&mut c.sectors_written, sectors);
                add(&mut c.bytes_written, bytes);
            }
            CommandKind::Flush => add(&mut c.flushes, 1),
            CommandKind::Discard => add(&mut c.discards, 1),
        }
        #[cfg(any(test, feature = "std"))]
        {
            self.in_flight.push(Meta {
                tag,
                kind,
                lba,
                sectors,
            });
            self.record(TraceEvent::Submit {
                tag,
                kind,
                lba,
                sectors,
            });
        }
        #[cfg(not(any(test, feature = "std")))]
        let _ = (tag, lba);
        Ok(())
    }

    fn poll(&mut self) -> Option<Completion<'b>> {
        let done = self.inner.poll()?;
        if done.result.is_err() {
            self.counters.errors = self.counters.errors.saturating_add(1);
        }
        #[cfg(any(test, feature = "std"))]
        {
            // The newest request with this tag: after a power cut a tag may be reused while a
            // stale entry for it is still remembered.
            if let Some(i) = self.in_flight.iter().rposition(|m| m.tag == done.tag) {
                let m = self.in_flight.remove(i);
                let ok = done.result.is_ok();
                let event = TraceEvent::Complete {
                    tag: m.tag,
                    kind: m.kind,
                    lba: m.lba,
                    sectors: m.sectors,
                    ok,
                };
                self.record(event);
            }
            if self.inner.in_flight() == 0 {
                self.in_flight.clear();
            }
        }
        Some(done)
    }

    fn in_flight(&self) -> usize {
        self.inner.in_flight()
    }

    /// Passed through; a transfer the device carried out is counted as a read request and,
    /// when logging, recorded as a `Submit` at once followed by its `Complete` (tag
    /// [`NOW_TAG`]).
    fn read_now(&mut self, lba: u64, buf: &mut [u8]) -> Option<Result<(), IoError>> {
        let r = self.inner.read_now(lba, buf)?;
        self.count_now(CommandKind::Read, lba, buf.len(), r.is_ok());
        Some(r)
    }

    /// Passed through; counted and recorded like [`read_now`](Self::read_now), as a write.
    fn write_now(&mut self, lba: u64, buf: &[u8]) -> Option<Result<(), IoError>> {
        let r = self.inner.write_now(lba, buf)?;
        self.count_now(CommandKind::Write, lba, buf.len(), r.is_ok());
        Some(r)
    }
}

/// The tag a [`Trace`] log gives the transfers of [`BlockDevice::read_now`] and
/// [`BlockDevice::write_now`], which carry none: their `Submit` and `Complete` are adjacent.
pub const NOW_TAG: Tag = Tag::MAX - 1;

impl<'b, D: BlockDevice<'b>> Trace<D> {
    /// Count (and log) one synchronous transfer of `len` bytes that already finished.
    fn count_now(&mut self, kind: CommandKind, lba: u64, len: usize, ok: bool) {
        let ss = self.inner.geometry().sector_size;
        let sectors = if ss == 0 {
            0
        } else {
            (len / ss as usize) as u64
        };
        let c = &mut self.counters;
        let add = |n: &mut u64, v: u64| *n = n.saturating_add(v);
        if kind == CommandKind::Read {
            add(&mut c.reads, 1);
            add(&mut c.sectors_read, sectors);
            add(&mut c.bytes_read, len as u64);
        } else {
            add(&mut c.writes, 1);
            add(&mut c.sectors_written, sectors);
            add(&mut c.bytes_written, len as u64);
        }
        if !ok {
            add(&mut c.errors, 1);
        }
        #[cfg(any(test, feature = "std"))]
        if self.logging {
            let tag = NOW_TAG;
            self.record(TraceEvent::Submit {
                tag,
                kind,
                lba,
                sectors,
            });
            self.record(TraceEvent::Complete {
                tag,
                kind,
                lba,
                sectors,
                ok,
            });
        }
        #[cfg(not(any(test, feature = "std")))]
        let _ = lba;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{
        flush, read_blocks, run, write_blocks, FaultInjector, FaultPlan, IoError, QueuedConfig,
        QueuedRamDisk, RamDisk,
    };
    use std::vec;
    use std::vec::Vec;

    #[test]
    fn synchronous_transfers_are_counted_and_logged() {
        let mut m = [0u8; 16 * 512];
        let mut d = Trace::new(FaultInjector::new(
            RamDisk::new(&mut m, 512).unwrap(),
            FaultPlan::At(2),
            IoError::Media,
        ));
        d.set_logging(true);
        let data = [7u8; 1024];
        let mut back = [0u8; 1024];
        assert_eq!(d.write_now(2, &data), Some(Ok(())));
        assert_eq!(d.read_now(2, &mut back), Some(Ok(())));
        assert_eq!(back, data);
        // The third request fails, as the plan says, and counts as an error.
        assert_eq!(d.write_now(2, &data), Some(Err(IoError::Media)));
        let c = d.counters();
        assert_eq!(
            (c.writes, c.reads, c.bytes_written, c.sectors_read, c.errors),
            (2, 1, 2048, 2, 1)
        );
        let log = d.take_log();
        assert_eq!(log.len(), 6, "a Submit and a Complete per transfer");
        assert!(matches!(
            log[0].event,
            TraceEvent::Submit {
                tag: NOW_TAG,
                kind: CommandKind::Write,
                lba: 2,
                sectors: 2
            }
        ));
        assert!(matches!(
            log[5].event,
            TraceEvent::Complete {
                tag: NOW_TAG,
                ok: false,
                ..
            }
        ));
        assert_eq!(d.in_flight(), 0);
        // Without the fast path the device answers None and nothing is counted.
        let mut q = Trace::new(QueuedRamDisk::new(QueuedConfig {
            sector_count: 16,
            ..QueuedConfig::default()
        }));
        assert_eq!(q.write_now(0, &data), None);
        assert_eq!(q.counters(), TraceCounters::default());
    }

    #[test]
    fn counts_by_kind() {
        let (mut a, mut b, mut r, mut bad) = ([1u8; 1024], [2u8; 512], [0u8; 1536], [0u8; 10]);
        let mut m = [0u8; 16 * 512];
        let mut d = Trace::new(RamDisk::new(&mut m, 512).unwrap());
        assert_eq!(write_blocks(&mut d, 0, &mut a, false).result, Ok(()));
        assert_eq!(write_blocks(&mut d, 2, &mut b, true).result, Ok(()));
        let c = read_blocks(&mut d, 0, &mut r);
        assert_eq!(c.result, Ok(()));
        assert_eq!(&c.buf.unwrap()[..1024], &[1u8; 1024][..]);
        assert_eq!(flush(&mut d), Ok(()));
        assert_eq!(
            run(&mut d, Command::Discard { lba: 4, count: 3 }).result,
            Ok(())
        );
        // A failing request is counted at submit and as an error at completion.
        assert_eq!(
            write_blocks(&mut d, 0, &mut bad, false).result,
            Err(IoError::BadBuffer)
        );
        let c = run(&mut d, Command::Discard { lba: 15, count: 3 });
        assert_eq!(c.result, Err(IoError::OutOfRange));
        let expected = TraceCounters {
            reads: 1,
            writes: 3,
            fua_writes: 1,
            flushes: 1,
            discards: 2,
            sectors_read: 3,
            sectors_written: 3,
            bytes_read: 1536,
            bytes_written: 1024 + 512 + 10,
            errors: 2,
        };
        assert_eq!(d.counters(), expected);
        d.reset_counters();
        assert_eq!(d.counters(), TraceCounters::default());
        // Pass-through accessors.
        assert_eq!(d.geometry(), d.inner().geometry());
        assert_eq!(d.in_flight(), 0);
        assert_eq!(d.inner_mut().storage()[2 * 512], 2);
        let inner = d.into_inner();
        assert_eq!(inner.storage()[0], 1);
        assert_eq!(inner.storage()[5 * 512], 0);
    }

    #[test]
    fn busy_is_not_counted_and_passes_through() {
        let (mut a, mut b) = ([0u8; 512], [0u8; 512]);
        let mut m = [0u8; 4 * 512];
        let disk: RamDisk<'_, '_, 1> = RamDisk::with_queue_depth(&mut m, 512).unwrap();
        let mut d = Trace::new(disk);
        d.set_logging(true);
        d.submit(Request {
            tag: 1,
            command: Command::Read {
                lba: 0,
                buf: &mut a,
            },
        })
        .unwrap();
        let Busy(back) = d
            .submit(Request {
                tag: 2,
                command: Command::Read {
                    lba: 1,
                    buf: &mut b,
                },
            })
            .unwrap_err();
        assert_eq!(back.tag, 2);
        assert_eq!(d.counters().reads, 1);
        assert_eq!(d.log().len(), 1);
        assert_eq!(d.poll().map(|c| c.tag), Some(1));
        d.submit(back).unwrap();
        assert_eq!(d.poll().map(|c| c.tag), Some(2));
        assert!(d.poll().is_none());
        assert_eq!(d.counters().reads, 2);
        assert_eq!(d.log().len(), 4);
    }

    #[test]
    fn logging_is_off_by_default() {
        let mut w = [0u8; 512];
        let mut m = [0u8; 4 * 512];
        let mut d = Trace::new(RamDisk::new(&mut m, 512).unwrap());
        assert!(!d.is_logging());
        assert_eq!(write_blocks(&mut d, 0, &mut w, false).result, Ok(()));
        assert!(d.log().is_empty());
        assert_eq!(d.counters().writes, 1);
    }

    #[test]
    fn log_matches_out_of_order_completions() {
        let mut bufs: Vec<Vec<u8>> = (0..8).map(|i| vec![i as u8; 512 * (1 + i % 2)]).collect();
        let cfg = QueuedConfig {
            sector_count: 64,
            seed: 3,
            ..QueuedConfig::default()
        };
        let mut d = Trace::new(QueuedRamDisk::new(cfg));
        d.set_logging(true);
        let mut expected_submits = Vec::new();
        for (i, buf) in bufs.iter_mut().enumerate() {
            let tag = 100 + i as Tag;
            let lba = 8 * i as u64;
            let sectors = (buf.len() / 512) as u64;
            let (command, kind) = if i % 3 == 0 {
                (Command::Read { lba, buf }, CommandKind::Read)
            } else if i % 3 == 1 {
                (
                    Command::Write {
                        lba,
                        buf,
                        fua: false,
                    },
                    CommandKind::Write,
                )
            } else {
                (
                    Command::Write {
                        lba,
                        buf,
                        fua: true,
                    },
                    CommandKind::WriteFua,
                )
            };
            d.submit(Request { tag, command }).unwrap();
            expected_submits.push(TraceEvent::Submit {
                tag,
                kind,
                lba,
                sectors,
            });
        }
        d.submit(Request {
            tag: 200,
            command: Command::Flush,
        })
        .unwrap();
        expected_submits.push(TraceEvent::Submit {
            tag: 200,
            kind: CommandKind::Flush,
            lba: 0,
            sectors: 0,
        });
        // One bad request, to see `ok: false`.
        d.submit(Request {
            tag: 300,
            command: Command::Discard { lba: 63, count: 2 },
        })
        .unwrap();
        expected_submits.push(TraceEvent::Submit {
            tag: 300,
            kind: CommandKind::Discard,
            lba: 63,
            sectors: 2,
        });
        let mut order = Vec::new();
        while d.in_flight() > 0 {
            if let Some(c) = d.poll() {
                order.push(c.tag);
            }
        }
        let log = d.take_log();
        assert!(d.log().is_empty());
        assert_eq!(log.len(), 2 * expected_submits.len());
        for (i, e) in log.iter().enumerate() {
            assert_eq!(e.seq, i as u64);
        }
        let submits: Vec<_> = log[..expected_submits.len()]
            .iter()
            .map(|e| e.event)
            .collect();
        assert_eq!(submits, expected_submits);
        let completes = &log[expected_submits.len()..];
        let completed_tags: Vec<Tag> = completes
            .iter()
            .map(|e| match e.event {
                TraceEvent::Complete { tag, .. } => tag,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(completed_tags, order);
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_ne!(order, sorted, "seed 3 should complete out of order");
        // Each completion carries its submission's kind and range, and its outcome.
        for e in completes {
            let TraceEvent::Complete {
                tag,
                kind,
                lba,
                sectors,
                ok,
            } = e.event
            else {
                unreachable!()
            };
            let sub = TraceEvent::Submit {
                tag,
                kind,
                lba,
                sectors,
            };
            assert!(expected_submits.contains(&sub), "{sub:?}");
            assert_eq!(ok, tag != 300);
        }
        assert_eq!(d.counters().errors, 1);
        // Sequence numbers keep counting after take_log; clear_log empties.
        assert_eq!(flush(&mut d), Ok(()));
        assert_eq!(d.log()[0].seq, log.len() as u64);
        d.clear_log();
        assert!(d.log().is_empty());
        d.set_logging(false);
        assert_eq!(flush(&mut d), Ok(()));
        assert!(d.log().is_empty());
    }

    #[test]
    fn stale_entries_after_power_cut_do_not_confuse_the_log() {
        let mut w = vec![0u8; 512];
        let cfg = QueuedConfig {
            sector_count: 8,
            min_polls: 50,
            max_polls: 50,
            ..Default::default()
        };
        let mut d = Trace::new(QueuedRamDisk::new(cfg));
        d.set_logging(true);
        d.submit(Request {
            tag: 7,
            command: Command::Write {
                lba: 1,
                buf: &mut w,
                fua: false,
            },
        })
        .unwrap();
        d.inner_mut().power_cut();
        d.inner_mut().set_latency(1, 1);
        d.clear_log();
        // Same tag reused for a different request.
        d.submit(Request {
            tag: 7,
            command: Command::Flush,
        })
        .unwrap();
        assert_eq!(d.poll().map(|c| c.tag), Some(7));
        let events: Vec<_> = d.log().iter().map(|e| e.event).collect();
        assert_eq!(
            events,
            vec![
                TraceEvent::Submit {
                    tag: 7,
                    kind: CommandKind::Flush,
                    lba: 0,
                    sectors: 0
                },
                TraceEvent::Complete {
                    tag: 7,
                    kind: CommandKind::Flush,
                    lba: 0,
                    sectors: 0,
                    ok: true
                },
            ]
        );
    }

    #[test]
    fn works_through_a_mutable_reference() {
        let mut w = [5u8; 512];
        let mut m = [0u8; 2 * 512];
        let mut disk = RamDisk::new(&mut m, 512).unwrap();
        {
            let mut t = Trace::new(&mut disk);
            assert_eq!(write_blocks(&mut t, 1, &mut w, false).result, Ok(()));
            assert_eq!(t.counters().sectors_written, 1);
        }
        assert_eq!(disk.storage()[512], 5);
    }
}
