#!/usr/bin/env bash
# End-to-end test of the bare-metal firmware examples in QEMU, checked from the host.
#
#   1. Builds the firmware (examples/firmware, riscv64gc-unknown-none-elf) and the host tools
#      (bonsaifs, bonsaifs-fwcheck).
#   2. Boots every firmware binary on a fresh disk image (plus the scratch, read-only and
#      faulty disks of the device checks) with a timeout — the virtio ones a second time with
#      4 KiB logical sectors — saves the UART log, and checks on the host:
#      `bonsaifs fsck` clean, and `bonsaifs-fwcheck` (the image mounts, fsck is clean, every
#      write the firmware reported as DSYNC-complete is there with exactly its bytes, every
#      synced rename is there, the run printed PASS).
#   3. Kill test: boots virt-mmio again KILL_RUNS times on one image, each time killing QEMU
#      with SIGKILL at a random instant between the log's WORKLOAD-START and the end of the
#      workload; after each kill the image must mount on the host, fsck clean, and hold every
#      write printed as DSYNC-complete before the kill (renames: atomic).
#
# Environment:
#   KILL_RUNS       kill-test runs (default 10; 0 skips the kill test)
#   E2E_BINS        firmware binaries to boot (default: every src/bin/*.rs of the firmware)
#   E2E_DIR         where images and logs go (default: $CARGO_TARGET_DIR or target, /qemu-e2e)
#   E2E_TIMEOUT     seconds per boot before it counts as hung (default 300)
#   E2E_SEED        seed of the kill instants (default: random; printed, so a run can be replayed)
#
# Installs nothing. Needs qemu-system-riscv64 (Debian: qemu-system-misc from bookworm-backports)
# and the rustup target riscv64gc-unknown-none-elf; says so and fails if either is missing.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
fw="$root/examples/firmware"
target_dir=${CARGO_TARGET_DIR:-$root/target}
out=${E2E_DIR:-$target_dir/qemu-e2e}
kill_runs=${KILL_RUNS:-10}
boot_timeout=${E2E_TIMEOUT:-300}
seed=${E2E_SEED:-$(( (RANDOM << 15) | RANDOM ))}

say() { printf 'qemu-e2e: %s\n' "$*"; }
die() { say "$*" >&2; exit 1; }

command -v qemu-system-riscv64 >/dev/null 2>&1 || die "qemu-system-riscv64 is missing. \
On Debian bookworm: add bookworm-backports to the apt sources, then \
'apt-get install -y --no-install-recommends -t bookworm-backports qemu-system-misc'."
if command -v rustup >/dev/null 2>&1 &&
    ! rustup target list --installed | grep -qx riscv64gc-unknown-none-elf; then
    die "the Rust target is missing: rustup target add riscv64gc-unknown-none-elf"
fi
command -v setsid >/dev/null 2>&1 || die "setsid is missing (Debian package util-linux)"

mkdir -p "$out"
say "building the firmware and the host tools"
(cd "$fw" && CARGO_TARGET_DIR="$target_dir" cargo build --release --bins --quiet)
(cd "$root" && CARGO_TARGET_DIR="$target_dir" cargo build --release -p bonsaifs-cli --bins --quiet)
elf_dir="$target_dir/riscv64gc-unknown-none-elf/release"
cli="$target_dir/release/bonsaifs"
fwcheck="$target_dir/release/bonsaifs-fwcheck"

if [ -n "${E2E_BINS:-}" ]; then
    read -r -a bins <<<"$E2E_BINS"
else
    bins=()
    for f in "$fw"/src/bin/*.rs; do bins+=("$(basename "$f" .rs)"); done
fi

# host_checks IMAGE LOG [--killed]: fsck with the host tool, then the firmware checker (which
# mounts, replaying the journal), then fsck again on the replayed image.
host_checks() {
    local img=$1 log=$2 killed=${3:-}
    local ok=0
    "$cli" fsck "$img" >"$log.fsck" 2>&1 || { say "  bonsaifs fsck (before replay) failed:"; sed 's/^/    /' "$log.fsck"; ok=1; }
    # shellcheck disable=SC2086  # $killed is empty or one flag
    "$fwcheck" $killed "$img" "$log" >"$log.check" 2>&1 || ok=1
    sed 's/^/  /' "$log.check"
    "$cli" fsck "$img" >>"$log.fsck" 2>&1 || { say "  bonsaifs fsck (after replay) failed"; ok=1; }
    return $ok
}

# ---------------------------------------------------------------------------------------------
# 1. Every firmware binary, once, on a fresh image; the virtio ones also with 4 KiB sectors.
declare -A verdict
labels=()
# boot_and_check LABEL BIN [VAR=VALUE...]: one boot on fresh images, then the host checks.
boot_and_check() {
    local label=$1 bin=$2
    shift 2
    local img="$out/$label.img" scratch="$out/$label-scratch.img" log="$out/$label.log" rc
    labels+=("$label")
    rm -f "$img" "$scratch"
    say "booting $label (log: $log)"
    set +e
    env "$@" BONSAIFS_IMG="$img" BONSAIFS_SCRATCH="$scratch" QEMU_TIMEOUT="$boot_timeout" \
        "$fw/qemu-run.sh" "$elf_dir/$bin" </dev/null >"$log" 2>"$log.stderr"
    rc=$?
    set -e
    tr -d '\r' <"$log" | grep -E '^(DISK|CONFORMANCE|FAULTS|SUMMARY|DRIVER|FSCK|PASS|FAIL|PANIC|TRAP)' | sed 's/^/  /' || true
    if [ $rc -ne 0 ] || ! tr -d '\r' <"$log" | grep -qx PASS; then
        say "  $label: FAILED in QEMU (exit $rc; QEMU's messages in $log.stderr)"
        verdict[$label]=fail
        return
    fi
    if host_checks "$img" "$log"; then verdict[$label]=pass; else verdict[$label]=fail; fi
}
for bin in "${bins[@]}"; do
    boot_and_check "$bin" "$bin"
done
for bin in virt-mmio virt-pci; do
    case " ${bins[*]} " in
    *" $bin "*) boot_and_check "$bin-4k" "$bin" BONSAIFS_SECTOR=4096 ;;
    esac
done

# ---------------------------------------------------------------------------------------------
# 2. Kill test on virt-mmio.
kill_pass=0 kill_fail=0 kill_instants=() kill_writes=()
if [ "$kill_runs" -gt 0 ]; then
    img="$out/kill.img"
    rm -f "$img"
    truncate -s 128M "$img"
    RANDOM=$seed
    say "kill test: $kill_runs runs of virt-mmio on $img (seed $seed)"

    # boot LOG: start QEMU in its own process group (so one SIGKILL takes the whole group),
    # sets $pid.
    boot() {
        : >"$1"
        BONSAIFS_IMG="$img" BONSAIFS_SCRATCH=none QEMU_TIMEOUT="$boot_timeout" \
            setsid "$fw/qemu-run.sh" "$elf_dir/virt-mmio" </dev/null >"$1" 2>"$1.stderr" &
        pid=$!
    }
    # wait_for LOG PATTERN SECONDS: until the log has the line, or the run ended.
    wait_for() {
        local deadline=$((SECONDS + $3))
        until tr -d '\r' <"$1" 2>/dev/null | grep -q "$2"; do
            kill -0 "$pid" 2>/dev/null || return 1
            [ $SECONDS -lt "$deadline" ] || return 1
            sleep 0.005
        done
    }
    now_ms() { date +%s%3N; }

    # A full run first: formats the image and measures how long the workload takes.
    log="$out/kill-0.log"
    boot "$log"
    wait_for "$log" WORKLOAD-START "$boot_timeout" || die "kill test: the first run never started its workload (see $log)"
    t0=$(now_ms)
    wait "$pid" || die "kill test: the first run failed (see $log)"
    span=$(( $(now_ms) - t0 ))
    host_checks "$img" "$log" >/dev/null || die "kill test: the first run's image does not check (see $log.check)"
    say "  workload lasts ~${span} ms after WORKLOAD-START; killing at random instants in it"

    run=1 attempts=0
    while [ $run -le "$kill_runs" ]; do
        attempts=$((attempts + 1))
        [ $attempts -le $((kill_runs * 3)) ] || die "kill test: too many kills landed after the workload"
        log="$out/kill-$run.log"
        boot "$log"
        if ! wait_for "$log" WORKLOAD-START 120; then
            kill -KILL -- -"$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
            die "kill test run $run: no WORKLOAD-START (see $log)"
        fi
        delay=$(( ((RANDOM << 15) | RANDOM) % (span + 1) ))
        sleep "$(printf '%d.%03d' $((delay / 1000)) $((delay % 1000)))"
        kill -KILL -- -"$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        if tr -d '\r' <"$log" | grep -qx PASS; then
            # Finished before the kill: not a mid-workload instant; draw another one.
            say "  run $run: the workload finished before the kill at +${delay} ms; drawing again"
            host_checks "$img" "$log" >/dev/null || { say "  run $run: a finished run does not check"; kill_fail=$((kill_fail + 1)); }
            continue
        fi
        writes=$(tr -d '\r' <"$log" | sed '$d' | grep -c '^DSYNC-DONE' || true)
        # The host checks a copy: the firmware's next boot mounts the killed image itself, so
        # its own journal replay is exercised too.
        cp --sparse=always "$img" "$img.check"
        if host_checks "$img.check" "$log" --killed >"$log.summary" 2>&1; then
            kill_pass=$((kill_pass + 1))
            say "  run $run: killed at +${delay} ms after $writes DSYNC completions: image ok"
        else
            kill_fail=$((kill_fail + 1))
            say "  run $run: killed at +${delay} ms after $writes DSYNC completions: FAILED"
            sed 's/^/    /' "$log.summary"
            cp --sparse=always "$img" "$out/kill-$run-failed.img"
        fi
        kill_instants+=("$delay")
        kill_writes+=("$writes")
        run=$((run + 1))
    done

    # Recovery: one more full run on the last killed image (the firmware replays it).
    log="$out/kill-recovery.log"
    boot "$log"
    if wait "$pid" && host_checks "$img" "$log" >"$log.summary" 2>&1; then
        say "  recovery run after the last kill: ok"
    else
        say "  recovery run after the last kill: FAILED (see $log)"
        kill_fail=$((kill_fail + 1))
    fi
fi

# ---------------------------------------------------------------------------------------------
say "summary"
failed=0
for label in "${labels[@]}"; do
    say "  $label: ${verdict[$label]}"
    [ "${verdict[$label]}" = pass ] || failed=1
done
if [ "$kill_runs" -gt 0 ]; then
    say "  kill test: $kill_pass of $kill_runs killed runs passed, recovery run $([ "$kill_fail" -eq 0 ] && echo ok || echo FAILED) (kill instants ms: ${kill_instants[*]}; DSYNC completions before each kill: ${kill_writes[*]}; seed $seed)"
    [ "$kill_fail" -eq 0 ] && [ "$kill_pass" -eq "$kill_runs" ] || failed=1
fi
[ $failed -eq 0 ] && say "PASS" || say "FAILED (images and logs in $out)"
exit $failed
