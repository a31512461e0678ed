#!/usr/bin/env bash
# Where the gateway's time goes during the proxy benchmark, on the CPU and off it.
#
# Runs bench/proxy/run.sh (one round) and, during the gateway's measured run, records the
# scheduler's events with `perf sched record` for SECONDS. Prints:
#   - run time per gateway thread and each CPU's idle time (`perf sched timehist -s`): idle CPUs
#     while the gateway is loaded mean it waits for something other than the CPU;
#   - the audit threads' time off the CPU, by what they waited in (epoll: no work; io_schedule
#     or blkdev_issue_flush: the disk, which every append in flight waits for too);
#   - the audit appender's waits of 1 ms or more for the disk, with the system call.
# Then run.sh's own summary (its figures include perf's overhead: use run.sh alone for those).
#
# Usage: bench/proxy/offcpu.sh [SECONDS]   (default 4; needs perf, e.g. Debian's linux-perf)
# Environment: TSUZUKU_BIN, as for run.sh; KEEP=1 keeps the perf data (path printed);
# PACED=1 records the gateway's paced run (PACED_RPS) instead of its full-load run.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
secs="${1:-4}"
case "$secs" in
  '' | *[!0-9]*) echo "offcpu.sh: SECONDS must be a whole number, got '$secs'" >&2; exit 2 ;;
esac
if ! perf sched record -o /dev/null -- true >/dev/null 2>&1; then
  echo "offcpu.sh: 'perf sched record' does not work here (install linux-perf; run as root)" >&2
  exit 1
fi

tmp="$(mktemp -d /tmp/tsuzuku-offcpu.XXXXXX)"
duration=$((secs + 8))
bench_pid=""
cleanup() {
  if [ -n "$bench_pid" ] && kill -0 "$bench_pid" 2>/dev/null; then
    kill "$bench_pid" 2>/dev/null || true
    wait "$bench_pid" 2>/dev/null || true
  fi
  if [ "${KEEP:-0}" = 1 ]; then echo "offcpu.sh: kept $tmp" >&2; else rm -rf "$tmp"; fi
}
trap cleanup EXIT

ROUNDS=1 DURATION="$duration" "$root/bench/proxy/run.sh" >"$tmp/run.log" 2>&1 &
bench_pid=$!

# The gateway's measured run: a wrk with this run's duration against a port the gateway
# listens on (the warm-up run has another duration), or with PACED=1 its paced run.
gw=""
for _ in $(seq 1 2400); do
  kill -0 "$bench_pid" 2>/dev/null || break
  gw="$(pgrep -f -- '--data-dir .*/gateway serve' | head -1 || true)"
  if [ -n "$gw" ]; then
    ports="$(ss -ltnpH 2>/dev/null | grep "pid=$gw," | awk '{print $4}' | sed 's/.*://')"
    for w in $(pgrep -x wrk || true); do
      args="$(tr '\0' ' ' <"/proc/$w/cmdline" 2>/dev/null || true)"
      for port in $ports; do
        if [ "${PACED:-0}" = 1 ]; then
          case "$args" in *paced.lua*":$port/"*) break 3 ;; esac
        else
          case "$args" in *"-d ${duration}s"*":$port/"*) break 3 ;; esac
        fi
      done
    done
  fi
  sleep 0.25
done
if ! kill -0 "$bench_pid" 2>/dev/null; then
  echo "offcpu.sh: the benchmark ended before the gateway's run; its output:" >&2
  cat "$tmp/run.log" >&2
  exit 1
fi

sleep 3
perf sched record -g -o "$tmp/sched.data" -- sleep "$secs" >/dev/null 2>&1
perf sched timehist -i "$tmp/sched.data" --state --max-stack 14 -p "$gw" >"$tmp/timehist.txt" 2>/dev/null

echo "== gateway threads and idle CPUs over ${secs} s of the gateway's run"
echo "thread  parent  times-run  run-ms  min  avg  max  stddev%  migrations"
perf sched timehist -i "$tmp/sched.data" -s 2>/dev/null |
  awk -v gw="$gw" '($1 ~ "/" gw "\\]" && $4 >= 10) || /idle for/' | sed 's/^ *//'

# Each line of the timehist: the task's time off the CPU before it ran (column 4), and at its
# end the state it left the CPU in (column 7: S sleeping, D waiting for IO, R preempted) and
# the kernel stack. Off-CPU time is charged to the stack the
# task left in before.
echo
echo "== audit threads off the CPU, by where they waited (ms, times)"
awk 'NR > 3 && $3 ~ /^tsuzuku-audit/ {
  task = $3; sub(/\[.*/, "", task)
  if ($3 in last) { t[task " " last[$3]] += $4; n[task " " last[$3]]++ }
  last[$3] = $7 " " $8 " <- " $10 " <- " $12
} END { for (k in t) printf "%10.1f %7d  %s\n", t[k], n[k], k }' "$tmp/timehist.txt" | sort -rn | head -12

echo
echo "== the appender's waits for the disk of 1 ms or more (ms, system call)"
awk 'NR > 3 && $3 ~ /^tsuzuku-audit\[/ {
  if (($3 in last) && $4 >= 1.0 && last[$3] ~ /io_schedule|blkdev_issue_flush/) {
    sys = last[$3]; sub(/ <- do_syscall_64.*/, "", sys); sub(/.* <- /, "", sys)
    printf "%8.2f  %s\n", $4, sys
  }
  s = ""; for (i = 8; i <= NF; i++) s = s " " $i; last[$3] = s
}' "$tmp/timehist.txt" | sort -rn | awk '{n[$2]++; t[$2] += $1; if (!($2 in m) || $1 > m[$2]) m[$2] = $1}
  END { for (k in n) printf "  %-24s %4d waits, %7.1f ms in all, longest %5.1f ms\n", k, n[k], t[k], m[k] }'

wait "$bench_pid" || { echo "offcpu.sh: run.sh failed:" >&2; cat "$tmp/run.log" >&2; exit 1; }
bench_pid=""
echo
echo "== run.sh (one round, with perf recording part of the gateway's run)"
tail -n 4 "$tmp/run.log"
