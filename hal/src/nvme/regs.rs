//! Controller registers (NVMe base specification, "Controller Registers"): offsets, the bit
//! fields the driver uses, and volatile access to the memory-mapped register block (BAR0).

use core::ptr::NonNull;

/// Controller Capabilities (64 bits).
pub const CAP: usize = 0x00;
/// Version.
pub const VS: usize = 0x08;
/// Interrupt Mask Set.
pub const INTMS: usize = 0x0C;
/// Controller Configuration.
pub const CC: usize = 0x14;
/// Controller Status.
pub const CSTS: usize = 0x1C;
/// Admin Queue Attributes.
pub const AQA: usize = 0x24;
/// Admin Submission Queue base address (64 bits).
pub const ASQ: usize = 0x28;
/// Admin Completion Queue base address (64 bits).
pub const ACQ: usize = 0x30;
/// First doorbell register.
pub const DOORBELLS: usize = 0x1000;

/// Fields of CAP.
pub mod cap {
    /// Maximum Queue Entries Supported, zero-based.
    pub fn mqes(cap: u64) -> u32 {
        (cap & 0xFFFF) as u32 + 1
    }
    /// Worst-case time for CSTS.RDY to follow CC.EN, in 500 ms units.
    pub fn timeout_units(cap: u64) -> u32 {
        ((cap >> 24) & 0xFF) as u32
    }
    /// Doorbell stride in bytes: `4 << DSTRD`.
    pub fn doorbell_stride(cap: u64) -> usize {
        4usize << ((cap >> 32) & 0xF)
    }
    /// The controller supports the NVM command set (CSS bit 0).
    pub fn supports_nvm(cap: u64) -> bool {
        (cap >> 37) & 1 == 1
    }
    /// Smallest memory page size, as a power of two (`12 + MPSMIN`).
    pub fn page_shift_min(cap: u64) -> u32 {
        12 + ((cap >> 48) & 0xF) as u32
    }
    /// Largest memory page size, as a power of two (`12 + MPSMAX`).
    pub fn page_shift_max(cap: u64) -> u32 {
        12 + ((cap >> 52) & 0xF) as u32
    }
}

/// Fields of CC.
pub mod cc {
    /// Enable.
    pub const EN: u32 = 1 << 0;
    /// I/O Submission Queue Entry Size: 2^6 = 64 bytes.
    pub const IOSQES_64: u32 = 6 << 16;
    /// I/O Completion Queue Entry Size: 2^4 = 16 bytes.
    pub const IOCQES_16: u32 = 4 << 20;
    // CSS = 0 (NVM command set), MPS = 0 (4 KiB pages), AMS = 0 (round robin), SHN = 0: all
    // zero bits.
}

/// Fields of CSTS.
pub mod csts {
    /// Ready.
    pub const RDY: u32 = 1 << 0;
    /// Controller Fatal Status.
    pub const CFS: u32 = 1 << 1;
}

/// The controller's register block.
pub struct Regs {
    base: NonNull<u8>,
    len: usize,
    stride: usize,
}

// SAFETY: the register block belongs to the one driver object holding it; moving that object to
// another thread moves the ownership.
unsafe impl Send for Regs {}

impl Regs {
    /// The register block at `base`, `len` bytes mapped.
    ///
    /// # Safety
    ///
    /// `base .. base + len` must map the controller's registers for volatile access, for as
    /// long as this value lives, and nothing else may program the controller meanwhile.
    pub unsafe fn new(base: NonNull<u8>, len: usize) -> Self {
        Self {
            base,
            len,
            stride: 4,
        }
    }

    /// Sets the doorbell stride read from CAP.
    pub fn set_stride(&mut self, stride: usize) {
        self.stride = stride;
    }

    /// Bytes of register space the doorbells of queues `0..=max_qid` need.
    pub fn span_for(stride: usize, max_qid: u16) -> usize {
        DOORBELLS + (2 * usize::from(max_qid) + 2) * stride
    }

    /// A 32-bit register. Offsets outside the mapped block read as all ones (what an absent
    /// device returns); the driver only uses offsets it has mapped.
    pub fn read32(&self, off: usize) -> u32 {
        if off % 4 != 0 || off.checked_add(4).is_none_or(|end| end > self.len) {
            return u32::MAX;
        }
        // SAFETY: in bounds and aligned (checked above); `new`'s contract makes it a register.
        unsafe { self.base.as_ptr().add(off).cast::<u32>().read_volatile() }
    }

    /// Writes a 32-bit register (ignored outside the mapped block).
    pub fn write32(&self, off: usize, value: u32) {
        if off % 4 != 0 || off.checked_add(4).is_none_or(|end| end > self.len) {
            return;
        }
        // SAFETY: as in `read32`.
        unsafe {
            self.base
                .as_ptr()
                .add(off)
                .cast::<u32>()
                .write_volatile(value)
        }
    }

    /// A 64-bit register, read as two 32-bit halves (low first), which every controller must
    /// accept.
    pub fn read64(&self, off: usize) -> u64 {
        u64::from(self.read32(off)) | (u64::from(self.read32(off + 4)) << 32)
    }

    /// Writes a 64-bit register as two 32-bit halves, low first.
    pub fn write64(&self, off: usize, value: u64) {
        self.write32(off, value as u32);
        self.write32(off + 4, (value >> 32) as u32);
    }

    /// Rings submission queue `qid`'s tail doorbell.
    pub fn sq_tail(&self, qid: u16, tail: u16) {
        self.write32(
            DOORBELLS + 2 * usize::from(qid) * self.stride,
            u32::from(tail),
        );
    }

    /// Rings completion queue `qid`'s head doorbell.
    pub fn cq_head(&self, qid: u16, head: u16) {
        self.write32(
            DOORBELLS + (2 * usize::from(qid) + 1) * self.stride,
            u32::from(head),
        );
    }
}
