// Documents as the app sees them and fields as records store them: checking
// a document, encoding its fields within the value limit, keeping a change
// within the record limits, and turning a stored record back into a
// document. The limits themselves are declared in cbor.js and record.js;
// Collection applies them here on every write.

import { encode, MAX_VALUE_BYTES, setOwn } from './cbor.js';
import { ConvergoError } from './errors.js';
import { MAX_FIELDS, MAX_RECORD_BYTES, encodeRecord, validateFieldName } from './record.js';

/** @typedef {import('./record.js').Record} Rec */
/** @typedef {import('./db.js').StoredRecord} StoredRecord */

/**
 * A document: its fields' values by name, and its id.
 * @typedef {Record<string, unknown> & {id: string}} Doc
 */

/**
 * Throws unless doc is a plain object.
 * @param {unknown} doc
 * @param {string} what the operation, for the message
 */
export function checkDoc(doc, what) {
  const p = doc !== null && typeof doc === 'object' && !Array.isArray(doc) ? Object.getPrototypeOf(doc) : undefined;
  if (p !== Object.prototype && p !== null) throw new ConvergoError('invalid', `${what}: document must be a plain object`);
}

/**
 * Encodes a field value, checking the value limit.
 * @param {string} name
 * @param {unknown} v
 */
export function encodeField(name, v) {
  validateFieldName(name);
  const b = encode(v);
  if (b.length > MAX_VALUE_BYTES) throw new ConvergoError('too_large', `field ${JSON.stringify(name)}: value of ${b.length} bytes exceeds ${MAX_VALUE_BYTES}`);
  return b;
}

/**
 * The fields to write from a document, without the "id" key.
 * @param {string} id
 * @param {Record<string, unknown>} doc
 * @param {string} what
 * @returns {Map<string, Uint8Array|null>} null means unset
 */
export function fieldsOf(id, doc, what) {
  checkDoc(doc, what);
  /** @type {Map<string, Uint8Array|null>} */
  const out = new Map();
  for (const [k, v] of Object.entries(doc)) {
    if (k === 'id') {
      if (v !== undefined && v !== id) throw new ConvergoError('invalid', `${what}: doc.id ${JSON.stringify(v)} differs from the id ${JSON.stringify(id)}`);
      continue;
    }
    out.set(k, v === undefined ? null : encodeField(k, v));
  }
  return out;
}

/**
 * Throws unless the record after a change keeps to the field limit and the
 * change to the size limit.
 * @param {Rec} merged
 * @param {Rec} change
 */
export function checkSize(merged, change) {
  if (merged.fields.size > MAX_FIELDS) throw new ConvergoError('too_large', `record ${JSON.stringify(merged.id)} would have more than ${MAX_FIELDS} fields`);
  const n = encodeRecord(change).length;
  if (n > MAX_RECORD_BYTES) throw new ConvergoError('too_large', `change to ${JSON.stringify(change.id)} is ${n} bytes, over ${MAX_RECORD_BYTES}`);
}

/**
 * The document a stored record holds, or null when it does not exist.
 * @param {StoredRecord|null|undefined} s
 * @returns {Doc|null}
 */
export function docOfStored(s) {
  if (!s || !s.doc) return null;
  const d = /** @type {Doc} */ ({ id: s.id });
  for (const k of Object.keys(s.doc)) if (k !== 'id') setOwn(d, k, s.doc[k]);
  return d;
}
