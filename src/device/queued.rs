//! A host model of a queued device with a volatile write cache (NVMe, virtio-blk).
//!
//! # Why it exists
//!
//! The filesystem's hardest promises — non-blocking `NOWAIT` writes, `DSYNC` reported only
//! once data is on stable media, a consistent volume after a power cut at any instant — depend
//! on the device being *allowed* to do everything the NVMe and virtio specifications allow:
//! complete requests late and out of order, acknowledge writes that are still only in a
//! volatile cache, and persist only what FUA or a properly ordered flush forces out. A RAM disk
//! that finishes everything in order and at once hides every ordering bug. This model does the
//! opposite: it is as unhelpful as the contract permits, deterministically (a seeded PRNG), so
//! a failing test replays.
//!
//! # The model
//!
//! * **Queue.** At most `queue_depth` requests are in flight (submitted and not yet returned
//!   by `poll`); one more is answered with [`Busy`]. Each request becomes ready a random
//!   number of polls (in `min_polls ..= max_polls`) after its submission; each `poll`
//!   advances a poll counter and returns one *randomly chosen* ready request, so completions
//!   come out of order.
//! * **Two images.** `volatile` is what reads see; `durable` is what survives a power cut.
//!   A request takes effect when `poll` returns it (its completion instant): a read copies from
//!   `volatile` then, a write lands in `volatile` then.
//! * **Durability.** A completed write also lands in `durable` at completion if it was FUA
//!   (and the device advertises FUA; otherwise the flag is ignored, as a device without FUA
//!   support would) or if the device has no volatile cache. Every other completed write is
//!   remembered as *completed, not yet durable*, with its completion sequence number.
//! * **Flush.** When a flush is *submitted* it captures the writes completed so far; when it
//!   *completes*, exactly those (still unflushed) writes are copied to `durable`, in completion
//!   order. Writes completed after the flush was submitted are not covered, which is what lets
//!   tests catch a flush issued too early.
//! * **Overwrites.** If a write becomes durable at completion (FUA / no cache) or a discard
//!   completes, the overlapping sectors of earlier not-yet-durable writes can never reach the
//!   media after it, so they are dropped from those pending writes.
//! * **Discard** zero-fills both images at completion (the contract lets reads return anything
//!   afterwards; zeros on stable media make a premature discard visible in crash tests).
//! * **Power cut.** [`QueuedRamDisk::power_cut`] drops every request in flight (their buffers
//!   are simply dropped), forgets the not-yet-durable writes and sets `volatile := durable`.
//!   [`QueuedRamDisk::power_cut_keeping`] first lets the caller choose which not-yet-durable
//!   writes happened to reach the media, for crash-state enumeration.
//!
//! Malformed requests (out of range, bad buffer length) are accepted and complete, in their
//! turn, with the error from [`check_range`], the buffer handed back. Nothing a caller submits
//! can make the model panic; only an invalid [`QueuedConfig`] given to a constructor does.
//!
//! This module needs `std` (it stores both images in `Vec`s) and is compiled for tests and
//! with the `std` feature only.
#![cfg(any(test, feature = "std"))]

use core::fmt;
use core::ops::Range;
use std::vec;
use std::vec::Vec;

use super::{check_range, BlockDevice, Busy, Command, Completion, Geometry, IoError, Request, Tag};

/// The shape and behaviour of a [`QueuedRamDisk`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct QueuedConfig {
    /// Bytes per sector: 512 or 4096.
    pub sector_size: u32,
    /// Number of sectors.
    pub sector_count: u64,
    /// Requests that may be in flight at once (at least 1).
    pub queue_depth: u16,
    /// Whether writes are acknowledged before they are durable (a flush or FUA is needed).
    pub volatile_cache: bool,
    /// Whether the device honours FUA; if false, the FUA flag on writes is ignored.
    pub fua: bool,
    /// Fewest polls after submission before a request may complete (0 behaves like 1).
    pub min_polls: u32,
    /// Most polls after submission before a request is ready (a larger `min_polls` wins).
    pub max_polls: u32,
    /// Seed of the PRNG that picks latencies and completion order.
    pub seed: u64,
}

impl Default for QueuedConfig {
    /// 512-byte sectors, 64 Ki sectors (32 MiB), depth 32, volatile cache, FUA, 1..=4 polls,
    /// seed 1.
    fn default() -> Self {
        Self {
            sector_size: 512,
            sector_count: 64 * 1024,
            queue_depth: 32,
            volatile_cache: true,
            fua: true,
            min_polls: 1,
            max_polls: 4,
            seed: 1,
        }
    }
}

/// A request inside the device.
struct InFlight<'b> {
    tag: Tag,
    command: Command<'b>,
    /// Poll count at which the request becomes ready.
    ready_at: u64,
    /// For a flush: it covers the unflushed writes with a sequence number below this.
    covers_below: u64,
}

/// A write that completed but is not durable yet.
struct PendingWrite {
    /// Completion sequence number.
    seq: u64,
    lba: u64,
    data: Vec<u8>,
    /// Per sector: false once a later durable write or discard superseded it.
    live: Vec<bool>,
}

/// A queued, out-of-order, volatile-cache RAM disk: the host model of an NVMe or virtio-blk
/// device. See the module documentation for the exact model.
///
/// ```
/// use bonsaifs::device::{write_blocks, flush, QueuedConfig, QueuedRamDisk};
///
/// let cfg = QueuedConfig { sector_count: 16, ..QueuedConfig::default() };
/// let mut disk = QueuedRamDisk::new(cfg);
/// let mut data = vec![7u8; 512];
/// assert!(write_blocks(&mut disk, 2, &mut data, false).result.is_ok());
/// assert_eq!(disk.unflushed_writes(), 1);
/// disk.power_cut();
/// assert_eq!(disk.volatile_image()[1024], 0); // the write was lost
/// ```
pub struct QueuedRamDisk<'b> {
    cfg: QueuedConfig,
    volatile: Vec<u8>,
    durable: Vec<u8>,
    queue: Vec<InFlight<'b>>,
    pending: Vec<PendingWrite>,
    /// Number of polls so far.
    clock: u64,
    /// Sequence number the next completed write gets.
    next_seq: u64,
    rng: SplitMix64,
    /// Offers the synchronous fast path (see [`QueuedRamDisk::set_sync_path`]).
    sync_path: bool,
}

impl<'b> QueuedRamDisk<'b> {
    /// A device with both images zeroed.
    ///
    /// # Panics
    ///
    /// If the configuration is invalid (see [`QueuedRamDisk::try_new`]).
    pub fn new(cfg: QueuedConfig) -> Self {
        match Self::try_new(cfg) {
            Ok(d) => d,
            Err(e) => panic!("invalid QueuedConfig {cfg:?}: {e}"),
        }
    }

    /// A device with both images zeroed, or [`IoError::BadBuffer`] if the sector size is not
    /// 512 or 4096, the queue depth is 0, or the capacity does not fit in memory.
    pub fn try_new(cfg: QueuedConfig) -> Result<Self, IoError> {
        let len = image_len(&cfg)?;
        Ok(Self::build(cfg, vec![0; len]))
    }

    /// A device whose volatile and durable images both start as `image`. The sector count is
    /// taken from the image length; `cfg.sector_count` is ignored.
    ///
    /// # Panics
    ///
    /// If the configuration or the image length is invalid (see
    /// [`QueuedRamDisk::try_from_image`]).
    pub fn from_image(cfg: QueuedConfig, image: Vec<u8>) -> Self {
        let len = image.len();
        match Self::try_from_image(cfg, image) {
            Ok(d) => d,
            Err(e) => panic!("invalid image ({len} bytes) or QueuedConfig {cfg:?}: {e}"),
        }
    }

    /// Like [`QueuedRamDisk::from_image`], but returns [`IoError::BadBuffer`] if the image is
    /// not a whole number of sectors or the configuration is invalid.
    pub fn try_from_image(mut cfg: QueuedConfig, image: Vec<u8>) -> Result<Self, IoError> {
        if cfg.sector_size != 512 && cfg.sector_size != 4096 {
            return Err(IoError::BadBuffer);
        }
        let ss = cfg.sector_size as usize;
        if image.len() % ss != 0 {
            return Err(IoError::BadBuffer);
        }
        cfg.sector_count = (image.len() / ss) as u64;
        image_len(&cfg)?;
        Ok(Self::build(cfg, image))
    }

    fn build(mut cfg: QueuedConfig, image: Vec<u8>) -> Self {
        if cfg.min_polls > cfg.max_polls {
            cfg.max_polls = cfg.min_polls;
        }
        Self {
            volatile: image.clone(),
            durable: image,
            queue: Vec::with_capacity(usize::from(cfg.queue_depth)),
            pending: Vec::new(),
            clock: 0,
            next_seq: 0,
            rng: SplitMix64(cfg.seed),
            cfg,
            sync_path: false,
        }
    }

    /// Also offer the synchronous fast path ([`BlockDevice::read_now`],
    /// [`BlockDevice::write_now`]): a transfer that takes effect at once, as a completed
    /// request would, with the same durability rules (a `write_now` on a volatile cache waits
    /// for a flush like any completed write). Off by default, as on NVMe and virtio; on, this
    /// models a device that completes at submit but still has a volatile cache (an SD card
    /// with its cache on), so tests can check the filesystem's fast path against crashes.
    /// Answers `None` while requests are in flight.
    pub fn set_sync_path(&mut self, on: bool) {
        self.sync_path = on;
    }

    /// The configuration in use (with `sector_count` and the latency bounds as applied).
    pub fn config(&self) -> &QueuedConfig {
        &self.cfg
    }

    /// Sets the latency of requests submitted from now on: ready after `min ..= max` polls
    /// (`min == max` gives a fixed latency; a `min` above `max` is used for both).
    pub fn set_latency(&mut self, min_polls: u32, max_polls: u32) {
        self.cfg.min_polls = min_polls;
        self.cfg.max_polls = max_polls.max(min_polls);
    }

    /// What reads see now (including completed writes that are not durable).
    pub fn volatile_image(&self) -> &[u8] {
        &self.volatile
    }

    /// What would survive a power cut now.
    pub fn durable_image(&self) -> &[u8] {
        &self.durable
    }

    /// Number of writes that completed but are not durable yet.
    pub fn unflushed_writes(&self) -> usize {
        self.pending.len()
    }

    /// The completed, not yet durable writes as `(lba, sectors)`, in completion order; the
    /// position of each is the index [`QueuedRamDisk::power_cut_keeping`] asks about.
    pub fn unflushed(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.pending.iter().map(|p| (p.lba, p.live.len() as u64))
    }

    /// Simulates a power loss: every request in flight is dropped (its buffer with it), every
    /// completed but not durable write is lost, and the volatile image becomes the durable
    /// one. The device is usable again at once, as after a reboot.
    pub fn power_cut(&mut self) {
        self.queue.clear();
        self.pending.clear();
        self.volatile.copy_from_slice(&self.durable);
    }

    /// Like [`QueuedRamDisk::power_cut`], but first each completed, not yet durable write `i`
    /// (its index in completion order, `0 .. unflushed_writes()`) reaches the media if
    /// `keep(i)` returns true. Kept writes are applied in completion order.
    pub fn power_cut_keeping(&mut self, mut keep: impl FnMut(usize) -> bool) {
        let pending = core::mem::take(&mut self.pending);
        for (i, p) in pending.iter().enumerate() {
            if keep(i) {
                self.persist(p);
            }
        }
        self.power_cut();
    }

    /// Byte range of `count` sectors at `lba` (already checked against the geometry).
    fn byte_range(&self, lba: u64, count: u64) -> Option<Range<usize>> {
        let ss = u64::from(self.cfg.sector_size);
        let start = usize::try_from(lba.checked_mul(ss)?).ok()?;
        let len = usize::try_from(count.checked_mul(ss)?).ok()?;
        let end = start.checked_add(len)?;
        (end <= self.volatile.len()).then_some(start..end)
    }

    /// Copies the still-live sectors of a pending write into the durable image.
    fn persist(&mut self, p: &PendingWrite) {
        let ss = self.cfg.sector_size as usize;
        for (i, (&live, src)) in p.live.iter().zip(p.data.chunks(ss)).enumerate() {
            if !live {
                continue;
            }
            let Some(range) = self.byte_range(p.lba.saturating_add(i as u64), 1) else {
                continue;
            };
            if let Some(dst) = self.durable.get_mut(range) {
                if dst.len() == src.len() {
                    dst.copy_from_slice(src);
                }
            }
        }
    }

    /// Sectors `lba .. lba + count` reached the media by a later request: earlier pending
    /// writes can no longer land there.
    fn supersede(&mut self, lba: u64, count: u64) {
        let end = lba.saturating_add(count);
        for p in &mut self.pending {
            for (i, live) in p.live.iter_mut().enumerate() {
                let s = p.lba.saturating_add(i as u64);
                if s >= lba && s < end {
                    *live = false;
                }
            }
        }
        self.pending.retain(|p| p.live.iter().any(|&l| l));
    }

    /// A read taking effect: copy from the volatile image.
    fn read_at(&self, geo: &Geometry, lba: u64, buf: &mut [u8]) -> Result<(), IoError> {
        let count = check_range(geo, lba, buf.len())?;
        let range = self.byte_range(lba, count).ok_or(IoError::OutOfRange)?;
        match self.volatile.get(range) {
            Some(src) if src.len() == buf.len() => {
                buf.copy_from_slice(src);
                Ok(())
            }
            _ => Err(IoError::OutOfRange),
        }
    }

    /// A write completing: into the volatile image, and durable now or pending a flush.
    fn write_at(&mut self, geo: &Geometry, lba: u64, buf: &[u8], fua: bool) -> Result<(), IoError> {
        let count = check_range(geo, lba, buf.len())?;
        let range = self.byte_range(lba, count).ok_or(IoError::OutOfRange)?;
        match self.volatile.get_mut(range.clone()) {
            Some(dst) if dst.len() == buf.len() => dst.copy_from_slice(buf),
            _ => return Err(IoError::OutOfRange),
        }
        let durable_now = !self.cfg.volatile_cache || (fua && self.cfg.fua);
        if durable_now {
            if let Some(dst) = self.durable.get_mut(range) {
                dst.copy_from_slice(buf);
            }
            self.supersede(lba, count);
        } else {
            let live = vec![true; buf.len() / self.cfg.sector_size as usize];
            self.pending.push(PendingWrite {
                seq: self.next_seq,
                lba,
                data: buf.to_vec(),
                live,
            });
            self.next_seq += 1;
        }
        Ok(())
    }

    /// Carries out a request at its completion instant.
    fn complete(&mut self, req: InFlight<'b>) -> Completion<'b> {
        let geo = self.geometry();
        let InFlight {
            tag,
            command,
            covers_below,
            ..
        } = req;
        match command {
            Command::Read { lba, buf } => {
                let result = self.read_at(&geo, lba, buf);
                Completion {
                    tag,
                    result,
                    buf: Some(buf),
                }
            }
            Command::Write { lba, buf, fua } => {
                let result = self.write_at(&geo, lba, buf, fua);
                Completion {
                    tag,
                    result,
                    buf: Some(buf),
                }
            }
            Command::Flush => {
                let (covered, rest): (Vec<_>, Vec<_>) = core::mem::take(&mut self.pending)
                    .into_iter()
                    .partition(|p| p.seq < covers_below);
                self.pending = rest;
                for p in &covered {
                    self.persist(p);
                }
                Completion {
                    tag,
                    result: Ok(()),
                    buf: None,
                }
            }
            Command::Discard { lba, count } => {
                let result = check_sectors(&geo, lba, count).and_then(|()| {
                    let range = self.byte_range(lba, count).ok_or(IoError::OutOfRange)?;
                    if let Some(v) = self.volatile.get_mut(range.clone()) {
                        v.fill(0);
                    }
                    if let Some(d) = self.durable.get_mut(range) {
                        d.fill(0);
                    }
                    self.supersede(lba, count);
                    Ok(())
                });
                Completion {
                    tag,
                    result,
                    buf: None,
                }
            }
        }
    }
}

/// Bytes in an image of this configuration, or `BadBuffer` if the configuration is invalid.
fn image_len(cfg: &QueuedConfig) -> Result<usize, IoError> {
    if (cfg.sector_size != 512 && cfg.sector_size != 4096) || cfg.queue_depth == 0 {
        return Err(IoError::BadBuffer);
    }
    cfg.sector_count
        .checked_mul(u64::from(cfg.sector_size))
        .and_then(|n| usize::try_from(n).ok())
        .ok_or(IoError::BadBuffer)
}

impl<'b> BlockDevice<'b> for QueuedRamDisk<'b> {
    fn geometry(&self) -> Geometry {
        Geometry {
            sector_size: self.cfg.sector_size,
            sector_count: self.cfg.sector_count,
            queue_depth: self.cfg.queue_depth,
            volatile_cache: self.cfg.volatile_cache,
            fua: self.cfg.fua,
            atomic_write_sectors: 1,
            read_only: false,
        }
    }

    fn submit(&mut self, req: Request<'b>) -> Result<(), Busy<'b>> {
        if self.queue.len() >= usize::from(self.cfg.queue_depth) {
            return Err(Busy(req));
        }
        let (min, max) = (
            u64::from(self.cfg.min_polls),
            u64::from(self.cfg.max_polls.max(self.cfg.min_polls)),
        );
        let latency = min + self.rng.below(max - min + 1);
        self.queue.push(InFlight {
            tag: req.tag,
            command: req.command,
            ready_at: self.clock.saturating_add(latency.max(1)),
            covers_below: self.next_seq,
        });
        Ok(())
    }

    fn poll(&mut self) -> Option<Completion<'b>> {
        self.clock = self.clock.saturating_add(1);
        let clock = self.clock;
        let ready = self.queue.iter().filter(|r| r.ready_at <= clock).count();
        if ready == 0 {
            return None;
        }
        let pick = self.rng.below(ready as u64) as usize;
        let index = self
            .queue
            .iter()
            .enumerate()
            .filter(|(_, r)| r.ready_at <= clock)
            .nth(pick)
            .map(|(i, _)| i)?;
        let req = self.queue.swap_remove(index);
        Some(self.complete(req))
    }

    fn in_flight(&self) -> usize {
        self.queue.len()
    }

    /// With [`QueuedRamDisk::set_sync_path`] and nothing in flight: the read takes effect now.
    fn read_now(&mut self, lba: u64, buf: &mut [u8]) -> Option<Result<(), IoError>> {
        if !self.sync_path || !self.queue.is_empty() {
            return None;
        }
        let geo = self.geometry();
        Some(self.read_at(&geo, lba, buf))
    }

    /// With [`QueuedRamDisk::set_sync_path`] and nothing in flight: the write completes now
    /// (durable only after a later flush, on a volatile cache).
    fn write_now(&mut self, lba: u64, buf: &[u8]) -> Option<Result<(), IoError>> {
        if !self.sync_path || !self.queue.is_empty() {
            return None;
        }
        let geo = self.geometry();
        Some(self.write_at(&geo, lba, buf, false))
    }
}

impl fmt::Debug for QueuedRamDisk<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueuedRamDisk")
            .field("cfg", &self.cfg)
            .field("in_flight", &self.queue.len())
            .field("unflushed_writes", &self.pending.len())
            .field("polls", &self.clock)
            .finish()
    }
}

/// SplitMix64: a tiny, well-mixed PRNG, enough to pick latencies and completion order.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `0 .. n` (0 if `n` is 0). The modulo bias is irrelevant here.
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }
}

/// Checks a sector range (as a discard names it) against the geometry: `lba + count` must not
/// pass the end of the device. An empty range is valid (and does nothing).
fn check_sectors(geo: &Geometry, lba: u64, count: u64) -> Result<(), IoError> {
    match lba.checked_add(count) {
        Some(end) if end <= geo.sector_count => Ok(()),
        _ => Err(IoError::OutOfRange),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{flush, read_blocks, write_blocks};

    fn small(sectors: u64) -> QueuedConfig {
        QueuedConfig {
            sector_count: sectors,
            ..QueuedConfig::default()
        }
    }

    fn sector(d: &[u8], lba: usize) -> &[u8] {
        &d[lba * 512..(lba + 1) * 512]
    }

    /// Polls until the completion with `tag` arrives; returns every completion seen.
    fn poll_until<'b>(d: &mut QueuedRamDisk<'b>, tag: Tag) -> Vec<Completion<'b>> {
        let mut seen = Vec::new();
        for _ in 0..10_000 {
            if let Some(c) = d.poll() {
                let done = c.tag == tag;
                seen.push(c);
                if done {
                    return seen;
                }
            }
        }
        panic!("tag {tag} never completed");
    }

    fn drain<'b>(d: &mut QueuedRamDisk<'b>) -> Vec<Completion<'b>> {
        let mut seen = Vec::new();
        for _ in 0..10_000 {
            if d.in_flight() == 0 {
                break;
            }
            if let Some(c) = d.poll() {
                seen.push(c);
            }
        }
        assert_eq!(d.in_flight(), 0);
        seen
    }

    #[test]
    fn default_config() {
        let c = QueuedConfig::default();
        assert_eq!(
            (c.sector_size, c.sector_count, c.queue_depth),
            (512, 65536, 32)
        );
        assert!(c.volatile_cache && c.fua);
        assert_eq!((c.min_polls, c.max_polls, c.seed), (1, 4, 1));
        let d = QueuedRamDisk::new(c);
        let g = d.geometry();
        assert_eq!(g.capacity(), 32 * 1024 * 1024);
        assert_eq!(g.queue_depth, 32);
        assert!(g.volatile_cache && g.fua && !g.read_only);
        assert_eq!(d.volatile_image().len(), 32 * 1024 * 1024);
        // Spot-check the ends: scanning 32 MiB is too slow under Miri.
        let img = d.durable_image();
        assert!(img[..4096]
            .iter()
            .chain(&img[img.len() - 4096..])
            .all(|&b| b == 0));
    }

    #[test]
    fn invalid_configs_are_rejected() {
        let bad_ss = QueuedConfig {
            sector_size: 1024,
            ..small(4)
        };
        assert_eq!(
            QueuedRamDisk::try_new(bad_ss).err(),
            Some(IoError::BadBuffer)
        );
        let bad_depth = QueuedConfig {
            queue_depth: 0,
            ..small(4)
        };
        assert_eq!(
            QueuedRamDisk::try_new(bad_depth).err(),
            Some(IoError::BadBuffer)
        );
        let huge = QueuedConfig {
            sector_count: u64::MAX,
            ..small(4)
        };
        assert_eq!(QueuedRamDisk::try_new(huge).err(), Some(IoError::BadBuffer));
        assert_eq!(
            QueuedRamDisk::try_from_image(small(4), vec![0; 1000]).err(),
            Some(IoError::BadBuffer)
        );
        // Inverted latency bounds are normalised, not rejected.
        let inv = QueuedConfig {
            min_polls: 5,
            max_polls: 2,
            ..small(4)
        };
        assert_eq!(QueuedRamDisk::new(inv).config().max_polls, 5);
    }

    #[test]
    #[should_panic(expected = "invalid QueuedConfig")]
    fn new_panics_on_invalid_config() {
        let _ = QueuedRamDisk::new(QueuedConfig {
            sector_size: 100,
            ..small(4)
        });
    }

    #[test]
    fn from_image_starts_both_images() {
        let image: Vec<u8> = (0..8 * 4096).map(|i| (i % 251) as u8).collect();
        let cfg = QueuedConfig {
            sector_size: 4096,
            sector_count: 1,
            ..QueuedConfig::default()
        };
        let mut d = QueuedRamDisk::from_image(cfg, image.clone());
        assert_eq!(d.geometry().sector_count, 8);
        assert_eq!(d.volatile_image(), &image[..]);
        assert_eq!(d.durable_image(), &image[..]);
        let mut r = vec![0u8; 4096];
        assert_eq!(read_blocks(&mut d, 7, &mut r).result, Ok(()));
        assert_eq!(r, &image[7 * 4096..]);
    }

    #[test]
    fn blocking_helpers_round_trip() {
        let mut d = QueuedRamDisk::new(small(64));
        let mut w = vec![0x42u8; 1024];
        assert_eq!(write_blocks(&mut d, 5, &mut w, false).result, Ok(()));
        let mut r = vec![0u8; 1024];
        let c = read_blocks(&mut d, 5, &mut r);
        assert_eq!(c.result, Ok(()));
        assert_eq!(c.buf.as_deref(), Some(&[0x42u8; 1024][..]));
        assert_eq!(flush(&mut d), Ok(()));
        assert_eq!(&d.durable_image()[5 * 512..7 * 512], &[0x42u8; 1024][..]);
    }

    #[test]
    fn completions_come_out_of_order() {
        let order = |seed: u64| {
            let mut d = QueuedRamDisk::new(QueuedConfig { seed, ..small(64) });
            for tag in 0..16 {
                d.submit(Request {
                    tag,
                    command: Command::Flush,
                })
                .unwrap();
            }
            drain(&mut d).into_iter().map(|c| c.tag).collect::<Vec<_>>()
        };
        let a = order(7);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(
            sorted,
            (0..16).collect::<Vec<_>>(),
            "each request completes exactly once"
        );
        assert_ne!(a, sorted, "seed 7 should reorder 16 requests");
        // Deterministic per seed, different across seeds.
        assert_eq!(a, order(7));
        assert_ne!(a, order(8));
    }

    #[test]
    fn fixed_latency_delays_completion() {
        let mut d = QueuedRamDisk::new(small(4));
        d.set_latency(3, 3);
        d.submit(Request {
            tag: 1,
            command: Command::Flush,
        })
        .unwrap();
        assert!(d.poll().is_none());
        assert!(d.poll().is_none());
        assert_eq!(d.poll().map(|c| c.tag), Some(1));
        // min_polls 0 still needs one poll.
        d.set_latency(0, 0);
        d.submit(Request {
            tag: 2,
            command: Command::Flush,
        })
        .unwrap();
        assert_eq!(d.in_flight(), 1);
        assert_eq!(d.poll().map(|c| c.tag), Some(2));
    }

    #[test]
    fn busy_at_queue_depth() {
        let mut d = QueuedRamDisk::new(QueuedConfig {
            queue_depth: 4,
            ..small(16)
        });
        let mut bufs = vec![vec![0u8; 512]; 5];
        let mut it = bufs.iter_mut();
        for tag in 0..4 {
            let buf = it.next().unwrap();
            d.submit(Request {
                tag,
                command: Command::Read { lba: 0, buf },
            })
            .unwrap();
        }
        assert_eq!(d.in_flight(), 4);
        let extra = it.next().unwrap();
        let Busy(back) = d
            .submit(Request {
                tag: 4,
                command: Command::Write {
                    lba: 1,
                    buf: extra,
                    fua: true,
                },
            })
            .unwrap_err();
        assert_eq!(back.tag, 4);
        assert!(matches!(
            back.command,
            Command::Write {
                lba: 1,
                fua: true,
                ..
            }
        ));
        assert_eq!(d.in_flight(), 4);
        // Still busy until a completion is reaped, however often we poll without reaping.
        let mut got = None;
        while got.is_none() {
            got = d.poll();
        }
        assert_eq!(d.in_flight(), 3);
        d.submit(back).unwrap();
        assert_eq!(d.in_flight(), 4);
        assert_eq!(drain(&mut d).len(), 4);
    }

    #[test]
    fn errors_complete_with_buffer() {
        let mut d = QueuedRamDisk::new(small(8));
        let mut a = vec![0u8; 1024];
        let mut b = vec![0u8; 700];
        let mut c = vec![0u8; 512];
        d.submit(Request {
            tag: 1,
            command: Command::Read {
                lba: 7,
                buf: &mut a,
            },
        })
        .unwrap();
        d.submit(Request {
            tag: 2,
            command: Command::Write {
                lba: 0,
                buf: &mut b,
                fua: false,
            },
        })
        .unwrap();
        d.submit(Request {
            tag: 3,
            command: Command::Write {
                lba: u64::MAX,
                buf: &mut c,
                fua: true,
            },
        })
        .unwrap();
        d.submit(Request {
            tag: 4,
            command: Command::Discard { lba: 6, count: 3 },
        })
        .unwrap();
        let mut done = drain(&mut d);
        done.sort_by_key(|c| c.tag);
        assert_eq!(done[0].result, Err(IoError::OutOfRange));
        assert_eq!(done[0].buf.as_ref().map(|b| b.len()), Some(1024));
        assert_eq!(done[1].result, Err(IoError::BadBuffer));
        assert_eq!(done[1].buf.as_ref().map(|b| b.len()), Some(700));
        assert_eq!(done[2].result, Err(IoError::OutOfRange));
        assert!(done[2].buf.is_some());
        assert_eq!(done[3].result, Err(IoError::OutOfRange));
        assert_eq!(d.unflushed_writes(), 0);
        assert!(d.volatile_image().iter().all(|&x| x == 0));
    }

    #[test]
    fn write_visible_only_at_completion() {
        let mut d = QueuedRamDisk::new(small(8));
        d.set_latency(3, 3);
        let mut w = vec![9u8; 512];
        d.submit(Request {
            tag: 1,
            command: Command::Write {
                lba: 2,
                buf: &mut w,
                fua: false,
            },
        })
        .unwrap();
        assert!(d.poll().is_none());
        assert_eq!(sector(d.volatile_image(), 2), &[0u8; 512][..]);
        assert!(d.poll().is_none());
        let c = d.poll().unwrap();
        assert_eq!((c.tag, c.result), (1, Ok(())));
        assert_eq!(sector(d.volatile_image(), 2), &[9u8; 512][..]);
        assert_eq!(sector(d.durable_image(), 2), &[0u8; 512][..]);
        assert_eq!(d.unflushed_writes(), 1);
        assert_eq!(d.unflushed().collect::<Vec<_>>(), vec![(2, 1)]);
    }

    #[test]
    fn read_sees_volatile_at_completion_time() {
        let mut d = QueuedRamDisk::new(small(8));
        let mut r = vec![0u8; 512];
        let mut w = vec![5u8; 512];
        // The read is submitted first but completes last: it sees the write.
        d.set_latency(6, 6);
        d.submit(Request {
            tag: 1,
            command: Command::Read {
                lba: 0,
                buf: &mut r,
            },
        })
        .unwrap();
        d.set_latency(1, 1);
        d.submit(Request {
            tag: 2,
            command: Command::Write {
                lba: 0,
                buf: &mut w,
                fua: false,
            },
        })
        .unwrap();
        let seen = poll_until(&mut d, 1);
        assert_eq!(seen.iter().map(|c| c.tag).collect::<Vec<_>>(), vec![2, 1]);
        assert_eq!(seen[1].buf.as_deref(), Some(&[5u8; 512][..]));
    }

    #[test]
    fn flush_submitted_before_write_completed_does_not_cover_it() {
        let mut d = QueuedRamDisk::new(small(8));
        let mut w = vec![0xABu8; 512];
        d.set_latency(1, 1);
        d.submit(Request {
            tag: 1,
            command: Command::Write {
                lba: 3,
                buf: &mut w,
                fua: false,
            },
        })
        .unwrap();
        // The flush is submitted while the write is still in flight, and completes after it.
        d.set_latency(5, 5);
        d.submit(Request {
            tag: 2,
            command: Command::Flush,
        })
        .unwrap();
        let seen = poll_until(&mut d, 2);
        assert_eq!(seen.iter().map(|c| c.tag).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(sector(d.volatile_image(), 3), &[0xABu8; 512][..]);
        assert_eq!(
            sector(d.durable_image(), 3),
            &[0u8; 512][..],
            "early flush covered the write"
        );
        assert_eq!(d.unflushed_writes(), 1);
        // A flush submitted after the write completed makes it durable once it completes.
        d.set_latency(2, 2);
        d.submit(Request {
            tag: 3,
            command: Command::Flush,
        })
        .unwrap();
        assert!(d.poll().is_none());
        assert_eq!(
            sector(d.durable_image(), 3),
            &[0u8; 512][..],
            "durable before flush completed"
        );
        assert_eq!(d.poll().map(|c| c.tag), Some(3));
        assert_eq!(sector(d.durable_image(), 3), &[0xABu8; 512][..]);
        assert_eq!(d.unflushed_writes(), 0);
    }

    #[test]
    fn flush_covers_only_writes_completed_before_its_submission() {
        let mut d = QueuedRamDisk::new(small(8));
        let (mut a, mut b) = (vec![1u8; 512], vec![2u8; 512]);
        assert_eq!(write_blocks(&mut d, 0, &mut a, false).result, Ok(()));
        d.set_latency(4, 4);
        d.submit(Request {
            tag: 10,
            command: Command::Flush,
        })
        .unwrap();
        d.set_latency(1, 1);
        d.submit(Request {
            tag: 11,
            command: Command::Write {
                lba: 1,
                buf: &mut b,
                fua: false,
            },
        })
        .unwrap();
        let seen = poll_until(&mut d, 10);
        assert_eq!(seen.iter().map(|c| c.tag).collect::<Vec<_>>(), vec![11, 10]);
        assert_eq!(sector(d.durable_image(), 0), &[1u8; 512][..]);
        assert_eq!(sector(d.durable_image(), 1), &[0u8; 512][..]);
        assert_eq!(d.unflushed_writes(), 1);
    }

    #[test]
    fn flush_applies_in_completion_order() {
        let mut d = QueuedRamDisk::new(small(8));
        let (mut a, mut b) = (vec![1u8; 1024], vec![2u8; 512]);
        assert_eq!(write_blocks(&mut d, 0, &mut a, false).result, Ok(()));
        assert_eq!(write_blocks(&mut d, 1, &mut b, false).result, Ok(()));
        assert_eq!(flush(&mut d), Ok(()));
        assert_eq!(sector(d.durable_image(), 0), &[1u8; 512][..]);
        assert_eq!(sector(d.durable_image(), 1), &[2u8; 512][..]);
        assert_eq!(d.durable_image(), d.volatile_image());
    }

    #[test]
    fn fua_is_durable_at_completion() {
        let mut d = QueuedRamDisk::new(small(8));
        let mut w = vec![7u8; 512];
        assert_eq!(write_blocks(&mut d, 4, &mut w, true).result, Ok(()));
        assert_eq!(sector(d.durable_image(), 4), &[7u8; 512][..]);
        assert_eq!(d.unflushed_writes(), 0);
        d.power_cut();
        assert_eq!(sector(d.volatile_image(), 4), &[7u8; 512][..]);
    }

    #[test]
    fn fua_ignored_without_fua_support() {
        let mut d = QueuedRamDisk::new(QueuedConfig {
            fua: false,
            ..small(8)
        });
        assert!(!d.geometry().fua);
        let mut w = vec![7u8; 512];
        assert_eq!(write_blocks(&mut d, 4, &mut w, true).result, Ok(()));
        assert_eq!(sector(d.durable_image(), 4), &[0u8; 512][..]);
        assert_eq!(d.unflushed_writes(), 1);
    }

    #[test]
    fn no_volatile_cache_means_durable_at_completion() {
        let mut d = QueuedRamDisk::new(QueuedConfig {
            volatile_cache: false,
            ..small(8)
        });
        assert!(!d.geometry().volatile_cache);
        let mut w = vec![3u8; 512];
        assert_eq!(write_blocks(&mut d, 0, &mut w, false).result, Ok(()));
        assert_eq!(sector(d.durable_image(), 0), &[3u8; 512][..]);
        assert_eq!(d.unflushed_writes(), 0);
        assert_eq!(flush(&mut d), Ok(()));
    }

    #[test]
    fn durable_write_supersedes_earlier_unflushed_one() {
        let mut d = QueuedRamDisk::new(small(8));
        let (mut a, mut b) = (vec![1u8; 1024], vec![2u8; 512]);
        assert_eq!(write_blocks(&mut d, 0, &mut a, false).result, Ok(()));
        assert_eq!(write_blocks(&mut d, 1, &mut b, true).result, Ok(()));
        assert_eq!(
            d.unflushed_writes(),
            1,
            "sector 0 of the first write is still pending"
        );
        assert_eq!(flush(&mut d), Ok(()));
        assert_eq!(sector(d.durable_image(), 0), &[1u8; 512][..]);
        assert_eq!(
            sector(d.durable_image(), 1),
            &[2u8; 512][..],
            "stale data flushed over FUA"
        );
        // Fully superseded pending writes disappear.
        let (mut c, mut e) = (vec![3u8; 512], vec![4u8; 512]);
        assert_eq!(write_blocks(&mut d, 5, &mut c, false).result, Ok(()));
        assert_eq!(write_blocks(&mut d, 5, &mut e, true).result, Ok(()));
        assert_eq!(d.unflushed_writes(), 0);
    }

    #[test]
    fn discard_zeroes_both_images() {
        let image = vec![0xEEu8; 8 * 512];
        let mut d = QueuedRamDisk::from_image(small(8), image);
        let mut w = vec![1u8; 512];
        assert_eq!(write_blocks(&mut d, 2, &mut w, false).result, Ok(()));
        assert_eq!(
            crate::device::run(&mut d, Command::Discard { lba: 1, count: 2 }).result,
            Ok(())
        );
        assert_eq!(d.unflushed_writes(), 0);
        for img in [d.volatile_image(), d.durable_image()] {
            assert_eq!(sector(img, 0), &[0xEEu8; 512][..]);
            assert_eq!(sector(img, 1), &[0u8; 512][..]);
            assert_eq!(sector(img, 2), &[0u8; 512][..]);
            assert_eq!(sector(img, 3), &[0xEEu8; 512][..]);
        }
    }

    #[test]
    fn power_cut_keeps_only_durable() {
        let mut d = QueuedRamDisk::new(small(8));
        let (mut a, mut b, mut c, mut f) = (
            vec![1u8; 512],
            vec![2u8; 512],
            vec![3u8; 512],
            vec![4u8; 512],
        );
        assert_eq!(write_blocks(&mut d, 0, &mut a, false).result, Ok(()));
        assert_eq!(flush(&mut d), Ok(()));
        assert_eq!(write_blocks(&mut d, 1, &mut b, false).result, Ok(()));
        assert_eq!(write_blocks(&mut d, 2, &mut f, true).result, Ok(()));
        d.set_latency(100, 100);
        d.submit(Request {
            tag: 9,
            command: Command::Write {
                lba: 3,
                buf: &mut c,
                fua: true,
            },
        })
        .unwrap();
        d.submit(Request {
            tag: 10,
            command: Command::Flush,
        })
        .unwrap();
        assert_eq!(d.in_flight(), 2);
        assert_eq!(d.unflushed_writes(), 1);
        d.power_cut();
        assert_eq!(d.in_flight(), 0);
        assert_eq!(d.unflushed_writes(), 0);
        assert!(d.poll().is_none());
        assert_eq!(d.volatile_image(), d.durable_image());
        let img = d.volatile_image();
        assert_eq!(sector(img, 0), &[1u8; 512][..]);
        assert_eq!(sector(img, 1), &[0u8; 512][..]);
        assert_eq!(sector(img, 2), &[4u8; 512][..]);
        assert_eq!(sector(img, 3), &[0u8; 512][..]);
        // Usable again after the "reboot".
        d.set_latency(1, 1);
        let mut r = vec![0u8; 512];
        assert_eq!(read_blocks(&mut d, 2, &mut r).result, Ok(()));
        assert_eq!(r, vec![4u8; 512]);
    }

    #[test]
    fn power_cut_keeping_selects_unflushed_writes() {
        let mut d = QueuedRamDisk::new(small(8));
        let mut bufs: Vec<Vec<u8>> = (1..=4).map(|v| vec![v as u8; 512]).collect();
        // Writes 0, 1, 2 to sectors 0, 1, 0; write 3 to sector 3 is superseded by a FUA below.
        let lbas = [0u64, 1, 0, 3];
        for (buf, lba) in bufs.iter_mut().zip(lbas) {
            assert_eq!(write_blocks(&mut d, lba, buf, false).result, Ok(()));
        }
        let mut fua = vec![9u8; 512];
        assert_eq!(write_blocks(&mut d, 3, &mut fua, true).result, Ok(()));
        assert_eq!(
            d.unflushed().collect::<Vec<_>>(),
            vec![(0, 1), (1, 1), (0, 1)]
        );
        let mut asked = Vec::new();
        d.power_cut_keeping(|i| {
            asked.push(i);
            i == 0 || i == 1
        });
        assert_eq!(asked, vec![0, 1, 2]);
        let img = d.durable_image();
        assert_eq!(sector(img, 0), &[1u8; 512][..]);
        assert_eq!(sector(img, 1), &[2u8; 512][..]);
        assert_eq!(sector(img, 3), &[9u8; 512][..]);
        assert_eq!(d.volatile_image(), d.durable_image());
        assert_eq!(d.unflushed_writes(), 0);
    }

    #[test]
    fn power_cut_keeping_all_applies_in_completion_order() {
        let mut d = QueuedRamDisk::new(small(4));
        let (mut a, mut b) = (vec![1u8; 512], vec![2u8; 512]);
        assert_eq!(write_blocks(&mut d, 0, &mut a, false).result, Ok(()));
        assert_eq!(write_blocks(&mut d, 0, &mut b, false).result, Ok(()));
        d.power_cut_keeping(|_| true);
        assert_eq!(sector(d.durable_image(), 0), &[2u8; 512][..]);
    }

    /// Random workloads: the volatile image must equal a reference that applies writes in
    /// completion order, and after a final flush the durable image must equal it too.
    #[test]
    fn random_workloads_match_reference() {
        fn apply(c: &Completion<'_>, reference: &mut [u8], lbas: &[u64]) {
            if let (Ok(()), Some(buf)) = (c.result, c.buf.as_deref()) {
                let start = lbas[c.tag as usize] as usize * 512;
                reference[start..start + buf.len()].copy_from_slice(buf);
            }
        }
        for seed in 0..if cfg!(miri) { 2 } else { 20u64 } {
            let cfg = QueuedConfig {
                seed,
                queue_depth: 8,
                min_polls: 1,
                max_polls: 6,
                ..small(16)
            };
            let mut d = QueuedRamDisk::new(cfg);
            let mut rng = SplitMix64(seed ^ 0xDEAD_BEEF);
            let mut reference = vec![0u8; 16 * 512];
            let mut pool: Vec<Vec<u8>> = (0..300).map(|_| vec![0u8; 2 * 512]).collect();
            let mut free = pool.iter_mut();
            let mut lbas = Vec::new();
            let mut busy = 0;
            for _ in 0..300 {
                if rng.below(2) == 0 {
                    let Some(buf) = free.next() else { break };
                    let sectors = 1 + rng.below(2) as usize;
                    let lba = rng.below(16 - sectors as u64 + 1);
                    buf.fill(rng.next_u64() as u8);
                    let buf = &mut buf[..sectors * 512];
                    let fua = rng.below(3) == 0;
                    let tag = lbas.len() as Tag;
                    match d.submit(Request {
                        tag,
                        command: Command::Write { lba, buf, fua },
                    }) {
                        Ok(()) => lbas.push(lba),
                        Err(Busy(_)) => busy += 1,
                    }
                } else if let Some(c) = d.poll() {
                    apply(&c, &mut reference, &lbas);
                }
                if rng.below(10) == 0 {
                    // A flush now and then, to mix durable and pending writes.
                    let tag = lbas.len() as Tag;
                    if d.submit(Request {
                        tag,
                        command: Command::Flush,
                    })
                    .is_ok()
                    {
                        lbas.push(0);
                    }
                }
            }
            assert!(busy > 0, "seed {seed}: the queue never filled");
            for c in drain(&mut d) {
                apply(&c, &mut reference, &lbas);
            }
            assert_eq!(d.volatile_image(), &reference[..], "seed {seed}");
            assert_eq!(flush(&mut d), Ok(()));
            assert_eq!(d.durable_image(), &reference[..], "seed {seed}");
            assert_eq!(d.unflushed_writes(), 0);
        }
    }

    #[test]
    fn debug_is_short() {
        let d = QueuedRamDisk::new(small(4));
        let dbg = std::format!("{d:?}");
        assert!(dbg.contains("in_flight: 0"), "{dbg}");
        assert!(dbg.len() < 400);
    }
}
