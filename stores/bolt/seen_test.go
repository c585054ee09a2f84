package bolt_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/stores/bolt"
	"github.com/convergo/convergo/stores/bolt/bolttest"
)

// TestFilePutBackNoticedAtOpen: the file alone is put back from a copy
// taken before later writes (the note beside it stays), without `convergo
// store mark-restored`. Open notices and starts a new epoch of every
// collection, once; the cases that are not a file gone back start none.
func TestFilePutBackNoticedAtOpen(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name     string
		between  func(t *testing.T, path, backup string) // after the later writes, before reopening
		wantBump bool
	}{
		{"the file alone put back", func(t *testing.T, path, backup string) { bolttest.CopyFile(t, backup, path) }, true},
		{"the file and its note put back", func(t *testing.T, path, backup string) {
			bolttest.CopyFile(t, backup, path)
			bolttest.CopyFile(t, bolt.NotePath(backup), bolt.NotePath(path))
		}, false},
		{"nothing put back", func(*testing.T, string, string) {}, false},
		{"another store's file in its place", func(t *testing.T, path, _ string) {
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
			s, err := bolt.Open(ctx, path, bolt.Options{})
			if err != nil {
				t.Fatal(err)
			}
			s.Close()
		}, false},
		{"the file put back, the note unreadable", func(t *testing.T, path, backup string) {
			bolttest.CopyFile(t, backup, path)
			if err := os.WriteFile(bolt.NotePath(path), []byte("convergo-bolt-seen-1 x"), 0o600); err != nil {
				t.Fatal(err)
			}
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path, backup := filepath.Join(dir, "convergo.db"), filepath.Join(dir, "backup.db")
			s := openAt(t, path)
			put(t, s, "a", "r0", "r1")
			s.Close()
			bolttest.CopyFile(t, path, backup)
			bolttest.CopyFile(t, bolt.NotePath(path), bolt.NotePath(backup))

			s = openAt(t, path)
			put(t, s, "a", "r2")
			put(t, s, "b", "r0")
			s.Close()

			tt.between(t, path, backup)
			s = openAt(t, path)
			m := epochOf(t, s, "a")
			s.Close()
			if bumped := stores.StoreEpochOf(m) != 0; bumped != tt.wantBump {
				t.Fatalf("store-wide epoch %d at open: bumped %v, want %v", stores.StoreEpochOf(m), bumped, tt.wantBump)
			}
			s = openAt(t, path)
			if again := epochOf(t, s, "a"); again != m {
				t.Fatalf("a second open moved the epoch from %+v to %+v", m, again)
			}
			put(t, s, "a", "r3") // the file goes on from here
			s.Close()
			s = openAt(t, path)
			if again := epochOf(t, s, "a"); again != m {
				t.Fatalf("an open after writes on the file moved the epoch from %+v to %+v", m, again)
			}
			s.Close()
		})
	}
}

func openAt(t *testing.T, path string) *bolt.Store {
	t.Helper()
	s, err := bolt.Open(context.Background(), path, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func put(t *testing.T, s *bolt.Store, coll string, ids ...string) {
	t.Helper()
	cs := make([]crdt.Change, len(ids))
	for i, id := range ids {
		cs[i] = crdt.Change{Collection: coll, Record: crdt.SetField(id, "f", []byte{0x01}, crdt.Stamp{Wall: 1, Replica: "w"})}
	}
	if _, err := s.Apply(context.Background(), cs); err != nil {
		t.Fatal(err)
	}
}

// putBackAlone writes collection a's r0 to a new file, backs the file up,
// writes r1 and puts the backup back alone, the note left beside it; it
// returns the file's path.
func putBackAlone(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	path, backup := filepath.Join(dir, "convergo.db"), filepath.Join(dir, "backup.db")
	s := openAt(t, path)
	put(t, s, "a", "r0")
	s.Close()
	bolttest.CopyFile(t, path, backup)
	s = openAt(t, path)
	put(t, s, "a", "r1")
	s.Close()
	bolttest.CopyFile(t, backup, path)
	return path
}

func epochOf(t *testing.T, s *bolt.Store, coll string) stores.Meta {
	t.Helper()
	m, err := s.Meta(context.Background(), coll)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestFilePutBackRestoringBumpsOnce: `convergo store mark-restored` opens
// a file put back alone with Options.Restoring and then bumps itself; the
// open leaves the new epoch to it, so the procedure starts one epoch, not
// two (every reader would be reset once either way, but the count would
// say two restores).
func TestFilePutBackRestoringBumpsOnce(t *testing.T) {
	ctx := context.Background()
	path := putBackAlone(t)
	at := time.Unix(1_764_892_800, 0)
	s, err := bolt.Open(ctx, path, bolt.Options{Restoring: true, Now: func() time.Time { return at }})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.BumpEpochs(ctx); err != nil { // what the command does next
		t.Fatal(err)
	}
	if got, want := stores.StoreEpochOf(epochOf(t, s, "a")), stores.NextEpoch(0, at); got != want {
		t.Fatalf("store-wide epoch %d after the procedure, want %d: one bump from 0", got, want)
	}
}

// TestFilePutBackRestoringUntilBumped: a file put back alone stays
// noticed until `convergo store mark-restored` has started its epoch. A
// command that opened it (Options.Restoring) and ended before its bump
// (killed, or failing) leaves the note as it was, so a server opening the
// file next still starts the new epoch; once the command has bumped, the
// server starts none.
func TestFilePutBackRestoringUntilBumped(t *testing.T) {
	ctx := context.Background()
	restoring := func(path string) *bolt.Store {
		t.Helper()
		s, err := bolt.Open(ctx, path, bolt.Options{Restoring: true})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}

	path := putBackAlone(t)
	restoring(path).Close() // the command ended before its bump
	s := openAt(t, path)
	m := epochOf(t, s, "a")
	s.Close()
	if stores.StoreEpochOf(m) == 0 {
		t.Fatal("a server opening the file after mark-restored ended before its bump: no new epoch, want one (the file was put back)")
	}

	path = putBackAlone(t)
	s = restoring(path)
	if err := s.BumpEpochs(ctx); err != nil {
		t.Fatal(err)
	}
	m = epochOf(t, s, "a")
	s.Close()
	s = openAt(t, path)
	put(t, s, "a", "r2")
	s.Close()
	s = openAt(t, path)
	defer s.Close()
	if again := epochOf(t, s, "a"); again != m {
		t.Fatalf("a server opening the file marked restored moved the epoch from %+v to %+v, want no further epoch", m, again)
	}
}

// TestFilePutBackAfterARestore: a backup put back and marked restored,
// written on, and then another backup of the history the first restore
// ended put back alone, without mark-restored (the wrong backup first,
// then the right one, the command forgotten the second time). The second
// counts more writes than the note, which counts those of the history
// since the first restore: it is noticed by the epoch the note records,
// which the first restore's bump raised above the backup's.
func TestFilePutBackAfterARestore(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path, older, newer := filepath.Join(dir, "convergo.db"), filepath.Join(dir, "older.db"), filepath.Join(dir, "newer.db")
	s := openAt(t, path)
	put(t, s, "a", "r0")
	s.Close()
	bolttest.CopyFile(t, path, older)
	s = openAt(t, path)
	put(t, s, "a", "r1")
	put(t, s, "a", "r2")
	s.Close()
	bolttest.CopyFile(t, path, newer)
	s = openAt(t, path)
	put(t, s, "a", "r3")
	s.Close()

	bolttest.CopyFile(t, older, path)
	hourAgo := time.Now().Add(-time.Hour)
	s, err := bolt.Open(ctx, path, bolt.Options{Restoring: true, Now: func() time.Time { return hourAgo }})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.BumpEpochs(ctx); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = openAt(t, path)
	restored := epochOf(t, s, "a")
	put(t, s, "a", "r4")
	s.Close()

	bolttest.CopyFile(t, newer, path)
	s = openAt(t, path)
	defer s.Close()
	if m := epochOf(t, s, "a"); stores.StoreEpochOf(m) <= stores.StoreEpochOf(restored) {
		t.Fatalf("store-wide epoch %d at open of a file of the history the restore ended, %d since the restore: want a new epoch past it", stores.StoreEpochOf(m), stores.StoreEpochOf(restored))
	}
}

// TestNoteWithoutEpoch: a note written before the note held the epoch
// (convergo-bolt-seen-1: identity and count) is read as a count alone, and
// the next write replaces it with the epoch.
func TestNoteWithoutEpoch(t *testing.T) {
	ctx := context.Background()
	for _, tt := range []struct {
		name     string
		ahead    uint64 // the note's count past the file's
		wantBump bool
	}{{"the note counts more", 5, true}, {"the note counts as many", 0, false}} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "convergo.db")
			s := openAt(t, path)
			put(t, s, "a", "r0")
			put(t, s, "a", "r1")
			id, err := s.Identity(ctx)
			if err != nil {
				t.Fatal(err)
			}
			s.Close()
			old := fmt.Sprintf("convergo-bolt-seen-1 %s %020d\n", id, 2+tt.ahead)
			if err := os.WriteFile(bolt.NotePath(path), []byte(old), 0o600); err != nil {
				t.Fatal(err)
			}
			s = openAt(t, path)
			m := epochOf(t, s, "a")
			s.Close()
			if bumped := stores.StoreEpochOf(m) != 0; bumped != tt.wantBump {
				t.Fatalf("store-wide epoch %d at open beside a note of the first format counting %d writes, the file 2: bumped %v, want %v", stores.StoreEpochOf(m), 2+tt.ahead, bumped, tt.wantBump)
			}
			b, err := os.ReadFile(bolt.NotePath(path))
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(string(b), "convergo-bolt-seen-2 "+id+" ") {
				t.Fatalf("the note after open: %q, want it written again with the epoch", b)
			}
		})
	}
}
