//! The virtio-blk driver (virtio 1.x §5.2) as a [`BlockDevice`].
//!
//! # Requests
//!
//! Every request is one descriptor chain on the single request queue:
//!
//! | descriptor | device | content |
//! |---|---|---|
//! | header | reads | `type` (IN, OUT, FLUSH, DISCARD), reserved, `sector` (always in 512-byte units) |
//! | data (0 or more) | reads for OUT, writes for IN | the caller's buffer, one descriptor per contiguous bus range |
//! | discard segment | reads | `sector`, `num_sectors`, `flags` (DISCARD only) |
//! | status | writes | one byte: OK, IOERR, UNSUPP |
//!
//! Headers, discard segments and status bytes live in a DMA area owned by the driver, one
//! entry per possible chain head, so they never move while the device reads them. The
//! caller's buffer is translated page by page with [`Platform::dma_address`]; adjacent pages
//! that are adjacent on the bus share a descriptor, and a run is cut at the device's
//! `size_max`. A buffer needing more than `seg_max` segments (or more descriptors than the
//! queue has) completes with [`IoError::BadBuffer`].
//!
//! [`submit`](BlockDevice::submit) writes the chain, publishes it and rings the doorbell
//! (unless the device suppressed notifications), and returns: it never waits. A full ring
//! answers [`Busy`]. [`poll`](BlockDevice::poll) reads one used-ring entry, if any, and returns
//! the completion of the request whose chain head it names: completions come back in the
//! device's order, matched to the caller's [`Tag`] by descriptor id.
//!
//! # Durability
//!
//! virtio has no FUA. With `VIRTIO_BLK_F_FLUSH` the device may cache writes
//! ([`Geometry::volatile_cache`] is true unless `VIRTIO_BLK_F_CONFIG_WCE` shows a
//! write-through cache) and [`Command::Flush`] is a queued `VIRTIO_BLK_T_FLUSH` request.
//! Without it the specification requires a write-through device, so the geometry reports no
//! volatile cache and a flush completes at once: every completed write is already durable.
//! A write with the FUA flag is rejected with [`IoError::Unsupported`] (the geometry says
//! `fua: false`), rather than being silently weakened.
//!
//! # Errors
//!
//! Requests the driver can refuse without the device (out of range, bad length, a write or
//! discard to a read-only device, FUA, a discard the device does not offer) complete through
//! the same `poll` path with the matching [`IoError`]. Device status bytes map to
//! `IOERR` → [`IoError::Media`], `UNSUPP` → [`IoError::Unsupported`]; a status byte the device
//! never wrote (still the driver's marker 0xFF) or any other value becomes
//! [`IoError::Device`] with that value. A used-ring entry that names no request in flight is
//! counted in [`BlkStats::protocol_errors`] and dropped.

use core::fmt;
use core::ptr::NonNull;

use bonsaifs::device::{
    check_range, BlockDevice, Busy, Command, Completion, Geometry, IoError, Request, Tag,
};
use heapless::Deque;

use super::queue::{Segment, SplitQueue};
use super::transport::{config_read_u64, Transport};
use super::{device_type, feature, status, VirtioError};
use crate::platform::{wait_until, DmaSync, Platform, PAGE_SIZE};

bitflags::bitflags! {
    /// virtio-blk feature bits (§5.2.3) this driver knows.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct BlkFeatures: u64 {
        /// `size_max`: the largest single segment.
        const SIZE_MAX = 1 << 1;
        /// `seg_max`: the most data segments per request.
        const SEG_MAX = 1 << 2;
        /// Legacy disk geometry (read, not used).
        const GEOMETRY = 1 << 4;
        /// The device is read-only.
        const RO = 1 << 5;
        /// `blk_size`: the logical block size.
        const BLK_SIZE = 1 << 6;
        /// The FLUSH command; without it the device must be write-through.
        const FLUSH = 1 << 9;
        /// Topology hints (read, not used).
        const TOPOLOGY = 1 << 10;
        /// The `writeback` configuration field shows the cache mode.
        const CONFIG_WCE = 1 << 11;
        /// Several request queues (not negotiated: one queue).
        const MQ = 1 << 12;
        /// The DISCARD command.
        const DISCARD = 1 << 13;
        /// The WRITE_ZEROES command (not negotiated).
        const WRITE_ZEROES = 1 << 14;
        /// Transport feature: the modern interface.
        const VERSION_1 = feature::VERSION_1;
        /// Transport feature: accesses go through the platform's IOMMU.
        const ACCESS_PLATFORM = feature::ACCESS_PLATFORM;
        /// Transport feature: the device needs platform barriers.
        const ORDER_PLATFORM = feature::ORDER_PLATFORM;
    }
}

/// The features this driver accepts when offered.
const WANTED: BlkFeatures = BlkFeatures::SIZE_MAX
    .union(BlkFeatures::SEG_MAX)
    .union(BlkFeatures::RO)
    .union(BlkFeatures::BLK_SIZE)
    .union(BlkFeatures::FLUSH)
    .union(BlkFeatures::CONFIG_WCE)
    .union(BlkFeatures::DISCARD)
    .union(BlkFeatures::VERSION_1)
    .union(BlkFeatures::ACCESS_PLATFORM)
    .union(BlkFeatures::ORDER_PLATFORM);

/// Offsets in `struct virtio_blk_config` (§5.2.4).
mod config {
    pub const CAPACITY: usize = 0;
    pub const SIZE_MAX: usize = 8;
    pub const SEG_MAX: usize = 12;
    pub const BLK_SIZE: usize = 20;
    pub const WRITEBACK: usize = 32;
    pub const MAX_DISCARD_SECTORS: usize = 36;
    pub const MAX_DISCARD_SEG: usize = 40;
}

/// Request types.
mod req_type {
    pub const IN: u32 = 0;
    pub const OUT: u32 = 1;
    pub const FLUSH: u32 = 4;
    pub const DISCARD: u32 = 11;
}

/// Status byte values.
mod req_status {
    pub const OK: u8 = 0;
    pub const IOERR: u8 = 1;
    pub const UNSUPP: u8 = 2;
    /// Written by the driver before submission; a device that completes a request without
    /// writing its status leaves it.
    pub const NOT_WRITTEN: u8 = 0xFF;
}

/// virtio-blk addresses the disk in 512-byte units whatever its block size.
const VIRTIO_SECTOR: u64 = 512;

/// The request queue's index.
const REQUEST_QUEUE: u16 = 0;

/// How long a reset may take before start-up fails.
const RESET_TIMEOUT_US: u64 = 1_000_000;

/// Bytes per entry of the driver's DMA area: header (16), discard segment (16), status (1),
/// padded to keep entries 16-byte aligned.
const AREA_ENTRY: usize = 48;
const AREA_HDR: usize = 0;
const AREA_DISCARD: usize = 16;
const AREA_STATUS: usize = 32;

/// Counters of what the driver did since start-up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct BlkStats {
    /// Requests handed to the device.
    pub submitted: u64,
    /// Requests the device completed (reaped from the used ring).
    pub completed: u64,
    /// Requests answered by the driver without the device (errors, flush on a write-through
    /// device).
    pub answered_by_driver: u64,
    /// Doorbell writes.
    pub notifications: u64,
    /// `submit` calls answered with [`Busy`].
    pub busy: u64,
    /// Used-ring entries that named no request in flight (a misbehaving device).
    pub protocol_errors: u64,
    /// Most requests in flight at the device at once.
    pub max_in_flight: u32,
}

/// A request at the device, indexed by its chain's head descriptor.
struct InFlight {
    tag: Tag,
    buf: Option<&'static mut [u8]>,
    /// The device wrote into `buf` (a read): caches need invalidating before the CPU reads.
    device_wrote: bool,
}

/// The virtio-blk driver over transport `T`, platform `P`, with at most `N` descriptors
/// (the queue size is the largest power of two ≤ `N` the device accepts).
///
/// # Memory
///
/// DMA memory from the platform, once: [`SplitQueue::dma_bytes`] for the rings plus 48 bytes
/// per descriptor for request headers (`N = 128`: 3.5 KiB + 6 KiB). In the struct: about
/// 60 bytes per descriptor (`N = 128`: 7.5 KiB), mostly the slots that hold the caller's buffers and
/// completions that are ready.
///
/// # Queue depth
///
/// A read or write of a buffer that is contiguous on the bus takes three descriptors, a flush
/// two, so [`Geometry::queue_depth`] is `size / 3`; more requests fit when some are flushes.
pub struct VirtioBlk<T: Transport, P: Platform, const N: usize> {
    transport: T,
    platform: P,
    queue: SplitQueue<N>,
    /// Header / discard segment / status entries, one per descriptor id (used for heads).
    area: NonNull<u8>,
    area_bus: u64,
    slots: [Option<InFlight>; N],
    /// Completions the driver produced itself, waiting for `poll`.
    ready: Deque<Completion<'static>, N>,
    at_device: u32,
    features: BlkFeatures,
    geometry: Geometry,
    /// 512-byte virtio sectors per logical sector.
    sector_units: u64,
    /// `seg_max` (0 = no limit given).
    seg_max: u32,
    /// `size_max` (0 = no limit given).
    size_max: u32,
    max_discard_sectors: u32,
    stats: BlkStats,
}

// SAFETY: the driver owns its DMA area (never freed) and the buffers in flight; moving it to
// another thread moves all of that.
unsafe impl<T: Transport + Send, P: Platform + Send, const N: usize> Send for VirtioBlk<T, P, N> {}

impl<T: Transport, P: Platform, const N: usize> fmt::Debug for VirtioBlk<T, P, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VirtioBlk")
            .field("geometry", &self.geometry)
            .field("features", &self.features)
            .field("queue", &self.queue)
            .field("stats", &self.stats)
            .finish()
    }
}

impl<T: Transport, P: Platform, const N: usize> VirtioBlk<T, P, N> {
    /// Reset the device, negotiate features, set up the request queue and start the device
    /// (virtio 1.x §3.1.1). On failure the device is left with `FAILED` set.
    pub fn new(mut transport: T, platform: P) -> Result<Self, VirtioError> {
        if transport.device_type() != device_type::BLOCK {
            return Err(VirtioError::WrongDeviceType(transport.device_type()));
        }
        match Self::start(&mut transport, &platform) {
            Ok(parts) => Ok(Self::assemble(transport, platform, parts)),
            Err(e) => {
                let s = transport.status();
                transport.set_status(s | status::FAILED);
                Err(e)
            }
        }
    }

    fn start(t: &mut T, platform: &P) -> Result<Started<N>, VirtioError> {
        t.set_status(0);
        if !wait_until(platform, RESET_TIMEOUT_US, || t.status() == 0) {
            return Err(VirtioError::ResetTimeout);
        }
        t.set_status(status::ACKNOWLEDGE);
        t.set_status(status::ACKNOWLEDGE | status::DRIVER);

        let offered = BlkFeatures::from_bits_retain(t.device_features());
        if !offered.contains(BlkFeatures::VERSION_1) {
            return Err(VirtioError::NoVersion1);
        }
        let features = offered & WANTED;
        t.set_driver_features(features.bits());
        t.set_status(status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK);
        if t.status() & status::FEATURES_OK == 0 {
            return Err(VirtioError::FeaturesRejected);
        }

        let cfg = read_config(t, features)?;

        let size = SplitQueue::<N>::choose_size(t.max_queue_size(REQUEST_QUEUE))
            .ok_or(VirtioError::QueueUnavailable)?;
        let queue = SplitQueue::<N>::new(platform, size).ok_or(VirtioError::NoDmaMemory)?;
        let area_len = AREA_ENTRY * usize::from(size);
        let area = platform
            .dma_alloc(area_len, 64)
            .filter(|r| r.len() >= area_len)
            .ok_or(VirtioError::NoDmaMemory)?;
        let area_ptr = NonNull::new(area.as_ptr()).ok_or(VirtioError::NoDmaMemory)?;
        let area_bus = platform
            .dma_address(area.as_ptr())
            .ok_or(VirtioError::NotDmaReachable)?;
        let (desc, driver, device) = queue.bus_addresses();
        t.setup_queue(REQUEST_QUEUE, size, desc, driver, device)?;

        t.set_status(
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK,
        );
        Ok(Started {
            queue,
            area: area_ptr,
            area_bus,
            features,
            cfg,
        })
    }

    fn assemble(transport: T, platform: P, s: Started<N>) -> Self {
        let size = s.queue.size();
        let volatile_cache = s.features.contains(BlkFeatures::FLUSH)
            && (!s.features.contains(BlkFeatures::CONFIG_WCE) || s.cfg.writeback != 0);
        let geometry = Geometry {
            sector_size: s.cfg.sector_size,
            sector_count: s.cfg.sectors,
            queue_depth: (size / 3).max(1),
            volatile_cache,
            fua: false,
            atomic_write_sectors: 0,
            read_only: s.features.contains(BlkFeatures::RO),
        };
        VirtioBlk {
            transport,
            platform,
            queue: s.queue,
            area: s.area,
            area_bus: s.area_bus,
            slots: [const { None }; N],
            ready: Deque::new(),
            at_device: 0,
            features: s.features,
            geometry,
            sector_units: u64::from(s.cfg.sector_size) / VIRTIO_SECTOR,
            seg_max: s.cfg.seg_max,
            size_max: s.cfg.size_max,
            max_discard_sectors: s.cfg.max_discard_sectors,
            stats: BlkStats::default(),
        }
    }

    /// The negotiated features.
    pub fn features(&self) -> BlkFeatures {
        self.features
    }

    /// What the driver did so far.
    pub fn stats(&self) -> BlkStats {
        self.stats
    }

    /// The device status register (for diagnostics: `DEVICE_NEEDS_RESET` shows a device that
    /// stopped processing requests).
    pub fn device_status(&self) -> u8 {
        self.transport.status()
    }

    /// The number of descriptors in the request queue.
    pub fn queue_size(&self) -> u16 {
        self.queue.size()
    }

    fn area_entry(&self, head: u16) -> *mut u8 {
        // SAFETY: `head < size` (a descriptor id), and the area holds `size` entries.
        unsafe { self.area.as_ptr().add(AREA_ENTRY * usize::from(head)) }
    }

    /// Queue a completion answered by the driver; `Busy` if that queue is full.
    fn answer(
        &mut self,
        req: Request<'static>,
        result: Result<(), IoError>,
    ) -> Result<(), Busy<'static>> {
        if self.ready.is_full() {
            self.stats.busy += 1;
            return Err(Busy(req));
        }
        let buf = match req.command {
            Command::Read { buf, .. } | Command::Write { buf, .. } => Some(buf),
            Command::Flush | Command::Discard { .. } => None,
        };
        let c = Completion {
            tag: req.tag,
            result,
            buf,
        };
        // Cannot fail: fullness was checked above.
        let _ = self.ready.push_back(c);
        self.stats.answered_by_driver += 1;
        Ok(())
    }

    /// Checks that need no device; `Err` is the error the request completes with.
    fn validate(&self, command: &Command<'static>) -> Result<(), IoError> {
        let ro = self.geometry.read_only;
        match command {
            Command::Read { lba, buf } => check_range(&self.geometry, *lba, buf.len()).map(drop),
            Command::Write { lba, buf, fua } => {
                check_range(&self.geometry, *lba, buf.len())?;
                if ro {
                    Err(IoError::ReadOnly)
                } else if *fua {
                    Err(IoError::Unsupported)
                } else {
                    Ok(())
                }
            }
            Command::Flush => Ok(()),
            Command::Discard { lba, count } => {
                if ro {
                    return Err(IoError::ReadOnly);
                }
                if !self.features.contains(BlkFeatures::DISCARD) {
                    return Err(IoError::Unsupported);
                }
                let end = lba.checked_add(*count).ok_or(IoError::OutOfRange)?;
                if *count == 0 {
                    return Err(IoError::BadBuffer);
                }
                if end > self.geometry.sector_count {
                    return Err(IoError::OutOfRange);
                }
                let units = count.saturating_mul(self.sector_units);
                if units > u64::from(self.max_discard_sectors) {
                    return Err(IoError::Unsupported);
                }
                Ok(())
            }
        }
    }

    /// The bus-contiguous runs of `buf`: pages are translated one by one and merged when they
    /// continue the previous run on the bus; runs are cut at `size_max`. `None` if a page is
    /// not reachable by DMA or the buffer needs more than [`MAX_DATA_SEGMENTS`] runs.
    fn data_runs(&self, buf: &[u8]) -> Option<heapless::Vec<(u64, u32), MAX_DATA_SEGMENTS>> {
        let limit = if self.size_max == 0 {
            u32::MAX
        } else {
            self.size_max
        };
        let mut runs: heapless::Vec<(u64, u32), MAX_DATA_SEGMENTS> = heapless::Vec::new();
        let mut off = 0usize;
        while off < buf.len() {
            // SAFETY: `off < buf.len()`: a pointer into the buffer.
            let p = unsafe { buf.as_ptr().add(off) };
            let page_left = PAGE_SIZE - (p as usize & (PAGE_SIZE - 1));
            let chunk = page_left.min(buf.len() - off);
            off += chunk;
            let mut bus = self.platform.dma_address(p)?;
            // `chunk` ≤ PAGE_SIZE, so it fits in u32.
            let mut left = chunk as u32;
            while left > 0 {
                match runs.last_mut() {
                    Some((start, len)) if *start + u64::from(*len) == bus && *len < limit => {
                        let take = left.min(limit - *len);
                        *len += take;
                        bus += u64::from(take);
                        left -= take;
                    }
                    _ => {
                        let take = left.min(limit);
                        runs.push((bus, take)).ok()?;
                        bus += u64::from(take);
                        left -= take;
                    }
                }
            }
        }
        Some(runs)
    }

    /// Build and publish the chain for a validated request. `Err(None)` = ring full;
    /// `Err(Some(e))` = the request fails with `e` without reaching the device.
    fn enqueue(&mut self, command: &Command<'static>) -> Result<u16, Option<IoError>> {
        let (kind, sector, data): (u32, u64, Option<(&[u8], bool)>) = match command {
            Command::Read { lba, buf } => (req_type::IN, *lba, Some((&**buf, true))),
            Command::Write { lba, buf, .. } => (req_type::OUT, *lba, Some((&**buf, false))),
            Command::Flush => (req_type::FLUSH, 0, None),
            Command::Discard { lba, .. } => (req_type::DISCARD, *lba, None),
        };
        let discard_units = match command {
            // Validated against max_discard_sectors (a u32) already.
            Command::Discard { count, .. } => Some((*count * self.sector_units) as u32),
            _ => None,
        };

        let runs = match data {
            Some((buf, _)) => self.data_runs(buf).ok_or(Some(IoError::BadBuffer))?,
            None => heapless::Vec::new(),
        };
        if self.seg_max != 0 && runs.len() > self.seg_max as usize {
            return Err(Some(IoError::BadBuffer));
        }
        let needed = runs.len() + 2 + usize::from(discard_units.is_some());
        if needed > usize::from(self.queue.size()) {
            return Err(Some(IoError::BadBuffer));
        }
        if needed > usize::from(self.queue.free_descriptors()) {
            return Err(None);
        }

        // Cache maintenance for the caller's buffer before the device can see it.
        let device_writes = match data {
            Some((buf, device_writes)) => {
                let sync = if device_writes {
                    DmaSync::BeforeDeviceWrites
                } else {
                    DmaSync::BeforeDeviceReads
                };
                self.platform.dma_sync(buf.as_ptr(), buf.len(), sync);
                device_writes
            }
            None => false,
        };

        let header = RequestHeader {
            kind,
            sector: sector * self.sector_units,
            discard_units,
        };
        let (area, area_bus) = (self.area, self.area_bus);
        let pushed = self.queue.push(&self.platform, needed, |head| {
            // The head's area entry holds header, discard segment and status. The head
            // descriptor is still free, so the device does not read the entry now; it is
            // filled before the chain is published.
            header.write(area, head);
            let bus = |offset: usize| area_bus + (AREA_ENTRY * usize::from(head) + offset) as u64;
            let hdr = Segment {
                addr: bus(AREA_HDR),
                len: 16,
                device_writes: false,
            };
            let data_segs = runs.iter().map(move |&(addr, len)| Segment {
                addr,
                len,
                device_writes,
            });
            let discard_seg = discard_units.map(|_| Segment {
                addr: bus(AREA_DISCARD),
                len: 16,
                device_writes: false,
            });
            let status_seg = Segment {
                addr: bus(AREA_STATUS),
                len: 1,
                device_writes: true,
            };
            core::iter::once(hdr)
                .chain(data_segs)
                .chain(discard_seg)
                .chain(core::iter::once(status_seg))
        });
        // `push` only refuses when descriptors are short (checked above) or the chain is
        // shorter than counted (it is not); either way nothing was published.
        pushed.ok_or(None)
    }

    fn notify_if_needed(&mut self) {
        if self.queue.needs_notify(&self.platform) {
            self.transport.notify(REQUEST_QUEUE);
            self.stats.notifications += 1;
        }
    }

    fn status_byte(&self, head: u16) -> u8 {
        // SAFETY: inside the head's area entry; the device finished with it (its chain came
        // back through the used ring, after the DmaReads fence in `pop_used`).
        unsafe { self.area_entry(head).add(AREA_STATUS).read_volatile() }
    }
}

/// What the driver writes into a chain head's DMA area entry before publishing the chain.
#[derive(Clone, Copy)]
struct RequestHeader {
    kind: u32,
    /// First sector, in 512-byte units.
    sector: u64,
    /// For a discard: sectors (512-byte units) to discard.
    discard_units: Option<u32>,
}

impl RequestHeader {
    /// Fill entry `head` of the DMA area at `area` (header, discard segment, and the status
    /// byte preset to [`req_status::NOT_WRITTEN`]).
    fn write(&self, area: NonNull<u8>, head: u16) {
        // SAFETY: `head` is a descriptor id (< queue size) and the area holds one 48-byte
        // entry per descriptor; offsets are aligned for their widths (entries are 16-byte
        // aligned in a 64-byte aligned area). The caller only fills entries of free heads, which
        // the device does not read.
        unsafe {
            let entry = area.as_ptr().add(AREA_ENTRY * usize::from(head));
            entry
                .add(AREA_HDR)
                .cast::<u32>()
                .write_volatile(self.kind.to_le());
            entry.add(AREA_HDR + 4).cast::<u32>().write_volatile(0);
            entry
                .add(AREA_HDR + 8)
                .cast::<u64>()
                .write_volatile(self.sector.to_le());
            if let Some(units) = self.discard_units {
                let seg = entry.add(AREA_DISCARD);
                seg.cast::<u64>().write_volatile(self.sector.to_le());
                seg.add(8).cast::<u32>().write_volatile(units.to_le());
                seg.add(12).cast::<u32>().write_volatile(0);
            }
            entry
                .add(AREA_STATUS)
                .write_volatile(req_status::NOT_WRITTEN);
        }
    }
}

/// Most data descriptors in one request: a buffer whose pages are scattered on the bus over
/// more runs than this (128 KiB in 4 KiB pages) completes with [`IoError::BadBuffer`].
pub const MAX_DATA_SEGMENTS: usize = 32;

/// What start-up found, before the driver struct exists.
struct Started<const N: usize> {
    queue: SplitQueue<N>,
    area: NonNull<u8>,
    area_bus: u64,
    features: BlkFeatures,
    cfg: BlkConfig,
}

/// The configuration fields the driver uses.
#[derive(Debug, Clone, Copy)]
struct BlkConfig {
    sector_size: u32,
    sectors: u64,
    seg_max: u32,
    size_max: u32,
    writeback: u8,
    max_discard_sectors: u32,
}

fn read_config<T: Transport>(t: &T, features: BlkFeatures) -> Result<BlkConfig, VirtioError> {
    let capacity = config_read_u64(t, config::CAPACITY).ok_or(VirtioError::BadGeometry)?;
    let blk_size = if features.contains(BlkFeatures::BLK_SIZE) {
        t.config_read_u32(config::BLK_SIZE)
    } else {
        512
    };
    // The filesystem takes 512- or 4096-byte sectors; any other reported block size is
    // addressed in 512-byte sectors, which every virtio-blk device accepts.
    let sector_size = if blk_size == 4096 { 4096 } else { 512 };
    let sectors = capacity / (u64::from(sector_size) / VIRTIO_SECTOR);
    if sectors == 0 {
        return Err(VirtioError::BadGeometry);
    }
    let opt = |f: BlkFeatures, off: usize| {
        if features.contains(f) {
            t.config_read_u32(off)
        } else {
            0
        }
    };
    let max_discard_sectors = if features.contains(BlkFeatures::DISCARD)
        && t.config_read_u32(config::MAX_DISCARD_SEG) != 0
    {
        t.config_read_u32(config::MAX_DISCARD_SECTORS)
    } else {
        0
    };
    Ok(BlkConfig {
        sector_size,
        sectors,
        seg_max: opt(BlkFeatures::SEG_MAX, config::SEG_MAX),
        // A size_max below one sector cannot be honoured for whole sectors; treat as absent.
        size_max: match opt(BlkFeatures::SIZE_MAX, config::SIZE_MAX) {
            s if s < 512 => 0,
            s => s,
        },
        writeback: if features.contains(BlkFeatures::CONFIG_WCE) {
            t.config_read_u8(config::WRITEBACK)
        } else {
            1
        },
        max_discard_sectors,
    })
}

impl<T: Transport, P: Platform, const N: usize> BlockDevice<'static> for VirtioBlk<T, P, N> {
    fn geometry(&self) -> Geometry {
        self.geometry
    }

    fn submit(&mut self, req: Request<'static>) -> Result<(), Busy<'static>> {
        if let Err(e) = self.validate(&req.command) {
            return self.answer(req, Err(e));
        }
        if matches!(req.command, Command::Flush) && !self.features.contains(BlkFeatures::FLUSH) {
            // No FLUSH feature: the device is write-through (§5.2.5), every completed write is
            // already durable, so the flush has nothing left to wait for.
            return self.answer(req, Ok(()));
        }
        match self.enqueue(&req.command) {
            Ok(head) => {
                let (buf, device_wrote) = match req.command {
                    Command::Read { buf, .. } => (Some(buf), true),
                    Command::Write { buf, .. } => (Some(buf), false),
                    Command::Flush | Command::Discard { .. } => (None, false),
                };
                self.slots[usize::from(head)] = Some(InFlight {
                    tag: req.tag,
                    buf,
                    device_wrote,
                });
                self.at_device += 1;
                self.stats.submitted += 1;
                self.stats.max_in_flight = self.stats.max_in_flight.max(self.at_device);
                self.notify_if_needed();
                Ok(())
            }
            Err(None) => {
                self.stats.busy += 1;
                Err(Busy(req))
            }
            Err(Some(e)) => self.answer(req, Err(e)),
        }
    }

    fn poll(&mut self) -> Option<Completion<'static>> {
        if let Some(c) = self.ready.pop_front() {
            return Some(c);
        }
        loop {
            let (head, _len) = match self.queue.pop_used(&self.platform)? {
                Ok(entry) => entry,
                Err(_) => {
                    self.stats.protocol_errors += 1;
                    continue;
                }
            };
            let Some(slot) = self.slots.get_mut(usize::from(head)).and_then(Option::take) else {
                // The queue only returns heads of chains it published, which always have a
                // slot; count rather than trust it.
                self.stats.protocol_errors += 1;
                continue;
            };
            self.at_device = self.at_device.saturating_sub(1);
            self.stats.completed += 1;
            let result = match self.status_byte(head) {
                req_status::OK => Ok(()),
                req_status::IOERR => Err(IoError::Media),
                req_status::UNSUPP => Err(IoError::Unsupported),
                other => Err(IoError::Device(u16::from(other))),
            };
            if let Some(buf) = slot.buf.as_deref() {
                if slot.device_wrote {
                    self.platform
                        .dma_sync(buf.as_ptr(), buf.len(), DmaSync::AfterDeviceWrote);
                }
            }
            return Some(Completion {
                tag: slot.tag,
                result,
                buf: slot.buf,
            });
        }
    }

    fn in_flight(&self) -> usize {
        self.at_device as usize + self.ready.len()
    }
}

impl<T: Transport, P: Platform, const N: usize> Drop for VirtioBlk<T, P, N> {
    /// Reset the device so that it stops reading and writing memory. Buffers still in flight
    /// are `'static` and simply not returned.
    fn drop(&mut self) {
        self.transport.set_status(0);
    }
}
