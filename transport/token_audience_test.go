package transport

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/convergo/convergo/transport/proto"
)

// RFC 7519 (4.1.3): a recipient that does not identify itself with a value
// of a token's aud claim must reject the token. A token minted for another
// service that shares the secret (an API gateway's, a second product's)
// names that service in aud; the server without an audience of its own
// took it, and granted whatever its read and write claims said.
func TestTokenForeignAudienceRefused(t *testing.T) {
	j, err := NewJWT(testSecret, nil)
	if err != nil {
		t.Fatal(err)
	}
	exp := time.Now().Add(time.Hour).Unix()
	for _, aud := range []any{"billing", []string{"billing", "reports"}, "", []string{}} {
		tok := signRaw(t, map[string]any{"sub": "alice", "exp": exp, "read": []string{"*"}, "aud": aud})
		if p, err := j.Authenticate(context.Background(), tok); !errors.Is(err, ErrUnauthenticated) {
			t.Errorf("a token for audience %#v on a server without one: %+v (%v), want unauthenticated", aud, p.Subject, err)
		}
	}
	tok := signRaw(t, map[string]any{"sub": "alice", "exp": exp, "read": []string{"*"}, "iss": "anyone"})
	if _, err := j.Authenticate(context.Background(), tok); err != nil {
		t.Errorf("a token with an issuer on a server that names none: %v, want admitted", err)
	}
}

// A server with an audience admits only tokens that name it (aud a string
// or an array holding it), and one with an issuer only tokens from it; the
// tokens it issues itself (the demo's, convergo token's) carry both, and no
// further claim may set them.
func TestTokenAudienceAndIssuer(t *testing.T) {
	j, err := NewJWTWith(JWTConfig{Secret: testSecret, Audience: "sync.example.com", Issuer: "https://login.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	exp := time.Now().Add(time.Hour).Unix()
	const iss = "https://login.example.com"
	for _, tc := range []struct {
		name string
		set  map[string]any
		ok   bool
	}{
		{"its audience", map[string]any{"aud": "sync.example.com", "iss": iss}, true},
		{"among others", map[string]any{"aud": []string{"billing", "sync.example.com"}, "iss": iss}, true},
		{"no aud", map[string]any{"iss": iss}, false},
		{"another aud", map[string]any{"aud": "billing", "iss": iss}, false},
		{"aud of another case", map[string]any{"aud": "SYNC.example.com", "iss": iss}, false},
		{"aud a number", map[string]any{"aud": 7, "iss": iss}, false},
		{"aud an object", map[string]any{"aud": map[string]any{"sync.example.com": true}, "iss": iss}, false},
		{"aud null", map[string]any{"aud": nil, "iss": iss}, false},
		{"no iss", map[string]any{"aud": "sync.example.com"}, false},
		{"another iss", map[string]any{"aud": "sync.example.com", "iss": "https://evil.example.com"}, false},
		{"iss an array", map[string]any{"aud": "sync.example.com", "iss": []string{iss}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := map[string]any{"sub": "alice", "exp": exp, "read": []string{"notes"}}
			for k, v := range tc.set {
				c[k] = v
			}
			p, err := j.Authenticate(context.Background(), signRaw(t, c))
			switch {
			case tc.ok && (err != nil || p.Subject != "alice"):
				t.Fatalf("got %+v (%v), want alice admitted", p.Subject, err)
			case !tc.ok && !errors.Is(err, ErrUnauthenticated):
				t.Fatalf("got %+v (%v), want unauthenticated", p.Subject, err)
			}
		})
	}
	tok, err := j.IssueToken(TokenSpec{Subject: "alice", Read: []string{"notes"}, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if p, err := j.Authenticate(context.Background(), tok); err != nil || p.Claims["aud"] != "sync.example.com" || p.Claims["iss"] != iss {
		t.Fatalf("an issued token: %v %v, want admitted with aud and iss", p.Claims, err)
	}
	plain, err := NewJWT(testSecret, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := plain.Authenticate(context.Background(), tok); !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("a server without an audience took a token for one: %v", err)
	}
	for _, name := range []string{"aud", "iss"} {
		if _, err := j.IssueToken(TokenSpec{Subject: "alice", TTL: time.Hour, Claims: map[string]any{name: "x"}}); err == nil {
			t.Errorf("IssueToken with a further claim %q: no error", name)
		}
	}
	if _, err := NewJWTWith(JWTConfig{Secret: testSecret, Audience: "a\nb"}); err == nil {
		t.Error("an audience with a control character: no error")
	}
}

// A time claim is a number of seconds the server can hold: the JWT
// library converts it to an int64 as it is, and one past int64's range
// wraps to the least int64, the far past. An nbf of 1e19 (a token not
// valid for a few hundred billion years) was admitted at once; an exp of
// 1e19 or -1e19 was only refused by luck. Every such time is
// unauthenticated.
func TestTokenTimesOutOfRange(t *testing.T) {
	j, err := NewJWT(testSecret, nil)
	if err != nil {
		t.Fatal(err)
	}
	exp := time.Now().Add(time.Hour).Unix()
	for _, tc := range []struct {
		claim string
		value float64
	}{
		{"nbf", 1e19},
		{"nbf", 9.3e18},
		{"nbf", 1e300},
		{"exp", 1e19},
		{"exp", -1e19},
		{"iat", 1e19},
	} {
		c := map[string]any{"sub": "alice", "exp": exp, "read": []string{"notes"}}
		c[tc.claim] = tc.value
		if p, err := j.Authenticate(context.Background(), signRaw(t, c)); !errors.Is(err, ErrUnauthenticated) {
			t.Errorf("%s %g: %q admitted (%v), want unauthenticated", tc.claim, tc.value, p.Subject, err)
		}
	}
	// Far, but within range: admitted, valid until then.
	far := 9.2e18
	p, err := j.Authenticate(context.Background(), signRaw(t, map[string]any{"sub": "alice", "exp": far, "nbf": -far, "read": []string{"notes"}}))
	if err != nil || p.Expires.Unix() != int64(far) {
		t.Fatalf("exp %g: %v (%v), want admitted until then", far, p.Expires, err)
	}
}

// A token's claims are JSON, which is UTF-8 (RFC 8259, 8.1). Go's decoder
// reads a byte that is not as U+FFFD, so a sub of raw Latin-1 bytes was
// admitted as another subject than the one the browser client reads from
// the same token (its strict decoder reads none, and it compares subjects
// to know when the signed-in subject changed): two such tokens of two
// subjects looked the same to it. Such a token is unauthenticated.
func TestTokenClaimsNotUTF8(t *testing.T) {
	j, err := NewJWT(testSecret, nil)
	if err != nil {
		t.Fatal(err)
	}
	exp := time.Now().Add(time.Hour).Unix()
	for _, payload := range []string{
		fmt.Sprintf("{\"sub\":\"al\xe9x\",\"exp\":%d,\"read\":[\"notes\"]}", exp),
		fmt.Sprintf("{\"sub\":\"alex\",\"exp\":%d,\"read\":[\"notes\"],\"team\":\"r\xffd\"}", exp),
		fmt.Sprintf("{\"sub\":\"alex\",\"exp\":%d,\"read\":[\"notes\"],\"t\xe2\x82\":1}", exp),
	} {
		if p, err := j.Authenticate(context.Background(), signPayload(payload)); !errors.Is(err, ErrUnauthenticated) {
			t.Errorf("claims %q: %q admitted (%v), want unauthenticated", payload, p.Subject, err)
		}
	}
	// Unicode, escaped or not, is admitted as it reads.
	for _, sub := range []string{`"al\u00e9x"`, "\"al\xc3\xa9x\""} {
		p, err := j.Authenticate(context.Background(), signPayload(fmt.Sprintf(`{"sub":%s,"exp":%d}`, sub, exp)))
		if err != nil || p.Subject != "al\u00e9x" {
			t.Errorf("sub %s: %q (%v), want alex with an accent", sub, p.Subject, err)
		}
	}
}

// signPayload signs claims given as raw JSON bytes with testSecret.
func signPayload(claims string) string {
	enc := base64.RawURLEncoding
	s := enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." + enc.EncodeToString([]byte(claims))
	m := hmac.New(sha256.New, testSecret)
	m.Write([]byte(s))
	return s + "." + enc.EncodeToString(m.Sum(nil))
}

// A token signed with the secret but for another recipient is told so,
// naming the settings, where another refusal says only unauthenticated:
// an operator whose backend mints tokens with an aud learns why they are
// refused from the first answer, before the expiry of an expired one.
func TestForeignTokenToldWhy(t *testing.T) {
	j, err := NewJWTWith(JWTConfig{Secret: testSecret, Audience: "sync.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	ts := newTestServer(t, func(c *Config) { c.Authorizer = j })
	for name, c := range map[string]map[string]any{
		"foreign":         {"sub": "alice", "exp": time.Now().Add(time.Hour).Unix(), "aud": "billing", "read": []string{"notes"}},
		"foreign expired": {"sub": "alice", "exp": time.Now().Add(-time.Hour).Unix(), "aud": "billing", "read": []string{"notes"}},
		"no aud":          {"sub": "alice", "exp": time.Now().Add(time.Hour).Unix(), "read": []string{"notes"}},
	} {
		a := ts.post(t, proto.PathPull, signRaw(t, c), proto.PullRequest{Collection: "notes"})
		var e proto.ErrorBody
		if err := proto.Decode(a.body, &e); err != nil || e.Code != proto.CodeUnauthenticated || !strings.Contains(e.Message, "--audience") {
			t.Errorf("%s: %d %+v (%v), want unauthenticated naming --audience", name, a.status, e, err)
		}
	}
	a := ts.post(t, proto.PathPull, signRaw(t, map[string]any{"sub": "alice", "exp": time.Now().Add(time.Hour).Unix(),
		"aud": "sync.example.com", "read": []string{"notes"}}), proto.PullRequest{Collection: "notes"})
	if a.status != http.StatusOK {
		t.Fatalf("a token for the server: %d %s", a.status, a.errorCode(t))
	}
}

// RFC 7519 (4): claim names are unique, and a parser either refuses a
// token with a name twice or reads the last one. Go's decoding of the
// claims into the server's fields keeps the first of two subs when the
// last is null (a null sets no string), where the browser client, which
// reads the last, finds no subject, and the claims scopes bind with hold
// null; two reads the server and its clients did not agree on. A token
// that names a claim twice is unauthenticated.
func TestTokenClaimTwice(t *testing.T) {
	j, err := NewJWT(testSecret, nil)
	if err != nil {
		t.Fatal(err)
	}
	exp := time.Now().Add(time.Hour).Unix()
	for _, claims := range []string{
		fmt.Sprintf(`{"sub":"alice","sub":null,"exp":%d,"read":["notes"]}`, exp),
		fmt.Sprintf(`{"sub":"alice","sub":"bob","exp":%d,"read":["notes"]}`, exp),
		fmt.Sprintf(`{"sub":"alice","exp":%d,"read":["notes"],"read":["*"]}`, exp),
		fmt.Sprintf(`{"sub":"alice","exp":%d,"team":"red","team":"blue"}`, exp),
		fmt.Sprintf(`{"sub":"alice","exp":%d,"t\u0065am":"red","team":"blue"}`, exp),
	} {
		if p, err := j.Authenticate(context.Background(), signPayload(claims)); !errors.Is(err, ErrUnauthenticated) {
			t.Errorf("claims %s: %q admitted (%v), want unauthenticated", claims, p.Subject, err)
		}
	}
	// A name twice inside a claim's value is that claim's business.
	p, err := j.Authenticate(context.Background(), signPayload(fmt.Sprintf(`{"sub":"alice","exp":%d,"org":{"id":1,"id":2}}`, exp)))
	if err != nil || p.Subject != "alice" {
		t.Fatalf("a nested name twice: %q (%v), want admitted", p.Subject, err)
	}
}
