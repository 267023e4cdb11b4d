//! # bonsaifs-hal
//!
//! Block device drivers for [`bonsaifs`]: each one implements
//! [`bonsaifs::device::BlockDevice`], the single trait the filesystem talks to.
//!
//! Like the core, this crate is `#![no_std]` and needs no allocator; host-only drivers sit
//! behind the `std` feature.
//!
//! | driver | status | where it runs |
//! |---|---|---|
//! | `image_file::ImageFile` (feature `std`) | available | a host image file or raw block device, for `mkfs`/`fsck` and tests |
//! | [`virtio::VirtioBlk`] | available | virtio-blk 1.x over MMIO v2 ([`virtio::MmioTransport`]) or PCI ([`virtio::PciTransport`]): split virtqueue of configurable size, queued flush, out-of-order completions; passes [`conformance`] in QEMU |
//! | [`nvme::Nvme`] | available | NVMe controllers on PCIe (one I/O queue pair, PRP lists, out-of-order completions, timeouts); passes [`conformance`] in QEMU |
//! | [`sd::SdCard`] | available | SD cards over SPI through `embedded-hal` 1.0 `SpiDevice` + `DelayNs` (completes at submit time); [`sifive_spi::SifiveSpi`] is one such bus |
//!
//! The DMA drivers (virtio-blk, NVMe) get memory, bus addresses, register mappings, cache
//! maintenance and barriers from the board through one small trait,
//! [`platform::Platform`]; [`pci`] enumerates PCIe functions and assigns their BARs (nothing
//! else does on bare metal).
//!
//! The RAM disks live in the core crate ([`bonsaifs::device::RamDisk`],
//! [`bonsaifs::device::QueuedRamDisk`]) because the core's own tests use them.
//!
//! Drivers that let hardware DMA into request buffers implement the trait only for
//! `'b = 'static` (see the buffer-ownership rules in [`bonsaifs::device`]); drivers that copy
//! synchronously, like the image-file driver, implement it for every `'b`.
#![no_std]
#![deny(missing_docs)]

#[cfg(feature = "std")]
extern crate std;

pub mod conformance;
#[cfg(feature = "std")]
pub mod image_file;
pub mod nvme;
pub mod pci;
pub mod platform;
pub mod sd;
#[cfg(feature = "sdmmc")]
pub mod sdmmc_adapter;
pub mod sifive_spi;
pub mod virtio;
