package transport

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"path"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/convergo/convergo/engine"
	"github.com/convergo/convergo/transport/proto"
)

// Default live-session timings (docs/protocol.md).
const (
	DefaultPingInterval = proto.PingInterval
	DefaultIdleTimeout  = proto.IdleTimeout
	DefaultWriteTimeout = 10 * time.Second
	DefaultHelloTimeout = 10 * time.Second
	// ReadHeaderTimeout is the http.Server ReadHeaderTimeout to serve the
	// server with (docs/protocol.md, "Deadlines": request headers must
	// arrive within it).
	ReadHeaderTimeout = 10 * time.Second
)

// MaxHeaderBytes is the http.Server MaxHeaderBytes to serve the server
// with: a request's headers, its token included, take at most this many
// bytes (docs/protocol.md, section 11); net/http answers a larger one 431
// itself. It bounds a token wherever it comes from (proto.MaxTokenBytes,
// which clients hold their tokens to): a live hello's token over it is
// refused too_large before it is parsed.
const MaxHeaderBytes = proto.MaxTokenBytes

// Config configures a Server.
type Config struct {
	// Engine serves the changes. Required; the server does not close it.
	Engine *engine.Engine
	// Authorizer authenticates tokens. Nil refuses every token, which
	// leaves only anonymous demo access (with Demo).
	Authorizer Authorizer
	// Limits bound each client; zero fields take the defaults.
	Limits Limits
	// SealKey is the key of the seals on the records the server sends
	// (seal.go), at least 16 bytes, kept outside the store so that a wiped
	// store can be given back its records. Servers sharing a store must
	// share it, and it must outlive restarts for clients to restore what
	// they hold after a store is lost; `convergo serve` derives it from
	// its token secret. Empty means a random key for this process: clients
	// can then give back only what they wrote themselves.
	SealKey []byte
	// PublicOrigins are the server's own origins: where browsers load the
	// pages that call it ("https://sync.example.com", scheme://host[:port],
	// matched exactly). Pages of these origins need no CORS. The request's
	// Host header is never taken as the server's origin: a DNS-rebinding
	// page would pass that test. With Demo, loopback origins
	// (127.0.0.0/8, ::1, localhost, any port) count as the server's own too.
	PublicOrigins []string
	// AllowedOrigins are the browser origins, besides the server's own,
	// allowed to call the API: host patterns ("app.example.com",
	// "*.example.com") or scheme://host patterns, matched with path.Match
	// against the origin's host with its port when it has one
	// ("app.example.com" does not allow "http://app.example.com:5173").
	AllowedOrigins []string
	// Demo lets clients without a token read and write DemoCollection
	// and, when Authorizer is a *JWT, serves PathDemoToken, which issues
	// the demo's per-person tokens for DemoNotesCollection
	// (demo_token.go). The engine's rules should then include
	// WithDemoRules, which scopes that collection.
	Demo bool
	// Logger receives the server's logs. Nil discards them.
	Logger *slog.Logger
	// Metrics is where the server registers its collectors. Nil means a
	// registry of the server's own, with the Go and process collectors. The
	// server's MetricsHandler serves it when it is also a
	// prometheus.Gatherer.
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
	// connection, and so does a message the client begins and does not
	// finish within WriteTimeout (close 1008). Zero means the Default*
	// constants.
	PingInterval, IdleTimeout, WriteTimeout time.Duration
	// HelloTimeout is how long a new WebSocket may take to say hello.
	// Zero means DefaultHelloTimeout.
	HelloTimeout time.Duration

	// noPoll reads every live connection with a goroutine of its own, as
	// on systems without the epoll loop (tests of that path).
	noPoll bool
	// afterRounds, when set, is called by each broadcast group's goroutine
	// between its rounds and its decision to exit (tests of wake-ups that
	// land there).
	afterRounds func(*group)
	// afterMessage, when set, is called by a live session's reader after
	// each client message it read whole: handled says whether it was
	// handled, false when it was dropped because the session is ending
	// (tests of what a session does after a fatal error).
	afterMessage func(handled bool)
}

// Server is the Convergo sync server: an http.Handler serving the protocol
// of docs/protocol.md plus /healthz and /readyz; its metrics are served
// only where the program puts MetricsHandler (mount.go). Create it with
// New; stop live sessions with Shutdown.
type Server struct {
	eng      *engine.Engine
	ready    readyProbe // /readyz's read of the store, shared (health.go)
	readyLog readyLog   // what /readyz last logged (health.go)
	auth     Authorizer
	limits   Limits
	origins  []string
	public   map[string]bool // lower-case scheme://host[:port]
	demo     bool
	log      *slog.Logger
	now      func() time.Time
	timing   struct{ ping, idle, write, hello time.Duration }
	metrics  *metrics
	// metricsHandler serves the registry, where the embedding program puts
	// it (MetricsHandler); nil without a gatherer.
	metricsHandler http.Handler
	mux            *http.ServeMux
	ids            *requestIDs
	sealer         *sealer
	rate           *rateLimiter
	conns          *keyCounter // WebSockets per client address
	sessions       *keyCounter // live sessions per subject
	subscriptions  *keyCounter // live subscriptions per subject (anonymous: per address)
	bodies         *budget     // request bodies in flight
	answers        *budget     // pull answers in flight
	tcp            *connLimit  // connections of Listener
	proxies        []netip.Prefix
	hub            *hub      // broadcast groups of live subscriptions
	writers        *connPool // writers of live connections
	readers        *connPool // readers of polled live connections
	poller         *poller   // the epoll loop of live connections (poll_linux.go)
	noPoll         bool      // Config.noPoll
	pinger         *pinger   // pings live connections
	deny           *denyList // the store's deny list (deny.go)
	stopBg         context.CancelFunc
	afterMessage   func(handled bool) // Config.afterMessage

	mu       sync.Mutex
	closing  bool
	draining bool // Drain was called: /readyz answers 503, all else is served
	live     map[*liveConn]struct{}
	wg       sync.WaitGroup // live connection handlers
	// bg counts the server's background goroutines: broadcast groups,
	// writers, the pinger and its pings. Shutdown waits for them.
	bg sync.WaitGroup
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
	if d := cfg.Engine.MaxDrift(); d < MinMaxDrift {
		return nil, fmt.Errorf("transport: the engine's MaxDrift %v, must be at least %v (the hello announces it in whole ms)", d, MinMaxDrift)
	}
	if len(cfg.SealKey) > 0 && len(cfg.SealKey) < MinSecretBytes {
		return nil, fmt.Errorf("transport: SealKey of %d bytes, need at least %d", len(cfg.SealKey), MinSecretBytes)
	}
	seal, err := newSealer(cfg.SealKey)
	if err != nil {
		return nil, fmt.Errorf("transport: seal key: %w", err)
	}
	public := map[string]bool{}
	for _, o := range cfg.PublicOrigins {
		u, err := url.Parse(o)
		if err != nil || u.Scheme == "" || u.Host == "" || u.Path != "" {
			return nil, fmt.Errorf("transport: public origin %q: want scheme://host[:port]", o)
		}
		public[strings.ToLower(u.Scheme+"://"+u.Host)] = true
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
	// The engine's counts are read at each scrape, of the server's engine.
	var s *Server
	m, err := newMetrics(cfg.Metrics, func() engineCounts { return s.eng })
	if err != nil {
		return nil, fmt.Errorf("transport: %w", err)
	}
	s = &Server{
		eng:           cfg.Engine,
		auth:          cfg.Authorizer,
		limits:        limits,
		origins:       cfg.AllowedOrigins,
		public:        public,
		demo:          cfg.Demo,
		log:           cfg.Logger.With("component", "transport"),
		now:           cfg.Now,
		metrics:       m,
		mux:           http.NewServeMux(),
		ids:           newRequestIDs(),
		sealer:        seal,
		rate:          newRateLimiter(limits.Rate, limits.Burst),
		conns:         newKeyCounter(limits.MaxConnsPerAddr),
		sessions:      newKeyCounter(limits.MaxSessionsPerSubject),
		subscriptions: newKeyCounter(limits.MaxSubscriptionsPerSubject),
		bodies:        newBudget(limits.MaxBodyBytesInFlight, clientShare(limits.MaxBodyBytesInFlight)),
		answers:       newBudget(limits.MaxAnswerBytesInFlight, clientShare(limits.MaxAnswerBytesInFlight)),
		tcp:           newConnLimit(limits),
		live:          map[*liveConn]struct{}{},
		proxies:       cfg.TrustedProxies,
	}
	s.hub = newHub(s, cfg.afterRounds)
	s.deny = newDenyList()
	bgCtx, stopBg := context.WithCancel(context.Background())
	s.stopBg = stopBg
	s.bg.Add(1)
	go func() { defer s.bg.Done(); s.followDenyList(bgCtx, cfg.Engine) }()
	s.writers = newConnPool(&s.bg, (*liveConn).flush)
	s.readers = newConnPool(&s.bg, (*liveConn).readReady)
	s.poller = newPoller(s)
	s.noPoll = cfg.noPoll
	s.afterMessage = cfg.afterMessage
	s.pinger = newPinger(s)
	s.timing.ping = orDefault(cfg.PingInterval, DefaultPingInterval)
	s.timing.idle = orDefault(cfg.IdleTimeout, DefaultIdleTimeout)
	s.timing.write = orDefault(cfg.WriteTimeout, DefaultWriteTimeout)
	s.timing.hello = orDefault(cfg.HelloTimeout, DefaultHelloTimeout)
	if s.demo {
		s.log.Warn("anonymous demo access is on: clients without a token may read and write "+DemoCollection, "collection", DemoCollection)
	}
	// Only a pull's answer is reserved among the answers in flight: the
	// others answer their bodies, a result of a few hundred bytes at most
	// for each change or record (Limits.MaxAnswerBytesInFlight).
	s.mux.Handle(proto.PathHello, s.api("hello", 0, s.hello))
	s.mux.Handle(proto.PathPush, s.api("push", 0, s.push))
	s.mux.Handle(proto.PathPull, s.api("pull", limits.pullAnswerBytes(), s.pull))
	s.mux.Handle(proto.PathRestore, s.api("restore", 0, s.restore))
	s.mux.HandleFunc(proto.PathLive, s.serveLive)
	if j, ok := cfg.Authorizer.(*JWT); ok && s.demo {
		s.mux.Handle(PathDemoToken, s.demoToken(j)) // demo_token.go
	}
	s.mux.HandleFunc("/healthz", s.healthz)
	s.mux.HandleFunc("/readyz", s.readyz)
	if gatherer != nil {
		s.metricsHandler = promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelError)})
	}
	// Every other path of this version answers in the protocol's error
	// form, so clients read a code, not a text page; so does every path
	// of another version (ServeHTTP).
	s.mux.HandleFunc(proto.PathPrefix, func(w http.ResponseWriter, r *http.Request) {
		s.writeError(w, r, proto.Errorf(proto.CodeNotFound, "no endpoint %s", r.URL.Path))
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
// the JS library), on the server's mux. A path naming a protocol version
// (/vN/..., proto.VersionOfPath) is the protocol's: ServeHTTP answers one
// of another version before the mux, so a handler there would never be
// reached, and Handle panics, as http.ServeMux.Handle does of a pattern it
// cannot take.
func (s *Server) Handle(pattern string, h http.Handler) {
	// A pattern is [METHOD ][HOST]/[PATH] (http.ServeMux).
	p := pattern
	if i := strings.IndexAny(p, " \t"); i >= 0 {
		p = strings.TrimLeft(p[i:], " \t")
	}
	if i := strings.IndexByte(p, '/'); i > 0 {
		p = p[i:]
	}
	if _, ok := proto.VersionOfPath(p); ok {
		panic(fmt.Sprintf("transport: Handle %q: a path naming a protocol version (/vN/...) is the protocol's, not the app's", pattern))
	}
	s.mux.Handle(pattern, h)
}

// ServeHTTP serves the protocol and every handler added with Handle. Every
// answer carries the request's id (proto.HeaderRequestID), under which the
// server logs what it did. Every request, whatever its route, must arrive
// and be answered within Limits.RequestTimeout (socket deadlines), so a
// client that declares a body and never sends it holds nothing. net/http
// lifts the deadlines of a connection a WebSocket upgrade hijacks; the
// session then has its own timeouts (hello, idle, write).
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.setDeadlines(w)
	w.Header().Set(proto.HeaderRequestID, s.ids.of(r))
	defer func() {
		// A bug in a handler (or an Authorizer) is answered internal, with
		// the request id, and logged with its stack; the server goes on.
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				panic(v)
			}
			s.writeError(w, r, fmt.Errorf("panic: %v\n%s", v, debug.Stack()))
		}
	}()
	if v, ok := proto.VersionOfPath(r.URL.Path); ok && v != strconv.Itoa(proto.Version) {
		// Before the mux: a handler added with Handle ("/", the demo app)
		// must not answer a client of another version a page of its own.
		// A client of an older version is told to upgrade, as version 1's
		// always were; one of a later version, that this server is older;
		// this version spelled with leading zeros, how it is spelled.
		next := "upgrade the client to version " + strconv.Itoa(proto.Version)
		if n, err := strconv.Atoi(v); err != nil || n > proto.Version {
			next = "upgrade the server to serve version " + v
		} else if n == proto.Version {
			next = "this version's paths start " + proto.PathPrefix
		}
		s.writeError(w, r, proto.Errorf(proto.CodeUnsupportedVersion,
			"protocol version %s is not served: this server speaks version %d (%s)", v, proto.Version, next))
		return
	} else if ok && !cleanPath(r.URL.Path) {
		// http.ServeMux would redirect it (to the prefix's slash, or to
		// the path cleaned), a page outside the protocol's error form.
		s.writeError(w, r, proto.Errorf(proto.CodeNotFound, "no endpoint %s", r.URL.Path))
		return
	}
	s.mux.ServeHTTP(w, r)
}

// cleanPath reports whether p is a path the mux serves as it is: a path
// of the protocol that is not (the version's prefix without its slash,
// one with an empty, "." or ".." segment) is no endpoint, answered
// not_found in the protocol's error form rather than redirected.
func cleanPath(p string) bool {
	if p+"/" == proto.PathPrefix {
		return false
	}
	c := path.Clean(p)
	return c == p || c+"/" == p
}

// setDeadlines bounds the request's reading and answering by
// Limits.RequestTimeout (socket deadlines: the real clock).
func (s *Server) setDeadlines(w http.ResponseWriter) {
	rc := http.NewResponseController(w)
	deadline := time.Now().Add(s.limits.RequestTimeout)
	_ = rc.SetReadDeadline(deadline)
	_ = rc.SetWriteDeadline(deadline)
}

// Drain makes /readyz answer 503 "shutting down" from now on while the
// server goes on serving everything else: requests, new connections and
// live sessions. A program calls it when it is told to stop and keeps its
// listeners open for a while (convergo serve's --shutdown-delay), so that
// a load balancer health checking /readyz takes the instance out before
// Shutdown closes them; without it a balancer sends new connections to a
// closed port until its health check notices.
func (s *Server) Drain() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.draining = true
}

// Shutdown refuses new live sessions, closes the open ones with status 1001
// (going away) and waits for them to end or for ctx. HTTP requests are
// drained by http.Server.Shutdown, which does not see WebSockets: call
// both.
func (s *Server) Shutdown(ctx context.Context) error {
	s.stopBg()
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
	go func() {
		s.wg.Wait()       // every live session has ended, so its groups and pings
		s.writers.close() // idle writers end at once
		s.readers.close()
		s.bg.Wait()
		s.poller.close()
		close(done)
	}()
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

// noteMessage calls Config.afterMessage, when set.
func (s *Server) noteMessage(handled bool) {
	if s.afterMessage != nil {
		s.afterMessage(handled)
	}
}
