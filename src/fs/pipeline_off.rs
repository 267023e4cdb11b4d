//! The pipeline's place when the `nowait` feature is off: no write is ever queued, so the
//! hooks the blocking calls have into it (drive queued writes to their end, fail the waiting
//! tickets) have nothing to do. See `pipeline.rs` for the real one.

use super::Fs;
use crate::device::BlockDevice;
use crate::error::{Error, Result};

impl<'b, D: BlockDevice<'b>, const N: usize, const H: usize> Fs<'b, D, N, H> {
    /// Nothing is queued, so nothing waits for an error.
    pub(crate) fn fail_tickets(&mut self, _e: Error) {}

    /// Nothing is queued, so nothing is in flight past a blocking call.
    pub(crate) fn quiesce(&mut self) -> Result<()> {
        Ok(())
    }
}
