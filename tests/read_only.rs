//! The `read-only` feature: mount and read an image made by a writable build; every write
//! entry point answers `ReadOnly`. Runs only with the feature, on the image that
//! `scripts/test.sh` prepares with the host tool:
//!
//! ```sh
//! bonsaifs mkfs ro.img --size 8M && bonsaifs put src/lib.rs ro.img:/lib.rs
//! BONSAIFS_RO_IMAGE=ro.img cargo test -p bonsaifs --features read-only --test read_only
//! ```
#![cfg(feature = "read-only")]

use bonsaifs::device::{QueuedConfig, QueuedRamDisk};
use bonsaifs::fs::{Fs, OpenFlags};
use bonsaifs::volume::{memory_needed, FormatOptions};
use bonsaifs::Error;

type F<'b> = Fs<'b, QueuedRamDisk<'b>, 16, 4>;

fn image() -> Vec<u8> {
    let path = std::env::var("BONSAIFS_RO_IMAGE")
        .expect("BONSAIFS_RO_IMAGE names an image holding /lib.rs (see scripts/test.sh)");
    std::fs::read(path).expect("read the image")
}

fn cfg(len: usize) -> QueuedConfig {
    QueuedConfig {
        sector_count: len as u64 / 512,
        ..QueuedConfig::default()
    }
}

#[test]
fn a_read_only_build_reads_and_refuses_every_write() {
    let img = image();
    let mut m = vec![0u8; memory_needed(512, 4096, 16)];
    let mut fs = F::mount(
        QueuedRamDisk::from_image(cfg(img.len()), img.clone()),
        &mut m,
    )
    .unwrap();
    assert!(fs.volume().is_read_only());
    // Reads: the file is there, byte for byte.
    let want = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/src/lib.rs")).unwrap();
    let fd = fs.open("/lib.rs", OpenFlags::READ).unwrap();
    let mut got = vec![0u8; want.len() + 10];
    assert_eq!(fs.read_at(fd, 0, &mut got).unwrap(), want.len());
    assert!(got[..want.len()] == want[..]);
    let mut cur = fs.read_dir("/").unwrap();
    let mut names = Vec::new();
    while let Some(e) = fs.read_dir_next(&mut cur).unwrap() {
        names.push(e.name().to_string());
    }
    assert_eq!(names, ["lib.rs"]);
    // Writes: refused, and nothing reaches the device.
    let rw = OpenFlags::READ | OpenFlags::WRITE;
    assert_eq!(
        fs.open("/new", rw | OpenFlags::CREATE).err(),
        Some(Error::ReadOnly)
    );
    assert_eq!(fs.mkdir("/d").err(), Some(Error::ReadOnly));
    assert_eq!(fs.unlink("/lib.rs").err(), Some(Error::ReadOnly));
    assert_eq!(fs.rename("/lib.rs", "/x").err(), Some(Error::ReadOnly));
    assert_eq!(fs.sync_all().err(), Some(Error::ReadOnly));
    if let Ok(wfd) = fs.open("/lib.rs", rw) {
        assert_eq!(fs.write_at(wfd, 0, b"x").err(), Some(Error::ReadOnly));
        assert_eq!(fs.truncate(wfd, 0).err(), Some(Error::ReadOnly));
        #[cfg(feature = "nowait")]
        assert_eq!(
            fs.write_at_flags(wfd, 0, b"x", bonsaifs::fs::WriteFlags::NOWAIT)
                .err(),
            Some(Error::ReadOnly)
        );
    }
    let dev = fs.unmount().unwrap();
    assert!(
        dev.durable_image() == &img[..],
        "a read-only build changed the image"
    );
    // Formatting is refused too.
    let mut m2 = vec![0u8; memory_needed(512, 4096, 16)];
    let r = F::format(
        QueuedRamDisk::new(cfg(8 << 20)),
        &mut m2,
        FormatOptions::default(),
    );
    assert_eq!(r.err(), Some(Error::ReadOnly));
}
