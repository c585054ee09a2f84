package redis

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/engine"
	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/stores/redis/redistest"
)

// TestCaptureCannotReachOwnKeys: a capture rule whose pattern could match
// the store's own keys (the text before its '*' a prefix of "<prefix>{")
// would capture another collection's records hash into the captured
// collection, for its readers to read, and let a client of a mirrored
// collection choose a record id that names such a key ("{notes}:r") and
// have the mirror write its fields, stamped ahead within the drift bound,
// into another collection's records. Such a rule is refused when the
// store opens; were one taken, nothing of the store's own keys may reach
// the captured collection and another collection's record must come
// through untouched.
func TestCaptureCannotReachOwnKeys(t *testing.T) {
	srv := redistest.Start(t, "--save", "", "--appendonly", "no")
	const prefix = "app:"
	for _, tc := range []struct{ pattern, id string }{
		{prefix + "*", "{notes}:r"},     // the store's prefix itself
		{"ap*", "p:{notes}:r"},          // a part of it
		{"*:r", prefix + "{notes}"},     // no text before '*'
		{"app*", ":{notes}:r"},          // the prefix without its last byte
		{prefix + "{*", "notes}:r"},     // refused before too
		{prefix + "convergo:*", "none"}, // refused before too
	} {
		t.Run(tc.pattern, func(t *testing.T) {
			ctx := testContext(t)
			o := Options{Addrs: []string{srv.Addr()}, KeyPrefix: prefix, CaptureInterval: 100 * time.Millisecond,
				Capture: []CaptureRule{{Collection: "todos", KeyPattern: tc.pattern, Mirror: true}}}
			s, err := Open(ctx, o)
			if errors.Is(err, stores.ErrInvalid) {
				return // refused: no record id can name the store's keys
			}
			if err != nil {
				t.Fatal(err)
			}
			e, err := engine.Open(engine.Config{Store: s, Replica: "srv", PollInterval: 100 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				e.Close()
				s.Close()
				c := goredis.NewClient(&goredis.Options{Addr: srv.Addr()})
				defer c.Close()
				_ = c.FlushAll(context.Background()).Err() // the private server's, for the next rule
			}()
			now := crdt.Stamp{Wall: time.Now().UnixMilli(), Replica: "w"}
			victim := crdt.SetField("victim", "title", []byte{0x61, 'a'}, now)
			if _, err := e.Apply(ctx, []crdt.Change{{Collection: "notes", Record: victim}}); err != nil {
				t.Fatal(err)
			}
			// Stamped ahead, within the engine's drift bound, so that it
			// beats what capture stamps meanwhile.
			ahead := crdt.Stamp{Wall: now.Wall + (4 * time.Minute).Milliseconds(), Replica: "w"}
			attack := crdt.SetField(tc.id, "victim", []byte{0x45, 'f', 'o', 'r', 'g', 'e'}, ahead)
			res, err := e.Apply(ctx, []crdt.Change{{Collection: "todos", Record: attack}})
			if err != nil || res[0].Err != nil {
				t.Fatalf("client write: %v %v", err, res[0].Err)
			}
			time.Sleep(time.Second) // capture and mirror run every 100 ms
			page, err := s.Pull(ctx, "todos", 0, stores.PageLimit{Records: 1000, Bytes: 1 << 30})
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range page.Entries {
				if k := (CaptureRule{KeyPattern: tc.pattern}).key(r.Record.ID); strings.HasPrefix(k, prefix+"{") && r.Record.ID != tc.id {
					t.Errorf("rule %q captured the store's own key %q into todos", tc.pattern, k)
				}
			}
			got, err := s.Get(ctx, "notes", "victim")
			if err != nil {
				t.Fatalf("rule %q: the client's record %q of todos reached notes' records: Get: %v", tc.pattern, tc.id, err)
			}
			if !got.Record.Equal(victim) {
				t.Fatalf("rule %q: notes/victim is %v, want %v", tc.pattern, got.Record, victim)
			}
		})
	}
}
