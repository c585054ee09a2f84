package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores/storetest"
	"github.com/convergo/convergo/transport"
	"github.com/convergo/convergo/transport/proto"
)

func randomSuffix(t *testing.T) string {
	var b [5]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b[:])
}

// startServe runs "serve" in-process with args until the test ends and
// returns its base URL.
func startServe(t *testing.T, args ...string) string {
	t.Helper()
	var logs storetest.LogBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, append([]string{"serve", "--addr", "127.0.0.1:0", "--log-format", "json",
			"--secret", "0123456789abcdef0123456789abcdef"}, args...), io.Discard, &logs)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("serve: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("serve did not stop")
		}
	})
	addr := waitListening(t, func() string {
		select {
		case err := <-done:
			t.Fatalf("serve ended: %v\n%s", err, logs.String())
		default:
		}
		return logs.String()
	})
	return "http://" + addr
}

// storeURLs returns the store URL of each available service, each with a
// fresh prefix or table.
func storeURLs(t *testing.T) map[string]string {
	id := randomSuffix(t)
	urls := map[string]string{}
	t.Run("endpoints", func(t *testing.T) {
		t.Run("redis", func(t *testing.T) {
			urls["redis"] = "redis://" + storetest.Endpoint(t, "CONVERGO_REDIS_ADDR") + "?prefix=cmdtest-" + id + ":"
		})
		t.Run("redis-cluster", func(t *testing.T) {
			urls["redis-cluster"] = "redis-cluster://" + storetest.Endpoint(t, "CONVERGO_REDIS_CLUSTER_ADDRS") + "?prefix=cmdtest-" + id + ":"
		})
		t.Run("dynamodb", func(t *testing.T) {
			urls["dynamodb"] = "dynamodb://cmdtest-" + id + "?region=us-east-1&create=1&poll=200ms&endpoint=" + storetest.Endpoint(t, "CONVERGO_DYNAMODB_ENDPOINT")
		})
	})
	return urls
}

// Two instances on one shared store: a push to one reaches a live
// subscriber of the other.
func TestServeSharedStores(t *testing.T) {
	for name, url := range storeURLs(t) {
		t.Run(name, func(t *testing.T) {
			a := startServe(t, "--store", url)
			b := startServe(t, "--store", url)
			roundTrip(t, a, "", transport.DemoCollection)

			// Generous: DynamoDB Local on a loaded machine can take seconds
			// per call; the test returns as soon as the change arrives.
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(b, "http")+proto.PathLive, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer ws.CloseNow()
			send := func(m proto.Message) {
				data, err := proto.EncodeMessage(m)
				if err != nil {
					t.Fatal(err)
				}
				if err := ws.Write(ctx, websocket.MessageBinary, data); err != nil {
					t.Fatal(err)
				}
			}
			recv := func() proto.Message {
				_, data, err := ws.Read(ctx)
				if err != nil {
					t.Fatal(err)
				}
				m, err := proto.DecodeServerMessage(data)
				if err != nil {
					t.Fatal(err)
				}
				return m
			}
			send(proto.Hello{Protocol: proto.Version, Replica: "sub1"})
			if _, ok := recv().(proto.Welcome); !ok {
				t.Fatal("no welcome")
			}
			send(proto.Sub{Collection: transport.DemoCollection})
			first, ok := recv().(proto.Changes)
			if !ok || len(first.Records) != 1 {
				t.Fatalf("catch-up on b: %+v", first)
			}
			v, _ := crdt.EncodeValue("eggs")
			ch := crdt.Change{Collection: transport.DemoCollection, Record: crdt.SetField("r2", "title", v, crdt.Stamp{Wall: time.Now().UnixMilli(), Replica: proto.ReplicaFor("", "t2")})}
			var pushed proto.PushResponse
			if code := post(t, a, proto.PathPush, "", proto.PushRequest{Replica: "t2", Changes: []crdt.Change{ch}}, &pushed); code != 200 {
				t.Fatalf("push to a: %d", code)
			}
			for {
				m, ok := recv().(proto.Changes)
				if !ok {
					t.Fatalf("got %T", m)
				}
				if len(m.Records) == 1 && m.Records[0].Equal(ch.Record) {
					break
				}
			}
		})
	}
}
