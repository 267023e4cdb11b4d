//! NVMe over PCIe: our own driver, with one I/O queue pair of configurable depth, completions
//! matched by command identifier, and every wait bounded.
//!
//! # What it does
//!
//! * **Bring-up** ([`Nvme::new`], in `init.rs`): reads CAP; disables the controller (CC.EN = 0,
//!   waiting for CSTS.RDY = 0 no longer than CAP.TO says); sets up the admin queue pair (AQA,
//!   ASQ, ACQ); enables it (4 KiB pages, 64-byte / 16-byte entries) and waits for CSTS.RDY,
//!   failing on CSTS.CFS; identifies the controller (volatile write cache, MDTS, Dataset
//!   Management support) and the namespace (size, LBA format); asks for one I/O queue pair
//!   (Set Features, Number of Queues) and creates its completion then submission queue.
//! * **I/O** (`io.rs`): [`BlockDevice<'static>`](bonsaifs::device::BlockDevice). `submit` writes
//!   one submission entry and rings the tail doorbell; it never waits and answers `Busy` when
//!   all slots are taken. `poll` takes at most one completion entry (phase tag tracking, head
//!   doorbell), finds its request by command identifier (QEMU completes out of order), maps
//!   the status code to an [`IoError`] and hands the buffer back.
//!   Read, Write (with FUA when asked), Flush, and Discard (Dataset Management, deallocate)
//!   when the controller supports it.
//! * **Buffers** are described by PRPs (`prp.rs`): PRP1, PRP2, or a PRP list in a per-slot
//!   area of driver memory, translated page by page through
//!   [`Platform::dma_address`].
//! * **Timeouts**: a command older than [`NvmeConfig::io_timeout_us`] (on the platform clock)
//!   makes the driver give up on the controller: it disables it (which aborts every command)
//!   and completes everything in flight with [`IoError::Timeout`](bonsaifs::device::IoError).
//!   Buffers come back only if the controller confirmed it stopped (CSTS.RDY = 0); otherwise
//!   they are kept from the caller forever (the `'static` rule makes that sound), because the
//!   controller might still write into them. Later requests fail with `Timeout` too.
//!
//! # Geometry
//!
//! Sector size from the namespace's LBA format (512 or 4096; formats with metadata are
//! refused), sector count from its size, queue depth = the slots (`SLOTS`, capped by the
//! controller's maximum queue size), `volatile_cache` from Identify Controller VWC, `fua`
//! true (FUA on Write is mandatory in the NVM command set), `atomic_write_sectors` from
//! NAWUPF / AWUPF, `read_only` if the namespace is write protected or the configuration says
//! so.
//!
//! # Memory
//!
//! Everything the controller reads or writes besides request buffers comes from
//! [`Platform::dma_alloc`] at bring-up, once; see
//! [`dma_bytes`] for the amount.
//!
//! # Not covered
//!
//! Interrupts (the driver polls), several I/O queues, SGLs, metadata / protection
//! information, namespace management, and transfers above [`NvmeConfig::max_transfer`]
//! (they complete with [`IoError::Unsupported`](bonsaifs::device::IoError)).

mod command;
mod identify;
mod init;
mod io;
mod prp;
mod queue;
mod regs;

use core::fmt;

use bonsaifs::device::{Geometry, IoError, Tag};

use crate::platform::{DmaRegion, Platform, PAGE_SIZE};

pub use identify::{ControllerInfo, NamespaceInfo, Text};

use queue::{CompletionQueue, SubmissionQueue, CQE_BYTES, SQE_BYTES};
use regs::Regs;

/// Entries of the admin queues (commands there run one at a time, at bring-up).
const ADMIN_ENTRIES: u16 = 8;
/// Largest transfer the driver describes with one PRP list page (512 entries of 4 KiB).
pub const MAX_TRANSFER_LIMIT: usize = 512 * PAGE_SIZE;

/// How the driver sets the controller up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NvmeConfig {
    /// The namespace to use; 0 picks the first active one.
    pub namespace: u32,
    /// Largest request in bytes (rounded down to whole pages, at most [`MAX_TRANSFER_LIMIT`]
    /// and the controller's MDTS). It sizes the per-slot PRP lists.
    pub max_transfer: usize,
    /// How long (platform microseconds) an I/O command may take before the controller is
    /// declared dead.
    pub io_timeout_us: u64,
    /// How long an admin command at bring-up may take.
    pub admin_timeout_us: u64,
    /// Refuse writes and discards even if the namespace allows them.
    pub read_only: bool,
}

impl Default for NvmeConfig {
    /// First active namespace, 128 KiB transfers, 30 s I/O and 10 s admin timeouts, writable.
    fn default() -> Self {
        Self {
            namespace: 0,
            max_transfer: 128 * 1024,
            io_timeout_us: 30_000_000,
            admin_timeout_us: 10_000_000,
            read_only: false,
        }
    }
}

/// Why bring-up failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum NvmeError {
    /// The platform could not map the register block.
    Mmio,
    /// The platform has no DMA memory left for the queues.
    NoDmaMemory,
    /// Driver memory has no bus address the controller can use.
    DmaAddress,
    /// The controller does not implement the NVM command set.
    NoNvmCommandSet,
    /// The controller cannot use 4 KiB memory pages.
    PageSize,
    /// CSTS.RDY did not clear within CAP.TO after disabling.
    ResetTimeout,
    /// CSTS.RDY did not set within CAP.TO after enabling.
    EnableTimeout,
    /// The controller reported a fatal status (CSTS.CFS).
    ControllerFatal,
    /// An admin command did not complete in time.
    AdminTimeout {
        /// Its opcode.
        opcode: u8,
    },
    /// An admin command failed.
    AdminFailed {
        /// Its opcode.
        opcode: u8,
        /// Status code type and code, `(sct << 8) | sc`.
        status: u16,
    },
    /// An admin completion did not match the command (wrong identifier).
    AdminProtocol {
        /// The opcode of the command waited for.
        opcode: u8,
    },
    /// No active namespace (or the configured one is inactive).
    NoNamespace,
    /// The namespace's format is not usable: block size other than 512 / 4096, or metadata.
    UnsupportedFormat {
        /// Block size as a power of two.
        lba_shift: u8,
        /// Metadata bytes per block.
        metadata: u16,
    },
    /// The controller requires larger queue entries than 64 / 16 bytes.
    EntrySize,
    /// A queue of the configured depth cannot be built (0 slots, or more than 4095).
    QueueDepth,
}

impl fmt::Display for NvmeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NvmeError::Mmio => f.write_str("cannot map the controller registers"),
            NvmeError::NoDmaMemory => f.write_str("out of DMA memory for the queues"),
            NvmeError::DmaAddress => f.write_str("queue memory has no bus address"),
            NvmeError::NoNvmCommandSet => f.write_str("controller lacks the NVM command set"),
            NvmeError::PageSize => f.write_str("controller cannot use 4 KiB pages"),
            NvmeError::ResetTimeout => f.write_str("controller did not stop within CAP.TO"),
            NvmeError::EnableTimeout => {
                f.write_str("controller did not become ready within CAP.TO")
            }
            NvmeError::ControllerFatal => f.write_str("controller fatal status"),
            NvmeError::AdminTimeout { opcode } => {
                write!(f, "admin command {opcode:#04x} timed out")
            }
            NvmeError::AdminFailed { opcode, status } => {
                write!(
                    f,
                    "admin command {opcode:#04x} failed with status {status:#05x}"
                )
            }
            NvmeError::AdminProtocol { opcode } => {
                write!(
                    f,
                    "admin command {opcode:#04x}: completion for another command"
                )
            }
            NvmeError::NoNamespace => f.write_str("no active namespace"),
            NvmeError::UnsupportedFormat {
                lba_shift,
                metadata,
            } => write!(
                f,
                "unsupported LBA format: 2^{lba_shift}-byte blocks with {metadata} metadata bytes"
            ),
            NvmeError::EntrySize => f.write_str("controller needs larger queue entries"),
            NvmeError::QueueDepth => f.write_str("unusable queue depth"),
        }
    }
}

/// What bring-up learnt, for logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Info {
    /// VS register: major in 31:16, minor in 15:8.
    pub version: u32,
    /// Maximum queue entries the controller supports.
    pub max_queue_entries: u32,
    /// Doorbell stride in bytes.
    pub doorbell_stride: usize,
    /// CAP.TO in milliseconds.
    pub ready_timeout_ms: u32,
    /// The namespace in use.
    pub namespace: u32,
    /// Entries of the I/O submission and completion queues.
    pub io_queue_entries: u16,
    /// Largest request in bytes.
    pub max_transfer: usize,
    /// Identify Controller.
    pub controller: ControllerInfo,
    /// Identify Namespace.
    pub namespace_info: NamespaceInfo,
}

/// Counters since bring-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Commands sent to the controller.
    pub submitted: u64,
    /// Completions taken from the completion queue.
    pub completed: u64,
    /// Completions that arrived while an older command was still outstanding.
    pub out_of_order: u64,
    /// Completion entries naming no outstanding command (ignored).
    pub stray: u64,
    /// Requests refused by the driver itself (range, buffer, read-only, dead controller).
    pub refused: u64,
}

/// Driver-owned DMA memory the driver asks the platform for at bring-up, for `slots` slots and
/// `max_transfer`-byte requests (including alignment padding): size the platform's pool with it.
pub const fn dma_bytes(slots: usize, max_transfer: usize) -> usize {
    let entries = slots + 1;
    // Admin SQ, admin CQ, identify buffer: a page each.
    3 * PAGE_SIZE
        + whole_pages(entries * SQE_BYTES)
        + whole_pages(entries * CQE_BYTES)
        + whole_pages(slots * list_bytes(max_transfer))
}

/// `bytes` rounded up to whole pages.
const fn whole_pages(bytes: usize) -> usize {
    bytes.div_ceil(PAGE_SIZE) * PAGE_SIZE
}

/// Bytes of one slot's PRP list: a power of two, so that no list crosses a page boundary.
const fn list_bytes(max_transfer: usize) -> usize {
    let mut t = max_transfer;
    if t > MAX_TRANSFER_LIMIT {
        t = MAX_TRANSFER_LIMIT;
    }
    // One entry per page after the first; at least two entries (16 bytes: also one Dataset
    // Management range).
    let mut entries = t / PAGE_SIZE;
    if entries < 2 {
        entries = 2;
    }
    (entries * 8).next_power_of_two()
}

/// Where a slot is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotState {
    /// Unused.
    Free,
    /// Submitted to the controller.
    Device,
    /// Finished by the driver itself; waiting for `poll`.
    Local,
}

/// One request in flight. The slot index and a generation form the command identifier.
struct Slot {
    state: SlotState,
    tag: Tag,
    buf: Option<&'static mut [u8]>,
    /// The controller writes the buffer (a read).
    device_writes: bool,
    /// Platform time at submission.
    started: u64,
    /// Submission order, for the out-of-order statistic.
    seq: u64,
    /// Bumped on every use, so a stale or duplicated completion entry is recognised.
    generation: u8,
    /// The result of a `Local` slot.
    result: Result<(), IoError>,
}

impl Slot {
    const FREE: Slot = Slot {
        state: SlotState::Free,
        tag: 0,
        buf: None,
        device_writes: false,
        started: 0,
        seq: 0,
        generation: 0,
        result: Ok(()),
    };
}

/// Whether the controller still works.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Health {
    Running,
    /// A command timed out; the controller was disabled. `stopped`: it confirmed (CSTS.RDY
    /// = 0), so buffers of aborted commands could be handed back.
    Dead {
        stopped: bool,
    },
}

/// An NVMe controller with one namespace and one I/O queue pair of up to `SLOTS` commands.
///
/// Create it with [`Nvme::new`]; use it through [`BlockDevice`](bonsaifs::device::BlockDevice).
pub struct Nvme<P: Platform, const SLOTS: usize = 32> {
    platform: P,
    regs: Regs,
    sq: SubmissionQueue,
    cq: CompletionQueue,
    /// Per-slot PRP lists (`list_bytes` each).
    lists: DmaRegion,
    lists_bus: u64,
    list_bytes: usize,
    slots: [Slot; SLOTS],
    /// Usable slots (≤ SLOTS, limited by the controller's queue size).
    depth: usize,
    in_flight: usize,
    local: usize,
    seq: u64,
    health: Health,
    geo: Geometry,
    dsm: bool,
    nsid: u32,
    max_transfer: usize,
    io_timeout_us: u64,
    ready_timeout_us: u64,
    info: Info,
    stats: Stats,
}

impl<P: Platform, const SLOTS: usize> Nvme<P, SLOTS> {
    /// What bring-up learnt about the controller and namespace.
    pub fn info(&self) -> &Info {
        &self.info
    }

    /// Counters since bring-up.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The platform the driver was given.
    pub fn platform(&self) -> &P {
        &self.platform
    }

    /// Whether a timeout made the driver give up on the controller.
    pub fn is_dead(&self) -> bool {
        matches!(self.health, Health::Dead { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_and_pool_sizes() {
        // One entry per page after the first, a power of two, at least 16 bytes.
        assert_eq!(list_bytes(4096), 16);
        assert_eq!(list_bytes(16 * 1024), 32);
        assert_eq!(list_bytes(128 * 1024), 256);
        assert_eq!(list_bytes(MAX_TRANSFER_LIMIT), PAGE_SIZE);
        assert_eq!(list_bytes(4 * MAX_TRANSFER_LIMIT), PAGE_SIZE);
        // 32 slots, 128 KiB: three pages (admin queues, identify), a page for each I/O queue
        // (33 × 64 and 33 × 16 bytes), two pages of PRP lists.
        assert_eq!(dma_bytes(32, 128 * 1024), 7 * PAGE_SIZE);
        assert_eq!(dma_bytes(64, 128 * 1024), (3 + 2 + 1 + 4) * PAGE_SIZE);
    }
}
