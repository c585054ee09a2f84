package client_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/crdt/migrate"
	"github.com/convergo/convergo/engine"
	"github.com/convergo/convergo/stores/memory"
	"github.com/convergo/convergo/transport"
	"github.com/convergo/convergo/transport/client"
	"github.com/convergo/convergo/transport/proto"
)

// A push spanning many collections with schema versions carries one entry
// of key 3 for each ({collection: version}), which took more than the
// proto.PushEnvelopeBytes both clients reserved for the envelope: a batch
// cut by its changes' bytes alone was refused too_large and halved, extra
// requests for nothing. Push now charges each collection's entry to the
// batch (proto.PushVersionBytes): every request it sends fits the body
// limit, none is refused, and the outbox takes as few requests as the
// rule gives (two here, where the changes alone would have made one).
func TestPushSizesManyCollectionsVersions(t *testing.T) {
	const n, maxBody = 100, 32 << 10
	names := make([]string, n)
	var rulesJSON []string
	for i := range names {
		names[i] = fmt.Sprintf("many.%03d.%s", i, strings.Repeat("x", crdt.MaxCollectionBytes-9))
		rulesJSON = append(rulesJSON, fmt.Sprintf(`%q: {"migrations": {"version": 1, "steps": []}}`, names[i]))
	}
	rules, err := engine.ParseRules([]byte("{" + strings.Join(rulesJSON, ", ") + "}"))
	if err != nil {
		t.Fatal(err)
	}
	eng, err := engine.Open(engine.Config{Store: memory.New(), Rules: rules})
	if err != nil {
		t.Fatal(err)
	}
	auth, err := transport.NewJWT([]byte("client-test-secret-0123456789"), nil)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := transport.New(transport.Config{Engine: eng, Authorizer: auth, Limits: transport.Limits{MaxBodyBytes: maxBody}})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var pushes []string // each push's answer: its error code, or "ok"
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != proto.PathPush {
			srv.ServeHTTP(w, r)
			return
		}
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, r)
		mu.Lock()
		pushes = append(pushes, cmpOr(rec.Header().Get(proto.HeaderError), "ok"))
		mu.Unlock()
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		_, _ = w.Write(rec.Body.Bytes())
	}))
	t.Cleanup(func() {
		hs.Close()
		_ = srv.Shutdown(t.Context())
		_ = eng.Close()
	})
	token, err := auth.Issue("ivy", []string{"many.*"}, []string{"many.*"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	def, err := migrate.Parse([]byte(`{"version": 1, "steps": []}`))
	if err != nil {
		t.Fatal(err)
	}
	migrations := map[string]*migrate.Definition{}
	for _, name := range names {
		migrations[name] = def
	}
	c, err := client.New(client.Config{URL: hs.URL, Token: token, Device: "d1", Migrations: migrations})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Hello(t.Context()); err != nil {
		t.Fatal(err)
	}
	// One change per collection, their plain encodings together just
	// within what PushEnvelopeBytes leaves of the body: one request, by
	// the changes' bytes alone.
	room := int(proto.PushRoom(maxBody))
	changes := make([]crdt.Change, n)
	total := 0
	for i, coll := range names {
		s, err := c.Now()
		if err != nil {
			t.Fatal(err)
		}
		ch := crdt.Change{Collection: coll, Record: crdt.SetField("r", "v", []byte{0x60}, s)}
		size := len(crdt.AppendChange(nil, ch))
		fill := (room-total)/(n-i) - size - 2 // a text head of 2 bytes more
		v, err := crdt.Marshal(strings.Repeat("y", fill))
		if err != nil {
			t.Fatal(err)
		}
		ch.Record = crdt.SetField("r", "v", v, s)
		changes[i] = ch
		total += len(crdt.AppendChange(nil, ch))
	}
	if total > room {
		t.Fatalf("the changes take %d bytes, over the room of %d: fix the test", total, room)
	}
	res, err := c.Push(t.Context(), changes)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if r.Status != client.StatusApplied {
			t.Fatalf("change %d: %+v, want applied", i, r)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(pushes) != 2 || pushes[0] != "ok" || pushes[1] != "ok" {
		t.Fatalf("pushes answered %v, want 2 requests, none refused (the changes of %d collections with versions, %d bytes, under a max-body of %d)", pushes, n, total, maxBody)
	}
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
