// Sync against the in-memory protocol server: two clients converge, the
// outbox survives failures and reloads, refusals are reported.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FakeServer } from './helpers/server.js';
import { freshIDB, openClient, until } from './helpers/util.js';

test('two clients converge through the server, live', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const a = await openClient({ url: server.url, name: 'a', collections: ['todos'] });
  const b = await openClient({ url: server.url, name: 'b', collections: ['todos'] });
  t.after(() => Promise.all([a.close(), b.close()]));

  /** @type {any[][]} */
  const seen = [];
  b.collection('todos').subscribe({ orderBy: 'title' }, (docs) => seen.push(docs));

  await a.collection('todos').put('t1', { title: 'milk', done: false, n: 3 });
  await until(async () => (await b.collection('todos').get('t1'))?.title === 'milk', 'b to see t1');
  assert.deepEqual(await b.collection('todos').get('t1'), { id: 't1', title: 'milk', done: false, n: 3 });
  await until(() => seen.some((d) => d.length === 1 && d[0].title === 'milk'), 'subscription to see t1');

  await b.collection('todos').update('t1', { done: true });
  await until(async () => (await a.collection('todos').get('t1'))?.done === true, 'a to see the update');

  await a.collection('todos').delete('t1');
  await until(async () => (await b.collection('todos').get('t1')) === null, 'b to see the delete');
  await until(() => a.status.pending === 0 && b.status.pending === 0, 'outboxes to drain');
  assert.equal(a.status.online, true);
});

test('the outbox survives lost push answers and is pushed idempotently', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  server.dropPushAnswers = 2; // the server applies the changes but the answer is lost
  const idb = freshIDB();
  const a = await openClient({ url: server.url, name: 'a', indexedDB: idb, WebSocket: null, pollInterval: 50 });
  const todos = a.collection('todos');
  for (let i = 0; i < 5; i++) await todos.put('t' + i, { i });
  await until(() => a.status.pending === 0, 'outbox to drain', 10000);
  assert.ok(server.pushes >= 3, `pushes: ${server.pushes}`);
  assert.equal(server.coll('todos').byId.size, 5);
  // Re-pushing the same changes changed nothing: sequence numbers were
  // assigned once per change.
  assert.equal(server.coll('todos').seq, 5);
  await a.close();
});

test('writes made offline are pushed after a reload', async (t) => {
  const idb = freshIDB();
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const offline = await openClient({ url: 'http://127.0.0.1:9', name: 'r', indexedDB: idb });
  await offline.collection('notes').put('n1', { text: 'written offline' });
  assert.equal(offline.status.pending, 1);
  await offline.close();

  const again = await openClient({ url: server.url, name: 'r', indexedDB: idb, collections: ['notes'] });
  t.after(() => again.close());
  await until(() => again.status.pending === 0, 'outbox to drain after reload');
  assert.ok(server.coll('notes').byId.has('n1'));
  assert.deepEqual(await again.collection('notes').get('n1'), { id: 'n1', text: 'written offline' });
});

test('refused changes are dropped and reported', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  server.refuseIds.add('bad');
  const a = await openClient({ url: server.url, name: 'a' });
  t.after(() => a.close());
  /** @type {any[]} */
  const refused = [];
  a.on('refused', (r) => refused.push(r));
  await a.collection('todos').put('bad', { x: 1 });
  await a.collection('todos').put('good', { x: 2 });
  await until(() => a.status.pending === 0, 'outbox to drain');
  assert.deepEqual(refused, [{ collection: 'todos', id: 'bad', code: 'forbidden', message: 'refused by test' }]);
  assert.ok(server.coll('todos').byId.has('good'));
  assert.ok(!server.coll('todos').byId.has('bad'));
});
