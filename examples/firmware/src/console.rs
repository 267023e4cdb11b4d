//! `print!` / `println!` over the installed machine's console, and the exit path.
//!
//! A binary installs its machine first ([`crate::machine::install`]); output before that is
//! dropped. Lines end in `\r\n` so that they read well on a terminal in QEMU's raw
//! `-nographic` mode; host scripts strip the `\r`.

use core::fmt;

use crate::machine;

/// A `fmt::Write` sink to the console.
#[derive(Debug, Clone, Copy, Default)]
pub struct Console;

impl fmt::Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if let Some(m) = machine::installed() {
            for b in s.bytes() {
                if b == b'\n' {
                    (m.putc)(b'\r');
                }
                (m.putc)(b);
            }
        }
        Ok(())
    }
}

/// Print formatted text (used by the macros).
pub fn print(args: fmt::Arguments<'_>) {
    let _ = fmt::Write::write_fmt(&mut Console, args);
}

/// End the run: `code` 0 passes, anything else fails with that code (as far as the machine
/// can report one). Without an installed machine the hart parks.
pub fn exit(code: u32) -> ! {
    if let Some(m) = machine::installed() {
        (m.exit)(code)
    }
    loop {
        core::hint::spin_loop();
    }
}

/// Microseconds since reset on the installed machine's clock (0 without one).
pub fn now_us() -> u64 {
    machine::installed().map_or(0, |m| (m.now_us)())
}

/// Print to the console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::console::print(format_args!($($arg)*)) };
}

/// Print a line to the console.
#[macro_export]
macro_rules! println {
    () => { $crate::console::print(format_args!("\n")) };
    ($($arg:tt)*) => {{
        $crate::console::print(format_args!($($arg)*));
        $crate::console::print(format_args!("\n"));
    }};
}
