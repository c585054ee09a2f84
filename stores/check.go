package stores

import (
	"fmt"

	"github.com/convergo/convergo/crdt"
)

// CheckApply validates the arguments of Apply as every store must.
func CheckApply(changes []crdt.Change) error {
	if len(changes) > MaxBatch {
		return fmt.Errorf("%w: batch of %d changes exceeds %d", ErrInvalid, len(changes), MaxBatch)
	}
	for i, c := range changes {
		if err := crdt.ValidateCollection(c.Collection); err != nil {
			return fmt.Errorf("change %d: %w", i, err)
		}
		if err := crdt.ValidateID(c.Record.ID); err != nil {
			return fmt.Errorf("change %d: %w", i, err)
		}
	}
	return nil
}

// CheckRecordLimits refuses a merged record beyond the crdt limits (more
// than crdt.MaxFieldsPerRecord fields, or an encoding over
// crdt.MaxRecordBytes) with ErrTooLarge: decoding would refuse it, so no
// store could hand it back. Stores call it on each record a change altered,
// before anything is written; the Redis scripts check the same limits, with
// the numbers passed from crdt.
func CheckRecordLimits(r crdt.Record) error {
	if len(r.Fields) > crdt.MaxFieldsPerRecord {
		return fmt.Errorf("%w: record would have %d fields, more than %d", ErrTooLarge, len(r.Fields), crdt.MaxFieldsPerRecord)
	}
	// Encode only when a cheap upper bound of the size is over the limit.
	bound := 128 + len(r.ID) // map, keys, id head, delete stamp, field map head
	for name, f := range r.Fields {
		bound += len(name) + len(f.Value) + len(f.Stamp.Replica) + 32
	}
	if bound <= crdt.MaxRecordBytes {
		return nil
	}
	if n := len(crdt.AppendRecord(nil, r)); n > crdt.MaxRecordBytes {
		return fmt.Errorf("%w: record would encode to %d bytes, more than %d", ErrTooLarge, n, crdt.MaxRecordBytes)
	}
	return nil
}

// CheckPull validates the arguments of Pull as every store must.
func CheckPull(collection string, limit PageLimit) error {
	if err := crdt.ValidateCollection(collection); err != nil {
		return err // wraps crdt.ErrInvalid, which is ErrInvalid
	}
	if limit.Records < 1 || limit.Records > MaxPage {
		return fmt.Errorf("%w: page limit of %d records not in 1..%d", ErrInvalid, limit.Records, MaxPage)
	}
	if limit.Bytes < 1 {
		return fmt.Errorf("%w: page limit of %d bytes not positive", ErrInvalid, limit.Bytes)
	}
	return nil
}

// PageFits reports whether a record of size encoded bytes joins a page that
// holds n records of used bytes so far under limit: the first record
// always does; later ones while the count and the byte budget allow.
func PageFits(limit PageLimit, n, used, size int) bool {
	return n == 0 || (n < limit.Records && used+size <= limit.Bytes)
}

// CheckKey validates a collection name and record id.
func CheckKey(collection, id string) error {
	if err := crdt.ValidateCollection(collection); err != nil {
		return err // wraps crdt.ErrInvalid, which is ErrInvalid
	}
	if err := crdt.ValidateID(id); err != nil {
		return err
	}
	return nil
}
