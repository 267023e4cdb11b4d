//! An `embedded-hal` [`DelayNs`] on the installed machine's clock, for drivers that wait
//! (the SD card driver sleeps between polls of a busy card).

use embedded_hal::delay::DelayNs;

use crate::console::now_us;

/// Busy-waits on [`now_us`]. Each wait is also capped at one spin per nanosecond asked for,
/// so a clock that does not run (no machine installed) cannot turn a bounded driver timeout
/// into a hang.
#[derive(Debug, Default, Clone, Copy)]
pub struct MachineDelay;

impl DelayNs for MachineDelay {
    fn delay_ns(&mut self, ns: u32) {
        let us = u64::from(ns.div_ceil(1000));
        let start = now_us();
        for _ in 0..ns {
            if now_us().wrapping_sub(start) >= us {
                return;
            }
            core::hint::spin_loop();
        }
    }
}
