#!/usr/bin/env bash
# Installs Debian's chromium and chromium-driver (for tests/explore/test_browser.py) when missing.
# Idempotent and quiet: does nothing when both are present; prints apt's log only if the install fails.
set -euo pipefail

if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
export DEBIAN_FRONTEND=noninteractive
if ! { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium chromium-driver; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "install-browser.sh: could not install chromium and chromium-driver with apt-get" >&2
    exit 1
fi
if [ ! -x /usr/bin/chromium ]; then
    echo "install-browser.sh: apt-get succeeded but /usr/bin/chromium is missing" >&2
    exit 1
fi
