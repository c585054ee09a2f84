// Reconnecting after an outage: exponential backoff with jitter when
// nothing happens, at once when something suggests the server is back
// (online, the page becoming visible, sync(), a write — rate-limited), and
// never before the server's Retry-After; and no dial while the browser
// says it is offline.
//
// The backoff here is long: its jitter is pinned at the top of its range, so
// its first wait is BASE = 10 s, and a client that reconnects well within
// that did so because of the trigger.
// This file stands in for the browser's window, document and
// navigator.onLine (Node has none of them), so it runs in its own process
// like every test file.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FakeServer } from './helpers/server.js';
import { WebSocket, heldAnswers, openClient, until, waitsOf } from './helpers/util.js';
import { WRITE_RETRY_MS } from '../src/sync.js';
import { TabMessage } from '../src/tabs.js';
import { PATHS } from '../src/constants.js';
import { dropMeta } from '../src/syncstore.js';
import { CURSOR_KEY } from '../src/metakeys.js';

const BASE = 10_000;
/** Time a triggered reconnect may take on a loaded machine: well under BASE/2. */
/** The jitter at the top of its range: every wait is the whole min(max, base * 2^n). */
const TOP = () => 1;
const FAST = 2_000;

const win = new EventTarget();
const doc = Object.assign(new EventTarget(), { visibilityState: 'visible' });
Object.assign(globalThis, {
  addEventListener: win.addEventListener.bind(win),
  removeEventListener: win.removeEventListener.bind(win),
  document: doc,
});

/** What navigator.onLine says (Node's navigator, where there is one, has none). */
let onLine = true;
const nav = globalThis.navigator ?? {};
Object.defineProperty(nav, 'onLine', { get: () => onLine, configurable: true });
if (!globalThis.navigator) Object.defineProperty(globalThis, 'navigator', { value: nav, configurable: true, writable: true });

/**
 * The browser's network going away or coming back: navigator.onLine says
 * so, then the event fires (as in a browser).
 * @param {boolean} up
 */
function setOnLine(up) {
  onLine = up;
  win.dispatchEvent(new Event(up ? 'online' : 'offline'));
}

/** @param {'visible'|'hidden'} state */
function setVisibility(state) {
  doc.visibilityState = state;
  doc.dispatchEvent(new Event('visibilitychange'));
}

const sleep = (/** @type {number} */ ms) => new Promise((r) => setTimeout(r, ms));

/**
 * A fetch that records every request: when it left, whether it got an
 * answer (a refused connection is no answer), and when it ended.
 */
function recordingFetch() {
  /** @type {{path: string, at: number, answered: boolean, end: number}[]} */
  const calls = [];
  /** @type {typeof fetch} */
  const f = async (url, init) => {
    const at = Date.now();
    const path = new URL(String(url)).pathname;
    try {
      const res = await fetch(url, init);
      calls.push({ path, at, answered: true, end: Date.now() });
      return res;
    } catch (e) {
      calls.push({ path, at, answered: false, end: Date.now() });
      throw e;
    }
  };
  return { fetch: f, calls, refused: () => calls.filter((c) => !c.answered) };
}

/**
 * Whether the client is live: online, and its socket subscribed.
 * @param {FakeServer} server
 * @param {import('../src/database.js').Database} db
 */
function live(server, db) {
  return db.status.online && db.status.lastError === null && server.sockets.size === 1 && [...server.sockets][0].subs.has('todos');
}

/**
 * Has db's collections owe a pull at its next round, as after a reset
 * (their cursors forgotten): each attempt to reconnect then begins with a
 * request over HTTP, not with a dial alone (a collection that holds a
 * cursor, the empty one of a collection never written too, is subscribed
 * from it).
 * @param {import('../src/database.js').Database} db
 */
function oweAPull(db) {
  return dropMeta(db.store, CURSOR_KEY);
}

/**
 * A live client whose server then goes down: resolves once the client
 * noticed, with the time the test saw it (since) and the time the client
 * said so (noticed: its status went offline, and its backoff began).
 * @param {import('node:test').TestContext} t
 * @param {object} [opts] more open options
 */
async function outage(t, opts = {}) {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const rec = recordingFetch();
  const db = await openClient({ url: server.url, name: 'r', collections: ['todos'], fetch: rec.fetch, backoff: { base: BASE, max: 30_000, random: TOP }, ...opts });
  t.after(() => db.close());
  await until(() => live(server, db), 'live');
  let noticed = 0;
  const off = db.on('status', (s) => {
    if (!s.online && noticed === 0) noticed = Date.now();
  });
  await server.down();
  await until(() => !db.status.online, 'the client to notice the outage');
  off();
  await oweAPull(db);
  return { server, db, rec, since: Date.now(), noticed };
}

/**
 * Waits for the client to be live again; returns when that was.
 * @param {FakeServer} server
 * @param {import('../src/database.js').Database} db
 */
async function reconnected(server, db) {
  await until(() => live(server, db), 'the client to reconnect', BASE);
  return Date.now();
}

test("the browser's online event reconnects at once", async (t) => {
  const { server, db, rec, since } = await outage(t);
  win.dispatchEvent(new Event('online'));
  await until(() => rec.refused().length === 1, 'an attempt against the dead server');
  await server.up();
  await sleep(200);
  assert.equal(db.status.online, false, 'no attempt without a trigger this early');
  const triggered = Date.now();
  win.dispatchEvent(new Event('online'));
  const back = await reconnected(server, db);
  assert.ok(back - triggered < FAST, `reconnected ${back - triggered} ms after the online event`);
  assert.ok(back - since < BASE / 2, `reconnected ${back - since} ms after the outage, the backoff alone waits at least ${BASE / 2}`);
});

test('an online event while an attempt is failing is not lost: the next attempt goes at once', async (t) => {
  // Refusals are held back while `hold` is set, so that the test can act
  // while an attempt is under way (waiting for its answer).
  /** @type {((v?: any) => void)|null} */
  let holding = null;
  let hold = false;
  const rec = recordingFetch();
  /** @type {typeof fetch} */
  const slow = async (url, init) => {
    try {
      return await rec.fetch(url, init);
    } catch (e) {
      if (hold) await new Promise((resolve) => (holding = resolve));
      throw e;
    }
  };
  const { server, db } = await outage(t, { fetch: slow });
  hold = true;
  win.dispatchEvent(new Event('online'));
  await until(() => holding !== null, 'an attempt under way against the dead server');
  // The server is back and the network says so while the attempt is still
  // failing: without the event the next attempt waits the whole backoff.
  await server.up();
  hold = false;
  const triggered = Date.now();
  win.dispatchEvent(new Event('online'));
  /** @type {any} */ (holding)();
  const back = await reconnected(server, db);
  assert.ok(back - triggered < FAST, `reconnected ${back - triggered} ms after the online event, the backoff alone waits ${BASE}`);
});

test('the page becoming visible reconnects at once', async (t) => {
  const { server, db, rec, since } = await outage(t);
  setVisibility('hidden');
  assert.equal(rec.refused().length, 0, 'hiding the page is no reason to try');
  setVisibility('visible');
  await until(() => rec.refused().length === 1, 'an attempt against the dead server');
  await server.up();
  setVisibility('hidden');
  await sleep(200);
  assert.equal(db.status.online, false);
  const triggered = Date.now();
  setVisibility('visible');
  const back = await reconnected(server, db);
  assert.ok(back - triggered < FAST, `reconnected ${back - triggered} ms after the page became visible`);
  assert.ok(back - since < BASE / 2, `reconnected ${back - since} ms after the outage`);
});

test("another tab's page becoming visible reconnects the leader at once", async (t) => {
  const { server, db, since } = await outage(t, { name: 'leader-tab', BroadcastChannel: globalThis.BroadcastChannel });
  await server.up();
  // What a follower tab sends when its page becomes visible.
  const follower = new BroadcastChannel('convergo:leader-tab');
  t.after(() => follower.close());
  const triggered = Date.now();
  follower.postMessage({ t: TabMessage.retry });
  const back = await reconnected(server, db);
  assert.ok(back - triggered < FAST, `reconnected ${back - triggered} ms after the follower asked`);
  assert.ok(back - since < BASE / 2);
});

test('sync() reconnects at once and reports how it went', async (t) => {
  const { server, db, rec, since } = await outage(t);
  const t0 = Date.now();
  await assert.rejects(db.sync(), (/** @type {any} */ e) => e.code === 'network');
  assert.ok(Date.now() - t0 < FAST, 'sync() against a dead server fails at once, not after the backoff');
  assert.equal(rec.refused().length, 1, 'one attempt');
  await server.up();
  const triggered = Date.now();
  await db.sync();
  const back = await reconnected(server, db);
  assert.ok(back - triggered < FAST, `live again ${back - triggered} ms after sync()`);
  assert.ok(back - since < BASE / 2);
  // The collection, never written, is subscribed from the empty cursor
  // that pull stored: a round beside the reconnect would pull it again.
  assert.equal(rec.calls.filter((c) => c.at >= triggered && c.path === PATHS.pull).length, 1, 'one pull to sync, none after the live welcome: sync() joined the reconnect rather than running beside it');
});

test('a write reconnects at once, at most once per interval', async (t) => {
  const { server, db, rec, since } = await outage(t);
  const todos = db.collection('todos');
  await todos.put('w1', { n: 1 });
  await until(() => rec.refused().length === 1, 'an attempt against the dead server');
  const early = rec.refused()[0].at;
  await todos.put('w2', { n: 2 });
  await sleep(100);
  assert.equal(rec.refused().length, 1, 'a second write within the interval does not try again at once');
  await server.up();
  await todos.put('w3', { n: 3 });
  await sleep(200);
  assert.equal(db.status.online, false, 'still rate-limited though the server is back');
  assert.equal(rec.calls.filter((c) => c.at > early).length, 0, 'no request at all');
  // The writes within the interval moved the next attempt to its end.
  const back = await reconnected(server, db);
  // early is when the attempt's request left, which on a loaded machine is
  // some time after the client decided to make it, and the interval counts
  // from the decision: the next attempt leaves at least half of it after
  // early (an immediate one would leave within a few milliseconds). It is
  // timed as it leaves: the reconnect it begins takes its own time.
  const next = /** @type {{at: number}} */ (rec.calls.find((c) => c.at > early));
  assert.ok(next.at - early >= WRITE_RETRY_MS / 2 && next.at - early < WRITE_RETRY_MS + FAST, `the next attempt left ${next.at - early} ms after the early one`);
  assert.ok(back - since < BASE / 2, `reconnected ${back - since} ms after the outage`);
  await until(() => db.status.pending === 0, 'the writes pushed');
  assert.deepEqual([...server.coll('todos').byId.keys()].sort(), ['w1', 'w2', 'w3']);
  // Live again, writes go out as they come, with no reconnect attempts.
  const sockets = [...server.sockets];
  await todos.put('w4', { n: 4 });
  await until(() => server.coll('todos').byId.has('w4'), 'w4 pushed');
  assert.deepEqual([...server.sockets], sockets);
});

test('without triggers the backoff grows exponentially, with full jitter', async (t) => {
  const base = 100;
  // The jitter's draws, in order: each wait is its draw times
  // min(max, base * 2^n), anywhere in [0, that].
  const draws = [0.9, 0.1, 0.75, 0.5, 1, 0.3, 0.6, 0.8, 0.2, 0.4];
  /** @type {number[]} */
  const drawn = [];
  const random = () => {
    const v = draws[drawn.length % draws.length];
    drawn.push(v);
    return v;
  };
  const waits = await waitsOf(t);
  const { rec, noticed } = await outage(t, { backoff: { base, max: 30_000, random } });
  await until(() => rec.refused().length >= 5, 'five failed attempts', 10_000);
  // The wait the client asked for before each attempt is its draw of the
  // whole exponential range (a loaded machine fires timers late, so when
  // an attempt left tells only that the wait was not cut short).
  const at = rec.refused().map((c) => c.at);
  // Each wait is from the failure before it (the session's end, which the
  // client's status tells as it happens; an attempt's refusal heard).
  const failed = [noticed, ...rec.refused().map((c) => c.end)];
  for (let n = 0; n < 5; n++) {
    const d = drawn[n] * base * 2 ** n;
    assert.equal(waits[n], d, `wait ${n}: asked for ${waits[n]} ms, want ${d} (draw ${drawn[n]} of ${base * 2 ** n})`);
    // Timers may run late, never early.
    const gap = at[n] - failed[n];
    assert.ok(gap >= d - 5, `attempt ${n + 1} left ${gap} ms after the failure before it, before its wait of ${d} ms`);
  }
  // A trigger starts the backoff over: the wait after it is the first one again.
  const before = rec.refused().length;
  const drawsBefore = drawn.length;
  const waitsBefore = waits.length;
  win.dispatchEvent(new Event('online'));
  // At least: the waits after them are short, so a test that looks late
  // finds more.
  await until(() => rec.refused().length >= before + 2, 'an attempt now and one after the first wait');
  const [now, next] = rec.refused().slice(before);
  const first = drawn[drawsBefore] * base;
  assert.equal(waits[waitsBefore], first, `wait after the trigger: asked for ${waits[waitsBefore]} ms, want ${first}`);
  const gap = next.at - now.end;
  assert.ok(gap >= first - 5, `the attempt after the trigger's left ${gap} ms after it failed, before its wait of ${first} ms`);
});

test("triggers honour the server's Retry-After", async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const rec = recordingFetch();
  const db = await openClient({ url: server.url, name: 'ra', collections: ['todos'], fetch: rec.fetch, backoff: { base: 20, max: 30_000 } });
  t.after(() => db.close());
  await until(() => live(server, db), 'live');
  server.retryAfter = 2;
  server.limitedUntil = Date.now() + 1500;
  await oweAPull(db);
  server.dropSockets();
  await until(() => db.status.lastError?.code === 'rate_limited', 'a rate-limited attempt');
  const limitedAt = /** @type {number} */ (server.limited.at(-1));
  const requests = rec.calls.length;
  win.dispatchEvent(new Event('online'));
  setVisibility('hidden');
  setVisibility('visible');
  await db.collection('todos').put('x', { n: 1 });
  await assert.rejects(db.sync(), (/** @type {any} */ e) => e.code === 'rate_limited' && e.retryAfter > 0 && e.retryAfter <= 2);
  await sleep(500);
  assert.equal(rec.calls.length, requests, 'no request while Retry-After lasts');
  await reconnected(server, db);
  const next = /** @type {{at: number}} */ (rec.calls[requests]);
  assert.ok(next.at >= limitedAt + 2000 - 20, `the next request came ${next.at - limitedAt} ms after the 429 that asked for 2 s`);
  assert.equal(server.limited.length, 1, 'one rate-limited answer');
  await until(() => db.status.pending === 0, 'the write pushed');
});

test('a live socket that stops answering is dropped when the network changes', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const db = await openClient({ url: server.url, name: 'probe', collections: ['todos'] });
  t.after(() => db.close());
  await until(() => live(server, db), 'live');
  const [first] = server.sockets;
  server.ignorePings = true; // the peer is gone, the socket does not know it yet
  win.dispatchEvent(new Event('online'));
  win.dispatchEvent(new Event('online')); // one probe at a time
  await until(() => !server.sockets.has(first), 'the silent socket to be dropped', 8000);
  server.ignorePings = false;
  await until(() => db.status.online && server.sockets.size === 1, 'a new live socket');
  // A socket that answers is kept.
  const [second] = server.sockets;
  win.dispatchEvent(new Event('online'));
  await sleep(300);
  assert.ok(server.sockets.has(second));
});

test('the network going away while a round reads: the round does not dial, the online event does', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  /** @type {string[]} */
  const dials = [];
  class Dialing extends WebSocket {
    /** @param {ConstructorParameters<typeof WebSocket>} args */
    constructor(...args) {
      super(...args);
      dials.push(onLine ? 'online' : 'offline');
    }
  }
  const db = await openClient({ url: server.url, name: 'gone', collections: ['todos'], WebSocket: Dialing });
  t.after(() => db.close());
  t.after(() => {
    onLine = true;
  });
  await until(() => live(server, db), 'live');
  // The session ends; the round after it reads over HTTP (the collection
  // owes a pull), then dials. The network goes away while its pull waits
  // for its answer, which comes all the same (it was on its way).
  const pull = heldAnswers(server, PATHS.pull, { first: true });
  await oweAPull(db);
  server.dropSockets();
  await until(() => pull.count() === 1, 'the round after the session to pull');
  setOnLine(false);
  pull.release();
  const syncer = /** @type {any} */ (db).syncer;
  await until(() => dials.length > 1 || syncer.waiting === 'offline', 'a dial, or the loop waiting for the online event');
  assert.deepEqual(dials, ['online'], 'no dial once the browser said it is offline (it can only fail, and the browser logs that failure)');
  assert.equal(db.status.online, false);
  setOnLine(true);
  await until(() => live(server, db), 'live again after the online event');
  assert.deepEqual(dials, ['online', 'online']);
});

test('no request while the browser says it is offline: a welcome heard after the offline event stops at its next request', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  /** @type {{path: string, onLine: boolean}[]} */
  const requests = [];
  /** @type {typeof fetch} */
  const recording = (url, init) => {
    requests.push({ path: new URL(String(url)).pathname, onLine });
    return fetch(url, init);
  };
  // Once owe is set, each dial has the collections owe a pull (their
  // cursors forgotten, as after a reset) before its welcome reads them.
  let owe = false;
  class Dialing extends WebSocket {
    /** @param {ConstructorParameters<typeof WebSocket>} args */
    constructor(...args) {
      super(...args);
      if (owe) oweAPull(db);
    }
  }
  const db = await openClient({ url: server.url, name: 'welcome', collections: ['todos', 'notes'], fetch: recording, WebSocket: Dialing });
  t.after(() => db.close());
  t.after(() => {
    onLine = true;
  });
  await until(() => live(server, db) && [...server.sockets][0].subs.has('notes'), 'live');
  // The next session's welcome reads each collection over HTTP (each
  // owes a pull), then subscribes it: its first pull is held until the
  // network went away.
  owe = true;
  /** @type {() => void} */
  let release = () => {};
  const gate = new Promise((r) => (release = () => r(undefined)));
  let held = 0;
  const handle = server.handle.bind(server);
  server.handle = async (/** @type {any} */ req, /** @type {any} */ res) => {
    if (req.url === PATHS.pull && server.sockets.size > 0 && held++ === 0) await gate;
    return handle(req, res);
  };
  server.dropSockets();
  await until(() => held === 1, "the next welcome's first pull");
  setOnLine(false);
  release();
  const syncer = /** @type {any} */ (db).syncer;
  await until(() => syncer.waiting === 'offline', 'the loop waiting for the online event');
  await syncer.chain;
  assert.deepEqual(requests.filter((r) => !r.onLine), [], 'no request once the browser said it is offline (it can only fail, and the browser logs that failure)');
  setOnLine(true);
  await until(() => live(server, db) && [...server.sockets][0].subs.has('notes'), 'live again after the online event');
});
