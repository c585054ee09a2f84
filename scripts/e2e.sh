#!/usr/bin/env bash
# Browser end-to-end tests: builds the convergo binary, makes sure the JS
# client's npm dependencies are installed, and runs jsclient/e2e/*.test.mjs
# (node --test) against the real server on Redis in Debian's Chromium.
#
#   CONVERGO_REDIS_ADDR=127.0.0.1:6379 CONVERGO_CHROMIUM=/usr/bin/chromium bash scripts/e2e.sh [node --test args...]
#
# Both variables are required (eval "$(bash scripts/services.sh up)" sets
# them). Extra arguments go to node --test, e.g. --test-name-pattern=merge.
# Screenshots land in jsclient/e2e/artifacts/ (git-ignored) and stay there.
# CONVERGO_E2E_TIMEOUT (seconds, default 600) bounds the whole run.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "e2e: $*" >&2; exit 1; }

[ -n "${CONVERGO_REDIS_ADDR:-}" ] || die "CONVERGO_REDIS_ADDR is not set (host:port of Redis; eval \"\$(bash scripts/services.sh up)\" sets it)"
[ -n "${CONVERGO_CHROMIUM:-}" ] || die "CONVERGO_CHROMIUM is not set (path of Chromium, e.g. /usr/bin/chromium; scripts/services.sh installs it)"
[ -x "$CONVERGO_CHROMIUM" ] || die "CONVERGO_CHROMIUM=$CONVERGO_CHROMIUM is not an executable (apt-get install chromium)"
command -v node >/dev/null || die "node is not installed"
command -v go >/dev/null || die "go is not installed"
redis_host=${CONVERGO_REDIS_ADDR%:*} redis_port=${CONVERGO_REDIS_ADDR##*:}
(exec 3<>"/dev/tcp/$redis_host/$redis_port") 2>/dev/null || die "nothing answers on CONVERGO_REDIS_ADDR=$CONVERGO_REDIS_ADDR"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/convergo-e2e.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

echo "e2e: building convergo"
go build -o "$tmp/convergo" ./cmd/convergo
export CONVERGO_BIN="$tmp/convergo"

# npm ci when node_modules is missing or older than the lock file.
if [ ! -f jsclient/node_modules/.package-lock.json ] ||
	[ jsclient/package-lock.json -nt jsclient/node_modules/.package-lock.json ]; then
	echo "e2e: npm ci (jsclient)"
	(cd jsclient && npm ci --no-audit --no-fund --loglevel=error)
fi

mkdir -p jsclient/e2e/artifacts
echo "e2e: Chromium $("$CONVERGO_CHROMIUM" --version 2>/dev/null | head -1), Redis $CONVERGO_REDIS_ADDR"
# One file at a time: each starts its own server and browser, and the
# machine is small.
rc=0
timeout --signal=TERM --kill-after=15 "${CONVERGO_E2E_TIMEOUT:-600}" \
	node --test --test-concurrency=1 --test-reporter=spec "$@" jsclient/e2e/ || rc=$?
[ "$rc" != 124 ] || echo "e2e: timed out after ${CONVERGO_E2E_TIMEOUT:-600}s" >&2
echo "e2e: artifacts (screenshots, server logs) in jsclient/e2e/artifacts/: $(ls jsclient/e2e/artifacts | tr '\n' ' ')"
exit "$rc"
