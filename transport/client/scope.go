package client

import (
	"bytes"
	"fmt"
	"maps"
	"slices"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/crdt/scope"
	"github.com/convergo/convergo/transport/proto"
)

// Scopes: a client may narrow what it reads of a collection to one or more
// named predicates (docs/design.md, "Scopes, leave entries and collection
// rules"). Every pull and subscription of the collection carries the "or"
// of them (pull key 4, sub key 3); the server ands it with the scopes it
// imposes and sends leave entries (Page.Leaves) for records the reader may
// no longer see. Changing the scopes changes nothing else: the next pull,
// and at once every live subscription, goes on from the same cursor, and
// the server answers with the difference (records that entered the scope,
// leaves for those that left it).

// scopeState is the client's scopes. It is guarded by Client.mu.
type scopeState struct {
	// named holds each collection's scopes by name.
	named map[string]map[string]*scope.Pred
	// wire holds each scoped collection's "or" in its wire form; a
	// collection without scopes, or whose "or" is everything, has none.
	wire map[string][]byte
	// changed is closed, and replaced, whenever wire changes.
	changed chan struct{}
}

// SetScope sets the scope called name of collection to p, replacing the
// scope of that name if there was one. A nil p is the whole collection,
// which makes the collection's "or" everything while it is set. The next
// Pull of the collection sends the new "or" with the same cursor, and a
// running Live subscribes again at once; the server answers with the
// difference. It fails with ErrScopeTooLarge (which matches ErrInvalid,
// the server's code for it) when the "or" of the collection's scopes would
// be larger than proto.MaxScopeBytes in its wire form.
func (c *Client) SetScope(collection, name string, p *scope.Pred) error {
	if err := crdt.ValidateCollection(collection); err != nil {
		return fmt.Errorf("set scope %s/%s: %w", collection, name, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	named := maps.Clone(c.scopes.named[collection])
	if named == nil {
		named = map[string]*scope.Pred{}
	}
	named[name] = p
	wire := orWire(named)
	if len(wire) > proto.MaxScopeBytes {
		return fmt.Errorf("set scope %s/%s: %w: %d bytes, over %d", collection, name, ErrScopeTooLarge, len(wire), proto.MaxScopeBytes)
	}
	c.setScopesLocked(collection, named, wire)
	return nil
}

// RemoveScope removes the scope called name of collection; without scopes
// left, the collection's reads are no longer narrowed. Like SetScope, it
// takes effect at the next Pull and at once in a running Live.
func (c *Client) RemoveScope(collection, name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.scopes.named[collection][name]; !ok {
		return
	}
	named := maps.Clone(c.scopes.named[collection])
	delete(named, name)
	c.setScopesLocked(collection, named, orWire(named))
}

// Scopes returns the scopes of collection by name (nil when it has none).
func (c *Client) Scopes(collection string) map[string]*scope.Pred {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.scopes.named[collection])
}

// setScopesLocked installs collection's scopes and their wire form, and
// wakes live sessions when the wire form changed. Called with c.mu held.
func (c *Client) setScopesLocked(collection string, named map[string]*scope.Pred, wire []byte) {
	s := &c.scopes
	if s.named == nil {
		s.named, s.wire = map[string]map[string]*scope.Pred{}, map[string][]byte{}
	}
	if len(named) == 0 {
		delete(s.named, collection)
	} else {
		s.named[collection] = named
	}
	if bytes.Equal(s.wire[collection], wire) {
		return
	}
	if wire == nil {
		delete(s.wire, collection)
	} else {
		s.wire[collection] = wire
	}
	if s.changed != nil {
		close(s.changed)
		s.changed = nil
	}
}

// orWire is the wire form of the "or" of named (its names sorted, so the
// same scopes give the same bytes), nil when there are none or the "or" is
// everything.
func orWire(named map[string]*scope.Pred) []byte {
	if len(named) == 0 {
		return nil
	}
	ps := make([]*scope.Pred, 0, len(named))
	for _, name := range slices.Sorted(maps.Keys(named)) {
		ps = append(ps, named[name])
	}
	if len(ps) == 1 {
		return ps[0].Encode()
	}
	return scope.Or(ps...).Encode()
}

// scopeWire returns the wire form of collection's scopes, nil for none.
func (c *Client) scopeWire(collection string) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.scopes.wire[collection]
}

// scopesChanged returns a channel closed at the next change of any
// collection's scopes.
func (c *Client) scopesChanged() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.scopes.changed == nil {
		c.scopes.changed = make(chan struct{})
	}
	return c.scopes.changed
}
