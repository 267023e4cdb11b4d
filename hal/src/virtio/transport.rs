//! What a device driver needs from a virtio transport (virtio 1.x §4).
//!
//! The block driver is written against this trait only; [`MmioTransport`](super::MmioTransport)
//! and [`PciTransport`](super::PciTransport) implement it. Another transport (channel I/O, a
//! hypervisor's own bus) would implement it the same way.

use super::VirtioError;

/// Register-level access to one virtio device.
///
/// Methods take `&mut self` where the transport has select registers (feature and queue
/// selectors) whose state must not be interleaved.
pub trait Transport {
    /// The virtio device type (2 = block).
    fn device_type(&self) -> u32;

    /// The device status register.
    fn status(&self) -> u8;

    /// Write the device status register; writing 0 starts a reset.
    fn set_status(&mut self, status: u8);

    /// All 64 feature bits the device offers.
    fn device_features(&mut self) -> u64;

    /// Tell the device which features the driver accepts.
    fn set_driver_features(&mut self, features: u64);

    /// The largest size the device allows for queue `queue`; 0 if the queue does not exist.
    fn max_queue_size(&mut self, queue: u16) -> u16;

    /// Give queue `queue` its size and the bus addresses of its descriptor table, available
    /// (driver) ring and used (device) ring, then enable it.
    fn setup_queue(
        &mut self,
        queue: u16,
        size: u16,
        desc: u64,
        driver: u64,
        device: u64,
    ) -> Result<(), VirtioError>;

    /// Tell the device that queue `queue` has new available buffers (the doorbell).
    fn notify(&mut self, queue: u16);

    /// The configuration generation counter: it changes whenever the device changes its
    /// configuration space, so a multi-access read that saw it change must be retried.
    fn config_generation(&self) -> u32;

    /// Read the device-specific configuration byte at `offset`.
    fn config_read_u8(&self, offset: usize) -> u8;

    /// Read the little-endian 16-bit configuration field at `offset` (2-byte aligned).
    fn config_read_u16(&self, offset: usize) -> u16;

    /// Read the little-endian 32-bit configuration field at `offset` (4-byte aligned).
    fn config_read_u32(&self, offset: usize) -> u32;
}

/// How many times a configuration read is retried when the generation counter moves.
const CONFIG_RETRIES: usize = 16;

/// Read a 64-bit configuration field as two 32-bit accesses (the widest the specification
/// allows), retrying while the configuration generation changes underneath. `None` if it
/// kept changing for 16 attempts.
pub fn config_read_u64<T: Transport + ?Sized>(t: &T, offset: usize) -> Option<u64> {
    for _ in 0..CONFIG_RETRIES {
        let before = t.config_generation();
        let lo = t.config_read_u32(offset);
        let hi = t.config_read_u32(offset + 4);
        if t.config_generation() == before {
            return Some(u64::from(lo) | (u64::from(hi) << 32));
        }
    }
    None
}

impl<T: Transport + ?Sized> Transport for &mut T {
    fn device_type(&self) -> u32 {
        (**self).device_type()
    }
    fn status(&self) -> u8 {
        (**self).status()
    }
    fn set_status(&mut self, status: u8) {
        (**self).set_status(status)
    }
    fn device_features(&mut self) -> u64 {
        (**self).device_features()
    }
    fn set_driver_features(&mut self, features: u64) {
        (**self).set_driver_features(features)
    }
    fn max_queue_size(&mut self, queue: u16) -> u16 {
        (**self).max_queue_size(queue)
    }
    fn setup_queue(
        &mut self,
        queue: u16,
        size: u16,
        desc: u64,
        driver: u64,
        device: u64,
    ) -> Result<(), VirtioError> {
        (**self).setup_queue(queue, size, desc, driver, device)
    }
    fn notify(&mut self, queue: u16) {
        (**self).notify(queue)
    }
    fn config_generation(&self) -> u32 {
        (**self).config_generation()
    }
    fn config_read_u8(&self, offset: usize) -> u8 {
        (**self).config_read_u8(offset)
    }
    fn config_read_u16(&self, offset: usize) -> u16 {
        (**self).config_read_u16(offset)
    }
    fn config_read_u32(&self, offset: usize) -> u32 {
        (**self).config_read_u32(offset)
    }
}
