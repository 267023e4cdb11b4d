//! Journal (log) records: the compact, checksummed, chained redo records that make `fsync`
//! and `DSYNC` writes durable between checkpoints.
//!
//! A record is a whole number of sectors written once to the log area; its header names the
//! checkpoint generation it follows (`epoch`), its position in the chain (`seq`) and the
//! checksum of the record before it (`prev_crc`). Replay after a crash reads records from the
//! start of the log while each one verifies and continues the chain, and stops at the first
//! that does not: a record from an older epoch, a torn record, or unwritten space.
//!
//! The payload is a list of operations against the filesystem tree and the allocator:
//!
//! | op | fields | replay |
//! |---|---|---|
//! | `PUT` | key, value length (u16), value | insert or replace the item |
//! | `DELETE` | key | remove the item if present |
//! | `CLAIM` | start, len | take the run out of free space (data written before the record) |
//! | `FREE` | start, len | free the run (reusable after the next checkpoint) |
//!
//! Every op is idempotent given the same starting checkpoint, so replaying twice (a crash
//! during replay) gives the same result.

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::header::block_crc;
use super::key::{Key, KeyBytes, KEY_LEN};
use crate::error::{Error, Result};

/// Magic of a log record: "BnSl".
pub const LOG_MAGIC: u32 = u32::from_le_bytes(*b"BnSl");

/// Operation codes in a record's payload.
pub mod op {
    /// Insert or replace an item.
    pub const PUT: u8 = 1;
    /// Remove an item.
    pub const DELETE: u8 = 2;
    /// Take a run of blocks out of free space.
    pub const CLAIM: u8 = 3;
    /// Free a run of blocks.
    pub const FREE: u8 = 4;
}

/// The header at the start of every record (48 bytes).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct LogHeader {
    /// [`LOG_MAGIC`].
    pub magic: U32,
    /// crc32c of the record's `sectors * sector_size` bytes, this field read as zero.
    pub crc: U32,
    /// Generation of the checkpoint this record follows.
    pub epoch: U64,
    /// Position in the chain, from 0 after each checkpoint.
    pub seq: U64,
    /// `crc` of the previous record (0 for the first).
    pub prev_crc: U32,
    /// Payload bytes after the header.
    pub payload_len: U32,
    /// Record length in sectors, header included.
    pub sectors: U32,
    /// Number of operations in the payload.
    pub nops: U32,
    /// Zero.
    pub reserved: U64,
}

/// Size of [`LogHeader`].
pub const LOG_HEADER_LEN: usize = core::mem::size_of::<LogHeader>();
const _: () = assert!(LOG_HEADER_LEN == 48);

/// One decoded operation, borrowing from the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogOp<'a> {
    /// Insert or replace `key` with `value`.
    Put(Key, &'a [u8]),
    /// Remove `key`.
    Delete(Key),
    /// Take `(start, len)` out of free space.
    Claim(u64, u64),
    /// Free `(start, len)`.
    Free(u64, u64),
}

impl LogOp<'_> {
    /// Encoded size in bytes.
    pub fn encoded_len(&self) -> usize {
        1 + match self {
            LogOp::Put(_, v) => KEY_LEN + 2 + v.len(),
            LogOp::Delete(_) => KEY_LEN,
            LogOp::Claim(..) | LogOp::Free(..) => 16,
        }
    }
}

/// Builds one record in a caller-provided buffer (a whole number of sectors).
pub struct RecordWriter<'a> {
    buf: &'a mut [u8],
    len: usize,
    nops: u32,
}

impl<'a> RecordWriter<'a> {
    /// Start a record in `buf`.
    pub fn new(buf: &'a mut [u8]) -> Result<Self> {
        if buf.len() < LOG_HEADER_LEN {
            return Err(Error::InvalidArgument);
        }
        buf.fill(0);
        Ok(RecordWriter {
            buf,
            len: LOG_HEADER_LEN,
            nops: 0,
        })
    }

    /// Bytes used so far (header included).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Nothing but the header yet.
    pub fn is_empty(&self) -> bool {
        self.nops == 0
    }

    /// Bytes still free.
    pub fn room(&self) -> usize {
        self.buf.len() - self.len
    }

    /// Append `op`; `TooLarge` (and no change) if it does not fit.
    pub fn push(&mut self, op: &LogOp<'_>) -> Result<()> {
        let n = op.encoded_len();
        let dst = self
            .buf
            .get_mut(self.len..self.len + n)
            .ok_or(Error::TooLarge)?;
        let (code, rest) = dst.split_at_mut(1);
        match *op {
            LogOp::Put(k, v) => {
                code[0] = op::PUT;
                let vlen = u16::try_from(v.len()).map_err(|_| Error::TooLarge)?;
                rest[..KEY_LEN].copy_from_slice(KeyBytes::from(k).as_bytes());
                rest[KEY_LEN..KEY_LEN + 2].copy_from_slice(&vlen.to_le_bytes());
                rest[KEY_LEN + 2..].copy_from_slice(v);
            }
            LogOp::Delete(k) => {
                code[0] = op::DELETE;
                rest.copy_from_slice(KeyBytes::from(k).as_bytes());
            }
            LogOp::Claim(s, l) | LogOp::Free(s, l) => {
                code[0] = if matches!(op, LogOp::Claim(..)) {
                    op::CLAIM
                } else {
                    op::FREE
                };
                rest[..8].copy_from_slice(&s.to_le_bytes());
                rest[8..].copy_from_slice(&l.to_le_bytes());
            }
        }
        self.len += n;
        self.nops += 1;
        Ok(())
    }

    /// Seal the record: fill in the header and checksum. Returns the number of sectors to
    /// write and the record's crc (the next record's `prev_crc`).
    pub fn seal(
        self,
        sector_size: usize,
        epoch: u64,
        seq: u64,
        prev_crc: u32,
    ) -> Result<(usize, u32)> {
        let sectors = self.len.div_ceil(sector_size);
        let total = sectors * sector_size;
        let rec = self.buf.get_mut(..total).ok_or(Error::TooLarge)?;
        let h = LogHeader {
            magic: LOG_MAGIC.into(),
            crc: 0.into(),
            epoch: epoch.into(),
            seq: seq.into(),
            prev_crc: prev_crc.into(),
            payload_len: ((self.len - LOG_HEADER_LEN) as u32).into(),
            sectors: (sectors as u32).into(),
            nops: self.nops.into(),
            reserved: 0.into(),
        };
        rec[..LOG_HEADER_LEN].copy_from_slice(h.as_bytes());
        let crc = block_crc(rec);
        rec[4..8].copy_from_slice(&crc.to_le_bytes());
        Ok((sectors, crc))
    }
}

/// Check the header in the first sector of a record: magic, epoch, sequence, chain and a
/// sane length. Returns the header; the caller then reads `sectors` sectors and calls
/// [`verify_record`].
pub fn check_header(
    first: &[u8],
    epoch: u64,
    seq: u64,
    prev_crc: u32,
    max_sectors: u32,
) -> Option<LogHeader> {
    let (h, _) = LogHeader::read_from_prefix(first).ok()?;
    let ok = h.magic.get() == LOG_MAGIC
        && h.epoch.get() == epoch
        && h.seq.get() == seq
        && h.prev_crc.get() == prev_crc
        && h.sectors.get() >= 1
        && h.sectors.get() <= max_sectors;
    ok.then_some(h)
}

/// Verify a whole record (`sectors * sector_size` bytes): checksum and payload bounds.
/// Returns its crc.
pub fn verify_record(rec: &[u8], h: &LogHeader) -> Option<u32> {
    if block_crc(rec) != h.crc.get() {
        return None;
    }
    let end = LOG_HEADER_LEN.checked_add(h.payload_len.get() as usize)?;
    (end <= rec.len()).then_some(h.crc.get())
}

/// Decode the operations of a verified record.
pub fn ops<'a>(rec: &'a [u8], h: &LogHeader) -> impl Iterator<Item = Result<LogOp<'a>>> + 'a {
    let end = LOG_HEADER_LEN + h.payload_len.get() as usize;
    let mut rest = rec.get(LOG_HEADER_LEN..end).unwrap_or(&[]);
    let mut left = h.nops.get();
    core::iter::from_fn(move || {
        if left == 0 {
            return None;
        }
        left -= 1;
        let r = decode_op(&mut rest);
        if r.is_err() {
            left = 0;
        }
        Some(r)
    })
}

fn decode_op<'a>(rest: &mut &'a [u8]) -> Result<LogOp<'a>> {
    let bad = Error::Corrupt { block: 0 };
    let (&code, tail) = rest.split_first().ok_or(bad)?;
    let key = |b: &[u8]| {
        KeyBytes::ref_from_prefix(b)
            .map(|(k, _)| Key::from(k))
            .map_err(|_| bad)
    };
    let u64_at = |b: &[u8], i: usize| -> Result<u64> {
        let s = b.get(i..i + 8).ok_or(bad)?;
        Ok(u64::from_le_bytes(s.try_into().map_err(|_| bad)?))
    };
    let (op, used) = match code {
        op::PUT => {
            let k = key(tail)?;
            let (vlen, _) =
                U16::read_from_prefix(tail.get(KEY_LEN..).ok_or(bad)?).map_err(|_| bad)?;
            let n = usize::from(vlen.get());
            let v = tail.get(KEY_LEN + 2..KEY_LEN + 2 + n).ok_or(bad)?;
            (LogOp::Put(k, v), KEY_LEN + 2 + n)
        }
        op::DELETE => (LogOp::Delete(key(tail)?), KEY_LEN),
        op::CLAIM => (LogOp::Claim(u64_at(tail, 0)?, u64_at(tail, 8)?), 16),
        op::FREE => (LogOp::Free(u64_at(tail, 0)?, u64_at(tail, 8)?), 16),
        _ => return Err(bad),
    };
    *rest = tail.get(used..).ok_or(bad)?;
    Ok(op)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    #[test]
    fn record_round_trip_and_chain() {
        let mut buf = [0u8; 1024];
        let mut w = RecordWriter::new(&mut buf).unwrap();
        let k = Key::new(5, 4, 8192);
        w.push(&LogOp::Put(k, b"extent-bytes")).unwrap();
        w.push(&LogOp::Delete(Key::new(5, 5, 0))).unwrap();
        w.push(&LogOp::Claim(100, 3)).unwrap();
        w.push(&LogOp::Free(7, 1)).unwrap();
        let (sectors, crc) = w.seal(512, 9, 3, 0xabcd).unwrap();
        assert_eq!(sectors, 1);
        let rec = &buf[..512];
        let h = check_header(rec, 9, 3, 0xabcd, 8).unwrap();
        assert_eq!(verify_record(rec, &h), Some(crc));
        let ops: Vec<_> = ops(rec, &h).map(|o| o.unwrap()).collect();
        assert_eq!(
            ops,
            [
                LogOp::Put(k, b"extent-bytes"),
                LogOp::Delete(Key::new(5, 5, 0)),
                LogOp::Claim(100, 3),
                LogOp::Free(7, 1)
            ]
        );
        // Wrong epoch, sequence or chain: not this log's next record.
        assert!(check_header(rec, 8, 3, 0xabcd, 8).is_none());
        assert!(check_header(rec, 9, 4, 0xabcd, 8).is_none());
        assert!(check_header(rec, 9, 3, 0, 8).is_none());
        // Any flipped byte fails the checksum.
        for i in 0..512 {
            let mut c = buf;
            c[i] ^= 0x40;
            let hdr_ok = check_header(&c[..512], 9, 3, 0xabcd, 8);
            assert!(
                hdr_ok.is_none_or(|h| verify_record(&c[..512], &h).is_none()),
                "flip at {i}"
            );
        }
    }

    #[test]
    fn full_record_refuses_and_hostile_payload_errors() {
        let mut buf = [0u8; 128];
        let mut w = RecordWriter::new(&mut buf).unwrap();
        assert_eq!(
            w.push(&LogOp::Put(Key::MIN, &[0; 100])),
            Err(Error::TooLarge)
        );
        w.push(&LogOp::Claim(1, 1)).unwrap();
        let (_, _) = w.seal(64, 1, 0, 0).unwrap();
        // Claim more ops than the payload holds: decoding stops with an error.
        let mut h = LogHeader::read_from_prefix(&buf[..]).unwrap().0;
        h.nops = 5.into();
        let errs = ops(&buf, &h).filter(|o| o.is_err()).count();
        assert_eq!(errs, 1);
    }
}
