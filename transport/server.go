package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/engine"
	"github.com/convergo/convergo/stores"
)

// Default live-session timings (docs/protocol.md).
const (
	DefaultPingInterval = 20 * time.Second
	DefaultIdleTimeout  = 60 * time.Second
	DefaultWriteTimeout = 10 * time.Second
	DefaultHelloTimeout = 10 * time.Second
)

// Config configures a Server.
type Config struct {
	// Engine serves the changes. Required; the server does not close it.
	Engine *engine.Engine
	// Authorizer authenticates tokens. Nil refuses every token, which
	// leaves only anonymous demo access (with Demo).
	Authorizer Authorizer
	// Limits bound each client; zero fields take the defaults.
	Limits Limits
	// AllowedOrigins are the browser origins, besides the server's own,
	// allowed to call the API: host patterns ("app.example.com",
	// "*.example.com") or scheme://host patterns, matched with path.Match.
	AllowedOrigins []string
	// Demo lets clients without a token read and write DemoCollection.
	Demo bool
	// Logger receives the server's logs. Nil discards them.
	Logger *slog.Logger
	// Metrics is where the server registers its collectors. Nil means a
	// registry of the server's own, with the Go and process collectors. The
	// server serves /metrics when it is also a prometheus.Gatherer.
	Metrics prometheus.Registerer
	// Now reads the clock. Nil means time.Now.
	Now func() time.Time
	// TrustedProxies are the networks of the load balancers or proxies in
	// front of the server. A request whose peer is in one of them is
	// attributed, for the per-client limits, to the rightmost address of
	// its X-Forwarded-For header that is not a trusted proxy. Empty means
	// the header is ignored: a client could set it to anything.
	TrustedProxies []netip.Prefix
	// PingInterval, IdleTimeout and WriteTimeout time live sessions: a ping
	// every PingInterval, closed after IdleTimeout without hearing from the
	// client, a write that takes longer than WriteTimeout closes the
	// connection. Zero means the Default* constants.
	PingInterval, IdleTimeout, WriteTimeout time.Duration
	// HelloTimeout is how long a new WebSocket may take to say hello.
	// Zero means DefaultHelloTimeout.
	HelloTimeout time.Duration
}

// Server is the Convergo sync server: an http.Handler serving the protocol
// of docs/protocol.md plus /healthz, /readyz and /metrics. Create it with
// New; stop live sessions with Shutdown.
type Server struct {
	eng     *engine.Engine
	auth    Authorizer
	limits  Limits
	origins []string
	demo    bool
	log     *slog.Logger
	now     func() time.Time
	timing  struct{ ping, idle, write, hello time.Duration }
	metrics *metrics
	mux     *http.ServeMux
	rate    *rateLimiter
	conns   *connCounter
	proxies []netip.Prefix
	pages   *pageGroup

	mu      sync.Mutex
	closing bool
	live    map[*liveConn]struct{}
	wg      sync.WaitGroup // live connection handlers
}

// New builds a server.
func New(cfg Config) (*Server, error) {
	if cfg.Engine == nil {
		return nil, errors.New("transport: Config.Engine is required")
	}
	limits := cfg.Limits.WithDefaults()
	if err := limits.Validate(); err != nil {
		return nil, fmt.Errorf("transport: %w", err)
	}
	for _, o := range cfg.AllowedOrigins {
		if _, err := path.Match(strings.ToLower(o), ""); err != nil {
			return nil, fmt.Errorf("transport: origin pattern %q: %w", o, err)
		}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Authorizer == nil {
		cfg.Authorizer = refuseAll{}
	}
	var gatherer prometheus.Gatherer
	if cfg.Metrics == nil {
		reg := prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		cfg.Metrics, gatherer = reg, reg
	} else if g, ok := cfg.Metrics.(prometheus.Gatherer); ok {
		gatherer = g
	}
	m, err := newMetrics(cfg.Metrics)
	if err != nil {
		return nil, fmt.Errorf("transport: %w", err)
	}
	s := &Server{
		eng:     cfg.Engine,
		auth:    cfg.Authorizer,
		limits:  limits,
		origins: cfg.AllowedOrigins,
		demo:    cfg.Demo,
		log:     cfg.Logger.With("component", "transport"),
		now:     cfg.Now,
		metrics: m,
		mux:     http.NewServeMux(),
		rate:    newRateLimiter(limits.Rate, limits.Burst),
		conns:   &connCounter{max: limits.MaxConnsPerAddr, n: map[string]int{}},
		live:    map[*liveConn]struct{}{},
		proxies: cfg.TrustedProxies,
		pages:   newPageGroup(),
	}
	s.timing.ping = orDefault(cfg.PingInterval, DefaultPingInterval)
	s.timing.idle = orDefault(cfg.IdleTimeout, DefaultIdleTimeout)
	s.timing.write = orDefault(cfg.WriteTimeout, DefaultWriteTimeout)
	s.timing.hello = orDefault(cfg.HelloTimeout, DefaultHelloTimeout)
	if s.demo {
		s.log.Warn("anonymous demo access is on: clients without a token may read and write "+DemoCollection, "collection", DemoCollection)
	}
	s.mux.Handle(PathHello, s.api("hello", s.hello))
	s.mux.Handle(PathPush, s.api("push", s.push))
	s.mux.Handle(PathPull, s.api("pull", s.pull))
	s.mux.HandleFunc(PathLive, s.serveLive)
	s.mux.HandleFunc("/healthz", s.healthz)
	s.mux.HandleFunc("/readyz", s.readyz)
	if gatherer != nil {
		s.mux.Handle("/metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelError)}))
	}
	s.mux.HandleFunc("/v1/", func(w http.ResponseWriter, r *http.Request) {
		s.writeError(w, r, Errorf(CodeNotFound, "no endpoint %s", r.URL.Path))
	})
	return s, nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// Handle adds a handler for a pattern outside the protocol (the demo app,
// the JS library), on the server's mux.
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// ServeHTTP serves the protocol.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// Shutdown refuses new live sessions, closes the open ones with status 1001
// (going away) and waits for them to end or for ctx. HTTP requests are
// drained by http.Server.Shutdown, which does not see WebSockets: call
// both.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	conns := make([]*liveConn, 0, len(s.live))
	for c := range s.live {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.goAway()
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		for _, c := range conns {
			c.closeNow()
		}
		return fmt.Errorf("transport: shutdown: %w", ctx.Err())
	}
}

type refuseAll struct{}

func (refuseAll) Authenticate(context.Context, string) (Principal, error) {
	return Principal{}, fmt.Errorf("%w: the server accepts no tokens", ErrUnauthenticated)
}

// handlerFunc is an API endpoint: it gets the decoded, authorized request
// and returns the answer to encode or an error.
type handlerFunc func(ctx context.Context, p Principal, body []byte) (any, error)

// api wraps an endpoint with what every API request goes through, in order:
// origin, method, protocol version, authentication, rate limit, body size.
func (s *Server) api(route string, h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := s.now()
		sw := &statusWriter{ResponseWriter: w}
		defer func() {
			took := s.now().Sub(start)
			s.metrics.requests.WithLabelValues(route, strconv.Itoa(sw.code())).Inc()
			s.metrics.duration.WithLabelValues(route).Observe(took.Seconds())
			s.log.Debug("request", "route", route, "status", sw.code(), "code", sw.Header().Get(HeaderError),
				"addr", s.clientAddr(r), "took", took)
		}()
		if err := s.serveAPI(sw, r, h); err != nil {
			s.writeError(sw, r, err)
		}
	})
}

func (s *Server) serveAPI(w http.ResponseWriter, r *http.Request, h handlerFunc) error {
	rc := http.NewResponseController(w)
	deadline := time.Now().Add(s.limits.RequestTimeout) // socket deadlines: the real clock
	_ = rc.SetReadDeadline(deadline)
	_ = rc.SetWriteDeadline(deadline)
	if err := s.checkOrigin(w, r); err != nil {
		return err
	}
	if r.Method == http.MethodOptions {
		w.WriteHeader(http.StatusNoContent) // CORS preflight, answered by checkOrigin's headers
		return nil
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST, OPTIONS")
		return &Error{Status: http.StatusMethodNotAllowed, Code: CodeNotFound, Message: r.Method + " " + r.URL.Path + ": use POST"}
	}
	if v := r.Header.Get(HeaderProtocol); v != strconv.Itoa(ProtocolVersion) {
		return Errorf(CodeUnsupportedVersion, "protocol version %q: this server speaks %d (header %s)", v, ProtocolVersion, HeaderProtocol)
	}
	p, authErr := s.authenticate(r.Context(), bearer(r))
	key := "addr:" + s.clientAddr(r)
	if authErr == nil && p.Subject != "" {
		key = "sub:" + p.Subject
	}
	if wait := s.rate.take(key, s.now()); wait > 0 {
		return &Error{Status: http.StatusTooManyRequests, Code: CodeRateLimited, Message: "too many requests", RetryAfter: wait}
	}
	if authErr != nil {
		return authErr
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.limits.MaxBodyBytes))
	_ = rc.SetWriteDeadline(time.Now().Add(s.limits.RequestTimeout)) // the answer gets its own time
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return Errorf(CodeTooLarge, "request body over %d bytes", s.limits.MaxBodyBytes)
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return Errorf(CodeMalformed, "request body not received within %v", s.limits.RequestTimeout)
		}
		return Errorf(CodeMalformed, "reading the body: %v", err)
	}
	answer, err := h(r.Context(), p, body)
	if err != nil {
		return err
	}
	out, err := Encode(answer)
	if err != nil {
		return fmt.Errorf("encode answer: %w", err)
	}
	w.Header().Set("Content-Type", ContentType)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(out)
	return nil
}

func (s *Server) isClosing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

// authenticate maps a token to a principal: the Authorizer's, or the
// anonymous demo principal when there is no token and the demo is on.
func (s *Server) authenticate(ctx context.Context, token string) (Principal, error) {
	if token == "" && s.demo {
		return anonymous, nil
	}
	p, err := s.auth.Authenticate(ctx, token)
	switch {
	case err == nil:
		return p, nil
	case errors.Is(err, ErrTokenExpired):
		return Principal{}, Errorf(CodeTokenExpired, "the token has expired: refresh it")
	case errors.Is(err, ErrUnauthenticated):
		return Principal{}, Errorf(CodeUnauthenticated, "%v", err)
	}
	return Principal{}, Errorf(CodeUnavailable, "authenticating: %v", err)
}

func bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	const prefix = "bearer "
	if len(h) > len(prefix) && strings.EqualFold(h[:len(prefix)], prefix) {
		return strings.TrimSpace(h[len(prefix):])
	}
	return ""
}

// clientAddr is the address of the client: the peer's, or behind trusted
// proxies the last one they forwarded for.
func (s *Server) clientAddr(r *http.Request) string {
	peer, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		if host == "" {
			return r.RemoteAddr
		}
		return host
	}
	addr := peer.Addr().Unmap()
	if !s.trusted(addr) {
		return addr.String()
	}
	fwd := r.Header.Values("X-Forwarded-For")
	for i := len(fwd) - 1; i >= 0; i-- {
		hops := strings.Split(fwd[i], ",")
		for j := len(hops) - 1; j >= 0; j-- {
			hop, err := netip.ParseAddr(strings.TrimSpace(hops[j]))
			if err != nil {
				return addr.String() // a garbled header: count the proxy itself
			}
			hop = hop.Unmap()
			if !s.trusted(hop) {
				return hop.String()
			}
			addr = hop
		}
	}
	return addr.String()
}

func (s *Server) trusted(a netip.Addr) bool {
	for _, p := range s.proxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// checkOrigin refuses browser requests from origins that are neither the
// server's own nor allowed, and sets the CORS headers for allowed foreign
// origins.
func (s *Server) checkOrigin(w http.ResponseWriter, r *http.Request) error {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return nil // not a browser, or a same-origin GET
	}
	same, ok := s.originAllowed(r, origin)
	if !ok {
		return Errorf(CodeForbidden, "origin %q is not allowed", origin)
	}
	if !same {
		h := w.Header()
		h.Set("Access-Control-Allow-Origin", origin)
		h.Add("Vary", "Origin")
		h.Set("Access-Control-Expose-Headers", HeaderError+", "+HeaderRetryAfter)
		if r.Method == http.MethodOptions {
			h.Set("Access-Control-Allow-Methods", "POST")
			h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, Accept, "+HeaderProtocol)
			h.Set("Access-Control-Max-Age", "600")
		}
	}
	return nil
}

// originAllowed matches origin the way coder/websocket does: the request's
// own host, or an AllowedOrigins pattern on the host or on scheme://host.
func (s *Server) originAllowed(r *http.Request, origin string) (same, ok bool) {
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false, false
	}
	if strings.EqualFold(u.Host, r.Host) {
		return true, true
	}
	for _, p := range s.origins {
		target := u.Host
		if strings.Contains(p, "://") {
			target = u.Scheme + "://" + u.Host
		}
		if m, _ := path.Match(strings.ToLower(p), strings.ToLower(target)); m {
			return false, true
		}
	}
	return false, false
}

// writeError answers with err's status, the body {1: code, 2: message} and
// the Convergo-Error header. Errors that are not *Error are bugs: internal.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	var e *Error
	if !errors.As(err, &e) {
		s.log.Error("internal error", "path", r.URL.Path, "err", err)
		e = Errorf(CodeInternal, "internal error")
	} else if e.Code == CodeUnavailable {
		s.log.Warn("store unavailable", "path", r.URL.Path, "err", e.Message)
	}
	body, _ := Encode(ErrorBody{Code: e.Code, Message: e.Message})
	h := w.Header()
	h.Set("Content-Type", ContentType)
	h.Set("Cache-Control", "no-store")
	h.Set(HeaderError, e.Code)
	if e.RetryAfter > 0 {
		h.Set(HeaderRetryAfter, strconv.Itoa(int((e.RetryAfter+time.Second-1)/time.Second)))
	}
	w.WriteHeader(e.Status)
	_, _ = w.Write(body)
}

// decodeError maps a decode failure to malformed, invalid or too_large.
func decodeError(what string, err error) error {
	switch {
	case errors.Is(err, crdt.ErrTooLarge):
		return Errorf(CodeTooLarge, "%s: %v", what, err)
	case errors.Is(err, crdt.ErrInvalid):
		return Errorf(CodeInvalid, "%s: %v", what, err)
	}
	return Errorf(CodeMalformed, "%s: %v", what, err)
}

func (s *Server) helloAnswer(p Principal) HelloResponse {
	return HelloResponse{
		Protocol:      ProtocolVersion,
		ServerTime:    s.eng.ServerTime(),
		ServerReplica: s.eng.Replica(),
		MaxPush:       uint64(s.limits.MaxPushChanges),
		MaxPull:       uint64(s.limits.MaxPullRecords),
		MaxBodyBytes:  uint64(s.limits.MaxBodyBytes),
		MaxDrift:      s.eng.MaxDrift().Milliseconds(),
		Subject:       p.Subject,
	}
}

func (s *Server) hello(_ context.Context, p Principal, body []byte) (any, error) {
	var req HelloRequest
	if err := Decode(body, &req); err != nil {
		return nil, decodeError("hello", err)
	}
	if req.Protocol != ProtocolVersion {
		return nil, Errorf(CodeUnsupportedVersion, "protocol version %d: this server speaks %d", req.Protocol, ProtocolVersion)
	}
	if err := crdt.ValidateReplica(req.Replica); err != nil {
		return nil, Errorf(CodeInvalid, "hello: %v", err)
	}
	return s.helloAnswer(p), nil
}

func (s *Server) push(ctx context.Context, p Principal, body []byte) (any, error) {
	var req PushRequest
	if err := Decode(body, &req); err != nil {
		return nil, decodeError("push", err)
	}
	if err := crdt.ValidateReplica(req.Replica); err != nil {
		return nil, Errorf(CodeInvalid, "push: %v", err)
	}
	results, err := s.apply(ctx, p, req.Changes, req.Refused)
	if err != nil {
		return nil, err
	}
	return PushResponse{Results: results}, nil
}

// apply applies the changes p may write and answers one result per change.
// It returns only after the store committed every applied change.
func (s *Server) apply(ctx context.Context, p Principal, changes []crdt.Change, refused []error) ([]PushResult, error) {
	if len(changes) > s.limits.MaxPushChanges {
		return nil, Errorf(CodeTooLarge, "%d changes in one push, at most %d", len(changes), s.limits.MaxPushChanges)
	}
	results := make([]PushResult, len(changes))
	accepted := make([]crdt.Change, 0, len(changes))
	index := make([]int, 0, len(changes))
	for i, c := range changes {
		switch {
		case refused != nil && refused[i] != nil:
			results[i] = refusal(refused[i])
		case !p.CanWrite(c.Collection):
			results[i] = PushResult{Status: StatusRefused, Code: CodeForbidden, Message: "no write access to " + c.Collection}
		default:
			accepted = append(accepted, c)
			index = append(index, i)
		}
	}
	for start := 0; start < len(accepted); start += stores.MaxBatch {
		end := min(start+stores.MaxBatch, len(accepted))
		res, err := s.applyBatch(ctx, accepted[start:end])
		if err != nil {
			return nil, err
		}
		for j, r := range res {
			results[index[start+j]] = r
		}
	}
	var applied, noop, ref float64
	for _, r := range results {
		switch r.Status {
		case StatusApplied:
			applied++
		case StatusNoop:
			noop++
		default:
			ref++
		}
	}
	s.metrics.pushChanges.WithLabelValues("applied").Add(applied)
	s.metrics.pushChanges.WithLabelValues("noop").Add(noop)
	s.metrics.pushChanges.WithLabelValues("refused").Add(ref)
	return results, nil
}

// applyBatch applies one engine batch. A store that refuses the batch as
// too large or invalid does not say which change it means, so the batch is
// applied again change by change to refuse only the culprits.
func (s *Server) applyBatch(ctx context.Context, batch []crdt.Change) ([]PushResult, error) {
	res, err := s.eng.Apply(ctx, batch)
	if err != nil && len(batch) > 1 && (errors.Is(err, stores.ErrTooLarge) || errors.Is(err, stores.ErrInvalid)) {
		out := make([]PushResult, len(batch))
		for i := range batch {
			one, err := s.applyBatch(ctx, batch[i:i+1])
			if err != nil {
				return nil, err
			}
			out[i] = one[0]
		}
		return out, nil
	}
	if err != nil {
		switch {
		case errors.Is(err, stores.ErrTooLarge), errors.Is(err, stores.ErrInvalid):
			return []PushResult{refusal(err)}, nil
		case ctx.Err() != nil:
			return nil, Errorf(CodeUnavailable, "request cancelled: %v", ctx.Err())
		}
		return nil, Errorf(CodeUnavailable, "store: %v", err)
	}
	out := make([]PushResult, len(res))
	for i, r := range res {
		switch r.Status {
		case engine.StatusApplied:
			out[i] = PushResult{Status: StatusApplied, Seq: r.Seq}
		case engine.StatusNoop:
			out[i] = PushResult{Status: StatusNoop, Seq: r.Seq}
		default:
			out[i] = refusal(r.Err)
		}
	}
	return out, nil
}

// refusal maps why a change was refused to its result.
func refusal(err error) PushResult {
	code := CodeInvalid
	switch {
	case errors.Is(err, crdt.ErrClockDrift):
		code = CodeClockDrift
	case errors.Is(err, crdt.ErrTooLarge), errors.Is(err, stores.ErrTooLarge):
		code = CodeTooLarge
	}
	msg := "refused"
	if err != nil {
		msg = err.Error()
	}
	return PushResult{Status: StatusRefused, Code: code, Message: msg}
}

func (s *Server) pull(ctx context.Context, p Principal, body []byte) (any, error) {
	var req PullRequest
	if err := Decode(body, &req); err != nil {
		return nil, decodeError("pull", err)
	}
	if err := crdt.ValidateCollection(req.Collection); err != nil {
		return nil, Errorf(CodeInvalid, "pull: %v", err)
	}
	if !p.CanRead(req.Collection) {
		return nil, Errorf(CodeForbidden, "no read access to %s", req.Collection)
	}
	page, err := s.pullPage(ctx, req.Collection, req.Cursor, req.Limit)
	if err != nil {
		return nil, err
	}
	return PullResponse{Entries: page.Entries, Next: page.Next, More: page.More}, nil
}

type wirePage struct {
	Entries []Entry
	Next    uint64
	More    bool
}

func (s *Server) pullPage(ctx context.Context, coll string, cursor, limit uint64) (wirePage, error) {
	n := s.limits.MaxPullRecords
	if limit > 0 && limit < uint64(n) {
		n = int(limit)
	}
	page, err := s.eng.Pull(ctx, coll, cursor, n)
	if err != nil {
		if errors.Is(err, stores.ErrInvalid) {
			return wirePage{}, Errorf(CodeInvalid, "pull: %v", err)
		}
		return wirePage{}, Errorf(CodeUnavailable, "store: %v", err)
	}
	entries := make([]Entry, len(page.Entries))
	for i, e := range page.Entries {
		entries[i] = Entry{Seq: e.Seq, Record: e.Record}
	}
	s.metrics.pullRecords.Add(float64(len(entries)))
	return wirePage{Entries: entries, Next: page.Next, More: page.More}, nil
}

// probeCollection is the collection /readyz reads the head of, within
// readyTimeout.
const (
	probeCollection = "convergo.readyz"
	readyTimeout    = 5 * time.Second
)

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = io.WriteString(w, "ok\n")
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
	defer cancel()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if s.isClosing() {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, "shutting down\n")
		return
	}
	if _, err := s.eng.Head(ctx, probeCollection); err != nil {
		s.log.Warn("readiness probe failed", "err", err)
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, "store unavailable\n")
		return
	}
	_, _ = io.WriteString(w, "ok\n")
}

// statusWriter records the status code for metrics.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) code() int {
	if w.status == 0 {
		return http.StatusOK
	}
	return w.status
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
