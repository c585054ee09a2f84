package bolt

import (
	"encoding/binary"
	"fmt"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
)

// Bucket names and the file format marker. See the package doc.
var (
	metaBucket  = []byte("meta")
	headsBucket = []byte("heads")
	formatKey   = []byte("format")
	formatValue = []byte(fileFormat.Mark())
)

// fileFormat is the format of the file this build writes: a later format
// has a higher version, which this build refuses as newer
// (ErrNewerFormat) rather than corrupt.
var fileFormat = stores.Format{Name: "convergo-bolt", Version: 1}

func recordsBucket(coll string) []byte { return append([]byte("r:"), coll...) }
func logBucket(coll string) []byte     { return append([]byte("l:"), coll...) }

// seqKey encodes a sequence number as a big-endian key, which sorts in
// numeric order.
func seqKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64(make([]byte, 0, 8), seq)
}

// decodeSeq decodes a sequence number stored as a key or a head.
func decodeSeq(b []byte) (uint64, error) {
	if len(b) != 8 {
		return 0, fmt.Errorf("%w: sequence number of %d bytes, want 8", ErrCorrupt, len(b))
	}
	return binary.BigEndian.Uint64(b), nil
}

// encodeEntry encodes a record with its sequence number. The result is a new
// slice: bbolt keeps a reference to put values until the transaction ends.
func encodeEntry(seq uint64, r crdt.Record) []byte {
	b := binary.BigEndian.AppendUint64(make([]byte, 0, 256), seq)
	return crdt.AppendRecord(b, r)
}

// decodeEntry decodes and checks the stored entry of record id. The result
// shares no memory with raw, which bbolt owns.
func decodeEntry(raw []byte, id string) (stores.Entry, error) {
	if len(raw) < 9 {
		return stores.Entry{}, fmt.Errorf("%w: record %q: entry of %d bytes", ErrCorrupt, id, len(raw))
	}
	seq := binary.BigEndian.Uint64(raw)
	if seq == 0 {
		return stores.Entry{}, fmt.Errorf("%w: record %q has sequence number 0", ErrCorrupt, id)
	}
	r, err := crdt.DecodeRecord(raw[8:])
	if err != nil {
		return stores.Entry{}, fmt.Errorf("%w: record %q: %w", ErrCorrupt, id, err)
	}
	if r.ID != id {
		return stores.Entry{}, fmt.Errorf("%w: record %q is stored under id %q", ErrCorrupt, r.ID, id)
	}
	return stores.Entry{Seq: seq, Record: r}, nil
}
