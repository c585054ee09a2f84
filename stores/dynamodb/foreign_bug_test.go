package dynamodb

import (
	"errors"
	"testing"

	st "github.com/aws/aws-sdk-go-v2/service/dynamodbstreams/types"

	"github.com/convergo/convergo/internal/bug"
)

// TestForeignBugRefusesOneItem: a foreign item of a shape the mapping
// meets a bug on (here a nil value inside a list) is refused, that item
// alone, with an error wrapping bug.ErrPanic: the consumer rejects it,
// logs it at error level and goes on with the stream. Before, the panic
// ended the process from the consumer's goroutine.
func TestForeignBugRefusesOneItem(t *testing.T) {
	k := fkeys("todos#1", "0")
	img := withKeys(k, map[string]st.AttributeValue{"tags": &st.AttributeValueMemberL{Value: []st.AttributeValue{(*st.AttributeValueMemberS)(nil)}}})
	_, ok, err := readForeign(streamRecord(st.OperationTypeInsert, "1", k, img, nil))
	if ok || !errors.Is(err, bug.ErrPanic) {
		t.Fatalf("ok = %v, err = %v; want the item refused with a panic", ok, err)
	}
}
