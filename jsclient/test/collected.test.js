// Tombstone collection seen from the client (docs/protocol.md, "Tombstone
// collection"): every pull and sub carries the reader's lease (replica
// id, pending floor); a reset lease_expired makes the client pull from the
// beginning and reconcile before it pushes: a record the server deleted
// and collected while it was away is dropped with its pending edits
// (rejected, code collected, never pushed), and edits of records the
// server still has, or records created here, are re-stamped once when
// refused collected and land. A change refused collected outside a
// reconciliation (no reset came) has its collection reconciled first, as
// the Go client does. The pull from the beginning replaces the
// records held (the tombstones the server purged hide nothing any more),
// and a re-stamp keeps only what the record as known here neither hides
// nor beats (the rule engine/horizon_property_test.go's replicas follow).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FakeServer } from './helpers/server.js';
import { freshIDB, horizonPast, jwtOf, openClient, until } from './helpers/util.js';
import { PATHS, STATUSES } from '../src/constants.js';
import { fromStored } from '../src/db.js';
import { decode, encode } from '../src/cbor.js';
import { emptyRecord, maxStamp } from '../src/record.js';
import { COLLECTED_MESSAGE } from '../src/reconcile.js';
import { cursorOf, firstPullReconciles, outboxCounts, owesReconcile } from '../src/syncstore.js';
import { cloneRecord } from '../src/parts.js';
import { replicaPrefix } from '../src/replica.js';

const WAIT = 15_000;
const sleep = (/** @type {number} */ ms) => new Promise((r) => setTimeout(r, ms));

/**
 * The visible value of field f of record id of collection c on the server
 * (undefined: no such record or field).
 * @param {FakeServer} server
 * @param {string} c
 * @param {string} id
 * @param {string} f
 */
function onServer(server, c, id, f) {
  const v = server.coll(c).byId.get(id)?.record.fields.get(f)?.value;
  return v ? decode(v) : undefined;
}

/**
 * The lowest stamp wall of the fields of record id as the client holds it.
 * @param {any} db
 * @param {string} c
 * @param {string} id
 * @param {string} f
 */
async function stampOf(db, c, id, f) {
  return fromStored(await db.store.get(c, id), id).fields.get(f)?.stamp;
}

/**
 * Listens to the events of a reconciliation.
 * @param {any} db
 */
function listen(db) {
  /** @type {{serverReset: any[], reconciled: any[], refused: any[], superseded: any[]}} */
  const ev = { serverReset: [], reconciled: [], refused: [], superseded: [] };
  db.on('superseded', (/** @type {any} */ r) => ev.superseded.push(r));
  db.on('serverReset', (/** @type {any} */ r) => ev.serverReset.push(r));
  db.on('reconciled', (/** @type {any} */ r) => ev.reconciled.push(r));
  db.on('refused', (/** @type {any} */ r) => ev.refused.push(r));
  return ev;
}

test('pulls carry the lease: the replica id always, the pending floor (oldest stamp waiting) only while changes wait', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const a = await openClient({ url: server.url, name: 'a', collections: ['todos'], WebSocket: null, pollInterval: 50 });
  t.after(() => a.close());
  await a.collection('todos').put('t1', { n: 1 });
  await a.whenSynced();
  const n0 = server.pulls.length;
  await a.sync();
  const idle = server.pulls.slice(n0).filter((m) => m.get(1) === 'todos');
  assert.ok(idle.length > 0);
  for (const m of idle) {
    assert.equal(m.get(5), a.store.replica, 'key 5: the replica id');
    assert.equal(m.has(6), false, 'no key 6: nothing pending');
  }
  await a.pause();
  await a.collection('todos').update('t1', { n: 2 });
  await sleep(3);
  await a.collection('todos').put('t2', { n: 3 });
  const floor = (await stampOf(a, 'todos', 't1', 'n'))?.wall;
  assert.ok(floor && floor < /** @type {number} */ ((await stampOf(a, 'todos', 't2', 'n'))?.wall));
  const n1 = server.pulls.length;
  const r1 = server.requests.length;
  a.resume();
  await a.whenSynced();
  const first = server.pulls[n1];
  assert.equal(first.get(5), a.store.replica);
  assert.equal(first.get(6), floor, 'key 6: the wall time of the oldest change waiting');
  // Back after a while: the collection is pulled before its outbox goes out.
  const after = server.requests.slice(r1);
  assert.ok(after.indexOf(PATHS.pull) >= 0 && after.indexOf(PATHS.pull) < after.indexOf(PATHS.push), `pull before push: ${after.join(' ')}`);
  await a.sync();
  const last = server.pulls[server.pulls.length - 1];
  assert.equal(last.has(6), false, 'nothing pending after the push');
});

test('after lease_expired: a record collected while away is dropped and its edit rejected unpushed; offline edits and creations land, re-stamped', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const a = await openClient({ url: server.url, name: 'a', collections: ['todos'], WebSocket: null, pollInterval: 50 });
  t.after(() => a.close());
  const todos = a.collection('todos');
  await todos.put('x', { n: 1 });
  await todos.put('y', { n: 1 });
  await todos.put('w', { n: 1 }); // collected, nothing pending: dropped quietly
  await a.whenSynced();
  const ev = listen(a);
  // Away: edits of a record the server will collect and of one it keeps,
  // and a record created here.
  await a.pause();
  await todos.update('x', { n: 2 });
  await todos.update('y', { n: 2 });
  await todos.put('z', { n: 1 });
  await sleep(50);
  server.collect('todos', 'x');
  server.collect('todos', 'w');
  server.writeHorizon.set('todos', await horizonPast(a));
  server.leaseExpire('todos');
  await sleep(50);
  const mark = server.pushed.length;
  a.resume();
  assert.deepEqual(await a.whenSynced(), { refused: 1 }, 'the edit of the collected record counts as refused');
  await until(() => ev.reconciled.length > 0, "the reconciled event", WAIT);
  assert.deepEqual(ev.serverReset, [{ collection: 'todos', reason: 'lease_expired', message: 'the test expired the lease' }]);
  assert.deepEqual(ev.reconciled, [{ collection: 'todos', dropped: 2, rejected: 1, restamped: 2 }]);
  assert.equal(ev.refused.length, 1);
  assert.equal(ev.refused[0].id, 'x');
  assert.equal(ev.refused[0].code, 'collected');
  // Dropped locally once the writes the server acknowledged came back
  // refused collected when given back; the edit never pushed.
  assert.equal(await todos.get('x'), null);
  assert.equal(await a.store.get('todos', 'x'), undefined, 'no tombstone either');
  assert.equal(await a.store.get('todos', 'w'), undefined);
  const pushed = server.pushed.slice(mark);
  for (const id of ['x', 'w']) assert.deepEqual(pushedNs(server, mark, id), [[...REFUSED, 1]], `${id}: its acknowledged write given back, refused collected; nothing else`);
  assert.equal(server.coll('todos').byId.has('x'), false);
  // Its edit is listed as rejected.
  const rejected = await a.rejected();
  assert.equal(rejected.length, 1);
  assert.equal(rejected[0].recordId, 'x');
  assert.equal(rejected[0].code, 'collected');
  assert.equal(rejected[0].message, COLLECTED_MESSAGE);
  assert.deepEqual(rejected[0].change, { deleted: false, fields: { n: 2 }, unset: [] });
  assert.equal(a.status.rejected, 1);
  // The edit of y and the creation of z were refused collected once, re-stamped and landed.
  for (const id of ['y', 'z']) {
    assert.deepEqual(
      pushed.filter((p) => p.id === id).map((p) => [p.status, p.code]),
      [[STATUSES.refused, 'collected'], [STATUSES.applied, undefined]],
      `${id}: refused collected, then re-stamped and applied`,
    );
  }
  assert.equal(onServer(server, 'todos', 'y', 'n'), 2);
  assert.equal(onServer(server, 'todos', 'z', 'n'), 1);
  assert.deepEqual(await todos.get('y'), { id: 'y', n: 2 });
  assert.deepEqual(await todos.get('z'), { id: 'z', n: 1 });
  assert.equal(await owesReconcile(a.store, 'todos'), false);
});

test('a change refused collected outside a reconciliation has its collection reconciled, then is re-stamped once: refused collected again (a horizon ahead of every stamp), it stays rejected', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const a = await openClient({ url: server.url, name: 'a', collections: ['todos'], WebSocket: null, pollInterval: 50 });
  t.after(() => a.close());
  const todos = a.collection('todos');
  await todos.put('k', { n: 1 });
  await a.whenSynced();
  const ev = listen(a);
  // A horizon ahead of every stamp, even fresh ones.
  server.writeHorizon.set('todos', Date.now() + 3_600_000);
  const mark = server.pushed.length;
  const pulls = server.pulls.length;
  await todos.update('k', { n: 2 });
  await todos.put('new', { n: 1 });
  assert.deepEqual(await a.whenSynced(), { refused: 2 });
  assert.ok(
    server.pulls.slice(pulls).some((m) => m.get(1) === 'todos' && m.get(2).length === 0),
    'the refusal had the collection read from the beginning',
  );
  // An acknowledged record the server still has and a creation alike:
  // refused, re-stamped once after the reconciliation, refused again.
  for (const id of ['k', 'new']) assert.deepEqual(pushesOf(server, mark, id), [REFUSED, REFUSED], `${id}: refused collected, re-stamped once, refused again`);
  assert.deepEqual((await a.rejected()).map((r) => [r.recordId, r.code]).sort(), [['k', 'collected'], ['new', 'collected']]);
  assert.deepEqual(await todos.get('k'), { id: 'k', n: 1 }, 'rolled back');
  assert.equal(await todos.get('new'), null, 'rolled back');
  // whenSynced resolved as the second refusal left nothing pending, which
  // can be before the push that met it says how the reconciliation went.
  await until(() => ev.reconciled.length > 0, 'the reconciled event', WAIT);
  assert.deepEqual(ev.reconciled, [{ collection: 'todos', dropped: 0, rejected: 0, restamped: 2 }]);
  assert.equal((await outboxCounts(a.store)).pending, 0);
  await settledAfterOne(server, a, ev);
});

test('a change refused collected outside a reconciliation (no reset: an edit left pending past the write horizon) has its collection reconciled first, then is re-stamped once, as the Go client does', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const a = await openClient({ url: server.url, name: 'a', collections: ['todos'], WebSocket: null, pollInterval: 50 });
  t.after(() => a.close());
  const todos = a.collection('todos');
  await todos.put('k', { n: 1 });
  await todos.put('x', { n: 1 });
  await a.whenSynced();
  const ev = listen(a);
  // Away, but with a live lease (no reset comes: the pull before the
  // push is an ordinary one): edits of a record the server keeps and of
  // one it collects, and a creation.
  await a.pause();
  await todos.update('k', { n: 2 });
  await todos.update('x', { n: 2 });
  await todos.put('new', { n: 1 });
  await sleep(50);
  server.collect('todos', 'x');
  server.writeHorizon.set('todos', await horizonPast(a));
  const mark = server.pushed.length;
  const pulls = server.pulls.length;
  a.resume();
  assert.deepEqual(await a.whenSynced(), { refused: 1 }, 'the edit of the collected record alone is refused');
  await until(() => ev.reconciled.length > 0, 'the reconciled event', WAIT);
  assert.deepEqual(ev.serverReset, [], 'no reset came: the refusal asked for the reconciliation');
  assert.ok(
    server.pulls.slice(pulls).some((m) => m.get(1) === 'todos' && m.get(2).length === 0),
    'the collection was read from the beginning',
  );
  // Refused collected, held while the collection is reconciled, then
  // re-stamped at once (not pushed again as they were) and applied.
  for (const id of ['k', 'new']) assert.deepEqual(pushesOf(server, mark, id), [REFUSED, APPLIED], `${id}: refused collected, then re-stamped and applied`);
  assert.equal(onServer(server, 'todos', 'k', 'n'), 2);
  assert.equal(onServer(server, 'todos', 'new', 'n'), 1);
  assert.deepEqual(await todos.get('k'), { id: 'k', n: 2 });
  assert.deepEqual(await todos.get('new'), { id: 'new', n: 1 });
  // The edit of x, refused collected too, went with x: the
  // reconciliation gave back x's acknowledged write (refused collected)
  // and dropped it, never to come back.
  assert.deepEqual(pushedNs(server, mark, 'x'), [[...REFUSED, 2], [...REFUSED, 1]], 'the edit, then the acknowledged write given back');
  assert.equal(await todos.get('x'), null);
  assert.equal(await a.store.get('todos', 'x'), undefined);
  assert.equal(server.coll('todos').byId.has('x'), false);
  assert.deepEqual(
    (await a.rejected()).map((r) => [r.recordId, r.code, r.message, r.change]),
    [['x', 'collected', COLLECTED_MESSAGE, { deleted: false, fields: { n: 2 }, unset: [] }]],
  );
  assert.deepEqual(ev.refused.map((r) => [r.id, r.code]), [['x', 'collected']]);
  assert.deepEqual(ev.reconciled, [{ collection: 'todos', dropped: 1, rejected: 1, restamped: 2 }]);
  assert.equal(await owesReconcile(a.store, 'todos'), false);
  assert.equal((await outboxCounts(a.store)).pending, 0);
  await settledAfterOne(server, a, ev);
});

test('a change refused collected outside a reconciliation stays held through a reload before the reconciliation, which then writes it again at once', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const idb = freshIDB();
  const a = await openClient({ url: server.url, name: 'a', indexedDB: idb, collections: ['todos'], WebSocket: null, pollInterval: 50 });
  t.after(() => a.close()); // closed below: a second close does nothing
  a.on('error', () => {});
  const todos = a.collection('todos');
  await todos.put('k', { n: 1 });
  await a.whenSynced();
  await a.pause();
  await todos.update('k', { n: 2 });
  await sleep(50);
  server.writeHorizon.set('todos', await horizonPast(a));
  const mark = server.pushed.length;
  // Back: the pull before the push goes, the push is refused collected,
  // and the pull of the reconciliation it asks for fails.
  let pulls = 0;
  server.refusePull = () => (pulls++ > 0 ? 'internal' : null);
  a.resume();
  await until(async () => pushesOf(server, mark, 'k').length === 1 && (await owesReconcile(a.store, 'todos')), 'the refusal', WAIT);
  assert.equal((await outboxCounts(a.store)).pending, 1, 'the edit held');
  await a.close();
  server.refusePull = () => null;
  const again = await openClient({ url: server.url, name: 'a', indexedDB: idb, collections: ['todos'], WebSocket: null, pollInterval: 50 });
  t.after(() => again.close());
  again.on('error', () => {});
  assert.deepEqual(await again.whenSynced(), { refused: 0 });
  assert.deepEqual(pushesOf(server, mark, 'k'), [REFUSED, APPLIED], 'refused collected once, then re-stamped after the reconciliation, not pushed as it was again');
  assert.equal(onServer(server, 'todos', 'k', 'n'), 2);
  assert.deepEqual(await again.collection('todos').get('k'), { id: 'k', n: 2 });
  assert.deepEqual(await again.rejected(), []);
  assert.equal(await owesReconcile(again.store, 'todos'), false);
});

/**
 * A live client a of a fake server whose pushes the test holds back
 * (hold(true): refused at the network over HTTP, unavailable over the
 * live session) while its session stays open.
 * @param {import('node:test').TestContext} t
 */
async function heldPushes(t) {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  let held = false;
  const a = await openClient({
    url: server.url,
    name: 'a',
    collections: ['todos'],
    fetch: (input, init) => (held && String(input).endsWith(PATHS.push) ? Promise.reject(new TypeError('push blocked by the test')) : fetch(input, init)),
  });
  t.after(() => a.close());
  a.on('error', () => {});
  server.failPush = () => held;
  return { server, a, hold: (/** @type {boolean} */ on) => void (held = on) };
}

test('live, a change refused collected outside a reconciliation ends the sub, reconciles the collection, subscribes again from where its pull ended, and lands re-stamped', async (t) => {
  const { server, a, hold } = await heldPushes(t);
  const todos = a.collection('todos');
  await todos.put('k', { n: 1 });
  await a.whenSynced();
  await until(() => [...server.sockets].some((ws) => ws.subs?.has('todos')), 'subscribed', WAIT);
  const ev = listen(a);
  // An edit that cannot be pushed yet, while the session stays live;
  // then a write horizon past it (no reset: the lease is live).
  hold(true);
  await todos.update('k', { n: 2 });
  await sleep(50);
  server.writeHorizon.set('todos', await horizonPast(a));
  const mark = server.pushed.length;
  const pulls = server.pulls.length;
  const subs = server.received.filter((m) => m.get(0) === 'sub').length;
  hold(false);
  await a.sync(); // the push again, over the live session
  await until(() => onServer(server, 'todos', 'k', 'n') === 2, 'the edit to land', WAIT);
  assert.deepEqual(pushesOf(server, mark, 'k'), [REFUSED, APPLIED], 'refused collected, then re-stamped after the reconciliation and applied');
  assert.ok(
    server.pulls.slice(pulls).some((m) => m.get(1) === 'todos' && m.get(2).length === 0),
    'the collection was read from the beginning',
  );
  assert.ok(server.received.some((m) => m.get(0) === 'unsub' && m.get(1) === 'todos'), 'its sub ended');
  await until(() => server.received.filter((m) => m.get(0) === 'sub').length > subs && [...server.sockets].some((ws) => ws.subs?.has('todos')), 'subscribed again', WAIT);
  assert.deepEqual(ev.serverReset, []);
  await until(() => ev.reconciled.length > 0, 'the reconciled event', WAIT);
  assert.deepEqual(ev.reconciled, [{ collection: 'todos', dropped: 0, rejected: 0, restamped: 1 }]);
  assert.deepEqual(await a.rejected(), []);
  assert.deepEqual(await todos.get('k'), { id: 'k', n: 2 });
  assert.equal(await owesReconcile(a.store, 'todos'), false);
  // Live goes on: another's write comes over the sub.
  const b = await openClient({ url: server.url, name: 'b', collections: ['todos'], WebSocket: null, pollInterval: 50 });
  t.after(() => b.close());
  await b.collection('todos').put('w', { n: 1 });
  await b.whenSynced();
  await until(async () => (await todos.get('w')) !== null, "b's write to reach a", WAIT);
});

test('a live reset lease_expired reconciles too; subs carry the lease', async (t) => {
  const { server, a, hold } = await heldPushes(t);
  const todos = a.collection('todos');
  await todos.put('x', { n: 1 });
  await todos.put('y', { n: 1 });
  await a.whenSynced();
  await until(() => server.received.some((m) => m.get(0) === 'sub'), 'a sub', WAIT);
  const sub0 = server.received.find((m) => m.get(0) === 'sub');
  assert.equal(sub0.get(5), a.store.replica);
  assert.equal(sub0.has(6), false, 'nothing pending');
  const ev = listen(a);
  // Edits that cannot be pushed yet, while the session stays live.
  hold(true);
  await todos.update('x', { n: 2 });
  await todos.update('y', { n: 2 });
  const floor = (await stampOf(a, 'todos', 'x', 'n'))?.wall;
  const subs = server.received.filter((m) => m.get(0) === 'sub').length;
  server.resync('todos');
  await until(() => server.received.filter((m) => m.get(0) === 'sub').length > subs, 'a sub again', WAIT);
  const sub1 = server.received.filter((m) => m.get(0) === 'sub')[subs];
  assert.equal(sub1.get(5), a.store.replica);
  assert.equal(sub1.get(6), floor, 'the pending floor');
  await sleep(50);
  server.collect('todos', 'x');
  server.writeHorizon.set('todos', await horizonPast(a));
  await sleep(50);
  const mark = server.pushed.length;
  hold(false);
  server.leaseExpire('todos');
  await until(() => ev.reconciled.length > 0, 'the reconciliation', WAIT);
  assert.deepEqual(ev.serverReset, [{ collection: 'todos', reason: 'lease_expired', message: 'the test expired the lease' }]);
  assert.deepEqual(ev.reconciled, [{ collection: 'todos', dropped: 1, rejected: 1, restamped: 1 }]);
  assert.equal(await todos.get('x'), null);
  assert.deepEqual(pushedNs(server, mark, 'x'), [[...REFUSED, 1]], 'the acknowledged write given back, refused collected; the edit never');
  assert.equal(onServer(server, 'todos', 'y', 'n'), 2);
  assert.deepEqual((await a.rejected()).map((r) => [r.recordId, r.code]), [['x', 'collected']]);
  // Subscribed again, live goes on.
  await until(() => server.sockets.size > 0 && [...server.sockets].some((ws) => ws.subs?.has('todos')), 'subscribed again', WAIT);
  await todos.put('v', { n: 1 });
  await until(() => onServer(server, 'todos', 'v', 'n') === 1, 'a later write to land', WAIT);
});

/**
 * Two clients of one fake server, polling: a (who goes away) and b.
 * @param {import('node:test').TestContext} t
 */
async function pair(t) {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const open = async (/** @type {string} */ name) => {
    const db = await openClient({ url: server.url, name, collections: ['todos'], WebSocket: null, pollInterval: 50 });
    t.after(() => db.close());
    return db;
  };
  return { server, a: await open('a'), b: await open('b') };
}

/**
 * Asserts that a is settled after one reconciliation: its next sync
 * pushes nothing and reconciles nothing again.
 * @param {FakeServer} server
 * @param {any} a
 * @param {ReturnType<typeof listen>} ev
 */
async function settledAfterOne(server, a, ev) {
  const after = server.pushed.length;
  await a.sync();
  assert.equal(server.pushed.length, after, 'settled: the next sync pushes nothing');
  assert.equal(ev.reconciled.length, 1, 'settled: nothing is reconciled again');
}

/**
 * The record ids a pushed after mark, with how each push was answered.
 * @param {FakeServer} server
 * @param {number} mark
 * @param {string} id
 */
function pushesOf(server, mark, id) {
  return server.pushed.slice(mark).filter((p) => p.id === id).map((p) => [p.status, p.code]);
}

/**
 * pushesOf with the value of field n each push carried (undefined: none).
 * @param {FakeServer} server
 * @param {number} mark
 * @param {string} id
 */
function pushedNs(server, mark, id) {
  return server.pushed
    .slice(mark)
    .filter((p) => p.id === id)
    .map((p) => {
      const v = p.record?.fields.get('n')?.value;
      return [p.status, p.code, v ? decode(v) : undefined];
    });
}

const REFUSED = [STATUSES.refused, 'collected'];
const APPLIED = [STATUSES.applied, undefined];

/**
 * Waits until a stamp `later` takes is past every stamp `earlier` has
 * taken: each client corrects its clock by an offset measured over a round
 * trip, so two clients of one process may disagree by a few milliseconds
 * (more on a loaded machine), and a fixed sleep does not order their writes.
 * @param {any} later
 * @param {any} earlier
 */
async function clockPast(later, earlier) {
  const wall = earlier.store.now();
  await until(() => later.store.now() > wall, 'the later clock past the earlier one', WAIT);
}

/**
 * Brings a (paused) back after the server collected past all its stamps
 * and expired its lease; waits for its push and the reconciliation.
 * Returns the mark of server.pushed before a's push.
 * @param {FakeServer} server
 * @param {Awaited<ReturnType<typeof openClient>>} a
 * @param {ReturnType<typeof listen>} ev
 */
async function comeBackCollected(server, a, ev) {
  server.writeHorizon.set('todos', await horizonPast(a));
  server.leaseExpire('todos', a.store.replica);
  const mark = server.pushed.length;
  a.resume();
  assert.deepEqual(await a.whenSynced(), { refused: 0 });
  await until(() => ev.reconciled.length > 0, 'the reconciliation', WAIT);
  return mark;
}

test('after lease_expired: which changes may be re-stamped survives a reload between the reconciliation and the push', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const idb = freshIDB();
  const a = await openClient({ url: server.url, name: 'a', indexedDB: idb, collections: ['todos'], WebSocket: null, pollInterval: 50 });
  a.on('error', () => {});
  const todos = a.collection('todos');
  await todos.put('x', { n: 1 });
  await todos.put('y', { n: 1 });
  await a.whenSynced();
  // Away: an edit of a record the server will collect and of one it keeps.
  await a.pause();
  await todos.update('x', { n: 2 });
  await todos.update('y', { n: 2 });
  await sleep(50);
  server.collect('todos', 'x');
  server.writeHorizon.set('todos', await horizonPast(a));
  server.leaseExpire('todos');
  await sleep(50);
  const mark = server.pushed.length;
  // Back: the reconciliation runs (its give-back of x goes), the push
  // after it cannot go out.
  server.failPush = (chs) => chs.some((ch) => ch.record.id === 'y');
  a.resume();
  await until(async () => (await a.rejected()).length === 1 && !(await owesReconcile(a.store, 'todos')), 'the reconciliation', WAIT);
  assert.equal(await a.store.get('todos', 'x'), undefined, 'x dropped');
  assert.equal((await outboxCounts(a.store)).pending, 1, 'the edit of y waits');
  assert.equal((await a.store.getMeta('restamp:todos'))?.length, 1, 'noted in IndexedDB: the edit of y may be re-stamped once');
  await a.close();
  server.failPush = () => false;
  // Reloaded: the push goes out; the edit of y is re-stamped as it would have been.
  const again = await openClient({ url: server.url, name: 'a', indexedDB: idb, collections: ['todos'], WebSocket: null, pollInterval: 50 });
  t.after(() => again.close());
  const ev = listen(again);
  assert.deepEqual(await again.whenSynced(), { refused: 0 });
  assert.deepEqual(pushesOf(server, mark, 'y'), [REFUSED, APPLIED], 'refused collected, then re-stamped and applied');
  assert.deepEqual(pushedNs(server, mark, 'x'), [[...REFUSED, 1]], 'of x, only its acknowledged write, given back and refused collected');
  assert.deepEqual(ev.refused, []);
  assert.equal(onServer(server, 'todos', 'y', 'n'), 2);
  assert.deepEqual((await again.rejected()).map((r) => [r.recordId, r.code]), [['x', 'collected']], 'only the edit of the collected record is rejected');
  assert.deepEqual(await again.collection('todos').get('y'), { id: 'y', n: 2 });
  // Settled: nothing is left to re-stamp.
  assert.deepEqual(await again.store.getMeta('restamp:todos'), undefined);
});

test('after lease_expired: which changes may be re-stamped survives a push that ends without them (their pull first failed after a reload)', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const idb = freshIDB();
  const a = await openClient({ url: server.url, name: 'a', indexedDB: idb, collections: ['todos'], WebSocket: null, pollInterval: 50 });
  a.on('error', () => {});
  const todos = a.collection('todos');
  await todos.put('y', { n: 1 });
  await a.whenSynced();
  // Away: an edit of a record the server keeps.
  await a.pause();
  await todos.update('y', { n: 2 });
  await sleep(50);
  server.writeHorizon.set('todos', await horizonPast(a));
  server.leaseExpire('todos');
  const mark = server.pushed.length;
  // Back: the reconciliation runs, its push cannot go out.
  server.failPush = () => true;
  a.resume();
  await until(async () => !(await owesReconcile(a.store, 'todos')) && (await a.store.getMeta('restamp:todos'))?.length === 1, 'the reconciliation', WAIT);
  await a.close();
  server.failPush = () => false;
  // Reloaded: the pull before the push fails once, so the first push
  // ends with the edit of y still waiting; the next one pushes it.
  let pulls = 0;
  server.refusePull = () => (pulls++ === 0 ? 'internal' : null);
  const again = await openClient({ url: server.url, name: 'a', indexedDB: idb, collections: ['todos'], WebSocket: null, pollInterval: 50 });
  t.after(() => again.close());
  again.on('error', () => {});
  assert.deepEqual(await again.whenSynced(), { refused: 0 });
  assert.ok(pulls >= 2, 'the pull before the push failed once, then went');
  assert.deepEqual(pushesOf(server, mark, 'y'), [REFUSED, APPLIED], 'refused collected, then re-stamped and applied');
  assert.equal(onServer(server, 'todos', 'y', 'n'), 2);
  assert.deepEqual(await again.rejected(), []);
  assert.deepEqual(await again.collection('todos').get('y'), { id: 'y', n: 2 });
  assert.equal(await again.store.getMeta('restamp:todos'), undefined, 'settled: nothing is left to re-stamp');
});

test('after lease_expired: a field whose unset the server collected is gone here too (the delivered record replaces the one held, pending edits stay)', async (t) => {
  const { server, a, b } = await pair(t);
  await b.collection('todos').put('x', { a: 1, b: 1 });
  await b.whenSynced();
  await a.sync();
  assert.deepEqual(await a.collection('todos').get('x'), { id: 'x', a: 1, b: 1 });
  const ev = listen(a);
  await a.pause();
  await a.collection('todos').update('x', { c: 1 }); // pending through the reconciliation
  await b.collection('todos').update('x', { b: undefined });
  await b.whenSynced();
  server.purge('todos', 'x'); // the unset of b is collected: x is {a} on the server
  assert.deepEqual([...server.coll('todos').byId.get('x')?.record.fields.keys()], ['a']);
  // Collected under a write horizon past the unset (b given back is refused).
  server.writeHorizon.set('todos', await horizonPast(a));
  server.leaseExpire('todos', a.store.replica);
  // The hello of a's new sync loop measures its clock offset again, and
  // finds it lower than the one its clock passed the horizon with (a
  // loaded machine did so by chance: an answer late by hundreds of ms).
  server.opts.timeOffset = -500;
  a.resume();
  await until(() => ev.reconciled.length > 0, 'the reconciliation', WAIT);
  assert.deepEqual(await a.whenSynced(), { refused: 0 }, 'the edit re-stamped after the horizon, not refused again');
  assert.deepEqual(await a.collection('todos').get('x'), { id: 'x', a: 1, c: 1 }, 'the server record and the pending edit, not the stale b');
  assert.equal(onServer(server, 'todos', 'x', 'c'), 1);
  await b.sync();
  assert.deepEqual(await b.collection('todos').get('x'), await a.collection('todos').get('x'), 'converged');
});

test('after lease_expired: a record deleted and re-created whose delete stamp the server collected holds only its new fields here too', async (t) => {
  const { server, a, b } = await pair(t);
  await b.collection('todos').put('x', { a: 1, b: 1 });
  await b.whenSynced();
  await a.sync();
  const ev = listen(a);
  await a.pause();
  await b.collection('todos').delete('x');
  await sleep(3);
  await b.collection('todos').update('x', { c: 1 });
  await b.whenSynced();
  server.purge('todos', 'x'); // the delete stamp is cleared: x is {c}
  // Collected under a write horizon past the delete (a and b given back are refused).
  server.writeHorizon.set('todos', await horizonPast(a));
  server.leaseExpire('todos', a.store.replica);
  a.resume();
  await until(() => ev.reconciled.length > 0, 'the reconciliation', WAIT);
  assert.deepEqual(await a.collection('todos').get('x'), { id: 'x', c: 1 });
  assert.deepEqual(ev.reconciled, [{ collection: 'todos', dropped: 0, rejected: 0, restamped: 0 }]);
});

test('refused collected: an offline edit of a record deleted later on the server is not re-stamped (it would bring the record back): settled as superseded', async (t) => {
  const { server, a, b } = await pair(t);
  await b.collection('todos').put('x', { a: 1 });
  await b.whenSynced();
  await a.sync();
  const ev = listen(a);
  await a.pause();
  await a.collection('todos').update('x', { b: 1 });
  await clockPast(b, a);
  await b.collection('todos').delete('x'); // later than a's edit: it hides it
  await b.whenSynced();
  const mark = await comeBackCollected(server, a, ev);
  assert.deepEqual(pushesOf(server, mark, 'x'), [REFUSED], 'refused once, not pushed again');
  assert.equal(server.coll('todos').byId.get('x')?.record.fields.size, 0, 'x stays deleted on the server');
  assert.equal(await a.collection('todos').get('x'), null);
  assert.deepEqual(await a.rejected(), []);
  assert.deepEqual(ev.refused, []);
  assert.deepEqual(ev.superseded, [{ collection: 'todos', id: 'x', lost: ['b'], status: 'superseded' }]);
  assert.deepEqual(ev.reconciled, [{ collection: 'todos', dropped: 0, rejected: 0, restamped: 0 }]);
  assert.equal((await outboxCounts(a.store)).pending, 0);
});

test('refused collected: an offline edit followed by an offline delete of the record is not re-stamped; the delete is', async (t) => {
  const { server, a, b } = await pair(t);
  await b.collection('todos').put('x', { a: 1 });
  await b.whenSynced();
  await a.sync();
  const ev = listen(a);
  await a.pause();
  await a.collection('todos').update('x', { b: 1 });
  await sleep(3);
  await a.collection('todos').delete('x');
  const mark = await comeBackCollected(server, a, ev);
  assert.deepEqual(pushesOf(server, mark, 'x'), [REFUSED, REFUSED, APPLIED], 'the edit is settled, the delete re-stamped');
  assert.equal(server.coll('todos').byId.get('x')?.record.fields.size, 0, 'x deleted on the server');
  assert.equal(await a.collection('todos').get('x'), null);
  assert.deepEqual(ev.superseded, [{ collection: 'todos', id: 'x', lost: ['b'], status: 'superseded' }]);
  assert.deepEqual(ev.reconciled, [{ collection: 'todos', dropped: 0, rejected: 0, restamped: 1 }]);
});

test('refused collected: a field another replica wrote later is not overwritten by the re-stamp; the other fields of the edit are', async (t) => {
  const { server, a, b } = await pair(t);
  await b.collection('todos').put('x', { a: 1 });
  await b.whenSynced();
  await a.sync();
  const ev = listen(a);
  await a.pause();
  await a.collection('todos').update('x', { a: 2, d: 1 });
  await clockPast(b, a);
  await b.collection('todos').update('x', { a: 3 }); // newer than a's a
  await b.whenSynced();
  const mark = await comeBackCollected(server, a, ev);
  assert.deepEqual(pushesOf(server, mark, 'x'), [REFUSED, APPLIED]);
  assert.equal(onServer(server, 'todos', 'x', 'a'), 3, 'the newer value stays');
  assert.equal(onServer(server, 'todos', 'x', 'd'), 1, 'the rest of the edit lands');
  assert.deepEqual(await a.collection('todos').get('x'), { id: 'x', a: 3, d: 1 });
  assert.deepEqual(ev.superseded, [{ collection: 'todos', id: 'x', lost: ['a'], status: 'applied' }]);
  assert.deepEqual(ev.reconciled, [{ collection: 'todos', dropped: 0, rejected: 0, restamped: 1 }]);
});

test('refused collected: an offline delete of a record another replica wrote to later becomes unsets of the fields it hid', async (t) => {
  const { server, a, b } = await pair(t);
  await b.collection('todos').put('x', { a: 1, b: 1 });
  await b.whenSynced();
  await a.sync();
  const ev = listen(a);
  await a.pause();
  await a.collection('todos').delete('x');
  await clockPast(b, a);
  await b.collection('todos').update('x', { c: 1 }); // after a's delete: it stays
  await b.whenSynced();
  const mark = await comeBackCollected(server, a, ev);
  assert.deepEqual(pushesOf(server, mark, 'x'), [REFUSED, APPLIED]);
  assert.deepEqual(await a.collection('todos').get('x'), { id: 'x', c: 1 });
  await b.sync();
  assert.deepEqual(await b.collection('todos').get('x'), { id: 'x', c: 1 }, 'the newer field is not hidden');
  assert.equal(onServer(server, 'todos', 'x', 'a'), undefined);
  assert.equal(onServer(server, 'todos', 'x', 'b'), undefined);
  assert.deepEqual(ev.reconciled, [{ collection: 'todos', dropped: 0, rejected: 0, restamped: 1 }]);
});

/**
 * A client of server whose pulls fail (a network error) while
 * blocked.pull is true: it pushes, and never pulls; its pushes fail while
 * blocked.push is.
 * @param {import('node:test').TestContext} t
 * @param {FakeServer} server
 * @param {{pull: boolean, push?: boolean}} blocked
 * @param {(input: any) => Promise<void>} [beforePull] runs before each pull let through
 */
async function pushOnly(t, server, blocked, beforePull = async () => {}) {
  const a = await openClient({
    url: server.url,
    name: 'a',
    collections: ['todos'],
    WebSocket: null,
    pollInterval: 50,
    fetch: async (input, init) => {
      if (String(input).endsWith(PATHS.pull)) {
        if (blocked.pull) throw new TypeError('pull blocked by the test');
        await beforePull(input);
      }
      if (blocked.push && String(input).endsWith(PATHS.push)) throw new TypeError('push blocked by the test');
      return fetch(input, init);
    },
  });
  t.after(() => a.close());
  a.on('error', () => {});
  return a;
}

test('a first pull of a collection pushed to and never pulled reconciles: a record deleted and collected meanwhile is dropped, an edit of it made meanwhile rejected unpushed', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  /** @type {{pull: boolean, push?: boolean}} */
  const blocked = { pull: true };
  /** @type {(() => Promise<void>)|null} local writes made as the first pull goes out */
  let during = null;
  const a = await pushOnly(t, server, blocked, async () => {
    const w = during;
    during = null;
    await w?.();
  });
  const todos = a.collection('todos');
  await todos.put('x', { n: 1 });
  await todos.put('y', { n: 1 });
  // Pushed and acknowledged; never pulled: a holds no lease.
  await until(async () => server.coll('todos').byId.has('x') && server.coll('todos').byId.has('y') && (await outboxCounts(a.store)).pending === 0, 'x and y pushed', WAIT);
  assert.equal(server.pulls.filter((m) => m.get(5) === a.store.replica).length, 0, 'a never pulled');
  assert.ok((await a.store.get('todos', 'x'))?.b === undefined, "x holds the server's state");
  await a.pause();
  // b deletes x; the server collects it past a, which has no lease.
  const b = await openClient({ url: server.url, name: 'b', collections: ['todos'], WebSocket: null, pollInterval: 50 });
  t.after(() => b.close());
  await b.sync();
  await b.collection('todos').delete('x');
  await b.whenSynced();
  server.purge('todos', 'x');
  assert.equal(server.coll('todos').byId.has('x'), false, 'x and its tombstone are gone');
  // Collected under a write horizon past the stamp a wrote x with; the
  // edits below are well after it (a hello may move a's clock by its
  // offset to the server's).
  const horizon = /** @type {any} */ (await stampOf(a, 'todos', 'x', 'n')).wall + 1;
  server.writeHorizon.set('todos', horizon);
  await until(() => a.store.now() > horizon + 100, "a's clock well past the horizon", WAIT);
  const ev = listen(a);
  const mark = server.pushed.length;
  // Edits of x and y made while the first pull is under way; the push
  // after it waits (the give-back of what the server acknowledged,
  // stamped before the horizon, goes).
  during = async () => {
    server.failPush = (chs) => chs.some((ch) => maxStamp(ch.record).wall >= horizon);
    await todos.update('x', { n: 2 });
    await todos.update('y', { n: 2 });
  };
  blocked.pull = false;
  a.resume();
  await until(async () => (await a.store.get('todos', 'x')) === undefined, 'x dropped', WAIT);
  assert.equal(during, null, 'the edits were made during the pull');
  assert.equal((await outboxCounts(a.store)).pending, 1, 'the edit of y waits');
  assert.equal(await a.store.getMeta('restamp:todos'), undefined, 'steps 1 and 2 only: nothing noted for a re-stamp');
  server.failPush = () => false;
  assert.deepEqual(await a.whenSynced(), { refused: 1 }, 'the edit of the collected record counts as refused');
  assert.equal(await todos.get('x'), null, 'x is gone here too');
  await until(() => ev.reconciled.length > 0, 'the reconciled event', WAIT);
  assert.deepEqual(ev.serverReset, [], 'no reset: a read from the beginning misses nothing');
  assert.deepEqual(ev.reconciled, [{ collection: 'todos', dropped: 1, rejected: 1, restamped: 0 }]);
  assert.deepEqual(await todos.get('y'), { id: 'y', n: 2 }, 'y stays, and its edit lands');
  assert.equal(onServer(server, 'todos', 'y', 'n'), 2);
  assert.deepEqual(ev.refused.map((r) => [r.id, r.code]), [['x', 'collected']]);
  assert.deepEqual((await a.rejected()).map((r) => [r.recordId, r.code, r.change]), [['x', 'collected', { deleted: false, fields: { n: 2 }, unset: [] }]]);
  // Before x was dropped, its acknowledged stamp was given back (refused
  // collected); the edit never reached the server.
  assert.deepEqual(pushedNs(server, mark, 'x'), [[...REFUSED, 1]], 'the acknowledged write given back alone, refused collected');
  assert.equal(server.coll('todos').byId.has('x'), false);
  // Settled: later pulls are ordinary ones.
  await a.sync();
  assert.equal(ev.reconciled.length, 1);
  assert.deepEqual(await b.collection('todos').get('x'), null);
});

test('a never-pulled collection pushes before its first pull; an offline edit of a record collected meanwhile is refused collected, and the reconciliation that refusal asks for drops the record and rejects the edit, not re-stamped', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const blocked = { pull: true };
  const a = await pushOnly(t, server, blocked);
  const todos = a.collection('todos');
  await todos.put('x', { n: 1 });
  await until(async () => server.coll('todos').byId.has('x') && (await outboxCounts(a.store)).pending === 0, 'x pushed', WAIT);
  await a.pause();
  await todos.update('x', { n: 2 }); // before the delete
  const b = await openClient({ url: server.url, name: 'b', collections: ['todos'], WebSocket: null, pollInterval: 50 });
  t.after(() => b.close());
  await b.sync();
  await clockPast(b, a);
  await b.collection('todos').delete('x');
  await b.whenSynced();
  server.purge('todos', 'x');
  server.writeHorizon.set('todos', await horizonPast(a));
  // b's polls would mix with a's requests, whose order is checked below.
  await b.close();
  const ev = listen(a);
  const mark = server.pushed.length;
  const requests = server.requests.length;
  blocked.pull = false;
  a.resume();
  assert.deepEqual(await a.whenSynced(), { refused: 1 });
  const after = server.requests.slice(requests);
  assert.ok(after.indexOf(PATHS.push) >= 0 && after.indexOf(PATHS.push) < after.indexOf(PATHS.pull), `push before pull: ${after.join(' ')}`);
  assert.deepEqual(pushedNs(server, mark, 'x'), [[...REFUSED, 2], [...REFUSED, 1]], 'the edit refused collected once, not re-stamped; then the acknowledged write given back by the reconciliation, refused collected');
  assert.equal(await todos.get('x'), null, 'x is gone here too');
  assert.equal(await a.store.get('todos', 'x'), undefined);
  await until(() => ev.reconciled.length > 0, 'the reconciled event', WAIT);
  // The edit, held while the collection was reconciled, went with x.
  assert.deepEqual(ev.reconciled, [{ collection: 'todos', dropped: 1, rejected: 1, restamped: 0 }]);
  assert.deepEqual((await a.rejected()).map((r) => [r.recordId, r.code, r.message]), [['x', 'collected', COLLECTED_MESSAGE]]);
  assert.equal(server.coll('todos').byId.has('x'), false);
});

for (const restored of [false, true]) {
  test(`a first pull of a collection pushed to and never pulled gives back what the store lost (${restored ? 'restored from a backup' : 'wiped'}): no reset comes for the empty cursor, and the record stays and is on the server again`, async (t) => {
    const server = await new FakeServer().start();
    t.after(() => server.stop());
    const blocked = { pull: true };
    const a = await pushOnly(t, server, blocked);
    const todos = a.collection('todos');
    await todos.put('x', { n: 1 });
    await until(async () => server.coll('todos').byId.has('x') && (await outboxCounts(a.store)).pending === 0, 'x pushed', WAIT);
    assert.equal((await cursorOf(a.store, 'todos')).length, 0, 'never pulled: the cursor is the beginning');
    await a.pause();
    // The store goes back to before x: an empty cursor is of every
    // history, so nothing resets a's.
    server.wipe();
    if (restored) {
      const b = await openClient({ url: server.url, name: 'b', collections: ['todos'], WebSocket: null, pollInterval: 50 });
      t.after(() => b.close());
      await b.collection('todos').put('y', { n: 2 });
      await b.whenSynced();
      await b.close();
    }
    const ev = listen(a);
    const mark = server.pushed.length;
    blocked.pull = false;
    a.resume();
    await a.sync();
    assert.deepEqual(await todos.get('x'), { id: 'x', n: 1 }, 'x stays here');
    assert.equal(onServer(server, 'todos', 'x', 'n'), 1, 'x is on the server again');
    assert.deepEqual(pushedNs(server, mark, 'x'), [[STATUSES.applied, undefined, 1]], 'given back once');
    assert.deepEqual(await a.rejected(), []);
    assert.deepEqual(ev.serverReset, []);
    assert.ok(ev.reconciled.every((r) => r.dropped === 0 && r.rejected === 0), `nothing dropped: ${JSON.stringify(ev.reconciled)}`);
    await a.sync();
    assert.deepEqual((await todos.list()).map((r) => r.id).sort(), restored ? ['x', 'y'] : ['x']);
    assert.deepEqual([...server.coll('todos').byId.keys()].sort(), restored ? ['x', 'y'] : ['x']);
  });
}

test('a first pull gives back the fields a store restored from a backup lacks: the delivered record replaces the one held, and the field written after the backup joins it again, here and on the server', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const blocked = { pull: true };
  const a = await pushOnly(t, server, blocked);
  const todos = a.collection('todos');
  await todos.put('x', { n: 1 });
  await until(async () => server.coll('todos').byId.has('x') && (await outboxCounts(a.store)).pending === 0, 'x pushed', WAIT);
  const backup = cloneRecord(/** @type {any} */ (server.coll('todos').byId.get('x')).record);
  await todos.update('x', { m: 2 });
  await until(async () => onServer(server, 'todos', 'x', 'm') === 2 && (await outboxCounts(a.store)).pending === 0, 'the edit pushed', WAIT);
  await a.pause();
  // The store goes back to the backup: x without m.
  server.wipe();
  server.apply([{ collection: 'todos', record: backup }], /** @type {string} */ (a.store.prefix));
  assert.equal(onServer(server, 'todos', 'x', 'm'), undefined);
  const mark = server.pushed.length;
  blocked.pull = false;
  a.resume();
  await a.sync();
  assert.deepEqual(await todos.get('x'), { id: 'x', n: 1, m: 2 }, 'm stays here');
  assert.equal(onServer(server, 'todos', 'x', 'm'), 2, 'm is on the server again');
  assert.deepEqual(pushedNs(server, mark, 'x'), [[STATUSES.applied, undefined, undefined]], 'm given back alone');
  assert.equal(await a.store.getMeta('giveback:todos'), undefined, 'nothing left to give back');
  await a.sync();
  assert.deepEqual(await todos.get('x'), { id: 'x', n: 1, m: 2 });
});

test('a first pull keeps of a record the store lost what the server takes back: a field older than the write horizon comes back refused collected and is gone here too', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const blocked = { pull: true };
  const a = await pushOnly(t, server, blocked);
  const todos = a.collection('todos');
  await todos.put('x', { n: 1 });
  await until(async () => server.coll('todos').byId.has('x') && (await outboxCounts(a.store)).pending === 0, 'x pushed', WAIT);
  const horizon = await horizonPast(a);
  await todos.update('x', { m: 2 });
  await until(async () => onServer(server, 'todos', 'x', 'm') === 2 && (await outboxCounts(a.store)).pending === 0, 'the edit pushed', WAIT);
  await a.pause();
  // The store goes back to before x, and its write horizon is past n.
  server.wipe();
  server.writeHorizon.set('todos', horizon);
  const mark = server.pushed.length;
  blocked.pull = false;
  a.resume();
  await a.sync();
  assert.deepEqual(pushedNs(server, mark, 'x'), [[...REFUSED, 1], [STATUSES.applied, undefined, undefined]], 'n refused collected, m taken back');
  assert.deepEqual(await todos.get('x'), { id: 'x', m: 2 }, 'x stays with what the server took back');
  assert.equal(onServer(server, 'todos', 'x', 'm'), 2);
  assert.equal(onServer(server, 'todos', 'x', 'n'), undefined);
  assert.deepEqual(await a.rejected(), []);
  await a.sync();
  assert.deepEqual(await todos.get('x'), { id: 'x', m: 2 });
});

test('a first pull whose give-back fails drops nothing; the next pull gives back again, and the collected record is dropped then', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const blocked = { pull: true };
  const a = await pushOnly(t, server, blocked);
  const todos = a.collection('todos');
  await todos.put('x', { n: 1 });
  await todos.put('y', { n: 1 });
  await until(async () => server.coll('todos').byId.has('y') && (await outboxCounts(a.store)).pending === 0, 'x and y pushed', WAIT);
  await a.pause();
  const b = await openClient({ url: server.url, name: 'b', collections: ['todos'], WebSocket: null, pollInterval: 50 });
  t.after(() => b.close());
  await b.sync();
  await b.collection('todos').delete('x');
  await b.whenSynced();
  await b.close();
  server.purge('todos', 'x');
  server.writeHorizon.set('todos', await horizonPast(a));
  const mark = server.pushed.length;
  const requests = server.requests.length;
  server.failPush = () => true;
  blocked.pull = false;
  a.resume();
  await until(async () => server.requests.slice(requests).includes(PATHS.push) && (await a.store.getMeta('reconcile:todos')) === true, 'a failed give-back, the reconciliation owed', WAIT);
  assert.deepEqual((await todos.list()).map((r) => r.id).sort(), ['x', 'y'], 'nothing dropped while the give-back fails');
  assert.deepEqual(await a.rejected(), []);
  assert.deepEqual(pushedNs(server, mark, 'x'), []);
  server.failPush = () => false;
  await until(async () => (await a.store.get('todos', 'x')) === undefined, 'x dropped', WAIT);
  assert.deepEqual(pushedNs(server, mark, 'x'), [[...REFUSED, 1]], 'given back, refused collected');
  assert.deepEqual((await todos.list()).map((r) => r.id), ['y']);
  assert.equal(await a.store.getMeta('reconcile:todos'), undefined);
});

test('a first sync after offline writes reconciles quietly: nothing dropped, no reconciled event', async (t) => {
  const { server, a, b } = await pair(t);
  // Paused before b writes: a's polls read nothing but the empty log, whose
  // cursor is the empty one.
  await a.pause();
  await b.collection('todos').put('s', { n: 1 });
  await b.whenSynced();
  assert.equal((await cursorOf(a.store, 'todos')).length, 0);
  const ev = listen(a);
  await a.collection('todos').put('l1', { n: 1 });
  await a.collection('todos').put('l2', { n: 2 });
  // Only records created here, never acknowledged: a first pull is an
  // ordinary one.
  assert.equal(await firstPullReconciles(a.store, 'todos'), false);
  /** @type {boolean[]} */
  const asked = [];
  // What each pull's firstPullReconciles answered: its transaction's result.
  const tx = a.store.tx.bind(a.store);
  a.store.tx = async (/** @type {Parameters<typeof tx>} */ ...args) => {
    const v = await tx(...args);
    if (args[2] === 'first pull of todos') asked.push(/** @type {any} */ (v));
    return v;
  };
  const pulls = server.pulls.length;
  a.resume();
  assert.deepEqual(await a.whenSynced(), { refused: 0 });
  await a.sync();
  assert.ok(server.pulls.length > pulls);
  assert.equal(asked[0], true, 'pushed first, then pulled: the first pull was a reconciliation');
  assert.ok(asked.slice(1).every((v) => !v), 'and the only one');
  assert.deepEqual(ev.reconciled, []);
  assert.deepEqual(ev.refused, []);
  assert.deepEqual(ev.serverReset, []);
  assert.deepEqual((await a.collection('todos').list()).map((r) => r.id).sort(), ['l1', 'l2', 's']);
  assert.deepEqual([...server.coll('todos').byId.keys()].sort(), ['l1', 'l2', 's']);
  assert.equal(await firstPullReconciles(a.store, 'todos'), false, 'pulled: a cursor is held');
});

test("a reset's pull from the beginning is not a reconciliation: records the server lost and would not take back (bad_seal) stay", async (t) => {
  const { server, a, b } = await pair(t);
  for (const id of ['r1', 'r2', 'r3']) await b.collection('todos').put(id, { n: 1 });
  await b.whenSynced();
  await a.sync();
  assert.equal((await a.collection('todos').list()).length, 3);
  await b.close();
  const ev = listen(a);
  /** @type {any[]} */
  const errors = [];
  a.on('error', (e) => errors.push(e));
  // The store is lost with its seal key: the heal is refused.
  server.sealKey = 'another-key';
  server.wipe();
  await a.sync();
  assert.ok(errors.some((e) => /heal todos/.test(e.message)), 'the refused heal reported');
  assert.deepEqual(ev.serverReset.map((r) => r.reason), ['history_lost']);
  assert.equal(await cursorOf(a.store, 'todos').then((c) => c.length), 0, 'the server is empty: the cursor is still the beginning');
  assert.equal(await firstPullReconciles(a.store, 'todos'), false, 'the reset is read again');
  await a.sync();
  assert.deepEqual(ev.reconciled, []);
  assert.deepEqual((await a.collection('todos').list()).map((r) => r.id).sort(), ['r1', 'r2', 'r3'], 'nothing local dropped');
  // A write lands; the pull after it stores a position: reading again is over.
  await a.collection('todos').put('r4', { n: 1 });
  await a.whenSynced();
  await a.sync();
  assert.ok((await cursorOf(a.store, 'todos')).length > 0);
  assert.equal(await a.store.getMeta('reread:todos'), undefined);
  assert.deepEqual((await a.collection('todos').list()).map((r) => r.id).sort(), ['r1', 'r2', 'r3', 'r4']);
});

test('after lease_expired: a give-back answered with fewer results than changes drops nothing; the reconciliation stays owed', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const a = await openClient({ url: server.url, name: 'a', collections: ['todos'], WebSocket: null, pollInterval: 50 });
  t.after(() => a.close());
  /** @type {any[]} */
  const errors = [];
  a.on('error', (e) => errors.push(e));
  const todos = a.collection('todos');
  await todos.put('x', { n: 1 });
  await todos.put('y', { n: 1 });
  await a.whenSynced();
  await a.pause();
  // The server lost x (no write horizon: it would take it back), and
  // answers a push of x with no results at all, taking nothing.
  server.collect('todos', 'x');
  server.leaseExpire('todos', a.store.replica);
  const push = server.push.bind(server);
  let short = 0;
  server.push = (/** @type {any[]} */ ...args) => {
    const out = push(...args);
    if (!Array.isArray(out) || !server.pushed.slice(-out.length).some((p) => p.id === 'x')) return out;
    short++;
    server.collect('todos', 'x');
    return [];
  };
  a.resume();
  await until(() => short >= 1, 'the give-back answered short', WAIT);
  await a.sync().catch(() => {});
  await a.sync().catch(() => {});
  assert.deepEqual((await todos.list()).map((r) => r.id).sort(), ['x', 'y'], 'x is not dropped');
  assert.ok(errors.some((e) => e.code === 'malformed'), `a malformed answer reported (${errors.map((e) => e.message).join('; ')})`);
  assert.equal(await a.store.getMeta('reconcile:todos'), true, 'the reconciliation is still owed');
});

for (const live of [false, true]) {
  test(`after history_lost: a record the heal gives back refused collected is dropped unless the pull after the heal delivers it; its pending edit rejected collected, unpushed (${live ? 'live' : 'polling'})`, async (t) => {
    const server = await new FakeServer().start();
    t.after(() => server.stop());
    const a = await openClient({ url: server.url, name: 'a', collections: ['todos'], ...(live ? {} : { WebSocket: null, pollInterval: 50 }) });
    t.after(() => a.close());
    /** @type {any[]} */
    const errors = [];
    a.on('error', (e) => errors.push(e));
    const todos = a.collection('todos');
    for (const id of ['x', 'y', 'z']) await todos.put(id, { n: 1 });
    await a.whenSynced();
    await a.sync();
    assert.ok((await cursorOf(a.store, 'todos')).length > 0, 'a cursor: the wipe resets it');
    const ev = listen(a);
    await a.pause();
    await todos.update('x', { n: 2 });
    // The store goes back to one without x, y or z, whose write horizon
    // has passed every stamp a holds (its lease had expired: they were
    // deleted and collected meanwhile); y is written there again since,
    // by another replica.
    server.wipe();
    server.writeHorizon.set('todos', await horizonPast(a));
    const y = emptyRecord('y');
    y.fields.set('m', { value: encode('theirs'), stamp: { wall: Date.now() + 1000, logical: 0, replica: 'bob_dev' } });
    assert.equal(server.apply([{ collection: 'todos', record: y }], 'bob')[0].get(1), STATUSES.applied);
    const mark = server.pushed.length;
    const restored = server.restoredRecords;
    a.resume();
    assert.deepEqual(await a.whenSynced(), { refused: 1 }, 'the edit of the collected record counts as refused');
    await until(async () => (await todos.get('x')) === null, 'x dropped', WAIT);
    await until(() => ev.reconciled.length > 0, 'the reconciled event', WAIT);
    assert.deepEqual(ev.serverReset.map((r) => r.reason), ['history_lost']);
    assert.equal(server.restoredRecords, restored, 'every record given back refused');
    assert.deepEqual(ev.reconciled, [{ collection: 'todos', dropped: 2, rejected: 1, restamped: 0 }]);
    assert.deepEqual(ev.refused.map((r) => [r.id, r.code]), [['x', 'collected']]);
    for (const id of ['x', 'z']) {
      assert.equal(await todos.get(id), null, `${id} dropped`);
      assert.equal(await a.store.get('todos', id), undefined, `${id}: no tombstone either`);
      assert.equal(server.coll('todos').byId.has(id), false, `${id} not on the server`);
    }
    // What the heal gave back of x (its acknowledged n: 1) comes back
    // refused collected; the pending edit never goes.
    const xs = pushedNs(server, mark, 'x');
    assert.deepEqual(xs.filter(([, , n]) => n === 2), [], "x's edit never pushed");
    assert.deepEqual(xs.filter(([s, code]) => s !== STATUSES.refused || code !== 'collected'), [], 'what was given back of x refused collected');
    assert.deepEqual(await todos.get('y'), { id: 'y', n: 1, m: 'theirs' }, 'y, delivered, stays');
    const rejected = await a.rejected();
    assert.equal(rejected.length, 1);
    assert.equal(rejected[0].recordId, 'x');
    assert.equal(rejected[0].code, 'collected');
    assert.equal(rejected[0].message, COLLECTED_MESSAGE);
    assert.deepEqual(rejected[0].change, { deleted: false, fields: { n: 2 }, unset: [] });
    assert.deepEqual(errors.filter((e) => /heal todos/.test(e.message)), [], 'nothing said to stay local');
    // The next readings keep it so.
    await a.sync();
    assert.deepEqual((await todos.list()).map((r) => r.id), ['y']);
  });
}

for (const scene of ['collected', 'wiped before', 'wiped after']) {
  const what = {
    collected: 'the record deleted and collected meanwhile is dropped',
    'wiped before': 'the records the store lost before that pull (wiped) are given back',
    'wiped after': "what the store lost after the page (wiped), another writer's record the page brought among it, is given back by a heal first, not dropped",
  }[scene];
  test(`a first pull cut short after its first page stays a reconciliation, made at the next pull: ${what}, as the Go client does`, async (t) => {
    const server = await new FakeServer({ maxPull: 1 }).start();
    t.after(() => server.stop());
    /** @type {{pull: boolean, push?: boolean}} */
    const blocked = { pull: true };
    let pulls = 0;
    const a = await pushOnly(t, server, blocked, async () => {
      // The reading's second page fails once: the network, say.
      if (++pulls === 2) {
        if (scene === 'wiped after') server.wipe();
        throw new TypeError('pull cut short by the test');
      }
    });
    // b writes as another subject: a holds no stamp of its own of b's records.
    const b = await openClient({ url: server.url, name: 'b', token: jwtOf('bob'), collections: ['todos'], WebSocket: null, pollInterval: 50 });
    t.after(() => b.close());
    if (scene === 'wiped after') {
      // The first page of a's reading brings p, which b alone wrote.
      await b.collection('todos').put('p', { n: 2 });
      await b.whenSynced();
      await b.close();
    }
    const todos = a.collection('todos');
    for (const id of ['x', 'y', 'z']) await todos.put(id, { n: 1 });
    await until(async () => server.coll('todos').byId.has('z') && (await outboxCounts(a.store)).pending === 0, 'x, y and z pushed', WAIT);
    await a.pause();
    if (scene === 'wiped before') {
      // The store goes back to empty; b writes two records after it, so
      // that a's reading from the beginning has two pages.
      server.wipe();
      await b.collection('todos').put('p', { n: 2 });
      await b.collection('todos').put('q', { n: 2 });
    } else if (scene === 'collected') {
      await b.sync();
      await b.collection('todos').delete('x');
    }
    await b.whenSynced();
    await b.close();
    if (scene === 'collected') {
      server.purge('todos', 'x');
      server.writeHorizon.set('todos', await horizonPast(a));
    }
    blocked.pull = false;
    a.resume();
    await until(() => pulls > 2, 'the pull cut short, and pulled again', WAIT);
    await a.sync();
    const want = { collected: ['y', 'z'], 'wiped before': ['p', 'q', 'x', 'y', 'z'], 'wiped after': ['p', 'x', 'y', 'z'] }[scene];
    assert.deepEqual((await todos.list()).map((r) => r.id).sort(), want, scene === 'collected' ? 'x, deleted and collected on the server, is dropped here too' : 'every record stays here');
    assert.deepEqual([...server.coll('todos').byId.keys()].sort(), want, scene === 'collected' ? 'the server holds what a holds' : 'what the store lost is on the server again');
  });
}

test("after lease_expired: a change refused collected whose push is answered after setToken with another subject is not written again as that subject: it stays the old subject's", async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const a = await openClient({ url: server.url, name: 'a', token: jwtOf('alice'), collections: ['todos'], WebSocket: null, pollInterval: 50 });
  t.after(() => a.close());
  const todos = a.collection('todos');
  await todos.put('y', { n: 1 });
  await a.whenSynced();
  await a.pause();
  await todos.update('y', { n: 2 });
  await sleep(50);
  server.writeHorizon.set('todos', await horizonPast(a));
  server.leaseExpire('todos');
  await sleep(50);
  // The push that carries alice's edit is answered (refused collected)
  // once the device has switched to bob.
  let switched = false;
  const handle = server.handle.bind(server);
  server.handle = async (/** @type {any} */ req, /** @type {any} */ res) => {
    if (req.url !== PATHS.push || switched) return handle(req, res);
    const before = server.pushed.length;
    const end = res.end.bind(res);
    /** @type {(args: any[]) => void} */
    let ended = () => {};
    const answered = new Promise((r) => (ended = r));
    res.end = (/** @type {any[]} */ ...args) => (ended(args), res);
    await handle(req, res);
    const args = await answered;
    if (server.pushed.slice(before).some((p) => p.id === 'y' && p.code === 'collected')) {
      switched = true;
      a.setToken(jwtOf('bob'));
      await a.store.switching;
    }
    end(...args);
  };
  const bob = await replicaPrefix('bob');
  /** @type {any[]} */
  const refused = [];
  a.on('refused', (r) => refused.push(r));
  a.resume();
  await until(() => switched, 'the push answered after the switch', WAIT);
  await until(() => a.status.pending === 0 && !a.status.syncing, 'the outbox settled for bob', WAIT);
  await sleep(300);
  const asBob = server.pushed.filter((p) => p.id === 'y' && p.record && [...p.record.fields.values()].some((f) => f.stamp.replica.startsWith(bob)));
  assert.deepEqual(asBob.map((p) => p.record.fields.get('n')), [], "alice's edit is not pushed as bob's");
  assert.equal(onServer(server, 'todos', 'y', 'n'), 1, 'nor applied');
  // It stays among the rejected changes, alice's to write again, and the
  // app hears it refused.
  assert.deepEqual(
    (await a.rejected()).map((r) => [r.recordId, r.code, r.change.fields]),
    [['y', 'collected', { n: 2 }]],
  );
  await until(() => refused.length === 1, 'the refusal told', WAIT);
  assert.deepEqual([refused[0].id, refused[0].code], ['y', 'collected']);
  assert.deepEqual(await todos.get('y'), { id: 'y', n: 1 });
});
