// A rejected change kept from before an upgrade of its collection's schema
// version (src/schema.js) is in the shape it was written in. Written again
// (Database.retry) after the upgrade, it goes in the current shape: a
// refused title edit comes back as the name the migration renamed it to,
// and a change the migration cannot map is refused untranslatable again,
// not written in a shape the data has left (where the local record would
// keep a field the server resolves away: a fork).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FakeServer } from './helpers/server.js';
import { freshIDB, openClient } from './helpers/util.js';
import { LOCAL_DEFAULTS } from '../src/model.js';

const C = 'notes';
const V1 = { version: 1, steps: [] };
const V2 = {
  version: 2,
  steps: [
    {
      to: 2,
      ops: [
        { op: 'rename', from: 'title', to: 'name' },
        { op: 'split', from: 'who', to: ['first', 'last'], sep: ' ' },
      ],
    },
  ],
};

test('a change rejected before an upgrade is written again in the current shape, or refused untranslatable', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  server.setMigrations(C, V1);
  const idb = freshIDB();
  let db = await openClient({ url: server.url, indexedDB: idb, migrations: { [C]: V1 } });
  await db.collection(C).put('n1', { title: 'milk' });
  await db.whenSynced();
  // Refused by the server under v1.
  server.refuseIds.add('n1');
  await db.collection(C).update('n1', { title: 'oat milk' });
  await db.whenSynced();
  server.refuseIds.delete('n1');
  // Offline, a v1 edit that v2 cannot map.
  await db.pause();
  await db.collection(C).put('n2', { who: 42 });
  await db.close();
  server.setMigrations(C, V2);

  db = await openClient({ url: server.url, indexedDB: idb, migrations: { [C]: V2 } });
  t.after(() => db.close());
  await db.whenSynced();
  const rej = await db.rejected();
  assert.deepEqual(rej.map((r) => [r.recordId, r.code]).sort(), [['n1', 'forbidden'], ['n2', 'untranslatable']]);
  const byId = new Map(rej.map((r) => [r.recordId, r]));
  // The title edit, written again, is the name edit it is at v2.
  await db.retry(/** @type {any} */ (byId.get('n1')).id);
  await db.whenSynced();
  assert.deepEqual(await db.collection(C).get('n1'), { id: 'n1', name: 'oat milk' });
  // The change v2 cannot map is refused as the upgrade refused it, and
  // stays among the rejected changes; nothing of it is written.
  await assert.rejects(db.retry(/** @type {any} */ (byId.get('n2')).id), (e) => /** @type {any} */ (e).code === 'untranslatable');
  assert.equal(await db.collection(C).get('n2'), null);
  assert.deepEqual((await db.rejected()).map((r) => r.recordId), ['n2']);
  await db.whenSynced();
  const e = server.coll(C).byId.get('n1');
  const served = server.served(C, /** @type {any} */ (e).record, 2);
  assert.deepEqual([...served.fields.keys()].sort(), ['name']);
});

/**
 * The rejected changes as stored, read from the client's database (closed).
 * @param {IDBFactory} idb
 * @returns {Promise<{size: number}[]>}
 */
async function storedRejected(idb) {
  const conn = await new Promise((resolve, reject) => {
    const r = idb.open('convergo-test');
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error);
  });
  const all = await new Promise((resolve, reject) => {
    const r = conn.transaction('rejected').objectStore('rejected').getAll();
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error);
  });
  conn.close();
  return all;
}

test('rejected changes an upgrade makes larger stay within the byte bound', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  server.setMigrations(C, V1);
  const idb = freshIDB();
  const bound = LOCAL_DEFAULTS.maxRejectedBytes;
  const n = 999; // under the count bound, which an upgrade cannot pass
  const longer = 'title_' + 'x'.repeat(58); // 59 bytes longer than "title"
  // One refused change of the shape the rest will have, to learn what an
  // entry holds besides its title.
  let db = await openClient({ url: server.url, indexedDB: idb, migrations: { [C]: V1 } });
  server.refuse = () => true;
  const id = (/** @type {number} */ i) => 'n' + String(i).padStart(4, '0');
  await db.collection(C).put(id(0), { title: '' });
  await db.whenSynced();
  await db.close();
  const [probe] = await storedRejected(idb);
  // Titles that bring the n entries within 20,000 bytes of the bound: the
  // upgrade's renames add 59 bytes to each, 58,941 in all.
  const title = 'm'.repeat(Math.floor((bound - 20000) / n) - probe.size - 2);
  db = await openClient({ url: server.url, indexedDB: idb, migrations: { [C]: V1 } });
  await db.discard((await db.rejected())[0].id);
  await db.collection(C).putMany(Array.from({ length: n }, (_, i) => ({ id: id(i + 1), title })));
  await db.whenSynced();
  await db.close();
  const before = await storedRejected(idb);
  const bytes = (/** @type {{size: number}[]} */ all) => all.reduce((s, e) => s + e.size, 0);
  assert.equal(before.length, n);
  assert.ok(bytes(before) <= bound && bytes(before) + n * 59 > bound, `${bytes(before)} bytes before the upgrade, bound ${bound}`);

  const V2long = { version: 2, steps: [{ to: 2, ops: [{ op: 'rename', from: 'title', to: longer }] }] };
  server.setMigrations(C, V2long);
  db = await openClient({ url: server.url, indexedDB: idb, migrations: { [C]: V2long } });
  await db.collection(C).get(id(1)); // the upgrade has run
  await db.close();
  const after = await storedRejected(idb);
  assert.ok(bytes(after) <= bound, `${after.length} rejected changes of ${bytes(after)} bytes kept after the upgrade, bound ${bound}`);
  assert.ok(after.length < n && after.length > 0, `${after.length} kept`);
});
