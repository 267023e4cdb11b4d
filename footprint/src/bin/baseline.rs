//! The empty firmware: the runtime, semihosting output and the stack measurement, no
//! filesystem. Its sizes are subtracted from the others'.
#![no_std]
#![no_main]

use bonsaifs_footprint as fw;
use cortex_m_rt::entry;

#[entry]
fn main() -> ! {
    fw::paint_stack();
    fw::report_all(0, false, 0);
    fw::exit(true)
}
