// One collection's failure is that collection's (docs/protocol.md, section
// 10): a heal or a pull that fails with an error of its own (internal,
// corrupt, an answer the client cannot read) does not stop the other
// collections' pulls in the round, nor the welcome of a live session; it
// is told once until the collection is served again (so a failure that
// lasts does not flood the app's error handler) and tried again with
// backoff, as the Go client's Pull goes on past one collection's error.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FakeServer } from './helpers/server.js';
import { freshIDB, openClient, until, waitsOf } from './helpers/util.js';
import { CONTENT_TYPE, PATHS } from '../src/constants.js';
import { decode, encode } from '../src/cbor.js';
import { emptyRecord } from '../src/record.js';
import { owedHeals } from '../src/syncstore.js';

const WAIT = 15_000;

/**
 * Writes record id into collection c of server, as another subject's.
 * @param {FakeServer} server
 * @param {string} c
 * @param {string} id
 */
function theirs(server, c, id) {
  const r = emptyRecord(id);
  r.fields.set('m', { value: encode('theirs'), stamp: { wall: Date.now(), logical: 0, replica: 'bob_dev' } });
  server.apply([{ collection: c, record: r }], 'bob');
}

/**
 * Fails every pull of collection b while s.on: the server refuses it
 * (internal, corrupt), or its answer is not one the client can read
 * (malformed: a map without its cursor; short: cut before its end).
 * @param {FakeServer} server
 * @param {'internal'|'corrupt'|'malformed'|'short'} mode
 */
function failingB(server, mode) {
  const s = { on: true, pulls: 0 };
  if (mode === 'internal' || mode === 'corrupt') server.refusePull = (c) => (c === 'b' && s.on ? mode : null);
  /** @type {typeof fetch} */
  const f = async (input, init) => {
    const ofB = String(input).endsWith(PATHS.pull) && decode(/** @type {Uint8Array} */ (init?.body), { canonical: false }).get(1) === 'b';
    if (ofB && s.on) s.pulls++;
    const res = await fetch(input, init);
    if (!ofB || !s.on || (mode !== 'malformed' && mode !== 'short')) return res;
    const bytes = new Uint8Array(await res.arrayBuffer());
    const body = mode === 'malformed' ? encode(new Map([[1, []]])) : bytes.slice(0, bytes.length - 3);
    return new Response(body, { status: 200, headers: { 'Content-Type': CONTENT_TYPE } });
  };
  return { fetch: f, s };
}

/** @param {any} db @param {string} c @param {string} id */
const has = async (db, c, id) => (await db.collection(c).get(id)) !== null;

for (const mode of /** @type {const} */ (['internal', 'corrupt', 'malformed', 'short'])) {
  test(`over HTTP: a pull of one collection failing (${mode}) round after round does not stop the others; it is told once until it is pulled again, and pulled again with backoff until it succeeds`, async (t) => {
    const server = await new FakeServer().start();
    t.after(() => server.stop());
    for (const c of ['a', 'b', 'c']) theirs(server, c, c + '1');
    const b = failingB(server, mode);
    // Polls far apart: only the backoff of a failed round pulls b again soon.
    const x = await openClient({ url: server.url, name: 'x', collections: ['a', 'b', 'c'], WebSocket: null, pollInterval: 60_000, fetch: b.fetch });
    t.after(() => x.close());
    /** @type {string[]} */
    const told = [];
    x.on('error', (e) => {
      if (/\bb\b/.test(e.message)) told.push(e.message);
    });
    await until(async () => (await has(x, 'a', 'a1')) && (await has(x, 'c', 'c1')), 'a and c pulled past b', WAIT);
    await until(() => b.s.pulls >= 4, 'b pulled again, with backoff', WAIT);
    assert.equal(told.length, 1, `told once until pulled again: ${told.length} errors for ${b.s.pulls} pulls of b`);
    assert.match(told[0], /^pull b: /, 'the error names the collection');
    assert.match(String(x.status.lastError?.message), /^pull b: /);
    // The rounds go on pulling the others.
    theirs(server, 'c', 'c2');
    await until(() => has(x, 'c', 'c2'), 'c pulled on', WAIT);
    // sync() says b failed, once a and c are pulled.
    theirs(server, 'a', 'a2');
    await assert.rejects(x.sync(), (e) => /^pull b: /.test(/** @type {any} */ (e).message));
    assert.ok(await has(x, 'a', 'a2'), 'a pulled by that sync');
    // Mended: b is pulled, and the status clears.
    b.s.on = false;
    await until(() => has(x, 'b', 'b1'), 'b pulled once mended', WAIT);
    await until(() => x.status.lastError === null, 'no error said', WAIT);
    // Pulled again, b's next failure is told again.
    b.s.on = true;
    await assert.rejects(x.sync(), (e) => /^pull b: /.test(/** @type {any} */ (e).message));
    assert.equal(told.length, 2, 'told again once pulled again');
  });
}

test('over HTTP: a heal of one collection failing (internal) round after round does not stop the others; it stays owed, is told once, and is made once the server takes it', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const x = await openClient({ url: server.url, name: 'x', collections: ['a', 'b', 'c'], WebSocket: null, pollInterval: 60_000 });
  t.after(() => x.close());
  /** @type {string[]} */
  const told = [];
  x.on('error', (e) => {
    if (/\bb\b/.test(e.message)) told.push(e.message);
  });
  for (const c of ['a', 'b', 'c']) await x.collection(c).put('mine', { n: 1 });
  await x.whenSynced();
  await x.sync();
  let on = true;
  let restores = 0;
  server.refuseRestore = (_, c) => (c === 'b' && on && ++restores > 0 ? 'internal' : null);
  server.wipe();
  theirs(server, 'c', 'c2');
  await assert.rejects(x.sync(), (e) => /^heal b: /.test(/** @type {any} */ (e).message));
  assert.ok(await has(x, 'c', 'c2'), 'c pulled past b');
  await until(() => restores >= 4, 'the heal of b made again, with backoff', WAIT);
  assert.ok(server.coll('a').byId.has('mine') && server.coll('c').byId.has('mine'), 'a and c healed');
  assert.ok((await owedHeals(x.store)).includes('b'), 'the heal of b stays owed');
  assert.equal(told.length, 1, `told once until served again: ${told.length} errors for ${restores} heals of b`);
  assert.match(told[0], /^heal b: /);
  on = false;
  await until(async () => (await owedHeals(x.store)).length === 0, 'b healed once the server takes it', WAIT);
  assert.ok(server.coll('b').byId.has('mine'), 'b given back');
  await until(() => x.status.lastError === null, 'no error said', WAIT);
});

for (const what of /** @type {const} */ (['pull', 'heal', 'sub'])) {
  test(`live: a ${what} of one collection failing (internal) does not fail the welcome: the others stream on one session, and it is told once, tried again with backoff and subscribed once it succeeds`, async (t) => {
    const server = await new FakeServer().start();
    t.after(() => server.stop());
    for (const c of ['a', 'b', 'c']) theirs(server, c, c + '1');
    let on = what !== 'heal';
    let tries = 0;
    server.refusePull = (c) => (c === 'b' && on && what === 'pull' && ++tries > 0 ? 'internal' : null);
    server.refuseRestore = (_, c) => (c === 'b' && on && what === 'heal' && ++tries > 0 ? 'internal' : null);
    server.refuseSub = (c) => (c === 'b' && on && what === 'sub' && ++tries > 0 ? 'internal' : null);
    const x = await openClient({ url: server.url, name: 'x', collections: ['a', 'b', 'c'] });
    t.after(() => x.close());
    /** @type {string[]} */
    const told = [];
    x.on('error', (e) => {
      if (/\bb\b/.test(e.message)) told.push(e.message);
    });
    const syncer = () => /** @type {any} */ (x).syncer;
    const hellos = () => server.received.filter((m) => m.get(0) === 'hello').length;
    if (what === 'heal') {
      await x.collection('b').put('mine', { n: 1 });
      await x.whenSynced();
      await until(() => syncer()?.session?.subscribed.has('b'), 'b subscribed', WAIT);
      on = true;
      server.wipe();
    }
    await until(() => syncer()?.live && syncer().session.subscribed.has('a') && syncer().session.subscribed.has('c'), 'live, a and c subscribed', WAIT);
    const session = syncer().session;
    await until(() => tries >= 4, `the ${what} of b tried again, with backoff`, WAIT);
    assert.equal(syncer().session, session, 'one session');
    assert.equal(hellos(), 1, 'welcomed once');
    // Read on the server: the client's set holds b from its sub's sending
    // until the refusal comes back, and a try is counted in between.
    assert.ok(![...server.sockets].some((ws) => /** @type {any} */ (ws).subs?.has('b')), 'b is not subscribed');
    assert.equal(told.length, 1, `told once until served again: ${told.length} errors for ${tries} tries of b`);
    assert.match(told[0], new RegExp(`^${what} b: `));
    theirs(server, 'c', 'c2');
    await until(() => has(x, 'c', 'c2'), 'c streamed', WAIT);
    on = false;
    await until(() => session.subscribed.has('b'), 'b subscribed once it succeeds', WAIT);
    await until(() => has(x, 'b', 'b1'), 'b pulled', WAIT);
    if (what === 'heal') assert.ok(server.coll('b').byId.has('mine'), 'b healed');
    theirs(server, 'b', 'b2');
    await until(() => has(x, 'b', 'b2'), 'b streamed', WAIT);
    assert.equal(syncer().session, session, 'still one session');
    await until(() => x.status.lastError === null, 'no error said', WAIT);
  });
}

test('live: a server refusing every sub of one collection (internal) has it tried less and less often: its backoff does not start over at the pull before each sub, only once a sub of it is answered with a page', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  for (const c of ['a', 'b']) theirs(server, c, c + '1');
  let on = true;
  let refusals = 0;
  server.refuseSub = (c) => (c === 'b' && on && ++refusals > 0 ? 'internal' : null);
  const waits = await waitsOf(t, 'retry');
  const x = await openClient({ url: server.url, name: 'x', collections: ['a', 'b'], backoff: { base: 20, max: 10_000, random: () => 1 } });
  t.after(() => x.close());
  /** @type {string[]} */
  const told = [];
  x.on('error', (e) => {
    if (/\bb\b/.test(e.message)) told.push(e.message);
  });
  await until(() => waits.length >= 5, 'five tries of b', WAIT);
  // Each try pulls b over HTTP (it succeeds) before its sub is refused
  // again: that pull does not serve it, its sub's page would.
  assert.deepEqual(waits.slice(0, 5), [20, 40, 80, 160, 320], 'the backoff of b grows (base 20 ms, random 1)');
  assert.equal(told.length, 1, `told once: ${told.join('; ')}`);
  // The server sane again, a sub of b is answered with a page: served,
  // its backoff starts over.
  on = false;
  await until(() => [...server.sockets].some((ws) => /** @type {any} */ (ws).subs?.has('b')), 'b subscribed', WAIT);
  theirs(server, 'b', 'b2');
  await until(() => has(x, 'b', 'b2'), 'b served live', WAIT);
  const n = waits.length;
  on = true;
  server.resync('b');
  await until(() => waits.length > n, 'b tried again', WAIT);
  assert.equal(waits[n], 20, `the backoff of b starts over once served: ${waits.join(', ')}`);
  assert.equal(told.length, 2, 'told again once served');
});

test("over HTTP: a collection whose pull before its push fails (internal) holds back its own changes only: the others' are pushed, and its go once it is pulled", async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const idb = freshIDB();
  const first = await openClient({ url: server.url, name: 'x', indexedDB: idb, collections: ['a', 'b'], WebSocket: null, pollInterval: 60_000 });
  for (const c of ['a', 'b']) await first.collection(c).put('old', { n: 1 });
  await first.whenSynced();
  await first.sync();
  await first.close();
  // Reopened (its collections pulled no more lately: pulled before their
  // changes go), b's pulls fail.
  const b = failingB(server, 'internal');
  const x = await openClient({ url: server.url, name: 'x', indexedDB: idb, collections: ['a', 'b'], WebSocket: null, pollInterval: 60_000, fetch: b.fetch });
  t.after(() => x.close());
  x.on('error', () => {});
  await x.pause();
  await x.collection('b').put('new', { n: 2 });
  await x.collection('a').put('new', { n: 2 });
  theirs(server, 'a', 'a2');
  x.resume();
  await until(() => server.coll('a').byId.has('new'), "a's change pushed past b", WAIT);
  await until(() => has(x, 'a', 'a2'), 'a pulled', WAIT);
  assert.ok(!server.coll('b').byId.has('new'), "b's change held back");
  assert.ok(b.s.pulls >= 1);
  b.s.on = false;
  await until(() => server.coll('b').byId.has('new'), "b's change pushed once b is pulled", WAIT);
});

test('live: an error naming a collection with a code of the session (unavailable) ends the session, as the Go client does, rather than refusing that collection alone', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  theirs(server, 'a', 'a1');
  const x = await openClient({ url: server.url, name: 'x', collections: ['a'] });
  t.after(() => x.close());
  const syncer = () => /** @type {any} */ (x).syncer;
  const hellos = () => server.received.filter((m) => m.get(0) === 'hello').length;
  await until(() => syncer()?.live && syncer().session.subscribed.has('a'), 'live, a subscribed', WAIT);
  for (const ws of server.sockets) ws.send(encode(server.env([[0, 'error'], [1, 'unavailable'], [2, 'the store failed'], [3, 'a']])));
  await until(() => hellos() >= 2, 'a second session', WAIT);
  await until(() => syncer()?.live && syncer().session.subscribed.has('a'), 'a subscribed on it', WAIT);
  theirs(server, 'a', 'a2');
  await until(() => has(x, 'a', 'a2'), 'a streamed', WAIT);
});
