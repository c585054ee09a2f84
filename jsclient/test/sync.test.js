// Sync against the in-memory protocol server: two clients converge, the
// outbox survives failures and reloads, refusals are reported.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FakeServer } from './helpers/server.js';
import { freshIDB, jwtOf, openClient, heldAnswers, slowAnswers, until } from './helpers/util.js';
import { DEFAULTS, PATHS, STATUSES, TIMINGS } from '../src/constants.js';
import { fromStored } from '../src/db.js';
import { maxStamp } from '../src/record.js';
import { peekOutbox } from '../src/syncstore.js';

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
  // assigned once per change, and the server answered the retries
  // duplicate, which acknowledges them.
  assert.equal(server.coll('todos').seq, 5);
  const statuses = server.pushStatuses.flat();
  assert.equal(statuses.filter((s) => s === STATUSES.applied).length, 5, `statuses ${statuses}`);
  assert.ok(statuses.includes(STATUSES.duplicate), `statuses ${statuses}`);
  assert.ok(statuses.every((s) => s === STATUSES.applied || s === STATUSES.duplicate), `statuses ${statuses}`);
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

test('refused changes are rolled back, reported and kept among the rejected changes', async (t) => {
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
  assert.equal(refused.length, 1);
  const [r] = refused;
  assert.deepEqual({ ...r, requestId: typeof r.requestId, rejectedId: typeof r.rejectedId }, {
    collection: 'todos',
    id: 'bad',
    code: 'forbidden',
    message: 'refused by test',
    requestId: 'string',
    rejectedId: 'number',
    dropped: 0,
  });
  assert.ok(server.coll('todos').byId.has('good'));
  assert.ok(!server.coll('todos').byId.has('bad'));
  assert.equal(await a.collection('todos').get('bad'), null, 'rolled back to the server version (none)');
  const rejected = await a.rejected();
  assert.equal(rejected.length, 1);
  assert.deepEqual({ ...rejected[0], when: typeof rejected[0].when }, {
    id: r.rejectedId,
    collection: 'todos',
    recordId: 'bad',
    change: { deleted: false, fields: { x: 1 }, unset: [] },
    code: 'forbidden',
    message: 'refused by test',
    requestId: r.requestId,
    when: 'number',
    subject: '',
  });
  assert.equal(a.status.rejected, 1);
});

test('a vanished database is rebuilt from the server', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const idb = freshIDB();
  const a = await openClient({ url: server.url, name: 'v', indexedDB: idb, collections: ['todos'] });
  const b = await openClient({ url: server.url, name: 'w', collections: ['todos'] });
  t.after(() => Promise.all([a.close(), b.close()]));
  let resets = 0;
  a.on('reset', () => resets++);
  const replica = a.store.replica;
  for (const id of ['x', 'y', 'z']) await a.collection('todos').put(id, { id, n: id.charCodeAt(0) });
  await b.collection('todos').put('from-b', { n: 1 });
  await until(async () => (await a.collection('todos').list()).length === 4 && a.status.pending === 0, 'a to hold 4 synced records');
  /** @type {any[][]} */
  const seen = [];
  a.collection('todos').subscribe({}, (docs) => seen.push(docs));

  // The user clears site data (or the browser evicts it).
  await new Promise((resolve, reject) => {
    const r = idb.deleteDatabase('convergo-v');
    r.onsuccess = resolve;
    r.onerror = () => reject(r.error);
  });
  await until(() => resets === 1, 'the reset event');
  await until(async () => (await a.collection('todos').list()).length === 4, 'records pulled back from the server');
  assert.equal(a.store.replica, replica, 'the replica id is kept (its clock is in memory)');
  await until(() => seen.at(-1)?.length === 4, 'subscriptions see the rebuilt data');
  // Writes keep working and syncing.
  await a.collection('todos').put('after', { n: 9 });
  await until(async () => (await b.collection('todos').get('after'))?.n === 9, 'b to see a write made after the rebuild');
});

test('resync: the client pulls over HTTP and subscribes again', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const a = await openClient({ url: server.url, name: 'a', collections: ['todos'] });
  const b = await openClient({ url: server.url, name: 'b', collections: ['todos'] });
  t.after(() => Promise.all([a.close(), b.close()]));
  // Both subscribed on the server: a sub of a's still on its way would
  // miss the resync, and a would catch up live, not over HTTP.
  await until(() => server.sockets.size === 2 && [...server.sockets].every((ws) => ws.subs?.has('todos')), 'both live');
  const pulls = server.requests.filter((u) => u === PATHS.pull).length;
  server.resync('todos');
  // Written while a is not subscribed: only the pull can bring it.
  await b.collection('todos').put('missed', { n: 1 });
  await until(async () => (await a.collection('todos').get('missed'))?.n === 1, 'a to catch up');
  assert.ok(server.requests.filter((u) => u === PATHS.pull).length > pulls, 'a pulled over HTTP');
  await until(() => [...server.sockets].every((ws) => ws.subs?.has('todos')), 'a subscribed again');
  await b.collection('todos').put('live', { n: 2 });
  await until(async () => (await a.collection('todos').get('live'))?.n === 2, 'live again');
});

test('the server clock corrects client skew before stamping', async (t) => {
  // The server's clock is an hour behind ours: uncorrected stamps would be
  // an hour ahead and refused as clock drift.
  const server = await new FakeServer({ timeOffset: -3_600_000, maxDrift: 60_000 }).start();
  t.after(() => server.stop());
  const idb = freshIDB();
  const a = await openClient({ url: server.url, name: 'skew', indexedDB: idb, collections: ['todos'] });
  /** @type {any[]} */
  const refused = [];
  a.on('refused', (r) => refused.push(r));
  await until(() => a.status.online, 'online');
  await a.collection('todos').put('t', { n: 1 });
  await until(() => a.status.pending === 0, 'pushed');
  assert.deepEqual(refused, []);
  const stamp = server.coll('todos').byId.get('t').record.fields.get('n').stamp;
  assert.ok(Math.abs(stamp.wall - server.now()) < 2000, `stamp ${stamp.wall} near server time ${server.now()}`);
  await a.close();
  // The offset is remembered for writes made offline after a reload.
  const offline = await openClient({ name: 'skew', indexedDB: idb, sync: false });
  await offline.collection('todos').put('u', { n: 2 });
  const entries = await peekOutbox(offline.store, 10);
  assert.equal(entries.length, 1);
  const { decodeChanges } = await import('../src/received.js');
  const wall = decodeChanges(Uint8Array.of(0x81, ...entries[0].change))[0].record.fields.get('n')?.stamp.wall;
  assert.ok(Math.abs(/** @type {number} */ (wall) - server.now()) < 2000, 'offline stamps use the stored offset');
  await offline.close();
});

test('pull pages until the server has no more', async (t) => {
  const server = await new FakeServer({ maxPull: 2 }).start();
  t.after(() => server.stop());
  const b = await openClient({ url: server.url, name: 'b', WebSocket: null });
  for (let i = 0; i < 7; i++) await b.collection('todos').put('r' + i, { i });
  await until(() => b.status.pending === 0, 'b pushed');
  await b.close();
  const a = await openClient({ url: server.url, name: 'a', WebSocket: null, collections: ['todos'] });
  t.after(() => a.close());
  await a.sync();
  assert.equal((await a.collection('todos').list()).length, 7);
  assert.ok(server.requests.filter((u) => u === PATHS.pull).length >= 4);
});

test('a refused token raises an auth event; a new token resumes sync', async (t) => {
  const server = await new FakeServer({ auth: (tok) => (tok === 'good' ? null : 'unauthenticated') }).start();
  t.after(() => server.stop());
  const a = await openClient({ url: server.url, name: 'auth', token: 'bad', collections: ['todos'] });
  t.after(() => a.close());
  /** @type {string[]} */
  const auth = [];
  a.on('auth', (e) => auth.push(e.code));
  /** @type {string[]} */
  const errors = [];
  a.on('error', (e) => errors.push(/** @type {any} */ (e).code));
  await a.collection('todos').put('t', { n: 1 });
  await until(() => auth.length > 0, 'auth event');
  assert.equal(auth[0], 'unauthenticated');
  assert.equal(a.status.pending, 1);
  // The README's event table: 'auth' once per run of refusals, then an
  // 'error' for each refusal while it retries with backoff.
  await until(() => errors.length >= 2, "the refusals after 'auth' told as 'error'");
  assert.deepEqual(auth, ['unauthenticated']);
  assert.deepEqual([...new Set(errors)], ['unauthenticated']);
  // README, status: online says the server answered, whatever it answered;
  // the refused token is told by 'auth' and lastError.
  assert.equal(a.status.online, true, 'the server answers: online');
  assert.equal(a.status.lastError?.code, 'unauthenticated');
  a.setToken('good');
  await until(() => a.status.pending === 0 && a.status.online, 'synced with the new token');
});

test('a live hello refused unavailable and closed 1013 (try again later) is dialled again with backoff; the session opens once the server serves', async (t) => {
  let refusals = 0;
  const server = await new FakeServer({ liveRefusal: () => (refusals < 2 ? (refusals++, 'unavailable') : null) }).start();
  t.after(() => server.stop());
  const a = await openClient({ url: server.url, name: 'tryagain', collections: ['todos'] });
  t.after(() => a.close());
  const hellos = () => server.received.filter((m) => m.get(0) === 'hello').length;
  await until(() => hellos() === 3 && server.sockets.size === 1, 'a live session after two hellos refused 1013');
  assert.equal(refusals, 2);
});

test('backoff grows exponentially with full jitter, a cap and a Retry-After floor', async () => {
  const { backoff } = await import('../src/backoff.js');
  const { backoffInitialMs, backoffMaxMs } = TIMINGS;
  for (let n = 0; n < 20; n++) {
    // Full jitter: uniform in [0, min(max, initial * 2^n)].
    const d = Math.min(backoffMaxMs, backoffInitialMs * 2 ** n);
    assert.equal(backoff(n, { random: () => 0 }), 0);
    assert.equal(backoff(n, { random: () => 0.5 }), Math.round(d / 2));
    assert.equal(backoff(n, { random: () => 1 }), d);
  }
  assert.equal(backoff(0, { random: () => 1 }), backoffInitialMs);
  assert.equal(backoff(100, { random: () => 1 }), backoffMaxMs);
  assert.equal(backoff(3, { base: 10, max: 50, random: () => 1 }), 50);
  // The server's Retry-After is a floor under the jitter.
  assert.equal(backoff(0, { random: () => 0, floor: 2000 }), 2000);
  assert.equal(backoff(100, { random: () => 1, floor: 2000 }), backoffMaxMs);
  // Without an injected random, every delay stays in range.
  for (let i = 0; i < 1000; i++) {
    const v = backoff(4);
    assert.ok(v >= 0 && v <= backoffInitialMs * 16, `${v}`);
  }
});

test('pause holds writes locally; resume pushes them and catches up', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const a = await openClient({ url: server.url, name: 'a', collections: ['todos'] });
  const b = await openClient({ url: server.url, name: 'b', collections: ['todos'] });
  t.after(() => Promise.all([a.close(), b.close()]));
  await until(() => a.status.online && b.status.online, 'both online');
  await a.pause();
  assert.equal(a.status.paused, true);
  assert.equal(a.status.online, false);
  await a.collection('todos').put('offline-a', { n: 1 });
  await b.collection('todos').put('online-b', { n: 2 });
  await until(() => b.status.pending === 0, 'b pushed');
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(server.coll('todos').byId.has('offline-a'), false, 'nothing leaves a paused client');
  assert.equal(await a.collection('todos').get('online-b'), null, 'nothing arrives either');
  assert.equal(a.status.pending, 1);
  await assert.rejects(a.sync(), (e) => /** @type {any} */ (e).code === 'network');
  a.resume();
  await until(async () => (await a.collection('todos').get('online-b'))?.n === 2, 'a catches up');
  await until(async () => (await b.collection('todos').get('offline-a'))?.n === 1, 'b receives the held write');
  assert.equal(a.status.paused, false);
});

test('a refused change is taken back locally; accepted ones stay', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const { encode, equalBytes } = await import('../src/cbor.js');
  const two = encode(2);
  // The server refuses any change that sets x to 2.
  server.refuse = (ch) => equalBytes(ch.record.fields.get('x')?.value, two);
  const a = await openClient({ url: server.url, name: 'a', collections: ['todos'] });
  t.after(() => a.close());
  /** @type {any[]} */
  const refused = [];
  a.on('refused', (r) => refused.push(r.id));
  const todos = a.collection('todos');
  await todos.put('r', { x: 1 });
  await until(() => a.status.pending === 0, 'first write accepted');

  /** @type {any[]} */
  const seen = [];
  todos.subscribe('r', (d) => seen.push(d));
  await a.pause();
  await todos.update('r', { x: 2 }); // will be refused
  await todos.update('r', { y: 3 }); // will be accepted
  await todos.put('new', { x: 2 }); // refused: the record never existed for the server
  assert.deepEqual(await todos.get('r'), { id: 'r', x: 2, y: 3 });
  a.resume();
  await until(() => a.status.pending === 0, 'outbox settled');
  assert.deepEqual(refused.sort(), ['new', 'r']);
  assert.deepEqual(await todos.get('r'), { id: 'r', x: 1, y: 3 }, 'x is back to what the server has');
  assert.equal(await todos.get('new'), null, 'a refused creation disappears');
  await until(() => seen.at(-1)?.x === 1 && seen.at(-1)?.y === 3, 'subscribers see the rollback');
  // The server agrees.
  const onServer = server.coll('todos').byId.get('r').record;
  assert.equal(onServer.fields.get('y') !== undefined, true);
  // And later writes still work.
  await todos.update('r', { x: 5 });
  await until(() => a.status.pending === 0, 'later write pushed');
  assert.deepEqual(await todos.get('r'), { id: 'r', x: 5, y: 3 });
  assert.equal((await a.store.get('todos', 'r'))?.base, undefined, 'no server copy kept once nothing is pending');
});

test('a collection opened later is pulled and followed live', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const a = await openClient({ url: server.url, name: 'a' });
  const b = await openClient({ url: server.url, name: 'b' });
  t.after(() => Promise.all([a.close(), b.close()]));
  await b.collection('notes').put('n1', { text: 'first' });
  await until(() => b.status.pending === 0 && a.status.online, 'b pushed, a online');
  /** @type {any[][]} */
  const seen = [];
  a.collection('notes').subscribe({}, (docs) => seen.push(docs.map((/** @type {any} */ d) => d.text)));
  await until(() => seen.at(-1)?.includes('first'), 'a pulled the existing record');
  await b.collection('notes').put('n2', { text: 'second' });
  await until(() => seen.at(-1)?.includes('second'), 'a follows live');
});

test('pages too large to take are pulled again in smaller pages', async (t) => {
  const server = await new FakeServer({ pageTooLargeOver: 10 }).start();
  t.after(() => server.stop());
  const b = await openClient({ url: server.url, name: 'b', WebSocket: null });
  for (let i = 0; i < 12; i++) await b.collection('big').put('r' + i, { i });
  await until(() => b.status.pending === 0, 'b pushed');
  await b.close();
  const a = await openClient({ url: server.url, name: 'a', WebSocket: null, collections: ['big'] });
  t.after(() => a.close());
  await a.sync();
  assert.equal((await a.collection('big').list()).length, 12);
});

/**
 * A server that takes one token at a time, refusing every other
 * token_expired, and a getToken that hands out the one it takes now:
 * expire(next) makes next the one it takes and ends its live sessions
 * as expired; calls() counts getToken's calls.
 * @param {import('node:test').TestContext} t
 */
async function expiringTokens(t) {
  let valid = 'tok-1';
  const server = await new FakeServer({ auth: (tok) => (tok === valid ? null : 'token_expired') }).start();
  t.after(() => server.stop());
  let n = 0;
  const getToken = async () => {
    n++;
    return valid;
  };
  /** @param {string} next */
  const expire = (next) => {
    valid = next;
    server.expireLive();
  };
  return { server, getToken, expire, calls: () => n };
}

test('a token that expires during a live session is refreshed and the session resumes', async (t) => {
  const { server, getToken, expire, calls } = await expiringTokens(t);
  const a = await openClient({ url: server.url, name: 'a', getToken, collections: ['todos'] });
  const b = await openClient({ url: server.url, name: 'b', getToken, collections: ['todos'] });
  t.after(() => Promise.all([a.close(), b.close()]));
  await until(() => a.status.online && b.status.online && server.sockets.size === 2, 'both live');
  const before = calls();
  expire('tok-2');
  await until(() => calls() > before && a.status.online && server.sockets.size === 2, 'reconnected with fresh tokens');
  await b.collection('todos').put('after', { n: 1 });
  await until(async () => (await a.collection('todos').get('after'))?.n === 1, 'live again');
});

test('a live session whose token expires asks getToken and, given a fresh token, tells the app nothing', async (t) => {
  // README: 'auth' is a refusal the token could not fix; a live session's
  // expiry is refreshed as an HTTP request's is (docs/protocol.md,
  // "Retrying"), so an app that asks its user to sign in on 'auth' does
  // not ask every time a token runs out.
  const { server, getToken, expire, calls } = await expiringTokens(t);
  const a = await openClient({ url: server.url, name: 'a', getToken, collections: ['todos'] });
  t.after(() => a.close());
  /** @type {string[]} */
  const heard = [];
  a.on('auth', (e) => heard.push(`auth ${e.code}`));
  a.on('error', (e) => heard.push(`error ${e.code}`));
  await until(() => /** @type {any} */ (a).syncer?.live && server.sockets.size === 1, 'live');
  for (const next of ['tok-2', 'tok-3']) {
    const before = calls();
    expire(next);
    await until(() => calls() > before && /** @type {any} */ (a).syncer?.live && server.sockets.size === 1, `live again with ${next}`);
  }
  await a.collection('todos').put('after', { n: 1 });
  await a.whenSynced();
  assert.ok(server.coll('todos').byId.has('after'));
  assert.deepEqual(heard, [], 'a refreshed token is no event');
  assert.equal(a.status.lastError, null);
});

test('a token that expires while the live session waits for a pull is refreshed at once, not after a backoff', async (t) => {
  let valid = 'tok-1';
  const server = await new FakeServer({ auth: (tok) => (tok === valid ? null : 'token_expired') }).start();
  t.after(() => server.stop());
  const getToken = async () => valid;
  // A session that ends on its own soon after it began backs off a minute:
  // only a refusal acted on reconnects in time.
  const a = await openClient({ url: server.url, name: 'a', getToken, collections: ['todos'], backoff: { base: 60_000, max: 60_000, random: () => 1 } });
  t.after(() => a.close());
  /** @type {string[]} */
  const auth = [];
  a.on('auth', (e) => auth.push(e.code));
  await until(() => /** @type {any} */ (a).syncer?.live && server.sockets.size === 1, 'live');
  const hellos = server.received.filter((m) => m.get(0) === 'hello').length;
  // The session's next frames wait behind the catch-up of a collection
  // opened now, whose pull the server holds.
  const pulls = slowAnswers(server, PATHS.pull, 300);
  a.collection('notes');
  await until(() => pulls() > 0, 'the catch-up pull sent');
  valid = 'tok-2';
  server.expireLive(); // the error frame, then the close, both before the pull's answer
  await until(() => server.received.filter((m) => m.get(0) === 'hello').length > hellos && /** @type {any} */ (a).syncer?.live, 'live again with a fresh token');
  assert.deepEqual(auth, [], "the refusal acted on (a fresh token at once), as when its frame comes before the close, and not told: getToken fixed it");
  await until(() => [...server.sockets].some((ws) => ws.subs?.has('notes')), 'notes subscribed on the new session');
});

test('a token refused after the app set a newer one is forgotten, not the newer one', async (t) => {
  let valid = 'tok-1';
  /** @type {string[]} */
  const sent = [];
  const server = await new FakeServer({
    auth: (tok) => {
      sent.push(tok);
      return tok === valid ? null : 'unauthenticated';
    },
  }).start();
  t.after(() => server.stop());
  let calls = 0;
  // The app's getToken answers the token it holds from its last sign-in.
  const getToken = async () => {
    calls++;
    return 'tok-1';
  };
  const a = await openClient({ url: server.url, name: 'a', getToken, collections: ['todos'], WebSocket: null, pollInterval: 60_000 });
  t.after(() => a.close());
  /** @type {string[]} */
  const auth = [];
  a.on('auth', (e) => auth.push(e.code));
  await a.sync();
  // The user signs in again while a pull with the old token is on its way.
  const pulls = slowAnswers(server, PATHS.pull, 300);
  valid = 'tok-2';
  const s = a.sync().catch(() => {});
  await until(() => pulls() > 0, 'a pull with tok-1 sent');
  a.setToken('tok-2');
  await s;
  await until(() => auth.length > 0, "the refusal told as 'auth'");
  await a.sync();
  assert.equal(sent.at(-1), 'tok-2', 'the token the app set goes on');
  assert.equal(calls, 1, 'getToken not asked again: the token it would replace was not the one refused');
  assert.deepEqual(auth, ['unauthenticated']);
});

test('a pull refused forbidden or revoked to a token replaced since goes again with the current token: nothing is told, purged or stopped', async (t) => {
  for (const code of ['forbidden', 'revoked']) {
    const server = await new FakeServer().start();
    t.after(() => server.stop());
    let hold = false;
    /** @type {() => void} */
    let release = () => {};
    const gate = new Promise((r) => (release = () => r(undefined)));
    let held = 0;
    /** @type {string[]} the Authorization of each pull */
    const pulls = [];
    // The server refuses tok-1 whatever it asks once it is replaced: the
    // pull sent with it is answered code only after setToken('tok-2').
    const fetchVia = async (/** @type {any} */ input, /** @type {any} */ init) => {
      if (String(input).endsWith(PATHS.pull)) {
        pulls.push(init.headers.Authorization);
        if (hold && init.headers.Authorization === 'Bearer tok-1') {
          held++;
          await gate;
          return new Response(new Uint8Array(0), { status: 403, headers: { 'Convergo-Error': code } });
        }
      }
      return fetch(input, init);
    };
    const w = await openClient({ url: server.url, name: 'w-' + code, collections: ['todos'], WebSocket: null });
    t.after(() => w.close());
    await w.collection('todos').put('kept', { n: 1 });
    await w.whenSynced();
    const a = await openClient({ url: server.url, name: 'a-' + code, token: 'tok-1', collections: ['todos'], WebSocket: null, pollInterval: 60_000, fetch: fetchVia });
    t.after(() => a.close());
    await a.sync();
    assert.equal((await a.collection('todos').get('kept'))?.n, 1, `${code}: the record pulled`);
    /** @type {string[]} */
    const told = [];
    a.on('error', (e) => told.push(`error ${e.code} ${e.message}`));
    a.on('unreadable', (u) => told.push(`unreadable ${u.code}`));
    a.on('revoked', () => told.push('revoked'));
    hold = true;
    await w.collection('todos').put('later', { n: 2 });
    await w.whenSynced();
    const s = a.sync().catch((e) => told.push(`sync ${e.code}`));
    await until(() => held > 0, `${code}: a pull with tok-1 held`);
    a.setToken('tok-2');
    release();
    await s;
    await a.sync();
    assert.deepEqual(told, [], `${code}: the refusal of tok-1 is not told to the app`);
    assert.equal(pulls.at(-1), 'Bearer tok-2', `${code}: the pull went again with tok-2`);
    assert.equal((await a.collection('todos').get('kept'))?.n, 1, `${code}: nothing purged`);
    assert.equal((await a.collection('todos').get('later'))?.n, 2, `${code}: the pull with tok-2 brought the later write`);
    assert.deepEqual(a.status.unreadable, []);
    assert.equal(a.status.revoked, false);
  }
});

test('a live session refused forbidden or revoked for a token replaced since dials again with the current token: nothing is told, purged or stopped', async (t) => {
  for (const code of ['revoked', 'forbidden']) {
    /** @type {Set<string>} the tokens the server refuses code */
    const denied = new Set();
    const server = await new FakeServer({ auth: (tok) => (denied.has(tok) ? code : null) }).start();
    t.after(() => server.stop());
    const a = await openClient({ url: server.url, name: 'a-' + code, token: 'tok-1', collections: ['todos'] });
    t.after(() => a.close());
    await a.collection('todos').put('kept', { n: 1 });
    await a.whenSynced();
    await until(() => [...server.sockets].some((ws) => /** @type {any} */ (ws).token === 'tok-1'), `${code}: a live session of tok-1`);
    /** @type {string[]} */
    const told = [];
    a.on('error', (e) => told.push(`error ${e.code} ${e.message}`));
    a.on('unreadable', (u) => told.push(`unreadable ${u.code}`));
    a.on('revoked', () => told.push('revoked'));
    // The same subject's new token keeps the session (its hello's token
    // is tok-1); then tok-1 is refused, and its session ended so.
    a.setToken('tok-2');
    denied.add('tok-1');
    server.endLiveOf('tok-1', code);
    await until(() => [...server.sockets].some((ws) => /** @type {any} */ (ws).token === 'tok-2'), `${code}: a live session of tok-2`);
    await a.collection('todos').put('after', { n: 2 });
    await a.whenSynced();
    assert.deepEqual(told, [], `${code}: the refusal of tok-1 is not told to the app`);
    assert.equal((await a.collection('todos').get('kept'))?.n, 1, `${code}: nothing purged`);
    assert.equal(server.coll('todos').byId.has('after'), true, `${code}: the write after it pushed`);
    assert.equal(a.status.revoked, false);
    assert.deepEqual(a.status.unreadable, []);
  }
});

test('a refused token whose refresh fails is told as auth, over HTTP as over a live session', async (t) => {
  for (const WebSocket of [null, undefined]) {
    let valid = 'tok-1';
    const server = await new FakeServer({ auth: (tok) => (tok === valid ? null : 'token_expired') }).start();
    t.after(() => server.stop());
    let signedOut = false;
    const getToken = async () => {
      if (signedOut) throw new Error('refresh token revoked: sign in again');
      return valid;
    };
    const a = await openClient({ url: server.url, name: `a${WebSocket === null}`, getToken, collections: ['todos'], ...(WebSocket === null ? { WebSocket } : {}), backoff: { base: 20, max: 50 } });
    t.after(() => a.close());
    /** @type {import('../src/errors.js').ConvergoError[]} */
    const heard = [];
    a.on('auth', (e) => heard.push(e));
    await a.sync();
    valid = 'tok-2';
    signedOut = true;
    if (WebSocket !== null) server.expireLive();
    await a.collection('todos').put('x', { n: 1 });
    a.sync().catch(() => {});
    await until(() => heard.length > 0, `'auth' heard (${WebSocket === null ? 'HTTP' : 'live'})`);
    assert.equal(heard[0].code, 'token_expired');
    assert.match(String(/** @type {any} */ (heard[0]).cause?.message ?? ''), /sign in again/, "the refresh's failure goes with it");
  }
});

test('whenSynced waits for the first sync and an empty outbox', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const a = await openClient({ url: server.url, name: 'a', collections: ['todos'] });
  t.after(() => a.close());
  await a.collection('todos').put('t', { n: 1 });
  await a.whenSynced();
  assert.equal(a.status.pending, 0);
  assert.ok(server.coll('todos').byId.has('t'));
  await a.whenSynced(); // already synced: at once

  const offline = await openClient({ url: 'http://127.0.0.1:9', name: 'o' });
  const waiting = offline.whenSynced();
  await offline.close();
  await assert.rejects(waiting, (e) => /** @type {any} */ (e).code === 'closed');
});

test('the leader stores when it last synced, for after a reload; whenSynced waits for a sync newer than it', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const idb = freshIDB();
  const a = await openClient({ url: server.url, name: 'kept', indexedDB: idb, collections: ['todos'] });
  await a.collection('todos').put('t', { n: 1 });
  await a.whenSynced();
  const synced = /** @type {number} */ (a.status.lastSyncedAt);
  await until(async () => (await a.store.getMeta('lastSyncedAt')) === a.status.lastSyncedAt, 'lastSyncedAt stored');
  await a.close();
  const again = await openClient({ url: 'http://127.0.0.1:9', name: 'kept', indexedDB: idb, sync: false });
  t.after(() => again.close());
  assert.ok(/** @type {number} */ (again.status.lastSyncedAt) >= synced, 'the stored lastSyncedAt, read at open');
  let done = false;
  again.whenSynced().then(() => (done = true), () => {});
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(done, false, 'a sync before the reload does not count');
});

test('a lastSyncedAt still waiting to be stored is stored by close, and read at the next open', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const idb = freshIDB();
  const a = await openClient({ url: server.url, name: 'closing', indexedDB: idb, collections: ['todos'] });
  await a.collection('todos').put('t', { n: 1 });
  await a.whenSynced();
  await until(async () => (await a.store.getMeta('lastSyncedAt')) === a.status.lastSyncedAt, 'lastSyncedAt stored');
  const stored = a.status.lastSyncedAt;
  await new Promise((r) => setTimeout(r, 5));
  // A sync whose lastSyncedAt waits to settle (500 ms) when close comes.
  await a.sync();
  const synced = a.status.lastSyncedAt;
  assert.ok(/** @type {number} */ (synced) > /** @type {number} */ (stored), 'the sync reports a newer lastSyncedAt');
  await a.close();
  const again = await openClient({ url: 'http://127.0.0.1:9', name: 'closing', indexedDB: idb, sync: false });
  t.after(() => again.close());
  assert.equal(again.status.lastSyncedAt, synced, 'the lastSyncedAt close stored, read at open');
});

test("a newer server's unknown keys and message types are ignored", async (t) => {
  const server = await new FakeServer().start();
  server.newer = true; // key 99 and a text key in every answer and message, a 'bulletin' after welcome
  t.after(() => server.stop());
  const a = await openClient({ url: server.url, name: 'a', collections: ['todos'] });
  const b = await openClient({ url: server.url, name: 'b', collections: ['todos'] });
  const c = await openClient({ url: server.url, name: 'c', collections: ['todos'], WebSocket: null, pollInterval: 50 });
  t.after(() => Promise.all([a.close(), b.close(), c.close()]));
  /** @type {any[]} */
  const errors = [];
  for (const db of [a, b, c]) db.on('error', (e) => errors.push(e));
  await a.collection('todos').put('t1', { n: 1 });
  await until(async () => (await b.collection('todos').get('t1'))?.n === 1, 'b to see t1 live');
  await until(async () => (await c.collection('todos').get('t1'))?.n === 1, 'c to pull t1');
  await b.collection('todos').update('t1', { n: 2 });
  await until(async () => (await a.collection('todos').get('t1'))?.n === 2, 'a to see the update live');
  await until(() => a.status.pending === 0 && b.status.pending === 0 && a.status.online && b.status.online, 'drained, online');
  assert.deepEqual(errors, []);
  assert.equal(a.status.lastError, null);
});

/**
 * Waits until client c's clock reads past every stamp that client w's
 * record coll/id holds, so that c's next write to it is stamped later than
 * all of them. Written later is not stamped later by itself: each client's
 * clock is corrected by the server offset it measured, and a measurement
 * is off by up to half a round trip, which a busy machine makes longer
 * than any fixed pause.
 * @param {import('../src/database.js').Database} c
 * @param {import('../src/database.js').Database} w
 * @param {string} coll
 * @param {string} id
 */
async function clockPast(c, w, coll, id) {
  const top = maxStamp(fromStored(await w.store.get(coll, id), id));
  await until(() => c.store.now() > top.wall, `the clock to pass ${coll}/${id}'s newest stamp (${top.wall})`);
}

test('a change that lost to newer writes is acknowledged, reported as superseded, and the record converges', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const a = await openClient({ url: server.url, name: 'a', collections: ['todos'] });
  const b = await openClient({ url: server.url, name: 'b', collections: ['todos'] });
  t.after(() => Promise.all([a.close(), b.close()]));
  await until(() => a.status.online && b.status.online, 'both online');
  /** @type {any[]} */
  const superseded = [];
  /** @type {any[]} */
  const refused = [];
  a.on('superseded', (s) => superseded.push(s));
  a.on('refused', (r) => refused.push(r));
  await a.pause();
  // a writes first (older stamps), b later; a pushes after b.
  await a.collection('todos').put('r', { title: 'from a', x: 1 });
  await a.collection('todos').update('r', { title: 'from a again' });
  await clockPast(b, a, 'todos', 'r');
  await b.collection('todos').put('r', { title: 'from b', x: 2 });
  await until(() => b.status.pending === 0, 'b pushed');
  a.resume();
  await until(() => a.status.pending === 0, 'the outbox drains: superseded is an acknowledgement');
  assert.deepEqual(refused, []);
  const statuses = server.pushStatuses.flat();
  assert.ok(statuses.includes(STATUSES.superseded), `statuses ${statuses}`);
  assert.deepEqual(
    superseded.map((s) => [s.collection, s.id, s.status, [...s.lost].sort()]),
    [
      ['todos', 'r', 'superseded', ['title', 'x']],
      ['todos', 'r', 'superseded', ['title']],
    ],
  );
  await until(async () => (await a.collection('todos').get('r'))?.title === 'from b', 'a converges on the newer value');
  assert.deepEqual(await a.collection('todos').get('r'), { id: 'r', title: 'from b', x: 2 });
  assert.deepEqual(await b.collection('todos').get('r'), { id: 'r', title: 'from b', x: 2 });

  // A change partly newer: applied, naming the field that lost.
  await a.pause();
  await a.collection('todos').update('r', { x: 3 });
  await clockPast(b, a, 'todos', 'r');
  await b.collection('todos').update('r', { x: 4 });
  await until(() => b.status.pending === 0, 'b pushed');
  await a.collection('todos').update('r', { done: true });
  superseded.length = 0;
  a.resume();
  await until(() => a.status.pending === 0 && superseded.length === 1, 'a pushed');
  assert.deepEqual(superseded, [{ collection: 'todos', id: 'r', lost: ['x'], status: 'superseded' }]);
  await until(async () => (await b.collection('todos').get('r'))?.done === true, 'b sees the field that applied');
  await until(async () => (await a.collection('todos').get('r'))?.x === 4, 'a converges on x');
});

test('a change that partly applies reports its lost fields with status applied', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const a = await openClient({ url: server.url, name: 'a', collections: ['todos'], WebSocket: null, pollInterval: 60_000 });
  const b = await openClient({ url: server.url, name: 'b', collections: ['todos'], WebSocket: null, pollInterval: 60_000 });
  t.after(() => Promise.all([a.close(), b.close()]));
  await a.sync();
  await b.sync();
  /** @type {any[]} */
  const superseded = [];
  a.on('superseded', (s) => superseded.push(s));
  await a.pause();
  // One change of a holds x (older than b's) and y (which nobody else writes).
  await a.collection('todos').put('p', { x: 1, y: 1 });
  // b's x is the newer: each clock is corrected by its own hello, so
  // a wait on the wall clock does not say b's stamps are past a's.
  const top = maxStamp(fromStored(await a.store.get('todos', 'p'), 'p'));
  await until(() => b.store.now() > top.wall, "b's clock past a's stamp");
  await b.collection('todos').put('p', { x: 2 });
  await b.sync();
  a.resume();
  await until(() => a.status.pending === 0 && superseded.length === 1, 'a pushed');
  assert.deepEqual(superseded, [{ collection: 'todos', id: 'p', lost: ['x'], status: 'applied' }]);
  assert.deepEqual(server.pushStatuses.at(-1), [STATUSES.applied]);
  await a.sync();
  assert.deepEqual(await a.collection('todos').get('p'), { id: 'p', x: 2, y: 1 });
});

test('a server of another protocol version stops sync with unsupported_version until sync()', async (t) => {
  const server = await new FakeServer({ protocol: 3 }).start();
  t.after(() => server.stop());
  const a = await openClient({ url: server.url, name: 'a', collections: ['todos'], backoff: { base: 10, max: 20 } });
  t.after(() => a.close());
  /** @type {any[]} */
  const errors = [];
  a.on('error', (e) => errors.push(e));
  await until(() => a.status.lastError?.code === 'unsupported_version', 'the error in the status');
  assert.equal(a.status.online, false);
  assert.equal(errors.length, 1, 'reported once');
  assert.equal(errors[0].code, 'unsupported_version');
  assert.equal(errors[0].status, 400);
  assert.match(errors[0].requestId, /^fake-/);
  const requests = server.requests.length;
  await a.collection('todos').put('t', { n: 1 }); // a write does not bring retries either
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(server.requests.length, requests, 'no retries: the backoff would have tried about 15 times');
  // sync() tries once more and says why it failed.
  await assert.rejects(a.sync(), (/** @type {any} */ e) => e.code === 'unsupported_version');
  assert.equal(server.requests.length, requests + 1);
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(server.requests.length, requests + 1, 'and stops again');
  assert.equal(a.status.pending, 1, 'the write waits in the outbox');
});

test('a live hello for another version ends with unsupported_version, without retries', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const a = await openClient({ url: server.url, name: 'a', collections: ['todos'], backoff: { base: 10, max: 20 } });
  t.after(() => a.close());
  await until(() => a.status.online && [...server.sockets].some((ws) => ws.subs?.has('todos')), 'live and subscribed');
  server.opts.protocol = 3; // the server was replaced by one that speaks only 3
  const requests = server.requests.length;
  server.dropSockets();
  await until(() => a.status.lastError?.code === 'unsupported_version', 'the error in the status');
  await new Promise((r) => setTimeout(r, 300));
  assert.ok(server.requests.length <= requests + 1, `${server.requests.length - requests} requests after the refusal: ${server.requests.slice(requests)}`);
});

test('every request speaks version 2 on its paths; errors carry the request id', async (t) => {
  const server = await new FakeServer({ auth: (tok) => (tok === 'good' ? null : 'unauthenticated') }).start();
  t.after(() => server.stop());
  const a = await openClient({ url: server.url, name: 'ids', token: 'bad', collections: ['todos'], WebSocket: null });
  t.after(() => a.close());
  /** @type {any[]} */
  const auth = [];
  a.on('auth', (e) => auth.push(e));
  await until(() => auth.length > 0, 'auth event');
  assert.equal(auth[0].code, 'unauthenticated');
  assert.equal(auth[0].status, 401);
  assert.match(auth[0].requestId, /^fake-\d+$/);
  assert.match(auth[0].message, new RegExp(auth[0].requestId));
  a.setToken('good');
  await a.collection('todos').put('t', { n: 1 });
  await until(() => a.status.pending === 0 && a.status.online, 'synced');
  assert.ok(server.requestHeaders.length >= 3);
  for (const { path, headers } of server.requestHeaders) {
    assert.ok([PATHS.hello, PATHS.push, PATHS.pull].includes(path), path);
    assert.equal(headers['convergo-protocol'], '2');
    assert.equal(headers['content-type'], 'application/cbor');
  }
});

test("the server's max-push is followed, above 1,000 too", async (t) => {
  const server = await new FakeServer({ maxPush: 1500 }).start();
  t.after(() => server.stop());
  const a = await openClient({ url: server.url, name: 'many', collections: ['todos'], WebSocket: null, pollInterval: 60_000 });
  t.after(() => a.close());
  await a.sync();
  await a.pause();
  for (let i = 0; i < 1200; i++) await a.collection('todos').put('r' + i, { i });
  const pushes = server.pushes;
  a.resume();
  await until(() => a.status.pending === 0, 'pushed', 20_000);
  assert.equal(server.pushes - pushes, 1, 'one push of 1,200 changes');
  assert.equal(server.pushStatuses.at(-1)?.length, 1200);
});

test('a max-push or max-pull announced as 0 is the default: batches and pages as large as the default, not of one', async (t) => {
  const server = await new FakeServer({ maxPush: 0, maxPull: 0 }).start();
  t.after(() => server.stop());
  const a = await openClient({ url: server.url, name: 'zero', collections: ['todos'], WebSocket: null, pollInterval: 60_000 });
  t.after(() => a.close());
  await a.sync();
  await a.pause();
  for (let i = 0; i < 30; i++) await a.collection('todos').put('r' + i, { i });
  const pushes = server.pushes;
  a.resume();
  await until(() => a.status.pending === 0, 'pushed');
  assert.equal(server.pushes - pushes, 1, 'one push of 30 changes');
  assert.equal(server.pushStatuses.at(-1)?.length, 30);
  const b = await openClient({ url: server.url, name: 'zero-reader', collections: ['todos'], WebSocket: null, pollInterval: 60_000 });
  t.after(() => b.close());
  const pulls = server.pulls.length;
  await b.sync();
  assert.equal((await b.collection('todos').list()).length, 30);
  const asked = server.pulls.slice(pulls).map((m) => m.get(3));
  assert.ok(asked.length > 0 && asked.every((n) => n === DEFAULTS.maxPullRecords), `pulls ask for pages of the default, not ${asked}`);
});


test("writes are stamped with the ids of the token's subject; another subject's changes wait for it", async (t) => {
  const { REPLICA } = await import('../src/constants.js');
  const { replicaPrefix } = await import('../src/replica.js');
  const alice = await replicaPrefix('alice');
  const bob = await replicaPrefix('bob');
  assert.equal(alice, REPLICA.samples.alice);
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  /** @type {any[]} */
  const refused = [];
  let tok = jwtOf('alice');
  const a = await openClient({ url: server.url, name: 'subj', getToken: () => tok, collections: ['todos'] });
  t.after(() => a.close());
  a.on('refused', (r) => refused.push(r));
  // Stamped as alice before the first sync: open() asked getToken.
  assert.ok(a.store.replica?.startsWith(alice + REPLICA.separator), a.store.replica ?? '');
  await a.collection('todos').put('a1', { by: 'alice' });
  await until(() => a.status.pending === 0, 'pushed as alice');
  const stampOf = (/** @type {string} */ id) => server.coll('todos').byId.get(id).record.fields.get('by').stamp.replica;
  assert.ok(stampOf('a1').startsWith(alice + '_'));
  await a.pause();
  await a.collection('todos').put('a2', { by: 'alice' }); // written as alice, not yet pushed
  tok = jwtOf('bob');
  a.setToken(tok);
  await until(() => a.store.prefix === bob, 'writing as bob');
  await a.collection('todos').put('b1', { by: 'bob' });
  a.resume();
  await until(() => server.coll('todos').byId.has('b1'), "bob's write pushed");
  assert.ok(stampOf('b1').startsWith(bob + '_'));
  // The server holding b1 is not the end of the round: the client still
  // reads the answer, settles b1 and counts the outbox.
  await until(() => a.status.pending === 0 && a.status.held === 1, 'the push of b1 settled');
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(server.coll('todos').byId.has('a2'), false, "alice's change waits for alice");
  assert.equal(a.status.pending, 0, 'held, not pending');
  assert.equal(a.status.held, 1);
  assert.deepEqual(await a.whenSynced(), { refused: 0 }, "whenSynced does not wait for another subject's changes");
  tok = jwtOf('alice');
  a.setToken(tok);
  await until(() => server.coll('todos').byId.has('a2'), "alice's change pushed once she is back");
  await until(() => a.status.pending === 0 && a.status.held === 0, 'nothing pending or held');
  assert.ok(stampOf('a2').startsWith(alice + '_'));
  assert.deepEqual(refused, [], 'nothing forged');
});

test("a push names its replica by its device part under its own token's subject, whole under a token it cannot read", async (t) => {
  const { replicaPrefix } = await import('../src/replica.js');
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  for (const [token, device] of /** @type {[string, boolean][]} */ ([
    [jwtOf('carol'), true],
    ['', true], // anonymous: the shared prefix
    ['opaque', false], // no subject the client can read: the server may read one
  ])) {
    const a = await openClient({ url: server.url, name: `dev-${device}-${token.length}`, token, collections: ['todos'], WebSocket: null });
    t.after(() => a.close());
    await a.collection('todos').put(`d${token.length}`, { n: 1 });
    await until(() => a.status.pending === 0, 'pushed');
    const last = server.pushReplicas.at(-1);
    assert.equal(last?.replica, a.store.replica);
    assert.equal(last?.device ?? false, device, `token ${token || '(none)'}`);
    if (device) assert.ok(last?.replica.startsWith(await replicaPrefix(token ? 'carol' : '')));
  }
});

test('a request body made for its token is made again for a refreshed one', async () => {
  const { postAnswer } = await import('../src/http.js');
  const tokens = ['old', 'new'];
  let i = 0;
  /** @type {string[]} */
  const made = [];
  /** @type {string[]} */
  const sent = [];
  const o = {
    base: 'http://convergo.test',
    token: async (/** @type {boolean} */ force) => tokens[force ? ++i : i],
    fetch: /** @type {any} */ (
      async (/** @type {string} */ _url, /** @type {any} */ init) => {
        sent.push(`${init.headers.Authorization} ${new TextDecoder().decode(init.body)}`);
        if (sent.length === 1) return new Response(new Uint8Array(0), { status: 401, headers: { 'Convergo-Error': 'token_expired' } });
        return new Response(new Uint8Array([0xa0]), { status: 200 });
      }
    ),
  };
  await postAnswer(o, PATHS.push, async (tok) => {
    made.push(tok);
    return new TextEncoder().encode(`body for ${tok}`);
  });
  assert.deepEqual(made, ['old', 'new']);
  assert.deepEqual(sent, ['Bearer old body for old', 'Bearer new body for new']);
});

test('stop() in the middle of a pull of many pages asks for no page more, and pause() does not wait for the rest', async (t) => {
  const server = await new FakeServer({ maxPull: 1 }).start();
  t.after(() => server.stop());
  const w = await openClient({ url: server.url, name: 'w', collections: ['todos'], WebSocket: null });
  for (let i = 0; i < 6; i++) await w.collection('todos').put('p' + i, { i });
  await w.whenSynced();
  await w.close();
  // Six pages, one at a time; the first is held until pause() was called,
  // and any asked for after it are answered at once: a client that went on
  // pulling would have asked for all of them by the time pause() resolves.
  const pulls = heldAnswers(server, PATHS.pull);
  const r = await openClient({ url: server.url, name: 'r', collections: ['todos'], WebSocket: null });
  t.after(() => r.close());
  await until(() => pulls.count() === 1, 'the first page asked for');
  const paused = r.pause();
  pulls.release();
  await paused;
  // pause() waited for the loop to end: no request of it can come later.
  assert.equal(pulls.count(), 1, 'no page asked for after stop()');
  assert.ok((await r.collection('todos').list()).length < 6, 'the pull did not go on');
});

test('a token over the protocol bound is not sent: auth unauthenticated at once, over HTTP and live, and a new token resumes sync', async (t) => {
  const max = DEFAULTS.maxTokenBytes;
  const big = 'a'.repeat(max + 1);
  const exact = 'b'.repeat(max);
  // This server would take it (the real one answers 431, outside the
  // protocol's errors, which a client retries as the network's for ever).
  const server = await new FakeServer({ auth: (tok) => ([big, exact].includes(tok) ? null : 'unauthenticated') }).start();
  t.after(() => server.stop());
  for (const WebSocket of [null, undefined]) {
    const name = WebSocket === null ? 'bigtoken-http' : 'bigtoken-live';
    const a = await openClient({ url: server.url, name, token: big, collections: ['todos'], ...(WebSocket === null ? { WebSocket } : {}) });
    t.after(() => a.close());
    /** @type {import('../src/errors.js').ConvergoError[]} */
    const auth = [];
    a.on('auth', (e) => auth.push(e));
    await a.collection('todos').put(name, { n: 1 });
    await until(() => auth.length > 0, `auth event (${name})`);
    assert.equal(auth[0].code, 'unauthenticated');
    assert.match(auth[0].message, new RegExp(`${max + 1} bytes`));
    const sent = server.requestHeaders.filter((r) => r.headers.authorization === 'Bearer ' + big).length;
    assert.equal(sent, 0, `${name}: requests sent with the token over the bound`);
    assert.ok(!server.received.some((m) => m.get(0) === 'hello' && m.get(3) === big), `${name}: a live hello sent with it`);
    assert.equal(a.status.pending, 1);
    // A token of exactly the bound goes.
    a.setToken(exact);
    await until(() => a.status.pending === 0, `${name}: synced with a token of ${max} bytes`);
  }
});
