package main

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/engine"
	"github.com/convergo/convergo/jsclient"
	"github.com/convergo/convergo/stores/storeurl"
	"github.com/convergo/convergo/transport"
	"github.com/convergo/convergo/transport/proto"
)

type serveConfig struct {
	addr            string
	metricsAddr     string
	store           string
	secret          string
	audience        string
	issuer          string
	origins         listFlag
	publicOrigins   listFlag
	quotas          quotaFlag
	rules           string
	proxies         listFlag
	demo            bool
	replica         string
	maxDrift        time.Duration
	collectEvery    time.Duration
	maxLeases       int
	createTable     bool
	logLevel        string
	logFormat       string
	shutdownTimeout time.Duration
	shutdownDelay   time.Duration
	limits          transport.Limits
}

func serveFlags(stderr io.Writer) (*flag.FlagSet, *serveConfig) {
	// The fields no flag sets hold their defaults, so that checkNumbers can
	// validate the limits as given: a flag's 0 is refused, not defaulted.
	c := &serveConfig{limits: transport.Limits{}.WithDefaults()}
	fs := flag.NewFlagSet("convergo serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.addr, "addr", "127.0.0.1:8080", "`host:port` to listen on (\":8080\" for every interface)")
	fs.StringVar(&c.metricsAddr, "metrics-addr", "", "`host:port` of a separate listener for /metrics, /healthz and /readyz; when set, /metrics is not served on --addr")
	fs.StringVar(&c.store, "store", "bolt:convergo.db", "store `URL`: memory:, bolt:PATH, redis://[user:pass@]host:port[/db][?prefix=P&capture=COLL=PATTERN[;mirror]...&written_cache=BYTES], redis-cluster://host:port,host:port[?prefix=P&capture=...&written_cache=BYTES], dynamodb://TABLE[?region=R&endpoint=URL&create=1&capture=0&poll=D&shards=K,COLL:K&turn=D|off]")
	fs.StringVar(&c.secret, "secret", "", "HS256 `secret` that signs access tokens (at least 16 bytes); empty in demo mode means a random one for this run")
	fs.StringVar(&c.audience, "audience", "", "the server's `name` in tokens' aud claim: a token must name it; empty: a token with any aud is refused (it was minted for another service)")
	fs.StringVar(&c.issuer, "issuer", "", "the `issuer` tokens' iss claim must be exactly; empty: iss is not checked")
	fs.Var(&c.quotas, "quota", "collection `quota` PATTERN=RECORDS/BYTES[/COLLECTIONS] (0: no bound), comma-separated or repeated: each collection the pattern matches that holds as many records or bytes refuses writes that add data or tombstones with quota_exceeded, and so does a collection more once COLLECTIONS of them hold records (\"tenant42.*=100000/1073741824/50\"); needs a store that keeps usage")
	fs.StringVar(&c.rules, "rules", "", "collection rules `file` (JSON): per collection pattern a read scope, a write scope and a schema (docs/operations.md, \"Rules\")")
	fs.Var(&c.publicOrigins, "public-origins", "the server's own `origins`, where browsers load the pages that call it, comma-separated scheme://host[:port] (\"https://sync.example.com\"); with --demo, loopback origins count too")
	fs.Var(&c.origins, "origins", "browser `origins` allowed besides the server's own, comma-separated host[:port] or scheme://host[:port] patterns, the port matched when the origin has one (\"app.example.com,app.example.com:5173,https://*.example.org\")")
	fs.Var(&c.proxies, "trusted-proxies", "`networks` of the load balancers in front of the server (CIDRs or addresses, comma-separated): per-client limits then use X-Forwarded-For")
	fs.BoolVar(&c.demo, "demo", true, "serve the demo app and let clients without a token read and write "+transport.DemoCollection)
	fs.StringVar(&c.replica, "replica", "", "replica `id` of this server instance (default random; instances sharing a store need distinct ids)")
	fs.DurationVar(&c.maxDrift, "max-drift", crdt.DefaultMaxDrift, "the `drift`: how far ahead of the server's clock a client's stamp may be (at least 1ms)")
	fs.DurationVar(&c.collectEvery, "collect-every", engine.DefaultCollectEvery, "the `interval` at which the tombstone collection job runs for collections whose rules give a maxOffline (docs/operations.md, \"Tombstone collection\"); negative: this instance never runs it")
	fs.IntVar(&c.maxLeases, "max-leases", proto.DefaultMaxLeasesPerSubject, "most live `leases` one subject holds on one collection that collects tombstones (at least 1): each collection run removes the subject's least recently seen beyond it, and an instance takes at most as many new ones per --collect-every (docs/operations.md, \"Tombstone collection\")")
	fs.BoolVar(&c.createTable, "create-table", false, "create the DynamoDB table if it does not exist (same as create=1 in the store URL)")
	fs.StringVar(&c.logLevel, "log-level", "info", "log `level`: debug, info, warn or error")
	fs.StringVar(&c.logFormat, "log-format", "text", "log `format`: text or json (json: an error that stops the server is a JSON line too, at ERROR)")
	fs.DurationVar(&c.shutdownTimeout, "shutdown-timeout", 15*time.Second, "how long a graceful shutdown takes at most, a `duration` (positive): requests and sockets, then closing the engine and the store; past it the process exits with status 1")
	fs.DurationVar(&c.shutdownDelay, "shutdown-delay", 0, "how long, after SIGINT/SIGTERM, the server goes on serving with /readyz answering 503 before it closes its listeners and shuts down, a `duration`, so that a load balancer takes it out first (0: at once)")
	fs.Int64Var(&c.limits.MaxBodyBytes, "max-body", proto.DefaultMaxBodyBytes, fmt.Sprintf("largest HTTP request body in `bytes` (at least %d: a request of one record at the record limit)", transport.MinRequestBytes))
	fs.IntVar(&c.limits.MaxPushChanges, "max-push", proto.DefaultMaxPushChanges, fmt.Sprintf("most `changes` in one push (at most %d)", crdt.MaxContainerItems))
	fs.IntVar(&c.limits.MaxPullRecords, "max-pull", proto.DefaultMaxPullRecords, fmt.Sprintf("most `records` in one pull page (at most %d)", engine.MaxPage))
	fs.IntVar(&c.limits.MaxPageBytes, "max-page-bytes", proto.DefaultMaxPageBytes, "most `bytes` of records in one pull page or live frame (a larger record travels alone)")
	fs.Int64Var(&c.limits.MaxMessageBytes, "max-message", proto.DefaultMaxMessageBytes, fmt.Sprintf("largest WebSocket message in `bytes` (at least %d: a push of one record at the record limit)", transport.MinRequestBytes))
	fs.Float64Var(&c.limits.Rate, "rate", proto.DefaultRate, "requests or messages per second per client, a `number` (negative: no limit; not 0)")
	fs.IntVar(&c.limits.Burst, "burst", proto.DefaultBurst, "`requests` a client may make at once above the rate (at least 1 with a positive --rate)")
	fs.DurationVar(&c.limits.RequestTimeout, "request-timeout", transport.DefaultRequestTimeout, "`time` to receive an HTTP request's body, and again to send its answer (positive)")
	fs.IntVar(&c.limits.MaxConnsPerAddr, "max-conns", proto.DefaultMaxConnsPerAddr, "most `connections` per client address (TCP per peer, trusted proxies exempt; WebSockets per client)")
	fs.IntVar(&c.limits.MaxSubscriptions, "max-subscriptions", proto.DefaultMaxSubscriptions, "most `subscriptions` of one WebSocket (too_large for the sub beyond)")
	fs.IntVar(&c.limits.MaxSessionsPerSubject, "max-sessions", proto.DefaultMaxSessionsPerSubject, "most live `sessions` (WebSockets) of one subject at once, from any addresses (rate_limited at the hello beyond)")
	fs.IntVar(&c.limits.MaxSubscriptionsPerSubject, "max-subscriptions-per-subject", proto.DefaultMaxSubscriptionsPerSubject, "most `subscriptions` of one subject across all its WebSockets (anonymous ones: per client address; too_large for the sub beyond)")
	fs.IntVar(&c.limits.MaxConns, "max-conns-total", transport.DefaultMaxConns, "most TCP `connections` held at once, all listeners together")
	fs.Int64Var(&c.limits.MaxQueueBytes, "max-queue-bytes", transport.DefaultMaxQueueBytes, "most `bytes` waiting to be written to one WebSocket (one page always fits an empty queue)")
	fs.Int64Var(&c.limits.MaxBodyBytesInFlight, "max-bodies-in-flight", transport.DefaultMaxBodyBytesInFlight, "most `bytes` of HTTP request bodies held at once, all requests together (503 unavailable beyond)")
	fs.Int64Var(&c.limits.MaxAnswerBytesInFlight, "max-answers-in-flight", transport.DefaultMaxAnswerBytesInFlight, "most `bytes` of pull answers held at once while they are read and written, all pulls together (503 unavailable beyond)")
	return fs, c
}

// limitFlags names the flag of each transport.Limits field a flag sets.
var limitFlags = map[string]string{
	"MaxBodyBytes":               "max-body",
	"MaxPushChanges":             "max-push",
	"MaxPullRecords":             "max-pull",
	"MaxPageBytes":               "max-page-bytes",
	"MaxMessageBytes":            "max-message",
	"Rate":                       "rate",
	"Burst":                      "burst",
	"RequestTimeout":             "request-timeout",
	"MaxConnsPerAddr":            "max-conns",
	"MaxSubscriptions":           "max-subscriptions",
	"MaxSessionsPerSubject":      "max-sessions",
	"MaxSubscriptionsPerSubject": "max-subscriptions-per-subject",
	"MaxConns":                   "max-conns-total",
	"MaxQueueBytes":              "max-queue-bytes",
	"MaxBodyBytesInFlight":       "max-bodies-in-flight",
	"MaxAnswerBytesInFlight":     "max-answers-in-flight",
}

// checkNumbers refuses a numeric or duration flag whose value would not
// mean what it says, naming the flag. transport.Limits and engine.Config
// read a zero field as its default, which would turn --max-push 0 silently
// into 1000 and --request-timeout 0 into 30s; so the limits are validated
// as given (transport.Limits.Validate holds their bounds, and
// transport.Limits.Workable the least --max-body and --max-message the
// protocol works with), and the other flags here. The limits the hello announces, the max drift among them,
// are never 0 (docs/protocol.md, section 6). A value with a documented
// meaning of its own is taken: a negative --rate (no limit) and a negative
// --collect-every (this instance never runs the job). docs/operations.md
// says what each flag refuses.
func (c *serveConfig) checkNumbers() error {
	for _, check := range []func() error{c.limits.Validate, c.limits.Workable} {
		if err := check(); err != nil {
			if le := (*transport.LimitError)(nil); errors.As(err, &le) && limitFlags[le.Field] != "" {
				return badFlag(limitFlags[le.Field], le.Value, le.Want)
			}
			return err
		}
	}
	switch {
	case c.maxLeases < 1:
		return badFlag("max-leases", c.maxLeases, "must be at least 1")
	case c.maxDrift < transport.MinMaxDrift:
		return badFlag("max-drift", c.maxDrift, fmt.Sprintf("must be at least %v (the hello announces it in whole ms)", transport.MinMaxDrift))
	case c.collectEvery == 0:
		return badFlag("collect-every", c.collectEvery, "must be positive, or negative for never on this instance")
	case c.shutdownTimeout <= 0:
		// 0 would not wait at all, where many tools read it as no timeout.
		return badFlag("shutdown-timeout", c.shutdownTimeout, "must be positive")
	case c.shutdownDelay < 0:
		return badFlag("shutdown-delay", c.shutdownDelay, "must be 0 or positive")
	}
	return nil
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: %w", level, err)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}

// serve runs the server until ctx is cancelled, then shuts down: it stops
// accepting, drains HTTP requests, closes WebSockets with 1001 (going
// away), and closes the engine and the store.
//
// Under --log-format json, an error that ends serve is logged as a JSON
// line at ERROR (msg "fatal", the error in err) and returned as a
// loggedError, for main to print nothing more: a plain-text line after
// JSON logs would break a pipeline that parses each line. An error in the
// flags themselves (one that does not parse, in its environment variable
// too) is found before the log format is known and stays the plain
// "convergo: …" line, as every error is under the text format.
func serve(ctx context.Context, args []string, _, stderr io.Writer) error {
	fset, c := serveFlags(stderr)
	if err := parseFlags(fset, args); err != nil {
		return err
	}
	log, err := newLogger(stderr, c.logLevel, c.logFormat)
	if err == nil {
		err = serveWith(ctx, c, log)
	} else if c.logFormat == "json" {
		// The format is known, the level is not.
		log = slog.New(slog.NewJSONHandler(stderr, nil))
	}
	if err == nil || c.logFormat != "json" || errors.Is(err, errUnclosed) {
		return err // errUnclosed: closeWithin logged it
	}
	// Handled whatever the level (--log-level ERROR+4 would drop it).
	r := slog.NewRecord(time.Now(), slog.LevelError, "fatal", 0)
	r.AddAttrs(slog.String("err", err.Error()))
	_ = log.Handler().Handle(ctx, r)
	return loggedError{err}
}

// loggedError is an error serve has logged already, as a JSON line: main
// exits with status 2 and prints nothing more.
type loggedError struct{ error }

func (e loggedError) Unwrap() error { return e.error }

// serveWith runs serve with its flags parsed and its logger made.
func serveWith(ctx context.Context, c *serveConfig, log *slog.Logger) error {
	routeRedisLogs(log)
	warnUnknownEnv(log, os.Environ())
	spec, err := storeurl.Parse(c.store)
	if err != nil {
		return err
	}
	if err := c.checkNumbers(); err != nil {
		return err
	}
	proxies, err := parsePrefixes(c.proxies)
	if err != nil {
		return fmt.Errorf("--trusted-proxies: %w", err)
	}
	secret := []byte(c.secret)
	if len(secret) == 0 {
		if !c.demo {
			return errors.New("--secret (or CONVERGO_SECRET) is required without --demo: no one could sign in")
		}
		secret = make([]byte, 32)
		if _, err := rand.Read(secret); err != nil {
			return fmt.Errorf("generate a secret: %w", err)
		}
		// The secret itself is not logged: logs travel further than secrets
		// should. Set --secret to issue tokens with "convergo token".
		log.Warn("no --secret: tokens are checked against a random secret for this run only, so only anonymous demo access works; set --secret to use tokens")
	}
	auth, err := transport.NewJWTWith(transport.JWTConfig{Secret: secret, Audience: c.audience, Issuer: c.issuer})
	if err != nil {
		return fmt.Errorf("--secret, --audience or --issuer: %w", err)
	}

	var rules []engine.Rule
	if c.rules != "" {
		data, err := os.ReadFile(c.rules)
		if err != nil {
			return fmt.Errorf("--rules: %w", err)
		}
		if rules, err = engine.ParseRules(data); err != nil {
			return fmt.Errorf("--rules %s: %w", c.rules, err)
		}
		log.Info("collection rules", "file", c.rules, "rules", len(rules))
	}
	if c.demo {
		rules = transport.WithDemoRules(rules) // the demo's notes, unless the rules say otherwise
	}

	openCtx, cancel := context.WithTimeout(ctx, 2*time.Minute) // creating a DynamoDB table takes a while
	store, err := spec.Open(openCtx, storeurl.Options{Logger: log, CreateTable: c.createTable})
	cancel()
	if err != nil {
		return fmt.Errorf("open store %s: %w", storeurl.Redact(c.store), err)
	}
	// Until the shutdown takes them over (closeWithin), a return closes
	// the engine and the store here.
	closing := false
	defer func() {
		if closing {
			return
		}
		if err := store.Close(); err != nil {
			log.Error("close store", "err", err)
		}
	}()
	eng, err := engine.Open(engine.Config{Store: store, Replica: c.replica, MaxDrift: c.maxDrift, Logger: log, Quotas: c.quotas, Rules: rules,
		CollectEvery: c.collectEvery, MaxLeasesPerSubject: c.maxLeases})
	if err != nil {
		return err
	}
	defer func() {
		if !closing {
			eng.Close()
		}
	}()
	srv, err := transport.New(transport.Config{
		Engine:         eng,
		Authorizer:     auth,
		Limits:         c.limits,
		SealKey:        sealKey(secret),
		AllowedOrigins: c.origins,
		PublicOrigins:  c.publicOrigins,
		TrustedProxies: proxies,
		Demo:           c.demo,
		Logger:         log,
	})
	if err != nil {
		return err
	}
	srv.Handle("/convergo/", srv.CORS(http.StripPrefix("/convergo/", jsclient.Handler())))
	if c.demo {
		srv.Handle("/", jsclient.DemoHandler())
	}

	ln, err := net.Listen("tcp", c.addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	// Both listeners count against the server's connection limits.
	ln = srv.Listener(ln)
	// Metrics are served where the operator says: on --metrics-addr with
	// the probes, or else beside the protocol on --addr.
	ops := http.NewServeMux()
	ops.Handle("/metrics", srv.MetricsHandler())
	ops.Handle("/healthz", srv)
	ops.Handle("/readyz", srv)
	var handler = srv.WithMetrics()
	servers := []*http.Server{}
	if c.metricsAddr != "" {
		mln, err := net.Listen("tcp", c.metricsAddr)
		if err != nil {
			ln.Close()
			return fmt.Errorf("listen for metrics: %w", err)
		}
		mln = srv.Listener(mln)
		handler = srv.Handler() // no /metrics: it has its own listener
		ms := &http.Server{Handler: ops, ReadHeaderTimeout: transport.ReadHeaderTimeout, MaxHeaderBytes: transport.MaxHeaderBytes}
		servers = append(servers, ms)
		log.Info("serving metrics", "addr", mln.Addr().String())
		go func() {
			if err := ms.Serve(mln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("metrics listener", "err", err)
			}
		}()
	}
	hs := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: transport.ReadHeaderTimeout,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    transport.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	log.Info("listening", "addr", ln.Addr().String(), "store", storeurl.Redact(c.store), "replica", eng.Replica(),
		"demo", c.demo, "version", versionString())
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()

	select {
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	if c.shutdownDelay > 0 {
		// The listeners stay open and everything is served; only /readyz
		// says the instance is going, for the load balancer to take it
		// out before the listeners close. A second signal ends the
		// process at once (main).
		srv.Drain()
		log.Info("draining: /readyz answers 503 while the server goes on serving until the shutdown delay ends", "delay", c.shutdownDelay)
		select {
		case err := <-served:
			return fmt.Errorf("serve: %w", err)
		case <-time.After(c.shutdownDelay):
		}
	}
	log.Info("shutting down", "timeout", c.shutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), c.shutdownTimeout)
	defer cancel()
	if err := srv.ShutdownServers(sctx, append(servers, hs)...); err != nil {
		log.Warn("shutdown incomplete", "err", err)
	}
	closing = true
	return closeWithin(sctx, log, c.shutdownTimeout, eng, store)
}

// errUnclosed says the shutdown ended at --shutdown-timeout with the
// engine or the store not closed. closeWithin has logged it; main exits
// with status 1 and prints nothing more (a plain-text line after the
// logs would break --log-format json).
var errUnclosed = errors.New("shutdown: not closed within the timeout")

// closeWithin closes the engine, then the store, and waits for them until
// ctx (the shutdown's --shutdown-timeout) ends. The engine's goroutines
// stop with the engine's context, but a store that stopped answering (a
// Redis host frozen, a network partition) may hold a call in flight until
// its own bound, about 10 s on Redis (go-redis heeds a context's deadline,
// not its cancellation, on a read under way): the shutdown does not wait
// for it. It logs at error what it could not close and returns
// errUnclosed, and the process exits with the call still in flight.
// Nothing acknowledged is lost so: a push is answered only after the
// store's Apply returned its results (stores.Store.Apply), that is once
// the store committed it.
func closeWithin(ctx context.Context, log *slog.Logger, timeout time.Duration, eng, store io.Closer) error {
	engClosed := make(chan struct{})
	storeClosed := make(chan error, 1)
	go func() {
		eng.Close()
		close(engClosed)
		storeClosed <- store.Close()
	}()
	var err error
	select {
	case err = <-storeClosed:
	case <-ctx.Done():
		select {
		case err = <-storeClosed: // closed just in time
		default:
			unclosed := "store"
			select {
			case <-engClosed:
			default:
				unclosed = "engine and store"
			}
			log.Error(errUnclosed.Error(), "unclosed", unclosed, "timeout", timeout,
				"note", "pushes already answered were committed by the store; calls still in flight are abandoned")
			return errUnclosed
		}
	}
	if err != nil {
		log.Error("close store", "err", err)
	}
	log.Info("stopped")
	return nil
}

// parsePrefixes parses CIDRs; a bare address is a network of one.
func parsePrefixes(list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range list {
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("%q is neither a CIDR nor an address", s)
		}
		out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
	}
	return out, nil
}

// sealKey derives the key of the records' seals from the token secret, so
// that every instance with the same secret seals alike and seals outlive a
// restart and a lost store (clients restore records with them).
func sealKey(secret []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("convergo/seal-key/v2"))
	return m.Sum(nil)
}
