package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	goredis "github.com/redis/go-redis/v9"
)

// redisLog carries what the Redis client library logs (failed dials of
// its connection pools, say) to the server's logger, at WARN: by default
// the library writes plain-text lines to stderr past the handler the
// operator chose, which break a log pipeline reading --log-format json.
// The library holds one logger per process; main, which chooses the
// handler, sets it (routeRedisLogs).
type redisLog struct{ log *slog.Logger }

func (l redisLog) Printf(ctx context.Context, format string, v ...any) {
	l.log.WarnContext(ctx, strings.TrimPrefix(fmt.Sprintf(format, v...), "redis: "))
}

// routeRedisLogs sends the Redis client library's logs to log.
func routeRedisLogs(log *slog.Logger) {
	goredis.SetLogger(redisLog{log: log.With("component", "go-redis")})
}
