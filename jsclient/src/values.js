// Documents as the app sees them and fields as records store them: checking
// a document, turning it into fields (each encoded within the value limit by
// record.js's encodeField) and a stored record back into a document. The
// limits are declared in cbor.js and record.js, which also checks a change
// against the record limits (checkSize); Collection applies them on every
// write.

import { setOwn } from './cbor.js';
import { ConvergoError } from './errors.js';
import { encodeField } from './record.js';

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
