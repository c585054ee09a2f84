// Package bug turns a panic into an error, for the goroutines a Convergo
// server runs for many clients at once.
//
// A panic on a goroutine nobody recovers ends the process. net/http
// recovers a request's handler, but the server also runs goroutines of
// its own: the live sessions' readers, the broadcast groups' page reads,
// the capture of foreign writes, the collection job. One client's input,
// or one foreign write, that meets a bug there would end every tenant's
// sessions with it. What such a goroutine does for one item (a message, a
// page, a captured change, a run) goes through Recovered, so that the bug
// fails that item, loudly (the error carries the stack), and the
// goroutine goes on.
package bug

import (
	"errors"
	"fmt"
	"runtime/debug"
)

// ErrPanic marks a bug (a panic) that Recovered turned into an error.
// Callers branch on it to log at error level.
var ErrPanic = errors.New("panic")

// Recovered runs f and turns a panic in it into an error wrapping
// ErrPanic, with the panic's value and stack.
func Recovered(f func() error) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("%w: %v\n%s", ErrPanic, v, debug.Stack())
		}
	}()
	return f()
}
