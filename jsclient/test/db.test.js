// The IndexedDB layer through the public API, without a server: atomic
// write + outbox, quota errors, clock persistence across reloads and tabs,
// queries and live subscriptions.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ConvergoError } from '../src/index.js';
import { decodeChanges } from '../src/received.js';
import { ZERO_STAMP, compareStamps } from '../src/hlc.js';
import { healPlan } from '../src/heal.js';
import { freshIDB, openClient, until } from './helpers/util.js';
import { applyRemote, cursorOf, dropMeta, openedCollections, peekOutbox } from '../src/syncstore.js';
import { recount } from '../src/peer.js';
import { replicaPrefix } from '../src/replica.js';
import { encode } from '../src/cbor.js';
import { Store } from '../src/db.js';

/** Opens a local-only client. */
function local(/** @type {any} */ opts = {}) {
  return openClient({ sync: false, ...opts });
}

/**
 * The changes in the outbox, oldest first.
 * @param {any} db
 */
async function outbox(db) {
  const entries = await peekOutbox(db.store, 10000);
  return entries.map((/** @type {any} */ e) => ({ seq: e.seq, change: decodeChanges(Uint8Array.of(0x81, ...e.change))[0] }));
}

test('a write stores the record and its outbox entry together', async () => {
  const db = await local();
  const todos = db.collection('todos');
  const doc = await todos.put('t1', { title: 'milk', done: false });
  assert.deepEqual(doc, { id: 't1', title: 'milk', done: false });
  const ob = await outbox(db);
  assert.equal(ob.length, 1);
  assert.equal(ob[0].change.collection, 'todos');
  assert.deepEqual([...ob[0].change.record.fields.keys()].sort(), ['done', 'title']);
  assert.equal(db.status.pending, 1);

  // put replaces: a field missing from the new doc is unset.
  await todos.put('t1', { title: 'oat milk' });
  assert.deepEqual(await todos.get('t1'), { id: 't1', title: 'oat milk' });
  const second = (await outbox(db))[1].change.record;
  assert.equal(second.fields.get('done')?.value, null, 'done unset');
  // update sets only what it names; undefined unsets.
  await todos.update('t1', { done: true });
  await todos.update('t1', { title: undefined });
  assert.deepEqual(await todos.get('t1'), { id: 't1', done: true });
  await todos.delete('t1');
  assert.equal(await todos.get('t1'), null);
  // A write after the delete re-creates the record with only its fields.
  await todos.update('t1', { again: 1 });
  assert.deepEqual(await todos.get('t1'), { id: 't1', again: 1 });
  assert.equal(db.status.pending, 6);
  await db.close();
});

test('a failed write leaves neither record nor outbox entry', async (t) => {
  const db = await local();
  t.after(() => db.close());
  const todos = db.collection('todos');
  await assert.rejects(todos.put('big', { blob: 'x'.repeat(200 << 10) }), (e) => e instanceof ConvergoError && e.code === 'too_large');
  await assert.rejects(todos.put('bad', { when: new Date() }), (e) => /** @type {any} */ (e).code === 'invalid');
  await assert.rejects(todos.put('', { a: 1 }), (e) => /** @type {any} */ (e).code === 'invalid');
  await assert.rejects(todos.put('x', { id: 'y' }), (e) => /** @type {any} */ (e).code === 'invalid');
  assert.throws(() => db.collection('no spaces'), (e) => /** @type {any} */ (e).code === 'invalid');
  assert.equal(await todos.get('big'), null);
  assert.equal((await outbox(db)).length, 0);
});

test('a full disk surfaces as quota_exceeded and the write is not half done', async (t) => {
  const db = await local();
  t.after(() => db.close());
  const todos = db.collection('todos');
  await todos.put('before', { n: 1 });
  // Make the next transaction abort the way a browser does when the quota
  // is exceeded: the outbox add succeeds, then the commit fails.
  const idbdb = await db.store.conn();
  const realTransaction = idbdb.transaction.bind(idbdb);
  const quota = new DOMException('The quota has been exceeded.', 'QuotaExceededError');
  idbdb.transaction = (/** @type {any} */ stores, /** @type {any} */ mode, /** @type {any} */ o) => {
    const tx = realTransaction(stores, mode, o);
    if (mode !== 'readwrite' || !stores.includes('outbox')) return tx;
    idbdb.transaction = realTransaction;
    return new Proxy(tx, {
      get(target, prop) {
        if (prop === 'error') return quota;
        if (prop === 'objectStore') {
          return (/** @type {string} */ name) => {
            const s = target.objectStore(name);
            if (name !== 'outbox') return s;
            return new Proxy(s, {
              get(st, p) {
                if (p === 'add') {
                  return (/** @type {any} */ v) => {
                    const r = st.add(v);
                    r.addEventListener('success', () => target.abort());
                    return r;
                  };
                }
                const v = /** @type {any} */ (st)[p];
                return typeof v === 'function' ? v.bind(st) : v;
              },
            });
          };
        }
        const v = /** @type {any} */ (target)[prop];
        return typeof v === 'function' ? v.bind(target) : v;
      },
      set(target, prop, value) {
        /** @type {any} */ (target)[prop] = value;
        return true;
      },
    });
  };
  await assert.rejects(todos.put('after', { n: 2 }), (e) => {
    assert.ok(e instanceof ConvergoError);
    assert.equal(e.code, 'quota_exceeded');
    assert.match(e.message, /quota/);
    return true;
  });
  assert.equal(await todos.get('after'), null, 'record rolled back');
  assert.equal((await outbox(db)).length, 1, 'outbox rolled back');
  // The next write works again.
  await todos.put('later', { n: 3 });
  assert.equal((await outbox(db)).length, 2);
});

test('the clock survives a reload and is shared by tabs of one database', async () => {
  const idb = freshIDB();
  const tab1 = await local({ indexedDB: idb, name: 'shared' });
  const tab2 = await local({ indexedDB: idb, name: 'shared' });
  assert.equal(tab1.store.replica, tab2.store.replica, 'one replica id per database');
  // Freeze wall time so only the logical counter can order the stamps.
  tab1.store.now = tab2.store.now = () => 1_700_000_000_000;
  for (let i = 0; i < 10; i++) {
    await (i % 2 ? tab1 : tab2).collection('c').put('r' + (i % 3), { i });
  }
  const stamps = (await outbox(tab1)).map((e) => e.change.record.fields.get('i')?.stamp);
  assert.equal(stamps.length, 10);
  for (let i = 1; i < stamps.length; i++) {
    assert.equal(compareStamps(/** @type {any} */ (stamps[i - 1]), /** @type {any} */ (stamps[i])), -1, `stamp ${i} after ${i - 1}`);
  }
  await tab1.close();
  await tab2.close();

  const reloaded = await local({ indexedDB: idb, name: 'shared' });
  reloaded.store.now = () => 1_000; // the wall clock went far back
  await reloaded.collection('c').put('r9', { i: 99 });
  const last = (await outbox(reloaded)).at(-1)?.change.record.fields.get('i')?.stamp;
  assert.equal(compareStamps(/** @type {any} */ (stamps.at(-1)), /** @type {any} */ (last)), -1, 'stamps keep increasing after reload');
  await reloaded.close();
});

/**
 * Counts, from now on, the writes db makes on a guess (without reading
 * first) and those it makes after reading (the first try of a record it
 * does not know, or the second of a guess found stale).
 * @param {any} db
 */
function countWrites(db) {
  const n = { guessed: 0, read: 0 };
  const store = db.store;
  const guessed = store.writeGuessed.bind(store);
  const read = store.writeIn.bind(store);
  store.writeGuessed = (/** @type {any[]} */ ...a) => (n.guessed++, guessed(...a));
  store.writeIn = (/** @type {any[]} */ ...a) => (n.read++, read(...a));
  return n;
}

test('a write builds on the record as the tab last saw it, checked in its own transaction', async () => {
  const idb = freshIDB();
  const tab1 = await local({ indexedDB: idb, name: 'shared' });
  const tab2 = await local({ indexedDB: idb, name: 'shared' });
  tab1.store.now = tab2.store.now = () => 1_700_000_000_000;
  const a1 = tab1.collection('c');
  const a2 = tab2.collection('c');
  const n = countWrites(tab1);
  await a1.put('a', { x: 1 });
  assert.deepEqual(n, { guessed: 0, read: 1 }, 'a record not seen is read first');
  await a1.update('a', { x: 2 });
  assert.deepEqual(n, { guessed: 1, read: 1 }, 'a record seen is written on a guess');
  // Another tab writes the record (and moves the shared clock): this tab's
  // guess is stale, so its next write reads and builds on what is stored.
  await a2.update('a', { y: 1 });
  await a1.update('a', { z: 1 });
  assert.deepEqual(n, { guessed: 2, read: 2 }, 'the stale guess was aborted and written again after reading');
  assert.deepEqual(await a1.get('a'), { id: 'a', x: 2, y: 1, z: 1 }, "the other tab's field is kept");
  assert.deepEqual(await a2.get('a'), { id: 'a', x: 2, y: 1, z: 1 });
  await a1.update('a', { z: 2 });
  assert.deepEqual(n, { guessed: 3, read: 2 }, 'the guess holds again');
  // Only the clock moved (another record): still no stamp issued twice.
  await a2.put('b', { w: 1 });
  await a1.update('a', { z: 3 });
  assert.deepEqual(n, { guessed: 4, read: 3 }, 'a clock saved by another tab after ours sends the write back to reading');
  assert.deepEqual(await a2.get('a'), { id: 'a', x: 2, y: 1, z: 3 });
  // Only the record moved: the other tab writes it, this one catches up
  // with the clock on another record, then writes the record it saw.
  await a2.update('a', { y: 2 });
  await a1.put('c', { v: 1 });
  assert.deepEqual(n, { guessed: 4, read: 4 });
  await a1.update('a', { z: 4 });
  assert.deepEqual(n, { guessed: 5, read: 5 }, 'a record written by another tab sends the write back to reading');
  assert.deepEqual(await a2.get('a'), { id: 'a', x: 2, y: 2, z: 4 }, "the other tab's field is kept");
  const stamps = (await outbox(tab1)).flatMap((e) => [...e.change.record.fields.values()].map((f) => f.stamp));
  const keys = stamps.map((s) => `${s.wall}.${s.logical}.${s.replica}`);
  assert.equal(new Set(keys).size, stamps.length, 'every stamp issued once');
  const perEntry = (await outbox(tab1)).map((e) => [...e.change.record.fields.values()][0].stamp);
  for (let i = 1; i < perEntry.length; i++) assert.equal(compareStamps(perEntry[i - 1], perEntry[i]), -1, `entry ${i} stamped after ${i - 1}`);
  await tab1.close();
  await tab2.close();
});

test('a guessed write follows a prefix another tab adopted', async () => {
  const idb = freshIDB();
  const tab1 = await local({ indexedDB: idb, name: 'shared' });
  const tab2 = await local({ indexedDB: idb, name: 'shared' });
  const a1 = tab1.collection('c');
  await a1.put('a', { x: 1 });
  const { replicaPrefix } = await import('../src/replica.js');
  await tab2.store.setPrefix(await replicaPrefix('alice'));
  const n = countWrites(tab1);
  await a1.put('a', { x: 2 });
  assert.deepEqual(n, { guessed: 1, read: 1 }, 'the guess (the old prefix) was refused');
  const last = (await db1Outbox(tab1)).at(-1);
  assert.equal(last?.r, tab2.store.replica, 'written as the subject the other tab adopted');
  await tab1.close();
  await tab2.close();
});

/** @param {any} db */
async function db1Outbox(db) {
  const idbdb = await db.store.conn();
  return new Promise((res) => {
    const r = idbdb.transaction(['outbox'], 'readonly').objectStore('outbox').getAll();
    r.onsuccess = () => res(r.result);
  });
}

test('in a collection listed whole, a new id is written without reading first, and checked', async () => {
  const idb = freshIDB();
  const tab1 = await local({ indexedDB: idb, name: 'shared' });
  const tab2 = await local({ indexedDB: idb, name: 'shared' });
  const a1 = tab1.collection('c');
  await a1.putMany([{ id: 'a', x: 1 }, { id: 'b', x: 2 }]);
  const n = countWrites(tab1);
  await a1.put('new1', { x: 3 });
  assert.deepEqual(n, { guessed: 0, read: 1 }, 'not listed yet: an id not seen is read first');
  assert.equal((await a1.list()).length, 3);
  await a1.put('new2', { x: 4 });
  await a1.putMany([{ id: 'new3', x: 5 }, { id: 'a', x: 6 }]);
  assert.deepEqual(n, { guessed: 2, read: 1 }, 'listed whole: an id not seen holds nothing');
  // Another tab creates an id this one takes for empty: the check catches it.
  await tab2.collection('c').put('new4', { y: 1 });
  await a1.update('a', { x: 7 }); // catches up with the clock
  assert.deepEqual(n, { guessed: 3, read: 2 });
  await a1.update('new4', { z: 1 });
  assert.deepEqual(n, { guessed: 4, read: 3 });
  assert.deepEqual(await a1.get('new4'), { id: 'new4', y: 1, z: 1 });
  await tab1.close();
  await tab2.close();
});

test('a large batch reads the records it finds held, however many keys lie between its ids', async () => {
  const idb = freshIDB();
  const writer = await local({ indexedDB: idb, name: 'shared' });
  const tab = await local({ indexedDB: idb, name: 'shared' });
  const pad = (/** @type {number} */ i) => 'k' + String(i).padStart(3, '0');
  // Written by the other tab: this one has seen none of them.
  await writer.collection('c').putMany(Array.from({ length: 100 }, (_, i) => ({ id: pad(i), old: i, n: i })));
  const n = countWrites(tab);
  // 10 held ids spread over the 100 held keys, and 10 new ones between
  // them: more held keys lie between its ids (99) than the listing takes
  // (2 per id: 40), so the last six held are past its end.
  const held = Array.from({ length: 10 }, (_, i) => pad(i * 10 + 9));
  const fresh = Array.from({ length: 10 }, (_, i) => pad(i * 9) + 'x');
  // A small range, listed whole: 5 held ids among 20.
  const near = Array.from({ length: 20 }, (_, i) => (i < 5 ? pad(i) : pad(i) + 'y'));
  for (const batch of [[...held, ...fresh], near]) {
    await tab.collection('c').putMany(batch.map((id, i) => ({ id, n: -i })));
  }
  assert.deepEqual(n, { guessed: 0, read: 2 });
  const changes = new Map((await outbox(tab)).slice(100).map((e) => [e.change.record.id, e.change.record]));
  for (const id of [...held, ...near.slice(0, 5)]) {
    assert.equal(changes.get(id)?.fields.get('old')?.value, null, `${id}: the put unsets the field held`);
    assert.deepEqual(Object.keys(await tab.collection('c').get(id) ?? {}), ['id', 'n'], id);
  }
  for (const id of [...fresh, ...near.slice(5)]) assert.equal(changes.get(id)?.fields.has('old'), false, id);
  assert.equal(changes.size, held.length + fresh.length + near.length);
  await writer.close();
  await tab.close();
});

test('local writes are committed strict unless the app asks for relaxed', async () => {
  for (const durability of [undefined, 'strict', 'relaxed']) {
    const db = await local(durability ? { durability } : {});
    const idbdb = await db.store.conn();
    const real = idbdb.transaction.bind(idbdb);
    /** @type {string[]} */
    const seen = [];
    idbdb.transaction = (/** @type {any} */ stores, /** @type {any} */ mode, /** @type {any} */ o) => {
      if (mode === 'readwrite' && stores.includes('outbox')) seen.push(o?.durability);
      return real(stores, mode, o);
    };
    const c = db.collection('c');
    await c.put('a', { x: 1 }); // read first
    await c.put('a', { x: 2 }); // on a guess
    await c.putMany([{ id: 'b', x: 3 }]);
    assert.deepEqual(seen, Array(3).fill(durability ?? 'strict'), String(durability));
    await db.close();
  }
  await assert.rejects(local({ durability: 'lazy' }), (e) => e instanceof ConvergoError && e.code === 'invalid');
});

test('queries: where, predicate, order, limit', async (t) => {
  const db = await local();
  t.after(() => db.close());
  const c = db.collection('people');
  await c.put('a', { name: 'Ann', age: 31, team: 'red' });
  await c.put('b', { name: 'Bob', age: 25, team: 'blue' });
  await c.put('c', { name: 'Cid', team: 'red' });
  await c.put('d', { name: 'Dee', age: 31.5, team: 'red', tags: ['x', 1] });
  await c.put('gone', { name: 'Gus' });
  await c.delete('gone');

  const ids = (/** @type {any[]} */ docs) => docs.map((d) => d.id);
  assert.deepEqual(ids(await c.list()), ['a', 'b', 'c', 'd']);
  assert.deepEqual(ids(await c.query({ where: { team: 'red' } })), ['a', 'c', 'd']);
  assert.deepEqual(ids(await c.query({ where: { team: 'red', age: 31 } })), ['a']);
  assert.deepEqual(ids(await c.query({ where: { tags: ['x', 1] } })), ['d']);
  assert.deepEqual(ids(await c.query({ where: { id: 'b' } })), ['b']);
  assert.deepEqual(ids(await c.query({ where: (d) => typeof d.age === 'number' && d.age > 30 })), ['a', 'd']);
  assert.deepEqual(ids(await c.query({ orderBy: 'age' })), ['b', 'a', 'd', 'c'], 'missing last');
  assert.deepEqual(ids(await c.query({ orderBy: 'age', desc: true })), ['c', 'd', 'a', 'b']);
  assert.deepEqual(ids(await c.query({ orderBy: 'name', limit: 2 })), ['a', 'b']);
  assert.deepEqual(ids(await c.query({ where: { team: 'green' } })), []);
  // Scalars compare as values: an integral float another client stored
  // matches the integer, a small bigint matches the number.
  const { Float } = await import('../src/index.js');
  await c.put('f', { name: 'Flo', age: new Float(31), team: 'red' });
  assert.deepEqual(ids(await c.query({ where: { age: 31 } })), ['a', 'f']);
  assert.deepEqual(ids(await c.query({ where: { age: 31n } })), ['a', 'f']);
  await c.delete('f');
  await assert.rejects(c.query({ limit: -1 }), (e) => /** @type {any} */ (e).code === 'invalid');
});

test('subscriptions follow local changes and stop when asked', async (t) => {
  const db = await local();
  t.after(() => db.close());
  const c = db.collection('todos');
  /** @type {any[]} */
  const lists = [];
  /** @type {any[]} */
  const one = [];
  const stopList = c.subscribe({ where: { done: false }, orderBy: 'title' }, (docs) => lists.push(docs.map((/** @type {any} */ d) => d.title)));
  const stopOne = c.subscribe('t2', (doc) => one.push(doc));
  await until(() => lists.length === 1 && one.length === 1, 'initial results');
  assert.deepEqual(lists[0], []);
  assert.equal(one[0], null);

  await c.put('t1', { title: 'b', done: false });
  await c.put('t2', { title: 'a', done: false });
  await until(() => JSON.stringify(lists.at(-1)) === '["a","b"]', 'both in order');
  await until(() => one.at(-1)?.title === 'a', 'record subscription');
  await c.update('t1', { done: true });
  await until(() => JSON.stringify(lists.at(-1)) === '["a"]', 't1 leaves the query');
  const seenOne = one.length;
  await c.delete('t2');
  await until(() => one.at(-1) === null, 'record subscription sees the delete');
  assert.ok(one.length > seenOne);

  stopList();
  stopOne();
  const n = lists.length;
  const m = one.length;
  await c.put('t3', { title: 'c', done: false });
  await c.put('t2', { title: 'back', done: false });
  await new Promise((r) => setTimeout(r, 30));
  assert.equal(lists.length, n, 'no calls after unsubscribe');
  assert.equal(one.length, m);
});

test('closed databases refuse work', async () => {
  const db = await local();
  await db.close();
  await assert.rejects(db.collection('x').put('a', { b: 1 }), (e) => /** @type {any} */ (e).code === 'closed');
  await assert.rejects(db.sync(), (e) => /** @type {any} */ (e).code === 'closed');
});

test('a write that commits after close() began tells no change listener', async () => {
  const db = await local();
  let closing = false;
  /** @type {any[]} */
  const after = [];
  db.on('change', (c) => closing && after.push(c));
  const put = db.collection('x').put('a', { n: 1 });
  closing = true;
  await db.close();
  await put; // it still commits
  await new Promise((r) => setTimeout(r, 20));
  assert.deepEqual(after, []);
});

test('a count of the outbox that ends after close() began tells no status listener', async () => {
  const idb = freshIDB();
  const reader = await local({ indexedDB: idb, name: 'shared' });
  const writer = await local({ indexedDB: idb, name: 'shared' });
  await writer.collection('x').put('a', { n: 1 }); // the reader does not know (no BroadcastChannel)
  await writer.close();
  /** @type {number[]} */
  const heard = [];
  reader.on('status', (s) => heard.push(s.pending));
  recount(/** @type {any} */ (reader), true); // as a tab message starts it
  await reader.close();
  await new Promise((r) => setTimeout(r, 20));
  assert.deepEqual(heard, []);
});

test('tabs opening a new database at once agree on one replica id', async () => {
  const idb = freshIDB();
  const tabs = await Promise.all([1, 2, 3].map(() => local({ indexedDB: idb, name: 'race' })));
  const ids = new Set(tabs.map((t) => t.store.replica));
  assert.equal(ids.size, 1);
  await Promise.all(tabs.map((t) => t.close()));
});

test('the collections opened are remembered; stored names are checked', async () => {
  const idb = freshIDB();
  const db = await local({ indexedDB: idb, name: 'remember', collections: ['todos'] });
  db.collection('notes.2026');
  db.collection('notes.2026'); // once is enough
  await until(async () => (await openedCollections(db.store)).length === 2, 'both remembered');
  // Whatever else sits in the metadata under the prefix is not a collection.
  await db.store.setMeta('collection:', true);
  await db.store.setMeta('collection:bad name', true);
  await db.store.setMeta('collection:' + 'x'.repeat(129), true);
  await db.store.setMeta('collections', ['evil']);
  await db.store.setMeta('cursor:todos', 3);
  await db.close();
  const again = await local({ indexedDB: idb, name: 'remember' });
  assert.deepEqual((await openedCollections(again.store)).sort(), ['notes.2026', 'todos']);
  await again.close();
});

test('cursors are stored as the bytes the server sent; none means from the beginning', async () => {
  const db = await local({ name: 'cursors' });
  const empty = await cursorOf(db.store, 'todos');
  assert.ok(empty instanceof Uint8Array);
  assert.equal(empty.length, 0);
  const next = Uint8Array.of(0xff, 0, 1, 2, 0x80);
  await applyRemote(db.store, 'todos', [], next);
  const back = await cursorOf(db.store, 'todos');
  assert.ok(back instanceof Uint8Array);
  assert.deepEqual([...back], [...next]);
  await dropMeta(db.store, 'cursor:');
  assert.equal((await cursorOf(db.store, 'todos')).length, 0);
  // Anything else under the key (a corrupt or foreign value) is no cursor.
  await db.store.setMeta('cursor:todos', 'abc');
  assert.equal((await cursorOf(db.store, 'todos')).length, 0);
  await db.close();
});

test('upgrading a database of protocol 1 drops its numeric cursors and keeps the rest', async () => {
  const { DB_VERSION } = await import('../src/db.js');
  assert.equal(DB_VERSION, 6);
  const idb = freshIDB();
  // What the client of protocol 1 (database version 2) left behind.
  await new Promise((resolve, reject) => {
    const r = idb.open('convergo-old', 2);
    r.onupgradeneeded = () => {
      const db = r.result;
      db.createObjectStore('records', { keyPath: ['c', 'id'] });
      db.createObjectStore('outbox', { keyPath: 'seq', autoIncrement: true }).createIndex('record', ['c', 'id']);
      const meta = db.createObjectStore('meta');
      meta.put('old-replica', 'replica');
      meta.put(42, 'cursor:todos');
      meta.put(7, 'cursor:notes.2026');
      meta.put(true, 'collection:todos');
      meta.put(1234, 'offset');
    };
    r.onsuccess = () => {
      r.result.close();
      resolve(undefined);
    };
    r.onerror = () => reject(r.error);
  });
  const db = await local({ indexedDB: idb, name: 'old' });
  assert.equal(db.store.device, 'old-replica', "protocol 1's replica id is the device part of protocol 2's");
  assert.equal(db.store.replica, (await import('../src/constants.js')).REPLICA.samples[''] + '_old-replica', 'anonymous: the prefix of subject ""');
  assert.equal(await db.store.getMeta('cursor:todos'), undefined);
  assert.equal(await db.store.getMeta('cursor:notes.2026'), undefined);
  assert.equal((await cursorOf(db.store, 'todos')).length, 0, 'pulls again from the beginning');
  assert.deepEqual(await openedCollections(db.store), ['todos']);
  assert.deepEqual(await db.store.getMeta('clock'), { offset: 1234 }, "the correction, in the clock entry (version 6's)");
  assert.equal(await db.store.getMeta('offset'), undefined);
  assert.equal(db.store.offset, 1234);
  await db.close();
});

test('records stored by version 4 (stamps as objects, seals apart) are read, written over and given back', async () => {
  const { encodeRecord } = await import('../src/record.js');
  const idb = freshIDB();
  const stamp = { wall: 1_700_000_000_000, logical: 0, replica: 'AAAAAAAAAAAAAAAA_old' };
  const zero = { wall: 0, logical: 0, replica: '' };
  const fields = new Map([['title', { stamp, value: Uint8Array.of(0x61, 0x78) }]]); // "x"
  const rec = { id: 'r1', deleted: zero, fields };
  await new Promise((resolve, reject) => {
    const r = idb.open('convergo-v4', 4);
    r.onupgradeneeded = () => {
      const db = r.result;
      db.createObjectStore('records', { keyPath: ['c', 'id'] }).put({ c: 'todos', id: 'r1', deleted: zero, fields, doc: { title: 'x' } });
      const ob = db.createObjectStore('outbox', { keyPath: 'seq', autoIncrement: true });
      ob.createIndex('record', ['c', 'id']);
      ob.createIndex('replica', 'r');
      db.createObjectStore('sealed', { keyPath: ['c', 'id'] }).put({ c: 'todos', id: 'r1', rec: encodeRecord(rec), seal: new Uint8Array(16).fill(7) });
      db.createObjectStore('rejected', { keyPath: 'id', autoIncrement: true });
      db.createObjectStore('meta').put('olddevice1234567', 'device');
    };
    r.onsuccess = () => {
      r.result.close();
      resolve(undefined);
    };
    r.onerror = () => reject(r.error);
  });
  const db = await local({ indexedDB: idb, name: 'v4' });
  const todos = db.collection('todos');
  assert.deepEqual(await todos.get('r1'), { id: 'r1', title: 'x' });
  assert.deepEqual(await todos.query({ where: { title: 'x' } }), [{ id: 'r1', title: 'x' }]);
  let plan = await healPlan(db.store, 'todos', 'AAAAAAAAAAAAAAAA');
  assert.equal(plan.sealed.length, 1, 'the seal of version 4 is given back');
  assert.equal(plan.mine.length, 0, 'the seal covers what this prefix stamped');
  await todos.update('r1', { done: true });
  assert.deepEqual(await todos.get('r1'), { id: 'r1', title: 'x', done: true });
  plan = await healPlan(db.store, 'todos', 'AAAAAAAAAAAAAAAA');
  assert.equal(plan.sealed.length, 1);
  assert.deepEqual(plan.sealed[0].record.fields.get('title')?.stamp, stamp, 'the seal still covers the server version');
  await db.close();
});

test('record ids and field names: control characters and lone surrogates are refused, each with its own message', async () => {
  const { validateId, validateFieldName } = await import('../src/record.js');
  const refused = (/** @type {string} */ s, /** @type {RegExp} */ msg) => {
    for (const f of [validateId, validateFieldName]) assert.throws(() => f(s), (e) => e instanceof ConvergoError && e.code === 'invalid' && msg.test(e.message), JSON.stringify(s));
  };
  for (const c of ['\0', '\x1f', '\x7f', '\x80', '\x9f']) refused(`a${c}b`, /has a control character/);
  for (const s of ['\ud800', 'a\udc00', '\udc00\ud800', 'x\ud83d']) refused(s, /is not well-formed Unicode/);
  refused('', /must be 1 to/);
  for (const s of ['a b', '\xa0', 'é', '\ud83d\ude00', '~']) {
    validateId(s);
    validateFieldName(s);
  }
});

test('a prefix set while a write that read the old one is under way is the one kept: memory and the stored prefix agree', async () => {
  const db = await local({ name: 'prefix-race' });
  const st = /** @type {any} */ (db).store;
  const bob = await replicaPrefix('bob');
  // A write's transaction reads the prefix stored, then the switch to bob
  // is made while it runs.
  const write = st.tx(['records', 'outbox', 'meta'], 'readwrite', 'write', (/** @type {IDBTransaction} */ tx) =>
    st.writeIn(tx, 'todos', [{ id: 'x', build: (/** @type {any} */ _cur, /** @type {any} */ stamp) => ({ id: 'x', deleted: ZERO_STAMP, fields: new Map([['n', { stamp, value: encode(1) }]]) }) }]),
  );
  await st.setPrefix(bob);
  await write;
  assert.equal(await st.getMeta('prefix'), bob);
  assert.equal(st.prefix, bob, 'the tab writes as the prefix stored');
  assert.ok(st.replica.startsWith(bob));
  await db.close();
});

test('the entries a Store remembers: past 20,000 the oldest quarter is forgotten, and a collection one of them was of is no longer known whole', () => {
  const st = new Store({ name: 'remember', indexedDB: /** @type {any} */ ({}) });
  st.whole.add('old');
  st.whole.add('new');
  const entry = (/** @type {string} */ c, /** @type {string} */ id) => ({ c, id, r: new Uint8Array([0xa0]), doc: null });
  // 5,001 entries of "old" first: the quarter forgotten at the 20,001st.
  for (let i = 0; i < 20_001; i++) st.remember(i <= 5_000 ? 'old' : 'new', `r${i}`, entry(i <= 5_000 ? 'old' : 'new', `r${i}`));
  assert.equal(st.seen.size, 15_000);
  assert.ok(!st.seen.has('old/r5000') && st.seen.has('new/r5001') && st.seen.has('new/r20000'));
  assert.deepEqual([...st.seen.keys()].slice(0, 2), ['new/r5001', 'new/r5002'], 'the least recently seen first, still');
  assert.deepEqual([...st.whole], ['new']);
});
