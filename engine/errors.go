package engine

import (
	"errors"

	"github.com/convergo/convergo/crdt/migrate"
	"github.com/convergo/convergo/stores"
)

// Errors the engine returns, for callers to branch on with errors.Is. They
// are the store contract's sentinels (the same values), so a caller above
// the engine, such as the transport, needs no import of package stores;
// ErrInvalid and ErrTooLarge are also crdt's, so a refusal matches
// whichever layer's name a caller uses. Messages name the call that
// failed and the record: "put todos/t1: too large: ...".
var (
	// ErrNotFound: the record does not exist.
	ErrNotFound = stores.ErrNotFound
	// ErrInvalid: the input breaks a rule (a name, a limit of the call).
	ErrInvalid = stores.ErrInvalid
	// ErrTooLarge: a change would make its record larger than a limit.
	ErrTooLarge = stores.ErrTooLarge
	// ErrUnavailable: the store failed; nothing acknowledged was lost, and
	// the call may be retried.
	ErrUnavailable = stores.ErrUnavailable
	// ErrClosed: the store was closed.
	ErrClosed = stores.ErrClosed
	// ErrCorrupt: data the store read back is damaged (written behind its
	// back, a damaged file). Retrying does not help until the data is
	// repaired (the next write of the record, or `convergo repair`); it
	// says nothing of the store's health, so readiness ignores it.
	ErrCorrupt = stores.ErrCorrupt
)

// Refusals of Apply's write rules (Rule, WithWriteScope), per change in
// Result.Err; the message names the rule or field at fault.
var (
	// ErrOutOfScope: the change touches a record outside the writer's
	// write scope, or would leave its record outside it (a create outside,
	// a move out).
	ErrOutOfScope = errors.New("engine: out of scope")
	// ErrSchema: the record the change would leave breaks the
	// collection's schema or its validation function.
	ErrSchema = errors.New("engine: schema")
)

// Errors of schema versions (Rule.Migrations); the same values as package
// migrate's.
var (
	// ErrUntranslatable, per change in Result.Err: the change was written
	// under an older schema version and the migration cannot map it (a
	// split of a value that is not a string, a merge missing a part, a
	// change left without fields by drops).
	ErrUntranslatable = migrate.ErrUntranslatable
	// ErrSchemaAhead, for a call: it names a schema version above the
	// collection's current one (the caller runs newer rules).
	ErrSchemaAhead = migrate.ErrSchemaAhead
)
