package bolt

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	bbolt "go.etcd.io/bbolt"
	bberrors "go.etcd.io/bbolt/errors"

	"github.com/convergo/convergo/stores"
)

// The identity and epochs live in the file, beside the data they describe:
// a copy of the file carries them, and a new file has a new identity.
var (
	identityKey  = []byte("identity") // in meta: the store's identity
	epochKey     = []byte("epoch")    // in meta: the store-wide epoch, 8 bytes big-endian
	epochsBucket = []byte("epochs")   // collection → own epoch ‖ own epoch at the latest loss, 2 × 8 bytes
)

// maxIdentity bounds an identity read from the file.
const maxIdentity = 64

// initIdentity gives a file without an identity one: a new file, or one
// written before identities existed. Called in initFile's transaction.
func initIdentity(meta *bbolt.Bucket) error {
	if meta.Get(identityKey) != nil {
		return nil
	}
	return meta.Put(identityKey, []byte(stores.NewIdentity()))
}

// update runs fn in a write transaction, translating a closed database and
// panics. The commit loop's transactions and these take bbolt's writer
// lock in turn.
func (s *Store) update(fn func(*bbolt.Tx) error) error {
	if s.closed.Load() {
		return stores.ErrClosed
	}
	err := recovered(func() error { return s.db.Update(fn) })
	if errors.Is(err, bberrors.ErrDatabaseNotOpen) {
		return stores.ErrClosed
	}
	return err
}

// Identity implements stores.Store: made when the file was created.
func (s *Store) Identity(ctx context.Context) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("identity: %w", err)
	}
	var id string
	err := s.view(func(tx *bbolt.Tx) error {
		meta := tx.Bucket(metaBucket)
		if meta == nil {
			return fmt.Errorf("%w: meta bucket missing", ErrCorrupt)
		}
		v := meta.Get(identityKey)
		if len(v) == 0 || len(v) > maxIdentity {
			return fmt.Errorf("%w: identity of %d bytes", ErrCorrupt, len(v))
		}
		id = string(v)
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("identity: %w", err)
	}
	return id, nil
}

// Meta implements stores.Store.
func (s *Store) Meta(ctx context.Context, collection string) (stores.Meta, error) {
	if err := ctx.Err(); err != nil {
		return stores.Meta{}, fmt.Errorf("meta %s: %w", collection, err)
	}
	if err := stores.CheckCollection(collection); err != nil {
		return stores.Meta{}, err
	}
	var m stores.Meta
	err := s.view(func(tx *bbolt.Tx) error {
		store, err := readStoreEpoch(tx)
		if err != nil {
			return err
		}
		n, lost, err := readEpoch(tx, collection)
		m = stores.MetaOf(store, n, lost)
		return err
	})
	if err != nil {
		return stores.Meta{}, fmt.Errorf("meta %s: %w", collection, err)
	}
	return m, nil
}

func readStoreEpoch(tx *bbolt.Tx) (uint64, error) {
	meta := tx.Bucket(metaBucket)
	if meta == nil {
		return 0, fmt.Errorf("%w: meta bucket missing", ErrCorrupt)
	}
	v := meta.Get(epochKey)
	if v == nil {
		return 0, nil
	}
	e, err := decodeSeq(v)
	if err != nil {
		return 0, fmt.Errorf("store epoch: %w", err)
	}
	return e, nil
}

// readEpoch returns collection's own epoch counter and its value at the
// latest loss.
func readEpoch(tx *bbolt.Tx, collection string) (n, lost uint64, err error) {
	b := tx.Bucket(epochsBucket)
	if b == nil {
		return 0, 0, nil
	}
	v := b.Get([]byte(collection))
	if v == nil {
		return 0, 0, nil
	}
	if len(v) != 16 {
		return 0, 0, fmt.Errorf("%w: epoch of %s has %d bytes, want 16", ErrCorrupt, collection, len(v))
	}
	n, lost = binary.BigEndian.Uint64(v), binary.BigEndian.Uint64(v[8:])
	if lost > n {
		return 0, 0, fmt.Errorf("%w: epoch of %s lost at %d, after its epoch %d", ErrCorrupt, collection, lost, n)
	}
	return n, lost, nil
}

// BumpEpoch implements stores.Store.
func (s *Store) BumpEpoch(ctx context.Context, collection string, cause stores.EpochCause) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("bump epoch of %s: %w", collection, err)
	}
	if err := stores.CheckBump(collection, cause); err != nil {
		return err
	}
	err := s.update(func(tx *bbolt.Tx) error {
		n, lost, err := readEpoch(tx, collection)
		if err != nil {
			return err
		}
		n = stores.NextEpoch(n, s.now())
		if cause == stores.HistoryLost {
			lost = n
		}
		b, err := tx.CreateBucketIfNotExists(epochsBucket)
		if err != nil {
			return err
		}
		v := binary.BigEndian.AppendUint64(make([]byte, 0, 16), n)
		return b.Put([]byte(collection), binary.BigEndian.AppendUint64(v, lost))
	})
	if err != nil {
		return fmt.Errorf("bump epoch of %s: %w", collection, err)
	}
	s.log.Warn("new epoch", "collection", collection, "cause", cause.String())
	s.watchers.Notify(stores.Notification{Resync: true})
	return nil
}

// BumpEpochs implements stores.Store: it raises the store-wide epoch, which
// is part of every collection's.
func (s *Store) BumpEpochs(ctx context.Context) error {
	_, err := s.bumpEpochs(ctx, func(uint64) bool { return true })
	return err
}

// BumpEpochsFrom implements stores.EpochsBumperFrom.
func (s *Store) BumpEpochsFrom(ctx context.Context, from uint64) (bool, error) {
	return s.bumpEpochs(ctx, func(e uint64) bool { return stores.IsStoreEpoch(e, from) })
}

// bumpEpochs raises the store-wide epoch when ok says so of its value.
func (s *Store) bumpEpochs(ctx context.Context, ok func(uint64) bool) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, fmt.Errorf("bump epochs: %w", err)
	}
	bumped := false
	err := s.update(func(tx *bbolt.Tx) error {
		e, err := readStoreEpoch(tx)
		if err != nil || !ok(e) {
			return err
		}
		bumped = true
		return tx.Bucket(metaBucket).Put(epochKey, seqKey(stores.NextEpoch(e, s.now())))
	})
	if err != nil {
		return false, fmt.Errorf("bump epochs: %w", err)
	}
	if bumped {
		s.noteRelease.Store(true) // the bump a file put back called for
		s.log.Warn("new epoch of every collection", "cause", stores.HistoryLost.String())
		s.watchers.Notify(stores.Notification{Resync: true})
	}
	return bumped, nil
}
