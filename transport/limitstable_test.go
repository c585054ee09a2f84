package transport

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/transport/proto"
)

// The figures docs/protocol.md gives for limits and timings, written as
// the docs write them, from the constants that declare them.

// thousands writes n with a comma between groups of three digits: 1,024.
func thousands(n int64) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// inUnit writes n bytes in unit (KiB or MiB), of which n must be a whole
// number.
func inUnit(t *testing.T, n int64, unit string) string {
	t.Helper()
	size := map[string]int64{"KiB": 1 << 10, "MiB": 1 << 20}[unit]
	if size == 0 || n%size != 0 {
		t.Fatalf("%d bytes are not a whole number of %s", n, unit)
	}
	return fmt.Sprintf("%d %s", n/size, unit)
}

// secs writes d in whole seconds (20 s), ms in milliseconds (200 ms).
func secs(d time.Duration) string { return fmt.Sprintf("%d s", d/time.Second) }
func ms(d time.Duration) string   { return fmt.Sprintf("%d ms", d/time.Millisecond) }

// belowPow2 writes the power of two that n is one less than: 2^53.
func belowPow2(t *testing.T, n uint64) string {
	t.Helper()
	for k := 1; k < 64; k++ {
		if n == 1<<k-1 {
			return fmt.Sprintf("2^%d", k)
		}
	}
	t.Fatalf("%d is not a power of two less one", n)
	return ""
}

// protocolDoc returns docs/protocol.md.
func protocolDoc(t *testing.T) string {
	t.Helper()
	doc, err := os.ReadFile("../docs/protocol.md")
	if err != nil {
		t.Fatal(err)
	}
	return string(doc)
}

// TestLimitsTable holds the table of section 11 of docs/protocol.md to the
// default limits: every row names its default as the constant holds it,
// and every default has its row.
func TestLimitsTable(t *testing.T) {
	doc := protocolDoc(t)
	start := strings.Index(doc, "| limit | default |")
	if start < 0 {
		t.Fatal("docs/protocol.md has no limits table")
	}
	leases := thousands(proto.DefaultMaxLeasesPerSubject)
	unwritten := thousands(proto.MaxUnwrittenLeasesPerSubject)
	// Each row by the start of its limit column: its default column (or how
	// it starts), and what else it says.
	want := []struct{ limit, starts, says string }{
		{"request headers", inUnit(t, MaxHeaderBytes, "KiB") + " (", ""},
		{"request body", inUnit(t, proto.DefaultMaxBodyBytes, "MiB"), ""},
		{"changes per push", thousands(proto.DefaultMaxPushChanges), ""},
		{"records per pull page or live frame", thousands(proto.DefaultMaxPullRecords), ""},
		{"bytes of records per pull page or live frame", inUnit(t, proto.DefaultMaxPageBytes, "MiB") + " (", ""},
		{"live message from a client", inUnit(t, proto.DefaultMaxMessageBytes, "MiB"), ""},
		{"requests or live messages per second per client", thousands(proto.DefaultRate) + ", burst " + thousands(proto.DefaultBurst) + ":", ""},
		{"connections per client address", thousands(proto.DefaultMaxConnsPerAddr) + ":", ""},
		{"live sessions per subject", thousands(proto.DefaultMaxSessionsPerSubject) + ":", ""},
		{"request bodies in flight per client", inUnit(t, clientShare(DefaultMaxBodyBytesInFlight), "MiB") + " (", ""},
		{"pull answers in flight per client", inUnit(t, clientShare(DefaultMaxAnswerBytesInFlight), "MiB") + " (", ""},
		{"subscriptions per WebSocket connection", thousands(proto.DefaultMaxSubscriptions) + " (", ""},
		{"subscriptions per subject", thousands(proto.DefaultMaxSubscriptionsPerSubject) + " (", ""},
		{"live leases per subject", leases + ":", "keeps the subject's " + leases + " most recently seen and removes the others; between runs each server instance takes at most " + leases + " new ones"},
		{"leases per subject across the collections never written", unwritten + ":", "keeps the subject's " + unwritten + " most recently seen and removes the others; between runs each server instance takes at most " + unwritten + " new ones"},
		{"max drift of a stamp", fmt.Sprintf("%d minutes", crdt.DefaultMaxDrift/time.Minute), ""},
	}
	seen := map[string]bool{}
	for _, line := range strings.Split(doc[start:], "\n")[2:] {
		if !strings.HasPrefix(line, "|") {
			break
		}
		cells := strings.Split(strings.Trim(line, "| "), " | ")
		if len(cells) != 2 {
			t.Fatalf("limits table row %q has not two columns", line)
		}
		found := false
		for _, w := range want {
			if !strings.HasPrefix(cells[0], w.limit) {
				continue
			}
			found, seen[w.limit] = true, true
			// A default that ends in ":" or "(" goes on; any other is all
			// the column says.
			open := strings.HasSuffix(w.starts, ":") || strings.HasSuffix(w.starts, "(")
			if !strings.HasPrefix(cells[1], w.starts) || !open && cells[1] != w.starts {
				t.Errorf("limits table, %s: got %q, want %q", w.limit, cells[1], w.starts)
			}
			if !strings.Contains(cells[1], w.says) {
				t.Errorf("limits table, %s: got %q, want it to say %q", w.limit, cells[1], w.says)
			}
		}
		if !found {
			t.Errorf("limits table row %q: no constant checks it (add it to this test)", cells[0])
		}
	}
	for _, w := range want {
		if !seen[w.limit] {
			t.Errorf("limits table has no row %q", w.limit)
		}
	}
}

// TestDocumentedFigures holds the timings, close codes, deadlines, backoff
// and the scope and model limits that docs/protocol.md gives in prose to
// the constants that declare them.
func TestDocumentedFigures(t *testing.T) {
	doc := strings.Join(strings.Fields(protocolDoc(t)), " ")
	for _, phrase := range []string{
		// Section 9, "Timings" and "Pushing over a live session".
		"The server sends WebSocket pings every " + secs(proto.PingInterval) + " and closes a connection it has heard nothing from for " + secs(proto.IdleTimeout) + ".",
		"A client sends a `ping` when it has heard nothing for " + secs(proto.PingInterval) + " and treats a session that stays silent for " + secs(proto.ClientSilenceTimeout) + " as dead, and one that leaves its push without a `pushed` for " + secs(proto.ClientPushTimeout) + " too",
		"within the client push timeout (" + secs(proto.ClientPushTimeout) + ", `clientPushTimeoutMs` of the timings)",
		"The server bounds the work of a push by its request timeout (" + secs(DefaultRequestTimeout) + " by default)",
		"a short wait (" + secs(DefaultSlowConsumer) + " by default) ends with `resync`",
		"The server queues a bounded number of bytes for each connection (" + inUnit(t, DefaultMaxQueueBytes, "MiB") + " by default, or one larger page)",
		"in one write, which must end within " + secs(DefaultWriteTimeout) + ", however much of it the client reads meanwhile",
		// Section 9, the close codes the server sends.
		fmt.Sprintf("**Close codes**: %d normal, %d server shutting down, %d protocol version, or a frame RFC 6455 forbids", ws.StatusNormalClosure, ws.StatusGoingAway, proto.CloseProtocolVersion),
		fmt.Sprintf("%d a text frame (messages are binary), %d policy (a fatal protocol error", ws.StatusUnsupportedData, ws.StatusPolicyViolation),
		fmt.Sprintf("%d a message over the size limit, %d internal error, %d try again later (a `hello`, or a `push`, refused `unavailable`", ws.StatusMessageTooBig, ws.StatusInternalServerError, proto.CloseTryAgainLater),
		// Section 10.
		"between 0 and min(" + secs(proto.BackoffMax) + ", " + ms(proto.BackoffInitial) + " · 2^n)",
		// Section 11, "Deadlines".
		"Request headers must arrive within " + secs(ReadHeaderTimeout) + ";",
		"a request's body within " + secs(DefaultRequestTimeout) + " and its answer leaves within another " + secs(DefaultRequestTimeout),
		"a WebSocket must say hello within " + secs(DefaultHelloTimeout) + ";",
		"a write of what a live connection has queued (section 9) that does not end within " + secs(DefaultWriteTimeout) + " closes the connection",
		"a live connection the server hears nothing from for " + secs(proto.IdleTimeout) + " is closed",
		// Section 5, the messages.
		"A message (of an error, over HTTP or live, or of a refused change's push result) is at most " + thousands(maxMessageBytes) + " bytes of UTF-8",
		// Section 4: a subject or token id the deny list can name.
		"a string of at most " + thousands(int64(proto.MaxIDBytes-len(DenySubject))) + " bytes without control characters, so that the deny list can name it",
		"so, as `sub`, at most " + thousands(int64(proto.MaxIDBytes-len(DenyTokenID))) + " bytes without control characters",
		// Section 11, scope and model limits.
		"a scope's canonical encoding at most " + thousands(proto.MaxScopeBytes) + " bytes, nested at most " + thousands(proto.MaxScopeDepth) + " levels, at most " + thousands(proto.MaxScopeNodes) + " predicates, at most " + thousands(proto.MaxScopeList) + " values in one `in` list",
		"A cursor is at most " + thousands(proto.MaxCursorBytes) + " bytes",
		// Section 12: what a scoped reader's leave entries count toward a
		// page's limits (engine.PageLimit: as a record, and as
		// proto.LeaveEntryCost bytes).
		"Leave entries count as records toward a page's record limit and as " + thousands(proto.LeaveEntryCost) + " bytes toward its byte limit (the " + thousands(proto.LeaveBytes) + "-byte digest and its head, rounded up)",
		fmt.Sprintf("collection name %s bytes; record id %s bytes; field name %s bytes; replica id %s bytes; %s fields per record; a field value %s encoded, nested at most %s levels; a record %s encoded; wall time below %s; logical counter below %s in stored records, at most %s in a pushed stamp.",
			thousands(proto.MaxCollectionBytes), thousands(proto.MaxIDBytes), thousands(proto.MaxFieldNameBytes), thousands(proto.MaxReplicaBytes),
			thousands(proto.MaxFieldsPerRecord), inUnit(t, proto.MaxValueBytes, "KiB"), thousands(proto.MaxValueNestedLevels),
			inUnit(t, proto.MaxRecordBytes, "KiB"), belowPow2(t, proto.MaxWall), belowPow2(t, proto.MaxLogical), thousands(proto.MaxIssuedLogical)),
	} {
		if !strings.Contains(doc, phrase) {
			t.Errorf("docs/protocol.md does not say %q", phrase)
		}
	}
}
