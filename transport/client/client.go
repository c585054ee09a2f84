package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/crdt/migrate"
	"github.com/convergo/convergo/crdt/scope"
	"github.com/convergo/convergo/transport/proto"
)

// Defaults.
const (
	// DefaultMaxResponseBytes bounds a response body or WebSocket message
	// the client reads, as the browser client's does.
	DefaultMaxResponseBytes = proto.DefaultMaxAnswerBytes
	// DefaultHandshakeTimeout bounds a WebSocket dial plus hello/welcome.
	DefaultHandshakeTimeout = 10 * time.Second
)

// Config configures a Client.
type Config struct {
	// URL is the server's base URL, such as "https://sync.example.com".
	// Required; the protocol's paths (proto.PathHello, ...) are appended
	// to it.
	URL string
	// Token is a fixed bearer token. Empty with a nil TokenFunc means
	// anonymous requests (the demo collection only).
	Token string
	// TokenFunc, when set, is called before every request and WebSocket
	// connection for the token to send, and again after the server says
	// token_expired, forbidden or revoked (a refusal of a token it has
	// replaced since goes again with the new one, once); it should cache
	// its token and refresh it when it nears expiry, and when
	// RefusedToken(ctx) names the token it cached: the server refused it
	// as expired, whatever the TokenFunc's own reading of its expiry
	// (clocks differ). It takes precedence over Token. When it starts
	// returning another subject's token, call Hello: the client binds
	// itself to that subject and ends a live session opened under the
	// old one (Live dials again with the new token).
	TokenFunc func(ctx context.Context) (string, error)
	// Replica is this client's replica id: the tie-break of every stamp it
	// issues. The server accepts only stamps of ids the token's subject
	// owns (replica binding, docs/protocol.md): set it to
	// proto.ReplicaFor(subject, device) when the subject is known up
	// front. Empty means the client binds itself to proto.ReplicaFor of
	// the subject its token names (the sub claim of a JWT, read unchecked
	// as the browser client reads it; no token is the anonymous subject)
	// and Device: at New for Token, at the first token the TokenFunc
	// returns (any request reads one, even one the network then fails,
	// and so does a Replica's write while the client is unbound), so it
	// writes before ever reaching the server. A token it cannot read
	// leaves it unbound until its first Hello (or live session), which
	// binds it to the subject the server names, as does a later one naming
	// another subject; until then Now fails with ErrUnbound. Two clients
	// must never share an id.
	Replica string
	// Device is the device part of the replica id the client binds itself
	// to when Replica is empty: 1 to proto.MaxDeviceBytes of
	// [A-Za-z0-9_-]. Empty means a random one for this Client.
	Device string
	// HTTPClient sends requests and dials WebSockets. Nil means a client
	// of its own with http.DefaultTransport.
	HTTPClient *http.Client
	// Logger receives the client's logs. Nil discards them.
	Logger *slog.Logger
	// Backoff sets retries. The zero value means the defaults.
	Backoff Backoff
	// Now reads the local wall clock. Nil means time.Now.
	Now func() time.Time
	// MaxDrift bounds how far ahead of the corrected local clock a stamp
	// received from the server may be for the client's clock to adopt it.
	// Zero means the max drift the server's last hello announced
	// (crdt.DefaultMaxDrift before a hello), as in the browser client: a
	// stamp the server took is one the clock adopts, so a local write
	// made after it was seen sorts after it.
	MaxDrift time.Duration
	// MaxResponseBytes bounds a response body or WebSocket message. Zero
	// means DefaultMaxResponseBytes. An answer over it is not read
	// (ErrAnswerTooLarge): a push or a restore whose answer is over it is
	// split until the answers fit, a pull page asked for again with fewer
	// records, and a live message read past and pulled over HTTP (Live).
	MaxResponseBytes int64
	// PingInterval is how long a live session may hear nothing before Live
	// sends a ping. Zero means proto.PingInterval.
	PingInterval time.Duration
	// SilenceTimeout is how long a live session may hear nothing before
	// Live drops it and redials. Zero means proto.ClientSilenceTimeout.
	SilenceTimeout time.Duration
	// HandshakeTimeout bounds a WebSocket dial and its hello, and the
	// TokenFunc's call by a Replica's write while the client is unbound.
	// Zero means DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// PushTimeout is how long a push over a live session may wait for its
	// answer: past it the session is dropped (Live dials again) and the
	// batch goes over HTTP. Zero means proto.ClientPushTimeout.
	PushTimeout time.Duration
	// Scopes are the initial scopes of each collection, by name: pulls
	// and subscriptions of a collection read only the records that match
	// one of its scopes (see SetScope). Nil means none: reads are not
	// narrowed.
	Scopes map[string]map[string]*scope.Pred
	// Migrations are the schema versions of collections, by name: the
	// "migrations" objects of the server's rules file (migrate.Parse).
	// The client speaks each collection's current version: its pushes say
	// the changes were written in it, its pulls, subscriptions and
	// restores ask for records in it (docs/protocol.md, "Schema
	// versions"). A collection absent (or nil) speaks the server's current
	// version, whatever it is. The client keeps no durable store, so it
	// has nothing to translate itself: give it the definition the program
	// was written for. A server running older rules answers schema_ahead,
	// which is retried with backoff like unavailable (ErrSchemaAhead once
	// the retries run out; a Replica keeps its outbox and retries at its
	// next sync); a change the server cannot translate is refused with
	// ErrUntranslatable (a Replica moves it to its rejected changes).
	Migrations map[string]*migrate.Definition
}

// ServerInfo is what the server said in its hello answer. A limit the
// answer left out or gave as 0 is the protocol's default
// (proto.HelloResponse.WithDefaults).
type ServerInfo struct {
	Protocol      int
	ServerTime    time.Time
	ServerReplica string
	// MaxPush is the most changes one push may carry.
	MaxPush int
	// MaxPull is the most records one pull page returns.
	MaxPull int
	// MaxBody is the largest request body in bytes.
	MaxBody int64
	// MaxPageBytes bounds the encoded records of a pull page or live
	// frame (a single larger record travels alone).
	MaxPageBytes int64
	// MaxMessageBytes is the largest live message the server accepts.
	MaxMessageBytes int64
	// MaxDrift is how far ahead of the server's clock a stamp may be, as
	// the hello announced it: how far ahead of the client's corrected
	// clock a stamp it adopts may be, unless Config.MaxDrift says.
	MaxDrift time.Duration
	// Subject is the authenticated subject, "" when anonymous.
	Subject string
	// Offset is the measured skew: server time minus local time.
	Offset time.Duration
}

// Status is the outcome of one pushed change, as the protocol numbers it.
type Status = proto.Status

// The push statuses (docs/protocol.md, "Push").
const (
	// StatusApplied means the change altered its record on the server;
	// Result.Lost lists fields of it that newer writes beat.
	StatusApplied = proto.StatusApplied
	// StatusDuplicate means the server already held every stamp of the
	// change: a retry, or a change another path delivered.
	StatusDuplicate = proto.StatusDuplicate
	// StatusSuperseded means the change altered nothing because newer
	// writes won; Result.Lost lists the fields that lost. The newer values
	// reach the client by pull or live sync and win the local merge.
	StatusSuperseded = proto.StatusSuperseded
	// StatusRefused means the server will never apply the change in this
	// form; Result.Err says why.
	StatusRefused = proto.StatusRefused
)

// Result is the server's answer for one pushed change.
type Result struct {
	Status Status
	// Lost names the fields of the change that newer writes beat (with
	// StatusApplied or StatusSuperseded).
	Lost []string
	// Err is the reason of a refusal: an *Error with Status 0 and a
	// per-change code (proto.CodeClockDrift, CodeInvalid, CodeMalformed,
	// CodeForbidden, CodeTooLarge, CodeOutOfScope, CodeSchema, ..., or a
	// newer server's code).
	Err error
}

// Acknowledged reports whether the server holds the change or something
// newer (applied, duplicate or superseded), so it can leave the outbox.
func (r Result) Acknowledged() bool { return r.Status.Acknowledged() }

// Page is one page of a pull.
type Page struct {
	// Records are the records that changed after the cursor, each once, in
	// their merged state with tombstones.
	Records []crdt.Record
	// Next is the cursor for the next pull: opaque bytes of the server's,
	// to store and send back unchanged.
	Next []byte
	// More says to pull again.
	More bool
	// Seals holds the seal of each record, in order (none from a server
	// that sends none): what the client gives back with Restore after a
	// reset.
	Seals [][]byte
	// Reset, when not "", says the cursor was of another history than the
	// server's (a proto.Reset* reason): the page holds no records and Next
	// is the beginning. See Replica for what a client then does.
	Reset string
	// Leaves are leave entries: for each record that changed after the
	// cursor but is outside the reader's scope (it no longer matches, or
	// was deleted), proto.LeaveDigest of its collection and id. A reader
	// drops a record it holds whose id digests to one, without deleting
	// it. Only a scoped read (the client's scopes or the server's) gets
	// any.
	Leaves [][]byte
	// from is the cursor the page was read from (readFrom): the one a
	// pull sent, or, of a live session's changes message, the Next of
	// the collection's delivery before it, the subscription's cursor for
	// its first. Nil for a page the application built: where it was read
	// from is not known.
	from []byte
}

// readFrom is a Page's from for a page read from cursor: never nil, the
// beginning being empty.
func readFrom(cursor []byte) []byte { return append([]byte{}, cursor...) }

// Client speaks the Convergo protocol to one server. It is safe for
// concurrent use.
type Client struct {
	base    string
	http    *http.Client
	log     *slog.Logger
	backoff Backoff
	cfg     Config

	mu     sync.Mutex  // guards the fields below
	clock  *crdt.Clock // of the device part alone until the client is bound
	bound  bool        // the clock's replica is the client's id
	device string
	offset time.Duration
	info   ServerInfo
	hello  bool
	scopes scopeState
	// floors are the pending floors of the outboxes that write through
	// this client (each Replica adds its own, Close removes it), by the
	// handle addFloor gave: see pendingFloor.
	floors    map[uint64]func(collection string) (int64, bool)
	nextFloor uint64
	// live is the live session pushes go over (livepush.go), nil while
	// none is open.
	live *liveLink
	// lastToken is the token the TokenFunc last returned; tokenNew is
	// closed, and dropped, when it returns another (noteToken).
	lastToken string
	tokenNew  chan struct{}
	// expired is the last token the server refused token_expired, until
	// the TokenFunc returns another (RefusedToken).
	expired string

	// hellos counts the hellos (HTTP and live) begun, each numbered before
	// it reads its token; applied is the number of the last whose answer
	// was taken (setInfo): an older one's answer, sent with a token since
	// replaced perhaps, is not.
	hellos, applied uint64
}

// New returns a client for cfg. It does no I/O; call Hello to correct the
// clock and learn the server's limits.
func New(cfg Config) (*Client, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("client: Config.URL %q is not an http(s) URL", cfg.URL)
	}
	device := cfg.Device
	if device == "" {
		device = randomDevice()
	}
	if len(device) > proto.MaxDeviceBytes || crdt.ValidateReplica(device) != nil {
		return nil, fmt.Errorf("client: Config.Device %q: want 1 to %d of [A-Za-z0-9_-]", device, proto.MaxDeviceBytes)
	}
	id, bound := cfg.Replica, cfg.Replica != ""
	if !bound {
		id = device // a placeholder: Now refuses to stamp with it
		if cfg.TokenFunc == nil {
			// The subject is known up front: stamp with its ids before
			// ever reaching the server.
			if subject, ok := tokenSubject(cfg.Token); ok {
				id, bound = proto.ReplicaFor(subject, device), true
			}
		}
	}
	clock, err := crdt.NewClock(crdt.ClockConfig{Replica: id, MaxDrift: cfg.MaxDrift})
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxResponseBytes <= 0 {
		cfg.MaxResponseBytes = DefaultMaxResponseBytes
	}
	if cfg.PingInterval <= 0 {
		cfg.PingInterval = proto.PingInterval
	}
	if cfg.SilenceTimeout <= 0 {
		cfg.SilenceTimeout = proto.ClientSilenceTimeout
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if cfg.PushTimeout <= 0 {
		cfg.PushTimeout = proto.ClientPushTimeout
	}
	c := &Client{
		base:    strings.TrimSuffix(u.String(), "/"),
		http:    cfg.HTTPClient,
		log:     cfg.Logger.With("component", "client", "device", device),
		backoff: cfg.Backoff.withDefaults(),
		cfg:     cfg,
		clock:   clock,
		bound:   bound,
		device:  device,
		info:    limitsOf(proto.HelloResponse{}), // the defaults until a hello
	}
	for coll, named := range cfg.Scopes {
		for name, p := range named {
			if err := c.SetScope(coll, name, p); err != nil {
				return nil, fmt.Errorf("client: Config.Scopes: %w", err)
			}
		}
	}
	return c, nil
}

// ErrUnbound is returned by Now before the client knows its replica id:
// Config.Replica was empty, the client could not read the subject from a
// token (no TokenFunc token yet, the TokenFunc failing at a Replica's
// write, or a token that is no JWT naming one) and no hello has named the
// subject yet.
var ErrUnbound = errors.New("convergo: no replica id yet: set Config.Replica or call Hello first")

// tokenSubject returns the subject token names, read as the browser client
// reads it (jsclient/src/replica.js, subjectOfToken): the sub claim of a
// JWT, unchecked (the server checks the token; the client only needs to
// know whose ids to stamp with). No token is the anonymous subject "". A
// token it cannot read, or one naming no subject (which the server
// refuses), names none: false.
func tokenSubject(token string) (string, bool) {
	if token == "" {
		return "", true
	}
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return "", false
	}
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return "", false
	}
	var claims struct {
		Sub *string `json:"sub"`
	}
	if json.Unmarshal(b, &claims) != nil || claims.Sub == nil || *claims.Sub == "" {
		return "", false
	}
	return *claims.Sub, true
}

// bindToToken binds a client that is not bound yet to the ids of the
// subject token names, when it can read one (tokenSubject): a TokenFunc's
// first token lets it stamp before its first hello. A later hello naming
// another subject binds it again (setInfo).
func (c *Client) bindToToken(token string) {
	if c.cfg.Replica != "" || token == "" {
		return
	}
	subject, ok := tokenSubject(token)
	if !ok {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.bound {
		c.bindLocked(subject)
	}
}

// bindToTokenFunc binds a client with a TokenFunc that is not bound yet
// (no request has read a token of it, or none it could read a subject
// from) to the subject of the TokenFunc's token now: a Replica's write
// calls it, so that a program starting offline writes at once, as with a
// static token (New). A write takes no context, so the TokenFunc gets
// one of its own, bounded by Config.HandshakeTimeout. It returns the
// TokenFunc's error, for the write's ErrUnbound to carry.
func (c *Client) bindToTokenFunc() error {
	if c.cfg.TokenFunc == nil || c.cfg.Replica != "" {
		return nil
	}
	c.mu.Lock()
	bound := c.bound
	c.mu.Unlock()
	if bound {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.HandshakeTimeout)
	defer cancel()
	_, err := c.tokenOf(ctx) // binds (bindToToken)
	return err
}

// Replica returns the client's replica id, "" while it is unbound.
func (c *Client) Replica() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.replicaLocked()
}

func (c *Client) replicaLocked() string {
	if !c.bound {
		return ""
	}
	return c.clock.Replica()
}

// helloReplica is the id a hello carries: the bound one, or the device
// part while unbound.
func (c *Client) helloReplica() string {
	if r := c.Replica(); r != "" {
		return r
	}
	return c.device
}

// randomDevice returns 12 random characters of [a-z0-9].
func randomDevice() string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	var b [12]byte
	_, _ = rand.Read(b[:])
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b[:])
}

// Info returns what the last hello (HTTP or WebSocket) said, and whether
// there was one.
func (c *Client) Info() (ServerInfo, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.info, c.hello
}

// wall is the corrected wall time in milliseconds. Called with c.mu held.
func (c *Client) wall() int64 { return c.cfg.Now().Add(c.offset).UnixMilli() }

// Now issues a stamp for a local write: a hybrid logical clock reading
// whose wall part is local time corrected by the skew Hello measured.
func (c *Client) Now() (crdt.Stamp, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.bound {
		return crdt.Stamp{}, ErrUnbound
	}
	return c.clock.Now(c.wall())
}

// Observe folds a stamp received from elsewhere into the client's clock, so
// that later local writes sort after it. A stamp too far ahead is refused
// with an error wrapping crdt.ErrClockDrift and not adopted.
func (c *Client) Observe(s crdt.Stamp) error {
	if s.IsZero() {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.clock.Observe(s.Time(), c.wall())
}

func (c *Client) observeRecords(records []crdt.Record) {
	for _, r := range records {
		if err := c.Observe(r.MaxStamp()); err != nil {
			c.log.Warn("not adopting a record's stamp", "record", r.ID, "err", err)
		}
	}
}

// beginHello numbers a hello, before it reads its token (setInfo).
func (c *Client) beginHello() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.hellos++
	return c.hellos
}

// limitsOf is a ServerInfo holding the limits of hello answer a alone,
// each it leaves out or gives as 0 at its default (WithDefaults): those of
// an empty answer before any hello.
func limitsOf(a proto.HelloResponse) ServerInfo {
	a = a.WithDefaults()
	return ServerInfo{
		MaxPush:         int(min(a.MaxPush, 1<<31)),
		MaxPull:         int(min(a.MaxPull, 1<<31)),
		MaxBody:         int64(min(a.MaxBodyBytes, 1<<62)),
		MaxPageBytes:    int64(min(a.MaxPageBytes, 1<<62)),
		MaxMessageBytes: int64(min(a.MaxMessageBytes, 1<<62)),
		MaxDrift:        time.Duration(min(a.MaxDrift, uint64(math.MaxInt64/time.Millisecond))) * time.Millisecond,
	}
}

// setInfo records the answer of hello n (beginHello) and returns what the
// client now holds. sent and received bracket the request; the server's
// time is taken to be read half way through. The answer of a hello begun
// before the last one taken is dropped: it may have been sent with a token
// the TokenFunc has replaced since by another subject's, and must not bind
// the client back to the old subject (whose ids the new token does not
// own) nor end a session of the new one.
func (c *Client) setInfo(n uint64, a proto.HelloResponse, sent, received time.Time) ServerInfo {
	rtt := received.Sub(sent)
	serverAtReceive := time.UnixMilli(a.ServerTime).Add(rtt / 2)
	info := limitsOf(a)
	info.Protocol, info.ServerTime, info.ServerReplica = int(a.Protocol), time.UnixMilli(a.ServerTime), a.ServerReplica
	info.Subject = a.Subject
	info.Offset = serverAtReceive.Sub(received).Round(time.Millisecond)
	c.mu.Lock()
	defer c.mu.Unlock()
	if n < c.applied {
		c.log.Debug("dropping the answer of a hello overtaken by a later one", "subject", a.Subject)
		return c.info
	}
	c.applied = n
	c.info, c.offset, c.hello = info, info.Offset, true
	c.endStaleLocked(a.Subject)
	if c.cfg.Replica == "" {
		c.bindLocked(a.Subject)
	}
	if c.clock.MaxDrift() != c.maxDriftLocked() {
		c.reclockLocked(c.clock.Replica())
	}
	// The wall time is the server's now: a clock more than the max drift
	// ahead of it (stamps issued while the local clock ran fast, which the
	// server refused) starts again from it, or every later write would be
	// refused until real time caught up. Only here: a local clock set back
	// between hellos must not pull stamps back.
	c.clock.Settle(c.wall())
	return info
}

// maxDriftLocked is the drift bound of the client's clock: Config.MaxDrift,
// else the last hello's (the default before one). Called with c.mu held.
func (c *Client) maxDriftLocked() time.Duration {
	if c.cfg.MaxDrift != 0 {
		return c.cfg.MaxDrift
	}
	return c.info.MaxDrift
}

// bindLocked gives an unbound client (or one whose subject changed) the
// replica id subject owns for its device. Called with c.mu held.
func (c *Client) bindLocked(subject string) {
	id := proto.ReplicaFor(subject, c.device)
	if c.replicaLocked() == id {
		return
	}
	if c.reclockLocked(id) {
		c.bound = true
	}
}

// reclockLocked gives the client a clock of replica id with the drift
// bound maxDriftLocked says, continuing from the old clock's reading, so
// stamps keep increasing; false if it could not. Called with c.mu held.
func (c *Client) reclockLocked(id string) bool {
	clock, err := crdt.NewClock(crdt.ClockConfig{Replica: id, MaxDrift: c.maxDriftLocked()})
	if err != nil {
		c.log.Error("new clock", "replica", id, "err", err) // unreachable: device, prefix and drift were validated
		return false
	}
	clock.Restore(c.clock.Last())
	c.clock = clock
	return true
}

// Hello greets the server: it learns the server's limits and measures the
// clock skew, which corrects the wall time of every later stamp. A hello
// that names another subject than the open live session's ends that
// session (see Live). A hello answered after a later hello's answer (a
// TokenFunc's new token, say) changes nothing and returns what the later
// one said.
func (c *Client) Hello(ctx context.Context) (ServerInfo, error) {
	n := c.beginHello()
	var a proto.HelloResponse
	ans, err := c.call(ctx, proto.PathHello, proto.HelloRequest{Protocol: proto.Version, Replica: c.helloReplica()}, &a,
		func() error { return checkHello(a) })
	if err != nil {
		return ServerInfo{}, err
	}
	return c.setInfo(n, a, ans.sent, c.cfg.Now()), nil
}

// checkHello reads a hello answer (or a welcome's) before anything of it
// is taken. One of another protocol version says the client must be
// upgraded: unsupported_version, not retried (as the browser client's
// applyHello). One without its protocol, or whose server time is not a
// wall time (absent, 0, or past crdt.MaxWall), did not decode
// (proto.HelloResponse.UnmarshalCBOR): unreadable, ErrProtocol, retried
// as a network failure; taken, it would correct the wall time to about
// the epoch and restart the clock there (setInfo).
func checkHello(a proto.HelloResponse) error {
	if a.Protocol != proto.Version {
		return &Error{Code: proto.CodeUnsupportedVersion, Message: fmt.Sprintf("the server speaks protocol %d, not %d", a.Protocol, proto.Version)}
	}
	return nil
}

// Push sends changes and returns one result per change, in order. Changes
// go in batches within the server's limits; a batch is retried with backoff
// while the server is unavailable, rate limits or cannot be reached, which
// is safe because push is idempotent (a change sent twice comes back
// duplicate).
//
// The server judges each change on its own and refuses a bad one alone
// (StatusRefused). A change holding a value the server could not read (not
// CBOR, or not of the value model: crdt.NormalizeValue refuses it
// crdt.ErrMalformed) is refused so by Push itself, unsent, with the code
// the server gives it (malformed: its Err matches ErrMalformed), and the
// others go on. Fitting the batches to the server's size limits is
// Push's job: it sizes them from the hello's limits (the protocol's
// defaults before a hello), and when the server still refuses a batch
// whole as too_large, it splits it in halves until the change that does
// not fit stands alone and is reported refused with that code, so one
// oversized change cannot stall the rest. A batch refused whole as
// malformed (a change the server cannot read at all) is split the same
// way, down to the change at fault, refused only if the server reads a
// push of no changes (else the fault is not the change's, and Push
// returns the error). A batch whose answer is over Config.MaxResponseBytes
// is split too, as the answer holds one result per change; nothing is
// refused for it, and a single change's answer still over it is returned
// (ErrAnswerTooLarge). Any other refusal of a whole batch
// (forbidden, unauthenticated...) is not its changes' fault: Push returns
// it.
//
// While Live holds a session open (its welcome received), each batch goes
// over it as a push message, one at a time (docs/protocol.md, "Pushing
// over a live session"); otherwise, for a batch over the session's message
// limit, for a batch whose session ends before answering it, and until a
// session of the subject the client's last hello named opens (a
// TokenFunc's new token: that hello ends the old subject's session), over
// HTTP. A batch refused for now over the session (unavailable, say) is
// retried over HTTP after a backoff; one the server could not read
// (malformed, invalid), over HTTP at once.
//
// On error, the results returned are those of the changes acknowledged
// before the failure: a prefix of changes. The others may or may not have
// been applied; push them again.
func (c *Client) Push(ctx context.Context, changes []crdt.Change) ([]Result, error) {
	refused := unreadableChanges(changes)
	if len(refused) == 0 {
		return c.pushAll(ctx, changes)
	}
	send := make([]crdt.Change, 0, len(changes)-len(refused))
	for i, ch := range changes {
		if _, ok := refused[i]; !ok {
			send = append(send, ch)
		}
	}
	rs, err := c.pushAll(ctx, send)
	// The results in the order of changes; on error, up to the first
	// change sent and not answered.
	results := make([]Result, 0, len(changes))
	for i := range changes {
		if r, ok := refused[i]; ok {
			results = append(results, r)
			continue
		}
		if len(rs) == 0 {
			break
		}
		results = append(results, rs[0])
		rs = rs[1:]
	}
	return results, err
}

// unreadableChanges returns, by index, the refusal of each change holding a
// value the server could not read (crdt.NormalizeValue refuses it
// crdt.ErrMalformed: not CBOR, or not of the value model): the server
// refuses such a change alone, malformed (docs/protocol.md, section 7),
// and one that is not well-formed CBOR could not even be framed in a push.
// Push refuses it so itself, with the server's code, and sends the others.
func unreadableChanges(changes []crdt.Change) map[int]Result {
	var refused map[int]Result
	for i, ch := range changes {
		for name, f := range ch.Record.Fields {
			if f.Value == nil {
				continue
			}
			if _, err := crdt.NormalizeValue(f.Value); errors.Is(err, crdt.ErrMalformed) {
				if refused == nil {
					refused = map[int]Result{}
				}
				refused[i] = Result{Status: StatusRefused, Err: &Error{Code: proto.CodeMalformed,
					Message: fmt.Sprintf("%s/%s field %q: %v (refused by the client, unsent)", ch.Collection, ch.Record.ID, name, err)}}
				break
			}
		}
	}
	return refused
}

// pushAll is Push of changes the server can read.
func (c *Client) pushAll(ctx context.Context, changes []crdt.Change) ([]Result, error) {
	c.mu.Lock()
	maxPush, room := c.info.MaxPush, int(proto.PushRoom(c.info.MaxBody))
	c.mu.Unlock()
	results := make([]Result, 0, len(changes))
	size := changeSizer()
	for len(changes) > 0 {
		n := proto.BatchLen(changes, maxPush, room, proto.PushSizer(size, c.versionOf))
		rs, err := c.pushBatch(ctx, changes[:n])
		results = append(results, rs...)
		if err != nil {
			return results, err
		}
		changes = changes[n:]
	}
	return results, nil
}

// version returns the schema version the client speaks for collection:
// its definition's current one, 0 (the server's current one) without.
func (c *Client) version(collection string) uint64 {
	if d := c.cfg.Migrations[collection]; d != nil {
		return uint64(d.Current())
	}
	return 0
}

// versionOf returns the collection of ch and the version the client
// speaks for it (proto.PushSizer).
func (c *Client) versionOf(ch crdt.Change) (string, uint64) {
	return ch.Collection, c.version(ch.Collection)
}

// versions returns push key 3 for changes: the version of each of their
// collections that has a definition; nil when none has.
func (c *Client) versions(changes []crdt.Change) map[string]uint64 {
	var out map[string]uint64
	for _, ch := range changes {
		if v := c.version(ch.Collection); v != 0 {
			if out == nil {
				out = map[string]uint64{}
			}
			out[ch.Collection] = v
		}
	}
	return out
}

// pushPrefix is the replica prefix a push may leave to the server, which
// reads it from the token (docs/protocol.md, "Push": key 9 names the
// replica by its device part): the prefix of the subject a hello named,
// when the token is fixed (Config.Token), so that subject is the token's.
// With a TokenFunc the token, and with it the subject, may change between
// the hello and the push, so "" (the replica whole).
func (c *Client) pushPrefix() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cfg.TokenFunc != nil || !c.hello {
		return ""
	}
	return proto.ReplicaPrefix(c.info.Subject)
}

// changeSizer returns the size of a change's encoding in a push's change
// list (plain stamps: at least what the compact ones take).
func changeSizer() func(crdt.Change) int {
	buf := make([]byte, 0, 256)
	return func(ch crdt.Change) int {
		buf = crdt.AppendChange(buf[:0], ch)
		return len(buf)
	}
}

// sealedSizer returns the size of a sealed record's encoding in a
// restore's record list, [record, seal]: its record, its seal, and 4
// bytes of heads (the pair's, and the seal's up to 64 KiB), as the JS
// client counts it.
func sealedSizer() func(proto.SealedRecord) int {
	buf := make([]byte, 0, 256)
	return func(sr proto.SealedRecord) int {
		buf = crdt.AppendRecord(buf[:0], sr.Record)
		return len(buf) + len(sr.Seal) + 4
	}
}

// pushBatch pushes changes as one batch, split as splitRefused says: a
// change at fault is refused alone, and other refusals of the whole batch
// (forbidden, unauthenticated...) are returned, the changes staying the
// caller's.
func (c *Client) pushBatch(ctx context.Context, changes []crdt.Change) ([]Result, error) {
	return splitRefused(ctx, c, "push", changes,
		func(changes []crdt.Change) ([]Result, error) {
			results, requestID, err := c.sendPush(ctx, changes)
			if err != nil {
				return nil, err
			}
			out := make([]Result, len(results))
			for i, r := range results {
				out[i] = resultOf(r, requestID)
			}
			return out, nil
		},
		c.pushNothing,
		func(ch crdt.Change) []any { return []any{"collection", ch.Collection, "record", ch.Record.ID} })
}

// splitRefused sends items as one request (a push's changes, a restore's
// records) with send, which returns one result per item. A request the
// server refuses whole as too_large or malformed is the fault of its
// items (too many, too big, or one it cannot read): it is halved, again
// and again, down to the item at fault, which alone is refused with that
// code (logged as a warning, naming it by attrs), so the others go on
// (docs/protocol.md, sections 5 and 8). A request whose answer is over
// the client's bound (ErrAnswerTooLarge) is halved too, as its answer
// holds one result per item, but nothing is refused for it: the error of
// a single item's is returned (the server may have taken the item, which
// is idempotent to send again). An item refused alone as
// malformed is its own fault only when the server reads a request of no
// items (empty sends one): when it refuses that malformed too, the fault
// is not the item's, and the error is returned; when it reads it, the
// item goes once more (the server may have just been mended) before it
// is taken as at fault. Other refusals of a whole request (forbidden,
// unauthenticated...) are not the items' fault: they are returned. On
// error, the results are those of a prefix of items. It is the one place
// where the Go client splits a request the server refused whole: Push and
// Restore (and the Replica's flushes and heals through them) rely on it.
func splitRefused[T any](ctx context.Context, c *Client, what string, items []T,
	send func([]T) ([]Result, error), empty func(context.Context) error, attrs func(T) []any,
) ([]Result, error) {
	results, err := send(items)
	e, ok := itemsAtFault(err)
	if !ok && !errors.Is(err, ErrAnswerTooLarge) {
		return results, err
	}
	if len(items) > 1 {
		c.log.Debug(what+" refused whole or answered over the bound; splitting it", "items", len(items), "err", err)
		half := len(items) / 2
		first, err := splitRefused(ctx, c, what, items[:half], send, empty, attrs)
		if err != nil {
			return first, err
		}
		second, err := splitRefused(ctx, c, what, items[half:], send, empty, attrs)
		return append(first, second...), err
	}
	if !ok {
		return results, err // one item's answer over the bound refuses nothing
	}
	// One item refused alone as malformed: unless the server reads no
	// request of this client at all, and then the fault is not the
	// item's, and it stays.
	if e.Code == proto.CodeMalformed {
		var ee *Error
		switch eerr := empty(ctx); {
		case errors.As(eerr, &ee) && ee.Code == proto.CodeMalformed:
			return nil, err
		case eerr != nil:
			return nil, fmt.Errorf("%s of nothing: %w", what, eerr)
		}
		// The server reads a request of no items now: it may have just
		// stopped refusing every request, so the item goes once more
		// before it is taken as at fault.
		results, err = send(items)
		if e, ok = itemsAtFault(err); !ok {
			return results, err
		}
	}
	c.log.Warn("an item refused alone as a whole "+what+"; taking it as refused", append(attrs(items[0]), "err", err)...)
	return []Result{{Status: StatusRefused, Err: e}}, nil
}

// itemsAtFault returns the refusal of a whole request that splitRefused
// takes as its items' fault: too_large or malformed.
func itemsAtFault(err error) (*Error, bool) {
	var e *Error
	if !errors.As(err, &e) || (e.Code != proto.CodeTooLarge && e.Code != proto.CodeMalformed) {
		return nil, false
	}
	return e, true
}

// pushNothing pushes no changes, over HTTP: whether the server reads a
// push of this client at all (splitRefused).
func (c *Client) pushNothing(ctx context.Context) error {
	_, _, err := c.pushHTTP(ctx, nil, nil)
	return err
}

// resultOf turns a result of the wire into the client's.
func resultOf(r proto.PushResult, requestID string) Result {
	res := Result{Status: r.Status, Lost: r.Lost}
	if r.Status == StatusRefused {
		res.Err = &Error{Code: r.Code, Message: r.Message, RequestID: requestID}
	}
	return res
}

// checkPush reports an answer that does not fit the push it answers: a
// result count or a status this client cannot read.
func checkPush(changes int, a *proto.PushResponse) error {
	return checkResults("push", changes, a.Results)
}

// checkResults reports results that do not fit the request of n items
// (a push's changes, a restore's records) they answer: a count or a
// status this client cannot read, which takes nothing as acknowledged
// (the browser client reads both answers alike).
func checkResults(what string, n int, results []proto.PushResult) error {
	if len(results) != n {
		return fmt.Errorf("%w: %s of %d items answered with %d results", ErrProtocol, what, n, len(results))
	}
	for _, r := range results {
		if r.Status > StatusRefused {
			return fmt.Errorf("%w: %s result status %d", ErrProtocol, what, r.Status)
		}
	}
	return nil
}

// Pull returns a page of the records of collection that changed after
// cursor (nil or empty: from the beginning): up to limit records (0 means
// the server's maximum). The cursor is the Next of an earlier page of the
// same collection, sent back unchanged. The pull carries the collection's
// scopes (SetScope), if it has any, and makes the pull the reader's lease
// (docs/design.md, "Tombstone horizons"): it names the client's replica id
// (none while unbound) and the collection's pending floor, the wall time
// of the oldest change for it in the outbox of a Replica of this client
// (none when nothing is pending). Pull retries like Push. A page whose
// answer is over Config.MaxResponseBytes is asked for again with fewer
// records (pullFitting), so the page returned may hold fewer than limit
// records although more are to come.
func (c *Client) Pull(ctx context.Context, collection string, cursor []byte, limit int) (Page, error) {
	return c.pullFitting(ctx, collection, cursor, &limit, false)
}

// pullFitting is pull, asking again from the same cursor for a
// proto.PullShrink-th of the records (down to one) while the answer is
// over Config.MaxResponseBytes; *limit, 0 for the server's max-pull, is
// left at the limit of the page that came, for the caller to keep for the
// rest of its pull (docs/protocol.md section 8). An answer of one record
// still over it is the error: no record is skipped. The Replica's pulls
// and Live's pulls over HTTP page through it.
func (c *Client) pullFitting(ctx context.Context, collection string, cursor []byte, limit *int, fresh bool) (Page, error) {
	for {
		p, err := c.pull(ctx, collection, cursor, *limit, fresh)
		if !errors.Is(err, ErrAnswerTooLarge) {
			return p, err
		}
		n := *limit
		if n == 0 {
			info, _ := c.Info()
			n = info.MaxPull
		}
		if n <= 1 {
			return p, err
		}
		*limit = max(1, n/proto.PullShrink)
		c.log.Debug("pull answer over the client's bound; asking for fewer records", "collection", collection, "limit", *limit)
	}
}

// pull is Pull; fresh, with an empty cursor, tells the server the reader
// holds no record of the collection (pull key 7), so a scoped first pass
// comes without leave entries.
func (c *Client) pull(ctx context.Context, collection string, cursor []byte, limit int, fresh bool) (Page, error) {
	if err := crdt.ValidateCollection(collection); err != nil {
		return Page{}, fmt.Errorf("pull %s: %w", collection, err)
	}
	if limit < 0 {
		return Page{}, fmt.Errorf("pull %s: limit %d is negative", collection, limit)
	}
	var a proto.PullResponse
	req := proto.PullRequest{Collection: collection, Cursor: cursor, Limit: uint64(limit), Scope: c.scopeWire(collection),
		Replica: c.Replica(), Pending: c.pendingFloor(collection), Fresh: fresh && len(cursor) == 0, Version: c.version(collection)}
	// A page without its next cursor (unless reset), a reset without its
	// reason, a cursor over proto.MaxCursorBytes or seals not one per
	// record do not decode (proto.PullResponse.UnmarshalCBOR): the answer
	// is unreadable, ErrProtocol, retried, and nothing of it is stored.
	if _, err := c.call(ctx, proto.PathPull, req, &a, nil); err != nil {
		return Page{}, fmt.Errorf("pull %s: %w", collection, err)
	}
	if a.Reset != nil {
		return Page{Next: []byte{}, Reset: resetReason(a.Reset.Reason)}, nil
	}
	c.observeRecords(a.Records)
	return Page{Records: a.Records, Next: a.Next, More: a.More, Seals: a.Seals, Leaves: a.Leaves, from: readFrom(cursor)}, nil
}

// reading follows one reading of a collection, page by page, for the
// answers of a broken server that would have it pull for ever
// (docs/protocol.md section 8): a page that says more after a cursor the
// reading asked from already (the one it was asked from, or one before
// it), and resets past proto.MaxPullResets. Either is ErrProtocol, the
// collection's failure, tried again with backoff; the pages before it
// stay applied.
type reading struct {
	asked  map[string]bool
	resets int
}

// ask notes that the reading asks from cursor.
func (rd *reading) ask(cursor []byte) {
	if rd.asked == nil {
		rd.asked = map[string]bool{}
	}
	rd.asked[string(cursor)] = true
}

// restart starts the reading again from the beginning, where a reset or
// a heal leaves it: the cursors asked from before may come again.
func (rd *reading) restart() { clear(rd.asked) }

// check reads page p of collection before it is applied. A reset starts
// the reading again from the beginning.
func (rd *reading) check(collection string, p Page) error {
	if p.Reset != "" {
		if rd.resets++; rd.resets > proto.MaxPullResets {
			return fmt.Errorf("pull %s: %w: reset again after %d resets", collection, ErrProtocol, proto.MaxPullResets)
		}
		rd.restart()
		return nil
	}
	if p.More && rd.asked[string(p.Next)] {
		return fmt.Errorf("pull %s: %w: a page says there is more after a cursor this pull asked from already", collection, ErrProtocol)
	}
	return nil
}

// addFloor adds an outbox's pending floor to those pulls and
// subscriptions report, and returns the handle that removes it
// (removeFloor).
func (c *Client) addFloor(f func(collection string) (int64, bool)) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.floors == nil {
		c.floors = map[uint64]func(collection string) (int64, bool){}
	}
	c.nextFloor++
	c.floors[c.nextFloor] = f
	return c.nextFloor
}

// removeFloor removes the pending floor addFloor returned handle for.
func (c *Client) removeFloor(handle uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.floors, handle)
}

// pendingFloor is the pending floor of collection a pull or subscription
// carries (key 6): the wall time in milliseconds of the oldest change for
// it pending in an outbox of this client, nil when none is pending. The
// server holds back the write horizon to it, so that no pending change
// becomes older than the horizon while the replica's lease holds.
func (c *Client) pendingFloor(collection string) *uint64 {
	c.mu.Lock()
	floors := make([]func(string) (int64, bool), 0, len(c.floors))
	for _, f := range c.floors {
		floors = append(floors, f)
	}
	c.mu.Unlock()
	// Called without c.mu: an outbox's lock is taken before the client's.
	var out *uint64
	for _, f := range floors {
		if w, ok := f(collection); ok {
			w := uint64(max(w, 0))
			if out == nil || w < *out {
				out = &w
			}
		}
	}
	return out
}

// resetReason is the reason a client acts on: a reason it does not know
// counts as proto.ResetHistoryLost, the safe choice.
func resetReason(reason string) string {
	if slices.Contains(proto.ResetReasons, reason) {
		return reason
	}
	return proto.ResetHistoryLost
}

// restoreRequest sends one restore of records of collection, served in
// schema version version, and returns one result per record.
func (c *Client) restoreRequest(ctx context.Context, collection string, version uint64, records []proto.SealedRecord) ([]Result, error) {
	var a proto.RestoreResponse
	ans, err := c.call(ctx, proto.PathRestore, proto.RestoreRequest{Collection: collection, Records: records, Version: version}, &a,
		func() error { return checkResults("restore", len(records), a.Results) })
	if err != nil {
		return nil, err
	}
	out := make([]Result, len(a.Results))
	for i, r := range a.Results {
		out[i] = resultOf(r, ans.requestID)
	}
	return out, nil
}

// restoreNone sends a restore of no records of collection: what the
// server answers a restore of it, but for what records would cost
// (Restore, when a request is refused whole; Replica's heal, when the
// last one was refused forbidden).
func (c *Client) restoreNone(ctx context.Context, collection string) error {
	_, err := c.restoreRequest(ctx, collection, c.version(collection), []proto.SealedRecord{})
	return err
}

// Restore gives the server back records of collection exactly as it sealed
// them (Page.Seals), after a reset that lost history, and returns one
// result per record, as Push does: duplicate or superseded when the server
// has them already, refused with proto.CodeBadSeal when a seal does not
// match (the server's seal key changed). It needs read access only.
//
// Restore cuts the records into requests as Push cuts changes
// (proto.PushRoom: at most the hello's max-push records, whose encodings
// take at most what the envelope leaves of its max-body; one record always
// goes), and splits a request the server refuses whole as too_large or
// malformed down to the record at fault, which alone is refused with that
// code, when the server reads a restore of no records (else the fault is
// not the record's, and Restore returns the error). A request whose
// answer is over Config.MaxResponseBytes is split as Push splits one.
// Other refusals of a whole request are returned. On error, the results
// returned are those of a prefix of records.
func (c *Client) Restore(ctx context.Context, collection string, records []proto.SealedRecord) ([]Result, error) {
	info, _ := c.Info()
	maxPush, room := info.MaxPush, int(proto.PushRoom(info.MaxBody))
	version := c.version(collection)
	send := func(records []proto.SealedRecord) ([]Result, error) {
		return c.restoreRequest(ctx, collection, version, records)
	}
	empty := func(ctx context.Context) error { return c.restoreNone(ctx, collection) }
	attrs := func(sr proto.SealedRecord) []any { return []any{"collection", collection, "record", sr.Record.ID} }
	out := make([]Result, 0, len(records))
	size := sealedSizer()
	for len(records) > 0 {
		n := proto.BatchLen(records, maxPush, room, size)
		rs, err := splitRefused(ctx, c, "restore", records[:n], send, empty, attrs)
		out = append(out, rs...)
		if err != nil {
			return out, fmt.Errorf("restore %s: %w", collection, err)
		}
		records = records[n:]
	}
	return out, nil
}

// refusedKey is the context key of RefusedToken.
type refusedKey struct{}

// RefusedToken reports, inside a Config.TokenFunc, the token the server
// refused as expired (token_expired), while the TokenFunc has returned no
// other since: the client is asking for a fresh one, and a TokenFunc that
// caches its token must fetch a new one rather than return that one
// again, whatever its own reading of its expiry says (its clock, or the
// server's, is off; the token was cut short). It reports false on other
// calls, when the cached token may be returned as it is.
func RefusedToken(ctx context.Context) (string, bool) {
	t, ok := ctx.Value(refusedKey{}).(string)
	return t, ok
}

// token returns the token to send, "" for none. A token over
// proto.MaxTokenBytes, which no server reads, fails unauthenticated.
func (c *Client) token(ctx context.Context) (string, error) {
	t, err := c.tokenOf(ctx)
	if err == nil && len(t) > proto.MaxTokenBytes {
		return "", &Error{Code: proto.CodeUnauthenticated, Message: fmt.Sprintf("the token is %d bytes, over the %d a server reads: not sent", len(t), proto.MaxTokenBytes)}
	}
	return t, err
}

// tokenOf returns Config.Token, or the TokenFunc's token.
func (c *Client) tokenOf(ctx context.Context) (string, error) {
	if c.cfg.TokenFunc == nil {
		return c.cfg.Token, nil
	}
	c.mu.Lock()
	expired := c.expired
	c.mu.Unlock()
	tctx := ctx
	if expired != "" {
		tctx = context.WithValue(ctx, refusedKey{}, expired)
	}
	t, err := c.cfg.TokenFunc(tctx)
	if err != nil {
		return "", fmt.Errorf("token: %w", err)
	}
	if expired != "" && t != expired {
		c.mu.Lock()
		if c.expired == expired {
			c.expired = ""
		}
		c.mu.Unlock()
	}
	c.noteToken(t)
	c.bindToToken(t)
	return t, nil
}

// noteExpired records that the server refused tok as expired, for the
// TokenFunc's next calls (RefusedToken).
func (c *Client) noteExpired(tok string) {
	if tok == "" || c.cfg.TokenFunc == nil {
		return
	}
	c.mu.Lock()
	c.expired = tok
	c.mu.Unlock()
}

// noteToken records t as the last token the TokenFunc returned, and wakes
// those waiting on tokenChanged when it is a new one: a live session
// reads again with it the collections refused to its own token.
func (c *Client) noteToken(t string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t == c.lastToken {
		return
	}
	c.lastToken = t
	if c.tokenNew != nil {
		close(c.tokenNew)
		c.tokenNew = nil
	}
}

// tokenChanged returns a channel closed when the TokenFunc next returns
// another token than the last, and that last token.
func (c *Client) tokenChanged() (<-chan struct{}, string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.tokenNew == nil {
		c.tokenNew = make(chan struct{})
	}
	return c.tokenNew, c.lastToken
}

// answer is what call learnt besides the decoded body.
type answer struct {
	// sent is when the successful attempt was sent.
	sent time.Time
	// requestID is the answer's Convergo-Request-Id.
	requestID string
}

// call posts req to path and decodes the answer into ans, retrying
// retryable failures with backoff. check, when set, reads the decoded
// answer; its error (wrapping ErrProtocol) is retried like an unreadable
// answer.
func (c *Client) call(ctx context.Context, path string, req, ans any, check func() error) (answer, error) {
	body, err := proto.Encode(req)
	if err != nil {
		return answer{}, fmt.Errorf("%s: %w", path, err)
	}
	refreshed := false
	for attempt := 0; ; attempt++ {
		a := answer{sent: c.cfg.Now()}
		var tok string
		tok, a.requestID, err = c.post(ctx, path, body, ans)
		if err == nil && check != nil {
			err = check()
		}
		if err == nil {
			return a, nil
		}
		if ctx.Err() != nil {
			return a, fmt.Errorf("%s: %w", path, ctx.Err())
		}
		var e *Error
		isErr := errors.As(err, &e)
		if isErr && e.Code == proto.CodeTokenExpired {
			c.noteExpired(tok)
		}
		if isErr && c.cfg.TokenFunc != nil && !refreshed && c.replaced(ctx, e.Code, tok) {
			refreshed = true // the token func had its chance to refresh
			continue
		}
		if !retryable(err) || attempt+1 >= c.backoff.MaxAttempts {
			return a, err
		}
		var floor time.Duration
		if isErr {
			floor = e.RetryAfter
		}
		d := c.backoff.delay(attempt, floor)
		c.log.Debug("retrying", "path", path, "attempt", attempt+1, "delay", d, "err", err)
		if serr := sleep(ctx, d); serr != nil {
			return a, fmt.Errorf("%s: %w (last error: %v)", path, serr, err)
		}
	}
}

// retryable reports whether sending the same request again may succeed:
// the code says so, or the network failed (refused, reset, timed out, cut
// short), or the answer was unreadable (ErrProtocol), which the protocol
// counts as a network failure; except an answer over the client's bound
// (ErrAnswerTooLarge), which the same request would get again.
func retryable(err error) bool {
	var e *Error
	switch {
	case errors.As(err, &e):
		return e.Retryable()
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded), errors.Is(err, ErrAnswerTooLarge):
		return false
	}
	return true
}

// replaced reports whether a request refused with code, sent with token
// tok, goes again at once with the token the TokenFunc gives now: an
// expired token, which the TokenFunc may refresh, or a refusal the token
// decides (proto.CodeInfo.Token) of a token it has replaced since, which
// says nothing of the new one.
func (c *Client) replaced(ctx context.Context, code, tok string) bool {
	return code == proto.CodeTokenExpired || c.staleToken(ctx, code, tok)
}

// post sends one request and decodes a 200 answer into ans. It returns the
// token it was sent with and the answer's request id.
func (c *Client) post(ctx context.Context, path string, body []byte, ans any) (tok, id string, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+path, bytes.NewReader(body))
	if err != nil {
		return "", "", fmt.Errorf("%s: %w", path, err)
	}
	req.Header.Set("Content-Type", proto.ContentType)
	req.Header.Set("Accept", proto.ContentType)
	req.Header.Set(proto.HeaderProtocol, strconv.Itoa(proto.Version))
	tok, err = c.token(ctx)
	if err != nil {
		return "", "", fmt.Errorf("%s: %w", path, err)
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return tok, "", fmt.Errorf("%s: %w", path, err)
	}
	defer resp.Body.Close()
	id = resp.Header.Get(proto.HeaderRequestID)
	data, err := io.ReadAll(io.LimitReader(resp.Body, c.cfg.MaxResponseBytes+1))
	if err != nil {
		return tok, id, fmt.Errorf("%s: read answer: %w", path, err)
	}
	if int64(len(data)) > c.cfg.MaxResponseBytes {
		return tok, id, fmt.Errorf("%w: %s answer over %d bytes", ErrAnswerTooLarge, path, c.cfg.MaxResponseBytes)
	}
	if resp.StatusCode != http.StatusOK {
		return tok, id, errorFromResponse(resp, data)
	}
	if err := proto.Decode(data, ans); err != nil {
		return tok, id, fmt.Errorf("%w: %s answer: %v", ErrProtocol, path, err)
	}
	return tok, id, nil
}

// errorFromResponse reads an error answer: an *Error with the code,
// message and request id from the body when it has the protocol's shape
// and a code this client knows, else with the Convergo-Error header's
// known code or, failing that, the one code of the status
// (proto.CodeOfStatus). An answer with none of them (a proxy's page, a
// code of a later server) is one the client cannot read: ErrProtocol, a
// network failure retried with backoff, as the browser client reads it
// (docs/protocol.md section 5).
func errorFromResponse(resp *http.Response, body []byte) error {
	e := &Error{
		Status:     resp.StatusCode,
		RequestID:  resp.Header.Get(proto.HeaderRequestID),
		RetryAfter: parseRetryAfter(resp.Header.Get(proto.HeaderRetryAfter), time.Now()),
	}
	var b proto.ErrorBody
	if err := proto.Decode(body, &b); err == nil && known(b.Code) {
		e.Code, e.Message = b.Code, b.Message
		if b.RequestID != "" {
			e.RequestID = b.RequestID
		}
		return e
	}
	if code := resp.Header.Get(proto.HeaderError); known(code) {
		e.Code = code
	} else {
		e.Code = proto.CodeOfStatus(resp.StatusCode)
	}
	if len(body) > 0 && len(body) < 512 && !bytes.ContainsFunc(body, func(r rune) bool { return r < ' ' && r != '\n' }) {
		e.Message = strings.TrimSpace(string(body))
	}
	if e.Code == "" {
		msg := ""
		if e.Message != "" {
			msg = ": " + e.Message
		}
		return fmt.Errorf("%w: %d answer without a protocol code%s", ErrProtocol, e.Status, msg)
	}
	return e
}

// known reports whether code is one of the protocol's (proto.Codes).
func known(code string) bool {
	_, ok := proto.Info(code)
	return ok
}

// parseRetryAfter reads a Retry-After header: delay seconds or an HTTP
// date, at most proto.MaxRetryAfter. Nonsense gives 0.
func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	// Digits past any integer are a delay all the same, the longest.
	if s, err := strconv.ParseUint(v, 10, 64); err == nil || errors.Is(err, strconv.ErrRange) {
		return time.Duration(min(s, uint64(proto.MaxRetryAfter/time.Second))) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return min(t.Sub(now), proto.MaxRetryAfter)
	}
	return 0
}
