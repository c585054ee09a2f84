// update.mjs changes one item of a DynamoDB table with an UpdateItem of the
// AWS SDK for JavaScript v3, the way a script or a Lambda that knows nothing
// about Convergo does ("SET done = :t", "REMOVE price"). The Go capture
// tests of stores/dynamodb run it.
//
//   node update.mjs TABLE 'KEY' 'UPDATE_EXPRESSION' ['VALUES' ['NAMES']]
//
// KEY and VALUES are in DynamoDB's JSON form, e.g.
// '{"pk":{"S":"todos#42"},"sk":{"N":"0"}}' and '{":t":{"BOOL":true}}';
// NAMES maps #placeholders to attribute names ('{"#v":"views"}'), needed
// for names that are DynamoDB reserved words. The endpoint comes from
// CONVERGO_DYNAMODB_ENDPOINT; on success it prints the key as JSON.
import { DynamoDBClient, UpdateItemCommand } from "@aws-sdk/client-dynamodb";

const [table, keyJSON, expr, valuesJSON, namesJSON] = process.argv.slice(2);
if (!table || !keyJSON || !expr) {
  console.error("usage: node update.mjs TABLE KEY_JSON UPDATE_EXPRESSION [VALUES_JSON [NAMES_JSON]]");
  process.exit(2);
}
const endpoint = process.env.CONVERGO_DYNAMODB_ENDPOINT;
if (!endpoint) {
  console.error("update.mjs: CONVERGO_DYNAMODB_ENDPOINT is not set");
  process.exit(2);
}

const client = new DynamoDBClient({
  endpoint,
  region: process.env.AWS_REGION || "us-east-1",
  credentials: {
    accessKeyId: process.env.AWS_ACCESS_KEY_ID || "local",
    secretAccessKey: process.env.AWS_SECRET_ACCESS_KEY || "local",
  },
});

try {
  const key = JSON.parse(keyJSON);
  const input = { TableName: table, Key: key, UpdateExpression: expr };
  if (valuesJSON) input.ExpressionAttributeValues = JSON.parse(valuesJSON);
  if (namesJSON) input.ExpressionAttributeNames = JSON.parse(namesJSON);
  await client.send(new UpdateItemCommand(input));
  console.log(JSON.stringify({ table, pk: key.pk, sk: key.sk, update: expr }));
} catch (err) {
  console.error(`update.mjs: ${err.name}: ${err.message}`);
  process.exitCode = 1;
} finally {
  client.destroy();
}
