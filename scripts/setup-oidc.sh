#!/usr/bin/env bash
# Installs the test OpenID provider (npm `oidc-provider`, pinned in tests/oidc/package-lock.json)
# into tests/oidc/node_modules. The identity crate's and the gateway's OIDC tests start it with
# Node; they fail with a pointer to this script when it is missing.
#
# Needs Node.js >= 20 and npm (oidc-provider prefers Node 22 but works on 20).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="$root/tests/oidc"

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "setup-oidc.sh: node and npm are needed (Debian: apt-get install -y nodejs npm)" >&2
  exit 1
fi

major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$major" -lt 20 ]; then
  echo "setup-oidc.sh: Node.js >= 20 is needed, found $(node --version)" >&2
  exit 1
fi

cd "$dir"
if [ -f package-lock.json ]; then
  # Exactly the locked versions; fails if package.json and the lock disagree.
  npm ci --no-audit --no-fund
else
  npm install --no-audit --no-fund
fi

node -e 'import("oidc-provider").then(() => console.log("setup-oidc.sh: oidc-provider is ready in tests/oidc/node_modules"))'
