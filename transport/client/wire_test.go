package client

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/transport/proto"
)

// The client and the server share one declaration of the protocol,
// transport/proto. These tests pin what the client really sends to it: the
// bytes on the wire are proto's encoding, and proto's server-side decoders
// read them back. They also check that the client does not link the server.

func TestClientLinksNoServer(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	const mod = "github.com/convergo/convergo/"
	for _, pkg := range strings.Fields(string(out)) {
		rest, ok := strings.CutPrefix(pkg, mod)
		if !ok {
			continue
		}
		switch {
		case rest == "transport", strings.HasPrefix(rest, "engine"), strings.HasPrefix(rest, "stores"):
			t.Errorf("the client links %s", pkg)
		}
	}
}

func TestRequestBodiesAreProtos(t *testing.T) {
	var mu sync.Mutex
	bodies := map[string][]byte{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		bodies[r.URL.Path] = b
		mu.Unlock()
		var ans any
		switch r.URL.Path {
		case proto.PathHello:
			ans = proto.HelloResponse{Protocol: proto.Version, ServerTime: time.Now().UnixMilli(), MaxPush: 10, MaxBodyBytes: 1 << 20}
		case proto.PathPush:
			ans = proto.PushResponse{Results: []proto.PushResult{{Status: proto.StatusApplied}}}
		case proto.PathPull:
			ans = proto.PullResponse{Next: []byte{1, 2}}
		}
		b, err := proto.Encode(ans)
		if err != nil {
			t.Error(err)
		}
		w.Write(b)
	}))
	defer srv.Close()
	c, err := New(Config{URL: srv.URL, Replica: "a"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if _, err := c.Hello(ctx); err != nil {
		t.Fatal(err)
	}
	ch := setChange(t, c, "notes", "r1", "t", "x")
	if _, err := c.Push(ctx, []crdt.Change{ch}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Pull(ctx, "notes", []byte{9, 8}, 5); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path string
		want any
		into any
	}{
		{proto.PathHello, proto.HelloRequest{Protocol: proto.Version, Replica: "a"}, &proto.HelloRequest{}},
		{proto.PathPush, proto.PushRequest{Replica: "a", Changes: []crdt.Change{ch}}, &proto.PushRequest{}},
		{proto.PathPull, proto.PullRequest{Collection: "notes", Cursor: []byte{9, 8}, Limit: 5, Replica: "a"}, &proto.PullRequest{}},
	} {
		t.Run(tc.path, func(t *testing.T) {
			want, err := proto.Encode(tc.want)
			if err != nil {
				t.Fatal(err)
			}
			if got := bodies[tc.path]; !bytes.Equal(got, want) {
				t.Fatalf("client sent %x\nproto encodes %x", got, want)
			}
			if err := proto.Decode(bodies[tc.path], tc.into); err != nil {
				t.Fatalf("the server's decoder: %v", err)
			}
			if p, ok := tc.into.(*proto.PushRequest); ok && (p.Refused != nil || !p.Changes[0].Record.Equal(ch.Record)) {
				t.Fatalf("the server read %+v", p)
			}
		})
	}
}

func TestLiveMessagesAreProtos(t *testing.T) {
	frames := make(chan []byte, 8)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer conn.CloseNow()
		ctx := r.Context()
		for {
			_, b, err := conn.Read(ctx)
			if err != nil {
				return
			}
			frames <- b
			m, err := proto.DecodeClientMessage(b, proto.Session{})
			if err != nil {
				t.Errorf("the server's decoder: %v", err)
				return
			}
			if _, ok := m.(proto.Hello); ok {
				w, _ := proto.EncodeMessage(proto.Welcome{Hello: proto.HelloResponse{Protocol: proto.Version, ServerTime: time.Now().UnixMilli()}})
				conn.Write(ctx, websocket.MessageBinary, w)
			}
		}
	}))
	defer srv.Close()
	c, err := New(Config{URL: srv.URL, Replica: "a", Token: "tok"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.Live(ctx, map[string][]byte{"notes": {7}}, func(string, Page) {}, nil)
	}()
	defer func() { cancel(); <-done }()
	for _, want := range []proto.Message{
		proto.Hello{Protocol: proto.Version, Replica: "a", Token: "tok"},
		proto.Sub{Collection: "notes", Cursor: []byte{7}, Replica: "a"},
	} {
		b, err := proto.EncodeMessage(want)
		if err != nil {
			t.Fatal(err)
		}
		if got := <-frames; !bytes.Equal(got, b) {
			t.Fatalf("%s: client sent %x\nproto encodes %x", want.MessageType(), got, b)
		}
	}
}
