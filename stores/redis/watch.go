package redis

import (
	"context"
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
	if s.pubsub == nil {
		ctx, cancel := context.WithCancel(context.Background())
		s.stopSub = cancel
		s.subDone = ctx.Done()
		s.subReady = make(chan struct{})
		s.pubsub = s.client.Subscribe(ctx) // no channel yet: no I/O under the lock
		s.watchWG.Add(1)
		go s.subscriber(ctx, s.pubsub, s.subReady)
	}
	return s.subReady, s.subDone
}

// subscriber runs until Close cancels ctx. go-redis reconnects the pub/sub
// connection and subscribes again by itself; each subscription arrives here
// as a *goredis.Subscription. ready is closed at the first one.
func (s *Store) subscriber(ctx context.Context, ps *goredis.PubSub, ready chan struct{}) {
	defer s.watchWG.Done()
	if err := ps.Subscribe(ctx, s.channel); err != nil && ctx.Err() == nil {
		// go-redis keeps the channel and subscribes when it reconnects.
		s.log.Warn("subscribe to notifications; retrying", "channel", s.channel, "err", err)
	}
	msgs := ps.ChannelWithSubscriptions(goredis.WithChannelSize(subscriberBuffer))
	for {
		select {
		case <-ctx.Done():
			return
		case m, ok := <-msgs:
			if !ok {
				return
			}
			switch m := m.(type) {
			case *goredis.Subscription:
				if m.Kind != "subscribe" {
					continue
				}
				s.log.Debug("subscribed to notifications", "channel", m.Channel)
				s.watchers.Notify(stores.Notification{Resync: true})
				if ready != nil {
					close(ready)
					ready = nil
				}
			case *goredis.Message:
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
