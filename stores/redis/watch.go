package redis

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
)

// subscriberBuffer is the go-redis channel buffer between the connection
// reader and the subscriber loop. The loop never blocks (watch callbacks
// must not), so it only absorbs bursts; go-redis drops a message only after
// the buffer has been full for a minute.
const subscriberBuffer = 1024

// Watch implements stores.Store. The first call starts the subscriber: one
// pub/sub connection and one goroutine per store, whatever the number of
// watchers, and waits until Redis confirmed the subscription (at most
// Options.DialTimeout), so that every change committed after Watch returns
// is notified while the connection holds. Every (re)subscription of that
// connection, the first included, is reported as a Resync notification,
// because messages published while it was down are lost.
func (s *Store) Watch(fn func(stores.Notification)) (stop func()) {
	stop = s.watchers.Add(fn)
	ready, done := s.startSubscriber()
	select {
	case <-ready:
		return stop
	default:
	}
	t := time.NewTimer(s.subscribeWait)
	defer t.Stop()
	select {
	case <-ready:
	case <-done:
	case <-t.C:
		// Redis is unreachable for now; the subscriber keeps trying and
		// reports a Resync when it gets through.
		s.log.Warn("watch: subscription not confirmed yet; continuing", "channel", s.channel, "waited", s.subscribeWait)
	}
	return stop
}

// startSubscriber starts the subscriber unless it runs (or the store is
// closed) and returns the channel closed at its first subscription and the
// one closed when it stops.
func (s *Store) startSubscriber() (ready, done <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() {
		c := make(chan struct{})
		close(c)
		return c, c
	}
	if s.stopSub == nil {
		ctx, cancel := context.WithCancel(context.Background())
		s.stopSub = cancel
		s.subDone = ctx.Done()
		s.subReady = make(chan struct{})
		s.watchWG.Add(1)
		go s.subscriber(ctx, s.subReady)
	}
	return s.subReady, s.subDone
}

// errSilent ends a subscription whose heartbeat did not come back.
var errSilent = errors.New("no heartbeat on the subscription")

// subscriber runs until Close cancels ctx. It keeps one subscription to
// the notification channel and to the store's heartbeat channel. go-redis
// reconnects a subscription whose connection fails and subscribes again by
// itself; a connection that fails silently (a dead peer or a network path
// that drops packets without a reset) is found by the heartbeat, and the
// subscriber then replaces the whole subscription.
func (s *Store) subscriber(ctx context.Context, ready chan struct{}) {
	defer s.watchWG.Done()
	for ctx.Err() == nil {
		err := s.subscription(ctx, &ready)
		if ctx.Err() != nil {
			return
		}
		s.log.Warn("notification subscription lost; subscribing again", "channel", s.channel, "err", err)
	}
}

// subscription runs one subscription until ctx is done or it falls silent.
// Every (re)subscription, the first included, is reported as a Resync; the
// first one closes *ready.
func (s *Store) subscription(ctx context.Context, ready *chan struct{}) error {
	ps := s.client.Subscribe(ctx) // no channel yet, so no I/O
	defer ps.Close()
	if err := ps.Subscribe(ctx, s.channel, s.heartbeatChannel); err != nil && ctx.Err() == nil {
		// go-redis keeps the channels and subscribes when it reconnects.
		s.log.Warn("subscribe to notifications; retrying", "channel", s.channel, "err", err)
	}
	msgs := ps.ChannelWithSubscriptions(goredis.WithChannelSize(subscriberBuffer))

	// The heartbeat: after heartbeat without a message, publish one to the
	// store's own heartbeat channel; if nothing arrives within heartbeat
	// more, the subscription is silent.
	var idle <-chan time.Time
	var timer *time.Timer
	if s.heartbeat > 0 {
		timer = time.NewTimer(s.heartbeat)
		defer timer.Stop()
		idle = timer.C
	}
	probing := false
	// retry is set while the server did not answer after a
	// (re)subscription.
	var retry <-chan time.Time
	retryTimer := time.NewTimer(time.Hour)
	retryTimer.Stop()
	defer retryTimer.Stop()
	retryWait := retryFirst
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-retry:
			if s.readable(ctx) {
				retry = nil
				s.watchers.Notify(stores.Notification{Resync: true})
				continue
			}
			retryWait = min(2*retryWait, retryMax)
			retryTimer.Reset(retryWait)
		case <-idle:
			if probing {
				return errSilent
			}
			probing = true
			timer.Reset(s.heartbeat)
			pctx, cancel := context.WithTimeout(ctx, s.heartbeat)
			err := s.client.Publish(pctx, s.heartbeatChannel, "").Err()
			cancel()
			if err != nil && ctx.Err() == nil {
				s.log.Debug("publish heartbeat", "err", err)
			}
		case m, ok := <-msgs:
			if !ok {
				return errors.New("subscription closed")
			}
			if timer != nil {
				probing = false
				if !timer.Stop() {
					select {
					case <-timer.C:
					default:
					}
				}
				timer.Reset(s.heartbeat)
			}
			switch m := m.(type) {
			case *goredis.Subscription:
				if m.Kind != "subscribe" {
					continue
				}
				// One confirmation per channel, counting the channels of the
				// connection: the subscription is complete at the second,
				// at the start and after every reconnection.
				if m.Count < 2 {
					continue
				}
				s.log.Debug("subscribed to notifications", "channel", s.channel)
				// A restart or failover broke the connection: check the
				// servers' run before the watchers re-read anything.
				if !s.readable(ctx) {
					// The watchers' head reads would fail too (a server
					// still loading, say): retry until the server answers,
					// then tell them again.
					retryWait = retryFirst
					retryTimer.Reset(retryWait)
					retry = retryTimer.C
				}
				s.watchers.Notify(stores.Notification{Resync: true})
				if *ready != nil {
					close(*ready)
					*ready = nil
				}
			case *goredis.Message:
				if m.Channel == s.heartbeatChannel {
					continue
				}
				if m.Payload == resyncPayload {
					s.watchers.Notify(stores.Notification{Resync: true})
					continue
				}
				n, ok := parseNotification(m.Payload)
				if !ok {
					s.log.Warn("unreadable notification", "channel", m.Channel, "payload", m.Payload)
					continue
				}
				s.watchers.Notify(n)
			}
		}
	}
}

// Backoff of the read retried after a (re)subscription.
const (
	retryFirst = 100 * time.Millisecond
	retryMax   = 2 * time.Second
)

// readable checks the servers' run (checkRun, which reads from every
// master) and reports whether they answered.
func (s *Store) readable(ctx context.Context) bool {
	cctx, cancel := context.WithTimeout(ctx, serverCheckTimeout)
	defer cancel()
	err := s.checkRun(cctx)
	if err != nil && ctx.Err() == nil {
		s.log.Warn("read the Redis servers after subscribing; retrying", "err", err)
	}
	return err == nil
}

// parseNotification reads the merge script's payload "<collection> <head>".
func parseNotification(payload string) (stores.Notification, bool) {
	coll, seq, ok := strings.Cut(payload, " ")
	if !ok || crdt.ValidateCollection(coll) != nil {
		return stores.Notification{}, false
	}
	n, err := strconv.ParseUint(seq, 10, 64)
	if err != nil {
		return stores.Notification{}, false
	}
	return stores.Notification{Collection: coll, Seq: n}, true
}
