// A client of schema version 1 on a server whose notes moved to version 2,
// which merges street and city into address (docs/protocol.md, section 13
// and "Tombstone collection"): after lease_expired it gives back its
// stamps of a record the server deleted and collected one change per
// stamp, a part of the merge alone. Untranslatable, they would keep the
// record here for ever; refused collected, it is dropped as everywhere
// else. A stamp the server still holds under its old name (a field v2
// drops) stays untranslatable: the client keeps that value, as section 13
// says old clients do. The server's side is
// engine/horizon_migrate_untranslatable_test.go
// and the Go client's transport/client/migrations_collected_test.go.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FakeServer } from './helpers/server.js';
import { horizonPast, openClient, until } from './helpers/util.js';

const WAIT = 15_000;
const C = 'notes';
const V1 = { version: 1, steps: [] };
const V2 = { version: 2, steps: [{ to: 2, ops: [{ op: 'merge', from: ['street', 'city'], to: 'address', sep: ', ' }] }] };

/**
 * A client of version 1 that wrote notes/home ({street}, then later) and
 * synced both, then paused; the reconciled events it emits.
 * @param {import('node:test').TestContext} t
 * @param {Record<string, unknown>} later
 */
async function pausedV1Client(t, later) {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  server.setMigrations(C, V1);
  const a = await openClient({ url: server.url, name: 'a', collections: [C], migrations: { [C]: V1 }, WebSocket: null, pollInterval: 50 });
  t.after(() => a.close());
  const notes = a.collection(C);
  await notes.put('home', { street: 'Main St' });
  await a.whenSynced();
  await notes.update('home', later);
  await a.whenSynced();
  /** @type {any[]} */
  const reconciled = [];
  a.on('reconciled', (/** @type {any} */ r) => reconciled.push(r));
  await a.pause();
  return { server, a, notes, reconciled };
}

test('a v1 client drops a record collected under v2 although its parts cannot be given back alone', async (t) => {
  const { server, a, notes, reconciled } = await pausedV1Client(t, { city: 'Springfield' });
  server.setMigrations(C, V2);
  server.collect(C, 'home');
  server.writeHorizon.set(C, await horizonPast(a));
  server.leaseExpire(C);
  const mark = server.pushed.length;
  a.resume();
  await a.whenSynced();
  await until(() => reconciled.length > 0, 'the reconciled event', WAIT);
  assert.deepEqual(
    server.pushed.slice(mark).map((p) => [p.id, p.code]),
    [['home', 'collected'], ['home', 'collected']],
    'each part given back alone, refused collected',
  );
  assert.equal(await notes.get('home'), null, 'dropped, as on the server');
  assert.equal(await a.store.get(C, 'home'), undefined);
});

test('a v1 client keeps its value of a field v2 drops through a reconciliation: its give-back is untranslatable, not collected', async (t) => {
  const { server, a, notes, reconciled } = await pausedV1Client(t, { legacy: true });
  server.setMigrations(C, { version: 2, steps: [{ to: 2, ops: [{ op: 'drop', field: 'legacy' }] }] });
  server.writeHorizon.set(C, await horizonPast(a));
  server.leaseExpire(C);
  const mark = server.pushed.length;
  a.resume();
  await a.whenSynced();
  await until(() => reconciled.length > 0, 'the reconciled event', WAIT);
  assert.deepEqual(server.pushed.slice(mark).map((p) => [p.id, p.code]), [['home', 'untranslatable']]);
  assert.deepEqual(await notes.get('home'), { id: 'home', street: 'Main St', legacy: true }, 'values of a dropped field held here stay here');
});
