//! virtio over MMIO, version 2 (virtio 1.x §4.2).
//!
//! One 0x200-byte register window per device. On QEMU's riscv64 `virt` machine there are
//! eight slots of 0x1000 bytes from `0x1000_1000` to `0x1000_8000`, filled from the top: the
//! first `-device virtio-blk-device` is at `0x1000_8000`. QEMU presents the legacy (version 1)
//! interface unless started with `-global virtio-mmio.force-legacy=false`; this driver refuses
//! version 1 with [`VirtioError::Legacy`].

use core::ptr::NonNull;

use super::transport::Transport;
use super::VirtioError;
use crate::platform::Platform;

/// Register offsets (virtio 1.x §4.2.2).
mod reg {
    pub const MAGIC: usize = 0x000;
    pub const VERSION: usize = 0x004;
    pub const DEVICE_ID: usize = 0x008;
    pub const DEVICE_FEATURES: usize = 0x010;
    pub const DEVICE_FEATURES_SEL: usize = 0x014;
    pub const DRIVER_FEATURES: usize = 0x020;
    pub const DRIVER_FEATURES_SEL: usize = 0x024;
    pub const QUEUE_SEL: usize = 0x030;
    pub const QUEUE_NUM_MAX: usize = 0x034;
    pub const QUEUE_NUM: usize = 0x038;
    pub const QUEUE_READY: usize = 0x044;
    pub const QUEUE_NOTIFY: usize = 0x050;
    pub const STATUS: usize = 0x070;
    pub const QUEUE_DESC_LOW: usize = 0x080;
    pub const QUEUE_DESC_HIGH: usize = 0x084;
    pub const QUEUE_DRIVER_LOW: usize = 0x090;
    pub const QUEUE_DRIVER_HIGH: usize = 0x094;
    pub const QUEUE_DEVICE_LOW: usize = 0x0A0;
    pub const QUEUE_DEVICE_HIGH: usize = 0x0A4;
    pub const CONFIG_GENERATION: usize = 0x0FC;
    pub const CONFIG: usize = 0x100;
}

/// "virt" in little-endian ASCII.
const MAGIC_VALUE: u32 = 0x7472_6976;

/// Bytes of the register window this driver maps: the registers plus 256 bytes of device
/// configuration (virtio-blk's is 96 today).
pub const WINDOW_BYTES: usize = 0x200;

/// A virtio-mmio (version 2) device.
#[derive(Debug)]
pub struct MmioTransport {
    base: NonNull<u8>,
    device_type: u32,
}

// SAFETY: the transport is the only user of its register window; moving it moves that access.
unsafe impl Send for MmioTransport {}

impl MmioTransport {
    /// Map the register window at physical address `phys` and check it holds a modern
    /// virtio device: [`VirtioError::NotFound`] for no device or an empty slot (device ID 0),
    /// [`VirtioError::Legacy`] for version 1.
    pub fn new<P: Platform>(platform: &P, phys: u64) -> Result<Self, VirtioError> {
        let base = platform
            .map_mmio(phys, WINDOW_BYTES)
            .ok_or(VirtioError::MapFailed)?;
        let t = MmioTransport {
            base,
            device_type: 0,
        };
        if t.read32(reg::MAGIC) != MAGIC_VALUE {
            return Err(VirtioError::NotFound);
        }
        match t.read32(reg::VERSION) {
            2 => {}
            1 => return Err(VirtioError::Legacy),
            _ => return Err(VirtioError::NotFound),
        }
        let device_type = t.read32(reg::DEVICE_ID);
        if device_type == 0 {
            return Err(VirtioError::NotFound);
        }
        Ok(MmioTransport { base, device_type })
    }

    fn read32(&self, offset: usize) -> u32 {
        // SAFETY: offsets are register offsets inside the mapped window, 4-byte aligned.
        u32::from_le(unsafe { self.base.as_ptr().add(offset).cast::<u32>().read_volatile() })
    }

    fn write32(&mut self, offset: usize, value: u32) {
        // SAFETY: as in `read32`.
        unsafe {
            self.base
                .as_ptr()
                .add(offset)
                .cast::<u32>()
                .write_volatile(value.to_le())
        };
    }
}

impl Transport for MmioTransport {
    fn device_type(&self) -> u32 {
        self.device_type
    }

    fn status(&self) -> u8 {
        self.read32(reg::STATUS) as u8
    }

    fn set_status(&mut self, status: u8) {
        self.write32(reg::STATUS, u32::from(status));
    }

    fn device_features(&mut self) -> u64 {
        self.write32(reg::DEVICE_FEATURES_SEL, 0);
        let lo = self.read32(reg::DEVICE_FEATURES);
        self.write32(reg::DEVICE_FEATURES_SEL, 1);
        let hi = self.read32(reg::DEVICE_FEATURES);
        u64::from(lo) | (u64::from(hi) << 32)
    }

    fn set_driver_features(&mut self, features: u64) {
        self.write32(reg::DRIVER_FEATURES_SEL, 0);
        self.write32(reg::DRIVER_FEATURES, features as u32);
        self.write32(reg::DRIVER_FEATURES_SEL, 1);
        self.write32(reg::DRIVER_FEATURES, (features >> 32) as u32);
    }

    fn max_queue_size(&mut self, queue: u16) -> u16 {
        self.write32(reg::QUEUE_SEL, u32::from(queue));
        // Sizes above the split-ring limit are clamped; the driver picks a power of two below.
        self.read32(reg::QUEUE_NUM_MAX).min(32768) as u16
    }

    fn setup_queue(
        &mut self,
        queue: u16,
        size: u16,
        desc: u64,
        driver: u64,
        device: u64,
    ) -> Result<(), VirtioError> {
        self.write32(reg::QUEUE_SEL, u32::from(queue));
        let max = self.read32(reg::QUEUE_NUM_MAX);
        if self.read32(reg::QUEUE_READY) != 0 || max == 0 || u32::from(size) > max {
            return Err(VirtioError::QueueUnavailable);
        }
        self.write32(reg::QUEUE_NUM, u32::from(size));
        self.write32(reg::QUEUE_DESC_LOW, desc as u32);
        self.write32(reg::QUEUE_DESC_HIGH, (desc >> 32) as u32);
        self.write32(reg::QUEUE_DRIVER_LOW, driver as u32);
        self.write32(reg::QUEUE_DRIVER_HIGH, (driver >> 32) as u32);
        self.write32(reg::QUEUE_DEVICE_LOW, device as u32);
        self.write32(reg::QUEUE_DEVICE_HIGH, (device >> 32) as u32);
        self.write32(reg::QUEUE_READY, 1);
        Ok(())
    }

    fn notify(&mut self, queue: u16) {
        self.write32(reg::QUEUE_NOTIFY, u32::from(queue));
    }

    fn config_generation(&self) -> u32 {
        self.read32(reg::CONFIG_GENERATION)
    }

    fn config_read_u8(&self, offset: usize) -> u8 {
        if offset >= WINDOW_BYTES - reg::CONFIG {
            return 0;
        }
        // SAFETY: inside the mapped configuration area (checked above).
        unsafe { self.base.as_ptr().add(reg::CONFIG + offset).read_volatile() }
    }

    fn config_read_u16(&self, offset: usize) -> u16 {
        if offset % 2 != 0 || offset + 2 > WINDOW_BYTES - reg::CONFIG {
            return 0;
        }
        // SAFETY: inside the mapped configuration area, aligned (checked above).
        u16::from_le(unsafe {
            self.base
                .as_ptr()
                .add(reg::CONFIG + offset)
                .cast::<u16>()
                .read_volatile()
        })
    }

    fn config_read_u32(&self, offset: usize) -> u32 {
        if offset % 4 != 0 || offset + 4 > WINDOW_BYTES - reg::CONFIG {
            return 0;
        }
        self.read32(reg::CONFIG + offset)
    }
}
