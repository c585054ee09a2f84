// Rejected changes: a change the server refuses is rolled back to the
// server's version and kept durably (IndexedDB) until the app retries or
// discards it, within the bounds of DEFAULTS.maxRejected and
// maxRejectedBytes; whenSynced and the status say how many were refused.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FakeServer } from './helpers/server.js';
import { freshIDB, openClient, until } from './helpers/util.js';
import { DEFAULTS, MODEL } from '../src/constants.js';

for (const live of [false, true]) {
  test(`a refused change is rolled back, kept across a reload, retried with fresh stamps, or discarded (pushed over ${live ? 'the live session' : 'HTTP'})`, async (t) => {
    const server = await new FakeServer().start();
    t.after(() => server.stop());
    const idb = freshIDB();
    // Over HTTP, or over the live session, whose pushed answers carry a request id too.
    const ws = live ? {} : { WebSocket: null };
    const a = await openClient({ url: server.url, name: 'a', indexedDB: idb, collections: ['todos'], ...ws });
    if (live) await until(() => /** @type {any} */ (a).syncer?.live, 'a live session');
    await a.collection('todos').put('t1', { title: 'first', n: 1 });
    assert.deepEqual(await a.whenSynced(), { refused: 0 });
    server.refuseIds.add('t1');
    await a.collection('todos').update('t1', { title: 'refused edit', n: undefined });
    await a.collection('todos').put('t2', { title: 'fine' });
    assert.deepEqual(await a.whenSynced(), { refused: 1 }, 'whenSynced says a write was refused');
    assert.deepEqual(await a.whenSynced(), { refused: 0 }, 'counted since the last call');
    assert.deepEqual(await a.collection('todos').get('t1'), { id: 't1', title: 'first', n: 1 }, "rolled back to the server's version");
    assert.equal(a.status.rejected, 1);
    await a.close();

    // After a reload the rejected change is still there.
    const b = await openClient({ url: server.url, name: 'a', indexedDB: idb, collections: ['todos'], ...ws });
    t.after(() => b.close());
    assert.equal(b.status.rejected, 1);
    const [j] = await b.rejected();
    assert.equal(j.collection, 'todos');
    assert.equal(j.recordId, 't1');
    assert.deepEqual(j.change, { deleted: false, fields: { title: 'refused edit' }, unset: ['n'] });
    assert.equal(j.code, 'forbidden');
    assert.ok(j.requestId, 'the request id of the push');
    assert.equal(server.livePushes.length > 0, live, live ? 'pushed over the live session' : 'pushed over HTTP');
    // Retry: fresh stamps, a new write that now wins.
    const oldStamp = server.coll('todos').byId.get('t1').record.fields.get('title').stamp;
    server.refuseIds.delete('t1');
    await b.retry(j.id);
    assert.deepEqual(await b.collection('todos').get('t1'), { id: 't1', title: 'refused edit' }, 'written locally at once');
    assert.deepEqual(await b.whenSynced(), { refused: 0 });
    const rec = server.coll('todos').byId.get('t1').record;
    assert.ok(rec.fields.get('title').stamp.wall >= oldStamp.wall);
    assert.equal(rec.fields.get('n').value, null, 'the unset went out too');
    assert.deepEqual(await b.rejected(), []);
    assert.equal(b.status.rejected, 0);
    await assert.rejects(b.retry(j.id), (e) => /** @type {any} */ (e).code === 'not_found');

    // Discard: the entry goes, the record stays the server's.
    server.refuseIds.add('t2');
    await b.collection('todos').update('t2', { title: 'nope' });
    assert.deepEqual(await b.whenSynced(), { refused: 1 });
    const [k] = await b.rejected();
    assert.equal(await b.discard(k.id), true);
    assert.equal(await b.discard(k.id), false);
    assert.deepEqual(await b.rejected(), []);
    assert.deepEqual(await b.collection('todos').get('t2'), { id: 't2', title: 'fine' });
  });
}

test('a refused delete is retried as a delete after which nothing older survives', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const a = await openClient({ url: server.url, name: 'a', collections: ['todos'] });
  t.after(() => a.close());
  await a.collection('todos').put('d', { x: 1 });
  await a.whenSynced();
  server.refuseIds.add('d');
  await a.collection('todos').delete('d');
  assert.deepEqual(await a.whenSynced(), { refused: 1 });
  assert.deepEqual(await a.collection('todos').get('d'), { id: 'd', x: 1 }, 'the delete was taken back');
  server.refuseIds.clear();
  const [j] = await a.rejected();
  assert.equal(j.change.deleted, true);
  await a.retry(j.id);
  await a.whenSynced();
  assert.equal(await a.collection('todos').get('d'), null);
  assert.equal((await a.rejected()).length, 0);
});

test('the rejected changes are bounded: the oldest are dropped first and the drop is reported', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  server.refuse = () => true;
  const a = await openClient({ url: server.url, name: 'a', collections: ['big'] });
  t.after(() => a.close());
  /** @type {any[]} */
  const refusals = [];
  a.on('refused', (r) => refusals.push(r));
  // Changes of ~250 KiB each: the byte bound (4 MiB) holds 16 of them.
  const chunk = 'x'.repeat(MODEL.maxValueBytes - 64);
  const n = Math.floor(DEFAULTS.maxRejectedBytes / (2 * chunk.length)) + 3;
  for (let i = 0; i < n; i++) await a.collection('big').put('r' + i, { a: chunk, b: chunk });
  const { refused } = await a.whenSynced();
  assert.equal(refused, n);
  const kept = await a.rejected();
  assert.ok(kept.length < n, `kept ${kept.length} of ${n}`);
  assert.equal(kept[kept.length - 1].recordId, 'r' + (n - 1), 'the newest is kept');
  assert.equal(kept[0].recordId, 'r' + (n - kept.length), 'the oldest went first');
  const dropped = refusals.reduce((s, r) => s + r.dropped, 0);
  assert.equal(dropped, n - kept.length, 'every drop reported');
  assert.equal(await a.store.getMeta('rejectedDropped'), n - kept.length);
  assert.equal(a.status.rejected, kept.length);
});
