package proto

import (
	"crypto/sha256"
	"encoding/base32"

	"github.com/convergo/convergo/crdt"
)

// Replica binding (docs/protocol.md, "Replica ids"): a principal may only
// push stamps whose replica id it owns, and it owns exactly the ids that
// start with its replica prefix, a digest of its subject. The rule needs no
// table of claims, so it holds across server instances and restarts and
// after a store is wiped; a client computes its own prefix from the subject
// it signs in as, and so can stamp writes bound to it before it ever
// reaches the server.
//
// The digest is public: anyone can compute anyone's prefix. That is no
// hole, since the server checks a stamp against the authenticated subject,
// but it does let a reader who can guess a subject (an e-mail address)
// recognise that subject's stamps.

const (
	// ReplicaPrefixLen is the length of a replica prefix: 16 characters of
	// lower-case base32 (80 bits of SHA-256).
	ReplicaPrefixLen = 16
	// ReplicaSeparator stands between a replica prefix and the device part
	// of an id.
	ReplicaSeparator = '_'
	// MaxDeviceBytes bounds the device part, so an owned id stays within
	// crdt.MaxReplicaBytes.
	MaxDeviceBytes = MaxReplicaBytes - ReplicaPrefixLen - 1
	// replicaDomain separates this digest from any other use of SHA-256.
	replicaDomain = "convergo/replica/v2\x00"
)

var lowerBase32 = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// ReplicaPrefix returns the prefix of the replica ids subject owns. The
// anonymous subject "" has one too, which every anonymous client shares: in
// the demo anyone may write as anyone.
func ReplicaPrefix(subject string) string {
	sum := sha256.Sum256([]byte(replicaDomain + subject))
	return lowerBase32.EncodeToString(sum[:10])
}

// ReplicaFor returns the replica id of subject's device: the prefix, the
// separator and device (1 to MaxDeviceBytes of [A-Za-z0-9_-]).
func ReplicaFor(subject, device string) string {
	return ReplicaPrefix(subject) + string(ReplicaSeparator) + device
}

// Owner checks stamps against one subject: it computes the prefix once.
type Owner struct{ prefix string }

// OwnerOf returns the Owner of subject's replica ids.
func OwnerOf(subject string) Owner { return Owner{prefix: ReplicaPrefix(subject)} }

// Prefix returns the owner's replica prefix.
func (o Owner) Prefix() string { return o.prefix }

// Owns reports whether replica is one of the owner's ids: its prefix, the
// separator and a device part, a valid replica id (crdt.ValidateReplica).
// Server ids ("srv-…") and the ids of captured changes never have this
// shape, so no client owns them. Nor does anyone own a string of the
// owner's prefix that is no replica id ("…_x/y"): a lease's record id
// (the collection, a slash, the replica) would read as another's.
func (o Owner) Owns(replica string) bool {
	p, ok := PrefixOf(replica)
	return ok && p == o.prefix && crdt.ValidateReplica(replica) == nil
}

// PrefixOf returns the replica prefix of an id of the owned shape (a
// prefix, the separator and a device part), and false for any other id.
// It does not check that the prefix is a digest of any subject.
func PrefixOf(replica string) (string, bool) {
	if len(replica) > ReplicaPrefixLen+1 && replica[ReplicaPrefixLen] == ReplicaSeparator {
		return replica[:ReplicaPrefixLen], true
	}
	return "", false
}
