//! Submission and completion queue entries (NVMe base specification, "Submission Queue Entry",
//! "Completion Queue Entry"), the opcodes the driver sends, and the mapping of completion
//! status codes to [`IoError`]s.

use bonsaifs::device::IoError;

/// Admin command opcodes.
pub mod admin {
    /// Create I/O Submission Queue.
    pub const CREATE_SQ: u8 = 0x01;
    /// Create I/O Completion Queue.
    pub const CREATE_CQ: u8 = 0x05;
    /// Identify.
    pub const IDENTIFY: u8 = 0x06;
    /// Set Features.
    pub const SET_FEATURES: u8 = 0x09;
}

/// NVM command set I/O opcodes.
pub mod io {
    /// Flush.
    pub const FLUSH: u8 = 0x00;
    /// Write.
    pub const WRITE: u8 = 0x01;
    /// Read.
    pub const READ: u8 = 0x02;
    /// Dataset Management (deallocate = discard).
    pub const DSM: u8 = 0x09;
}

/// Identify CNS values.
pub mod cns {
    /// Identify Namespace (for the NSID in the command).
    pub const NAMESPACE: u32 = 0x00;
    /// Identify Controller.
    pub const CONTROLLER: u32 = 0x01;
    /// Active Namespace ID list.
    pub const ACTIVE_NAMESPACES: u32 = 0x02;
}

/// Feature identifier: Number of Queues.
pub const FEATURE_NUMBER_OF_QUEUES: u32 = 0x07;

/// Read / Write CDW12: Force Unit Access.
pub const RW_FUA: u32 = 1 << 30;
/// Dataset Management CDW11: Attribute – Deallocate.
pub const DSM_DEALLOCATE: u32 = 1 << 2;

/// A 64-byte submission queue entry, as sixteen little-endian dwords.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sqe(pub [u32; 16]);

impl Sqe {
    /// An entry with `opcode`, command identifier `cid` and namespace `nsid`; data pointers
    /// are PRPs (PSDT = 0), no fused operation.
    pub fn new(opcode: u8, cid: u16, nsid: u32) -> Self {
        let mut d = [0u32; 16];
        d[0] = u32::from(opcode) | (u32::from(cid) << 16);
        d[1] = nsid;
        Sqe(d)
    }

    /// Sets PRP entries 1 and 2.
    pub fn prp(mut self, prp1: u64, prp2: u64) -> Self {
        self.0[6] = prp1 as u32;
        self.0[7] = (prp1 >> 32) as u32;
        self.0[8] = prp2 as u32;
        self.0[9] = (prp2 >> 32) as u32;
        self
    }

    /// Sets command dword `n` (10..=15).
    pub fn cdw(mut self, n: usize, value: u32) -> Self {
        if let Some(d) = self.0.get_mut(n) {
            *d = value;
        }
        self
    }

    /// A Read or Write of `count` (1..=65536) blocks at `lba`.
    pub fn rw(opcode: u8, cid: u16, nsid: u32, lba: u64, count: u32, fua: bool) -> Self {
        let cdw12 = (count.saturating_sub(1) & 0xFFFF) | if fua { RW_FUA } else { 0 };
        Sqe::new(opcode, cid, nsid)
            .cdw(10, lba as u32)
            .cdw(11, (lba >> 32) as u32)
            .cdw(12, cdw12)
    }
}

/// A 16-byte completion queue entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cqe {
    /// Command-specific result (dword 0).
    pub result: u32,
    /// The submission queue head pointer when the entry was posted.
    pub sq_head: u16,
    /// The submission queue the command came from.
    pub sq_id: u16,
    /// The command identifier.
    pub cid: u16,
    /// The phase tag.
    pub phase: bool,
    /// The status field (15 bits: SC in 7:0, SCT in 10:8, CRD, More, DNR).
    pub status: u16,
}

impl Cqe {
    /// Decodes dwords 0, 2 and 3 of an entry.
    pub fn parse(dw0: u32, dw2: u32, dw3: u32) -> Self {
        Cqe {
            result: dw0,
            sq_head: dw2 as u16,
            sq_id: (dw2 >> 16) as u16,
            cid: dw3 as u16,
            phase: (dw3 >> 16) & 1 == 1,
            status: (dw3 >> 17) as u16,
        }
    }

    /// Status Code Type and Status Code, as `(sct << 8) | sc`: 0 is success.
    pub fn code(&self) -> u16 {
        self.status & 0x7FF
    }
}

/// Status code types.
mod sct {
    pub const GENERIC: u16 = 0;
    pub const COMMAND_SPECIFIC: u16 = 1;
    pub const MEDIA: u16 = 2;
}

/// Maps a completion's status code (`(sct << 8) | sc`, see [`Cqe::code`]) to the driver's
/// result. Codes without a closer [`IoError`] keep their raw value in [`IoError::Device`].
pub fn status_result(code: u16) -> Result<(), IoError> {
    let sct = code >> 8;
    let sc = code & 0xFF;
    match (sct, sc) {
        (_, _) if code == 0 => Ok(()),
        // LBA Out of Range; Capacity Exceeded.
        (sct::GENERIC, 0x80 | 0x81) => Err(IoError::OutOfRange),
        // Namespace is Write Protected.
        (sct::GENERIC, 0x20) => Err(IoError::ReadOnly),
        // Invalid Opcode: the controller does not implement the command.
        (sct::GENERIC, 0x01) => Err(IoError::Unsupported),
        // Data SGL / PRP Offset Invalid.
        (sct::GENERIC, 0x13) => Err(IoError::BadBuffer),
        // Attempted Write to Read Only Range.
        (sct::COMMAND_SPECIFIC, 0x82) => Err(IoError::ReadOnly),
        // End-to-end Guard / Application Tag / Reference Tag check errors.
        (sct::MEDIA, 0x82..=0x84) => Err(IoError::Crc),
        // Write Fault, Unrecovered Read Error, Compare Failure, Access Denied, ...
        (sct::MEDIA, _) => Err(IoError::Media),
        _ => Err(IoError::Device(code)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_encode_and_decode() {
        let s = Sqe::rw(io::WRITE, 0x1234, 1, 0x1_0000_0002, 8, true).prp(0x8000_1000, 0x8000_2000);
        assert_eq!(s.0[0], 0x1234_0001);
        assert_eq!(s.0[1], 1);
        assert_eq!(
            (s.0[6], s.0[7], s.0[8], s.0[9]),
            (0x8000_1000, 0, 0x8000_2000, 0)
        );
        assert_eq!((s.0[10], s.0[11]), (2, 1));
        assert_eq!(s.0[12], 7 | RW_FUA);
        let r = Sqe::rw(io::READ, 3, 1, 5, 65536, false);
        assert_eq!(r.0[12], 0xFFFF);
        // Phase 1, CID 0x0203, SCT 2 / SC 0x81 (unrecovered read error), DNR set.
        let dw3 = 0x0203 | (1 << 16) | ((0x281u32 | (1 << 14)) << 17);
        let c = Cqe::parse(7, (1 << 16) | 9, dw3);
        assert_eq!((c.result, c.sq_head, c.sq_id, c.cid), (7, 9, 1, 0x0203));
        assert!(c.phase);
        assert_eq!(c.code(), 0x281);
        assert_eq!(status_result(c.code()), Err(IoError::Media));
    }

    #[test]
    fn status_codes_map_to_errors() {
        assert_eq!(status_result(0), Ok(()));
        assert_eq!(status_result(0x080), Err(IoError::OutOfRange));
        assert_eq!(status_result(0x081), Err(IoError::OutOfRange));
        assert_eq!(status_result(0x020), Err(IoError::ReadOnly));
        assert_eq!(status_result(0x182), Err(IoError::ReadOnly));
        assert_eq!(status_result(0x001), Err(IoError::Unsupported));
        assert_eq!(status_result(0x013), Err(IoError::BadBuffer));
        assert_eq!(status_result(0x282), Err(IoError::Crc));
        assert_eq!(status_result(0x280), Err(IoError::Media));
        assert_eq!(status_result(0x006), Err(IoError::Device(0x006)));
        assert_eq!(status_result(0x10B), Err(IoError::Device(0x10B)));
    }
}
