//! What differs between machines: the console, the way to end the run, the clock.
//!
//! A [`Machine`] is three function pointers and a name; each machine module exports one as a
//! `static`, and a binary installs it first thing. Adding a board means writing one such
//! module (and its `Platform`, see [`crate::board`]).

use core::sync::atomic::{AtomicPtr, Ordering};

pub mod sifive_u;
pub mod virt;

/// A machine's console, exit and clock.
#[derive(Debug)]
pub struct Machine {
    /// Short name printed in the banner.
    pub name: &'static str,
    /// Prepare the console (called once by [`install`]).
    pub init: fn(),
    /// Write one byte to the console, waiting while its transmitter is full.
    pub putc: fn(u8),
    /// End the run: 0 = pass, anything else = fail with that code.
    pub exit: fn(u32) -> !,
    /// Microseconds from a free-running timer.
    pub now_us: fn() -> u64,
}

static INSTALLED: AtomicPtr<Machine> = AtomicPtr::new(core::ptr::null_mut());

/// Make `m` the machine `println!`, `exit` and the clock use, after initialising its console.
pub fn install(m: &'static Machine) {
    (m.init)();
    INSTALLED.store((m as *const Machine).cast_mut(), Ordering::Release);
}

/// The installed machine.
pub fn installed() -> Option<&'static Machine> {
    let p = INSTALLED.load(Ordering::Acquire);
    // SAFETY: only `install` stores here, always a `&'static Machine`; it is never written
    // through.
    unsafe { p.cast_const().as_ref() }
}

/// Volatile 32-bit register access for the machine modules.
pub(crate) mod mmio {
    /// Read the 32-bit register at `addr`.
    ///
    /// # Safety
    /// `addr` must be a mapped, aligned device register.
    pub unsafe fn read32(addr: usize) -> u32 {
        (addr as *const u32).read_volatile()
    }

    /// Write the 32-bit register at `addr`.
    ///
    /// # Safety
    /// `addr` must be a mapped, aligned device register.
    pub unsafe fn write32(addr: usize, value: u32) {
        (addr as *mut u32).write_volatile(value)
    }

    /// Read the 8-bit register at `addr`.
    ///
    /// # Safety
    /// `addr` must be a mapped device register.
    pub unsafe fn read8(addr: usize) -> u8 {
        (addr as *const u8).read_volatile()
    }

    /// Write the 8-bit register at `addr`.
    ///
    /// # Safety
    /// `addr` must be a mapped device register.
    pub unsafe fn write8(addr: usize, value: u8) {
        (addr as *mut u8).write_volatile(value)
    }

    /// Read a 64-bit register at `addr`.
    ///
    /// # Safety
    /// `addr` must be a mapped, aligned device register.
    pub unsafe fn read64(addr: usize) -> u64 {
        (addr as *const u64).read_volatile()
    }
}
