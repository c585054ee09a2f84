package proto

import (
	"crypto/sha256"
	"strings"
)

// Scopes and leave entries (docs/protocol.md, "Scopes"). A scoped reader
// receives, for each change after its cursor of a record it may not see
// (one that does not match its effective scope, or no longer exists), a
// leave entry: a digest of the collection and the record's id, never the
// id itself. A client drops a held record whose id digests to a leave
// entry, locally, without a delete.

const (
	// LeaveBytes is the length of a leave entry: the first 16 bytes of
	// SHA-256(leaveDomain, collection, 0x00, id).
	LeaveBytes = 16
	// LeaveEntryCost is what one leave entry counts for toward a page's
	// byte limit (the digest and its CBOR head, rounded up).
	LeaveEntryCost = 20
	// leaveDomain separates this digest from any other use of SHA-256.
	leaveDomain = "convergo/leave/v2\x00"
)

// LeaveDigest returns the leave entry of the record id of collection.
func LeaveDigest(collection, id string) []byte {
	h := sha256.New()
	h.Write([]byte(leaveDomain))
	h.Write([]byte(collection))
	h.Write([]byte{0})
	h.Write([]byte(id))
	return h.Sum(nil)[:LeaveBytes]
}

// ReservedPrefix starts the names of the server's own collections (the
// deny list, DenyCollection). No client may read, write, subscribe to or
// restore such a collection, whatever its token's patterns say: the
// server answers forbidden.
const ReservedPrefix = "_convergo."

// DenyCollection is the deny list: records "sub:<subject>" and
// "jti:<token id>" with the fields "until" (ms since the Unix epoch;
// absent: forever), "reason" and "by". Every server instance on a store
// follows it; a denied principal is refused CodeRevoked.
const DenyCollection = ReservedPrefix + "deny"

// LeaseCollection holds the readers' leases (docs/design.md, "Tombstone
// horizons"): one record per (collection, replica), id
// "<collection>/<replica>", with the fields "pos" (the shard positions of
// the cursor the reader last presented), "epoch" (the epoch of those
// positions), "floor" (its pending floor, ms; absent: none pending) and
// "seen" (ms), as engine.LeaseField* names them. Collection runs remove the
// expired ones, those of a subject beyond DefaultMaxLeasesPerSubject
// (as configured) on a collection, and those of a subject beyond
// MaxUnwrittenLeasesPerSubject across the collections never written.
const LeaseCollection = ReservedPrefix + "leases"

// HorizonCollection holds the published tombstone horizons: one record
// per collection, id the collection, which every server instance on the
// store follows (docs/design.md, "Tombstone horizons").
const HorizonCollection = ReservedPrefix + "horizons"

// CountedPrefix starts the names of the collections that count, per
// quota pattern with a bound on collections (engine.Quota.MaxCollections),
// the collections it matches that hold data: one record per collection,
// id the collection's name. The rest of the name is a digest of the
// pattern (engine.countedCollection).
const CountedPrefix = ReservedPrefix + "counted."

// Reserved reports whether collection is one of the server's own.
func Reserved(collection string) bool { return strings.HasPrefix(collection, ReservedPrefix) }

// ClaimScopes is the token claim that imposes scopes: an object of
// collection pattern → scope, in the JSON form of a predicate.
const ClaimScopes = "cvg_scopes"
