//! The filesystem workload every firmware binary runs, and the log lines it prints.
//!
//! # Steps
//!
//! 1. **Mount**, or **format** when neither superblock copy carries the magic (a fresh,
//!    zeroed disk). A damaged volume is never formatted over: mount's error fails the run.
//! 2. **Boot id**: `/boot-count` (8 bytes) is incremented and `fsync`ed *before* anything
//!    else is written, so every run gets its own directory `/r<boot>` even after a kill.
//! 3. **Queued durable writes**: `files × rounds` writes with `NOWAIT | DSYNC` into
//!    `/r<boot>/f<i>`, kept at up to `depth` tickets in flight and driven by `Fs::poll`. Each
//!    write has its own 64 KiB region of its file (lengths 1..16 KiB, some unaligned), so no
//!    two writes overlap and every completed one must read back exactly.
//! 4. **Creates and renames**: `renames` files `/r<boot>/tmp<j>` are created, written,
//!    `fsync`ed and renamed to `/r<boot>/file<j>`; then `sync_all`.
//! 5. **Reads**: every region and every renamed file is read back and compared.
//! 6. **fsck** inside the guest, then **unmount** (a checkpoint).
//!
//! # Log lines (one per event; `key=value` fields; parsed by the host checker)
//!
//! | line | meaning; what the host may rely on |
//! |---|---|
//! | `MOUNTED formatted=<0/1> blocks=<n> free=<n>` | the volume is mounted |
//! | `BOOT-ID n=<b>` | this run writes under `/r<b>` |
//! | `WORKLOAD-START` | the queued writes begin (the kill test's clock starts here) |
//! | `DSYNC-DONE ticket=<k> path=<p> off=<o> len=<l> seed=<s>` | the ticket completed: bytes `o..o+l` of `p` are durable and hold pattern `s` ([`crate::pattern`]) |
//! | `RENAMED from=<a> to=<b> len=<l> seed=<s>` | `a` was written and `fsync`ed, then renamed: after a crash exactly one of `a`, `b` exists, with `l` bytes of pattern `s` |
//! | `SYNC-DONE` | `sync_all` completed: every earlier `RENAMED` is durable (`b` exists, `a` does not) |
//! | `READBACK regions=<n> files=<m>` | everything written read back exactly |
//! | `FSCK clean=1 inodes=<n> ...` | the in-guest check |
//! | `QUEUED-IO writes=<n> fua_writes=<n> flushes=<n> reads=<n>` | device requests the filesystem made during the queued writes (counted by [`Trace`] under it) |
//! | `SUMMARY ...` | counts: tickets, bytes, `WouldBlock`s, most tickets in flight, time |

use core::fmt;

use bonsaifs::device::{read_blocks, BlockDevice, Trace, TraceCounters};
use bonsaifs::fs::{Fd, Fs, OpenFlags, Ticket, WriteFlags, WriteStatus};
use bonsaifs::volume::FormatOptions;
use bonsaifs::wire::{Superblock, SUPERBLOCK_OFFSETS};
use bonsaifs::Error;

use crate::console::now_us;
use crate::pattern;
use crate::println;

/// Block cache slots of the mounted filesystem.
pub const SLOTS: usize = 96;
/// File handles.
pub const HANDLES: usize = 16;
/// Filesystem block size when formatting.
pub const BLOCK_SIZE: usize = 4096;
/// Every write owns a region this large in its file.
pub const REGION: u64 = 64 * 1024;
/// Longest write.
pub const MAX_WRITE: usize = 16 * 1024;
/// Polls without any progress before the workload declares the device stalled.
const STALL_POLLS: u64 = 50_000_000;

/// The filesystem type the firmware mounts: over the driver `D`, through a [`Trace`] that counts
/// the requests the filesystem makes (for the `QUEUED-IO` line).
pub type FirmwareFs<D> = Fs<'static, Trace<D>, SLOTS, HANDLES>;

/// How much the workload does.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// Files receiving queued writes.
    pub files: u32,
    /// Writes per file.
    pub rounds: u32,
    /// Tickets kept in flight (the queue depth the filesystem sees); at least 8.
    pub depth: usize,
    /// Files created, synced and renamed.
    pub renames: u32,
}

impl Default for Config {
    /// 8 files × 32 writes at depth 16, 8 renames.
    fn default() -> Self {
        Config {
            files: 8,
            rounds: 32,
            // `BONSAIFS_QD=<n>` at build time sets another depth (scripts/qemu-qd.sh).
            depth: option_env!("BONSAIFS_QD")
                .and_then(|d| d.parse().ok())
                .unwrap_or(16),
            renames: 8,
        }
    }
}

/// Why the workload failed.
#[derive(Debug, Clone, Copy)]
pub struct Failure {
    /// The step that failed.
    pub step: &'static str,
    /// The filesystem's error, if one caused it.
    pub error: Option<Error>,
    /// A detail (e.g. the ticket).
    pub detail: u64,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "step={} detail={}", self.step, self.detail)?;
        if let Some(e) = self.error {
            write!(f, " error=\"{e}\"")?;
        }
        Ok(())
    }
}

fn fail(step: &'static str, error: Error) -> Failure {
    Failure {
        step,
        error: Some(error),
        detail: 0,
    }
}

/// What the workload did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Summary {
    /// This run's boot id.
    pub boot: u64,
    /// Whether the disk was formatted by this run.
    pub formatted: bool,
    /// Queued writes completed (each reported once by `poll`).
    pub tickets: u64,
    /// Writes that finished inside `write_at_flags` (`Done`).
    pub immediate: u64,
    /// Bytes written by those writes.
    pub bytes: u64,
    /// `WouldBlock` answers (the write was retried later).
    pub would_block: u64,
    /// Most tickets in flight at once.
    pub max_in_flight: usize,
    /// Files created, synced and renamed.
    pub renames: u64,
    /// Microseconds of the queued-write phase.
    pub write_us: u64,
    /// Microseconds of the whole workload.
    pub total_us: u64,
}

/// One planned write.
#[derive(Debug, Clone, Copy)]
struct Planned {
    file: u32,
    off: u64,
    len: usize,
    seed: u64,
}

fn plan(boot: u64, cfg: &Config, k: u32) -> Planned {
    let file = k % cfg.files;
    let round = u64::from(k / cfg.files);
    let seed = pattern::splitmix64((boot << 32) ^ u64::from(k));
    // Lengths: 4, 8, 16 KiB aligned, or an unaligned 1..4 KiB at an unaligned offset.
    let (skew, len) = match seed % 4 {
        0 => (((seed >> 8) % 4) * 4096, 4096),
        1 => (((seed >> 8) % 4) * 4096, 8192),
        2 => (((seed >> 8) % 3) * 4096, MAX_WRITE),
        _ => (((seed >> 8) % 8192) | 1, 1 + ((seed >> 24) % 4096) as usize),
    };
    Planned {
        file,
        off: round * REGION + skew,
        len,
        seed,
    }
}

/// A small `fmt::Write` into a fixed buffer, for paths.
struct PathBuf {
    buf: [u8; 48],
    len: usize,
}

impl PathBuf {
    fn new(args: fmt::Arguments<'_>) -> Self {
        let mut p = PathBuf {
            buf: [0; 48],
            len: 0,
        };
        let _ = fmt::Write::write_fmt(&mut p, args);
        p
    }
    fn as_str(&self) -> &str {
        // Only whole `&str`s are appended, so the prefix is valid UTF-8.
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl fmt::Write for PathBuf {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        if end > self.buf.len() {
            return Err(fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

macro_rules! path {
    ($($arg:tt)*) => { PathBuf::new(format_args!($($arg)*)) };
}

/// Whether the disk holds neither superblock copy (a fresh disk: format it). `probe` is a
/// one-sector `'static` buffer, handed back.
fn is_blank<D: BlockDevice<'static>>(
    dev: &mut D,
    probe: &'static mut [u8],
) -> Result<(bool, &'static mut [u8]), Failure> {
    let ss = u64::from(dev.geometry().sector_size);
    let mut probe = Some(probe);
    let mut blank = true;
    for (i, off) in SUPERBLOCK_OFFSETS.iter().enumerate() {
        let buf = probe.take().ok_or(fail("probe", Error::InvalidArgument))?;
        let c = read_blocks(dev, off / ss, buf);
        let buf = c
            .buf
            .ok_or(fail("probe", Error::Io(bonsaifs::IoError::BadBuffer)))?;
        c.result.map_err(|e| fail("probe", Error::Io(e)))?;
        // Anything but "no magic here" (a valid copy, a damaged one) means a volume exists.
        if !matches!(Superblock::parse(buf, i as u64), Err(Error::NotFormatted)) {
            blank = false;
        }
        probe = Some(buf);
    }
    Ok((blank, probe.ok_or(fail("probe", Error::InvalidArgument))?))
}

/// Mount `dev` (formatting a blank disk) with `mem` (at least
/// `memory_needed(sector, BLOCK_SIZE, SLOTS)` bytes) as cache memory.
pub fn mount<D: BlockDevice<'static>>(
    mut dev: D,
    mem: &'static mut [u8],
    probe: &'static mut [u8],
) -> Result<(FirmwareFs<D>, bool), Failure> {
    let ss = dev.geometry().sector_size as usize;
    if probe.len() < ss {
        return Err(fail("probe", Error::InvalidArgument));
    }
    let (probe, _) = probe.split_at_mut(ss);
    let (blank, _) = is_blank(&mut dev, probe)?;
    let dev = Trace::new(dev);
    let fs = if blank {
        let opts = FormatOptions {
            block_size: BLOCK_SIZE as u32,
            ..FormatOptions::default()
        };
        Fs::format(dev, mem, opts).map_err(|e| fail("format", e))?
    } else {
        Fs::mount(dev, mem).map_err(|e| fail("mount", e))?
    };
    Ok((fs, blank))
}

/// Read, increment and `fsync` the boot counter; returns the new value.
fn next_boot<D: BlockDevice<'static>>(fs: &mut FirmwareFs<D>) -> Result<u64, Failure> {
    let flags = OpenFlags::READ | OpenFlags::WRITE | OpenFlags::CREATE;
    let fd = fs
        .open("/boot-count", flags)
        .map_err(|e| fail("boot-count", e))?;
    let mut raw = [0u8; 8];
    let n = fs
        .read_at(fd, 0, &mut raw)
        .map_err(|e| fail("boot-count", e))?;
    let boot = if n == 8 {
        u64::from_le_bytes(raw) + 1
    } else {
        1
    };
    fs.write_at(fd, 0, &boot.to_le_bytes())
        .map_err(|e| fail("boot-count", e))?;
    fs.fsync(fd).map_err(|e| fail("boot-count", e))?;
    fs.close(fd).map_err(|e| fail("boot-count", e))?;
    Ok(boot)
}

/// Steps 2–6 on a mounted filesystem (see the module documentation). Prints as it goes.
pub fn run<D: BlockDevice<'static>>(
    fs: &mut FirmwareFs<D>,
    formatted: bool,
    cfg: &Config,
    fsck_scratch: &mut [u8],
) -> Result<Summary, Failure> {
    let start = now_us();
    fs.set_clock(now_us);
    let st = fs.statfs();
    println!(
        "MOUNTED formatted={} blocks={} free={} block_size={}",
        u8::from(formatted),
        st.total_blocks,
        st.free_blocks,
        st.block_size
    );
    let boot = next_boot(fs)?;
    println!("BOOT-ID n={boot}");
    let dir = path!("/r{boot}");
    fs.mkdir(dir.as_str()).map_err(|e| fail("mkdir", e))?;

    let mut sum = Summary {
        boot,
        formatted,
        ..Summary::default()
    };
    queued_writes(fs, boot, cfg, &mut sum)?;
    renames(fs, boot, cfg, &mut sum)?;
    read_back(fs, boot, cfg)?;

    let need = fs.fsck_scratch_len();
    let scratch = fsck_scratch.get_mut(..need).ok_or(Failure {
        step: "fsck-scratch",
        error: None,
        detail: need as u64,
    })?;
    let r = fs.fsck(scratch).map_err(|e| fail("fsck", e))?;
    println!(
        "FSCK clean={} inodes={} dirs={} data_blocks={} leaked={} errors={}",
        u8::from(r.is_clean()),
        r.inodes,
        r.dirs,
        r.blocks.data_blocks,
        r.blocks.leaked,
        r.errors
    );
    if !r.is_clean() {
        return Err(Failure {
            step: "fsck",
            error: None,
            detail: r.errors + r.blocks.leaked,
        });
    }
    sum.total_us = now_us().wrapping_sub(start);
    Ok(sum)
}

/// Step 3: the queued `NOWAIT | DSYNC` writes.
fn queued_writes<D: BlockDevice<'static>>(
    fs: &mut FirmwareFs<D>,
    boot: u64,
    cfg: &Config,
    sum: &mut Summary,
) -> Result<(), Failure> {
    let flags = OpenFlags::READ | OpenFlags::WRITE | OpenFlags::CREATE;
    let mut fds: heapless::Vec<Fd, HANDLES> = heapless::Vec::new();
    for i in 0..cfg.files {
        let p = path!("/r{boot}/f{i}");
        let fd = fs.open(p.as_str(), flags).map_err(|e| fail("create", e))?;
        fds.push(fd)
            .map_err(|_| fail("create", Error::TooManyOpenFiles))?;
    }

    let total = cfg.files * cfg.rounds;
    let depth = cfg.depth.clamp(1, bonsaifs::fs::MAX_TICKETS);
    // Ticket → planned write index, for the tickets in flight.
    let mut in_flight: heapless::Vec<(Ticket, u32), { bonsaifs::fs::MAX_TICKETS }> =
        heapless::Vec::new();
    let mut data = [0u8; MAX_WRITE];
    let mut next = 0u32;
    let mut done = 0u32;
    let mut idle = 0u64;
    let begin = now_us();
    let io_before = fs.volume().device().counters();
    println!(
        "WORKLOAD-START writes={total} depth={depth} files={}",
        cfg.files
    );
    while done < total {
        let mut progress = false;
        while next < total && in_flight.len() < depth {
            let w = plan(boot, cfg, next);
            let buf = &mut data[..w.len];
            pattern::fill(buf, w.seed, 0);
            let fd = fds[w.file as usize];
            match fs.write_at_flags(fd, w.off, buf, WriteFlags::NOWAIT | WriteFlags::DSYNC) {
                Ok(WriteStatus::Queued(t)) => {
                    // Cannot overflow: in_flight.len() < depth ≤ MAX_TICKETS.
                    let _ = in_flight.push((t, next));
                    sum.max_in_flight = sum.max_in_flight.max(in_flight.len());
                }
                Ok(WriteStatus::Done(n)) => {
                    report(boot, cfg, next, n, sum)?;
                    sum.immediate += 1;
                    done += 1;
                }
                Err(Error::WouldBlock) => {
                    sum.would_block += 1;
                    break;
                }
                Err(e) => {
                    return Err(Failure {
                        step: "write",
                        error: Some(e),
                        detail: u64::from(next),
                    })
                }
            }
            next += 1;
            progress = true;
        }
        if let Some((ticket, result)) = fs.poll() {
            let i = in_flight
                .iter()
                .position(|&(t, _)| t == ticket)
                .ok_or(Failure {
                    step: "unknown-ticket",
                    error: None,
                    detail: u64::from(ticket.0),
                })?;
            let (_, k) = in_flight.swap_remove(i);
            let n = result.map_err(|e| Failure {
                step: "ticket",
                error: Some(e),
                detail: u64::from(k),
            })?;
            report(boot, cfg, k, n, sum)?;
            sum.tickets += 1;
            done += 1;
            progress = true;
        }
        if progress {
            idle = 0;
        } else {
            idle += 1;
            if idle > STALL_POLLS {
                return Err(Failure {
                    step: "stalled",
                    error: None,
                    detail: u64::from(done),
                });
            }
        }
    }
    sum.write_us = now_us().wrapping_sub(begin);
    print_queued_io(&io_before, &fs.volume().device().counters());
    for fd in fds {
        fs.close(fd).map_err(|e| fail("close", e))?;
    }
    Ok(())
}

/// Print the `QUEUED-IO` line: the requests between two snapshots of the counters.
fn print_queued_io(before: &TraceCounters, after: &TraceCounters) {
    println!(
        "QUEUED-IO writes={} fua_writes={} flushes={} reads={}",
        after.writes.wrapping_sub(before.writes),
        after.fua_writes.wrapping_sub(before.fua_writes),
        after.flushes.wrapping_sub(before.flushes),
        after.reads.wrapping_sub(before.reads)
    );
}

/// Check a completed write's length and print its `DSYNC-DONE` line.
fn report(boot: u64, cfg: &Config, k: u32, n: usize, sum: &mut Summary) -> Result<(), Failure> {
    let w = plan(boot, cfg, k);
    if n != w.len {
        return Err(Failure {
            step: "short-write",
            error: None,
            detail: u64::from(k),
        });
    }
    sum.bytes += n as u64;
    println!(
        "DSYNC-DONE ticket={k} path=/r{boot}/f{} off={} len={} seed={:#018x}",
        w.file, w.off, w.len, w.seed
    );
    Ok(())
}

fn rename_plan(boot: u64, j: u32) -> (usize, u64) {
    let seed = pattern::splitmix64((boot << 32) ^ 0x8000_0000 ^ u64::from(j));
    (1000 + (seed % 12_000) as usize, seed)
}

/// Step 4: create, write, `fsync`, rename; then `sync_all`.
fn renames<D: BlockDevice<'static>>(
    fs: &mut FirmwareFs<D>,
    boot: u64,
    cfg: &Config,
    sum: &mut Summary,
) -> Result<(), Failure> {
    let mut data = [0u8; MAX_WRITE];
    for j in 0..cfg.renames {
        let (len, seed) = rename_plan(boot, j);
        let from = path!("/r{boot}/tmp{j}");
        let to = path!("/r{boot}/file{j}");
        let fd = fs
            .open(
                from.as_str(),
                OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::EXCL,
            )
            .map_err(|e| fail("rename-create", e))?;
        let buf = &mut data[..len];
        pattern::fill(buf, seed, 0);
        let n = fs
            .write_at(fd, 0, buf)
            .map_err(|e| fail("rename-write", e))?;
        if n != len {
            return Err(Failure {
                step: "rename-short-write",
                error: None,
                detail: u64::from(j),
            });
        }
        fs.fsync(fd).map_err(|e| fail("rename-fsync", e))?;
        fs.close(fd).map_err(|e| fail("rename-close", e))?;
        fs.rename(from.as_str(), to.as_str())
            .map_err(|e| fail("rename", e))?;
        println!(
            "RENAMED from={} to={} len={len} seed={seed:#018x}",
            from.as_str(),
            to.as_str()
        );
        sum.renames += 1;
    }
    fs.sync_all().map_err(|e| fail("sync-all", e))?;
    println!("SYNC-DONE");
    Ok(())
}

/// Step 5: read every region and renamed file back.
fn read_back<D: BlockDevice<'static>>(
    fs: &mut FirmwareFs<D>,
    boot: u64,
    cfg: &Config,
) -> Result<(), Failure> {
    let mut buf = [0u8; MAX_WRITE];
    let total = cfg.files * cfg.rounds;
    let mut fds: heapless::Vec<Fd, HANDLES> = heapless::Vec::new();
    for i in 0..cfg.files {
        let p = path!("/r{boot}/f{i}");
        let fd = fs
            .open(p.as_str(), OpenFlags::READ)
            .map_err(|e| fail("reopen", e))?;
        fds.push(fd)
            .map_err(|_| fail("reopen", Error::TooManyOpenFiles))?;
    }
    for k in 0..total {
        let w = plan(boot, cfg, k);
        let dst = &mut buf[..w.len];
        let n = fs
            .read_at(fds[w.file as usize], w.off, dst)
            .map_err(|e| fail("read", e))?;
        if n != w.len || pattern::check(dst, w.seed, 0).is_err() {
            return Err(Failure {
                step: "readback-mismatch",
                error: None,
                detail: u64::from(k),
            });
        }
    }
    for fd in fds {
        fs.close(fd).map_err(|e| fail("close", e))?;
    }
    for j in 0..cfg.renames {
        let (len, seed) = rename_plan(boot, j);
        let p = path!("/r{boot}/file{j}");
        let fd = fs
            .open(p.as_str(), OpenFlags::READ)
            .map_err(|e| fail("reopen-renamed", e))?;
        let dst = &mut buf[..len];
        let n = fs.read_at(fd, 0, dst).map_err(|e| fail("read", e))?;
        let size = fs.fstat(fd).map_err(|e| fail("stat", e))?.size;
        fs.close(fd).map_err(|e| fail("close", e))?;
        if n != len || size != len as u64 || pattern::check(dst, seed, 0).is_err() {
            return Err(Failure {
                step: "readback-renamed",
                error: None,
                detail: u64::from(j),
            });
        }
        if !matches!(
            fs.stat(path!("/r{boot}/tmp{j}").as_str()),
            Err(Error::NotFound)
        ) {
            return Err(Failure {
                step: "rename-source-left",
                error: None,
                detail: u64::from(j),
            });
        }
    }
    println!("READBACK regions={total} files={}", cfg.renames);
    Ok(())
}

impl Summary {
    /// Print the `SUMMARY` line.
    pub fn print(&self) {
        let kib_s = (self.bytes * 1_000_000 / 1024)
            .checked_div(self.write_us)
            .unwrap_or(0);
        println!(
            "SUMMARY boot={} formatted={} tickets={} immediate={} bytes={} would_block={} \
             max_tickets_in_flight={} renames={} write_ms={} total_ms={} write_kib_s={}",
            self.boot,
            u8::from(self.formatted),
            self.tickets,
            self.immediate,
            self.bytes,
            self.would_block,
            self.max_in_flight,
            self.renames,
            self.write_us / 1000,
            self.total_us / 1000,
            kib_s
        );
    }
}
