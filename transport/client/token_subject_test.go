package client

import (
	"encoding/base64"
	"testing"

	"github.com/convergo/convergo/transport/proto"
)

func TestTokenSubject(t *testing.T) {
	jwt := func(payload string) string {
		return "e30." + base64.RawURLEncoding.EncodeToString([]byte(payload)) + ".sig"
	}
	for _, tc := range []struct {
		token, subject string
		ok             bool
	}{
		{"", "", true}, // anonymous
		{jwt(`{"sub":"alice","exp":1}`), "alice", true},
		{"e30." + base64.URLEncoding.EncodeToString([]byte(`{"sub":"bob"}`)) + ".sig", "bob", true}, // padded
		{jwt(`{"sub":""}`), "", false},
		{jwt(`{"exp":1}`), "", false},
		{jwt(`{"sub":7}`), "", false},
		{jwt(`not json`), "", false},
		{"opaque", "", false},
		{"a.b", "", false},
		{"e30.!!!.sig", "", false},
	} {
		subject, ok := tokenSubject(tc.token)
		if subject != tc.subject || ok != tc.ok {
			t.Errorf("tokenSubject(%q) = %q, %v; want %q, %v", tc.token, subject, ok, tc.subject, tc.ok)
		}
	}
}

// A client without a token is the anonymous subject's: it stamps with its
// ids (the demo's) from the start, as the browser client does.
func TestClientWithoutATokenIsBoundToTheAnonymousSubject(t *testing.T) {
	c, err := New(Config{URL: "http://127.0.0.1:1", Device: "laptop"})
	if err != nil {
		t.Fatal(err)
	}
	s, err := c.Now()
	if err != nil || s.Replica != proto.ReplicaFor("", "laptop") {
		t.Fatalf("Now without a token: %v (%v), want a stamp of the anonymous subject's id", s, err)
	}
}
