package stores

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"

	"github.com/convergo/convergo/crdt"
)

// NewIdentity returns a new random store identity: 16 bytes from
// crypto/rand, in hex. Stores call it once, when they create their data.
func NewIdentity() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	return hex.EncodeToString(b[:])
}

// CheckBump validates the arguments of BumpEpoch.
func CheckBump(collection string, cause EpochCause) error {
	if err := crdt.ValidateCollection(collection); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if cause != HistoryLost && cause != Rebuilt {
		return fmt.Errorf("%w: epoch cause %d", ErrInvalid, cause)
	}
	return nil
}

// CheckCollection validates a collection name as every method taking one
// does.
func CheckCollection(collection string) error {
	if err := crdt.ValidateCollection(collection); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return nil
}
