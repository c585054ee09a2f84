package client_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/transport/client"
	"github.com/convergo/convergo/transport/proto"
)

// hookRT calls before ahead of each request it sends through next
// (nil: http.DefaultTransport).
type hookRT struct {
	before func(*http.Request)
	next   http.RoundTripper
}

func (h hookRT) RoundTrip(req *http.Request) (*http.Response, error) {
	h.before(req)
	if h.next != nil {
		return h.next.RoundTrip(req)
	}
	return http.DefaultTransport.RoundTrip(req)
}

// TestHealWhenTheStoreGoesBackTwice: the store is lost, and lost again
// while a replica heals it: after its heal gave back (restore and push)
// to the second store, and before its next pull, the server restarts on
// a third, empty store. The replica must notice (or say that it cannot)
// and the server must end up with what was acknowledged.
func TestHealWhenTheStoreGoesBackTwice(t *testing.T) {
	for _, tc := range []struct {
		when string
		live bool
	}{
		{"before the pull after the heal", false},
		{"between restore and push", false},
		// Live heals as the reset comes, then pulls from the beginning
		// over HTTP; its push goes over the session.
		{"before the pull after the heal", true},
	} {
		when := tc.when
		t.Run(fmt.Sprintf("%s, live %v", when, tc.live), func(t *testing.T) {
			s := newLossServer(t, false)
			var armed, fired atomic.Bool
			var gaveBack atomic.Bool
			alice := s.replica("alice", true, client.ReplicaConfig{}, func(c *client.Config) {
				c.HTTPClient = &http.Client{Transport: hookRT{before: func(req *http.Request) {
					if !armed.Load() || fired.Load() {
						return
					}
					p := req.URL.Path
					switch when {
					case "before the pull after the heal":
						if strings.HasSuffix(p, "/restore") || strings.HasSuffix(p, "/push") {
							gaveBack.Store(true)
						} else if strings.HasSuffix(p, "/pull") && gaveBack.Load() {
							fired.Store(true)
							s.restart(nil)
						}
					case "between restore and push":
						if strings.HasSuffix(p, "/restore") {
							gaveBack.Store(true)
						} else if strings.HasSuffix(p, "/push") && gaveBack.Load() {
							fired.Store(true)
							s.restart(nil)
						}
					}
				}}}
			})
			bob := s.replica("bob", true, client.ReplicaConfig{}, nil)
			for i := range 5 {
				set(t, alice, fmt.Sprint("a", i), "n", i)
				set(t, bob, fmt.Sprint("b", i), "n", i)
			}
			syncAll(t, alice, bob, alice)
			want := alice.Records("notes")
			if len(want) != 10 {
				t.Fatalf("alice holds %d records, want 10", len(want))
			}
			// Bob goes away for good; alice alone holds what the store had.
			if tc.live {
				runLive(t, alice)
				waitLong(t, "a live session", func() bool { return s.liveConns(t) == 1 })
			}
			s.restart(nil)
			armed.Store(true)
			if tc.live {
				waitLong(t, "the second loss", fired.Load)
			} else {
				// One Sync heals, however often the store went back.
				syncAll(t, alice)
				if !fired.Load() {
					t.Fatal("the second loss did not happen during the heal")
				}
			}
			s.eventuallyConverged(t, want, map[string]*client.Replica{"alice": alice}, nil)
		})
	}
}

// TestHealGivesUpLoudly: a store that goes back in time after every heal
// (it acknowledges what is given back, then loses it before the next
// pull) is healed a bounded number of times, and then Sync says so with
// ErrNotHealed, the records still held locally.
func TestHealGivesUpLoudly(t *testing.T) {
	s := newLossServer(t, false)
	var armed, gaveBack atomic.Bool
	var losses atomic.Int64
	alice := s.replica("alice", true, client.ReplicaConfig{}, func(c *client.Config) {
		c.HTTPClient = &http.Client{Transport: hookRT{before: func(req *http.Request) {
			if !armed.Load() {
				return
			}
			switch p := req.URL.Path; {
			case strings.HasSuffix(p, "/restore") || strings.HasSuffix(p, "/push"):
				gaveBack.Store(true)
			case strings.HasSuffix(p, "/pull") && gaveBack.Swap(false):
				losses.Add(1)
				s.restart(nil)
			}
		}}}
	})
	for i := range 5 {
		set(t, alice, fmt.Sprint("a", i), "n", i)
	}
	syncAll(t, alice, alice)
	want := alice.Records("notes")
	s.restart(nil)
	armed.Store(true)
	err := alice.Sync(t.Context())
	if !errors.Is(err, client.ErrNotHealed) {
		t.Fatalf("sync against a store that keeps going back: %v, want ErrNotHealed", err)
	}
	// The first heal, then proto.MaxHealAgain heals again, each lost.
	if n := losses.Load(); n != proto.MaxHealAgain+1 {
		t.Errorf("%d heals lost before giving up, want %d", n, proto.MaxHealAgain+1)
	}
	if d := sameRecords(alice.Records("notes"), want); d != "" {
		t.Errorf("alice dropped records:\n%s", d)
	}
}

// TestHealGivesUpLoudlyLive: while a replica runs Live alone, the store
// is lost, and the one the server comes back on acknowledges what the heal
// gives back without keeping it: no call of the app's returns
// ErrNotHealed, so the replica tells it through OnError once it gave up,
// the records still held locally.
func TestHealGivesUpLoudlyLive(t *testing.T) {
	s := newLossServer(t, false)
	errs := make(chan error, 16)
	alice := s.replica("alice", true, client.ReplicaConfig{OnError: func(err error) {
		select {
		case errs <- err:
		default:
		}
	}}, nil)
	for i := range 5 {
		set(t, alice, fmt.Sprint("a", i), "n", i)
	}
	syncAll(t, alice)
	want := alice.Records("notes")
	runLive(t, alice)
	waitLong(t, "a live session", func() bool { return s.liveConns(t) == 1 })
	f := &forgetfulStore{}
	s.wrap = func(st stores.Store) stores.Store { f.Store = st; return f }
	s.restart(nil)
	select {
	case err := <-errs:
		if !errors.Is(err, client.ErrNotHealed) {
			t.Fatalf("OnError(%v), want ErrNotHealed", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("OnError not called after %d heals forgotten", f.forgot.Load())
	}
	if d := sameRecords(alice.Records("notes"), want); d != "" {
		t.Errorf("alice dropped records:\n%s", d)
	}
}

// forgetfulStore acknowledges every write to notes and keeps none: a
// store that goes back in time right after each write.
type forgetfulStore struct {
	stores.Store
	forgot atomic.Int64
}

func (f *forgetfulStore) Apply(ctx context.Context, changes []crdt.Change) ([]stores.Result, error) {
	if len(changes) == 0 || changes[0].Collection != "notes" {
		return f.Store.Apply(ctx, changes)
	}
	f.forgot.Add(1)
	return make([]stores.Result, len(changes)), nil
}

// TestHealCheckScopedSuperseded: a scoped replica gives back a record the
// server already holds in a newer state outside its scope (another holder
// healed it first): the heal is acknowledged (superseded), the reading
// that follows brings the record's leave entry instead of the record, and
// that is enough: no heal again (one restore), and the record stays out
// of the scoped replica.
func TestHealCheckScopedSuperseded(t *testing.T) {
	s := newLossServer(t, false)
	var restores atomic.Int64
	admin := s.replica("admin", true, client.ReplicaConfig{}, nil)
	sam := s.replica("sam", false, client.ReplicaConfig{}, func(c *client.Config) {
		readsHome(t)(c)
		c.HTTPClient = &http.Client{Transport: hookRT{before: func(req *http.Request) {
			if strings.HasSuffix(req.URL.Path, "/restore") {
				restores.Add(1)
			}
		}}}
	})
	for i := range 4 {
		set(t, admin, fmt.Sprint("n", i), "list", "home")
	}
	syncAll(t, admin, sam)
	// Lost with the store, and known to the admin alone: n2 moves out.
	set(t, admin, "n2", "list", "work")
	if err := admin.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	s.restart(nil)
	syncAll(t, admin) // heals first, n2 as "work"
	for range 2 {
		if err := sam.Sync(t.Context()); err != nil {
			t.Fatalf("the scoped replica's sync after the heal: %v", err)
		}
	}
	if n := restores.Load(); n != 1 {
		t.Errorf("the scoped replica restored %d times, want once", n)
	}
	if got := held(sam); !slices.Equal(got, []string{"n0", "n1", "n3"}) {
		t.Errorf("sam holds %v, want [n0 n1 n3]", got)
	}
	s.eventuallyConverged(t, union(admin), map[string]*client.Replica{"admin": admin}, nil)
}
