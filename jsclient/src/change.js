// Changes as the outbox keeps them and the wire carries them: a change's
// decoder, an outbox entry's change decoded, and the rejected entry a
// refused one becomes. Loaded with what reads the outbox or the wire (the
// sync loop, reconciliation, schema upgrades, scopes, the rejected
// changes), not up front.

import { Reader, utf8Length } from './cbor.js';
import { ConvergoError } from './errors.js';
import { readRecord, storedValue, validateCollection } from './record.js';
import { META, REJECTED, req } from './db.js';
import { LOCAL_DEFAULTS } from './model.js';

/** @typedef {import('./record.js').Record} Record */
/** @typedef {import('./record.js').Change} Change */
/** @typedef {import('./record.js').CompactContext} CompactContext */
/** @typedef {import('./db.js').OutboxEntry} OutboxEntry */
/** @typedef {import('./db.js').RejectedEntry} RejectedEntry */

/** Meta key: how many rejected changes were dropped to stay within the bounds (boundRejected). */
const DROPPED_KEY = 'rejectedDropped';

/**
 * Reads a change {1: collection, 2: record}; held as in readRecord.
 * @param {Reader} r
 * @param {CompactContext|undefined} cx
 * @param {(r: Reader) => Uint8Array} held
 * @returns {Change}
 */
export function readChange(r, cx, held) {
  const n = r.mapHead();
  /** @type {string|undefined} */
  let collection;
  /** @type {Record|undefined} */
  let record;
  const seen = new Set();
  for (let i = 0; i < n; i++) {
    const k = r.head();
    if (k.major !== 0) throw new ConvergoError('malformed', 'change key is not an integer');
    if (seen.has(k.arg)) throw new ConvergoError('malformed', 'duplicate map key in change');
    seen.add(k.arg);
    if (k.arg === 1) collection = r.text();
    else if (k.arg === 2) record = readRecord(r, cx, held);
    else throw new ConvergoError('malformed', `unknown change key ${k.arg}`);
  }
  validateCollection(collection ?? '');
  if (!record) throw new ConvergoError('invalid', 'change without a record');
  return { collection: /** @type {string} */ (collection), record };
}

/**
 * The encoded change of an outbox entry, decoded (its values as stored:
 * storedValue).
 * @param {Uint8Array} bytes
 */
export function decodeEntry(bytes) {
  const r = new Reader(bytes, { canonical: false });
  const { record } = readChange(r, undefined, storedValue);
  r.end();
  return record;
}

/**
 * The rejected entry (without its id) of outbox entry e, refused with
 * code and message by request requestId.
 * @param {OutboxEntry} e
 * @param {string} code
 * @param {string} message
 * @param {string|null} requestId
 * @param {{when: number, subject: string|null}} info
 * @returns {Omit<RejectedEntry, 'id'>}
 */
export function rejectedEntry(e, code, message, requestId, info) {
  const size = e.change.length + utf8Length(code) + utf8Length(message) + utf8Length(requestId ?? '') + utf8Length(info.subject ?? '');
  return { c: e.c, rid: e.id, change: e.change, code, message, requestId, when: info.when, subject: info.subject, size };
}

/**
 * Drops the oldest rejected changes past LOCAL_DEFAULTS.maxRejected entries or
 * LOCAL_DEFAULTS.maxRejectedBytes bytes (an entry larger than the byte bound
 * on its own is kept alone), in transaction tx, and counts them in meta
 * "rejectedDropped". Returns how many it dropped.
 * @param {IDBTransaction} tx spanning rejected and meta
 */
export async function boundRejected(tx) {
  const store = tx.objectStore(REJECTED);
  const all = /** @type {RejectedEntry[]} */ (await req(store.getAll()));
  let bytes = all.reduce((n, e) => n + (e.size ?? 0), 0);
  let n = 0;
  while (all.length - n > LOCAL_DEFAULTS.maxRejected || (bytes > LOCAL_DEFAULTS.maxRejectedBytes && all.length - n > 1)) {
    bytes -= all[n].size ?? 0;
    store.delete(all[n].id);
    n++;
  }
  if (n > 0) {
    const meta = tx.objectStore(META);
    const before = await req(meta.get(DROPPED_KEY));
    meta.put((Number.isSafeInteger(before) ? before : 0) + n, DROPPED_KEY);
  }
  return n;
}
