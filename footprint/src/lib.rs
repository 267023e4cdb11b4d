//! What the footprint firmwares share: semihosting output and exit, stack painting and the
//! high-water mark, and the panic handler.
//!
//! Every firmware (the empty `baseline` included) links exactly this, so subtracting the
//! baseline's sizes from a firmware's leaves what bonsaifs (and the calls into it) cost.
//!
//! Output goes through ARM semihosting (`bkpt 0xab`), which QEMU serves with
//! `-semihosting-config enable=on,target=native`: `SYS_WRITE0` prints, `SYS_EXIT` ends QEMU
//! with status 0 (success) or 1.
#![no_std]
#![deny(missing_docs)]

use core::arch::asm;
use core::ptr::addr_of;

/// Semihosting operation: write a NUL-terminated string to the debug console.
const SYS_WRITE0: usize = 0x04;
/// Semihosting operation: end the program.
const SYS_EXIT: usize = 0x18;
/// `SYS_EXIT` reason that QEMU maps to exit status 0.
const ADP_STOPPED_APPLICATION_EXIT: usize = 0x2_0026;
/// `SYS_EXIT` reason that QEMU maps to exit status 1.
const ADP_STOPPED_RUN_TIME_ERROR: usize = 0x2_0023;

/// Where the RAM disk lives: the top MiB of the mps2-an386 data RAM, outside the linker's RAM
/// region (see `memory.x`), so the ELF neither loads nor zeroes it and QEMU's
/// `-device loader,file=IMAGE,addr=0x20300000,force-raw=on` can put an image there.
pub const DISK_ADDR: usize = 0x2030_0000;
/// Bytes at [`DISK_ADDR`] the firmwares use as their disk.
pub const DISK_BYTES: usize = 512 * 1024;

/// The word painted over the unused stack.
const PAINT: u32 = 0xC0DE_57AC;

extern "C" {
    /// Top of the stack (cortex-m-rt's `link.x`: the end of RAM).
    static _stack_start: u32;
    /// Lowest address the stack may grow to (the end of `.bss` / `.uninit`).
    static _stack_end: u32;
}

/// One semihosting call.
fn semihost(op: usize, arg: usize) -> usize {
    let r: usize;
    // SAFETY: `bkpt 0xab` traps to the debugger / QEMU, which reads r0 (operation) and r1
    // (argument) and writes the result to r0; no memory is touched except through `arg`,
    // which every caller points at a live, NUL-terminated buffer or passes by value.
    unsafe {
        asm!("bkpt #0xab", inout("r0") op => r, in("r1") arg, options(nostack));
    }
    r
}

/// Prints `s` on the semihosting console.
pub fn print(s: &str) {
    let mut buf = [0u8; 65];
    for chunk in s.as_bytes().chunks(64) {
        buf[..chunk.len()].copy_from_slice(chunk);
        buf[chunk.len()] = 0;
        semihost(SYS_WRITE0, buf.as_ptr() as usize);
    }
}

/// Prints `n` in decimal.
pub fn print_u32(mut n: u32) {
    let mut buf = [0u8; 10];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // Digits are ASCII.
    print(core::str::from_utf8(&buf[i..]).unwrap_or("?"));
}

/// Prints `key=value` on a line of its own (the footprint script reads these lines).
pub fn report(key: &str, value: u32) {
    print(key);
    print("=");
    print_u32(value);
    print("\n");
}

/// Ends QEMU: exit status 0 if `ok`, 1 otherwise.
pub fn exit(ok: bool) -> ! {
    let reason = if ok {
        ADP_STOPPED_APPLICATION_EXIT
    } else {
        ADP_STOPPED_RUN_TIME_ERROR
    };
    semihost(SYS_EXIT, reason);
    // Without a debugger that honours SYS_EXIT, stop here.
    loop {
        // SAFETY: `wfi` only waits for an interrupt.
        unsafe { asm!("wfi", options(nomem, nostack)) };
    }
}

/// Returns the value of `r`, or prints `FAIL <what>` and exits with status 1.
///
/// Generic, so inlined at each call: only the branch to [`fail`] is repeated, as a C
/// firmware's `if (err) fail(what)` would be (the firmwares are measured against one).
#[inline(always)]
pub fn check<T, E>(r: Result<T, E>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(_) => fail(what),
    }
}

/// Fails (prints `FAIL <what>`, exits 1) unless `cond` holds.
#[inline(always)]
pub fn expect(cond: bool, what: &str) {
    if !cond {
        fail(what);
    }
}

/// Prints `FAIL <what>` and exits with status 1.
#[inline(never)]
pub fn fail(what: &str) -> ! {
    print("FAIL ");
    print(what);
    print("\n");
    exit(false)
}

/// The current stack pointer.
#[inline(always)]
fn sp() -> usize {
    let sp: usize;
    // SAFETY: reads a register.
    unsafe { asm!("mov {}, sp", out(reg) sp, options(nomem, nostack)) };
    sp
}

/// The stack pointer when [`paint_stack`] ran: just below `main`'s frame.
static mut MAIN_SP: usize = 0;

/// Fills the unused stack, from its lowest address to a little below the current stack
/// pointer, with a known word. Call first thing in `main`, with no interrupts enabled.
#[inline(never)]
pub fn paint_stack() {
    let bottom = addr_of!(_stack_end) as usize;
    let here = sp();
    // SAFETY: single-threaded, no interrupts; written once here, read by `stack_calls_peak`.
    unsafe { core::ptr::write_volatile(core::ptr::addr_of_mut!(MAIN_SP), here) };
    // Leave this function's own frame (and some slack) alone.
    let top = (here - 64) & !3;
    let mut p = bottom;
    while p < top {
        // SAFETY: `bottom .. top` is RAM below the live stack that nothing uses yet (the stack
        // grows down to `_stack_end`; statics lie below it), and interrupts are off.
        unsafe { core::ptr::write_volatile(p as *mut u32, PAINT) };
        p += 4;
    }
}

/// The lowest stack address used so far: the lowest word no longer holding the paint (exact
/// to 4 bytes, unless a frame happened to store the paint word itself at its lowest used
/// address).
fn lowest_used() -> usize {
    let bottom = addr_of!(_stack_end) as usize;
    let top = addr_of!(_stack_start) as usize;
    let mut p = bottom;
    // SAFETY: reads RAM between the end of the statics and the top of the stack.
    while p < top && unsafe { core::ptr::read_volatile(p as *const u32) } == PAINT {
        p += 4;
    }
    p
}

/// Bytes of stack used so far at most, `main`'s own frame included.
pub fn stack_peak() -> u32 {
    (addr_of!(_stack_start) as usize - lowest_used()) as u32
}

/// Bytes of stack used so far at most by the calls `main` made (its own frame, which holds
/// its local variables, not included).
pub fn stack_calls_peak() -> u32 {
    // SAFETY: written once by `paint_stack`.
    let main_sp = unsafe { core::ptr::read_volatile(addr_of!(MAIN_SP)) };
    main_sp.saturating_sub(lowest_used()) as u32
}

/// Prints the report lines every firmware ends with: the filesystem state's size and whether
/// it lives on `main`'s stack (not in `.bss`), the caller-provided cache memory, and the stack
/// peaks.
pub fn report_all(fs_bytes: usize, fs_on_stack: bool, cache_bytes: usize) {
    report("fs_bytes", fs_bytes as u32);
    report("fs_on_stack", u32::from(fs_on_stack));
    report("cache_bytes", cache_bytes as u32);
    report("stack_peak", stack_peak());
    report("stack_calls", stack_calls_peak());
}

/// `len` bytes at `ptr` for the rest of the program.
///
/// # Safety
///
/// `ptr` must point at `len` bytes of RAM that live for the rest of the program (a `static`,
/// or the disk at [`DISK_ADDR`]), and no other reference to them may be used while the
/// returned one is.
pub unsafe fn static_bytes(ptr: *mut u8, len: usize) -> &'static mut [u8] {
    // SAFETY: the caller's contract.
    unsafe { core::slice::from_raw_parts_mut(ptr, len) }
}

/// The RAM disk at [`DISK_ADDR`].
///
/// # Safety
///
/// Call once: the returned reference must be the only one to that memory.
pub unsafe fn disk() -> &'static mut [u8] {
    // SAFETY: the top MiB of RAM is not used by anything else (see `memory.x`); the caller
    // takes it once.
    unsafe { static_bytes(DISK_ADDR as *mut u8, DISK_BYTES) }
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    print("PANIC\n");
    exit(false)
}
