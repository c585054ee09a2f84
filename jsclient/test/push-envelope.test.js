// A push spanning many collections with schema versions carries one entry
// of key 3 ({collection: version}) for each, which took more than the
// PUSH_ENVELOPE_BYTES the client reserved for the envelope: a batch cut by
// its changes' bytes alone was refused too_large and halved, extra
// requests for nothing. The client now charges each collection's entry to
// the batch (pushSizer, transport/proto's PushSizer): every push fits the
// body limit and none is refused. The Go client's side is
// transport/client/push_envelope_test.go.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FakeServer } from './helpers/server.js';
import { openClient } from './helpers/util.js';
import { PUSH_VERSIONS } from '../src/constants.js';
import { pushVersionBytes } from '../src/protocol.js';

test("pushVersionBytes is transport/proto's PushVersionBytes (its vectors)", () => {
  assert.ok(PUSH_VERSIONS.length > 0);
  for (const v of PUSH_VERSIONS) assert.equal(pushVersionBytes(v.collection, v.version), v.bytes, `${v.collection} at ${v.version}`);
});

test('an outbox over many collections with schema versions is pushed in requests within the body limit, none refused too_large', async (t) => {
  const maxBody = 32 << 10;
  const server = await new FakeServer({ maxBody }).start();
  t.after(() => server.stop());
  const V1 = { version: 1, steps: [] };
  const names = Array.from({ length: 100 }, (_, i) => `many.${String(i).padStart(3, '0')}.${'x'.repeat(110)}`);
  for (const c of names) server.setMigrations(c, V1);
  const db = await openClient({ url: server.url, collections: names, migrations: Object.fromEntries(names.map((c) => [c, V1])), WebSocket: null, pollInterval: 60_000 });
  t.after(() => db.close());
  await db.whenSynced();
  await db.pause();
  // About 300 bytes of change each: together within what
  // PUSH_ENVELOPE_BYTES leaves of the body, one request by their bytes.
  for (const c of names) await db.collection(c).put('r', { v: 'y'.repeat(140) });
  const mark = server.pushSizes.length;
  db.resume();
  await db.whenSynced();
  const sizes = server.pushSizes.slice(mark);
  assert.equal(server.pushed.filter((p) => p.status === 0).length, names.length, 'every change applied');
  assert.ok(sizes.every((n) => n <= maxBody), `push bodies of ${sizes.join(', ')} bytes, none over the max-body of ${maxBody}`);
  assert.equal(sizes.length, 2, `pushes of ${sizes.join(', ')} bytes: two requests, none refused`);
});
