package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/convergo/convergo/transport"
)

const testSecret = "0123456789abcdef0123456789abcdef"

// convergo token writes claims, scopes and a token id the server reads.
func TestTokenScopesAndClaims(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"token", "--sub", "carol", "--read", "docs", "--id", "t-7",
		"--claim", `teams=["red","green"]`, "--scope", "docs=team in $claims.teams", "--secret", testSecret}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	j, err := transport.NewJWT([]byte(testSecret), nil)
	if err != nil {
		t.Fatal(err)
	}
	p, err := j.Authenticate(context.Background(), strings.TrimSpace(out.String()))
	if err != nil {
		t.Fatal(err)
	}
	if p.TokenID != "t-7" || p.Scopes["docs"].String() != "team in $claims.teams" || len(p.Claims["teams"].([]any)) != 2 {
		t.Fatalf("principal: %+v (scope %s)", p, p.Scopes["docs"])
	}
	for _, bad := range [][]string{
		{"--scope", "docs=team =="},
		{"--scope", "a b=all"},
		{"--claim", "teams=[oops"},
		{"--claim", "sub=\"x\""},
	} {
		args := append([]string{"token", "--sub", "carol", "--read", "docs", "--secret", testSecret}, bad...)
		if err := run(context.Background(), args, io.Discard, io.Discard); err == nil {
			t.Errorf("%v: no error", bad)
		}
	}
}

// convergo serve --rules refuses a rules file it cannot read.
func TestServeRulesFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rules.json")
	if err := os.WriteFile(path, []byte(`{"todos": {"scope": "owner ==", "color": 1}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	err := run(context.Background(), []string{"serve", "--store", "memory:", "--addr", "127.0.0.1:0", "--rules", path}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "--rules") {
		t.Fatalf("got %v, want a --rules error", err)
	}
	if err := run(context.Background(), []string{"serve", "--store", "memory:", "--rules", path + ".missing"}, io.Discard, io.Discard); err == nil {
		t.Fatal("a missing rules file: no error")
	}
}
