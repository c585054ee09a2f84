package main

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/convergo/convergo/stores/storetest"
)

// closer calls began, then closes at once, or once release is closed.
type closer struct {
	began   func()
	release chan struct{}
	err     error
}

func (c closer) Close() error {
	if c.began != nil {
		c.began()
	}
	if c.release != nil {
		<-c.release
	}
	return c.err
}

// TestCloseWithin holds closeWithin to --shutdown-timeout: closing the
// engine and the store is waited for until the shutdown's context ends,
// and no longer; what is left unclosed is logged at error and returned
// as errUnclosed (main exits 1).
func TestCloseWithin(t *testing.T) {
	stuck := make(chan struct{})
	t.Cleanup(func() { close(stuck) })
	done, cancel := context.WithCancel(context.Background())
	cancel()
	// The deadline comes while the store closes, the engine closed.
	late, expire := context.WithCancel(context.Background())
	t.Cleanup(expire)
	for _, tc := range []struct {
		name       string
		ctx        context.Context
		eng, store closer
		wantErr    error
		wantLog    string
	}{
		{"both close", context.Background(), closer{}, closer{}, nil, `msg=stopped`},
		{"store fails to close", context.Background(), closer{}, closer{err: errors.New("boom")}, nil, `level=ERROR msg="close store" err=boom`},
		{"engine stuck", done, closer{release: stuck}, closer{}, errUnclosed,
			`level=ERROR msg="shutdown: not closed within the timeout" unclosed="engine and store"`},
		{"store stuck", late, closer{}, closer{began: expire, release: stuck}, errUnclosed,
			`level=ERROR msg="shutdown: not closed within the timeout" unclosed=store`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs storetest.LogBuffer
			log := slog.New(slog.NewTextHandler(&logs, nil))
			err := closeWithin(tc.ctx, log, 0, tc.eng, tc.store)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("closeWithin: %v, want %v", err, tc.wantErr)
			}
			if !strings.Contains(logs.String(), tc.wantLog) {
				t.Errorf("logs:\n%s\nwant a line with %s", logs.String(), tc.wantLog)
			}
		})
	}
}
