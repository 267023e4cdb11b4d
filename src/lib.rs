//! # bonsaifs
//!
//! A power-loss-safe filesystem for firmware: `#![no_std]`, no allocator, a copy-on-write
//! B+tree with extents and a journal, over one [`BlockDevice`](device::BlockDevice) trait
//! that RAM disks, SD cards, virtio-blk and NVMe drivers implement.
//!
//! The crate is layered bottom-up; each module holds one idea:
//!
//! | module | holds |
//! |---|---|
//! | [`device`] | the `BlockDevice` contract, requests and completions, RAM disks, the tracer |
//! | [`wire`] | the on-disk format: block header, superblock, B-tree node layout (see SPEC.md) |
//! | [`cache`] | the fixed-slot write-back block cache that owns every I/O buffer |
//! | [`btree`] | the one copy-on-write B+tree, used for the filesystem and free-space trees |
//! | [`space`] | the block allocator over the free-space tree |
//! | [`volume`] | format, mount, transactions and the checkpoint that makes them durable |
//! | [`fs`] | the filesystem: paths, directories, files, handles, `embedded-io` files |
//! | [`fsck`] | the checker: every block referenced once, every checksum valid |
//! | [`error`] | the one `Error` enum |
//!
//! Two features, both on by default, trade code and RAM for speed: `journal` (`fsync` as one
//! log record, replayed at mount; without it `fsync` checkpoints) and `nowait` (queued
//! `NOWAIT` / `DSYNC` writes with tickets, `NOWAIT` reads and `SharedFs`; without it every
//! call blocks). `nowait` needs `journal`.
#![no_std]
#![deny(missing_docs)]
#![forbid(unsafe_code)]

#[cfg(any(test, feature = "std"))]
extern crate std;

#[macro_use]
mod log;

pub mod btree;
pub mod cache;
pub mod device;
pub mod error;
pub mod fs;
pub mod fsck;
pub mod inject;
#[cfg(feature = "nowait")]
pub mod shared;
pub mod space;
pub mod volume;
pub mod wire;

pub use error::{Error, IoError, Result};
