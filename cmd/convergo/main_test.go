package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/engine"
	"github.com/convergo/convergo/stores/storetest"
	"github.com/convergo/convergo/transport"
	"github.com/convergo/convergo/transport/proto"
)

// waitListening reads JSON log lines until the "listening" one and returns
// its address.
func waitListening(t *testing.T, logs func() string) string {
	t.Helper()
	// Opening a store can be slow on a loaded machine (DynamoDB Local
	// creating a table); this returns as soon as the server listens.
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		for _, line := range strings.Split(logs(), "\n") {
			var rec map[string]any
			if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == "listening" {
				return rec["addr"].(string)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("server did not start; logs:\n%s", logs())
	return ""
}

func post(t *testing.T, base, path, token string, body any, out any) int {
	t.Helper()
	b, err := proto.Encode(body)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, base+path, bytes.NewReader(b))
	req.Header.Set(proto.HeaderProtocol, strconv.Itoa(proto.Version))
	req.Header.Set("Content-Type", proto.ContentType)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusOK && out != nil {
		if err := proto.Decode(data, out); err != nil {
			t.Fatalf("%s answer: %v", path, err)
		}
	}
	return resp.StatusCode
}

func get(t *testing.T, url string) (int, http.Header, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

// subjectOf reads the subject of a token ("" for none), for the replica id
// it owns.
func subjectOf(t *testing.T, token string) string {
	t.Helper()
	if token == "" {
		return ""
	}
	parts := strings.Split(token, ".")
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c struct{ Sub string }
	if err := json.Unmarshal(payload, &c); err != nil {
		t.Fatal(err)
	}
	return c.Sub
}

// roundTrip checks health, a push and a pull of base, with token (or
// anonymously on the demo collection when token is "").
func roundTrip(t *testing.T, base, token, coll string) {
	t.Helper()
	if code, _, body := get(t, base+"/healthz"); code != 200 || body != "ok\n" {
		t.Fatalf("healthz: %d %q", code, body)
	}
	// A slow backend (DynamoDB Local on a busy machine) may miss the
	// probe's deadline once; it must be ready soon.
	for i := 0; ; i++ {
		code, _, body := get(t, base+"/readyz")
		if code == 200 {
			break
		}
		if i == 5 {
			t.Fatalf("readyz: %d %q", code, body)
		}
	}
	v, _ := crdt.EncodeValue("milk")
	ch := crdt.Change{Collection: coll, Record: crdt.SetField("r1", "title", v, crdt.Stamp{Wall: time.Now().UnixMilli(), Replica: proto.ReplicaFor(subjectOf(t, token), "t1")})}
	var pushed proto.PushResponse
	if code := post(t, base, proto.PathPush, token, proto.PushRequest{Replica: "t1", Changes: []crdt.Change{ch}}, &pushed); code != 200 {
		t.Fatalf("push: %d", code)
	}
	if len(pushed.Results) != 1 || pushed.Results[0].Status != proto.StatusApplied {
		t.Fatalf("push results %+v", pushed.Results)
	}
	var page proto.PullResponse
	if code := post(t, base, proto.PathPull, token, proto.PullRequest{Collection: coll}, &page); code != 200 {
		t.Fatalf("pull: %d", code)
	}
	if len(page.Records) != 1 || !page.Records[0].Equal(ch.Record) {
		t.Fatalf("pulled %+v", page.Records)
	}
}

func TestServeInProcess(t *testing.T) {
	dir := t.TempDir()
	var logs storetest.LogBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--addr", "127.0.0.1:0", "--store", "bolt:" + filepath.Join(dir, "c.db"),
			"--log-format", "json", "--secret", "0123456789abcdef0123456789abcdef"}, io.Discard, &logs)
	}()
	addr := waitListening(t, logs.String)
	base := "http://" + addr
	roundTrip(t, base, "", transport.DemoCollection)

	// A token from "convergo token" is accepted for its collections.
	var out bytes.Buffer
	if err := run(context.Background(), []string{"token", "--sub", "alice", "--read", "notes.*", "--write", "notes.*",
		"--ttl", "1h", "--secret", "0123456789abcdef0123456789abcdef"}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	tok := strings.TrimSpace(out.String())
	roundTrip(t, base, tok, "notes.a")
	if code := post(t, base, proto.PathPull, tok, proto.PullRequest{Collection: "other"}, nil); code != http.StatusForbidden {
		t.Fatalf("out-of-scope pull: %d", code)
	}

	// A path of the protocol that is no endpoint is answered in its error
	// form, not redirected by the mux in front of it.
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, path := range []string{"/v2", "/v2//hello"} {
		resp, err := noRedirect.Post(base+path, "application/cbor", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound || resp.Header.Get(proto.HeaderError) != proto.CodeNotFound {
			t.Errorf("POST %s: %d %q, want 404 %s", path, resp.StatusCode, resp.Header.Get(proto.HeaderError), proto.CodeNotFound)
		}
	}

	// The demo app and the library, with their content types.
	for _, tc := range []struct{ path, ctype string }{
		{"/", "text/html; charset=utf-8"},
		{"/app.js", "text/javascript; charset=utf-8"},
		{"/style.css", "text/css; charset=utf-8"},
		{"/convergo/index.js", "text/javascript; charset=utf-8"},
		{"/convergo/index.d.ts", "application/typescript; charset=utf-8"},
	} {
		code, h, _ := get(t, base+tc.path)
		if code != 200 || h.Get("Content-Type") != tc.ctype {
			t.Errorf("%s: %d %q, want 200 %q", tc.path, code, h.Get("Content-Type"), tc.ctype)
		}
	}
	if code, _, body := get(t, base+"/metrics"); code != 200 || !strings.Contains(body, `convergo_push_changes_total{status="applied"} 2`) {
		t.Errorf("metrics: %d", code)
	}
	if !strings.Contains(logs.String(), "anonymous demo access is on") {
		t.Error("no warning that anonymous demo access is on")
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("serve did not stop")
	}
	if !strings.Contains(logs.String(), `"msg":"stopped"`) {
		t.Errorf("no clean stop in logs:\n%s", logs.String())
	}
}

// TestServeBinary builds the command, serves from a bolt file, stops it with
// SIGTERM, and serves the same file again: the data survived.
func TestServeBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "convergo")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	db := filepath.Join(dir, "data.db")
	start := func() (*exec.Cmd, string, *storetest.LogBuffer) {
		var logs storetest.LogBuffer
		cmd := exec.Command(bin, "serve", "--addr", "127.0.0.1:0", "--log-format", "json")
		cmd.Env = append(os.Environ(), "CONVERGO_STORE=bolt:"+db, "CONVERGO_SECRET=")
		cmd.Stderr = &logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		return cmd, "http://" + waitListening(t, logs.String), &logs
	}
	stop := func(cmd *exec.Cmd) {
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		errc := make(chan error, 1)
		go func() { errc <- cmd.Wait() }()
		select {
		case err := <-errc:
			if err != nil {
				t.Fatalf("exit after SIGTERM: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("no exit after SIGTERM")
		}
	}
	cmd, base, logs := start()
	roundTrip(t, base, "", transport.DemoCollection)
	if !strings.Contains(logs.String(), "random secret") {
		t.Errorf("no warning about the ephemeral secret:\n%s", logs.String())
	}
	// A live socket open at SIGTERM is closed with 1001, going away.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(base, "http")+proto.PathLive, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	hello, _ := proto.EncodeMessage(proto.Hello{Protocol: proto.Version, Replica: "t1"})
	if err := ws.Write(ctx, websocket.MessageBinary, hello); err != nil {
		t.Fatal(err)
	}
	if _, _, err := ws.Read(ctx); err != nil { // the welcome
		t.Fatal(err)
	}
	closed := make(chan error, 1)
	go func() { _, _, err := ws.Read(ctx); closed <- err }()
	stop(cmd)
	if err := <-closed; websocket.CloseStatus(err) != websocket.StatusGoingAway {
		t.Fatalf("live socket at shutdown: %v", err)
	}

	cmd, base, _ = start()
	var page proto.PullResponse
	if code := post(t, base, proto.PathPull, "", proto.PullRequest{Collection: transport.DemoCollection}, &page); code != 200 || len(page.Records) != 1 {
		t.Fatalf("after restart: %d, %d entries", code, len(page.Records))
	}
	stop(cmd)
}

func TestEnvFlags(t *testing.T) {
	t.Setenv("CONVERGO_MAX_DRIFT", "90s")
	t.Setenv("CONVERGO_ORIGINS", "a.example,b.example")
	t.Setenv("CONVERGO_DEMO", "false")
	fs, c := serveFlags(io.Discard)
	if err := parseFlags(fs, []string{"--demo=true"}); err != nil {
		t.Fatal(err)
	}
	if c.maxDrift != 90*time.Second || strings.Join(c.origins, " ") != "a.example b.example" || !c.demo {
		t.Fatalf("got drift %v origins %v demo %v", c.maxDrift, c.origins, c.demo)
	}
	if c.maxLeases != proto.DefaultMaxLeasesPerSubject {
		t.Fatalf("--max-leases defaults to %d; want %d", c.maxLeases, proto.DefaultMaxLeasesPerSubject)
	}
	t.Setenv("CONVERGO_MAX_LEASES", "5")
	if fs, c = serveFlags(io.Discard); parseFlags(fs, nil) != nil || c.maxLeases != 5 {
		t.Fatalf("CONVERGO_MAX_LEASES=5: --max-leases %d", c.maxLeases)
	}
	if err := run(context.Background(), []string{"serve", "--store", "memory:", "--max-leases", "0"}, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "--max-leases") {
		t.Fatalf("--max-leases 0: %v", err)
	}
	t.Setenv("CONVERGO_RATE", "fast")
	fs, _ = serveFlags(io.Discard)
	if err := parseFlags(fs, nil); err == nil || !strings.Contains(err.Error(), "CONVERGO_RATE") {
		t.Fatalf("bad env value: %v", err)
	}
}

// A limit flag below 1 is refused by name: the hello announces the
// protocol limits among them, and a server never announces 0
// (docs/protocol.md, section 6). 0 used to mean the default silently.
func TestServeRefusesLimitsBelowOne(t *testing.T) {
	flags := []string{"max-body", "max-push", "max-pull", "max-page-bytes", "max-message", "max-conns",
		"max-subscriptions", "max-sessions", "max-subscriptions-per-subject", "max-conns-total",
		"max-queue-bytes", "max-bodies-in-flight", "max-answers-in-flight"}
	for _, name := range flags {
		for _, v := range []string{"0", "-1"} {
			t.Run(name+"="+v, func(t *testing.T) {
				// Cancelled: were the flag taken, serve would stop at once.
				ctx, cancel := context.WithCancel(context.Background())
				cancel()
				err := run(ctx, []string{"serve", "--store", "memory:", "--addr", "127.0.0.1:0", "--" + name, v}, io.Discard, io.Discard)
				if err == nil || !strings.Contains(err.Error(), "--"+name) {
					t.Fatalf("got %v, want an error naming --%s", err, name)
				}
			})
		}
	}
}

// The numeric and duration flags of serve that are not --max-… limits:
// a value whose meaning is not the one the user gave (0 read as the
// default, a burst that admits nothing, a max drift the hello would
// announce as 0 ms) is refused by name; the values with a documented
// meaning of their own (a negative --rate: no limit; a negative
// --collect-every: this instance never runs the job; a --quota bound of
// 0: none) start the server.
func TestServeNumericFlags(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		refused string // the flag the error names; "" when the server starts
	}{
		{[]string{"--max-drift", "0"}, "max-drift"},
		{[]string{"--max-drift", "-1s"}, "max-drift"},
		{[]string{"--max-drift", "999us"}, "max-drift"}, // announced as 0 ms
		{[]string{"--max-drift", "1ms"}, ""},
		{[]string{"--request-timeout", "0"}, "request-timeout"},
		{[]string{"--request-timeout", "-1s"}, "request-timeout"},
		{[]string{"--request-timeout", "1ms"}, ""},
		{[]string{"--burst", "0"}, "burst"},
		{[]string{"--burst", "-1"}, "burst"},
		{[]string{"--rate", "0.5", "--burst", "0"}, "burst"},
		{[]string{"--rate", "0.5", "--burst", "1"}, ""},
		{[]string{"--rate", "0"}, "rate"},
		{[]string{"--rate", "NaN"}, "rate"},
		{[]string{"--rate", "-1"}, ""},
		{[]string{"--rate", "-1", "--burst", "0"}, ""}, // no rate, no bucket
		{[]string{"--collect-every", "0"}, "collect-every"},
		{[]string{"--collect-every", "-1s"}, ""},
		{[]string{"--collect-every", "1ms"}, ""},
		{[]string{"--shutdown-timeout", "0"}, "shutdown-timeout"},
		{[]string{"--shutdown-timeout", "-1s"}, "shutdown-timeout"},
		{[]string{"--shutdown-timeout", "1ms"}, ""},
		{[]string{"--shutdown-delay", "-1s"}, "shutdown-delay"},
		{[]string{"--shutdown-delay", "0"}, ""},
		{[]string{"--shutdown-delay", "5s"}, ""},
		{[]string{"--max-leases", "0"}, "max-leases"},
		{[]string{"--max-leases", "-1"}, "max-leases"},
		{[]string{"--max-leases", "1"}, ""},
		{[]string{"--max-pull", strconv.Itoa(engine.MaxPage + 1)}, "max-pull"},
		{[]string{"--max-pull", strconv.Itoa(engine.MaxPage)}, ""},
		{[]string{"--max-push", strconv.Itoa(crdt.MaxContainerItems + 1)}, "max-push"},
		{[]string{"--max-push", strconv.Itoa(crdt.MaxContainerItems)}, ""},
		{[]string{"--quota", "a.*=-1/0"}, "quota"},
		{[]string{"--quota", "a.*=0/-1"}, "quota"},
		{[]string{"--quota", "a.*=0/0"}, ""}, // 0: no bound
		{[]string{"--quota", "a.*=0/0/-1"}, "quota"},
		{[]string{"--quota", "a.*=0/0/x"}, "quota"},
		{[]string{"--quota", "a.*=0/0/1/2"}, "quota"},
		{[]string{"--quota", "a.*=10/1024/50"}, ""},
	} {
		t.Run(strings.Join(tc.args, "="), func(t *testing.T) {
			want := "nil"
			if tc.refused != "" {
				want = "an error naming --" + tc.refused
			}
			// The flag package names a flag whose Set refuses the value
			// (--quota); checkNumbers names the others the same way.
			ok := func(err error) bool {
				if tc.refused == "" {
					return err == nil
				}
				return err != nil && (strings.HasPrefix(err.Error(), "--"+tc.refused+" ") ||
					strings.Contains(err.Error(), " for flag -"+tc.refused+": "))
			}
			fs, c := serveFlags(io.Discard)
			err := parseFlags(fs, tc.args)
			if err == nil {
				err = c.checkNumbers()
			}
			if !ok(err) {
				t.Fatalf("flags: got %v, want %s", err, want)
			}
			// serve itself: cancelled, so that a server it starts stops at once.
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			err = run(ctx, append([]string{"serve", "--store", "memory:", "--addr", "127.0.0.1:0"}, tc.args...), io.Discard, io.Discard)
			if tc.refused == "" && errors.Is(err, errUnclosed) {
				// The server started and stopped, and closing it took
				// longer than a --shutdown-timeout as short as 1ms allows
				// on a busy machine: the flag was taken.
				err = nil
			}
			if !ok(err) {
				t.Fatalf("serve: got %v, want %s", err, want)
			}
		})
	}
}

func TestCommands(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"version"}, &out, io.Discard); err != nil || !strings.HasPrefix(out.String(), "convergo ") {
		t.Fatalf("version: %v %q", err, out.String())
	}
	if err := run(context.Background(), []string{"nope"}, io.Discard, io.Discard); err == nil {
		t.Fatal("unknown command: no error")
	}
	if err := run(context.Background(), []string{"token", "--sub", "a", "--read", "x", "--secret", "short"}, io.Discard, io.Discard); err == nil {
		t.Fatal("short secret: no error")
	}
	if err := run(context.Background(), []string{"serve", "--demo=false", "--store", "memory:"}, io.Discard, io.Discard); err == nil {
		t.Fatal("serve without secret or demo: no error")
	}
}

func TestParsePrefixes(t *testing.T) {
	got, err := parsePrefixes([]string{"10.0.0.0/8", "192.0.2.7", "::1", "10.1.2.3/16"})
	if err != nil {
		t.Fatal(err)
	}
	if s := fmt.Sprint(got); s != "[10.0.0.0/8 192.0.2.7/32 ::1/128 10.1.0.0/16]" {
		t.Fatalf("got %s", s)
	}
	if _, err := parsePrefixes([]string{"lb.internal"}); err == nil {
		t.Fatal("a host name: no error")
	}
}

func TestServeMetricsAddr(t *testing.T) {
	var logs storetest.LogBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0", "--store", "memory:",
			"--log-format", "json"}, io.Discard, &logs)
	}()
	base := "http://" + waitListening(t, logs.String)
	var metrics string
	for _, line := range strings.Split(logs.String(), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == "serving metrics" {
			metrics = "http://" + rec["addr"].(string)
		}
	}
	if metrics == "" {
		t.Fatalf("no metrics listener logged:\n%s", logs.String())
	}
	for _, tc := range []struct {
		url  string
		want int
	}{
		{base + "/metrics", 404},
		{base + "/healthz", 200},
		{metrics + "/metrics", 200},
		{metrics + "/readyz", 200},
		{metrics + "/", 404},
		{metrics + "/v2/pull", 404},
	} {
		if code, _, _ := get(t, tc.url); code != tc.want {
			t.Errorf("GET %s: %d, want %d", tc.url, code, tc.want)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestLimitFlagsNamed: every flag that sets a field of transport.Limits is
// the one limitFlags names for that field, so a limit refused by
// transport.Limits.Validate is reported under its flag's name.
func TestLimitFlagsNamed(t *testing.T) {
	fs, c := serveFlags(io.Discard)
	named := map[string]bool{}
	for _, name := range limitFlags {
		named[name] = true
		if fs.Lookup(name) == nil {
			t.Errorf("limitFlags names --%s, which serve does not define", name)
		}
	}
	base := c.limits
	fs.VisitAll(func(f *flag.Flag) {
		fs, c := serveFlags(io.Discard)
		if err := fs.Set(f.Name, "0"); err != nil {
			return // not a number
		}
		if c.limits != base && !named[f.Name] {
			t.Errorf("--%s sets a field of transport.Limits, and limitFlags does not name it", f.Name)
		}
	})
}

// Every limit flag of serve (limitFlags) has a lowest value the protocol
// works with: the table gives it, and the value one below is refused at
// startup naming the flag, the value and the bound. --max-body and
// --max-message must carry a request of one record at the record limit
// (transport.MinRequestBytes); the others work from 1 (a page, a queue
// or a budget in flight always lets one item through alone).
func TestServeLimitFlagsLowestValues(t *testing.T) {
	lowest := map[string]float64{
		"max-body":                      transport.MinRequestBytes,
		"max-message":                   transport.MinRequestBytes,
		"max-push":                      1,
		"max-pull":                      1,
		"max-page-bytes":                1,
		"max-conns":                     1,
		"max-subscriptions":             1,
		"max-sessions":                  1,
		"max-subscriptions-per-subject": 1,
		"max-conns-total":               1,
		"max-queue-bytes":               1,
		"max-bodies-in-flight":          1,
		"max-answers-in-flight":         1,
		"burst":                         1, // with a positive --rate
	}
	for _, name := range limitFlags {
		if _, ok := lowest[name]; !ok && name != "rate" && name != "request-timeout" {
			t.Errorf("--%s has no lowest value in the table", name)
		}
	}
	// docs/operations.md gives the bound of --max-body and --max-message.
	raw, err := os.ReadFile(filepath.Join("..", "..", "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	b := strconv.Itoa(transport.MinRequestBytes)
	figure := b[:len(b)-3] + "," + b[len(b)-3:]
	if doc := strings.Join(strings.Fields(string(raw)), " "); !strings.Contains(doc, "`--max-message` below "+figure+" bytes (`transport.MinRequestBytes`") {
		t.Errorf("docs/operations.md does not give the least --max-body and --max-message, %s", figure)
	}
	for name, low := range lowest {
		for _, tc := range []struct {
			v       float64
			refused bool
		}{{low, false}, {low - 1, true}} {
			v := strconv.FormatFloat(tc.v, 'f', -1, 64)
			t.Run(name+"="+v, func(t *testing.T) {
				fs, c := serveFlags(io.Discard)
				err := parseFlags(fs, []string{"--" + name, v})
				if err == nil {
					err = c.checkNumbers()
				}
				bound := strconv.FormatFloat(low, 'f', -1, 64)
				switch {
				case !tc.refused && err != nil:
					t.Fatalf("got %v, want --%s %s taken", err, name, v)
				case tc.refused && (err == nil || !strings.HasPrefix(err.Error(), "--"+name+" "+v+": ") || !strings.Contains(err.Error(), bound)):
					t.Fatalf("got %v, want an error naming --%s, %s and the bound %s", err, name, v, bound)
				}
			})
		}
	}
}

// --max-page-bytes has a highest value: a pull answer (or live frame) of a
// page of that many bytes, with a seal for each of the most records a page
// holds and its envelope, must be one both clients read (at most
// proto.DefaultMaxAnswerBytes of an answer). The value one above is
// refused at startup naming the flag, the value and the bound.
func TestServeMaxPageBytesHighest(t *testing.T) {
	high := float64(transport.MaxWorkablePageBytes)
	if transport.MaxWorkablePageBytes >= proto.DefaultMaxAnswerBytes || transport.MaxWorkablePageBytes < proto.DefaultMaxAnswerBytes/2 {
		t.Fatalf("transport.MaxWorkablePageBytes %d: want under the clients' answer bound %d, near it", transport.MaxWorkablePageBytes, proto.DefaultMaxAnswerBytes)
	}
	raw, err := os.ReadFile(filepath.Join("..", "..", "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	b := strconv.Itoa(transport.MaxWorkablePageBytes)
	figure := b[:len(b)-6] + "," + b[len(b)-6:len(b)-3] + "," + b[len(b)-3:]
	if doc := strings.Join(strings.Fields(string(raw)), " "); !strings.Contains(doc, "`--max-page-bytes` above "+figure+" bytes (`transport.MaxWorkablePageBytes`") {
		t.Errorf("docs/operations.md does not give the most --max-page-bytes, %s", figure)
	}
	for _, tc := range []struct {
		v       float64
		refused bool
	}{{high, false}, {high + 1, true}, {proto.DefaultMaxAnswerBytes, true}} {
		v := strconv.FormatFloat(tc.v, 'f', -1, 64)
		t.Run(v, func(t *testing.T) {
			fs, c := serveFlags(io.Discard)
			err := parseFlags(fs, []string{"--max-page-bytes", v})
			if err == nil {
				err = c.checkNumbers()
			}
			bound := strconv.FormatFloat(high, 'f', -1, 64)
			switch {
			case !tc.refused && err != nil:
				t.Fatalf("got %v, want --max-page-bytes %s taken", err, v)
			case tc.refused && (err == nil || !strings.HasPrefix(err.Error(), "--max-page-bytes "+v+": ") || !strings.Contains(err.Error(), bound)):
				t.Fatalf("got %v, want an error naming --max-page-bytes, %s and the bound %s", err, v, bound)
			}
		})
	}
}
