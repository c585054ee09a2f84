// Records and changes decoded as received from elsewhere: their field values
// in any encoding of the value model, held in the deterministic one
// (normalize.js receivedValue). Not in the main entry, which reads only what this client
// stored (db.js decodeStored and decodeEntry, with record.js storedValue).

import { Reader } from './cbor.js';
import { ConvergoError } from './errors.js';
import { arrayHead } from './check.js';
import { receivedValue } from './normalize.js';
import { MAX_RECORD_BYTES, readRecord } from './record.js';
import { readChange } from './change.js';

/** @typedef {import('./record.js').Record} Record */
/** @typedef {import('./record.js').Change} Change */

/**
 * Decodes and validates one record.
 * @param {Uint8Array} bytes
 * @returns {Record}
 */
export function decodeRecord(bytes) {
  if (bytes.length > MAX_RECORD_BYTES) throw new ConvergoError('too_large', `record of ${bytes.length} bytes exceeds ${MAX_RECORD_BYTES}`);
  const r = new Reader(bytes, { canonical: false });
  const rec = readRecord(r, undefined, receivedValue);
  r.end();
  return rec;
}

/**
 * Decodes a batch of changes.
 * @param {Uint8Array} bytes
 * @returns {Change[]}
 */
export function decodeChanges(bytes) {
  const r = new Reader(bytes, { canonical: false });
  const n = arrayHead(r);
  const out = [];
  for (let i = 0; i < n; i++) out.push(readChange(r, undefined, receivedValue));
  r.end();
  return out;
}
