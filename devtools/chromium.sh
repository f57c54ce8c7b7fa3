#!/usr/bin/env bash
# Install Debian's chromium for the browser tests (devtools/browser.py) if it is missing.
# Idempotent, quiet, no stdin: what `make test` and the browser tests' fixture run, as root in CI.
# Playwright drives this binary (executable_path); it never downloads a browser of its own.
set -euo pipefail
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
LOG=${CHROMIUM_INSTALL_LOG:-/tmp/chromium-install.log}

if [ -x "$CHROMIUM" ]; then
  exit 0
fi
echo "installing Chromium (Debian package chromium; log: $LOG)"
export DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium; } >"$LOG" 2>&1 </dev/null; then
  echo "ERROR: installing chromium failed; last lines of $LOG:" >&2
  tail -n 20 "$LOG" >&2
  exit 1
fi
"$CHROMIUM" --version 2>/dev/null
