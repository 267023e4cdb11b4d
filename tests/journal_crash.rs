//! Power cut at every device request of a mixed workload (appends, overwrites, fsync, rename,
//! unlink, mkdir, truncate), with the journal doing the syncing.
//!
//! For every cut point n, the workload runs on a device that drops every request from the
//! n-th on (as if the power failed there); then the volatile cache either loses everything not
//! yet durable, or keeps every completed write. Mount must succeed, fsck must be clean, and
//! the tree must equal the model *after some operation at or after the last acknowledged
//! sync point*: fsync'd data is there, every operation is all-or-nothing, and no file holds
//! bytes that were never written to it.

mod common;

use std::collections::BTreeMap;

use bonsaifs::device::{FaultInjector, FaultPlan, IoError, QueuedRamDisk};
use bonsaifs::fs::{FileKind, Fs, OpenFlags};
use bonsaifs::volume::FormatOptions;
use common::*;

type Dev<'b> = FaultInjector<'b, QueuedRamDisk<'b>>;
type F<'b> = Fs<'b, Dev<'b>, SLOTS, 8>;

/// Path → file bytes (directories map to `None`).
type Tree = BTreeMap<String, Option<Vec<u8>>>;

#[derive(Clone, Debug)]
enum Op {
    Mkdir(&'static str),
    Create(&'static str),
    Append(&'static str, usize, u8),
    Overwrite(&'static str, u64, usize, u8),
    Truncate(&'static str, u64),
    Rename(&'static str, &'static str),
    Unlink(&'static str),
    Fsync(&'static str),
}

fn workload() -> Vec<Op> {
    use Op::*;
    vec![
        Mkdir("/d"),
        Create("/d/log"),
        Append("/d/log", 100, 1),
        Fsync("/d/log"),
        Create("/big"),
        Append("/big", 20_000, 2),
        Fsync("/big"),
        Append("/d/log", 100, 3),
        Overwrite("/big", 4096, 4096, 4),
        Fsync("/big"),
        Create("/tmp"),
        Append("/tmp", 3000, 5),
        Rename("/tmp", "/d/renamed"),
        Fsync("/d/log"),
        Overwrite("/big", 100, 50, 6),
        Truncate("/big", 9000),
        Append("/d/log", 300, 7),
        Unlink("/d/renamed"),
        Fsync("/big"),
        Create("/late"),
        Append("/late", 5000, 8),
        Rename("/d/log", "/log2"),
        Fsync("/late"),
        Overwrite("/log2", 0, 10, 9),
    ]
}

fn bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(7) ^ seed).collect()
}

/// Apply `op` to the model.
fn model_apply(t: &mut Tree, op: &Op) {
    match *op {
        Op::Mkdir(p) => {
            t.insert(p.into(), None);
        }
        Op::Create(p) => {
            t.insert(p.into(), Some(Vec::new()));
        }
        Op::Append(p, n, s) => t.get_mut(p).unwrap().as_mut().unwrap().extend(bytes(n, s)),
        Op::Overwrite(p, off, n, s) => {
            let f = t.get_mut(p).unwrap().as_mut().unwrap();
            let end = off as usize + n;
            if f.len() < end {
                f.resize(end, 0);
            }
            f[off as usize..end].copy_from_slice(&bytes(n, s));
        }
        Op::Truncate(p, n) => t
            .get_mut(p)
            .unwrap()
            .as_mut()
            .unwrap()
            .resize(n as usize, 0),
        Op::Rename(a, b) => {
            let v = t.remove(a).unwrap();
            t.insert(b.into(), v);
        }
        Op::Unlink(p) => {
            t.remove(p);
        }
        Op::Fsync(_) => {}
    }
}

/// Run `op` on the filesystem.
fn fs_apply(fs: &mut F<'_>, op: &Op) -> bonsaifs::Result<()> {
    let rw = OpenFlags::READ | OpenFlags::WRITE;
    let with =
        |fs: &mut F<'_>,
         p: &str,
         f: &mut dyn FnMut(&mut F<'_>, bonsaifs::fs::Fd) -> bonsaifs::Result<()>| {
            let fd = fs.open(p, rw)?;
            let r = f(fs, fd);
            fs.close(fd)?;
            r
        };
    match *op {
        Op::Mkdir(p) => fs.mkdir(p),
        Op::Create(p) => {
            let fd = fs.open(p, rw | OpenFlags::CREATE | OpenFlags::EXCL)?;
            fs.close(fd)
        }
        Op::Append(p, n, s) => with(fs, p, &mut |fs, fd| {
            let end = fs.fstat(fd)?.size;
            fs.write_at(fd, end, &bytes(n, s)).map(|_| ())
        }),
        Op::Overwrite(p, off, n, s) => with(fs, p, &mut |fs, fd| {
            fs.write_at(fd, off, &bytes(n, s)).map(|_| ())
        }),
        Op::Truncate(p, n) => with(fs, p, &mut |fs, fd| fs.truncate(fd, n)),
        Op::Rename(a, b) => fs.rename(a, b),
        Op::Unlink(p) => fs.unlink(p),
        Op::Fsync(p) => with(fs, p, &mut |fs, fd| fs.fsync(fd)),
    }
}

/// Everything in the filesystem, as a model tree.
fn read_tree(fs: &mut F<'_>, dir: &str, out: &mut Tree) {
    let mut cur = fs.read_dir(dir).unwrap();
    while let Some(e) = fs.read_dir_next(&mut cur).unwrap() {
        let path = format!("{}/{}", dir.trim_end_matches('/'), e.name());
        match e.kind {
            FileKind::Dir => {
                out.insert(path.clone(), None);
                read_tree(fs, &path, out);
            }
            FileKind::File => {
                let fd = fs.open(&path, OpenFlags::READ).unwrap();
                let size = fs.fstat(fd).unwrap().size as usize;
                let mut v = vec![0u8; size];
                assert_eq!(fs.read_at(fd, 0, &mut v).unwrap(), size);
                fs.close(fd).unwrap();
                out.insert(path, Some(v));
            }
        }
    }
}

/// The device: out of order, volatile cache, with or without FUA.
fn dcfg(bytes: u64, seed: u64, fua: bool) -> bonsaifs::device::QueuedConfig {
    bonsaifs::device::QueuedConfig {
        fua,
        ..cfg(bytes, seed)
    }
}

fn base(fua: bool) -> Vec<u8> {
    let mut m = mem(4096);
    let dev = FaultInjector::new(
        QueuedRamDisk::new(dcfg(4 << 20, 21, fua)),
        FaultPlan::None,
        IoError::Media,
    );
    let fs = F::format(dev, &mut m, FormatOptions::default()).unwrap();
    fs.unmount().unwrap().into_inner().durable_image().to_vec()
}

/// Run the workload with requests from `cut` on dropped. Returns the device and the index of
/// the last op whose sync point was acknowledged (snapshots index: ops applied).
fn run_until_cut<'b>(
    image: &[u8],
    m: &'b mut [u8],
    cut: Option<u64>,
    fua: bool,
) -> (QueuedRamDisk<'b>, usize, u64) {
    let dev = QueuedRamDisk::from_image(dcfg(image.len() as u64, 22, fua), image.to_vec());
    let dev = FaultInjector::new(dev, FaultPlan::None, IoError::Media);
    let mut fs = F::mount(dev, m).unwrap();
    let start = fs.volume().device().submitted();
    if let Some(n) = cut {
        fs.volume_mut()
            .device_mut()
            .set_plan(FaultPlan::From(start + n));
    }
    let mut acked = 0;
    for (i, op) in workload().iter().enumerate() {
        match fs_apply(&mut fs, op) {
            Ok(()) if matches!(op, Op::Fsync(_)) => acked = i + 1,
            Ok(()) => {}
            Err(_) => break,
        }
    }
    let used = fs.volume().device().submitted() - start;
    (fs.into_device().into_inner(), acked, used)
}

#[test]
fn power_cut_at_every_request_of_a_mixed_workload() {
    // With FUA the data and records go with FUA; without it, records carry data sums and
    // share one flush with the data.
    for fua in [true, false] {
        power_cut_at_every_request(fua);
    }
}

fn power_cut_at_every_request(fua: bool) {
    let image = base(fua);
    // The model after each op.
    let mut snaps = vec![Tree::new()];
    let mut t = Tree::new();
    for op in workload() {
        model_apply(&mut t, &op);
        snaps.push(t.clone());
    }
    let mut m = mem(4096);
    let (_, acked, total) = run_until_cut(&image, &mut m, None, fua);
    assert_eq!(
        acked,
        workload().len() - 1,
        "the uncut run acknowledges every fsync"
    );
    let mut states = 0;
    for cut in 0..=total {
        for keep_completed in [false, true] {
            let mut m = mem(4096);
            let (mut dev, acked, _) = run_until_cut(&image, &mut m, Some(cut), fua);
            if keep_completed {
                dev.power_cut_keeping(|_| true);
            } else {
                dev.power_cut();
            }
            let after = dev.durable_image().to_vec();
            let mut m2 = mem(4096);
            let dev = FaultInjector::new(
                QueuedRamDisk::from_image(dcfg(after.len() as u64, 23, fua), after),
                FaultPlan::None,
                IoError::Media,
            );
            let mut fs =
                F::mount(dev, &mut m2).unwrap_or_else(|e| panic!("cut {cut}: mount {e:?}"));
            let mut scratch = vec![0u8; fs.fsck_scratch_len()];
            let rep = fs.fsck(&mut scratch).unwrap();
            assert!(
                rep.is_clean(),
                "fua {fua} cut {cut} keep {keep_completed}: {rep:?}"
            );
            let mut got = Tree::new();
            read_tree(&mut fs, "/", &mut got);
            let ok = snaps[acked..].contains(&got);
            assert!(ok, "fua {fua} cut {cut}/{total} keep {keep_completed}: state matches no op at or after the last acknowledged sync point (op {acked})");
            states += 1;
        }
    }
    println!("fua {fua}: {states} crash states of a {total}-request workload checked");
}
