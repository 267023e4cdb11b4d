//! The [`Platform`] of the QEMU machines: a static DMA pool, identity mapping, coherent DMA.
//!
//! This is the whole porting surface of the virtio and NVMe drivers. On QEMU:
//!
//! * RAM and devices are identity-mapped (no MMU in machine mode), so a CPU address is the
//!   bus address and MMIO needs no mapping;
//! * DMA is cache-coherent, so [`Platform::dma_sync`] has nothing to do;
//! * ring and queue memory comes from a 256 KiB page-aligned pool in `.bss`, handed out by
//!   [`DmaPool`] and never freed;
//! * the clock is the machine's (`mtime`).
//!
//! A board with an MMU, an IOMMU or a non-snooping DMA engine changes exactly these methods.

use core::ptr::NonNull;

use bonsaifs_hal::platform::{DmaPool, DmaRegion, DmaSync, Platform};

use crate::console;
use crate::memory::{StaticBuffer, StaticCell};

/// Bytes of the DMA pool: rings, NVMe queues, request headers.
pub const DMA_POOL_BYTES: usize = 256 * 1024;

static DMA_MEMORY: StaticBuffer<DMA_POOL_BYTES> = StaticBuffer::new();
static BOARD: StaticCell<Board> = StaticCell::new();

/// The QEMU board: see the module documentation.
#[derive(Debug)]
pub struct Board {
    pool: DmaPool,
}

impl Board {
    /// Create the board (once: the DMA pool is taken here; a second call panics).
    pub fn init() -> &'static Board {
        let mem = DMA_MEMORY
            .take()
            .unwrap_or_else(|| panic!("Board::init called twice"));
        match BOARD.init(Board {
            pool: DmaPool::new(mem),
        }) {
            Ok(board) => board,
            Err(_) => panic!("Board::init called twice"),
        }
    }

    /// DMA pool bytes not handed out yet.
    pub fn dma_remaining(&self) -> usize {
        self.pool.remaining()
    }
}

// SAFETY: the pool's memory is a static buffer taken once and never freed; QEMU maps RAM and
// devices 1:1 and its DMA is cache-coherent.
unsafe impl Platform for Board {
    fn dma_alloc(&self, len: usize, align: usize) -> Option<DmaRegion> {
        self.pool.alloc(len, align)
    }

    fn dma_address(&self, addr: *const u8) -> Option<u64> {
        Some(addr as usize as u64)
    }

    fn map_mmio(&self, phys: u64, _len: usize) -> Option<NonNull<u8>> {
        NonNull::new(usize::try_from(phys).ok()? as *mut u8)
    }

    fn dma_sync(&self, _addr: *const u8, _len: usize, _sync: DmaSync) {
        // QEMU's DMA is coherent with the CPU caches: nothing to clean or invalidate.
    }

    fn now_us(&self) -> u64 {
        console::now_us()
    }
}
