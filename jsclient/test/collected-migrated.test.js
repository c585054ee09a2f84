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

test('a change of a collection a newer tab upgraded, refused collected while an older tab leads, is kept rejected and told to every tab, not failed with "reload the app"', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  server.setMigrations(C, V1);
  const { fakeLocks, freshIDB } = await import('./helpers/util.js');
  const idb = freshIDB();
  const locks = fakeLocks();
  const tabOpts = { url: server.url, name: 'mixed', indexedDB: idb, locks, BroadcastChannel: globalThis.BroadcastChannel, collections: [C], WebSocket: null, pollInterval: 50 };
  // The tab of older code leads; a tab of newer code opens and upgrades notes to v2.
  const old = await openClient({ ...tabOpts, migrations: { [C]: V1 } });
  t.after(() => old.close());
  await until(() => old.status.leader && old.status.online, 'the older tab leads', WAIT);
  await old.collection(C).put('home', { street: 'Main St', city: 'Springfield' });
  await old.whenSynced();
  server.setMigrations(C, V2);
  const fresh = await openClient({ ...tabOpts, migrations: { [C]: V2 } });
  t.after(() => fresh.close());
  /** @type {any[]} */
  const refused = [];
  fresh.on('refused', (/** @type {any} */ r) => refused.push(r));
  /** @type {string[]} */
  const errors = [];
  old.on('error', (/** @type {any} */ e) => errors.push(e.message));
  // An edit of the newer tab, refused collected (a write horizon ahead of
  // every stamp): the older leader holds it, reconciles notes, and would
  // write it again with fresh stamps, in a collection whose data is at a
  // version its code does not write.
  server.writeHorizon.set(C, Date.now() + 3_600_000);
  await fresh.collection(C).update('home', { address: 'Elm St, Springfield' });
  await until(() => refused.length > 0, "the newer tab hears 'refused'", WAIT).catch((e) => {
    throw new Error(`${e.message}; the leader said: ${JSON.stringify(errors)}; its status.lastError: ${old.status.lastError?.message}`);
  });
  assert.deepEqual(refused.map((r) => [r.id, r.code]), [['home', 'collected']]);
  assert.deepEqual(errors.filter((m) => /reload the app/.test(m)), [], 'no "reload the app" failure in the leader');
  const rej = await fresh.rejected();
  assert.deepEqual(rej.map((r) => [r.recordId, r.code, r.change.fields]), [['home', 'collected', { address: 'Elm St, Springfield' }]]);
  assert.deepEqual(await fresh.collection(C).get('home'), { id: 'home', address: 'Main St, Springfield' }, 'rolled back');
  // The newer tab's app writes it again; under a horizon behind it, it lands.
  server.writeHorizon.set(C, 0);
  await fresh.retry(rej[0].id);
  await until(() => fresh.status.pending === 0 && old.status.pending === 0, 'pushed', WAIT);
  await until(async () => (await fresh.collection(C).get('home'))?.address === 'Elm St, Springfield', 'written again', WAIT);
  assert.equal(server.served(C, /** @type {any} */ (server.coll(C).byId.get('home')).record, 2).fields.has('address'), true);
});
