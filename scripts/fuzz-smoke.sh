#!/usr/bin/env bash
# Runs every fuzz target for a short while (default 10 s each; FUZZ_SECONDS to change).
# Fuzz targets live beside the crate whose parser they exercise (`crates/*/fuzz`).
# Inputs that once failed are kept in `crates/*/fuzz/regressions/<target>/` and run first,
# every time, so a fixed bug stays fixed whatever the random search finds.
# cargo-fuzz needs nightly-only rustc flags for sanitizers; with `-s none` the coverage
# instrumentation flags it uses are accepted by stable rustc when RUSTC_BOOTSTRAP=1.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
seconds="${FUZZ_SECONDS:-10}"

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz-smoke: installing cargo-fuzz"
  cargo install cargo-fuzz --locked --quiet
fi

status=0
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
for dir in crates/*/fuzz; do
  [ -f "$dir/Cargo.toml" ] || continue
  for target in $(cd "$dir" && RUSTC_BOOTSTRAP=1 cargo fuzz list); do
    echo "fuzz-smoke: $dir $target (${seconds} s)"
    regressions=("$dir/regressions/$target"/*)
    if [ -e "${regressions[0]}" ]; then
      if ! (cd "$dir" && RUSTC_BOOTSTRAP=1 cargo fuzz run -s none "$target" \
            "${regressions[@]#"$dir/"}" >"$log" 2>&1); then
        echo "fuzz-smoke: $target FAILED on a kept regression input; last lines:"
        tail -n 40 "$log"
        status=1
        continue
      fi
      echo "fuzz-smoke: ${#regressions[@]} regression input(s) pass"
    fi
    if (cd "$dir" && RUSTC_BOOTSTRAP=1 cargo fuzz run -s none "$target" -- \
          -max_total_time="$seconds" >"$log" 2>&1); then
      grep -E "^Done" "$log" || true
    else
      echo "fuzz-smoke: $target FAILED; last lines:"
      tail -n 40 "$log"
      status=1
    fi
  done
done
exit $status
