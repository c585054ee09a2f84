// Package crdt is Convergo's convergence core: hybrid logical clocks,
// records as last-writer-wins element maps, their merge, and their CBOR
// encoding. It is pure: no I/O, no goroutines, no logging, no reading of
// the clock or of randomness. Callers pass wall time in and get values out,
// so every replica (the server, a store's server-side script, a browser)
// can run the same rules and tests can drive them step by step.
//
// # Stamps
//
// Every write carries a Stamp: a hybrid logical clock reading (wall time in
// milliseconds plus a logical counter) and the id of the replica that issued
// it. Stamps are totally ordered by (wall, logical, replica). A Clock issues
// stamps with Now, which never goes backwards even when the wall clock does,
// and folds in stamps it receives with Observe, which refuses a stamp more
// than MaxDrift (default 5 minutes) ahead of local time with ErrClockDrift,
// so one bad or hostile clock cannot win every later conflict. The counter
// is 32 bits; if it would overflow, the clock says so with
// ErrCounterOverflow instead of wrapping.
//
// # Records
//
// A Record is a map from field names to Fields; each field is a
// last-writer-wins register holding the value and stamp of its latest write.
// Unsetting a field writes a field with no value, so an older write that
// arrives later cannot bring the value back. Deleting a record sets its
// Deleted stamp: every field stamped at or before it is hidden (and dropped
// by Merge), while fields written after it are visible, so a write after a
// delete re-creates the record with only the newer fields. A record exists
// while it has at least one visible field with a value.
//
// A change is a partial record: the same type, holding only the fields (and
// the delete stamp) it writes.
//
// # Why merge converges
//
// Merge takes, per field, the field with the larger stamp, and the larger
// of the two delete stamps, then drops fields hidden by the delete. Taking
// maxima in a total order is commutative, associative and idempotent, and
// dropping hidden fields commutes with it (a field hidden by one delete
// stamp stays hidden by every larger one), so records form a join
// semilattice. Replicas that have merged the same set of changes, in any
// order, any number of times, hold equal records, and equal records encode
// to equal bytes.
//
// Ties need care. Two writes with equal stamps come only from two replicas
// that use one replica id (a bug or an attack), but they must still be
// decided the same way everywhere: an unset beats a value, and otherwise the
// value whose canonical bytes compare larger wins. A delete stamp equal to a
// field's stamp hides the field.
//
// # Encoding
//
// Values are opaque CBOR data items. The wire form is CBOR in RFC 8949 core
// deterministic encoding: a stamp is [wall, logical, replica]; a field is
// [wall, logical, replica] when unset and [wall, logical, replica, value]
// when set; a record is the map {1: id, 2: deleted, 3: {name: field}} with
// empty parts left out; a change is {1: collection, 2: record}. Decoding
// treats its input as hostile: duplicate map keys, indefinite lengths, tags,
// simple values other than false/true/null, invalid UTF-8, non-canonical
// stamps, names and envelopes, and nesting or sizes beyond the limits are
// refused with errors that wrap ErrMalformed, ErrInvalid or ErrTooLarge.
// Field values alone are taken liberally: a value in any encoding of the
// value model (map keys in any order, integers and floats in any width) is
// held in deterministic encoding (NormalizeValue), so clients whose CBOR
// library does not sort keys or shorten floats still converge; the
// tie-break compares the canonical bytes. The browser client's codec
// produces the same bytes; testdata/vectors.json holds the vectors both
// sides are tested against.
package crdt
