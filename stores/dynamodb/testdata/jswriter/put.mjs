// put.mjs writes one plain item to a DynamoDB table with the AWS SDK for
// JavaScript v3: a program that knows nothing about Convergo. The Go test of
// stores/dynamodb runs it and checks that the store's stream consumer turns
// the item into a stamped change that Convergo subscribers see.
//
//   node put.mjs TABLE 'ITEM'
//
// ITEM is the item in DynamoDB's JSON form, e.g.
// '{"pk":{"S":"todos#42"},"sk":{"N":"0"},"title":{"S":"x"}}', or "-" to
// read it from standard input (an item larger than one argument may be).
// The endpoint comes from CONVERGO_DYNAMODB_ENDPOINT and the region and
// credentials from the usual AWS_* variables. On success it prints the
// item's key as JSON.
import { readFileSync } from "node:fs";
import { DynamoDBClient, PutItemCommand } from "@aws-sdk/client-dynamodb";

const [table, itemArg] = process.argv.slice(2);
const itemJSON = itemArg === "-" ? readFileSync(0, "utf8") : itemArg;
if (!table || !itemJSON) {
  console.error("usage: node put.mjs TABLE ITEM_JSON");
  process.exit(2);
}
const endpoint = process.env.CONVERGO_DYNAMODB_ENDPOINT;
if (!endpoint) {
  console.error("put.mjs: CONVERGO_DYNAMODB_ENDPOINT is not set");
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
  const item = JSON.parse(itemJSON);
  await client.send(new PutItemCommand({ TableName: table, Item: item }));
  console.log(JSON.stringify({ table, pk: item.pk, sk: item.sk }));
} catch (err) {
  console.error(`put.mjs: ${err.name}: ${err.message}`);
  process.exitCode = 1;
} finally {
  client.destroy();
}
