# Convergo's make targets. `make test` is the README's test command: it
# starts the services the integration tests need and runs every test.
GO ?= go

.PHONY: test test-go test-short bench serve vet

test:
	bash scripts/test.sh

test-short:
	$(GO) test ./...

vet:
	gofmt -l . | (! grep .) && $(GO) vet ./...

serve:
	$(GO) run ./cmd/convergo serve

bench:
	bash scripts/bench.sh
