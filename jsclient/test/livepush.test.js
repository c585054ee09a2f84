// Live push (docs/protocol.md, "Pushing over a live session"): while the live session is
// open, the outbox goes over it, one push in flight, its answers handled
// as HTTP push answers are; over HTTP otherwise, and for a message over the
// hello's max live message bytes. A session lost with a push in flight
// leaves the changes in the outbox, pushed again and answered duplicate.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FakeServer } from './helpers/server.js';
import { openClient, until } from './helpers/util.js';
import { PATHS, STATUSES } from '../src/constants.js';
import { decode } from '../src/cbor.js';
import { cursorOf } from '../src/syncstore.js';

const WAIT = 10_000;

/** @param {FakeServer} server */
const httpPushes = (server) => server.requests.filter((p) => p === PATHS.push).length;

/**
 * A fake server and a client 'a' of 'todos' whose live session is open,
 * with the errors and refusals the client reports.
 * @param {import('node:test').TestContext} t
 * @param {ConstructorParameters<typeof FakeServer>[0]} [serverOpts]
 */
async function openLive(t, serverOpts) {
  const server = await new FakeServer(serverOpts).start();
  t.after(() => server.stop());
  const a = await openClient({ url: server.url, name: 'a', collections: ['todos'] });
  t.after(() => a.close());
  /** @type {any[]} */
  const errors = [];
  a.on('error', (e) => errors.push(e));
  /** @type {any[]} */
  const refused = [];
  a.on('refused', (r) => refused.push(r));
  await until(() => /** @type {any} */ (a).syncer?.live, 'live', WAIT);
  return { server, a, errors, refused };
}

test('live: writes go over the open session, from its base, and are settled as HTTP answers are', async (t) => {
  const { server, a, refused } = await openLive(t);
  await a.collection('todos').put('t1', { title: 'milk' });
  await until(() => a.status.pending === 0, 'pushed', WAIT);
  server.refuseIds.add('t2');
  await a.collection('todos').put('t2', { title: 'refused' });
  await a.collection('todos').put('t3', { title: 'fine' });
  await until(() => a.status.pending === 0 && refused.length === 1, 'pushed and refused', WAIT);
  assert.equal(httpPushes(server), 0, 'nothing over HTTP');
  assert.ok(server.livePushes.length >= 2, `${server.livePushes.length} live pushes`);
  for (const frame of server.livePushes) {
    const m = decode(frame, { canonical: true });
    assert.equal(m.get(0), 'push');
    assert.equal(m.has(1) || m.has(9), false, 'the session names the replica');
  }
  assert.ok(server.pushReplicas.every((r) => r.live && r.replica === a.store.replica));
  // The walls were read against the session base: the server holds the
  // stamps the client wrote.
  const held = server.coll('todos').byId.get('t1').record.fields.get('title').stamp;
  assert.equal(held.replica, a.store.replica);
  assert.ok(Math.abs(held.wall - Date.now()) < 60_000, `wall ${held.wall}`);
  assert.deepEqual(await a.collection('todos').get('t3'), { id: 't3', title: 'fine' });
  assert.equal(await a.collection('todos').get('t2'), null, 'the refused creation rolled back');
  assert.deepEqual(
    refused.map((r) => [r.id, r.code]),
    [['t2', 'forbidden']],
  );
  assert.match(refused[0].requestId, /^fake-\d+$/, "the live push's request id (pushed key 4)");
  assert.equal((await a.rejected())[0].requestId, refused[0].requestId, 'kept with the rejected change');
  assert.equal(a.status.rejected, 1);
});

test('live: a session lost with a push in flight leaves the changes in the outbox; pushed again, they come back duplicate', async (t) => {
  const { server, a } = await openLive(t);
  server.dropPushAnswers = 1; // applied, then the session is lost before the answer
  await a.collection('todos').putMany([0, 1, 2].map((i) => ({ id: 't' + i, i })));
  await until(() => a.status.pending === 0, 'the outbox drained', WAIT);
  assert.equal(server.livePushes.length >= 1, true);
  assert.deepEqual(server.pushStatuses[0], [STATUSES.applied, STATUSES.applied, STATUSES.applied], 'the lost push was applied');
  assert.ok(server.pushReplicas[0].live, 'the lost push went live');
  assert.deepEqual(server.pushStatuses.slice(1).flat(), [STATUSES.duplicate, STATUSES.duplicate, STATUSES.duplicate], 'pushed again: duplicate');
  assert.equal(server.coll('todos').seq, 3, 'applied once');
  assert.equal(a.status.rejected, 0);
  await until(() => /** @type {any} */ (a).syncer?.live, 'live again', WAIT);
  await a.collection('todos').put('t9', { i: 9 });
  await until(() => a.status.pending === 0, 'a later write pushed', WAIT);
  assert.ok(server.pushReplicas.at(-1)?.live, 'over the next session');
});

test('live: a push never answered on a session kept alive goes again after the push timeout; the session is dialled again', async (t) => {
  const { server, a } = await openLive(t);
  const syncer = /** @type {any} */ (a).syncer;
  // A short push timeout, from the next session on.
  syncer.o.pushTimeout = 300;
  const first = syncer.session;
  for (const ws of server.sockets) ws.terminate();
  await until(() => syncer.live && syncer.session !== first, 'live again', WAIT);
  const second = syncer.session;
  server.holdPushAnswers = 1; // applied, never answered; pings still answered
  await a.collection('todos').put('t1', { i: 1 });
  await until(() => a.status.pending === 0, 'the outbox drained', WAIT);
  assert.deepEqual(server.pushStatuses.flat(), [STATUSES.applied, STATUSES.duplicate], 'pushed again: duplicate');
  assert.ok(server.pushReplicas[0].live, 'the unanswered push went live');
  assert.equal(server.coll('todos').seq, 1, 'applied once');
  await until(() => syncer.live && syncer.session !== second, 'a new session', WAIT);
});

test('live: a message over the max live message bytes goes over HTTP', async (t) => {
  const { server, a } = await openLive(t, { maxMessageBytes: 4096 });
  await a.collection('todos').put('small', { v: 'x' });
  await until(() => a.status.pending === 0, 'pushed', WAIT);
  assert.equal(httpPushes(server), 0);
  const live = server.livePushes.length;
  await a.collection('todos').put('big', { v: 'x'.repeat(5000) });
  await until(() => a.status.pending === 0, 'pushed', WAIT);
  assert.equal(httpPushes(server), 1, 'the big one over HTTP');
  assert.equal(server.livePushes.length, live, 'not live');
  assert.equal(server.coll('todos').byId.get('big').record.fields.size, 1);
  assert.ok(a.status.online && server.sockets.size === 1, 'the session goes on');
});

test('live: a push refused whole is handled as the same code over HTTP: too_large halves the batch; unavailable goes again over HTTP after a backoff delay, and stays in the outbox if that fails too', async (t) => {
  const { server, a, errors, refused } = await openLive(t);
  server.refuseLivePush = (n) => (n > 1 ? 'too_large' : null);
  await a.collection('todos').putMany([0, 1, 2, 3].map((i) => ({ id: 't' + i, i })));
  await until(() => a.status.pending === 0, 'pushed one by one', WAIT);
  assert.deepEqual(
    server.pushStatuses.map((s) => s.length),
    [1, 1, 1, 1],
  );
  assert.equal(server.coll('todos').byId.size, 4);
  assert.deepEqual(refused, []);
  assert.equal(httpPushes(server), 0);
  // The server holds too many pushes: the batch goes over HTTP after one
  // backoff delay, without another write to start it.
  server.refuseLivePush = () => 'unavailable';
  await a.collection('todos').put('u', { n: 1 });
  await until(() => server.coll('todos').byId.has('u') && a.status.pending === 0, 'pushed over HTTP', WAIT);
  assert.equal(httpPushes(server), 1);
  assert.deepEqual(errors, []);
  // HTTP fails too: the error is the app's, the change stays.
  server.failPush = () => true;
  await a.collection('todos').put('w', { n: 1 });
  await until(() => errors.some((e) => e.code === 'unavailable'), 'unavailable heard', WAIT);
  await until(() => a.status.pending === 1, 'kept in the outbox', WAIT);
  assert.equal(server.coll('todos').byId.has('w'), false);
  server.refuseLivePush = () => null;
  server.failPush = () => false;
  await a.sync();
  assert.equal(a.status.pending, 0);
  assert.deepEqual(refused, []);
});

test('live: a push refused whole as malformed or invalid goes once over HTTP, which answers it change by change', async (t) => {
  const { server, a, errors, refused } = await openLive(t);
  let http = 0;
  for (const code of ['malformed', 'invalid']) {
    const live = server.livePushes.length;
    server.refuseLivePush = () => code;
    await a.collection('todos').put(code, { n: 1 });
    await until(() => server.coll('todos').byId.has(code) && a.status.pending === 0, `${code}: pushed over HTTP`, WAIT);
    assert.equal(httpPushes(server), ++http, code);
    assert.equal(server.livePushes.length, live + 1, code);
  }
  assert.deepEqual(errors, []);
  assert.deepEqual(refused, []);
});

test('live: stop() ends the backoff delay after a push refused unavailable; the batch does not go over HTTP after it', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  // One backoff delay of a full second.
  const a = await openClient({ url: server.url, name: 'a', collections: ['todos'], backoff: { base: 1000, max: 1000, random: () => 1 } });
  t.after(() => a.close());
  await until(() => /** @type {any} */ (a).syncer?.live, 'live', WAIT);
  server.refuseLivePush = () => 'unavailable';
  await a.collection('todos').put('u', { n: 1 });
  await until(() => server.livePushes.length === 1, 'the live push refused', WAIT);
  // The client takes the refusal and waits (a pause before that would
  // close the session with the push in flight: the next test's case).
  await until(() => /** @type {any} */ (a).syncer?.delays.size === 1, 'the backoff delay', WAIT);
  await a.pause();
  await new Promise((r) => setTimeout(r, 1500)); // past the delay
  assert.equal(httpPushes(server), 0, 'nothing pushed after stop()');
  assert.equal(server.coll('todos').byId.has('u'), false);
  assert.equal(a.status.pending, 1, 'the change stays in the outbox');
});

test('live: a push in flight when stop() closes the session does not go again over HTTP', async (t) => {
  const { server, a } = await openLive(t);
  server.holdPushAnswers = 1; // applied, never answered
  await a.collection('todos').put('h', { n: 1 });
  await until(() => server.livePushes.length === 1, 'the live push sent', WAIT);
  await a.pause();
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(httpPushes(server), 0, 'nothing pushed after stop()');
  assert.equal(a.status.pending, 1, 'the change stays in the outbox');
});

test('live: a push in flight when stop() closes the session pulls nothing over HTTP, its collection no longer fresh', async (t) => {
  const { server, a } = await openLive(t);
  await a.collection('todos').put('t0', { n: 0 });
  await until(() => a.status.pending === 0, 'pushed', WAIT);
  const syncer = /** @type {any} */ (a).syncer;
  await until(async () => (await cursorOf(syncer.store, 'todos')).length > 0, 'a cursor of todos', WAIT);
  server.holdPushAnswers = 1; // applied, never answered
  await a.collection('todos').put('h', { n: 1 });
  await until(() => server.livePushes.length === 2, 'the live push sent', WAIT);
  // Pulled longer ago than the push keeps a collection fresh: with the
  // session closed, not subscribed either.
  syncer.pulledAt.clear();
  const pulls = server.requests.filter((p) => p === PATHS.pull).length;
  await a.pause();
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(server.requests.filter((p) => p === PATHS.pull).length, pulls, 'nothing pulled after stop()');
  assert.equal(httpPushes(server), 0, 'nothing pushed after stop()');
  assert.equal(a.status.pending, 1, 'the change stays in the outbox');
});
