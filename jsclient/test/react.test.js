// convergo/react: the hooks render nothing before the first result (and
// on the server), then follow the live query; in Chromium through
// react-dom/client, bundled with esbuild as an app would bundle it.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createElement } from 'react';
import { renderToString } from 'react-dom/server';
import { queryKey, useDoc, useQuery, useStatus } from '../src/react.js';
import { openClient } from './helpers/util.js';

const chromiumPath = process.env.CONVERGO_CHROMIUM || '/usr/bin/chromium';

test('queryKey: equal queries share a key, predicates count by identity', () => {
  assert.equal(queryKey({ where: { done: false, n: 1 }, orderBy: 'title' }), queryKey({ orderBy: 'title', where: { n: 1, done: false } }));
  assert.notEqual(queryKey({ where: { n: 1 } }), queryKey({ where: { n: 2 } }));
  const p = () => true;
  assert.equal(queryKey({ where: p }), queryKey({ where: p }));
  assert.notEqual(queryKey({ where: p }), queryKey({ where: () => true }));
  assert.notEqual(queryKey('t1'), queryKey({ where: { id: 't1' } }));
  assert.equal(queryKey({ where: { big: 2n ** 64n } }), queryKey({ where: { big: 2n ** 64n } }));
});

test('queryKey: different queries never share a key', async () => {
  const { Float } = await import('../src/index.js');
  // Each pair is two queries with different results; an equal key would
  // keep a mounted hook on the first one's subscription.
  const pairs = [
    [{ where: { n: 1n } }, { where: { n: '1n' } }],
    [{ where: { owner: undefined } }, { where: {} }],
    [{ where: { n: NaN } }, { where: { n: null } }],
    [{ where: { f: new Float(1) } }, { where: { f: { value: 1 } } }],
    [{ where: { b: new Uint8Array([1, 2]) } }, { where: { b: 'bytes:1,2' } }],
    [{ where: { m: new Map([[1, 2]]) } }, { where: { m: ['map', [1, 2]] } }],
    [{ where: { o: { a: 1 } } }, { where: { o: [['a', 1]] } }],
  ];
  for (const [a, b] of pairs) assert.notEqual(queryKey(a), queryKey(b), `${queryKey(a)} for two queries`);
});

test('on the server the hooks render the not-yet-loaded state', async () => {
  const db = await openClient({ sync: false });
  const todos = db.collection('todos');
  await todos.put('t1', { title: 'milk' });
  function App() {
    const rows = useQuery(todos, { orderBy: 'title' });
    const one = useDoc(todos, 't1');
    const status = useStatus(db);
    return createElement('p', null, `${rows === undefined ? 'loading' : rows.length} ${one === undefined ? 'loading' : 'doc'} ${status ? 'status' : 'none'}`);
  }
  assert.equal(renderToString(createElement(App)), '<p>loading loading status</p>');
  assert.equal(renderToString(createElement(() => createElement('p', null, String(useQuery(null))))), '<p>undefined</p>');
  await db.close();
});

test('in Chromium a component follows its live query and stops listening when unmounted', { skip: existsSync(chromiumPath) ? false : `no Chromium at ${chromiumPath}` }, async () => {
  const { build } = await import('esbuild');
  const { chromium } = await import('playwright-core');
  const app = `
    import { createElement as h, useState, StrictMode } from 'react';
    import { createRoot } from 'react-dom/client';
    import { flushSync } from 'react-dom';
    import { open, Collection } from './src/index.js';
    import { useQuery, useDoc, useStatus } from './src/react.js';
    window.subscribes = 0;
    const subscribe = Collection.prototype.subscribe;
    Collection.prototype.subscribe = function (...a) {
      window.subscribes++;
      return subscribe.apply(this, a);
    };
    function List({ todos }) {
      const [done, setDone] = useState(false);
      const [, setTick] = useState(0);
      window.rerender = () => setTick((t) => t + 1);
      const rows = useQuery(todos, { where: { done }, orderBy: 'title' });
      const first = useDoc(todos, 't1');
      window.setDone = setDone;
      if (rows === undefined) return h('p', { id: 'state' }, 'loading');
      return h('div', null,
        h('p', { id: 'state' }, 'ready ' + (first ? first.title : 'none')),
        h('ul', null, rows.map((r) => h('li', { key: r.id }, r.title))));
    }
    window.start = async () => {
      const db = await open({ name: 'react', sync: false, locks: null, BroadcastChannel: null });
      window.db = db;
      window.todos = db.collection('todos');
      window.root = createRoot(document.getElementById('root'));
      window.root.render(h(StrictMode, null, h(List, { todos: window.todos })));
    };
    function Quiet({ todos }) {
      useQuery(todos, { where: { done: false } });
      useDoc(todos, 't1');
      return null;
    }
    window.mountUnmount = () => {
      const r = createRoot(document.createElement('div'));
      flushSync(() => r.render(h(StrictMode, null, h(Quiet, { todos: window.todos }))));
      flushSync(() => r.unmount());
    };
    window.unmount = () => flushSync(() => window.root.unmount());
    // A predicate written inline: a new function at every render.
    function Filtered({ nums }) {
      const [min, setMin] = useState(1);
      window.setMin = setMin;
      const rows = useQuery(nums, { where: (d) => d.n >= min, orderBy: 'n' });
      return h('p', { id: 'filtered' }, rows === undefined ? 'loading' : rows.map((r) => r.n).join(','));
    }
    window.filtered = async () => {
      const nums = window.db.collection('nums');
      await nums.putMany([{ id: 'a', n: 1 }, { id: 'b', n: 2 }, { id: 'c', n: 3 }]);
      const el = document.createElement('div');
      document.body.append(el);
      createRoot(el).render(h(StrictMode, null, h(Filtered, { nums })));
    };
    // useStatus of a database that changes: each render's status must be
    // the database's it names.
    function Pending({ a, b }) {
      const [db, setDb] = useState(a);
      window.switchDb = () => setDb(b);
      const status = useStatus(db);
      window.statuses.push(db.name + ':' + (status ? status.pending : '-'));
      return null;
    }
    window.statusSwitch = async () => {
      window.statuses = [];
      const a = await open({ name: 'react-a', sync: false, locks: null, BroadcastChannel: null });
      const b = await open({ name: 'react-b', sync: false, locks: null, BroadcastChannel: null });
      await a.collection('todos').put('x', { n: 1 });
      const r = createRoot(document.createElement('div'));
      flushSync(() => r.render(h(Pending, { a, b })));
      await new Promise((res) => setTimeout(res, 50));
      flushSync(() => window.switchDb());
      await new Promise((res) => setTimeout(res, 50));
      flushSync(() => r.unmount());
      await a.close();
      await b.close();
      return [...new Set(window.statuses)];
    };
  `;
  const out = await build({ stdin: { contents: app, resolveDir: process.cwd(), loader: 'js' }, bundle: true, format: 'esm', write: false, define: { 'process.env.NODE_ENV': '"production"' }, logLevel: 'error' });
  const js = out.outputFiles[0].text;
  const http = createServer((req, res) => {
    if (req.url === '/app.js') return res.writeHead(200, { 'content-type': 'text/javascript' }).end(js);
    res.writeHead(200, { 'content-type': 'text/html' }).end('<!doctype html><div id="root"></div><script type="module" src="/app.js"></script>');
  });
  await new Promise((r) => http.listen(0, '127.0.0.1', () => r(undefined)));
  const profile = mkdtempSync(join(tmpdir(), 'convergo-react-'));
  const ctx = await chromium.launchPersistentContext(profile, { executablePath: chromiumPath, headless: true, args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-dev-shm-usage'] });
  try {
    const page = ctx.pages()[0] ?? (await ctx.newPage());
    await page.goto(`http://127.0.0.1:${/** @type {any} */ (http.address()).port}/`);
    await page.waitForFunction(() => typeof (/** @type {any} */ (window).start) === 'function');
    await page.evaluate(() => /** @type {any} */ (window).start());
    const items = () => page.locator('li').allTextContents();
    await page.waitForFunction(() => document.getElementById('state')?.textContent === 'ready none');
    await page.evaluate(() => /** @type {any} */ (window).todos.putMany([{ id: 't1', title: 'milk', done: false }, { id: 't2', title: 'eggs', done: false }, { id: 't3', title: 'jam', done: true }]));
    await page.waitForFunction(() => document.querySelectorAll('li').length === 2);
    assert.deepEqual(await items(), ['eggs', 'milk']);
    assert.equal(await page.locator('#state').textContent(), 'ready milk');
    await page.evaluate(() => /** @type {any} */ (window).todos.update('t1', { title: 'oat milk' }));
    await page.waitForFunction(() => document.getElementById('state')?.textContent === 'ready oat milk');
    assert.deepEqual(await items(), ['eggs', 'oat milk']);
    // Under StrictMode, re-rendering with the query written inline (a new
    // object each time) subscribes no more.
    const before = await page.evaluate(() => [/** @type {any} */ (window).subscribes, /** @type {any} */ (window).db.subs.size]);
    for (let i = 0; i < 20; i++) await page.evaluate(() => /** @type {any} */ (window).rerender());
    await page.evaluate(() => /** @type {any} */ (window).todos.update('t2', { title: 'brown eggs' }));
    await page.waitForFunction(() => document.querySelectorAll('li')[0]?.textContent === 'brown eggs');
    assert.deepEqual(await page.evaluate(() => [/** @type {any} */ (window).subscribes, /** @type {any} */ (window).db.subs.size]), before);
    assert.equal(before[1], 2);
    // Unmounted before the first result: nothing is left subscribed.
    await page.evaluate(() => /** @type {any} */ (window).mountUnmount());
    await page.evaluate(() => new Promise((r) => setTimeout(r, 50)));
    assert.equal(await page.evaluate(() => /** @type {any} */ (window).db.subs.size), 2);
    // A new query (another filter) subscribes anew.
    await page.evaluate(() => /** @type {any} */ (window).setDone(true));
    await page.waitForFunction(() => document.querySelectorAll('li').length === 1);
    assert.deepEqual(await items(), ['jam']);
    // Unmounted: no subscription left.
    const subs = await page.evaluate(() => {
      const w = /** @type {any} */ (window);
      const before = w.db.subs.size;
      w.unmount();
      return [before, w.db.subs.size];
    });
    assert.deepEqual(subs, [2, 0]);
    // A predicate written inline settles on its result (it subscribes
    // again when the component renders, not at every result), and one
    // that closes over new state is read anew.
    // Settled: no subscription for 300 ms, within 10 s (an inline
    // predicate that never settles subscribes hundreds of times a second).
    const settles = () =>
      page.evaluate(
        () =>
          new Promise((resolve) => {
            const w = /** @type {any} */ (window);
            const start = Date.now();
            let last = w.subscribes;
            let since = start;
            const t = setInterval(() => {
              if (w.subscribes !== last) [last, since] = [w.subscribes, Date.now()];
              else if (Date.now() - since >= 300) done(true);
              if (Date.now() - start > 10_000) done(false);
            }, 20);
            const done = (/** @type {boolean} */ v) => {
              clearInterval(t);
              resolve(v);
            };
          }),
      );
    await page.evaluate(() => /** @type {any} */ (window).filtered());
    await page.waitForFunction(() => document.getElementById('filtered')?.textContent === '1,2,3', null, { timeout: 15_000 });
    assert.equal(await settles(), true, 'an inline predicate settles once its result shows');
    await page.evaluate(() => /** @type {any} */ (window).setMin(2));
    await page.waitForFunction(() => document.getElementById('filtered')?.textContent === '2,3', null, { timeout: 15_000 });
    assert.equal(await settles(), true, 'and again after its closure changed');
    await page.evaluate(() => /** @type {any} */ (window).db.collection('nums').put('d', { n: 4 }));
    await page.waitForFunction(() => document.getElementById('filtered')?.textContent === '2,3,4', null, { timeout: 15_000 });
    // useStatus(db) with another db: no render shows the first one's status.
    assert.deepEqual(await page.evaluate(() => /** @type {any} */ (window).statusSwitch()), ['react-a:1', 'react-b:0']);
  } finally {
    await ctx.close();
    rmSync(profile, { recursive: true, force: true });
    http.close();
  }
});
