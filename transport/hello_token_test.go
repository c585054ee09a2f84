package transport

import (
	"context"
	"encoding/base64"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/convergo/convergo/transport/proto"
)

// countingAuth counts the tokens it is asked to authenticate.
type countingAuth struct {
	Authorizer
	calls atomic.Int64
}

func (a *countingAuth) Authenticate(ctx context.Context, token string) (Principal, error) {
	a.calls.Add(1)
	return a.Authorizer.Authenticate(ctx, token)
}

// A live hello carries its token in a message of up to --max-message
// bytes (4 MiB), where a request carries it in headers of at most
// MaxHeaderBytes. An unsigned token of 4 MiB cost the JWT parser about a
// second of CPU and 94 MiB of allocations before its signature was
// refused: any client, without credentials, could make the server pay
// that per message. A token over MaxHeaderBytes is refused too_large
// before it is parsed, in a hello as in a request.
func TestHelloTokenBounded(t *testing.T) {
	var auth *countingAuth
	ts := newTestServer(t, func(c *Config) {
		auth = &countingAuth{Authorizer: c.Authorizer}
		c.Authorizer = auth
	})
	c, _, err := ts.dial(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	token := "e30." + strings.Repeat("A", MaxHeaderBytes) + ".AAAA"
	c.send(proto.Hello{Protocol: proto.Version, Replica: proto.ReplicaFor("alice", ownReplica), Token: token})
	m, ok := c.recv().(proto.ErrorMessage)
	if !ok || m.Code != proto.CodeTooLarge {
		t.Fatalf("a hello with a token of %d bytes: got %#v, want error %s", len(token), m, proto.CodeTooLarge)
	}
	if n := auth.calls.Load(); n != 0 {
		t.Fatalf("the token over the bound was parsed %d times, want 0", n)
	}
}

// A token not signed with the server's secret is refused for what it
// costs to check its signature, an HMAC over its bytes. The JWT parser
// decodes the header and the claims before it checks the signature: a
// forged token of 64 KiB, whose claims are an array of 9,000 two-letter
// strings, cost 9,000 allocations and milliseconds of CPU,
// and requests pay it before their rate is counted (the rate's key is
// the token's subject).
func TestForgedTokenCostsOneHMAC(t *testing.T) {
	j, err := NewJWT(testSecret, nil)
	if err != nil {
		t.Fatal(err)
	}
	b64 := base64.RawURLEncoding.EncodeToString
	claims := `{"sub":"mallory","exp":9999999999,"read":[` + strings.Repeat(`"ab",`, 9000) + `"ab"]}`
	forged := b64([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." + b64([]byte(claims)) + "." + b64(make([]byte, 32))
	if len(forged) > MaxHeaderBytes {
		t.Fatalf("forged token of %d bytes, want at most %d", len(forged), MaxHeaderBytes)
	}
	if _, err := j.Authenticate(context.Background(), forged); !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("forged token: %v, want %v", err, ErrUnauthenticated)
	}
	allocs := testing.AllocsPerRun(5, func() { _, _ = j.Authenticate(context.Background(), forged) })
	if allocs > 16 {
		t.Fatalf("a forged token of %d bytes took %.0f allocations to refuse, want at most 16 (its signature checked first)", len(forged), allocs)
	}
	// A token the server signed is still read whole.
	tok, err := j.Issue("alice", []string{"notes"}, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if p, err := j.Authenticate(context.Background(), tok); err != nil || p.Subject != "alice" {
		t.Fatalf("signed token: %+v, %v; want alice", p, err)
	}
}
