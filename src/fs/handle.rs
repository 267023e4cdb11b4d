//! Open-file handles: flags, the fixed-capacity handle table, and the borrowed [`File`] that
//! implements `embedded_io::{Read, Write, Seek}`.

use bitflags::bitflags;

use crate::error::{Error, Result};

bitflags! {
    /// How [`Fs::open`](super::Fs::open) opens a file.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct OpenFlags: u8 {
        /// Reading allowed.
        const READ = 1;
        /// Writing allowed.
        const WRITE = 2;
        /// Create the file if it does not exist.
        const CREATE = 4;
        /// With `CREATE`: fail with `AlreadyExists` if it exists.
        const EXCL = 8;
        /// Truncate to zero length on open (needs `WRITE`).
        const TRUNC = 16;
        /// Every write goes to the end of the file.
        const APPEND = 32;
    }
}

#[cfg(feature = "defmt")]
impl defmt::Format for OpenFlags {
    fn format(&self, f: defmt::Formatter<'_>) {
        defmt::write!(f, "OpenFlags({=u8:#x})", self.bits())
    }
}

/// A handle to an open file: an index into the handle table plus a generation, so a handle
/// kept after `close` is refused instead of reaching another file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Fd {
    idx: u16,
    gen: u16,
}

/// One entry of the handle table: an open file while `live`. The generation stays when the
/// entry is closed, so the next open of it hands out a new one.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Open {
    pub ino: u64,
    pub pos: u64,
    pub flags: OpenFlags,
    gen: u16,
    live: bool,
}

/// A fixed table of `H` open files.
pub(crate) struct Handles<const H: usize> {
    slots: [Open; H],
}

impl<const H: usize> Handles<H> {
    pub fn new() -> Self {
        Handles {
            slots: [Open {
                ino: 0,
                pos: 0,
                flags: OpenFlags::empty(),
                gen: 0,
                live: false,
            }; H],
        }
    }

    pub fn open(&mut self, ino: u64, flags: OpenFlags) -> Result<Fd> {
        for (idx, s) in self.slots.iter_mut().enumerate() {
            if !s.live {
                let gen = s.gen.wrapping_add(1);
                *s = Open {
                    ino,
                    pos: 0,
                    flags,
                    gen,
                    live: true,
                };
                return Ok(Fd {
                    idx: idx as u16,
                    gen,
                });
            }
        }
        Err(Error::TooManyOpenFiles)
    }

    pub fn get(&self, fd: Fd) -> Result<Open> {
        match self.slots.get(usize::from(fd.idx)) {
            Some(o) if o.live && o.gen == fd.gen => Ok(*o),
            _ => Err(Error::BadHandle),
        }
    }

    pub fn get_mut(&mut self, fd: Fd) -> Result<&mut Open> {
        match self.slots.get_mut(usize::from(fd.idx)) {
            Some(o) if o.live && o.gen == fd.gen => Ok(o),
            _ => Err(Error::BadHandle),
        }
    }

    pub fn close(&mut self, fd: Fd) -> Result<()> {
        self.get_mut(fd)?.live = false;
        Ok(())
    }

    /// Number of open handles.
    pub fn count(&self) -> usize {
        self.slots.iter().filter(|s| s.live).count()
    }
}

impl embedded_io::Error for Error {
    fn kind(&self) -> embedded_io::ErrorKind {
        use embedded_io::ErrorKind as K;
        match self {
            Error::NotFound => K::NotFound,
            Error::AlreadyExists => K::AlreadyExists,
            Error::ReadOnly => K::PermissionDenied,
            Error::NoSpace => K::OutOfMemory,
            Error::InvalidArgument | Error::InvalidPath | Error::NameTooLong | Error::BadHandle => {
                K::InvalidInput
            }
            Error::Corrupt => K::InvalidData,
            Error::Unsupported => K::Unsupported,
            Error::WouldBlock => K::Interrupted,
            _ => K::Other,
        }
    }
}
