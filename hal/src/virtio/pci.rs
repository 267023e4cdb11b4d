//! virtio over PCI, modern interface (virtio 1.x §4.1).
//!
//! A modern virtio PCI function describes its register blocks with vendor-specific PCI
//! capabilities, each naming a BAR, an offset and a length:
//!
//! | `cfg_type` | block | used for |
//! |---|---|---|
//! | 1 | common configuration | status, features, queue set-up |
//! | 2 | notifications | doorbells: `offset + queue_notify_off × multiplier` |
//! | 3 | ISR status | not used (the driver polls) |
//! | 4 | device configuration | the virtio-blk configuration (capacity, …) |
//!
//! [`PciTransport::new`] assigns the function's BARs from the caller's window (nothing else
//! does under `-bios none`), enables memory decoding and bus mastering, walks the capability
//! list and maps the blocks through [`Platform::map_mmio`]. Both the modern device IDs
//! (`0x1040 + type`) and transitional ones (`0x1000..=0x103F`, type in the subsystem ID) are
//! accepted; only the modern interface is used.

use core::ptr::NonNull;

use super::transport::Transport;
use super::VirtioError;
use crate::pci::{cap_id, reg, Bar, BarAllocator, BarKind, Ecam, FunctionInfo, PciAddress};
use crate::platform::Platform;

/// The vendor ID of virtio PCI functions.
pub const VIRTIO_VENDOR: u16 = 0x1AF4;

/// Capability types (`cfg_type`).
mod cfg_type {
    pub const COMMON: u8 = 1;
    pub const NOTIFY: u8 = 2;
    pub const DEVICE: u8 = 4;
}

/// Offsets in the common configuration block (`struct virtio_pci_common_cfg`).
mod common {
    pub const DEVICE_FEATURE_SELECT: usize = 0x00;
    pub const DEVICE_FEATURE: usize = 0x04;
    pub const DRIVER_FEATURE_SELECT: usize = 0x08;
    pub const DRIVER_FEATURE: usize = 0x0C;
    pub const DEVICE_STATUS: usize = 0x14;
    pub const CONFIG_GENERATION: usize = 0x15;
    pub const QUEUE_SELECT: usize = 0x16;
    pub const QUEUE_SIZE: usize = 0x18;
    pub const QUEUE_ENABLE: usize = 0x1C;
    pub const QUEUE_NOTIFY_OFF: usize = 0x1E;
    pub const QUEUE_DESC: usize = 0x20;
    pub const QUEUE_DRIVER: usize = 0x28;
    pub const QUEUE_DEVICE: usize = 0x30;
    /// Bytes of the block the driver uses.
    pub const LEN: u32 = 0x38;
}

/// The virtio device type of a virtio PCI function, from its IDs; `None` if it is not one.
pub fn virtio_device_type(ecam: &Ecam, f: &FunctionInfo) -> Option<u32> {
    if f.vendor != VIRTIO_VENDOR {
        return None;
    }
    match f.device {
        0x1040..=0x107F => Some(u32::from(f.device - 0x1040)),
        // Transitional: the subsystem ID carries the type.
        0x1000..=0x103F => ecam
            .read16(f.address, reg::SUBSYSTEM_ID)
            .ok()
            .map(u32::from),
        _ => None,
    }
}

/// A mapped register block: pointer and length.
#[derive(Debug, Clone, Copy)]
struct Block {
    ptr: NonNull<u8>,
    len: u32,
}

impl Block {
    fn in_bounds(&self, offset: usize, width: usize) -> bool {
        offset % width == 0 && offset + width <= self.len as usize
    }

    fn read<T: Copy>(&self, offset: usize) -> Option<T> {
        if !self.in_bounds(offset, core::mem::size_of::<T>()) {
            return None;
        }
        // SAFETY: inside the mapped block, aligned to the access width (checked above).
        Some(unsafe { self.ptr.as_ptr().add(offset).cast::<T>().read_volatile() })
    }

    fn write<T: Copy>(&self, offset: usize, value: T) {
        if self.in_bounds(offset, core::mem::size_of::<T>()) {
            // SAFETY: as in `read`.
            unsafe {
                self.ptr
                    .as_ptr()
                    .add(offset)
                    .cast::<T>()
                    .write_volatile(value)
            };
        }
    }
}

/// A virtio device on PCI, through its modern capabilities.
#[derive(Debug)]
pub struct PciTransport {
    address: PciAddress,
    device_type: u32,
    common: Block,
    device: Block,
    notify: Block,
    notify_multiplier: u32,
    /// The doorbell offset (inside `notify`) of each queue set up so far; the block driver
    /// uses queue 0 only.
    notify_offset: [Option<u32>; MAX_QUEUES],
}

/// Queues whose doorbell the transport remembers.
const MAX_QUEUES: usize = 4;

// SAFETY: the transport is the only user of its register blocks.
unsafe impl Send for PciTransport {}

/// One virtio vendor capability as read from configuration space.
#[derive(Debug, Clone, Copy)]
struct VirtioCap {
    bar: u8,
    offset: u32,
    length: u32,
    /// The notify capability's extra field.
    multiplier: u32,
}

impl PciTransport {
    /// Set up the virtio function `function`: assign its BARs from `window`, enable memory
    /// decoding and bus mastering, and map the common, notify and device blocks. For bare
    /// metal, where nothing assigned the BARs.
    pub fn new<P: Platform>(
        platform: &P,
        ecam: &Ecam,
        function: &FunctionInfo,
        window: &mut BarAllocator,
    ) -> Result<Self, VirtioError> {
        virtio_device_type(ecam, function).ok_or(VirtioError::NotFound)?;
        let bars = ecam.assign_bars(function.address, window)?;
        Self::with_bars(platform, ecam, function, &bars)
    }

    /// Like [`PciTransport::new`] for a function whose BARs earlier firmware (U-Boot, UEFI)
    /// already assigned: they are read back, not moved.
    pub fn with_assigned_bars<P: Platform>(
        platform: &P,
        ecam: &Ecam,
        function: &FunctionInfo,
    ) -> Result<Self, VirtioError> {
        virtio_device_type(ecam, function).ok_or(VirtioError::NotFound)?;
        let bars = ecam.bars(function.address)?;
        Self::with_bars(platform, ecam, function, &bars)
    }

    fn with_bars<P: Platform>(
        platform: &P,
        ecam: &Ecam,
        function: &FunctionInfo,
        bars: &[Option<Bar>; 6],
    ) -> Result<Self, VirtioError> {
        let address = function.address;
        let device_type = virtio_device_type(ecam, function).ok_or(VirtioError::NotFound)?;
        ecam.enable(address)?;

        let mut found: [Option<VirtioCap>; 5] = [None; 5];
        for (off, id) in ecam.capabilities(address) {
            if id != cap_id::VENDOR_SPECIFIC {
                continue;
            }
            let kind = ecam.read8(address, off + 3)?;
            // The first capability of each type that this driver can use wins (§4.1.4).
            let slot = match found.get_mut(usize::from(kind)) {
                Some(s) if s.is_none() && kind != 0 => s,
                _ => continue,
            };
            let bar = ecam.read8(address, off + 4)?;
            let multiplier = if kind == cfg_type::NOTIFY {
                ecam.read32(address, off + 16)?
            } else {
                0
            };
            *slot = Some(VirtioCap {
                bar,
                offset: ecam.read32(address, off + 8)?,
                length: ecam.read32(address, off + 12)?,
                multiplier,
            });
        }

        let map = |kind: u8, min_len: u32| -> Result<(Block, u32), VirtioError> {
            let missing = VirtioError::MissingCapability(kind);
            let cap = found[usize::from(kind)].ok_or(missing)?;
            // An unassigned BAR (address 0) cannot hold registers.
            let bar = bars
                .get(usize::from(cap.bar))
                .copied()
                .flatten()
                .filter(|b| b.kind != BarKind::Io && b.address != 0)
                .ok_or(missing)?;
            let end = u64::from(cap.offset) + u64::from(cap.length);
            if cap.length < min_len || end > bar.size {
                return Err(missing);
            }
            let len = usize::try_from(cap.length).map_err(|_| missing)?;
            let ptr = platform
                .map_mmio(bar.address + u64::from(cap.offset), len)
                .ok_or(VirtioError::MapFailed)?;
            Ok((
                Block {
                    ptr,
                    len: cap.length,
                },
                cap.multiplier,
            ))
        };
        // No common-configuration capability at all: a legacy-only (pre-1.0) device.
        if found[usize::from(cfg_type::COMMON)].is_none() {
            return Err(VirtioError::Legacy);
        }
        let (common, _) = map(cfg_type::COMMON, common::LEN)?;
        let (notify, notify_multiplier) = map(cfg_type::NOTIFY, 2)?;
        let (device, _) = map(cfg_type::DEVICE, 0)?;
        Ok(PciTransport {
            address,
            device_type,
            common,
            device,
            notify,
            notify_multiplier,
            notify_offset: [None; MAX_QUEUES],
        })
    }

    /// The function's PCI address.
    pub fn address(&self) -> PciAddress {
        self.address
    }

    fn common_u16(&self, offset: usize) -> u16 {
        u16::from_le(self.common.read::<u16>(offset).unwrap_or(0))
    }

    fn common_u32(&self, offset: usize) -> u32 {
        u32::from_le(self.common.read::<u32>(offset).unwrap_or(0))
    }

    fn set_common_u16(&mut self, offset: usize, value: u16) {
        self.common.write(offset, value.to_le());
    }

    fn set_common_u32(&mut self, offset: usize, value: u32) {
        self.common.write(offset, value.to_le());
    }

    /// 64-bit fields are written as two 32-bit accesses, low half first (§4.1.3.1).
    fn set_common_u64(&mut self, offset: usize, value: u64) {
        self.set_common_u32(offset, value as u32);
        self.set_common_u32(offset + 4, (value >> 32) as u32);
    }
}

impl Transport for PciTransport {
    fn device_type(&self) -> u32 {
        self.device_type
    }

    fn status(&self) -> u8 {
        self.common.read::<u8>(common::DEVICE_STATUS).unwrap_or(0)
    }

    fn set_status(&mut self, status: u8) {
        self.common.write(common::DEVICE_STATUS, status);
    }

    fn device_features(&mut self) -> u64 {
        self.set_common_u32(common::DEVICE_FEATURE_SELECT, 0);
        let lo = self.common_u32(common::DEVICE_FEATURE);
        self.set_common_u32(common::DEVICE_FEATURE_SELECT, 1);
        let hi = self.common_u32(common::DEVICE_FEATURE);
        u64::from(lo) | (u64::from(hi) << 32)
    }

    fn set_driver_features(&mut self, features: u64) {
        self.set_common_u32(common::DRIVER_FEATURE_SELECT, 0);
        self.set_common_u32(common::DRIVER_FEATURE, features as u32);
        self.set_common_u32(common::DRIVER_FEATURE_SELECT, 1);
        self.set_common_u32(common::DRIVER_FEATURE, (features >> 32) as u32);
    }

    fn max_queue_size(&mut self, queue: u16) -> u16 {
        self.set_common_u16(common::QUEUE_SELECT, queue);
        self.common_u16(common::QUEUE_SIZE).min(32768)
    }

    fn setup_queue(
        &mut self,
        queue: u16,
        size: u16,
        desc: u64,
        driver: u64,
        device: u64,
    ) -> Result<(), VirtioError> {
        let slot = usize::from(queue);
        if slot >= MAX_QUEUES {
            return Err(VirtioError::QueueUnavailable);
        }
        self.set_common_u16(common::QUEUE_SELECT, queue);
        let max = self.common_u16(common::QUEUE_SIZE);
        if max == 0 || size > max || self.common_u16(common::QUEUE_ENABLE) != 0 {
            return Err(VirtioError::QueueUnavailable);
        }
        // The doorbell must lie inside the notify block.
        let off = u32::from(self.common_u16(common::QUEUE_NOTIFY_OFF))
            .checked_mul(self.notify_multiplier)
            .filter(|o| o.checked_add(2).is_some_and(|end| end <= self.notify.len))
            .ok_or(VirtioError::MissingCapability(cfg_type::NOTIFY))?;
        self.set_common_u16(common::QUEUE_SIZE, size);
        self.set_common_u64(common::QUEUE_DESC, desc);
        self.set_common_u64(common::QUEUE_DRIVER, driver);
        self.set_common_u64(common::QUEUE_DEVICE, device);
        self.set_common_u16(common::QUEUE_ENABLE, 1);
        self.notify_offset[slot] = Some(off);
        Ok(())
    }

    fn notify(&mut self, queue: u16) {
        // Without VIRTIO_F_NOTIFICATION_DATA the doorbell value is the queue index.
        if let Some(Some(off)) = self.notify_offset.get(usize::from(queue)) {
            self.notify.write(*off as usize, queue.to_le());
        }
    }

    fn config_generation(&self) -> u32 {
        u32::from(
            self.common
                .read::<u8>(common::CONFIG_GENERATION)
                .unwrap_or(0),
        )
    }

    fn config_read_u8(&self, offset: usize) -> u8 {
        self.device.read::<u8>(offset).unwrap_or(0)
    }

    fn config_read_u16(&self, offset: usize) -> u16 {
        u16::from_le(self.device.read::<u16>(offset).unwrap_or(0))
    }

    fn config_read_u32(&self, offset: usize) -> u32 {
        u32::from_le(self.device.read::<u32>(offset).unwrap_or(0))
    }
}
