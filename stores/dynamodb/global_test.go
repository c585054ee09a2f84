package dynamodb

import (
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// TestGlobalTableRefused: the replicas of a global table have TableIds
// of their own and share one store item, so each region's servers would
// take the others' incarnation for a restore and start new epochs at
// every open, resetting every reader. The store refuses such a table at
// open, saying why, rather than run on it.
func TestGlobalTableRefused(t *testing.T) {
	table := func(replicas ...string) *types.TableDescription {
		d := &types.TableDescription{
			TableName: aws.String("convergo"),
			AttributeDefinitions: []types.AttributeDefinition{
				{AttributeName: aws.String(attrPK), AttributeType: types.ScalarAttributeTypeS},
				{AttributeName: aws.String(attrSK), AttributeType: types.ScalarAttributeTypeN},
			},
			KeySchema: []types.KeySchemaElement{
				{AttributeName: aws.String(attrPK), KeyType: types.KeyTypeHash},
				{AttributeName: aws.String(attrSK), KeyType: types.KeyTypeRange},
			},
		}
		for _, r := range replicas {
			d.Replicas = append(d.Replicas, types.ReplicaDescription{RegionName: aws.String(r)})
		}
		return d
	}
	if err := checkSchema(table()); err != nil {
		t.Fatalf("a table without replicas: %v", err)
	}
	err := checkSchema(table("us-east-1", "eu-west-1"))
	if err == nil || !strings.Contains(err.Error(), "global table") || !strings.Contains(err.Error(), "eu-west-1") {
		t.Fatalf("a global table: %v; want it refused, naming its replicas", err)
	}
	old := table()
	old.GlobalTableVersion = aws.String("2017.11.29")
	if err := checkSchema(old); err == nil || !strings.Contains(err.Error(), "global table") {
		t.Fatalf("a global table of version 2017.11.29: %v; want it refused", err)
	}
}
