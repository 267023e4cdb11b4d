//! `examples/firmware`'s [`Window`] (a sector range of a shared device) on the host: the
//! synchronous fast path (`read_now` / `write_now`) goes through shifted by the window's
//! start, is refused exactly as a queued request is when it leaves the window, and answers
//! `None` when the device has no fast path. (The firmware crate itself builds for bare metal
//! only, so its window is compiled into this test.)

#[allow(dead_code)]
#[path = "../examples/firmware/src/window.rs"]
mod window;

use core::cell::RefCell;

use bonsaifs::device::{run, BlockDevice, Command, QueuedConfig, QueuedRamDisk, RamDisk};
use bonsaifs::IoError;
use window::Window;

const SS: usize = 512;

/// A leaked buffer: queued requests through a window need `'static` ones.
fn leak(len: usize) -> &'static mut [u8] {
    Box::leak(vec![0u8; len].into_boxed_slice())
}

#[test]
fn the_fast_path_is_shifted_into_the_window_and_refused_like_a_queued_request() {
    let dev = RamDisk::new(leak(64 * SS), SS as u32).unwrap();
    let disk: &'static RefCell<RamDisk<'static, 'static>> = Box::leak(Box::new(RefCell::new(dev)));
    let mut w = Window::new(disk, 8, 16).unwrap();

    let data = [0x5a_u8; 2 * SS];
    assert_eq!(w.write_now(2, &data), Some(Ok(())));
    let mut back = [0u8; 2 * SS];
    assert_eq!(w.read_now(2, &mut back), Some(Ok(())));
    assert_eq!(back, data);
    // Window sectors 2..4 are device sectors 10..12.
    let mut raw = [0u8; SS];
    for (sector, want) in [(9, 0), (10, 0x5a), (11, 0x5a), (12, 0)] {
        assert_eq!(disk.borrow_mut().read_now(sector, &mut raw), Some(Ok(())));
        assert_eq!(raw, [want; SS], "device sector {sector}");
    }
    // The last sector of the window is in it.
    assert_eq!(w.write_now(15, &[1; SS]), Some(Ok(())));

    // Leaving the window (or a malformed buffer): the fast path answers what the queue does.
    for (lba, len, want) in [
        (15, 2 * SS, IoError::OutOfRange),
        (16, SS, IoError::OutOfRange),
        (u64::MAX, SS, IoError::OutOfRange),
        (0, 100, IoError::BadBuffer),
        (0, 0, IoError::BadBuffer),
    ] {
        let mut b = vec![0u8; len];
        assert_eq!(
            w.read_now(lba, &mut b),
            Some(Err(want)),
            "read {lba} +{len}"
        );
        assert_eq!(w.write_now(lba, &b), Some(Err(want)), "write {lba} +{len}");
        let queued = run(
            &mut w,
            Command::Read {
                lba,
                buf: leak(len),
            },
        )
        .result;
        assert_eq!(queued, Err(want), "queued read {lba} +{len}");
        let (buf, fua) = (leak(len), false);
        let queued = run(&mut w, Command::Write { lba, buf, fua }).result;
        assert_eq!(queued, Err(want), "queued write {lba} +{len}");
    }
    // Nothing outside the window was written.
    for sector in (0..8).chain(24..64) {
        assert_eq!(disk.borrow_mut().read_now(sector, &mut raw), Some(Ok(())));
        assert_eq!(raw, [0; SS], "device sector {sector}");
    }
}

#[test]
fn a_device_without_a_fast_path_has_none_through_the_window() {
    let cfg = QueuedConfig {
        sector_count: 64,
        ..QueuedConfig::default()
    };
    let disk: &'static RefCell<QueuedRamDisk<'static>> =
        Box::leak(Box::new(RefCell::new(QueuedRamDisk::new(cfg))));
    let mut w = Window::new(disk, 8, 16).unwrap();
    assert_eq!(w.read_now(0, &mut [0u8; SS]), None);
    assert_eq!(w.write_now(0, &[0u8; SS]), None);
    assert_eq!(
        w.read_now(16, &mut [0u8; SS]),
        None,
        "refused by the queue instead"
    );
}
