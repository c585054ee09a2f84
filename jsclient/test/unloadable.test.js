// The modules loaded on demand (upgrade.js for a new database, wiped.js
// for a wiped one, schema.js for an app's migrations, rejected.js for the
// rejected changes) fail to load, as they do in a browser offline whose
// cache lacks them: what open and the next operations do.

import { register } from 'node:module';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { freshIDB, openClient, until } from './helpers/util.js';
import { ConvergoError } from '../src/errors.js';

const shared = new SharedArrayBuffer(4);
const failing = new Int32Array(shared);
register('./helpers/unloadable.js', import.meta.url, { data: { shared } });

const UPGRADE = 1;
const WIPED = 2;
const SCHEMA = 4;
const REJECTED = 8;

/**
 * Asserts that e is the failed load of file: a ConvergoError 'network'
 * naming it, as a failed load of the sync loop is.
 * @param {any} e
 * @param {string} file
 */
function failedLoad(e, file) {
  assert.ok(e instanceof ConvergoError, `a ConvergoError, not ${e}`);
  assert.equal(e.code, 'network');
  assert.ok(e.message.includes(file), `${e.message} names ${file}`);
  return true;
}

test('a new database whose upgrade.js fails to load: open says so, and opens once it loads', async (t) => {
  const idb = freshIDB();
  Atomics.store(failing, 0, UPGRADE);
  t.after(() => Atomics.store(failing, 0, 0));
  await assert.rejects(openClient({ name: 'noupgrade', indexedDB: idb, sync: false }), (/** @type {any} */ e) => {
    assert.ok(e instanceof ConvergoError, `a ConvergoError, not ${e}`);
    assert.equal(e.code, 'network');
    assert.match(e.message, /upgrade\.js/);
    return true;
  });
  Atomics.store(failing, 0, 0);
  const db = await openClient({ name: 'noupgrade', indexedDB: idb, sync: false, collections: ['todos'] });
  t.after(() => db.close());
  await db.collection('todos').put('a', { n: 1 });
  assert.equal((await db.collection('todos').get('a'))?.n, 1);
});

test('a wipe found while wiped.js fails to load is handled by the next operation once it loads', async (t) => {
  const idb = freshIDB();
  const db = await openClient({ name: 'nowiped', indexedDB: idb, sync: false, collections: ['todos'] });
  t.after(() => db.close());
  await db.collection('todos').put('a', { n: 1 });
  /** @type {any[]} */
  const errors = [];
  db.on('error', (/** @type {any} */ e) => errors.push(e));
  let resets = 0;
  db.on('reset', () => resets++);
  Atomics.store(failing, 0, WIPED);
  t.after(() => Atomics.store(failing, 0, 0));
  // Another context deletes the database: the tab reopens it (a new one)
  // and finds its identity gone, but cannot load what handles that.
  await new Promise((resolve, reject) => {
    const r = idb.deleteDatabase('convergo-nowiped');
    r.onsuccess = resolve;
    r.onerror = () => reject(r.error);
  });
  await until(() => errors.length > 0, 'the failed load told');
  assert.ok(errors[0] instanceof ConvergoError, `a ConvergoError, not ${errors[0]}`);
  assert.equal(errors[0].code, 'network');
  assert.match(errors[0].message, /wiped\.js/);
  assert.equal(resets, 0);
  // Back online: the next write finds the wipe still to handle, and does.
  Atomics.store(failing, 0, 0);
  await db.collection('todos').put('b', { n: 2 }).catch(() => {});
  await until(() => resets === 1, 'the reset, once wiped.js loaded');
  const device = await new Promise((resolve, reject) => {
    const r = idb.open('convergo-nowiped');
    r.onsuccess = () => {
      const g = r.result.transaction(['meta']).objectStore('meta').get('device');
      g.onsuccess = () => {
        r.result.close();
        resolve(g.result);
      };
      g.onerror = () => reject(g.error);
    };
    r.onerror = () => reject(r.error);
  });
  assert.equal(device, db.store.device, 'the identity written back');
});

test("a tab that hears another tab's wipe while wiped.js cannot load hears reset all the same", async (t) => {
  // A page offline whose cache lacks wiped.js (no service worker) hears
  // another tab, which found the database wiped and rebuilt it, say so
  // (TabMessage.reset, Database._onReset): it has nothing to rebuild, and
  // tells the app and counts what the rebuilt database holds without a
  // module it cannot load.
  const idb = freshIDB();
  const a = await openClient({ name: 'heardwipe', indexedDB: idb, sync: false, collections: ['todos'], BroadcastChannel: globalThis.BroadcastChannel });
  t.after(() => a.close());
  const b = await openClient({ name: 'heardwipe', indexedDB: idb, sync: false, collections: ['todos'], BroadcastChannel: globalThis.BroadcastChannel });
  t.after(() => b.close());
  await b.collection('todos').put('a', { n: 1 });
  /** @type {any[]} */
  const errors = [];
  a.on('error', (/** @type {any} */ e) => errors.push(e));
  /** @type {any[]} */
  const resets = [];
  a.on('reset', (/** @type {any} */ r) => resets.push(r));
  const was = { ...a.status };
  Atomics.store(failing, 0, WIPED);
  t.after(() => Atomics.store(failing, 0, 0));
  /** @type {any} */ (b)._post({ t: 'reset' });
  await until(() => resets.length + errors.length > 0, 'the reset heard');
  assert.deepEqual(errors.map((e) => String(e)), []);
  assert.deepEqual(resets, [{ lost: was.pending + was.held, rejected: was.rejected }]);
});

test('an app with migrations whose schema.js fails to load: open says so, and opens once it loads', async (t) => {
  const idb = freshIDB();
  const migrations = { todos: { version: 1, steps: [] } };
  Atomics.store(failing, 0, SCHEMA);
  t.after(() => Atomics.store(failing, 0, 0));
  await assert.rejects(openClient({ name: 'noschema', indexedDB: idb, sync: false, migrations }), (/** @type {any} */ e) => failedLoad(e, 'schema.js'));
  Atomics.store(failing, 0, 0);
  const db = await openClient({ name: 'noschema', indexedDB: idb, sync: false, migrations, collections: ['todos'] });
  t.after(() => db.close());
  await db.collection('todos').put('a', { title: 'x' });
});

test('the rejected changes while rejected.js fails to load: each call says so, and works once it loads', async (t) => {
  const db = await openClient({ name: 'norejected', indexedDB: freshIDB(), sync: false, collections: ['todos'] });
  t.after(() => db.close());
  Atomics.store(failing, 0, REJECTED);
  t.after(() => Atomics.store(failing, 0, 0));
  await assert.rejects(db.rejected(), (/** @type {any} */ e) => failedLoad(e, 'rejected.js'));
  await assert.rejects(db.discard(1), (/** @type {any} */ e) => failedLoad(e, 'rejected.js'));
  Atomics.store(failing, 0, 0);
  assert.deepEqual(await db.rejected(), []);
});
