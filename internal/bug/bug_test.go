package bug

import (
	"errors"
	"strings"
	"testing"
)

func TestRecovered(t *testing.T) {
	failed := errors.New("failed")
	tests := []struct {
		name      string
		f         func() error
		want      error // errors.Is
		wantPanic bool
	}{
		{"nil", func() error { return nil }, nil, false},
		{"an error", func() error { return failed }, failed, false},
		{"a panic", func() error { panic("a bug") }, ErrPanic, true},
		{"a nil map write", func() error { var m map[string]int; m["a"] = 1; return nil }, ErrPanic, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Recovered(tt.f)
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
			if tt.wantPanic && !strings.Contains(err.Error(), "bug_test.go") {
				t.Fatalf("got %v, want the panic's stack", err)
			}
		})
	}
}
