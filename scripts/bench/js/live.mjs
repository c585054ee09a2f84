// Local writes in Chromium (no server): the cost of a put while live
// queries watch the collection, and of a batch write beside a raw
// IndexedDB transaction writing the same rows.
//
//   A. 10,000 records in a collection, 10 live queries on it (filters,
//      orders, limits, a predicate); then `put`s of existing and new
//      records: the time of each awaited put, and from the call until all
//      10 queries were called back; the same put with relaxed durability;
//      interleaved with them, raw IndexedDB transactions writing the same
//      record, outbox row and clock into a copy of the database: the same
//      requests as a put (strict and relaxed), the writes alone, and reads
//      awaited before the writes.
//   B. putMany of 1,000 new records (one transaction, one notification),
//      beside one raw IndexedDB transaction writing the same stored
//      records and outbox rows (read back from the client's database) into
//      a database of the same schema, same durability (strict), same page.
//      Interleaved, RUNS times each.
//
// The library is served from jsclient/src by a static server in this
// process (no Convergo server: the database is opened with sync: false).
//
// Usage: node live.mjs [chromium] [runs]
// Prints one JSON sample per line (the sample type of cmd/convergo-bench).

import { createServer } from 'node:http';
import { readFile } from 'node:fs/promises';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const [chromiumPath = '/usr/bin/chromium', runsArg = '7'] = process.argv.slice(2);
const RUNS = Number(runsArg);
const SRC = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../jsclient/src');
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage'];

function emit(o) {
  process.stdout.write(JSON.stringify(o) + '\n');
}

/** Serves jsclient/src at /convergo/ and an empty page at /. */
function serve() {
  const server = createServer(async (req, res) => {
    const url = new URL(req.url, 'http://x');
    if (url.pathname.startsWith('/convergo/')) {
      const file = path.join(SRC, path.normalize(url.pathname.slice('/convergo/'.length)));
      if (!file.startsWith(SRC)) return res.writeHead(404).end();
      try {
        const body = await readFile(file);
        res.writeHead(200, { 'content-type': 'text/javascript' }).end(body);
      } catch {
        res.writeHead(404).end();
      }
      return;
    }
    res.writeHead(200, { 'content-type': 'text/html' }).end('<!doctype html><title>bench</title>');
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({ url: `http://127.0.0.1:${server.address().port}`, close: () => server.close() })));
}

/** Prints the 25 functions with the most self time in a CDP CPU profile. */
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
  console.error(`live: CPU profile, ${Math.round(total * dt)} ms sampled; top self time:`);
  for (const [k, v] of [...self].sort((a, b) => b[1] - a[1]).slice(0, 25)) {
    console.error(`  ${((100 * v) / total).toFixed(1).padStart(5)}%  ${Math.round(v * dt).toString().padStart(6)} ms  ${k}`);
  }
}

const http = await serve();
const profile = mkdtempSync(path.join(tmpdir(), 'convergo-live-'));
const ctx = await chromium.launchPersistentContext(profile, { executablePath: chromiumPath, args: ARGS, headless: true });
try {
  const page = ctx.pages()[0] ?? (await ctx.newPage());
  page.setDefaultTimeout(300_000);
  await page.goto(http.url + '/');

  // A. put with 10 live queries over 10,000 records (BENCH_JSPROFILE=1:
  // under the CPU profiler, printing the functions with the most self time).
  await page.evaluate(async () => {
    const { open } = await import('/convergo/index.js');
    const db = await open({ name: 'live', sync: false, locks: null, BroadcastChannel: null });
    const todos = db.collection('todos');
    const N = 10_000;
    const doc = (i) => ({ id: 'todo-' + String(i).padStart(6, '0'), title: 'todo number ' + i, done: i % 3 === 0, order: i, tag: 't' + (i % 10) });
    for (let i = 0; i < N; i += 1000) await todos.putMany(Array.from({ length: 1000 }, (_, j) => doc(i + j)));
    const queries = [
      {},
      { orderBy: 'title' },
      { where: { done: false }, orderBy: 'order', desc: true },
      { where: { done: true } },
      { where: { tag: 't3' }, orderBy: 'title' },
      { orderBy: 'order', limit: 20 },
      { where: (d) => d.order % 7 === 0, orderBy: 'order' },
      { where: { done: false, tag: 't5' }, limit: 50 },
      { orderBy: 'title', desc: true, limit: 100 },
      { where: { tag: 't9' } },
    ];
    const w = globalThis;
    w.calls = 0;
    for (const q of queries) {
      let first = true;
      await new Promise((ready) => {
        todos.subscribe(q, () => {
          w.calls++;
          if (first) {
            first = false;
            ready();
          }
        });
      });
    }
    w.db = db;
    w.todos = todos;
    w.doc = doc;
    // A raw database of the same schema holding the same rows, for the
    // same transaction done by hand: three reads, then the record, the
    // outbox row and the clock written.
    const idb = await db.store.conn();
    const rows = await new Promise((res) => {
      const tx = idb.transaction(['records', 'outbox', 'meta'], 'readonly');
      const out = {};
      tx.objectStore('records').getAll().onsuccess = (e) => (out.records = e.target.result);
      tx.objectStore('outbox').getAll().onsuccess = (e) => (out.outbox = e.target.result.map(({ seq, ...rest }) => rest));
      tx.objectStore('meta').get('clock').onsuccess = (e) => (out.clock = e.target.result);
      tx.oncomplete = () => res(out);
    });
    w.raw = await new Promise((res, rej) => {
      const r = indexedDB.open('raw-put', 1);
      r.onupgradeneeded = () => {
        r.result.createObjectStore('records', { keyPath: ['c', 'id'] });
        const ob = r.result.createObjectStore('outbox', { keyPath: 'seq', autoIncrement: true });
        ob.createIndex('record', ['c', 'id']);
        ob.createIndex('replica', 'r');
        r.result.createObjectStore('meta');
      };
      r.onsuccess = () => res(r.result);
      r.onerror = () => rej(r.error);
    });
    await new Promise((res) => {
      const tx = w.raw.transaction(['records', 'outbox', 'meta'], 'readwrite');
      for (const x of rows.records) tx.objectStore('records').put(x);
      for (const x of rows.outbox) tx.objectStore('outbox').add(x);
      tx.objectStore('meta').put(rows.clock, 'clock');
      tx.objectStore('meta').put('p', 'prefix');
      tx.oncomplete = res;
    });
    w.rawRows = rows;
  });
  const cdp = process.env.BENCH_JSPROFILE ? await ctx.newCDPSession(page) : null;
  if (cdp) {
    await cdp.send('Profiler.enable');
    await cdp.send('Profiler.setSamplingInterval', { interval: 100 });
    await cdp.send('Profiler.start');
  }
  const a = await page.evaluate(async () => {
    const { db, todos, doc } = globalThis;
    const N = 10_000;
    /** @type {Record<string, number[]>} */
    const ms = { ours: [], oursRelaxed: [], seen: [], rawSame: [], rawSameRelaxed: [], rawWrites: [], rawRead: [] };
    // Raw transactions on the copy: the record, its outbox row and the
    // clock. shape 'same': the requests a put makes (the clock, the prefix
    // and the record read, the three writes issued at once behind them);
    // 'writes': the three writes alone; 'read': the reads awaited, then
    // the writes (the shape of a put that reads first).
    const rawPut = (k, shape, durability) =>
      new Promise((res) => {
        const { raw, rawRows } = globalThis;
        const rec = rawRows.records[(k * 7919) % rawRows.records.length];
        const row = rawRows.outbox[k % rawRows.outbox.length];
        const tx = raw.transaction(['records', 'outbox', 'meta'], 'readwrite', { durability });
        const meta = tx.objectStore('meta');
        const write = () => {
          tx.objectStore('records').put(rec);
          tx.objectStore('outbox').add(row);
          meta.put(rawRows.clock, 'clock');
        };
        tx.oncomplete = res;
        if (shape === 'writes') return write();
        let n = 0;
        const next = () => {
          if (++n === 3 && shape === 'read') write();
        };
        meta.get('clock').onsuccess = next;
        meta.get('prefix').onsuccess = next;
        tx.objectStore('records').get([rec.c, rec.id]).onsuccess = next;
        if (shape === 'same') write();
      });
    const time = async (xs, f) => {
      const t0 = performance.now();
      await f();
      xs.push(performance.now() - t0);
    };
    for (let k = 0; k < 300; k++) {
      // Mostly updates of existing records (moving them in the orders),
      // one in four a new record.
      const i = k % 4 === 3 ? N + k : (k * 7919) % N;
      const d = { ...doc(i), title: 'edited ' + k + ' ' + i, done: k % 2 === 0, tag: 't' + (k % 10) };
      const before = globalThis.calls;
      db.store.durability = 'strict'; // open()'s default
      const t0 = performance.now();
      await todos.put(d.id, d);
      const t1 = performance.now();
      // Until the refresh round is over (the queries it touches were
      // called back; it may be over before put returns).
      while (db.flushing) await new Promise((r) => setTimeout(r, 0));
      const t2 = performance.now();
      if (globalThis.calls === before) throw new Error('no query was called back');
      ms.ours.push(t1 - t0);
      ms.seen.push(t2 - t0);
      // The same put as open({durability: 'relaxed'}) makes it (another
      // record of the same kind).
      const j = k % 4 === 3 ? 2 * N + k : (k * 7919 + 5003) % N;
      db.store.durability = 'relaxed';
      await time(ms.oursRelaxed, () => todos.put(doc(j).id, { ...doc(j), title: 'relaxed ' + k }));
      while (db.flushing) await new Promise((r) => setTimeout(r, 0));
      await time(ms.rawSame, () => rawPut(k, 'same', 'strict'));
      await time(ms.rawSameRelaxed, () => rawPut(k, 'same', 'relaxed'));
      await time(ms.rawWrites, () => rawPut(k, 'writes', 'strict'));
      await time(ms.rawRead, () => rawPut(k, 'read', 'strict'));
    }
    await db.close();
    const q = (xs, p) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length * p)];
    return Object.fromEntries(Object.entries(ms).map(([k, xs]) => [k, { p50: q(xs, 0.5), p99: q(xs, 0.99) }]));
  });
  if (cdp) printProfile((await cdp.send('Profiler.stop')).profile);
  const sa = 'put with 10 live queries over a 10,000-record collection (Chromium)';
  const rows = [
    ['ours', 'put', 'Convergo JS client, awaited put (durability strict, the default)', { ours: true }],
    ['seen', 'put to queries called back', 'Convergo JS client (durability strict)', { ours: true }],
    ['oursRelaxed', 'put', 'Convergo JS client, awaited put, open({durability: "relaxed"})', { ours: true }],
    ['rawSame', 'put', 'raw IndexedDB transaction of the same requests (3 reads, 3 writes issued at once), strict', { limit: true }],
    ['rawSameRelaxed', 'put', 'raw IndexedDB transaction of the same requests, relaxed', { limit: true }],
    ['rawWrites', 'put', 'raw IndexedDB transaction of the 3 writes alone, strict', { limit: true }],
    ['rawRead', 'put', 'raw IndexedDB transaction reading first (3 reads awaited, then 3 writes), strict', { limit: true }],
  ];
  for (const [key, metric, impl, extra] of rows) {
    for (const p of ['p50', 'p99']) emit({ scenario: sa, metric: `${metric} ${p}`, unit: 'ms', better: 'lower', impl, ...extra, run: 0, value: a[key][p] });
    console.error(`live: ${impl}: p50 ${a[key].p50.toFixed(2)} ms (p99 ${a[key].p99.toFixed(2)})`);
  }

  // B. putMany of 1,000 against one raw transaction of the same rows.
  for (let run = 0; run < RUNS; run++) {
    const b = await page.evaluate(async (run) => {
      const { open } = await import('/convergo/index.js');
      const name = 'batch' + run;
      const db = await open({ name, sync: false, locks: null, BroadcastChannel: null });
      const todos = db.collection('todos');
      const docs = Array.from({ length: 1000 }, (_, i) => ({ id: `r${run}-` + i, title: 'todo number ' + i, done: i % 3 === 0, order: i }));
      // Warm the connection and the code.
      await todos.put('warm', { x: 1 });
      const t0 = performance.now();
      await todos.putMany(docs);
      const ours = performance.now() - t0;
      // The rows it wrote, to write them raw.
      const idb = await db.store.conn();
      const rows = await new Promise((res, rej) => {
        const tx = idb.transaction(['records', 'outbox'], 'readonly');
        const out = {};
        tx.objectStore('records').getAll().onsuccess = (e) => (out.records = e.target.result.filter((r) => r.id !== 'warm'));
        tx.objectStore('outbox').getAll().onsuccess = (e) => (out.outbox = e.target.result.filter((r) => r.id !== 'warm').map(({ seq, ...rest }) => rest));
        tx.oncomplete = () => res(out);
        tx.onerror = () => rej(tx.error);
      });
      await db.close();
      const openRaw = () =>
        new Promise((res, rej) => {
          const r = indexedDB.open('raw' + run, 1);
          r.onupgradeneeded = () => {
            r.result.createObjectStore('records', { keyPath: ['c', 'id'] });
            const ob = r.result.createObjectStore('outbox', { keyPath: 'seq', autoIncrement: true });
            ob.createIndex('record', ['c', 'id']);
            ob.createIndex('replica', 'r');
            r.result.createObjectStore('meta');
          };
          r.onsuccess = () => res(r.result);
          r.onerror = () => rej(r.error);
        });
      const raw = await openRaw();
      // Warm it the same way.
      await new Promise((res) => {
        const tx = raw.transaction(['meta'], 'readwrite', { durability: 'strict' });
        tx.objectStore('meta').put(1, 'warm');
        tx.oncomplete = res;
      });
      const t1 = performance.now();
      await new Promise((res, rej) => {
        const tx = raw.transaction(['records', 'outbox', 'meta'], 'readwrite', { durability: 'strict' });
        const rs = tx.objectStore('records');
        const ob = tx.objectStore('outbox');
        for (const r of rows.records) rs.put(r);
        for (const o of rows.outbox) ob.add(o);
        tx.oncomplete = res;
        tx.onerror = () => rej(tx.error);
      });
      const rawMs = performance.now() - t1;
      raw.close();
      return { ours, raw: rawMs, n: rows.records.length };
    }, run);
    if (b.n !== 1000) throw new Error(`putMany wrote ${b.n} records`);
    const sb = 'putMany of 1,000 records (Chromium)';
    emit({ scenario: sb, metric: 'time', unit: 'ms', better: 'lower', impl: 'Convergo JS client putMany', ours: true, run, value: b.ours });
    emit({ scenario: sb, metric: 'time', unit: 'ms', better: 'lower', impl: 'one raw IndexedDB transaction, same records and outbox rows', limit: true, run, value: b.raw });
    console.error(`live: run ${run}: putMany ${b.ours.toFixed(1)} ms, raw ${b.raw.toFixed(1)} ms (${(b.ours / b.raw).toFixed(2)}×)`);
  }
} finally {
  await ctx.close();
  rmSync(profile, { recursive: true, force: true });
  http.close();
}
