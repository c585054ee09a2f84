package proto

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the generated protocol files")

// generated are the files written from Constants, relative to this package.
var generated = map[string]func() ([]byte, error){
	"../../crdt/testdata/protocol.json": exportJSON,
	"../../jsclient/src/constants.js":   exportJS,
	"../../jsclient/src/model.js":       exportModelJS,
}

// upFront are the parts of Constants the JS client's records and IndexedDB
// store need up front (the codec's, the clock's and the record's limits,
// the replica binding rule, the bounds of the rejected changes, the
// backoff bounds of a failed load of the sync loop), as
// model.js holds them: under name, with keys the keys of the part it holds
// (nil: all of them, and constants.js re-exports it; else constants.js
// holds the part whole too). An app's bundle loads model.js with the main
// entry and constants.js (wire names, codes, timings, the server's other
// defaults, the replica samples) with the sync loop, on demand.
var upFront = []struct {
	part, name string
	keys       []string
}{
	{"MODEL", "MODEL", nil},
	{"DEFAULTS", "LOCAL_DEFAULTS", []string{"maxDriftMs", "maxMessageBytes", "maxRejected", "maxRejectedBytes"}},
	{"REPLICA", "REPLICA_RULE", []string{"prefixLen", "separator", "domain"}},
	{"TIMINGS", "BACKOFF", []string{"backoffInitialMs", "backoffMaxMs"}},
}

func exportJSON() ([]byte, error) {
	b, err := json.MarshalIndent(Constants(), "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// exportJS writes one frozen export per part of Constants, in the order of
// the Exported struct's fields; the parts model.js holds whole it
// re-exports from there (exportModelJS).
func exportJS() ([]byte, error) { return exportParts(false) }

// exportModelJS writes the parts model.js holds (upFront) as exportJS
// would, each with the keys it holds.
func exportModelJS() ([]byte, error) { return exportParts(true) }

// exportParts writes the parts of Constants that model.js holds (model)
// or constants.js, with, in constants.js, a re-export of the parts model.js
// holds whole.
func exportParts(model bool) ([]byte, error) {
	var obj map[string]json.RawMessage
	j, err := json.Marshal(Constants())
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(j, &obj); err != nil {
		return nil, err
	}
	parts := []struct{ name, key, doc string }{
		{"VERSION", "version", "The protocol version the client speaks."},
		{"PATHS", "paths", "Paths of the protocol's endpoints."},
		{"HEADERS", "headers", "Header names."},
		{"CONTENT_TYPE", "contentType", "The content type of every body."},
		{"CODES", "codes", "Every error code: its HTTP status (0: per change only), what a client does about it (retry), whether a push may refuse one change with it, and whether it is the request's, session's or principal's as a whole rather than one collection's (session)."},
		{"STATUSES", "statuses", "Push statuses, numbered as on the wire."},
		{"CLIENT_MESSAGE_TYPES", "clientMessageTypes", "Live message types a client sends."},
		{"SERVER_MESSAGE_TYPES", "serverMessageTypes", "Live message types a server sends."},
		{"RESET_REASONS", "resetReasons", "Why a cursor is reset; a client treats an unknown reason as history_lost."},
		{"DEFAULTS", "defaults", "A server's default limits; a client follows what the server's hello announces."},
		{"TIMINGS", "timings", "Timings both sides keep, in milliseconds."},
		{"MODEL", "model", "Limits of the data model, the same everywhere."},
		{"PUSH_ENVELOPE_BYTES", "pushEnvelopeBytes", "What a client leaves of the request body for a push's envelope when it splits its outbox into batches."},
		{"PUSH_ROOMS", "pushRooms", "What the encoded changes of one push batch may take under sample max-body values (room: max-body less PUSH_ENVELOPE_BYTES, 0 when smaller; one change always goes); pushBudget is tested against them."},
		{"BATCH_LENS", "batchLens", "How many items of these sizes go in one request under these limits (len: at most maxCount whose sizes take at most maxBytes; at least one while any is left); batchLength is tested against them."},
		{"PUSH_VERSIONS", "pushVersions", "What the entry of a collection at a schema version takes in a push's schema versions (key 3; 0 for version 0, left out); pushVersionBytes is tested against them."},
		{"REPLICA", "replica", "The replica binding rule: an owned id is the subject's prefix (the first 10 bytes of SHA-256(domain + subject) in lower-case base32), the separator and a device part; samples of prefixes."},
		{"SCOPES", "scopes", "Scopes: the reserved collection prefix no client may use, the deny list's collection, the token claim that imposes scopes, and leave entries (the first leaveBytes of SHA-256(leaveDomain + collection + 0x00 + id); each counts leaveEntryCost bytes toward a page's byte limit); the limits of a scope (encoded bytes, nesting depth, predicates, values of one list)."},
		{"COMPACT", "compact", "Compact stamps: the envelope keys of a message's replica table and base wall (pull answer, changes message, push body), and the push body's key naming its replica by its device part."},
		{"LEAVE_VECTORS", "leaveVectors", "Leave entries of sample record ids, in hex."},
	}
	var b bytes.Buffer
	b.WriteString("// Code generated by `go test ./transport/proto -update` from package\n")
	b.WriteString("// transport/proto (docs/protocol.md); DO NOT EDIT. test/constants.test.js\n")
	b.WriteString("// holds it to crdt/testdata/protocol.json.\n")
	if !model {
		var names []string
		for _, u := range upFront {
			if u.keys == nil {
				names = append(names, u.name)
			}
		}
		fmt.Fprintf(&b, "\n/** The model's constants (model.js, loaded up front). */\nexport { %s } from './model.js';\n", strings.Join(names, ", "))
	}
	for _, p := range parts {
		raw, ok := obj[p.key]
		if !ok {
			return nil, fmt.Errorf("no %q in Constants", p.key)
		}
		u, up := upFrontPart(p.name)
		if model && !up || !model && up && u.keys == nil {
			continue // constants.js's only, or re-exported from model.js
		}
		name, doc := p.name, p.doc
		if model && u.keys != nil {
			name = u.name
			doc = fmt.Sprintf("Of %s (constants.js holds it whole), what the client reads up front: the codec, the clock, the replica ids, the local store, the retry of a failed load of the sync loop.", p.name)
			if raw, err = subset(raw, u.keys); err != nil {
				return nil, fmt.Errorf("%s: %w", p.key, err)
			}
		}
		var pretty bytes.Buffer
		if err := json.Indent(&pretty, raw, "", "  "); err != nil {
			return nil, err
		}
		fmt.Fprintf(&b, "\n/** %s */\n", doc)
		if raw[0] == '{' || raw[0] == '[' {
			fmt.Fprintf(&b, "export const %s = /* @__PURE__ */ Object.freeze(%s);\n", name, pretty.String())
		} else {
			fmt.Fprintf(&b, "export const %s = %s;\n", name, pretty.String())
		}
	}
	return b.Bytes(), nil
}

// upFrontPart is the entry of upFront for part name, if model.js holds it.
func upFrontPart(name string) (u struct {
	part, name string
	keys       []string
}, ok bool) {
	for _, u := range upFront {
		if u.part == name {
			return u, true
		}
	}
	return u, false
}

// subset is the JSON object raw with only keys, in that order.
func subset(raw json.RawMessage, keys []string) (json.RawMessage, error) {
	var whole map[string]json.RawMessage
	if err := json.Unmarshal(raw, &whole); err != nil {
		return nil, err
	}
	var b bytes.Buffer
	b.WriteByte('{')
	for i, k := range keys {
		v, ok := whole[k]
		if !ok {
			return nil, fmt.Errorf("no key %q", k)
		}
		if i > 0 {
			b.WriteByte(',')
		}
		kb, err := json.Marshal(k)
		if err != nil {
			return nil, err
		}
		b.Write(kb)
		b.WriteByte(':')
		b.Write(v)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// TestGeneratedFiles fails when a file generated from Constants is stale:
// run `go test ./transport/proto -update` after changing a constant.
func TestGeneratedFiles(t *testing.T) {
	for path, gen := range generated {
		want, err := gen()
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if *update {
			if err := os.WriteFile(filepath.FromSlash(path), want, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(filepath.FromSlash(path))
		if err != nil {
			t.Fatalf("%v (run go test ./transport/proto -update)", err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s is stale: run go test ./transport/proto -update", path)
		}
	}
}

// TestCodesAreUnique guards the code table: one entry per code.
func TestCodesAreUnique(t *testing.T) {
	seen := map[string]bool{}
	for _, c := range Codes {
		if seen[c.Code] {
			t.Errorf("code %q listed twice", c.Code)
		}
		seen[c.Code] = true
		if !c.PerChange && c.HTTP == 0 {
			t.Errorf("code %q has no HTTP status and refuses no change", c.Code)
		}
		if c.RestoreOnly && !c.PerChange {
			t.Errorf("code %q is restore-only but refuses no single record", c.Code)
		}
	}
}

// TestVersionPathPattern: the exported pattern matches exactly the paths
// VersionOfPath gives a version.
func TestVersionPathPattern(t *testing.T) {
	re := regexp.MustCompile(VersionPathPattern)
	paths := []string{"/v1/hello", "/v2/pull", "/v2/", "/v3", "/v3/hello", "/v10/live", "/v0/x",
		"/", "/v", "/v/", "/vx/", "/v2x", "/v2x/y", "/video", "/demo/v3/x", "/metrics", "v2/", "//v2/"}
	for _, p := range paths {
		_, ok := VersionOfPath(p)
		if re.MatchString(p) != ok {
			t.Errorf("%q: VersionPathPattern matches %v, VersionOfPath %v", p, re.MatchString(p), ok)
		}
	}
	for i := 0; i < 1<<12; i++ { // every path of up to 4 of these bytes
		var b []byte
		for n := i; n > 0; n /= 8 {
			b = append(b, "/v0912x."[n%8])
		}
		p := string(b)
		if _, ok := VersionOfPath(p); re.MatchString(p) != ok {
			t.Errorf("%q: VersionPathPattern matches %v, VersionOfPath %v", p, re.MatchString(p), ok)
		}
	}
}
