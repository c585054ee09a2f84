package transport

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/convergo/convergo/transport/proto"
)

// Every principal the server admits can be put on the deny list: a token
// whose subject or token id no deny record could name (section 12: ids
// sub:<subject> and jti:<token id> are record ids, 1 to 512 bytes of
// UTF-8 without control characters) would be a credential no operator
// could revoke. Such a token is unauthenticated (section 4).
func TestEveryAdmittedPrincipalCanBeDenied(t *testing.T) {
	ts := newTestServer(t, nil)
	ctx := context.Background()
	exp := time.Now().Add(time.Hour).Unix()
	sign := func(claims jwt.MapClaims) string {
		s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(testSecret)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	cases := []struct {
		name   string
		claims jwt.MapClaims
		denyID string
	}{
		{"control character in sub", jwt.MapClaims{"sub": "eve\x01", "exp": exp, "read": []string{"notes"}}, DenySubject + "eve\x01"},
		{"newline in sub", jwt.MapClaims{"sub": "eve\nmallory", "exp": exp, "read": []string{"notes"}}, DenySubject + "eve\nmallory"},
		{"sub too long to name", jwt.MapClaims{"sub": strings.Repeat("e", 600), "exp": exp, "read": []string{"notes"}}, DenySubject + strings.Repeat("e", 600)},
		{"jti too long to name", jwt.MapClaims{"sub": "eve2", "jti": strings.Repeat("j", 600), "exp": exp, "read": []string{"notes"}}, DenyTokenID + strings.Repeat("j", 600)},
		{"control character in jti", jwt.MapClaims{"sub": "eve3", "jti": "t\x7f", "exp": exp, "read": []string{"notes"}}, DenyTokenID + "t\x7f"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tok := sign(tc.claims)
			code := ts.pullCode(t, tok, "notes")
			if code == proto.CodeUnauthenticated {
				return // refused: nothing to revoke
			}
			if code != "" {
				t.Fatalf("pull: %s", code)
			}
			if err := Deny(ctx, ts.eng, DenyEntry{ID: tc.denyID}); err != nil {
				t.Fatalf("the server admits this token, but the deny list cannot name it: %v", err)
			}
			eventually(t, "revoked", func() bool { return ts.pullCode(t, tok, "notes") == proto.CodeRevoked })
		})
	}
}

// In demo mode a request without a token is the anonymous principal; a
// request that sends credentials the server cannot read (an Authorization
// header that is not "Bearer <token>") is not silently served as
// anonymous: it is unauthenticated, as a bad token is.
func TestDemoNoDowngradeFromOtherCredentials(t *testing.T) {
	ts := newTestServer(t, func(c *Config) { c.Demo = true })
	for _, h := range []string{"Basic YWxpY2U6c2VjcmV0", "Bearer", "Bearer    ", "Token abc", "Bearerabc", "abc"} {
		a := ts.post(t, proto.PathPull, "", proto.PullRequest{Collection: DemoCollection}, func(r *http.Request) {
			r.Header.Set("Authorization", h)
		})
		if a.status == http.StatusOK {
			t.Errorf("Authorization %q: served as the anonymous principal", h)
			continue
		}
		if got := a.errorCode(t); got != proto.CodeUnauthenticated {
			t.Errorf("Authorization %q: %s, want unauthenticated", h, got)
		}
	}
	// Without the header, the demo's anonymous principal.
	if a := ts.post(t, proto.PathPull, "", proto.PullRequest{Collection: DemoCollection}); a.status != http.StatusOK {
		t.Fatalf("anonymous pull: status %d", a.status)
	}
}
