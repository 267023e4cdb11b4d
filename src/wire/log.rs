//! Journal (log) records: the compact, checksummed, chained redo records that make `fsync`
//! and `DSYNC` writes durable between checkpoints.
//!
//! A record is a whole number of sectors written once to the log area; its header names the
//! checkpoint generation it follows (`epoch`), its position in the chain (`seq`) and the
//! checksum of the record before it (`prev_crc`). Replay after a crash reads records from the
//! start of the log while each one verifies and continues the chain, and stops at the first
//! that does not: a record from an older epoch, a torn record, or unwritten space.
//!
//! The payload is a list of *filesystem* operations, replayed in order through the same code
//! that ran them (so replay is as correct as the operations themselves, and the log stays
//! small: a rename is two names, not the tree nodes it touched):
//!
//! | op | fields | replay |
//! |---|---|---|
//! | `CREATE` | parent, ino, kind, name | create the inode (same number) and its entry |
//! | `REMOVE` | parent, name | unlink / rmdir |
//! | `RENAME` | from dir, to dir, from name, to name | rename (replacing) |
//! | `SET_SIZE` | ino, size | truncate / extend |
//! | `WRITE` | ino, offset, bytes | write the bytes (small writes travel inside the record) |
//! | `MAP` | ino, file block, disk block, count, size, sum flag, sum | point the file blocks at disk blocks written before the record |
//!
//! A `MAP`'s blocks are either made durable before its record is written (flag 0), or they
//! carry a *data sum* (flag 1: see [`data_sum`]) and reach stable media with the record, under
//! the same flush. Replay then checks the sums of a commit group before applying it, and a
//! group whose data did not all arrive is treated like a torn record: replay stops there. The
//! sum saves the flush between data and record on devices without FUA.
//!
//! Replaying from the same checkpoint gives the same result every time, so a crash during
//! replay is harmless.

use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::header::block_crc;
use super::{block_nr, BlockNr};
use crate::error::{Error, Result};

/// Magic of a log record: "BnSl".
pub const LOG_MAGIC: u32 = u32::from_le_bytes(*b"BnSl");

/// Operation codes in a record's payload.
pub mod op {
    /// Create a file or directory.
    pub const CREATE: u8 = 1;
    /// Remove a name (unlink or rmdir).
    pub const REMOVE: u8 = 2;
    /// Rename.
    pub const RENAME: u8 = 3;
    /// Set a file's size.
    pub const SET_SIZE: u8 = 4;
    /// Write bytes carried in the record.
    pub const WRITE: u8 = 5;
    /// Map file blocks to disk blocks written before the record.
    pub const MAP: u8 = 6;
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
    /// [`LOG_COMMIT`] on the last record of a sync point; the others are zero.
    pub flags: U64,
}

/// Flag of the last record of a sync point: replay applies a group of records only when its
/// last record, carrying this flag, is there too.
pub const LOG_COMMIT: u64 = 1;

/// Size of [`LogHeader`].
pub const LOG_HEADER_LEN: usize = core::mem::size_of::<LogHeader>();
const _: () = assert!(LOG_HEADER_LEN == 48);

/// One decoded operation, borrowing from the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogOp<'a> {
    /// `name` → new inode `ino` of `kind` in directory `parent`.
    Create {
        /// Directory.
        parent: u64,
        /// The new inode's number.
        ino: u64,
        /// A [`FileKind`](super::items::FileKind) as `u8`.
        kind: u8,
        /// Name.
        name: &'a [u8],
    },
    /// Remove `name` from `parent`.
    Remove {
        /// Directory.
        parent: u64,
        /// Name.
        name: &'a [u8],
    },
    /// Rename `from_dir/from` to `to_dir/to`.
    Rename {
        /// Source directory.
        from_dir: u64,
        /// Target directory.
        to_dir: u64,
        /// Source name.
        from: &'a [u8],
        /// Target name.
        to: &'a [u8],
    },
    /// Set the size of `ino`.
    SetSize {
        /// File.
        ino: u64,
        /// New size.
        size: u64,
    },
    /// Write `data` at `offset` of `ino`.
    Write {
        /// File.
        ino: u64,
        /// Byte offset.
        offset: u64,
        /// The bytes.
        data: &'a [u8],
    },
    /// File blocks `fblk..fblk + count` of `ino` are disk blocks `block..block + count`; the
    /// file's size is then `size`.
    Map {
        /// File.
        ino: u64,
        /// First file block.
        fblk: u64,
        /// First disk block.
        block: BlockNr,
        /// Blocks.
        count: BlockNr,
        /// File size after the write.
        size: u64,
        /// The blocks' [`data_sum`], when they travel to stable media with the record
        /// rather than before it.
        sum: Option<u32>,
    },
}

/// Where a `MAP`'s sum flag lies in its encoding (the sum follows it).
const MAP_SUM_AT: usize = 1 + 5 * 8;

/// The data sum of a `MAP`'s blocks: crc32c of each block, each rotated left by its index
/// within the run (so blocks cannot trade places), xor-ed together.
pub fn data_sum<'a>(blocks: impl IntoIterator<Item = &'a [u8]>) -> u32 {
    blocks
        .into_iter()
        .enumerate()
        .fold(0, |acc, (i, b)| data_sum_step(acc, i as u64, b))
}

/// One step of [`data_sum`]: fold in block number `index` of the run.
pub fn data_sum_step(acc: u32, index: u64, block: &[u8]) -> u32 {
    acc ^ super::header::crc32c(block).rotate_left((index % 32) as u32)
}

/// Set the sum of the encoded `MAP` operation at the start of `op` (which must be one).
pub fn set_map_sum(op: &mut [u8], sum: u32) -> Result<()> {
    if op.first() != Some(&op::MAP) {
        return Err(Error::InvalidArgument);
    }
    let dst = op
        .get_mut(MAP_SUM_AT..MAP_SUM_AT + 5)
        .ok_or(Error::InvalidArgument)?;
    dst[0] = 1;
    dst[1..].copy_from_slice(&sum.to_le_bytes());
    Ok(())
}

impl LogOp<'_> {
    /// Encoded size in bytes.
    pub fn encoded_len(&self) -> usize {
        1 + match self {
            LogOp::Create { name, .. } => 8 + 8 + 1 + 1 + name.len(),
            LogOp::Remove { name, .. } => 8 + 1 + name.len(),
            LogOp::Rename { from, to, .. } => 8 + 8 + 1 + 1 + from.len() + to.len(),
            LogOp::SetSize { .. } => 16,
            LogOp::Write { data, .. } => 8 + 8 + 2 + data.len(),
            LogOp::Map { .. } => 45,
        }
    }

    /// Encode into `dst` (exactly [`encoded_len`](Self::encoded_len) bytes).
    pub fn encode(&self, dst: &mut [u8]) -> Result<()> {
        if dst.len() != self.encoded_len() {
            return Err(Error::InvalidArgument);
        }
        let mut w = Cursor { buf: dst, at: 0 };
        match *self {
            LogOp::Create {
                parent,
                ino,
                kind,
                name,
            } => {
                w.u8(op::CREATE);
                w.u64(parent);
                w.u64(ino);
                w.u8(kind);
                w.name(name)?;
            }
            LogOp::Remove { parent, name } => {
                w.u8(op::REMOVE);
                w.u64(parent);
                w.name(name)?;
            }
            LogOp::Rename {
                from_dir,
                to_dir,
                from,
                to,
            } => {
                w.u8(op::RENAME);
                w.u64(from_dir);
                w.u64(to_dir);
                w.u8(u8::try_from(from.len()).map_err(|_| Error::NameTooLong)?);
                w.u8(u8::try_from(to.len()).map_err(|_| Error::NameTooLong)?);
                w.bytes(from);
                w.bytes(to);
            }
            LogOp::SetSize { ino, size } => {
                w.u8(op::SET_SIZE);
                w.u64(ino);
                w.u64(size);
            }
            LogOp::Write { ino, offset, data } => {
                w.u8(op::WRITE);
                w.u64(ino);
                w.u64(offset);
                let n = u16::try_from(data.len()).map_err(|_| Error::TooLarge)?;
                w.bytes(&n.to_le_bytes());
                w.bytes(data);
            }
            LogOp::Map {
                ino,
                fblk,
                block,
                count,
                size,
                sum,
            } => {
                w.u8(op::MAP);
                for v in [ino, fblk, u64::from(block), u64::from(count), size] {
                    w.u64(v);
                }
                w.u8(u8::from(sum.is_some()));
                w.bytes(&sum.unwrap_or(0).to_le_bytes());
            }
        }
        Ok(())
    }
}

/// A little-endian writer over an exactly sized buffer.
struct Cursor<'a> {
    buf: &'a mut [u8],
    at: usize,
}

impl Cursor<'_> {
    fn bytes(&mut self, b: &[u8]) {
        if let Some(d) = self.buf.get_mut(self.at..self.at + b.len()) {
            d.copy_from_slice(b);
        }
        self.at += b.len();
    }
    fn u8(&mut self, v: u8) {
        self.bytes(&[v]);
    }
    fn u64(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }
    fn name(&mut self, n: &[u8]) -> Result<()> {
        self.u8(u8::try_from(n.len()).map_err(|_| Error::NameTooLong)?);
        self.bytes(n);
        Ok(())
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
        op.encode(dst)?;
        self.len += n;
        self.nops += 1;
        Ok(())
    }

    /// Append already-encoded operations (`nops` of them) in one go.
    pub fn push_encoded(&mut self, ops: &[u8], nops: u32) -> Result<()> {
        let dst = self
            .buf
            .get_mut(self.len..self.len + ops.len())
            .ok_or(Error::TooLarge)?;
        dst.copy_from_slice(ops);
        self.len += ops.len();
        self.nops += nops;
        Ok(())
    }

    /// Seal the record, which fills the whole buffer (a whole number of sectors): fill in the
    /// header and checksum. Returns the number of sectors to write and the record's crc (the
    /// next record's `prev_crc`).
    pub fn seal(
        self,
        sector_size: usize,
        epoch: u64,
        seq: u64,
        prev_crc: u32,
        flags: u64,
    ) -> Result<(usize, u32)> {
        if sector_size == 0 || self.buf.len() % sector_size != 0 {
            return Err(Error::InvalidArgument);
        }
        let sectors = self.buf.len() / sector_size;
        let rec = &mut *self.buf;
        let h = LogHeader {
            magic: LOG_MAGIC.into(),
            crc: 0.into(),
            epoch: epoch.into(),
            seq: seq.into(),
            prev_crc: prev_crc.into(),
            payload_len: ((self.len - LOG_HEADER_LEN) as u32).into(),
            sectors: (sectors as u32).into(),
            nops: self.nops.into(),
            flags: flags.into(),
        };
        rec[..LOG_HEADER_LEN].copy_from_slice(h.as_bytes());
        let crc = block_crc(rec);
        rec[4..8].copy_from_slice(&crc.to_le_bytes());
        Ok((sectors, crc))
    }
}

/// Check the header in the first sector of a record: magic, epoch, sequence, chain and a
/// sane length (at most `max_sectors`, the log's sectors left, whatever their number).
/// Returns the header; the caller then reads `sectors` sectors and calls [`verify_record`].
pub fn check_header(
    first: &[u8],
    epoch: u64,
    seq: u64,
    prev_crc: u32,
    max_sectors: u64,
) -> Option<LogHeader> {
    let (h, _) = LogHeader::read_from_prefix(first).ok()?;
    let ok = h.magic.get() == LOG_MAGIC
        && h.epoch.get() == epoch
        && h.seq.get() == seq
        && h.prev_crc.get() == prev_crc
        && h.sectors.get() >= 1
        && u64::from(h.sectors.get()) <= max_sectors;
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

/// A little-endian reader that fails with `Corrupt` at the end of its input.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> Result<&'a [u8]> {
        let (a, b) = (self.rest.get(..n), self.rest.get(n..));
        match (a, b) {
            (Some(a), Some(b)) => {
                self.rest = b;
                Ok(a)
            }
            _ => Err(Error::Corrupt),
        }
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.bytes(1)?.first().copied().unwrap_or(0))
    }
    fn u64(&mut self) -> Result<u64> {
        let b = self.bytes(8)?;
        Ok(u64::from_le_bytes(
            b.try_into().map_err(|_| Error::Corrupt)?,
        ))
    }
    fn name(&mut self) -> Result<&'a [u8]> {
        let n = usize::from(self.u8()?);
        self.bytes(n)
    }
}

/// Decode one op from the front of `rest`, advancing it.
pub fn decode_op<'a>(rest: &mut &'a [u8]) -> Result<LogOp<'a>> {
    let mut r = Reader { rest };
    let op = match r.u8()? {
        op::CREATE => {
            let (parent, ino, kind) = (r.u64()?, r.u64()?, r.u8()?);
            LogOp::Create {
                parent,
                ino,
                kind,
                name: r.name()?,
            }
        }
        op::REMOVE => {
            let parent = r.u64()?;
            LogOp::Remove {
                parent,
                name: r.name()?,
            }
        }
        op::RENAME => {
            let (from_dir, to_dir) = (r.u64()?, r.u64()?);
            let (fl, tl) = (usize::from(r.u8()?), usize::from(r.u8()?));
            let from = r.bytes(fl)?;
            LogOp::Rename {
                from_dir,
                to_dir,
                from,
                to: r.bytes(tl)?,
            }
        }
        op::SET_SIZE => LogOp::SetSize {
            ino: r.u64()?,
            size: r.u64()?,
        },
        op::WRITE => {
            let (ino, offset) = (r.u64()?, r.u64()?);
            let b = r.bytes(2)?;
            let n = usize::from(u16::from_le_bytes([b[0], b[1]]));
            LogOp::Write {
                ino,
                offset,
                data: r.bytes(n)?,
            }
        }
        op::MAP => LogOp::Map {
            ino: r.u64()?,
            fblk: r.u64()?,
            block: block_nr(r.u64()?)?,
            count: block_nr(r.u64()?)?,
            size: r.u64()?,
            sum: {
                let flag = r.u8()?;
                let b = r.bytes(4)?;
                let sum = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                match flag {
                    0 => None,
                    1 => Some(sum),
                    _ => return Err(Error::Corrupt),
                }
            },
        },
        _ => return Err(Error::Corrupt),
    };
    *rest = r.rest;
    Ok(op)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_map_sum_is_set_in_place_and_data_sums_see_order() {
        let op = LogOp::Map {
            ino: 3,
            fblk: 0,
            block: 77,
            count: 2,
            size: 8192,
            sum: None,
        };
        let mut b = [0u8; 46];
        op.encode(&mut b).unwrap();
        set_map_sum(&mut b, 0x1234_5678).unwrap();
        let mut rest = &b[..];
        assert_eq!(
            decode_op(&mut rest).unwrap(),
            LogOp::Map {
                ino: 3,
                fblk: 0,
                block: 77,
                count: 2,
                size: 8192,
                sum: Some(0x1234_5678),
            }
        );
        assert!(set_map_sum(&mut b[1..], 1).is_err());
        // A disk block or count past `BlockNr` (bytes 17.. and 25.. of the encoding) is
        // `Corrupt`, never truncated to a block inside the volume.
        for at in [17, 25] {
            let mut c = b;
            c[at..at + 8].copy_from_slice(&(1u64 << 32).to_le_bytes());
            assert_eq!(decode_op(&mut &c[..]), Err(Error::Corrupt), "at {at}");
        }
        let (x, y) = ([1u8; 64], [2u8; 64]);
        assert_ne!(data_sum([&x[..], &y[..]]), data_sum([&y[..], &x[..]]));
        assert_ne!(data_sum([&x[..], &x[..]]), 0);
    }

    use super::*;
    use std::vec::Vec;

    #[test]
    fn record_round_trip_and_chain() {
        let mut buf = [0u8; 512];
        let mut w = RecordWriter::new(&mut buf).unwrap();
        let all = [
            LogOp::Create {
                parent: 1,
                ino: 17,
                kind: 1,
                name: b"a.txt",
            },
            LogOp::Remove {
                parent: 1,
                name: b"b",
            },
            LogOp::Rename {
                from_dir: 1,
                to_dir: 18,
                from: b"a.txt",
                to: b"c",
            },
            LogOp::SetSize {
                ino: 17,
                size: 4097,
            },
            LogOp::Write {
                ino: 17,
                offset: 5,
                data: b"hello",
            },
            LogOp::Map {
                ino: 17,
                fblk: 2,
                block: 900,
                count: 3,
                size: 20000,
                sum: None,
            },
            LogOp::Map {
                ino: 17,
                fblk: 5,
                block: 1000,
                count: 1,
                size: 24000,
                sum: Some(0xdead_beef),
            },
        ];
        for op in &all {
            w.push(op).unwrap();
        }
        let (sectors, crc) = w.seal(512, 9, 3, 0xabcd, LOG_COMMIT).unwrap();
        assert_eq!(sectors, 1);
        let rec = &buf[..512];
        let h = check_header(rec, 9, 3, 0xabcd, 8).unwrap();
        assert_eq!(h.flags.get(), LOG_COMMIT);
        assert_eq!(verify_record(rec, &h), Some(crc));
        let got: Vec<_> = ops(rec, &h).map(|o| o.unwrap()).collect();
        assert_eq!(got, all);
        // Wrong epoch, sequence or chain: not this log's next record.
        assert!(check_header(rec, 8, 3, 0xabcd, 8).is_none());
        assert!(check_header(rec, 9, 4, 0xabcd, 8).is_none());
        assert!(check_header(rec, 9, 3, 0, 8).is_none());
        // Any flipped byte fails the checksum.
        for i in 0..512 {
            let mut c = buf;
            c[i] ^= 0x40;
            let hdr = check_header(&c[..512], 9, 3, 0xabcd, 8);
            assert!(
                hdr.is_none_or(|h| verify_record(&c[..512], &h).is_none()),
                "flip at {i}"
            );
        }
    }

    #[test]
    fn full_record_refuses_and_hostile_payload_errors() {
        let mut buf = [0u8; 128];
        let mut w = RecordWriter::new(&mut buf).unwrap();
        assert_eq!(
            w.push(&LogOp::Write {
                ino: 1,
                offset: 0,
                data: &[0; 100]
            }),
            Err(Error::TooLarge)
        );
        w.push(&LogOp::SetSize { ino: 1, size: 1 }).unwrap();
        let (_, _) = w.seal(64, 1, 0, 0, 0).unwrap();
        // Claim more ops than the payload holds: decoding stops with an error.
        let mut h = LogHeader::read_from_prefix(&buf[..]).unwrap().0;
        h.nops = 5.into();
        let errs = ops(&buf, &h).filter(|o| o.is_err()).count();
        assert_eq!(errs, 1);
        // Truncated names and unknown codes are errors, not panics.
        for bad in [
            &[op::CREATE, 1, 2][..],
            &[op::WRITE; 20][..],
            &[99][..],
            &[][..],
        ] {
            let mut r = bad;
            assert!(decode_op(&mut r).is_err());
        }
    }
}
