#!/usr/bin/env bash
# Disaster-recovery switch drill (issue 5): runs the end-to-end DR test RUNS times (default 5) —
# a real DNS server serving the signed record, a real normal gateway, a real DR gateway and the
# real `tsuzuku connect` with a 1 s lookup interval — and reports medians and the worst case of
#   - the time from publishing the record to the connector in DR mode (target <= interval + 1 s),
#   - the time from the normal site's return (record withdrawn) to the connector back to normal.
# The critical app's first request after the switch, a sign-in at the DR gateway, must succeed
# in every run (the test asserts it), as must the refusals of the non-critical app and of
# internet destinations off the allowlist.
# Last line: `dr switch p50 ms: A (target <= 2000), back to normal p50 ms: B, failed runs: C`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
runs="${RUNS:-5}"
scripts/install-test-deps.sh >/dev/null
cargo test -q -p tsuzuku --test dr_connect_e2e --no-run 2>/dev/null
to_ms() { awk '{ v=$1; if (v ~ /ms$/) { sub(/ms$/,"",v); print int(v) } else if (v ~ /µs$/) { print 0 } else { sub(/s$/,"",v); print int(v*1000) } }'; }
switch=(); back=(); failed=0
for i in $(seq 1 "$runs"); do
  out="$(cargo test -q -p tsuzuku --test dr_connect_e2e -- --nocapture 2>&1 || true)"
  s="$(grep -oE 'DR mode [0-9.]+(ms|s|µs) after publishing' <<<"$out" | awk '{print $3}' | to_ms || true)"
  b="$(grep -oE 'back to normal [0-9.]+(ms|s|µs) after' <<<"$out" | awk '{print $4}' | to_ms || true)"
  if [ -z "$s" ] || [ -z "$b" ] || ! grep -q 'test result: ok' <<<"$out"; then
    echo "run $i: FAILED"; failed=$((failed + 1)); continue
  fi
  echo "run $i: record published -> DR mode ${s} ms; normal site back -> normal ${b} ms"
  switch+=("$s"); back+=("$b")
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
maxof() { printf '%s\n' "$@" | sort -n | tail -1; }
if [ "${#switch[@]}" -eq 0 ]; then echo "dr switch p50 ms: -, back to normal p50 ms: -, failed runs: $failed"; exit 1; fi
echo "record -> DR mode:     median $(median "${switch[@]}") ms, max $(maxof "${switch[@]}") ms (target <= 2000 with a 1 s interval)"
echo "site back -> normal:   median $(median "${back[@]}") ms, max $(maxof "${back[@]}") ms"
echo "dr switch p50 ms: $(median "${switch[@]}") (target <= 2000), back to normal p50 ms: $(median "${back[@]}"), failed runs: $failed"
