//! Bring-up: reset, admin queue, enable, Identify, I/O queue pair creation.

use core::ptr::NonNull;

use bonsaifs::device::Geometry;

use crate::platform::{wait_until, DmaRegion, Fence, Platform, PAGE_SIZE};

use super::command::{admin, cns, Sqe, FEATURE_NUMBER_OF_QUEUES};
use super::identify::{ControllerInfo, NamespaceInfo, IDENTIFY_LEN};
use super::queue::{CompletionQueue, SubmissionQueue, CQE_BYTES, SQE_BYTES};
use super::regs::{self, cap, cc, csts, Regs};
use super::{
    list_bytes, whole_pages, Health, Info, Nvme, NvmeConfig, NvmeError, Slot, Stats, ADMIN_ENTRIES,
    MAX_TRANSFER_LIMIT,
};

/// The admin queue pair, used synchronously at bring-up.
struct Admin {
    sq: SubmissionQueue,
    cq: CompletionQueue,
    next_cid: u16,
}

impl Admin {
    /// Runs one admin command and waits (bounded) for its completion; returns its result
    /// dword.
    fn run<P: Platform>(
        &mut self,
        platform: &P,
        regs: &Regs,
        sqe: Sqe,
        timeout_us: u64,
    ) -> Result<u32, NvmeError> {
        let opcode = sqe.0[0] as u8;
        let cid = self.next_cid;
        self.next_cid = self.next_cid.wrapping_add(1);
        let mut sqe = sqe;
        sqe.0[0] = (sqe.0[0] & 0xFFFF) | (u32::from(cid) << 16);
        let tail = self
            .sq
            .push(&sqe)
            .ok_or(NvmeError::AdminProtocol { opcode })?;
        // The entry (and any data it points to) before the doorbell.
        platform.fence(Fence::Full);
        regs.sq_tail(0, tail);
        if !wait_until(platform, timeout_us, || self.cq.peek(platform).is_some()) {
            return Err(NvmeError::AdminTimeout { opcode });
        }
        let cqe = self
            .cq
            .peek(platform)
            .ok_or(NvmeError::AdminTimeout { opcode })?;
        let head = self.cq.advance();
        regs.cq_head(0, head);
        self.sq.set_head(cqe.sq_head);
        if cqe.cid != cid {
            return Err(NvmeError::AdminProtocol { opcode });
        }
        if cqe.code() != 0 {
            return Err(NvmeError::AdminFailed {
                opcode,
                status: cqe.code(),
            });
        }
        Ok(cqe.result)
    }
}

/// Page-aligned zeroed DMA memory and its bus address.
fn alloc<P: Platform>(platform: &P, len: usize) -> Result<(DmaRegion, u64), NvmeError> {
    let region = platform
        .dma_alloc(whole_pages(len), PAGE_SIZE)
        .ok_or(NvmeError::NoDmaMemory)?;
    let bus = platform
        .dma_address(region.as_ptr())
        .ok_or(NvmeError::DmaAddress)?;
    if bus % PAGE_SIZE as u64 != 0 {
        return Err(NvmeError::DmaAddress);
    }
    Ok((region, bus))
}

/// Copies an Identify data structure out of DMA memory.
fn read_identify(region: &DmaRegion, out: &mut [u8; IDENTIFY_LEN]) {
    for (i, b) in out.iter_mut().enumerate().take(region.len()) {
        // SAFETY: `i < region.len()`; the region is ours and the command that filled it has
        // completed.
        *b = unsafe { region.as_ptr().add(i).read_volatile() };
    }
}

impl<P: Platform, const SLOTS: usize> Nvme<P, SLOTS> {
    /// Brings up the controller whose register block (BAR0) is at bus address `bar0`, and
    /// prepares one I/O queue pair of up to `SLOTS` commands on one namespace.
    ///
    /// The function must be a PCIe NVMe controller with memory decoding and bus mastering
    /// enabled (see [`crate::pci::Ecam::enable`]); nothing else may use it.
    pub fn new(platform: P, bar0: u64, cfg: NvmeConfig) -> Result<Self, NvmeError> {
        if SLOTS == 0 || SLOTS > 4095 {
            return Err(NvmeError::QueueDepth);
        }
        // CAP first (to learn the doorbell stride), then the whole block we need.
        let base = platform.map_mmio(bar0, 0x40).ok_or(NvmeError::Mmio)?;
        // SAFETY: the platform mapped 0x40 bytes of this controller's registers for us.
        let probe = unsafe { Regs::new(base, 0x40) };
        let capv = probe.read64(regs::CAP);
        let stride = cap::doorbell_stride(capv);
        let span = Regs::span_for(stride, 1);
        let base: NonNull<u8> = platform.map_mmio(bar0, span).ok_or(NvmeError::Mmio)?;
        // SAFETY: as above, `span` bytes: registers plus the doorbells of queues 0 and 1.
        let mut regs = unsafe { Regs::new(base, span) };
        regs.set_stride(stride);

        if !cap::supports_nvm(capv) {
            return Err(NvmeError::NoNvmCommandSet);
        }
        if cap::page_shift_min(capv) > 12 || cap::page_shift_max(capv) < 12 {
            return Err(NvmeError::PageSize);
        }
        let ready_timeout_us = u64::from(cap::timeout_units(capv).max(1)) * 500_000;

        // Disable. A controller caught between states must first finish enabling (the
        // specification forbids clearing EN while RDY still lags behind it).
        let ccv = regs.read32(regs::CC);
        if ccv & cc::EN != 0 {
            wait_until(&platform, ready_timeout_us, || {
                regs.read32(regs::CSTS) & (csts::RDY | csts::CFS) != 0
            });
            regs.write32(regs::CC, ccv & !cc::EN);
        }
        if !wait_until(&platform, ready_timeout_us, || {
            regs.read32(regs::CSTS) & csts::RDY == 0
        }) {
            return Err(NvmeError::ResetTimeout);
        }

        // Memory, all of it now: nothing is allocated after bring-up.
        let max_queue = cap::mqes(capv).min(4096);
        let depth = SLOTS.min(max_queue as usize - 1);
        if depth == 0 {
            return Err(NvmeError::QueueDepth);
        }
        let entries = depth as u16 + 1;
        let admin_entries = ADMIN_ENTRIES.min(max_queue as u16);
        let (asq_mem, asq_bus) = alloc(&platform, usize::from(admin_entries) * SQE_BYTES)?;
        let (acq_mem, acq_bus) = alloc(&platform, usize::from(admin_entries) * CQE_BYTES)?;
        let (ident, ident_bus) = alloc(&platform, IDENTIFY_LEN)?;
        let (sq_mem, sq_bus) = alloc(&platform, usize::from(entries) * SQE_BYTES)?;
        let (cq_mem, cq_bus) = alloc(&platform, usize::from(entries) * CQE_BYTES)?;
        let max_transfer_cfg =
            (cfg.max_transfer.min(MAX_TRANSFER_LIMIT) / PAGE_SIZE).max(1) * PAGE_SIZE;
        let list_len = list_bytes(max_transfer_cfg);
        let (lists, lists_bus) = alloc(&platform, depth * list_len)?;

        let mut adm = Admin {
            sq: SubmissionQueue::new(asq_mem, asq_bus, admin_entries)
                .ok_or(NvmeError::QueueDepth)?,
            cq: CompletionQueue::new(acq_mem, acq_bus, admin_entries)
                .ok_or(NvmeError::QueueDepth)?,
            next_cid: 0,
        };
        let aqa = (u32::from(admin_entries - 1) << 16) | u32::from(admin_entries - 1);
        regs.write32(regs::AQA, aqa);
        regs.write64(regs::ASQ, adm.sq.bus());
        regs.write64(regs::ACQ, adm.cq.bus());
        // Polling driver: mask the (pin-based) interrupt vector.
        regs.write32(regs::INTMS, 1);
        platform.fence(Fence::Full);
        regs.write32(regs::CC, cc::EN | cc::IOSQES_64 | cc::IOCQES_16);
        let mut fatal = false;
        let ready = wait_until(&platform, ready_timeout_us, || {
            let s = regs.read32(regs::CSTS);
            fatal = s & csts::CFS != 0;
            s & csts::RDY != 0 || fatal
        });
        if fatal {
            return Err(NvmeError::ControllerFatal);
        }
        if !ready {
            return Err(NvmeError::EnableTimeout);
        }

        let t = cfg.admin_timeout_us;
        let mut data = [0u8; IDENTIFY_LEN];
        // Identify Controller.
        let identify = |cns: u32, nsid: u32| {
            Sqe::new(admin::IDENTIFY, 0, nsid)
                .prp(ident_bus, 0)
                .cdw(10, cns)
        };
        adm.run(&platform, &regs, identify(cns::CONTROLLER, 0), t)?;
        read_identify(&ident, &mut data);
        let ctrl = ControllerInfo::parse(&data);
        if ctrl.sqes & 0xF > 6 || ctrl.cqes & 0xF > 4 {
            return Err(NvmeError::EntrySize);
        }
        // The namespace: the configured one, or the first active.
        let nsid = if cfg.namespace != 0 {
            cfg.namespace
        } else {
            match adm.run(&platform, &regs, identify(cns::ACTIVE_NAMESPACES, 0), t) {
                Ok(_) => {
                    read_identify(&ident, &mut data);
                    let first = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
                    if first == 0 {
                        return Err(NvmeError::NoNamespace);
                    }
                    first
                }
                // NVMe 1.0 controllers have no active namespace list: namespace 1 then.
                Err(NvmeError::AdminFailed { .. }) => 1,
                Err(e) => return Err(e),
            }
        };
        adm.run(&platform, &regs, identify(cns::NAMESPACE, nsid), t)?;
        read_identify(&ident, &mut data);
        let ns = NamespaceInfo::parse(&data);
        if ns.size == 0 {
            return Err(NvmeError::NoNamespace);
        }
        if !(ns.lba_shift == 9 || ns.lba_shift == 12) || ns.metadata != 0 {
            return Err(NvmeError::UnsupportedFormat {
                lba_shift: ns.lba_shift,
                metadata: ns.metadata,
            });
        }

        // One I/O queue pair: ask for it, then create the completion queue before the
        // submission queue that posts to it. Physically contiguous, no interrupts.
        adm.run(
            &platform,
            &regs,
            Sqe::new(admin::SET_FEATURES, 0, 0)
                .cdw(10, FEATURE_NUMBER_OF_QUEUES)
                .cdw(11, 0),
            t,
        )?;
        let cq = CompletionQueue::new(cq_mem, cq_bus, entries).ok_or(NvmeError::QueueDepth)?;
        let sq = SubmissionQueue::new(sq_mem, sq_bus, entries).ok_or(NvmeError::QueueDepth)?;
        let qsize = u32::from(entries - 1) << 16;
        adm.run(
            &platform,
            &regs,
            Sqe::new(admin::CREATE_CQ, 0, 0)
                .prp(cq.bus(), 0)
                .cdw(10, qsize | 1)
                .cdw(11, 1),
            t,
        )?;
        adm.run(
            &platform,
            &regs,
            Sqe::new(admin::CREATE_SQ, 0, 0)
                .prp(sq.bus(), 0)
                .cdw(10, qsize | 1)
                .cdw(11, (1 << 16) | 1),
            t,
        )?;

        // MDTS is in units of the minimum page size (4 KiB here); 0 means no limit.
        let mdts_bytes = if ctrl.mdts == 0 || ctrl.mdts >= 20 {
            usize::MAX
        } else {
            (PAGE_SIZE << cap::page_shift_min(capv).saturating_sub(12)) << ctrl.mdts
        };
        let max_transfer = max_transfer_cfg.min(mdts_bytes);
        let atomic = ns.nawupf.unwrap_or(ctrl.awupf);
        let geo = Geometry {
            sector_size: 1 << ns.lba_shift,
            sector_count: ns.size,
            queue_depth: depth as u16,
            volatile_cache: ctrl.volatile_cache(),
            fua: true,
            atomic_write_sectors: u32::from(atomic) + 1,
            read_only: ns.write_protected || cfg.read_only,
        };
        let info = Info {
            version: regs.read32(regs::VS),
            max_queue_entries: cap::mqes(capv),
            doorbell_stride: stride,
            ready_timeout_ms: cap::timeout_units(capv) * 500,
            namespace: nsid,
            io_queue_entries: entries,
            max_transfer,
            controller: ctrl,
            namespace_info: ns,
        };
        Ok(Nvme {
            platform,
            regs,
            sq,
            cq,
            lists,
            lists_bus,
            list_bytes: list_len,
            slots: [const { Slot::FREE }; SLOTS],
            depth,
            in_flight: 0,
            local: 0,
            seq: 0,
            health: Health::Running,
            geo,
            dsm: ctrl.supports_dsm(),
            nsid,
            max_transfer,
            io_timeout_us: cfg.io_timeout_us,
            ready_timeout_us,
            info,
            stats: Stats::default(),
        })
    }

    /// Tells the controller that the host is shutting down (CC.SHN = normal) and waits, no
    /// longer than CAP.TO, for CSTS.SHST to report completion: the controller has then written
    /// its volatile cache to the media. Returns false if requests are still in flight (nothing
    /// is done) or the controller did not confirm in time.
    pub fn shutdown(&mut self) -> bool {
        if self.in_flight != 0 {
            return false;
        }
        let ccv = self.regs.read32(regs::CC);
        self.regs.write32(regs::CC, (ccv & !(3 << 14)) | (1 << 14));
        let regs = &self.regs;
        wait_until(&self.platform, self.ready_timeout_us, || {
            (regs.read32(regs::CSTS) >> 2) & 3 == 2
        })
    }
}
