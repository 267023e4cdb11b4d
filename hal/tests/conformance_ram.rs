//! The device conformance suite on the host: over the core's RAM disk (in order, every queue
//! depth), the queued RAM disk (out of order, volatile cache), and the image-file driver
//! (writable and read-only, both sector sizes). Then over deliberately broken devices, each
//! of which must make the suite fail at the right check: the suite can fail.

use bonsaifs::device::{
    BlockDevice, Busy, Command, Completion, Geometry, IoError, QueuedConfig, QueuedRamDisk,
    RamDisk, Request,
};
use bonsaifs_hal::conformance::{self, Check, Config, Report};
use bonsaifs_hal::image_file::ImageFile;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

fn scratch(sector_size: usize) -> Vec<u8> {
    vec![0u8; conformance::scratch_len(sector_size, &Config::default())]
}

fn cfg() -> Config {
    Config {
        // Host devices answer at once; a lost completion must not spin for long.
        poll_limit: 100_000,
        ..Config::default()
    }
}

/// A passing report on a writable device: everything but the read-only check ran (and the
/// FUA and fast-path checks, on a device without them).
fn assert_passes_rw(report: &Report, fua: bool, fast: bool) {
    assert!(report.ok(), "{report}");
    let skipped = 1 + u32::from(!fua) + u32::from(!fast);
    assert_eq!(report.skipped, skipped, "{report}");
    assert_eq!(
        report.run as usize,
        Check::ALL.len() - skipped as usize,
        "{report}"
    );
    assert_eq!(report.passed, report.run);
    assert_eq!(report.first_failure, None);
    assert!(report.completions > 50, "{report}");
}

#[test]
fn ram_disk_passes_at_every_queue_depth_and_sector_size() {
    for ss in [512usize, 4096] {
        let mut s1 = scratch(ss);
        let mut m1 = vec![0u8; 2048 * ss];
        let mut d1: RamDisk<'_, '_, 1> = RamDisk::with_queue_depth(&mut m1, ss as u32).unwrap();
        let r = conformance::run(&mut d1, &mut s1, &cfg());
        assert_passes_rw(&r, true, true);
        assert_eq!(r.queue_accepted, 1);
        assert_eq!(r.max_in_flight, 1);
        assert_eq!(r.reordered, 0);

        let mut s8 = scratch(ss);
        let mut m8 = vec![0u8; 2048 * ss];
        let mut d8: RamDisk<'_, '_, 8> = RamDisk::with_queue_depth(&mut m8, ss as u32).unwrap();
        let r = conformance::run(&mut d8, &mut s8, &cfg());
        assert_passes_rw(&r, true, true);
        assert_eq!(r.queue_accepted, 8);
        assert_eq!(r.max_in_flight, 8);

        let mut s32 = scratch(ss);
        let mut m32 = vec![0u8; 2048 * ss];
        let mut d32 = RamDisk::new(&mut m32, ss as u32).unwrap();
        let r = conformance::run(&mut d32, &mut s32, &cfg());
        assert_passes_rw(&r, true, true);
        assert_eq!(r.queue_accepted, 32);
        // The first and the last sector hold the suite's data now.
        assert!(m32[..ss].iter().any(|&b| b != 0));
        assert!(m32[m32.len() - ss..].iter().any(|&b| b != 0));
    }
}

#[test]
fn ram_disk_read_only_refuses_writes() {
    let mut s = scratch(512);
    let mut m: Vec<u8> = (0..1024 * 512).map(|i| (i * 7 % 251) as u8).collect();
    let before = m.clone();
    let mut d = RamDisk::new(&mut m, 512).unwrap().read_only(true);
    let r = conformance::run(&mut d, &mut s, &cfg());
    assert!(r.ok(), "{r}");
    // FUA is skipped on a read-only device; the read-only check runs.
    assert_eq!(r.skipped, 1, "{r}");
    assert_eq!(r.run as usize, Check::ALL.len() - 1);
    assert_eq!(d.into_storage(), &before[..]);
}

#[test]
fn queued_ram_disk_passes_out_of_order() {
    for (seed, qd, ss) in [(1, 32, 512), (7, 4, 512), (99, 64, 4096), (5, 1, 512)] {
        let mut s = scratch(ss as usize);
        let qcfg = QueuedConfig {
            sector_size: ss,
            sector_count: 4096,
            queue_depth: qd,
            min_polls: 1,
            max_polls: 20,
            seed,
            ..QueuedConfig::default()
        };
        let mut d = QueuedRamDisk::new(qcfg);
        let r = conformance::run(&mut d, &mut s, &cfg());
        // The queued model has no synchronous fast path.
        assert_passes_rw(&r, true, false);
        assert_eq!(r.queue_accepted, usize::from(qd));
        if qd > 1 {
            assert!(r.reordered > 0, "the model completes out of order: {r}");
        }
        assert_eq!(
            r.max_in_flight,
            usize::from(qd).min(conformance::MAX_SMALL.max(usize::from(qd)))
        );
    }
    // Without FUA the FUA check is skipped.
    let mut s = scratch(512);
    let mut d = QueuedRamDisk::new(QueuedConfig {
        fua: false,
        ..QueuedConfig::default()
    });
    let r = conformance::run(&mut d, &mut s, &cfg());
    assert_passes_rw(&r, false, false);
}

/// A unique temporary path, removed on drop.
struct TempPath(PathBuf);

impl TempPath {
    fn new(name: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!(
            "bonsaifs-conformance-{}-{n}-{name}",
            std::process::id()
        ));
        TempPath(p)
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn image_file_passes_writable_and_read_only() {
    for ss in [512u32, 4096] {
        let p = TempPath::new("rw.img");
        {
            let mut s = scratch(ss as usize);
            let mut d = ImageFile::create(&p.0, 1024 * u64::from(ss), ss).unwrap();
            let r = conformance::run(&mut d, &mut s, &cfg());
            assert_passes_rw(&r, true, true);
            assert_eq!(
                r.queue_accepted,
                usize::from(bonsaifs_hal::image_file::QUEUE_DEPTH)
            );
        }
        let before = std::fs::read(&p.0).unwrap();
        assert!(before.iter().any(|&b| b != 0));
        let mut s = scratch(ss as usize);
        let mut d = ImageFile::open_read_only(&p.0, ss).unwrap();
        let r = conformance::run(&mut d, &mut s, &cfg());
        assert!(r.ok(), "{r}");
        assert_eq!(r.skipped, 1, "{r}");
        drop(d);
        assert_eq!(std::fs::read(&p.0).unwrap(), before);
    }
}

#[test]
fn scratch_and_device_size_are_checked() {
    // Too little scratch: the geometry check fails and nothing else runs.
    let mut s = vec![0u8; 4 * 512];
    let mut m = vec![0u8; 1024 * 512];
    let mut d = RamDisk::new(&mut m, 512).unwrap();
    let r = conformance::run(&mut d, &mut s, &cfg());
    assert!(!r.ok());
    assert!(r.aborted);
    assert_eq!((r.run, r.failed), (1, 1));
    let f = r.first_failure.unwrap();
    assert_eq!(f.check, Check::Geometry);
    assert!(
        f.message.as_str().contains("scratch region too small"),
        "{f}"
    );

    // A device smaller than two multi-sector regions.
    let mut s = scratch(512);
    let mut m = vec![0u8; 40 * 512];
    let mut d = RamDisk::new(&mut m, 512).unwrap();
    let r = conformance::run(&mut d, &mut s, &cfg());
    let f = r.first_failure.unwrap();
    assert_eq!(f.check, Check::Geometry);
    assert!(f.message.as_str().contains("device too small"), "{f}");

    // A smaller scratch region than the full size still runs everything, with fewer requests
    // in flight.
    let mut s = vec![0u8; 2 * 16384 + 4 * 512 + 256];
    let mut m = vec![0u8; 1024 * 512];
    let mut d = RamDisk::new(&mut m, 512).unwrap();
    let r = conformance::run(&mut d, &mut s, &cfg());
    assert_passes_rw(&r, true, true);
}

// ---------------------------------------------------------------- broken devices

/// One way of breaking the contract.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    /// The `n`-th completion is swallowed (never returned; not counted in flight).
    DropCompletion(usize),
    /// The `n`-th completion is returned twice (the second time without its buffer).
    DuplicateCompletion(usize),
    /// Every read returns one flipped bit.
    CorruptRead,
    /// Reads come from the next sector.
    ReadWrongSector,
    /// Writes complete successfully but do nothing.
    IgnoreWrites,
    /// Out-of-range requests are turned into reads / writes of sector 0 that succeed.
    NoRangeCheck,
    /// `Busy` hands back the request with another tag.
    BusyChangesTag,
    /// Two completions in a row swap their buffers.
    SwapBuffers,
    /// The geometry says read-only, but writes go through.
    FakeReadOnly,
    /// `in_flight` is off by one.
    MiscountInFlight,
    /// The `n`-th completion is kept forever, still counted in flight (a hung request).
    HoldCompletion(usize),
    /// `write_now` answers success but writes nothing.
    FastWriteIgnored,
    /// `read_now` reads from the next sector.
    FastReadWrongSector,
    /// `read_now` / `write_now` out of range go to sector 0 and succeed.
    FastNoRangeCheck,
}

struct Broken<'b, D> {
    inner: D,
    fault: Fault,
    /// Completions pulled from `inner` so far.
    completions: usize,
    /// Completions ready to hand out (after the fault was applied).
    out: VecDeque<Completion<'b>>,
    swapped: bool,
    held: Option<Completion<'b>>,
}

impl<'b, D: BlockDevice<'b>> Broken<'b, D> {
    fn new(inner: D, fault: Fault) -> Self {
        Self {
            inner,
            fault,
            completions: 0,
            out: VecDeque::new(),
            swapped: false,
            held: None,
        }
    }

    /// Pulls everything the inner device has finished, breaking it as the fault says.
    fn pull(&mut self) {
        while let Some(mut c) = self.inner.poll() {
            self.completions += 1;
            let n = self.completions;
            match self.fault {
                Fault::DropCompletion(k) if n == k => continue,
                Fault::HoldCompletion(k) if n == k => {
                    self.held = Some(c);
                    continue;
                }
                Fault::DuplicateCompletion(k) if n == k => {
                    let tag = c.tag;
                    self.out.push_back(c);
                    self.out.push_back(Completion {
                        tag,
                        result: Ok(()),
                        buf: None,
                    });
                    continue;
                }
                Fault::CorruptRead => {
                    if let Some(b) = c.buf.as_deref_mut() {
                        if let Some(x) = b.get_mut(b.len() / 2) {
                            *x ^= 0x10;
                        }
                    }
                }
                Fault::SwapBuffers if !self.swapped => {
                    let len = c.buf.as_ref().map(|b| b.len());
                    if let Some(prev) = self
                        .out
                        .iter_mut()
                        .find(|p| len.is_some() && p.buf.as_ref().map(|b| b.len()) == len)
                    {
                        std::mem::swap(&mut prev.buf, &mut c.buf);
                        self.swapped = true;
                    }
                }
                _ => {}
            }
            self.out.push_back(c);
        }
    }
}

impl<'b, D: BlockDevice<'b>> BlockDevice<'b> for Broken<'b, D> {
    fn geometry(&self) -> Geometry {
        let mut g = self.inner.geometry();
        if self.fault == Fault::FakeReadOnly {
            g.read_only = true;
        }
        g
    }

    fn submit(&mut self, mut req: Request<'b>) -> Result<(), Busy<'b>> {
        let g = self.inner.geometry();
        if self.in_flight() >= usize::from(g.queue_depth) {
            if self.fault == Fault::BusyChangesTag {
                req.tag ^= 1;
            }
            return Err(Busy(req));
        }
        match (req.command, self.fault) {
            (Command::Write { buf, .. }, Fault::IgnoreWrites) => {
                self.out.push_back(Completion {
                    tag: req.tag,
                    result: Ok(()),
                    buf: Some(buf),
                });
                return Ok(());
            }
            (Command::Read { mut lba, buf }, Fault::ReadWrongSector) => {
                let n = (buf.len() / g.sector_size as usize) as u64;
                if lba
                    .checked_add(n + 1)
                    .is_some_and(|end| end <= g.sector_count)
                {
                    lba += 1;
                }
                req.command = Command::Read { lba, buf };
            }
            (Command::Read { mut lba, buf }, Fault::NoRangeCheck) => {
                if !in_range(&g, lba, buf.len()) {
                    lba = 0;
                }
                req.command = Command::Read { lba, buf };
            }
            (Command::Write { mut lba, buf, fua }, Fault::NoRangeCheck) => {
                if !in_range(&g, lba, buf.len()) {
                    lba = 0;
                }
                req.command = Command::Write { lba, buf, fua };
            }
            (command, _) => req.command = command,
        }
        match self.inner.submit(req) {
            Err(Busy(mut r)) if self.fault == Fault::BusyChangesTag => {
                r.tag ^= 1;
                Err(Busy(r))
            }
            other => other,
        }
    }

    fn poll(&mut self) -> Option<Completion<'b>> {
        if self.out.is_empty() {
            self.pull();
        }
        self.out.pop_front()
    }

    fn read_now(&mut self, mut lba: u64, buf: &mut [u8]) -> Option<Result<(), IoError>> {
        let g = self.inner.geometry();
        match self.fault {
            Fault::FastReadWrongSector if in_range(&g, lba + 1, buf.len()) => lba += 1,
            Fault::FastNoRangeCheck if !in_range(&g, lba, buf.len()) => lba = 0,
            _ => {}
        }
        self.inner.read_now(lba, buf)
    }

    fn write_now(&mut self, mut lba: u64, buf: &[u8]) -> Option<Result<(), IoError>> {
        let g = self.inner.geometry();
        match self.fault {
            Fault::FastWriteIgnored => return Some(Ok(())),
            Fault::FastNoRangeCheck if !in_range(&g, lba, buf.len()) => lba = 0,
            _ => {}
        }
        self.inner.write_now(lba, buf)
    }

    fn in_flight(&self) -> usize {
        let n = self.inner.in_flight() + self.out.len() + usize::from(self.held.is_some());
        if self.fault == Fault::MiscountInFlight {
            n + 1
        } else {
            n
        }
    }
}

/// Whether a whole-sector buffer at `lba` lies on the device (a partial one counts as in
/// range: the inner device refuses it).
fn in_range(g: &Geometry, lba: u64, len: usize) -> bool {
    let n = (len / g.sector_size as usize) as u64;
    lba.checked_add(n).is_some_and(|end| end <= g.sector_count)
}

/// Runs the suite over `fault` on a RAM disk and on the queued model; both runs must fail, at
/// `check`, with a message containing `says`.
fn must_fail(fault: Fault, check: Check, says: &str) {
    let mut s = scratch(512);
    let mut m = vec![0u8; 1024 * 512];
    let d: RamDisk<'_, '_, 8> = RamDisk::with_queue_depth(&mut m, 512).unwrap();
    let mut d = Broken::new(d, fault);
    let r = conformance::run(&mut d, &mut s, &cfg());
    assert_fails(&r, fault, check, says);

    let mut s = scratch(512);
    let q = QueuedRamDisk::new(QueuedConfig {
        sector_count: 1024,
        queue_depth: 8,
        ..QueuedConfig::default()
    });
    let mut d = Broken::new(q, fault);
    let r = conformance::run(&mut d, &mut s, &cfg());
    assert_fails(&r, fault, check, says);
}

fn assert_fails(r: &Report, fault: Fault, check: Check, says: &str) {
    assert!(!r.ok(), "{fault:?} passed: {r}");
    assert!(r.failed >= 1);
    let f = r
        .first_failure
        .unwrap_or_else(|| panic!("{fault:?}: no failure in {r}"));
    assert_eq!(f.check, check, "{fault:?}: {f}");
    assert!(f.message.as_str().contains(says), "{fault:?}: {f}");
    assert_eq!(r.run, r.passed + r.failed);
}

#[test]
fn the_wrapper_without_a_fault_passes() {
    // The wrapper itself keeps the contract: only its faults make the suite fail.
    let mut s = scratch(512);
    let mut m = vec![0u8; 1024 * 512];
    let d: RamDisk<'_, '_, 8> = RamDisk::with_queue_depth(&mut m, 512).unwrap();
    let mut d = Broken::new(d, Fault::DropCompletion(usize::MAX));
    assert_passes_rw(&conformance::run(&mut d, &mut s, &cfg()), true, true);
}

#[test]
fn a_lost_completion_fails_and_aborts() {
    for k in [1, 5, 40] {
        let mut s = scratch(512);
        let mut m = vec![0u8; 1024 * 512];
        let d: RamDisk<'_, '_, 8> = RamDisk::with_queue_depth(&mut m, 512).unwrap();
        let mut d = Broken::new(d, Fault::DropCompletion(k));
        let r = conformance::run(&mut d, &mut s, &cfg());
        assert!(!r.ok(), "{r}");
        assert!(r.aborted, "lost buffers leave the device unusable: {r}");
        let f = r.first_failure.unwrap();
        assert!(f.message.as_str().contains("never completed"), "{f}");
    }
    must_fail(
        Fault::DropCompletion(1),
        Check::SingleFirst,
        "never completed",
    );
}

#[test]
fn a_hung_request_times_out_and_aborts() {
    for k in [1, 60] {
        let mut s = scratch(512);
        let mut m = vec![0u8; 1024 * 512];
        let d: RamDisk<'_, '_, 8> = RamDisk::with_queue_depth(&mut m, 512).unwrap();
        let mut d = Broken::new(d, Fault::HoldCompletion(k));
        let r = conformance::run(&mut d, &mut s, &cfg());
        assert!(!r.ok(), "{r}");
        assert!(
            r.aborted,
            "a request that never ends leaves the device unusable: {r}"
        );
        let f = r.first_failure.unwrap();
        assert!(
            f.message
                .as_str()
                .contains("no completion within 100000 polls"),
            "{f}"
        );
    }
}

#[test]
fn a_duplicated_completion_fails() {
    must_fail(
        Fault::DuplicateCompletion(1),
        Check::SingleFirst,
        "duplicate or unknown",
    );
}

#[test]
fn wrong_data_fails() {
    must_fail(Fault::CorruptRead, Check::SingleFirst, "wrong at byte 256");
    must_fail(
        Fault::ReadWrongSector,
        Check::SingleFirst,
        "wrong at byte 0",
    );
    must_fail(Fault::IgnoreWrites, Check::SingleFirst, "wrong at byte 0");
}

#[test]
fn missing_range_checks_fail() {
    must_fail(
        Fault::NoRangeCheck,
        Check::OutOfRange,
        "expected Err(OutOfRange)",
    );
}

#[test]
fn a_mangled_busy_fails() {
    must_fail(
        Fault::BusyChangesTag,
        Check::QueueFull,
        "Busy handed back tag",
    );
}

#[test]
fn swapped_buffers_fail() {
    must_fail(Fault::SwapBuffers, Check::Flush, "different buffer");
}

#[test]
fn a_read_only_device_that_writes_fails() {
    // Its discard goes through first; then its queued writes do, then its `write_now`.
    must_fail(Fault::FakeReadOnly, Check::Discard, "answered Ok(())");
    let mut s = scratch(512);
    let mut m = vec![0u8; 1024 * 512];
    let d = RamDisk::new(&mut m, 512).unwrap();
    let mut d = Broken::new(d, Fault::FakeReadOnly);
    let r = conformance::run(&mut d, &mut s, &cfg());
    assert_fails(&r, Fault::FakeReadOnly, Check::Discard, "answered Ok(())");
    assert_eq!(r.failed, 3, "{r}");
}

#[test]
fn a_wrong_in_flight_count_fails() {
    must_fail(
        Fault::MiscountInFlight,
        Check::IdlePoll,
        "reports 1 in flight",
    );
}

#[test]
fn losing_or_duplicating_any_single_completion_fails() {
    let device = |seed| {
        QueuedRamDisk::new(QueuedConfig {
            sector_count: 1024,
            queue_depth: 8,
            seed,
            ..QueuedConfig::default()
        })
    };
    let mut s = scratch(512);
    let mut clean = device(3);
    let total = conformance::run(&mut clean, &mut s, &cfg()).completions as usize;
    assert!(total > 200);
    // Lose or duplicate each completion in turn: every run fails, none panics or hangs.
    for k in 1..=total {
        for fault in [Fault::DropCompletion(k), Fault::DuplicateCompletion(k)] {
            let mut s = scratch(512);
            let mut d = Broken::new(device(3), fault);
            let r = conformance::run(&mut d, &mut s, &cfg());
            assert!(!r.ok(), "{fault:?}: {r}");
            assert!(r.failed >= 1, "{fault:?}: {r}");
        }
    }
}

#[test]
fn a_broken_fast_path_fails_at_the_fast_path_check() {
    // Only the RAM disk offers the fast path (the queued model declines it), so these run on
    // the RAM disk alone; every queued check still passes.
    for (fault, says) in [
        (Fault::FastWriteIgnored, "read at lba 33 (tag"),
        (Fault::FastReadWrongSector, "read_now at lba 32: byte 0"),
        (Fault::FastNoRangeCheck, "answered Ok(())"),
    ] {
        let mut s = scratch(512);
        let mut m = vec![0u8; 1024 * 512];
        let d: RamDisk<'_, '_, 8> = RamDisk::with_queue_depth(&mut m, 512).unwrap();
        let mut d = Broken::new(d, fault);
        let r = conformance::run(&mut d, &mut s, &cfg());
        assert_fails(&r, fault, Check::FastPath, says);
        assert_eq!(r.failed, 1, "{fault:?}: only the fast path is broken: {r}");
    }
}
