package engine

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/convergo/convergo/stores/bolt"
	"github.com/convergo/convergo/stores/bolt/bolttest"
)

// TestResetRestoredTwice: the same backup is restored twice, each time
// with the documented procedure (BumpEpochs, run by `convergo store
// mark-restored`). A reader that pulled between the two restores holds a
// cursor of the epoch the first procedure started; the second procedure,
// on a copy whose counter is the one the first started from, must not
// start that epoch again, or the reader's cursor passes for one of the new
// history. Here the new history gives the reader's position to the very
// record it read there, so only the epoch can tell (as in
// TestResetBoltBackupRestored). The backup is of the whole directory, so
// the store's note goes back with the file and the store cannot notice by
// itself (bolt.NotePath). The procedure runs an hour after the first time
// the second time, on the store's clock.
func TestResetRestoredTwice(t *testing.T) {
	dir := t.TempDir()
	path, backup := filepath.Join(dir, "convergo.db"), filepath.Join(dir, "backup.db")
	onBolt(t, path, func(e *Engine) { write(t, e, "todos", 0, 3) })
	bolttest.CopyWithNote(t, path, backup)
	onBolt(t, path, func(e *Engine) { write(t, e, "todos", 3, 5) }) // head 8, lost by the first restore

	at := time.Now()
	restore := func() {
		t.Helper()
		bolttest.CopyWithNote(t, backup, path)
		st, err := bolt.Open(context.Background(), path, bolt.Options{Now: func() time.Time { return at }})
		if err != nil {
			t.Fatal(err)
		}
		if err := st.BumpEpochs(context.Background()); err != nil {
			t.Fatal(err)
		}
		st.Close()
		at = at.Add(time.Hour)
	}
	restore()
	var c []byte
	onBolt(t, path, func(e *Engine) {
		write(t, e, "todos", 10, 5) // seqs 4..8: r10..r14
		c = pullTo(t, e, "todos", nil)
	})

	restore()
	onBolt(t, path, func(e *Engine) {
		write(t, e, "todos", 100, 4) // seqs 4..7 handed out again
		write(t, e, "todos", 14, 1)  // and 8, to r14 again: the record c read there
		wantReset(t, e, "todos", c, ResetHistoryLost)
		noReset(t, e, "todos", pullTo(t, e, "todos", nil))
	})
}

// sameRecordScene writes todos r0..r2 on a bolt store at path, takes a
// copy with copy (to path's backup), writes r3..r7, pulls to their end
// (seq 8), puts the copy back with copy, and writes on the copy past that
// position, giving it to r7 again: the record the pull read there. It
// returns the pull's cursor; the store is closed.
func sameRecordScene(t *testing.T, path string, copy func(t testing.TB, from, to string)) []byte {
	t.Helper()
	backup := path + ".bak"
	onBolt(t, path, func(e *Engine) { write(t, e, "todos", 0, 3) })
	copy(t, path, backup)
	var c []byte
	onBolt(t, path, func(e *Engine) {
		write(t, e, "todos", 3, 5)
		c = pullTo(t, e, "todos", nil) // at 8
	})
	copy(t, backup, path) // the restore, head 3
	onBolt(t, path, func(e *Engine) {
		write(t, e, "todos", 100, 4) // seqs 4..7 handed out again
		write(t, e, "todos", 7, 1)   // and 8, to r7 again: the record c read there
	})
	return c
}

// TestResetBoltBackupRestored: a backup of the directory (the store's note
// with its file) is restored, and written past every cursor before a
// reader comes back. A cursor whose position holds another record now is
// reset (TestResetSlotGivenOutAgain), and so is one whose record is neither
// there nor after it (TestResetMovedOnNotMet); one whose position the new
// history gave to the very record it read there, written again, is told
// apart by its state mark (stateMark): the engine starts a new epoch of
// every collection. The documented procedure (BumpEpochs, run by
// `convergo store mark-restored`) tells it too, before any reader is back.
func TestResetBoltBackupRestored(t *testing.T) {
	path := filepath.Join(t.TempDir(), "convergo.db")
	c := sameRecordScene(t, path, bolttest.CopyWithNote)
	onBolt(t, path, func(e *Engine) {
		wantReset(t, e, "todos", c, ResetHistoryLost) // the state mark: proof
		noReset(t, e, "todos", pullTo(t, e, "todos", nil))
	})

	path = filepath.Join(t.TempDir(), "convergo.db")
	c = sameRecordScene(t, path, bolttest.CopyWithNote)
	// The procedure: the operator command runs BumpEpochs on the file.
	st := openBolt(t, path)
	if err := st.BumpEpochs(context.Background()); err != nil {
		t.Fatal(err)
	}
	st.Close()
	onBolt(t, path, func(e *Engine) {
		wantReset(t, e, "todos", c, ResetHistoryLost)
		noReset(t, e, "todos", pullTo(t, e, "todos", nil)) // new cursors carry the new epoch
	})
}

// TestResetBoltFilePutBack: TestResetBoltBackupRestored's scene with the
// file alone put back and no procedure run: the store's note beside the
// file counts more writes than the file, so the store starts a new epoch
// when it opens and the reader is reset.
func TestResetBoltFilePutBack(t *testing.T) {
	path := filepath.Join(t.TempDir(), "convergo.db")
	c := sameRecordScene(t, path, bolttest.CopyFile)
	onBolt(t, path, func(e *Engine) {
		wantReset(t, e, "todos", c, ResetHistoryLost)
		noReset(t, e, "todos", pullTo(t, e, "todos", nil))
	})
}

// TestResetEpochAheadIsProof: a cursor this server made whose epoch is
// after the store's can only come from a history the store lost (a copy
// put back from before a bump, with its note, and no procedure run), so
// it is proof as a cursor past the head is: every collection starts a new
// epoch. Here the reader of notes sits where the new history wrote the
// very record it read there, which nothing else tells; the reader of
// todos, whose cursor is of the lost epoch, comes back first (its cursor
// is past the head too, but the epoch is judged first).
func TestResetEpochAheadIsProof(t *testing.T) {
	var notes, todos []byte
	e := olderCopyScene(t, func(e *Engine) {
		notes = pullTo(t, e, "notes", nil) // at 6, epoch as the copy's
		if err := e.store.BumpEpochs(context.Background()); err != nil {
			t.Fatal(err)
		}
		todos = pullTo(t, e, "todos", nil) // of the new epoch
	})
	write(t, e, "notes", 100, 3) // seqs 3..5 handed out again
	write(t, e, "notes", 5, 1)   // and 6, to r5 again: the record notes read there
	wantReset(t, e, "todos", todos, ResetHistoryLost)
	wantReset(t, e, "notes", notes, ResetHistoryLost)
	if n := e.StoreWentBack(); n != 1 {
		t.Fatalf("StoreWentBack = %d, want 1", n)
	}
}
