//! Long runs of small overwrites with a sync point each, on a volume half full: copy-on-write
//! leaves free space in one-block pieces and frees wait for checkpoints, and neither may make
//! the volume report `NoSpace` while it has plenty of room.

use bonsaifs::device::{QueuedConfig, QueuedRamDisk};
use bonsaifs::fs::{Fs, OpenFlags};
use bonsaifs::volume::{memory_needed, FormatOptions};

const SLOTS: usize = 128;
type F<'b> = Fs<'b, QueuedRamDisk<'b>, SLOTS, 4>;

fn setup(m: &mut [u8], disk_mib: u64, file_mib: u64, fua: bool) -> (F<'_>, bonsaifs::fs::Fd) {
    let cfg = QueuedConfig {
        sector_count: (disk_mib << 20) / 512,
        fua,
        ..QueuedConfig::default()
    };
    let mut fs = F::format(QueuedRamDisk::new(cfg), m, FormatOptions::default()).unwrap();
    let fd = fs
        .open(
            "/data",
            OpenFlags::READ | OpenFlags::WRITE | OpenFlags::CREATE,
        )
        .unwrap();
    let buf = vec![7u8; 65536];
    for i in 0..(file_mib << 20) / 65536 {
        fs.write_at(fd, i * 65536, &buf).unwrap();
    }
    fs.sync_all().unwrap();
    (fs, fd)
}

fn offsets(n: u64, file_mib: u64) -> impl Iterator<Item = u64> {
    let mut x: u64 = 1;
    (0..n).map(move |_| {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((x >> 33) % ((file_mib << 20) / 4096)) * 4096
    })
}

#[test]
fn overwrite_and_fsync_twenty_thousand_times_on_a_half_full_volume() {
    let mut m = vec![0u8; memory_needed(512, 4096, SLOTS)];
    let (mut fs, fd) = setup(&mut m, 64, 32, true);
    let block = [9u8; 4096];
    for (i, off) in offsets(20_000, 32).enumerate() {
        fs.write_at(fd, off, &block)
            .unwrap_or_else(|e| panic!("op {i}: write {e:?} {:?}", fs.statfs()));
        fs.fsync(fd)
            .unwrap_or_else(|e| panic!("op {i}: fsync {e:?} {:?}", fs.statfs()));
    }
    let mut scratch = vec![0u8; fs.fsck_scratch_len()];
    assert!(fs.fsck(&mut scratch).unwrap().is_clean());
}

#[test]
#[cfg(feature = "nowait")]
fn queued_dsync_writes_outlast_the_log() {
    use bonsaifs::fs::{WriteFlags, WriteStatus};
    use bonsaifs::Error;
    for fua in [true, false] {
        let mut m = vec![0u8; memory_needed(512, 4096, SLOTS)];
        let (mut fs, fd) = setup(&mut m, 64, 16, fua);
        let block = [5u8; 4096];
        let mut done = 0;
        for (i, off) in offsets(6000, 16).enumerate() {
            let t = loop {
                match fs.write_at_flags(fd, off, &block, WriteFlags::NOWAIT | WriteFlags::DSYNC) {
                    Ok(WriteStatus::Queued(t)) => break t,
                    Err(Error::WouldBlock) => {
                        if let Some((_, r)) = fs.poll() {
                            r.unwrap_or_else(|e| panic!("fua {fua} op {i}: {e:?}"));
                            done += 1;
                        }
                    }
                    other => panic!("fua {fua} op {i}: {other:?}"),
                }
            };
            // Queue depth 1: wait for this ticket.
            loop {
                if let Some((got, r)) = fs.poll() {
                    r.unwrap_or_else(|e| panic!("fua {fua} op {i}: ticket {got:?}: {e:?}"));
                    done += 1;
                    if got == t {
                        break;
                    }
                }
            }
        }
        assert_eq!(done, 6000);
    }
}
