// The correction of the wall time the last hello of any tab measured
// lives in the meta "clock" entry every write reads (db.js), not in an
// entry of its own: a write reads one entry fewer. A database the code
// of version 5 wrote (the correction under meta "offset") is upgraded
// and keeps the correction it stored; a tab of that code still open
// steps aside as it always did, or holds the upgrade back, told.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { IDBKeyRange } from 'fake-indexeddb';
import { freshIDB, openClient, until } from './helpers/util.js';
import { Store, fromStored } from '../src/db.js';
import { restartClock } from '../src/syncstore.js';

const HOUR = 3_600_000;

/**
 * Creates database name as the code of version 5 left it, with meta
 * entries meta, and resolves to its connection (still open).
 * @param {IDBFactory} idb
 * @param {string} name
 * @param {Record<string, unknown>} meta
 * @returns {Promise<IDBDatabase>}
 */
function version5(idb, name, meta) {
  return new Promise((resolve, reject) => {
    const r = idb.open(name, 5);
    r.onupgradeneeded = () => {
      const db = r.result;
      db.createObjectStore('records', { keyPath: ['c', 'id'] });
      const ob = db.createObjectStore('outbox', { keyPath: 'seq', autoIncrement: true });
      ob.createIndex('record', ['c', 'id']);
      ob.createIndex('replica', 'r');
      db.createObjectStore('sealed', { keyPath: ['c', 'id'] });
      db.createObjectStore('rejected', { keyPath: 'id', autoIncrement: true });
      const m = db.createObjectStore('meta');
      for (const [k, v] of Object.entries(meta)) m.put(v, k);
    };
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error);
  });
}

test('a database of version 5 keeps the correction it stored: folded into the clock entry, which writes read and keep', async () => {
  const idb = freshIDB();
  // The server's clock an hour behind the device's, as a hello measured;
  // the clock saved two hours back, so a write stamps on the wall time,
  // with the max drift the server stated.
  const saved = { wall: Date.now() - 2 * HOUR, logical: 3, drift: 60_000 };
  (await version5(idb, 'convergo-v5', { device: 'olddevice1234567', clock: saved, offset: -HOUR })).close();
  const db = await openClient({ name: 'v5', indexedDB: idb, sync: false });
  const st = /** @type {any} */ (db).store;
  assert.equal(st.offset, -HOUR, 'the correction stored is taken as the database opens');
  assert.deepEqual(await st.getMeta('clock'), { ...saved, offset: -HOUR }, 'the clock entry holds the correction');
  assert.equal(await st.getMeta('offset'), undefined, 'its entry of version 5 is gone');
  assert.equal(st.clock.maxDrift, 60_000, 'the max drift the clock carried is kept');
  await db.collection('todos').put('x', { n: 1 });
  const stamp = fromStored(await st.get('todos', 'x'), 'x').fields.get('n')?.stamp;
  const wall = Date.now() - HOUR;
  assert.ok(stamp && Math.abs(stamp.wall - wall) < 60_000, `stamped ${stamp?.wall}, near the corrected ${wall}`);
  assert.deepEqual(await st.getMeta('clock'), { wall: stamp.wall, logical: stamp.logical, drift: 60_000, offset: -HOUR }, "the write's clock entry keeps the correction and the max drift");
  await db.close();
});

test('a database of version 5 with a correction and no clock saved (a hello, no write yet) keeps the correction, and the clock starts from none', async () => {
  const idb = freshIDB();
  (await version5(idb, 'convergo-v5', { device: 'olddevice1234567', offset: 1234 })).close();
  const db = await openClient({ name: 'v5', indexedDB: idb, sync: false });
  const st = /** @type {any} */ (db).store;
  assert.equal(st.offset, 1234);
  assert.deepEqual(await st.getMeta('clock'), { offset: 1234 }, 'no clock reading is made up');
  assert.deepEqual(st.clock.last, { wall: 0, logical: 0 });
  await db.close();
});

test("a write that builds on the records it remembers still takes the correction another tab's hello stored since", async (t) => {
  const idb = freshIDB();
  const leader = await openClient({ name: 'tabs', indexedDB: idb, sync: false });
  const follower = await openClient({ name: 'tabs', indexedDB: idb, sync: false });
  t.after(() => Promise.all([leader.close(), follower.close()]));
  const fst = /** @type {any} */ (follower).store;
  // The follower writes x, so its next write of x builds on the entry it
  // remembers, without reading first (Store.writeGuessed).
  await follower.collection('todos').put('x', { n: 1 });
  assert.equal(fst.guess('todos', [{ id: 'x' }])?.has('x'), true, 'the follower remembers x');
  // The leader's hello: the server's clock an hour ahead of the device's,
  // its max drift 30 s.
  /** @type {any} */ (leader).store.setOffset(HOUR);
  await restartClock(/** @type {any} */ (leader).store, HOUR, 30_000);
  await follower.collection('todos').put('x', { n: 2 });
  assert.equal(fst.offset, HOUR, "the follower took the leader's correction");
  assert.equal(fst.clock.maxDrift, 30_000, "and the server's max drift, from the same entry");
  const stamp = fromStored(await fst.get('todos', 'x'), 'x').fields.get('n')?.stamp;
  const wall = Date.now() + HOUR;
  assert.ok(stamp && Math.abs(stamp.wall - wall) < 60_000, `stamped ${stamp?.wall}, near the corrected ${wall}`);
  const entry = await fst.getMeta('clock');
  assert.deepEqual([entry.offset, entry.drift], [HOUR, 30_000], "the follower's write keeps both stored");
});

test('a tab of the code of version 5 still open steps aside as the database is upgraded; one that does not holds the upgrade back, told', async () => {
  const idb = freshIDB();
  const meta = { device: 'olddevice1234567', clock: { wall: Date.now() - 2 * HOUR, logical: 0 }, offset: -HOUR };
  // A tab that steps aside, as the Store of every version does.
  const polite = await version5(idb, 'convergo-a', meta);
  /** @type {number[]} */
  const told = [];
  polite.onversionchange = (ev) => {
    told.push(/** @type {number} */ (ev.newVersion));
    polite.close();
  };
  const a = new Store({ name: 'convergo-a', indexedDB: idb, IDBKeyRange });
  await a.init();
  assert.deepEqual(told, [6], 'the older tab was asked to step aside for version 6');
  assert.equal(a.offset, -HOUR);
  a.close();

  // A tab that does not: the upgrade waits, and says so.
  const stubborn = await version5(idb, 'convergo-b', meta);
  /** @type {Error[]} */
  const errors = [];
  const b = new Store({ name: 'convergo-b', indexedDB: idb, IDBKeyRange, onError: (e) => errors.push(e) });
  let opened = false;
  const init = b.init().then(() => (opened = true));
  await until(() => errors.length > 0, 'the blocked open is told');
  assert.match(errors[0].message, /blocked by another tab holding an older version/);
  assert.equal(opened, false, 'not opened while the older tab holds the database');
  stubborn.close();
  await init;
  assert.equal(b.offset, -HOUR, 'the correction kept once the older tab is gone');
  b.close();
});
