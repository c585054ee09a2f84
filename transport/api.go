package transport

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/engine"
	"github.com/convergo/convergo/transport/proto"
)

// handlerFunc is an API endpoint: it gets the decoded, authorized request
// and returns the answer to encode or an error.
type handlerFunc func(ctx context.Context, p Principal, body []byte) (any, error)

// api wraps an endpoint with what every API request goes through, in order:
// origin, method, protocol version, authentication, rate limit, body size,
// and room for its answer. answer is what the endpoint's answer may hold,
// reserved among the answers in flight before it runs (reserveAnswer); 0
// for an endpoint whose answer its body bounds, not reserved.
func (s *Server) api(route string, answer int64, h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := s.now()
		sw := &statusWriter{ResponseWriter: w}
		defer func() {
			took := s.now().Sub(start)
			s.metrics.requests.WithLabelValues(route, strconv.Itoa(sw.code())).Inc()
			s.metrics.duration.WithLabelValues(route).Observe(took.Seconds())
			s.log.Debug("request", "route", route, "status", sw.code(), "code", sw.Header().Get(proto.HeaderError),
				"addr", s.clientAddr(r), "took", took)
		}()
		if err := s.serveAPI(sw, r, answer, h); err != nil {
			s.writeError(sw, r, err)
		}
	})
}

// ownClient reports whether p is a client of its own for the per-client
// limits (the rate, subscriptions): a subject, keyed by its name. The
// anonymous principal is not, nor, on a server running its demo, a demo
// subject, which anyone may mint for any name (demo_token.go): one
// address minting names would get a full bucket per name. Those are
// keyed by their address.
func (s *Server) ownClient(p Principal) bool {
	return p.Subject != "" && !(s.demo && strings.HasPrefix(p.Subject, DemoSubjectPrefix))
}

// rateLimited is the answer to a request over its rate bucket, to be
// retried after wait.
func rateLimited(wait time.Duration) *proto.Error {
	return &proto.Error{Status: http.StatusTooManyRequests, Code: proto.CodeRateLimited, Message: "too many requests", RetryAfter: wait}
}

func (s *Server) serveAPI(w http.ResponseWriter, r *http.Request, answerBytes int64, h handlerFunc) error {
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
		return proto.Errorf(proto.CodeMethodNotAllowed, "%s %s: use POST", r.Method, r.URL.Path)
	}
	if v := r.Header.Get(proto.HeaderProtocol); v != strconv.Itoa(proto.Version) {
		return proto.Errorf(proto.CodeUnsupportedVersion, "protocol version %q: this server speaks %d (header %s)", v, proto.Version, proto.HeaderProtocol)
	}
	var p Principal
	var authErr error
	if token, ok := bearer(r); ok && len(token) > MaxHeaderBytes {
		// Headers over MaxHeaderBytes are answered 431 (net/http lets
		// up to 4 KiB beyond it through): never too_large, which a client
		// takes for the fault of a push's changes.
		http.Error(w, http.StatusText(http.StatusRequestHeaderFieldsTooLarge), http.StatusRequestHeaderFieldsTooLarge)
		return nil
	} else if ok {
		p, authErr = s.authenticate(r.Context(), token)
	} else {
		authErr = proto.Errorf(proto.CodeUnauthenticated, "the Authorization header is not one Bearer <token>")
	}
	key := "addr:" + limitKey(s.clientAddr(r))
	if authErr == nil && s.ownClient(p) {
		key = "sub:" + p.Subject
	}
	if wait := s.rate.take(key, s.now()); wait > 0 {
		return rateLimited(wait)
	}
	if authErr != nil {
		return authErr
	}
	release, held, err := s.reserveBody(r, key)
	if err != nil {
		return err
	}
	defer release()
	body, err := readBody(w, r, s.limits.MaxBodyBytes)
	_ = rc.SetWriteDeadline(time.Now().Add(s.limits.RequestTimeout)) // the answer gets its own time
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return proto.Errorf(proto.CodeTooLarge, "request body over %d bytes", s.limits.MaxBodyBytes)
		}
		if isTimeout(err) {
			return proto.Errorf(proto.CodeMalformed, "request body not received within %v", s.limits.RequestTimeout)
		}
		return proto.Errorf(proto.CodeMalformed, "reading the body: %v", err)
	}
	// The principal was checked against the deny list when the headers
	// came, and the body may have taken up to RequestTimeout since: a
	// principal denied meanwhile gets nothing read or written.
	if err := s.deniedNow(p); err != nil {
		return err
	}
	// The answer's room is taken before the handler reads what it answers
	// (a pull's page), and held until its bytes are written: the write
	// ends, fails or passes its deadline before serveAPI returns.
	hold, err := s.reserveAnswer(answerBytes, key, r.Context().Done())
	if err != nil {
		return err
	}
	defer hold.release()
	answer, err := h(context.WithValue(r.Context(), bodyHeldKey{}, heldBody{held, key}), p, body)
	if err != nil {
		return err
	}
	out, err := proto.Encode(answer)
	if err != nil {
		return fmt.Errorf("encode answer: %w", err)
	}
	hold.resize(int64(len(out)))
	w.Header().Set("Content-Type", proto.ContentType)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(out)
	return nil
}

// answerHold is what an answer holds among the answers in flight
// (Limits.MaxAnswerBytesInFlight) for its client key. A nil hold holds
// nothing: the answer of an endpoint that reserves none.
type answerHold struct {
	s   *Server
	n   int64
	key string
}

// reserveAnswer reserves n bytes among the answers in flight for the
// client key, until the returned hold is released, waiting for room until
// BodyWait passes or stop is closed: an answer of n bytes at most, before
// it is read. Without room it is answered 503 unavailable, or 429
// rate_limited when the room it lacks is its client's share (clientShare),
// with Retry-After; so a client that reads none of its answers holds its
// share of them, not as many pages as it opens requests. n 0 reserves
// nothing (a nil hold).
func (s *Server) reserveAnswer(n int64, key string, stop <-chan struct{}) (*answerHold, error) {
	if n <= 0 {
		return nil, nil
	}
	switch s.answers.take(n, key, BodyWait, stop) {
	case budgetTaken:
	case budgetOverShare:
		return nil, overShare("too many answers of this client being written; retry later")
	default:
		s.metrics.answerRefused.Inc()
		return nil, &proto.Error{Status: http.StatusServiceUnavailable, Code: proto.CodeUnavailable,
			Message: "the server is busy writing other answers; retry later", RetryAfter: time.Second}
	}
	s.metrics.answerBytes.Add(float64(n))
	return &answerHold{s: s, n: n, key: key}, nil
}

// resize makes h hold n bytes, the size of its encoded answer: less than
// its reservation gives the rest back, more takes it whether it fits or
// not, since an answer that was let in is written whole.
func (h *answerHold) resize(n int64) {
	if h == nil {
		return
	}
	h.s.answers.resize(h.n, n, h.key)
	h.s.metrics.answerBytes.Add(float64(n - h.n))
	h.n = n
}

// release gives back what h holds, once its answer is written or failed.
func (h *answerHold) release() { h.resize(0) }

// reserveBody reserves r's body in Limits.MaxBodyBytesInFlight, for the
// client key (its rate key), until the returned release is called: its
// Content-Length, or MaxBodyBytes when unknown. The reservation covers
// the request's whole life, since its decoded changes live as long as it
// does. A body declared larger than MaxBodyBytes is refused at once; a
// request that finds no room within BodyWait is answered 503 unavailable,
// or 429 rate_limited when the room it lacks is its client's share
// (clientShare), with Retry-After.
func (s *Server) reserveBody(r *http.Request, key string) (release func(), held int64, err error) {
	n := r.ContentLength
	switch {
	case n > s.limits.MaxBodyBytes:
		return nil, 0, proto.Errorf(proto.CodeTooLarge, "request body over %d bytes", s.limits.MaxBodyBytes)
	case n < 0:
		n = s.limits.MaxBodyBytes
	}
	release, err = s.reserveBytes(n, key, BodyWait, r.Context().Done())
	return release, n, err
}

// clientShare is what one client may hold of a budget of inFlight bytes
// (Limits.MaxBodyBytesInFlight, Limits.MaxAnswerBytesInFlight) in all,
// its first request in flight counted in it, except that a request alone
// in flight for its client is let in whatever it holds (as the budget
// lets one request in when nothing is held): a quarter of it, so that one
// client holding its requests open (a body declared and trickled for
// RequestTimeout, pushes decoding to many times their bytes, pulls whose
// answers it does not read) leaves room for the others.
func clientShare(inFlight int64) int64 { return inFlight / 4 }

// bodyHeldKey is the context key of what an HTTP request's body holds in
// Limits.MaxBodyBytesInFlight (reserveBody), a heldBody, which the push
// handler's chargeDecoded counts as its own.
type bodyHeldKey struct{}

// heldBody is the bytes a request's body holds in the bodies in flight,
// and for which client key.
type heldBody struct {
	n   int64
	key string
}

// bodyHeld returns what the request of ctx holds for its body, or size
// bytes of no client when ctx says none.
func bodyHeld(ctx context.Context, size int64) heldBody {
	if h, ok := ctx.Value(bodyHeldKey{}).(heldBody); ok {
		return h
	}
	return heldBody{n: size}
}

// refusedRoom is the answer to a request that found no room among the
// bodies in flight (why, of budget): 503 unavailable when the server
// holds all it may, 429 rate_limited when its client holds its share.
func (s *Server) refusedRoom(why budgetAnswer) *proto.Error {
	if why == budgetOverShare {
		return overShare("too many request bodies of this client in flight; retry later")
	}
	s.metrics.bodyRefused.Inc()
	return &proto.Error{Status: http.StatusServiceUnavailable, Code: proto.CodeUnavailable,
		Message: "the server is busy reading other requests; retry later", RetryAfter: time.Second}
}

// overShare is the answer to a request of a client that holds its share
// (clientShare) of a budget, the bodies or the answers in flight: 429
// rate_limited, to be retried after a second, when its own requests may
// have given some back. msg says which budget.
func overShare(msg string) *proto.Error {
	return &proto.Error{Status: http.StatusTooManyRequests, Code: proto.CodeRateLimited, Message: msg, RetryAfter: time.Second}
}

// reserveBytes reserves n bytes in Limits.MaxBodyBytesInFlight for the
// client key until the returned release is called, waiting for room until
// wait passes or stop is closed (wait <= 0: not at all): an HTTP
// request's body, a live push message. Without room it is answered
// unavailable, or rate_limited beyond the client's share, with
// Retry-After.
func (s *Server) reserveBytes(n int64, key string, wait time.Duration, stop <-chan struct{}) (release func(), err error) {
	if why := s.bodies.take(n, key, wait, stop); why != budgetTaken {
		return nil, s.refusedRoom(why)
	}
	s.metrics.bodyBytes.Add(float64(n))
	return func() {
		s.bodies.release(n, key)
		s.metrics.bodyBytes.Sub(float64(n))
	}, nil
}

// chargeDecoded returns a proto.Charge that takes what each change of a
// push holds in memory, decoded or refused (decodedBytes), out of
// Limits.MaxBodyBytesInFlight, beside the size bytes its body took, and
// release, which gives it all back once the push is answered. It does not
// wait for room: a push that finds none while other bodies are in flight
// is refused unavailable, as a body is, and one alone in flight is served
// whatever it holds, as a body is (budget.takeBeside); the same within
// its client's share: a push that finds none beside the client's other
// requests is refused rate_limited. So the budget bounds what pushes hold
// decoded, not only their bodies: a push of tiny fields decodes to more
// than ten times its bytes, and one of changes too short to decode to
// more than a hundred times, their refusals.
func (s *Server) chargeDecoded(body heldBody) (charge proto.Charge, release func()) {
	// body is what the push holds for its body: Content-Length, or
	// MaxBodyBytes when a request declares none; a live push's message.
	size, key := body.n, body.key
	var held int64
	charge = func(ch crdt.Change, refused error) error {
		n := decodedBytes(ch, refused)
		if why := s.bodies.takeBeside(n, size+held, key); why != budgetTaken {
			return s.refusedRoom(why)
		}
		s.metrics.bodyBytes.Add(float64(n))
		held += n
		return nil
	}
	release = func() {
		if held > 0 {
			s.bodies.release(held, key)
			s.metrics.bodyBytes.Sub(float64(held))
			held = 0
		}
	}
	return charge, release
}

// readBody reads r's body, at most limit bytes: into one buffer of its
// Content-Length when declared (net/http reads no further), else growing.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	body := http.MaxBytesReader(w, r.Body, limit)
	if r.ContentLength < 0 {
		return io.ReadAll(body)
	}
	buf := make([]byte, r.ContentLength)
	n, err := io.ReadFull(body, buf)
	return buf[:n], err
}

func (s *Server) isClosing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

// isDraining reports whether Drain or Shutdown was called: /readyz then
// answers 503.
func (s *Server) isDraining() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing || s.draining
}

// authenticate maps a token to a principal: the Authorizer's, or the
// anonymous demo principal when there is no token and the demo is on.
func (s *Server) authenticate(ctx context.Context, token string) (Principal, error) {
	if token == "" && s.demo {
		return anonymous, nil
	}
	if len(token) > MaxHeaderBytes {
		// A request's headers hold no longer one, but a live hello's
		// message may: the JWT parser decodes the claims before it checks
		// the signature, so an unsigned token of megabytes would cost a
		// second of CPU and many times its size in memory, unauthenticated.
		return Principal{}, proto.Errorf(proto.CodeTooLarge, "a token over %d bytes", MaxHeaderBytes)
	}
	p, err := s.auth.Authenticate(ctx, token)
	switch {
	case err == nil:
		if err := s.checkDenied(ctx, p); err != nil {
			return Principal{}, err
		}
		return p, nil
	case errors.Is(err, ErrTokenExpired):
		return Principal{}, withCause(proto.Errorf(proto.CodeTokenExpired, "the token has expired: refresh it"), err)
	case errors.Is(err, ErrUnauthenticated):
		msg := "the token is missing, malformed or not signed by this server"
		switch {
		case token == "":
			msg = "no token: send Authorization: Bearer <token>"
		case errors.Is(err, errForeign):
			msg = "the token is for another recipient: its aud or iss is not this server's (--audience, --issuer)"
		}
		return Principal{}, withCause(proto.Errorf(proto.CodeUnauthenticated, "%s", msg), err)
	}
	return Principal{}, withCause(&proto.Error{Status: http.StatusServiceUnavailable, Code: proto.CodeUnavailable,
		Message: "authentication is unavailable; retry later", RetryAfter: time.Second}, err)
}

// bearer returns the token of r's Authorization header, "" when it has
// none. ok is false when r sends credentials that are not one bearer
// token (another scheme, an empty token, several headers): such a request
// is unauthenticated, never the demo's anonymous principal.
func bearer(r *http.Request) (token string, ok bool) {
	hs := r.Header.Values("Authorization")
	if len(hs) == 0 {
		return "", true
	}
	const prefix = "bearer "
	h := hs[0]
	if len(hs) == 1 && len(h) > len(prefix) && strings.EqualFold(h[:len(prefix)], prefix) {
		if token = strings.TrimSpace(h[len(prefix):]); token != "" {
			return token, true
		}
	}
	return "", false
}

// errStore marks a store failure. It is answered 503 unavailable with a
// message that says only that; the detail goes to the log under the
// request id.
var errStore = errors.New("store failure")

// writeError answers with err's status, the body {1: code, 2: message,
// 3: request id} and the Convergo-Error header. A store failure is
// unavailable; any other error that is not a *proto.Error is a bug:
// internal. Neither tells the client more than its code: the detail is
// logged with the request id the answer carries.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	s.writeErrorAs(w, r, err, proto.ContentType, func(b proto.ErrorBody) []byte {
		body, _ := proto.Encode(b)
		return body
	})
}

// writeErrorAs writes err's answer with its body in contentType, as encode
// makes it: the status, code header and Retry-After are the protocol's
// whatever the body's form (writeDemoTokenError's is JSON).
func (s *Server) writeErrorAs(w http.ResponseWriter, r *http.Request, err error, contentType string, encode func(proto.ErrorBody) []byte) {
	id := w.Header().Get(proto.HeaderRequestID)
	e := s.errorOf(err, r.URL.Path, id)
	body := encode(proto.ErrorBody{Code: e.Code, Message: cutMessage(e.Message), RequestID: id})
	h := w.Header()
	h.Set("Content-Type", contentType)
	h.Set("Cache-Control", "no-store")
	h.Set(proto.HeaderError, e.Code)
	if e.RetryAfter > 0 {
		h.Set(proto.HeaderRetryAfter, strconv.Itoa(int((e.RetryAfter+time.Second-1)/time.Second)))
	}
	w.WriteHeader(e.Status)
	_, _ = w.Write(body)
}

// errorOf maps err to what the client is told of it, logging the detail
// with where it happened and the request id: a *proto.Error as it is, a
// store failure unavailable, anything else internal.
func (s *Server) errorOf(err error, where, id string) *proto.Error {
	var e *proto.Error
	switch {
	case errors.As(err, &e):
		if e.Cause != nil {
			s.log.Debug("refused", "path", where, "request", id, "code", e.Code, "err", e.Cause)
		}
	case errors.Is(err, errStore):
		s.log.Warn("store unavailable", "path", where, "request", id, "err", err)
		e = &proto.Error{Status: http.StatusServiceUnavailable, Code: proto.CodeUnavailable,
			Message: "the store is unavailable; retry later", RetryAfter: time.Second}
	default:
		s.log.Error("internal error", "path", where, "request", id, "err", err)
		e = proto.Errorf(proto.CodeInternal, "internal error")
	}
	return e
}

// requestIDs hands out the ids of requests: a random prefix per server and
// a counter, unless the client sent a usable id of its own.
type requestIDs struct {
	prefix string
	n      atomic.Uint64
}

func newRequestIDs() *requestIDs {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return &requestIDs{prefix: base64.RawURLEncoding.EncodeToString(b[:])}
}

// of returns the id of request r.
func (g *requestIDs) of(r *http.Request) string {
	if v := r.Header.Get(proto.HeaderRequestID); v != "" && crdt.ValidateReplica(v) == nil {
		return v // the replica id rules are the request id rules: 1-64 of [A-Za-z0-9_-]
	}
	return g.next()
}

// next returns a new id: of a request that sent none, or of a push over a
// live session (pushed key 4).
func (g *requestIDs) next() string {
	return g.prefix + "-" + strconv.FormatUint(g.n.Add(1), 36)
}

// decodeError maps a decode failure to malformed, invalid or too_large.
// The decoder's own words (Go types, library names) go to the log, not to
// the client.
func decodeError(what string, err error) error {
	if e := (*proto.Error)(nil); errors.As(err, &e) {
		return e // the server's own refusal while decoding (chargeDecoded)
	}
	switch {
	case errors.Is(err, crdt.ErrTooLarge):
		return withCause(proto.Errorf(proto.CodeTooLarge, "%s: %s", what, publicText(err)), err)
	case errors.Is(err, crdt.ErrInvalid):
		return withCause(proto.Errorf(proto.CodeInvalid, "%s: %s", what, publicText(err)), err)
	}
	return withCause(proto.Errorf(proto.CodeMalformed, "%s: not CBOR of the shape docs/protocol.md gives", what), err)
}

func withCause(e *proto.Error, cause error) *proto.Error {
	e.Cause = cause
	return e
}

// internalPrefixes are the package prefixes of the sentinel errors that
// wrap what the model's validation says of a client's data.
var internalPrefixes = []string{
	crdt.ErrInvalid.Error() + ": ", crdt.ErrTooLarge.Error() + ": ", crdt.ErrMalformed.Error() + ": ",
	crdt.ErrClockDrift.Error() + ": ", engine.ErrQuotaExceeded.Error() + ": ",
	engine.ErrOutOfScope.Error() + ": ", engine.ErrSchema.Error() + ": ", engine.ErrCollected.Error() + ": ",
	"clock observe: ",
}

// publicText renders the error of a refused input for the client that sent
// it: what was wrong with its data, without the sentinels' package
// prefixes. Only errors about the client's own input go through it; store
// and internal errors are never shown (writeError).
func publicText(err error) string {
	msg := err.Error()
	if errors.Is(err, crdt.ErrMalformed) && strings.Contains(msg, "cbor: ") {
		return "not CBOR of the shape docs/protocol.md gives" // the codec's words name Go types
	}
	for _, p := range internalPrefixes {
		msg = strings.ReplaceAll(msg, p, "")
	}
	return cutMessage(msg)
}

// cutMessage cuts msg to maxMessageBytes at a character boundary, ending
// it with an ellipsis when it cuts. It is the last step of every message
// the server writes: publicText, and each place an error's message goes on
// the wire (writeErrorAs, a live error or pushed message), which may have
// put words of its own before the quote, or quoted a header or query.
func cutMessage(msg string) string {
	if len(msg) <= maxMessageBytes {
		return msg
	}
	const more = "…"
	n := maxMessageBytes - len(more)
	for n > 0 && !utf8.RuneStart(msg[n]) {
		n--
	}
	return msg[:n] + more
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
