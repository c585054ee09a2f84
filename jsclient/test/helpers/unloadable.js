// Module hooks (node:module register) that make the dynamic import of
// named modules of src/ fail, as a browser offline fails to fetch a module
// its cache lacks. The test names them in a shared buffer: 1 for
// upgrade.js, 2 for wiped.js, 4 for schema.js, 8 for rejected.js
// (unloadable.test.js).

/** @type {Int32Array} */
let failing;

/** @param {{shared: SharedArrayBuffer}} data */
export function initialize(data) {
  failing = new Int32Array(data.shared);
}

const BITS = /** @type {Record<string, number>} */ ({ 'upgrade.js': 1, 'wiped.js': 2, 'schema.js': 4, 'rejected.js': 8 });

/**
 * @param {string} specifier
 * @param {any} context
 * @param {(s: string, c: any) => Promise<{url: string}>} next
 */
export async function resolve(specifier, context, next) {
  const r = await next(specifier, context);
  const m = /\/src\/([a-z]+\.js)$/.exec(r.url);
  if (m && (Atomics.load(failing, 0) & (BITS[m[1]] ?? 0)) !== 0) throw new TypeError(`Failed to fetch dynamically imported module: ${r.url}`);
  return r;
}
