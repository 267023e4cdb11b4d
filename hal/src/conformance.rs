//! The device conformance suite: one set of checks that every [`BlockDevice`] driver must
//! pass, on the host (RAM disks, image files, the SD-card model) and on bare metal in QEMU
//! (virtio-blk, NVMe).
//!
//! # What it checks
//!
//! | check | what a passing device does |
//! |---|---|
//! | [`Check::Geometry`] | 512- or 4096-byte sectors, a queue depth of at least 1, room for the checks |
//! | [`Check::IdlePoll`] | nothing in flight: `poll` returns nothing, `in_flight` is 0 |
//! | [`Check::SingleFirst`], [`Check::SingleLast`] | a one-sector write at the first / last sector reads back exactly |
//! | [`Check::MultiFirst`], [`Check::MultiLast`] | a multi-sector (default 16 KiB) write at either end reads back exactly |
//! | [`Check::WriteFua`] | a FUA write completes and reads back (if the device offers FUA) |
//! | [`Check::Flush`] | a flush completes: alone, after writes completed, and queued among writes in flight |
//! | [`Check::OutOfRange`] | requests past the end (or overflowing) complete with [`IoError::OutOfRange`], the buffer handed back, and a write straddling the end changes nothing |
//! | [`Check::BadBuffer`] | an empty or partial-sector buffer completes with [`IoError::BadBuffer`] |
//! | [`Check::Discard`] | a discard completes (or answers [`IoError::Unsupported`]: skipped), one past the end answers [`IoError::OutOfRange`], and the sectors take new data afterwards |
//! | [`Check::QueueFull`] | at least `queue_depth` requests are accepted; then `submit` answers [`Busy`](bonsaifs::device::Busy) with the request intact; everything drains; the handed-back request then succeeds |
//! | [`Check::OutOfOrder`] | many requests in flight with scrambled tags: each completes exactly once, with its own buffer and the right data, whatever the order |
//! | [`Check::ReadOnly`] | on a read-only device: writes complete with [`IoError::ReadOnly`] and change nothing |
//! | [`Check::FastPath`] | if the device offers `read_now` / `write_now` (else skipped): one- and multi-sector transfers agree with queued ones both ways, leave nothing in flight, and refuse out-of-range or partial buffers (or decline with `None`) without touching the medium; on a read-only device `write_now` changes nothing |
//!
//! Every completion is matched to its request by tag: a completion for a tag that is not in
//! flight (unknown or duplicated), a buffer not handed back or swapped, a wrong result or a
//! wrong byte fails the check that is running. `in_flight()` must count exactly the requests
//! submitted and not yet polled. Waits are bounded ([`Config::poll_limit`]), so a device that
//! loses a completion fails with a message instead of hanging.
//!
//! On a read-only device the write checks turn into read checks (two reads of the same sectors
//! agree) and [`Check::ReadOnly`] runs; on a writable one [`Check::ReadOnly`] is skipped.
//!
//! # Using it
//!
//! The suite is `no_std` and allocates nothing; the caller provides one scratch region, which
//! the suite cuts into its request buffers (two multi-sector buffers, up to [`MAX_SMALL`]
//! one-sector buffers and one half-sector buffer; see [`scratch_len`]). For a DMA device
//! (`BlockDevice<'static>`) that region must be DMA-capable `'static` memory, ideally
//! page-aligned so that multi-sector transfers span whole pages. The pieces are moved into
//! requests, so the region is used up by the run.
//!
//! **The suite overwrites** the first and last [`Config::multi_bytes`] of the device and up to
//! [`MAX_SMALL`] sectors spread between them. Run it on a scratch device, or format after it.
//!
//! It never panics: [`run`] returns a [`Report`] with the number of checks run, passed and
//! skipped, and the first failure with a message.
//!
//! ```
//! use bonsaifs::device::RamDisk;
//! use bonsaifs_hal::conformance::{self, Config};
//!
//! let mut scratch = vec![0u8; conformance::scratch_len(512, &Config::default())];
//! let mut storage = vec![0u8; 1024 * 512];
//! let mut disk = RamDisk::new(&mut storage, 512).unwrap();
//! let report = conformance::run(&mut disk, &mut scratch, &Config::default());
//! assert!(report.ok(), "{report}");
//! ```

// A failing check returns its message by value (about 170 bytes): there is no allocator to box
// it in, and it is built only once per run, on failure.
#[allow(clippy::result_large_err)]
mod checks;
#[allow(clippy::result_large_err)]
mod fast_path;
mod message;
mod pattern;
#[allow(clippy::result_large_err)]
mod suite;

use core::fmt;

use bonsaifs::device::BlockDevice;
#[cfg(doc)]
use bonsaifs::device::IoError;

pub use message::{Message, MESSAGE_CAPACITY};

/// Most one-sector buffers the suite cuts from the scratch region, and so the most requests
/// it keeps in flight in [`Check::OutOfOrder`].
pub const MAX_SMALL: usize = 64;

/// Largest queue depth whose "queue full" behaviour [`Check::QueueFull`] checks (it fills the
/// queue with flushes, tracked in a fixed bitmap); deeper queues skip that check.
pub const MAX_FLOOD: usize = 4096;

/// How the suite runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Bytes of each multi-sector transfer (rounded down to whole sectors, at least two
    /// sectors). The default, 16 KiB, spans four 4 KiB pages (an NVMe PRP list).
    pub multi_bytes: usize,
    /// How many `poll` calls to wait for one completion before the check fails with a
    /// timeout. Polls are cheap on the host; under QEMU a completion may take a while.
    pub poll_limit: u64,
    /// Mixed into every data pattern. Use a different value for each run on the same medium,
    /// so that data left by an earlier run cannot pass for a write that never happened.
    pub seed: u32,
}

impl Default for Config {
    /// 16 KiB multi-sector transfers, 50 million polls per completion, seed 1.
    fn default() -> Self {
        Self {
            multi_bytes: 16 * 1024,
            poll_limit: 50_000_000,
            seed: 1,
        }
    }
}

/// Scratch bytes [`run`] can use for a device with `sector_size`-byte sectors: two
/// multi-sector buffers, [`MAX_SMALL`] one-sector buffers and a half sector. A smaller region
/// works too (down to two multi-sector buffers plus two and a half sectors), with fewer
/// requests in flight in [`Check::OutOfOrder`].
pub const fn scratch_len(sector_size: usize, cfg: &Config) -> usize {
    let multi = multi_sectors(sector_size, cfg.multi_bytes);
    (2 * multi + MAX_SMALL) * sector_size + sector_size / 2
}

/// Sectors in a multi-sector transfer.
pub(crate) const fn multi_sectors(sector_size: usize, multi_bytes: usize) -> usize {
    match multi_bytes.checked_div(sector_size) {
        Some(n) if n >= 2 => n,
        _ => 2,
    }
}

/// The checks, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Sector size, queue depth, device and scratch sizes.
    Geometry,
    /// An idle device completes nothing.
    IdlePoll,
    /// One-sector write and read back at sector 0.
    SingleFirst,
    /// One-sector write and read back at the last sector.
    SingleLast,
    /// Multi-sector write and read back at sector 0.
    MultiFirst,
    /// Multi-sector write and read back ending at the last sector.
    MultiLast,
    /// A FUA write completes and reads back.
    WriteFua,
    /// Flushes complete: alone, after writes, and queued among writes.
    Flush,
    /// Requests beyond the end are refused and change nothing.
    OutOfRange,
    /// Empty and partial-sector buffers are refused.
    BadBuffer,
    /// Discards complete, are range-checked, and leave the sectors writable.
    Discard,
    /// A full queue answers `Busy` with the request intact, then drains.
    QueueFull,
    /// Many requests in flight complete exactly once each, matched by tag.
    OutOfOrder,
    /// A read-only device refuses writes.
    ReadOnly,
    /// The synchronous fast path (`read_now` / `write_now`) agrees with queued requests.
    FastPath,
}

impl Check {
    /// Every check, in the order [`run`] runs them.
    pub const ALL: [Check; 15] = [
        Check::Geometry,
        Check::IdlePoll,
        Check::SingleFirst,
        Check::SingleLast,
        Check::MultiFirst,
        Check::MultiLast,
        Check::WriteFua,
        Check::Flush,
        Check::OutOfRange,
        Check::BadBuffer,
        Check::Discard,
        Check::QueueFull,
        Check::OutOfOrder,
        Check::ReadOnly,
        Check::FastPath,
    ];

    /// A short name for logs.
    pub const fn name(self) -> &'static str {
        match self {
            Check::Geometry => "geometry",
            Check::IdlePoll => "idle-poll",
            Check::SingleFirst => "single-first",
            Check::SingleLast => "single-last",
            Check::MultiFirst => "multi-first",
            Check::MultiLast => "multi-last",
            Check::WriteFua => "write-fua",
            Check::Flush => "flush",
            Check::OutOfRange => "out-of-range",
            Check::BadBuffer => "bad-buffer",
            Check::Discard => "discard",
            Check::QueueFull => "queue-full",
            Check::OutOfOrder => "out-of-order",
            Check::ReadOnly => "read-only",
            Check::FastPath => "fast-path",
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The first check that failed, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    /// The check that was running.
    pub check: Check,
    /// What went wrong.
    pub message: Message,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.check, self.message)
    }
}

/// The outcome of a [`run`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Report {
    /// Checks that ran to a verdict (passed or failed; skipped ones are not counted).
    pub run: u32,
    /// Checks that passed.
    pub passed: u32,
    /// Checks that do not apply to this device (FUA on a device without it, discard on a
    /// device that answers `Unsupported`, read-only checks on a writable device, queue full on
    /// a queue deeper than [`MAX_FLOOD`], the fast path on a device without one).
    pub skipped: u32,
    /// Checks that failed.
    pub failed: u32,
    /// The remaining checks were not run: the device's state was unknown after a failure
    /// (requests that never completed, buffers not handed back, bad geometry).
    pub aborted: bool,
    /// The first failure.
    pub first_failure: Option<Failure>,
    /// Completions reaped.
    pub completions: u64,
    /// Completions that arrived while an older request (submitted earlier) was still in
    /// flight: evidence that the device completes out of order (0 for in-order devices).
    pub reordered: u64,
    /// Most requests in flight at once.
    pub max_in_flight: usize,
    /// Requests the device accepted before answering `Busy` in [`Check::QueueFull`].
    pub queue_accepted: usize,
}

impl Report {
    /// Every check ran and none failed.
    pub fn ok(&self) -> bool {
        self.failed == 0 && !self.aborted && self.run > 0
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} checks run, {} passed, {} failed, {} skipped{}; {} completions, {} out of order, \
             max {} in flight, queue full after {}",
            self.run,
            self.passed,
            self.failed,
            self.skipped,
            if self.aborted { ", rest aborted" } else { "" },
            self.completions,
            self.reordered,
            self.max_in_flight,
            self.queue_accepted,
        )?;
        if let Some(failure) = &self.first_failure {
            write!(f, "; first failure: {failure}")?;
        }
        Ok(())
    }
}

/// Runs every check against `dev`, cutting request buffers from `scratch`.
///
/// `dev` must be idle (nothing in flight). See the module documentation for what is checked
/// and which sectors are overwritten.
pub fn run<'b, D: BlockDevice<'b> + ?Sized>(
    dev: &mut D,
    scratch: &'b mut [u8],
    cfg: &Config,
) -> Report {
    suite::Suite::new(dev, scratch, *cfg).run_all()
}
