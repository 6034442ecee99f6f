#!/usr/bin/env bash
# Runs the browser tests of chat-server's bundled client (headless Chromium + playwright-core).
# Installs what they need when missing: Debian's chromium, and the npm packages (npm ci).
# Works from any directory. Needs the server binary: target/debug/chat-server, or CHAT_SERVER_BIN.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"

if [ -z "${CHROMIUM:-}" ] && [ ! -x /usr/bin/chromium ]; then
  echo "run.sh: installing chromium (apt-get)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  apt-get install -y chromium
fi

command -v npm >/dev/null 2>&1 || { echo "run.sh: node/npm (node >= 20) not found" >&2; exit 1; }

if [ -z "${CHAT_SERVER_BIN:-}" ] && [ ! -x "$repo/target/debug/chat-server" ]; then
  echo "run.sh: building chat-server" >&2
  (cd "$repo" && cargo build -p chat-server)
fi

cd "$here"
npm ci --no-audit --no-fund
npm test
