// A database deleted or evicted under an open page while it holds changes
// not pushed yet and rejected changes (the user clears site data, another
// tab deletes it, Chromium's Storage.clearDataForOrigin): the changes are
// lost with it, and the client must say so and count what the rebuilt
// database holds, not what the lost one held.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FakeServer } from './helpers/server.js';
import { freshIDB, openClient, until } from './helpers/util.js';

test('a database deleted with changes pending: reset tells how many were lost, and the status and whenSynced count the rebuilt outbox', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const idb = freshIDB();
  const a = await openClient({ url: server.url, name: 'wp', indexedDB: idb, collections: ['todos'] });
  t.after(() => a.close());
  a.on('error', () => {});
  /** @type {any[]} */
  const resets = [];
  a.on('reset', (r) => resets.push(r));
  await a.collection('todos').put('kept', { n: 1 });
  server.refuse = (ch) => ch.record.id === 'refused';
  await a.collection('todos').put('refused', { n: 2 });
  await a.whenSynced();
  assert.equal(a.status.rejected, 1, 'one rejected change held');
  // Two writes the server never sees (it fails every push meanwhile, as
  // a network down would): the database goes first.
  let pushes = 0;
  server.failPush = () => (pushes++, true);
  await a.collection('todos').put('lost-1', { n: 3 });
  await a.collection('todos').put('lost-2', { n: 4 });
  await until(() => pushes > 0, 'a push tried');
  assert.equal(a.status.pending, 2);

  await new Promise((resolve, reject) => {
    const r = idb.deleteDatabase('convergo-wp');
    r.onsuccess = resolve;
    r.onerror = () => reject(r.error);
  });
  await until(() => resets.length === 1, 'the reset event');
  assert.deepEqual(resets[0], { lost: 2, rejected: 1 }, 'the reset says what went with the database');
  server.failPush = () => false;
  const synced = await Promise.race([
    a.whenSynced().then(() => 'synced'),
    new Promise((resolve) => setTimeout(() => resolve(`whenSynced still waiting; status ${JSON.stringify(a.status)}`), 5_000)),
  ]);
  assert.equal(synced, 'synced');
  assert.equal(a.status.pending, 0, 'nothing pending in the rebuilt outbox');
  assert.equal(a.status.rejected, (await a.rejected()).length, 'the rejected count is of the rebuilt database');
  assert.deepEqual((await a.collection('todos').list()).map((d) => d.id), ['kept'], 'rebuilt from the server');
});
