// The server dies (SIGKILL) and comes back on the same Redis data while a
// client keeps editing: every client and the server converge.

import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';

import {
  Server, addTodo, launchBrowser, openDemo, pane, renameTodo, serverTodos, shown, status,
  todo, waitFor, waitReady, waitSynced,
} from './harness.mjs';

const asObject = (m) => JSON.stringify(Object.fromEntries([...m].sort(([a], [b]) => (a < b ? -1 : 1))));

describe('server restart', () => {
  let server;
  let browser;

  before(async () => {
    server = await new Server().start();
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    await server?.dispose('restart');
  });

  it('edits made while the server is down reach it and every client after it restarts', async (t) => {
    const ctxA = await browser.newContext();
    const ctxB = await browser.newContext();
    t.after(() => Promise.all([ctxA.close(), ctxB.close()]));
    const a = pane(await openDemo(ctxA, server.url, 'Alice'), 'alice');
    const b = pane(await openDemo(ctxB, server.url, 'Bob'), 'bob');

    const ids = [];
    for (const title of ['Fix the bike', 'Pay rent', 'Book flights']) ids.push(await addTodo(a, title));
    await waitSynced(a);
    await waitFor(async () => (await shown(b)).size === 3, { message: 'Bob to see the first three todos' });

    await server.stop({ hard: true });
    const killed = Date.now();
    t.diagnostic('server killed');

    // Alice edits while the server is gone; Bob edits one field too.
    const added = [];
    for (let i = 0; i < 5; i++) added.push(await addTodo(a, `Written while the server is down ${i}`));
    await renameTodo(a, ids[0], 'Fix the bike (new chain)');
    await todo(a, ids[1]).getByTestId('todo-done').check();
    await todo(a, ids[2]).getByTestId('todo-delete').click();
    await todo(b, ids[0]).getByTestId('todo-done').check();
    await waitFor(async () => {
      const s = await status(a);
      return !s.online && s.pending >= 8 && s;
    }, { timeout: 20_000, message: 'Alice to notice the server is gone and hold 8 changes' });
    t.diagnostic(`Alice showed offline ${Date.now() - killed} ms after the kill`);
    // The demo says why it is not syncing...
    const error = a.getByTestId('status-error');
    await waitFor(async () => (await error.isVisible()) && /network/.test(await error.textContent()),
      { message: 'the demo to show the network error' });
    await sleep(1000); // a few reconnect attempts fail against the dead port

    await server.start();
    const restarted = Date.now();
    t.diagnostic('server restarted on the same port and Redis prefix');

    const want = {
      [ids[0]]: { title: 'Fix the bike (new chain)', done: true },
      [ids[1]]: { title: 'Pay rent', done: true },
      ...Object.fromEntries(added.map((id, i) => [id, { title: `Written while the server is down ${i}`, done: false }])),
    };
    const wantJSON = JSON.stringify(Object.fromEntries(Object.entries(want).sort(([x], [y]) => (x < y ? -1 : 1))));
    for (const p of [a, b]) {
      await waitSynced(p, { timeout: 60_000 });
      await waitFor(async () => asObject(await shown(p)) === wantJSON, { timeout: 20_000, message: 'the converged list' });
    }
    t.diagnostic(`both clients converged ${Date.now() - restarted} ms after the restart`);
    // ...and stops saying it once it syncs again.
    assert.equal(await error.isVisible(), false, 'the sync error is gone after the restart');
    assert.equal(asObject(await serverTodos(server)), wantJSON);

    // A newcomer after the restart loads the same state from the server.
    const ctxC = await browser.newContext();
    t.after(() => ctxC.close());
    const c = pane(await openDemo(ctxC, server.url, 'Carol'), 'carol');
    await waitSynced(c);
    await waitFor(async () => asObject(await shown(c)) === wantJSON, { message: 'Carol to load the converged list' });
  });

  it('the demo loads and keeps working from its service worker while the server is down', async (t) => {
    const ctx = await browser.newContext();
    t.after(() => ctx.close());
    const page = await openDemo(ctx, server.url, 'Dana');
    await page.waitForFunction(() => document.body.dataset.offlineReady === 'true', null, { timeout: 10_000 });
    const dana = pane(page, 'dana');
    const before = await addTodo(dana, 'Written before the outage');
    await waitSynced(dana);

    await server.stop({ hard: true });
    await page.reload();
    await waitReady(page);
    await todo(dana, before).waitFor({ timeout: 10_000 });
    // A new tab opens too, from the cache, with the data from IndexedDB.
    const tab = await ctx.newPage();
    await tab.goto(`${server.url}/?people=Dana`);
    await waitReady(tab);
    await todo(pane(tab, 'dana'), before).waitFor({ timeout: 10_000 });

    const during = await addTodo(dana, 'Written during the outage');
    await waitFor(async () => {
      const s = await status(dana);
      return !s.online && s.pending >= 1;
    }, { message: 'the change to wait while the server is down' });
    await todo(pane(tab, 'dana'), during).waitFor({ timeout: 10_000 });

    await server.start();
    await waitSynced(dana, { timeout: 60_000 });
    const held = await serverTodos(server);
    assert.deepEqual([held.get(before), held.get(during)], [
      { title: 'Written before the outage', done: false },
      { title: 'Written during the outage', done: false },
    ]);
    assert.deepEqual(page.errors.filter((e) => !/ERR_CONNECTION_REFUSED|Failed to load resource/.test(e)), []);
  });

  it('the demo caches every module of the library on its first load, those only loaded on demand too', async (t) => {
    // An offline page may need a module it never loaded online: wiped.js
    // when it finds its database wiped, upgrade.js to make it again.
    const ctx = await browser.newContext();
    t.after(() => ctx.close());
    const page = await openDemo(ctx, server.url, 'Finn');
    await page.waitForFunction(() => document.body.dataset.offlineReady === 'true', null, { timeout: 10_000 });
    // What the binary embeds and serves under /convergo/.
    const modules = readdirSync(new URL('../src/', import.meta.url)).filter((f) => f.endsWith('.js')).sort();
    assert.ok(modules.includes('wiped.js') && modules.includes('upgrade.js'));
    const cached = await page.evaluate(async () => {
      const out = [];
      for (const name of await caches.keys()) {
        for (const req of await (await caches.open(name)).keys()) {
          const { pathname } = new URL(req.url);
          if (pathname.startsWith('/convergo/')) out.push(pathname.slice('/convergo/'.length));
        }
      }
      return out;
    });
    assert.deepEqual(modules.filter((m) => !cached.includes(m)), [], 'modules of the library not in the cache');

    // With the server down, a module the page never loaded loads from it.
    await server.stop({ hard: true });
    try {
      const exported = await page.evaluate(async () => Object.keys(await import('/convergo/wiped.js')));
      assert.deepEqual(exported, ['rebuild']);
    } finally {
      await server.start();
    }
  });

  it('a page reloaded while the server is down, whose cache lacks the sync loop, syncs once the server is back', async (t) => {
    // A page's cache may lack the sync loop (leader.js): evicted, or
    // fetched while the service worker took control and after the page
    // cached what it had loaded (as the demo's first load could until it
    // cached what loads later too). Reloaded offline, its import fails.
    // Nothing tells the page the server is back (the browser stays
    // online, the page visible): the load is tried again after the
    // loop's backoff.
    const ctx = await browser.newContext();
    t.after(() => ctx.close());
    const page = await openDemo(ctx, server.url, 'Erin');
    await page.waitForFunction(() => document.body.dataset.offlineReady === 'true', null, { timeout: 10_000 });
    const erin = pane(page, 'erin');
    const before = await addTodo(erin, 'Erin, before the outage');
    await waitSynced(erin);

    await server.stop({ hard: true });
    const dropped = await page.evaluate(async () => {
      let n = 0;
      for (const name of await caches.keys()) {
        const cache = await caches.open(name);
        for (const req of await cache.keys()) if (new URL(req.url).pathname.endsWith('/leader.js') && await cache.delete(req)) n++;
      }
      return n;
    });
    assert.ok(dropped > 0, 'the cache held leader.js');
    await page.reload();
    await waitReady(page);
    await todo(erin, before).waitFor({ timeout: 10_000 });
    const error = erin.getByTestId('status-error');
    let said = null;
    await waitFor(async () => {
      said = (await error.isVisible()) ? await error.textContent() : null;
      return /leader\.js/.test(said ?? '');
    }, { message: 'the demo to say the sync loop did not load' }).catch((e) => {
      throw new Error(`${e.message}; it says ${JSON.stringify(said)}`);
    });
    const during = await addTodo(erin, 'Erin, while the sync loop could not load');
    await sleep(1000); // a few tries fail against the dead port

    await server.start();
    await waitSynced(erin, { timeout: 60_000 });
    const held = await serverTodos(server);
    assert.deepEqual([held.get(before), held.get(during)], [
      { title: 'Erin, before the outage', done: false },
      { title: 'Erin, while the sync loop could not load', done: false },
    ]);
  });
});
