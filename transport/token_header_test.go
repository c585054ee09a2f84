package transport

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// A JWS header's crit names extensions the recipient must understand
// and process, or reject the token (RFC 7515, 4.1.11; RFC 7519, 7.2): an
// issuer that marks one critical (b64 false, say, which changes what is
// signed) means it to change how the token is read. This server
// understands none, so a token whose header has crit is unauthenticated,
// whatever it lists. Other header parameters (typ, kid) are not read.
func TestTokenCritHeaderIsRefused(t *testing.T) {
	j, err := NewJWT(testSecret, nil)
	if err != nil {
		t.Fatal(err)
	}
	claims := jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(time.Hour).Unix(), "read": []string{"notes"}}
	sign := func(header map[string]any) string {
		t.Helper()
		tok := jwt.NewWithClaims(jwt.SigningMethodHS256, claims)
		for k, v := range header {
			tok.Header[k] = v
		}
		s, err := tok.SignedString(testSecret)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	for _, tc := range []struct {
		name   string
		header map[string]any
		want   error // nil: admitted
	}{
		{"plain", nil, nil},
		{"typ and kid", map[string]any{"typ": "at+jwt", "kid": "k1"}, nil},
		{"crit of an unknown extension", map[string]any{"crit": []string{"x-extension"}, "x-extension": 1}, ErrUnauthenticated},
		{"crit b64", map[string]any{"crit": []string{"b64"}, "b64": true}, ErrUnauthenticated},
		{"crit empty", map[string]any{"crit": []string{}}, ErrUnauthenticated},
		{"crit not a list", map[string]any{"crit": "exp"}, ErrUnauthenticated},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := j.Authenticate(context.Background(), sign(tc.header))
			switch {
			case tc.want == nil && err != nil:
				t.Fatalf("header %v: %v, want admitted", tc.header, err)
			case tc.want != nil && !errors.Is(err, tc.want):
				t.Fatalf("header %v: got %+v (err %v), want %v", tc.header, p, err, tc.want)
			}
		})
	}
}
