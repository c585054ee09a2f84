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
			return fmt.Errorf("%w: change %d: %v", ErrInvalid, i, err)
		}
		if err := crdt.ValidateID(c.Record.ID); err != nil {
			return fmt.Errorf("%w: change %d: %v", ErrInvalid, i, err)
		}
	}
	return nil
}

// CheckPull validates the arguments of Pull as every store must.
func CheckPull(collection string, limit int) error {
	if err := crdt.ValidateCollection(collection); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if limit < 1 || limit > MaxPage {
		return fmt.Errorf("%w: page limit %d not in 1..%d", ErrInvalid, limit, MaxPage)
	}
	return nil
}

// CheckKey validates a collection name and record id.
func CheckKey(collection, id string) error {
	if err := crdt.ValidateCollection(collection); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if err := crdt.ValidateID(id); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return nil
}
