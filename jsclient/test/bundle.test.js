// What an app that imports `convergo` loads up front, and what it loads only
// when it needs it (docs/benchmarks.md, "Browser client bundle"): a module
// named here must be its own on-demand chunk and put no code in the main
// entry, so that a static import of it (or of a part of it) shows up here
// rather than as a few hundred bytes more in the next size measurement.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { readFileSync } from 'node:fs';
import { build } from 'esbuild';
import { measure } from '../scripts/size.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** How far above its documented size the main entry may grow before this test fails (a fraction of it). */
const SIZE_MARGIN = 0.01;

/** Loaded on demand, each with why a common session does without it. */
const ON_DEMAND = {
  'src/rejected.js': 'the rejected changes, read when the app asks',
  'src/heal.js': 'healing a server that lost history',
  'src/reconcile.js': 'reconciling after lease_expired',
  'src/schema.js': 'schema migrations',
  'src/scope.js': 'named scopes',
  'src/leader.js': 'the sync loop, loaded by the tab that leads (a follower never does)',
  'src/live.js': 'the WebSocket session, after the first round over HTTP',
  'src/peer.js': 'what a tab does with another tab\'s message, when a second tab first speaks',
  'src/upgrade.js': 'the object stores of a new database, or of one an older version wrote',
  'src/wiped.js': 'writing the identity back into a database deleted or evicted under the tab',
};

/** Modules only on-demand ones import: in a chunk they share, not up front. */
const NOT_UP_FRONT = {
  'src/constants.js': 'the wire names, codes and timings (model.js holds what the main entry needs)',
  'src/sync.js': "the sync loop, leader.js's",
  'src/protocol.js': "the wire format, the sync loop's",
  'src/http.js': "one HTTP request, the sync loop's",
  'src/syncstore.js': "the Store's part the sync loop uses",
  'src/normalize.js': 'values in another encoding than the deterministic one, which only the wire brings',
  'src/check.js': 'values checked without decoding them (what comes from elsewhere, convergo/cbor\'s checkValue): the main entry checks what it stored as it decodes it',
  'src/received.js': 'records and changes decoded as received, with normalize.js',
  'src/parts.js': "records' own and uncovered parts, stamps by change: the sync loop's and the heal's",
  'src/change.js': 'changes decoded, outbox entries and the rejected entries they become',
  'src/metakeys.js': 'the meta keys of heals, reconciliations, scopes and replacements',
};

test('bundle: the modules loaded on demand stay out of the main entry', async () => {
  const { lazy, modules } = await measure();
  const lazyNames = new Set(lazy.map((l) => l.lazy));
  for (const [m, why] of Object.entries(ON_DEMAND)) {
    assert.ok(lazyNames.has(m), `${m} (${why}) is not loaded on demand`);
    const inMain = modules.find((x) => x.module === m);
    assert.ok(!inMain || inMain.min === 0, `${m} (${why}) puts ${inMain?.min} bytes in the main entry`);
  }
  for (const [m, why] of Object.entries(NOT_UP_FRONT)) {
    const inMain = modules.find((x) => x.module === m);
    assert.ok(!inMain || inMain.min === 0, `${m} (${why}) puts ${inMain?.min} bytes in the main entry`);
  }
});

test('bundle: the main entry stays within the size docs/benchmarks.md states', async () => {
  // The figure of the targets table's bundle row. esbuild is pinned, so
  // the bytes only move with the code (or with Node's zlib, by a few
  // bytes: the margin); a change that grows the entry states its new
  // size there.
  const doc = readFileSync(path.join(root, '..', 'docs', 'benchmarks.md'), 'utf8');
  const row = /^\| bundle, `convergo` entry ≤ [\d,]+ B min\+gzip \| ([\d,]+) B /m.exec(doc);
  assert.ok(row, 'docs/benchmarks.md has no bundle row in its targets table');
  const documented = Number(row[1].replaceAll(',', ''));
  const { entries } = await measure();
  const gzip = /** @type {{gzip: number}} */ (entries.find((e) => e.entry === 'convergo')).gzip;
  assert.ok(gzip <= documented * (1 + SIZE_MARGIN), `convergo is ${gzip} B min+gzip, more than ${SIZE_MARGIN * 100}% over the ${documented} B docs/benchmarks.md states (npm run size; state the new size there if the growth is wanted)`);
});

/**
 * The top-level declarations in outputs, as "module: name" (esbuild's
 * unminified output names each module in a comment before its code; a
 * number it appends to a name that two modules share is dropped).
 * @param {string[]} texts
 */
function declarations(texts) {
  const out = new Set();
  for (const t of texts) {
    let mod = '';
    for (const line of t.split('\n')) {
      const m = /^\/\/ (src\/\S+\.js)$/.exec(line);
      if (m) mod = m[1];
      const d = /^(?:async )?(?:function\*?|class|var|let|const) ([\w$]+)/.exec(line);
      if (d) out.add(`${mod}: ${d[1].replace(/\d+$/, '')}`);
    }
  }
  return out;
}

test('bundle: the main entry declares nothing only on-demand modules use', async () => {
  const common = { bundle: true, format: /** @type {'esm'} */ ('esm'), write: false, outdir: '/virtual', external: ['react', 'react-dom'], logLevel: /** @type {'error'} */ ('error'), absWorkingDir: root };
  // What an app loads up front: the package's entries built together, as
  // scripts/size.mjs builds them, unminified, and the chunks index.js
  // imports statically.
  const pkg = (await import('../package.json', { with: { type: 'json' } })).default;
  const entries = Object.entries(pkg.exports).map(([sub, v]) => [sub === '.' ? 'index' : sub.slice(2), typeof v === 'string' ? v : v.default]);
  const split = await build({ ...common, entryPoints: Object.fromEntries(entries), splitting: true, metafile: true });
  const meta = new Map(Object.entries(split.metafile.outputs).map(([k, v]) => [path.basename(k), v]));
  /** @type {Set<string>} */
  const upFront = new Set();
  const visit = (/** @type {string} */ name) => {
    if (upFront.has(name)) return;
    upFront.add(name);
    for (const i of meta.get(name)?.imports ?? []) if (i.kind === 'import-statement' && !i.external) visit(path.basename(i.path));
  };
  visit('index.js');
  const loaded = declarations(split.outputFiles.filter((f) => upFront.has(path.basename(f.path))).map((f) => f.text));
  // What the main entry itself uses: src/index.js alone, its on-demand
  // modules left out, so that esbuild drops whatever it does not reach.
  const alone = await build({
    ...common,
    entryPoints: ['src/index.js'],
    plugins: [{ name: 'on-demand', setup: (b) => b.onResolve({ filter: /.*/ }, (a) => (a.kind === 'dynamic-import' ? { path: a.path, external: true } : undefined)) }],
  });
  const used = declarations(alone.outputFiles.map((f) => f.text));
  assert.ok(loaded.has('src/db.js: Store') && used.has('src/db.js: Store'), 'no declarations read from the builds');
  const unused = [...loaded].filter((d) => !used.has(d));
  assert.deepEqual(unused, [], 'declared in the main entry, used only by modules loaded on demand (move them to one of those)');
});
