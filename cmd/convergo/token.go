package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/convergo/convergo/crdt/scope"
	"github.com/convergo/convergo/transport"
)

// token prints a token signed with the server's secret.
func token(args []string, stdout, stderr io.Writer) error {
	var (
		sub, secret, id  string
		audience, issuer string
		read, write      listFlag
		claims           claimFlag
		scopes           scopeFlag
		ttl              time.Duration
	)
	fs := flag.NewFlagSet("convergo token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&sub, "sub", "", "the token's `subject` (user or service id); required")
	fs.Var(&read, "read", "collection `patterns` the subject may pull and subscribe to: name, prefix.* or *; comma-separated or repeated")
	fs.Var(&write, "write", "collection `patterns` the subject may push to")
	fs.DurationVar(&ttl, "ttl", time.Hour, "how long the token is valid")
	fs.StringVar(&id, "id", "", "the token's `id` (jti), which convergo deny --token-id can name")
	fs.Var(&claims, "claim", "a further claim `name=JSON` for scope parameters ($claims.name), repeated (--claim 'teams=[\"red\"]')")
	fs.Var(&scopes, "scope", "a scope the token imposes, `PATTERN=TEXT` in the scope text form, repeated (--scope 'todos.*=owner == $sub')")
	fs.StringVar(&secret, "secret", "", "the server's HS256 `secret` (CONVERGO_SECRET); required")
	fs.StringVar(&audience, "audience", "", "the server's `name` for the aud claim, as its --audience (CONVERGO_AUDIENCE); empty: no aud")
	fs.StringVar(&issuer, "issuer", "", "the iss claim, as the server's --issuer (CONVERGO_ISSUER); empty: no iss")
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
	j, err := transport.NewJWTWith(transport.JWTConfig{Secret: []byte(secret), Audience: audience, Issuer: issuer})
	if err != nil {
		return err
	}
	tok, err := j.IssueToken(transport.TokenSpec{Subject: sub, Read: read, Write: write, TTL: ttl, ID: id,
		Claims: claims, Scopes: scopes})
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, tok)
	return err
}

// claimFlag collects --claim name=JSON.
type claimFlag map[string]any

func (c *claimFlag) String() string { return fmt.Sprint(map[string]any(*c)) }

func (c *claimFlag) Set(v string) error {
	name, value, ok := strings.Cut(v, "=")
	if !ok || name == "" {
		return fmt.Errorf("%q: want name=JSON", v)
	}
	// Numbers keep their text: a float64 would sign an integer past 2^53
	// (a 64-bit id) as another.
	d := json.NewDecoder(strings.NewReader(value))
	d.UseNumber()
	var x any
	if err := d.Decode(&x); err != nil {
		return fmt.Errorf("claim %s: %w", name, err)
	}
	if _, err := d.Token(); err != io.EOF {
		return fmt.Errorf("claim %s: %q is not one JSON value", name, value)
	}
	if *c == nil {
		*c = claimFlag{}
	}
	(*c)[name] = x
	return nil
}

// scopeFlag collects --scope PATTERN=TEXT.
type scopeFlag map[string]*scope.Pred

func (s *scopeFlag) String() string { return fmt.Sprint(map[string]*scope.Pred(*s)) }

func (s *scopeFlag) Set(v string) error {
	pattern, text, ok := strings.Cut(v, "=")
	if !ok || pattern == "" {
		return fmt.Errorf("%q: want PATTERN=TEXT", v)
	}
	if err := transport.ValidatePattern(pattern); err != nil {
		return err
	}
	p, err := scope.Parse(text)
	if err != nil {
		return fmt.Errorf("scope %s: %w", pattern, err)
	}
	if *s == nil {
		*s = scopeFlag{}
	}
	(*s)[pattern] = p
	return nil
}
