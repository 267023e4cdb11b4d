#!/usr/bin/env bash
# `NOWAIT | DSYNC` throughput at queue depth 1, 8 and 32 in QEMU, from the firmware examples
# (examples/firmware) on virtio-blk (virt-mmio) and NVMe (virt-nvme).
#
#   bash scripts/qemu-qd.sh                 # Markdown table on stdout
#   QD_LIST="1 32" QD_BINS=virt-nvme bash scripts/qemu-qd.sh
#
# For each binary and depth it builds the firmware with `BONSAIFS_QD=<depth>` (the depth of
# its queued-write phase, examples/firmware/src/workload.rs), boots it on a fresh 64 MiB image
# with no scratch disk (so the driver conformance suite is skipped), and reads its log:
#   * `SUMMARY tickets= immediate= bytes= write_kib_s=` gives writes per second of the queued
#     phase (the firmware times it with the machine timer, `mtime`, 10 MHz on virt);
#   * flushes and device writes per write come from a `QUEUED-IO writes=<n> flushes=<n>` line
#     (the driver's counts over the queued phase only) when the firmware prints one, else from
#     the `DRIVER` line's `writes=` / `flushes=` (the whole run), else "n/a".
# The queued phase is the firmware's own mix (4, 8, 16 KiB aligned and unaligned 1..4 KiB
# writes into 8 files) and it prints one `DSYNC-DONE` line per ticket on the UART, which QEMU
# serves in the same thread: the figures compare depths and devices, they are no device limit.
# Installs nothing; needs what scripts/qemu-e2e.sh needs (qemu-system-riscv64, the rustup
# target riscv64gc-unknown-none-elf).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
fw=$root/examples/firmware
target_dir=${CARGO_TARGET_DIR:-$root/target}
out=${QD_DIR:-$target_dir/qemu-qd}
read -r -a depths <<<"${QD_LIST:-1 8 32}"
read -r -a bins <<<"${QD_BINS:-virt-mmio virt-nvme}"
mkdir -p "$out"

command -v qemu-system-riscv64 >/dev/null 2>&1 || {
  echo "qemu-qd: qemu-system-riscv64 is missing (Debian: qemu-system-misc from bookworm-backports)" >&2
  exit 1
}

# kv LINE KEY: the value of KEY=value in LINE (empty if absent).
kv() { tr ' ' '\n' <<<"$1" | sed -n "s/^$2=//p" | sed -n '1p'; }

echo "| device | QD | writes | writes/s | KiB/s | flushes/write | device writes/write | WouldBlock |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
for bin in "${bins[@]}"; do
  for qd in "${depths[@]}"; do
    (cd "$fw" && BONSAIFS_QD=$qd CARGO_TARGET_DIR="$target_dir" \
      cargo build --release --quiet --bin "$bin" >&2)
    # qemu-run.sh picks the machine from the file name: one directory per depth.
    mkdir -p "$out/qd$qd"
    elf=$out/qd$qd/$bin
    cp "$target_dir/riscv64gc-unknown-none-elf/release/$bin" "$elf"
    img=$out/qd$qd/$bin.img
    rm -f "$img"
    truncate -s 64M "$img"
    log=$out/qd$qd/$bin.log
    if ! BONSAIFS_IMG=$img BONSAIFS_SCRATCH=none "$fw/qemu-run.sh" "$elf" >"$log" 2>&1; then
      echo "qemu-qd: $bin at depth $qd failed; log: $log" >&2
      exit 1
    fi
    summary=$(grep '^SUMMARY ' "$log" | sed -n '1p' || true)
    driver=$(grep '^QUEUED-IO ' "$log" | sed -n '1p' || true)
    [ -n "$driver" ] || driver=$(grep '^DRIVER ' "$log" | sed -n '1p' || true)
    start=$(grep '^WORKLOAD-START ' "$log" | sed -n '1p' || true)
    n=$(($(kv "$summary" tickets) + $(kv "$summary" immediate)))
    bytes=$(kv "$summary" bytes)
    kib_s=$(kv "$summary" write_kib_s)
    flushes=$(kv "$driver" flushes)
    writes=$(kv "$driver" writes)
    awk -v bin="$bin" -v qd="$(kv "$start" depth)" -v n="$n" -v bytes="$bytes" -v kib="$kib_s" \
      -v fl="$flushes" -v wr="$writes" -v wb="$(kv "$summary" would_block)" 'BEGIN {
        wps = bytes > 0 ? n * kib * 1024 / bytes : 0
        printf "| %s | %s | %d | %.0f | %d | %s | %s | %s |\n", bin, qd, n, wps, kib,
          fl == "" ? "n/a" : sprintf("%.3f", fl / n), wr == "" ? "n/a" : sprintf("%.2f", wr / n), wb
      }'
  done
done
