package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"strings"

	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/stores/bolt"
	"github.com/convergo/convergo/stores/dynamodb"
	"github.com/convergo/convergo/stores/memory"
	"github.com/convergo/convergo/stores/redis"
)

// storeSpec is a parsed --store URL.
type storeSpec struct {
	kind   string // memory, bolt, redis, dynamodb
	path   string // bolt
	redis  redis.Options
	dynamo dynamodb.Options
}

// parseStore parses a store URL:
//
//	memory:
//	bolt:PATH
//	redis://[user:pass@]host:port[/db][?prefix=P]
//	redis-cluster://host:port[,host:port...][?prefix=P]
//	dynamodb://TABLE[?region=R&endpoint=URL&create=1&capture=0&poll=D]
func parseStore(raw string) (storeSpec, error) {
	scheme, rest, ok := strings.Cut(raw, ":")
	if !ok {
		return storeSpec{}, fmt.Errorf("store %q: want memory:, bolt:PATH, redis://..., redis-cluster://... or dynamodb://TABLE", raw)
	}
	switch scheme {
	case "memory":
		if rest != "" {
			return storeSpec{}, fmt.Errorf("store %q: memory: takes nothing after the colon", raw)
		}
		return storeSpec{kind: "memory"}, nil
	case "bolt":
		path := strings.TrimPrefix(rest, "//")
		if path == "" {
			return storeSpec{}, fmt.Errorf("store %q: bolt: needs a file path", raw)
		}
		return storeSpec{kind: "bolt", path: path}, nil
	case "redis", "redis-cluster":
		return parseRedis(scheme, rest, raw)
	case "dynamodb":
		return parseDynamo(raw)
	}
	return storeSpec{}, fmt.Errorf("store %q: unknown kind %q", raw, scheme)
}

func parseRedis(scheme, rest, raw string) (storeSpec, error) {
	if !strings.HasPrefix(rest, "//") {
		return storeSpec{}, fmt.Errorf("store %q: want %s://host:port", redact(raw), scheme)
	}
	rest = rest[2:]
	rest, query, _ := strings.Cut(rest, "?")
	q, err := url.ParseQuery(query)
	if err != nil {
		return storeSpec{}, fmt.Errorf("store %q: query: %w", redact(raw), err)
	}
	var o redis.Options
	if at := strings.LastIndex(rest, "@"); at >= 0 {
		user, pass, hasPass := strings.Cut(rest[:at], ":")
		if o.Username, err = url.PathUnescape(user); err != nil {
			return storeSpec{}, fmt.Errorf("store %q: user: %w", redact(raw), err)
		}
		if hasPass {
			if o.Password, err = url.PathUnescape(pass); err != nil {
				return storeSpec{}, fmt.Errorf("store %q: password: %w", redact(raw), err)
			}
		}
		rest = rest[at+1:]
	}
	hosts, db, hasDB := strings.Cut(rest, "/")
	if hasDB && db != "" {
		if scheme == "redis-cluster" {
			return storeSpec{}, fmt.Errorf("store %q: a cluster has only database 0", redact(raw))
		}
		if o.DB, err = strconv.Atoi(db); err != nil || o.DB < 0 {
			return storeSpec{}, fmt.Errorf("store %q: database %q is not a number", redact(raw), db)
		}
	}
	for _, h := range strings.Split(hosts, ",") {
		if h == "" {
			return storeSpec{}, fmt.Errorf("store %q: empty host", redact(raw))
		}
		if !strings.Contains(h, ":") {
			h += ":6379"
		}
		o.Addrs = append(o.Addrs, h)
	}
	if scheme == "redis" && len(o.Addrs) > 1 {
		return storeSpec{}, fmt.Errorf("store %q: several hosts: use redis-cluster://", redact(raw))
	}
	o.Cluster = scheme == "redis-cluster"
	for k, v := range q {
		switch k {
		case "prefix":
			o.KeyPrefix = v[0]
		default:
			return storeSpec{}, fmt.Errorf("store %q: unknown parameter %q (known: prefix)", redact(raw), k)
		}
	}
	return storeSpec{kind: "redis", redis: o}, nil
}

// parseDynamo uses the dynamodb package's own URL form: capture is on
// unless capture=0, so that instances sharing the table hear each other.
func parseDynamo(raw string) (storeSpec, error) {
	o, err := dynamodb.ParseURL(raw)
	if err != nil {
		return storeSpec{}, err
	}
	return storeSpec{kind: "dynamodb", dynamo: o}, nil
}

// redact hides the password of a store URL for logs and errors.
func redact(raw string) string {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return raw
	}
	hostEnd := len(rest)
	if i := strings.IndexAny(rest, "/?"); i >= 0 {
		hostEnd = i
	}
	at := strings.LastIndex(rest[:hostEnd], "@")
	if at < 0 {
		return raw
	}
	user, _, hasPass := strings.Cut(rest[:at], ":")
	if !hasPass {
		return raw
	}
	return scheme + "://" + user + ":xxxxx" + rest[at:]
}

// openStore opens the store of spec.
func openStore(ctx context.Context, spec storeSpec, createTable bool, log *slog.Logger) (stores.Store, error) {
	switch spec.kind {
	case "memory":
		return memory.New(), nil
	case "bolt":
		return bolt.Open(spec.path, bolt.Options{Logger: log})
	case "redis":
		o := spec.redis
		o.Logger = log
		return redis.Open(ctx, o)
	case "dynamodb":
		o := spec.dynamo
		o.CreateTable = o.CreateTable || createTable
		o.Logger = log
		return dynamodb.Open(ctx, o)
	}
	return nil, errors.New("unknown store kind " + spec.kind)
}
