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

/// One open file.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Open {
    pub ino: u64,
    pub pos: u64,
    pub flags: OpenFlags,
    gen: u16,
}

/// A fixed table of `H` open files.
pub(crate) struct Handles<const H: usize> {
    slots: [Option<Open>; H],
    gens: [u16; H],
}

impl<const H: usize> Handles<H> {
    pub fn new() -> Self {
        Handles {
            slots: [None; H],
            gens: [0; H],
        }
    }

    pub fn open(&mut self, ino: u64, flags: OpenFlags) -> Result<Fd> {
        let free = self.slots.iter_mut().zip(self.gens.iter_mut()).enumerate();
        for (idx, (s, g)) in free {
            if s.is_none() {
                let gen = g.wrapping_add(1);
                *g = gen;
                *s = Some(Open {
                    ino,
                    pos: 0,
                    flags,
                    gen,
                });
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
            Some(Some(o)) if o.gen == fd.gen => Ok(*o),
            _ => Err(Error::BadHandle),
        }
    }

    pub fn get_mut(&mut self, fd: Fd) -> Result<&mut Open> {
        match self.slots.get_mut(usize::from(fd.idx)) {
            Some(Some(o)) if o.gen == fd.gen => Ok(o),
            _ => Err(Error::BadHandle),
        }
    }

    pub fn close(&mut self, fd: Fd) -> Result<()> {
        self.get(fd)?;
        if let Some(s) = self.slots.get_mut(usize::from(fd.idx)) {
            *s = None;
        }
        Ok(())
    }

    /// Number of open handles.
    pub fn count(&self) -> usize {
        self.slots.iter().flatten().count()
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
