//! One filesystem shared by two host threads: one doing blocking `DSYNC` writes, one reading
//! and listing. Neither may hang (a watchdog fails the test instead), both finish within a
//! bounded number of steps, and what was written reads back. Also `NOWAIT` reads on their own.
#![cfg(feature = "nowait")]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use bonsaifs::device::{BlockDevice, QueuedConfig, QueuedRamDisk, Trace};
use bonsaifs::fs::{Fs, OpenFlags, ReadFlags};
use bonsaifs::shared::{CsLock, SharedFs, SharedState, StdLock};
use bonsaifs::volume::{memory_needed, FormatOptions};
use bonsaifs::Error;

const SLOTS: usize = 64;
type Dev = Trace<QueuedRamDisk<'static>>;
type F = Fs<'static, Dev, SLOTS, 8>;
type Shared<L> = SharedFs<'static, Dev, L, SLOTS, 8>;

/// Steps in which a thread found nothing to do (it ran `relax`).
static RELAXED: AtomicU64 = AtomicU64::new(0);

fn relax() {
    RELAXED.fetch_add(1, Ordering::Relaxed);
    std::thread::yield_now();
}

fn fresh(seed: u64) -> F {
    let mem: &'static mut [u8] = vec![0u8; memory_needed(512, 4096, SLOTS)].leak();
    let dev = Trace::new(QueuedRamDisk::new(QueuedConfig {
        sector_count: (16 << 20) / 512,
        seed,
        fua: false,
        max_polls: 16,
        ..QueuedConfig::default()
    }));
    let mut fs = F::format(dev, mem, FormatOptions::default()).unwrap();
    fs.mkdir("/d").unwrap();
    for i in 0..40 {
        let fd = fs
            .open(&format!("/d/f{i}"), OpenFlags::WRITE | OpenFlags::CREATE)
            .unwrap();
        fs.write(fd, &[i as u8; 5000]).unwrap();
        fs.close(fd).unwrap();
    }
    fs.sync_all().unwrap();
    fs
}

fn piece(round: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u64 * 31 + round * 7) as u8)
        .collect()
}

const ROUNDS: u64 = 60;
const LEN: usize = 12_000;

/// The writer: blocking DSYNC writes of `/log` pieces.
fn writer<L: bonsaifs::shared::StepLock<SharedState<'static, Dev, SLOTS, 8>>>(fs: &Shared<L>) {
    let fd = fs
        .open(
            "/log",
            OpenFlags::READ | OpenFlags::WRITE | OpenFlags::CREATE,
        )
        .unwrap();
    for r in 0..ROUNDS {
        let n = fs
            .write_at(
                fd,
                r * LEN as u64,
                &piece(r, LEN),
                bonsaifs::fs::WriteFlags::DSYNC,
            )
            .unwrap();
        assert_eq!(n, LEN);
    }
    fs.close(fd).unwrap();
}

/// The reader: lists `/d`, stats and reads every file, many times.
fn reader<L: bonsaifs::shared::StepLock<SharedState<'static, Dev, SLOTS, 8>>>(fs: &Shared<L>) {
    let mut buf = vec![0u8; 5000];
    for _ in 0..20 {
        let mut cur = fs.read_dir("/d").unwrap();
        let mut names = Vec::new();
        while let Some(e) = fs.read_dir_next(&mut cur).unwrap() {
            names.push(e.name().to_string());
        }
        assert_eq!(names.len(), 40);
        for name in names {
            let path = format!("/d/{name}");
            assert_eq!(fs.stat(&path).unwrap().size, 5000);
            let fd = fs.open(&path, OpenFlags::READ).unwrap();
            assert_eq!(fs.read_at(fd, 0, &mut buf).unwrap(), 5000);
            let i: u8 = name[1..].parse().unwrap();
            assert!(buf.iter().all(|&b| b == i), "{path}");
            fs.close(fd).unwrap();
        }
    }
}

/// Run writer and reader on two threads under a watchdog.
fn two_threads<L>(fs: Shared<L>) -> F
where
    L: bonsaifs::shared::StepLock<SharedState<'static, Dev, SLOTS, 8>> + Send + Sync + 'static,
{
    let fs = Arc::new(fs);
    let (tx, rx) = mpsc::channel();
    for role in ["writer", "reader"] {
        let (fs, tx) = (fs.clone(), tx.clone());
        std::thread::spawn(move || {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match role {
                "writer" => writer(&fs),
                _ => reader(&fs),
            }));
            drop(fs);
            let _ = tx.send((role, r.is_ok()));
        });
    }
    for _ in 0..2 {
        // The watchdog: a hang fails the test instead of stalling it.
        let (role, ok) = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("a thread did not finish within 120 s: deadlock or livelock");
        assert!(ok, "the {role} thread failed");
    }
    let fs = Arc::try_unwrap(fs)
        .ok()
        .expect("threads still hold the filesystem");
    fs.into_inner().unwrap()
}

fn check_log(fs: &mut F) {
    let fd = fs.open("/log", OpenFlags::READ).unwrap();
    let mut buf = vec![0u8; LEN];
    for r in 0..ROUNDS {
        assert_eq!(fs.read_at(fd, r * LEN as u64, &mut buf).unwrap(), LEN);
        assert!(buf == piece(r, LEN), "round {r}");
    }
    let mut scratch = vec![0u8; fs.fsck_scratch_len()];
    assert!(fs.fsck(&mut scratch).unwrap().is_clean());
}

#[test]
fn two_threads_share_one_filesystem_without_deadlock() {
    RELAXED.store(0, Ordering::Relaxed);
    let mut fs = two_threads(Shared::<StdLock<_>>::new(fresh(1), relax));
    let mut fs2 = two_threads(Shared::<CsLock<_>>::new(fresh(2), relax));
    check_log(&mut fs);
    check_log(&mut fs2);
    // Bounded: every wait is a step that found its I/O still in flight. The bound is loose
    // (threads are scheduled unevenly) but finite: a livelock would blow through it.
    let relaxed = RELAXED.load(Ordering::Relaxed);
    println!("{relaxed} relaxed steps over both runs");
    assert!(relaxed < 1_000_000, "{relaxed} steps without progress");
}

#[test]
fn nowait_reads_answer_from_the_cache_or_start_the_read() {
    let mem: &'static mut [u8] = vec![0u8; memory_needed(512, 4096, SLOTS)].leak();
    let fs = fresh(3);
    let dev = fs.unmount().unwrap();
    let mut fs = F::mount(dev, mem).unwrap();
    let fd = fs.open("/d/f7", OpenFlags::READ).unwrap();
    let mut buf = vec![0u8; 5000];
    let reads = |fs: &F| fs.volume().device().in_flight();
    // Cold: WouldBlock, with the reads started and nothing copied.
    let mut tries = 0;
    let n = loop {
        match fs.read_at_flags(fd, 0, &mut buf, ReadFlags::NOWAIT) {
            Ok(n) => break n,
            Err(Error::WouldBlock) => {
                tries += 1;
                assert!(tries < 10_000, "never became readable");
                if tries == 1 {
                    assert!(reads(&fs) > 0, "WouldBlock without starting a read");
                }
            }
            Err(e) => panic!("{e:?}"),
        }
    };
    assert!(tries >= 1, "a cold read answered without I/O");
    assert_eq!(n, 5000);
    assert!(buf.iter().all(|&b| b == 7));
    // Warm: answered at once, with no device request.
    let before = fs.volume().device().counters();
    buf.fill(0);
    assert_eq!(
        fs.read_at_flags(fd, 0, &mut buf, ReadFlags::NOWAIT),
        Ok(5000)
    );
    assert!(buf.iter().all(|&b| b == 7));
    assert_eq!(fs.volume().device().counters(), before);
}
