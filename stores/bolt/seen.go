package bolt

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"

	bbolt "go.etcd.io/bbolt"
)

// A file put back from a backup cannot know it went back in time, but the
// server that wrote the newer file can leave a note beside it. The file
// counts its write transactions that hand out sequence numbers (genKey in
// the meta bucket, raised in the commit's own transaction); after each such
// commit the store writes the count it has reached, with the file's
// identity and its store-wide epoch as that commit read it, into the note
// (NotePath), one fixed-size write over the last
// into the page cache, not fsynced (docs/benchmarks.md, "The bolt store's
// note": no cost measurable beside a commit, even without fsync). At
// Open, a note of the same identity with a larger count than the file's
// at the same epoch, or with a later epoch, means the file is older than
// this directory's server last left it: a copy put back without `convergo
// store mark-restored`. (Counts of two histories cannot be compared: after
// a restore the count starts again from the backup's, and a file of the
// history the restore ended may count more. The restore's bump raised the
// epoch past that history's, and within one history the epoch only grows,
// so a file whose epoch is the later one holds what the note counts.) Open then does what
// that command does (BumpEpochs) and says so at error level; when that
// command is the one opening it (Options.Restoring), it says so at info
// and leaves the bump to the command, and the note as it was until that
// bump (written at Close): a command that ends before it leaves the copy
// for the next Open to notice (one that crashes between its bump and its
// Close leaves one epoch more to the next Open, before any reader).
//
// The note is written only with counts already committed, so within one
// history it never runs ahead of the file. It is not fsynced: a crash of
// the process loses nothing of it, a crash of the machine may leave it
// older (which only leaves a restore to the last moments unnoticed here)
// or torn. A note that cannot be read is replaced, with a warning. A backup
// of the whole directory carries its note back with it and is not noticed
// here; the engine's checks and the procedure remain (docs/operations.md,
// "Backup and restore").
const (
	seenSuffix = ".seen"
	seenFormat = "convergo-bolt-seen-2"
	// seenFormat1 is the note without the epoch, read as a count alone.
	seenFormat1 = "convergo-bolt-seen-1"
)

// NotePath is where the store at path keeps its note: path + ".seen". A
// backup of the file alone leaves it behind, and a restore of the file
// alone is noticed at Open; a backup that takes the note too (the whole
// directory) is not.
func NotePath(path string) string { return path + seenSuffix }

var genKey = []byte("gen") // in meta: write transactions that took sequence numbers, 8 bytes big-endian

// readGen returns the file's count of write transactions (0 before any).
func readGen(tx *bbolt.Tx) (uint64, error) {
	v := tx.Bucket(metaBucket).Get(genKey)
	switch len(v) {
	case 0:
		return 0, nil
	case 8:
		return binary.BigEndian.Uint64(v), nil
	}
	return 0, fmt.Errorf("%w: write count of %d bytes, want 8", ErrCorrupt, len(v))
}

// raiseGen counts one more write transaction, in tx.
func raiseGen(tx *bbolt.Tx) (uint64, error) {
	g, err := readGen(tx)
	if err != nil {
		return 0, err
	}
	return g + 1, tx.Bucket(metaBucket).Put(genKey, seqKey(g+1))
}

// seenNote is what the note holds: the file's identity, its store-wide
// epoch and its count of write transactions. A note of seenFormat1 has no
// epoch (noEpoch).
type seenNote struct {
	identity   string
	epoch, gen uint64
	noEpoch    bool
}

// String is the note as written: its epoch and count in 20 digits each,
// so that every note of one file has the same size and each write covers
// the last.
func (n seenNote) String() string {
	return fmt.Sprintf("%s %s %020d %020d\n", seenFormat, n.identity, n.epoch, n.gen)
}

// after reports whether the note n tells of writes that the file, now,
// lacks (checkSeen).
func (n seenNote) after(now seenNote) bool {
	if n.identity != now.identity {
		return false
	}
	if n.noEpoch || n.epoch == now.epoch {
		return n.gen > now.gen
	}
	return n.epoch > now.epoch
}

// readSeen reads the note at path: ok false when there is none.
func readSeen(path string) (n seenNote, ok bool, err error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return n, false, nil
	}
	if err != nil {
		return n, false, err
	}
	f := strings.Fields(string(b))
	unreadable := fmt.Errorf("unreadable note %q", b)
	if len(f) < 3 || len(f[1]) == 0 || len(f[1]) > maxIdentity || !strings.HasSuffix(string(b), "\n") {
		return n, false, unreadable
	}
	n.identity = f[1]
	switch {
	case len(f) == 3 && f[0] == seenFormat1:
		n.noEpoch = true
	case len(f) == 4 && f[0] == seenFormat:
		if n.epoch, err = strconv.ParseUint(f[2], 10, 64); err != nil {
			return n, false, unreadable
		}
	default:
		return n, false, unreadable
	}
	if n.gen, err = strconv.ParseUint(f[len(f)-1], 10, 64); err != nil {
		return n, false, unreadable
	}
	return n, true, nil
}

// checkSeen is Open's comparison of the file with the note beside it. It
// returns the note the file stands at now and, when the file was put back
// and is opened to be marked restored, the note as it is, which is kept
// until the command's bump (noteHeld).
func (s *Store) checkSeen() (now seenNote, held *seenNote, err error) {
	err = s.view(func(tx *bbolt.Tx) error {
		now.identity = string(tx.Bucket(metaBucket).Get(identityKey))
		var err error
		if now.gen, err = readGen(tx); err != nil {
			return err
		}
		now.epoch, err = readStoreEpoch(tx)
		return err
	})
	if err != nil {
		return now, nil, err
	}
	note, ok, err := readSeen(s.seenPath)
	if err != nil {
		s.log.Warn("the note of what this directory's server last wrote cannot be read; writing it again", "note", s.seenPath, "err", err)
		return now, nil, nil
	}
	if !ok || !note.after(now) {
		return now, nil, nil
	}
	if s.restoring {
		// The caller is that command, which starts the new epoch next.
		s.log.Info("the store file is older than this directory's server last left it: a copy put back, marked restored by this command",
			"note", s.seenPath, "file_writes", now.gen, "noted_writes", note.gen, "file_epoch", now.epoch, "noted_epoch", note.epoch)
		return now, &note, nil
	}
	s.log.Error("the store file is older than this directory's server last left it: a copy put back without `convergo store mark-restored`; starting a new epoch of every collection, as that command does",
		"note", s.seenPath, "file_writes", now.gen, "noted_writes", note.gen, "file_epoch", now.epoch, "noted_epoch", note.epoch)
	if _, err := s.bumpEpochs(context.Background(), func(uint64) bool { return true }); err != nil {
		return now, nil, fmt.Errorf("new epoch for a file put back: %w", err)
	}
	return now, nil, nil
}

// openSeen opens the note for writing and writes n into it; with held,
// the note it found, it leaves the note as it is (noteHeld).
func (s *Store) openSeen(n seenNote, held *seenNote) {
	f, err := os.OpenFile(s.seenPath, os.O_RDWR|os.O_CREATE, 0o600)
	if err == nil && held != nil {
		// Written at Close once the command has bumped: of the same
		// identity, and no shorter, it covers the note found.
		s.seen, s.noted, s.noteHeld = f, held.gen, true
		return
	}
	if err == nil {
		s.seen, s.noted = f, n.gen
		s.writeSeen(n)
		if err = f.Truncate(int64(len(n.String()))); err == nil {
			return
		}
	}
	s.log.Warn("open the note of what this server wrote; a copy of the file put back later is not noticed at open", "note", s.seenPath, "err", err)
}

// noteSeen writes the file's count of writes into the note when it moved,
// unless the note is held for a bump to come (noteHeld). Only the commit
// loop calls it, and Close after the loop ended.
func (s *Store) noteSeen() {
	if s.seen == nil || s.gen == s.noted || s.noteHeld && !s.noteRelease.Load() {
		return
	}
	s.writeSeen(seenNote{identity: s.identity, epoch: s.genEpoch, gen: s.gen})
}

func (s *Store) writeSeen(n seenNote) {
	if _, err := s.seen.WriteAt([]byte(n.String()), 0); err != nil {
		if !s.seenFailed {
			s.log.Warn("write the note of what this server wrote; a copy of the file put back later may go unnoticed at open", "note", s.seenPath, "err", err)
		}
		s.seenFailed = true
		return
	}
	s.noted, s.seenFailed = n.gen, false
}
