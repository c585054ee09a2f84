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
