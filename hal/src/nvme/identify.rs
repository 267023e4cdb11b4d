//! What the Identify command returns: the controller and namespace data structures, reduced to
//! the fields the driver uses (NVMe base specification, "Identify Controller Data Structure";
//! NVM command set specification, "Identify Namespace Data Structure").

/// Bytes of an Identify data structure.
pub const IDENTIFY_LEN: usize = 4096;

fn le16(d: &[u8], at: usize) -> u16 {
    match d.get(at..at + 2) {
        Some(&[a, b]) => u16::from_le_bytes([a, b]),
        _ => 0,
    }
}

fn le32(d: &[u8], at: usize) -> u32 {
    match d.get(at..at + 4) {
        Some(&[a, b, c, e]) => u32::from_le_bytes([a, b, c, e]),
        _ => 0,
    }
}

fn le64(d: &[u8], at: usize) -> u64 {
    u64::from(le32(d, at)) | (u64::from(le32(d, at + 4)) << 32)
}

fn byte(d: &[u8], at: usize) -> u8 {
    d.get(at).copied().unwrap_or(0)
}

/// An ASCII field of the Identify data (space-padded), copied out.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Text<const N: usize>([u8; N]);

impl<const N: usize> Text<N> {
    fn from(d: &[u8], at: usize) -> Self {
        let mut t = [b' '; N];
        if let Some(src) = d.get(at..at + N) {
            t.copy_from_slice(src);
        }
        Text(t)
    }

    /// The text without trailing spaces (`"?"` if it is not ASCII).
    pub fn as_str(&self) -> &str {
        let end = self
            .0
            .iter()
            .rposition(|&c| c != b' ' && c != 0)
            .map_or(0, |i| i + 1);
        match self.0.get(..end) {
            Some(s) if s.is_ascii() => core::str::from_utf8(s).unwrap_or("?"),
            _ => "?",
        }
    }
}

impl<const N: usize> core::fmt::Debug for Text<N> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl<const N: usize> core::fmt::Display for Text<N> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The controller's identity and the capabilities the driver relies on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControllerInfo {
    /// PCI vendor ID.
    pub vendor: u16,
    /// Serial number.
    pub serial: Text<20>,
    /// Model number.
    pub model: Text<40>,
    /// Firmware revision.
    pub firmware: Text<8>,
    /// Maximum Data Transfer Size as a power of two in units of the minimum page size
    /// (0: no limit).
    pub mdts: u8,
    /// Number of namespaces (the highest valid NSID).
    pub namespaces: u32,
    /// Optional NVM Command Support bits (bit 2: Dataset Management).
    pub oncs: u16,
    /// Volatile Write Cache bits (bit 0: a volatile write cache is present).
    pub vwc: u8,
    /// Atomic Write Unit Power Fail, in blocks, zero-based.
    pub awupf: u16,
    /// Required / maximum submission queue entry size, as powers of two (low / high nibble).
    pub sqes: u8,
    /// Required / maximum completion queue entry size, as powers of two (low / high nibble).
    pub cqes: u8,
}

impl ControllerInfo {
    /// Parses an Identify Controller data structure.
    pub fn parse(d: &[u8]) -> Self {
        ControllerInfo {
            vendor: le16(d, 0),
            serial: Text::from(d, 4),
            model: Text::from(d, 24),
            firmware: Text::from(d, 64),
            mdts: byte(d, 77),
            sqes: byte(d, 512),
            cqes: byte(d, 513),
            namespaces: le32(d, 516),
            oncs: le16(d, 520),
            vwc: byte(d, 525),
            awupf: le16(d, 528),
        }
    }

    /// A volatile write cache is present (flushes matter).
    pub fn volatile_cache(&self) -> bool {
        self.vwc & 1 == 1
    }

    /// Dataset Management (deallocate) is supported.
    pub fn supports_dsm(&self) -> bool {
        self.oncs & (1 << 2) != 0
    }
}

/// A namespace's size and block format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NamespaceInfo {
    /// Namespace size in logical blocks.
    pub size: u64,
    /// Logical block size as a power of two.
    pub lba_shift: u8,
    /// Metadata bytes per block in the formatted LBA format.
    pub metadata: u16,
    /// Atomic write unit power fail for this namespace (zero-based), if it overrides the
    /// controller's.
    pub nawupf: Option<u16>,
    /// The namespace is write protected.
    pub write_protected: bool,
}

impl NamespaceInfo {
    /// Parses an Identify Namespace data structure.
    pub fn parse(d: &[u8]) -> Self {
        let nsfeat = byte(d, 24);
        let nlbaf = byte(d, 25);
        let flbas = byte(d, 26);
        // Format index: bits 3:0, extended by bits 6:5 when more than 16 formats exist.
        let mut index = usize::from(flbas & 0xF);
        if nlbaf >= 16 {
            index |= usize::from((flbas >> 5) & 0x3) << 4;
        }
        let lbaf = le32(d, 128 + 4 * index);
        NamespaceInfo {
            size: le64(d, 0),
            lba_shift: (lbaf >> 16) as u8,
            metadata: lbaf as u16,
            nawupf: if nsfeat & (1 << 1) != 0 {
                Some(le16(d, 36))
            } else {
                None
            },
            write_protected: byte(d, 99) & 1 == 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controller_fields() {
        let mut d = [0u8; IDENTIFY_LEN];
        d[0..2].copy_from_slice(&0x1b36u16.to_le_bytes());
        d[4..24].copy_from_slice(b"bonsai0             ");
        d[24..64].copy_from_slice(b"QEMU NVMe Ctrl                          ");
        d[64..72].copy_from_slice(b"10.0.2  ");
        d[77] = 7;
        d[512] = 0x66;
        d[513] = 0x44;
        d[516..520].copy_from_slice(&256u32.to_le_bytes());
        d[520..522].copy_from_slice(&0x5Du16.to_le_bytes());
        d[525] = 0x07;
        let c = ControllerInfo::parse(&d);
        assert_eq!(c.vendor, 0x1b36);
        assert_eq!(c.serial.as_str(), "bonsai0");
        assert_eq!(c.model.as_str(), "QEMU NVMe Ctrl");
        assert_eq!(c.firmware.as_str(), "10.0.2");
        assert_eq!((c.mdts, c.namespaces, c.sqes, c.cqes), (7, 256, 0x66, 0x44));
        assert!(c.volatile_cache());
        assert!(c.supports_dsm());
        assert_eq!(c.awupf, 0);
        d[525] = 0;
        d[520] = 0;
        let c = ControllerInfo::parse(&d);
        assert!(!c.volatile_cache());
        assert!(!c.supports_dsm());
        // A short buffer parses to zeros rather than panicking.
        assert_eq!(ControllerInfo::parse(&d[..10]).mdts, 0);
    }

    #[test]
    fn namespace_format() {
        let mut d = [0u8; IDENTIFY_LEN];
        d[0..8].copy_from_slice(&2048u64.to_le_bytes());
        d[25] = 1; // two formats
        d[26] = 1; // using format 1
        d[128..132].copy_from_slice(&(9u32 << 16).to_le_bytes());
        d[132..136].copy_from_slice(&((12u32 << 16) | 8).to_le_bytes());
        let n = NamespaceInfo::parse(&d);
        assert_eq!((n.size, n.lba_shift, n.metadata), (2048, 12, 8));
        assert_eq!(n.nawupf, None);
        assert!(!n.write_protected);
        d[26] = 0;
        d[24] = 2;
        d[36..38].copy_from_slice(&7u16.to_le_bytes());
        d[99] = 1;
        let n = NamespaceInfo::parse(&d);
        assert_eq!((n.lba_shift, n.metadata, n.nawupf), (9, 0, Some(7)));
        assert!(n.write_protected);
    }
}
