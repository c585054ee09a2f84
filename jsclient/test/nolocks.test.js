// Without Web Locks (navigator.locks is only in secure contexts) every tab
// of a database syncs on its own: two tabs may push the same outbox entry
// and both settle its answer, or run the same step of a reconciliation.
// Whatever the second tab does after the first must change nothing the
// first settled.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import util from 'node:util';
import { FakeServer } from './helpers/server.js';
import { IDBKeyRange, freshIDB, heldAnswers, horizonPast, openClient, until } from './helpers/util.js';
import { PATHS, STATUSES } from '../src/constants.js';
import { decode, encode } from '../src/cbor.js';
import { healChecks, outboxCounts, owedHeals, owesReconcile, restartClock } from '../src/syncstore.js';
import { Store, fromStored } from '../src/db.js';
import { ZERO_STAMP, compareStamps } from '../src/hlc.js';
import { emptyRecord } from '../src/record.js';

/**
 * Two tabs of one database without Web Locks, both leading, polling
 * rarely (the test drives their syncs).
 * @param {import('node:test').TestContext} t
 * @param {string} name
 * @param {{server?: FakeServer, opts?: object}} [o] a server started
 *   already (one with options of its own); the tabs' options beyond these
 */
async function twoTabs(t, name, o = {}) {
  const server = o.server ?? (await new FakeServer().start());
  t.after(() => server.stop());
  const opts = { url: server.url, name, indexedDB: freshIDB(), locks: null, BroadcastChannel: globalThis.BroadcastChannel, collections: ['todos'], WebSocket: null, pollInterval: 60_000, ...o.opts };
  const a = await openClient(opts);
  const b = await openClient(opts);
  t.after(() => Promise.all([a.close(), b.close()]));
  await until(() => a.status.leader && b.status.leader && a.status.online && b.status.online, 'both lead');
  return { server, a, b };
}

/** A JWT (unsigned: the fake server reads its payload) for subject sub. */
function tokenOf(/** @type {string} */ sub) {
  const b64 = (/** @type {object} */ o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  return `${b64({ alg: 'none' })}.${b64({ sub })}.x`;
}

/**
 * Answers the nth pull request from now at once, but sends the answer
 * only when the function returned is called; count says how many came.
 * @param {any} server
 * @param {number} [nth]
 */
function lateAnswer(server, nth = 1) {
  let n = 0;
  /** @type {() => void} */
  let release = () => {};
  const gate = new Promise((r) => (release = () => r(undefined)));
  const handle = server.handle.bind(server);
  server.handle = async (/** @type {any} */ req, /** @type {any} */ res) => {
    if (req.url === PATHS.pull && ++n === nth) {
      server.handle = handle;
      const end = res.end.bind(res);
      res.end = (/** @type {any[]} */ ...args) => {
        gate.then(() => end(...args));
        return res;
      };
    }
    return handle(req, res);
  };
  return { count: () => n, release };
}

/**
 * Listens to the events of a tab.
 * @param {any} db
 */
function listen(db) {
  /** @type {{refused: any[], superseded: any[], reconciled: any[]}} */
  const ev = { refused: [], superseded: [], reconciled: [] };
  for (const k of /** @type {const} */ (['refused', 'superseded', 'reconciled'])) db.on(k, (/** @type {any} */ r) => ev[k].push(r));
  return ev;
}

test('without Web Locks: a change two tabs pushed, refused collected, is held, reconciled and written again once; the second answer does not put it back in the outbox', async (t) => {
  const { server, a, b } = await twoTabs(t, 'nolocks-hold');
  await a.collection('todos').put('k', { n: 1 });
  await until(() => server.coll('todos').byId.has('k') && a.status.pending === 0, 'pushed');
  await b.sync();
  const evA = listen(a);
  const evB = listen(b);
  // An edit left pending past the write horizon: refused collected
  // outside a reconciliation.
  await a.pause();
  await b.pause();
  await a.collection('todos').update('k', { n: 2 });
  server.writeHorizon.set('todos', await horizonPast(a));
  const gate = heldAnswers(server, PATHS.push, { first: true });
  b.resume();
  await until(() => gate.count() === 1, "b's push under way");
  // a pushes the same change: refused collected, held, its collection
  // reconciled, written again and applied.
  a.resume();
  await until(async () => (await outboxCounts(a.store)).pending === 0 && decode(server.coll('todos').byId.get('k')?.record.fields.get('n')?.value ?? new Uint8Array([0xf6])) === 2, 'a wrote it again and it landed');
  gate.release();
  await until(() => server.pushStatuses.length >= 3, "b's push answered");
  await a.sync();
  await b.sync();
  assert.equal((await outboxCounts(a.store)).pending, 0, 'nothing pending');
  assert.equal(await owesReconcile(a.store, 'todos'), false, 'no reconciliation owed');
  assert.deepEqual(await a.collection('todos').get('k'), { id: 'k', n: 2 });
  assert.deepEqual(await b.collection('todos').get('k'), { id: 'k', n: 2 });
  assert.deepEqual(await a.rejected(), []);
  await new Promise((r) => setTimeout(r, 100));
  assert.deepEqual([evA.superseded, evB.superseded], [[], []], 'the edit landed: nothing told lost');
  assert.deepEqual([evA.refused, evB.refused], [[], []]);
  assert.deepEqual(evA.reconciled.length + evB.reconciled.length, 2, 'one reconciliation, heard in each tab');
});

test('without Web Locks: a reconciliation whose pull from the beginning another tab has overtaken does not drop the records that tab pulled since', async (t) => {
  const { server, a, b } = await twoTabs(t, 'nolocks-reconcile');
  // Another subject: its stamps are none of the tabs' to give back.
  const other = await openClient({ url: server.url, name: 'other', token: tokenOf('bob'), collections: ['todos'], WebSocket: null, pollInterval: 60_000 });
  t.after(() => other.close());
  await a.collection('todos').put('k', { n: 1 });
  await until(() => server.coll('todos').byId.has('k') && a.status.pending === 0, 'pushed');
  await b.sync();
  // Both loops idle, waiting for their next poll: the pulls counted from
  // here are b.sync()'s alone (a round of a's still under way, slow on a
  // loaded machine, would pull beside them).
  await until(() => [a, b].every((tab) => /** @type {any} */ (tab).syncer?.waiting === 'poll'), 'both loops idle');
  // The next read of the collection is reset lease_expired. b's
  // reconciliation reads it from the beginning; the answer, made now,
  // arrives late.
  server.leaseExpire('todos');
  let pulls = 0;
  /** @type {() => void} */
  let release = () => {};
  const gate = new Promise((r) => (release = () => r(undefined)));
  const handle = server.handle.bind(server);
  server.handle = async (/** @type {any} */ req, /** @type {any} */ res) => {
    if (req.url === PATHS.pull && ++pulls === 2) {
      const end = res.end.bind(res);
      res.end = (/** @type {any[]} */ ...args) => {
        gate.then(() => end(...args));
        return res;
      };
    }
    return handle(req, res);
  };
  const reconciled = b.sync();
  await until(() => pulls === 2, "b's pull from the beginning answered, the answer held");
  // Another client creates a record; a (owed the reconciliation too, in
  // the database the tabs share) reads it.
  server.handle = handle;
  await other.collection('todos').put('n', { n: 7 });
  await until(() => server.coll('todos').byId.has('n'), 'n on the server');
  await a.sync();
  assert.deepEqual(await a.collection('todos').get('n'), { id: 'n', n: 7 }, 'a pulled n');
  // An edit of n waits in the outbox.
  await a.pause();
  await a.collection('todos').update('n', { n: 8 });
  release();
  await reconciled;
  assert.deepEqual(await a.collection('todos').get('n'), { id: 'n', n: 8 }, "b's reconciliation left n and its edit");
  assert.deepEqual(await a.rejected(), [], 'the edit is not rejected');
  a.resume();
  await a.sync();
  await b.sync();
  assert.deepEqual(await a.collection('todos').get('n'), { id: 'n', n: 8 });
  assert.equal(decode(/** @type {Uint8Array} */ (server.coll('todos').byId.get('n')?.record.fields.get('n')?.value)), 8, 'the edit landed');
  assert.deepEqual(await a.collection('todos').get('k'), { id: 'k', n: 1 });
});

test('two tabs restarting the clock at their hellos never issue the same stamp: the second restart does not take the saved clock back below stamps the first tab issued', async () => {
  const idb = freshIDB();
  const wall = 1_700_000_000_000;
  const hour = 3_600_000;
  const a = new Store({ name: 'restart', indexedDB: idb, IDBKeyRange });
  await a.init({ maxDrift: 60_000 });
  // Stamps issued before any hello, while the wall clock ran an hour fast.
  a.now = () => wall + hour;
  await a.write('todos', 'early', (_cur, stamp) => ({ id: 'early', deleted: ZERO_STAMP, fields: new Map([['n', { stamp, value: encode(0) }]]) }));
  const b = new Store({ name: 'restart', indexedDB: idb, IDBKeyRange });
  await b.init({ maxDrift: 60_000 });
  // Both tabs hear the server's time: an hour behind.
  a.now = b.now = () => wall;
  await restartClock(a);
  const one = await a.write('todos', 'x', (_cur, stamp) => ({ id: 'x', deleted: ZERO_STAMP, fields: new Map([['n', { stamp, value: encode(1) }]]) }));
  await restartClock(b);
  const two = await b.write('todos', 'y', (_cur, stamp) => ({ id: 'y', deleted: ZERO_STAMP, fields: new Map([['n', { stamp, value: encode(2) }]]) }));
  const s1 = fromStored(await a.get('todos', 'x'), 'x').fields.get('n')?.stamp;
  const s2 = fromStored(await b.get('todos', 'y'), 'y').fields.get('n')?.stamp;
  assert.ok(one && two && s1 && s2);
  assert.ok(!a.clock?.ahead(wall) && !b.clock?.ahead(wall), 'both clocks started again');
  assert.equal(compareStamps(s2, s1), 1, `b's stamp ${JSON.stringify(s2)} after a's ${JSON.stringify(s1)}`);
});

test('without Web Locks: a pull answered before a record came back into the scope, written after another tab pulled it back, does not remove it', async (t) => {
  const scopes = { todos: { mine: ['eq', 'owner', { $: 'sub' }] } };
  const { server, a, b } = await twoTabs(t, 'nolocks-leave', { opts: { token: tokenOf('alice'), scopes } });
  const bob = await openClient({ url: server.url, name: 'bob', token: tokenOf('bob'), collections: ['todos'], WebSocket: null, pollInterval: 60_000 });
  t.after(() => bob.close());
  await a.collection('todos').put('x', { owner: 'alice', n: 1 });
  await until(() => server.coll('todos').byId.has('x') && a.status.pending === 0, 'pushed');
  await a.sync();
  await b.sync();
  await bob.sync();
  // x leaves alice's scope; b's pull is answered now (a leave entry for
  // x), the answer held on the wire.
  await bob.collection('todos').update('x', { owner: 'bob' });
  await until(() => bob.status.pending === 0, 'x moved out');
  await until(() => [a, b, bob].every((tab) => /** @type {any} */ (tab).syncer?.waiting === 'poll'), 'every loop idle');
  const late = lateAnswer(server);
  const pulled = b.sync();
  await until(() => late.count() === 1, "b's pull answered, the answer held");
  // x comes back; a pulls it.
  await bob.collection('todos').update('x', { owner: 'alice', n: 2 });
  await until(() => bob.status.pending === 0, 'x moved back');
  await a.sync();
  assert.deepEqual(await a.collection('todos').get('x'), { id: 'x', owner: 'alice', n: 2 }, 'a pulled x back');
  late.release();
  await pulled;
  assert.deepEqual(await a.collection('todos').get('x'), { id: 'x', owner: 'alice', n: 2 }, "b's late answer left x");
  assert.deepEqual(await b.collection('todos').get('x'), { id: 'x', owner: 'alice', n: 2 });
  await a.sync();
  await b.sync();
  assert.deepEqual(await b.collection('todos').get('x'), { id: 'x', owner: 'alice', n: 2 });
});

test("without Web Locks: a heal's reading from the beginning that another tab's pull overtook reads again from the beginning and ends its check; nothing is healed twice", async (t) => {
  const { server, a, b } = await twoTabs(t, 'nolocks-heal', { server: await new FakeServer({ maxPull: 1 }).start() });
  for (const id of ['x', 'y', 'z']) await a.collection('todos').put(id, { n: 1 });
  await until(() => server.coll('todos').byId.size === 3 && a.status.pending === 0, 'pushed');
  await a.sync();
  await b.sync();
  await until(() => [a, b].every((tab) => /** @type {any} */ (tab).syncer?.waiting === 'poll'), 'both loops idle');
  // The store goes back in time: b is reset, heals, and reads from the
  // beginning; the first page of that reading is answered now and arrives
  // late.
  server.wipe();
  const late = lateAnswer(server, 2);
  const healed = b.sync();
  await until(() => late.count() === 2, "b's first page after its heal answered, the answer held");
  assert.equal(server.restores.length, 1, 'b healed');
  assert.equal(server.coll('todos').byId.size, 3, 'b gave every record back');
  // a reads the collection meanwhile, and stores a cursor past it.
  await a.sync();
  late.release();
  await healed;
  const syncer = /** @type {any} */ (b).syncer;
  assert.equal(syncer.healChecks.has('todos'), false, "b's reading after its heal ended");
  assert.equal((await healChecks(b.store)).size, 0, 'no heal check kept');
  await a.sync();
  await b.sync();
  assert.equal(server.restores.length, 1, 'no second heal');
  assert.deepEqual(await owedHeals(a.store), []);
  for (const id of ['x', 'y', 'z']) {
    assert.deepEqual(await a.collection('todos').get(id), { id, n: 1 });
    assert.deepEqual(await b.collection('todos').get(id), { id, n: 1 });
  }
});

test("without Web Locks: a heal's drop of a record refused collected does not drop it once another tab has pulled it, created again, after the heal's reading ended", async (t) => {
  const { server, a, b } = await collectedHeld(t, 'nolocks-healdrop');
  // The store goes back in time: b heals (z refused collected), reads
  // from the beginning (no z), and is held before it drops z.
  /** @type {() => void} */
  let release = () => {};
  const gate = new Promise((r) => (release = () => r(undefined)));
  let held = false;
  const tx = b.store.tx.bind(b.store);
  b.store.tx = (/** @type {any[]} */ ...args) => {
    if (args[1] === 'readwrite' && args[2] === 'heal todos') {
      held = true;
      return gate.then(() => tx(...args));
    }
    return tx(...args);
  };
  server.wipe();
  const healed = b.sync();
  await until(() => held, "b's drop of z held");
  assert.equal(server.coll('todos').byId.has('z'), false, 'z refused collected');
  // Another writer creates z again; a pulls it.
  const r = emptyRecord('z');
  r.fields.set('m', { value: encode('theirs'), stamp: { wall: Date.now() + 1000, logical: 0, replica: 'bob_dev' } });
  assert.equal(server.apply([{ collection: 'todos', record: r }], 'bob')[0].get(1), STATUSES.applied);
  await a.sync();
  assert.deepEqual(await a.collection('todos').get('z'), { id: 'z', n: 1, m: 'theirs' }, 'a pulled z');
  release();
  await healed;
  assert.deepEqual(await a.collection('todos').get('z'), { id: 'z', n: 1, m: 'theirs' }, "b's drop left z, which the server holds");
  assert.deepEqual(await a.rejected(), []);
  await a.sync();
  await b.sync();
  assert.deepEqual(await b.collection('todos').get('z'), { id: 'z', n: 1, m: 'theirs' });
  assert.deepEqual(await b.collection('todos').get('x'), { id: 'x', n: 1 });
  assert.equal(await b.collection('todos').get('w'), null, 'w, refused collected and not served, dropped');
});

test('without Web Locks: a reset answered to a pull from a cursor another tab has reset and healed since does not heal again', async (t) => {
  const { server, a, b } = await twoTabs(t, 'nolocks-reset');
  for (const id of ['x', 'y']) await a.collection('todos').put(id, { n: 1 });
  await until(() => server.coll('todos').byId.size === 2 && a.status.pending === 0, 'pushed');
  await a.sync();
  await b.sync();
  await until(() => [a, b].every((tab) => /** @type {any} */ (tab).syncer?.waiting === 'poll'), 'both loops idle');
  /** @type {any[]} */
  const resets = [];
  b.on('serverReset', (r) => resets.push(r));
  // The store goes back in time. b's pull from the cursor the tabs
  // stored is held on its way to the server; a is reset, heals, and
  // reads the collection from the beginning meanwhile.
  server.wipe();
  const gate = heldAnswers(server, PATHS.pull, { first: true });
  const pulled = b.sync();
  await until(() => gate.count() === 1, "b's pull held");
  await a.sync();
  assert.equal(server.restores.length, 1, 'a healed');
  assert.equal(server.coll('todos').byId.size, 2);
  // b's pull is reset: the cursor it was read from is gone already.
  gate.release();
  await pulled;
  await a.sync();
  await b.sync();
  assert.equal(server.restores.length, 1, 'no second heal');
  assert.deepEqual(await owedHeals(b.store), []);
  for (const id of ['x', 'y']) assert.deepEqual(await b.collection('todos').get(id), { id, n: 1 });
  assert.equal(resets.length, 1, "b heard a's reset, and none of its own");
});

/**
 * Two tabs holding z and w, which the server deleted and collected (a
 * write horizon past their stamps: given back, they are refused
 * collected), and x.
 * @param {import('node:test').TestContext} t
 * @param {string} name
 */
async function collectedHeld(t, name) {
  const { server, a, b } = await twoTabs(t, name);
  await a.collection('todos').put('z', { n: 1 });
  await a.collection('todos').put('w', { n: 1 });
  await until(() => server.coll('todos').byId.has('w') && a.status.pending === 0, 'z and w pushed');
  await until(() => [a, b].every((tab) => /** @type {any} */ (tab).syncer?.waiting === 'poll'), 'both loops idle');
  server.collect('todos', 'z');
  server.collect('todos', 'w');
  server.writeHorizon.set('todos', await horizonPast(a));
  await a.collection('todos').put('x', { n: 1 });
  await until(() => server.coll('todos').byId.has('x') && a.status.pending === 0, 'x pushed');
  await a.sync();
  await b.sync();
  await until(() => [a, b].every((tab) => /** @type {any} */ (tab).syncer?.waiting === 'poll'), 'both loops idle');
  assert.deepEqual(await b.collection('todos').get('z'), { id: 'z', n: 1 }, 'z held, its collection unknown here');
  return { server, a, b };
}

/**
 * Another writer creates z again on the server, and tab a pulls it (a
 * owes the reconciliation too, in the database the tabs share: what it
 * pulls replaces what was held).
 * @param {any} server
 * @param {any} a
 */
async function zAgain(server, a) {
  const r = emptyRecord('z');
  r.fields.set('m', { value: encode('theirs'), stamp: { wall: Date.now() + 1000, logical: 0, replica: 'bob_dev' } });
  assert.equal(server.apply([{ collection: 'todos', record: r }], 'bob')[0].get(1), STATUSES.applied);
  await a.sync();
  assert.deepEqual(await a.collection('todos').get('z'), { id: 'z', m: 'theirs' }, 'a pulled z');
}

/**
 * After zAgain, what both tabs hold once they synced again: z as the
 * server holds it, x, and not w.
 * @param {any} a
 * @param {any} b
 */
async function zKept(a, b) {
  assert.deepEqual(await a.collection('todos').get('z'), { id: 'z', m: 'theirs' }, "b's reconciliation left z, which the server holds");
  assert.deepEqual(await a.rejected(), []);
  await a.sync();
  await b.sync();
  assert.deepEqual(await b.collection('todos').get('z'), { id: 'z', m: 'theirs' });
  assert.deepEqual(await b.collection('todos').get('x'), { id: 'x', n: 1 });
  assert.equal(await b.collection('todos').get('w'), null, 'w, refused collected and not served, dropped');
  assert.equal(await owesReconcile(b.store, 'todos'), false);
}

test("without Web Locks: a reconciliation's drop of a record refused collected does not drop it once another tab has pulled it, created again, after the reconciliation's pull ended", async (t) => {
  const { server, a, b } = await collectedHeld(t, 'nolocks-reconcile-drop');
  server.leaseExpire('todos'); // the next pull reconciles
  // b is reset lease_expired, reads from the beginning (no z, no w),
  // gives them back (refused collected), and is held before it drops.
  /** @type {() => void} */
  let release = () => {};
  const gate = new Promise((r) => (release = () => r(undefined)));
  let held = false;
  const tx = b.store.tx.bind(b.store);
  b.store.tx = (/** @type {any[]} */ ...args) => {
    if (!held && args[1] === 'readwrite' && args[2] === 'reconcile todos') {
      held = true;
      return gate.then(() => tx(...args));
    }
    return tx(...args);
  };
  const reconciled = b.sync();
  await until(() => held, "b's drop held");
  assert.equal(server.coll('todos').byId.has('z'), false, 'z refused collected');
  await zAgain(server, a);
  release();
  await reconciled;
  await zKept(a, b);
});

test("without Web Locks: a reconciliation's pull from the beginning answered before another tab pulled a record created again, and written after, does not drop it", async (t) => {
  const { server, a, b } = await collectedHeld(t, 'nolocks-reconcile-late');
  server.leaseExpire('todos'); // the next pull reconciles
  // b is reset lease_expired; its reading from the beginning is answered
  // now (no z, no w) and arrives late.
  const late = lateAnswer(server, 2);
  const reconciled = b.sync();
  await until(() => late.count() === 2, "b's pull from the beginning answered, the answer held");
  await zAgain(server, a);
  late.release();
  await reconciled;
  await zKept(a, b);
});

const X2 = { id: 'x', owner: 'alice', n: 2 };
const liveCases = [
  {
    name: 'does not hide a record that came back into the scope',
    // x leaves alice's scope, and comes back.
    steps: [
      { change: { owner: 'bob' }, held: null },
      { change: { owner: 'alice', n: 2 }, held: X2 },
    ],
  },
  {
    name: 'does not put back a record that left the scope',
    // x changes, then leaves alice's scope.
    steps: [
      { change: { n: 2 }, held: X2 },
      { change: { owner: 'bob' }, held: null },
    ],
  },
];

for (const { name, steps } of liveCases) {
  test(`without Web Locks: a live page written late, after another tab's session stored the pages after it, ${name}`, async (t) => {
    const server = await new FakeServer().start();
    t.after(() => server.stop());
    const scopes = { todos: { mine: ['eq', 'owner', { $: 'sub' }] } };
    const opts = { url: server.url, name: 'nolocks-live', token: tokenOf('alice'), scopes, indexedDB: freshIDB(), locks: null, BroadcastChannel: globalThis.BroadcastChannel, collections: ['todos'], pollInterval: 60_000 };
    const a = await openClient(opts);
    const b = await openClient(opts);
    const bob = await openClient({ url: server.url, name: 'bob', token: tokenOf('bob'), collections: ['todos'], WebSocket: null, pollInterval: 60_000 });
    t.after(() => Promise.all([a.close(), b.close(), bob.close()]));
    const live = (/** @type {any} */ tab) => tab.syncer?.session?.live && tab.syncer.session.subscribed.has('todos');
    await until(() => a.status.leader && b.status.leader && live(a) && live(b), 'both tabs live');
    await a.collection('todos').put('x', { owner: 'alice', n: 1 });
    await until(() => server.coll('todos').byId.has('x') && a.status.pending === 0, 'pushed');
    await until(async () => (await b.collection('todos').get('x')) !== null, 'x held');
    await bob.sync();
    // b's live pages of todos are held from here; the first, once let
    // go, is written and then b stops syncing (its later pages are
    // dropped).
    const sb = /** @type {any} */ (b).syncer;
    const onLive = sb.onLive.bind(sb);
    /** @type {() => void} */
    let release = () => {};
    const gate = new Promise((r) => (release = () => r(undefined)));
    let held = 0;
    /** @type {Promise<void>|null} */
    let paused = null;
    sb.onLive = async (/** @type {any} */ m, /** @type {any} */ s) => {
      if (m.type !== 'changes' || m.collection !== 'todos') return onLive(m, s);
      if (++held > 1) return;
      await gate;
      await onLive(m, s);
      paused = b.pause();
    };
    // a's session writes both changes; b's first page waits.
    for (const [i, step] of steps.entries()) {
      await bob.collection('todos').update('x', step.change);
      await until(async () => held >= 1 && util.isDeepStrictEqual(await a.collection('todos').get('x'), step.held), `a wrote change ${i + 1}`);
    }
    // b writes its first page now.
    release();
    await until(() => paused !== null, "b's page written");
    await paused;
    // Another record comes: a's session writes it.
    await bob.collection('todos').put('y', { owner: 'alice', n: 1 });
    await until(async () => (await a.collection('todos').get('y')) !== null, 'a wrote y');
    const want = steps[steps.length - 1].held;
    assert.deepEqual(await a.collection('todos').get('x'), want, "b's late page left x as the server holds it for alice");
    await a.sync();
    assert.deepEqual(await a.collection('todos').get('x'), want, 'and a pull too');
    b.resume();
    await until(() => live(b), 'b live again');
    await b.sync();
    assert.deepEqual(await b.collection('todos').get('x'), want);
  });
}

test('without Web Locks: a write the store acknowledged and then lost, its answer read only after another tab healed the reset that loss caused, is pushed again, as the Go client does', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  /** @type {{armed: boolean, answered: () => void, release: Promise<void>|null}} */
  const heldPush = { armed: false, answered: () => {}, release: null };
  /** @type {{armed: boolean, reached: () => void, release: Promise<void>|null}} */
  const heldPull = { armed: false, reached: () => {}, release: null };
  const opts = { url: server.url, name: 'lateack', indexedDB: freshIDB(), locks: null, BroadcastChannel: globalThis.BroadcastChannel, collections: ['todos'], WebSocket: null, pollInterval: 60_000 };
  // Tab a reads the answer of its push, once armed, only when released:
  // the server applied the push, and its store then lost it.
  const a = await openClient({
    ...opts,
    fetch: async (/** @type {any} */ input, /** @type {any} */ init) => {
      const res = await fetch(input, init);
      if (String(input).endsWith(PATHS.push) && heldPush.armed) {
        heldPush.armed = false;
        heldPush.answered();
        await heldPush.release;
      }
      return res;
    },
  });
  // Tab b's pull waits, once armed, until released.
  const b = await openClient({
    ...opts,
    fetch: async (/** @type {any} */ input, /** @type {any} */ init) => {
      if (String(input).endsWith(PATHS.pull) && heldPull.armed) {
        heldPull.armed = false;
        heldPull.reached();
        await heldPull.release;
      }
      return fetch(input, init);
    },
  });
  t.after(() => Promise.all([a.close(), b.close()]));
  await until(() => a.status.leader && b.status.leader && a.status.online && b.status.online, 'both lead');
  await a.collection('todos').put('first', { n: 1 });
  await a.sync();
  await b.sync();

  /** @type {() => void} */
  let letPull = () => {};
  heldPull.release = new Promise((r) => (letPull = () => r(undefined)));
  const pullReached = new Promise((r) => (heldPull.reached = () => r(undefined)));
  heldPull.armed = true;
  const bSynced = b.sync(); // its push goes with nothing; its pull waits
  await pullReached;
  /** @type {() => void} */
  let letAnswer = () => {};
  heldPush.release = new Promise((r) => (letAnswer = () => r(undefined)));
  const answered = new Promise((r) => (heldPush.answered = () => r(undefined)));
  heldPush.armed = true;
  await a.collection('todos').put('late', { n: 2 });
  const aSynced = a.sync();
  await answered;
  assert.ok(server.coll('todos').byId.has('late'), 'the server applied the write');
  server.wipe();
  // b's pull is reset history_lost and b heals: the write, still in the
  // outbox, is not among what it gives back.
  letPull();
  await bSynced;
  letAnswer();
  await aSynced;
  for (let i = 0; i < 3; i++) {
    await a.sync();
    await b.sync();
  }
  assert.deepEqual([...server.coll('todos').byId.keys()].sort(), ['first', 'late'], 'the write the lost store acknowledged is on the server again');
  assert.equal((await outboxCounts(a.store)).pending, 0);
});
