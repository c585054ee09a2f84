package client

import (
	"encoding/json"
	"testing"
	"time"
)

// TestReplicaDocsRoundTrip writes a struct with nested objects, integers,
// floats, bytes and times through one replica and the engine, and reads it
// on another replica as a map and as a struct: the JSON of each equals the
// JSON of what was written.
func TestReplicaDocsRoundTrip(t *testing.T) {
	type line struct {
		SKU string  `json:"sku"`
		Qty int     `json:"qty"`
		Net float64 `json:"net"`
	}
	type order struct {
		Total  int64          `json:"total"`
		Ratio  float64        `json:"ratio"`
		Sig    []byte         `json:"sig"`
		Placed time.Time      `json:"placed"`
		Lines  []line         `json:"lines"`
		Meta   map[string]any `json:"meta"`
	}
	f := newFakeServer(t)
	ctx := t.Context()
	a := newReplica(t, f, "a", nil, "orders")
	b := newReplica(t, f, "b", nil, "orders")
	want := order{
		Total: 1 << 60, Ratio: 0.25, Sig: []byte{1, 2, 254}, Placed: time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC),
		Lines: []line{{"x", 3, 1.5}}, Meta: map[string]any{"source": map[string]any{"app": "pos", "v": int64(2)}},
	}
	if err := a.SetDoc("orders", "o1", want); err != nil {
		t.Fatal(err)
	}
	if err := a.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	wantJSON, _ := json.Marshal(want)

	doc, ok, err := b.GetDoc("orders", "o1")
	if err != nil || !ok {
		t.Fatalf("GetDoc: %v %v", ok, err)
	}
	if got, err := json.Marshal(doc); err != nil || !sameJSON(t, got, wantJSON) {
		t.Fatalf("GetDoc JSON (err %v):\n got  %s\n want %s", err, got, wantJSON)
	}
	var got order
	if ok, err := b.GetInto("orders", "o1", &got); err != nil || !ok {
		t.Fatalf("GetInto: %v %v", ok, err)
	}
	if g, _ := json.Marshal(got); string(g) != string(wantJSON) {
		t.Fatalf("GetInto JSON:\n got  %s\n want %s", g, wantJSON)
	}
	// The engine reads the same document the same way.
	var onServer order
	if err := f.eng.GetInto(ctx, "orders", "o1", &onServer); err != nil {
		t.Fatal(err)
	}
	if g, _ := json.Marshal(onServer); string(g) != string(wantJSON) {
		t.Fatalf("engine GetInto JSON:\n got  %s\n want %s", g, wantJSON)
	}
	d, err := f.eng.Get(ctx, "orders", "o1")
	if err != nil {
		t.Fatal(err)
	}
	if g, _ := json.Marshal(d); !sameJSON(t, g, wantJSON) {
		t.Fatalf("engine Get JSON:\n got  %s\n want %s", g, wantJSON)
	}
	if _, ok, _ := b.GetDoc("orders", "nope"); ok {
		t.Fatal("GetDoc of a missing record reports it exists")
	}
}

func sameJSON(t *testing.T, a, b []byte) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &y); err != nil {
		t.Fatal(err)
	}
	xb, _ := json.Marshal(x)
	yb, _ := json.Marshal(y)
	return string(xb) == string(yb)
}
