// Bundle size of the library as an app's bundler sees it: esbuild, ESM,
// minified, code splitting on (modules loaded on demand, heal.js and
// rejected.js, land in chunks of their own). For each entry point (the
// package's exports) it prints the bytes an app that imports it loads up
// front, minified and min+gzip (level 9): the entry and every chunk it
// imports statically. Then the on-demand modules, each with what loading
// it adds to the main entry: its chunk and the chunks it imports
// statically that the main entry does not (a chunk esbuild shares between
// two on-demand modules counts in both). Then the minified bytes each
// source module contributes to the main entry.
//
//   npm run size            (cd jsclient)
//   npm run size -- --json  one JSON line per figure
//
// measure() returns the same figures (test/bundle.test.js checks with it
// what stays out of the main entry).

import { build } from 'esbuild';
import { gzipSync } from 'node:zlib';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { readFileSync } from 'node:fs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const gz = (/** @type {Uint8Array} */ b) => gzipSync(b, { level: 9 }).length;

/**
 * Builds the package's entry points as an app's bundler would and measures
 * them.
 * @returns {Promise<{
 *   entries: {entry: string, min: number, gzip: number, files: number}[],
 *   lazy: {lazy: string, min: number, gzip: number}[],
 *   modules: {module: string, min: number}[],
 * }>} entries: what each entry point loads up front; lazy: each module
 *   loaded on demand (path from jsclient/), with what loading it adds;
 *   modules: the source modules in the main entry, largest first.
 */
export async function measure() {
  const pkg = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8'));
  const entries = Object.entries(pkg.exports).map(([sub, v]) => [sub, typeof v === 'string' ? v : v.default]);
  const r = await build({
    entryPoints: Object.fromEntries(entries.map(([sub, file]) => [sub === '.' ? 'index' : sub.slice(2), path.join(root, file)])),
    bundle: true,
    splitting: true,
    minify: true,
    format: 'esm',
    outdir: '/virtual',
    write: false,
    metafile: true,
    external: ['react', 'react-dom'],
    logLevel: 'error',
  });
  const files = new Map(r.outputFiles.map((f) => [path.relative('/virtual', f.path), f.contents]));
  const meta = new Map(Object.entries(r.metafile.outputs).map(([k, v]) => [path.basename(k), v]));

  /** The output files an entry loads up front: itself and its static imports. */
  function closure(/** @type {string} */ name, seen = new Set()) {
    if (seen.has(name)) return seen;
    seen.add(name);
    for (const i of meta.get(name)?.imports ?? []) if (i.kind === 'import-statement' && !i.external) closure(path.basename(i.path), seen);
    return seen;
  }

  const out = [];
  for (const [sub] of entries) {
    const name = (sub === '.' ? 'index' : sub.slice(2)) + '.js';
    const parts = [...closure(name)];
    const joined = Buffer.concat(parts.map((p) => Buffer.from(files.get(p))));
    out.push({ entry: sub === '.' ? 'convergo' : 'convergo/' + sub.slice(2), min: joined.length, gzip: gz(joined), files: parts.length });
  }
  const upFront = closure('index.js');
  const exported = new Set(entries.map(([sub]) => (sub === '.' ? 'index' : sub.slice(2)) + '.js'));
  /** What loading on-demand chunk k adds to the main entry's files, joined. */
  const added = (/** @type {string} */ k) => Buffer.concat([...closure(k)].filter((p) => !upFront.has(p)).map((p) => Buffer.from(files.get(p))));
  const lazy = [...meta.entries()]
    .filter(([k, v]) => v.entryPoint && !exported.has(k) && !upFront.has(k))
    .map(([k, v]) => {
      const b = added(k);
      return { lazy: path.relative(root, path.resolve(v.entryPoint)), min: b.length, gzip: gz(b) };
    });
  /** @type {Map<string, number>} */
  const modules = new Map();
  for (const p of upFront) for (const [k, v] of Object.entries(meta.get(p).inputs)) modules.set(path.relative(root, k), (modules.get(path.relative(root, k)) ?? 0) + v.bytesInOutput);
  return { entries: out, lazy, modules: [...modules].sort((a, b) => b[1] - a[1]).map(([module, min]) => ({ module, min })) };
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const { entries, lazy, modules } = await measure();
  if (process.argv.includes('--json')) {
    for (const o of [...entries, ...lazy, ...modules]) console.log(JSON.stringify(o));
  } else {
    console.log('entry point (what an app loads up front)      min   min+gzip');
    for (const o of entries) console.log(`${o.entry.padEnd(44)} ${String(o.min).padStart(7)} ${String(o.gzip).padStart(9)}`);
    console.log('\nloaded on demand                               min   min+gzip');
    for (const o of lazy) console.log(`${o.lazy.padEnd(44)} ${String(o.min).padStart(7)} ${String(o.gzip).padStart(9)}`);
    console.log('\nsource modules in the main entry (minified bytes each)');
    for (const o of modules) console.log(`${o.module.padEnd(44)} ${String(o.min).padStart(7)}`);
  }
}
