package transport

import (
	"context"
	"errors"

	"github.com/convergo/convergo/engine"
	"github.com/convergo/convergo/transport/proto"
)

// Tombstone collection (docs/protocol.md, section 8, "Tombstone
// collection"): a pull or sub that names a replica (key 5) is that
// replica's lease on the collection, with its pending floor (key 6). The
// engine keeps the leases and the horizons (engine/horizon.go); the
// transport checks that the principal owns the replica, and keeps the
// lease of a live subscription fresh from its cursor at every ping (one
// off the start, or with a pending floor: refreshLeases).

// checkLease refuses a lease of a replica id p does not own, on a
// collection that collects tombstones (engine.MaxOffline): only there is
// the replica a lease. Elsewhere the key is ignored, so readers whose ids
// are not bound (tools, older deployments) keep reading collections
// that keep their tombstones for ever. A pending floor past
// proto.MaxWall is invalid: no stamp is that late, and ignoring it would
// let the lease stop holding the horizons back without the client knowing.
func (s *Server) checkLease(p Principal, coll, replica string, pending *uint64) error {
	if pending != nil && *pending > proto.MaxWall {
		return proto.Errorf(proto.CodeInvalid, "pending floor %d: past the latest wall time %d", *pending, uint64(proto.MaxWall))
	}
	if replica != "" && s.eng.MaxOffline(coll) > 0 && !proto.OwnerOf(p.Subject).Owns(replica) {
		return proto.Errorf(proto.CodeForbidden, "replica %q is not one of this subject's", replica)
	}
	return nil
}

// leaseOf is the lease a request presents (checked by checkLease).
func leaseOf(replica string, pending *uint64, cursor engine.Cursor) engine.Lease {
	l := engine.Lease{Replica: replica, Cursor: cursor, Pending: -1}
	if pending != nil && *pending <= proto.MaxWall {
		l.Pending = int64(*pending)
	}
	return l
}

// noteLease records a lease; a failure to write it is logged, not
// answered: the pull itself succeeded, and a lease that lags only holds
// the horizons back. While the clock is off (engine.ErrClockSkew) pulls
// are served but no lease is written; the engine's clock check logs that.
func (s *Server) noteLease(ctx context.Context, coll string, l engine.Lease) {
	if l.Replica == "" {
		return
	}
	if err := s.eng.NoteLease(ctx, coll, l); err != nil && ctx.Err() == nil && !errors.Is(err, engine.ErrClockSkew) {
		s.log.Warn("lease not written", "collection", coll, "replica", l.Replica, "err", err)
	}
}

// refreshLeases renews the leases of c's subscriptions from their
// cursors (the last page sent). NoteLease writes only at its cadence.
// A subscription whose cursor is still the start and that announces no
// pending floor is not renewed: such a reader holds nothing and cannot be
// reset, and on a collection never written, where NoteLease neither takes
// nor caches its lease, each renewal would read the store's heads. The
// subscription's first page or change moves its cursor off the start,
// and the next ping renews (or first takes) its lease.
func (c *liveConn) refreshLeases() {
	c.mu.Lock()
	subs := make([]*member, 0, len(c.subs))
	for _, m := range c.subs {
		if m.lease.Replica != "" {
			subs = append(subs, m)
		}
	}
	c.mu.Unlock()
	for _, m := range subs {
		c.s.hub.mu.Lock()
		g := m.g // set by join under the hub's lock
		c.s.hub.mu.Unlock()
		if m.stopped.Load() || g == nil {
			continue
		}
		g.mu.Lock()
		l := m.lease
		l.Cursor = m.cursor
		g.mu.Unlock()
		if l.Cursor.IsStart() && l.Pending < 0 {
			continue
		}
		c.s.noteLease(c.ctx, m.coll, l)
	}
}
