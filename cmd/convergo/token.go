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

// tokenArgs are the flags of convergo token.
type tokenArgs struct {
	sub, secret, id  string
	audience, issuer string
	read, write      listFlag
	claims           claimFlag
	scopes           scopeFlag
	ttl              time.Duration
}

// tokenFlags returns the flags of convergo token, writing its usage to stderr.
func tokenFlags(stderr io.Writer) (*flag.FlagSet, *tokenArgs) {
	var a tokenArgs
	fs := flag.NewFlagSet("convergo token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&a.sub, "sub", "", "the token's `subject` (user or service id); required")
	fs.Var(&a.read, "read", "collection `patterns` the subject may pull and subscribe to: name, prefix.* or *; comma-separated or repeated")
	fs.Var(&a.write, "write", "collection `patterns` the subject may push to")
	fs.DurationVar(&a.ttl, "ttl", time.Hour, "how long the token is valid: its `lifetime` (90m, 24h; positive)")
	fs.StringVar(&a.id, "id", "", "the token's `id` (jti), which convergo deny --token-id can name")
	fs.Var(&a.claims, "claim", "a further claim `name=JSON` for scope parameters ($claims.name), repeated (--claim 'teams=[\"red\"]')")
	fs.Var(&a.scopes, "scope", "a scope the token imposes, `PATTERN=TEXT` in the scope text form, repeated (--scope 'todos.*=owner == $sub')")
	fs.StringVar(&a.secret, "secret", "", "the server's HS256 `secret` (CONVERGO_SECRET); required")
	fs.StringVar(&a.audience, "audience", "", "the server's `name` for the aud claim, as its --audience (CONVERGO_AUDIENCE); empty: no aud")
	fs.StringVar(&a.issuer, "issuer", "", "the `issuer` for the iss claim, as the server's --issuer (CONVERGO_ISSUER); empty: no iss")
	return fs, &a
}

// token prints a token signed with the server's secret.
func token(args []string, stdout, stderr io.Writer) error {
	fs, a := tokenFlags(stderr)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if a.sub == "" {
		return errors.New("--sub is required")
	}
	if a.secret == "" {
		return errors.New("--secret (or CONVERGO_SECRET) is required")
	}
	if a.ttl <= 0 {
		return badFlag("ttl", a.ttl, "must be positive")
	}
	if len(a.read) == 0 && len(a.write) == 0 {
		return errors.New("give --read and/or --write: a token without patterns grants nothing")
	}
	j, err := transport.NewJWTWith(transport.JWTConfig{Secret: []byte(a.secret), Audience: a.audience, Issuer: a.issuer})
	if err != nil {
		return err
	}
	tok, err := j.IssueToken(transport.TokenSpec{Subject: a.sub, Read: a.read, Write: a.write, TTL: a.ttl, ID: a.id,
		Claims: a.claims, Scopes: a.scopes})
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
