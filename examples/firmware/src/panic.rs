//! The panic handler: print the message and location, fail the run (exit code 2).

use core::panic::PanicInfo;

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    crate::println!("PANIC {info}");
    crate::println!("FAIL reason=panic");
    crate::console::exit(2)
}
