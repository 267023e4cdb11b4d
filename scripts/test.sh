#!/usr/bin/env bash
# The project's test command (see README): installs what the tests need, then runs every check.
#
#   bash scripts/test.sh                      # everything
#   SKIP_MIRI=1 SKIP_FUZZ=1 bash scripts/test.sh   # quick local run
#   FUZZ_SECONDS=120 bash scripts/test.sh     # longer fuzz smoke (default 30 s per target)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

START=$(date +%s)
section() { printf '\n==== %s ==== (at %ss)\n' "$*" "$(( $(date +%s) - START ))"; }
elapsed() { echo "elapsed: $(( $(date +%s) - START ))s"; }
trap 'rc=$?; if [ $rc -ne 0 ]; then echo "FAILED (exit $rc)"; elapsed; fi' EXIT

# ---------------------------------------------------------------- install
section "install: toolchains and packages"
TARGETS=(thumbv7em-none-eabihf riscv64gc-unknown-none-elf)
for t in "${TARGETS[@]}"; do
  echo "installing: rustup target $t (stable)"
done
rustup target add --toolchain stable "${TARGETS[@]}"

if [ "${SKIP_MIRI:-0}" != 1 ] || [ "${SKIP_FUZZ:-0}" != 1 ]; then
  echo "installing: rustup toolchain nightly (minimal profile, if missing)"
  rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
fi
if [ "${SKIP_MIRI:-0}" != 1 ]; then
  echo "installing: rustup +nightly components miri rust-src"
  rustup +nightly component add miri rust-src
fi

# libclang-dev: the benches. fuse3 (fusermount3), fio, sqlite3, git, tar: the FUSE mount test
# (cli/tests/fuse.rs), which skips what is missing. gcc-arm-none-eabi, its binutils and newlib:
# the footprint comparison with littlefs's C build.
APT_PKGS=(libclang-dev fuse3 fio sqlite3 git tar gcc-arm-none-eabi binutils-arm-none-eabi
  libnewlib-arm-none-eabi)
missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "apt packages already present: ${APT_PKGS[*]}"
elif [ "$(id -u)" != 0 ]; then
  echo "skipping apt: not root, cannot install ${missing[*]} (the benches and FUSE tests need them)"
elif ! command -v apt-get >/dev/null 2>&1; then
  echo "skipping apt: apt-get not found, cannot install ${missing[*]}"
else
  echo "installing: apt packages ${missing[*]}"
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
fi

# QEMU: the firmware end-to-end test (qemu-system-misc: riscv64) and the footprint's stack
# measurement (qemu-system-arm). From bookworm-backports: bookworm's own qemu-system-* conflict
# with the newer qemu-utils this machine has.
BACKPORTS_PKGS=(qemu-system-misc qemu-system-arm)
missing=()
for p in "${BACKPORTS_PKGS[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "apt packages already present: ${BACKPORTS_PKGS[*]}"
elif [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "skipping apt: cannot install ${missing[*]} (the QEMU tests need them)"
else
  if ! grep -rqs bookworm-backports /etc/apt/sources.list /etc/apt/sources.list.d/; then
    echo "installing: apt source bookworm-backports (a copy of debian.sources' first stanza)"
    sed -n '1,/^$/p' /etc/apt/sources.list.d/debian.sources |
      sed 's/^Suites:.*/Suites: bookworm-backports/' >/etc/apt/sources.list.d/backports.sources
  fi
  echo "installing: apt packages ${missing[*]} (bookworm-backports)"
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    -t bookworm-backports "${missing[@]}"
fi

if [ "${SKIP_FUZZ:-0}" != 1 ] && ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "installing: cargo-fuzz (cargo install cargo-fuzz --locked)"
  cargo install cargo-fuzz --locked
fi

# ---------------------------------------------------------------- checks
section "cargo fmt --all --check"
cargo fmt --all --check

section "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

# The crash harness's tests run once, on their own, with output shown: each CI part
# (harness/tests/) prints its summary line (workloads, crash states, fault points, images).
section "cargo test --workspace (the crash harness: next section)"
TEST_LOG=$(mktemp)
cargo test --workspace --exclude bonsaifs-harness 2>&1 | tee "$TEST_LOG"

section "crash harness, CI set with its summaries: cargo test -p bonsaifs-harness -- --nocapture"
cargo test -p bonsaifs-harness -- --nocapture --test-threads 1 2>&1 | tee -a "$TEST_LOG"

section "cargo test -p bonsaifs-hal --features std (host drivers)"
cargo test -p bonsaifs-hal --features std 2>&1 | tee -a "$TEST_LOG"

section "without default features (no journal: fsync checkpoints; no nowait: every call blocks; no fast-paths)"
cargo clippy -p bonsaifs --no-default-features --all-targets -- -D warnings
cargo clippy -p bonsaifs --no-default-features --features journal --all-targets -- -D warnings
cargo clippy -p bonsaifs --no-default-features --features fast-paths --all-targets -- -D warnings
cargo test -p bonsaifs --no-default-features --features std,inject-bugs 2>&1 | tee -a "$TEST_LOG"

section "read-only build: an image made by the host tool, read by a --features read-only build"
RO_IMG=$(mktemp)
cargo run -q -p bonsaifs-cli --bin bonsaifs -- mkfs "$RO_IMG" --size 8M
cargo run -q -p bonsaifs-cli --bin bonsaifs -- put src/lib.rs "$RO_IMG:/lib.rs"
BONSAIFS_RO_IMAGE="$RO_IMG" cargo test -p bonsaifs --features read-only --test read_only 2>&1 \
  | tee -a "$TEST_LOG"
rm -f "$RO_IMG"

section "bench smoke: cargo run --release -p bonsaifs-bench --bin compare -- --quick"
cargo run --release -p bonsaifs-bench --bin compare -- --quick

section "queue-depth bench smoke: cargo run --release -p bonsaifs-bench --bin qd -- --quick"
cargo run --release -p bonsaifs-bench --bin qd -- --quick

section "crc32c builds: the check value with --features crc-fast and crc-small"
cargo test -p bonsaifs --lib --features crc-fast wire::header 2>&1 | tee -a "$TEST_LOG"
cargo test -p bonsaifs --lib --features crc-small wire::header 2>&1 | tee -a "$TEST_LOG"

section "footprint: bash scripts/footprint.sh (thumbv7em firmware vs littlefs C, stack in QEMU)"
bash scripts/footprint.sh

section "QEMU end to end: bash scripts/qemu-e2e.sh (every firmware, then ${KILL_RUNS:-10} kill runs)"
KILL_RUNS=${KILL_RUNS:-10} bash scripts/qemu-e2e.sh

for t in "${TARGETS[@]}"; do
  section "cargo build -p bonsaifs --target $t"
  cargo build -p bonsaifs --target "$t"
  section "cargo build -p bonsaifs-hal --no-default-features --target $t"
  cargo build -p bonsaifs-hal --no-default-features --target "$t"
done

section "cargo build -p bonsaifs --features defmt --target thumbv7em-none-eabihf"
cargo build -p bonsaifs --features defmt --target thumbv7em-none-eabihf

if [ "${SKIP_MIRI:-0}" = 1 ]; then
  section "miri: skipped (SKIP_MIRI=1)"
else
  section "miri: cargo +nightly miri test -p bonsaifs --lib"
  PROPTEST_CASES=8 MIRIFLAGS=-Zmiri-disable-isolation \
    cargo +nightly miri test -p bonsaifs --lib
fi

if [ "${SKIP_FUZZ:-0}" = 1 ]; then
  section "fuzz smoke: skipped (SKIP_FUZZ=1)"
else
  shopt -s nullglob
  for f in fuzz/fuzz_targets/*.rs; do
    target=$(basename "$f" .rs)
    section "fuzz smoke: $target (${FUZZ_SECONDS:-30}s)"
    # New inputs go to a scratch corpus; the committed seeds in fuzz/corpus/ are only read.
    scratch=$(mktemp -d)
    seeds=()
    [ -d "fuzz/corpus/$target" ] && seeds+=("corpus/$target")
    (cd fuzz && cargo +nightly fuzz run "$target" "$scratch" "${seeds[@]}" \
      -- -max_total_time="${FUZZ_SECONDS:-30}")
    rm -rf "$scratch"
  done
fi

section "all checks passed"
# One summary line over every cargo test run above.
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$TEST_LOG"
rm -f "$TEST_LOG"
elapsed
