//! `mkfs`: format an image file or block device.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;

use bonsaifs::device::BlockDevice;
use bonsaifs::volume::{memory_needed, FormatOptions};
use bonsaifs::wire::MAX_BLOCK_SIZE;
use bonsaifs_hal::image_file::ImageFile;

use crate::error::{CliError, CliResult};
use crate::image::{ImageFs, SECTOR_SIZE, SLOTS};
use crate::units::{human_bytes, parse_size, unix_now};

/// Smallest block size the filesystem layer accepts (a 255-byte name must fit in a tree item).
const MIN_FS_BLOCK_SIZE: u64 = 2048;

/// Arguments of `mkfs`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Image file to create (or overwrite), or a block device to format.
    pub image: PathBuf,
    /// Image size, with an optional K/M/G/T suffix (binary units). Required for a new image
    /// file; omitted, an existing file or block device keeps its size.
    #[arg(short, long, value_parser = parse_size)]
    pub size: Option<u64>,
    /// Filesystem block size: a power of two from 2K to 32K.
    #[arg(short, long, default_value = "4096", value_parser = parse_size)]
    pub block_size: u64,
    /// Journal size: a block count (`256`) or a byte size with a suffix (`1M`). Default: 1/64
    /// of the volume, between 16 and 1024 blocks.
    #[arg(short, long, value_name = "N")]
    pub log_size: Option<String>,
}

/// Format the image; prints what was made.
pub fn run(args: &Args) -> CliResult<()> {
    let bs = args.block_size;
    if !bs.is_power_of_two() || !(MIN_FS_BLOCK_SIZE..=u64::from(MAX_BLOCK_SIZE)).contains(&bs) {
        return Err(CliError::usage(format!(
            "invalid block size {bs}: must be a power of two from {MIN_FS_BLOCK_SIZE} to {MAX_BLOCK_SIZE}"
        )));
    }
    let log_blocks = args
        .log_size
        .as_deref()
        .map(|s| parse_log_size(s, bs))
        .transpose()?;
    let dev = open_target(args)?;
    let bytes = dev.geometry().capacity();
    let opts = FormatOptions {
        block_size: bs as u32,
        log_blocks,
        uuid: random_uuid(),
    };
    let mut mem = vec![0u8; memory_needed(SECTOR_SIZE as usize, bs as usize, SLOTS)];
    let image = args.image.display();
    let fs = ImageFs::format(dev, &mut mem, opts).map_err(|e| match e {
        bonsaifs::Error::NoSpace => CliError::usage(format!(
            "{image}: {} is too small for a volume with these options",
            human_bytes(bytes)
        )),
        e => CliError::fs(format!("cannot format {image}"), e),
    })?;
    let st = fs.statfs();
    let sb = *fs.volume().superblock();
    fs.unmount()
        .map_err(|e| CliError::fs(format!("cannot format {image}"), e))?;
    println!(
        "formatted {image}: {}, {} blocks of {} bytes",
        human_bytes(st.total_blocks * u64::from(st.block_size)),
        st.total_blocks,
        st.block_size
    );
    println!(
        "  journal: {} blocks from block {}; data from block {}",
        sb.log_blocks.get(),
        sb.log_start.get(),
        sb.data_start.get()
    );
    println!(
        "  free: {} blocks ({})",
        st.free_blocks,
        human_bytes(st.free_blocks * u64::from(st.block_size))
    );
    println!("  uuid: {}", format_uuid(&sb.uuid));
    Ok(())
}

/// The journal size in blocks: a plain number is a block count, a number with a suffix a byte
/// size (rounded up to whole blocks).
fn parse_log_size(s: &str, block_size: u64) -> CliResult<u64> {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse()
            .map_err(|_| CliError::usage(format!("invalid --log-size '{s}'")));
    }
    let bytes = parse_size(s).map_err(|e| CliError::usage(format!("--log-size: {e}")))?;
    Ok(bytes.div_ceil(block_size))
}

/// Open (or create) the device to format.
fn open_target<'b>(args: &Args) -> CliResult<ImageFile<'b>> {
    let path = &args.image;
    let meta = std::fs::metadata(path).ok();
    let is_block_device = meta
        .as_ref()
        .is_some_and(|m| m.file_type().is_block_device());
    let r = match (args.size, &meta) {
        (Some(_), _) if is_block_device => {
            return Err(CliError::usage(format!(
                "{}: --size cannot be used on a block device (the whole device is formatted)",
                path.display()
            )))
        }
        (Some(size), _) => {
            if size == 0 || size % u64::from(SECTOR_SIZE) != 0 {
                return Err(CliError::usage(format!(
                    "invalid size {size}: must be a non-zero multiple of {SECTOR_SIZE} bytes"
                )));
            }
            ImageFile::create(path, size, SECTOR_SIZE)
        }
        (None, Some(m)) if m.is_dir() => {
            return Err(CliError::usage(format!(
                "{}: is a directory",
                path.display()
            )))
        }
        (None, Some(m)) if is_block_device || m.len() > 0 => ImageFile::open(path, SECTOR_SIZE),
        (None, _) => {
            return Err(CliError::usage(format!(
                "{}: --size is required to create a new image file",
                path.display()
            )))
        }
    };
    r.map_err(|e| CliError::io(path, &e))
}

/// A random version-4 UUID (from the standard library's randomly seeded hasher).
fn random_uuid() -> [u8; 16] {
    let mut out = [0u8; 16];
    for (i, chunk) in out.chunks_mut(8).enumerate() {
        let mut h = RandomState::new().build_hasher();
        h.write_u64(unix_now());
        h.write_usize(i);
        h.write_u32(std::process::id());
        chunk.copy_from_slice(&h.finish().to_le_bytes());
    }
    out[6] = (out[6] & 0x0f) | 0x40;
    out[8] = (out[8] & 0x3f) | 0x80;
    out
}

/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
pub fn format_uuid(u: &[u8; 16]) -> String {
    let hex: String = u.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}
