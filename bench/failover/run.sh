#!/usr/bin/env bash
# Connector failover benchmark (issue 4, "Measured"): two sites, each a real `tsuzuku serve`
# gateway process (one shared store, own port), an upstream app, the real `tsuzuku connect`,
# and a steady client load of idempotent GETs through it — plain http:// requests (the
# connector speaks TLS to the gateway and may retry them) and https:// requests inside CONNECT
# tunnels (end-to-end TLS, like a browser).
#
# 1. Blackout: SIGKILL of the primary site's gateway, TRIALS times. Per trial: time until
#    requests succeed through the secondary (until every request sent before the first success
#    after the kill has its answer), failed requests, time until the connector reports the
#    switch; in FAILBACKS of the trials also the time from the primary's restart until traffic
#    is back on it (the others replace the connector instead, to keep the run short: the
#    connector's hold-down is 30 s). Median and p99 (nearest rank: with < 100 trials, the
#    worst), then the line `failover p99 ms: X, failed requests: Y` (Y: the idempotent
#    plain-HTTP requests; HTTPS requests in tunnels are reported beside it).
# 2. Brownout: both sites behind the user-space delaying proxy (crates/testkit/src/delay.rs;
#    the kernel has no netem), CONNECTORS connectors watching. ±JITTER_MS on every chunk in
#    each direction of both sites for JITTER_SECS: switches per minute. Then BROWNOUT_MS more
#    round-trip time on the primary: time until traffic moves; then back.
# 3. Every figure against its target (failover p99 <= 1000 ms, 0 failed requests, brownout move
#    <= 3 s, <= 1 switch per minute), then `failover p99 ms: X, failed requests: Y` again as
#    the last line.
#
# Usage: bench/failover/run.sh [--smoke]
#   --smoke   3 trials, 1 failback, 2 connectors, 20 s of jitter: checks that the script works.
# Environment: TRIALS (20), FAILBACKS (5), INTERVAL_MS (10, plain-HTTP load), TLS_INTERVAL_MS
#   (20, HTTPS load), BROWNOUT_MS (80), CONNECTORS (4), JITTER_MS (30), JITTER_SECS (90),
#   DWELL_S (32: the connector's 30 s min_dwell plus a margin, waited before brownout
#   measurements), BLACKOUT_VIA_PROXY (0; 1 reaches each gateway through a TCP proxy that
#   stays up when the gateway dies, like a load balancer: connections are accepted, then
#   closed), LOG_DIR (default a new directory under $TMPDIR; gateway and connector
#   stderr), TSUZUKU_LOG (their log filter, default warn), TSUZUKU_BIN (use this binary
#   instead of building target/release/tsuzuku).
# Takes about 9 minutes with the defaults (plus the release build).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"

for arg in "$@"; do
  case "$arg" in
    --smoke)
      export TRIALS="${TRIALS:-3}" FAILBACKS="${FAILBACKS:-1}" CONNECTORS="${CONNECTORS:-2}"
      export JITTER_SECS="${JITTER_SECS:-20}"
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
  cargo build -q --release -p tsuzuku-benchkit --bin failover-bench
  bin="$TSUZUKU_BIN"
else
  cargo build -q --release -p tsuzuku --bin tsuzuku -p tsuzuku-benchkit --bin failover-bench
  bin="$target/release/tsuzuku"
fi
[ -x "$bin" ] || {
  echo "run.sh: no tsuzuku binary at $bin" >&2
  exit 1
}
# Private copies: target/ is shared, and a rebuild during the run (the primary's gateway is
# restarted every trial) must not swap the binaries under the benchmark.
tmp="$(mktemp -d "${TMPDIR:-/tmp}/tsuzuku-failover-bin.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
cp "$bin" "$tmp/tsuzuku"
cp "$target/release/failover-bench" "$tmp/failover-bench"
"$tmp/failover-bench" "$tmp/tsuzuku"
