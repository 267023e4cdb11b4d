//! The reset entry: from the first instruction to Rust.
//!
//! Under `-bios none` every hart starts at the ELF entry in machine mode, with nothing set
//! up. `_start`:
//!
//! 1. parks harts without the double-precision FPU (misa bit D): the code is built for
//!    `riscv64gc`, and `sifive_u`'s hart 0 (an E51 monitor core) has no FPU;
//! 2. elects one boot hart among the rest: the first to swap the boot flag from 0 to 1; the
//!    others park in `wfi` (on `virt` that is hart 0 in practice, on `sifive_u` hart 1);
//! 3. enables the FPU (`mstatus.FS = Initial`; the compiler may use FP registers), points
//!    `mtvec` at the trap handler, sets the stack, zeroes `.bss`, and calls the binary's main
//!    (declared with [`entry!`](crate::entry!)).
//!
//! `.data` needs no copy: QEMU loads the ELF's segments at their addresses.

use core::arch::global_asm;
use core::sync::atomic::AtomicU32;

global_asm!(
    r#"
    .section .text.entry, "ax"
    .global _start
_start:
    /* Park harts without the D extension (misa bit 3). */
    csrr    t0, misa
    andi    t0, t0, 8
    beqz    t0, 9f
    /* Boot-hart election: the first to swap the flag from 0 wins. */
    la      t0, {boot_flag}
    li      t1, 1
    .option push
    .option arch, +a
    amoswap.w.aq t1, t1, (t0)
    .option pop
    bnez    t1, 9f
    /* mstatus.FS = Initial (bit 13). */
    li      t0, 0x2000
    csrs    mstatus, t0
    la      t0, __bonsaifs_trap
    csrw    mtvec, t0
    la      sp, __stack_top
    la      t0, __bss_start
    la      t1, __bss_end
1:
    bgeu    t0, t1, 2f
    sd      zero, 0(t0)
    addi    t0, t0, 8
    j       1b
2:
    call    {start}
9:
    wfi
    j       9b

    .balign 4
__bonsaifs_trap:
    csrr    a0, mcause
    csrr    a1, mepc
    csrr    a2, mtval
    call    {trap_handler}
    j       9b
"#,
    boot_flag = sym BOOT_FLAG,
    start = sym firmware_start,
    trap_handler = sym trap_handler,
);

/// 0 until the boot hart claims it. In `.data`, not `.bss`: it must read 0 before anyone
/// zeroes `.bss` (QEMU loads `.data` from the ELF).
#[link_section = ".data.boot_flag"]
static BOOT_FLAG: AtomicU32 = AtomicU32::new(0);

extern "Rust" {
    /// The binary's main, defined by [`entry!`](crate::entry!).
    fn __bonsaifs_firmware_main() -> !;
}

/// Called once by the boot hart with the stack and `.bss` ready.
extern "C" fn firmware_start() -> ! {
    // SAFETY: `entry!` in the binary defines the symbol with this exact type.
    unsafe { __bonsaifs_firmware_main() }
}

/// Any trap is a bug here (no interrupts are enabled): report it and fail.
extern "C" fn trap_handler(mcause: usize, mepc: usize, mtval: usize) -> ! {
    crate::println!("TRAP mcause={mcause:#x} mepc={mepc:#x} mtval={mtval:#x}");
    crate::console::exit(3)
}

/// Declare the firmware's main function: `entry!(main)` with `fn main() -> !`.
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        #[export_name = "__bonsaifs_firmware_main"]
        fn __bonsaifs_firmware_main() -> ! {
            let main: fn() -> ! = $main;
            main()
        }
    };
}
