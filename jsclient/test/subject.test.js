// A token of another subject (setToken) ends the live session opened
// under the old one, whose pages were read under the old subject's rights
// and scopes: the client dials again with the new token and its
// subscriptions go on from their cursors under the new subject. A
// refreshed token of the same subject keeps the session.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FakeServer } from './helpers/server.js';
import { WebSocket, openClient, until } from './helpers/util.js';
import { replicaPrefix, subjectOfToken } from '../src/replica.js';
import { token } from '../src/leader.js';

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

test('a rejected change retried right after setToken is the new subject’s: it goes out under the new token, not held for the old one', async () => {
  const { server, db, todos, stop } = await setup();
  try {
    let refusing = true;
    server.refuse = () => refusing;
    await todos.put('n1', { owner: 'bob' });
    await until(() => db.status.rejected === 1, 'n1 refused', WAIT);
    refusing = false;
    const [r] = await db.rejected();
    db.setToken(tokenOf('bob'));
    await db.retry(r.id);
    await until(() => server.coll('todos').byId.has('n1') || db.status.held > 0, 'n1 pushed or held', WAIT);
    assert.equal(db.status.held, 0, 'not held for alice');
    await until(() => server.coll('todos').byId.has('n1'), 'n1 pushed', WAIT);
  } finally {
    await stop();
  }
});

/**
 * A gate for an answer held back: held resolves once onHeld is called (the
 * answer is being held), released once release is.
 */
function gate() {
  /** @type {() => void} */
  let release = () => {};
  const released = new Promise((r) => (release = () => r(undefined)));
  /** @type {(v?: unknown) => void} */
  let onHeld = () => {};
  const held = new Promise((r) => (onHeld = r));
  return { release, released, onHeld, held };
}

test('an HTTP hello answered under the old token after setToken does not set the old subject’s prefix back', async () => {
  const server = await new FakeServer().start();
  const { release, released, onHeld, held } = gate();
  let holding = true;
  /** A fetch that holds the answer of the first hello sent with alice's token until released. */
  const fetchHeld = async (/** @type {any} */ input, /** @type {any} */ init) => {
    const res = await fetch(input, init);
    const token = String(init?.headers?.Authorization ?? '').replace(/^Bearer /, '');
    if (holding && String(input).endsWith('/hello') && subjectOfToken(token) === 'alice') {
      holding = false;
      onHeld();
      await released;
    }
    return res;
  };
  const db = await openClient({ url: server.url, token: tokenOf('alice'), WebSocket: null, pollInterval: 50, fetch: fetchHeld });
  try {
    const store = /** @type {any} */ (db).store;
    await held; // alice's hello is answered, not yet read
    db.setToken(tokenOf('bob'));
    const bob = await replicaPrefix('bob');
    await until(() => store.prefix === bob, 'bob’s prefix', WAIT);
    release();
    await db.whenSynced();
    assert.equal(store.prefix, bob, 'the late answer of alice’s hello set her prefix back');
    const todos = db.collection('todos');
    await todos.put('n1', { owner: 'bob' });
    await db.whenSynced();
    assert.ok(server.coll('todos').byId.has('n1'), 'n1 is on the server');
    assert.equal(db.status.held, 0);
  } finally {
    release();
    await db.close();
    await server.stop();
  }
});

test('live: a welcome answered under the old token after setToken does not set the old subject’s prefix back', async () => {
  const server = await new FakeServer().start();
  const { release, released, onHeld, held } = gate();
  let holding = true;
  /** A WebSocket whose first socket's first message (alice's welcome) is handed over only once released. */
  class HeldWebSocket extends WebSocket {
    /** @param {any} fn */
    set onmessage(fn) {
      const hold = holding;
      holding = false;
      let first = hold;
      super.onmessage = (/** @type {any} */ ev) => {
        if (!first) return fn(ev);
        first = false;
        onHeld();
        released.then(() => fn(ev));
      };
    }
    get onmessage() {
      return super.onmessage;
    }
  }
  const db = await openClient({ url: server.url, token: tokenOf('alice'), WebSocket: HeldWebSocket });
  try {
    const store = /** @type {any} */ (db).store;
    const hellos = () => server.received.filter((m) => m.get(0) === 'hello').map((m) => subjectOfToken(m.get(3)));
    await held; // alice's welcome came, not yet read
    db.setToken(tokenOf('bob'));
    const bob = await replicaPrefix('bob');
    await until(() => store.prefix === bob, 'bob’s prefix', WAIT);
    /** The prefixes the store takes from now on. */
    const taken = /** @type {string[]} */ ([]);
    const use = store.usePrefix.bind(store);
    store.usePrefix = (/** @type {string} */ p) => (taken.push(p), use(p));
    release();
    await until(() => hellos().length === 2 && /** @type {any} */ (db).syncer?.live, 'a live session as bob', WAIT);
    assert.deepEqual(hellos(), ['alice', 'bob']);
    assert.equal(store.prefix, bob);
    assert.deepEqual(taken.filter((p) => p !== bob), [], 'the late welcome of alice’s session set her prefix back');
    const todos = db.collection('todos');
    await todos.put('n1', { owner: 'bob' });
    await db.whenSynced();
    assert.ok(server.coll('todos').byId.has('n1'), 'n1 is on the server');
    assert.equal(store.prefix, bob);
  } finally {
    release();
    await db.close();
    await server.stop();
  }
});

test('a getToken answer asked for before setToken does not replace the token set meanwhile', async () => {
  const server = await new FakeServer().start();
  /** @type {(t: string) => void} */
  let answer = () => {};
  let asked = 0;
  const getToken = () => {
    asked++;
    return asked === 1 ? tokenOf('alice') : new Promise((resolve) => (answer = resolve));
  };
  const db = await openClient({ url: server.url, getToken, WebSocket: null, pollInterval: 60_000 });
  try {
    await db.whenSynced();
    const any = /** @type {any} */ (db);
    // The server refused the token (say): the client asks getToken again.
    const refreshed = token(db, true);
    await until(() => asked === 2, 'getToken asked again', WAIT);
    db.setToken(tokenOf('bob')); // the app signs in as bob meanwhile
    answer(tokenOf('alice')); // then the answer asked for before comes
    assert.equal(await refreshed, tokenOf('bob'), 'the token sent is the one set last');
    assert.equal(any.tok, tokenOf('bob'), 'the token held is the one set last');
    const bob = await replicaPrefix('bob');
    await until(() => any.store.prefix === bob, 'bob’s prefix', WAIT);
  } finally {
    await db.close();
    await server.stop();
  }
});

/**
 * Waits for db.whenSynced, failing after WAIT with the status.
 * @param {any} db
 */
function synced(db) {
  /** @type {any} */
  let timer;
  const late = new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(`whenSynced did not resolve; status ${JSON.stringify(db.status)}`)), WAIT)));
  return Promise.race([db.whenSynced(), late]).finally(() => clearTimeout(timer));
}

for (const prefixed of [true, false]) {
  test(`a write of the old subject read for a push as setToken switches to another one stays held for it: it is not pushed under the new token, refused and rolled back (the new prefix ${prefixed ? 'set' : 'not set yet'} as the push is made)`, async () => {
    const server = await new FakeServer().start();
    const db = await openClient({ url: server.url, token: tokenOf('alice'), WebSocket: null, pollInterval: 50 });
    try {
      const store = /** @type {any} */ (db).store;
      const todos = db.collection('todos');
      await todos.put('a1', { owner: 'alice' });
      await db.whenSynced();
      const bob = await replicaPrefix('bob');
      // The switch lands while the push of a2 is being made: after its
      // outbox entries were read, before the request goes.
      const tx = store.tx.bind(store);
      let armed = true;
      store.tx = async (/** @type {any[]} */ ...args) => {
        const out = await tx(...args);
        if (armed && args[2] === 'read outbox' && out.some((/** @type {any} */ e) => e.id === 'a2')) {
          armed = false;
          db.setToken(tokenOf('bob'));
          if (prefixed) await until(() => store.prefix === bob, 'bob’s prefix', WAIT);
        }
        return out;
      };
      await todos.put('a2', { owner: 'alice' });
      await until(() => !armed, 'the push of a2 begun', WAIT);
      await synced(db);
      assert.deepEqual(await db.rejected(), [], 'nothing rejected');
      assert.deepEqual(await todos.get('a2'), { id: 'a2', owner: 'alice' }, 'alice’s write is kept');
      assert.equal(db.status.held, 1, 'held for alice');
      assert.equal(server.coll('todos').byId.has('a2'), false);
      // Back as alice, it goes out.
      db.setToken(tokenOf('alice', { iat: 3 }));
      await until(() => server.coll('todos').byId.has('a2'), 'a2 pushed under alice', WAIT);
      await until(() => db.status.held === 0 && db.status.pending === 0, 'nothing held or pending', WAIT);
    } finally {
      await db.close();
      await server.stop();
    }
  });
}

test('writes of the old subject left in the outbox at setToken with another one are held, not pending: whenSynced resolves for the new one', async () => {
  const server = await new FakeServer().start();
  let blocked = true;
  const db = await openClient({
    url: server.url,
    token: tokenOf('alice'),
    WebSocket: null,
    pollInterval: 50,
    fetch: (/** @type {any} */ input, /** @type {any} */ init) => (blocked && String(input).endsWith('/push') ? Promise.reject(new TypeError('offline')) : fetch(input, init)),
  });
  try {
    const todos = db.collection('todos');
    await todos.put('a1', { owner: 'alice' });
    assert.equal(db.status.pending, 1);
    db.setToken(tokenOf('bob'));
    const store = /** @type {any} */ (db).store;
    const bob = await replicaPrefix('bob');
    await until(() => store.prefix === bob, 'bob’s prefix', WAIT);
    blocked = false;
    await synced(db);
    assert.deepEqual({ pending: db.status.pending, held: db.status.held }, { pending: 0, held: 1 });
    assert.equal(server.coll('todos').byId.has('a1'), false);
  } finally {
    await db.close();
    await server.stop();
  }
});
