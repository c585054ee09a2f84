// Queries over the records of one collection: filtering by field values
// or a predicate, ordering (values of mixed types in a fixed order) and
// limits. Pure functions over what the Store lists; Collection.query and
// live subscriptions both run them.

import { compareBytes, encode, equalBytes } from './cbor.js';
import { ConvergoError } from './errors.js';
import { fromStored } from './db.js';
import { docOfStored } from './values.js';

/** @typedef {import('./db.js').StoredRecord} StoredRecord */
/** @typedef {import('./values.js').Doc} Doc */

/**
 * @typedef {{where?: Record<string, unknown> | ((doc: Doc) => boolean), orderBy?: string, desc?: boolean, limit?: number}} Query
 */

/** Orders values of mixed types: null/undefined last, then by type, then value (NaN after the other numbers). */
const TYPE_RANK = { number: 0, bigint: 0, string: 1, boolean: 2, object: 3 };

/**
 * @param {unknown} a
 * @param {unknown} b
 */
export function compareValues(a, b) {
  const an = a === undefined || a === null;
  const bn = b === undefined || b === null;
  if (an || bn) return an === bn ? 0 : an ? 1 : -1;
  const ta = /** @type {keyof typeof TYPE_RANK} */ (typeof a);
  const tb = /** @type {keyof typeof TYPE_RANK} */ (typeof b);
  const ra = TYPE_RANK[ta] ?? 4;
  const rb = TYPE_RANK[tb] ?? 4;
  if (ra !== rb) return ra - rb;
  if (ra === 0) {
    // NaN, which < and > call equal to every number, sorts after all of
    // them: an order, so that a live result kept in place by binary
    // search (position) is the one a sort of the whole makes.
    const na = Number.isNaN(a);
    if (na || Number.isNaN(b)) return na === Number.isNaN(b) ? 0 : na ? 1 : -1;
    // number vs bigint compare fine with < in JS.
    return /** @type {any} */ (a) < /** @type {any} */ (b) ? -1 : /** @type {any} */ (a) > /** @type {any} */ (b) ? 1 : 0;
  }
  if (ra === 1) return /** @type {string} */ (a) < /** @type {string} */ (b) ? -1 : a > /** @type {string} */ (b) ? 1 : 0;
  if (ra === 2) return Number(a) - Number(b);
  return compareBytes(encode(a), encode(b));
}

/**
 * A scalar in the form equal values share: bigints in the safe range as
 * numbers.
 * @param {unknown} x
 */
function scalar(x) {
  return typeof x === 'bigint' && Number.isSafeInteger(Number(x)) ? Number(x) : x;
}

/**
 * The value bytes of field k of stored record s (null: unset; undefined:
 * no such field).
 * @param {StoredRecord} s
 * @param {string} k
 */
function fieldValue(s, k) {
  return (s.fields ?? fromStored(s, s.id).fields).get(k)?.value;
}

/**
 * A query made ready to run: filter(s, d) is the document d of stored
 * record s when it matches (null otherwise; d is docOfStored(s), passed in
 * so callers that test one record against several queries build it once),
 * compare orders two documents as the query's result does, limit is the
 * number of documents the result keeps (undefined: all).
 * @typedef {{filter: (s: StoredRecord, d: Doc|null) => Doc|null, compare: (a: Doc, b: Doc) => number, limit: number|undefined}} Compiled
 */

/**
 * Checks a query and compiles it (throws invalid for a bad one).
 * @param {Query} q
 * @returns {Compiled}
 */
export function compileQuery(q = {}) {
  const where = q.where;
  /** @type {[string, unknown, Uint8Array|null][]} */
  let want = [];
  if (where && typeof where === 'object') {
    want = Object.entries(where).map(([k, v]) => [k, v, v === null || typeof v !== 'object' ? null : encode(v)]);
  } else if (where !== undefined && typeof where !== 'function') {
    throw new ConvergoError('invalid', 'query: where must be an object or a function');
  }
  if (q.limit !== undefined && (!Number.isSafeInteger(q.limit) || q.limit < 0)) {
    throw new ConvergoError('invalid', 'query: limit must be a non-negative integer');
  }
  const pred = typeof where === 'function' ? where : null;
  /** @type {(s: StoredRecord, d: Doc|null) => Doc|null} */
  const filter = (s, d) => {
    if (!s.doc || !d) return null;
    for (const [k, v, b] of want) {
      if (k === 'id') {
        if (v !== s.id) return null;
      } else if (!Object.hasOwn(s.doc, k)) return null;
      // Scalars compare as values, so 31 matches a 31.0 another client
      // stored as a float, and 5n matches 5.
      else if (b === null) {
        if (scalar(s.doc[k]) !== scalar(v)) return null;
      } else if (!equalBytes(fieldValue(s, k), b)) return null;
    }
    return pred && !pred(d) ? null : d;
  };
  const sign = q.desc ? -1 : 1;
  const k = q.orderBy;
  const byId = (/** @type {Doc} */ a, /** @type {Doc} */ b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
  const compare =
    k === undefined ? (/** @type {Doc} */ a, /** @type {Doc} */ b) => sign * byId(a, b) : (/** @type {Doc} */ a, /** @type {Doc} */ b) => sign * compareValues(a[k], b[k]) || byId(a, b);
  return { filter, compare, limit: q.limit };
}

/**
 * The documents of the stored records a compiled query's filter keeps, in
 * its order, all of them (the limit is the caller's to apply: a live
 * result keeps them all): Collection.query and a subscription's first run.
 * @param {StoredRecord[]} records
 * @param {Compiled} q
 * @returns {Doc[]}
 */
export function matching(records, { filter, compare }) {
  /** @type {Doc[]} */
  const out = [];
  for (const s of records) {
    const d = s.doc ? filter(s, docOfStored(s)) : null;
    if (d) out.push(d);
  }
  return out.sort(compare);
}

/**
 * Runs a query over stored records.
 * @param {StoredRecord[]} records
 * @param {Query} q
 * @returns {Doc[]}
 */
export function runQuery(records, q = {}) {
  const cq = compileQuery(q);
  return matching(records, cq).slice(0, cq.limit);
}

/**
 * Where d goes in rows (sorted by compare): the first index whose document
 * sorts after d or is d's place.
 * @param {Doc[]} rows
 * @param {Doc} d
 * @param {(a: Doc, b: Doc) => number} compare
 */
export function position(rows, d, compare) {
  let lo = 0;
  let hi = rows.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (compare(rows[mid], d) < 0) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
