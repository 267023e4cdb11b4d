//! The `BlockDevice` contract: the one trait every driver implements, and the request /
//! completion types that travel through it.
//!
//! # The queue model
//!
//! A device accepts [`Request`]s with [`BlockDevice::submit`] and hands back [`Completion`]s
//! from [`BlockDevice::poll`]. Neither call blocks: a full queue answers [`Busy`] (giving the
//! request back), and `poll` returns `None` when nothing has finished. Completions may arrive
//! in any order; the caller matches them by [`Tag`]. Devices without a queue (a RAM disk, an SPI
//! SD card) finish the work inside `submit` and return the completion on the next `poll`, so
//! one code path serves both kinds. Such devices may also offer the optional synchronous fast
//! path ([`BlockDevice::read_now`], [`BlockDevice::write_now`]), which copies straight to or
//! from memory the caller keeps; nothing requires it.
//!
//! # Durability, as NVMe and virtio define it
//!
//! A completed write is on stable media only if it was submitted with FUA, or the device has
//! no volatile write cache ([`Geometry::volatile_cache`] is false), or a [`Command::Flush`]
//! that was *submitted after the write completed* has itself completed. Two writes in flight
//! are not ordered with respect to each other.
//!
//! # Buffer ownership (why this is sound without `unsafe`)
//!
//! A request *owns* its buffer for as long as it is in flight: [`Command::Read`] and
//! [`Command::Write`] carry a `&'b mut [u8]`, which moves into the device at `submit` and comes
//! back inside the [`Completion`]. While the device holds the only mutable reference, the
//! borrow checker forbids any other code from reading, writing or freeing that memory, so no
//! safe caller can race a DMA transfer. The block cache hands its slot buffers over this way
//! (a slot with I/O in flight has no buffer to give out), so there is no `unsafe` here at all.
//!
//! Drivers that let hardware DMA into the buffer must additionally survive the device object
//! being leaked with `mem::forget` while a transfer runs: they implement the trait only for
//! `'b = 'static` (buffers from a `static` pool), so leaked in-flight memory is never freed.
//! Devices that copy synchronously (RAM disk, SPI) implement it for every `'b`.

mod fault;
mod queued;
mod ram;
mod trace;

pub use fault::{FaultInjector, FaultPlan};
#[cfg(any(test, feature = "std"))]
pub use queued::{QueuedConfig, QueuedRamDisk};
pub use ram::RamDisk;
pub use trace::{Trace, TraceCounters, TraceEntry, TraceEvent, NOW_TAG};

pub use crate::error::IoError;

/// The caller's name for a request; completions carry it back. Devices must not interpret it.
pub type Tag = u32;

/// What a device is, read at run time (never fixed at compile time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Geometry {
    /// Bytes per sector (logical block): 512 or 4096.
    pub sector_size: u32,
    /// Number of sectors.
    pub sector_count: u64,
    /// How many requests may be in flight at once (1 for devices without a queue).
    pub queue_depth: u16,
    /// The device acknowledges writes before they reach stable media; a flush is needed.
    pub volatile_cache: bool,
    /// The device honours FUA (force unit access) on writes.
    pub fua: bool,
    /// Sectors the device writes atomically (never torn), if it promises any.
    pub atomic_write_sectors: u32,
    /// The device refuses writes.
    pub read_only: bool,
}

impl Geometry {
    /// Total capacity in bytes.
    pub fn capacity(&self) -> u64 {
        self.sector_count
            .saturating_mul(u64::from(self.sector_size))
    }
}

/// One operation on the device.
#[derive(Debug)]
pub enum Command<'b> {
    /// Fill `buf` from the sectors starting at `lba`. `buf.len()` is a whole number of sectors.
    Read {
        /// First sector.
        lba: u64,
        /// Destination; owned by the device until the completion returns it.
        buf: &'b mut [u8],
    },
    /// Write `buf` to the sectors starting at `lba`.
    Write {
        /// First sector.
        lba: u64,
        /// Source; owned by the device until the completion returns it.
        buf: &'b mut [u8],
        /// Force unit access: the completion means the data is on stable media.
        fua: bool,
    },
    /// Make every write that completed before this flush was submitted durable.
    Flush,
    /// The sectors' contents are no longer needed (a hint; reads may return anything).
    Discard {
        /// First sector.
        lba: u64,
        /// Number of sectors.
        count: u64,
    },
}

impl Command<'_> {
    /// A short name for logs and traces.
    pub fn kind(&self) -> CommandKind {
        match self {
            Command::Read { .. } => CommandKind::Read,
            Command::Write { fua: false, .. } => CommandKind::Write,
            Command::Write { fua: true, .. } => CommandKind::WriteFua,
            Command::Flush => CommandKind::Flush,
            Command::Discard { .. } => CommandKind::Discard,
        }
    }
}

/// The kind of a [`Command`], without its buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum CommandKind {
    /// [`Command::Read`].
    Read,
    /// [`Command::Write`] without FUA.
    Write,
    /// [`Command::Write`] with FUA.
    WriteFua,
    /// [`Command::Flush`].
    Flush,
    /// [`Command::Discard`].
    Discard,
}

/// A command and the caller's tag for it.
#[derive(Debug)]
pub struct Request<'b> {
    /// Returned unchanged in the completion.
    pub tag: Tag,
    /// What to do.
    pub command: Command<'b>,
}

/// A finished request: its tag, its result, and the buffer it borrowed (for reads and writes).
#[derive(Debug)]
pub struct Completion<'b> {
    /// The tag given at submit.
    pub tag: Tag,
    /// What the device reported.
    pub result: Result<(), IoError>,
    /// The request's buffer, handed back to the caller.
    pub buf: Option<&'b mut [u8]>,
}

/// The queue is full; the request is handed back untouched. Poll, then submit again.
#[derive(Debug)]
pub struct Busy<'b>(pub Request<'b>);

/// A block device with a (possibly one-deep) request queue.
///
/// See the module documentation for the queue, durability and buffer-ownership rules that
/// every implementation must keep.
pub trait BlockDevice<'b> {
    /// The device's geometry. Must not change while the device is in use.
    fn geometry(&self) -> Geometry;

    /// Queue a request. Never blocks: a full queue returns [`Busy`] with the request.
    ///
    /// A request that is malformed (out of range, bad buffer length, write to a read-only
    /// device) is accepted and completes with the matching [`IoError`], so that errors have one
    /// path back to the caller.
    fn submit(&mut self, req: Request<'b>) -> Result<(), Busy<'b>>;

    /// Return one finished request, if any. Never blocks.
    fn poll(&mut self) -> Option<Completion<'b>>;

    /// Number of requests submitted and not yet returned by `poll`.
    fn in_flight(&self) -> usize;

    /// Optional synchronous fast path: fill `buf` from the sectors starting at `lba` before
    /// returning, from memory the caller keeps. `None` (the default) means "not here, use
    /// `submit`".
    ///
    /// Why it exists: a device that finishes every request inside `submit` anyway (a RAM disk,
    /// an SPI SD card) can copy straight into the caller's memory. The filesystem then reads a
    /// whole, aligned data block into the user's buffer without staging it in a cache slot:
    /// one copy instead of two, and no slot search or eviction. A borrowed `&mut [u8]` cannot
    /// follow the owned-buffer rules of a queued or DMA request, so drivers that queue or DMA
    /// (NVMe, virtio-blk) keep the default, and nothing about their contract changes.
    ///
    /// Contract: `Some(result)` means the transfer is over, exactly as if the read had been
    /// submitted and its completion reaped (same range and buffer rules as [`Command::Read`],
    /// same errors), and `buf` is not referenced afterwards. A device may answer `None` at any
    /// time (for example with requests in flight); the caller then submits the request
    /// instead. It must never block on other requests.
    fn read_now(&mut self, lba: u64, buf: &mut [u8]) -> Option<Result<(), IoError>> {
        let _ = (lba, buf);
        None
    }

    /// Optional synchronous fast path: write `buf` to the sectors starting at `lba` before
    /// returning (never FUA). `None` (the default) means "not here, use `submit`".
    ///
    /// Why it exists: the write twin of [`read_now`](Self::read_now). A whole, aligned block of
    /// file data can go from the user's buffer to the device in one copy, without a cache
    /// slot to fill first and write back later.
    ///
    /// Contract: `Some(result)` means the write has *completed*, exactly as if it had been
    /// submitted and its completion reaped (same range and buffer rules as
    /// [`Command::Write`]). Durability follows the module rules for a completed write: on a
    /// device with a volatile cache it is durable only after a flush submitted afterwards
    /// completes. A device may answer `None` at any time; it must never block on other
    /// requests.
    fn write_now(&mut self, lba: u64, buf: &[u8]) -> Option<Result<(), IoError>> {
        let _ = (lba, buf);
        None
    }
}

impl<'b, D: BlockDevice<'b> + ?Sized> BlockDevice<'b> for &mut D {
    fn geometry(&self) -> Geometry {
        (**self).geometry()
    }
    fn submit(&mut self, req: Request<'b>) -> Result<(), Busy<'b>> {
        (**self).submit(req)
    }
    fn poll(&mut self) -> Option<Completion<'b>> {
        (**self).poll()
    }
    fn in_flight(&self) -> usize {
        (**self).in_flight()
    }
    fn read_now(&mut self, lba: u64, buf: &mut [u8]) -> Option<Result<(), IoError>> {
        (**self).read_now(lba, buf)
    }
    fn write_now(&mut self, lba: u64, buf: &[u8]) -> Option<Result<(), IoError>> {
        (**self).write_now(lba, buf)
    }
}

/// Checks a read or write against the geometry: the buffer must be a non-empty whole number of
/// sectors and the range must lie on the device. Shared by every driver.
pub fn check_range(geo: &Geometry, lba: u64, len: usize) -> Result<u64, IoError> {
    let ss = geo.sector_size as usize;
    if len == 0 || ss == 0 || len % ss != 0 {
        return Err(IoError::BadBuffer);
    }
    let count = (len / ss) as u64;
    match lba.checked_add(count) {
        Some(end) if end <= geo.sector_count => Ok(count),
        _ => Err(IoError::OutOfRange),
    }
}

/// Run one request to its end: submit (polling while the queue is full), then poll until its
/// completion arrives, and return that completion with its buffer.
///
/// This is the blocking helper every blocking call is built on. It must only be used when
/// nothing else is in flight on `dev` (otherwise another request's completion could be reaped
/// here); it checks that and fails the request with [`IoError::Unsupported`] if not.
pub fn run<'b, D: BlockDevice<'b> + ?Sized>(dev: &mut D, command: Command<'b>) -> Completion<'b> {
    const TAG: Tag = Tag::MAX;
    if dev.in_flight() != 0 {
        let buf = match command {
            Command::Read { buf, .. } | Command::Write { buf, .. } => Some(buf),
            _ => None,
        };
        return Completion {
            tag: TAG,
            result: Err(IoError::Unsupported),
            buf,
        };
    }
    let mut req = Request { tag: TAG, command };
    // With nothing in flight the queue cannot be full; a device answering Busy anyway is
    // given back its own request until it takes it.
    while let Err(Busy(r)) = dev.submit(req) {
        req = r;
    }
    loop {
        if let Some(c) = dev.poll() {
            return c;
        }
    }
}

/// Blocking read of `buf.len()` bytes at sector `lba`; the buffer comes back with the result.
pub fn read_blocks<'b, D: BlockDevice<'b> + ?Sized>(
    dev: &mut D,
    lba: u64,
    buf: &'b mut [u8],
) -> Completion<'b> {
    run(dev, Command::Read { lba, buf })
}

/// Blocking write of `buf` at sector `lba`; the buffer comes back with the result.
pub fn write_blocks<'b, D: BlockDevice<'b> + ?Sized>(
    dev: &mut D,
    lba: u64,
    buf: &'b mut [u8],
    fua: bool,
) -> Completion<'b> {
    run(dev, Command::Write { lba, buf, fua })
}

/// Blocking flush.
pub fn flush<'b, D: BlockDevice<'b> + ?Sized>(dev: &mut D) -> Result<(), IoError> {
    run(dev, Command::Flush).result
}
