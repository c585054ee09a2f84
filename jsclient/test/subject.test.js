// A token of another subject (setToken) ends the live session opened
// under the old one, whose pages were read under the old subject's rights
// and scopes: the client dials again with the new token and its
// subscriptions go on from their cursors under the new subject. A
// refreshed token of the same subject keeps the session.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FakeServer } from './helpers/server.js';
import { openClient, until } from './helpers/util.js';
import { subjectOfToken } from '../src/replica.js';

const WAIT = 8000;

/** A JWT (unsigned: the fake server reads its payload) for subject sub with claims. */
function tokenOf(sub, claims = {}) {
  const b64 = (/** @type {object} */ o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  return `${b64({ alg: 'none' })}.${b64({ sub, ...claims })}.x`;
}

/**
 * A server, a writer that polls (so that every live hello is the reader's)
 * and a reader of todos scoped to the records its subject owns, live,
 * holding a1 (alice's) and not b1 (bob's).
 */
async function setup() {
  const server = await new FakeServer().start();
  const writer = await openClient({ url: server.url, token: tokenOf('w'), name: 'w', WebSocket: null, pollInterval: 50 });
  const w = writer.collection('todos');
  await w.put('a1', { owner: 'alice' });
  await w.put('b1', { owner: 'bob' });
  await writer.whenSynced();
  const db = await openClient({ url: server.url, token: tokenOf('alice'), scopes: { todos: { mine: ['eq', 'owner', { $: 'sub' }] } } });
  const todos = db.collection('todos');
  const ids = async () => (await todos.list()).map((d) => d.id).join();
  await until(async () => (await ids()) === 'a1', 'a1 held', WAIT);
  await until(() => server.received.some((m) => m.get(0) === 'sub') && /** @type {any} */ (db).syncer?.live, 'live', WAIT);
  /** The subjects of the live hellos, in order. */
  const hellos = () => server.received.filter((m) => m.get(0) === 'hello').map((m) => subjectOfToken(m.get(3)));
  assert.deepEqual(hellos(), ['alice']);
  const stop = async () => {
    await db.close();
    await writer.close();
    await server.stop();
  };
  return { server, writer, w, db, todos, ids, hellos, stop };
}

test('live: setToken with another subject ends the session; the next one is the new subject’s and resumes from the cursors', async () => {
  const { w, writer, db, todos, ids, hellos, stop } = await setup();
  try {
    const session = /** @type {any} */ (db).syncer.session;
    db.setToken(tokenOf('bob'));
    await w.put('b2', { owner: 'bob' });
    await w.put('a2', { owner: 'alice' });
    await writer.whenSynced();
    // b2 is in bob's scope and not in alice's: only a session of bob's
    // reads it.
    await until(async () => (await ids()).includes('b2'), 'b2 delivered under bob', WAIT);
    await until(() => hellos().length === 2, 'a second live hello', WAIT);
    assert.deepEqual(hellos(), ['alice', 'bob']);
    assert.equal(session.ws, null, 'the session of alice closed');
    assert.equal((await ids()).includes('a2'), false, 'a2 is alice’s: not read under bob');
    // Writes of the new subject go out.
    await todos.put('n1', { owner: 'bob' });
    await db.whenSynced();
    assert.equal(db.status.pending, 0);
  } finally {
    await stop();
  }
});

test('live: setToken with a refreshed token of the same subject keeps the session', async () => {
  const { w, writer, db, ids, hellos, stop } = await setup();
  try {
    const session = /** @type {any} */ (db).syncer.session;
    db.setToken(tokenOf('alice', { iat: 2 }));
    await w.put('a2', { owner: 'alice' });
    await writer.whenSynced();
    await until(async () => (await ids()).includes('a2'), 'a2 delivered', WAIT);
    assert.equal(/** @type {any} */ (db).syncer.session, session, 'the same session');
    assert.deepEqual(hellos(), ['alice']);
  } finally {
    await stop();
  }
});

test('a write made right after setToken is the new subject’s: it goes out under the new token', async () => {
  const { server, db, todos, stop } = await setup();
  try {
    db.setToken(tokenOf('bob'));
    await todos.put('n0', { owner: 'bob' });
    await until(() => server.coll('todos').byId.has('n0'), 'n0 pushed', WAIT);
    assert.equal(db.status.held, 0, 'not held for alice');
  } finally {
    await stop();
  }
});
