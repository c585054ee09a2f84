package redis

import (
	"fmt"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
)

// TestCaptureHashOverTheFieldLimit: an app hash with far more fields than
// a record may hold is refused when captured (logged, counted, skipped),
// and so is its deletion, which removes as many fields from its shadow:
// neither may stall the capture of the app's other hashes. (Redis's Lua
// unpacks at most 7,999 values into one command's arguments; a shadow
// holds two per field.)
func TestCaptureHashOverTheFieldLimit(t *testing.T) {
	eachTarget(t, func(t *testing.T, tg target) {
		ctx := testContext(t)
		prefix := uniquePrefix()
		cleanupPrefix(t, tg, prefix)
		s, _ := openCapture(t, tg, prefix, randomName("convergo-caplim-"))
		app := plainClient(t, tg)
		key := func(id string) string { return prefix + "app:todo:" + id }
		const fields = 5000 // well past crdt.MaxFieldsPerRecord, and 10,000 shadow entries
		if fields < 4*crdt.MaxFieldsPerRecord {
			t.Fatal("the test's hash is not far enough past the field limit")
		}
		args := make([]any, 0, 2*fields)
		for i := range fields {
			args = append(args, fmt.Sprintf("f%d", i), "v")
		}
		if err := app.HSet(ctx, key("big"), args...).Err(); err != nil {
			t.Fatal(err)
		}
		if err := app.HSet(ctx, key("1"), "title", "milk").Err(); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the hash written beside the large one", func() (bool, string) {
			r := recordView(t, s, "1")
			return r["title"] == "milk", fmt.Sprint(r)
		})
		if err := app.Del(ctx, key("big")).Err(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second) // the deletion is taken up, alone
		for i := range 3 {
			id := fmt.Sprint(i + 2)
			if err := app.HSet(ctx, key(id), "title", "eggs").Err(); err != nil {
				t.Fatal(err)
			}
			eventually(t, "a hash written after the large one was deleted", func() (bool, string) {
				r := recordView(t, s, id)
				return r["title"] == "eggs", fmt.Sprint(r)
			})
		}
	})
}
