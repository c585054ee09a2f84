// Resets and healing against the in-memory protocol server: a server that
// lost its history (wipe) resets the clients' cursors, and the clients give
// back what they hold — sealed records of anyone through POST /v2/restore,
// their own acknowledged writes no seal covers through push — so that the
// server ends up with every record any client held and all converge.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FakeServer } from './helpers/server.js';
import { freshIDB, jwtOf, openClient, heldAnswers, until } from './helpers/util.js';
import { PATHS } from '../src/constants.js';
import { fromStored } from '../src/db.js';
import { owedHeals } from '../src/syncstore.js';

/** Waits longer than until's default: these runs sync several clients through resets, and the full suite runs files in parallel. */
const WAIT = 15_000;


/**
 * The server's records of collection c as {id: visible fields}.
 * @param {FakeServer} server
 * @param {string} c
 */
function serverDocs(server, c) {
  /** @type {Record<string, Record<string, string>>} */
  const out = {};
  for (const [id, e] of server.coll(c).byId) {
    /** @type {Record<string, string>} */
    const doc = {};
    for (const [name, f] of e.record.fields) if (f.value) doc[name] = Buffer.from(f.value).toString('hex');
    out[id] = doc;
  }
  return out;
}

/**
 * A client's records of collection c, as serverDocs has them.
 * @param {any} db
 * @param {string} c
 */
async function clientDocs(db, c) {
  /** @type {Record<string, Record<string, string>>} */
  const out = {};
  for (const s of await db.store.list(c)) {
    /** @type {Record<string, string>} */
    const doc = {};
    for (const [name, f] of fromStored(s, s.id).fields) if (f.value) doc[name] = Buffer.from(f.value).toString('hex');
    out[s.id] = doc;
  }
  return out;
}

test('a wiped server is healed by its live clients: sealed records of anyone, and all converge', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const a = await openClient({ url: server.url, name: 'a', token: jwtOf('alice'), collections: ['todos'] });
  const b = await openClient({ url: server.url, name: 'b', token: jwtOf('bob'), collections: ['todos'] });
  t.after(() => Promise.all([a.close(), b.close()]));
  /** @type {any[]} */
  const resets = [];
  a.on('serverReset', (r) => resets.push(['a', r]));
  b.on('serverReset', (r) => resets.push(['b', r]));
  for (let i = 0; i < 5; i++) await a.collection('todos').put('a' + i, { by: 'alice', i });
  for (let i = 0; i < 3; i++) await b.collection('todos').put('b' + i, { by: 'bob', i });
  await until(async () => Object.keys(await clientDocs(a, 'todos')).length === 8 && Object.keys(await clientDocs(b, 'todos')).length === 8, 'both to hold all 8', WAIT);
  await a.whenSynced();
  await b.whenSynced();
  const before = serverDocs(server, 'todos');
  // Alice goes away; the server loses everything.
  await a.close();
  server.wipe();
  await until(() => resets.some(([who]) => who === 'b'), 'b to hear the reset', WAIT);
  assert.deepEqual(resets[0], ['b', { collection: 'todos', reason: 'history_lost', message: 'the test wiped the store' }]);
  // Bob restored alice's records too, with her stamps (seals), not his.
  await until(() => Object.keys(serverDocs(server, 'todos')).length === 8, 'the server to hold all 8 again', WAIT);
  assert.deepEqual(serverDocs(server, 'todos'), before);
  assert.ok(server.requests.includes(PATHS.restore));
  assert.ok(server.coll('todos').byId.get('a0').record.fields.get('by').stamp.replica.startsWith(a.store.prefix + '_'), "alice's stamp");
  // Writes after the heal flow as before; a new client loads everything.
  await b.collection('todos').update('a0', { done: true });
  const c = await openClient({ url: server.url, name: 'c', token: jwtOf('carol'), collections: ['todos'] });
  t.after(() => c.close());
  await until(async () => (await c.collection('todos').get('a0'))?.done === true, 'a newcomer to see the healed data and the new write', WAIT);
  assert.deepEqual(await clientDocs(c, 'todos'), await clientDocs(b, 'todos'));
});

test('a reset in a pull answer heals too (polling); own acknowledged writes without seals are pushed back', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  // A server that sends no seals: only each client's own writes can come back.
  const origPageBytes = server.pageBytes.bind(server);
  server.pageBytes = (before, key, page, after) => origPageBytes(before, key, page, after);
  const idb = freshIDB();
  const a = await openClient({ url: server.url, name: 'a', token: jwtOf('alice'), collections: ['todos'], WebSocket: null, pollInterval: 50, indexedDB: idb });
  const b = await openClient({ url: server.url, name: 'b', token: jwtOf('bob'), collections: ['todos'], WebSocket: null, pollInterval: 50 });
  t.after(() => Promise.all([a.close(), b.close()]));
  await a.collection('todos').put('a1', { by: 'alice' });
  await b.collection('todos').put('b1', { by: 'bob' });
  await until(async () => (await a.collection('todos').get('b1')) && (await b.collection('todos').get('a1')), 'both to hold both', WAIT);
  /** @type {any[]} */
  const resets = [];
  a.on('serverReset', (r) => resets.push(r));
  server.wipe();
  await until(() => server.coll('todos').byId.size === 2, 'both writes back on the server', WAIT);
  // a1 is on the server once a's heal pushed it, before a has read the
  // answer and ended the heal: a round of a's after it finds that done.
  await a.sync();
  assert.equal(server.restores.length, 0, 'nothing sealed to restore');
  assert.deepEqual(resets, [{ collection: 'todos', reason: 'history_lost', message: 'the test wiped the store' }]);
  assert.equal(server.coll('todos').byId.get('a1').record.fields.get('by').stamp.replica, a.store.replica);
  assert.equal(server.coll('todos').byId.get('b1').record.fields.get('by').stamp.replica, b.store.replica);
  // Nothing local was dropped, and the heal is not owed any more.
  assert.deepEqual(Object.keys(await clientDocs(a, 'todos')).sort(), ['a1', 'b1']);
  assert.deepEqual(await owedHeals(a.store), []);
});

test('reason rebuilt pulls again and gives nothing back; an unknown reason heals', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const a = await openClient({ url: server.url, name: 'a', token: jwtOf('alice'), collections: ['todos'] });
  t.after(() => a.close());
  await a.collection('todos').put('x', { n: 1 });
  await a.whenSynced();
  /** @type {any[]} */
  const resets = [];
  a.on('serverReset', (r) => resets.push(r.reason));
  // A rebuilt log holds everything: the test keeps the records and only
  // starts a new generation of cursors.
  const kept = new Map(server.colls);
  const pulls = () => server.requests.filter((p) => p === PATHS.pull).length;
  const before = pulls();
  server.resetReason = 'rebuilt';
  server.wipe();
  for (const [k, v] of kept) server.colls.set(k, v);
  await until(() => resets.length === 1, 'the reset', WAIT);
  // A heal would go before the pull that follows the reset.
  await until(() => pulls() > before && a.status.online, 'pulled again', WAIT);
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(server.restores.length, 0, 'rebuilt: nothing to give back');
  // An unknown reason is history_lost: restore.
  server.resetReason = 'moon_phase';
  server.wipe();
  await until(() => server.coll('todos').byId.has('x'), 'x restored', WAIT);
  assert.deepEqual(resets, ['rebuilt', 'moon_phase']);
  assert.ok(server.restores.length > 0);
});

test('restores go in batches of the hello max-push; a bad seal leaves the record local and says so', async (t) => {
  const server = await new FakeServer({ maxPush: 3 }).start();
  t.after(() => server.stop());
  const { r, errors } = await readerOf(t, server);
  server.wipe();
  await until(() => server.coll('todos').byId.size === 7, 'all 7 restored', WAIT);
  assert.deepEqual(server.restores, [3, 3, 1]);
  // Live again on the new history before the next wipe (a wipe between the
  // restore and the pull that follows it would leave nothing to reset).
  await until(() => [...server.sockets].some((ws) => ws.subs?.has('todos')), 'the reader subscribed again', WAIT);
  // The server's seal key changes (as when it is lost with the store): a
  // reader cannot give back others' records; they stay local.
  assert.deepEqual(errors, []);
  server.sealKey = 'another-key';
  server.wipe();
  await until(() => errors.some((e) => /heal todos/.test(e.message)), 'the refused heal reported', WAIT);
  assert.equal(server.coll('todos').byId.size, 0);
  assert.equal((await r.collection('todos').list()).length, 7, 'nothing local dropped');
});

test('a heal cut short by an outage is owed across a reload and made then', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const idb = freshIDB();
  const a = await openClient({ url: server.url, name: 'a', token: jwtOf('alice'), collections: ['todos'], indexedDB: idb });
  await a.collection('todos').put('k', { v: 1 });
  await a.whenSynced();
  // Restores fail: the heal cannot finish.
  const handle = server.handle.bind(server);
  let restoreFails = true;
  server.handle = async (req, res) => {
    if (restoreFails && req.url === PATHS.restore) {
      res.writeHead(503, { 'Content-Type': 'application/cbor' });
      res.end();
      return;
    }
    return handle(req, res);
  };
  server.wipe();
  await until(async () => (await owedHeals(a.store)).length === 1 && server.requests.length > 0, 'a heal owed', WAIT);
  await a.close();
  restoreFails = false;
  const again = await openClient({ url: server.url, name: 'a', token: jwtOf('alice'), collections: ['todos'], indexedDB: idb });
  t.after(() => again.close());
  await until(() => server.coll('todos').byId.has('k'), 'healed after the reload', WAIT);
  await until(async () => (await owedHeals(again.store)).length === 0, 'nothing owed', WAIT);
});

/**
 * A reader 'r' of 'todos' holding records r0..r<n-1> that a writer made,
 * and the errors it reports.
 * @param {import('node:test').TestContext} t
 * @param {FakeServer} server
 * @param {number} [n]
 */
async function readerOf(t, server, n = 7) {
  const w = await openClient({ url: server.url, name: 'w', token: jwtOf('walt'), collections: ['todos'] });
  for (let i = 0; i < n; i++) await w.collection('todos').put('r' + i, { i });
  await w.whenSynced();
  await w.close();
  const r = await openClient({ url: server.url, name: 'r', token: jwtOf('rita'), collections: ['todos'] });
  t.after(() => r.close());
  /** @type {any[]} */
  const errors = [];
  r.on('error', (e) => errors.push(e));
  await until(async () => (await r.collection('todos').list()).length === n, `the reader to hold ${n}`, WAIT);
  return { r, errors };
}

for (const code of ['malformed', 'too_large']) {
  test(`a restore refused whole as ${code} is halved down to the record at fault, which stays local and is reported; the rest is restored`, async (t) => {
    const server = await new FakeServer({ maxPush: 3 }).start();
    t.after(() => server.stop());
    const { r, errors } = await readerOf(t, server);
    // The server cannot read (or take) a restore that carries r3.
    server.refuseRestore = (items) => (items.some((x) => x.record.id === 'r3') ? code : null);
    server.wipe();
    await until(() => errors.some((e) => /heal todos/.test(e.message)), 'the refused record reported', WAIT);
    await until(() => server.coll('todos').byId.size === 6, 'the other 6 restored', WAIT);
    assert.deepEqual([...server.coll('todos').byId.keys()].sort(), ['r0', 'r1', 'r2', 'r4', 'r5', 'r6']);
    const heal = errors.find((e) => /heal todos/.test(e.message));
    assert.match(heal.message, new RegExp(`refused 1 of the 7 .*${code}`));
    assert.equal((await r.collection('todos').list()).length, 7, 'nothing local dropped');
    assert.deepEqual(await owedHeals(r.store), [], 'the heal is done');
  });
}

test('after the record at fault is refused too_large alone, the rest of the heal goes in restores of max-push again, not one by one', async (t) => {
  const server = await new FakeServer({ maxPush: 8 }).start();
  t.after(() => server.stop());
  const { errors } = await readerOf(t, server, 20);
  server.refuseRestore = (items) => (items.some((x) => x.record.id === 'r1') ? 'too_large' : null);
  server.wipe();
  await until(() => errors.some((e) => /heal todos/.test(e.message)), 'the refused record reported', WAIT);
  assert.equal(server.coll('todos').byId.size, 19);
  // r0 alone (the halves before r1), then the 18 after it by 8.
  assert.deepEqual(server.restores, [1, 8, 8, 2]);
});

test('a server that stops refusing every restore as malformed between a lone record and the restore of none: the record goes once more, and every record is restored', async (t) => {
  const server = await new FakeServer({ maxPush: 3 }).start();
  t.after(() => server.stop());
  const { r, errors } = await readerOf(t, server);
  let readsAgain = false;
  server.refuseRestore = (items) => {
    if (items.length === 0) readsAgain = true; // the restore of none: the server is mended from here on
    return readsAgain ? null : 'malformed';
  };
  server.wipe();
  await until(async () => (await owedHeals(r.store)).length === 0 && server.coll('todos').byId.size === 7, 'every record restored', WAIT);
  assert.equal(
    errors.some((e) => /heal todos/.test(e.message)),
    false,
    'no record reported refused',
  );
});

test('a server that reads no restore of this client (a restore of no records refused malformed too) leaves the heal owed, no record at fault', async (t) => {
  const server = await new FakeServer({ maxPush: 3 }).start();
  t.after(() => server.stop());
  const { r, errors } = await readerOf(t, server);
  // Each heal sends a restore of none before it takes a record refused
  // alone as at fault.
  let empties = 0;
  server.refuseRestore = (items) => {
    if (items.length === 0) empties++;
    return 'malformed';
  };
  server.wipe();
  await until(() => empties >= 2, 'the heal tried again', WAIT);
  assert.equal(
    errors.some((e) => /heal todos: the server refused \d+ of the/.test(e.message)),
    false,
    'no record reported refused',
  );
  // The heal's failure itself is told, naming the collection, once until
  // the collection is served again.
  assert.equal(errors.filter((e) => e.code === 'malformed' && /^heal todos: /.test(e.message)).length, 1);
  assert.equal(server.coll('todos').byId.size, 0);
  assert.deepEqual(await owedHeals(r.store), ['todos'], 'the heal is still owed');
  assert.equal((await r.collection('todos').list()).length, 7, 'nothing local dropped');
});

test("a heal's push of own writes refused whole as malformed is halved down to the write at fault, which stays local and is reported; the rest is pushed", async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  // A server that sends no seals: the heal pushes the client's own writes.
  const origPageBytes = server.pageBytes.bind(server);
  server.pageBytes = (before, key, page, after) => origPageBytes(before, key, page, after);
  const a = await openClient({ url: server.url, name: 'a', token: jwtOf('alice'), collections: ['todos'], WebSocket: null, pollInterval: 50 });
  t.after(() => a.close());
  /** @type {any[]} */
  const errors = [];
  a.on('error', (e) => errors.push(e));
  await a.collection('todos').putMany([0, 1, 2, 3].map((i) => ({ id: 'a' + i, i })));
  await a.whenSynced();
  server.refusePush = (changes) => (changes.some((ch) => ch.record.id === 'a2') ? 'malformed' : null);
  server.wipe();
  await until(() => errors.some((e) => /heal todos/.test(e.message)), 'the refused write reported', WAIT);
  await until(() => server.coll('todos').byId.size === 3, 'the other 3 pushed back', WAIT);
  assert.deepEqual([...server.coll('todos').byId.keys()].sort(), ['a0', 'a1', 'a3']);
  assert.match(errors.find((e) => /heal todos/.test(e.message)).message, /refused 1 of the 4 .*malformed/);
  assert.equal(server.restores.length, 0, 'nothing sealed to restore');
  assert.deepEqual(Object.keys(await clientDocs(a, 'todos')).sort(), ['a0', 'a1', 'a2', 'a3'], 'nothing local dropped');
  assert.deepEqual(await owedHeals(a.store), []);
});

test('stop() in the middle of a heal sends no restore more; the heal stays owed', async (t) => {
  const server = await new FakeServer({ maxPush: 1 }).start();
  t.after(() => server.stop());
  const { r } = await readerOf(t, server);
  // Seven restores, one at a time; the first is held until pause() was
  // called, and any sent after it are answered at once.
  const restores = heldAnswers(server, PATHS.restore);
  server.wipe();
  await until(() => restores.count() === 1, 'the first restore sent', WAIT);
  const paused = r.pause();
  restores.release();
  await paused;
  // pause() waited for the loop to end: no request of it can come later.
  assert.equal(restores.count(), 1, 'no restore sent after stop()');
  assert.deepEqual(await owedHeals(r.store), ['todos'], 'the heal is still owed');
  assert.equal((await r.collection('todos').list()).length, 7, 'nothing local dropped');
});
