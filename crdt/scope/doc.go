// Package scope is the predicate language of scoped sync: which records
// of a collection a subscription sees. A client's subscription names a
// collection and a filter; the server ANDs in the scope the principal's
// token or its own rules impose (And), binds the parameters of the
// principal (Bind) and evaluates the result on merged records (Match).
//
// The package is pure, as crdt is: no I/O, no clock, no global state. A
// Pred is immutable and safe to share between goroutines.
//
// # Language
//
// A predicate is one of
//
//	["eq", field, value]      the field holds value
//	["in", field, list]       the field holds one of the values of list
//	["has", field, value]     the field holds an array with value as an element
//	["and", p1, p2, ...]      every operand holds (at least one operand)
//	["or", p1, p2, ...]       some operand holds (at least one operand)
//	["all"]                   every existing record
//	["none"]                  no record (what Or() of nothing is)
//
// Fields are top-level field names of the record, under crdt's rules for
// field names (crdt.ValidateFieldName). Values are values of crdt's value
// model. The wire form is that array in CBOR (Decode, Encode); the same
// shape held in generic Go values, as JSON configuration decodes to, is
// read by FromValue.
//
// A value position (the value of "eq" and "has", an element of an "in"
// list, or the whole list of "in") may hold a parameter instead: the map
// {"$": name}, where name is "sub" (the principal's subject) or "claims."
// followed by a dotted path into the token's claims ("claims.teams",
// "claims.org.id"; path segments are ASCII letters, digits, '_' and '-').
// A map at a value position holding the key "$" is always a parameter, so
// such a map cannot be a literal value there. Bind replaces parameters
// with values; a list parameter of "in" must bind to an array, which
// becomes the list. A parameter bound to null, or a list holding one, is
// unbound (ErrUnbound), as a missing one is: a null is a value the
// principal lacks, and must not match records whose field is null.
// Parameters cannot bind to maps: a scope compares
// fields to scalars or arrays, and a map is almost always a path that
// stopped one segment short ("claims.org" for "claims.org.id").
//
// # Equality on canonical bytes
//
// Values are compared by their canonical CBOR bytes, as
// crdt.NormalizeValue gives them, which is what records hold. Match then
// costs a map lookup and a byte comparison per comparison, with no
// decoding, and equality means exactly what it means everywhere else in
// Convergo: the tie-break of merge and the JS client compare the same
// bytes. The consequences are crdt's: text and bytes differ, the integer
// 1 and the float 1.0 differ, map key order does not matter. Values that
// arrive as JSON (FromValue, Parse, Bind's Params) take JSON's view of
// numbers, as the browser client does: a whole number below 2^53 in
// magnitude is an integer, so a claim decoded by encoding/json as
// float64(42) equals a field the client wrote as 42.
//
// # Deleted and missing
//
// A record that does not exist (deleted, or with every field unset)
// matches nothing, not even ["all"], and a missing, unset or hidden field
// matches no comparison. There is no negation, so every predicate is
// monotone: a record is in a scope only because of values it holds. A
// deleted record leaves a scope exactly as it leaves the collection, and
// the server tells subscribers so with the delete itself; a scope never
// has to decide whether a tombstone "matches".
//
// # Canonical form
//
// Every constructor normalizes: nested "and"s and "or"s are flattened,
// operands sorted by wire form without duplicates, "all" dropped from an
// "and" and "none" from an "or" (and each absorbing the other operator),
// an operator of one operand replaced by it, "in" lists sorted without
// duplicates. Predicates that differ only so have equal Encode bytes and
// equal Digests. A nil *Pred means no scope and matches every existing
// record, as ["all"] does; only nil encodes to nil.
//
// # Text form
//
// Parse reads, and String writes, a text form for configuration flags:
//
//	expr   = and { "or" and }
//	and    = unary { "and" unary }
//	unary  = "(" expr ")" | "all" | "none"
//	       | field "==" value | field "has" value
//	       | field "in" "[" [ value { "," value } ] "]" | field "in" value
//	field  = word | JSON string
//	value  = "$" name | JSON value | "cbor(" hex ")"
//
// A word is an ASCII letter or '_' followed by letters, digits, '_', '.'
// and '-', and is not one of the keywords and, or, in, has, all, none
// (quote a field so named: "all" == 1). "and" binds tighter than "or".
// JSON numbers written without fraction or exponent are integers of any
// size CBOR holds; others follow JSON's view above. cbor(hex) is a value
// given by its CBOR bytes; String uses it for values JSON cannot write
// back to the same bytes (byte strings, whole-number floats, NaN). For
// example:
//
//	owner == $sub or team in $claims.teams
//	status in ["open", "doing"] and (members has $sub or public == true)
//
// Parse(p.String()) equals p.
//
// # Limits
//
// Scopes come from clients, so they are bounded like every other input:
// MaxBytes of wire form, MaxDepth of nesting, MaxNodes predicates, MaxList
// values in one list. Decode, FromValue and Parse check them, and Bind
// checks them again, because a list parameter may expand to a long list.
// They keep Match's cost per record small and predictable: it runs for
// every record of every page for every subscription. And and Or do not
// check them (their results are the server's own); Bind does.
package scope
