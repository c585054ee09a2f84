package redis

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/engine"
	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/stores/redis/redistest"
)

// The scenarios of a Redis that went back in time, seen through the
// engine: a cursor read before gets engine.ErrReset, history lost.

func openOn(t *testing.T, srv *redistest.Server) (*Store, *engine.Engine) {
	t.Helper()
	s, err := Open(testContext(t), Options{
		Addrs: []string{srv.Addr()}, KeyPrefix: "rw:",
		DialTimeout: 500 * time.Millisecond, ReadTimeout: time.Second, WriteTimeout: time.Second, MaxRetries: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	e, err := engine.Open(engine.Config{Store: s, Replica: "srv", PollInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close(); s.Close() })
	return s, e
}

func writeN(t *testing.T, e *engine.Engine, first, n int) {
	t.Helper()
	for i := first; i < first+n; i++ {
		_, err := e.Apply(context.Background(), []crdt.Change{{Collection: "c", Record: crdt.SetField(fmt.Sprintf("r%d", i), "n", mustValue(t, int64(i)), crdt.Stamp{Wall: time.Now().UnixMilli(), Replica: "w"})}})
		if err != nil {
			t.Fatal(err)
		}
	}
}

func cursorAfterAll(t *testing.T, e *engine.Engine) engine.Cursor {
	t.Helper()
	var c engine.Cursor
	for {
		p, err := e.Pull(context.Background(), "c", c, engine.PageLimit{})
		if err != nil {
			t.Fatal(err)
		}
		c = p.Next
		if !p.More {
			return c
		}
	}
}

// awaitReset pulls from c until the engine says reset, history lost: a
// store learns of a restart when its subscription comes back, of a
// failover at its next merge call. why says what a reader not reset would
// be left with.
func awaitReset(t *testing.T, e *engine.Engine, c engine.Cursor, why string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		p, err := e.Pull(context.Background(), "c", c, engine.PageLimit{})
		var re *engine.ResetError
		if errors.As(err, &re) {
			if re.Reason != engine.ResetHistoryLost {
				t.Fatalf("reset %v, want history lost", re)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("a cursor from before pulled %d entries (last error %v) and no reset: %s", len(p.Entries), err, why)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestRestartEverysecResets: Redis with appendfsync everysec restarts from
// an older append-only file (what a crash that lost the last second
// leaves): the changed run id starts a new epoch, so a cursor from before
// is reset even once the head has passed it again.
func TestRestartEverysecResets(t *testing.T) {
	srv := startServerFsync(t, "everysec")
	_, e := openOn(t, srv)
	writeN(t, e, 0, 3)
	time.Sleep(1500 * time.Millisecond) // everysec: on disk
	srv.Kill()
	older := filepath.Join(t.TempDir(), "aof")
	if out, err := exec.Command("cp", "-a", filepath.Join(srv.Dir, "appendonlydir"), older).CombinedOutput(); err != nil {
		t.Fatalf("copy the append-only file: %v %s", err, out)
	}
	srv.Start()
	writeN(t, e, 3, 5) // the go-redis pool reconnects
	c := cursorAfterAll(t, e)
	time.Sleep(1500 * time.Millisecond)
	srv.Kill()
	if err := os.RemoveAll(filepath.Join(srv.Dir, "appendonlydir")); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("cp", "-a", older, filepath.Join(srv.Dir, "appendonlydir")).CombinedOutput(); err != nil {
		t.Fatalf("restore the older append-only file: %v %s", err, out)
	}
	srv.Start()
	writeN(t, e, 100, 10) // head 13: past the cursor at 8
	awaitReset(t, e, c, "its reader keeps what the restarted server lost")
}

// TestRestartAlwaysKeepsCursors: with appendfsync always a restart loses
// nothing, and cursors stay valid.
func TestRestartAlwaysKeepsCursors(t *testing.T) {
	srv := startServer(t)
	_, e := openOn(t, srv)
	writeN(t, e, 0, 3)
	c := cursorAfterAll(t, e)
	srv.Kill()
	srv.Start()
	writeN(t, e, 3, 2)
	time.Sleep(time.Second) // the subscription comes back and checks the run
	p, err := e.Pull(context.Background(), "c", c, engine.PageLimit{})
	if err != nil || len(p.Entries) != 2 {
		t.Fatalf("pull after a lossless restart: %d entries, %v; want 2", len(p.Entries), err)
	}
}

// TestFlushallResets: FLUSHALL (or a new database) loses the identity key:
// the store makes a new identity, and old cursors reset.
func TestFlushallResets(t *testing.T) {
	srv := startServer(t)
	s, e := openOn(t, srv)
	writeN(t, e, 0, 3)
	c := cursorAfterAll(t, e)
	if err := s.client.FlushAll(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	writeN(t, e, 0, 10)
	awaitReset(t, e, c, "its reader keeps what the restarted server lost")
}

// TestRestartAfterEverysecRunResets: the run that crashed fsynced every
// second (appendfsync everysec, here set at runtime), the run that
// restarts fsyncs always (the configuration file says so, or was made to
// say so after the crash). What the crash lost is the crashed run's
// policy's to say: the restart starts a new epoch, so a cursor from before
// is reset.
func TestRestartAfterEverysecRunResets(t *testing.T) {
	srv := startServer(t)
	c0 := goredis.NewClient(&goredis.Options{Addr: srv.Addr()})
	if err := c0.ConfigSet(context.Background(), "appendfsync", "everysec").Err(); err != nil {
		t.Fatal(err)
	}
	c0.Close()
	_, e := openOn(t, srv)
	writeN(t, e, 0, 3)
	c := cursorAfterAll(t, e)
	time.Sleep(1500 * time.Millisecond) // everysec: on disk, as far as this test goes
	srv.Kill()
	srv.Start() // appendfsync always again, from its arguments
	writeN(t, e, 3, 2)
	awaitReset(t, e, c, "its reader keeps what the restarted server lost")
}

// TestFlushallAnnouncesTheNewIdentity: after FLUSHALL the first call that
// finds the identity key missing makes a new identity, and tells every
// other instance on the prefix, as a new epoch is told: their watchers
// get a Resync, and their engines forget the identity they cached, so
// that they do not go on giving readers of the new data cursors of the
// old store's identity for up to the engine's cache period (each such
// reader would be reset history_lost a second time, and heal again).
// Nothing else tells them: FLUSHALL leaves their subscriptions alone.
func TestFlushallAnnouncesTheNewIdentity(t *testing.T) {
	srv := startServer(t)
	ctx := testContext(t)
	open := func() *Store {
		s, err := Open(ctx, Options{Addrs: []string{srv.Addr()}, KeyPrefix: "fa:",
			DialTimeout: 500 * time.Millisecond, ReadTimeout: time.Second, WriteTimeout: time.Second, MaxRetries: 1})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	a, b := open(), open()
	if _, err := a.Identity(ctx); err != nil {
		t.Fatal(err)
	}
	resync := make(chan struct{}, 16)
	stop := b.Watch(func(n stores.Notification) {
		if n.Resync {
			resync <- struct{}{}
		}
	})
	t.Cleanup(stop)
	<-resync // the first subscription is a Resync
	if err := a.client.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Identity(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-resync:
	case <-time.After(10 * time.Second):
		t.Fatal("no Resync reached the other instance after the store made a new identity")
	}
}
