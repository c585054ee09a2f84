package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/convergo/convergo/stores/storetest"
	"github.com/convergo/convergo/transport"
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

// convergo token --claim writes a number as it was given: read into a
// float64, org=9007199254740993 (a 64-bit id) was signed as
// 9007199254740992, another org's id, and its holder bound to that one.
func TestTokenClaimNumbersExact(t *testing.T) {
	const secret = "0123456789abcdef0123456789abcdef"
	var out bytes.Buffer
	if err := run(context.Background(), []string{"token", "--sub", "carol", "--read", "docs", "--secret", secret,
		"--claim", "org=9007199254740993", "--claim", `ids=[18446744073709551615, 1.5]`}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	j, err := transport.NewJWT([]byte(secret), nil)
	if err != nil {
		t.Fatal(err)
	}
	p, err := j.Authenticate(context.Background(), strings.TrimSpace(out.String()))
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprintf("%v %v", p.Claims["org"], p.Claims["ids"]); got != "9007199254740993 [18446744073709551615 1.5]" {
		t.Fatalf("claims org and ids read %s, want 9007199254740993 [18446744073709551615 1.5]", got)
	}
}
