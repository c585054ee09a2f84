package bolt

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"sync"
	"sync/atomic"
	"time"

	bbolt "go.etcd.io/bbolt"
	bberrors "go.etcd.io/bbolt/errors"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
)

var (
	_ stores.Store            = (*Store)(nil)
	_ stores.EpochsBumperFrom = (*Store)(nil)
)

// ErrCorrupt means data read from the file failed a check: it was not
// written by this package, or the file was damaged.
// It wraps stores.ErrCorrupt, which callers above the store branch on.
var ErrCorrupt = fmt.Errorf("bolt: %w", stores.ErrCorrupt)

// ErrNewerFormat is Open's error for a file whose format mark names a
// later format than this build reads: a newer Convergo wrote it (a server
// rolled back after an upgrade). The file is not damaged: run the newer
// build on it. It is stores.ErrNewerFormat, the same value (every store
// refuses a newer format with it), and does not wrap ErrCorrupt.
var ErrNewerFormat = stores.ErrNewerFormat

// ErrLocked is Open's error when another process (a running server) held
// the file for as long as Open waited: one process at a time opens it.
var ErrLocked = errors.New("file is locked by another process")

// DefaultTimeout is how long Open waits for the file lock by default.
const DefaultTimeout = 5 * time.Second

// Options configures Open. The zero value is ready to use.
type Options struct {
	// Logger receives the store's logs. Nil discards them.
	Logger *slog.Logger
	// Timeout bounds the wait for the file lock when another process has
	// the file open. Zero means DefaultTimeout; negative is invalid.
	Timeout time.Duration
	// NoSync skips the fsync of every commit. UNSAFE: a crash or power cut
	// can then lose changes that Apply acknowledged, or leave the file
	// damaged. Only for tests and benchmarks.
	NoSync bool
	// Now is the clock an epoch bump reads (stores.NextEpoch). Nil means
	// time.Now.
	Now func() time.Time
	// Restoring says the file is opened to be marked restored (`convergo
	// store mark-restored`, which calls BumpEpochs next): a file put back,
	// noticed at open by the note beside it (seen.go), is then what the
	// caller expects: it is logged at info instead of as an error, and Open
	// leaves the new epoch to the caller, and the note as it is until
	// BumpEpochs ran (written at Close), so that a caller ending before
	// its bump leaves the file put back for the next Open to notice.
	Restoring bool
}

// Store is a stores.Store in one bbolt file. Create it with Open; it is safe
// for concurrent use.
type Store struct {
	db       *bbolt.DB
	log      *slog.Logger
	watchers stores.Watchers
	now      func() time.Time // Options.Now

	// The note beside the file (seen.go): its path and open file (nil
	// when it cannot be written), the file's identity, the file's count
	// of write transactions, the store-wide epoch the last of them read,
	// and the count last noted. Owned by the commit loop; by Open before
	// it runs, and by Close after it ended.
	seenPath   string
	seen       *os.File
	seenFailed bool
	restoring  bool // Options.Restoring
	identity   string
	gen, noted uint64
	genEpoch   uint64
	// noteHeld, set by Open, says the file was put back and is opened to
	// be marked restored: the note keeps what it found until a BumpEpochs
	// sets noteRelease (seen.go).
	noteHeld    bool
	noteRelease atomic.Bool

	requests chan *request
	// groupChanges bounds the changes of the batches one transaction
	// gathers: maxGroupChanges, or 1 for tests that measure without group
	// commit.
	groupChanges int
	quit         chan struct{} // closed by Close: no new requests
	stopped      chan struct{} // closed when the commit loop has returned

	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
}

// Open opens the store in the file at path, creating it if needed. Only one
// process can have the file open; Open waits up to opts.Timeout for it, and
// no longer than ctx allows. ctx bounds opening only, not the store's life.
func Open(ctx context.Context, path string, opts Options) (*Store, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	if opts.Timeout < 0 {
		return nil, fmt.Errorf("open %s: %w: negative Timeout %s", path, stores.ErrInvalid, opts.Timeout)
	}
	if opts.Timeout == 0 {
		opts.Timeout = DefaultTimeout
	}
	if d, ok := ctx.Deadline(); ok {
		opts.Timeout = max(min(opts.Timeout, time.Until(d)), time.Millisecond)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "store.bolt", "path", path)
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{
		Timeout:      opts.Timeout,
		NoSync:       opts.NoSync,
		FreelistType: bbolt.FreelistMapType, // O(1) page allocation in large files
	})
	if err != nil {
		if errors.Is(err, bberrors.ErrTimeout) {
			return nil, fmt.Errorf("open %s: %w after %s: %w", path, ErrLocked, opts.Timeout, err)
		}
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	if err := initFile(db); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	s := &Store{
		db:           db,
		log:          log,
		now:          opts.Now,
		requests:     make(chan *request),
		groupChanges: maxGroupChanges,
		quit:         make(chan struct{}),
		stopped:      make(chan struct{}),
		seenPath:     NotePath(path),
		restoring:    opts.Restoring,
	}
	note, held, err := s.checkSeen()
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	s.identity, s.gen, s.genEpoch = note.identity, note.gen, note.epoch
	s.openSeen(note, held)
	go s.commitLoop()
	log.Info("store opened", "nosync", opts.NoSync)
	return s, nil
}

// checkFormat checks the file's format mark: this build's, or the file is
// refused as newer (ErrNewerFormat) or corrupt (ErrCorrupt).
func checkFormat(mark []byte) error {
	if err := fileFormat.Check(string(mark), ErrCorrupt); err != nil {
		return fmt.Errorf("file format: %w", err)
	}
	return nil
}

// initFile marks a new file with the format, or checks the mark of an
// existing one.
func initFile(db *bbolt.DB) error {
	return recovered(func() error {
		return db.Update(func(tx *bbolt.Tx) error {
			if meta := tx.Bucket(metaBucket); meta != nil {
				if err := checkFormat(meta.Get(formatKey)); err != nil {
					return err
				}
				return initIdentity(meta)
			}
			if k, _ := tx.Cursor().First(); k != nil {
				return fmt.Errorf("%w: the file holds bbolt buckets but no Convergo format mark", ErrCorrupt)
			}
			meta, err := tx.CreateBucket(metaBucket)
			if err != nil {
				return err
			}
			if _, err := tx.CreateBucket(headsBucket); err != nil {
				return err
			}
			if err := meta.Put(formatKey, formatValue); err != nil {
				return err
			}
			return initIdentity(meta)
		})
	})
}

// recovered runs fn and turns a panic (bbolt panics on some damaged pages)
// into an error. bbolt rolls the transaction back as the panic unwinds.
func recovered(fn func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %v", ErrCorrupt, r)
		}
	}()
	return fn()
}

// view runs fn in a read transaction, translating a closed database and
// panics.
func (s *Store) view(fn func(*bbolt.Tx) error) error {
	if s.closed.Load() {
		return stores.ErrClosed
	}
	err := recovered(func() error { return s.db.View(fn) })
	if errors.Is(err, bberrors.ErrDatabaseNotOpen) {
		return stores.ErrClosed
	}
	return err
}

// Pull implements stores.Store.
func (s *Store) Pull(ctx context.Context, collection string, after uint64, limit stores.PageLimit) (stores.Page, error) {
	if err := ctx.Err(); err != nil {
		return stores.Page{}, fmt.Errorf("pull %s: %w", collection, err)
	}
	if err := stores.CheckPull(collection, limit); err != nil {
		return stores.Page{}, err
	}
	page := stores.Page{Next: after}
	err := s.view(func(tx *bbolt.Tx) error {
		recs, logb := tx.Bucket(recordsBucket(collection)), tx.Bucket(logBucket(collection))
		if recs == nil || logb == nil || after == math.MaxUint64 {
			return nil
		}
		c := logb.Cursor()
		used := 0
		for k, v := c.Seek(seqKey(after + 1)); k != nil; k, v = c.Next() {
			if len(page.Entries) == limit.Records {
				page.More = true
				break
			}
			if len(page.Entries)%64 == 63 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			seq, err := decodeSeq(k)
			if err != nil {
				return fmt.Errorf("log: %w", err)
			}
			raw := recs.Get(v)
			if raw == nil {
				return fmt.Errorf("%w: log entry %d names record %q, which is missing", ErrCorrupt, seq, v)
			}
			// The entry holds the record's encoding after its seq: its size
			// is known before decoding it.
			size := len(raw) - 8
			if !stores.PageFits(limit, len(page.Entries), used, size) {
				page.More = true
				break
			}
			used += size
			e, err := decodeEntry(raw, string(v))
			if err != nil {
				return err
			}
			if e.Seq != seq {
				return fmt.Errorf("%w: log entry %d names record %q, which has sequence number %d", ErrCorrupt, seq, v, e.Seq)
			}
			page.Entries = append(page.Entries, e)
			page.Next = seq
		}
		return nil
	})
	if err != nil {
		return stores.Page{}, fmt.Errorf("pull %s after %d: %w", collection, after, err)
	}
	return page, nil
}

// Get implements stores.Store.
func (s *Store) Get(ctx context.Context, collection, id string) (stores.Entry, error) {
	if err := ctx.Err(); err != nil {
		return stores.Entry{}, fmt.Errorf("get %s/%s: %w", collection, id, err)
	}
	if err := stores.CheckKey(collection, id); err != nil {
		return stores.Entry{}, err
	}
	var e stores.Entry
	err := s.view(func(tx *bbolt.Tx) error {
		var raw []byte
		if b := tx.Bucket(recordsBucket(collection)); b != nil {
			raw = b.Get([]byte(id))
		}
		if raw == nil {
			return stores.ErrNotFound
		}
		var err error
		e, err = decodeEntry(raw, id)
		return err
	})
	if err != nil {
		return stores.Entry{}, fmt.Errorf("get %s/%s: %w", collection, id, err)
	}
	return e, nil
}

// Head implements stores.Store.
func (s *Store) Head(ctx context.Context, collection string) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("head %s: %w", collection, err)
	}
	if err := crdt.ValidateCollection(collection); err != nil {
		return 0, fmt.Errorf("head: %w: %v", stores.ErrInvalid, err)
	}
	var head uint64
	err := s.view(func(tx *bbolt.Tx) error {
		var err error
		head, err = readHead(tx, collection)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("head %s: %w", collection, err)
	}
	return head, nil
}

// readHead returns the stored head of collection, 0 when it has none.
func readHead(tx *bbolt.Tx, collection string) (uint64, error) {
	heads := tx.Bucket(headsBucket)
	if heads == nil {
		return 0, fmt.Errorf("%w: heads bucket missing", ErrCorrupt)
	}
	v := heads.Get([]byte(collection))
	if v == nil {
		return 0, nil
	}
	seq, err := decodeSeq(v)
	if err != nil {
		return 0, fmt.Errorf("head of %s: %w", collection, err)
	}
	return seq, nil
}

// Watch implements stores.Store. Notifications come from the goroutine that
// commits, once per collection per transaction.
func (s *Store) Watch(fn func(stores.Notification)) (stop func()) { return s.watchers.Add(fn) }

// Close implements stores.Store. It waits for the transaction in progress,
// fails the batches still queued with stores.ErrClosed, and closes the file
// and its note (NotePath), returning the errors of both.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		close(s.quit)
		<-s.stopped
		s.noteSeen() // a note held until a bump (Options.Restoring)
		var noteErr error
		if s.seen != nil {
			noteErr = s.seen.Close()
		}
		s.watchers.Close()
		if err := errors.Join(s.db.Close(), noteErr); err != nil {
			s.closeErr = fmt.Errorf("close: %w", err)
		}
		s.log.Info("store closed")
	})
	return s.closeErr
}
