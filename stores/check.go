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
