// Queries over the records of one collection: filtering by field values
// or a predicate, ordering (values of mixed types in a fixed order) and
// limits. Pure functions over what the Store lists; Collection.query and
// live subscriptions both run them.

import { compareBytes, encode, equalBytes } from './cbor.js';
import { ConvergoError } from './errors.js';
import { docOfStored } from './values.js';

/** @typedef {import('./db.js').StoredRecord} StoredRecord */
/** @typedef {import('./values.js').Doc} Doc */

/**
 * @typedef {{where?: Record<string, unknown> | ((doc: Doc) => boolean), orderBy?: string, desc?: boolean, limit?: number}} Query
 */

/** Orders values of mixed types: null/undefined last, then by type, then value. */
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
  return typeof x === 'bigint' && x >= -BigInt(Number.MAX_SAFE_INTEGER) && x <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(x) : x;
}

/**
 * Runs a query over stored records.
 * @param {StoredRecord[]} records
 * @param {Query} q
 * @returns {Doc[]}
 */
export function runQuery(records, q = {}) {
  const where = q.where;
  /** @type {[string, Uint8Array][]} */
  let want = [];
  if (where && typeof where === 'object') {
    want = Object.keys(where).map((k) => [k, encode(where[k])]);
  } else if (where !== undefined && typeof where !== 'function') {
    throw new ConvergoError('invalid', 'query: where must be an object or a function');
  }
  /** @type {Doc[]} */
  let out = [];
  for (const s of records) {
    if (!s.doc) continue;
    if (want.length > 0) {
      let ok = true;
      for (const [k, b] of want) {
        const v = /** @type {any} */ (where)[k];
        if (k === 'id') ok = v === s.id;
        else if (!Object.hasOwn(s.doc, k)) ok = false;
        else if (v === null || typeof v !== 'object') {
          // Scalars compare as values, so 31 matches a 31.0 another client
          // stored as a float, and 5n matches 5.
          ok = scalar(s.doc[k]) === scalar(v);
        } else ok = equalBytes(s.fields.get(k)?.value, b);
        if (!ok) break;
      }
      if (!ok) continue;
    }
    const d = /** @type {Doc} */ (docOfStored(s));
    if (typeof where === 'function' && !where(d)) continue;
    out.push(d);
  }
  if (q.orderBy !== undefined) {
    const k = q.orderBy;
    const sign = q.desc ? -1 : 1;
    out.sort((a, b) => sign * compareValues(a[k], b[k]) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  } else {
    out.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    if (q.desc) out.reverse();
  }
  if (q.limit !== undefined) {
    if (!Number.isSafeInteger(q.limit) || q.limit < 0) throw new ConvergoError('invalid', 'query: limit must be a non-negative integer');
    out = out.slice(0, q.limit);
  }
  return out;
}
