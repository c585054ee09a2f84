// Test helpers: fresh fake IndexedDB factories, polling, opening clients.

import { IDBFactory, IDBKeyRange } from 'fake-indexeddb';
import WebSocket from 'ws';
import { open } from '../../src/index.js';

/** A fresh, isolated IndexedDB (one "browser profile"). */
export function freshIDB() {
  return new IDBFactory();
}

/**
 * Waits until fn() returns a truthy value (or its promise resolves to one).
 * @template T
 * @param {() => T|Promise<T>} fn
 * @param {string} what
 * @param {number} [timeout]
 * @returns {Promise<T>}
 */
export async function until(fn, what, timeout = 5000) {
  const end = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) throw new Error(`timed out waiting for ${what} (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/**
 * Opens a client for tests: fake IndexedDB, ws, no Web Locks, no
 * BroadcastChannel unless asked.
 * @param {Partial<import('../../src/database.js').OpenOptions> & {url?: string}} opts
 */
export function openClient(opts) {
  return open({
    url: 'http://127.0.0.1:1',
    name: 'test',
    indexedDB: freshIDB(),
    IDBKeyRange,
    WebSocket,
    locks: null,
    BroadcastChannel: null,
    backoff: { base: 20, max: 200 },
    ...opts,
  });
}

/**
 * Holds every answer of server to a request of path for ms before it
 * handles it.
 * @param {import('./server.js').FakeServer} server
 * @param {string} path
 * @param {number} ms
 * @returns {() => number} how many such requests came since
 */
export function slowAnswers(server, path, ms) {
  let n = 0;
  const handle = server.handle.bind(server);
  server.handle = async (/** @type {any} */ req, /** @type {any} */ res) => {
    if (req.url === path) {
      n++;
      await new Promise((r) => setTimeout(r, ms));
    }
    return handle(req, res);
  };
  return () => n;
}

/**
 * Holds every answer of server to a request of path (with first, only the
 * answer to the first such request) until release() is called; requests
 * that come after it are answered at once. A test acts while a request is
 * surely under way, whatever the machine's load.
 * @param {import('./server.js').FakeServer} server
 * @param {string} path
 * @param {{first?: boolean}} [opts]
 * @returns {{count: () => number, release: () => void}} count: how many such requests came since
 */
export function heldAnswers(server, path, { first = false } = {}) {
  let n = 0;
  /** @type {() => void} */
  let release = () => {};
  const gate = new Promise((r) => (release = () => r(undefined)));
  const handle = server.handle.bind(server);
  server.handle = async (/** @type {any} */ req, /** @type {any} */ res) => {
    if (req.url === path && (n++ === 0 || !first)) await gate;
    return handle(req, res);
  };
  return { count: () => n, release };
}

/**
 * The waits the sync loop asks for (Syncer.wait), or the timers of sync
 * work beside it (Syncer.after: 'retry', the next try of the failing
 * collections while live), for reason why, in ms and in order, from now
 * to the end of test t: what the client decided, whenever a loaded
 * machine fires its timers.
 * @param {import('node:test').TestContext} t
 * @param {'backoff'|'poll'|'offline'|'halted'|'revoked'|'push'|'retry'} [why]
 * @returns {Promise<number[]>}
 */
export async function waitsOf(t, why = 'backoff') {
  const { Syncer } = await import('../../src/sync.js');
  /** @type {number[]} */
  const waits = [];
  const { wait, after } = Syncer.prototype;
  Syncer.prototype.wait = function (ms, w) {
    if (w === why) waits.push(ms);
    return wait.call(this, ms, w);
  };
  Syncer.prototype.after = function (ms, w, fn) {
    if (w === why) waits.push(ms);
    return after.call(this, ms, w, fn);
  };
  t.after(() => {
    Object.assign(Syncer.prototype, { wait, after });
  });
  return waits;
}

/** An in-process stand-in for navigator.locks: exclusive, FIFO per name. */
export function fakeLocks() {
  /** @type {Map<string, Promise<unknown>>} */
  const tails = new Map();
  return {
    /**
     * @param {string} name
     * @param {() => Promise<unknown>} cb
     */
    request(name, cb) {
      const prev = tails.get(name) ?? Promise.resolve();
      const p = prev.then(() => cb());
      tails.set(
        name,
        p.catch(() => {}),
      );
      return p;
    },
  };
}

/**
 * A write horizon past every stamp client a has taken so far (by its own
 * clock, whatever its offset, and past what its hybrid clock observed of
 * other replicas' stamps, which may run ahead of it), and a's clock past
 * the horizon, so that what a stamps from now on is after it. Its hybrid
 * clock is moved past it too (and saved, as a write saves it): the next
 * sync loop (resume, a reload) measures the offset again in its hello,
 * and may find it lower than the one waited with here (by hundreds of ms
 * on a loaded machine), but stamps never go back, so a re-stamp still
 * follows the horizon.
 * @param {any} a an open client (openClient)
 * @param {number} [timeout] ms to wait for a's clock
 * @returns {Promise<number>} the horizon (ms)
 */
export async function horizonPast(a, timeout = 15_000) {
  const horizon = Math.max(Date.now(), a.store.now(), a.store.clock.last.wall) + 1;
  await until(() => a.store.now() > horizon, "a's clock past the horizon", timeout);
  a.store.clock.observe({ wall: horizon, logical: 0 }, a.store.now());
  await a.store.setMeta('clock', a.store.clockEntry());
  return horizon;
}

/**
 * An unsigned JWT naming subject sub, expiring in an hour (the fake
 * server reads, not checks, it: it derives the replica prefix from the
 * subject).
 * @param {string} sub
 */
export function jwtOf(sub) {
  const b64 = (/** @type {any} */ o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  return `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ sub, exp: Math.floor(Date.now() / 1000) + 3600 })}.sig`;
}

export { IDBKeyRange, WebSocket };
