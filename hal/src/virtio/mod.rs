//! virtio 1.x: the block device driver and the two transports it runs on.
//!
//! | module | what it holds |
//! |---|---|
//! | [`blk`] | [`VirtioBlk`]: feature negotiation, requests as descriptor chains, the [`BlockDevice`](bonsaifs::device::BlockDevice) implementation |
//! | [`queue`] | the split virtqueue over caller DMA memory |
//! | [`transport`] | what the driver needs from a transport: status, features, queue set-up, notify, config space |
//! | [`mmio`] | virtio-mmio version 2 (QEMU `-device virtio-blk-device`, with `-global virtio-mmio.force-legacy=false`) |
//! | [`pci`] | virtio over PCI, modern capabilities (QEMU `-device virtio-blk-pci`) |
//!
//! Only the modern (1.x, `VIRTIO_F_VERSION_1`) interface is implemented: legacy devices are
//! refused with [`VirtioError::Legacy`]. Everything polls; no interrupt is ever enabled.
//!
//! Why our own driver and not the `virtio-drivers` crate: it offers a blocking flush only, a
//! fixed 16-entry queue, and requests that wait for their completion, so it cannot carry the
//! filesystem's queued, out-of-order I/O or a flush that is itself queued.

pub mod blk;
pub mod mmio;
pub mod pci;
pub mod queue;
pub mod transport;

use core::fmt;

pub use blk::{BlkFeatures, BlkStats, VirtioBlk};
pub use mmio::MmioTransport;
pub use pci::PciTransport;
pub use transport::Transport;

/// Device status bits (virtio 1.x §2.1).
pub mod status {
    /// The guest noticed the device.
    pub const ACKNOWLEDGE: u8 = 1;
    /// The guest knows how to drive it.
    pub const DRIVER: u8 = 2;
    /// The driver is ready; the device may process queues.
    pub const DRIVER_OK: u8 = 4;
    /// Feature negotiation is complete.
    pub const FEATURES_OK: u8 = 8;
    /// The device hit an error it cannot recover from without a reset.
    pub const DEVICE_NEEDS_RESET: u8 = 64;
    /// The driver gave up on the device.
    pub const FAILED: u8 = 128;
}

/// Device-independent feature bits (virtio 1.x §6).
pub mod feature {
    /// Descriptors may point to indirect tables (not used by this driver).
    pub const INDIRECT_DESC: u64 = 1 << 28;
    /// `used_event` / `avail_event` notification suppression (not used: the driver polls).
    pub const EVENT_IDX: u64 = 1 << 29;
    /// The modern (1.x) interface. Required.
    pub const VERSION_1: u64 = 1 << 32;
    /// The device reaches memory through the platform's translation (an IOMMU). Accepted:
    /// every bus address the driver gives comes from [`crate::platform::Platform`].
    pub const ACCESS_PLATFORM: u64 = 1 << 33;
    /// Packed virtqueues (not used: split rings only).
    pub const RING_PACKED: u64 = 1 << 34;
    /// The device uses buffers in order (not needed: completions are matched by id).
    pub const IN_ORDER: u64 = 1 << 35;
    /// The device needs the platform's (not only SMP) memory barriers. Accepted: the driver
    /// always uses [`crate::platform::Platform::fence`], which orders against devices.
    pub const ORDER_PLATFORM: u64 = 1 << 36;
}

/// Virtio device type numbers (virtio 1.x §5).
pub mod device_type {
    /// Block device.
    pub const BLOCK: u32 = 2;
}

/// Errors of device start-up. Errors of individual requests are
/// [`IoError`](bonsaifs::IoError)s in their completions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum VirtioError {
    /// No virtio device at this address (bad magic value, or an empty MMIO slot).
    NotFound,
    /// A legacy (pre-1.0) interface; only virtio 1.x is supported. For QEMU's virtio-mmio use
    /// `-global virtio-mmio.force-legacy=false`; a PCI device without the modern capabilities
    /// (`disable-modern=on`) is refused the same way.
    Legacy,
    /// The device is not of the expected type (the number is its virtio device type).
    WrongDeviceType(u32),
    /// The device does not offer `VIRTIO_F_VERSION_1`.
    NoVersion1,
    /// The device did not accept the negotiated features (FEATURES_OK did not stick).
    FeaturesRejected,
    /// The device did not finish a reset in time.
    ResetTimeout,
    /// The queue does not exist, is already enabled, or has size 0.
    QueueUnavailable,
    /// The platform gave no DMA memory (or too little) for the rings and request headers.
    NoDmaMemory,
    /// The platform cannot give a bus address for driver memory.
    NotDmaReachable,
    /// The platform could not map the device registers.
    MapFailed,
    /// A required PCI capability is missing or points outside its BAR (the number is the
    /// virtio capability type: 1 common, 2 notify, 3 ISR, 4 device).
    MissingCapability(u8),
    /// A PCI configuration or BAR assignment error.
    Pci(crate::pci::PciError),
    /// The device reports a sector count or block size the driver cannot use.
    BadGeometry,
}

impl From<crate::pci::PciError> for VirtioError {
    fn from(e: crate::pci::PciError) -> Self {
        VirtioError::Pci(e)
    }
}

impl fmt::Display for VirtioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VirtioError::NotFound => f.write_str("no virtio device"),
            VirtioError::Legacy => f.write_str("legacy virtio device (only 1.x is supported)"),
            VirtioError::WrongDeviceType(t) => {
                write!(f, "virtio device type {t}, not the expected one")
            }
            VirtioError::NoVersion1 => f.write_str("device does not offer VIRTIO_F_VERSION_1"),
            VirtioError::FeaturesRejected => f.write_str("device rejected the negotiated features"),
            VirtioError::ResetTimeout => f.write_str("device reset timed out"),
            VirtioError::QueueUnavailable => f.write_str("virtqueue unavailable"),
            VirtioError::NoDmaMemory => f.write_str("no DMA memory for the virtqueue"),
            VirtioError::NotDmaReachable => f.write_str("driver memory is not reachable by DMA"),
            VirtioError::MapFailed => f.write_str("could not map the device registers"),
            VirtioError::MissingCapability(t) => {
                write!(f, "virtio PCI capability type {t} missing or invalid")
            }
            VirtioError::Pci(e) => write!(f, "PCI: {e}"),
            VirtioError::BadGeometry => f.write_str("unusable device geometry"),
        }
    }
}

impl core::error::Error for VirtioError {}
