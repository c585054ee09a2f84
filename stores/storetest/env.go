package storetest

import (
	"os"
	"testing"
)

// RequireEnvVar is set by the README's test command (scripts/test.sh). When it
// is "1", an integration test whose service endpoint is missing fails instead
// of skipping, so a service that did not start can never pass silently.
const RequireEnvVar = "CONVERGO_REQUIRE_SERVICES"

// Endpoint returns the value of the environment variable name, which names a
// service endpoint (CONVERGO_REDIS_ADDR, CONVERGO_DYNAMODB_ENDPOINT, ...).
// When it is unset the test is skipped with a message saying how to run it,
// or fails when CONVERGO_REQUIRE_SERVICES=1.
func Endpoint(t testing.TB, name string) string {
	t.Helper()
	v := os.Getenv(name)
	if v != "" {
		return v
	}
	if os.Getenv(RequireEnvVar) == "1" {
		t.Fatalf("%s is not set but %s=1: the service did not start (see scripts/services.sh)", name, RequireEnvVar)
	}
	t.Skipf("integration test: set %s to run it (`eval \"$(bash scripts/services.sh up)\"` starts every service), or run `make test`", name)
	return ""
}
