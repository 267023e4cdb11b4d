//! Driver settings: CRC checking and the bounds on every wait.

/// Settings of the SD card driver.
///
/// Every wait is a loop that clocks one byte out of the card, and if the card is not ready
/// yet, sleeps [`poll_interval_us`](SdConfig::poll_interval_us) through `DelayNs` before the
/// next try; a timeout is the number of such polls that fit in its duration. The time spent
/// clocking bytes is not counted, so real waits are somewhat longer than configured — never
/// shorter, and never unbounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SdConfig {
    /// Turn CRC checking on (CMD59) during initialisation, so that the card checks the CRC7 of
    /// every command and the CRC16 of every written block, and the driver checks the CRC16 of
    /// every block it reads. On by default; without it a noisy link corrupts data silently.
    pub crc: bool,
    /// Sleep between two polls of a card that is not ready, in microseconds (default 10).
    pub poll_interval_us: u32,
    /// How long the card may stay in the idle state while ACMD41 is repeated (default 1 s;
    /// the SD specification allows cards up to 1 s to initialise).
    pub init_timeout_ms: u32,
    /// Sleep between two ACMD41 tries, in microseconds (default 1 ms).
    pub init_poll_interval_us: u32,
    /// How long to wait for the first byte of a data block (default 100 ms, the read access
    /// limit of the SD specification).
    pub read_timeout_ms: u32,
    /// How long the card may stay busy programming a block, or before it accepts the next
    /// command (default 500 ms, the write limit of the SD specification for SDXC).
    pub write_timeout_ms: u32,
    /// How long an erase (discard) may keep the card busy (default 10 s).
    pub erase_timeout_ms: u32,
}

impl Default for SdConfig {
    fn default() -> Self {
        SdConfig {
            crc: true,
            poll_interval_us: 10,
            init_timeout_ms: 1000,
            init_poll_interval_us: 1000,
            read_timeout_ms: 100,
            write_timeout_ms: 500,
            erase_timeout_ms: 10_000,
        }
    }
}

impl SdConfig {
    /// Number of polls that fit in `timeout_ms` at `interval_us` apart (at least one).
    pub(crate) fn polls(timeout_ms: u32, interval_us: u32) -> u32 {
        let polls = u64::from(timeout_ms) * 1000 / u64::from(interval_us.max(1));
        u32::try_from(polls).unwrap_or(u32::MAX).max(1)
    }
}
