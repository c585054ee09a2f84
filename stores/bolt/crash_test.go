package bolt_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/stores/bolt"
)

// The crash test runs its writer as a child process: this test binary again,
// with these variables set, running only TestCrashChild.
const (
	crashPathEnv = "CONVERGO_BOLT_CRASH_PATH" // the store's file
	crashWallEnv = "CONVERGO_BOLT_CRASH_WALL" // first wall time: stamps never repeat across rounds
	crashSeedEnv = "CONVERGO_BOLT_CRASH_SEED"
	crashColl    = "crash"
	crashRounds  = 6
)

// ack is a change that Apply acknowledged in the child.
type ack struct {
	id, field string // field is empty for a delete
	stamp     crdt.Stamp
	value     int64
}

func (a ack) String() string {
	if a.field == "" {
		return fmt.Sprintf("delete %s@%s", a.id, a.stamp)
	}
	return fmt.Sprintf("%s.%s=%d@%s", a.id, a.field, a.value, a.stamp)
}

// TestCrash kills a writing child with SIGKILL at random moments, then
// reopens the file: it must open cleanly, pass bbolt's consistency check,
// hold every change the child saw acknowledged, and keep a log that walks
// to every record once.
func TestCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test: starts child processes")
	}
	path := filepath.Join(t.TempDir(), "crash.db")
	seed := rand.Uint64()
	rng := rand.New(rand.NewPCG(seed, 0))
	t.Logf("seed %d", seed)
	var acks []ack
	for round := range crashRounds {
		delay := time.Duration(20+rng.IntN(600)) * time.Millisecond
		got, err := runCrashChild(t, path, round, seed, delay)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		acks = append(acks, got...)
		records := checkCrashFile(t, path, acks)
		t.Logf("round %d: killed after %s, %d changes acknowledged (total %d), file holds %d records", round, delay, len(got), len(acks), records)
	}
	if len(acks) == 0 {
		t.Fatal("the child never acknowledged a change")
	}
}

// runCrashChild starts a writer on path, kills it with SIGKILL after delay
// (counted from when it has the store open) and returns the changes it
// acknowledged.
func runCrashChild(t *testing.T, path string, round int, seed uint64, delay time.Duration) ([]ack, error) {
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(),
		crashPathEnv+"="+path,
		crashWallEnv+"="+strconv.Itoa((round+1)*100_000_000),
		crashSeedEnv+"="+strconv.FormatUint(seed+uint64(round), 10),
	)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	defer cmd.Process.Kill() // in case of an early return

	ready := make(chan struct{})
	var acks []ack
	var parseErr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		acks, parseErr = readAcks(out, ready)
	}()
	select {
	case <-ready:
	case <-time.After(30 * time.Second):
		return nil, errors.New("child did not open the store within 30s")
	}
	time.Sleep(delay)
	if err := cmd.Process.Kill(); err != nil { // SIGKILL
		return nil, err
	}
	wg.Wait()
	err = cmd.Wait()
	if ee := (*exec.ExitError)(nil); !errors.As(err, &ee) || ee.ProcessState.String() != "signal: killed" {
		return nil, fmt.Errorf("child did not die of SIGKILL: %v", err)
	}
	return acks, parseErr
}

// readAcks reads the child's output: "ready", then one line per
// acknowledged change. A last line cut short by the kill is dropped.
func readAcks(r io.Reader, ready chan<- struct{}) ([]ack, error) {
	br := bufio.NewReader(r)
	var acks []ack
	var err error
	for {
		line, rerr := br.ReadString('\n')
		if rerr != nil {
			return acks, err // EOF: a line without its newline is incomplete
		}
		line = strings.TrimSuffix(line, "\n")
		if line == "ready" {
			close(ready)
			continue
		}
		var a ack
		var kind string
		_, serr := fmt.Sscanf(line, "%s %s %s %d %d %d", &kind, &a.id, &a.field, &a.stamp.Wall, &a.stamp.Logical, &a.value)
		if serr != nil && err == nil {
			err = fmt.Errorf("child line %q: %v", line, serr)
			continue
		}
		a.stamp.Replica = "crash"
		if kind == "del" {
			a.field = ""
		}
		acks = append(acks, a)
	}
}

// checkCrashFile checks the file after a kill and returns its record count.
func checkCrashFile(t *testing.T, path string, acks []ack) int {
	t.Helper()
	// bbolt's own consistency check: page accounting, freelist, ordering.
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: 5 * time.Second, ReadOnly: true})
	if err != nil {
		t.Fatalf("bbolt open after kill: %v", err)
	}
	err = db.View(func(tx *bbolt.Tx) error {
		var errs []error
		for err := range tx.Check() {
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	})
	db.Close()
	if err != nil {
		t.Fatalf("bbolt consistency check after kill: %v", err)
	}

	ctx := context.Background()
	s, err := bolt.Open(context.Background(), path, bolt.Options{})
	if err != nil {
		t.Fatalf("reopen after kill: %v", err)
	}
	defer s.Close()
	for _, a := range acks {
		e, err := s.Get(ctx, crashColl, a.id)
		if err != nil {
			t.Fatalf("acknowledged %s: %v", a, err)
		}
		r := e.Record
		if a.field == "" {
			if r.Deleted.Compare(a.stamp) < 0 {
				t.Fatalf("acknowledged %s lost: record is %v", a, r)
			}
			continue
		}
		f, ok := r.Fields[a.field]
		switch {
		case ok && f.Stamp.Compare(a.stamp) > 0, !ok && r.Deleted.Compare(a.stamp) >= 0:
			// overwritten or deleted later
		case ok && f.Stamp == a.stamp && a.value < 0: // a large string value
			var v string
			if err := crdt.DecodeValue(f.Value, &v); err != nil || len(v) <= 4096 {
				t.Fatalf("acknowledged %s: stored value of %d bytes: %v", a, len(f.Value), err)
			}
		case ok && f.Stamp == a.stamp:
			var v int64
			if err := crdt.DecodeValue(f.Value, &v); err != nil || v != a.value {
				t.Fatalf("acknowledged %s: stored value %x", a, f.Value)
			}
		default:
			t.Fatalf("acknowledged %s lost: record is %v", a, r)
		}
	}
	// The log walks to every record once, at its current seq.
	head, err := s.Head(ctx, crashColl)
	if err != nil {
		t.Fatal(err)
	}
	var cursor uint64
	seen := map[string]bool{}
	for {
		p, err := s.Pull(ctx, crashColl, cursor, stores.PageLimit{Records: stores.MaxPage, Bytes: stores.DefaultPageBytes})
		if err != nil {
			t.Fatalf("pull after kill: %v", err)
		}
		for _, e := range p.Entries {
			if seen[e.Record.ID] {
				t.Fatalf("record %s twice in the log", e.Record.ID)
			}
			seen[e.Record.ID] = true
		}
		cursor = p.Next
		if !p.More {
			break
		}
	}
	if cursor != head {
		t.Fatalf("log ends at %d, head is %d", cursor, head)
	}
	return len(seen)
}

// TestCrashChild is the writer of TestCrash; it does nothing unless started
// by it. Four goroutines apply random batches and print each acknowledged
// change until the parent kills the process.
func TestCrashChild(t *testing.T) {
	path := os.Getenv(crashPathEnv)
	if path == "" {
		t.Skip("the writer process of TestCrash")
	}
	wall, _ := strconv.ParseInt(os.Getenv(crashWallEnv), 10, 64)
	seed, _ := strconv.ParseUint(os.Getenv(crashSeedEnv), 10, 64)
	s, err := bolt.Open(context.Background(), path, bolt.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(2)
	}
	fmt.Println("ready")
	var mu sync.Mutex // orders stamps; writes to stdout are one syscall per batch
	nextWall := func() int64 { mu.Lock(); defer mu.Unlock(); wall++; return wall }
	// Should the parent die without killing us, stop on our own.
	time.AfterFunc(60*time.Second, func() { os.Exit(3) })
	for w := range 4 {
		go func() {
			rng := rand.New(rand.NewPCG(seed, uint64(w)))
			for {
				n := 1 + rng.IntN(20)
				batch := make([]crdt.Change, n)
				var lines strings.Builder
				for i := range batch {
					id := fmt.Sprintf("r%d", rng.IntN(300))
					stamp := crdt.Stamp{Wall: nextWall(), Logical: uint32(rng.IntN(2)), Replica: "crash"}
					if rng.IntN(25) == 0 {
						batch[i] = crdt.Change{Collection: crashColl, Record: crdt.DeleteRecord(id, stamp)}
						fmt.Fprintf(&lines, "del %s - %d %d 0\n", id, stamp.Wall, stamp.Logical)
						continue
					}
					field := fmt.Sprintf("f%d", rng.IntN(5))
					v := rng.Int64N(1 << 40)
					// Some values are large, so commits span many pages.
					var value []byte
					if rng.IntN(10) == 0 {
						value, _ = crdt.EncodeValue(strings.Repeat("x", 4096) + strconv.FormatInt(v, 10))
						v = -1
					} else {
						value, _ = crdt.EncodeValue(v)
					}
					batch[i] = crdt.Change{Collection: crashColl, Record: crdt.SetField(id, field, value, stamp)}
					fmt.Fprintf(&lines, "set %s %s %d %d %d\n", id, field, stamp.Wall, stamp.Logical, v)
				}
				if _, err := s.Apply(context.Background(), batch); err != nil {
					fmt.Fprintln(os.Stderr, "child: apply:", err)
					os.Exit(2)
				}
				os.Stdout.WriteString(lines.String())
			}
		}()
	}
	select {}
}
