// Scenarios 4 and 5 (client half) in Chromium: initial sync of N records
// from a fresh server into a fresh JS client (IndexedDB), beside a plain
// IndexedDB bulk write of the same records in one transaction in the same
// page; and the JS heap the client holds after syncing them, beside the
// same records as plain objects in an array.
//
// The server is `convergo-bench serve -store memory -seed N -lib`: the
// engine and transport of the real server over the in-memory store, with
// the JS client library mounted at /convergo/.
//
// Usage: node browser.mjs <convergo-bench binary> [chromium] [runs]
// Prints one JSON sample per line (see cmd/convergo-bench).
//
// BENCH_HEAP=0 leaves out the heap figures and BENCH_MILLION=0 the million
// (below): with both, a run is the first sync of 100,000 records and the
// bulk put beside it, nothing else. On Linux each run's line on stderr
// also gives the CPU time (user + system) the processes under this one
// (the server, Chromium's) spent in the sync, in reading its records back
// (the check that all are held: apart, in neither the sync's time nor its
// CPU) and in the bulk put: on a loaded machine the wall times follow the
// load, the CPU times much less.

import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

const [bin, chromiumPath = '/usr/bin/chromium', runsArg = '3'] = process.argv.slice(2);
if (!bin) throw new Error('usage: node browser.mjs <convergo-bench binary> [chromium] [runs]');
const RUNS = Number(runsArg);
const ARGS = [
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

function emit(o) {
  process.stdout.write(JSON.stringify(o) + '\n');
}

/** Starts a seeded server; resolves to {url, stop}. */
function startServer(n) {
  return new Promise((resolve, reject) => {
    const child = spawn(bin, ['serve', '-store', 'memory', '-lib', '-seed', String(n)], { stdio: ['pipe', 'pipe', 'inherit'] });
    child.on('error', reject);
    child.on('exit', (code) => reject(new Error(`server exited with ${code}`)));
    createInterface({ input: child.stdout }).once('line', (line) => {
      if (!line.startsWith('LISTEN ')) return reject(new Error(`server said ${line}`));
      resolve({
        url: line.slice(7).trim(),
        stop: () => new Promise((done) => {
          child.removeAllListeners('exit');
          child.once('exit', done);
          child.stdin.end();
          setTimeout(() => child.kill('SIGKILL'), 10_000).unref();
        }),
      });
    });
  });
}

/**
 * CPU time (user + system, ms) spent so far by the processes under this
 * one, by kind: the server, Chromium's browser process (which runs
 * IndexedDB's backend), its renderers, and the rest of its processes.
 * Empty where /proc is not.
 * @returns {Map<string, number>}
 */
function cpuBelow() {
  /** @type {Map<number, {ppid: number, ms: number, kind: string}>} */
  const procs = new Map();
  let names = [];
  try {
    names = readdirSync('/proc').filter((n) => /^\d+$/.test(n));
  } catch {
    /* not Linux */
  }
  for (const name of names) {
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      // Chromium's children rewrite their command line, NULs to spaces.
      const cmd = readFileSync(`/proc/${name}/cmdline`, 'utf8');
      const type = cmd.match(/--type=([a-z-]+)/)?.[1];
      const kind = /\0serve\0-store\0/.test(cmd) ? 'server' : type === 'renderer' ? 'renderer' : type ? 'other' : 'browser';
      // USER_HZ is 100 on Linux.
      procs.set(Number(name), { ppid: Number(f[1]), ms: (Number(f[11]) + Number(f[12])) * 10, kind });
    } catch {
      /* gone meanwhile */
    }
  }
  /** @type {Map<string, number>} */
  const out = new Map();
  for (const p of procs.values()) {
    for (let q = p.ppid, up = 0; q > 1 && up < 64; q = procs.get(q)?.ppid ?? 0, up++) {
      if (q === process.pid) {
        out.set(p.kind, (out.get(p.kind) ?? 0) + p.ms);
        break;
      }
    }
  }
  return out;
}

/**
 * What each kind in cpuBelow spent since `before`, and their total, as
 * "total ms (server …, browser …, renderer …, other …)".
 * @param {Map<string, number>} before
 */
function cpuSince(before) {
  const now = cpuBelow();
  const kinds = ['server', 'browser', 'renderer', 'other'];
  const ms = kinds.map((k) => (now.get(k) ?? 0) - (before.get(k) ?? 0));
  return `${ms.reduce((a, b) => a + b, 0)} ms (${kinds.map((k, i) => `${k} ${ms[i]}`).join(', ')})`;
}

/** Prints the 20 functions with the most self time in a CDP CPU profile. */
function printProfile(profile) {
  const dt = (profile.endTime - profile.startTime) / 1000 / Math.max(1, profile.samples.length); // ms per sample
  const self = new Map();
  let total = 0;
  for (const node of profile.nodes) {
    const f = node.callFrame;
    const key = `${f.functionName || '(anonymous)'} ${f.url ? f.url.split('/').pop() + ':' + (f.lineNumber + 1) : ''}`.trim();
    self.set(key, (self.get(key) ?? 0) + (node.hitCount ?? 0));
    total += node.hitCount ?? 0;
  }
  console.error(`browser: CPU profile of the initial sync, ${Math.round(total * dt)} ms sampled; top self time:`);
  for (const [k, v] of [...self].sort((a, b) => b[1] - a[1]).slice(0, 20)) {
    console.error(`  ${((100 * v) / total).toFixed(1).padStart(5)}%  ${Math.round(v * dt).toString().padStart(6)} ms  ${k}`);
  }
}

/** One measured run with n records; returns the figures or throws. */
async function runOnce(n, timeoutMs) {
  const t0 = Date.now();
  const server = await startServer(n);
  const seedMs = Date.now() - t0;
  const profile = mkdtempSync(path.join(tmpdir(), 'convergo-bench-'));
  const ctx = await chromium.launchPersistentContext(profile, { executablePath: chromiumPath, args: ARGS, headless: true });
  try {
    const page = ctx.pages()[0] ?? (await ctx.newPage());
    page.setDefaultTimeout(timeoutMs);
    await page.goto(server.url + '/bench');
    const cdp = await ctx.newCDPSession(page);
    const heap = async () => {
      await cdp.send('HeapProfiler.collectGarbage');
      await cdp.send('HeapProfiler.collectGarbage');
      return (await cdp.send('Runtime.getHeapUsage')).usedSize;
    };

    // Initial sync through the client, optionally under the CPU profiler
    // (BENCH_JSPROFILE=1 prints the functions with the most self time).
    const heap0 = process.env.BENCH_HEAP === '0' ? 0 : await heap();
    if (process.env.BENCH_JSPROFILE) {
      await cdp.send('Profiler.enable');
      await cdp.send('Profiler.setSamplingInterval', { interval: 1000 });
      await cdp.send('Profiler.start');
    }
    const cpu0 = cpuBelow();
    const sync = await page.evaluate(async ({ n, timeoutMs }) => {
      const { open } = await import('/convergo/index.js');
      let got = 0;
      let done;
      const finished = new Promise((r) => (done = r));
      const t0 = performance.now();
      const db = await open({ url: location.origin, name: 'bench', collections: ['demo.todos'], locks: null, BroadcastChannel: null });
      db.on('change', (e) => {
        if (e.origin === 'remote') {
          got += e.ids.length;
          if (got >= n) done();
        }
      });
      const timer = setTimeout(done, timeoutMs);
      await finished;
      clearTimeout(timer);
      const ms = performance.now() - t0;
      globalThis.benchDB = db; // keep it alive for the heap figure
      return { ms };
    }, { n, timeoutMs });
    if (process.env.BENCH_JSPROFILE) printProfile((await cdp.send('Profiler.stop')).profile);
    const cpuSync = cpuSince(cpu0);
    // The check that every record is held reads them all back: outside
    // the sync's CPU time, which it would swell by seconds.
    const cpuList = cpuBelow();
    sync.count = await page.evaluate(async () => (await globalThis.benchDB.collection('demo.todos').list()).length);
    const cpuRead = cpuSince(cpuList);
    if (sync.count < n) throw new Error(`client holds ${sync.count} of ${n} records after ${Math.round(sync.ms)} ms`);
    const heapClient = process.env.BENCH_HEAP === '0' ? 0 : (await heap()) - heap0;

    // Plain IndexedDB: the same records, one transaction.
    const cpu1 = cpuBelow();
    const raw = await page.evaluate(async (n) => {
      const rec = (i) => ({ id: 'todo-' + i, title: 'todo number ' + i, done: i % 3 === 0, order: i });
      const req = indexedDB.open('raw', 1);
      req.onupgradeneeded = () => req.result.createObjectStore('records', { keyPath: 'id' });
      const db = await new Promise((res, rej) => {
        req.onsuccess = () => res(req.result);
        req.onerror = () => rej(req.error);
      });
      const records = Array.from({ length: n }, (_, i) => rec(i));
      const t0 = performance.now();
      const tx = db.transaction('records', 'readwrite');
      const os = tx.objectStore('records');
      for (const r of records) os.put(r);
      await new Promise((res, rej) => {
        tx.oncomplete = res;
        tx.onerror = () => rej(tx.error);
      });
      const ms = performance.now() - t0;
      db.close();
      return { ms };
    }, n);
    const cpuRaw = cpuSince(cpu1);
    if (process.env.BENCH_HEAP === '0') return { seedMs, syncMs: sync.ms, rawMs: raw.ms, cpuSync, cpuRaw, cpuRead };

    // Plain objects in an array: the floor for holding the records.
    await page.evaluate(() => {
      globalThis.benchDB = null;
    });
    const heap1 = await heap();
    await page.evaluate((n) => {
      globalThis.plain = Array.from({ length: n }, (_, i) => ({ id: 'todo-' + i, title: 'todo number ' + i, done: i % 3 === 0, order: i }));
    }, n);
    const heapPlain = (await heap()) - heap1;
    return { seedMs, syncMs: sync.ms, rawMs: raw.ms, cpuSync, cpuRaw, cpuRead, heapClient, heapPlain };
  } finally {
    await ctx.close();
    rmSync(profile, { recursive: true, force: true });
    await server.stop();
  }
}

const N = 100_000;
let slowest = 0;
for (let run = 0; run < RUNS; run++) {
  const r = await runOnce(N, 240_000);
  slowest = Math.max(slowest, r.syncMs);
  const sc = 'Initial sync of 100,000 records into Chromium';
  emit({ scenario: sc, metric: 'time to synced', unit: 'ms', better: 'lower', impl: 'Convergo JS client (pull + IndexedDB)', ours: true, run, value: r.syncMs });
  emit({ scenario: sc, metric: 'time to synced', unit: 'ms', better: 'lower', impl: 'plain IndexedDB put ×100,000, one transaction', limit: true, run, value: r.rawMs, note: 'same page, records already in memory' });
  console.error(`browser: run ${run}: seed ${r.seedMs} ms, sync ${Math.round(r.syncMs)} ms, raw ${Math.round(r.rawMs)} ms, ratio of rates ${(r.rawMs / r.syncMs).toFixed(2)}; CPU sync ${r.cpuSync}; raw ${r.cpuRaw}; reading the records back after the sync ${r.cpuRead}`);
  if (r.heapClient === undefined) continue;
  const hs = 'Client JS heap holding 100,000 records';
  emit({ scenario: hs, metric: 'heap after GC', unit: 'MiB', better: 'lower', impl: 'Convergo JS client, synced', ours: true, run, value: r.heapClient / 2 ** 20 });
  emit({ scenario: hs, metric: 'heap after GC', unit: 'MiB', better: 'lower', impl: 'the records as plain objects in an array', limit: true, run, value: r.heapPlain / 2 ** 20 });
}

// 1,000,000 records, once, when 100,000 suggest it fits in 5 minutes (make
// bench's budget), or when asked for (BENCH_MILLION=1) with a budget of its
// own: BENCH_MILLION_MS, 15 minutes unless set.
const M = 1_000_000;
const millionMs = process.env.BENCH_MILLION === '1' ? Number(process.env.BENCH_MILLION_MS ?? 900_000) : 300_000;
if (process.env.BENCH_MILLION === '0') {
  console.error('browser: 1,000,000 records skipped (BENCH_MILLION=0)');
} else if (process.env.BENCH_MILLION === '1' || slowest * 10 < 240_000) {
  try {
    const r = await runOnce(M, millionMs);
    console.error(`browser: 1,000,000 records: sync ${Math.round(r.syncMs)} ms (${Math.round(M / (r.syncMs / 1000))} records/s), raw ${Math.round(r.rawMs)} ms (${Math.round(M / (r.rawMs / 1000))} records/s), ratio of rates ${(r.rawMs / r.syncMs).toFixed(2)}`);
    const sc = 'Initial sync of 1,000,000 records into Chromium';
    emit({ scenario: sc, metric: 'time to synced', unit: 'ms', better: 'lower', impl: 'Convergo JS client (pull + IndexedDB)', ours: true, run: 0, value: r.syncMs });
    emit({ scenario: sc, metric: 'time to synced', unit: 'ms', better: 'lower', impl: 'plain IndexedDB put ×1,000,000, one transaction', limit: true, run: 0, value: r.rawMs });
  } catch (e) {
    console.error(`browser: 1,000,000 records did not complete within ${Math.round(millionMs / 60_000)} minutes: ${e.message}`);
  }
} else {
  console.error(`browser: 1,000,000 records skipped: 100,000 took ${Math.round(slowest)} ms, so a million would pass 5 minutes`);
}
