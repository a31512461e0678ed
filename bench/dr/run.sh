#!/usr/bin/env bash
# Disaster-recovery switch benchmark (issue 5, "Measured"), under steady load with several
# connectors: crates/benchkit/src/bin/dr.rs. Real parts: a DNS server (hickory, in-process)
# serving the record signed by `tsuzuku dr record`, the normal gateway and a DR gateway (real
# `tsuzuku serve` processes), CONNECTORS real `tsuzuku connect` processes looking the record
# up every INTERVAL_S, and a fixed-rate load of GETs to a critical app through each connector.
#
# Per trial: the normal gateway is killed and the record published at once; then
#   - the time until ALL connectors are in DR mode (target <= interval + 1 s),
#   - failed requests to the critical app during the switch (kill -> that connector in DR
#     mode; the normal site is gone, so these are the outage) and after it (target 0),
#   - after a restart of the normal gateway and the record's withdrawal, the time until all
#     connectors are back to normal and the failed requests during that return.
# Medians over TRIALS, as ratios to the target. Last line:
#   `dr all-connectors switch p50 ms: A (target <= T), failed after switch: B`
#
# Usage: bench/dr/run.sh [--smoke]
#   --smoke   2 trials, 2 connectors: checks that the script works.
# Environment: CONNECTORS (3), TRIALS (5), INTERVAL_S (1), LOAD_INTERVAL_MS (50, per
#   connector), AFTER_S (3), LOGS (default a new directory under $TMPDIR), TSUZUKU_LOG (the
#   processes' log filter, default warn), TSUZUKU_BIN (use this binary instead of building
#   target/release/tsuzuku).
# Takes about 1 minute with the defaults (plus the release build).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"

for arg in "$@"; do
  case "$arg" in
    --smoke)
      export TRIALS="${TRIALS:-2}" CONNECTORS="${CONNECTORS:-2}"
      ;;
    -h | --help)
      sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "run.sh: unknown argument '$arg' (only --smoke)" >&2
      exit 2
      ;;
  esac
done

target="${CARGO_TARGET_DIR:-$root/target}"
if [ -n "${TSUZUKU_BIN:-}" ]; then
  cargo build -q --release -p tsuzuku-benchkit --bin dr-bench
  bin="$TSUZUKU_BIN"
else
  cargo build -q --release -p tsuzuku --bin tsuzuku -p tsuzuku-benchkit --bin dr-bench
  bin="$target/release/tsuzuku"
fi
[ -x "$bin" ] || {
  echo "run.sh: no tsuzuku binary at $bin" >&2
  exit 1
}
# Private copies: target/ is shared, and a rebuild during the run (the normal gateway is
# restarted every trial) must not swap the binaries under the benchmark.
tmp="$(mktemp -d "${TMPDIR:-/tmp}/tsuzuku-dr-bin.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
cp "$bin" "$tmp/tsuzuku"
cp "$target/release/dr-bench" "$tmp/dr-bench"
"$tmp/dr-bench" "$tmp/tsuzuku"
