// Package fuzz holds Convergo's convergence simulations and fuzz targets.
// It has no API; everything lives in its tests.
//
// # Convergence simulations
//
// TestConvergence runs 3 to 7 replicas, each with its own hybrid logical
// clock and its own skewed wall clock that may jump backwards, making
// random writes (set and unset a field, delete a record, re-create it) on a
// key space small enough that stamps tie and writes conflict. Changes travel
// as encoded bytes over a simulated network that reorders, duplicates,
// delays and drops them; every replica keeps an outbox and retransmits a
// message until the receiver acknowledges it. Once the network is drained
// every replica must hold byte-identical records, equal to what a naive
// reference model computes from the set of all writes, and every write must
// be visible or beaten by a strictly larger stamp.
//
// TestConvergenceThroughEngine runs the same kind of clients against an
// engine.Engine on the in-memory store: clients push through a lossy,
// duplicating link and pull with a cursor, so the server is in the middle.
//
// Both print the seed that reproduces a failure (rapid's -rapid.seed flag;
// see docs/fuzzing.md).
//
// # Fuzz targets
//
// FuzzDecodeRecord, FuzzDecodeChanges, FuzzCanonicalValue and FuzzMergeLaws
// feed arbitrary bytes to the decoders: they must never panic, must fail
// only with errors that wrap crdt.ErrMalformed, crdt.ErrInvalid or
// crdt.ErrTooLarge, and what decodes must re-encode to bytes that decode to
// the same thing. FuzzMergeLaws checks the merge laws on any two records
// that decode. The seed corpus is in testdata/fuzz.
package fuzz
