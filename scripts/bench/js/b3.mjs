// crdt-benchmarks' B3 map scenarios (dmonad/crdt-benchmarks, js-lib/b3.js)
// for Convergo's JS client and its peers: Yjs (Y.Map, V2 updates as
// crdt-benchmarks uses), Automerge and TinyBase (MergeableStore).
//
// Every figure comes from fresh processes: each run of each implementation
// on each scenario is one `node b3-run.mjs IMPL SCENARIO`, or for the
// client's IndexedDB apply path in Chromium one `node b3-chromium.mjs
// SCENARIO` with a fresh browser (b3-run.mjs says
// what it does: crdt-benchmarks' template, 1,540 fresh documents built
// through each library's own write path, one cold timed application as
// crdt-benchmarks publishes it, then warm ones). Runs are interleaved: run
// r goes through every scenario and, within it, every implementation in an
// order rotated by r, so that the machine's load falls on all alike.
// b3-impls.mjs says what each implementation's document and update are.
//
// Output: JSON samples, one per line (the sample type of cmd/convergo-bench,
// whose report subcommand aggregates them): per run, the cold time, the
// median of the run's warm times and the update bytes (for the JS client
// three rows: a live push from a session opened 1 s before the writes,
// one opened 3 h before, and the HTTP push body). On stderr, the
// issue's targets against the medians: the JS client ≥ 2× TinyBase and
// ≥ 5× Yjs (cold and warm), update bytes ≤ 1.2× Yjs V2's.
//
// Usage: node b3.mjs [runs] [warm runs per process] [impl,...] [scenario,...]

import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { factories as inNode, rowNames, scenarios, sessionAge } from './b3-impls.mjs';

// The implementations: those b3-run.mjs runs in Node, and the client's
// IndexedDB apply path in Chromium (b3-chromium.mjs), when there is one.
const CHROMIUM = process.env.CONVERGO_CHROMIUM ?? '/usr/bin/chromium';
const factories = { ...inNode };
const runner = (/** @type {string} */ impl) => fileURLToPath(new URL(impl === 'convergo-chromium' ? './b3-chromium.mjs' : './b3-run.mjs', import.meta.url));
if (existsSync(CHROMIUM)) factories['convergo-chromium'] = { name: 'Convergo JS client: decode push body + apply to IndexedDB (Chromium)', ours: true };
else console.error(`b3: no Chromium at ${CHROMIUM} (set CONVERGO_CHROMIUM): the IndexedDB apply row in Chromium is skipped`);

const RUNS = Number(process.argv[2] ?? 3);
const WARM = Number(process.argv[3] ?? 5);
const IMPLS = process.argv[4] ? process.argv[4].split(',') : Object.keys(factories);
const SCENARIOS = process.argv[5] ? scenarios.filter((s) => process.argv[5].split(',').includes(s.id)) : scenarios;
// The live push rows' session ages, read once here (from the Go command,
// unless scripts/bench.sh passed them) for every run this starts.
if (IMPLS.some((i) => factories[i]?.ours)) sessionAge();

// The report's rows (scenario titles and metrics): the Go command's
// (b3Rows), so that its figures and these fall in the same rows.
const ROWS = rowNames(WARM);
const { cold: COLD, warm: WARMED, bytes: BYTES, bytesHours: BYTES_HOURS, bytesHTTP: BYTES_HTTP } = ROWS;
// The Convergo clients' bytes in three rows (b3-impls.mjs; the Go core's from
// convergo-bench b3 in the same rows): what a client sends over an
// open live session, whose welcome came 1 s before the write (BYTES, the
// row the target is checked on) or 3 h before (BYTES_HOURS), and the HTTP
// push body (BYTES_HTTP).

/** @type {Map<string, number[]>} values by scenario id, metric and impl */
const seen = new Map();
function emit(sc, metric, unit, impl, run, value) {
  const f = factories[impl];
  process.stdout.write(JSON.stringify({ scenario: ROWS.scenarios[sc.id], metric, unit, better: 'lower', impl: f.name, ours: !!f.ours, run, value }) + '\n');
  const k = `${sc.id}|${metric}|${impl}`;
  seen.set(k, [...(seen.get(k) ?? []), value]);
}

const median = (/** @type {number[]} */ xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

for (let run = 0; run < RUNS; run++) {
  for (const sc of SCENARIOS) {
    const order = IMPLS.map((_, i) => IMPLS[(i + run) % IMPLS.length]);
    for (const impl of order) {
      let out;
      try {
        out = JSON.parse(
          execFileSync(process.execPath, ['--max-old-space-size=4096', runner(impl), ...(impl === 'convergo-chromium' ? [] : [impl]), sc.id, String(WARM)], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }),
        );
      } catch (e) {
        console.error(`b3: ${impl} ${sc.id} run ${run} failed: ${e.message}`);
        continue;
      }
      emit(sc, COLD, 'ms', impl, run, out.cold);
      emit(sc, WARMED, 'ms', impl, run, median(out.warm));
      if (out.live) {
        emit(sc, BYTES, 'bytes', impl, run, out.live.recent);
        emit(sc, BYTES_HOURS, 'bytes', impl, run, out.live.hours);
        emit(sc, BYTES_HTTP, 'bytes', impl, run, out.bytes);
      } else emit(sc, factories[impl].ours ? BYTES_HTTP : BYTES, 'bytes', impl, run, out.bytes);
      console.error(`b3: run ${run} ${sc.id} ${impl}: cold ${out.cold.toFixed(1)} ms, warm ${median(out.warm).toFixed(1)} ms, ${out.live ? `${out.live.recent} bytes live (${out.live.hours} from a session 3 h old, ${out.bytes} over HTTP)` : `${out.bytes} bytes`}, setup ${(out.setupMs / 1000).toFixed(1)} s`);
    }
  }
}

// The targets, against the medians over runs.
const med = (sc, metric, impl) => {
  const v = seen.get(`${sc.id}|${metric}|${impl}`);
  return v?.length ? median(v) : NaN;
};
for (const sc of SCENARIOS) {
  for (const ours of IMPLS.filter((i) => factories[i].ours)) {
    for (const [metric, label] of [
      [COLD, 'cold'],
      [WARMED, 'warm'],
    ]) {
      const t = med(sc, metric, ours);
      const tb = med(sc, metric, 'tinybase') / t;
      const y = med(sc, metric, 'yjs') / t;
      console.error(
        `b3 target ${sc.id} ${ours} ${label}: ${t.toFixed(1)} ms; ${tb.toFixed(2)}× TinyBase's speed (target ≥ 2: ${tb >= 2 ? 'met' : 'not met'}); ${y.toFixed(2)}× Yjs's (target ≥ 5: ${y >= 5 ? 'met' : 'not met'})`,
      );
    }
  }
  const ours = IMPLS.find((i) => factories[i].ours && i !== 'convergo-chromium') ?? 'convergo';
  for (const [metric, label] of [
    [BYTES, 'live push, session opened 1 s before'],
    [BYTES_HOURS, 'live push, session opened 3 h before'],
    [BYTES_HTTP, 'HTTP push body'],
  ]) {
    const b = med(sc, metric, ours) / med(sc, BYTES, 'yjs');
    console.error(`b3 target ${sc.id} update bytes, ${label}: ${b.toFixed(2)}× Yjs V2's (target ≤ 1.2: ${b <= 1.2 ? 'met' : 'not met'})`);
  }
}
