// A first sync stores pulled records without reading them first, except
// those with local changes pending (written while it runs): those are
// merged, never overwritten. And a first sync through the client, against
// the protocol server, ends with every record and pages batched into
// larger transactions.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Store, fromStored } from '../src/db.js';
import { healPlan } from '../src/heal.js';
import { encode } from '../src/cbor.js';
import { FakeServer } from './helpers/server.js';
import { freshIDB, IDBKeyRange, openClient, until } from './helpers/util.js';
import { applyFirst, applyRemote, cursorOf, isEmpty, prepareRemote } from '../src/syncstore.js';
import { heldIds } from '../src/syncstore.js';

const stamp = (wall, replica = 'AAAAAAAAAAAAAAAA_server') => ({ wall, logical: 0, replica });
const zero = { wall: 0, logical: 0, replica: '' };

test('a first sync merges records written locally meanwhile and stores the rest as they come', async () => {
  const store = new Store({ name: 'first', indexedDB: freshIDB(), IDBKeyRange });
  await store.init();
  assert.equal(await isEmpty(store, 'todos'), true);
  const now = Date.now();
  /** @type {import('../src/record.js').Record[]} */
  const page = ['a', 'b', 'c'].map((id) => ({ id, deleted: zero, fields: new Map([['title', { stamp: stamp(now - 1000), value: encode('server ' + id) }]]) }));
  const seals = page.map((_, i) => new Uint8Array(16).fill(i + 1));
  // Merged ahead, as if nothing were held...
  const prepared = prepareRemote(store, 'todos', page, seals);
  // ...then a local write to b lands before the page's transaction.
  await store.write('todos', 'b', (_cur, s) => ({ id: 'b', deleted: zero, fields: new Map([['done', { stamp: s, value: encode(true) }]]) }));
  // The write merged ahead sees it and aborts; the page is then applied
  // reading what it must, as the client does.
  assert.equal(await applyFirst(store, 'todos', prepared, new Uint8Array(0), Uint8Array.of(1)), null);
  assert.equal((await cursorOf(store, 'todos')).length, 0, 'nothing of the aborted write stored');
  const changed = await applyRemote(store, 'todos', page, Uint8Array.of(1), seals);
  assert.deepEqual(changed.sort(), ['a', 'b', 'c']);
  const b = await store.get('todos', 'b');
  assert.deepEqual(b?.doc, { title: 'server b', done: true }, 'the local field kept, the server field merged');
  assert.ok(b?.b, 'the server state kept aside while the write is pending');
  assert.deepEqual(fromStored(b, 'b').fields.get('done')?.value, encode(true));
  const a = await store.get('todos', 'a');
  assert.deepEqual(a?.doc, { title: 'server a' });
  assert.deepEqual(a?.s, seals[0]);
  assert.equal(a?.sr, undefined, 'the record as sent is the one stored');
  const plan = await healPlan(store, 'todos', 'AAAAAAAAAAAAAAAA');
  assert.equal(plan.sealed.length, 3);
  assert.deepEqual(plan.sealed.find((x) => x.record.id === 'b')?.record.fields.get('done'), undefined, 'b given back as the server sent it');
  store.close();
});

test('a first sync through the client holds every record, in fewer transactions than pages', async (t) => {
  const server = await new FakeServer({ maxPull: 50 }).start();
  t.after(() => server.stop());
  const w = await openClient({ url: server.url, name: 'w', collections: ['todos'] });
  await w.collection('todos').putMany(Array.from({ length: 1200 }, (_, i) => ({ id: 'r' + i, n: i })));
  await w.whenSynced();
  await w.close();
  const r = await openClient({ url: server.url, name: 'r', collections: ['todos'] });
  t.after(() => r.close());
  let txs = 0;
  // A first sync writes through applyFirst (applyRemote when it falls
  // back), each write one transaction named "apply todos".
  const tx = r.store.tx.bind(r.store);
  r.store.tx = (/** @type {any[]} */ ...args) => {
    if (args[2] === 'apply todos') txs++;
    return tx(...args);
  };
  let seen = 0;
  r.collection('todos').subscribe({ where: { n: 7 } }, (docs) => (seen = docs.length));
  await until(async () => (await r.collection('todos').list()).length === 1200, 'all 1200 records', 15_000);
  await until(() => seen === 1, 'the live query sees the pulled record');
  assert.ok(txs >= 1 && txs <= 24, `transactions: ${txs} for 24 pages`);
  const held = await r.store.list('todos');
  assert.ok(held.every((s) => s.s instanceof Uint8Array), 'every record kept with its seal');
});

/** A page of n records with ids from + i, each with a seal. */
function serverPage(from, n) {
  const now = Date.now();
  const records = Array.from({ length: n }, (_, i) => ({ id: 'r' + (from + i), deleted: zero, fields: new Map([['n', { stamp: stamp(now - 1000), value: encode(from + i) }]]) }));
  const seals = records.map((_, i) => new Uint8Array(16).fill((from + i) % 251));
  return { records, seals };
}

test('a first sync write queued behind one that fails stores nothing: the cursor stays at the last page written', async () => {
  const store = new Store({ name: 'pipelined', indexedDB: freshIDB(), IDBKeyRange });
  await store.init();
  const p1 = serverPage(0, 3);
  const p2 = serverPage(3, 3);
  const p3 = serverPage(6, 3);
  const prep1 = prepareRemote(store, 'todos', p1.records, p1.seals);
  const prep2 = prepareRemote(store, 'todos', p2.records, p2.seals);
  const prep3 = prepareRemote(store, 'todos', p3.records, p3.seals);
  // The second page's transaction fails after its first put went out: an
  // entry IndexedDB cannot store (a function cannot be cloned).
  const bad = /** @type {any} */ ([...prep2.puts.values()][1]);
  bad.doc = { ...bad.doc, oops: () => {} };
  // All three issued at once, each behind the one before, as a first sync
  // issues them while the one before commits.
  const w1 = applyFirst(store, 'todos', prep1, new Uint8Array(0), Uint8Array.of(1));
  const w2 = applyFirst(store, 'todos', prep2, Uint8Array.of(1), Uint8Array.of(2)).then(
    () => null,
    (e) => e,
  );
  const w3 = applyFirst(store, 'todos', prep3, Uint8Array.of(2), Uint8Array.of(3));
  assert.deepEqual((await w1)?.sort(), ['r0', 'r1', 'r2']);
  assert.match(String((await w2)?.message), /could not be cloned/, 'the failed write says why');
  assert.equal(await w3, null, 'the write behind it found the cursor it builds on missing');
  assert.deepEqual(await cursorOf(store, 'todos'), Uint8Array.of(1), 'the cursor of the last page written, not past it');
  assert.deepEqual((await heldIds(store, 'todos')).sort(), ['r0', 'r1', 'r2'], 'no record of the failed page nor of the one behind it');
  store.close();
});

test('a first sync write finds a record of its page written locally since it was merged, and leaves it to applyRemote', async () => {
  const store = new Store({ name: 'pipelined-local', indexedDB: freshIDB(), IDBKeyRange });
  await store.init();
  const p1 = serverPage(0, 3);
  const p2 = serverPage(3, 3);
  const prep1 = prepareRemote(store, 'todos', p1.records, p1.seals);
  const prep2 = prepareRemote(store, 'todos', p2.records, p2.seals);
  // A local write to r4 lands between the two first-sync writes.
  const w1 = applyFirst(store, 'todos', prep1, new Uint8Array(0), Uint8Array.of(1));
  const local = store.write('todos', 'r4', (_cur, s) => ({ id: 'r4', deleted: zero, fields: new Map([['mine', { stamp: s, value: encode(true) }]]) }));
  const w2 = applyFirst(store, 'todos', prep2, Uint8Array.of(1), Uint8Array.of(2));
  await w1;
  await local;
  assert.equal(await w2, null, 'the page holding r4 is not put blindly');
  assert.deepEqual(await cursorOf(store, 'todos'), Uint8Array.of(1));
  assert.deepEqual((await store.get('todos', 'r4'))?.doc, { mine: true }, 'the local write is untouched');
  // The caller writes it again with reads: merged, not overwritten.
  await applyRemote(store, 'todos', p2.records, Uint8Array.of(2), p2.seals);
  assert.deepEqual((await store.get('todos', 'r4'))?.doc, { n: 4, mine: true });
  assert.deepEqual((await store.get('todos', 'r3'))?.doc, { n: 3 });
  assert.deepEqual(await cursorOf(store, 'todos'), Uint8Array.of(2));
  store.close();
});

test('a first sync whose write fails resumes from the last page written and ends with every record', async (t) => {
  const server = await new FakeServer({ maxPull: 50 }).start();
  t.after(() => server.stop());
  const w = await openClient({ url: server.url, name: 'w2', collections: ['todos'] });
  await w.collection('todos').putMany(Array.from({ length: 1200 }, (_, i) => ({ id: 'r' + i, n: i })));
  await w.whenSynced();
  await w.close();
  const r = await openClient({ url: server.url, name: 'r2', collections: ['todos'] });
  t.after(() => r.close());
  // The second first-sync transaction fails (a value IndexedDB cannot
  // clone), once; those issued behind it must not store a later cursor.
  let calls = 0;
  const syncer = /** @type {any} */ (r).syncer;
  const applyBatch = syncer.applyFirst.bind(syncer);
  syncer.applyFirst = (/** @type {any[]} */ ...args) => {
    const prepared = args[3];
    if (++calls === 2) {
      const e = /** @type {any} */ ([...prepared.puts.values()].at(-1));
      e.doc = { ...e.doc, oops: () => {} };
    }
    return applyBatch(...args);
  };
  let errors = 0;
  r.on('error', () => errors++);
  await until(() => calls >= 2 && errors > 0, 'the failed write reported');
  await r.sync();
  await until(async () => (await r.collection('todos').list()).length === 1200, 'all 1200 records after the retry', 15_000);
  const held = await r.collection('todos').list();
  assert.deepEqual(new Set(held.map((d) => d.n)).size, 1200);
});

test('a local write during a first sync through the client is merged with the pulled record and pushed', async (t) => {
  const server = await new FakeServer({ maxPull: 50 }).start();
  t.after(() => server.stop());
  const w = await openClient({ url: server.url, name: 'w3', collections: ['todos'] });
  await w.collection('todos').putMany(Array.from({ length: 600 }, (_, i) => ({ id: 'r' + i, n: i })));
  await w.whenSynced();
  const r = await openClient({ url: server.url, name: 'r3', collections: ['todos'] });
  t.after(() => r.close());
  // When the first batch is written, write r590 (near the end) locally.
  let calls = 0;
  const syncer = /** @type {any} */ (r).syncer;
  const applyBatch = syncer.applyFirst.bind(syncer);
  syncer.applyFirst = (/** @type {any[]} */ ...args) => {
    if (++calls === 1) r.collection('todos').update('r590', { mine: true }).catch(() => {});
    return applyBatch(...args);
  };
  await until(async () => (await r.collection('todos').list()).length === 600, 'all 600 records', 15_000);
  await r.whenSynced();
  assert.ok(calls >= 1);
  assert.deepEqual(await r.collection('todos').get('r590'), { id: 'r590', n: 590, mine: true }, 'the local field kept, the server field merged');
  await until(async () => (await w.sync(), (await w.collection('todos').get('r590'))?.mine === true), 'the local write reached the server');
  await w.close();
});
