//! The embedded-sdmmc adapters, both ways (`bonsaifs_hal::sdmmc_adapter`):
//!
//! - embedded-sdmmc's FAT code on our drivers (`SdmmcDevice`): a FAT volume prepared on the
//!   host is read and written by embedded-sdmmc through our SD-over-SPI driver (and through a
//!   RAM disk with 4096-byte sectors), then checked with the `fatfs` crate;
//! - bonsaifs on embedded-sdmmc's devices (`FromSdmmc`): embedded-sdmmc's own `SdCard` driver,
//!   talking to our card model, passes the conformance suite and carries a bonsaifs volume
//!   through format, write, fsync, power cut and remount;
//! - errors cross both adapters with their meaning intact.

use std::io::{Cursor, Read, Write};

use bonsaifs::device::{read_blocks, write_blocks, BlockDevice, RamDisk};
use bonsaifs::fs::{Fs, OpenFlags};
use bonsaifs::volume::{memory_needed, FormatOptions};
use bonsaifs::IoError;
use bonsaifs_hal::conformance::{self, Config};
use bonsaifs_hal::sd::model::{CountingDelay, Fault, ModelConfig, SdCardModel};
use bonsaifs_hal::sd::{SdCard, SdConfig, SdSpi};
use bonsaifs_hal::sdmmc_adapter::{sdcard_error, FromSdmmc, SdmmcDevice};
use embedded_sdmmc::{
    Block, BlockDevice as _, BlockIdx, Mode, TimeSource, Timestamp, VolumeIdx, VolumeManager,
};

/// Request buffers must outlive the device that borrows them; tests simply leak them.
fn leak(v: Vec<u8>) -> &'static mut [u8] {
    v.leak()
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| ((i * 7 + i / 512) as u8).wrapping_add(seed))
        .collect()
}

struct Clock;

impl TimeSource for Clock {
    fn get_timestamp(&self) -> Timestamp {
        Timestamp {
            year_since_1970: 56,
            zero_indexed_month: 0,
            zero_indexed_day: 0,
            hours: 12,
            minutes: 0,
            seconds: 0,
        }
    }
}

const DISK_BYTES: usize = 16 << 20;
const PART_START: usize = 2048; // sectors

/// A 16 MiB disk image: an MBR with one FAT16 (LBA) partition at sector 2048, formatted by
/// `fatfs`, holding `HELLO.TXT`.
fn fat_image(hello: &[u8]) -> Vec<u8> {
    let part_bytes = DISK_BYTES - PART_START * 512;
    let mut part = Cursor::new(vec![0u8; part_bytes]);
    fatfs::format_volume(&mut part, fatfs::FormatVolumeOptions::new()).unwrap();
    {
        let fs = fatfs::FileSystem::new(&mut part, fatfs::FsOptions::new()).unwrap();
        let mut f = fs.root_dir().create_file("HELLO.TXT").unwrap();
        f.write_all(hello).unwrap();
    }
    let mut image = vec![0u8; PART_START * 512];
    let entry = &mut image[446..462];
    entry[4] = 0x0E; // FAT16, LBA
    entry[8..12].copy_from_slice(&(PART_START as u32).to_le_bytes());
    entry[12..16].copy_from_slice(&((part_bytes / 512) as u32).to_le_bytes());
    image[510] = 0x55;
    image[511] = 0xAA;
    image.extend_from_slice(&part.into_inner());
    image
}

/// Read a file from a disk image with `fatfs`.
fn fatfs_read(image: &[u8], name: &str) -> Vec<u8> {
    let mut part = Cursor::new(image[PART_START * 512..].to_vec());
    let fs = fatfs::FileSystem::new(&mut part, fatfs::FsOptions::new()).unwrap();
    let mut f = fs.root_dir().open_file(name).unwrap();
    let mut out = Vec::new();
    f.read_to_end(&mut out).unwrap();
    out
}

/// embedded-sdmmc reads `HELLO.TXT` and writes `NEW.TXT` on `dev`.
fn fat_session<D: embedded_sdmmc::BlockDevice>(dev: D, hello: &[u8], new: &[u8]) -> D
where
    D::Error: core::fmt::Debug,
{
    let mgr = VolumeManager::new(dev, Clock);
    {
        let volume = mgr.open_volume(VolumeIdx(0)).unwrap();
        let root = volume.open_root_dir().unwrap();
        let f = root.open_file_in_dir("HELLO.TXT", Mode::ReadOnly).unwrap();
        assert_eq!(f.length() as usize, hello.len());
        let mut got = vec![0u8; hello.len() + 10];
        let mut n = 0;
        while !f.is_eof() {
            n += f.read(&mut got[n..]).unwrap();
        }
        assert_eq!(&got[..n], hello);
        f.close().unwrap();
        let f = root
            .open_file_in_dir("NEW.TXT", Mode::ReadWriteCreateOrTruncate)
            .unwrap();
        f.write(new).unwrap();
        f.close().unwrap();
        root.close().unwrap();
        volume.close().unwrap();
    }
    mgr.free().0
}

#[test]
fn fat_through_our_sd_driver() {
    let hello = pattern(1, 3000);
    let new = pattern(2, 20_000);
    let image = fat_image(&hello);
    let model = SdCardModel::new(ModelConfig::sdhc((DISK_BYTES / 512) as u64));
    for (i, sector) in image.chunks(512).enumerate() {
        if sector.iter().any(|&b| b != 0) {
            model.set_sector(i as u64, sector);
        }
    }
    let mut bus = SdSpi::new(model.clone(), CountingDelay::new(), SdConfig::default());
    bus.init().unwrap();
    let csd = bus.read_csd().unwrap();
    let card: SdCard<'_, _, _> = SdCard::from_csd(bus, &csd);
    let adapter = SdmmcDevice::new(card, leak(vec![0u8; 512]));
    assert_eq!(adapter.num_blocks().unwrap().0 as usize, DISK_BYTES / 512);
    let adapter = fat_session(adapter, &hello, &new);
    let (card, bounce) = adapter.into_inner();
    assert!(bounce.is_some());
    assert!(card.last_error().is_none());
    // Each embedded-sdmmc write call ended with a flush (CMD13 after the busy period).
    assert!(model.commands().iter().filter(|c| c.cmd == 13).count() >= 5);
    assert_eq!(model.violations(), Vec::<String>::new());
    let after = model.image();
    assert_eq!(fatfs_read(&after, "NEW.TXT"), new);
    assert_eq!(fatfs_read(&after, "HELLO.TXT"), hello);
}

#[test]
fn fat_through_a_disk_with_4096_byte_sectors() {
    let hello = pattern(3, 5000);
    let new = pattern(4, 9000);
    let mut storage = fat_image(&hello);
    let disk = RamDisk::new(&mut storage, 4096).unwrap();
    let adapter = SdmmcDevice::new(disk, leak(vec![0u8; 4096]));
    let adapter = fat_session(adapter, &hello, &new);
    let _ = adapter.into_inner();
    assert_eq!(fatfs_read(&storage, "NEW.TXT"), new);
    assert_eq!(fatfs_read(&storage, "HELLO.TXT"), hello);
}

#[test]
fn partial_sector_writes_keep_the_rest_of_the_sector() {
    let mut storage = pattern(9, 16 * 4096);
    let before = storage.clone();
    let disk = RamDisk::new(&mut storage, 4096).unwrap();
    let adapter = SdmmcDevice::new(disk, leak(vec![0u8; 4096]));
    // Three blocks from block 7: the end of sector 0 and the start of sector 1.
    let mut blocks = [Block::new(), Block::new(), Block::new()];
    for (i, b) in blocks.iter_mut().enumerate() {
        b.contents.fill(0xA0 + i as u8);
    }
    adapter.write(&blocks, BlockIdx(7)).unwrap();
    let mut back = [Block::new(), Block::new(), Block::new(), Block::new()];
    adapter.read(&mut back, BlockIdx(6)).unwrap();
    assert_eq!(back[0].contents[..], before[6 * 512..7 * 512]);
    for i in 0..3 {
        assert!(back[i + 1].contents.iter().all(|&b| b == 0xA0 + i as u8));
    }
    let _ = adapter.into_inner();
    assert_eq!(storage[..7 * 512], before[..7 * 512]);
    assert_eq!(storage[10 * 512..], before[10 * 512..]);
}

#[test]
fn a_bounce_buffer_shorter_than_a_sector_is_refused() {
    let mut storage = vec![0u8; 8 * 4096];
    let disk = RamDisk::new(&mut storage, 4096).unwrap();
    let adapter = SdmmcDevice::new(disk, leak(vec![0u8; 512]));
    let mut b = [Block::new()];
    assert_eq!(adapter.read(&mut b, BlockIdx(0)), Err(IoError::BadBuffer));
}

/// embedded-sdmmc's `SdCard` over our card model, as one of our block devices.
///
/// Their driver polls for "not busy" right after the Stop Tran token of a multiple-block write,
/// which the specification allows the card to answer with up to two more idle bytes before
/// it turns busy; our model uses that latest start, so it is set not to go busy after Stop Tran
/// here (their next command would otherwise be sent while the card is busy).
fn their_sdcard(
    sectors: u64,
) -> (
    SdCardModel,
    embedded_sdmmc::SdCard<SdCardModel, CountingDelay>,
) {
    let mut cfg = ModelConfig::sdhc(sectors);
    cfg.stop_busy = 0;
    let model = SdCardModel::new(cfg);
    let card = embedded_sdmmc::SdCard::new(model.clone(), CountingDelay::new());
    (model, card)
}

#[test]
fn their_sd_driver_passes_our_conformance_suite() {
    let (model, card) = their_sdcard(8192);
    let mut dev: FromSdmmc<'_, _> = FromSdmmc::with_error_map(card, sdcard_error).unwrap();
    assert_eq!(dev.geometry().sector_count, 8192);
    let cfg = Config {
        poll_limit: 100_000,
        ..Config::default()
    };
    let scratch = leak(vec![0u8; conformance::scratch_len(512, &cfg)]);
    let report = conformance::run(&mut dev, scratch, &cfg);
    assert!(report.ok(), "{report}");
    // No FUA and no discard (their trait has neither) and not read-only: three checks
    // skipped. The fast path runs (their driver is synchronous).
    assert_eq!(report.skipped, 3, "{report}");
    assert!(model.stats().blocks_written > 50);
    assert_eq!(model.violations(), Vec::<String>::new());
}

#[test]
fn bonsaifs_on_their_sd_driver_survives_a_power_cut() {
    const SLOTS: usize = 32;
    let (model, card) = their_sdcard(16384);
    let dev: FromSdmmc<'_, _> = FromSdmmc::with_error_map(card, sdcard_error).unwrap();
    let mut mem = vec![0u8; memory_needed(512, 4096, SLOTS)];
    let mut fs: Fs<'_, _, SLOTS> = Fs::format(dev, &mut mem, FormatOptions::default()).unwrap();
    let fd = fs
        .open(
            "/data.bin",
            OpenFlags::READ | OpenFlags::WRITE | OpenFlags::CREATE,
        )
        .unwrap();
    let data = pattern(5, 50_000);
    let mut n = 0;
    while n < data.len() {
        n += fs.write(fd, &data[n..]).unwrap();
    }
    fs.fsync(fd).unwrap();
    drop(fs.into_device());
    model.power_cycle();

    let card = embedded_sdmmc::SdCard::new(model.clone(), CountingDelay::new());
    let dev: FromSdmmc<'_, _> = FromSdmmc::with_error_map(card, sdcard_error).unwrap();
    let mut mem2 = vec![0u8; memory_needed(512, 4096, SLOTS)];
    let mut fs: Fs<'_, _, SLOTS> = Fs::mount(dev, &mut mem2).unwrap();
    let fd = fs.open("/data.bin", OpenFlags::READ).unwrap();
    let mut back = vec![0u8; data.len()];
    let mut got = 0;
    while got < back.len() {
        let k = fs.read(fd, &mut back[got..]).unwrap();
        assert!(k > 0);
        got += k;
    }
    assert_eq!(back, data);
    let mut scratch = vec![0u8; fs.fsck_scratch_len()];
    assert!(fs.fsck(&mut scratch).unwrap().is_clean());
    assert_eq!(model.violations(), Vec::<String>::new());
}

#[test]
fn both_adapters_compose_and_pass_the_suite() {
    let model = SdCardModel::new(ModelConfig::sdhc(8192));
    let mut bus = SdSpi::new(model.clone(), CountingDelay::new(), SdConfig::default());
    bus.init().unwrap();
    let ours: SdCard<'_, _, _> = SdCard::with_sector_count(bus, 8192);
    let theirs = SdmmcDevice::new(ours, leak(vec![0u8; 512]));
    let mut back: FromSdmmc<'_, _> = FromSdmmc::with_error_map(theirs, |e: &IoError| *e).unwrap();
    let cfg = Config {
        poll_limit: 100_000,
        ..Config::default()
    };
    let scratch = leak(vec![0u8; conformance::scratch_len(512, &cfg)]);
    let report = conformance::run(&mut back, scratch, &cfg);
    assert!(report.ok(), "{report}");
    assert_eq!(model.violations(), Vec::<String>::new());
}

#[test]
fn errors_keep_their_meaning_across_the_adapters() {
    // Their driver, our model: a corrupted block read is a CRC error for bonsaifs, and their
    // detailed error stays readable.
    let (model, card) = their_sdcard(8192);
    let mut dev: FromSdmmc<'_, _> = FromSdmmc::with_error_map(card, sdcard_error).unwrap();
    model.inject(Fault::ReadCrc);
    let c = read_blocks(&mut dev, 3, leak(vec![0u8; 512]));
    assert_eq!(c.result, Err(IoError::Crc));
    assert!(matches!(
        dev.last_error(),
        Some(embedded_sdmmc::SdCardError::CrcError(..))
    ));
    assert!(write_blocks(&mut dev, 3, leak(pattern(1, 512)), false)
        .result
        .is_ok());

    // Our driver under their trait: the same fault reaches embedded-sdmmc as IoError::Crc.
    let model = SdCardModel::new(ModelConfig::sdhc(8192));
    let mut bus = SdSpi::new(model.clone(), CountingDelay::new(), SdConfig::default());
    bus.init().unwrap();
    let ours: SdCard<'_, _, _> = SdCard::with_sector_count(bus, 8192);
    let adapter = SdmmcDevice::new(ours, leak(vec![0u8; 512]));
    model.inject(Fault::ReadCrc);
    let mut b = [Block::new()];
    assert_eq!(adapter.read(&mut b, BlockIdx(0)), Err(IoError::Crc));
    assert!(adapter.read(&mut b, BlockIdx(0)).is_ok());
    assert!(matches!(
        adapter.with_device(|d| d.last_error()),
        Some(bonsaifs_hal::sd::SdError::ReadCrc { .. })
    ));
}
