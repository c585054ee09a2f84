// Package migrate is the translation between schema versions of one
// collection: a Definition (parsed from the "migrations" object of a
// rules file, which the browser client reads too) lists the steps from
// version 1 to the current version, and Record and Change translate a
// record or a change between any two versions.
//
// The package is pure, as crdt is: no I/O, no clock, no logging. A
// Definition is immutable once parsed and safe to share between
// goroutines.
//
// # Why translation is resolving
//
// The server installs a migration without rewriting its store: records
// written before it keep their old fields, changes from old clients keep
// arriving in the old shape, and a record may hold fields of several
// versions at once. Every op therefore works on the fields present in its
// input and writes a target field only when the target is absent or the
// source's stamp is strictly newer (crdt stamp order). Translating data
// that is already in the new shape changes nothing, so resolving a stored
// record is always "translate it up from version 1".
//
// # Records and changes
//
// A record (stored state) and a change (what a client pushes) are the
// same crdt.Record, but an op that cannot map its input treats them
// differently: for a change it is ErrUntranslatable (the client is told
// and rolls the change back); for a record the offending source field is
// left out and counted, since a stored record must always be servable.
// A merge needs every part in a change (a merge of some parts would
// overwrite the target with a partial value) and uses the parts present
// in a record.
//
// # Versions
//
// Versions are 1..Current(). Version 0 means "no version": it stands for
// the current one (Resolve). A version above Current() is ErrSchemaAhead:
// the caller runs newer rules than the definition. A nil *Definition is a
// collection without migrations: its only version is 1.
//
// # Limits of a step
//
// Besides the checks docs/design.md lists, a field may not be both the
// source of one op and the target of another in the same step (a chain
// rename a→b, rename b→c within one step would make translating twice
// differ from translating once); chains belong in successive steps.
package migrate
