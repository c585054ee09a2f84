// What a heal leaves owed outlives the tab that made it (docs/protocol.md,
// "Resets"): the check of the reading from the beginning after a heal
// (what the server acknowledged, what it refused collected) is kept in
// IndexedDB, so that a reload between the heal and the end of that reading
// still drops what the server collected and heals again a store that went
// back once more; and a heal the server refuses forbidden stays owed, and
// is made once the token may read the collection again.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FakeServer } from './helpers/server.js';
import { freshIDB, horizonPast, openClient, until } from './helpers/util.js';
import { PATHS, STATUSES } from '../src/constants.js';
import { encode } from '../src/cbor.js';
import { emptyRecord } from '../src/record.js';
import { fromStored } from '../src/db.js';
import { encodeRestore } from '../src/protocol.js';
import { cursorOf, owedHeals, schemaVersion } from '../src/syncstore.js';

const WAIT = 15_000;

/**
 * A fetch that, once a restore went out, fails every pull past the first
 * pages after it (the reading after the heal cut short, as by a reload).
 * @param {number} pages the pulls after the restore let through
 * @param {() => void} [onBlock] called at the first pull failed
 */
function cutAfterHeal(pages, onBlock) {
  const s = { restored: false, pulls: 0, blocked: 0, on: true };
  /** @type {typeof fetch} */
  const f = (input, init) => {
    const url = String(input);
    if (s.on && url.endsWith(PATHS.restore)) s.restored = true;
    else if (s.on && s.restored && url.endsWith(PATHS.pull) && ++s.pulls > pages) {
      if (s.blocked++ === 0) onBlock?.();
      return Promise.reject(new TypeError('the pull after the heal cut short by the test'));
    }
    return fetch(input, init);
  };
  return { fetch: f, s };
}

for (const pages of [0, 1]) {
  test(`after history_lost: a reload before the reading after the heal ends (${pages} of its pages written) still drops what the server refused collected and does not deliver, and only that`, async (t) => {
    const server = await new FakeServer({ maxPull: 1 }).start();
    t.after(() => server.stop());
    const idb = freshIDB();
    const cut = cutAfterHeal(pages);
    const opts = { url: server.url, name: 'a', indexedDB: idb, collections: ['todos'], WebSocket: null, pollInterval: 50 };
    const a = await openClient({ ...opts, fetch: cut.fetch });
    a.on('error', () => {});
    const todos = a.collection('todos');
    for (const id of ['x', 'y', 'w', 'z']) await todos.put(id, { n: 1 });
    await a.whenSynced();
    await a.sync();
    assert.ok((await cursorOf(a.store, 'todos')).length > 0, 'a cursor: the wipe resets it');
    await a.pause();
    // The store goes back to one without any of them, whose write horizon
    // has passed every stamp a holds: they were deleted and collected
    // meanwhile; y and w are written there again since, by another replica.
    server.wipe();
    server.writeHorizon.set('todos', await horizonPast(a));
    for (const id of ['y', 'w']) {
      const r = emptyRecord(id);
      r.fields.set('m', { value: encode('theirs'), stamp: { wall: Date.now() + 1000, logical: 0, replica: 'bob_dev' } });
      assert.equal(server.apply([{ collection: 'todos', record: r }], 'bob')[0].get(1), STATUSES.applied);
    }
    a.resume();
    await until(() => cut.s.blocked > 0, 'the reading after the heal cut short', WAIT);
    assert.deepEqual(await owedHeals(a.store), [], 'the heal is done');
    await a.close();
    // Reloaded: the reading after the heal is made again, from the beginning.
    const again = await openClient(opts);
    t.after(() => again.close());
    again.on('error', () => {});
    await again.sync();
    await again.sync();
    for (const id of ['x', 'z']) assert.equal(await again.store.get('todos', id), undefined, `${id}, refused collected and not delivered, dropped`);
    for (const id of ['y', 'w']) assert.deepEqual(await again.collection('todos').get(id), { id, n: 1, m: 'theirs' }, `${id}, delivered, stays`);
  });
}

test('a store wiped again between the heal and the end of the reading after it is healed again, across a reload', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const idb = freshIDB();
  const cut = cutAfterHeal(0, () => server.wipe());
  const opts = { url: server.url, name: 'a', indexedDB: idb, collections: ['todos'], WebSocket: null, pollInterval: 50 };
  const a = await openClient({ ...opts, fetch: cut.fetch });
  a.on('error', () => {});
  for (let i = 0; i < 3; i++) await a.collection('todos').put('a' + i, { i });
  await a.whenSynced();
  await a.sync();
  server.wipe();
  await until(() => cut.s.blocked > 0, 'the reading after the heal cut short', WAIT);
  assert.equal(server.coll('todos').byId.size, 0, 'what the heal gave back is lost again');
  await a.close();
  const again = await openClient(opts);
  t.after(() => again.close());
  /** @type {any[]} */
  const resets = [];
  again.on('serverReset', (r) => resets.push(r));
  await again.sync();
  assert.equal(server.coll('todos').byId.size, 3, 'healed again: the server holds all 3');
  assert.deepEqual(resets.map((r) => r.reason), ['history_lost']);
  await again.sync();
  assert.equal(resets.length, 1, 'once');
});

test('a heal refused forbidden stays owed, is told once, and gives back what the device holds once the token may read the collection', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const a = await openClient({ url: server.url, name: 'a', collections: ['todos', 'other'], WebSocket: null, pollInterval: 50 });
  t.after(() => a.close());
  a.on('error', () => {});
  /** @type {any[]} */
  const unreadable = [];
  a.on('unreadable', (u) => unreadable.push(u));
  await a.collection('todos').put('x', { n: 1 });
  await a.whenSynced();
  await a.sync();
  // The token may no longer read todos, as the heal finds: the restore
  // is refused forbidden, and so are the pulls after it.
  const handle = server.handle.bind(server);
  let denied = false;
  server.handle = async (/** @type {any} */ req, /** @type {any} */ res) => {
    if (req.url === PATHS.restore && !denied) {
      denied = true;
      server.forbidden.add('todos');
    }
    return handle(req, res);
  };
  server.wipe();
  await a.sync();
  await a.sync();
  assert.deepEqual(
    unreadable.map((u) => [u.collection, u.op, u.code]),
    [['todos', 'heal', 'forbidden']],
    'told once',
  );
  assert.deepEqual(await owedHeals(a.store), ['todos'], 'still owed');
  assert.equal(server.coll('todos').byId.size, 0, 'nothing given back yet');
  // The others sync on.
  await a.collection('other').put('o', { n: 1 });
  await a.whenSynced();
  assert.ok(server.coll('other').byId.has('o'));
  // The token may read it again: the next round gives back.
  server.forbidden.delete('todos');
  await a.sync();
  assert.deepEqual(await owedHeals(a.store), [], 'healed');
  assert.ok(server.coll('todos').byId.has('x'), 'x given back');
  assert.deepEqual(a.status.unreadable, [], 'readable again');
  assert.equal(unreadable.length, 1);
});

test('a heal refused forbidden is asked about again with an empty restore, not a batch of what the device holds, until it is made', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  /** @type {number[]} the size of each restore request's body */
  const restores = [];
  /** @type {typeof fetch} */
  const f = (input, init) => {
    if (String(input).endsWith(PATHS.restore)) restores.push(/** @type {Uint8Array} */ (init?.body).length);
    return fetch(input, init);
  };
  const a = await openClient({ url: server.url, name: 'a', collections: ['todos'], WebSocket: null, pollInterval: 50, fetch: f });
  t.after(() => a.close());
  a.on('error', () => {});
  for (let i = 0; i < 20; i++) await a.collection('todos').put('x' + i, { n: i, text: 'a note of some length '.repeat(4) });
  await a.whenSynced();
  await a.sync();
  const empty = encodeRestore('todos', [], await schemaVersion(a.store, 'todos')).length;
  // The token may no longer read todos, as the heal finds.
  const handle = server.handle.bind(server);
  server.handle = async (/** @type {any} */ req, /** @type {any} */ res) => {
    if (req.url === PATHS.restore) server.forbidden.add('todos');
    return handle(req, res);
  };
  server.wipe();
  for (let i = 0; i < 4; i++) await a.sync();
  assert.deepEqual(await owedHeals(a.store), ['todos'], 'the heal refused stays owed');
  assert.ok(restores.length >= 4, `a restore at every round (${restores.length})`);
  assert.deepEqual(
    restores.map((n) => n > empty),
    [true, ...restores.slice(1).map(() => false)],
    'only the first refused restore carried records',
  );
  server.handle = handle;
  server.forbidden.delete('todos');
  await a.sync();
  assert.deepEqual(await owedHeals(a.store), [], 'healed');
  assert.equal(server.coll('todos').byId.size, 20, 'all given back');
});

test('a pull after a heal that fails writing a page before the end of its reading still heals again a store that went back once more', async (t) => {
  const server = await new FakeServer({ maxPull: 1 }).start();
  t.after(() => server.stop());
  const state = { restored: false, wiped: false };
  /** @type {typeof fetch} */
  const f = async (input, init) => {
    const res = await fetch(input, init);
    // The store goes back again just after the heal's restore.
    if (String(input).endsWith(PATHS.restore) && !state.wiped) {
      await res.clone().arrayBuffer();
      state.wiped = true;
      server.wipe();
      for (const id of ['b1', 'b2']) {
        const r = emptyRecord(id);
        r.fields.set('m', { value: encode('theirs'), stamp: { wall: Date.now(), logical: 0, replica: 'bob_dev' } });
        assert.equal(server.apply([{ collection: 'todos', record: r }], 'bob')[0].get(1), STATUSES.applied);
      }
    }
    return res;
  };
  const a = await openClient({ url: server.url, name: 'a', collections: ['todos'], WebSocket: null, pollInterval: 60_000, fetch: f });
  t.after(() => a.close());
  a.on('error', () => {});
  for (const id of ['x', 'y', 'z']) await a.collection('todos').put(id, { n: 1 });
  await a.whenSynced();
  await a.sync();
  // The first page of the reading after the heal is not written (the
  // page after it, the last, is asked for meanwhile).
  const syncer = /** @type {any} */ (a).syncer;
  const applyPage = syncer.applyPage.bind(syncer);
  let failed = 0;
  syncer.applyPage = async (/** @type {any[]} */ ...args) => {
    if (state.wiped && failed === 0) {
      failed++;
      await new Promise((r) => setTimeout(r, 200));
      throw new Error('the write of a page failed (test)');
    }
    return applyPage(...args);
  };
  server.wipe();
  await a.sync().catch(() => {});
  assert.equal(failed, 1, 'a page write failed');
  await a.sync().catch(() => {});
  await a.sync();
  for (const id of ['x', 'y', 'z']) assert.ok(server.coll('todos').byId.has(id), `${id}, lost again after the heal, given back again`);
});

/** A JWT (unsigned: the fake server reads its payload) for subject sub with claims. */
function tokenOf(/** @type {string} */ sub, claims = {}) {
  const b64 = (/** @type {object} */ o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  return `${b64({ alg: 'none' })}.${b64({ sub, ...claims })}.x`;
}

test('live: a heal refused forbidden is made once a new token of the same subject may read the collection, in a session opened at once with it', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const a = await openClient({ url: server.url, name: 'a', token: tokenOf('alice'), collections: ['todos'] });
  t.after(() => a.close());
  a.on('error', () => {});
  await a.collection('todos').put('x', { n: 1 });
  await a.whenSynced();
  await until(() => /** @type {any} */ (a).syncer?.live && server.received.some((m) => m.get(0) === 'sub'), 'live', WAIT);
  const session = /** @type {any} */ (a).syncer.session;
  // The token may no longer read todos, as the heal after the reset finds.
  const handle = server.handle.bind(server);
  server.handle = async (/** @type {any} */ req, /** @type {any} */ res) => {
    if (req.url === PATHS.restore) server.forbidden.add('todos');
    return handle(req, res);
  };
  server.wipe();
  await until(() => a.status.unreadable.length === 1, 'todos said unreadable', WAIT);
  assert.deepEqual(await owedHeals(a.store), ['todos'], 'the heal stays owed');
  // A new token of the same subject, which may read todos again.
  server.handle = handle;
  server.forbidden.delete('todos');
  a.setToken(tokenOf('alice', { iat: 2 }));
  await until(async () => (await owedHeals(a.store)).length === 0, 'the heal made', WAIT);
  assert.ok(server.coll('todos').byId.has('x'), 'x given back');
  await until(() => a.status.unreadable.length === 0, 'todos readable again', WAIT);
  // A session reads as its hello's token (the real server refuses a sub
  // sent again over it): a new one carries the new token.
  assert.notEqual(/** @type {any} */ (a).syncer.session, session, 'a new session');
  // And todos is synced live again.
  const y = emptyRecord('y');
  y.fields.set('m', { value: encode('theirs'), stamp: { wall: Date.now(), logical: 0, replica: 'bob_dev' } });
  server.apply([{ collection: 'todos', record: y }], 'bob');
  await until(async () => (await a.collection('todos').get('y')) !== null, 'y delivered', WAIT);
});

test('live: a collection whose pull was refused forbidden is pulled and subscribed again once a new token of the same subject may read it, in a session opened at once with it', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const y = emptyRecord('y');
  y.fields.set('m', { value: encode('theirs'), stamp: { wall: Date.now(), logical: 0, replica: 'bob_dev' } });
  server.apply([{ collection: 'todos', record: y }], 'bob');
  server.forbidden.add('todos');
  const a = await openClient({ url: server.url, name: 'a', token: tokenOf('alice'), collections: ['todos'] });
  t.after(() => a.close());
  a.on('error', () => {});
  await until(() => /** @type {any} */ (a).syncer?.live && a.status.unreadable.length === 1, 'live, todos said unreadable', WAIT);
  const session = /** @type {any} */ (a).syncer.session;
  server.forbidden.delete('todos');
  a.setToken(tokenOf('alice', { iat: 2 }));
  await until(async () => (await a.collection('todos').get('y')) !== null, 'y pulled', WAIT);
  await until(() => a.status.unreadable.length === 0, 'todos readable again', WAIT);
  assert.notEqual(/** @type {any} */ (a).syncer.session, session, 'a new session, with the new token');
  const z = emptyRecord('z');
  z.fields.set('m', { value: encode('theirs'), stamp: { wall: Date.now(), logical: 0, replica: 'bob_dev' } });
  server.apply([{ collection: 'todos', record: z }], 'bob');
  await until(async () => (await a.collection('todos').get('z')) !== null, 'z delivered live', WAIT);
});

test('a database that vanished while a heal was refused forbidden is not said unreadable once its pulls succeed: the heal went with it', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const idb = freshIDB();
  const a = await openClient({ url: server.url, name: 'v', indexedDB: idb, collections: ['todos'], WebSocket: null, pollInterval: 50 });
  t.after(() => a.close());
  a.on('error', () => {});
  let resets = 0;
  a.on('reset', () => resets++);
  await a.collection('todos').put('x', { n: 1 });
  await a.whenSynced();
  await a.sync();
  // Restores are refused until refuse is false: a round of the 50 ms
  // poll may still be on its way to the handler when the test swaps it
  // back, and must not refuse again after that.
  let refuse = true;
  const handle = server.handle.bind(server);
  server.handle = async (/** @type {any} */ req, /** @type {any} */ res) => {
    if (refuse && req.url === PATHS.restore) server.forbidden.add('todos');
    return handle(req, res);
  };
  server.wipe();
  await a.sync();
  assert.deepEqual(a.status.unreadable.map((u) => [u.collection, u.op]), [['todos', 'heal']]);
  refuse = false;
  server.handle = handle;
  server.forbidden.delete('todos');
  // The user clears site data: what the heal owed went with it.
  await new Promise((resolve, reject) => {
    const r = idb.deleteDatabase('convergo-v');
    r.onsuccess = resolve;
    r.onerror = () => reject(r.error);
  });
  await until(() => resets === 1, 'the reset event', WAIT);
  await a.sync();
  assert.deepEqual(await owedHeals(a.store), [], 'no heal owed');
  // The round that takes the reset in (the loop's, after a poll) forgets
  // the refused heal; a sync() may be answered by the round before it.
  await until(() => a.status.unreadable.length === 0, 'todos is read: not said unreadable', WAIT);
});

test('after history_lost: a record whose restore is refused collected for another writer’s old stamp keeps the fields this device wrote, pushed back (as the Go client does), and is not dropped', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const a = await openClient({ url: server.url, name: 'a', token: tokenOf('alice'), collections: ['todos'], WebSocket: null, pollInterval: 60_000 });
  t.after(() => a.close());
  /** @type {any[]} */
  const errors = [];
  a.on('error', (e) => errors.push(e));
  // Bob's field f of x, stamped long ago (written offline, pushed since).
  const old = Date.now() - 60_000;
  const x = emptyRecord('x');
  x.fields.set('f', { value: encode('bob'), stamp: { wall: old, logical: 0, replica: 'bob_dev' } });
  assert.equal(server.apply([{ collection: 'todos', record: x }], 'bob')[0].get(1), STATUSES.applied);
  await a.sync();
  await a.collection('todos').update('x', { g: 'alice' });
  await a.whenSynced();
  // A pull after the push: the seal held covers alice's g too.
  await a.sync();
  assert.deepEqual(await a.collection('todos').get('x'), { id: 'x', f: 'bob', g: 'alice' });
  // The store goes back to before x; its write horizon has passed f, not g.
  server.wipe();
  server.writeHorizon.set('todos', old + 30_000);
  await a.sync();
  await a.sync();
  assert.equal((await a.collection('todos').get('x'))?.g, 'alice', 'x is not dropped: it keeps the field alice wrote');
  assert.equal(server.coll('todos').byId.has('x'), true, 'the server took back what alice wrote of x');
});

test('after history_lost: a record no seal covers whose own writes straddle the write horizon keeps the later ones, given back one stamp at a time', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const state = { blockPulls: false };
  /** @type {typeof fetch} */
  const f = (input, init) => {
    if (state.blockPulls && String(input).endsWith(PATHS.pull)) return Promise.reject(new TypeError('pulls blocked by the test'));
    return fetch(input, init);
  };
  const a = await openClient({ url: server.url, name: 'a', token: tokenOf('alice'), collections: ['todos'], WebSocket: null, pollInterval: 60_000, fetch: f });
  t.after(() => a.close());
  a.on('error', () => {});
  const todos = a.collection('todos');
  await todos.put('w', { n: 0 });
  await a.whenSynced();
  await a.sync();
  assert.ok((await cursorOf(a.store, 'todos')).length > 0, 'a cursor: the wipe resets it');
  // x is pushed and acknowledged, never pulled: no seal covers it.
  state.blockPulls = true;
  await todos.put('x', { p: 1 });
  await until(() => a.status.pending === 0, 'p pushed', WAIT);
  await new Promise((r) => setTimeout(r, 20));
  await todos.update('x', { q: 2 });
  await until(() => a.status.pending === 0, 'q pushed', WAIT);
  const stored = fromStored(await a.store.get('todos', 'x'), 'x');
  const [p, q] = ['p', 'q'].map((k) => /** @type {any} */ (stored.fields.get(k)).stamp.wall);
  assert.ok(p < q, 'q stamped after p');
  // The store goes back to before x; its write horizon has passed p, not q.
  server.wipe();
  server.writeHorizon.set('todos', q);
  state.blockPulls = false;
  await a.sync().catch(() => {});
  await a.sync();
  assert.equal((await todos.get('x'))?.q, 2, 'x is not dropped: it keeps q');
  assert.equal(server.coll('todos').byId.has('x'), true, 'the server took q back');
});

test('a heal refused forbidden round after round is told in an error event once, again after a new token, and stays owed', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const a = await openClient({ url: server.url, name: 'a', token: tokenOf('alice'), collections: ['todos'], WebSocket: null, pollInterval: 60_000 });
  t.after(() => a.close());
  /** @type {string[]} the messages of the errors that name the heal */
  const heals = [];
  a.on('error', (e) => {
    if (/heal todos/.test(e.message)) heals.push(e.message);
  });
  await a.collection('todos').put('x', { n: 1 });
  await a.whenSynced();
  await a.sync();
  // The heal's restore is refused forbidden; the pulls are not.
  const handle = server.handle.bind(server);
  server.handle = async (/** @type {any} */ req, /** @type {any} */ res) => {
    if (req.url === PATHS.restore) server.forbidden.add('todos');
    await handle(req, res);
    server.forbidden.delete('todos');
  };
  server.wipe();
  for (let i = 0; i < 4; i++) await a.sync();
  assert.equal(heals.length, 1, `told once in four rounds: ${JSON.stringify(heals)}`);
  assert.deepEqual(await owedHeals(a.store), ['todos'], 'still owed');
  // A new token (of the same subject) is refused too: told once more.
  a.setToken(tokenOf('alice', { iat: 2 }));
  for (let i = 0; i < 3; i++) await a.sync();
  assert.equal(heals.length, 2, `told again once after the new token: ${JSON.stringify(heals)}`);
  // Granted again: the heal is made, and a later refusal is told again.
  server.handle = handle;
  await a.sync();
  assert.deepEqual(await owedHeals(a.store), [], 'healed');
  assert.ok(server.coll('todos').byId.has('x'), 'x given back');
});

test('live: a sub refused forbidden says the collection unreadable once, leaves it unsubscribed, and reads it again in a session opened with a new token of the same subject that may', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  let refuse = true;
  // The pulls of todos are served; its subs refused.
  server.refuseSub = (c) => (c === 'todos' && refuse ? 'forbidden' : null);
  const a = await openClient({ url: server.url, name: 'a', token: tokenOf('alice'), collections: ['todos', 'other'] });
  t.after(() => a.close());
  a.on('error', () => {});
  /** @type {any[]} */
  const unreadable = [];
  a.on('unreadable', (u) => unreadable.push(u));
  const subs = () => server.received.filter((m) => m.get(0) === 'sub' && m.get(1) === 'todos').length;
  await until(() => /** @type {any} */ (a).syncer?.live && a.status.unreadable.length === 1, 'live, todos said unreadable', WAIT);
  assert.deepEqual(
    unreadable.map((u) => [u.collection, u.op, u.code]),
    [['todos', 'sub', 'forbidden']],
  );
  const session = /** @type {any} */ (a).syncer.session;
  assert.ok(!session.subscribed.has('todos'), 'todos is not among the subscribed');
  assert.ok(session.subscribed.has('other'), 'other is');
  // Another session, refused again: not told again, still listed.
  const before = subs();
  server.dropSockets();
  await until(() => /** @type {any} */ (a).syncer?.session !== session && /** @type {any} */ (a).syncer?.live && subs() > before, 'a new session refused todos again', WAIT);
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(unreadable.length, 1, 'told once');
  assert.equal(a.status.unreadable.length, 1, 'still listed');
  // A new token of the same subject that may read todos: subscribed again.
  const live = /** @type {any} */ (a).syncer.session;
  refuse = false;
  a.setToken(tokenOf('alice', { iat: 2 }));
  await until(() => /** @type {any} */ (a).syncer?.session !== live && /** @type {any} */ (a).syncer?.session?.subscribed.has('todos'), 'todos subscribed again, in a session with the new token', WAIT);
  await until(() => a.status.unreadable.length === 0, 'todos readable again', WAIT);
  const y = emptyRecord('y');
  y.fields.set('m', { value: encode('theirs'), stamp: { wall: Date.now(), logical: 0, replica: 'bob_dev' } });
  server.apply([{ collection: 'todos', record: y }], 'bob');
  await until(async () => (await a.collection('todos').get('y')) !== null, 'y delivered live', WAIT);
});
