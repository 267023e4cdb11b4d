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
//! | virtio-blk over MMIO and PCI | planned | QEMU and other hypervisors (bare-metal / unikernel guests) |
//! | NVMe over PCIe | planned | NVMe controllers, with a real submission/completion queue pair |
//! | SD card over SPI | planned | MCUs through `embedded-hal` 1.0 `SpiDevice` (completes at submit time) |
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

#[cfg(feature = "std")]
pub mod image_file;
