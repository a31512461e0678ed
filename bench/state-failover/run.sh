#!/usr/bin/env bash
# State failover drill with a real PostgreSQL primary and streaming hot standby (issue 3):
# runs the store's failover test RUNS times (default 10) and reports medians and the worst case of
#   - time until reads work through the standby after SIGKILL of the primary's processes,
#   - time until the loss is noticed (the store's role turns read-only),
#   - time from `promote()` to the first accepted write,
#   - acknowledged writes lost under synchronous replication (RPO; target 0).
# Anchors: Zoho promises RPO 30 min / RTO 60 min; Patroni's default leader TTL is 30 s.
# Then automatic promotion (postgres_autopromote, 2 s without a primary): kill to first write.
# Then asynchronous replication (postgres_async_rpo): replication lag under load and the
# acknowledged writes lost when the primary is killed.
# Then the management plane is lost: a gateway fed by signed snapshots keeps serving a steady
# client load (every 20 ms) while its control plane and PostgreSQL are killed (snapshot_e2e);
# reported: failed requests (target 0) and the slowest request.
# Last line: `state failover p50 read ms: A, promote-to-write p50 ms: B, acknowledged writes lost: C,
# data-plane failed requests: D`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
runs="${RUNS:-10}"
scripts/install-test-deps.sh >/dev/null
cargo test -q -p tsuzuku-store --test postgres_failover --no-run 2>/dev/null
reads=(); notices=(); promotes=(); lost=0
for i in $(seq 1 "$runs"); do
  line="$(cargo test -q -p tsuzuku-store --test postgres_failover -- --nocapture 2>&1 | grep 'failover figures:' || true)"
  if [ -z "$line" ]; then echo "run $i: the failover test failed"; exit 1; fi
  r=$(sed -E 's/.*standby ([0-9]+) ms after the kill.*/\1/' <<<"$line")
  n=$(sed -E 's/.*read-only\) after ([0-9]+) ms.*/\1/' <<<"$line")
  p=$(sed -E 's/.*promotion to first write ([0-9]+) ms.*/\1/' <<<"$line")
  l=$(sed -E 's/.*acknowledged but lost ([0-9]+).*/\1/' <<<"$line")
  echo "run $i: reads ${r} ms, noticed ${n} ms, promote-to-write ${p} ms, acknowledged writes lost ${l}"
  reads+=("$r"); notices+=("$n"); promotes+=("$p"); lost=$((lost + l))
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
maxof() { printf '%s\n' "$@" | sort -n | tail -1; }
echo "reads through the standby: median $(median "${reads[@]}") ms, max $(maxof "${reads[@]}") ms (target <= 1000)"
echo "loss noticed:              median $(median "${notices[@]}") ms, max $(maxof "${notices[@]}") ms"
echo "promote to first write:    median $(median "${promotes[@]}") ms, max $(maxof "${promotes[@]}") ms (target <= 10000)"
echo "acknowledged writes lost (synchronous replication), all runs: $lost (target 0)"
cargo test -q -p tsuzuku-store --test postgres_autopromote --no-run 2>/dev/null
autos=()
for i in $(seq 1 "$runs"); do
  line="$(cargo test -q -p tsuzuku-store --test postgres_autopromote -- --nocapture 2>&1 | grep 'auto-promotion figures:' || true)"
  if [ -z "$line" ]; then echo "auto-promotion run $i: the test failed"; exit 1; fi
  a=$(sed -E 's/.*writes work ([0-9]+) ms.*/\1/' <<<"$line")
  echo "auto-promotion run $i: writes work ${a} ms after the kill (rule: 2000 ms without a primary)"
  autos+=("$a")
done
echo "automatic promotion, kill to first write: median $(median "${autos[@]}") ms, max $(maxof "${autos[@]}") ms (target <= 10000)"
cargo test -q -p tsuzuku-store --test postgres_async_rpo --no-run 2>/dev/null
for i in $(seq 1 "$runs"); do
  line="$(cargo test -q -p tsuzuku-store --test postgres_async_rpo -- --nocapture 2>&1 | grep 'async figures:' || true)"
  if [ -z "$line" ]; then echo "async run $i: the test failed"; exit 1; fi
  echo "asynchronous replication run $i: ${line#*async figures: }"
done
cargo test -q -p tsuzuku --test snapshot_e2e --no-run 2>/dev/null
dp_failed=0; dp_total=0; slowest=()
for i in $(seq 1 "$runs"); do
  line="$(cargo test -q -p tsuzuku --test snapshot_e2e -- --nocapture 2>&1 | grep 'data-plane figures:' || true)"
  if [ -z "$line" ]; then echo "management-plane run $i: the test failed"; exit 1; fi
  n=$(sed -E 's/.*figures: ([0-9]+) requests.*/\1/' <<<"$line")
  f=$(sed -E 's/.* ([0-9]+) failed.*/\1/' <<<"$line")
  w=$(sed -E 's/.*slowest ([0-9]+) ms.*/\1/' <<<"$line")
  echo "management-plane run $i: $n requests, $f failed, slowest $w ms"
  dp_total=$((dp_total + n)); dp_failed=$((dp_failed + f)); slowest+=("$w")
done
echo "control plane and database down: $dp_failed of $dp_total requests failed (target 0), slowest median $(median "${slowest[@]}") ms"
echo "state failover p50 read ms: $(median "${reads[@]}"), promote-to-write p50 ms: $(median "${promotes[@]}"), acknowledged writes lost: $lost, data-plane failed requests: $dp_failed"
