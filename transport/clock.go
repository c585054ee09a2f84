package transport

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/convergo/convergo/engine"
	"github.com/convergo/convergo/transport/proto"
)

// clockRefusal is the refusal of a hello, a push or a restore while the
// engine finds its clock off the store's (engine.ClockHealth), nil
// otherwise. A client takes the hello's server time as its own clock's
// correction (docs/protocol.md, section 6): an instance a year ahead
// would have its clients stamp a year ahead for good, one far behind
// would refuse honest stamps clock_drift. So it serves neither, 503
// unavailable with Retry-After the engine's check period, and clients go
// to another instance (its /readyz fails too) or wait, until a check
// finds the clock back within bounds. The engine logs it at ERROR at each
// check; the metrics say it (convergo_clock_off).
func (s *Server) clockRefusal() error {
	err := s.eng.ClockHealth()
	if err == nil {
		return nil
	}
	var skew *engine.ClockSkewError
	msg := "this server's clock is off its store's"
	if errors.As(err, &skew) {
		way, by := "ahead of", skew.Reading.Skew
		if by < 0 {
			way, by = "behind", -by
		}
		msg = fmt.Sprintf("this server's clock is %v %s its store's (at most %v allowed)", by.Round(time.Second), way, s.eng.MaxClockSkew())
	}
	return &proto.Error{Status: http.StatusServiceUnavailable, Code: proto.CodeUnavailable,
		Message:    msg + ": it serves no hellos or pushes until an operator sets it right; retry later, or with another server",
		RetryAfter: s.clockRetryAfter(), Cause: err}
}

// clockRetryAfter is when a client refused for the clock may try again:
// at the engine's next check.
func (s *Server) clockRetryAfter() time.Duration {
	if d := s.eng.ClockCheckEvery(); d > 0 {
		return d
	}
	return engine.DefaultClockCheckEvery
}
