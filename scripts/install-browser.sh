#!/usr/bin/env bash
# Installs what the browser end-to-end test (crates/sessionkit-cli/tests/browser_e2e.rs) needs:
# Debian's chromium, node + npm, and playwright-core under e2e/node_modules (from
# e2e/package-lock.json). Idempotent; does nothing that is already there. Run as root (CI is).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || missing+=(chromium)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-browser: apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -d e2e/node_modules/playwright-core ]; then
  echo "install-browser: npm ci in e2e/"
  (cd e2e && npm ci --no-audit --no-fund --loglevel=error)
fi
echo "install-browser: $(/usr/bin/chromium --version 2>/dev/null || echo 'chromium ?'), node $(node --version)"
