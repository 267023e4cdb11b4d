#!/bin/sh
# Cargo runner of the firmware examples: boots the ELF given as $1 in QEMU, with the machine and
# disks its binary name asks for. `cargo run --bin virt-mmio` ends here.
#
# Environment:
#   BONSAIFS_IMG      filesystem disk image. Unset: a fresh image next to the ELF
#                     (<bin>-disk.img, recreated every run). Set to a missing file: created.
#                     Set to an existing file: used as it is (the firmware mounts it).
#   BONSAIFS_IMG_SIZE size of a created image (truncate syntax), default 64M.
#   BONSAIFS_SCRATCH  scratch disk for the driver conformance suite (overwritten every run).
#                     Unset: a fresh 4 MiB image next to the ELF. "none": no scratch disk, the
#                     firmware skips the suite.
#   BONSAIFS_SECTOR   logical sector size of the virtio-blk filesystem and scratch disks:
#                     512 (default) or 4096 (the driver then reports 4 KiB sectors).
#   QEMU_TIMEOUT      seconds before the run is killed (exit 124), default 300.
#   QEMU_SMP          harts, default 2 (the firmware parks all but one).
#   QEMU              the emulator, default qemu-system-riscv64.
#   QEMU_EXTRA        more QEMU arguments (e.g. "-d guest_errors").
#
# Exit status: QEMU's, i.e. 0 when the firmware passed, its failure code otherwise.
set -eu

elf=${1:?usage: qemu-run.sh FIRMWARE.elf [QEMU args...]}
shift
bin=$(basename "$elf")
dir=$(dirname "$elf")
qemu=${QEMU:-qemu-system-riscv64}

if ! command -v "$qemu" >/dev/null 2>&1; then
    echo "qemu-run: $qemu not found." >&2
    echo "qemu-run: on Debian bookworm install it from bookworm-backports:" >&2
    echo "qemu-run:   apt-get install -t bookworm-backports qemu-system-misc" >&2
    exit 127
fi

fresh_image() { # path size
    rm -f "$1"
    truncate -s "$2" "$1"
}

img=${BONSAIFS_IMG:-}
if [ -z "$img" ]; then
    img="$dir/$bin-disk.img"
    fresh_image "$img" "${BONSAIFS_IMG_SIZE:-64M}"
    echo "qemu-run: fresh disk image $img" >&2
elif [ ! -e "$img" ]; then
    fresh_image "$img" "${BONSAIFS_IMG_SIZE:-64M}"
    echo "qemu-run: created disk image $img" >&2
else
    echo "qemu-run: disk image $img" >&2
fi

scratch=${BONSAIFS_SCRATCH:-}
if [ -z "$scratch" ]; then
    scratch="$dir/$bin-scratch.img"
    fresh_image "$scratch" 4M
elif [ "$scratch" != none ] && [ ! -e "$scratch" ]; then
    fresh_image "$scratch" 4M
fi

drive() { # id file
    printf -- '-drive file=%s,if=none,format=raw,id=%s' "$2" "$1"
}

# The virtio binaries' device checks (with a scratch disk only): a read-only disk (QEMU's null
# driver, reads zeros) and a disk whose reads of 512-byte sector 8 and writes of sector 16 fail
# with EIO (blkdebug; the rules match examples/firmware/src/fault_step.rs).
virtio_check_disks() { # device-kind [addr-of-ro addr-of-faulty]
    conf="$dir/$bin-faults.conf"
    faulty="$dir/$bin-faulty.img"
    printf '[inject-error]\nevent = "none"\niotype = "read"\nerrno = "5"\nsector = "8"\n\n' >"$conf"
    printf '[inject-error]\nevent = "none"\niotype = "write"\nerrno = "5"\nsector = "16"\n' >>"$conf"
    fresh_image "$faulty" 1M
    printf -- ' -drive if=none,id=ro,driver=null-co,size=1M,read-zeroes=on,readonly=on -device %s,drive=ro%s' "$1" "${2:+,addr=$2}"
    printf -- ' -drive if=none,id=faulty,format=raw,file.driver=blkdebug,file.config=%s,file.image.filename=%s -device %s,drive=faulty%s' \
        "$conf" "$faulty" "$1" "${3:+,addr=$3}"
}

# Sector size of the virtio filesystem and scratch disks.
case "${BONSAIFS_SECTOR:-512}" in
512) blk="" ;;
4096) blk=",logical_block_size=4096,physical_block_size=4096" ;;
*) echo "qemu-run: BONSAIFS_SECTOR must be 512 or 4096" >&2; exit 2 ;;
esac

# Per binary: the machine and how the disks are attached. The filesystem disk is always the
# first device of its kind, the scratch disk the second (the firmware relies on that order).
case "$bin" in
virt-mmio)
    machine="-M virt"
    disks="-global virtio-mmio.force-legacy=false $(drive fs "$img") -device virtio-blk-device,drive=fs$blk"
    [ "$scratch" = none ] || disks="$disks $(drive scratch "$scratch") -device virtio-blk-device,drive=scratch$blk$(virtio_check_disks virtio-blk-device)"
    ;;
virt-pci)
    machine="-M virt"
    disks="$(drive fs "$img") -device virtio-blk-pci,drive=fs,addr=0x2$blk"
    [ "$scratch" = none ] || disks="$disks $(drive scratch "$scratch") -device virtio-blk-pci,drive=scratch,addr=0x3$blk$(virtio_check_disks virtio-blk-pci 0x4 0x5)"
    ;;
virt-nvme)
    machine="-M virt"
    disks="$(drive fs "$img") -device nvme,serial=bonsaifs-fs,drive=fs,addr=0x2"
    [ "$scratch" = none ] || disks="$disks $(drive scratch "$scratch") -device nvme,serial=bonsaifs-scratch,drive=scratch,addr=0x3"
    # A third controller on a drive throttled to 1 request/s: the firmware checks the driver's
    # timeout path on it (serial timeout-probe; see src/bin/virt-nvme.rs). No file needed.
    disks="$disks -drive if=none,id=probe,driver=null-co,size=1M,read-zeroes=on,throttling.iops-total=1 -device nvme,serial=timeout-probe,drive=probe,addr=0x4"
    ;;
sifive-u-sd)
    machine="-M sifive_u -no-reboot"
    disks="-drive file=$img,if=sd,format=raw"
    ;;
*)
    echo "qemu-run: no machine known for binary '$bin' (add it to qemu-run.sh)" >&2
    exit 2
    ;;
esac

smp=${QEMU_SMP:-2}
# sifive_u needs at least two harts (hart 0 is the E51 monitor core, parked by the firmware).
# shellcheck disable=SC2086  # word splitting of the option strings is intended
exec timeout --foreground -s KILL "${QEMU_TIMEOUT:-300}" \
    "$qemu" $machine -bios none -nographic -m 256M -smp "$smp" \
    -kernel "$elf" $disks ${QEMU_EXTRA:-} "$@"
