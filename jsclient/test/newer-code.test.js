// A tab of newer code upgrades the IndexedDB database (a higher version)
// under a page still running this code, which can no longer open it: the
// page must say so and step aside (stop syncing, give up the leader lock
// so that the newer tab leads), not hold the lock with a status that says
// all is well while every operation fails.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FakeServer } from './helpers/server.js';
import { freshIDB, openClient, until } from './helpers/util.js';
import { DB_VERSION } from '../src/db.js';

test('a database upgraded by newer code in another tab: the page says so, stops and closes; its outbox stays for the newer code', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const idb = freshIDB();
  const a = await openClient({ url: server.url, name: 'nc', indexedDB: idb, collections: ['todos'] });
  t.after(() => a.close());
  /** @type {any[]} */
  const errors = [];
  a.on('error', (e) => errors.push(e));
  await a.collection('todos').put('synced', { n: 1 });
  await a.whenSynced();
  await a.pause();
  await a.collection('todos').put('waiting', { n: 2 });

  // The newer code opens the database at a higher version.
  const newer = await new Promise((resolve, reject) => {
    const r = idb.open('convergo-nc', DB_VERSION + 1);
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error);
  });
  t.after(() => newer.close());
  await until(() => errors.some((e) => e.code === 'database' && /newer code/.test(e.message)), `an error saying newer code upgraded the database (errors: ${errors.map((e) => e.message)})`);
  await until(() => a.closed, 'the page closed its database (stopped syncing, the leader lock released)');
  await assert.rejects(a.collection('todos').put('after', { n: 3 }), (e) => /** @type {any} */ (e).code === 'closed');
  const outbox = await new Promise((resolve, reject) => {
    const r = newer.transaction('outbox').objectStore('outbox').count();
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error);
  });
  assert.equal(outbox, 1, 'the change not pushed yet stays in the database for the newer code to push');
});
