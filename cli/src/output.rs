//! Buffered standard output that turns a closed pipe into a quiet stop.

use std::fmt;
use std::io::{self, BufWriter, Stdout, Write};
use std::path::Path;

use crate::error::{CliError, CliResult};

/// Buffered stdout; `writeln!(out, …)` returns a [`CliResult`].
pub struct Out {
    w: BufWriter<Stdout>,
}

impl Default for Out {
    fn default() -> Self {
        Self::new()
    }
}

impl Out {
    /// Buffered standard output.
    pub fn new() -> Self {
        Out {
            w: BufWriter::with_capacity(64 << 10, io::stdout()),
        }
    }

    /// Formatted text (what `write!` / `writeln!` call).
    pub fn write_fmt(&mut self, args: fmt::Arguments<'_>) -> CliResult<()> {
        self.w.write_fmt(args).map_err(stdout_error)
    }

    /// Raw bytes.
    pub fn write_bytes(&mut self, bytes: &[u8]) -> CliResult<()> {
        self.w.write_all(bytes).map_err(stdout_error)
    }

    /// Flush everything written.
    pub fn finish(mut self) -> CliResult<()> {
        self.w.flush().map_err(stdout_error)
    }
}

fn stdout_error(e: io::Error) -> CliError {
    if e.kind() == io::ErrorKind::BrokenPipe {
        CliError::broken_pipe()
    } else {
        CliError::io(Path::new("standard output"), &e)
    }
}
