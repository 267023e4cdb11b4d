//! Shared parts of the bonsaifs bare-metal QEMU firmware examples.
//!
//! Each binary in `src/bin/` is one machine + one storage path; everything else lives here,
//! one idea per module:
//!
//! | module | what it holds |
//! |---|---|
//! | [`entry`] | the reset entry in `global_asm!` (boot-hart election, stack, `.bss`), the trap handler, [`entry!`] |
//! | [`machine`] | per-machine console, exit and clock: [`machine::virt`] (16550 UART, sifive_test, CLINT), [`machine::sifive_u`] (SiFive UART, CLINT) |
//! | [`console`] | `println!` over the installed machine's console |
//! | [`memory`] | `'static` buffers taken once ([`memory::StaticBuffer`], [`memory::StaticCell`]) |
//! | [`board`] | the [`Platform`](bonsaifs_hal::platform::Platform) implementation: static DMA pool, identity mapping |
//! | [`pattern`] | the data pattern writes carry, derivable from a seed printed in the log |
//! | [`workload`] | mount / format, queued `NOWAIT | DSYNC` writes driven by `Fs::poll`, creates, renames, reads |
//! | [`conformance_step`] | runs the driver conformance suite on a scratch disk (and a read-only one) |
//! | [`fault_step`] | device errors end to end: a disk that fails on purpose (QEMU blkdebug) |
//! | [`app`] | the common `main` after device discovery: conformance, workload, verdict, exit |
//! | [`panic`] | the panic handler: print, exit with failure |
//! | [`delay`] | an `embedded-hal` `DelayNs` on the machine clock (for the SD driver) |
//! | [`qemu_sd_quirks`] | QEMU 10.0.2's SPI SD model: the CMD58 / CMD13 answer fixes, the size probe (`sifive-u-sd`) |
//! | [`window`] | sector ranges of one shared disk as separate devices (filesystem + scratch on one SD card) |
//!
//! Logging is plain UART text: every line the host checker parses is documented in
//! [`workload`]. The library's `defmt` feature stays off here (defmt needs a host decoder;
//! plain text keeps the QEMU log readable and parseable by a shell script).
#![no_std]
#![deny(missing_docs)]

pub mod app;
pub mod board;
pub mod conformance_step;
pub mod console;
pub mod delay;
pub mod entry;
pub mod fault_step;
pub mod machine;
pub mod memory;
pub mod panic;
pub mod pattern;
pub mod qemu_sd_quirks;
pub mod window;
pub mod workload;
