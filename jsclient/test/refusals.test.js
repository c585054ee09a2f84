// Refused writes, case by case: a write the server refuses is rolled back
// to the server's version plus what is still pending, shown to the app
// (the refused event, whenSynced, the rejected changes, live queries), and
// the record converges with the server's; what it accepted settles.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FakeServer } from './helpers/server.js';
import { fakeLocks, freshIDB, heldAnswers, openClient, slowAnswers, until } from './helpers/util.js';
import { PATHS } from '../src/constants.js';

/**
 * Whether change ch sets field name to value.
 * @param {any} ch
 * @param {string} name
 * @param {unknown} value
 */
function sets(ch, name, value) {
  const f = ch.record.fields.get(name);
  if (!f || f.value === null) return false;
  // Values travel encoded: a CBOR text string of fewer than 24 bytes.
  const v = /** @type {Uint8Array} */ (f.value);
  return typeof value === 'string' && v.length === value.length + 1 && new TextDecoder().decode(v.subarray(1)) === value;
}

/**
 * A fake server, stopped after test t, that refuses the changes refuse
 * picks.
 * @param {import('node:test').TestContext} t
 * @param {(ch: any) => boolean} refuse
 * @param {ConstructorParameters<typeof FakeServer>[0]} [opts]
 */
async function refusingServer(t, refuse, opts) {
  const server = await new FakeServer(opts).start();
  t.after(() => server.stop());
  server.refuse = refuse;
  return server;
}

/**
 * Client "a" of server, syncing todos, closed after test t.
 * @param {import('node:test').TestContext} t
 * @param {FakeServer} server
 */
async function clientA(t, server) {
  const a = await openClient({ url: server.url, name: 'a', collections: ['todos'] });
  t.after(() => a.close());
  return a;
}

/**
 * The record as the server holds it, read by a fresh client.
 * @param {FakeServer} server
 * @param {string} c
 * @param {string} id
 */
async function serverView(server, c, id) {
  const b = await openClient({ url: server.url, name: 'reader', collections: [c], WebSocket: null });
  try {
    await b.whenSynced();
    return await b.collection(c).get(id);
  } finally {
    await b.close();
  }
}

for (const live of [true, false]) {
  test(`a push answered in part (${live ? 'live' : 'over HTTP'}): the refused changes roll back, the applied ones settle, every record is the server merge`, async (t) => {
    const server = await refusingServer(t, (ch) => sets(ch, 'title', 'bad'));
    const a = await openClient({ url: server.url, name: 'a', collections: ['todos'], ...(live ? {} : { WebSocket: null }) });
    t.after(() => a.close());
    const todos = a.collection('todos');
    await todos.put('keep', { title: 'v1', n: 1 });
    await a.whenSynced();
    if (live) await until(() => /** @type {any} */ (a).syncer?.live, 'a live session');
    /** @type {any[]} */
    const refusals = [];
    a.on('refused', (r) => refusals.push(r));
    // Over HTTP all four go in one push; over the live session, as they come.
    if (!live) await a.pause();
    await todos.put('new-ok', { title: 'fine' });
    await todos.put('new-bad', { title: 'bad' });
    await todos.update('keep', { title: 'bad' }); // refused
    await todos.update('keep', { n: 2 }); // applied
    if (!live) {
      assert.equal(a.status.pending, 4);
      a.resume();
    }
    assert.deepEqual(await a.whenSynced(), { refused: 2 });
    assert.deepEqual(refusals.map((r) => r.id).sort(), ['keep', 'new-bad']);
    assert.equal(a.status.pending, 0);
    assert.equal(a.status.rejected, 2);
    assert.equal(await todos.get('new-bad'), null, 'a refused create leaves nothing');
    assert.deepEqual(await todos.get('new-ok'), { id: 'new-ok', title: 'fine' });
    assert.deepEqual(await todos.get('keep'), { id: 'keep', title: 'v1', n: 2 });
    for (const id of ['keep', 'new-ok', 'new-bad']) assert.deepEqual(await todos.get(id), await serverView(server, 'todos', id), `${id} is the server's`);
    assert.deepEqual((await todos.list()).map((d) => d.id), ['keep', 'new-ok']);
    assert.equal(server.livePushes.length > 0, live);
    if (!live) assert.ok(server.pushStatuses.some((st) => st.length === 4 && st.filter((x) => x === 3).length === 2), 'one push answered in part');
  });
}

test('a refused edit of a record another client changed meanwhile: the record is the server merge', async (t) => {
  const server = await refusingServer(t, (ch) => sets(ch, 'title', 'bad'));
  const a = await openClient({ url: server.url, name: 'a', collections: ['todos'] });
  const b = await openClient({ url: server.url, name: 'b', collections: ['todos'] });
  t.after(() => Promise.all([a.close(), b.close()]));
  await a.collection('todos').put('r', { title: 'v1', n: 1 });
  await a.whenSynced();
  await a.pause();
  await a.collection('todos').update('r', { title: 'bad', k: 'mine' });
  await a.collection('todos').update('r', { m: 'later' });
  await b.whenSynced();
  await b.collection('todos').update('r', { n: 2, title: 'v2' });
  await b.whenSynced();
  a.resume();
  assert.deepEqual(await a.whenSynced(), { refused: 1 });
  await a.sync();
  const want = { id: 'r', title: 'v2', n: 2, m: 'later' };
  assert.deepEqual(await a.collection('todos').get('r'), want);
  await b.sync();
  assert.deepEqual(await b.collection('todos').get('r'), want);
  assert.deepEqual(await serverView(server, 'todos', 'r'), want);
});

for (const field of ['title', 'n']) {
  test(`a refused edit with a later edit (of ${field === 'title' ? 'the same field' : 'another field'}) pending in the next push: the later one stays and the record converges`, async (t) => {
    // One change per push: the refusal settles while the later edit waits.
    const server = await refusingServer(t, (ch) => sets(ch, 'title', 'bad'), { maxPush: 1 });
    const a = await clientA(t, server);
    const todos = a.collection('todos');
    await todos.put('r', { title: 'v1', n: 1 });
    await a.whenSynced();
    await a.pause();
    await todos.update('r', { title: 'bad' });
    await todos.update('r', { [field]: field === 'title' ? 'v3' : 3 });
    a.resume();
    assert.deepEqual(await a.whenSynced(), { refused: 1 });
    const want = field === 'title' ? { id: 'r', title: 'v3', n: 1 } : { id: 'r', title: 'v1', n: 3 };
    assert.deepEqual(await todos.get('r'), want);
    assert.deepEqual(await serverView(server, 'todos', 'r'), want);
    // A pull afterwards changes nothing.
    await a.sync();
    assert.deepEqual(await todos.get('r'), want);
  });
}

test('a refused delete brings the record back, also while an edit after it is pending', async (t) => {
  const server = await refusingServer(t, (ch) => ch.record.deleted.wall > 0, { maxPush: 1 });
  const a = await clientA(t, server);
  const todos = a.collection('todos');
  await todos.put('d', { title: 'v1', n: 1 });
  await a.whenSynced();
  /** @type {any[]} */
  const seen = [];
  const stop = todos.subscribe({}, (docs) => seen.push(docs.map((d) => d.id)));
  await a.pause();
  await todos.delete('d');
  await until(() => seen.at(-1)?.length === 0, 'the live query to see the delete');
  await todos.update('d', { n: 2 }); // after the delete: a record of n alone
  a.resume();
  assert.deepEqual(await a.whenSynced(), { refused: 1 });
  assert.deepEqual(await todos.get('d'), { id: 'd', title: 'v1', n: 2 }, 'the delete was taken back');
  assert.deepEqual(await serverView(server, 'todos', 'd'), { id: 'd', title: 'v1', n: 2 });
  await until(() => seen.at(-1)?.[0] === 'd', 'the live query to see the record back');
  stop();
});

test('a refusal is seen by the live queries and live documents open', async (t) => {
  const server = await refusingServer(t, (ch) => sets(ch, 'title', 'bad'));
  const a = await clientA(t, server);
  const todos = a.collection('todos');
  await todos.put('q', { title: 'good' });
  await a.whenSynced();
  /** @type {any[]} */
  const titles = [];
  /** @type {any[]} */
  const docs = [];
  const stop1 = todos.subscribe({ orderBy: 'title' }, (ds) => titles.push(ds.map((d) => d.title)));
  const stop2 = todos.subscribe('q', (d) => docs.push(d?.title));
  await todos.update('q', { title: 'bad' });
  await todos.put('fresh', { title: 'bad' });
  assert.deepEqual(await a.whenSynced(), { refused: 2 });
  await until(() => JSON.stringify(titles.at(-1)) === JSON.stringify(['good']), 'the query to show the server version');
  await until(() => docs.at(-1) === 'good', 'the document to show the server version');
  assert.ok(titles.some((x) => x.includes('bad')), 'the query had shown the local write');
  stop1();
  stop2();
});

test("a refusal of a follower tab's write is told in that tab, and its queries roll back", async (t) => {
  const server = await refusingServer(t, (ch) => sets(ch, 'title', 'bad'));
  const idb = freshIDB();
  const locks = fakeLocks();
  const opts = { url: server.url, name: 'tabs', indexedDB: idb, locks, BroadcastChannel: globalThis.BroadcastChannel, collections: ['todos'] };
  const leader = await openClient(opts);
  const follower = await openClient(opts);
  t.after(() => Promise.all([leader.close(), follower.close()]));
  await until(() => leader.status.leader && leader.status.online, 'the first tab leads');
  /** @type {any[]} */
  const told = [];
  follower.on('refused', (r) => told.push(r));
  /** @type {any[]} */
  const seen = [];
  const stop = follower.collection('todos').subscribe({}, (ds) => seen.push(ds.map((d) => d.title)));
  await follower.collection('todos').put('x', { title: 'good' });
  assert.deepEqual(await follower.whenSynced(), { refused: 0 });
  await follower.collection('todos').update('x', { title: 'bad' });
  assert.deepEqual(await follower.whenSynced(), { refused: 1 }, "the writer's tab counts it");
  await until(() => told.length === 1, 'the refused event in the follower');
  assert.equal(told[0].id, 'x');
  assert.equal(told[0].code, 'forbidden');
  await until(() => follower.status.rejected === 1, 'the follower status counts the rejected change');
  await until(() => seen.at(-1)?.[0] === 'good', "the follower's query rolls back");
  assert.equal((await follower.rejected()).length, 1);
  stop();
});

test('a reload between the push and its answer: pushed again, refused again and shown after the reload', async (t) => {
  const server = await refusingServer(t, (ch) => sets(ch, 'title', 'bad'));
  const idb = freshIDB();
  const a = await openClient({ url: server.url, name: 'a', indexedDB: idb, collections: ['todos'], WebSocket: null });
  await a.collection('todos').put('ok', { title: 'v1' });
  await a.whenSynced();
  // No push answer reaches the tab before it closes.
  server.dropPushAnswers = Infinity;
  await a.collection('todos').put('ok', { title: 'v2' });
  await a.collection('todos').put('no', { title: 'bad' });
  await until(() => server.pushed.some((p) => p.id === 'no'), 'the push to reach the server');
  await a.close();
  assert.equal(a.status.rejected, 0, 'the tab closed not knowing');
  server.dropPushAnswers = 0;
  const b = await openClient({ url: server.url, name: 'a', indexedDB: idb, collections: ['todos'], WebSocket: null });
  t.after(() => b.close());
  /** @type {any[]} */
  const refusals = [];
  b.on('refused', (r) => refusals.push(r));
  assert.deepEqual(await b.whenSynced(), { refused: 1 });
  assert.deepEqual(refusals.map((r) => r.id), ['no']);
  assert.equal(await b.collection('todos').get('no'), null);
  assert.deepEqual(await b.collection('todos').get('ok'), { id: 'ok', title: 'v2' });
  const again = server.pushed.filter((p) => p.id === 'ok' && p.record?.fields.get('title'));
  assert.ok(again.length >= 2 && again.slice(1).every((p) => p.status !== 3), 'the applied change came back duplicate, not refused');
  assert.equal(b.status.rejected, 1);
  assert.equal((await b.rejected())[0].recordId, 'no');
});

test('putMany of which the server refuses a part: those records roll back, the rest settle', async (t) => {
  const server = await refusingServer(t, (ch) => sets(ch, 'title', 'bad'));
  const a = await clientA(t, server);
  const todos = a.collection('todos');
  await todos.put('m2', { title: 'old' });
  await a.whenSynced();
  await todos.putMany([
    { id: 'm1', title: 'one' },
    { id: 'm2', title: 'bad' },
    { id: 'm3', title: 'three' },
    { id: 'm4', title: 'bad' },
  ]);
  assert.deepEqual(await a.whenSynced(), { refused: 2 });
  assert.deepEqual(await todos.list(), [
    { id: 'm1', title: 'one' },
    { id: 'm2', title: 'old' },
    { id: 'm3', title: 'three' },
  ]);
  for (const id of ['m1', 'm2', 'm3', 'm4']) assert.deepEqual(await todos.get(id), await serverView(server, 'todos', id), `${id} is the server's`);
  assert.deepEqual((await a.rejected()).map((r) => r.recordId), ['m2', 'm4']);
});

for (const code of ['unavailable', 'internal', 'rate_limited']) {
  test(`a push failing whole with ${code} (retryable) rolls nothing back; it goes again and applies`, async (t) => {
    const server = await new FakeServer().start();
    t.after(() => server.stop());
    let fails = 2;
    const a = await openClient({ url: server.url, name: 'a', collections: ['todos'], WebSocket: null });
    t.after(() => a.close());
    await a.whenSynced();
    const push = server.push.bind(server);
    server.push = (...args) => (fails-- > 0 ? code : push(...args));
    /** @type {any[]} */
    const refusals = [];
    a.on('refused', (r) => refusals.push(r));
    await a.collection('todos').put('r', { title: 'kept' });
    assert.deepEqual(await a.whenSynced(), { refused: 0 });
    assert.ok(fails < 0, 'the push failed twice first');
    assert.deepEqual(refusals, []);
    assert.deepEqual(await a.collection('todos').get('r'), { id: 'r', title: 'kept' });
    assert.deepEqual(await serverView(server, 'todos', 'r'), { id: 'r', title: 'kept' });
    assert.equal(a.status.rejected, 0);
  });
}

test("a follower whose tab messages come late still counts the refusal of its write in whenSynced", async (t) => {
  const server = await refusingServer(t, (ch) => sets(ch, 'title', 'bad'));
  const idb = freshIDB();
  const locks = fakeLocks();
  // The follower's tab is busy: what other tabs post reaches it late (in
  // order), while its IndexedDB reads see the database as it is.
  let slow = false;
  class SlowChannel {
    /** @param {string} name */
    constructor(name) {
      this.bc = new BroadcastChannel(name);
      /** @type {((ev: any) => void)|null} */
      this.onmessage = null;
      let tail = Promise.resolve();
      this.bc.onmessage = (ev) => {
        const late = slow;
        tail = tail.then(() => new Promise((r) => setTimeout(r, late ? 200 : 0))).then(() => this.onmessage?.(ev));
      };
    }
    /** @param {unknown} m */
    postMessage(m) {
      this.bc.postMessage(m);
    }
    close() {
      this.bc.close();
    }
  }
  const opts = { url: server.url, name: 'tabs', indexedDB: idb, locks, collections: ['todos'], WebSocket: null };
  const leader = await openClient({ ...opts, BroadcastChannel: globalThis.BroadcastChannel });
  const follower = await openClient({ ...opts, BroadcastChannel: SlowChannel });
  t.after(() => Promise.all([leader.close(), follower.close()]));
  await until(() => leader.status.leader && leader.status.online, 'the first tab leads');
  await follower.collection('todos').put('x', { title: 'good' });
  assert.deepEqual(await follower.whenSynced(), { refused: 0 });
  slow = true;
  await follower.collection('todos').update('x', { title: 'bad' });
  assert.deepEqual(await follower.whenSynced(), { refused: 1 }, 'whenSynced in the writer tab does not hide the refusal');
});

test('a refusal moves records in and out of filtered, limited live queries', async (t) => {
  const server = await refusingServer(t, (ch) => sets(ch, 'state', 'done'));
  const a = await clientA(t, server);
  const todos = a.collection('todos');
  await todos.putMany([
    { id: 't1', state: 'open' },
    { id: 't2', state: 'open' },
    { id: 't3', state: 'open' },
  ]);
  await a.whenSynced();
  /** @type {string[][]} */
  const open = [];
  /** @type {string[][]} */
  const done = [];
  const s1 = todos.subscribe({ where: { state: 'open' }, limit: 2 }, (ds) => open.push(ds.map((d) => d.id)));
  const s2 = todos.subscribe({ where: (d) => d.state === 'done' }, (ds) => done.push(ds.map((d) => d.id)));
  await until(() => open.length > 0 && done.length > 0, 'first results');
  await todos.update('t1', { state: 'done' });
  await until(() => done.at(-1)?.includes('t1') && JSON.stringify(open.at(-1)) === '["t2","t3"]', 'the local write shown');
  assert.deepEqual(await a.whenSynced(), { refused: 1 });
  await until(() => JSON.stringify(open.at(-1)) === '["t1","t2"]' && done.at(-1)?.length === 0, 'the rollback shown');
  s1();
  s2();
});

test('a refused edit followed by a pending delete: the record stays deleted everywhere', async (t) => {
  const server = await refusingServer(t, (ch) => sets(ch, 'title', 'bad'), { maxPush: 1 });
  const a = await clientA(t, server);
  const todos = a.collection('todos');
  await todos.put('r', { title: 'v1' });
  await a.whenSynced();
  await a.pause();
  await todos.update('r', { title: 'bad' });
  await todos.delete('r');
  a.resume();
  assert.deepEqual(await a.whenSynced(), { refused: 1 });
  assert.equal(await todos.get('r'), null);
  assert.equal(await serverView(server, 'todos', 'r'), null);
});

test("the leader closes between a push of a follower's write and its answer: the next leader pushes it again and the writer hears the refusal", async (t) => {
  const server = await refusingServer(t, (ch) => sets(ch, 'title', 'bad'));
  const idb = freshIDB();
  const locks = fakeLocks();
  const opts = { url: server.url, name: 'tabs', indexedDB: idb, locks, BroadcastChannel: globalThis.BroadcastChannel, collections: ['todos'], WebSocket: null };
  const leader = await openClient(opts);
  const writer = await openClient(opts);
  t.after(() => writer.close());
  await until(() => leader.status.leader && leader.status.online, 'the first tab leads');
  /** @type {any[]} */
  const told = [];
  writer.on('refused', (r) => told.push(r.id));
  await writer.collection('todos').put('ok', { title: 'good' });
  assert.deepEqual(await writer.whenSynced(), { refused: 0 });
  server.dropPushAnswers = Infinity;
  await writer.collection('todos').put('no', { title: 'bad' });
  await writer.collection('todos').update('ok', { title: 'better' });
  await until(() => server.pushed.some((p) => p.id === 'no'), 'the push to reach the server');
  await leader.close();
  assert.deepEqual(told, []);
  server.dropPushAnswers = 0;
  await until(() => writer.status.leader, 'the writer leads');
  assert.deepEqual(await writer.whenSynced(), { refused: 1 });
  assert.deepEqual(told, ['no']);
  assert.equal(await writer.collection('todos').get('no'), null);
  assert.deepEqual(await writer.collection('todos').get('ok'), { id: 'ok', title: 'better' });
  assert.deepEqual(await serverView(server, 'todos', 'ok'), { id: 'ok', title: 'better' });
});

test("a refusal answered while the leader closes reaches the other tabs: the writer hears it, and its live query rolls back", async (t) => {
  const server = await refusingServer(t, (ch) => sets(ch, 'title', 'bad'));
  const idb = freshIDB();
  const locks = fakeLocks();
  const opts = { url: server.url, name: 'tabs', indexedDB: idb, locks, BroadcastChannel: globalThis.BroadcastChannel, collections: ['todos'], WebSocket: null, pollInterval: 60_000 };
  const leader = await openClient(opts);
  const writer = await openClient(opts);
  t.after(() => writer.close());
  await until(() => leader.status.leader && leader.status.online, 'the first tab leads');
  await writer.collection('todos').put('ok', { title: 'good' });
  assert.deepEqual(await writer.whenSynced(), { refused: 0 });
  /** @type {any[]} */
  const told = [];
  writer.on('refused', (r) => told.push(r.id));
  /** @type {any[]} */
  const seen = [];
  writer.collection('todos').subscribe('no', (d) => seen.push(d));
  const pushes = heldAnswers(server, PATHS.push);
  await writer.collection('todos').put('no', { title: 'bad' });
  await until(() => pushes.count() > 0, 'the push to reach the server');
  const closed = leader.close(); // waits for the push's answer
  pushes.release();
  await closed;
  assert.equal(await writer.collection('todos').get('no'), null, 'rolled back in IndexedDB');
  await until(() => told.length > 0, 'the writer hears the refusal');
  assert.deepEqual(told, ['no']);
  await until(() => seen.at(-1) === null, "the writer's live query rolls back");
});

test('a refusal answered while the database closes is not told to its listeners', async (t) => {
  const server = await refusingServer(t, (ch) => sets(ch, 'title', 'no'));
  const idb = freshIDB();
  const a = await openClient({ url: server.url, name: 'a', indexedDB: idb, collections: ['todos'], WebSocket: null, pollInterval: 60_000 });
  t.after(() => a.close());
  await a.sync();
  const pushes = slowAnswers(server, PATHS.push, 200);
  let closing = false;
  /** @type {any[]} */
  const after = [];
  a.on('refused', (r) => closing && after.push(r));
  await a.collection('todos').put('r', { title: 'no' });
  await until(() => pushes() > 0, 'the push sent');
  closing = true;
  await a.close(); // waits for the push's answer
  assert.deepEqual(after, []);
  const again = await openClient({ name: 'a', indexedDB: idb, sync: false });
  t.after(() => again.close());
  assert.deepEqual((await again.rejected()).map((j) => j.recordId), ['r'], 'the refusal was settled as it closed');
});
