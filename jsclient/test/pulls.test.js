// What a live session costs in HTTP pulls: a collection the client holds
// a cursor for, and owes no reading of its own (a reconciliation, a heal's
// check, an upgrade's replacement, a reset's reading from the
// beginning), is subscribed from that cursor without a pull before its
// sub (docs/protocol.md, section 9: the sub sends everything after the
// cursor); the first sync still pulls each collection once over HTTP.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FakeServer } from './helpers/server.js';
import { openClient, until } from './helpers/util.js';
import { cursorOf } from '../src/syncstore.js';

/**
 * Logs, in order, each pull (per collection) and each live sub the server
 * reads of a replica other than other's.
 * @param {FakeServer} server
 * @param {string} other
 */
function logReads(server, other) {
  /** @type {['pull'|'sub', string][]} */
  const log = [];
  const pulls = server.pulls;
  pulls.push = (/** @type {any[]} */ ...ms) => {
    for (const m of ms) if (m.get(5) !== other) log.push(['pull', m.get(1)]);
    return Array.prototype.push.apply(pulls, ms);
  };
  const received = server.received;
  received.push = (/** @type {any[]} */ ...ms) => {
    for (const m of ms) if (m.get(0) === 'sub' && m.get(5) !== other) log.push(['sub', m.get(1)]);
    return Array.prototype.push.apply(received, ms);
  };
  return log;
}

/**
 * The pulls of each collection of cs logged from index from until its
 * first sub.
 * @param {['pull'|'sub', string][]} log
 * @param {string[]} cs
 * @param {number} from
 */
function pullsBeforeSub(log, cs, from) {
  /** @type {Map<string, number>} */
  const n = new Map(cs.map((c) => [c, 0]));
  const subbed = new Set();
  for (const [what, c] of log.slice(from)) {
    if (subbed.has(c) || !n.has(c)) continue;
    if (what === 'sub') subbed.add(c);
    else n.set(c, /** @type {number} */ (n.get(c)) + 1);
  }
  return n;
}

test('a live session subscribes each collection from its cursor: one pull at the first sync, none at a reconnect', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const cs = ['c0', 'c1', 'c2', 'c3', 'c4'];
  const b = await openClient({ url: server.url, name: 'b', WebSocket: null, collections: cs });
  t.after(() => b.close());
  for (const c of cs) await b.collection(c).put('r', { c });
  await until(() => b.status.pending === 0, 'b pushed');
  const log = logReads(server, /** @type {string} */ (b.store.replica));
  const a = await openClient({ url: server.url, name: 'a', collections: cs });
  t.after(() => a.close());
  const live = () => [...server.sockets].some((ws) => cs.every((c) => /** @type {any} */ (ws).subs?.has(c)));
  await until(live, 'a subscribed to every collection');
  for (const [c, n] of pullsBeforeSub(log, cs, 0)) assert.ok(n <= 1, `${c} pulled ${n} times over HTTP before it went live, want at most 1`);
  for (const c of cs) assert.equal((await a.collection(c).get('r'))?.c, c, `a holds ${c}'s record`);

  // Written while a's session streams nothing (the server does not
  // notify): only a read from a's cursor brings it.
  const notify = server.notify;
  server.notify = () => {};
  await b.collection('c4').put('missed', { n: 1 });
  await b.sync();
  server.notify = notify;
  assert.equal(await a.collection('c4').get('missed'), null, 'a did not get the write yet');

  const from = log.length;
  server.dropSockets();
  await until(() => [...server.sockets].length === 1 && live() && log.length > from, 'a subscribed again');
  await until(async () => (await a.collection('c4').get('missed'))?.n === 1, 'a to catch up on c4 from its cursor');
  for (const [c, n] of pullsBeforeSub(log, cs, from)) assert.equal(n, 0, `${c} pulled ${n} times over HTTP at a reconnect before its sub, want 0`);

  // Live again: a write to the last collection streams.
  await b.collection('c4').put('live', { n: 2 });
  await b.sync();
  await until(async () => (await a.collection('c4').get('live'))?.n === 2, 'a to get a live write');
  assert.equal(log.filter(([what]) => what === 'pull').length, cs.length, 'one pull of each collection in all');
});

test("a reconnect reads what the subs of many collections need in a few IndexedDB transactions, each sub from the cursor stored", async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const cs = Array.from({ length: 40 }, (_, i) => `c${i}`);
  const b = await openClient({ url: server.url, name: 'b', WebSocket: null, collections: cs });
  t.after(() => b.close());
  for (const c of cs) await b.collection(c).put('r', { c });
  await until(() => b.status.pending === 0, 'b pushed');
  const a = await openClient({ url: server.url, name: 'a', collections: cs });
  t.after(() => a.close());
  const live = () => [...server.sockets].some((ws) => cs.every((c) => /** @type {any} */ (ws).subs?.has(c)));
  await until(live, 'a subscribed to every collection');
  const stored = new Map();
  for (const c of cs) stored.set(c, await cursorOf(a.store, c));
  /** @type {Map<string, any>} */
  const subs = new Map();
  const received = server.received;
  received.push = (/** @type {any[]} */ ...ms) => {
    for (const m of ms) if (m.get(0) === 'sub' && !subs.has(m.get(1))) subs.set(m.get(1), m);
    return Array.prototype.push.apply(received, ms);
  };
  // The pages the subs bring are written as they come, before the last
  // sub reaches the server on a loaded machine: not counted.
  let txs = 0;
  const tx = a.store.tx.bind(a.store);
  a.store.tx = (/** @type {any[]} */ ...args) => (String(args[2]).startsWith('apply ') || txs++, tx(...args));
  server.dropSockets();
  await until(() => subs.size === cs.length, 'a subscribed again');
  assert.ok(txs < cs.length / 2, `${txs} IndexedDB transactions from the reconnect to the subs of ${cs.length} collections`);
  for (const c of cs) assert.deepEqual(subs.get(c).get(2), stored.get(c), `${c}'s sub from the cursor stored`);
});

test('a collection never written, pulled to its end once, is subscribed from its empty cursor at a reconnect, without a pull', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const cs = ['written', 'empty'];
  const b = await openClient({ url: server.url, name: 'b', WebSocket: null, collections: cs });
  t.after(() => b.close());
  await b.collection('written').put('r', { n: 1 });
  await until(() => b.status.pending === 0, 'b pushed');
  const log = logReads(server, /** @type {string} */ (b.store.replica));
  const a = await openClient({ url: server.url, name: 'a', collections: cs });
  t.after(() => a.close());
  const live = () => [...server.sockets].some((ws) => cs.every((c) => /** @type {any} */ (ws).subs?.has(c)));
  await until(live, 'a subscribed to both');
  assert.equal(pullsBeforeSub(log, cs, 0).get('empty'), 1, 'the first sync pulls the empty collection once');

  for (let i = 0; i < 2; i++) {
    const from = log.length;
    server.dropSockets();
    await until(() => [...server.sockets].length === 1 && live() && log.length > from + 1, 'a subscribed again');
    for (const [c, n] of pullsBeforeSub(log, cs, from)) assert.equal(n, 0, `${c} pulled ${n} times over HTTP at reconnect ${i + 1} before its sub, want 0`);
  }
  // Written since: its sub from the empty cursor brings the write.
  await b.collection('empty').put('late', { n: 2 });
  await b.sync();
  await until(async () => (await a.collection('empty').get('late'))?.n === 2, "a to get the empty collection's first write");
});

test('a collection whose cursor stayed empty while the server acknowledged its writes is pulled at a reconnect, as a first pull is (reconciled)', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const cs = ['empty'];
  const a = await openClient({ url: server.url, name: 'a', collections: cs });
  t.after(() => a.close());
  const live = () => [...server.sockets].some((ws) => /** @type {any} */ (ws).subs?.has('empty'));
  await until(live, 'a subscribed');
  const log = logReads(server, '');
  // Acknowledged, and no page moves a's empty cursor (the server streams
  // nothing).
  server.notify = () => {};
  await a.collection('empty').put('mine', { n: 1 });
  await until(() => a.status.pending === 0, 'a pushed');
  assert.equal((await cursorOf(a.store, 'empty')).length, 0, 'the cursor stayed empty');
  const from = log.length;
  server.dropSockets();
  await until(() => [...server.sockets].length === 1 && live() && log.length > from, 'a subscribed again');
  assert.ok(/** @type {number} */ (pullsBeforeSub(log, cs, from).get('empty')) >= 1, 'pulled before its sub');
  assert.equal((await a.collection('empty').get('mine'))?.n, 1, 'the record kept');
});

test('sync() while the loop waits to reconnect pulls every collection before it resolves', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const b = await openClient({ url: server.url, name: 'b', WebSocket: null, collections: ['c0'] });
  t.after(() => b.close());
  await b.collection('c0').put('r', { n: 0 });
  await b.sync();
  // A backoff long enough for the test to act in: the session below ends
  // within TIMINGS.stableSessionMs, so the loop waits it out.
  const a = await openClient({ url: server.url, name: 'a', collections: ['c0'], backoff: { base: 60_000, max: 60_000, random: () => 1 } });
  t.after(() => a.close());
  await until(() => [...server.sockets].some((ws) => /** @type {any} */ (ws).subs?.has('c0')), 'a subscribed');
  await until(async () => (await a.collection('c0').get('r'))?.n === 0, 'a holds r');
  // Written while a's session streams nothing: only a read from a's
  // cursor brings it.
  const notify = server.notify;
  server.notify = () => {};
  await b.collection('c0').put('missed', { n: 1 });
  await b.sync();
  server.notify = notify;
  server.dropSockets();
  await until(() => !a.status.online, 'a disconnected');
  await a.sync();
  assert.equal((await a.collection('c0').get('missed'))?.n, 1, 'sync() resolved with the write made while a was away');
});

test('a write to a collection whose sub from an old cursor has not caught up pulls it before it goes', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const a = await openClient({ url: server.url, name: 'a', collections: ['todos'] });
  t.after(() => a.close());
  const syncer = /** @type {any} */ (a).syncer;
  await a.collection('todos').put('r', { n: 0 });
  await until(() => a.status.pending === 0 && syncer.session?.caught.has('todos'), 'r pushed and todos caught up', 5000);
  const log = logReads(server, '');
  const apply = server.apply.bind(server);
  server.apply = (/** @type {any[]} */ changes, /** @type {any[]} */ ...rest) => {
    for (const ch of changes) log.push(['push', ch.record.id]);
    return apply(changes, ...rest);
  };
  // The next sub's first page is held: until it comes, the sub, from a
  // cursor a pull made longer ago than a pull keeps a collection fresh,
  // may yet be reset lease_expired.
  syncer.pulledAt.clear();
  /** @type {(() => void)[]} */
  const held = [];
  const stream = server.stream.bind(server);
  server.stream = (/** @type {any} */ ws, /** @type {string} */ c, first = false) => {
    if (first && held.length === 0) held.push(() => stream(ws, c, first));
    else stream(ws, c, first);
  };
  server.dropSockets();
  await until(() => held.length === 1 && syncer.session?.subscribed.has('todos'), 'a subscribed again, its first page held');
  await a.collection('todos').put('w', { n: 1 });
  await until(() => server.coll('todos').byId.has('w'), 'w pushed');
  const pull = log.findIndex(([what, c]) => what === 'pull' && c === 'todos');
  const push = log.findIndex(([what, id]) => what === 'push' && id === 'w');
  assert.ok(pull >= 0 && pull < push, `todos pulled before w went out (log ${JSON.stringify(log)})`);
  held[0]();
  await until(() => a.status.pending === 0, 'nothing pending');
});
