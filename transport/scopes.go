package transport

import (
	"fmt"

	"github.com/convergo/convergo/crdt/scope"
	"github.com/convergo/convergo/transport/proto"
)

// Effective scopes (docs/protocol.md, section 12). What a principal reads
// of a collection is narrowed by the scopes imposed on it, the engine's
// rules for the collection and its token's cvg_scopes, and by the scope
// its client sends; what it writes by the imposed ones alone. Each is
// bound with the principal's subject and claims. This file is the one
// place the server combines them: pull, live subscriptions and restore
// use readScope, push uses writeScope; the engine enforces the result.
//
// A client-sent scope that does not decode or bind is invalid. An imposed
// scope that names a claim the token lacks leaves the principal nothing
// (scope.Or() matches no record), and the server logs it: a
// misconfigured rule must not widen access.

// params are the parameters scopes of p are bound with.
func (p Principal) params() scope.Params {
	return scope.Params{"sub": p.Subject, "claims": p.Claims}
}

// readScope returns p's effective read scope of collection, with client
// the scope its client sent (wire form; empty for none). Nil means an
// unscoped read.
func (s *Server) readScope(p Principal, collection string, client []byte) (*scope.Pred, error) {
	var own *scope.Pred
	if len(client) > 0 {
		c, err := scope.Decode(client)
		if err != nil {
			return nil, withCause(proto.Errorf(proto.CodeInvalid, "scope: %s", publicText(err)), err)
		}
		if own, err = c.Bind(p.params()); err != nil {
			return nil, withCause(proto.Errorf(proto.CodeInvalid, "scope: %s", publicText(err)), err)
		}
	}
	rules, err := s.eng.ReadScope(collection, p.params())
	if err != nil {
		rules = s.unbound(p, collection, "rules' read scope", err)
	}
	return scope.And(rules, s.tokenScope(p, collection), own), nil
}

// writeScope returns p's effective write scope of collection: the rules'
// write scope (else their read scope) and the token's; never the client's
// own. Nil means writes are not scoped.
func (s *Server) writeScope(p Principal, collection string) *scope.Pred {
	rules, err := s.eng.WriteScope(collection, p.params())
	if err != nil {
		rules = s.unbound(p, collection, "rules' write scope", err)
	}
	return scope.And(rules, s.tokenScope(p, collection))
}

// tokenScope binds the token's scopes whose pattern matches collection.
func (s *Server) tokenScope(p Principal, collection string) *scope.Pred {
	var ps []*scope.Pred
	for pattern, sc := range p.Scopes {
		if sc == nil || !MatchPattern(pattern, collection) {
			continue
		}
		b, err := sc.Bind(p.params())
		if err != nil {
			b = s.unbound(p, collection, fmt.Sprintf("token scope %s", pattern), err)
		}
		ps = append(ps, b)
	}
	return scope.And(ps...)
}

// unbound is what an imposed scope that cannot be bound for p leaves:
// nothing. It is logged, since it is a rule or a token that does not fit
// its principals.
func (s *Server) unbound(p Principal, collection, what string, err error) *scope.Pred {
	s.log.Warn("imposed scope cannot be bound: the principal sees nothing", "subject", p.Subject,
		"collection", collection, "scope", what, "err", err)
	return scope.Or()
}
