// Command _goserver runs the real sync server (transport + engine + the
// in-memory store) on a free loopback port for the JavaScript client's tests,
// with the embedded library at /convergo/ and, with -pages, test pages at
// /pages/.
// It prints "listening http://127.0.0.1:PORT" on stdout and stops when its
// stdin closes, so a test that dies does not leave it behind. The directory
// name starts with "_" so that ./... patterns leave it out of builds.
//
// The JS tests use `convergo serve` instead once cmd/convergo has it; this
// keeps them running against the real server meanwhile.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/convergo/convergo/engine"
	"github.com/convergo/convergo/jsclient"
	"github.com/convergo/convergo/stores/memory"
	"github.com/convergo/convergo/transport"
)

func main() {
	secret := flag.String("secret", "", "HS256 secret for tokens (empty: anonymous demo access only)")
	demo := flag.Bool("demo", true, "let clients without a token use demo.todos")
	pages := flag.String("pages", "", "a directory of test pages to serve at /pages/")
	flag.Parse()
	if err := run(*secret, *demo, *pages); err != nil {
		log.Fatal(err)
	}
}

func run(secret string, demo bool, pages string) error {
	store := memory.New()
	defer store.Close()
	eng, err := engine.Open(engine.Config{Store: store})
	if err != nil {
		return err
	}
	defer eng.Close()
	cfg := transport.Config{Engine: eng, Demo: demo, PingInterval: 2 * time.Second, IdleTimeout: 10 * time.Second}
	if secret != "" {
		j, err := transport.NewJWT([]byte(secret), nil)
		if err != nil {
			return err
		}
		cfg.Authorizer = j
	}
	srv, err := transport.New(cfg)
	if err != nil {
		return err
	}
	srv.Handle("/convergo/", http.StripPrefix("/convergo/", http.FileServerFS(jsclient.Library())))
	if pages != "" {
		srv.Handle("/pages/", http.StripPrefix("/pages/", http.FileServer(http.Dir(pages))))
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	fmt.Printf("listening http://%s\n", ln.Addr())
	_, _ = io.Copy(io.Discard, os.Stdin) // until the test closes stdin
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = srv.Shutdown(ctx)
	return hs.Shutdown(ctx)
}
