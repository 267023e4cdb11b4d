//! The one error type of the filesystem, and the device error it wraps.
//!
//! Every variant is something a caller can act on: retry later (`WouldBlock`), free space
//! (`NoSpace`), fix the path (`NotFound`, `InvalidPath`, …), or give up on the volume
//! (`Corrupt`, `Io`). Nothing here carries heap data, so errors are `Copy` and cheap to return
//! from firmware.

/// What a device reported for a failed request.
///
/// Drivers map their own status codes onto these; the filesystem never retries on its own,
/// it fails the operation and keeps the volume consistent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum IoError {
    /// The request addressed sectors beyond the end of the device.
    OutOfRange,
    /// The buffer length is not a whole number of sectors, or is empty.
    BadBuffer,
    /// The device refuses writes.
    ReadOnly,
    /// The request kind is not supported by this device (e.g. FUA or discard).
    Unsupported,
    /// The medium reported an unrecoverable error.
    Media,
    /// A transfer checksum (e.g. SD card CRC) failed.
    Crc,
    /// The device did not answer in time.
    Timeout,
    /// Any other device status, with the driver's raw code.
    Device(u16),
}

/// Errors returned by the filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Error {
    /// A device request failed.
    Io(IoError),
    /// Bytes read from the device failed a check (magic, checksum, bounds, tree shape).
    ///
    /// It carries no block number on purpose: with a `u64` in it, `Error` is 16 bytes and
    /// every `Result` a function returns goes through memory, which cost the read-write
    /// firmware 8 KiB of Thumb code. The tree node that failed its checks is named by
    /// [`Volume::last_corrupt`](crate::volume::Volume::last_corrupt) (reach it through
    /// `Fs::volume`), and `fsck` lists every bad node.
    Corrupt,
    /// The volume has no free block left for this operation (or, after 2^38 - 1 checkpoints,
    /// no generation left for another: see SPEC.md, "Superblock").
    NoSpace,
    /// The operation cannot start without waiting for I/O and `NOWAIT` was given.
    WouldBlock,
    /// Every cache slot is pinned or in flight; give the cache more slots.
    CacheFull,
    /// The key or path does not exist.
    NotFound,
    /// A path component that must be a directory is not one.
    NotADirectory,
    /// The operation needs a file but the path names a directory.
    IsADirectory,
    /// `rmdir` (or a rename over it) of a directory that still has entries.
    DirectoryNotEmpty,
    /// A name is longer than 255 bytes.
    NameTooLong,
    /// A path is empty, has an empty, `.` or `..` last component where a name is needed,
    /// contains NUL, or would move a directory into itself.
    InvalidPath,
    /// Every handle of the handle table is in use.
    TooManyOpenFiles,
    /// The handle is closed, stale, or lacks the access the call needs.
    BadHandle,
    /// The key or path exists already.
    AlreadyExists,
    /// A value or name is too large for the on-disk format.
    TooLarge,
    /// An argument is outside what the API or the format allows.
    InvalidArgument,
    /// The volume was mounted read-only, or turned read-only after an I/O error.
    ReadOnly,
    /// An I/O error stopped an operation after it had started changing the in-memory state.
    /// Rather than show that operation half done, the volume refuses every call until it is
    /// mounted again; mount recovers the durable state (journal included), which the error
    /// did not touch.
    ShutDown,
    /// The device does not hold a bonsaifs volume (no valid superblock).
    NotFormatted,
    /// The volume needs a feature this build does not know (incompat bits), or has more
    /// blocks than this build addresses ([`BlockNr`](crate::wire::BlockNr)).
    Unsupported,
}

impl From<IoError> for Error {
    fn from(e: IoError) -> Self {
        Error::Io(e)
    }
}

impl core::fmt::Display for IoError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            IoError::OutOfRange => f.write_str("request beyond the end of the device"),
            IoError::BadBuffer => f.write_str("buffer is not a whole number of sectors"),
            IoError::ReadOnly => f.write_str("device is read-only"),
            IoError::Unsupported => f.write_str("request not supported by the device"),
            IoError::Media => f.write_str("media error"),
            IoError::Crc => f.write_str("transfer checksum error"),
            IoError::Timeout => f.write_str("device timeout"),
            IoError::Device(c) => write!(f, "device status {c:#x}"),
        }
    }
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Error::Io(e) => write!(f, "I/O error: {e}"),
            Error::Corrupt => f.write_str("corrupt metadata"),
            Error::NoSpace => f.write_str("no space left on the volume"),
            Error::WouldBlock => f.write_str("operation would block"),
            Error::CacheFull => f.write_str("every cache slot is busy"),
            Error::NotFound => f.write_str("not found"),
            Error::NotADirectory => f.write_str("not a directory"),
            Error::IsADirectory => f.write_str("is a directory"),
            Error::DirectoryNotEmpty => f.write_str("directory not empty"),
            Error::NameTooLong => f.write_str("name longer than 255 bytes"),
            Error::InvalidPath => f.write_str("invalid path"),
            Error::TooManyOpenFiles => f.write_str("too many open files"),
            Error::BadHandle => f.write_str("bad file handle"),
            Error::AlreadyExists => f.write_str("already exists"),
            Error::TooLarge => f.write_str("too large for the on-disk format"),
            Error::InvalidArgument => f.write_str("invalid argument"),
            Error::ReadOnly => f.write_str("read-only volume"),
            Error::ShutDown => f.write_str("volume shut down after an I/O error: mount it again"),
            Error::NotFormatted => f.write_str("no bonsaifs volume on this device"),
            Error::Unsupported => f.write_str("volume uses features this build does not support"),
        }
    }
}

impl core::error::Error for IoError {}
impl core::error::Error for Error {}

/// Shorthand used across the crate.
pub type Result<T> = core::result::Result<T, Error>;
