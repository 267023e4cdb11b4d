//! Opening images: `IMAGE[:PATH]` arguments, the superblock read that sizes the memory, and
//! mounting a volume or filesystem for the length of one command.

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use bonsaifs::fs::Fs;
use bonsaifs::volume::{memory_needed, Volume};
use bonsaifs::wire::{Superblock, MAX_BLOCK_SIZE, SUPERBLOCK_LEN, SUPERBLOCK_OFFSETS};
use bonsaifs_hal::image_file::ImageFile;

use crate::error::{CliError, CliResult};
use crate::units::unix_now;

/// Sector size the CLI drives images with (superblocks sit at 512-byte-aligned offsets, and
/// buffered block devices accept 512-byte I/O whatever their logical sector size).
pub const SECTOR_SIZE: u32 = 512;
/// Block cache slots. Lookups scan the slots, so more is not always faster; 64 slots keep a
/// whole tree path plus a good run of file data resident.
pub const SLOTS: usize = 64;
/// Open-file handles (the CLI has at most one file open at a time).
pub const HANDLES: usize = 4;

/// A filesystem mounted from an image by the CLI.
pub type ImageFs<'b> = Fs<'b, ImageFile<'b>, SLOTS, HANDLES>;
/// A volume (trees and space, no namespace) mounted from an image by the CLI.
pub type ImageVolume<'b> = Volume<'b, ImageFile<'b>, SLOTS>;

/// An `IMAGE[:PATH]` argument: a host image file (or block device) and optionally a path
/// inside the filesystem on it.
///
/// The argument is split at its first `:`, so filesystem paths may contain colons; an
/// argument that names an existing host file as a whole is taken as an image without a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImagePath {
    /// The host image file or block device.
    pub image: PathBuf,
    /// The path inside the filesystem, normalised to an absolute path (`None`: not given).
    pub path: Option<String>,
}

impl ImagePath {
    /// Parse `IMAGE[:PATH]` (a clap value parser).
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("expected IMAGE or IMAGE:PATH".into());
        }
        if Path::new(s).exists() {
            return Ok(ImagePath {
                image: s.into(),
                path: None,
            });
        }
        match s.split_once(':') {
            Some(("", _)) => Err(format!("'{s}': the image part before ':' is empty")),
            Some((image, path)) => Ok(ImagePath {
                image: image.into(),
                path: Some(normalize(path)),
            }),
            None => Ok(ImagePath {
                image: s.into(),
                path: None,
            }),
        }
    }

    /// The filesystem path, `/` when none was given.
    pub fn path_or_root(&self) -> String {
        self.path.clone().unwrap_or_else(|| "/".to_string())
    }

    /// The filesystem path, or a usage error naming `what` the command needs it for.
    pub fn required_path(&self, what: &str) -> CliResult<String> {
        self.path.clone().ok_or_else(|| {
            CliError::usage(format!(
                "{}: {what} needs a path inside the image (IMAGE:PATH)",
                self.image.display()
            ))
        })
    }

    /// `IMAGE:PATH` for messages.
    pub fn at<'a>(&'a self, path: &'a str) -> Located<'a> {
        Located { image: self, path }
    }
}

/// `IMAGE:PATH`, displayed for messages.
pub struct Located<'a> {
    image: &'a ImagePath,
    path: &'a str,
}

impl fmt::Display for Located<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.image.image.display(), self.path)
    }
}

/// Normalise a filesystem path: absolute, no empty or `.` components, `..` resolved (the
/// filesystem has no symbolic links, so resolving `..` by text is exact).
pub fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

/// `dir/name` for a normalised directory path.
pub fn join(dir: &str, name: &str) -> String {
    if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// The last component of a normalised path (`None` for the root).
pub fn file_name(path: &str) -> Option<&str> {
    path.rsplit('/').next().filter(|n| !n.is_empty())
}

/// How a command uses the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Reads only: the image is opened read-only and never written.
    ReadOnly,
    /// Changes: the image is opened read-write and checkpointed (unmounted) at the end.
    ReadWrite,
}

/// Open `image` as a block device.
pub fn open_device<'b>(image: &Path, access: Access) -> CliResult<ImageFile<'b>> {
    let meta = std::fs::metadata(image).map_err(|e| CliError::io(image, &e))?;
    if meta.is_dir() {
        return Err(CliError::usage(format!(
            "{}: is a directory, not an image",
            image.display()
        )));
    }
    let dev = match access {
        Access::ReadOnly => ImageFile::open_read_only(image, SECTOR_SIZE),
        Access::ReadWrite => ImageFile::open(image, SECTOR_SIZE),
    };
    dev.map_err(|e| CliError::io(image, &e))
}

/// Both superblock copies of `image`, each parsed and verified (or the reason it is not valid).
pub fn read_superblocks(image: &Path) -> CliResult<[bonsaifs::Result<Superblock>; 2]> {
    let mut f = File::open(image).map_err(|e| CliError::io(image, &e))?;
    let mut head = Vec::new();
    let region = SUPERBLOCK_OFFSETS[1] + SUPERBLOCK_LEN as u64;
    f.by_ref()
        .take(region)
        .read_to_end(&mut head)
        .map_err(|e| CliError::io(image, &e))?;
    Ok([0, 1].map(|i| {
        let off = SUPERBLOCK_OFFSETS[i] as usize;
        Superblock::parse(head.get(off..).unwrap_or(&[]), i as u64)
    }))
}

/// The newest valid superblock copy, if any.
pub fn newest(copies: &[bonsaifs::Result<Superblock>; 2]) -> Option<&Superblock> {
    copies.iter().flatten().max_by_key(|sb| sb.generation())
}

/// Memory to mount `image` with: sized for its block size, or the largest one when no
/// superblock is valid (mount then fails and says why).
///
/// An image where neither superblock copy even starts with the magic (a blank or foreign
/// image, or a file too short to hold one) is refused here with a plain "no bonsaifs volume".
pub fn mount_memory(image: &Path) -> CliResult<Vec<u8>> {
    let copies = read_superblocks(image)?;
    if copies
        .iter()
        .all(|c| matches!(c, Err(bonsaifs::Error::NotFormatted)))
    {
        return Err(mount_error(image, bonsaifs::Error::NotFormatted));
    }
    let bs = newest(&copies).map_or(MAX_BLOCK_SIZE, |sb| sb.block_size.get());
    Ok(vec![
        0u8;
        memory_needed(SECTOR_SIZE as usize, bs as usize, SLOTS)
    ])
}

/// An error from mounting `image`: not a volume (or an unknown format) exits with 2, damage
/// with 1.
pub fn mount_error(image: &Path, err: bonsaifs::Error) -> CliError {
    let e = CliError::fs(format!("cannot mount {}", image.display()), err);
    match err {
        bonsaifs::Error::NotFormatted | bonsaifs::Error::Unsupported => {
            CliError::usage(e.to_string())
        }
        // The error names no block; fsck does (bad nodes, damaged superblock copies).
        bonsaifs::Error::Corrupt => CliError::failure(format!(
            "{e} (`bonsaifs fsck {}` shows where)",
            image.display()
        )),
        _ => e,
    }
}

/// Mount the filesystem on `image`, run `f` on it, then, for [`Access::ReadWrite`], unmount it
/// (a checkpoint: everything `f` changed is durable when this returns `Ok`).
///
/// If `f` fails, what it changed before failing is still made durable (like `cp -r` leaving
/// the files it copied), and `f`'s error is returned.
pub fn with_fs<T>(
    image: &Path,
    access: Access,
    f: impl for<'b> FnOnce(&mut ImageFs<'b>) -> CliResult<T>,
) -> CliResult<T> {
    let mut mem = mount_memory(image)?;
    let dev = open_device(image, access)?;
    let mut fs = ImageFs::mount(dev, &mut mem).map_err(|e| mount_error(image, e))?;
    if access == Access::ReadOnly {
        return f(&mut fs);
    }
    fs.set_clock(unix_now);
    let r = f(&mut fs);
    let u = fs.unmount();
    match (r, u) {
        (Ok(v), Ok(_)) => Ok(v),
        (Ok(_), Err(e)) => Err(CliError::fs(
            format!("{}: cannot write the changes", image.display()),
            e,
        )),
        (Err(e), _) => Err(e),
    }
}

/// Mount only the volume on `image` (trees and space, without checking the root directory),
/// read-only, and run `f` on it: for `dump` and for `fsck` on a filesystem too damaged to
/// mount.
pub fn with_volume<T>(
    image: &Path,
    f: impl for<'b> FnOnce(&mut ImageVolume<'b>) -> CliResult<T>,
) -> CliResult<T> {
    let mut mem = mount_memory(image)?;
    let dev = open_device(image, Access::ReadOnly)?;
    let mut vol = ImageVolume::mount(dev, &mut mem).map_err(|e| mount_error(image, e))?;
    f(&mut vol)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_image_paths() {
        let p = ImagePath::parse("no-such.img:/a//b/./c/").unwrap();
        assert_eq!(p.image, PathBuf::from("no-such.img"));
        assert_eq!(p.path.as_deref(), Some("/a/b/c"));
        let p = ImagePath::parse("no-such.img:x:y").unwrap();
        assert_eq!(p.path.as_deref(), Some("/x:y"));
        let p = ImagePath::parse("no-such.img").unwrap();
        assert_eq!(p.path, None);
        assert_eq!(p.path_or_root(), "/");
        assert!(ImagePath::parse(":/a").is_err());
        assert!(ImagePath::parse("").is_err());
    }

    #[test]
    fn paths() {
        assert_eq!(normalize(""), "/");
        assert_eq!(normalize("a/../../b/"), "/b");
        assert_eq!(join("/", "a"), "/a");
        assert_eq!(join("/a", "b"), "/a/b");
        assert_eq!(file_name("/a/b"), Some("b"));
        assert_eq!(file_name("/"), None);
    }
}
