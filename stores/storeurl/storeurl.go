// Package storeurl opens a store from a URL, the form the convergo binary's
// --store flag takes, so that embedding programs and tools name stores the
// same way:
//
//	memory:
//	bolt:PATH
//	redis://[user:pass@]host:port[/db][?prefix=P&capture=COLL=PATTERN[;mirror]...&written_cache=BYTES]
//	redis-cluster://host:port[,host:port...][?prefix=P&capture=...&written_cache=BYTES]
//	dynamodb://TABLE[?region=R&endpoint=URL&create=1&capture=0&poll=D&shards=K,COLL:K&turn=D|off]
//
// A Redis URL's capture parameter, repeatable, is one redis.CaptureRule:
// capture=todos=app:todo:* captures writes other programs make to the
// hashes app:todo:<id> into collection todos, and a trailing ;mirror also
// writes merged records back into them (docs/redis.md, "Capture"). The
// query is split at '&' only, so the ';' needs no escaping; a '&', '%' or
// '#' in a pattern is written %26, %25, %23. written_cache=32MiB (bytes,
// or KiB, MiB, GiB) sets redis.Options.WrittenCacheBytes: it spares Redis
// the read of records this server wrote last, for some of its own CPU.
//
// It imports every store of this module; a program that uses one store
// and wants no other dependency opens that store's package directly.
package storeurl

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/stores/bolt"
	"github.com/convergo/convergo/stores/dynamodb"
	"github.com/convergo/convergo/stores/memory"
	"github.com/convergo/convergo/stores/redis"
)

// Spec is a parsed store URL: the kind of store and its options.
type Spec struct {
	// Kind is "memory", "bolt", "redis" (a single node or a cluster) or
	// "dynamodb".
	Kind string
	// Path is the file of a bolt store.
	Path string
	// Redis and DynamoDB are the options of those kinds, as parsed; Open
	// adds Options' Logger (and CreateTable).
	Redis    redis.Options
	DynamoDB dynamodb.Options
}

// Parse parses a store URL:
//
//	memory:
//	bolt:PATH
//	redis://[user:pass@]host:port[/db][?prefix=P&capture=COLL=PATTERN[;mirror]...&written_cache=BYTES]
//	redis-cluster://host:port[,host:port...][?prefix=P&capture=...&written_cache=BYTES]
//	dynamodb://TABLE[?region=R&endpoint=URL&create=1&capture=0&poll=D&shards=K,COLL:K&turn=D|off]
func Parse(raw string) (Spec, error) {
	scheme, rest, ok := strings.Cut(raw, ":")
	if !ok {
		return Spec{}, fmt.Errorf("store %q: want memory:, bolt:PATH, redis://..., redis-cluster://... or dynamodb://TABLE", raw)
	}
	switch scheme {
	case "memory":
		if rest != "" {
			return Spec{}, fmt.Errorf("store %q: memory: takes nothing after the colon", redactRefused(raw))
		}
		return Spec{Kind: "memory"}, nil
	case "bolt":
		path := strings.TrimPrefix(rest, "//")
		if path == "" {
			return Spec{}, fmt.Errorf("store %q: bolt: needs a file path", raw)
		}
		return Spec{Kind: "bolt", Path: path}, nil
	case "redis", "redis-cluster":
		return parseRedis(scheme, rest, raw)
	case "dynamodb":
		return parseDynamo(raw)
	}
	return Spec{}, fmt.Errorf("store %q: unknown kind %q", redactRefused(raw), scheme)
}

// parseRedis is parseRedisParts, but where the URL's only '@' comes after
// its '?' (a password holding a '?', which must be written %3F, split by
// the query) its error says only that: the parts of the password were
// taken for a database, a host or a parameter, and an error that named
// them would show them.
func parseRedis(scheme, rest, raw string) (Spec, error) {
	spec, err := parseRedisParts(scheme, rest, raw)
	authority, query, _ := strings.Cut(rest, "?")
	if err != nil && !strings.Contains(authority, "@") && strings.Contains(query, "@") {
		return Spec{}, fmt.Errorf("store %q: not a URL it can read; a '?' in the password must be written %%3F", redactRefused(raw))
	}
	return spec, err
}

func parseRedisParts(scheme, rest, raw string) (Spec, error) {
	if !strings.HasPrefix(rest, "//") {
		return Spec{}, fmt.Errorf("store %q: want %s://host:port", redactRefused(raw), scheme)
	}
	rest = rest[2:]
	rest, query, _ := strings.Cut(rest, "?")
	q, err := splitQuery(query)
	if err != nil {
		return Spec{}, fmt.Errorf("store %q: query: %w", redactRefused(raw), err)
	}
	var o redis.Options
	if at := strings.LastIndex(rest, "@"); at >= 0 {
		user, pass, hasPass := strings.Cut(rest[:at], ":")
		if o.Username, err = url.PathUnescape(user); err != nil {
			return Spec{}, fmt.Errorf("store %q: user: %w", redactRefused(raw), err)
		}
		if hasPass {
			if o.Password, err = url.PathUnescape(pass); err != nil {
				return Spec{}, fmt.Errorf("store %q: password: %w", redactRefused(raw), err)
			}
		}
		rest = rest[at+1:]
	}
	hosts, db, hasDB := strings.Cut(rest, "/")
	if hasDB && db != "" {
		if scheme == "redis-cluster" {
			return Spec{}, fmt.Errorf("store %q: a cluster has only database 0", redactRefused(raw))
		}
		if o.DB, err = strconv.Atoi(db); err != nil || o.DB < 0 {
			return Spec{}, fmt.Errorf("store %q: database %q is not a number", redactRefused(raw), db)
		}
	}
	for _, h := range strings.Split(hosts, ",") {
		if h == "" {
			return Spec{}, fmt.Errorf("store %q: empty host", redactRefused(raw))
		}
		if !strings.Contains(h, ":") {
			h += ":6379"
		}
		o.Addrs = append(o.Addrs, h)
	}
	if scheme == "redis" && len(o.Addrs) > 1 {
		return Spec{}, fmt.Errorf("store %q: several hosts: use redis-cluster://", redactRefused(raw))
	}
	o.Cluster = scheme == "redis-cluster"
	given := map[string]bool{}
	for _, p := range q {
		if given[p.key] && p.key != "capture" { // capture is repeatable: one rule each
			return Spec{}, fmt.Errorf("store %q: parameter %q given twice", redactRefused(raw), p.key)
		}
		given[p.key] = true
		switch p.key {
		case "prefix":
			o.KeyPrefix = p.value
		case "capture":
			r, err := parseCaptureRule(p.value)
			if err != nil {
				return Spec{}, fmt.Errorf("store %q: capture=%s: %w", redactRefused(raw), p.value, err)
			}
			o.Capture = append(o.Capture, r)
		case "written_cache":
			n, err := parseBytes(p.value)
			if err != nil {
				return Spec{}, fmt.Errorf("store %q: written_cache=%s: %w", redactRefused(raw), p.value, err)
			}
			o.WrittenCacheBytes = n
		default:
			return Spec{}, fmt.Errorf("store %q: unknown parameter %q (known: prefix, capture, written_cache)", redactRefused(raw), p.key)
		}
	}
	return Spec{Kind: "redis", Redis: o}, nil
}

// parseBytes reads a count of bytes: digits, optionally followed by KiB,
// MiB or GiB.
func parseBytes(v string) (int, error) {
	digits, unit := v, 1
	for _, u := range []struct {
		suffix string
		n      int
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}} {
		if d, ok := strings.CutSuffix(v, u.suffix); ok {
			digits, unit = d, u.n
			break
		}
	}
	n, err := strconv.ParseUint(digits, 10, 63)
	if err != nil || n > math.MaxInt64/uint64(unit) {
		return 0, errors.New("want a count of bytes, such as 33554432 or 32MiB")
	}
	return int(n) * unit, nil
}

type param struct{ key, value string }

// splitQuery splits a query at '&' only (url.ParseQuery refuses ';', which
// capture rules use), unescaping keys and values, in order.
func splitQuery(query string) ([]param, error) {
	var out []param
	for _, kv := range strings.Split(query, "&") {
		if kv == "" {
			continue
		}
		k, v, _ := strings.Cut(kv, "=")
		k, err := url.QueryUnescape(k)
		if err != nil {
			return nil, err
		}
		if v, err = url.QueryUnescape(v); err != nil {
			return nil, err
		}
		out = append(out, param{k, v})
	}
	return out, nil
}

// parseCaptureRule reads COLL=PATTERN[;mirror]. The store checks the rule
// itself when it opens (redis.CaptureRule).
func parseCaptureRule(v string) (redis.CaptureRule, error) {
	var r redis.CaptureRule
	v, r.Mirror = strings.CutSuffix(v, ";mirror")
	coll, pattern, ok := strings.Cut(v, "=")
	if !ok || coll == "" || pattern == "" {
		return r, errors.New("want COLLECTION=KEYPATTERN or COLLECTION=KEYPATTERN;mirror")
	}
	r.Collection, r.KeyPattern = coll, pattern
	return r, nil
}

// parseDynamo uses the dynamodb package's own URL form: capture is on
// unless capture=0, so that instances sharing the table hear each other.
func parseDynamo(raw string) (Spec, error) {
	o, err := dynamodb.ParseURL(raw)
	if err != nil {
		return Spec{}, err
	}
	return Spec{Kind: "dynamodb", DynamoDB: o}, nil
}

// Redact hides the password of a store URL for logs and errors. The
// user information ends where Parse ends it, at the last '@' before the
// query: a '/' in a password is the password's (it was taken for the end
// of the host, and such a URL was logged whole). A URL Parse refuses is
// hidden up to its last '@', wherever it is: its password may hold a '?'.
func Redact(raw string) string {
	if _, err := Parse(raw); err != nil {
		return redactRefused(raw)
	}
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return raw
	}
	authority, _, _ := strings.Cut(rest, "?")
	return redactAt(scheme, rest, strings.LastIndex(authority, "@"))
}

// redactRefused is Redact of a URL Parse refuses (Parse's own errors).
func redactRefused(raw string) string {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return raw
	}
	return redactAt(scheme, rest, strings.LastIndex(rest, "@"))
}

// redactAt hides the password of the user information rest[:at].
func redactAt(scheme, rest string, at int) string {
	if at < 0 {
		return scheme + "://" + rest
	}
	user, _, hasPass := strings.Cut(rest[:at], ":")
	if !hasPass {
		return scheme + "://" + rest
	}
	return scheme + "://" + user + ":xxxxx" + rest[at:]
}

// Options are what Open adds to a URL's own options.
type Options struct {
	// Logger receives the store's logs. Nil discards them.
	Logger *slog.Logger
	// CreateTable creates a DynamoDB table that does not exist, as the
	// URL's create=1 does.
	CreateTable bool
	// Restoring says the store is opened to be marked restored (`convergo
	// store mark-restored`): bolt.Options.Restoring,
	// dynamodb.Options.Restoring.
	Restoring bool
	// Existing opens only a store that exists already, one a server made
	// (the operator's tools: convergo deny, store, repair): a bolt file
	// that is not there, a DynamoDB table that does not exist (CreateTable
	// and create=1 are ignored) or a Redis prefix and database without a
	// store's identity (redis.Options.Existing) is an error, and nothing
	// is created.
	Existing bool
}

// Open parses raw (see Parse) and opens the store it names.
func Open(ctx context.Context, raw string, opts Options) (stores.Store, error) {
	spec, err := Parse(raw)
	if err != nil {
		return nil, err
	}
	s, err := spec.Open(ctx, opts)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", Redact(raw), err)
	}
	return s, nil
}

// Open opens the store of spec.
func (spec Spec) Open(ctx context.Context, opts Options) (stores.Store, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	switch spec.Kind {
	case "memory":
		return memory.New(), nil
	case "bolt":
		if opts.Existing {
			if _, err := os.Stat(spec.Path); err != nil {
				abs, _ := filepath.Abs(spec.Path)
				return nil, fmt.Errorf("no store file at %s (%s): give the path the server serves: %w", spec.Path, abs, err)
			}
		}
		return bolt.Open(ctx, spec.Path, bolt.Options{Logger: log, Restoring: opts.Restoring})
	case "redis":
		o := spec.Redis
		o.Logger = log
		o.Existing = opts.Existing
		return redis.Open(ctx, o)
	case "dynamodb":
		o := spec.DynamoDB
		o.CreateTable = (o.CreateTable || opts.CreateTable) && !opts.Existing
		o.Logger = log
		o.Restoring = opts.Restoring
		return dynamodb.Open(ctx, o)
	}
	return nil, errors.New("unknown store kind " + spec.Kind)
}
