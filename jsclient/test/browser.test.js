// The library in real Chromium (IndexedDB, Web Locks, BroadcastChannel,
// WebSocket), loaded from `convergo serve` at /convergo/ as apps load it.
// Skipped with a message when the go tool or Chromium is missing. The demo
// app's end-to-end tests live in e2e/.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHmac } from 'node:crypto';
import { findGo, startGoServer } from './helpers/goserver.js';
import { openClient, until } from './helpers/util.js';

const chromiumPath = process.env.CONVERGO_CHROMIUM || '/usr/bin/chromium';
const go = findGo();
const skip = !go ? 'the go tool is not available' : !existsSync(chromiumPath) ? `no Chromium at ${chromiumPath} (set CONVERGO_CHROMIUM)` : false;

const secret = 'js-browser-test-secret-0123456789abcdef';

/**
 * An HS256 JWT the server started with `secret` accepts.
 * @param {string[]} collections readable and writable
 */
function token(collections) {
  const b64 = (/** @type {any} */ o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const head = b64({ alg: 'HS256', typ: 'JWT' });
  const body = b64({ sub: 'browser-test', read: collections, write: collections, exp: Math.floor(Date.now() / 1000) + 3600 });
  return `${head}.${body}.${createHmac('sha256', secret).update(`${head}.${body}`).digest('base64url')}`;
}

/** @type {any} */
let server = null;
/** @type {any} */
let browser = null;
/** @type {string} */
let profile = '';

before(async () => {
  // Under the full test command a missing tool is a failure, not a skip.
  if (skip && process.env.CONVERGO_REQUIRE_SERVICES === '1') throw new Error(`CONVERGO_REQUIRE_SERVICES=1: ${skip}`);
  if (skip) return;
  const { chromium } = await import('playwright-core');
  server = await startGoServer(go, ['--secret', secret]);
  profile = mkdtempSync(join(tmpdir(), 'convergo-chromium-'));
  browser = await chromium.launchPersistentContext(profile, {
    executablePath: chromiumPath,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage'],
  });
});

after(async () => {
  await browser?.close();
  await server?.stop();
  if (profile) rmSync(profile, { recursive: true, force: true });
});

/**
 * Opens a new tab of the shared profile on the server's origin and loads the
 * library into it as window.convergo (any same-origin page will do; this
 * one keeps the demo app out of the way).
 */
async function tab() {
  const page = await browser.newPage();
  page.on('pageerror', (/** @type {Error} */ e) => console.error('page error:', e.message));
  await page.goto(server.url + '/healthz');
  await page.evaluate(async () => {
    /** @type {any} */ (window).convergo = await import('/convergo/index.js');
  });
  return page;
}

test('browser: write, read, live sync and types survive real IndexedDB', { skip }, async () => {
  const a = await tab();
  const b = await tab();
  try {
    const id = 'br-' + Date.now();
    await a.evaluate(async (/** @type {string} */ id) => {
      const w = /** @type {any} */ (window);
      w.db = await w.convergo.open({ url: location.origin, name: 'alice', collections: ['demo.todos'] });
      await w.db.collection('demo.todos').put(id, { title: 'from chromium', n: 1, big: 2n ** 64n - 1n, bytes: new Uint8Array([7]), m: { x: [1, 'y'] } });
    }, id);
    const got = await b.evaluate(async (/** @type {string} */ id) => {
      const w = /** @type {any} */ (window);
      w.db = await w.convergo.open({ url: location.origin, name: 'bob', collections: ['demo.todos'] });
      const todos = w.db.collection('demo.todos');
      for (let i = 0; i < 200; i++) {
        const d = await todos.get(id);
        if (d) return { ...d, big: String(d.big), bytes: Array.from(d.bytes), leader: w.db.status.leader, online: w.db.status.online };
        await new Promise((r) => setTimeout(r, 25));
      }
      return null;
    }, id);
    assert.deepEqual(got, { id, title: 'from chromium', n: 1, big: String(2n ** 64n - 1n), bytes: [7], m: { x: [1, 'y'] }, leader: true, online: true });
  } finally {
    await a.evaluate(() => /** @type {any} */ (window).db?.close());
    await b.evaluate(() => /** @type {any} */ (window).db?.close());
    await a.close();
    await b.close();
  }
});

test('browser: tabs of one database elect one leader and share writes', { skip }, async () => {
  const tabs = [await tab(), await tab(), await tab()];
  try {
    for (const p of tabs) {
      await p.evaluate(async () => {
        const w = /** @type {any} */ (window);
        w.db = await w.convergo.open({ url: location.origin, name: 'shared', collections: ['demo.todos'] });
        w.seen = [];
        w.db.collection('demo.todos').subscribe({ where: { tag: 'tabs' } }, (/** @type {any[]} */ docs) => w.seen.push(docs.map((d) => d.id)));
      });
    }
    const leaders = async () => (await Promise.all(tabs.map((p) => p.evaluate(() => /** @type {any} */ (window).db.status.leader)))).filter(Boolean).length;
    for (let i = 0; i < 100 && (await leaders()) !== 1; i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(await leaders(), 1, 'exactly one leader');
    // A write in each tab is seen by every tab and pushed by the leader.
    for (const [i, p] of tabs.entries()) {
      await p.evaluate(async (/** @type {number} */ i) => /** @type {any} */ (window).db.collection('demo.todos').put('tab' + i, { tag: 'tabs' }), i);
    }
    for (const p of tabs) {
      await p.waitForFunction(() => /** @type {any} */ (window).seen.at(-1)?.length === 3, null, { timeout: 5000 });
      await p.waitForFunction(() => /** @type {any} */ (window).db.status.pending === 0, null, { timeout: 5000 });
    }
    // The leader leaves; another tab takes over.
    const leaderIndex = (await Promise.all(tabs.map((p) => p.evaluate(() => /** @type {any} */ (window).db.status.leader)))).indexOf(true);
    await tabs[leaderIndex].close();
    tabs.splice(leaderIndex, 1);
    for (let i = 0; i < 100 && (await leaders()) !== 1; i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(await leaders(), 1, 'a new leader after the old one closed');
    await tabs[0].evaluate(async () => /** @type {any} */ (window).db.collection('demo.todos').put('after', { tag: 'tabs' }));
    for (const p of tabs) await p.waitForFunction(() => /** @type {any} */ (window).seen.at(-1)?.length === 4, null, { timeout: 5000 });
    await tabs[0].waitForFunction(() => /** @type {any} */ (window).db.status.pending === 0, null, { timeout: 5000 });
  } finally {
    for (const p of tabs) await p.close();
  }
});

test('browser: after failover the new leader syncs what only another tab opened', { skip }, async (t) => {
  const suffix = Math.random().toString(36).slice(2, 8);
  const shared = 'fo.shared.' + suffix;
  const own = 'fo.own.' + suffix;
  const tok = token([shared, own]);
  const writer = await openClient({ url: server.url, name: 'writer', token: tok, collections: [own] });
  t.after(() => writer.close());
  // Opened one after the other, the tabs queue for the lock in that order.
  const tabs = [];
  for (let i = 0; i < 3; i++) {
    const p = await tab();
    await p.evaluate(
      async (/** @type {any} */ a) => {
        const w = /** @type {any} */ (window);
        w.db = await w.convergo.open({ url: location.origin, name: 'failover-' + a.suffix, token: a.tok, collections: [a.shared] });
        if (a.i === 0) while (!w.db.status.leader) await new Promise((r) => setTimeout(r, 20));
      },
      { i, suffix, tok, shared },
    );
    tabs.push(p);
  }
  const leaderOf = async () => (await Promise.all(tabs.map((p) => p.evaluate(() => /** @type {any} */ (window).db.status.leader)))).map((l, i) => (l ? i : -1)).filter((i) => i >= 0);
  try {
    assert.deepEqual(await leaderOf(), [0]);
    // Only the last tab opens `own`.
    await tabs[2].evaluate((/** @type {string} */ own) => {
      const w = /** @type {any} */ (window);
      w.seen = [];
      w.db.collection(own).subscribe({}, (/** @type {any[]} */ docs) => w.seen.push(docs.map((d) => d.id)));
    }, own);
    await writer.collection(own).put('before', { n: 1 });
    await tabs[2].waitForFunction(() => /** @type {any} */ (window).seen.at(-1)?.includes('before'), null, { timeout: 5000 });
    // The leader leaves; the next tab in line never opened `own`.
    await tabs[0].close();
    tabs.shift();
    await until(async () => (await leaderOf()).length === 1, 'a new leader', 5000);
    assert.deepEqual(await leaderOf(), [0], 'the next tab in line leads');
    await writer.collection(own).put('after', { n: 2 });
    await tabs[1].waitForFunction(() => /** @type {any} */ (window).seen.at(-1)?.includes('after'), null, { timeout: 5000 });
  } finally {
    for (const p of tabs) await p.close();
  }
});

test('browser: a deleted database is rebuilt from the server', { skip }, async () => {
  const a = await tab();
  const b = await tab();
  try {
    await a.evaluate(async () => {
      const w = /** @type {any} */ (window);
      w.db = await w.convergo.open({ url: location.origin, name: 'evicted', collections: ['demo.todos'] });
      w.resets = 0;
      w.db.on('reset', () => w.resets++);
      await w.db.collection('demo.todos').put('keep-me', { tag: 'evict' });
      while (w.db.status.pending > 0) await new Promise((r) => setTimeout(r, 20));
    });
    // Another tab wipes the database (as clearing site data does).
    await b.evaluate(
      () =>
        new Promise((resolve, reject) => {
          const r = indexedDB.deleteDatabase('convergo-evicted');
          r.onsuccess = resolve;
          r.onerror = () => reject(r.error);
        }),
    );
    await a.waitForFunction(() => /** @type {any} */ (window).resets === 1, null, { timeout: 5000 });
    await a.waitForFunction(
      async () => (await /** @type {any} */ (window).db.collection('demo.todos').get('keep-me'))?.tag === 'evict',
      null,
      { timeout: 5000, polling: 50 },
    );
  } finally {
    await a.evaluate(() => /** @type {any} */ (window).db?.close());
    await a.close();
    await b.close();
  }
});

test('browser: going offline and back follows the online/offline events', { skip }, async () => {
  const a = await tab();
  try {
    await a.evaluate(async () => {
      const w = /** @type {any} */ (window);
      w.db = await w.convergo.open({ url: location.origin, name: 'flaky', collections: ['demo.todos'], backoff: { base: 60_000, max: 60_000 } });
    });
    await a.waitForFunction(() => /** @type {any} */ (window).db.status.online, null, { timeout: 5000 });
    await browser.setOffline(true);
    await a.waitForFunction(() => !(/** @type {any} */ (window).db.status.online), null, { timeout: 5000 });
    await a.evaluate(async () => /** @type {any} */ (window).db.collection('demo.todos').put('while-offline', { tag: 'offline' }));
    assert.equal(await a.evaluate(() => /** @type {any} */ (window).db.status.pending), 1);
    await browser.setOffline(false);
    // The backoff above is a minute: only the online event can bring the
    // client back this fast.
    await a.waitForFunction(() => /** @type {any} */ (window).db.status.online && /** @type {any} */ (window).db.status.pending === 0, null, {
      timeout: 10_000,
    });
  } finally {
    await browser.setOffline(false);
    await a.evaluate(() => /** @type {any} */ (window).db?.close());
    await a.close();
  }
});
