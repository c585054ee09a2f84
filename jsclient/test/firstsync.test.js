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

const stamp = (wall, replica = 'AAAAAAAAAAAAAAAA_server') => ({ wall, logical: 0, replica });
const zero = { wall: 0, logical: 0, replica: '' };

test('a first sync merges records written locally meanwhile and stores the rest as they come', async () => {
  const store = new Store({ name: 'first', indexedDB: freshIDB(), IDBKeyRange });
  await store.init();
  assert.equal(await store.isEmpty('todos'), true);
  const now = Date.now();
  /** @type {import('../src/record.js').Record[]} */
  const page = ['a', 'b', 'c'].map((id) => ({ id, deleted: zero, fields: new Map([['title', { stamp: stamp(now - 1000), value: encode('server ' + id) }]]) }));
  const seals = page.map((_, i) => new Uint8Array(16).fill(i + 1));
  // Merged ahead, as if nothing were held...
  const prepared = store.prepareRemote('todos', page, seals);
  // ...then a local write to b lands before the page's transaction.
  await store.write('todos', 'b', (_cur, s) => ({ id: 'b', deleted: zero, fields: new Map([['done', { stamp: s, value: encode(true) }]]) }));
  const changed = await store.applyRemote('todos', page, Uint8Array.of(1), seals, true, prepared);
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
  const apply = r.store.applyRemote.bind(r.store);
  r.store.applyRemote = (...args) => {
    txs++;
    return apply(...args);
  };
  let seen = 0;
  r.collection('todos').subscribe({ where: { n: 7 } }, (docs) => (seen = docs.length));
  await until(async () => (await r.collection('todos').list()).length === 1200, 'all 1200 records', 15_000);
  await until(() => seen === 1, 'the live query sees the pulled record');
  assert.ok(txs >= 1 && txs <= 24, `transactions: ${txs} for 24 pages`);
  const held = await r.store.list('todos');
  assert.ok(held.every((s) => s.s instanceof Uint8Array), 'every record kept with its seal');
});
