//! The CLI's error: a message for people plus the exit code it maps to.
//!
//! Exit codes follow e2fsck's spirit: `1` means the operation was refused or found a problem
//! in the filesystem (a path that does not exist, a full volume, corruption), `2` means the
//! tool could not do its job at all (bad usage, the image cannot be opened or read).

use std::fmt;
use std::io;
use std::path::Path;

/// Exit code for a filesystem-level failure (and for `fsck`: errors found).
pub const EXIT_FAILURE: u8 = 1;
/// Exit code for usage errors and I/O errors on the image or host files.
pub const EXIT_USAGE_OR_IO: u8 = 2;

/// An error to print (`bonsaifs: <message>`) before exiting with [`CliError::code`].
#[derive(Debug)]
pub struct CliError {
    message: String,
    code: u8,
}

/// Shorthand for the CLI's results.
pub type CliResult<T> = Result<T, CliError>;

impl CliError {
    /// Bad command-line usage (exit 2).
    pub fn usage(message: impl Into<String>) -> Self {
        CliError {
            message: message.into(),
            code: EXIT_USAGE_OR_IO,
        }
    }

    /// A failure of the requested operation (exit 1).
    pub fn failure(message: impl Into<String>) -> Self {
        CliError {
            message: message.into(),
            code: EXIT_FAILURE,
        }
    }

    /// A host I/O error on `path` (exit 2).
    pub fn io(path: &Path, err: &io::Error) -> Self {
        CliError {
            message: format!("{}: {}", path.display(), io_message(err)),
            code: EXIT_USAGE_OR_IO,
        }
    }

    /// A filesystem error about `what` (usually `IMAGE:PATH`). Device errors exit with 2,
    /// everything else (not found, no space, corruption, …) with 1.
    pub fn fs(what: impl fmt::Display, err: bonsaifs::Error) -> Self {
        let code = match err {
            bonsaifs::Error::Io(_) => EXIT_USAGE_OR_IO,
            _ => EXIT_FAILURE,
        };
        CliError {
            message: format!("{what}: {err}"),
            code,
        }
    }

    /// Standard output was closed by the reader (`bonsaifs cat … | head`): stop quietly,
    /// exit 0, print nothing.
    pub fn broken_pipe() -> Self {
        CliError {
            message: String::new(),
            code: 0,
        }
    }

    /// Is there a message to print?
    pub fn is_silent(&self) -> bool {
        self.message.is_empty()
    }

    /// The process exit code.
    pub fn code(&self) -> u8 {
        self.code
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// `io::Error`'s message without the trailing "(os error N)".
fn io_message(err: &io::Error) -> String {
    let s = err.to_string();
    match s.rfind(" (os error ") {
        Some(i) if s.ends_with(')') => s[..i].to_string(),
        _ => s,
    }
}
