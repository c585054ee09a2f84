package main

import (
	"flag"
	"io"
	"testing"

	"github.com/convergo/convergo/transport"
)

// The server command runs under the in-process server's limits: its flags
// (benchServeFlags), read as convergo serve reads them, give benchLimits
// back, every field it raises included.
func TestBenchServeFlagsAreBenchLimits(t *testing.T) {
	var got transport.Limits
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Float64Var(&got.Rate, "rate", 0, "")
	fs.IntVar(&got.MaxConnsPerAddr, "max-conns", 0, "")
	fs.IntVar(&got.MaxSessionsPerSubject, "max-sessions", 0, "")
	fs.IntVar(&got.MaxSubscriptionsPerSubject, "max-subscriptions-per-subject", 0, "")
	fs.IntVar(&got.MaxConns, "max-conns-total", 0, "")
	if err := fs.Parse(benchServeFlags()); err != nil {
		t.Fatal(err)
	}
	if got != benchLimits {
		t.Fatalf("got %+v, want %+v", got, benchLimits)
	}
}
