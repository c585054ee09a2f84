// One B3 run of the Convergo JS client's IndexedDB apply path in Chromium,
// in a fresh browser: crdt-benchmarks' template as b3-run.mjs runs it, with
// the documents that apply updates in the browser.
//
// The documents that apply updates (client 0, the reference; client 1,
// timed cold; clients 2… timed warm; the last, reverse order) are fresh
// client databases in the page, on Chromium's IndexedDB, each holding its
// own change written with Collection.put; their updates are the push
// bodies the page's client builds for those writes (protocol.encodePush of
// the outbox entries with the anonymous token's prefix, as sync.js does). The other clients' updates are
// built the same way in this process (b3-impls.mjs, the client on
// fake-indexeddb): the same code, so the same bytes but for the random
// replica ids. Applying is b3-impls.mjs's IndexedDB row: every push body
// decoded (b3-push.mjs, with the page's client modules), the changes handed in one call to
// Store.applyRemote, timed from the first decode until its transaction
// committed.
//
// Output: one JSON line, as b3-run.mjs writes.
//
// Usage: [B3_PROFILE=1] node b3-chromium.mjs SCENARIO [WARM] [CHROMIUM]

import { createServer } from 'node:http';
import { readFile } from 'node:fs/promises';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { factories, scenarios } from './b3-impls.mjs';

const [scenarioId, warmArg, chromiumPath = process.env.CONVERGO_CHROMIUM ?? '/usr/bin/chromium'] = process.argv.slice(2);
const sc = scenarios.find((s) => s.id === scenarioId);
if (!sc) {
  console.error(`usage: node b3-chromium.mjs {${scenarios.map((s) => s.id).join('|')}} [warm] [chromium]`);
  process.exit(2);
}
const WARM = Number(warmArg ?? 5);
const TARGETS = WARM + 3;
const HERE = path.dirname(fileURLToPath(import.meta.url));
const SRC = path.resolve(HERE, '../../../jsclient/src');
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage'];

const t0 = performance.now();
// The clients that only write, here.
/** @type {Uint8Array[]} */
const others = [];
for (let i = TARGETS; i < sc.clients; i++) {
  const doc = await factories.convergo.create((u) => others.push(u));
  await doc.setMap(sc.key(i), sc.value(i));
}
if (others.length !== sc.clients - TARGETS) throw new Error(`b3-chromium ${sc.id}: ${others.length} updates from ${sc.clients - TARGETS} clients`);

/** Serves jsclient/src at /convergo/, b3-push.mjs at /bench/ and an empty page at /. */
function serve() {
  const server = createServer(async (req, res) => {
    const url = new URL(req.url, 'http://x');
    const file = url.pathname.startsWith('/convergo/')
      ? path.join(SRC, path.normalize(url.pathname.slice('/convergo/'.length)))
      : url.pathname === '/bench/b3-push.mjs'
        ? path.join(HERE, 'b3-push.mjs')
        : null;
    if (file) {
      if (!file.startsWith(SRC) && !file.startsWith(HERE)) return res.writeHead(404).end();
      try {
        res.writeHead(200, { 'content-type': 'text/javascript' }).end(await readFile(file));
      } catch {
        res.writeHead(404).end();
      }
      return;
    }
    res.writeHead(200, { 'content-type': 'text/html' }).end('<!doctype html><title>b3</title>');
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({ url: `http://127.0.0.1:${server.address().port}`, close: () => server.close() })));
}

/** Prints the 20 functions with the most self time in a CDP CPU profile. */
function printProfile(profile) {
  const dt = (profile.endTime - profile.startTime) / 1000 / Math.max(1, profile.samples.length);
  const self = new Map();
  let total = 0;
  for (const node of profile.nodes) {
    const f = node.callFrame;
    const key = `${f.functionName || '(anonymous)'} ${f.url ? f.url.split('/').pop() + ':' + (f.lineNumber + 1) : ''}`.trim();
    self.set(key, (self.get(key) ?? 0) + (node.hitCount ?? 0));
    total += node.hitCount ?? 0;
  }
  console.error(`b3-chromium: CPU profile of the page, ${Math.round(total * dt)} ms sampled; top self time:`);
  for (const [k, v] of [...self].sort((a, b) => b[1] - a[1]).slice(0, 20)) {
    console.error(`  ${((100 * v) / total).toFixed(1).padStart(5)}%  ${Math.round(v * dt).toString().padStart(6)} ms  ${k}`);
  }
}

const http = await serve();
const profile = mkdtempSync(path.join(tmpdir(), 'convergo-b3-'));
const ctx = await chromium.launchPersistentContext(profile, { executablePath: chromiumPath, args: ARGS, headless: true });
let out;
try {
  const page = ctx.pages()[0] ?? (await ctx.newPage());
  page.setDefaultTimeout(300_000);
  await page.goto(http.url);
  const own = [];
  for (let i = 0; i < TARGETS; i++) own.push([sc.key(i), sc.value(i)]);
  const setupMs = performance.now() - t0;
  // B3_PROFILE=1: a CPU profile of the page's work (its 8 databases, the
  // applications), the functions with the most self time on stderr.
  const cdp = process.env.B3_PROFILE ? await ctx.newCDPSession(page) : null;
  if (cdp) {
    await cdp.send('Profiler.enable');
    await cdp.send('Profiler.setSamplingInterval', { interval: 200 });
    await cdp.send('Profiler.start');
  }
  out = await page.evaluate(
    async ({ own, others, warm }) => {
      const { open } = await import('/convergo/database.js');
      const { encodePush } = await import('/convergo/protocol.js');
      const { applyRemote, peekOutbox, schemaVersion } = await import('/convergo/syncstore.js');
      const { pushDecoder } = await import('/bench/b3-push.mjs');
      // The documents' token is anonymous: its subject's prefix (b3-impls.mjs).
      const prefix = await (await import('/convergo/replica.js')).replicaPrefix('');
      const decodePush = pushDecoder(await import('/convergo/codec.js'), { ...(await import('/convergo/change.js')), ...(await import('/convergo/protocol.js')), ...(await import('/convergo/normalize.js')) }, prefix);
      const fromB64 = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
      const canon = (v) => {
        if (Array.isArray(v)) return `[${v.map(canon).join(',')}]`;
        if (v && typeof v === 'object') return `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${canon(v[k])}`).join(',')}}`;
        return JSON.stringify(v);
      };
      const docs = [];
      const updates = [];
      for (let i = 0; i < own.length; i++) {
        const db = await open({ name: `b3-${i}`, sync: false, locks: null, BroadcastChannel: null });
        const [k, v] = own[i];
        await db.collection('b3').put('doc', { [k]: v });
        const entries = await peekOutbox(db.store, 1000);
        updates.push(encodePush(db.store.replica, entries.map((e) => e.change), new Map([['b3', await schemaVersion(db.store, 'b3')]]), prefix));
        docs.push(db);
      }
      for (const s of others) updates.push(fromB64(s));
      const cursor = new Uint8Array([1]);
      const applyAll = async (db, ups) => {
        const start = performance.now();
        const records = [];
        for (const u of ups) for (const c of decodePush(u)) records.push(c.record);
        await applyRemote(db.store, 'b3', records, cursor);
        return performance.now() - start;
      };
      const mapOf = async (db) => {
        const doc = { ...(await db.collection('b3').get('doc')) };
        delete doc.id;
        return canon(doc);
      };
      await applyAll(docs[0], updates);
      const ref = await mapOf(docs[0]);
      const check = async (i) => {
        const got = await mapOf(docs[i]);
        if (got !== ref) throw new Error(`client ${i} diverges from client 0: ${got.slice(0, 120)} vs ${ref.slice(0, 120)}`);
      };
      const cold = await applyAll(docs[1], updates);
      await check(1);
      const warms = [];
      for (let w = 0; w < warm; w++) {
        warms.push(await applyAll(docs[2 + w], updates));
        await check(2 + w);
      }
      await applyAll(docs[2 + warm], [...updates].reverse());
      await check(2 + warm);
      return { cold, warm: warms, bytes: updates.reduce((n, u) => n + u.length, 0), updates: updates.length };
    },
    { own, others: others.map((u) => Buffer.from(u).toString('base64')), warm: WARM },
  );
  if (cdp) printProfile((await cdp.send('Profiler.stop')).profile);
  out = { impl: 'convergo-chromium', scenario: sc.id, ...out, setupMs };
} finally {
  await ctx.close();
  http.close();
  rmSync(profile, { recursive: true, force: true });
}
process.stdout.write(JSON.stringify(out) + '\n');
process.exit(0);
