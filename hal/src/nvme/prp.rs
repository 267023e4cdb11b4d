//! Physical Region Page entries: how a command names a buffer that may span several pages
//! (NVMe base specification, "Physical Region Page Entry and List").
//!
//! PRP1 holds the bus address of the first byte (any dword-aligned offset into its page).
//! If the transfer ends in the next page, PRP2 is that page's address; if it spans more
//! pages, PRP2 points to a *PRP list*: one page-aligned address per further page. Pages are
//! translated one at a time, so the buffer need not be contiguous at the device.

use bonsaifs::device::IoError;

use crate::platform::PAGE_SIZE;

const PAGE: u64 = PAGE_SIZE as u64;

/// The two PRP fields of a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prps {
    /// PRP entry 1.
    pub prp1: u64,
    /// PRP entry 2: 0, the second page, or the PRP list's bus address.
    pub prp2: u64,
    /// Entries written to the list (0 when there is none).
    pub list_entries: usize,
}

/// Builds the PRPs for `len` bytes at CPU address `addr`.
///
/// `translate` gives the bus address of a CPU address (valid to the end of its page);
/// `list_bus` is the bus address of this command's list memory, which holds `list_capacity`
/// entries written through `put(index, entry)`.
///
/// Errors: [`IoError::BadBuffer`] for an empty buffer, a bus address that is not dword-aligned
/// or does not keep the offset within the page, or an untranslatable page;
/// [`IoError::Unsupported`] if the buffer spans more pages than the list holds.
pub fn build(
    addr: usize,
    len: usize,
    translate: impl Fn(usize) -> Option<u64>,
    list_bus: u64,
    list_capacity: usize,
    mut put: impl FnMut(usize, u64),
) -> Result<Prps, IoError> {
    if len == 0 {
        return Err(IoError::BadBuffer);
    }
    let offset = addr % PAGE_SIZE;
    let first = translate(addr).ok_or(IoError::BadBuffer)?;
    if first % 4 != 0 || first % PAGE != offset as u64 {
        return Err(IoError::BadBuffer);
    }
    let first_chunk = PAGE_SIZE - offset;
    if len <= first_chunk {
        return Ok(Prps {
            prp1: first,
            prp2: 0,
            list_entries: 0,
        });
    }
    let more = (len - first_chunk).div_ceil(PAGE_SIZE);
    let page_base = addr - offset;
    let page = |i: usize| -> Result<u64, IoError> {
        let cpu = page_base
            .checked_add(i.checked_mul(PAGE_SIZE).ok_or(IoError::BadBuffer)?)
            .ok_or(IoError::BadBuffer)?;
        match translate(cpu) {
            Some(bus) if bus % PAGE == 0 => Ok(bus),
            _ => Err(IoError::BadBuffer),
        }
    };
    if more == 1 {
        return Ok(Prps {
            prp1: first,
            prp2: page(1)?,
            list_entries: 0,
        });
    }
    if more > list_capacity {
        return Err(IoError::Unsupported);
    }
    for i in 0..more {
        put(i, page(i + 1)?);
    }
    Ok(Prps {
        prp1: first,
        prp2: list_bus,
        list_entries: more,
    })
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec;
    use std::vec::Vec;

    /// Identity, but pages from 0x9000_0000 on are scattered (page i ↦ 0x5000_0000 + 7·i pages).
    fn xlate(a: usize) -> Option<u64> {
        if a >= 0xF000_0000 {
            None
        } else if a >= 0x9000_0000 {
            let page = (a - 0x9000_0000) / PAGE_SIZE;
            Some(0x5000_0000 + (page * 7 * PAGE_SIZE + a % PAGE_SIZE) as u64)
        } else {
            Some(a as u64)
        }
    }

    fn run(addr: usize, len: usize, cap: usize) -> (Result<Prps, IoError>, Vec<u64>) {
        let mut list = vec![0u64; cap];
        let r = build(addr, len, xlate, 0x7777_0000, cap, |i, e| list[i] = e);
        (r, list)
    }

    #[test]
    fn one_two_and_many_pages() {
        let (r, _) = run(0x8000_0200, 512, 4);
        assert_eq!(
            r,
            Ok(Prps {
                prp1: 0x8000_0200,
                prp2: 0,
                list_entries: 0
            })
        );
        // Exactly to the end of the page: still one entry.
        let (r, _) = run(0x8000_0E00, 512, 4);
        assert_eq!(r.unwrap().prp2, 0);
        // Crossing into the next page: PRP2 is that page.
        let (r, _) = run(0x8000_0E00, 1024, 4);
        assert_eq!(
            r,
            Ok(Prps {
                prp1: 0x8000_0E00,
                prp2: 0x8000_1000,
                list_entries: 0
            })
        );
        // 16 KiB page-aligned: PRP1 plus a list of three.
        let (r, list) = run(0x8000_0000, 16384, 4);
        assert_eq!(
            r,
            Ok(Prps {
                prp1: 0x8000_0000,
                prp2: 0x7777_0000,
                list_entries: 3
            })
        );
        assert_eq!(&list[..3], &[0x8000_1000, 0x8000_2000, 0x8000_3000]);
        // 16 KiB starting mid-page: five pages, a list of four.
        let (r, list) = run(0x8000_0800, 16384, 4);
        assert_eq!(r.unwrap().list_entries, 4);
        assert_eq!(
            list,
            vec![0x8000_1000, 0x8000_2000, 0x8000_3000, 0x8000_4000]
        );
        // Too many pages for the list.
        assert_eq!(run(0x8000_0800, 16384, 3).0, Err(IoError::Unsupported));
    }

    #[test]
    fn scattered_pages_are_translated_one_by_one() {
        let (r, list) = run(0x9000_0100, 3 * PAGE_SIZE, 4);
        let r = r.unwrap();
        assert_eq!(r.prp1, 0x5000_0100);
        assert_eq!(r.list_entries, 3);
        assert_eq!(&list[..3], &[0x5000_7000, 0x5000_E000, 0x5001_5000]);
    }

    #[test]
    fn bad_buffers_are_refused() {
        assert_eq!(run(0x8000_0000, 0, 4).0, Err(IoError::BadBuffer));
        assert_eq!(run(0x8000_0002, 512, 4).0, Err(IoError::BadBuffer));
        assert_eq!(run(0xF000_0000, 512, 4).0, Err(IoError::BadBuffer));
        // The first page translates, a later one does not.
        assert_eq!(run(0xEFFF_F000, 8192, 4).0, Err(IoError::BadBuffer));
    }
}
