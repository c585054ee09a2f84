// Scopes, leave entries and revoked (docs/protocol.md, section 12) against
// the in-memory server: leaves remove the records they name and nothing
// else, live queries follow, the outbox survives; a scope change reads again
// from the same cursor; revoked purges, moves the outbox to the rejected
// changes and stops until a new token.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { FakeServer, leaveOf, scopeOfCursor } from './helpers/server.js';
import { IDBKeyRange, fakeLocks, freshIDB, openClient, until } from './helpers/util.js';
import { encode } from '../src/cbor.js';
import { encodeScope, leaveDigest } from '../src/scope.js';
import { applyRemote, cursorOf, peekOutbox, scopeOf, settle } from '../src/syncstore.js';
import { SCOPES } from '../src/constants.js';
import { Store } from '../src/db.js';

const WAIT = 8000;

/** A JWT (unsigned: the fake server reads its payload) for subject sub with claims. */
function tokenOf(sub, claims = {}) {
  const b64 = (/** @type {object} */ o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  return `${b64({ alg: 'none' })}.${b64({ sub, ...claims })}.x`;
}

const hex = (/** @type {Uint8Array} */ b) => Buffer.from(b).toString('hex');

test('leave digests: the golden vectors of protocol.json and node:crypto agree', async () => {
  const json = JSON.parse(readFileSync(new URL('../../crdt/testdata/protocol.json', import.meta.url), 'utf8'));
  const vectors = json.leaveVectors ?? [];
  for (const v of vectors) assert.equal(hex(await leaveDigest(v.collection, v.id)), v.digest, `${v.collection}/${v.id}`);
  for (const [c, id] of [['demo.todos', 't1'], ['a', 'x y'], ['tenant42.notes', '用户/笔记'], ['c', '']]) {
    assert.equal(hex(await leaveDigest(c, id)), hex(leaveOf(c, id)), `${c}/${id}`);
  }
  assert.ok(vectors.length > 0, 'protocol.json holds leaveVectors');
});

test('scopes are checked and encoded as the app wrote them', () => {
  const p = ['and', ['eq', 'owner', { $: 'sub' }], ['in', 'team', { $: 'claims.teams' }], ['has', 'tags', 'x'], ['all']];
  assert.deepEqual([...encodeScope(p)], [...encode(p)]);
  assert.deepEqual([...encodeScope(['in', 'team', ['a', 'b']])], [...encode(['in', 'team', ['a', 'b']])]);
  for (const bad of [[], ['eq', 'x'], ['eq', 1, 2], ['nope'], 'all', ['in', 'f', 3], ['or', ['eq']], ['all', 1]]) {
    assert.throws(() => encodeScope(bad), { code: 'invalid' }, JSON.stringify(bad));
  }
});

test('setScope refuses scopes whose or is over SCOPES.maxBytes, invalid as the server would, and keeps those it had', async () => {
  const server = await new FakeServer().start();
  const db = await openClient({ url: server.url, token: tokenOf('alice') });
  try {
    // Each scope fits; the or of three does not (as the Go client's TestSetScopeRefusesTooLarge).
    const big = (/** @type {number} */ i) => ['in', 'list', Array.from({ length: 100 }, (_, j) => `scope-${i}-value-${String(j).padStart(3, '0')}`)];
    await db.setScope('todos', '0', big(0));
    await db.setScope('todos', '1', big(1));
    const before = await scopeOf(db.store, 'todos');
    await assert.rejects(db.setScope('todos', '2', big(2)), (e) => {
      assert.equal(/** @type {any} */ (e).code, 'invalid');
      assert.match(/** @type {any} */ (e).message, new RegExp(`over ${SCOPES.maxBytes}`));
      return true;
    });
    const after = await scopeOf(db.store, 'todos');
    assert.ok(before && after && before.length <= SCOPES.maxBytes && hex(after) === hex(before), 'the two scopes that fit are kept as they were');
  } finally {
    await db.close();
    await server.stop();
  }
});

test('a leave removes the held record it names and nothing else; live queries follow; the outbox survives', async () => {
  const server = await new FakeServer().start();
  const token = tokenOf('alice');
  const db = await openClient({ url: server.url, token, scopes: { todos: { mine: ['eq', 'owner', { $: 'sub' }] } } });
  try {
    const todos = db.collection('todos');
    await todos.put('a', { owner: 'alice', title: 'a' });
    await todos.put('b', { owner: 'alice', title: 'b' });
    await todos.put('c', { owner: 'alice', title: 'c' });
    await db.whenSynced();
    /** @type {string[][]} */
    const seen = [];
    todos.subscribe({}, (docs) => seen.push(docs.map((d) => d.id)));
    await until(() => seen.length > 0 && seen.at(-1)?.length === 3, 'the live query holds a, b, c', WAIT);
    // Someone else gives b to bob: alice's scope no longer holds it.
    const bob = await openClient({ url: server.url, token: tokenOf('bob'), name: 'bob' });
    await bob.collection('todos').update('b', { owner: 'bob' });
    await bob.whenSynced();
    await until(async () => (await todos.get('b')) === null, 'b removed locally', WAIT);
    assert.deepEqual(seen.at(-1), ['a', 'c'], 'the live query lost b');
    assert.equal((await todos.get('a'))?.title, 'a');
    assert.equal(db.status.pending, 0, 'no delete queued');
    // A pending change of a record that leaves stays in the outbox; the
    // server refuses it out_of_scope and it is listed as rejected.
    await db.pause();
    await todos.update('c', { title: 'c2' });
    await bob.collection('todos').update('c', { owner: 'bob' });
    await bob.whenSynced();
    server.refuse = (ch) => (ch.record.id === 'c' ? 'out_of_scope' : false);
    db.resume();
    await until(async () => (await todos.get('c')) === null && db.status.pending === 0, 'c left and its change settled', WAIT);
    const rej = await db.rejected();
    assert.equal(rej.length, 1);
    assert.equal(rej[0].code, 'out_of_scope');
    assert.equal(rej[0].recordId, 'c');
    assert.deepEqual(await todos.list().then((l) => l.map((d) => d.id)), ['a']);
    await bob.close();
  } finally {
    await db.close();
    await server.stop();
  }
});

test('leaves over HTTP pulls (no WebSocket) remove the records too, and a pending write of a record that left still goes out', async () => {
  const server = await new FakeServer().start();
  const db = await openClient({ url: server.url, token: tokenOf('alice'), WebSocket: null, pollInterval: 50, scopes: { todos: { mine: ['eq', 'owner', { $: 'sub' }] } } });
  const bob = await openClient({ url: server.url, token: tokenOf('bob'), name: 'bob', WebSocket: null, pollInterval: 50 });
  try {
    const todos = db.collection('todos');
    await todos.put('x', { owner: 'alice' });
    await todos.put('y', { owner: 'alice' });
    await db.whenSynced();
    // Paused first, so that alice's edit is made before she hears that x
    // left (polling every 50 ms, she could hear it between bob's sync and
    // a pause after it, and edit a record she no longer holds).
    await db.pause();
    await bob.collection('todos').update('x', { owner: 'bob' });
    await bob.sync();
    await todos.update('x', { note: 'mine still' }); // pending while x leaves
    const pulls = server.pulls.length;
    db.resume();
    await until(() => server.pulls.length > pulls, 'a pull', WAIT);
    await until(async () => (await todos.get('x')) === null, 'x removed', WAIT);
    assert.ok(await todos.get('y'), 'y stays');
    await until(() => server.coll('todos').byId.get('x')?.record.fields.has('note'), 'the pending write pushed', WAIT);
  } finally {
    await db.close();
    await bob.close();
    await server.stop();
  }
});

test('a scope change reads again from the same cursor with the new scope; the difference arrives', async () => {
  const server = await new FakeServer().start();
  const writer = await openClient({ url: server.url, token: tokenOf('w'), name: 'w' });
  const w = writer.collection('todos');
  await w.put('r', { team: 'red' });
  await w.put('b', { team: 'blue' });
  await w.put('g', { team: 'green' });
  await writer.whenSynced();
  const db = await openClient({ url: server.url, token: tokenOf('alice', { teams: ['red'] }), scopes: { todos: { team: ['in', 'team', { $: 'claims.teams' }] } } });
  try {
    const todos = db.collection('todos');
    await until(async () => (await todos.list()).length === 1, 'only red held', WAIT);
    // The writer subscribes unscoped: alice's subs are those with key 3.
    const sub = () => server.received.filter((m) => m.get(0) === 'sub' && m.get(1) === 'todos' && m.has(3));
    await until(() => db.status.online && sub().length > 0, 'live', WAIT);
    assert.deepEqual(sub().at(-1).get(3), ['in', 'team', { $: 'claims.teams' }], 'sub key 3 holds the scope');
    assert.ok(scopeOfCursor(sub().at(-1).get(2)), 'the cursor of a scoped read (the fake server keeps the scope in it)');
    const cursor = await cursorOf(db.store, 'todos');
    assert.ok(cursor.length > 0);
    const pulls = server.pulls.length;
    await db.setScope('todos', 'blue', ['eq', 'team', 'blue']);
    await until(async () => (await todos.list()).length === 2, 'red and blue held', WAIT);
    const pull = server.pulls.slice(pulls).find((m) => m.get(1) === 'todos');
    assert.ok(pull, 'pulled again');
    assert.deepEqual([...pull.get(2)], [...cursor], 'with the cursor it held');
    assert.deepEqual(pull.get(4), ['or', ['eq', 'team', 'blue'], ['in', 'team', { $: 'claims.teams' }]], 'under the or of the scopes, by name');
    await until(() => sub().at(-1).get(3)?.[0] === 'or', 'subscribed again with the new scope', WAIT);
    // Removing a scope: the server sends leaves for what it held.
    await db.removeScope('todos', 'team');
    await until(async () => (await todos.list()).map((d) => d.id).join() === 'b', 'only blue held', WAIT);
    assert.deepEqual(server.pulls.at(-1).get(4), ['eq', 'team', 'blue'], 'one scope alone is sent as it is');
    // No scopes at all: nothing under key 4.
    await db.removeScope('todos', 'blue');
    await until(async () => (await todos.list()).length === 3, 'everything held', WAIT);
    assert.equal(server.pulls.at(-1).has(4), false, 'an unscoped pull has no key 4');
    assert.equal(db.status.pending, 0);
  } finally {
    await db.close();
    await writer.close();
    await server.stop();
  }
});

test('without scopes nothing is sent under pull key 4 or sub key 3', async () => {
  const server = await new FakeServer().start();
  const db = await openClient({ url: server.url, collections: ['todos'] });
  try {
    await db.collection('todos').put('a', { x: 1 });
    await db.whenSynced();
    await until(() => server.received.some((m) => m.get(0) === 'sub'), 'subscribed', WAIT);
    assert.ok(server.pulls.length > 0 && server.pulls.every((m) => !m.has(4)));
    assert.ok(server.received.filter((m) => m.get(0) === 'sub').every((m) => !m.has(3)));
  } finally {
    await db.close();
    await server.stop();
  }
});

for (const live of [true, false]) {
  test(`revoked (${live ? 'live' : 'over HTTP'}) purges every record, moves the outbox to the rejected changes with code revoked, and stops until a new token`, async () => {
    const server = await new FakeServer().start();
    const db = await openClient({ url: server.url, token: tokenOf('mallory'), collections: ['todos', 'notes'], ...(live ? {} : { WebSocket: null, pollInterval: 50 }) });
    try {
      const todos = db.collection('todos');
      await todos.put('t1', { a: 1 });
      await db.collection('notes').put('n1', { b: 2 });
      await db.whenSynced();
      /** @type {string[][]} */
      const seen = [];
      todos.subscribe({}, (docs) => seen.push(docs.map((d) => d.id)));
      await until(() => seen.at(-1)?.length === 1, 'the live query holds t1', WAIT);
      /** @type {any[]} */
      const events = [];
      db.on('revoked', (r) => events.push(r));
      await db.pause();
      await todos.put('t2', { offline: true });
      await todos.update('t1', { a: 2 });
      server.revoke('mallory');
      db.resume();
      await until(() => events.length === 1, 'the revoked event', WAIT);
      assert.equal(db.status.revoked, true);
      assert.equal(db.status.pending, 0);
      assert.equal(events[0].moved, 2);
      assert.deepEqual(await todos.list(), []);
      assert.deepEqual(await db.collection('notes').list(), []);
      await until(() => seen.at(-1)?.length === 0, 'the live query emptied', WAIT);
      const rej = await db.rejected();
      assert.deepEqual(rej.map((r) => [r.code, r.recordId]), [['revoked', 't2'], ['revoked', 't1']]);
      assert.equal(db.status.rejected, 2);
      assert.equal(await db.store.getMeta('cursor:todos'), undefined, 'the cursors are forgotten');
      // Stopped: nothing more is asked of the server.
      const n = server.requests.length;
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(server.requests.length, n, 'no request while revoked');
      await assert.rejects(db.sync(), { code: 'revoked' });
      // Another subject's token starts syncing again.
      server.revoked.clear();
      db.setToken(tokenOf('mallory'));
      await until(async () => (await todos.list()).length === 1, 'synced again', WAIT);
      assert.equal(db.status.revoked, false);
    } finally {
      await db.close();
      await server.stop();
    }
  });
}

test('a record that left the scope with a write of it pending and comes back shows the write; refused, it rolls back to the server version, not to nothing', async () => {
  const store = new Store({ name: 'back', indexedDB: freshIDB(), IDBKeyRange });
  await store.init();
  try {
    const zero = { wall: 0, logical: 0, replica: '' };
    const stamp = (/** @type {number} */ wall) => ({ wall, logical: 0, replica: 'AAAAAAAAAAAAAAAA_server' });
    const now = Date.now();
    /** @type {import('../src/record.js').Record} */
    const server = { id: 'b', deleted: zero, fields: new Map([['team', { stamp: stamp(now - 2000), value: encode('blue') }], ['title', { stamp: stamp(now - 2000), value: encode('kept') }]]) };
    await applyRemote(store, 'todos', [server], Uint8Array.of(1));
    await store.write('todos', 'b', (_cur, s) => ({ id: 'b', deleted: zero, fields: new Map([['title', { stamp: s, value: encode('mine') }]]) }));
    // A leave takes b away, its write still pending; a later page brings it back.
    await applyRemote(store, 'todos', [], Uint8Array.of(2), [], ['b']);
    assert.equal(await store.get('todos', 'b'), undefined, 'b left');
    await applyRemote(store, 'todos', [server], Uint8Array.of(3));
    assert.deepEqual((await store.get('todos', 'b'))?.doc, { team: 'blue', title: 'mine' }, 'the pending write is shown');
    const [entry] = await peekOutbox(store, 10);
    assert.equal(entry.id, 'b');
    await settle(store, [{ entry, refused: true, code: 'invalid', message: 'no' }]);
    assert.deepEqual((await store.get('todos', 'b'))?.doc, { team: 'blue', title: 'kept' }, 'rolled back to the server version');
  } finally {
    store.close();
  }
});

/**
 * A writer and a client db syncing todos live under the scope red (team
 * red), both holding x and y (red), and a server slow to stream to db: its
 * next page of todos for db is not sent but noted in late, for the test to
 * send (server.stream) when it chooses.
 * @param {import('node:test').TestContext} t
 */
async function lateScopedPage(t) {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const writer = await openClient({ url: server.url, name: 'w', collections: ['todos'] });
  t.after(() => writer.close());
  const w = writer.collection('todos');
  await w.put('x', { team: 'red' });
  await w.put('y', { team: 'red' });
  await writer.sync();
  const db = await openClient({ url: server.url, name: 'a', collections: ['todos'], scopes: { todos: { red: ['eq', 'team', 'red'] } } });
  t.after(() => db.close());
  const todos = db.collection('todos');
  const scoped = (/** @type {any} */ ws) => !!ws.scopes?.get('todos')?.scope;
  await until(() => [...server.sockets].some((ws) => scoped(ws) && ws.subs?.has('todos')), 'subscribed under the scope', WAIT);
  await until(async () => (await todos.list()).length === 2, 'red held', WAIT);
  /** @type {Set<any>} */
  const late = new Set();
  const notify = server.notify.bind(server);
  server.notify = (/** @type {string} */ c) => {
    /** @type {Map<any, any>} */
    const held = new Map();
    for (const ws of server.sockets) {
      if (!scoped(ws) || !ws.subs?.has(c)) continue;
      late.add(ws);
      held.set(ws, ws.subs);
      ws.subs = new Map();
    }
    notify(c);
    for (const [ws, subs] of held) ws.subs = subs;
    if (held.size > 0) server.notify = notify; // once
  };
  return { server, w, writer, db, todos, scoped, late };
}

test('live: a page of the old sub on its way when the scope changes does not undo the read under the new scope (its leave does not remove a record that read brought)', async (t) => {
  const { server, w, writer, db, todos, scoped, late } = await lateScopedPage(t);
  // The page waiting goes out just before the server reads db's next
  // message (the unsub of the scope change).
  for (const ws of server.sockets) {
    if (scoped(ws)) ws.prependListener('message', () => late.delete(ws) && server.stream(ws, 'todos'));
  }
  // x leaves the red scope: the page waiting holds its leave entry.
  await w.put('x', { team: 'blue' });
  await writer.sync();
  await until(() => late.size === 1, 'a page for db waits', WAIT);
  // Blue joins the scope: x is in it again, read under the new scope.
  await db.setScope('todos', 'blue', ['eq', 'team', 'blue']);
  await until(() => late.size === 0 && server.received.some((m) => m.get(0) === 'sub' && m.get(3)?.[0] === 'or'), 'the late page sent, subscribed again', WAIT);
  await db.sync();
  assert.deepEqual((await todos.list()).map((d) => `${d.id}:${d.team}`).sort(), ['x:blue', 'y:red'], 'x, in the scope on the server, is held');
});

test('live: a page of the old sub held up on the wire until after the sub under the new scope went does not undo the read either (the ping behind the unsub marks its end)', async (t) => {
  const { server, w, writer, db, todos, scoped, late } = await lateScopedPage(t);
  /** @type {Uint8Array[]|null} frames written to db and not delivered yet */
  let slow = null;
  let delivered = false;
  for (const ws of server.sockets) {
    if (!scoped(ws)) continue;
    const send = ws.send.bind(ws);
    ws.send = (/** @type {Uint8Array} */ b) => (slow ? slow.push(b) : send(b));
    ws.prependListener('message', () => {
      if (!late.delete(ws)) return;
      // The page goes out as the server reads the unsub, and the network
      // holds it and what follows it, in order, until the sub under the
      // new scope was read and answered.
      slow = [];
      server.stream(ws, 'todos');
      const sent = server.received.length;
      until(() => server.received.slice(sent).some((m) => m.get(0) === 'sub'), 'the new sub read', WAIT).then(() => {
        const frames = /** @type {Uint8Array[]} */ (slow);
        slow = null;
        for (const b of frames) send(b);
        delivered = true;
      });
    });
  }
  await w.put('x', { team: 'blue' });
  await writer.sync();
  await until(() => late.size === 1, 'a page for db waits', WAIT);
  await db.setScope('todos', 'blue', ['eq', 'team', 'blue']);
  await until(() => delivered, 'the held frames delivered after the new sub', WAIT);
  // A page of the new sub, behind the held frames: once it is held, they were read.
  await w.put('z', { team: 'red' });
  await writer.sync();
  await until(async () => (await todos.get('z')) !== null, 'z held', WAIT);
  await db.sync();
  assert.deepEqual((await todos.list()).map((d) => `${d.id}:${d.team}`).sort(), ['x:blue', 'y:red', 'z:red'], 'x, in the scope on the server, is held');
  assert.ok(db.status.online);
});

test('a tab that opens with other scopes than the stored ones has the tab that leads read the collection again under them', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const writer = await openClient({ url: server.url, token: tokenOf('w'), name: 'w' });
  t.after(() => writer.close());
  const w = writer.collection('todos');
  await w.put('r', { team: 'red' });
  await w.put('b', { team: 'blue' });
  await writer.whenSynced();
  const token = tokenOf('alice');
  const opts = { url: server.url, token, name: 'tabs', indexedDB: freshIDB(), locks: fakeLocks(), BroadcastChannel: globalThis.BroadcastChannel };
  const leader = await openClient({ ...opts, scopes: { todos: { team: ['eq', 'team', 'red'] } } });
  t.after(() => leader.close());
  const todos = leader.collection('todos');
  await until(async () => (await todos.list()).map((d) => d.id).join() === 'r', 'only red held', WAIT);
  await until(() => leader.status.online && server.received.some((m) => m.get(0) === 'sub' && m.get(1) === 'todos' && m.has(3)), 'live', WAIT);
  // The app, reloaded in a second tab, opens with the blue team instead.
  const second = await openClient({ ...opts, scopes: { todos: { team: ['eq', 'team', 'blue'] } } });
  t.after(() => second.close());
  assert.equal(second.status.leader, false);
  await until(async () => (await second.collection('todos').list()).map((d) => d.id).join() === 'b', 'only blue held, as the scopes stored say', WAIT);
});
