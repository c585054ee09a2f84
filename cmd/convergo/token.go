package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/convergo/convergo/transport"
)

// token prints a token signed with the server's secret.
func token(args []string, stdout, stderr io.Writer) error {
	var (
		sub, secret string
		read, write listFlag
		ttl         time.Duration
	)
	fs := flag.NewFlagSet("convergo token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&sub, "sub", "", "the token's `subject` (user or service id); required")
	fs.Var(&read, "read", "collection `patterns` the subject may pull and subscribe to: name, prefix.* or *; comma-separated or repeated")
	fs.Var(&write, "write", "collection `patterns` the subject may push to")
	fs.DurationVar(&ttl, "ttl", time.Hour, "how long the token is valid")
	fs.StringVar(&secret, "secret", "", "the server's HS256 `secret` (CONVERGO_SECRET); required")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if sub == "" {
		return errors.New("--sub is required")
	}
	if secret == "" {
		return errors.New("--secret (or CONVERGO_SECRET) is required")
	}
	if len(read) == 0 && len(write) == 0 {
		return errors.New("give --read and/or --write: a token without patterns grants nothing")
	}
	j, err := transport.NewJWT([]byte(secret), nil)
	if err != nil {
		return err
	}
	tok, err := j.Issue(sub, read, write, ttl)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, tok)
	return err
}
