package bolt

import (
	"context"
	"encoding/binary"
	"fmt"

	bbolt "go.etcd.io/bbolt"

	"github.com/convergo/convergo/stores"
)

// Usage is kept per collection in the bucket usage: 16 bytes, the record
// count and the bytes of the encoded records, big-endian, written in the
// transaction that changes them. A collection written before the bucket
// existed is counted once, by a scan, the first time it is needed.

var usageBucket = []byte("usage")

var _ stores.Usager = (*Store)(nil)

// Usage implements stores.Usager.
func (s *Store) Usage(ctx context.Context, collection string) (stores.Usage, error) {
	if err := ctx.Err(); err != nil {
		return stores.Usage{}, err
	}
	if err := stores.CheckCollection(collection); err != nil {
		return stores.Usage{}, err
	}
	var u stores.Usage
	err := s.view(func(tx *bbolt.Tx) error {
		var err error
		u, err = readUsage(tx, collection)
		return err
	})
	if err != nil {
		return stores.Usage{}, fmt.Errorf("usage of %s: %w", collection, err)
	}
	return u, nil
}

// readUsage returns the usage of collection: stored, or counted.
func readUsage(tx *bbolt.Tx, collection string) (stores.Usage, error) {
	if b := tx.Bucket(usageBucket); b != nil {
		if v := b.Get([]byte(collection)); v != nil {
			if len(v) != 16 {
				return stores.Usage{}, fmt.Errorf("%w: usage of %s is %d bytes", ErrCorrupt, collection, len(v))
			}
			return stores.Usage{Records: int64(binary.BigEndian.Uint64(v)), Bytes: int64(binary.BigEndian.Uint64(v[8:]))}, nil
		}
	}
	var u stores.Usage
	if b := tx.Bucket(recordsBucket(collection)); b != nil {
		err := b.ForEach(func(_, v []byte) error {
			u.Records++
			u.Bytes += int64(len(v) - 8) // the entry is seq ‖ record
			return nil
		})
		if err != nil {
			return stores.Usage{}, err
		}
	}
	return u, nil
}

func writeUsage(tx *bbolt.Tx, collection string, u stores.Usage) error {
	b, err := tx.CreateBucketIfNotExists(usageBucket)
	if err != nil {
		return err
	}
	v := binary.BigEndian.AppendUint64(make([]byte, 0, 16), uint64(u.Records))
	return b.Put([]byte(collection), binary.BigEndian.AppendUint64(v, uint64(u.Bytes)))
}
