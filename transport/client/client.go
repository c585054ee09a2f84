package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/convergo/convergo/crdt"
)

// Defaults.
const (
	// DefaultMaxResponseBytes bounds a response body or WebSocket message
	// the client reads.
	DefaultMaxResponseBytes = 64 << 20
	// DefaultPingInterval is how often Live pings the server.
	DefaultPingInterval = 15 * time.Second
	// DefaultHandshakeTimeout bounds a WebSocket dial plus hello/welcome.
	DefaultHandshakeTimeout = 10 * time.Second

	// Fallback limits until Hello has told the server's.
	defaultMaxPush = 1000
	defaultMaxBody = 4 << 20
)

// Config configures a Client.
type Config struct {
	// URL is the server's base URL, such as "https://sync.example.com".
	// Required; the protocol's paths (/v1/...) are appended to it.
	URL string
	// Token is a fixed bearer token. Empty with a nil TokenFunc means
	// anonymous requests (the demo collection only).
	Token string
	// TokenFunc, when set, is called before every request and WebSocket
	// connection for the token to send, and again after the server says
	// token_expired; it should cache its token and refresh it when it
	// nears expiry. It takes precedence over Token.
	TokenFunc func(ctx context.Context) (string, error)
	// Replica is this client's replica id: the tie-break of every stamp it
	// issues. Required; see crdt.ValidateReplica. Two clients must never
	// share one.
	Replica string
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
	// Zero means crdt.DefaultMaxDrift.
	MaxDrift time.Duration
	// MaxResponseBytes bounds a response body or WebSocket message. Zero
	// means DefaultMaxResponseBytes.
	MaxResponseBytes int64
	// PingInterval is how often Live sends a ping; a connection that
	// receives nothing for two intervals is dropped and redialled. Zero
	// means DefaultPingInterval.
	PingInterval time.Duration
	// HandshakeTimeout bounds a WebSocket dial and its hello. Zero means
	// DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
}

// ServerInfo is what the server said in its hello answer.
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
	// MaxDrift is how far ahead of the server's clock a stamp may be.
	MaxDrift time.Duration
	// Subject is the authenticated subject, "" when anonymous.
	Subject string
	// Offset is the measured skew: server time minus local time.
	Offset time.Duration
}

// Status is the outcome of one pushed change.
type Status int

const (
	// StatusApplied means the change altered its record on the server.
	StatusApplied Status = iota + 1
	// StatusNoop means the server already had everything the change says.
	StatusNoop
	// StatusRefused means the server will never apply the change;
	// Result.Err says why.
	StatusRefused
)

func (s Status) String() string {
	switch s {
	case StatusApplied:
		return "applied"
	case StatusNoop:
		return "noop"
	case StatusRefused:
		return "refused"
	}
	return "Status(" + strconv.Itoa(int(s)) + ")"
}

// Result is the server's answer for one pushed change.
type Result struct {
	Status Status
	// Seq is the record's sequence number after the change (not for a
	// refused change).
	Seq uint64
	// Err is the reason of a refusal: an *Error with the code
	// clock_drift, invalid, forbidden or too_large.
	Err error
}

// Acknowledged reports whether the server holds the change durably
// (applied now or before), so it can leave the outbox.
func (r Result) Acknowledged() bool { return r.Status == StatusApplied || r.Status == StatusNoop }

// Entry is a record at a sequence number of a collection's change log.
type Entry struct {
	Seq    uint64
	Record crdt.Record
}

// Page is one page of a pull.
type Page struct {
	Entries []Entry
	// Next is the cursor for the next pull.
	Next uint64
	// More says to pull again.
	More bool
}

// Client speaks the Convergo protocol to one server. It is safe for
// concurrent use.
type Client struct {
	base    string
	http    *http.Client
	log     *slog.Logger
	backoff Backoff
	cfg     Config

	mu     sync.Mutex // guards the fields below
	clock  *crdt.Clock
	offset time.Duration
	info   ServerInfo
	hello  bool
}

// New returns a client for cfg. It does no I/O; call Hello to correct the
// clock and learn the server's limits.
func New(cfg Config) (*Client, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("client: Config.URL %q is not an http(s) URL", cfg.URL)
	}
	clock, err := crdt.NewClock(crdt.ClockConfig{Replica: cfg.Replica, MaxDrift: cfg.MaxDrift})
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
		cfg.PingInterval = DefaultPingInterval
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = DefaultHandshakeTimeout
	}
	return &Client{
		base:    strings.TrimSuffix(u.String(), "/"),
		http:    cfg.HTTPClient,
		log:     cfg.Logger.With("component", "client", "replica", cfg.Replica),
		backoff: cfg.Backoff.withDefaults(),
		cfg:     cfg,
		clock:   clock,
		info:    ServerInfo{MaxPush: defaultMaxPush, MaxBody: defaultMaxBody},
	}, nil
}

// Replica returns the client's replica id.
func (c *Client) Replica() string { return c.cfg.Replica }

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

func (c *Client) observeEntries(entries []Entry) {
	for _, e := range entries {
		if err := c.Observe(e.Record.MaxStamp()); err != nil {
			c.log.Warn("not adopting a record's stamp", "record", e.Record.ID, "err", err)
		}
	}
}

// setInfo records a hello answer. sent and received bracket the request;
// the server's time is taken to be read half way through.
func (c *Client) setInfo(a helloAnswer, sent, received time.Time) ServerInfo {
	rtt := received.Sub(sent)
	serverAtReceive := time.UnixMilli(a.ServerTime).Add(rtt / 2)
	info := ServerInfo{
		Protocol:      int(a.Protocol),
		ServerTime:    time.UnixMilli(a.ServerTime),
		ServerReplica: a.ServerReplica,
		MaxPush:       a.MaxPush,
		MaxPull:       a.MaxPull,
		MaxBody:       a.MaxBody,
		MaxDrift:      time.Duration(a.MaxDrift) * time.Millisecond,
		Subject:       a.Subject,
		Offset:        serverAtReceive.Sub(received).Round(time.Millisecond),
	}
	if info.MaxPush <= 0 {
		info.MaxPush = defaultMaxPush
	}
	if info.MaxBody <= 0 {
		info.MaxBody = defaultMaxBody
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.info, c.offset, c.hello = info, info.Offset, true
	return info
}

// Hello greets the server: it learns the server's limits and measures the
// clock skew, which corrects the wall time of every later stamp.
func (c *Client) Hello(ctx context.Context) (ServerInfo, error) {
	var a helloAnswer
	sent, err := c.call(ctx, "/v1/hello", helloRequest{Protocol: ProtocolVersion, Replica: c.cfg.Replica}, &a)
	if err != nil {
		return ServerInfo{}, err
	}
	return c.setInfo(a, sent, c.cfg.Now()), nil
}

// Push sends changes and returns one result per change, in order. Changes
// go in batches within the server's limits; a batch is retried with backoff
// while the server is unavailable, rate limits or cannot be reached, which
// is safe because applying a change twice is a no-op.
//
// A batch the server refuses whole as too large or malformed is split in
// halves until the offending change stands alone; that change is then
// reported refused, so one bad change cannot stall the rest.
//
// On error, the results returned are those of the changes acknowledged
// before the failure: a prefix of changes. The others may or may not have
// been applied; push them again.
func (c *Client) Push(ctx context.Context, changes []crdt.Change) ([]Result, error) {
	c.mu.Lock()
	maxPush, maxBody := c.info.MaxPush, int(c.info.MaxBody)
	c.mu.Unlock()
	results := make([]Result, 0, len(changes))
	for len(changes) > 0 {
		n := batchLen(changes, maxPush, maxBody-1024)
		rs, err := c.pushBatch(ctx, changes[:n])
		results = append(results, rs...)
		if err != nil {
			return results, err
		}
		changes = changes[n:]
	}
	return results, nil
}

// batchLen is how many of changes fit in one push of at most maxN changes
// and about maxBytes bytes; at least one.
func batchLen(changes []crdt.Change, maxN, maxBytes int) int {
	size, buf := 0, make([]byte, 0, 256)
	for i, ch := range changes {
		buf = crdt.AppendChange(buf[:0], ch)
		size += len(buf)
		if i > 0 && (i >= maxN || size > maxBytes) {
			return i
		}
	}
	return min(len(changes), max(maxN, 1))
}

func (c *Client) pushBatch(ctx context.Context, changes []crdt.Change) ([]Result, error) {
	var a pushAnswer
	_, err := c.call(ctx, "/v1/push", pushRequest{Replica: c.cfg.Replica, Changes: changes}, &a)
	var e *Error
	if errors.As(err, &e) && (e.Code == CodeTooLarge || e.Code == CodeMalformed || e.Code == CodeInvalid) {
		if len(changes) == 1 {
			return []Result{{Status: StatusRefused, Err: e}}, nil
		}
		half := len(changes) / 2
		first, err := c.pushBatch(ctx, changes[:half])
		if err != nil {
			return first, err
		}
		second, err := c.pushBatch(ctx, changes[half:])
		return append(first, second...), err
	}
	if err != nil {
		return nil, err
	}
	if len(a.Results) != len(changes) {
		return nil, fmt.Errorf("%w: push of %d changes answered with %d results", ErrProtocol, len(changes), len(a.Results))
	}
	out := make([]Result, len(a.Results))
	for i, r := range a.Results {
		switch r.Status {
		case 0:
			out[i] = Result{Status: StatusApplied, Seq: r.Seq}
		case 1:
			out[i] = Result{Status: StatusNoop, Seq: r.Seq}
		case 2:
			out[i] = Result{Status: StatusRefused, Err: &Error{Code: r.Code, Message: r.Message}}
		default:
			return nil, fmt.Errorf("%w: push result status %d", ErrProtocol, r.Status)
		}
	}
	return out, nil
}

// Pull returns a page of collection's change log after cursor: up to limit
// records (0 means the server's maximum). It retries like Push.
func (c *Client) Pull(ctx context.Context, collection string, cursor uint64, limit int) (Page, error) {
	if err := crdt.ValidateCollection(collection); err != nil {
		return Page{}, fmt.Errorf("pull %s: %w", collection, err)
	}
	var a pullAnswer
	if _, err := c.call(ctx, "/v1/pull", pullRequest{Collection: collection, Cursor: cursor, Limit: limit}, &a); err != nil {
		return Page{}, fmt.Errorf("pull %s after %d: %w", collection, cursor, err)
	}
	p := Page{Entries: entriesFromWire(a.Entries), Next: a.Next, More: a.More}
	c.observeEntries(p.Entries)
	return p, nil
}

// token returns the token to send, "" for none.
func (c *Client) token(ctx context.Context) (string, error) {
	if c.cfg.TokenFunc != nil {
		t, err := c.cfg.TokenFunc(ctx)
		if err != nil {
			return "", fmt.Errorf("token: %w", err)
		}
		return t, nil
	}
	return c.cfg.Token, nil
}

// call posts req to path and decodes the answer into answer, retrying
// retryable failures with backoff. It returns when the successful attempt
// was sent.
func (c *Client) call(ctx context.Context, path string, req, answer any) (sent time.Time, err error) {
	body, err := crdt.Marshal(req)
	if err != nil {
		return sent, fmt.Errorf("%s: %w", path, err)
	}
	refreshed := false
	for attempt := 0; ; attempt++ {
		sent = c.cfg.Now()
		err = c.post(ctx, path, body, answer)
		if err == nil {
			return sent, nil
		}
		if ctx.Err() != nil {
			return sent, fmt.Errorf("%s: %w", path, ctx.Err())
		}
		var e *Error
		isErr := errors.As(err, &e)
		if isErr && e.Code == CodeTokenExpired && c.cfg.TokenFunc != nil && !refreshed {
			refreshed = true // the token func had its chance to refresh
			continue
		}
		if !retryable(err) || attempt+1 >= c.backoff.MaxAttempts {
			return sent, err
		}
		var floor time.Duration
		if isErr {
			floor = e.RetryAfter
		}
		d := c.backoff.delay(attempt, floor)
		c.log.Debug("retrying", "path", path, "attempt", attempt+1, "delay", d, "err", err)
		if serr := sleep(ctx, d); serr != nil {
			return sent, fmt.Errorf("%s: %w (last error: %v)", path, serr, err)
		}
	}
}

// retryable reports whether sending the same request again may succeed.
func retryable(err error) bool {
	var e *Error
	switch {
	case errors.As(err, &e):
		return e.Retryable()
	case errors.Is(err, ErrProtocol), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return false
	}
	return true // the network: refused, reset, timed out, cut short
}

func (c *Client) post(ctx context.Context, path string, body []byte, answer any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+path, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("Accept", contentType)
	req.Header.Set(headerProtocol, strconv.Itoa(ProtocolVersion))
	tok, err := c.token(ctx)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, c.cfg.MaxResponseBytes+1))
	if err != nil {
		return fmt.Errorf("%s: read answer: %w", path, err)
	}
	if int64(len(data)) > c.cfg.MaxResponseBytes {
		return fmt.Errorf("%w: %s answer over %d bytes", ErrProtocol, path, c.cfg.MaxResponseBytes)
	}
	if resp.StatusCode != http.StatusOK {
		return errorFromResponse(resp, data)
	}
	if err := crdt.Unmarshal(data, answer); err != nil {
		return fmt.Errorf("%w: %s answer: %v", ErrProtocol, path, err)
	}
	return nil
}

// errorFromResponse reads an error answer: the code and message from the
// body when it has the protocol's shape, else from the Convergo-Error
// header, else from the status alone (a proxy's answer, say).
func errorFromResponse(resp *http.Response, body []byte) *Error {
	e := &Error{Status: resp.StatusCode, RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())}
	var b errorBody
	if err := crdt.Unmarshal(body, &b); err == nil && b.Code != "" {
		e.Code, e.Message = b.Code, b.Message
		return e
	}
	if code := resp.Header.Get(headerError); code != "" {
		e.Code = code
	} else {
		e.Code = codeForStatus(resp.StatusCode)
	}
	if len(body) > 0 && len(body) < 512 && !bytes.ContainsFunc(body, func(r rune) bool { return r < ' ' && r != '\n' }) {
		e.Message = strings.TrimSpace(string(body))
	}
	return e
}

// parseRetryAfter reads a Retry-After header: delay seconds or an HTTP
// date. Nonsense gives 0.
func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil {
		if s < 0 {
			return 0
		}
		return time.Duration(min(s, 3600)) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return min(t.Sub(now), time.Hour)
	}
	return 0
}
