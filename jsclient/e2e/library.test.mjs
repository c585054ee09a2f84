// The library as apps use it, against the real server on Redis in Chromium:
//
// - a browser's first sync of FIRST_SYNC (100,000) records, pushed straight
//   to the server (how fast it goes is make bench's business; here it must
//   complete and be followed by live edits: about 15 s), then a batch
//   write (putMany) in one tab seen by another tab of the same profile and
//   by another browser, and live edits both ways;
// - the README's web-page example, run as written (its shell commands and
//   its <script>, only the server's address replaced) from another origin,
//   app.example.com, mapped to a local static server: the page imports the
//   library from the server across origins and syncs with a token minted
//   by `convergo token`;
// - the React hooks (convergo/react) in a page bundled with esbuild.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createServer } from 'node:http';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import { chromium } from 'playwright-core';

import { COLLECTION, Server, env, launchBrowser, signToken, unique, waitFor, waitForCount, watchPage } from './harness.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const FIRST_SYNC = 100_000;

/** A page's errors, less the 404 of the favicon browsers ask every origin for. */
const errorsOf = (page) => page.errors.filter((e) => !/status of 404/.test(e));

/** A static HTTP server on 127.0.0.1 answering from routes {path: [type, body]}. */
async function staticServer(routes) {
  const http = createServer((req, res) => {
    const r = routes[new URL(req.url, 'http://x').pathname];
    if (!r) return res.writeHead(404).end();
    res.writeHead(200, { 'content-type': r[0], 'cache-control': 'no-store' }).end(r[1]);
  });
  await new Promise((resolve) => http.listen(0, '127.0.0.1', resolve));
  return { port: http.address().port, close: () => new Promise((resolve) => http.close(resolve)) };
}

/**
 * A page of the server's origin that is not the demo (which would sync and
 * render every record too).
 */
async function originPage(context, server) {
  const page = await context.newPage();
  watchPage(page);
  // A document the server itself serves (a page Playwright made up would
  // count as a public one, and Chromium's local network access checks
  // would block its WebSocket to 127.0.0.1).
  await page.goto(`${server.url}/convergo/errors.js`);
  return page;
}

/** Opens the library in a fresh page of context on the server's origin. */
async function libraryPage(context, server) {
  const page = await originPage(context, server);
  await page.evaluate(async ({ c }) => {
    const { open } = await import('/convergo/index.js');
    window.db = await open({ url: location.origin, name: 'e2e-lib', collections: [c] });
    window.todos = window.db.collection(c);
    window.seen = { ids: 0, tagged: [] };
    window.todos.subscribe({ where: { tag: 'batch' }, orderBy: 'n' }, (docs) => (window.seen.tagged = docs.map((d) => d.title)));
    window.todos.subscribe({}, (docs) => (window.seen.ids = docs.length));
  }, { c: COLLECTION });
  return page;
}

describe('the library: batches, first sync, another origin, React', () => {
  let server;
  let browser;

  before(async () => {
    server = await new Server().start();
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    await server?.dispose('library');
  });

  it(`a batch is seen by another tab and another browser, whose first sync of ${FIRST_SYNC} records is followed by live edits`, async () => {
    const alice = await browser.newContext();
    const bob = await browser.newContext();
    try {
      // FIRST_SYNC records written by another client straight to the
      // server (requests of 1,000 changes).
      const bulk = Array.from({ length: FIRST_SYNC }, (_, i) => ({ id: 'bulk-' + i, fields: { title: 'bulk ' + i, n: i, done: false } }));
      assert.equal(await server.pushMany('bulkwriter', bulk), FIRST_SYNC);
      const a1 = await libraryPage(alice, server);
      const a2 = await libraryPage(alice, server);
      await waitForCount(() => a2.evaluate(() => window.seen.ids), FIRST_SYNC, { message: "alice's tabs to hold every record" });
      // Another browser: a first sync of the whole collection.
      const t0 = Date.now();
      const b = await libraryPage(bob, server);
      await waitForCount(() => b.evaluate(() => window.seen.ids), FIRST_SYNC, { message: `bob's first sync of ${FIRST_SYNC} records` });
      console.log(`# first sync of ${FIRST_SYNC} records in Chromium: ${Date.now() - t0} ms`);

      // A batch in tab 1: tab 2 and bob see it whole.
      await a1.evaluate(() => window.todos.putMany(Array.from({ length: 200 }, (_, i) => ({ id: 'bulk-' + i, title: 'batched ' + i, n: i, tag: 'batch' }))));
      const want = Array.from({ length: 200 }, (_, i) => 'batched ' + i);
      for (const [p, who] of [[a2, 'the other tab'], [b, 'the other browser']]) {
        await waitFor(async () => JSON.stringify(await p.evaluate(() => window.seen.tagged)) === JSON.stringify(want), { message: `${who} to see the batch`, timeout: 20_000 });
      }
      // Live edits both ways after the first sync.
      await b.evaluate(() => window.todos.update('bulk-7', { title: 'edited by bob' }));
      await waitFor(() => a2.evaluate(() => window.seen.tagged[7] === 'edited by bob'), { message: "bob's edit in alice's tabs" });
      await a1.evaluate(() => window.todos.update('bulk-8', { title: 'edited by alice' }));
      await waitFor(() => b.evaluate(() => window.seen.tagged[8] === 'edited by alice'), { message: "alice's edit in bob's browser" });
      for (const p of [a1, a2, b]) assert.deepEqual(errorsOf(p), [], 'no page errors');
    } finally {
      await alice.close();
      await bob.close();
    }
  });

  it("the README's web-page example runs as written from another origin", async () => {
    // The README's commands, with the secret in the environment.
    const readme = readFileSync(path.join(ROOT, 'README.md'), 'utf8');
    const section = readme.slice(readme.indexOf('## Using it from a web page'));
    const sh = section.match(/```sh\n([\s\S]*?)```/)[1];
    const html = section.match(/```html\n([\s\S]*?)```/)[1];
    assert.match(sh, /serve --origins 'app\.example\.com'/, 'the README still starts the server this way');
    const tokenArgs = sh.match(/convergo token (.*?)\s+#/)[1].match(/'[^']*'|\S+/g).map((a) => a.replace(/^'|'$/g, ''));
    const secret = 'e2e-readme-secret-' + unique('s');
    const bin = env('CONVERGO_BIN');
    const { stdout } = await promisify(execFile)(bin, ['token', ...tokenArgs], { env: { ...process.env, CONVERGO_SECRET: secret } });
    const token = stdout.trim();
    assert.ok(token.split('.').length === 3, `convergo token printed a JWT: ${stdout}`);
    const collection = html.match(/db\.collection\('([^']+)'\)/)[1];

    const saved = process.env.CONVERGO_SECRET;
    process.env.CONVERGO_SECRET = secret;
    const own = new Server({ extraArgs: ['--origins', 'app.example.com'] });
    try {
      await own.start();
    } finally {
      if (saved === undefined) delete process.env.CONVERGO_SECRET;
      else process.env.CONVERGO_SECRET = saved;
    }
    // The page of the app, on its own origin (http://app.example.com,
    // mapped to a local port), with its backend's token route: the
    // README's script as it is (it renders the titles into the body).
    const pageHTML = `<!doctype html><title>my app</title>
${html.replaceAll('http://127.0.0.1:8080', own.url)}`;
    const app = await staticServer({ '/': ['text/html', pageHTML], '/my-backend/convergo-token': ['text/plain', token] });
    const ctx = await chromium.launch({
      executablePath: env('CONVERGO_CHROMIUM', '/usr/bin/chromium'),
      // The library hashes with crypto.subtle, which browsers give secure
      // contexts only (https, or loopback): a real app.example.com is
      // served over https; here its http origin is marked secure.
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-dev-shm-usage', `--host-resolver-rules=MAP app.example.com:80 127.0.0.1:${app.port}`, '--unsafely-treat-insecure-origin-as-secure=http://app.example.com'],
    });
    try {
      const page = await ctx.newPage();
      watchPage(page);
      const failed = [];
      page.on('requestfailed', (r) => failed.push(`${r.url()}: ${r.failure()?.errorText}`));
      page.on('response', (r) => r.status() >= 400 && !r.url().endsWith('/favicon.ico') && failed.push(`${r.url()}: ${r.status()}`));
      await page.goto('http://app.example.com/');
      try {
        await page.waitForFunction(() => document.body?.textContent === 'Buy milk', null, { timeout: 20_000 });
      } catch (e) {
        throw new Error(`the example did not render its todo: ${e.message}\npage errors: ${page.errors.join('\n')}\nfailed requests: ${failed.join('\n')}`);
      }
      await waitFor(async () => (await own.docs(collection, token)).get('t1')?.title === 'Buy milk', { message: `the server to hold ${collection}/t1` });
      assert.deepEqual(errorsOf(page), []);
    } finally {
      await ctx.close();
      await app.close();
      await own.dispose('library-readme');
    }
  });

  it('a live session whose token expires is given a fresh one by getToken, and the app hears nothing of it', async () => {
    // An app wires getToken and signs its user in again on 'auth': a token
    // that merely ran out, and that getToken replaced, must not ask that.
    const secret = 'e2e-expiry-secret-' + unique('s');
    const saved = process.env.CONVERGO_SECRET;
    process.env.CONVERGO_SECRET = secret;
    const own = new Server();
    try {
      await own.start();
    } finally {
      if (saved === undefined) delete process.env.CONVERGO_SECRET;
      else process.env.CONVERGO_SECRET = saved;
    }
    const claims = { sub: 'ann', read: ['lib.*'], write: ['lib.*'] };
    const ctx = await browser.newContext();
    try {
      const page = await originPage(ctx, own);
      let minted = 0;
      // Tokens of 3 s: the live session's runs out twice while it waits.
      await page.exposeFunction('mintToken', () => {
        minted++;
        return signToken(secret, claims, 3);
      });
      await page.evaluate(async () => {
        const { open } = await import('/convergo/index.js');
        window.heard = [];
        window.db = await open({ url: location.origin, name: 'e2e-expiry', getToken: () => window.mintToken(), collections: ['lib.notes'] });
        for (const e of ['auth', 'error']) window.db.on(e, (x) => window.heard.push(`${e} ${x.code}: ${x.message}`));
      });
      await waitFor(() => page.evaluate(() => window.db.status.online && window.db.status.lastSyncedAt !== null), { message: 'the first sync' });
      const first = minted;
      await waitFor(() => minted >= first + 2, { timeout: 20_000, message: 'getToken asked again at two expiries' });
      await waitFor(() => page.evaluate(() => window.db.status.online), { message: 'online again' });
      await page.evaluate(() => window.db.collection('lib.notes').put('n1', { v: 1 }));
      await page.evaluate(() => window.db.whenSynced());
      assert.equal((await own.docs('lib.notes', signToken(secret, claims))).get('n1')?.v, 1, 'the write after the expiries reached the server');
      assert.deepEqual(await page.evaluate(() => window.heard), [], "no 'auth' (nor 'error') for a token getToken replaced");
      assert.deepEqual(errorsOf(page), []);
    } finally {
      await ctx.close();
      await own.dispose('library-expiry');
    }
  });

  it('the React hooks follow the server in a page', async () => {
    const { build } = await import('esbuild');
    const entry = `
      import { createElement as h } from 'react';
      import { createRoot } from 'react-dom/client';
      import { open } from './src/index.js';
      import { useQuery, useStatus } from './src/react.js';
      function App({ db }) {
        const rows = useQuery(db.collection(${JSON.stringify(COLLECTION)}), { where: { tag: 'react' }, orderBy: 'title' });
        const status = useStatus(db);
        return h('div', null,
          h('p', { id: 'status' }, status && status.online ? 'online' : 'offline'),
          rows === undefined ? h('p', { id: 'loading' }, 'loading') : h('ul', null, rows.map((r) => h('li', { key: r.id }, r.title))));
      }
      window.start = async (url) => {
        const db = await open({ url, name: 'react-e2e', collections: [${JSON.stringify(COLLECTION)}] });
        window.db = db;
        window.synced = false;
        db.whenSynced().then(() => (window.synced = true));
        createRoot(document.getElementById('root')).render(h(App, { db }));
      };`;
    const out = await build({ stdin: { contents: entry, resolveDir: path.join(ROOT, 'jsclient'), loader: 'js' }, bundle: true, format: 'esm', write: false, define: { 'process.env.NODE_ENV': '"production"' }, logLevel: 'error' });
    // On the server's origin (the demo counts every loopback origin as its
    // own, so a page on another local port would get no CORS headers).
    const ctx = await browser.newContext();
    try {
      const page = await originPage(ctx, server);
      await page.evaluate(() => document.body.append(Object.assign(document.createElement('div'), { id: 'root' })));
      await page.addScriptTag({ type: 'module', content: out.outputFiles[0].text });
      await page.waitForFunction(() => typeof window.start === 'function');
      await page.evaluate((url) => window.start(url), server.url);
      // The page's first sync takes the whole collection, which the first
      // test filled with FIRST_SYNC records: it is given the time bob's
      // first sync is given there. The waits after it are for live updates.
      await page.waitForFunction(() => window.synced, null, { timeout: 120_000, polling: 200 });
      await page.waitForFunction(() => document.getElementById('status')?.textContent === 'online', null, { timeout: 20_000 });
      // Another client writes through the server: the component renders it.
      await server.push('reactpush', 'react-1', { title: 'from the server', tag: 'react' });
      await page.waitForFunction(() => [...document.querySelectorAll('li')].map((l) => l.textContent).join() === 'from the server', null, { timeout: 20_000 });
      // The page writes: the server gets it, the list shows it in order.
      await page.evaluate(() => window.db.collection('demo.todos').put('react-0', { title: 'a local write', tag: 'react' }));
      await page.waitForFunction(() => [...document.querySelectorAll('li')].map((l) => l.textContent).join() === 'a local write,from the server');
      await waitFor(async () => (await server.docs()).get('react-0')?.title === 'a local write', { message: 'the server to hold the local write' });
      assert.deepEqual(errorsOf(page), []);
    } finally {
      await ctx.close();
    }
  });
});
