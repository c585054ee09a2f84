package transport

import (
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/engine"
	"github.com/convergo/convergo/transport/proto"
)

// Limits bound what one client may send and ask for. Each zero field means
// its Default* constant; WithDefaults fills them.
type Limits struct {
	// MaxBodyBytes bounds an HTTP request body (413 too_large beyond).
	MaxBodyBytes int64
	// MaxPushChanges bounds the changes of one push (413 too_large beyond),
	// at most crdt.MaxContainerItems.
	MaxPushChanges int
	// MaxPullRecords bounds a pull page or live frame; a pull asking for 0
	// gets this many at most, one asking for more gets too_large.
	MaxPullRecords int
	// MaxPageBytes bounds the encoded records of a pull page or live frame;
	// a single larger record travels alone.
	MaxPageBytes int
	// MaxMessageBytes bounds a WebSocket message; a larger one closes the
	// socket with status 1009.
	MaxMessageBytes int64
	// Rate is the sustained requests (HTTP) or messages (WebSocket) per
	// second per client; a client is its token's subject, else its
	// address. Negative disables rate limiting; NaN is refused (Validate).
	Rate float64
	// Burst is how many requests a client may make at once above Rate.
	Burst int
	// MaxConnsPerAddr bounds the connections of one client address: the
	// TCP connections of one peer address at the listener (Server.Listener;
	// TrustedProxies are exempt, they carry many clients), and the
	// WebSockets of one client address (behind a trusted proxy, its
	// X-Forwarded-For address) at the upgrade, answered 429 rate_limited.
	MaxConnsPerAddr int
	// MaxSessionsPerSubject bounds the live sessions of one subject at
	// once, from any addresses: a hello beyond it is answered
	// rate_limited and its session closed (1008). Anonymous sessions have
	// no subject and count by address only (MaxConnsPerAddr).
	MaxSessionsPerSubject int
	// MaxConns bounds the TCP connections the server's listener
	// (Server.Listener) holds at once; further ones are closed at once.
	MaxConns int
	// MaxSubscriptions bounds the subscriptions of one WebSocket
	// connection.
	MaxSubscriptions int
	// MaxSubscriptionsPerSubject bounds the subscriptions of one subject
	// across all its sessions: a sub beyond it is refused too_large, as
	// one beyond MaxSubscriptions is, and its session stays open.
	// Anonymous sessions have no subject and count by client address.
	MaxSubscriptionsPerSubject int
	// SendQueue is the number of messages waiting to be written to one
	// WebSocket connection.
	SendQueue int
	// MaxQueueBytes bounds the bytes of the messages waiting to be written
	// to one WebSocket connection, the one being written included. A
	// message is always let into an empty queue, so a single page larger
	// than this still travels.
	MaxQueueBytes int64
	// SlowConsumer is how long a subscription waits for room in a full send
	// queue (SendQueue messages or MaxQueueBytes) before it gives up and
	// sends resync.
	SlowConsumer time.Duration
	// MaxBodyBytesInFlight bounds the bytes of HTTP request bodies the
	// server holds at once: each API request reserves its Content-Length
	// (MaxBodyBytes when unknown) before reading its body and releases it
	// when answered. A request that finds no room within BodyWait is
	// answered 503 unavailable with Retry-After. One request is always let
	// in when nothing else is in flight. A push over a live session
	// reserves its message's bytes the same way until it is answered,
	// without waiting: a pushed with unavailable when there is no room.
	// A push's decoded changes take their room in it too, by what they
	// hold in memory (Server.chargeDecoded). One client (its rate key)
	// holds at most a quarter of it in all, unless a request is its only
	// one in flight (clientShare); a request beyond that is answered 429 rate_limited, a
	// live push pushed rate_limited.
	MaxBodyBytesInFlight int64
	// MaxAnswerBytesInFlight bounds the bytes of pull answers the server
	// holds at once: a pull reserves what its answer may hold
	// (pullAnswerBytes) before it reads its page, holds its encoded
	// answer's bytes while it writes it, and gives them back when the
	// write ends, finished, failed or timed out. A pull that finds no
	// room within BodyWait is answered 503 unavailable with Retry-After;
	// one is always let in when nothing else is held. One client (its
	// rate key) holds at most a quarter of it in all, unless a pull is
	// its only one in flight (clientShare), as for the bodies: a pull
	// beyond that is answered 429 rate_limited before its page is read. An answer let in is
	// never cut. The answers of hello, push and restore are not counted:
	// a few hundred bytes a change or record of their bodies, which the
	// bodies in flight bound (docs/operations.md, "Memory").
	MaxAnswerBytesInFlight int64
	// RequestTimeout bounds reading an HTTP request's body and writing its
	// answer, so a client trickling bytes cannot hold a request open.
	RequestTimeout time.Duration
}

// MaxByteLimit bounds each limit in bytes (MaxBodyBytes, MaxPageBytes,
// MaxMessageBytes, MaxQueueBytes and the budgets in flight): 1 PiB, more
// than any server holds, and far enough below the largest int64 that the
// budgets' sums of bytes in flight (a body of MaxBodyBytes beside those
// held, decoded bytes beside a body) cannot wrap. The hello announces
// some of them to clients, which read them exactly (below 2^53).
const MaxByteLimit = 1 << 50

// More defaults.
const (
	DefaultSendQueue            = 64
	DefaultMaxQueueBytes        = 2 << 20
	DefaultSlowConsumer         = 2 * time.Second
	DefaultRequestTimeout       = proto.DefaultRequestTimeout
	DefaultMaxBodyBytesInFlight = 64 << 20
	// DefaultMaxAnswerBytesInFlight: 64 pages of the default
	// MaxPageBytes being written at once, 16 of them one client's.
	DefaultMaxAnswerBytesInFlight = 64 << 20
	DefaultMaxConns               = 10000
)

// What a decoded change holds in memory beside the bytes of its strings
// and values (decodedBytes), charged to Limits.MaxBodyBytesInFlight
// (Server.chargeDecoded): the change, its record and its raw message
// (decodedChangeBytes), the record's field map when it has fields
// (decodedMapBytes: its first group of slots), and each field's entry
// with its stamp (decodedFieldBytes). Measured with Go 1.26's maps, a
// change of one tiny field holds about 750 bytes, and a record of 1,024
// fields about 155 a field (TestDecodedBytesBound holds them to it).
// A change that does not decode holds its place (decodedChangeBytes) and
// its refusal: the error value and its message (decodedRefusalBytes
// beside the message's bytes, TestRefusedChangesCharged).
const (
	decodedChangeBytes  = 192
	decodedMapBytes     = 640
	decodedFieldBytes   = 192
	decodedRefusalBytes = 64
)

// decodedBytes is what change ch of a push holds in memory, at most:
// decoded, or refused alone (refused, proto.Charge). Stamps' replica ids
// are not counted: they come from the push's replica table, one string
// each.
func decodedBytes(ch crdt.Change, refused error) int64 {
	if refused != nil {
		return int64(decodedChangeBytes + decodedRefusalBytes + len(refused.Error()))
	}
	n := decodedChangeBytes + len(ch.Collection) + len(ch.Record.ID)
	if len(ch.Record.Fields) > 0 {
		n += decodedMapBytes
	}
	for name, f := range ch.Record.Fields {
		n += decodedFieldBytes + len(name) + len(f.Value)
	}
	return int64(n)
}

// pageBytes is the most encoded records one page holds (P in
// docs/operations.md, "Memory"): a page is cut at MaxPageBytes, and a
// single larger record, at most crdt.MaxRecordBytes, travels alone.
func (l Limits) pageBytes() int64 {
	return max(int64(l.MaxPageBytes), crdt.MaxRecordBytes)
}

// pullEnvelopeBytes is what a pull answer holds beside its records and
// their seals: its cursor (at most proto.MaxCursorBytes), its flags and
// keys, the head of its replica table (whose ids the records' stamps
// would otherwise carry each).
const pullEnvelopeBytes = proto.MaxCursorBytes + 1<<10

// MaxWorkablePageBytes is the most MaxPageBytes a server the clients can
// read works with: a pull answer of a page of that many bytes, a seal for
// each of the most records a page holds (engine.MaxPage) and its envelope
// (pullAnswerBytes) is at most proto.DefaultMaxAnswerBytes, the most of an
// answer or live message both clients read. Above it a full page would be
// an answer no client reads, read again and refused for ever. Validate
// takes higher values; Workable refuses them, and so does convergo serve
// at startup.
const MaxWorkablePageBytes = proto.DefaultMaxAnswerBytes - engine.MaxPage*(sealBytes+1) - pullEnvelopeBytes

// pullAnswerBytes is what one pull answer holds encoded: a page of
// records (pageBytes), a seal for each of them, and its envelope. A pull
// reserves it among the answers in flight before it reads its page
// (Server.reserveAnswer), and holds its answer's own size once encoded,
// less as a rule (an answer that outgrows it is written whole all the
// same, budget.resize).
func (l Limits) pullAnswerBytes() int64 {
	return l.pageBytes() + int64(l.MaxPullRecords)*(sealBytes+1) + pullEnvelopeBytes
}

// MinMaxDrift is the least max drift (engine.Config.MaxDrift) a server
// takes: the hello announces it in whole ms (key 7), at least 1, since a
// client reads 0 as the default (docs/protocol.md, section 6). New refuses
// an engine whose max drift is below it.
const MinMaxDrift = time.Millisecond

// BodyWait is how long a request waits for room in
// Limits.MaxBodyBytesInFlight before it is answered 503 unavailable.
const BodyWait = time.Second

// WithDefaults returns l with zero fields set to their defaults.
func (l Limits) WithDefaults() Limits {
	if l.MaxBodyBytes == 0 {
		l.MaxBodyBytes = proto.DefaultMaxBodyBytes
	}
	if l.MaxPushChanges == 0 {
		l.MaxPushChanges = proto.DefaultMaxPushChanges
	}
	if l.MaxPullRecords == 0 {
		l.MaxPullRecords = proto.DefaultMaxPullRecords
	}
	if l.MaxPageBytes == 0 {
		l.MaxPageBytes = proto.DefaultMaxPageBytes
	}
	if l.MaxMessageBytes == 0 {
		l.MaxMessageBytes = proto.DefaultMaxMessageBytes
	}
	if l.Rate == 0 {
		l.Rate = proto.DefaultRate
	}
	if l.Burst == 0 {
		l.Burst = proto.DefaultBurst
	}
	if l.MaxConnsPerAddr == 0 {
		l.MaxConnsPerAddr = proto.DefaultMaxConnsPerAddr
	}
	if l.MaxSessionsPerSubject == 0 {
		l.MaxSessionsPerSubject = proto.DefaultMaxSessionsPerSubject
	}
	if l.MaxSubscriptions == 0 {
		l.MaxSubscriptions = proto.DefaultMaxSubscriptions
	}
	if l.MaxSubscriptionsPerSubject == 0 {
		l.MaxSubscriptionsPerSubject = proto.DefaultMaxSubscriptionsPerSubject
	}
	if l.SendQueue == 0 {
		l.SendQueue = DefaultSendQueue
	}
	if l.MaxQueueBytes == 0 {
		l.MaxQueueBytes = DefaultMaxQueueBytes
	}
	if l.MaxBodyBytesInFlight == 0 {
		l.MaxBodyBytesInFlight = DefaultMaxBodyBytesInFlight
	}
	if l.MaxAnswerBytesInFlight == 0 {
		l.MaxAnswerBytesInFlight = DefaultMaxAnswerBytesInFlight
	}
	if l.MaxConns == 0 {
		l.MaxConns = DefaultMaxConns
	}
	if l.SlowConsumer == 0 {
		l.SlowConsumer = DefaultSlowConsumer
	}
	if l.RequestTimeout == 0 {
		l.RequestTimeout = DefaultRequestTimeout
	}
	return l
}

// Validate checks limits after WithDefaults. Each of these limits the hello
// announces (docs/protocol.md, section 6) is at least 1 after it, so a
// server never announces 0, which clients read as the default; the one it
// announces from the engine, the max drift, New holds to MinMaxDrift. A
// field out of its bounds is a *LimitError, which names it.
func (l Limits) Validate() error {
	for _, b := range []struct {
		field    string
		v        int64
		min, max int64 // max 0: no bound above
	}{
		{"MaxBodyBytes", l.MaxBodyBytes, 1, MaxByteLimit},
		// A push's change list (a restore's records) is one array: the
		// decoder reads none longer.
		{"MaxPushChanges", int64(l.MaxPushChanges), 1, crdt.MaxContainerItems},
		{"MaxPullRecords", int64(l.MaxPullRecords), 1, engine.MaxPage},
		{"MaxPageBytes", int64(l.MaxPageBytes), 1, MaxByteLimit},
		{"MaxMessageBytes", l.MaxMessageBytes, 1, MaxByteLimit},
		{"MaxConnsPerAddr", int64(l.MaxConnsPerAddr), 1, 0},
		{"MaxSessionsPerSubject", int64(l.MaxSessionsPerSubject), 1, 0},
		{"MaxSubscriptions", int64(l.MaxSubscriptions), 1, 0},
		{"MaxSubscriptionsPerSubject", int64(l.MaxSubscriptionsPerSubject), 1, 0},
		{"SendQueue", int64(l.SendQueue), 1, 0},
		{"MaxQueueBytes", l.MaxQueueBytes, 1, MaxByteLimit},
		{"MaxBodyBytesInFlight", l.MaxBodyBytesInFlight, 1, MaxByteLimit},
		{"MaxAnswerBytesInFlight", l.MaxAnswerBytesInFlight, 1, MaxByteLimit},
		{"MaxConns", int64(l.MaxConns), 1, 0},
	} {
		switch {
		case b.v < b.min && b.max > 0:
			return &LimitError{b.field, b.v, fmt.Sprintf("must be %d to %d", b.min, b.max)}
		case b.v < b.min:
			return &LimitError{b.field, b.v, fmt.Sprintf("must be at least %d", b.min)}
		case b.max > 0 && b.v > b.max:
			return &LimitError{b.field, b.v, fmt.Sprintf("must be %d to %d", b.min, b.max)}
		}
	}
	switch {
	case l.Rate == 0 || math.IsNaN(l.Rate):
		return &LimitError{"Rate", l.Rate, "must be positive, or negative for no limit"}
	case l.Rate > 0 && l.Burst < 1:
		// A bucket of less than one request admits none.
		return &LimitError{"Burst", l.Burst, "must be at least 1 with a positive Rate"}
	case l.SlowConsumer <= 0:
		return &LimitError{"SlowConsumer", l.SlowConsumer, "must be positive"}
	case l.RequestTimeout <= 0:
		return &LimitError{"RequestTimeout", l.RequestTimeout, "must be positive"}
	}
	return nil
}

// MinRequestBytes is the least MaxBodyBytes and MaxMessageBytes a server
// the protocol can work with: a request of one item at its largest, a
// record of crdt.MaxRecordBytes (the record limit every server accepts,
// docs/protocol.md section 11) with what its item carries beside it (a
// push's change its collection's name, at most crdt.MaxCollectionBytes; a
// restore's sealed record its seal, fewer bytes; their heads within
// itemHeadBytes), in the envelope a client leaves for
// (proto.PushEnvelopeBytes). Below it a record the protocol accepts could
// not be pushed or given back in any request, nor, live, a change pushed
// in a message of its own; a live hello's token (proto.MaxTokenBytes) and
// a sub's cursor and scope (proto.MaxCursorBytes, proto.MaxScopeBytes) fit
// in far less. Validate takes lower values, which tests use to reach the
// bounds with small data; Workable refuses them, and so does convergo
// serve at startup.
const MinRequestBytes = crdt.MaxRecordBytes + crdt.MaxCollectionBytes + itemHeadBytes + proto.PushEnvelopeBytes

// itemHeadBytes bounds the CBOR heads of one pushed change or restored
// record beside its record and its collection's name or seal: the item's
// array head and its members' heads, each at most 9 bytes.
const itemHeadBytes = 4 * 9

// Workable checks that limits, valid (Validate), are within what the
// protocol and its clients work with: MaxBodyBytes and MaxMessageBytes at
// least MinRequestBytes, MaxPageBytes at most MaxWorkablePageBytes. A
// field beyond is a *LimitError, which names it.
func (l Limits) Workable() error {
	for _, b := range []struct {
		field string
		v     int64
	}{{"MaxBodyBytes", l.MaxBodyBytes}, {"MaxMessageBytes", l.MaxMessageBytes}} {
		if b.v < MinRequestBytes {
			return &LimitError{b.field, b.v, fmt.Sprintf("must be at least %d (transport.MinRequestBytes: a request of one record at the record limit, %d bytes, and its envelope)", MinRequestBytes, crdt.MaxRecordBytes)}
		}
	}
	if l.MaxPageBytes > MaxWorkablePageBytes {
		return &LimitError{"MaxPageBytes", l.MaxPageBytes, fmt.Sprintf("must be at most %d (transport.MaxWorkablePageBytes: a page's answer, with its seals and envelope, within the %d bytes of an answer the clients read)", MaxWorkablePageBytes, proto.DefaultMaxAnswerBytes)}
	}
	return nil
}

// LimitError is a field of Limits out of its bounds (Validate).
type LimitError struct {
	Field string // the field's name in Limits
	Value any
	Want  string // what the field must be
}

func (e *LimitError) Error() string {
	return fmt.Sprintf("limits: %s %v, %s", e.Field, e.Value, e.Want)
}

// rateLimiter keeps one token bucket per client key. Buckets that have
// refilled completely are forgotten, so memory follows the clients active
// in the last Burst/Rate seconds.
type rateLimiter struct {
	rate    float64 // tokens per second; <= 0 disables
	burst   float64
	mu      sync.Mutex
	buckets map[string]*bucket
	swept   time.Time
}

type bucket struct {
	tokens float64
	at     time.Time
}

func newRateLimiter(rate float64, burst int) *rateLimiter {
	return &rateLimiter{rate: rate, burst: float64(burst), buckets: map[string]*bucket{}}
}

// take takes a token from key's bucket. When the bucket is empty it takes
// nothing and returns how long until a token is available.
func (l *rateLimiter) take(key string, now time.Time) (wait time.Duration) {
	if l.rate <= 0 {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweep(now)
	b := l.buckets[key]
	if b == nil {
		b = &bucket{tokens: l.burst, at: now}
		l.buckets[key] = b
	}
	if dt := now.Sub(b.at).Seconds(); dt > 0 {
		b.tokens = math.Min(l.burst, b.tokens+dt*l.rate)
		b.at = now
	}
	// The epsilon absorbs float rounding, so that a client that waits
	// exactly as long as it was told is served.
	if b.tokens >= 1-1e-9 {
		b.tokens = max(b.tokens-1, 0)
		return 0
	}
	return nanos(math.Ceil((1 - b.tokens) / l.rate * float64(time.Second)))
}

// nanos is ns nanoseconds as a Duration, the longest one when ns is more:
// a slow rate's refill period or wait would wrap around otherwise.
func nanos(ns float64) time.Duration {
	if ns < math.MaxInt64 {
		return time.Duration(ns)
	}
	return math.MaxInt64
}

// sweep forgets full buckets, at most once per refill period. Called with
// l.mu held.
func (l *rateLimiter) sweep(now time.Time) {
	full := nanos(l.burst / l.rate * float64(time.Second))
	if now.Sub(l.swept) < max(full, time.Second) {
		return
	}
	l.swept = now
	for k, b := range l.buckets {
		if now.Sub(b.at) >= full {
			delete(l.buckets, k)
		}
	}
}

// budget is a number of bytes shared by its holders: take waits until
// what it asks for fits, or until nothing is held, so that a single
// request larger than the whole budget is served alone rather than never.
// The request bodies in flight and the pull answers in flight are each
// bounded with one. Each holder names the client it holds for (its key;
// "" for none), and a client holds at most share bytes in all, unless a
// holder is its only one: one client cannot take all the room, whatever
// it sends or leaves unread, and be the only one served.
type budget struct {
	max   int64
	share int64
	mu    sync.Mutex
	used  int64
	byKey map[string]int64 // what each client's holders hold, when not 0
	free  chan struct{}    // closed and replaced whenever bytes are released
}

func newBudget(max, share int64) *budget {
	return &budget{max: max, share: share, byKey: map[string]int64{}, free: make(chan struct{})}
}

// budgetAnswer is whether a budget let bytes be taken (budgetTaken), or
// why not: no room in the whole budget (budgetFull), or none in the
// client's share (budgetOverShare).
type budgetAnswer int

const (
	budgetTaken budgetAnswer = iota
	budgetFull
	budgetOverShare
)

// fits returns budgetTaken when n more bytes fit beside a holder of key's
// that holds own bytes already (own 0: a new holder), else why not.
// Called with b.mu held.
func (b *budget) fits(n, own int64, key string) budgetAnswer {
	if b.used != own && b.used+n > b.max {
		return budgetFull
	}
	if h := b.byKey[key]; key != "" && h != own && h+n > b.share {
		return budgetOverShare
	}
	return budgetTaken
}

// add takes n bytes for key. Called with b.mu held.
func (b *budget) add(n int64, key string) {
	b.used += n
	if key != "" {
		b.byKey[key] += n
	}
}

// tryTake takes n bytes for key if they fit now. Otherwise it takes
// nothing and returns why, and a channel closed at the next release.
func (b *budget) tryTake(n int64, key string) (budgetAnswer, <-chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if why := b.fits(n, 0, key); why != budgetTaken {
		return why, b.free
	}
	b.add(n, key)
	return budgetTaken, nil
}

// take takes n bytes for key, waiting until they fit, stop is closed or
// wait passes (wait <= 0: no wait). It returns budgetTaken, or why it took
// nothing when it gave up.
func (b *budget) take(n int64, key string, wait time.Duration, stop <-chan struct{}) budgetAnswer {
	why, free := b.tryTake(n, key)
	if why == budgetTaken || wait <= 0 {
		return why
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	for {
		select {
		case <-free:
		case <-t.C:
			return why
		case <-stop:
			return why
		}
		if why, free = b.tryTake(n, key); why == budgetTaken {
			return budgetTaken
		}
	}
}

// takeBeside takes n bytes for key, without waiting, for a holder that
// holds own bytes already: if they fit, or if that holder is the only
// one (as take lets one in when nothing is held, a request larger than
// the whole budget is served alone rather than never), and the same
// within key's share. It returns budgetTaken, or why it took nothing.
func (b *budget) takeBeside(n, own int64, key string) budgetAnswer {
	b.mu.Lock()
	defer b.mu.Unlock()
	if why := b.fits(n, own, key); why != budgetTaken {
		return why
	}
	b.add(n, key)
	return budgetTaken
}

// resize makes a holder of key's that holds own bytes hold n: it gives
// back what it holds beyond n, and takes what n asks beyond own whether
// it fits or not, since a holder let in is never cut (an answer whose
// reservation its encoding outgrew is written whole).
func (b *budget) resize(own, n int64, key string) {
	if n < own {
		b.release(own-n, key)
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.add(n-own, key)
}

// release gives back n bytes taken before for key.
func (b *budget) release(n int64, key string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.used -= n
	if key != "" {
		if b.byKey[key] -= n; b.byKey[key] <= 0 {
			delete(b.byKey, key)
		}
	}
	close(b.free)
	b.free = make(chan struct{})
}

// inUse returns the bytes held now.
func (b *budget) inUse() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}

// keyCounter counts what is held per key, up to max each: the listener's
// TCP connections per peer, the WebSockets per client address, the live
// sessions per subject, the live subscriptions per subject (per address
// for anonymous sessions).
type keyCounter struct {
	max int
	mu  sync.Mutex
	n   map[string]int
}

func newKeyCounter(max int) *keyCounter { return &keyCounter{max: max, n: map[string]int{}} }

func (c *keyCounter) acquire(key string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n[key] >= c.max {
		return false
	}
	c.n[key]++
	return true
}

func (c *keyCounter) release(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n[key] <= 1 {
		delete(c.n, key)
		return
	}
	c.n[key]--
}

// maxMessageBytes bounds the message of an error answer or of a change's
// refusal (cutMessage): a message may quote what a request named (a
// record id of 512 control characters is 2,048 bytes quoted), and a push's
// answer, which the bodies in flight do not count, holds one a refused
// change, for as long as its client takes to read it.
const maxMessageBytes = 256
