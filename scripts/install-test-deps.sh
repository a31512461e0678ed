#!/usr/bin/env bash
# Installs what the test suite and the proxy benchmark need beyond the Rust toolchain, on Debian:
#   nginx, wrk      bench/proxy/run.sh (nginx is also the benchmark's upstream)
#   nodejs, npm     the test OpenID provider (scripts/setup-oidc.sh)
#   postgresql      the PostgreSQL store tests (a real primary and streaming standby, started
#                   by crates/testkit/src/postgres.rs from /usr/lib/postgresql/<version>/bin)
#   chromium        the browser test (crates/tsuzuku/tests/browser_e2e.rs: headless Chromium
#                   through the connector's PAC file; it fails under CI=true without it)
#   moto[server]    the S3-compatible server of the DR allowlist tests (pip, in a venv under
#                   ~/.cache/tsuzuku/moto-venv; crates/testkit/src/s3.rs finds it there)
# then installs the test OpenID provider with scripts/setup-oidc.sh.
#
# Idempotent: apt-get runs (after an `apt-get update`) only when a package is missing.
# Needs root, or sudo without a password.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# command name -> Debian package
declare -A wanted=(
  [nginx]=nginx
  [wrk]=wrk
  [node]=nodejs
  [npm]=npm
  [chromium]=chromium
)

missing=()
for cmd in nginx wrk node npm chromium; do
  if ! command -v "$cmd" >/dev/null 2>&1 && ! [ -x "/usr/sbin/$cmd" ]; then
    missing+=("${wanted[$cmd]}")
  fi
done
# PostgreSQL's server binaries are not on PATH: look for initdb where Debian puts them.
if ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
  missing+=(postgresql)
fi

if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    as_root=()
  elif command -v sudo >/dev/null 2>&1; then
    as_root=(sudo -n)
  else
    echo "install-test-deps.sh: missing ${missing[*]}; run as root or install sudo" >&2
    exit 1
  fi
  echo "install-test-deps.sh: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  "${as_root[@]}" apt-get update -qq >/dev/null
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    -o Dpkg::Use-Pty=0 --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "install-test-deps.sh: nginx, wrk, node, npm, chromium and postgresql are present"
fi

if [ -f "$root/scripts/setup-oidc.sh" ]; then
  bash "$root/scripts/setup-oidc.sh"
fi

# moto's S3-compatible server, in its own venv (pip refuses system-wide installs on Debian).
# Idempotent: skipped when the venv already has a working moto_server.
moto_venv="${XDG_CACHE_HOME:-$HOME/.cache}/tsuzuku/moto-venv"
if ! "$moto_venv/bin/moto_server" --help >/dev/null 2>&1; then
  if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ]; then as_root=(); else as_root=(sudo -n); fi
    echo "install-test-deps.sh: installing python3-venv"
    "${as_root[@]}" apt-get update -qq >/dev/null
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      -o Dpkg::Use-Pty=0 --no-install-recommends python3-venv >/dev/null
  fi
  echo "install-test-deps.sh: installing moto[server] into $moto_venv"
  rm -rf "$moto_venv"
  python3 -m venv "$moto_venv"
  "$moto_venv/bin/pip" install --quiet --disable-pip-version-check 'moto[server]>=5,<6'
fi
echo "install-test-deps.sh: moto_server is ready in $moto_venv"
