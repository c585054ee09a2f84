// Against the real server (`convergo serve --store memory:`, built from
// ./cmd/convergo): the client's bytes and the server's must agree. Skipped,
// with a message, when the go tool is not available.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { findGo, startGoServer } from './helpers/goserver.js';
import { openClient, until } from './helpers/util.js';

const secret = 'js-client-test-secret-0123456789abcdef';
const go = findGo();
const skip = go ? false : 'the go tool is not available: cannot start the real server';

/** @type {{url: string, stop: () => Promise<void>}|null} */
let server = null;

/**
 * Mints an HS256 JWT like the server's.
 * @param {{sub: string, read: string[], write: string[], exp: number}} claims
 */
function jwt(claims) {
  const b64 = (/** @type {any} */ o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const head = b64({ alg: 'HS256', typ: 'JWT' });
  const body = b64(claims);
  const sig = createHmac('sha256', secret).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${sig}`;
}

const inAnHour = () => Math.floor(Date.now() / 1000) + 3600;

before(async () => {
  // Under the full test command a missing tool is a failure, not a skip.
  if (skip && process.env.CONVERGO_REQUIRE_SERVICES === '1') throw new Error(`CONVERGO_REQUIRE_SERVICES=1: ${skip}`);
  if (go) server = await startGoServer(go, ['--secret', secret]);
});
after(async () => {
  await server?.stop();
});

test('real server: two clients converge live, anonymously on demo.todos', { skip }, async (t) => {
  const url = /** @type {any} */ (server).url;
  const a = await openClient({ url, name: 'a', collections: ['demo.todos'] });
  const b = await openClient({ url, name: 'b', collections: ['demo.todos'] });
  t.after(() => Promise.all([a.close(), b.close()]));
  const id = 'go-' + Math.random().toString(36).slice(2);
  await a.collection('demo.todos').put(id, { title: 'from a', done: false, big: 2n ** 64n - 1n, bytes: new Uint8Array([1, 2]), f: 1.5 });
  await until(async () => (await b.collection('demo.todos').get(id))?.title === 'from a', 'b to see the record');
  assert.deepEqual(await b.collection('demo.todos').get(id), {
    id,
    title: 'from a',
    done: false,
    big: 2n ** 64n - 1n,
    bytes: new Uint8Array([1, 2]),
    f: 1.5,
  });
  await b.collection('demo.todos').update(id, { done: true, title: undefined });
  await until(async () => (await a.collection('demo.todos').get(id))?.done === true, 'a to see the update');
  assert.equal((await a.collection('demo.todos').get(id))?.title, undefined);
  await a.collection('demo.todos').delete(id);
  await until(async () => (await b.collection('demo.todos').get(id)) === null, 'b to see the delete');
  await until(() => a.status.pending === 0 && b.status.pending === 0 && a.status.online && b.status.online, 'both online and drained');
});

test('real server: an expired token is refreshed through getToken', { skip }, async (t) => {
  const url = /** @type {any} */ (server).url;
  const coll = 'tenant' + Math.random().toString(36).slice(2, 8) + '.notes';
  let calls = 0;
  const getToken = async () => {
    calls++;
    const exp = calls === 1 ? Math.floor(Date.now() / 1000) - 10 : inAnHour();
    return jwt({ sub: 'u1', read: [coll], write: [coll], exp });
  };
  /** @type {any[]} */
  const auth = [];
  const a = await openClient({ url, name: 'tok', getToken, collections: [coll] });
  t.after(() => a.close());
  a.on('auth', (e) => auth.push(e.code));
  await a.collection(coll).put('n1', { text: 'hi' });
  await until(() => a.status.pending === 0 && a.status.online, 'push with the fresh token');
  assert.ok(calls >= 2, `getToken called ${calls} times`);
});

test('real server: a write the token does not allow is refused and dropped', { skip }, async (t) => {
  const url = /** @type {any} */ (server).url;
  const allowed = 'ok' + Math.random().toString(36).slice(2, 8);
  const token = jwt({ sub: 'u2', read: [allowed, 'secret'], write: [allowed], exp: inAnHour() });
  const a = await openClient({ url, name: 'forbid', token, collections: [allowed] });
  t.after(() => a.close());
  /** @type {any[]} */
  const refused = [];
  a.on('refused', (r) => refused.push(r));
  await a.collection('secret').put('x', { v: 1 });
  await a.collection(allowed).put('y', { v: 2 });
  await until(() => a.status.pending === 0, 'outbox to drain');
  assert.deepEqual(
    refused.map((r) => [r.collection, r.id, r.code]),
    [['secret', 'x', 'forbidden']],
  );
  assert.equal(await a.collection('secret').get('x'), null, 'the refused write is taken back');
  assert.deepEqual(await a.collection(allowed).get('y'), { id: 'y', v: 2 });
});


test('real server: a change that lost to a newer write is reported superseded and the record converges', { skip }, async (t) => {
  const url = /** @type {any} */ (server).url;
  const coll = 'sup' + Math.random().toString(36).slice(2, 8);
  const token = jwt({ sub: 'u3', read: [coll], write: [coll], exp: inAnHour() });
  const a = await openClient({ url, name: 'sup-a', token, collections: [coll] });
  const b = await openClient({ url, name: 'sup-b', token, collections: [coll] });
  t.after(() => Promise.all([a.close(), b.close()]));
  await until(() => a.status.online && b.status.online, 'both online');
  assert.match(/** @type {string} */ (a.store.replica), /^[a-z2-7]{16}_/, 'stamped with the subject’s prefix');
  /** @type {any[]} */
  const superseded = [];
  a.on('superseded', (s) => superseded.push(s));
  await a.pause();
  await a.collection(coll).put('r', { title: 'older', keep: 1 });
  await new Promise((r) => setTimeout(r, 50));
  await b.collection(coll).update('r', { title: 'newer' });
  await until(() => b.status.pending === 0, 'b pushed');
  a.resume();
  await until(() => a.status.pending === 0 && superseded.length === 1, 'a pushed and heard');
  assert.deepEqual(superseded, [{ collection: coll, id: 'r', lost: ['title'], status: 'applied' }]);
  await until(async () => (await a.collection(coll).get('r'))?.title === 'newer', 'a converges');
  assert.deepEqual(await a.collection(coll).get('r'), { id: 'r', title: 'newer', keep: 1 });
});

test('real server: errors carry the request id of the answer', { skip }, async (t) => {
  const url = /** @type {any} */ (server).url;
  const token = jwt({ sub: 'u4', read: ['mine'], write: ['mine'], exp: inAnHour() });
  const a = await openClient({ url, name: 'rid', token, collections: ['mine', 'theirs'], WebSocket: null, pollInterval: 60_000 });
  t.after(() => a.close());
  /** @type {any[]} */
  const errors = [];
  a.on('error', (e) => errors.push(e));
  await until(() => errors.some((e) => e.code === 'forbidden'), 'the forbidden pull reported');
  const e = errors.find((x) => x.code === 'forbidden');
  assert.equal(e.status, 403);
  assert.match(e.requestId, /^[A-Za-z0-9_-]{1,64}$/);
  assert.match(e.message, new RegExp(`request ${e.requestId}`), 'the message quotes it');
});
