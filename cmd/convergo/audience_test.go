package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/convergo/convergo/stores/storetest"
	"github.com/convergo/convergo/transport/proto"
)

// convergo serve --audience and --issuer admit the tokens convergo token
// mints with the same settings (CONVERGO_AUDIENCE and CONVERGO_ISSUER set
// both commands), and refuse those minted without them, as a token minted
// for another service.
func TestServeAudienceAndIssuer(t *testing.T) {
	const secret = "0123456789abcdef0123456789abcdef"
	t.Setenv("CONVERGO_AUDIENCE", "sync.example.com")
	t.Setenv("CONVERGO_ISSUER", "https://login.example.com")
	var logs storetest.LogBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--addr", "127.0.0.1:0", "--store", "memory:", "--demo=false",
			"--log-format", "json", "--secret", secret}, io.Discard, &logs)
	}()
	t.Cleanup(func() { cancel(); <-done })
	base := "http://" + waitListening(t, logs.String)
	mint := func(args ...string) string {
		var out bytes.Buffer
		args = append([]string{"token", "--sub", "alice", "--read", "notes", "--write", "notes", "--secret", secret}, args...)
		if err := run(context.Background(), args, &out, io.Discard); err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(out.String())
	}
	roundTrip(t, base, mint(), "notes")
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"another audience", []string{"--audience", "billing"}},
		{"no audience", []string{"--audience", ""}},
		{"another issuer", []string{"--issuer", "https://evil.example.com"}},
	} {
		if code := post(t, base, proto.PathPull, mint(tc.args...), proto.PullRequest{Collection: "notes"}, nil); code != http.StatusUnauthorized {
			t.Errorf("a token with %s: %d, want 401", tc.name, code)
		}
	}
	if err := run(context.Background(), []string{"token", "--sub", "a", "--read", "notes", "--secret", secret,
		"--claim", `aud="billing"`}, io.Discard, io.Discard); err == nil {
		t.Error("convergo token --claim aud=...: no error")
	}
}
