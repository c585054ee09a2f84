// Helpers for the browser end-to-end tests: start the real convergo binary
// on Redis, launch Debian's Chromium through playwright-core, read the
// server's state over the wire protocol, and wait for conditions.
//
// Environment (scripts/e2e.sh sets all three):
//   CONVERGO_BIN        the convergo binary to run
//   CONVERGO_REDIS_ADDR host:port of a Redis the tests may use (each server
//                       gets a unique key prefix; nothing is flushed)
//   CONVERGO_CHROMIUM   Chromium's executable (default /usr/bin/chromium)

import { execFile, spawn } from 'node:child_process';
import { createHmac, randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';

import { Decoder, Encoder } from 'cbor-x';
import { CONTENT_TYPE, HEADERS, PATHS, REPLICA, VERSION } from '../src/constants.js';
import { replicaPrefix } from '../src/replica.js';
import { chromium } from 'playwright-core';

export const COLLECTION = 'demo.todos';
export const ARTIFACTS = path.join(path.dirname(fileURLToPath(import.meta.url)), 'artifacts');

const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-dev-shm-usage',
];

/** Reads a required environment variable or throws saying what to set. */
export function env(name, fallback) {
  const v = process.env[name] || fallback;
  if (!v) throw new Error(`${name} is not set: run the browser tests through scripts/e2e.sh`);
  return v;
}

/** A random suffix for Redis prefixes and names, so runs never collide. */
export function unique(label) {
  return `${label}-${Date.now().toString(36)}-${randomBytes(4).toString('hex')}`;
}

/** A TCP port that was free a moment ago on 127.0.0.1. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/**
 * Polls fn until it returns a truthy value and returns that value; throws
 * with message (and fn's last error or value) after timeout ms.
 */
export async function waitFor(fn, { timeout = 15_000, interval = 100, message = 'condition' } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
      last = v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      const detail = last instanceof Error ? last.message : JSON.stringify(last);
      throw new Error(`timed out after ${timeout} ms waiting for ${message} (last: ${detail})`);
    }
    await sleep(interval);
  }
}

/**
 * Polls count until it returns want and returns; throws with message once
 * count has not moved for stall ms (a first sync that stopped, not one
 * that a loaded machine makes slow).
 */
export async function waitForCount(count, want, { stall = 60_000, interval = 200, message = 'count' } = {}) {
  let last = -1;
  let moved = Date.now();
  for (;;) {
    const n = await count();
    if (n === want) return;
    if (n !== last) {
      last = n;
      moved = Date.now();
    } else if (Date.now() - moved > stall) {
      throw new Error(`${message}: stuck at ${n} of ${want} for ${stall} ms`);
    }
    await sleep(interval);
  }
}

/**
 * A convergo server process on a fixed port and Redis prefix. stop() and
 * start() again keep both, so clients reconnect to "the same server" with
 * the same data, as after a deploy or a crash.
 */
export class Server {
  constructor({ bin = env('CONVERGO_BIN'), redis, prefix = unique('e2e'), port, extraArgs = [], store } = {}) {
    this.bin = bin;
    // A store URL of the test's own (bolt:PATH, a private Redis), or the
    // shared Redis under a prefix of this server's.
    this.ownStore = store !== undefined || redis !== undefined;
    this.store = store ?? `redis://${redis ?? env('CONVERGO_REDIS_ADDR')}?prefix=${encodeURIComponent(prefix)}:`;
    this.prefix = prefix;
    this.port = port;
    this.extraArgs = extraArgs;
    this.proc = null;
    this.log = [];
  }

  get url() {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Starts the process and waits until it serves the demo page. */
  async start() {
    if (this.proc) throw new Error('server already running');
    this.port ??= await freePort();
    const args = ['serve', '--addr', `127.0.0.1:${this.port}`, '--store', this.store, ...this.extraArgs];
    const proc = spawn(this.bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc = proc;
    let exited = null;
    proc.on('exit', (code, signal) => {
      exited = { code, signal };
      this.log.push(`[exit code=${code} signal=${signal}]`);
      if (this.proc === proc) this.proc = null;
    });
    for (const s of [proc.stdout, proc.stderr]) {
      s.setEncoding('utf8');
      s.on('data', (d) => {
        this.log.push(d);
        if (this.log.length > 2000) this.log.splice(0, 1000);
      });
    }
    await waitFor(async () => {
      if (exited) throw new Error(`convergo exited (${JSON.stringify(exited)}):\n${this.logs()}`);
      const res = await fetch(`${this.url}/`, { signal: AbortSignal.timeout(1000) });
      return res.ok;
    }, { timeout: 20_000, message: `convergo to serve on ${this.url}` }).catch((err) => {
      throw new Error(`${err.message}\nserver output:\n${this.logs()}`);
    });
    return this;
  }

  /** Stops the process: SIGKILL when hard (a crash), SIGTERM otherwise. */
  async stop({ hard = false } = {}) {
    const proc = this.proc;
    if (!proc) return;
    const gone = new Promise((resolve) => proc.once('exit', resolve));
    proc.kill(hard ? 'SIGKILL' : 'SIGTERM');
    const timer = setTimeout(() => proc.kill('SIGKILL'), 10_000);
    await gone;
    clearTimeout(timer);
  }

  logs() {
    return this.log.join('').slice(-8000);
  }

  /**
   * Ends a test file's server: stops it, keeps its output in the artifacts
   * folder (name.server.log) and drops its Redis keys.
   */
  async dispose(name) {
    await this.stop();
    mkdirSync(ARTIFACTS, { recursive: true });
    writeFileSync(path.join(ARTIFACTS, `${name}.server.log`), this.log.join(''));
    if (!this.ownStore) await dropRedisPrefix(env('CONVERGO_REDIS_ADDR'), `${this.prefix}:`);
  }

  /**
   * The value of one Prometheus series: a name, with its labels as the
   * server prints them (convergo_push_changes_total{status="noop"}).
   */
  async metric(name) {
    const res = await fetch(`${this.url}/metrics`);
    if (!res.ok) throw new Error(`GET /metrics: ${res.status}`);
    const text = await res.text();
    const line = text.split('\n').find((l) => l.startsWith(`${name} `));
    if (!line) throw new Error(`metric ${name} not exported`);
    return Number(line.slice(name.length + 1));
  }

  /**
   * Every record of collection as the server holds it, pulled over the
   * wire protocol with an independent CBOR codec: a Map from id to
   * {deleted, fields: {name: {wall, logical, replica, value}}}.
   */
  async records(collection = COLLECTION, token = null) {
    const out = new Map();
    // The server's opaque cursor: sent back as it came; empty is the beginning.
    let cursor = new Uint8Array(0);
    for (let page = 0; page < 10_000; page++) {
      // Limit 0: the server's max-pull.
      const body = encoder.encode(new Map([[1, collection], [2, cursor], [3, 0]]));
      const res = await fetch(`${this.url}${PATHS.pull}`, {
        method: 'POST',
        headers: { 'Content-Type': CONTENT_TYPE, [HEADERS.protocol]: String(VERSION), ...(token ? { Authorization: `Bearer ${token}` } : {}) },
        body,
      });
      const answer = decoder.decode(new Uint8Array(await res.arrayBuffer()));
      if (!res.ok) throw new Error(`POST ${PATHS.pull}: ${res.status} ${JSON.stringify([...(answer instanceof Map ? answer : [])])}`);
      // Compact stamps (docs/protocol.md): key 7 the replica table, key 8
      // the base wall.
      const cx = { table: answer.get(7) ?? [], base: Number(answer.get(8) ?? 0) };
      for (const rec of answer.get(1)) {
        const r = wireRecord(rec, cx);
        out.set(r.id, r);
      }
      cursor = answer.get(2);
      if (!(cursor instanceof Uint8Array)) throw new Error(`pull answered a cursor that is no byte string: ${cursor}`);
      if (!answer.get(3)) return out;
    }
    throw new Error('pull did not end');
  }

  /**
   * Pushes records written by another replica straight to the server, as
   * any client could: fields is {name: value}, all stamped now by the
   * anonymous subject's replica id with device part device (the demo lets
   * anyone write as anyone: docs/protocol.md, "Replica ids").
   * Values are encoded by cbor-x: pass Maps, not plain objects, which it
   * writes with a non-canonical length the server refuses. Returns the
   * server's result statuses (STATUSES: 0 applied, 1 duplicate, 2
   * superseded, 3 refused). With token, the push is that token's
   * subject's, whose replica prefix the stamps must carry.
   */
  async push(device, id, fields, collection = COLLECTION, { token = null, subject = '' } = {}) {
    const replica = (await replicaPrefix(subject)) + REPLICA.separator + device;
    const wall = Date.now(); // encoded as a BigInt: cbor-x writes large numbers as floats
    // Deterministic encoding: map keys shortest first, then bytewise.
    const names = Object.keys(fields).sort((a, b) => Buffer.byteLength(a) - Buffer.byteLength(b) || Buffer.compare(Buffer.from(a), Buffer.from(b)));
    const rec = new Map([[1, id], [3, new Map(names.map((n) => [n, [BigInt(wall), 0, replica, fields[n]]]))]]);
    const body = encoder.encode(new Map([[1, replica], [2, [new Map([[1, collection], [2, rec]])]]]));
    const res = await fetch(`${this.url}${PATHS.push}`, {
      method: 'POST',
      headers: { 'Content-Type': CONTENT_TYPE, [HEADERS.protocol]: String(VERSION), ...(token ? { Authorization: `Bearer ${token}` } : {}) },
      body,
    });
    const answer = decoder.decode(new Uint8Array(await res.arrayBuffer()));
    if (!res.ok) throw new Error(`POST ${PATHS.push}: ${res.status} ${JSON.stringify([...(answer instanceof Map ? answer : [])])}`);
    return answer.get(1).map((r) => r.get(1));
  }

  /**
   * push for many records at once: records is [{id, fields}], pushed in
   * requests of at most 1,000 changes. Returns how many the server applied.
   */
  async pushMany(device, records, collection = COLLECTION) {
    const replica = (await replicaPrefix('')) + REPLICA.separator + device;
    let applied = 0;
    for (let i = 0; i < records.length; i += 1000) {
      const wall = BigInt(Date.now());
      const changes = records.slice(i, i + 1000).map(({ id, fields }) => {
        const names = Object.keys(fields).sort((a, b) => Buffer.byteLength(a) - Buffer.byteLength(b) || Buffer.compare(Buffer.from(a), Buffer.from(b)));
        return new Map([[1, collection], [2, new Map([[1, id], [3, new Map(names.map((n) => [n, [wall, 0, replica, fields[n]]]))]])]]);
      });
      const res = await fetch(`${this.url}${PATHS.push}`, {
        method: 'POST',
        headers: { 'Content-Type': CONTENT_TYPE, [HEADERS.protocol]: String(VERSION) },
        body: encoder.encode(new Map([[1, replica], [2, changes]])),
      });
      const answer = decoder.decode(new Uint8Array(await res.arrayBuffer()));
      if (!res.ok) throw new Error(`POST ${PATHS.push}: ${res.status} ${JSON.stringify([...(answer instanceof Map ? answer : [])])}`);
      applied += answer.get(1).filter((r) => r.get(1) === 0).length;
    }
    return applied;
  }

  /** The visible documents of collection: a Map from id to {field: value}. */
  async docs(collection = COLLECTION, token = null) {
    const docs = new Map();
    for (const [id, r] of await this.records(collection, token)) {
      const d = visible(r);
      if (d) docs.set(id, d);
    }
    return docs;
  }
}

const encoder = new Encoder({ mapsAsObjects: false, useRecords: false, tagUint8Array: false });
const decoder = new Decoder({ mapsAsObjects: false, useRecords: false });

function wireStamp(a, cx) {
  if (!Array.isArray(a) || a.length < 3) throw new Error(`bad stamp ${JSON.stringify(a)}`);
  const replica = typeof a[2] === 'string' ? a[2] : cx.table[Number(a[2])];
  if (typeof replica !== 'string') throw new Error(`bad replica index ${a[2]} for table ${JSON.stringify(cx.table)}`);
  return { wall: cx.base + Number(a[0]), logical: Number(a[1]), replica, ...(a.length > 3 ? { value: a[3] } : {}) };
}

function wireRecord(m, cx) {
  const fields = {};
  for (const [name, f] of m.get(3) ?? []) fields[name] = wireStamp(f, cx);
  return { id: m.get(1), deleted: m.has(2) ? wireStamp(m.get(2), cx) : null, fields };
}

function later(a, b) {
  return a.wall - b.wall || a.logical - b.logical || (a.replica < b.replica ? -1 : a.replica > b.replica ? 1 : 0);
}

/**
 * The document a record shows: fields set after the latest delete, or null
 * when nothing is (crdt.Record.Values).
 */
export function visible(r) {
  const doc = {};
  let any = false;
  for (const [name, f] of Object.entries(r.fields)) {
    if (!('value' in f)) continue;
    if (r.deleted && later(f, r.deleted) <= 0) continue;
    doc[name] = f.value;
    any = true;
  }
  return any ? doc : null;
}

/**
 * An HS256 JWT signed with secret, as `convergo token` issues them: claims
 * (sub, read, write, any others such as teams) plus iat and exp (ttl
 * seconds from now).
 */
export function signToken(secret, claims, ttl = 3600) {
  const now = Math.floor(Date.now() / 1000);
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
  const body = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ ...claims, iat: now, exp: now + ttl })}`;
  return `${body}.${createHmac('sha256', secret).update(body).digest('base64url')}`;
}

/**
 * Runs the convergo binary with args (an operator's command: deny, allow,
 * token, store ...) and returns its stdout; fails with its stderr.
 */
export async function convergo(args, { env: extra = {} } = {}) {
  try {
    const { stdout } = await promisify(execFile)(env('CONVERGO_BIN'), args, { env: { ...process.env, ...extra }, timeout: 30_000 });
    return stdout;
  } catch (err) {
    throw new Error(`convergo ${args.join(' ')}: ${err.message}\n${err.stderr ?? ''}`);
  }
}

/**
 * Records what a page receives from the network: every WebSocket frame
 * and every HTTP answer body, as Buffers in the returned array, so a test
 * can show that some bytes never reached the browser at all.
 */
export function captureWire(page) {
  const got = [];
  page.on('websocket', (ws) => ws.on('framereceived', ({ payload }) => got.push(Buffer.from(payload))));
  page.on('response', async (res) => {
    try {
      got.push(await res.body());
    } catch {
      // A redirect or an answer the page closed on: no body to keep.
    }
  });
  return got;
}

/** Launches Chromium headless with a temporary profile. */
export async function launchBrowser() {
  return chromium.launch({
    executablePath: env('CONVERGO_CHROMIUM', '/usr/bin/chromium'),
    args: CHROMIUM_ARGS,
    timeout: 30_000,
  });
}

/**
 * Opens the demo in a new page of context with the given people
 * (?people=...) and waits until every list is open. Console errors and
 * page errors are collected on page.errors for the test to print.
 */
export async function openDemo(context, baseURL, people = 'Alice') {
  const page = await context.newPage();
  watchPage(page);
  await page.goto(`${baseURL}/?people=${encodeURIComponent(people)}`);
  await waitReady(page);
  return page;
}

export function watchPage(page) {
  page.errors = [];
  page.on('pageerror', (err) => page.errors.push(`pageerror: ${err.message}`));
  page.on('console', (msg) => {
    if (msg.type() === 'error') page.errors.push(`console: ${msg.text()}`);
  });
}

/**
 * Watches what every page context opens from now on asks of the network,
 * from before the page's own scripts run: window.WebSocket and
 * window.fetch are wrapped so that each dial and each fetch is noted
 * (window.__requests) with its URL, navigator.onLine at that moment,
 * whether it was answered (a socket opened, a fetch resolved), and when
 * it failed, on the clock of the test's Date.now(); the page's online and
 * offline events go in the same list, in the order the page saw them.
 * For errorsBeyondOffline.
 * @param {import('playwright-core').BrowserContext} context
 */
export function watchRequests(context) {
  return context.addInitScript(() => {
    const log = (window.__requests = []);
    // The page's sockets and fetches are the browser's: the wrappers only
    // look.
    const Native = window.WebSocket;
    window.WebSocket = class extends Native {
      constructor(...args) {
        super(...args);
        const r = { e: 'dial', url: this.url, onLine: navigator.onLine, answered: false, failed: null };
        log.push(r);
        this.addEventListener('open', () => (r.answered = true));
        this.addEventListener('error', () => (r.failed ??= Date.now()));
      }
    };
    const nativeFetch = window.fetch;
    window.fetch = function (input, init) {
      const r = { e: 'fetch', url: String(input?.url ?? input), onLine: navigator.onLine, answered: false, failed: null };
      log.push(r);
      return nativeFetch.call(this, input, init).then(
        (res) => ((r.answered = true), res),
        (err) => ((r.failed = Date.now()), Promise.reject(err)),
      );
    };
    addEventListener('offline', () => log.push({ e: 'offline', t: Date.now() }));
    addEventListener('online', () => log.push({ e: 'online', t: Date.now() }));
  });
}

/**
 * Takes context offline (Chromium's network emulation) or back online,
 * noting on it when the test began each offline period (offlineAt, the
 * test's Date.now()), for errorsBeyondOffline.
 * @param {import('playwright-core').BrowserContext} context
 * @param {boolean} offline
 */
export async function setOffline(context, offline) {
  if (offline) (context.offlineAt ??= []).push(Date.now());
  await context.setOffline(offline);
}

/** What Chromium logs on the console for a dial or a fetch the network went away under. */
const CUT = {
  dial: (/** @type {string} */ url) => `console: WebSocket connection to '${url}' failed: Error in connection establishment: net::ERR_INTERNET_DISCONNECTED`,
  fetch: () => 'console: Failed to load resource: net::ERR_INTERNET_DISCONNECTED',
};

/**
 * The errors of a page whose context went offline (setOffline; its
 * requests watched: watchRequests) that the page's code is to answer
 * for: page.errors less those Chromium logs by itself for a dial or a
 * fetch the network went away under, plus a line for each dial or fetch
 * made while the page said it was offline.
 *
 * Chromium's network emulation cuts the network first and tells the page
 * after (navigator.onLine, then the 'offline' event): a dial or a fetch
 * under way then, or made in between, fails, and Chromium logs it on the
 * page's console (CUT), which no code of the page can prevent. One such
 * error is taken out for each dial or fetch that was made while the page
 * said it was online, whose next online or offline event was an
 * 'offline', that was not answered, and that failed once the test had
 * begun the offline period that event told of. Any other error stays, and
 * so does each such error beyond those requests. A dial or fetch made
 * while navigator.onLine said offline is the page's own doing (the client
 * waits for 'online'): it is listed, and the error it logs stays.
 * @param {import('playwright-core').Page} page
 * @returns {Promise<string[]>}
 */
export async function errorsBeyondOffline(page) {
  const log = await page.evaluate(() => window.__requests);
  if (!log) throw new Error("errorsBeyondOffline: the page's requests were not watched (watchRequests)");
  const began = page.context().offlineAt ?? [];
  const errors = [...page.errors];
  const own = [];
  log.forEach((r, i) => {
    if (r.e !== 'dial' && r.e !== 'fetch') return;
    if (!r.onLine) {
      own.push(`${r.e}: ${r.url} while the page said it was offline`);
      return;
    }
    if (r.answered || r.failed === null) return;
    const heard = log.slice(i + 1).find((x) => x.e === 'online' || x.e === 'offline');
    if (heard?.e !== 'offline') return;
    const period = began.filter((t) => t <= heard.t);
    if (period.length === 0 || r.failed < period[period.length - 1]) return;
    const k = errors.indexOf(CUT[r.e](r.url));
    if (k >= 0) errors.splice(k, 1);
  });
  return [...errors, ...own];
}

export async function waitReady(page) {
  await page.waitForFunction(() => document.body.dataset.ready, null, { timeout: 20_000 });
  const ready = await page.evaluate(() => document.body.dataset.ready);
  if (ready !== 'true') {
    throw new Error(`demo failed to start: ${await page.textContent('[data-testid=fatal]')}\n${(page.errors ?? []).join('\n')}`);
  }
}

/** The pane of one person (by slug) on a demo page. */
export function pane(page, slug) {
  return page.getByTestId(`pane-${slug}`);
}

/**
 * Adds a todo through the UI and returns its id: the one new todo with that
 * title (titles must be unique within a test).
 */
export async function addTodo(p, title) {
  const before = new Set(await todoIds(p));
  await p.getByTestId('new-title').fill(title);
  await p.getByTestId('add-button').click();
  const ids = await waitFor(async () => {
    const rows = await shown(p);
    const fresh = [...rows].filter(([id, t]) => !before.has(id) && t.title === title).map(([id]) => id);
    return fresh.length > 0 && fresh;
  }, { message: `the new todo ${JSON.stringify(title)} to show` });
  if (ids.length !== 1) throw new Error(`adding ${JSON.stringify(title)} made ${ids.length} todos`);
  return ids[0];
}

export function todo(p, id) {
  return p.locator(`[data-testid=todo][data-id="${id}"]`);
}

/** Renames a todo through the UI's inline editor. */
export async function renameTodo(p, id, title) {
  const li = todo(p, id);
  await li.getByTestId('todo-edit').click();
  const input = li.getByTestId('todo-title-input');
  await input.fill(title);
  await input.press('Enter');
}

export async function todoIds(p) {
  return p.getByTestId('todo').evaluateAll((els) => els.map((e) => e.dataset.id));
}

/** What a pane shows: a Map from id to {title, done}. */
export async function shown(p) {
  const rows = await p.getByTestId('todo').evaluateAll((els) =>
    els.map((e) => [e.dataset.id, {
      title: e.querySelector('[data-testid=todo-title]').textContent,
      done: e.querySelector('[data-testid=todo-done]').checked,
    }]));
  return new Map(rows);
}

/**
 * Waits until the clock of pane later is past every stamp pane earlier has
 * taken, so that what later writes next is the later write. Each pane's
 * clock is corrected by its own hello, whose measure may be hundreds of
 * ms apart from another's on a loaded machine: a wait on the wall clock
 * does not say which write is the later.
 */
export async function clockPast(later, earlier) {
  const clock = (p, what) => p.evaluate((el, w) => {
    const { store } = window.convergoDemo.panes[el.dataset.testid.slice('pane-'.length)].db;
    return w === 'last' ? store.clock.last.wall : store.now();
  }, what);
  const top = await clock(earlier, 'last');
  await waitFor(async () => (await clock(later, 'now')) > top, { interval: 20, message: "one pane's clock past the other's stamps" });
}

/** The status a pane shows, from its data attributes. */
export async function status(p) {
  return p.getByTestId('status').evaluate((el) => ({
    online: el.dataset.online === 'true',
    syncing: el.dataset.syncing === 'true',
    pending: Number(el.dataset.pending),
    lastSynced: el.dataset.lastSynced ? Number(el.dataset.lastSynced) : null,
  }));
}

/** Waits until a pane is online with nothing pending and not syncing. */
export async function waitSynced(p, { timeout = 20_000, what = 'the pane' } = {}) {
  let last = null;
  try {
    return await waitFor(async () => {
      last = await status(p);
      return last.online && last.pending === 0 && !last.syncing && last;
    }, { timeout, message: `${what} to show online with nothing pending` });
  } catch (err) {
    err.message += `; it shows ${JSON.stringify(last)}`;
    throw err;
  }
}

/** Fails with a readable diff unless two Maps of todos are equal. */
export function sameTodos(a, b) {
  const ja = JSON.stringify([...a].sort(([x], [y]) => (x < y ? -1 : 1)));
  const jb = JSON.stringify([...b].sort(([x], [y]) => (x < y ? -1 : 1)));
  return ja === jb;
}

/** The server's documents in the shape shown() returns. */
export async function serverTodos(server) {
  const out = new Map();
  for (const [id, d] of await server.docs()) out.set(id, { title: d.title, done: d.done === true });
  return out;
}

export async function screenshot(page, name) {
  mkdirSync(ARTIFACTS, { recursive: true });
  const file = path.join(ARTIFACTS, name);
  await page.screenshot({ path: file, fullPage: true });
  return file;
}

/**
 * Deletes every Redis key under prefix (SCAN + UNLINK), so test runs leave
 * the shared Redis as they found it. Speaks just enough RESP for that.
 */
export async function dropRedisPrefix(addr, prefix) {
  const [host, port] = addr.split(':');
  const sock = net.connect(Number(port), host);
  await new Promise((resolve, reject) => {
    sock.once('connect', resolve);
    sock.once('error', reject);
  });
  let buf = Buffer.alloc(0);
  let waiting = null;
  sock.on('data', (d) => {
    buf = Buffer.concat([buf, d]);
    waiting?.();
  });
  const line = async () => {
    for (;;) {
      const i = buf.indexOf('\r\n');
      if (i >= 0) {
        const l = buf.subarray(0, i).toString();
        buf = buf.subarray(i + 2);
        return l;
      }
      await new Promise((r) => { waiting = r; });
    }
  };
  const bytes = async (n) => {
    while (buf.length < n + 2) await new Promise((r) => { waiting = r; });
    const b = buf.subarray(0, n).toString();
    buf = buf.subarray(n + 2);
    return b;
  };
  const reply = async () => {
    const l = await line();
    switch (l[0]) {
      case '+': case ':': return l.slice(1);
      case '-': throw new Error(`redis: ${l.slice(1)}`);
      case '$': { const n = Number(l.slice(1)); return n < 0 ? null : bytes(n); }
      case '*': { const n = Number(l.slice(1)); const a = []; for (let i = 0; i < n; i++) a.push(await reply()); return a; }
      default: throw new Error(`redis: unexpected reply ${l}`);
    }
  };
  const cmd = (...args) => {
    sock.write(`*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(String(a))}\r\n${a}\r\n`).join('')}`);
    return reply();
  };
  try {
    // Redis glob: escape the pattern's special characters in the prefix.
    const pattern = prefix.replace(/[\\*?[\]]/g, '\\$&') + '*';
    let cursor = '0';
    let dropped = 0;
    do {
      const [next, keys] = await cmd('SCAN', cursor, 'MATCH', pattern, 'COUNT', 1000);
      if (keys.length) dropped += Number(await cmd('UNLINK', ...keys));
      cursor = next;
    } while (cursor !== '0');
    return dropped;
  } finally {
    sock.destroy();
  }
}
