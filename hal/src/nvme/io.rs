//! The I/O path: [`BlockDevice`] for [`Nvme`]. Slots, submission, completion reaping with
//! command-identifier matching, and the timeout that retires a dead controller.

use bonsaifs::device::{
    check_range, BlockDevice, Busy, Command, Completion, Geometry, IoError, Request, Tag,
};

use crate::platform::{wait_until, DmaSync, Fence, Platform};

use super::command::{io, status_result, Cqe, Sqe, DSM_DEALLOCATE};
use super::prp;
use super::regs::{self, cc, csts};
use super::{Health, Nvme, SlotState};

/// I/O queue identifier.
const QID: u16 = 1;
/// Command identifier: slot index in the low 12 bits, the slot's generation above.
const SLOT_BITS: u16 = 12;

fn cid(slot: usize, generation: u8) -> u16 {
    ((u16::from(generation) & 0xF) << SLOT_BITS) | slot as u16
}

impl<P: Platform, const SLOTS: usize> Nvme<P, SLOTS> {
    /// A free slot, if the queue has room.
    fn free_slot(&self) -> Option<usize> {
        if self.in_flight >= self.depth || self.sq.is_full() {
            return None;
        }
        self.slots
            .iter()
            .take(self.depth)
            .position(|s| s.state == SlotState::Free)
    }

    /// Finishes a request in the driver (an error found before it reached the controller).
    fn finish_local(
        &mut self,
        idx: usize,
        tag: Tag,
        buf: Option<&'static mut [u8]>,
        result: Result<(), IoError>,
    ) {
        if let Some(s) = self.slots.get_mut(idx) {
            s.state = SlotState::Local;
            s.tag = tag;
            s.buf = buf;
            s.result = result;
            self.in_flight += 1;
            self.local += 1;
            self.stats.refused += 1;
        }
    }

    /// Writes `sqe` (with the slot's command identifier) and rings the doorbell.
    fn start(
        &mut self,
        idx: usize,
        tag: Tag,
        sqe: Sqe,
        buf: Option<&'static mut [u8]>,
        device_writes: bool,
    ) {
        let now = self.platform.now_us();
        let Some(generation) = self
            .slots
            .get(idx)
            .map(|s| s.generation.wrapping_add(1) & 0xF)
        else {
            return;
        };
        let mut sqe = sqe;
        sqe.0[0] = (sqe.0[0] & 0xFFFF) | (u32::from(cid(idx, generation)) << 16);
        let Some(tail) = self.sq.push(&sqe) else {
            // `free_slot` checked for room; keep the contract anyway.
            self.finish_local(idx, tag, buf, Err(IoError::Unsupported));
            return;
        };
        self.seq += 1;
        if let Some(s) = self.slots.get_mut(idx) {
            s.generation = generation;
            s.state = SlotState::Device;
            s.tag = tag;
            s.buf = buf;
            s.device_writes = device_writes;
            s.started = now;
            s.seq = self.seq;
            s.result = Ok(());
        }
        self.in_flight += 1;
        self.stats.submitted += 1;
        // Entry, PRP list and buffer contents before the doorbell that publishes them.
        self.platform.fence(Fence::Full);
        self.regs.sq_tail(QID, tail);
    }

    /// The PRPs for `buf`, with the slot's list written.
    fn prps(&mut self, idx: usize, buf: &[u8]) -> Result<prp::Prps, IoError> {
        let list_off = idx * self.list_bytes;
        let list_ptr = self.lists.as_ptr();
        let platform = &self.platform;
        prp::build(
            buf.as_ptr() as usize,
            buf.len(),
            |a| platform.dma_address(a as *const u8),
            self.lists_bus + list_off as u64,
            self.list_bytes / 8,
            |i, entry| {
                // SAFETY: `i < list_bytes / 8`, so the entry lies in this slot's part of the
                // list region, which the driver owns; 8-byte aligned (page-aligned region,
                // power-of-two list size ≥ 16).
                unsafe {
                    list_ptr
                        .add(list_off + 8 * i)
                        .cast::<u64>()
                        .write_volatile(entry.to_le())
                }
            },
        )
    }

    fn submit_rw(
        &mut self,
        idx: usize,
        tag: Tag,
        lba: u64,
        buf: &'static mut [u8],
        write: Option<bool>,
    ) {
        let count = match check_range(&self.geo, lba, buf.len()) {
            Ok(n) => n,
            Err(e) => return self.finish_local(idx, tag, Some(buf), Err(e)),
        };
        if write.is_some() && self.geo.read_only {
            return self.finish_local(idx, tag, Some(buf), Err(IoError::ReadOnly));
        }
        if buf.len() > self.max_transfer {
            return self.finish_local(idx, tag, Some(buf), Err(IoError::Unsupported));
        }
        let p = match self.prps(idx, buf) {
            Ok(p) => p,
            Err(e) => return self.finish_local(idx, tag, Some(buf), Err(e)),
        };
        let (opcode, fua, sync) = match write {
            Some(fua) => (io::WRITE, fua, DmaSync::BeforeDeviceReads),
            None => (io::READ, false, DmaSync::BeforeDeviceWrites),
        };
        self.platform.dma_sync(buf.as_ptr(), buf.len(), sync);
        // `count` ≤ max_transfer / 512 ≤ 4096, well inside NLB's 16 bits.
        let sqe = Sqe::rw(opcode, 0, self.nsid, lba, count as u32, fua).prp(p.prp1, p.prp2);
        self.start(idx, tag, sqe, Some(buf), write.is_none());
    }

    fn submit_discard(&mut self, idx: usize, tag: Tag, lba: u64, count: u64) {
        let in_range = lba
            .checked_add(count)
            .is_some_and(|end| end <= self.geo.sector_count);
        if !in_range {
            return self.finish_local(idx, tag, None, Err(IoError::OutOfRange));
        }
        if self.geo.read_only {
            return self.finish_local(idx, tag, None, Err(IoError::ReadOnly));
        }
        if count == 0 {
            // An empty range: nothing to deallocate.
            return self.finish_local(idx, tag, None, Ok(()));
        }
        // One 16-byte range per 2^32 - 1 blocks, in the slot's list area.
        let ranges = count.div_ceil(u64::from(u32::MAX));
        if !self.dsm || ranges > (self.list_bytes / 16) as u64 {
            return self.finish_local(idx, tag, None, Err(IoError::Unsupported));
        }
        let list_off = idx * self.list_bytes;
        let mut start = lba;
        let mut left = count;
        for r in 0..ranges as usize {
            let n = left.min(u64::from(u32::MAX));
            let words = [0u32, n as u32, start as u32, (start >> 32) as u32];
            for (w, v) in words.iter().enumerate() {
                // SAFETY: `16 * r + 4 * w + 4 <= list_bytes` (ranges ≤ list_bytes / 16), inside
                // this slot's list area, which the driver owns.
                unsafe {
                    self.lists
                        .as_ptr()
                        .add(list_off + 16 * r + 4 * w)
                        .cast::<u32>()
                        .write_volatile(v.to_le())
                }
            }
            start += n;
            left -= n;
        }
        let sqe = Sqe::new(io::DSM, 0, self.nsid)
            .prp(self.lists_bus + list_off as u64, 0)
            .cdw(10, ranges as u32 - 1)
            .cdw(11, DSM_DEALLOCATE);
        self.start(idx, tag, sqe, None, false);
    }

    /// Hands out one request the driver finished itself.
    fn take_local(&mut self) -> Option<Completion<'static>> {
        let s = self
            .slots
            .iter_mut()
            .find(|s| s.state == SlotState::Local)?;
        s.state = SlotState::Free;
        self.local -= 1;
        self.in_flight -= 1;
        Some(Completion {
            tag: s.tag,
            result: s.result,
            buf: s.buf.take(),
        })
    }

    /// Retires the command a completion entry names; `None` for a stray entry.
    fn complete(&mut self, cqe: Cqe) -> Option<Completion<'static>> {
        let idx = usize::from(cqe.cid & ((1 << SLOT_BITS) - 1));
        let generation = (cqe.cid >> SLOT_BITS) as u8;
        let oldest = self
            .slots
            .iter()
            .filter(|s| s.state == SlotState::Device)
            .map(|s| s.seq)
            .min();
        let s = match self.slots.get_mut(idx) {
            Some(s) if s.state == SlotState::Device && s.generation == generation => s,
            _ => {
                self.stats.stray += 1;
                return None;
            }
        };
        if oldest.is_some_and(|o| o < s.seq) {
            self.stats.out_of_order += 1;
        }
        s.state = SlotState::Free;
        self.in_flight -= 1;
        self.stats.completed += 1;
        let buf = s.buf.take();
        if s.device_writes {
            if let Some(b) = buf.as_deref() {
                self.platform
                    .dma_sync(b.as_ptr(), b.len(), DmaSync::AfterDeviceWrote);
            }
        }
        Some(Completion {
            tag: s.tag,
            result: status_result(cqe.code()),
            buf,
        })
    }

    /// A command has outlived the timeout: disable the controller (aborting everything) and
    /// turn every outstanding command into a `Timeout` completion. Buffers are handed back
    /// only if the controller confirmed that it stopped.
    fn give_up(&mut self) {
        let ccv = self.regs.read32(regs::CC);
        self.regs.write32(regs::CC, ccv & !cc::EN);
        let regs = &self.regs;
        let stopped = wait_until(&self.platform, self.ready_timeout_us, || {
            regs.read32(regs::CSTS) & csts::RDY == 0
        });
        self.health = Health::Dead { stopped };
        for s in self.slots.iter_mut() {
            if s.state == SlotState::Device {
                s.state = SlotState::Local;
                s.result = Err(IoError::Timeout);
                if !stopped {
                    // The controller may still write here: the caller never gets it back.
                    s.buf = None;
                }
                self.local += 1;
            }
        }
    }

    /// Whether an outstanding command is older than the I/O timeout.
    fn timed_out(&self) -> bool {
        if self.in_flight == self.local {
            return false;
        }
        let now = self.platform.now_us();
        self.slots.iter().any(|s| {
            s.state == SlotState::Device && now.wrapping_sub(s.started) > self.io_timeout_us
        })
    }
}

impl<P: Platform, const SLOTS: usize> BlockDevice<'static> for Nvme<P, SLOTS> {
    fn geometry(&self) -> Geometry {
        self.geo
    }

    fn submit(&mut self, req: Request<'static>) -> Result<(), Busy<'static>> {
        let Some(idx) = self.free_slot() else {
            return Err(Busy(req));
        };
        let Request { tag, command } = req;
        if self.is_dead() {
            let buf = match command {
                Command::Read { buf, .. } | Command::Write { buf, .. } => Some(buf),
                _ => None,
            };
            self.finish_local(idx, tag, buf, Err(IoError::Timeout));
            return Ok(());
        }
        match command {
            Command::Read { lba, buf } => self.submit_rw(idx, tag, lba, buf, None),
            Command::Write { lba, buf, fua } => self.submit_rw(idx, tag, lba, buf, Some(fua)),
            Command::Flush => {
                let sqe = Sqe::new(io::FLUSH, 0, self.nsid);
                self.start(idx, tag, sqe, None, false);
            }
            Command::Discard { lba, count } => self.submit_discard(idx, tag, lba, count),
        }
        Ok(())
    }

    fn poll(&mut self) -> Option<Completion<'static>> {
        if self.local > 0 {
            if let Some(c) = self.take_local() {
                return Some(c);
            }
        }
        if self.is_dead() {
            return None;
        }
        // Stray entries are skipped, at most one queue's worth per call.
        for _ in 0..self.cq.size() {
            let Some(cqe) = self.cq.peek(&self.platform) else {
                break;
            };
            let head = self.cq.advance();
            self.regs.cq_head(QID, head);
            self.sq.set_head(cqe.sq_head);
            if let Some(c) = self.complete(cqe) {
                return Some(c);
            }
        }
        if self.timed_out() {
            self.give_up();
            return self.take_local();
        }
        None
    }

    fn in_flight(&self) -> usize {
        self.in_flight
    }
}
