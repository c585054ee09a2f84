package transport

import (
	"context"
	"fmt"
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

// An imposed scope (a token's cvg_scopes) that breaks the scope limits
// once its parameters are bound (a claim of more than 1,024 values for
// an in list, a value that makes it over 4,096 bytes) never widens a
// read: the principal sees nothing of the collection, or is refused;
// never a record outside what the scope would allow.
func TestImposedScopeOverLimitsWhenBound(t *testing.T) {
	ts := newTestServer(t, nil)
	admin := ts.token(t, "admin", []string{"docs"}, []string{"docs"})
	ts.push(t, admin,
		set(t, "docs", "d1", map[string]any{"team": "red"}),
		set(t, "docs", "d2", map[string]any{"team": "blue"}),
	)
	many := make([]string, 2000)
	for i := range many {
		many[i] = fmt.Sprintf("t%d", i)
	}
	many[0] = "red"
	cases := map[string]map[string]any{
		"in list over 1,024": {"sub": "eve", "exp": time.Now().Add(time.Hour).Unix(), "read": []string{"docs"}, "teams": many,
			proto.ClaimScopes: map[string]any{"docs": []any{"in", "team", map[string]any{"$": "claims.teams"}}}},
		"bound value over 4,096 bytes": {"sub": "eve", "exp": time.Now().Add(time.Hour).Unix(), "read": []string{"docs"}, "team": strings.Repeat("x", 5000),
			proto.ClaimScopes: map[string]any{"docs": []any{"or", []any{"eq", "team", "red"}, []any{"eq", "team", map[string]any{"$": "claims.team"}}}}},
	}
	for name, claims := range cases {
		t.Run(name, func(t *testing.T) {
			tok := signRaw(t, claims)
			a := ts.post(t, proto.PathPull, tok, proto.PullRequest{Collection: "docs"})
			if a.status != http.StatusOK {
				if code := a.errorCode(t); code == proto.CodeInternal {
					t.Fatalf("pull: %s", code)
				}
				return
			}
			var page proto.PullResponse
			if err := proto.Decode(a.body, &page); err != nil {
				t.Fatal(err)
			}
			for _, r := range page.Records {
				if r.ID == "d2" {
					t.Fatalf("read d2, outside the imposed scope: %+v", page.Records)
				}
			}
		})
	}
}

// The live session's token is its hello's: one in the URL's query string
// or in an Authorization header of the upgrade is not read.
func TestLiveTokenOnlyInHello(t *testing.T) {
	ts := newTestServer(t, nil)
	tok := ts.token(t, "alice", []string{"notes"}, []string{"notes"})
	for name, dial := range map[string]func() (*liveClient, error){
		"query": func() (*liveClient, error) {
			c, _, err := ts.dialURL(t, "?token="+tok+"&access_token="+tok, nil)
			return c, err
		},
		"header": func() (*liveClient, error) {
			c, _, err := ts.dial(t, http.Header{"Authorization": {"Bearer " + tok}})
			return c, err
		},
	} {
		t.Run(name, func(t *testing.T) {
			c, err := dial()
			if err != nil {
				t.Fatal(err)
			}
			c.send(proto.Hello{Protocol: proto.Version, Replica: "c1"})
			m, ok := c.recv().(proto.ErrorMessage)
			if !ok || m.Code != proto.CodeUnauthenticated {
				t.Fatalf("hello without a token: %#v, want error unauthenticated", m)
			}
		})
	}
}

// A token that is not yet valid (nbf in the future) is unauthenticated.
func TestTokenNotYetValid(t *testing.T) {
	ts := newTestServer(t, nil)
	tok := signRaw(t, map[string]any{"sub": "alice", "exp": time.Now().Add(2 * time.Hour).Unix(),
		"nbf": time.Now().Add(time.Hour).Unix(), "read": []string{"notes"}})
	if code := ts.pullCode(t, tok, "notes"); code != proto.CodeUnauthenticated {
		t.Fatalf("nbf an hour ahead: %q, want unauthenticated", code)
	}
}
