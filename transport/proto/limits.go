package proto

import (
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/crdt/scope"
)

// Default limits (docs/protocol.md, "Limits"). A server announces the limits
// it enforces in its hello answer; clients follow the announcement, these
// are only its defaults.
const (
	DefaultMaxBodyBytes     = 4 << 20
	DefaultMaxPushChanges   = 1000
	DefaultMaxPullRecords   = 1000
	DefaultMaxPageBytes     = 1 << 20
	DefaultMaxMessageBytes  = 4 << 20
	DefaultRate             = 200
	DefaultBurst            = 400
	DefaultMaxConnsPerAddr  = 64
	DefaultMaxSubscriptions = 1024
	// DefaultMaxSessionsPerSubject bounds the live sessions of one
	// subject (a token's, not the anonymous one) at once, whatever the
	// addresses they come from: a session beyond it is refused at its
	// hello with rate_limited.
	DefaultMaxSessionsPerSubject = 64
	// DefaultMaxSubscriptionsPerSubject bounds the subscriptions of one
	// subject across all its sessions (anonymous ones count by client
	// address): a sub beyond it is refused too_large. Without it a
	// subject could hold DefaultMaxSessionsPerSubject times
	// DefaultMaxSubscriptions subscriptions, at about 30 KiB of server
	// heap each under a large scope (docs/operations.md, "Memory"): near
	// 2 GiB for one tenant. 4,096 is four sessions' full share, or 64
	// sessions (devices, tabs) of 64 collections each: far more than a
	// person's apps use, and about 120 MiB at most for one subject.
	DefaultMaxSubscriptionsPerSubject = 4096
	// DefaultMaxLeasesPerSubject bounds the live leases one subject holds
	// on one collection that collects tombstones (docs/protocol.md,
	// "Tombstone collection"): a collection run keeps the subject's most
	// recently seen ones and removes the others, and between runs an
	// instance takes at most as many new ones.
	DefaultMaxLeasesPerSubject = 64
	// MaxUnwrittenLeasesPerSubject bounds the live leases one subject
	// holds across all the collections never written (docs/protocol.md,
	// "Tombstone collection"). A reader may name any collection its rights
	// match, so without it one subject could make a lease record of every
	// name it cares to invent. A read of such a collection that announces
	// no pending floor takes no lease at all (its cursor is the start, and
	// there is nothing to collect); one with a floor does, up to this
	// bound: a collection run keeps the subject's most recently seen and
	// removes the others, and between runs an instance takes at most as
	// many new ones. 16 is a few devices' worth of collections created
	// offline and not pushed yet; past it a reader's pending changes are
	// only held back for the usual maximum offline period.
	MaxUnwrittenLeasesPerSubject = 16
	// MaxRequestIDBytes bounds a client's Convergo-Request-Id.
	MaxRequestIDBytes = 64
	// MaxTokenBytes bounds a token wherever it is sent (a request's
	// Authorization header, a live hello): a server reads no longer one
	// (over HTTP its request is answered 431, outside this protocol's
	// errors; a live hello's is refused too_large), so a client sends
	// none and fails unauthenticated (docs/protocol.md, section 11).
	MaxTokenBytes = 64 << 10
	// DefaultMaxAnswerBytes is the most of an answer (an HTTP response
	// body, a live message) a client reads: its own bound against a broken
	// or hostile server, not a limit of the protocol (docs/protocol.md,
	// section 5). Both clients take it: the Go client's default
	// Config.MaxResponseBytes, the browser client's MAX_ANSWER_BYTES.
	DefaultMaxAnswerBytes = 64 << 20
	// MaxRejected and MaxRejectedBytes bound what a client keeps of the
	// changes the server refused (docs/design.md, "Push results and
	// refused changes"): the oldest are dropped first, and the drop is
	// reported.
	MaxRejected      = 1000
	MaxRejectedBytes = 4 << 20
	// MaxHealAgain bounds the heals a client makes again, one after the
	// other, when the pull from the beginning after a heal misses what the
	// heal gave back (the store went back in time again meanwhile,
	// docs/protocol.md "Resets"); past it the client says that the server
	// does not keep what it acknowledged.
	MaxHealAgain = 3
	// MaxPullResets is the most resets one reading of a collection takes
	// (a pull until the server has no more, or a live session's catch-up
	// over HTTP): a reset sends the reading back to the empty cursor,
	// which a server never resets, so one past it is a broken server's,
	// and the reading fails (docs/protocol.md section 8).
	MaxPullResets = 2
	// PullShrink is what a client divides its pull's record limit by
	// (down to one record) when a page's answer is over the size the
	// client reads: it asks again from the same cursor with the smaller
	// limit, and keeps it for the rest of that pull (docs/protocol.md
	// section 8).
	PullShrink = 4
	// PushEnvelopeBytes is what a client leaves of the announced request
	// body for a push's envelope (replica, the heads of its keys, replica
	// table, base wall), or a restore's (collection, version), when it
	// splits its outbox or what it gives back into requests: the encoded
	// changes, or sealed records, of one request take at most the rest
	// (PushRoom), and so, in a push, do the entries of its schema versions
	// (key 3), one per collection, which grow with the collections of the
	// batch (PushSizer).
	PushEnvelopeBytes = 1024
)

// PushRoom is the rule both clients split their pushes and their restores
// by: under a server's announced max-body (hello key 6), the encoded
// changes of one push, or the encoded [record, seal] pairs of one restore
// (RestoreRequest, whose envelope is smaller than a push's), take at most
// what PushEnvelopeBytes leaves of it, none when the body is smaller, and
// one item always goes, alone when it is larger. So a max-body under
// PushEnvelopeBytes makes requests of one item. The JS client's
// pushBudget, which its heal's restores use too, is held to it by the
// vectors of Exported.
func PushRoom(maxBody int64) int64 {
	return max(maxBody-PushEnvelopeBytes, 0)
}

// PushVersionBytes is what the entry of collection at schema version
// version takes in a push's schema versions (key 3, {collection:
// version}): the collection's text and the version, in CBOR; 0 for version
// 0, which a push leaves out (the current version). The JS client's
// pushVersionBytes is held to it by the vectors of Exported
// (PushVersions).
func PushVersionBytes(collection string, version uint64) int {
	if version == 0 {
		return 0
	}
	return crdt.HeadLen(uint64(len(collection))) + len(collection) + crdt.HeadLen(version)
}

// PushSizer returns the size function both clients cut a push's changes
// by (BatchLen's size, within PushRoom), fresh for each batch, as it
// remembers the collections it has seen: an item's own encoding, as size
// gives it, and, for the first item of each collection in the batch, its
// entry of the push's schema versions (PushVersionBytes of what
// collection gives for it). So a push spanning many collections with
// schema versions never grows past the body limit by its key 3, which
// PushEnvelopeBytes does not hold. The JS client's pushSizer
// (jsclient/src/protocol.js) is the same rule.
func PushSizer[T any](size func(T) int, collection func(T) (name string, version uint64)) func(T) int {
	seen := map[string]bool{}
	return func(it T) int {
		n := size(it)
		if name, v := collection(it); !seen[name] {
			seen[name] = true
			n += PushVersionBytes(name, v)
		}
		return n
	}
}

// BatchLen is how many of items, from the first, go in one request (a
// push, or a restore): at most maxN, whose encodings, as size gives them,
// take at most maxBytes (PushRoom of the announced max-body); at least one
// while any is left (one larger than maxBytes goes alone, a maxN under one
// lets one go), none of none. The Go client cuts its pushes and its
// restores by it; the JS client's batchLength (jsclient/src/protocol.js),
// which its pushes and its heal's requests are cut by, is held to it by
// the vectors of Exported (BatchLens).
func BatchLen[T any](items []T, maxN, maxBytes int, size func(T) int) int {
	total := 0
	for i, it := range items {
		total += size(it)
		if i > 0 && (i >= maxN || total > maxBytes) {
			return i
		}
	}
	return min(len(items), max(maxN, 1))
}

// Timings both sides keep (docs/protocol.md, "Live sync" and "Retrying").
const (
	// PingInterval: the server pings a live connection this often, and a
	// client pings when it has heard nothing for this long.
	PingInterval = 20 * time.Second
	// IdleTimeout: the server closes a live connection it has heard nothing
	// from for this long.
	IdleTimeout = 60 * time.Second
	// ClientSilenceTimeout: a client drops a live session it has heard
	// nothing from for this long (two pings unanswered).
	ClientSilenceTimeout = 2 * PingInterval
	// DefaultRequestTimeout: a server's default time to receive a
	// request's body, and again to send its answer; it also bounds
	// applying a live push (transport.Limits.RequestTimeout).
	DefaultRequestTimeout = 30 * time.Second
	// ClientPushTimeout: a client ends a live session (as dead: it dials
	// again) whose push has had no pushed answer for this long, and pushes
	// the batch again (over HTTP or the next session). Twice the server's
	// default bound on applying a push.
	ClientPushTimeout = 2 * DefaultRequestTimeout
	// StableSession: a live session that lasted this long since it was
	// dialled starts a client's reconnect backoff over; one that ended
	// sooner (a server or a proxy cutting sessions soon after their
	// welcome) counts as a failure, and the backoff goes on growing, so
	// that such a server is not dialled again at the first step each time.
	StableSession = 10 * time.Second
	// BackoffInitial and BackoffMax shape every retry and reconnect: before
	// retry n (0 first), wait uniformly in [0, min(BackoffMax,
	// BackoffInitial·2^n)], never less than the server's Retry-After.
	BackoffInitial = 200 * time.Millisecond
	BackoffMax     = 30 * time.Second
	// MaxRetryAfter is the longest Retry-After a client honours: a longer
	// one (a broken or hostile server's) is taken as this long, so that
	// the client neither waits for ever nor, past what a timer holds,
	// retries at once.
	MaxRetryAfter = time.Hour
)

// BackoffCeiling is the upper bound of the delay before retry n: the delay
// is uniform in [0, BackoffCeiling(n)] ("full jitter").
func BackoffCeiling(n int, initial, max time.Duration) time.Duration {
	ceil := initial
	for i := 0; i < n && ceil < max; i++ {
		ceil *= 2
	}
	return min(ceil, max)
}

// Model limits, declared by crdt and repeated here only so that Constants
// exports them with the rest.
const (
	MaxCollectionBytes   = crdt.MaxCollectionBytes
	MaxIDBytes           = crdt.MaxIDBytes
	MaxFieldNameBytes    = crdt.MaxFieldNameBytes
	MaxReplicaBytes      = crdt.MaxReplicaBytes
	MaxFieldsPerRecord   = crdt.MaxFieldsPerRecord
	MaxValueBytes        = crdt.MaxValueBytes
	MaxValueNestedLevels = crdt.MaxValueNestedLevels
	MaxNestedLevels      = crdt.MaxNestedLevels
	MaxContainerItems    = crdt.MaxContainerItems
	MaxRecordBytes       = crdt.MaxRecordBytes
	MaxWall              = crdt.MaxWall
	MaxLogical           = crdt.MaxLogical
	MaxIssuedLogical     = crdt.MaxIssuedLogical
	// MaxCursorBytes bounds a cursor: a scoped one carries the scope it
	// was read under and, during a scope change, the previous one, each
	// with up to 16 shard positions (engine.MaxCursorBytes is this).
	MaxCursorBytes = 2*scope.MaxBytes + 512
)

// Scope limits, declared by crdt/scope and repeated here only so that
// Constants exports them: a scope beyond them is invalid.
const (
	MaxScopeBytes = scope.MaxBytes
	MaxScopeDepth = scope.MaxDepth
	MaxScopeNodes = scope.MaxNodes
	MaxScopeList  = scope.MaxList
)
