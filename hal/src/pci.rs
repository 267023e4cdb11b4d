//! PCI Express configuration through ECAM: enumerate functions, size and assign memory BARs,
//! enable decoding and bus mastering, walk capability lists.
//!
//! # Why the firmware assigns BARs
//!
//! On a PC the BIOS enumerates PCI and gives every BAR an address; under `-bios none` (and on
//! many embedded boards) nothing does, so every BAR reads as zero and the device decodes
//! nothing. [`Ecam::assign_bars`] does the firmware's job for one function: it sizes each BAR
//! (the standard write-all-ones probe), takes an aligned range from a caller-given
//! [`BarAllocator`] window (a bump allocator: addresses are never given back), writes the
//! address, and reports the result as [`Bar`]s. [`Ecam::enable`] then turns on memory decoding
//! and bus mastering.
//!
//! # Scope
//!
//! The helper walks every bus in the ECAM range it is given, but it does not program bridges
//! (bus numbers, forwarding windows): on QEMU's `virt` machines every device added with
//! `-device` sits on the root bus, which needs none. I/O-space BARs are reported but never
//! assigned (drivers here use memory BARs only). Interrupts (INTx, MSI, MSI-X) are left
//! disabled: the drivers poll.
//!
//! # Configuration accesses
//!
//! ECAM maps function `bus:dev.fn` at `base + (bus << 20 | dev << 15 | fn << 12)`, 4 KiB of
//! configuration space each. Accesses use the register's natural width (8, 16 or 32 bits),
//! which ECAM allows; in particular the 16-bit command register is written without touching
//! the status register next to it, whose bits are write-one-to-clear.
//!
//! ```no_run
//! use bonsaifs_hal::pci::{BarAllocator, Ecam};
//! # fn run(ecam_base: core::ptr::NonNull<u8>) -> Result<(), bonsaifs_hal::pci::PciError> {
//! // SAFETY: the QEMU virt ECAM window (bus 0 only) mapped at `ecam_base`.
//! let ecam = unsafe { Ecam::new(ecam_base, 0, 0) };
//! let mut window = BarAllocator::new(0x4000_0000, 0x4000_0000);
//! let nvme = ecam.find(|f| f.class == 0x01 && f.subclass == 0x08).ok_or(bonsaifs_hal::pci::PciError::NotFound)?;
//! let bars = ecam.assign_bars(nvme.address, &mut window)?;
//! ecam.enable(nvme.address);
//! let regs = bars[0].ok_or(bonsaifs_hal::pci::PciError::NotFound)?.address;
//! # let _ = regs; Ok(()) }
//! ```

use core::fmt;
use core::ptr::NonNull;

/// Standard configuration register offsets (type 0 and type 1 headers share the first 16
/// bytes).
pub mod reg {
    /// Vendor ID (16 bits); `0xFFFF` means no function at this address.
    pub const VENDOR_ID: u16 = 0x00;
    /// Device ID (16 bits).
    pub const DEVICE_ID: u16 = 0x02;
    /// Command register (16 bits), see [`super::command`].
    pub const COMMAND: u16 = 0x04;
    /// Status register (16 bits).
    pub const STATUS: u16 = 0x06;
    /// Revision ID (8 bits).
    pub const REVISION: u16 = 0x08;
    /// Programming interface (8 bits).
    pub const PROG_IF: u16 = 0x09;
    /// Subclass (8 bits).
    pub const SUBCLASS: u16 = 0x0A;
    /// Base class (8 bits).
    pub const CLASS: u16 = 0x0B;
    /// Header type (8 bits); bit 7 = multi-function device.
    pub const HEADER_TYPE: u16 = 0x0E;
    /// First base address register (32 bits each, six on a type 0 header).
    pub const BAR0: u16 = 0x10;
    /// Subsystem vendor ID (type 0 header).
    pub const SUBSYSTEM_VENDOR_ID: u16 = 0x2C;
    /// Subsystem ID (type 0 header).
    pub const SUBSYSTEM_ID: u16 = 0x2E;
    /// Offset of the first capability (8 bits), valid when the status register says so.
    pub const CAPABILITIES_PTR: u16 = 0x34;
}

/// Bits of the command register.
pub mod command {
    /// Respond to I/O-space accesses.
    pub const IO_SPACE: u16 = 1 << 0;
    /// Respond to memory-space accesses (the BARs decode).
    pub const MEMORY_SPACE: u16 = 1 << 1;
    /// The function may issue DMA (bus mastering).
    pub const BUS_MASTER: u16 = 1 << 2;
    /// Legacy INTx interrupts disabled.
    pub const INTX_DISABLE: u16 = 1 << 10;
}

/// Status register bit: a capability list is present.
const STATUS_CAP_LIST: u16 = 1 << 4;

/// Capability IDs the drivers look for.
pub mod cap_id {
    /// Power management.
    pub const POWER_MANAGEMENT: u8 = 0x01;
    /// MSI.
    pub const MSI: u8 = 0x05;
    /// Vendor-specific (virtio's transport structures use it).
    pub const VENDOR_SPECIFIC: u8 = 0x09;
    /// PCI Express.
    pub const PCI_EXPRESS: u8 = 0x10;
    /// MSI-X.
    pub const MSIX: u8 = 0x11;
}

/// Errors of the PCI helper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum PciError {
    /// No function matched (or none at that address).
    NotFound,
    /// A BAR does not fit in the remaining window.
    WindowExhausted {
        /// BAR index (0..6).
        bar: u8,
        /// Size the BAR asked for.
        size: u64,
    },
    /// A BAR reads back a value the specification does not allow (reserved type, a 64-bit
    /// BAR in the last slot, a size that is not a power of two).
    BadBar {
        /// BAR index (0..6).
        bar: u8,
    },
    /// A register offset outside the 4 KiB configuration space, or misaligned for its width.
    BadOffset,
    /// The address names a bus outside the ECAM range, a device ≥ 32 or a function ≥ 8.
    BadAddress,
}

impl fmt::Display for PciError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PciError::NotFound => f.write_str("no such PCI function"),
            PciError::WindowExhausted { bar, size } => {
                write!(
                    f,
                    "BAR{bar} of {size:#x} bytes does not fit in the MMIO window"
                )
            }
            PciError::BadBar { bar } => write!(f, "BAR{bar} is malformed"),
            PciError::BadOffset => f.write_str("bad configuration-space offset"),
            PciError::BadAddress => f.write_str("bad bus/device/function"),
        }
    }
}

impl core::error::Error for PciError {}

/// A function's address: bus, device (0..32), function (0..8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct PciAddress {
    /// Bus number.
    pub bus: u8,
    /// Device number, 0..32.
    pub device: u8,
    /// Function number, 0..8.
    pub function: u8,
}

impl PciAddress {
    /// `bus:device.function`.
    pub const fn new(bus: u8, device: u8, function: u8) -> Self {
        PciAddress {
            bus,
            device,
            function,
        }
    }
}

impl fmt::Display for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02x}:{:02x}.{}", self.bus, self.device, self.function)
    }
}

/// What identifies a function: its address and the first header fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct FunctionInfo {
    /// Where it is.
    pub address: PciAddress,
    /// Vendor ID.
    pub vendor: u16,
    /// Device ID.
    pub device: u16,
    /// Base class (e.g. 0x01 mass storage).
    pub class: u8,
    /// Subclass (e.g. 0x08 non-volatile memory).
    pub subclass: u8,
    /// Programming interface (e.g. 0x02 NVMe).
    pub prog_if: u8,
    /// Revision ID.
    pub revision: u8,
    /// Header layout (low 7 bits of the header type): 0 endpoint, 1 PCI-to-PCI bridge.
    pub header_type: u8,
}

/// One base address register after sizing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Bar {
    /// Bus address the BAR decodes (0 for I/O BARs, which are not assigned).
    pub address: u64,
    /// Size in bytes (a power of two).
    pub size: u64,
    /// What kind of BAR.
    pub kind: BarKind,
    /// Reads have no side effects (memory BARs only).
    pub prefetchable: bool,
}

/// The kind of a [`Bar`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum BarKind {
    /// 32-bit memory BAR.
    Memory32,
    /// 64-bit memory BAR (occupies this slot and the next).
    Memory64,
    /// I/O-space BAR (never assigned by this helper).
    Io,
}

/// A bump allocator for BAR addresses inside the host bridge's MMIO windows.
///
/// BARs are naturally aligned (a BAR of size S sits at a multiple of S). Addresses are never
/// given back. 64-bit prefetchable BARs go to the optional 64-bit window when there is one,
/// everything else (including 64-bit BARs when there is no such window) to the 32-bit window.
#[derive(Debug, Clone)]
pub struct BarAllocator {
    next32: u64,
    end32: u64,
    window64: Option<(u64, u64)>,
}

impl BarAllocator {
    /// A 32-bit window of `size` bytes from `base` (QEMU `virt`: `0x4000_0000`, 1 GiB).
    pub fn new(base: u64, size: u64) -> Self {
        BarAllocator {
            next32: base,
            end32: base.saturating_add(size),
            window64: None,
        }
    }

    /// Add a 64-bit window for 64-bit prefetchable BARs (QEMU `virt`: from `0x4_0000_0000`).
    pub fn with_window64(mut self, base: u64, size: u64) -> Self {
        self.window64 = Some((base, base.saturating_add(size)));
        self
    }

    /// Take `size` bytes (a power of two), naturally aligned, from the matching window.
    pub fn take(&mut self, size: u64, wide: bool) -> Option<u64> {
        if !size.is_power_of_two() {
            return None;
        }
        let (next, end) = match (&mut self.window64, wide) {
            (Some((next, end)), true) => (next, *end),
            _ => (&mut self.next32, self.end32),
        };
        let start = next.checked_add(size - 1)? & !(size - 1);
        let stop = start.checked_add(size)?;
        if stop > end {
            return None;
        }
        *next = stop;
        Some(start)
    }
}

/// The ECAM configuration window of a PCIe host bridge.
#[derive(Debug)]
pub struct Ecam {
    base: NonNull<u8>,
    first_bus: u8,
    last_bus: u8,
}

// SAFETY: the window is device memory reached through volatile accesses only; moving the handle
// to another thread does not change what it points to.
unsafe impl Send for Ecam {}

/// Upper bound on capability-list entries walked (a 256-byte header holds at most 48
/// four-byte-aligned capabilities); guards against a looping list.
const MAX_CAPS: usize = 48;

impl Ecam {
    /// The ECAM window mapped at `base`, covering buses `first_bus ..= last_bus`
    /// (`base` corresponds to `first_bus`).
    ///
    /// # Safety
    ///
    /// `base` must point to the mapped ECAM window for those buses (1 MiB per bus), valid for
    /// volatile accesses for as long as the `Ecam` is used, and nothing else may configure
    /// those functions concurrently.
    pub unsafe fn new(base: NonNull<u8>, first_bus: u8, last_bus: u8) -> Self {
        Ecam {
            base,
            first_bus,
            last_bus,
        }
    }

    /// Pointer to `offset` in the configuration space of `addr`, checking the address, the
    /// offset's range and its alignment for a `width`-byte access.
    fn ptr(&self, addr: PciAddress, offset: u16, width: u16) -> Result<*mut u8, PciError> {
        if addr.bus < self.first_bus
            || addr.bus > self.last_bus
            || addr.device >= 32
            || addr.function >= 8
        {
            return Err(PciError::BadAddress);
        }
        if offset % width != 0 || offset.checked_add(width).is_none_or(|e| e > 4096) {
            return Err(PciError::BadOffset);
        }
        let off = (usize::from(addr.bus - self.first_bus) << 20)
            | (usize::from(addr.device) << 15)
            | (usize::from(addr.function) << 12)
            | usize::from(offset);
        // SAFETY: inside the window promised at construction (bus, device, function and offset
        // checked above).
        Ok(unsafe { self.base.as_ptr().add(off) })
    }

    /// Read an 8-bit register.
    pub fn read8(&self, addr: PciAddress, offset: u16) -> Result<u8, PciError> {
        let p = self.ptr(addr, offset, 1)?;
        // SAFETY: `p` is inside the ECAM window, aligned.
        Ok(unsafe { p.read_volatile() })
    }

    /// Read a 16-bit register.
    pub fn read16(&self, addr: PciAddress, offset: u16) -> Result<u16, PciError> {
        let p = self.ptr(addr, offset, 2)?;
        // SAFETY: `p` is inside the ECAM window, 2-byte aligned.
        Ok(u16::from_le(unsafe { p.cast::<u16>().read_volatile() }))
    }

    /// Read a 32-bit register.
    pub fn read32(&self, addr: PciAddress, offset: u16) -> Result<u32, PciError> {
        let p = self.ptr(addr, offset, 4)?;
        // SAFETY: `p` is inside the ECAM window, 4-byte aligned.
        Ok(u32::from_le(unsafe { p.cast::<u32>().read_volatile() }))
    }

    /// Write an 8-bit register.
    pub fn write8(&self, addr: PciAddress, offset: u16, value: u8) -> Result<(), PciError> {
        let p = self.ptr(addr, offset, 1)?;
        // SAFETY: `p` is inside the ECAM window.
        unsafe { p.write_volatile(value) };
        Ok(())
    }

    /// Write a 16-bit register.
    pub fn write16(&self, addr: PciAddress, offset: u16, value: u16) -> Result<(), PciError> {
        let p = self.ptr(addr, offset, 2)?;
        // SAFETY: `p` is inside the ECAM window, 2-byte aligned.
        unsafe { p.cast::<u16>().write_volatile(value.to_le()) };
        Ok(())
    }

    /// Write a 32-bit register.
    pub fn write32(&self, addr: PciAddress, offset: u16, value: u32) -> Result<(), PciError> {
        let p = self.ptr(addr, offset, 4)?;
        // SAFETY: `p` is inside the ECAM window, 4-byte aligned.
        unsafe { p.cast::<u32>().write_volatile(value.to_le()) };
        Ok(())
    }

    /// The function at `addr`, or `None` if nothing answers there.
    pub fn function(&self, addr: PciAddress) -> Option<FunctionInfo> {
        let id = self.read32(addr, reg::VENDOR_ID).ok()?;
        let vendor = id as u16;
        if vendor == 0xFFFF || vendor == 0 {
            return None;
        }
        let class = self.read32(addr, reg::REVISION).ok()?;
        let header = self.read8(addr, reg::HEADER_TYPE).ok()?;
        Some(FunctionInfo {
            address: addr,
            vendor,
            device: (id >> 16) as u16,
            revision: class as u8,
            prog_if: (class >> 8) as u8,
            subclass: (class >> 16) as u8,
            class: (class >> 24) as u8,
            header_type: header & 0x7F,
        })
    }

    /// Every function on the buses of the window, in address order. Functions 1..8 of a
    /// device are visited only when function 0 says it is a multi-function device.
    pub fn functions(&self) -> Functions<'_> {
        Functions {
            ecam: self,
            next: Some(PciAddress::new(self.first_bus, 0, 0)),
        }
    }

    /// The first function for which `matches` holds.
    pub fn find(&self, mut matches: impl FnMut(&FunctionInfo) -> bool) -> Option<FunctionInfo> {
        self.functions().find(|f| matches(f))
    }

    /// The first function with this vendor and device ID.
    pub fn find_id(&self, vendor: u16, device: u16) -> Option<FunctionInfo> {
        self.find(|f| f.vendor == vendor && f.device == device)
    }

    /// The first function with this class, subclass and programming interface.
    pub fn find_class(&self, class: u8, subclass: u8, prog_if: u8) -> Option<FunctionInfo> {
        self.find(|f| f.class == class && f.subclass == subclass && f.prog_if == prog_if)
    }

    /// Number of BAR slots of the header at `addr` (6 for endpoints, 2 for bridges).
    fn bar_slots(&self, addr: PciAddress) -> Result<u8, PciError> {
        match self.read8(addr, reg::HEADER_TYPE)? & 0x7F {
            0 => Ok(6),
            1 => Ok(2),
            _ => Ok(0),
        }
    }

    /// Size every BAR of `addr`, give each memory BAR an address from `window`, and return
    /// them by index (a 64-bit BAR fills its index; the next index is `None`). I/O BARs are
    /// sized but left unassigned (`address` 0). Memory and I/O decoding are off while this
    /// runs (sizing writes all-ones, which must not decode) and stay off afterwards: call
    /// [`Ecam::enable`] next.
    pub fn assign_bars(
        &self,
        addr: PciAddress,
        window: &mut BarAllocator,
    ) -> Result<[Option<Bar>; 6], PciError> {
        let mut bars = [None; 6];
        let slots = self.bar_slots(addr)?;
        let cmd = self.read16(addr, reg::COMMAND)?;
        self.write16(
            addr,
            reg::COMMAND,
            cmd & !(command::MEMORY_SPACE | command::IO_SPACE),
        )?;
        let mut i = 0u8;
        while i < slots {
            let off = reg::BAR0 + 4 * u16::from(i);
            let (bar, width) = self.size_bar(addr, i, slots)?;
            if let Some(mut bar) = bar {
                if bar.kind != BarKind::Io {
                    let wide = bar.kind == BarKind::Memory64 && bar.prefetchable;
                    let base = window
                        .take(bar.size, wide)
                        .ok_or(PciError::WindowExhausted {
                            bar: i,
                            size: bar.size,
                        })?;
                    if bar.kind == BarKind::Memory32 && base > u64::from(u32::MAX) {
                        return Err(PciError::WindowExhausted {
                            bar: i,
                            size: bar.size,
                        });
                    }
                    let low = self.read32(addr, off)? & 0xF;
                    self.write32(addr, off, (base as u32 & !0xF) | low)?;
                    if bar.kind == BarKind::Memory64 {
                        self.write32(addr, off + 4, (base >> 32) as u32)?;
                    }
                    bar.address = base;
                }
                bars[usize::from(i)] = Some(bar);
            }
            i += width;
        }
        Ok(bars)
    }

    /// The BARs of `addr` as currently programmed (addresses and sizes), without assigning.
    /// Decoding is switched off while sizing and restored afterwards.
    pub fn bars(&self, addr: PciAddress) -> Result<[Option<Bar>; 6], PciError> {
        let mut bars = [None; 6];
        let slots = self.bar_slots(addr)?;
        let cmd = self.read16(addr, reg::COMMAND)?;
        self.write16(
            addr,
            reg::COMMAND,
            cmd & !(command::MEMORY_SPACE | command::IO_SPACE),
        )?;
        let mut i = 0u8;
        let mut result = Ok(());
        while i < slots {
            match self.size_bar(addr, i, slots) {
                Ok((bar, width)) => {
                    bars[usize::from(i)] = bar;
                    i += width;
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        self.write16(addr, reg::COMMAND, cmd)?;
        result.map(|()| bars)
    }

    /// Size BAR `i` (decoding must be off), restoring its address. Returns the BAR (`None`
    /// if unimplemented) and how many slots it occupies.
    fn size_bar(&self, addr: PciAddress, i: u8, slots: u8) -> Result<(Option<Bar>, u8), PciError> {
        let off = reg::BAR0 + 4 * u16::from(i);
        let orig = self.read32(addr, off)?;
        self.write32(addr, off, u32::MAX)?;
        let probe = self.read32(addr, off)?;
        self.write32(addr, off, orig)?;
        if orig & 1 == 1 {
            // I/O BAR: bits 1..2 reserved / type, address from bit 2.
            let mask = probe & !0x3;
            if mask == 0 {
                return Ok((None, 1));
            }
            // A 16-bit I/O decoder leaves the upper half reading zero: only the implemented
            // (writable) bits count.
            let mask = if mask >> 16 == 0 {
                mask | 0xFFFF_0000
            } else {
                mask
            };
            let size = u64::from((!mask).wrapping_add(1));
            return Ok((
                Some(Bar {
                    address: u64::from(orig & !0x3),
                    size,
                    kind: BarKind::Io,
                    prefetchable: false,
                }),
                1,
            ));
        }
        let prefetchable = orig & 0x8 != 0;
        match (orig >> 1) & 0x3 {
            0 => {
                let mask = probe & !0xF;
                if mask == 0 {
                    return Ok((None, 1));
                }
                let size = u64::from((!mask).wrapping_add(1));
                if !size.is_power_of_two() {
                    return Err(PciError::BadBar { bar: i });
                }
                Ok((
                    Some(Bar {
                        address: u64::from(orig & !0xF),
                        size,
                        kind: BarKind::Memory32,
                        prefetchable,
                    }),
                    1,
                ))
            }
            2 => {
                if i + 1 >= slots {
                    return Err(PciError::BadBar { bar: i });
                }
                let hi_off = off + 4;
                let orig_hi = self.read32(addr, hi_off)?;
                self.write32(addr, hi_off, u32::MAX)?;
                let probe_hi = self.read32(addr, hi_off)?;
                self.write32(addr, hi_off, orig_hi)?;
                let mask = (u64::from(probe_hi) << 32) | u64::from(probe & !0xF);
                if mask == 0 {
                    return Ok((None, 2));
                }
                let size = (!mask).wrapping_add(1);
                if !size.is_power_of_two() {
                    return Err(PciError::BadBar { bar: i });
                }
                Ok((
                    Some(Bar {
                        address: (u64::from(orig_hi) << 32) | u64::from(orig & !0xF),
                        size,
                        kind: BarKind::Memory64,
                        prefetchable,
                    }),
                    2,
                ))
            }
            _ => Err(PciError::BadBar { bar: i }),
        }
    }

    /// Turn on memory-space decoding and bus mastering (DMA) for `addr`, and disable legacy
    /// INTx interrupts (the drivers poll). I/O-space decoding is left off.
    pub fn enable(&self, addr: PciAddress) -> Result<(), PciError> {
        let cmd = self.read16(addr, reg::COMMAND)?;
        let cmd = (cmd & !command::IO_SPACE)
            | command::MEMORY_SPACE
            | command::BUS_MASTER
            | command::INTX_DISABLE;
        self.write16(addr, reg::COMMAND, cmd)
    }

    /// The capabilities of `addr`: `(offset, id)` pairs in list order. Empty when the function
    /// has no list. The walk stops at a malformed pointer and after 48 entries (all that a
    /// 256-byte header holds), so a looping list cannot hang it.
    pub fn capabilities(&self, addr: PciAddress) -> Capabilities<'_> {
        let first = match self.read16(addr, reg::STATUS) {
            Ok(status) if status & STATUS_CAP_LIST != 0 => self
                .read8(addr, reg::CAPABILITIES_PTR)
                .map(|p| p & !0x3)
                .unwrap_or(0),
            _ => 0,
        };
        Capabilities {
            ecam: self,
            addr,
            next: first,
            left: MAX_CAPS,
        }
    }

    /// The offset of the first capability with this ID.
    pub fn find_capability(&self, addr: PciAddress, id: u8) -> Option<u16> {
        self.capabilities(addr)
            .find(|&(_, cap)| cap == id)
            .map(|(off, _)| off)
    }
}

/// Iterator over the functions of an [`Ecam`] window; see [`Ecam::functions`].
#[derive(Debug)]
pub struct Functions<'a> {
    ecam: &'a Ecam,
    next: Option<PciAddress>,
}

impl Functions<'_> {
    fn advance(&self, a: PciAddress, multi: bool) -> Option<PciAddress> {
        if multi && a.function < 7 {
            return Some(PciAddress::new(a.bus, a.device, a.function + 1));
        }
        if a.device < 31 {
            return Some(PciAddress::new(a.bus, a.device + 1, 0));
        }
        if a.bus < self.ecam.last_bus {
            return Some(PciAddress::new(a.bus + 1, 0, 0));
        }
        None
    }
}

impl Iterator for Functions<'_> {
    type Item = FunctionInfo;

    fn next(&mut self) -> Option<FunctionInfo> {
        while let Some(a) = self.next {
            let info = self.ecam.function(a);
            // Function 0 decides whether functions 1..8 exist; a missing function 0 means an
            // empty device.
            let multi = if a.function == 0 {
                info.is_some()
                    && self
                        .ecam
                        .read8(a, reg::HEADER_TYPE)
                        .is_ok_and(|h| h & 0x80 != 0)
            } else {
                true
            };
            self.next = self.advance(a, multi);
            if info.is_some() {
                return info;
            }
        }
        None
    }
}

/// Iterator over a function's capability list; see [`Ecam::capabilities`].
#[derive(Debug)]
pub struct Capabilities<'a> {
    ecam: &'a Ecam,
    addr: PciAddress,
    next: u8,
    left: usize,
}

impl Iterator for Capabilities<'_> {
    /// `(offset, capability id)`.
    type Item = (u16, u8);

    fn next(&mut self) -> Option<(u16, u8)> {
        // Capabilities live after the 64-byte standard header, inside the first 256 bytes.
        if self.next < 0x40 || self.left == 0 {
            return None;
        }
        self.left -= 1;
        let off = u16::from(self.next);
        let id = self.ecam.read8(self.addr, off).ok()?;
        self.next = self.ecam.read8(self.addr, off + 1).ok()? & !0x3;
        Some((off, id))
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::boxed::Box;
    use std::vec;

    /// Plain memory standing in for an ECAM window: enough for enumeration and capability
    /// walks (BAR sizing needs hardware semantics and is exercised in QEMU by the firmware).
    struct FakeWindow {
        mem: &'static mut [u32],
    }

    fn function_base(dev: u8) -> usize {
        (usize::from(dev) << 15) / 4
    }

    #[test]
    fn enumerate_and_capabilities() {
        let words = vec![0xFFFF_FFFFu32; (1 << 20) / 4].into_boxed_slice();
        let w = FakeWindow {
            mem: Box::leak(words),
        };
        let b = function_base(1);
        for i in 0..1024 {
            w.mem[b + i] = 0;
        }
        w.mem[b] = 0x1042_1AF4; // vendor 1af4, device 1042
        w.mem[b + 1] = 1 << (16 + 4); // status: capability list
        w.mem[b + 2] = 0x0180_0001; // class 01, subclass 80, rev 1
        w.mem[b + 0x34 / 4] = 0x40;
        w.mem[b + 0x40 / 4] = 0x0000_5009; // vendor cap, next 0x50
        w.mem[b + 0x50 / 4] = 0x0000_4011; // MSI-X, next 0x40 (loop!)
        let base = NonNull::new(w.mem.as_mut_ptr().cast::<u8>()).unwrap();
        // SAFETY: the fake window is 1 MiB of leaked memory.
        let ecam = unsafe { Ecam::new(base, 0, 0) };
        let all: std::vec::Vec<_> = ecam.functions().collect();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].address, PciAddress::new(0, 1, 0));
        assert_eq!((all[0].vendor, all[0].device), (0x1AF4, 0x1042));
        assert_eq!((all[0].class, all[0].subclass), (0x01, 0x80));
        assert!(ecam.find_id(0x1AF4, 0x1042).is_some());
        assert!(ecam.find_id(0x1B36, 0x0010).is_none());
        let caps: std::vec::Vec<_> = ecam.capabilities(all[0].address).collect();
        // The loop is cut after MAX_CAPS entries.
        assert_eq!(caps.len(), MAX_CAPS);
        assert_eq!(caps[0], (0x40, cap_id::VENDOR_SPECIFIC));
        assert_eq!(caps[1], (0x50, cap_id::MSIX));
        assert_eq!(
            ecam.find_capability(all[0].address, cap_id::MSIX),
            Some(0x50)
        );
        assert_eq!(
            ecam.read32(PciAddress::new(1, 0, 0), 0),
            Err(PciError::BadAddress)
        );
        assert_eq!(ecam.read32(all[0].address, 2), Err(PciError::BadOffset));
    }

    #[test]
    fn allocator_aligns_and_fills() {
        let mut a = BarAllocator::new(0x4000_0000, 0x10000);
        assert_eq!(a.take(0x1000, false), Some(0x4000_0000));
        assert_eq!(a.take(0x4000, false), Some(0x4000_4000));
        assert_eq!(a.take(0x100, true), Some(0x4000_8000));
        assert_eq!(a.take(0x3000, false), None);
        assert_eq!(a.take(0x8000, false), None);
        assert_eq!(a.take(0x4000, false), Some(0x4000_C000));
        assert_eq!(a.take(0x10, false), None);
        let mut b = BarAllocator::new(0x4000_0000, 0x1000).with_window64(0x4_0000_0000, 1 << 30);
        assert_eq!(b.take(0x4000, true), Some(0x4_0000_0000));
        assert_eq!(b.take(0x1000, false), Some(0x4000_0000));
    }
}
