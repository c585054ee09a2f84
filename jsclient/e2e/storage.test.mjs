// Storage trouble under a long-lived page, in Chromium against the real
// server (a bolt store of the test's own):
//
// - the origin's quota shrunk (CDP Storage.overrideQuotaForOrigin) before
//   a first sync: the pull fails quota_exceeded, loudly (an error event,
//   status.lastError; whenSynced does not wait for it), a local write past
//   the quota is refused quota_exceeded and stores nothing; once the
//   quota is lifted the collection syncs whole, by itself, and writes go
//   out;
// - the database deleted under an open page holding changes not pushed
//   yet, by another tab (indexedDB.deleteDatabase) or by the browser
//   (CDP Storage.clearDataForOrigin), while the page is offline: its
//   writes fail network (wiped.js cannot load) until it is back; then the
//   'reset' event says how many changes went with the database, the
//   status counts the rebuilt one, and whenSynced resolves; with two tabs
//   open, in both;
// - a tab of newer code that upgrades the IndexedDB database: the older
//   page says so (an error event: reload), closes it (its writes fail
//   closed) and gives the leader lock up, so that the newer tab syncs.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import { COLLECTION, Server, launchBrowser, waitFor, watchPage } from './harness.mjs';

const SEEDED = 2000;
const TIMEOUT = 30_000;

describe('storage trouble: quota, a database deleted under the page, newer code', () => {
  let server;
  let browser;
  let dir;

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'convergo-storage-'));
    server = await new Server({ store: `bolt:${path.join(dir, 'todos.db')}` }).start();
    browser = await launchBrowser();
    // Records of about 400 bytes: a first sync of them passes a quota of 300 kB.
    const seed = Array.from({ length: SEEDED }, (_, i) => ({ id: 'seed-' + i, fields: { title: 'seed ' + i + ' ' + 'x'.repeat(400), n: i } }));
    assert.equal(await server.pushMany('seeder', seed), SEEDED);
  });

  after(async () => {
    await browser?.close();
    await server?.dispose('storage');
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /** A page of the server's origin (not the demo), without the library yet. */
  async function blank(ctx) {
    const page = await ctx.newPage();
    watchPage(page);
    await page.goto(`${server.url}/convergo/errors.js`);
    return page;
  }

  /** Opens the library in page as database name, logging its events on window.ev. */
  async function open(page, name) {
    await page.evaluate(async ({ c, name }) => {
      const { open } = await import('/convergo/index.js');
      const db = await open({ url: location.origin, name, collections: [c], backoff: { base: 100, max: 1000 } });
      window.db = db;
      window.todos = db.collection(c);
      window.ev = [];
      for (const e of ['reset', 'error', 'refused']) db.on(e, (x) => window.ev.push([e, x?.code ? `${x.code}: ${x.message}` : x ?? null]));
      window.write = async (id, doc) => {
        try {
          await window.todos.put(id, doc);
          return 'ok';
        } catch (e) {
          return `${e.code}: ${e.message}`;
        }
      };
      window.synced = (ms) => Promise.race([db.whenSynced().then(() => 'synced'), new Promise((resolve) => setTimeout(() => resolve(`whenSynced still waiting; status ${JSON.stringify(db.status)}`), ms))]);
    }, { c: COLLECTION, name });
    return page;
  }

  const status = (page) => page.evaluate(() => JSON.parse(JSON.stringify(window.db.status)));
  const events = (page, kind) => page.evaluate((k) => window.ev.filter(([e]) => e === k), kind);
  const count = (page) => page.evaluate(async () => (await window.todos.list()).length);

  it('a quota too small for the first sync fails it loudly, refuses a write that does not fit, and syncs once lifted', { timeout: 120_000 }, async () => {
    const ctx = await browser.newContext();
    try {
      const page = await blank(ctx);
      const cdp = await ctx.newCDPSession(page);
      await cdp.send('Storage.overrideQuotaForOrigin', { origin: server.url, quotaSize: 300_000 });
      await open(page, 'quota');
      await waitFor(async () => (await status(page)).lastError?.code === 'quota_exceeded', { timeout: TIMEOUT, message: 'the first sync to fail quota_exceeded' });
      assert.match((await events(page, 'error'))[0][1], /^quota_exceeded: pull demo\.todos: /);
      assert.ok((await count(page)) < SEEDED, 'the first sync did not fit');
      // whenSynced does not wait for a collection failing on its own
      // (README, whenSynced): lastError is what says it is not synced.
      assert.equal(await page.evaluate((ms) => window.synced(ms), TIMEOUT), 'synced');
      assert.equal((await status(page)).lastError?.code, 'quota_exceeded');
      assert.match(await page.evaluate(() => window.write('big', { title: 'y'.repeat(100_000) })), /^quota_exceeded: write demo\.todos\/big: /);
      assert.equal(await page.evaluate(() => window.todos.get('big')), null, 'nothing of the refused write stored');
      await cdp.send('Storage.overrideQuotaForOrigin', { origin: server.url });
      await waitFor(async () => (await count(page)) === SEEDED, { timeout: TIMEOUT, message: 'the whole collection once the quota is lifted' });
      assert.equal(await page.evaluate(() => window.write('small', { title: 'fits' })), 'ok');
      assert.equal(await page.evaluate((ms) => window.synced(ms), TIMEOUT), 'synced');
      assert.equal((await server.docs()).get('small')?.title, 'fits', 'a write made since reached the server');
      await waitFor(async () => (await status(page)).lastError === null, { timeout: TIMEOUT, message: 'status.lastError cleared once the collection is served' });
    } finally {
      await ctx.close();
    }
  });

  for (const how of ['another tab deletes the database', 'the browser clears the origin\'s storage']) {
    it(`${how} under an offline page with changes pending: reset tells what was lost, the status counts the rebuilt database, whenSynced resolves`, { timeout: 120_000 }, async () => {
      const ctx = await browser.newContext();
      try {
        const name = how.startsWith('another') ? 'deleted' : 'cleared';
        const held = (await server.docs()).size;
        const page = await open(await blank(ctx), name);
        // Opened while online: the other tab cannot load a page offline.
        const other = await blank(ctx);
        const cdp = await ctx.newCDPSession(page);
        assert.equal(await page.evaluate((ms) => window.synced(ms), 60_000), 'synced');
        assert.equal(await count(page), held);
        await ctx.setOffline(true);
        for (const id of ['gone-1', 'gone-2']) assert.equal(await page.evaluate((id) => window.write(id, { title: id }), id), 'ok');
        assert.equal((await status(page)).pending, 2);
        if (name === 'deleted') {
          const r = await other.evaluate((n) => new Promise((resolve) => {
            const q = indexedDB.deleteDatabase(n);
            q.onsuccess = () => resolve('deleted');
            q.onerror = () => resolve(`error ${q.error}`);
            q.onblocked = () => resolve('blocked');
          }), `convergo-${name}`);
          assert.equal(r, 'deleted');
        } else {
          await cdp.send('Storage.clearDataForOrigin', { origin: server.url, storageTypes: 'indexeddb' });
        }
        // Offline, the code that rebuilds it (wiped.js) cannot load: a write says so.
        await waitFor(async () => /^network: open convergo-\w+: loading wiped\.js/.test(await page.evaluate(() => window.write('offline-after', { title: 'x' }))), { timeout: TIMEOUT, message: 'a write after the wipe to fail network naming wiped.js' });
        await ctx.setOffline(false);
        await waitFor(async () => (await events(page, 'reset')).length === 1, { timeout: TIMEOUT, message: 'the reset event' });
        assert.deepEqual((await events(page, 'reset'))[0][1], { lost: 2, rejected: 0 }, 'the reset says two changes went with the database');
        assert.equal(await page.evaluate((ms) => window.synced(ms), TIMEOUT), 'synced');
        assert.equal((await status(page)).pending, 0);
        await waitFor(async () => (await count(page)) === held, { timeout: TIMEOUT, message: 'the database rebuilt from the server' });
        const onServer = await server.docs();
        assert.ok(!onServer.has('gone-1') && !onServer.has('gone-2'), 'the lost changes never reached the server');
        // Writes go on, and sync.
        assert.equal(await page.evaluate(() => window.write('after-wipe', { title: 'after' })), 'ok');
        assert.equal(await page.evaluate((ms) => window.synced(ms), TIMEOUT), 'synced');
      } finally {
        await ctx.close();
      }
    });
  }

  it('two tabs, the database deleted under them with changes pending: both tabs hear reset and count the rebuilt database', { timeout: 120_000 }, async () => {
    const ctx = await browser.newContext();
    try {
      const held = (await server.docs()).size;
      const tabs = [await open(await blank(ctx), 'twotabs'), await open(await blank(ctx), 'twotabs')];
      const other = await blank(ctx);
      for (const t of tabs) assert.equal(await t.evaluate((ms) => window.synced(ms), 60_000), 'synced');
      await ctx.setOffline(true);
      for (const id of ['tab-gone-1', 'tab-gone-2']) assert.equal(await tabs[1].evaluate((id) => window.write(id, { title: id }), id), 'ok');
      await waitFor(async () => (await status(tabs[0])).pending === 2 && (await status(tabs[1])).pending === 2, { timeout: TIMEOUT, message: 'both tabs counting the two writes' });
      assert.equal(await other.evaluate(() => new Promise((resolve) => {
        const q = indexedDB.deleteDatabase('convergo-twotabs');
        q.onsuccess = () => resolve('deleted');
        q.onerror = () => resolve(`error ${q.error}`);
        q.onblocked = () => resolve('blocked');
      })), 'deleted');
      await ctx.setOffline(false);
      for (const t of tabs) {
        await waitFor(async () => (await events(t, 'reset')).length === 1, { timeout: TIMEOUT, message: 'the reset event in each tab' });
        assert.deepEqual((await events(t, 'reset'))[0][1], { lost: 2, rejected: 0 });
        assert.equal(await t.evaluate((ms) => window.synced(ms), TIMEOUT), 'synced');
        await waitFor(async () => (await count(t)) === held, { timeout: TIMEOUT, message: 'each tab reading the rebuilt database' });
      }
    } finally {
      await ctx.close();
    }
  });

  it('a tab of newer code upgrading the database: the older page says so, closes it and gives up leading', { timeout: 60_000 }, async () => {
    const ctx = await browser.newContext();
    try {
      const page = await open(await blank(ctx), 'newer');
      assert.equal(await page.evaluate((ms) => window.synced(ms), 60_000), 'synced');
      const other = await blank(ctx);
      const upgraded = await other.evaluate(() => new Promise((resolve) => {
        const probe = indexedDB.open('convergo-newer');
        probe.onsuccess = () => {
          const v = probe.result.version;
          probe.result.close();
          const r = indexedDB.open('convergo-newer', v + 1);
          r.onsuccess = () => resolve(v + 1);
          r.onerror = () => resolve(`error ${r.error}`);
          r.onblocked = () => resolve('blocked');
        };
      }));
      assert.equal(typeof upgraded, 'number', `the newer code's open: ${upgraded}`);
      await waitFor(async () => (await events(page, 'error')).some(([, m]) => /^database: newer code in another tab upgraded convergo-newer: closed here; reload the page$/.test(m)), { timeout: TIMEOUT, message: 'an error event saying newer code upgraded the database' });
      assert.match(await page.evaluate(() => window.write('old-code', { title: 'x' })), /^closed: /, "the older page's writes fail: it closed the database");
      await waitFor(async () => !JSON.stringify(await other.evaluate(() => navigator.locks.query())).includes('convergo:newer'), { timeout: TIMEOUT, message: 'the leader lock given up for the newer tab' });
    } finally {
      await ctx.close();
    }
  });
});
