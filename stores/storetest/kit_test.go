package storetest_test

import (
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/stores/storetest"
)

// The example store of docs/embedding.md passes the conformance suite and
// the convergence simulation.
func TestMapStore(t *testing.T) {
	f := func(testing.TB) stores.Store { return newMapStore() }
	storetest.Run(t, f)
	t.Run("Converge", func(t *testing.T) { storetest.Converge(t, f) })
}

// Each broken variant fails Converge with a message naming the rule it
// breaks.
func TestConvergeNamesBrokenRules(t *testing.T) {
	for _, tc := range []struct{ bug, rule string }{
		{"drop-log", storetest.RuleLogComplete},
		{"reorder", storetest.RuleLogOrder},
		{"lose-field", storetest.RuleMerge},
	} {
		t.Run(tc.bug, func(t *testing.T) {
			ft := &failureTB{TB: t}
			ft.run(func() {
				storetest.Converge(ft, func(testing.TB) stores.Store {
					s := newMapStore()
					s.bug = tc.bug
					return s
				})
			})
			if !ft.Failed() {
				t.Fatalf("Converge passed the %s store", tc.bug)
			}
			t.Log(firstLine(ft.out.String(), "[rapid]"))
			if !strings.Contains(ft.out.String(), tc.rule) {
				t.Fatalf("the failure does not name %q:\n%s", tc.rule, ft.out.String())
			}
		})
	}
}

// failureTB records what a check reports instead of failing the test.
type failureTB struct {
	testing.TB
	mu     sync.Mutex
	out    strings.Builder
	failed bool
}

func (f *failureTB) run(fn func()) {
	done := make(chan struct{})
	go func() { defer close(done); fn() }()
	<-done
}

func (f *failureTB) note(failed bool, msg string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failed = f.failed || failed
	f.out.WriteString(msg + "\n")
}

func (f *failureTB) Errorf(format string, args ...any) { f.note(true, sprintf(format, args...)) }
func (f *failureTB) Error(args ...any)                 { f.note(true, sprint(args...)) }
func (f *failureTB) Fatalf(format string, args ...any) {
	f.note(true, sprintf(format, args...))
	runtime.Goexit()
}
func (f *failureTB) Fatal(args ...any)               { f.note(true, sprint(args...)); runtime.Goexit() }
func (f *failureTB) Logf(format string, args ...any) { f.note(false, sprintf(format, args...)) }
func (f *failureTB) Log(args ...any)                 { f.note(false, sprint(args...)) }
func (f *failureTB) Fail()                           { f.note(true, "") }
func (f *failureTB) FailNow()                        { f.note(true, ""); runtime.Goexit() }
func (f *failureTB) Failed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.failed
}

func sprintf(format string, args ...any) string { return fmt.Sprintf(format, args...) }
func sprint(args ...any) string                 { return fmt.Sprint(args...) }

// firstLine returns the line of s holding sub and the one after it.
func firstLine(s, sub string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		if strings.Contains(l, sub) && i+1 < len(lines) {
			return l + "\n" + lines[i+1]
		}
	}
	return ""
}
