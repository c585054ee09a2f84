package client_test

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores/bolt"
	"github.com/convergo/convergo/stores/bolt/bolttest"
	"github.com/convergo/convergo/transport/client"
)

// How an older copy of the bolt file is put back: with the documented
// procedure (`convergo store mark-restored`), with its note but without
// the procedure (the store cannot tell: the readers' cursors must), or
// the file alone (the note beside it counts more writes: the store
// starts a new epoch at open).
type putBack int

const (
	putBackMarked putBack = iota
	putBackWithNote
	putBackFileAlone
)

func (p putBack) String() string {
	return [...]string{"marked restored", "with its note, not marked", "the file alone"}[p]
}

// backupAs copies the bolt file to a copy of its own, name, the server
// stopped meanwhile, and returns a function that puts the copy back as
// how says.
func (s *lossServer) backupAs(name string, how putBack) func() {
	s.t.Helper()
	copyPath := s.path + "." + name
	s.restart(func() { bolttest.CopyWithNote(s.t, s.path, copyPath) })
	return func() {
		if how == putBackFileAlone {
			bolttest.CopyFile(s.t, copyPath, s.path)
			return
		}
		bolttest.CopyWithNote(s.t, copyPath, s.path)
		if how != putBackMarked {
			return
		}
		b, err := bolt.Open(context.Background(), s.path, bolt.Options{NoSync: true})
		if err != nil {
			s.t.Fatal(err)
		}
		if err := b.BumpEpochs(context.Background()); err != nil {
			s.t.Fatal(err)
		}
		if err := b.Close(); err != nil {
			s.t.Fatal(err)
		}
	}
}

// matching is the records of rs whose field list holds the string list.
func matching(t *testing.T, rs map[string]crdt.Record, list string) map[string]crdt.Record {
	t.Helper()
	out := map[string]crdt.Record{}
	for id, rec := range rs {
		if v, ok := rec.Values()["list"]; ok && string(v) == string(mustEncode(t, list)) {
			out[id] = rec
		}
	}
	return out
}

// TestHealBackupAcrossScopeMoves: a backup of the bolt file is put back
// after records moved in and out of a scoped writer's read scope. n0
// left sam's scope after the backup, n1 entered it and sam edited it;
// the copy has n0 in the scope and n1 out of it. The admin, who holds
// everything, is away when the copy is put back: sam alone heals n1 (the
// server must hold sam's edit and n1's move into the scope before the
// admin is back), and once the admin is back and heals too, n0 leaves
// sam's scope again: sam holds exactly the records of its scope, and the
// server and the admin everything acknowledged.
func TestHealBackupAcrossScopeMoves(t *testing.T) {
	for _, how := range []putBack{putBackMarked, putBackWithNote, putBackFileAlone} {
		t.Run(how.String(), func(t *testing.T) {
			s := newLossServer(t, true)
			admin := s.replica("admin", true, client.ReplicaConfig{}, nil)
			sam := s.replica("sam", true, client.ReplicaConfig{}, readsHome(t))
			for i, list := range []string{"home", "work", "home", "work"} {
				set(t, admin, fmt.Sprint("n", i), "list", list)
			}
			syncAll(t, admin, sam)
			restore := s.backupAs("scoped", how)

			// After the backup: n0 leaves sam's scope, n1 enters it, and
			// sam edits n1 and n2.
			set(t, admin, "n0", "list", "work")
			set(t, admin, "n1", "list", "home")
			syncAll(t, admin, sam)
			set(t, sam, "n1", "s", "sam's")
			set(t, sam, "n2", "s", "sam's")
			syncAll(t, sam, admin)
			all := union(admin)
			home := matching(t, all, "home")
			if d := sameRecords(union(sam), home); d != "" {
				t.Fatalf("before the loss sam does not hold its scope:\n%s", d)
			}

			// The admin is away; the copy is put back and sam heals.
			s.restart(restore)
			syncAll(t, sam, sam)
			served := s.served(t)
			for _, id := range []string{"n1", "n2"} {
				if !served[id].Equal(all[id]) {
					t.Errorf("after sam's heal the server holds %s as %v, want %v", id, served[id], all[id])
				}
			}

			// The admin comes back and heals what it alone holds.
			both := func() { syncAll(t, admin, sam) }
			s.eventuallyConverged(t, all, map[string]*client.Replica{"admin": admin}, both)
			waitLong(t, "sam to hold exactly its scope", func() bool {
				syncAll(t, sam)
				return sameRecords(union(sam), home) == ""
			})
		})
	}
}

// TestHealTwoBackupsInARow: the store goes back twice before every
// replica healed: a backup is put back and alice heals it (carol writes
// in that history), then an older backup is put back, and alice and
// carol heal again. The reader, offline across both, comes back with a
// cursor of the history before the first, and gives back what it alone
// holds (bob's last writes, whose device is gone). The server and every
// replica converge on everything acknowledged.
func TestHealTwoBackupsInARow(t *testing.T) {
	for _, second := range []putBack{putBackMarked, putBackFileAlone} {
		t.Run("the second "+second.String(), func(t *testing.T) {
			s := newLossServer(t, true)
			alice := s.replica("alice", true, client.ReplicaConfig{}, nil)
			reader := s.replica("reader", false, client.ReplicaConfig{}, nil)
			bob := s.replica("bob", true, client.ReplicaConfig{}, nil)
			setEach(t, alice, "a", "n", 0, 3)
			syncAll(t, alice, reader)
			older := s.backupAs("older", second)
			setEach(t, bob, "b", "n", 0, 3)
			syncAll(t, bob, alice, reader)
			newer := s.backupAs("newer", putBackMarked)
			setEach(t, bob, "b", "n", 3, 6)
			set(t, bob, "a0", "m", "bob's")
			syncAll(t, bob, reader)
			want := union(reader)
			if len(want) != 9 {
				t.Fatalf("the reader holds %d records, want 9", len(want))
			}
			bob.Close() // what bob wrote after the first backup lives in the reader only

			s.restart(newer)
			syncAll(t, alice, alice)
			carol := s.replica("carol", true, client.ReplicaConfig{}, nil)
			setEach(t, carol, "c", "n", 0, 3)
			set(t, carol, "b1", "m", "carol's")
			syncAll(t, carol)
			want = union(reader, alice, carol)
			if len(want) != 12 {
				t.Fatalf("the replicas hold %d records, want 12", len(want))
			}

			s.restart(older)
			syncAll(t, alice, carol)
			s.eventuallyConverged(t, union(alice, carol), map[string]*client.Replica{"alice": alice, "carol": carol}, func() { syncAll(t, alice, carol) })

			// The reader comes back from before both.
			all := func() { syncAll(t, reader, alice, carol) }
			s.eventuallyConverged(t, want, map[string]*client.Replica{"reader": reader, "alice": alice, "carol": carol}, all)
		})
	}
}

// loseAnswerRT sends each request, and once armed, when the request's
// path ends in suffix, reads its answer and fails instead of returning
// it, once: the server applied what the request carried, the client does
// not know it.
type loseAnswerRT struct {
	suffix string
	armed  *atomic.Bool
	lost   *atomic.Bool
}

func (l loseAnswerRT) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil || !l.armed.Load() || !strings.HasSuffix(req.URL.Path, l.suffix) || !l.lost.CompareAndSwap(false, true) {
		return resp, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return nil, fmt.Errorf("the network lost the answer to the %s", l.suffix)
}

// TestHealBackupAfterAPushAnswerLost: the store applies alice's push and
// its answer is lost; then an older copy of the bolt file is put back,
// from before bob's writes, which alice had read (bob's device is gone
// since). Alice pushes again what she never saw acknowledged, into the
// copy, up to the position she had read bob's last write at: her pull
// after it must still see that the store went back (a new epoch, or the
// entry of another record at her position) and give back bob's writes,
// and the server must hold every write, hers among them.
func TestHealBackupAfterAPushAnswerLost(t *testing.T) {
	for _, how := range []putBack{putBackMarked, putBackWithNote, putBackFileAlone} {
		t.Run(how.String(), func(t *testing.T) {
			s := newLossServer(t, true)
			var armed, lost atomic.Bool
			alice := s.replica("alice", true, client.ReplicaConfig{}, func(c *client.Config) {
				c.Backoff.MaxAttempts = 1
				c.HTTPClient = &http.Client{Transport: loseAnswerRT{suffix: "/push", armed: &armed, lost: &lost}}
			})
			bob := s.replica("bob", true, client.ReplicaConfig{}, nil)
			setEach(t, alice, "a", "n", 0, 5)
			syncAll(t, alice)
			restore := s.backupAs("answer", how)
			setEach(t, bob, "b", "n", 0, 3)
			syncAll(t, bob, alice) // alice read bob's writes
			bob.Close()

			armed.Store(true)
			setEach(t, alice, "x", "n", 0, 3)
			if err := alice.Flush(t.Context()); err == nil {
				t.Fatal("the flush whose answer was lost succeeded")
			}
			if !lost.Load() {
				t.Fatal("no answer was lost")
			}
			if len(alice.Pending()) == 0 {
				t.Fatal("alice's write left the outbox without an answer")
			}
			if got := s.served(t); !got["x2"].Exists() {
				t.Fatal("the server did not apply the push whose answer was lost")
			}
			want := union(alice)
			if len(want) != 11 {
				t.Fatalf("alice holds %d records, want 11", len(want))
			}

			s.restart(restore)
			s.eventuallyConverged(t, want, map[string]*client.Replica{"alice": alice}, func() { syncAll(t, alice) })
			if p := alice.Pending(); len(p) != 0 {
				t.Errorf("alice still has %d pending changes", len(p))
			}
			// Put back with its note and not marked, the copy is seen by
			// the engine alone: alice's position was given to x2.
			if n := s.metric(t, "convergo_store_went_back_total"); (n > 0) != (how == putBackWithNote) {
				t.Errorf("convergo_store_went_back_total %d; want it counted only for a copy put back with its note", n)
			}
		})
	}
}

// TestHealBackupSameRecordAtThePosition: after the backup alice writes
// doc and both replicas read it; once the copy is put back, alice writes
// doc again before either pulls, so the new history gives the position
// they read doc at to doc again. With the copy marked restored, or put
// back without its note, the store starts a new epoch and both heal:
// the server and both replicas hold both of alice's writes. Put back with
// its note and not marked, the store cannot tell, but the replicas'
// cursors can: the slot mark at their position covers the state of doc
// they read there, and the doc at that position now holds a later write
// (docs/design.md, "Cursor"). The engine then starts a new epoch of
// every collection, once, and both heal too.
func TestHealBackupSameRecordAtThePosition(t *testing.T) {
	for _, how := range []putBack{putBackMarked, putBackWithNote, putBackFileAlone} {
		t.Run(how.String(), func(t *testing.T) {
			s := newLossServer(t, true)
			alice := s.replica("alice", true, client.ReplicaConfig{}, nil)
			reader := s.replica("reader", false, client.ReplicaConfig{}, nil)
			setEach(t, alice, "a", "n", 0, 5)
			syncAll(t, alice, reader)
			restore := s.backupAs("same", how)
			set(t, alice, "doc", "f1", "first")
			syncAll(t, alice, reader)
			s.restart(restore)
			set(t, alice, "doc", "f2", "second")
			syncAll(t, alice, reader)
			want := union(alice, reader)
			if v := want["doc"].Values(); v["f1"] == nil || v["f2"] == nil {
				t.Fatalf("doc is %v, want both of alice's fields", want["doc"])
			}
			s.eventuallyConverged(t, want, map[string]*client.Replica{"alice": alice, "reader": reader}, func() { syncAll(t, alice, reader) })
			if how == putBackWithNote {
				if n := s.metric(t, "convergo_store_went_back_total"); n != 1 {
					t.Errorf("convergo_store_went_back_total %d, want 1", n)
				}
			}
		})
	}
}

// TestHealScopedReaderAtALeaveWrittenPast: a scoped reader's position is
// at a leave entry (the last record it was told of is outside its
// scope). An older copy of the bolt file is put back with its note and
// not marked, so only the readers' cursors can tell, and a writer writes
// past that position before the reader comes back (then, in one case,
// writes the record at the position again, so that no entry is there).
// The reader, by Sync or by a live session, must see that the store went
// back and give back the records of its scope that only it holds: the
// server and the reader converge on its scope.
func TestHealScopedReaderAtALeaveWrittenPast(t *testing.T) {
	for _, live := range []bool{false, true} {
		for _, moved := range []bool{false, true} {
			name := map[bool]string{false: "sync", true: "live"}[live] + ", " + map[bool]string{false: "written past", true: "moved on"}[moved]
			t.Run(name, func(t *testing.T) {
				s := newLossServer(t, true)
				admin := s.replica("admin", true, client.ReplicaConfig{}, nil)
				sam := s.replica("sam", false, client.ReplicaConfig{}, readsHome(t))
				setEach(t, admin, "a", "list", 0, 3)
				syncAll(t, admin, sam)
				restore := s.backupAs("leave", putBackWithNote)
				bob := s.replica("bob", true, client.ReplicaConfig{}, nil)
				for i, l := range []string{"home", "work", "home", "work"} {
					set(t, bob, fmt.Sprint("b", i), "list", l)
				}
				syncAll(t, bob, sam) // sam's position: b3, a leave
				want := union(sam)
				if len(want) != 2 {
					t.Fatalf("sam holds %d records, want b0 and b2", len(want))
				}
				bob.Close() // b0 and b2 live in sam only
				admin.Close()
				s.restart(restore) // the head is 3 again

				carol := s.replica("carol", true, client.ReplicaConfig{}, nil)
				for i := range 6 {
					set(t, carol, fmt.Sprint("c", i), "list", "home")
				}
				syncAll(t, carol) // b3's position given to c3
				if moved {
					set(t, carol, "c3", "m", 1)
					syncAll(t, carol) // c3 moves on: nothing at sam's position
				}
				maps.Copy(want, matching(t, union(carol), "home"))
				if len(want) != 8 {
					t.Fatalf("sam's scope holds %d records, want 8", len(want))
				}
				if live {
					runLive(t, sam)
				}
				var diff string
				deadline := time.Now().Add(60 * time.Second)
				for {
					if !live {
						syncAll(t, sam)
					}
					served := s.served(t)
					diff = sameRecords(matching(t, served, "home"), want)
					if d := sameRecords(sam.Records("notes"), want); d != "" {
						diff += "sam:\n" + d
					}
					if diff == "" {
						break
					}
					if time.Now().After(deadline) {
						t.Fatalf("no convergence on sam's scope:\n%s", diff)
					}
					time.Sleep(20 * time.Millisecond)
				}
				if n := s.metric(t, "convergo_store_went_back_total"); n != 1 {
					t.Errorf("convergo_store_went_back_total %d, want 1", n)
				}
			})
		}
	}
}
