package transport

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/convergo/convergo/transport/proto"
)

// The claims the server reads (sub, exp, nbf, iat, jti, read, write,
// cvg_scopes) are read by their exact names. Go's JSON decoding matches
// a struct's fields case-insensitively, so a claim "Write" or "JTI" among
// a token's further claims (an issuer's own, scope parameters copied
// from a user's profile, say) was read as write or jti: a read-only token
// granted writing everywhere, a token took another id than the deny list
// knows it by. A token holding such a claim is unauthenticated, and
// IssueToken refuses to write one.
func TestTokenClaimNamesAreExact(t *testing.T) {
	j, err := NewJWT(testSecret, nil)
	if err != nil {
		t.Fatal(err)
	}
	exp := time.Now().Add(time.Hour).Unix()
	for _, tc := range []struct {
		name  string
		value any
	}{
		{"Write", []string{"*"}},
		{"READ", []string{"*"}},
		{"Jti", "another-id"},
		{"Cvg_Scopes", map[string]any{}},
		{"NBF", 1},
		{"Sub", "mallory"},
		{"\u017fub", "mallory"}, // ſub: Unicode folds it to sub, and it sorts after it
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok := signRaw(t, map[string]any{"sub": "alice", "exp": exp, "read": []string{"notes"}, tc.name: tc.value})
			p, err := j.Authenticate(context.Background(), tok)
			if !errors.Is(err, ErrUnauthenticated) {
				t.Fatalf("a token with a claim %q: %+v (%v), want unauthenticated", tc.name, p, err)
			}
			if _, err := j.IssueToken(TokenSpec{Subject: "alice", Read: []string{"notes"}, TTL: time.Hour,
				Claims: map[string]any{tc.name: tc.value}}); err == nil || !strings.Contains(err.Error(), tc.name) {
				t.Fatalf("IssueToken with a claim %q: %v, want refused", tc.name, err)
			}
		})
	}
	// Other claims, of any case, are the issuer's own.
	tok := signRaw(t, map[string]any{"sub": "alice", "exp": exp, "read": []string{"notes"}, "Teams": []string{"red"}, proto.ClaimScopes: map[string]any{}})
	if p, err := j.Authenticate(context.Background(), tok); err != nil || p.CanWrite("notes") {
		t.Fatalf("a token with a claim Teams: %+v %v", p, err)
	}
}

// readClaims holds the JSON name of every field the claims struct reads,
// its embedded registered claims' included: a name left out would be
// read under any case again.
func TestReadClaimsAreTheStructs(t *testing.T) {
	want := []string{"iss", "sub", "aud", "exp", "nbf", "iat", "jti", "read", "write", proto.ClaimScopes}
	got := slices.Sorted(slices.Values(readClaims))
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("readClaims = %v, want %v", got, want)
	}
}
