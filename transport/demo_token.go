package transport

import (
	"encoding/json"
	"net/http"
	"regexp"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/crdt/scope"
	"github.com/convergo/convergo/engine"
	"github.com/convergo/convergo/transport/proto"
)

// The demo's identities (docs/operations.md, "The demo"): besides the
// anonymous todo list, the demo app gives each person on the page a
// notes list of their own, collection DemoNotesCollection, where a note
// is private to its owner until they share it. That needs a subject per
// person, so a server running its demo issues short-lived tokens for
// subjects "demo:<name>" to anyone who asks, at PathDemoToken; the
// tokens grant DemoNotesCollection and nothing else, and the built-in
// rule DemoNotesRule scopes it. Like anonymous access, this is for a
// demo only: anyone may be anyone.

const (
	// DemoNotesCollection is the demo's collection of notes.
	DemoNotesCollection = "demo.notes"
	// PathDemoToken issues demo tokens: POST with ?name=NAME, the
	// parameter given once.
	PathDemoToken = "/demo/token"
	// DemoSubjectPrefix starts the subject of every demo token.
	DemoSubjectPrefix = "demo:"
	// DemoTokenTTL is how long a demo token is valid; the demo asks for a
	// new one when the server says it expired.
	DemoTokenTTL = 15 * time.Minute
	// DemoNotesScope is the read and write scope of DemoNotesRule: one's
	// own notes and every shared one.
	DemoNotesScope = "owner == $sub or shared == true"
)

// demoName is what a demo name may be: short, lower-case ASCII letters,
// digits and dashes (the demo's slugs of people's names).
var demoName = regexp.MustCompile(`^[a-z0-9-]{1,32}$`)

// DemoNotesRule is the built-in rule of DemoNotesCollection: readers and
// writers see their own notes (owner is their subject) and the shared
// ones. Writing is held to the same scope, so only a note's owner can
// stop sharing it (the merged record would leave anyone else's scope).
func DemoNotesRule() engine.Rule {
	p, err := scope.Parse(DemoNotesScope)
	if err != nil {
		panic("transport: DemoNotesScope: " + err.Error()) // a constant: a test parses it
	}
	return engine.Rule{Pattern: DemoNotesCollection, Read: p}
}

// WithDemoRules returns rules with DemoNotesRule added when none of them
// applies to DemoNotesCollection: what a server running its demo gives
// its engine (the operator's own rule for the collection, if any, wins).
func WithDemoRules(rules []engine.Rule) []engine.Rule {
	for _, r := range rules {
		if crdt.MatchPattern(r.Pattern, DemoNotesCollection) {
			return rules
		}
	}
	return append(append([]engine.Rule(nil), rules...), DemoNotesRule())
}

// DemoToken is the answer of PathDemoToken, in JSON.
type DemoToken struct {
	Token   string `json:"token"`
	Subject string `json:"subject"`
	// Expires is when the token expires, in ms since the Unix epoch.
	Expires int64 `json:"expires"`
}

// DemoTokenError is a refusal of PathDemoToken, in JSON like its answer:
// the protocol's error body (code, message, request id) under names, with
// the code in proto.HeaderError too.
type DemoTokenError struct {
	Code      string `json:"code"`
	Message   string `json:"message"`
	RequestID string `json:"requestId"`
}

// demoToken serves PathDemoToken with tokens signed by j. It answers
// refusals with the protocol's codes and headers, in JSON
// (DemoTokenError), is rate limited per client address like any
// request, and answers only the server's own origins (checkOrigin).
func (s *Server) demoToken(j *JWT) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := s.serveDemoToken(w, r, j); err != nil {
			s.writeDemoTokenError(w, r, err)
		}
	})
}

// writeDemoTokenError answers err as writeError does (status, codes,
// headers, what is logged), with the body in JSON: the demo page that asks
// for tokens reads JSON, and this path is not the protocol's.
func (s *Server) writeDemoTokenError(w http.ResponseWriter, r *http.Request, err error) {
	s.writeErrorAs(w, r, err, "application/json", func(b proto.ErrorBody) []byte {
		body, _ := json.Marshal(DemoTokenError{Code: b.Code, Message: b.Message, RequestID: b.RequestID})
		return body
	})
}

func (s *Server) serveDemoToken(w http.ResponseWriter, r *http.Request, j *JWT) error {
	if err := s.checkOrigin(w, r); err != nil {
		return err
	}
	if r.Method == http.MethodOptions {
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST, OPTIONS")
		return proto.Errorf(proto.CodeMethodNotAllowed, "%s %s: use POST", r.Method, r.URL.Path)
	}
	if wait := s.rate.take("addr:"+limitKey(s.clientAddr(r)), s.now()); wait > 0 {
		return rateLimited(wait)
	}
	// One name: of a repeated one, taking the first would issue a token
	// for a subject the caller may not have meant (another reader of the
	// URL may take the last).
	names := r.URL.Query()["name"]
	if len(names) > 1 {
		return proto.Errorf(proto.CodeInvalid, "parameter \"name\" given %d times: give it once", len(names))
	}
	name := ""
	if len(names) == 1 {
		name = names[0]
	}
	if !demoName.MatchString(name) {
		return proto.Errorf(proto.CodeInvalid, "name %q: 1 to 32 characters of a-z, 0-9 and -", name)
	}
	spec := TokenSpec{Subject: DemoSubjectPrefix + name, Read: []string{DemoNotesCollection}, Write: []string{DemoNotesCollection}, TTL: DemoTokenTTL}
	tok, err := j.IssueToken(spec)
	if err != nil {
		return err
	}
	// j's clock is the one the token's exp comes from.
	body, err := json.Marshal(DemoToken{Token: tok, Subject: spec.Subject, Expires: j.now().Add(DemoTokenTTL).UnixMilli()})
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_, err = w.Write(body)
	return err
}
