package redis

import (
	"context"
	"strconv"
	"strings"

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
// watchers. Every (re)subscription of that connection, the first included,
// is reported as a Resync notification, because messages published while
// it was down are lost.
func (s *Store) Watch(fn func(stores.Notification)) (stop func()) {
	stop = s.watchers.Add(fn)
	s.startSubscriber()
	return stop
}

func (s *Store) startSubscriber() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pubsub != nil || s.closed.Load() {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.stopSub = cancel
	s.pubsub = s.client.Subscribe(ctx) // no channel yet: no I/O under the lock
	s.watchWG.Add(1)
	go s.subscriber(ctx, s.pubsub)
}

// subscriber runs until Close cancels ctx. go-redis reconnects the pub/sub
// connection and subscribes again by itself; each subscription arrives here
// as a *goredis.Subscription.
func (s *Store) subscriber(ctx context.Context, ps *goredis.PubSub) {
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
				if m.Kind == "subscribe" {
					s.log.Debug("subscribed to notifications", "channel", m.Channel)
					s.watchers.Notify(stores.Notification{Resync: true})
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
