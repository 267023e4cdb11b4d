//! Device errors end to end: requests against a disk whose backing store fails on purpose.
//!
//! The runner gives the virtio binaries a disk behind QEMU's `blkdebug` driver, configured to
//! fail (EIO) every read that touches 512-byte sector [`BAD_READ_SECTOR`] and every write that
//! touches [`BAD_WRITE_SECTOR`]. QEMU reports those to the guest as device errors (virtio-blk:
//! status `IOERR`). This step submits a batch of requests at once — good and failing ones,
//! a flush, a discard, plus requests the driver must refuse itself (FUA on a device without
//! it, past the end) — polls them back in whatever order they complete, and checks each
//! result by tag.
//!
//! QEMU merges adjacent requests of the same kind into one, and one failing sector then fails
//! the whole merged request: the good requests are kept apart from the failing sectors
//! (reads 64..72 and 8..16, writes 32..40 and 16..24, discard 48..56).
//!
//! Prints `FAULTS ok=<0/1> requests=<n> ...`, and one `FAULTS-MISMATCH` line per wrong result.

use bonsaifs::device::{BlockDevice, Busy, Command, IoError, Request};

use crate::memory::StaticArena;
use crate::println;

/// 512-byte sector whose reads fail (the runner's blkdebug rule).
pub const BAD_READ_SECTOR: u64 = 8;
/// 512-byte sector whose writes fail (the runner's blkdebug rule).
pub const BAD_WRITE_SECTOR: u64 = 16;

/// Buffers of the step: six requests of one 4 KiB page.
static BUFFERS: StaticArena<{ 6 * 4096 }> = StaticArena::new();

/// Polls before the step gives up on a missing completion.
const POLL_LIMIT: u64 = 50_000_000;

/// Run the step on `dev` (512-byte sectors expected); returns whether every request came back
/// once with the expected result and, for reads and writes, its buffer. `discard` is what a
/// discard of eight sectors must complete with (`Ok` when the driver negotiated discard,
/// `Unsupported` otherwise).
pub fn run<D: BlockDevice<'static>>(dev: &mut D, name: &str, discard: Result<(), IoError>) -> bool {
    let geo = dev.geometry();
    if geo.sector_size != 512 || geo.sector_count < 64 {
        println!("FAULTS ok=0 device={name} reason=geometry");
        return false;
    }
    let page = || BUFFERS.take(4096, 4096);
    let (Some(b0), Some(b1), Some(b2), Some(b3), Some(b4), Some(b5)) =
        (page(), page(), page(), page(), page(), page())
    else {
        println!("FAULTS ok=0 device={name} reason=buffers-used-up");
        return false;
    };
    let fua_result = if geo.fua {
        Ok(())
    } else {
        Err(IoError::Unsupported)
    };
    // (tag, command, expected result)
    let plan: [(u32, Command<'static>, Result<(), IoError>); 8] = [
        (1, Command::Read { lba: 64, buf: b0 }, Ok(())),
        (
            2,
            Command::Read {
                lba: BAD_READ_SECTOR,
                buf: b1,
            },
            Err(IoError::Media),
        ),
        (
            3,
            Command::Write {
                lba: BAD_WRITE_SECTOR,
                buf: b2,
                fua: false,
            },
            Err(IoError::Media),
        ),
        (
            4,
            Command::Write {
                lba: 32,
                buf: b3,
                fua: false,
            },
            Ok(()),
        ),
        (
            5,
            Command::Write {
                lba: 40,
                buf: b4,
                fua: true,
            },
            fua_result,
        ),
        (6, Command::Flush, Ok(())),
        (
            7,
            Command::Read {
                lba: geo.sector_count,
                buf: b5,
            },
            Err(IoError::OutOfRange),
        ),
        (8, Command::Discard { lba: 48, count: 8 }, discard),
    ];
    let mut expected: heapless::Vec<(u32, Result<(), IoError>, bool), 8> = heapless::Vec::new();
    let mut polls = 0u64;
    let mut ok = true;
    let mut seen = 0usize;
    let check =
        |c: bonsaifs::device::Completion<'static>,
         expected: &mut heapless::Vec<(u32, Result<(), IoError>, bool), 8>| {
            match expected.iter().position(|e| e.0 == c.tag) {
                Some(i) => {
                    let (tag, want, has_buf) = expected.swap_remove(i);
                    if c.result != want || c.buf.is_some() != has_buf {
                        println!(
                        "FAULTS-MISMATCH device={name} tag={tag} got={:?} want={want:?} buffer_back={}",
                        c.result,
                        c.buf.is_some()
                    );
                        false
                    } else {
                        true
                    }
                }
                None => {
                    println!(
                        "FAULTS-MISMATCH device={name} tag={} unknown-or-duplicate",
                        c.tag
                    );
                    false
                }
            }
        };
    for (tag, command, want) in plan {
        let has_buf = matches!(command, Command::Read { .. } | Command::Write { .. });
        // Cannot overflow: eight entries.
        let _ = expected.push((tag, want, has_buf));
        let mut req = Request { tag, command };
        loop {
            match dev.submit(req) {
                Ok(()) => break,
                Err(Busy(r)) => {
                    req = r;
                    if let Some(c) = dev.poll() {
                        ok &= check(c, &mut expected);
                        seen += 1;
                    }
                }
            }
        }
    }
    while !expected.is_empty() && polls < POLL_LIMIT {
        polls += 1;
        if let Some(c) = dev.poll() {
            ok &= check(c, &mut expected);
            seen += 1;
        }
    }
    if !expected.is_empty() {
        println!("FAULTS-MISMATCH device={name} missing={}", expected.len());
        ok = false;
    }
    if dev.in_flight() != 0 {
        println!(
            "FAULTS-MISMATCH device={name} in_flight={}",
            dev.in_flight()
        );
        ok = false;
    }
    println!(
        "FAULTS ok={} device={name} requests=8 completions={seen} (read/write IOERR -> Media, \
         FUA -> {}, out of range -> OutOfRange, discard -> {:?})",
        u8::from(ok),
        if geo.fua { "Ok" } else { "Unsupported" },
        discard
    );
    ok
}
