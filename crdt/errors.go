package crdt

import "errors"

// Sentinel errors. Callers branch on them with errors.Is; the errors this
// package returns wrap them with the detail of what was wrong.
var (
	// ErrClockDrift means a remote stamp is further ahead of local wall time
	// than the clock's MaxDrift allows. The stamp is refused, not adopted:
	// adopting it would let one replica with a bad clock (or a malicious one)
	// win every future conflict.
	ErrClockDrift = errors.New("crdt: remote clock too far ahead")

	// ErrCounterOverflow means the logical counter of a hybrid logical clock
	// would pass MaxLogical. The clock is left unchanged.
	ErrCounterOverflow = errors.New("crdt: logical counter overflow")

	// ErrMalformed means bytes are not well-formed CBOR of the expected
	// shape, or break a decode limit (nesting, sizes, tags, indefinite
	// lengths, duplicate map keys, invalid UTF-8).
	ErrMalformed = errors.New("crdt: malformed encoding")

	// ErrInvalid means a value decoded but breaks a rule of the model: an
	// empty or over-long id, a forbidden character in a collection name, a
	// stamp out of range, a value map with two keys equal once canonical.
	// It is the one "invalid" of every layer: stores.ErrInvalid and
	// engine.ErrInvalid are this same value, so errors.Is matches whichever
	// of them a caller names.
	ErrInvalid = errors.New("invalid")

	// ErrTooLarge means a record or value is larger than the limits allow.
	// Like ErrInvalid, it is the same value as stores.ErrTooLarge and
	// engine.ErrTooLarge.
	ErrTooLarge = errors.New("too large")
)
