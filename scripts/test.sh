#!/usr/bin/env bash
# The project's test command (CI runs it through .ci/run):
#   1. scripts/install-test-deps.sh   (nginx, wrk, node/npm, PostgreSQL when missing; the test OpenID provider)
#   2. cargo fmt --all --check
#   3. cargo clippy --workspace --all-targets -- -D warnings
#   4. cargo nextest run --workspace --no-fail-fast   (cargo test --workspace without nextest)
#   5. cargo test --workspace --doc                   (nextest does not run doc tests)
#   6. scripts/fuzz-smoke.sh                          (every fuzz target for 10 s)
# Every step runs even when an earlier one failed, so one run shows all problems; the script exits
# non-zero when any step failed and names the failed steps last.
# The proxy benchmark (bench/proxy/run.sh) is not part of it: it is slow and its figures are noisy.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ "${CI:-}" = "true" ]; then
  export CARGO_TERM_COLOR=never
  # A CI run builds once from a fresh clone: incremental state and debug info only cost time.
  export CARGO_INCREMENTAL=0
  export CARGO_PROFILE_DEV_DEBUG="${CARGO_PROFILE_DEV_DEBUG:-line-tables-only}"
  export CARGO_PROFILE_TEST_DEBUG="${CARGO_PROFILE_TEST_DEBUG:-line-tables-only}"
fi

failed=()

step() {
  local name="$1"
  shift
  echo "==> $name: $*"
  local start=$SECONDS
  if "$@"; then
    echo "==> $name: ok ($((SECONDS - start)) s)"
  else
    echo "==> $name: FAILED (exit $?, $((SECONDS - start)) s)"
    failed+=("$name")
  fi
}

step deps scripts/install-test-deps.sh
step fmt cargo fmt --all --check
step clippy cargo clippy --workspace --all-targets -- -D warnings
if cargo nextest --version >/dev/null 2>&1; then
  step tests cargo nextest run --workspace --no-fail-fast
else
  step tests cargo test --workspace --no-fail-fast
fi
step doctests cargo test --workspace --doc --no-fail-fast
step fuzz scripts/fuzz-smoke.sh

if [ "${#failed[@]}" -gt 0 ]; then
  echo "test.sh: FAILED steps: ${failed[*]}"
  exit 1
fi
echo "test.sh: all steps passed"
