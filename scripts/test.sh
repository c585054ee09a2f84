#!/usr/bin/env bash
# The README's test command (`make test`, and what .ci/run calls): it starts
# the services the integration tests need (Redis, a Redis cluster, DynamoDB
# Local, Chromium; see scripts/services.sh), installs the npm dependencies,
# and runs every test: Go with the race detector, the JS client's node tests
# and the browser end-to-end tests in Chromium. Under it a missing service is
# a failure, never a skip (CONVERGO_REQUIRE_SERVICES=1). It stops what it
# started when it ends.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

command -v go >/dev/null || { echo "go is not installed (https://go.dev/dl/)" >&2; exit 1; }
command -v npm >/dev/null || { echo "node and npm are needed for the JS tests" >&2; exit 1; }

step "gofmt / go vet"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './*/node_modules/*'))
if [ -n "$unformatted" ]; then echo "gofmt needed: $unformatted" >&2; exit 1; fi
go vet ./...

step "services"
export CONVERGO_SVC_SESSION="test-$$"
trap 'bash scripts/services.sh down' EXIT
eval "$(bash scripts/services.sh up)"
export CONVERGO_REQUIRE_SERVICES=1

step "npm dependencies"
for dir in jsclient stores/dynamodb/testdata/jswriter scripts/bench/js; do
	if [ -f "$dir/package-lock.json" ]; then
		(cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
	fi
done

step "go test -race"
go test -race -count=1 -timeout 20m ./...

step "JS client: type check and tests (node --test)"
(cd jsclient && npm run typecheck && npm test)

step "benchmark drivers: one small run each (timings mean nothing here; a driver the client outgrew fails)"
for impl in convergo convergo-idb; do
	node scripts/bench/js/b3-run.mjs "$impl" B3.1 1 >/dev/null
done

step "browser end-to-end tests (Chromium)"
bash scripts/e2e.sh

step "all tests passed"
