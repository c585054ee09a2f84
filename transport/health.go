package transport

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"
)

// probeCollection is the collection /readyz reads the head of, within
// readyTimeout. /readyz also fails while the engine's commits keep failing
// (engine.WriteHealth): a store can answer reads while refusing writes;
// and while the server's clock is off the store's (engine.ClockHealth,
// clockRefusal). It stays ready while the store parks captured writes
// (engine.ParkedCount): it says how many after its "ok".
//
// /readyz asks for no credentials, and anyone who reaches the port may
// call it: the calls of a period share one read of the store (readyProbe),
// so that calling it in a loop cannot turn into as many reads of the
// store every tenant shares (on DynamoDB, paid ones). readyProbeFresh is
// that period: a change of the store's health shows within it.
//
// /readyz logs what it finds on a change (ready to not ready at WARN, with
// the error; back at INFO) and, while the server stays not ready, the
// error again at most once per readyLogEvery (readyLog): not at each call,
// which a prober makes every few seconds, for as long as the store is down.
const (
	probeCollection = "convergo.readyz"
	readyTimeout    = 5 * time.Second
	readyProbeFresh = time.Second
	readyLogEvery   = time.Minute
)

// readyLog is what /readyz last logged of the server's readiness.
type readyLog struct {
	mu       sync.Mutex
	notReady bool      // the last call found the server not ready
	logged   time.Time // when not ready was last logged
}

// saw logs, with log, the outcome of one call of /readyz at now: err nil
// (ready) or why the server is not ready, said at WARN as msg on a change,
// or again readyLogEvery after it was last said; ready again at INFO.
func (l *readyLog) saw(log *slog.Logger, now time.Time, msg string, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case err == nil && l.notReady:
		l.notReady = false
		log.Info("readiness back: /readyz answers ready again")
	case err == nil:
	case !l.notReady:
		l.notReady, l.logged = true, now
		log.Warn("readiness lost: "+msg, "err", err)
	case now.Sub(l.logged) >= readyLogEvery:
		l.logged = now
		log.Warn("readiness still lost: "+msg, "err", err, "since_last_log", readyLogEvery)
	}
}

// readyProbe is /readyz's read of the store, shared: a call within
// readyProbeFresh of the last read's end takes its outcome, a call while a
// read is in flight waits for it, and any other call reads.
type readyProbe struct {
	mu       sync.Mutex
	last     *probeRun // the last read to end; nil before the first
	inFlight *probeRun
}

// probeRun is one read of the store by /readyz.
type probeRun struct {
	done chan struct{} // closed when the read ended
	at   time.Time     // when it ended
	err  error
}

// check returns the outcome of a shared read of the store by read, or
// ctx's error if ctx ends first. A read runs in its caller's goroutine
// within readyTimeout of its own, whatever happens to the caller's
// request: the others wait for it.
func (p *readyProbe) check(ctx context.Context, read func(context.Context) error) error {
	p.mu.Lock()
	if l := p.last; l != nil && time.Since(l.at) < readyProbeFresh {
		p.mu.Unlock()
		return l.err
	}
	if r := p.inFlight; r != nil {
		p.mu.Unlock()
		select {
		case <-r.done:
			return r.err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	r := &probeRun{done: make(chan struct{})}
	p.inFlight = r
	p.mu.Unlock()

	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), readyTimeout)
	r.err = read(rctx)
	cancel()
	r.at = time.Now()
	p.mu.Lock()
	p.last, p.inFlight = r, nil
	p.mu.Unlock()
	close(r.done)
	return r.err
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = io.WriteString(w, "ok\n")
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
	defer cancel()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if s.isDraining() {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, "shutting down\n")
		return
	}
	err := s.ready.check(ctx, func(ctx context.Context) error {
		_, err := s.eng.Head(ctx, probeCollection)
		return err
	})
	if err != nil {
		s.readyLog.saw(s.log, s.now(), "the store's probe fails", err)
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, "store unavailable\n")
		return
	}
	if err := s.eng.WriteHealth(); err != nil {
		s.readyLog.saw(s.log, s.now(), "the store's writes fail", err)
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, "store writes failing\n")
		return
	}
	if err := s.eng.ClockHealth(); err != nil {
		// The engine logs it at ERROR at each check (clockRefusal).
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, "server clock off the store's: "+err.Error()+"\n")
		return
	}
	s.readyLog.saw(s.log, s.now(), "", nil)
	_, _ = io.WriteString(w, "ok\n")
	if n := s.eng.ParkedCount(); n > 0 {
		// Shown, but ready: a collection whose captured writes fail
		// must not take the server away from every other tenant. The
		// count alone: anyone may call /readyz.
		_, _ = fmt.Fprintf(w, "capture: %d writes of other programs parked (their collection's changes fail; the server's log names them)\n", n)
	}
}
