//! `bonsaifs-fwcheck`: the host half of the QEMU firmware end-to-end test.
//!
//! Reads the UART log of one firmware run and the disk image it ran on, and checks that the
//! image holds what the firmware reported (the log format is documented in
//! `examples/firmware/src/workload.rs`):
//!
//! * the image mounts (replaying the journal, as any later mount would) and fsck is clean;
//! * every `DSYNC-DONE` write is present with exactly its bytes (pattern from its seed);
//! * every `RENAMED` file followed by `SYNC-DONE` exists under its new name with its bytes and
//!   the old name is gone; one without (a run killed before `sync_all`) exists under exactly
//!   one of the two names, with its bytes (rename is atomic, and the file was `fsync`ed first);
//! * `/boot-count` is at least the run's `BOOT-ID`;
//! * unless `--killed`: the run ended with `PASS`.
//!
//! Only complete lines count: a line cut off by a kill promises nothing.
//!
//! ```text
//! bonsaifs-fwcheck disk.img uart.log            # a run that finished
//! bonsaifs-fwcheck --killed disk.img uart.log   # a run killed at a random instant
//! ```
//! Exit status 0 when every check passes, 1 otherwise, 2 on usage or I/O errors.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use bonsaifs::fs::{Fs, OpenFlags};
use bonsaifs::volume::memory_needed;
use bonsaifs::Error;
use bonsaifs_hal::image_file::ImageFile;
use clap::Parser;

/// Cache slots used to mount the image.
const SLOTS: usize = 64;
/// The firmware formats with 4 KiB blocks; mount memory is sized for up to 64 KiB blocks.
const MAX_BLOCK: usize = 64 * 1024;

/// Check a firmware run's disk image against its UART log.
#[derive(Debug, Parser)]
#[command(name = "bonsaifs-fwcheck", version)]
struct Args {
    /// The run was killed: do not require a PASS line.
    #[arg(long)]
    killed: bool,
    /// Disk image the firmware ran on.
    image: PathBuf,
    /// UART log of the run.
    log: PathBuf,
}

/// The firmware's data pattern (keep in step with `examples/firmware/src/pattern.rs`).
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn pattern_byte(seed: u64, n: u64) -> u8 {
    (splitmix64(seed.wrapping_add(n / 8)) >> (8 * (n % 8))) as u8
}

/// First index where `buf` differs from the pattern of `seed`.
fn mismatch(buf: &[u8], seed: u64) -> Option<usize> {
    buf.iter()
        .enumerate()
        .find(|&(i, &b)| b != pattern_byte(seed, i as u64))
        .map(|(i, _)| i)
}

/// One durable write the firmware reported.
#[derive(Debug, Clone)]
struct Write {
    ticket: u64,
    path: String,
    off: u64,
    len: usize,
    seed: u64,
}

/// One rename the firmware reported.
#[derive(Debug, Clone)]
struct Rename {
    from: String,
    to: String,
    len: usize,
    seed: u64,
    /// A `SYNC-DONE` followed it.
    synced: bool,
}

/// What the log promises.
#[derive(Debug, Default)]
struct Claims {
    boot: Option<u64>,
    writes: Vec<Write>,
    renames: Vec<Rename>,
    passed: bool,
    failed: Option<String>,
    lines: usize,
}

fn fields(line: &str) -> HashMap<&str, &str> {
    line.split_whitespace()
        .skip(1)
        .filter_map(|kv| kv.split_once('='))
        .collect()
}

fn num(f: &HashMap<&str, &str>, key: &str, line: &str) -> Result<u64, String> {
    let v = f
        .get(key)
        .ok_or_else(|| format!("log line without {key}=: {line}"))?;
    let parsed = match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => v.parse(),
    };
    parsed.map_err(|_| format!("bad {key}= in log line: {line}"))
}

fn text(f: &HashMap<&str, &str>, key: &str, line: &str) -> Result<String, String> {
    f.get(key)
        .map(|s| s.to_string())
        .ok_or_else(|| format!("log line without {key}=: {line}"))
}

fn parse_log(raw: &[u8]) -> Result<Claims, String> {
    let text_all = String::from_utf8_lossy(raw);
    // Only newline-terminated lines: the last one may have been cut by the kill.
    let complete = match text_all.rfind('\n') {
        Some(end) => &text_all[..end],
        None => "",
    };
    let mut c = Claims::default();
    for line in complete.lines() {
        let line = line.trim_end_matches('\r');
        c.lines += 1;
        let kind = line.split_whitespace().next().unwrap_or("");
        let f = fields(line);
        match kind {
            "BOOT-ID" => c.boot = Some(num(&f, "n", line)?),
            "DSYNC-DONE" => c.writes.push(Write {
                ticket: num(&f, "ticket", line)?,
                path: text(&f, "path", line)?,
                off: num(&f, "off", line)?,
                len: num(&f, "len", line)? as usize,
                seed: num(&f, "seed", line)?,
            }),
            "RENAMED" => c.renames.push(Rename {
                from: text(&f, "from", line)?,
                to: text(&f, "to", line)?,
                len: num(&f, "len", line)? as usize,
                seed: num(&f, "seed", line)?,
                synced: false,
            }),
            "SYNC-DONE" => c.renames.iter_mut().for_each(|r| r.synced = true),
            "PASS" => c.passed = true,
            "FAIL" | "PANIC" | "TRAP" => c.failed = Some(line.to_string()),
            _ => {}
        }
    }
    Ok(c)
}

type HostFs<'b> = Fs<'b, ImageFile<'b>, SLOTS, 4>;

/// Read the whole file at `path`, or `None` if it does not exist.
fn read_file(fs: &mut HostFs<'_>, path: &str) -> Result<Option<Vec<u8>>, String> {
    let fd = match fs.open(path, OpenFlags::READ) {
        Ok(fd) => fd,
        Err(Error::NotFound) => return Ok(None),
        Err(e) => return Err(format!("open {path}: {e}")),
    };
    let size = fs.fstat(fd).map_err(|e| format!("stat {path}: {e}"))?.size;
    let mut buf = vec![0u8; size as usize];
    let n = fs
        .read_at(fd, 0, &mut buf)
        .map_err(|e| format!("read {path}: {e}"))?;
    buf.truncate(n);
    fs.close(fd).map_err(|e| format!("close {path}: {e}"))?;
    Ok(Some(buf))
}

/// Counts of what was verified.
#[derive(Debug, Default)]
struct Verified {
    writes: usize,
    bytes: u64,
    renames_synced: usize,
    renames_atomic: usize,
    inodes: u64,
}

fn check(args: &Args, claims: &Claims) -> Result<Verified, Vec<String>> {
    let mut problems = Vec::new();
    if let Some(line) = &claims.failed {
        problems.push(format!("the firmware reported a failure: {line}"));
    }
    if !args.killed && !claims.passed {
        problems.push("the run did not end with PASS".to_string());
    }

    let dev = ImageFile::open(&args.image, 512)
        .map_err(|e| vec![format!("open {}: {e}", args.image.display())])?;
    let mut mem = vec![0u8; memory_needed(512, MAX_BLOCK, SLOTS)];
    let mut fs = match HostFs::mount(dev, &mut mem) {
        Ok(fs) => fs,
        Err(Error::NotFormatted) if args.killed && claims.boot.is_none() => {
            // Killed before the first format finished: nothing was promised yet.
            problems.extend(
                claims
                    .writes
                    .iter()
                    .map(|w| format!("{}: write reported but the image holds no volume", w.path)),
            );
            return if problems.is_empty() {
                Ok(Verified::default())
            } else {
                Err(problems)
            };
        }
        Err(e) => {
            problems.push(format!("mount: {e}"));
            return Err(problems);
        }
    };

    let mut scratch = vec![0u8; fs.fsck_scratch_len()];
    let mut v = Verified::default();
    match fs.fsck(&mut scratch) {
        Ok(r) if r.is_clean() => v.inodes = r.inodes,
        Ok(r) => problems.push(format!(
            "fsck: {} namespace errors (first {:?}), block report {:?}",
            r.errors, r.first_error, r.blocks
        )),
        Err(e) => problems.push(format!("fsck: {e}")),
    }

    if let Some(boot) = claims.boot {
        match read_file(&mut fs, "/boot-count") {
            Ok(Some(b)) if b.len() == 8 => {
                let n = u64::from_le_bytes(b.try_into().unwrap_or([0; 8]));
                if n < boot {
                    problems.push(format!("/boot-count is {n}, the log reported boot {boot}"));
                }
            }
            Ok(other) => problems.push(format!("/boot-count: unexpected content {other:?}")),
            Err(e) => problems.push(e),
        }
    }

    let mut files: HashMap<String, Option<Vec<u8>>> = HashMap::new();
    for w in &claims.writes {
        if !files.contains_key(&w.path) {
            match read_file(&mut fs, &w.path) {
                Ok(content) => {
                    files.insert(w.path.clone(), content);
                }
                Err(e) => {
                    problems.push(e);
                    continue;
                }
            }
        }
        let Some(Some(content)) = files.get(&w.path) else {
            problems.push(format!(
                "ticket {}: {} is missing (write of {} bytes at {} reported durable)",
                w.ticket, w.path, w.len, w.off
            ));
            continue;
        };
        let start = w.off as usize;
        match content.get(start..start + w.len) {
            None => problems.push(format!(
                "ticket {}: {} is {} bytes, the write reported durable ends at {}",
                w.ticket,
                w.path,
                content.len(),
                start + w.len
            )),
            Some(bytes) => match mismatch(bytes, w.seed) {
                Some(i) => problems.push(format!(
                    "ticket {}: {} byte {} differs from the reported write",
                    w.ticket,
                    w.path,
                    start + i
                )),
                None => {
                    v.writes += 1;
                    v.bytes += w.len as u64;
                }
            },
        }
    }

    for r in &claims.renames {
        let holds = |c: &Option<Vec<u8>>| {
            c.as_ref()
                .is_some_and(|b| b.len() == r.len && mismatch(b, r.seed).is_none())
        };
        let (from, to) = match (read_file(&mut fs, &r.from), read_file(&mut fs, &r.to)) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => {
                problems.push(e);
                continue;
            }
        };
        if r.synced {
            if holds(&to) && from.is_none() {
                v.renames_synced += 1;
            } else {
                problems.push(format!(
                    "rename {} -> {} (synced): new name {}, old name {}",
                    r.from,
                    r.to,
                    describe(&to, holds(&to)),
                    describe(&from, holds(&from))
                ));
            }
        } else if (holds(&to) && from.is_none()) || (holds(&from) && to.is_none()) {
            v.renames_atomic += 1;
        } else {
            problems.push(format!(
                "rename {} -> {} (not yet synced) is not atomic: new name {}, old name {}",
                r.from,
                r.to,
                describe(&to, holds(&to)),
                describe(&from, holds(&from))
            ));
        }
    }

    if let Err(e) = fs.unmount() {
        problems.push(format!("unmount: {e}"));
    }
    if problems.is_empty() {
        Ok(v)
    } else {
        Err(problems)
    }
}

fn describe(content: &Option<Vec<u8>>, right: bool) -> String {
    match content {
        None => "absent".to_string(),
        Some(b) if right => format!("present ({} bytes, right content)", b.len()),
        Some(b) => format!("present ({} bytes, WRONG content)", b.len()),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let raw = match std::fs::read(&args.log) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bonsaifs-fwcheck: read {}: {e}", args.log.display());
            return ExitCode::from(2);
        }
    };
    let claims = match parse_log(&raw) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("bonsaifs-fwcheck: {e}");
            return ExitCode::from(2);
        }
    };
    match check(&args, &claims) {
        Ok(v) => {
            println!(
                "fwcheck: {} ok: mounted, fsck clean ({} inodes); boot {}; {} DSYNC writes \
                 verified ({} bytes); renames: {} synced, {} in flight and atomic",
                args.image.display(),
                v.inodes,
                claims
                    .boot
                    .map_or_else(|| "-".to_string(), |b| b.to_string()),
                v.writes,
                v.bytes,
                v.renames_synced,
                v.renames_atomic
            );
            ExitCode::SUCCESS
        }
        Err(problems) => {
            for p in problems.iter().take(20) {
                eprintln!("fwcheck: {p}");
            }
            if problems.len() > 20 {
                eprintln!("fwcheck: ... {} problems in all", problems.len());
            }
            eprintln!("fwcheck: {} FAILED", args.image.display());
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_matches_the_firmware() {
        // First bytes of seed 0 and 1 (splitmix64(0) = 0xe220a8397b1dcdaf).
        assert_eq!(pattern_byte(0, 0), 0xaf);
        assert_eq!(pattern_byte(0, 7), 0xe2);
        assert_eq!(splitmix64(0), 0xe220_a839_7b1d_cdaf);
        let buf: Vec<u8> = (0..100).map(|i| pattern_byte(5, i)).collect();
        assert_eq!(mismatch(&buf, 5), None);
        assert_eq!(mismatch(&buf, 6), Some(0));
    }

    #[test]
    fn log_parsing_keeps_complete_lines_only() {
        let log = b"BOOT-ID n=3\r\nDSYNC-DONE ticket=1 path=/r3/f0 off=0 len=4096 seed=0x10\r\n\
RENAMED from=/r3/tmp0 to=/r3/file0 len=10 seed=0x2\r\nSYNC-DONE\r\nRENAMED from=/r3/tmp1 to=/r3/file1 len=5 seed=0x3\r\n\
DSYNC-DONE ticket=2 path=/r3/f1 off=0 len=40";
        let c = parse_log(log).unwrap();
        assert_eq!(c.boot, Some(3));
        assert_eq!(c.writes.len(), 1);
        assert_eq!(c.writes[0].seed, 0x10);
        assert_eq!(c.renames.len(), 2);
        assert!(c.renames[0].synced);
        assert!(!c.renames[1].synced);
        assert!(!c.passed);
    }
}
