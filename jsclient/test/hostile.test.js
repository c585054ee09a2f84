// A server that is broken or hostile: whatever it sends, the client loses
// no local data, keeps its IndexedDB whole, and neither spins nor stops
// for ever. Each test names what the server does wrong.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FakeServer } from './helpers/server.js';
import { openClient, until, waitsOf } from './helpers/util.js';
import { CONTENT_TYPE, MODEL, PATHS, TIMINGS } from '../src/constants.js';
import { decode, encode } from '../src/cbor.js';
import { cursorOf } from '../src/syncstore.js';

/** The most a timer waits: setTimeout fires at once past it. */
const MAX_TIMER_MS = 2 ** 31 - 1;

for (const retryAfter of ['1000000000', 'Infinity']) {
  test(`a Retry-After of ${retryAfter} s is taken as the longest the client waits, not as "at once" nor "for ever"`, async (t) => {
    const server = await new FakeServer().start();
    t.after(() => server.stop());
    server.retryAfter = /** @type {any} */ (retryAfter);
    server.limitedUntil = Infinity;
    const waits = await waitsOf(t);
    const db = await openClient({ url: server.url, name: 'ra', collections: ['todos'], WebSocket: null });
    t.after(() => db.close());
    await db.collection('todos').put('x', { n: 1 });
    await until(() => waits.length > 0, 'the wait after the rate-limited attempt');
    const [wait] = waits;
    // A wait past the longest timer would fire at once (a request storm);
    // an endless one would never try again.
    assert.ok(wait <= TIMINGS.maxRetryAfterMs && wait <= MAX_TIMER_MS, `the client waits ${wait} ms, at most ${TIMINGS.maxRetryAfterMs}`);
    assert.ok(wait > TIMINGS.maxRetryAfterMs - 60_000, `the client waits ${wait} ms, about ${TIMINGS.maxRetryAfterMs}: the server asked for more`);
    await assert.rejects(db.sync(), (/** @type {any} */ e) => e.code === 'rate_limited' && e.retryAfter <= TIMINGS.maxRetryAfterMs / 1000);
    assert.equal(server.limited.length, 1, 'one request, rate-limited');
    assert.equal(db.status.pending, 1, 'the write waits in the outbox');
  });
}

/**
 * A fetch that lets fn answer a request in the server's place: fn gets
 * the path and the decoded body, and returns the answer's body (status
 * 200), or null to let the server answer.
 * @param {(path: string, body: Map<number, any>) => Uint8Array|null} fn
 * @returns {typeof fetch}
 */
function answering(fn) {
  return async (url, init) => {
    const body = fn(new URL(String(url)).pathname, decode(/** @type {Uint8Array} */ (init?.body), { canonical: false }));
    if (body === null) return fetch(url, init);
    return new Response(/** @type {Uint8Array<ArrayBuffer>} */ (body), { status: 200, headers: { 'Content-Type': CONTENT_TYPE } });
  };
}

for (const [what, nextOf] of /** @type {[string, (cursor: Uint8Array) => Uint8Array][]} */ ([
  ['the cursor it was asked from', (cursor) => cursor],
  ['a cursor asked from before (going back)', () => new Uint8Array(0)],
])) {
  test(`pages that say more from ${what} end the pull as malformed, not in a loop; the collection is tried again with backoff and nothing local is lost`, async (t) => {
    const server = await new FakeServer({ maxPull: 1 }).start();
    t.after(() => server.stop());
    const w = await openClient({ url: server.url, name: 'w', collections: ['todos'], WebSocket: null });
    for (let i = 0; i < 3; i++) await w.collection('todos').put('p' + i, { i });
    await w.whenSynced();
    await w.close();
    // The first page is the server's; every page after it says there is
    // more, from the cursor nextOf gives. The pulls made before the
    // loop's first backoff began are counted as each is made: the
    // backoff's full jitter may make it short enough for the next try
    // to come before the test looks.
    let pulls = 0;
    const waits = await waitsOf(t);
    const fetch = answering((path, body) => {
      if (path !== PATHS.pull) return null;
      if (waits.length === 0) pulls++;
      const cursor = body.get(2) ?? new Uint8Array(0);
      return cursor.length === 0 ? null : encode(new Map(/** @type {[number, unknown][]} */ ([[1, []], [2, nextOf(cursor)], [3, true]])));
    });
    const r = await openClient({ url: server.url, name: 'r', collections: ['todos'], WebSocket: null, fetch });
    t.after(() => r.close());
    /** @type {any[]} */
    const errors = [];
    r.on('error', (e) => errors.push(e));
    await r.collection('todos').put('mine', { n: 1 });
    await until(() => errors.length > 0 && waits.length > 0, 'the pull told failed, and a backoff before the collection is tried again');
    assert.equal(errors[0].code, 'malformed');
    assert.match(errors[0].message, /^pull todos: /);
    assert.ok(pulls >= 2 && pulls <= 4, `${pulls} pulls before the backoff`);
    await until(() => r.status.pending === 0, 'the local write pushed all the same');
    assert.deepEqual(await r.collection('todos').get('mine'), { id: 'mine', n: 1 });
    assert.ok(await r.collection('todos').get('p0'), 'the first page kept');
  });
}

test('a hello announcing limits past what the client can use (2^40 changes a push, records a pull, bytes) syncs all the same', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const w = await openClient({ url: server.url, name: 'w', collections: ['todos'], WebSocket: null });
  await w.collection('todos').put('theirs', { n: 1 });
  await w.whenSynced();
  await w.close();
  const big = 2 ** 40;
  /** @type {typeof fetch} */
  const fetchAbsurd = async (url, init) => {
    const res = await fetch(url, init);
    if (new URL(String(url)).pathname !== PATHS.hello) return res;
    const m = decode(new Uint8Array(await res.arrayBuffer()), { canonical: false });
    for (const k of [4, 5, 6, 9, 10]) m.set(k, big); // max-push, max-pull, max-body, max-page-bytes, max-message-bytes
    return new Response(encode(m), { status: 200, headers: { 'Content-Type': CONTENT_TYPE } });
  };
  const r = await openClient({ url: server.url, name: 'r', collections: ['todos'], WebSocket: null, fetch: fetchAbsurd });
  t.after(() => r.close());
  /** @type {any[]} */
  const errors = [];
  r.on('error', (e) => errors.push(e));
  await r.collection('todos').put('mine', { n: 2 });
  await r.sync();
  assert.deepEqual(errors, []);
  assert.equal(r.status.pending, 0, 'the write pushed');
  assert.ok(server.coll('todos').byId.has('mine'));
  assert.deepEqual(await r.collection('todos').get('theirs'), { id: 'theirs', n: 1 }, 'the records pulled');
});

test('a page whose next cursor is over the protocol’s max-cursor-bytes is malformed: the cursor stored stays one the server can read', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const w = await openClient({ url: server.url, name: 'w', collections: ['todos'], WebSocket: null });
  t.after(() => w.close());
  await w.collection('todos').put('p0', { i: 0 });
  await w.whenSynced();
  let huge = true;
  const fetch = answering((path) =>
    path === PATHS.pull && huge ? encode(new Map(/** @type {[number, unknown][]} */ ([[1, []], [2, new Uint8Array(MODEL.maxCursorBytes + 1)], [3, false]]))) : null,
  );
  const r = await openClient({ url: server.url, name: 'r', collections: ['todos'], WebSocket: null, fetch });
  t.after(() => r.close());
  /** @type {any[]} */
  const errors = [];
  r.on('error', (e) => errors.push(e));
  await until(() => errors.length > 0, 'the pull told failed');
  assert.equal(errors[0].code, 'malformed');
  assert.equal((await cursorOf(r.store, 'todos')).length, 0, 'no cursor stored');
  // The server mended, the collection syncs.
  huge = false;
  await r.sync();
  assert.deepEqual(await r.collection('todos').get('p0'), { id: 'p0', i: 0 });
  await w.collection('todos').put('p1', { i: 1 });
  await w.whenSynced();
  await r.sync();
  assert.deepEqual(await r.collection('todos').get('p1'), { id: 'p1', i: 1 });
});

/** A record {1: id, 3: fields} of the given fields, each [wall, 0, "srv", value] of its value. */
const hostileRecord = (/** @type {string} */ id, /** @type {[string, unknown][]} */ fields) =>
  new Map(/** @type {[number, unknown][]} */ ([[1, id], [3, new Map(fields.map(([name, v]) => [name, [1, 0, 'srv', v]]))]]));

for (const [what, record] of /** @type {[string, () => unknown][]} */ ([
  // A text over 2^16 bytes has a 5-byte head.
  ['a value one byte over max-value-bytes', () => hostileRecord('big', [['f', 'x'.repeat(MODEL.maxValueBytes - 4)]])],
  ['a record over max-record-bytes', () => hostileRecord('big', ['a', 'b', 'c'].map((f) => [f, 'x'.repeat(Math.ceil(MODEL.maxRecordBytes / 3))]))],
  ['a field past max-fields-per-record', () => hostileRecord('many', Array.from({ length: MODEL.maxFieldsPerRecord + 1 }, (_, i) => [`f${i}`, i]))],
])) {
  test(`a page holding a record over the model limits (${what}) is malformed, as any unreadable page: the pull fails at once, is tried again with backoff, and syncs once the server mends`, async (t) => {
    const server = await new FakeServer().start();
    t.after(() => server.stop());
    const w = await openClient({ url: server.url, name: 'w', collections: ['todos'], WebSocket: null });
    t.after(() => w.close());
    await w.collection('todos').put('p0', { i: 0 });
    await w.whenSynced();
    let hostile = true;
    let pulls = 0;
    const waits = await waitsOf(t);
    const fetch = answering((path) => {
      if (path !== PATHS.pull || !hostile) return null;
      if (waits.length === 0) pulls++;
      return encode(new Map(/** @type {[number, unknown][]} */ ([[1, [record()]], [2, new Uint8Array([1])], [3, false]])));
    });
    const r = await openClient({ url: server.url, name: 'r', collections: ['todos'], WebSocket: null, fetch });
    t.after(() => r.close());
    /** @type {any[]} */
    const errors = [];
    r.on('error', (e) => errors.push(e));
    await r.collection('todos').put('mine', { n: 1 });
    await until(() => errors.length > 0 && waits.length > 0, 'the pull told failed, and a backoff before the collection is tried again');
    assert.equal(errors[0].code, 'malformed', errors[0].message);
    assert.equal(pulls, 1, 'one pull before the backoff: an unreadable page is not asked for again in fewer records');
    assert.equal((await cursorOf(r.store, 'todos')).length, 0, 'no cursor stored');
    hostile = false;
    await r.sync();
    assert.deepEqual(await r.collection('todos').get('p0'), { id: 'p0', i: 0 });
    assert.deepEqual(await r.collection('todos').get('mine'), { id: 'mine', n: 1 });
  });
}

test('a live resync naming a collection the client does not sync is passed over: nothing of it is pulled, stored or subscribed', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const w = await openClient({ url: server.url, name: 'w', collections: ['secrets'], WebSocket: null });
  t.after(() => w.close());
  await w.collection('secrets').put('s', { n: 1 });
  await w.whenSynced();
  const r = await openClient({ url: server.url, name: 'r', collections: ['todos'] });
  t.after(() => r.close());
  await until(() => [...server.sockets].some((ws) => ws.subs?.has('todos')), 'live');
  const [ws] = server.sockets;
  ws.send(encode(new Map(/** @type {[number, unknown][]} */ ([[0, 'resync'], [1, 'secrets']]))));
  // A resync of a collection the client syncs, after it: the session
  // handles messages in order, so once it is handled the first one was.
  const pulls = server.pulls.length;
  server.resync('todos');
  await until(() => server.pulls.length > pulls && ws.subs?.has('todos'), 'todos pulled and subscribed again');
  assert.deepEqual(
    server.pulls.filter((m) => m.get(5) === r.store.replica).map((m) => m.get(1)).filter((c) => c === 'secrets'),
    [],
    'secrets never pulled',
  );
  assert.equal(ws.subs?.has('secrets'), false, 'nor subscribed');
  assert.equal(await r.store.get('secrets', 's'), undefined, 'nor stored');
});

/** A live reset of collection c, as a server sends it. */
const resetOf = (/** @type {string} */ c) => encode(new Map(/** @type {[number, unknown][]} */ ([[0, 'reset'], [1, c], [2, 'history_lost'], [3, 'storm']])));

test('a live reset storm (the server resets a collection at every sub) fails that collection, tried again after a backoff that grows: the session stays, no heal after heal in a loop', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const waits = await waitsOf(t, 'retry');
  const r = await openClient({ url: server.url, name: 'r', collections: ['todos'], backoff: { base: 100, max: 10_000, random: () => 1 } });
  t.after(() => r.close());
  await r.collection('todos').put('mine', { n: 1 });
  await until(() => [...server.sockets].some((ws) => ws.subs?.has('todos')) && r.status.pending === 0, 'live');
  const [ws] = server.sockets;
  // From now on, until the storm ends, this socket answers every sub of
  // todos with a reset (after the page the server sends).
  let storm = true;
  /** @type {number[]} when each sub of todos answered with a reset came */
  const subs = [];
  ws.on('message', (/** @type {Buffer} */ data) => {
    const m = decode(new Uint8Array(data), { canonical: false });
    if (storm && m.get(0) === 'sub' && m.get(1) === 'todos') {
      subs.push(Date.now());
      ws.send(resetOf('todos'));
    }
  });
  /** @type {any[]} */
  const errors = [];
  r.on('error', (e) => errors.push(e));
  ws.send(resetOf('todos'));
  await until(() => subs.length >= 3, 'three subs reset', 10_000);
  assert.ok(errors.some((e) => e.code === 'malformed' && /todos/.test(e.message)), 'told as malformed, naming the collection');
  // The page before each reset does not serve it again in this session:
  // its failure is told once, not at every try.
  assert.equal(errors.filter((e) => /todos/.test(e.message)).length, 1, `told once: ${errors.map((e) => e.message).join('; ')}`);
  // Each try after the first reset comes after a backoff (base 100 ms,
  // random 1), longer each time the server resets it again: as the
  // client asked for it, and no sooner (a loaded machine fires timers,
  // and answers the pull before each sub, late, so the gaps alone need
  // not grow).
  assert.deepEqual(waits.slice(0, 2), [100, 200], 'the backoff of todos doubles at each reset');
  const gaps = subs.slice(1).map((at, i) => at - subs[i]);
  assert.ok(gaps[0] >= 95 && gaps[1] >= 195, `subs ${gaps.join(', ')} ms apart: not back to back, nor sooner than the backoff`);
  assert.deepEqual([...server.sockets], [ws], 'the session stays');
  // The server sane again: the collection is subscribed again on the
  // same session, and its failure no longer said.
  storm = false;
  await until(() => ws.subs?.has('todos') && r.status.lastError === null, 'todos live again, no error said', 10_000);
  assert.deepEqual([...server.sockets], [ws], 'on the same session');
  assert.deepEqual(await r.collection('todos').get('mine'), { id: 'mine', n: 1 }, 'nothing local lost');
  assert.ok(server.coll('todos').byId.has('mine'));
});

test('a live reset storm of one collection does not stop the live sync of the others: they stream on the same session while it is told and tried again after a backoff', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const w = await openClient({ url: server.url, name: 'w', collections: ['notes'], WebSocket: null });
  t.after(() => w.close());
  const r = await openClient({ url: server.url, name: 'r', collections: ['todos', 'notes'], backoff: { base: 300, max: 10_000, random: () => 1 } });
  t.after(() => r.close());
  await r.collection('todos').put('mine', { n: 1 });
  await until(() => [...server.sockets].some((ws) => ws.subs?.has('todos') && ws.subs?.has('notes')) && r.status.pending === 0, 'live');
  const [ws] = server.sockets;
  // From now on every sub of todos is answered with a reset alone (a
  // server whose store of that collection goes back at every read),
  // until the storm ends.
  let storm = true;
  /** @type {number[]} when each sub of todos came */
  const subs = [];
  const stream = server.stream.bind(server);
  server.stream = (/** @type {any} */ s, /** @type {string} */ c, /** @type {boolean} */ first) => {
    if (c !== 'todos' || !first || !storm) return stream(s, c, first);
    subs.push(Date.now());
    s.subs.delete(c);
    s.send(resetOf(c));
  };
  /** @type {number[]} when each pull of todos came after its second sub */
  const later = [];
  server.refusePull = (c) => {
    if (c !== 'todos' || subs.length < 2) return null;
    // The third try: the server is sane again from it on.
    later.push(Date.now());
    storm = false;
    return null;
  };
  /** @type {{e: any, at: number}[]} */
  const errors = [];
  r.on('error', (e) => errors.push({ e, at: Date.now() }));
  ws.subs.delete('todos');
  ws.send(resetOf('todos'));
  await until(() => errors.length > 0, 'the failure told');
  const [{ e, at }] = errors;
  assert.equal(e.code, 'malformed');
  assert.match(e.message, /todos/, 'naming the collection');
  assert.match(r.status.lastError?.message ?? '', /todos/, 'status.lastError says it');
  // notes streams on, on the same session.
  await w.collection('notes').put('n1', { n: 1 });
  await w.whenSynced();
  await until(async () => (await r.collection('notes').get('n1')) !== undefined, 'notes streamed');
  assert.deepEqual([...server.sockets], [ws], 'the session stays');
  assert.ok(ws.subs.has('notes'), 'notes still subscribed');
  // todos is tried again (pulled, then subscribed) after a backoff, not at once.
  await until(() => subs.length >= 2, 'todos subscribed again', 10_000);
  assert.ok(subs[1] - at >= 295, `todos subscribed again ${subs[1] - at} ms after its failure was told: want the backoff, 300 ms`);
  assert.deepEqual([...server.sockets], [ws], 'still the same session');
  // The next try waits longer: the reset answers the second sub at once,
  // and its failure's backoff is 600 ms, so the next pull of todos comes
  // no sooner than that after the second sub (timers run late, never
  // early), and no sub before it.
  await until(() => later.length > 0, 'todos tried a third time', 10_000);
  assert.ok(later[0] - subs[1] >= 595, `todos pulled again ${later[0] - subs[1]} ms after its second sub: want the backoff, 600 ms`);
  assert.equal(subs.length, 2);
  // Not served again meanwhile, it was told once.
  assert.equal(errors.length, 1, `told once until served again: ${errors.map(({ e }) => e.message).join('; ')}`);
  // The server sane again from the third try on: todos comes back on the session.
  await until(() => ws.subs.has('todos') && r.status.lastError === null, 'todos live again', 10_000);
  assert.deepEqual([...server.sockets], [ws], 'on the same session');
  assert.deepEqual(await r.collection('todos').get('mine'), { id: 'mine', n: 1 }, 'nothing local lost');
  assert.ok(server.coll('todos').byId.has('mine'));
});

for (const code of ['internal', 'forbidden']) {
  test(`a live error ${code} naming a collection the client does not sync is passed over: nothing of it is pulled, subscribed or said unreadable`, async (t) => {
    const server = await new FakeServer().start();
    t.after(() => server.stop());
    const w = await openClient({ url: server.url, name: 'w', collections: ['secrets'], WebSocket: null });
    t.after(() => w.close());
    await w.collection('secrets').put('s', { n: 1 });
    await w.whenSynced();
    const r = await openClient({ url: server.url, name: 'r', collections: ['todos'], backoff: { base: 1, max: 1 } });
    t.after(() => r.close());
    await until(() => [...server.sockets].some((ws) => ws.subs?.has('todos')), 'live');
    const [ws] = server.sockets;
    /** @type {any[]} */
    const errors = [];
    r.on('error', (e) => errors.push(e));
    ws.send(encode(new Map(/** @type {[number, unknown][]} */ ([[0, 'error'], [1, code], [2, 'not yours'], [3, 'secrets'], [4, 'req-1']]))));
    // A resync of a collection the client syncs, after it: the session
    // handles messages in order, so once it is handled the first one was
    // (a collection failing would be tried again after a backoff of at
    // most 1 ms).
    const pulls = server.pulls.length;
    server.resync('todos');
    await until(() => server.pulls.length > pulls && ws.subs?.has('todos'), 'todos pulled and subscribed again');
    assert.deepEqual(
      server.pulls.filter((m) => m.get(5) === r.store.replica).map((m) => m.get(1)).filter((c) => c === 'secrets'),
      [],
      'secrets never pulled',
    );
    assert.equal(ws.subs?.has('secrets'), false, 'nor subscribed');
    assert.deepEqual(r.status.unreadable, [], 'nor said unreadable');
    assert.deepEqual(errors, [], 'nor told');
    assert.equal(r.status.lastError, null);
  });
}

for (const path of [PATHS.hello, PATHS.push, PATHS.pull]) {
  test(`an HTTP 200 whose body is an error (${path}) is malformed: the write stays in the outbox, the loop backs off, and syncs once the server mends`, async (t) => {
    const server = await new FakeServer().start();
    t.after(() => server.stop());
    let broken = true;
    // The error bodies answered before the loop's first backoff began,
    // counted as each is answered: the backoff's full jitter may make
    // it short enough for the next try to come before the test looks.
    let beforeBackoff = 0;
    const waits = await waitsOf(t);
    const fetch = answering((p) => {
      if (p !== path || !broken) return null;
      if (waits.length === 0) beforeBackoff++;
      return encode(new Map(/** @type {[number, unknown][]} */ ([[1, 'internal'], [2, 'boom'], [3, 'req-1']])));
    });
    const r = await openClient({ url: server.url, name: 'r', collections: ['todos'], WebSocket: null, fetch });
    t.after(() => r.close());
    /** @type {any[]} */
    const errors = [];
    r.on('error', (e) => errors.push(e));
    await r.collection('todos').put('mine', { n: 1 });
    await until(() => errors.length > 0 && waits.length > 0, 'the failure told, and a backoff');
    assert.equal(errors[0].code, 'malformed');
    assert.ok(beforeBackoff >= 1 && beforeBackoff <= 2, `${beforeBackoff} error bodies before the backoff`);
    if (path !== PATHS.pull) assert.equal(r.status.pending, 1, 'the write waits in the outbox');
    broken = false;
    await until(() => r.status.pending === 0 && r.status.lastError === null, 'synced once the server mended', 10_000);
    assert.ok(server.coll('todos').byId.has('mine'));
    assert.deepEqual(await r.collection('todos').get('mine'), { id: 'mine', n: 1 });
  });
}
