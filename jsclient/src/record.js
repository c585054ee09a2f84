// Records as last-writer-wins element maps, merged exactly as Go's
// crdt.Record.Merge, and their wire encoding (crdt/wire.go).
//
// A record is {id, deleted, fields} where deleted is a Stamp (ZERO_STAMP
// when never deleted) and fields is a Map from field name to
// {stamp, value}; value holds the canonical CBOR bytes of the field's value,
// or null when the field was unset.

import { MAX_DEPTH, MAX_VALUE_DEPTH, MAX_VALUE_BYTES, Reader, Writer, checkValueSize, compareBytes, decode, encode, encodeWith, isWellFormed, setOwn, utf8Length } from './cbor.js';
import { MODEL } from './model.js';
import { ConvergoError } from './errors.js';
import { MAX_LOGICAL, MAX_WALL, ZERO_STAMP, compareStamps, isZeroStamp, validateReplica } from './hlc.js';

/** @typedef {import('./hlc.js').Stamp} Stamp */
/** @typedef {{stamp: Stamp, value: Uint8Array|null}} Field */
/** @typedef {{id: string, deleted: Stamp, fields: Map<string, Field>}} Record */
/** @typedef {{collection: string, record: Record}} Change */

/** Limits of the data model (model.js MODEL, the same everywhere). */
export const MAX_RECORD_BYTES = MODEL.maxRecordBytes;
export const MAX_FIELDS = MODEL.maxFieldsPerRecord;
export const MAX_ID_BYTES = MODEL.maxIdBytes;
export const MAX_FIELD_NAME_BYTES = MODEL.maxFieldNameBytes;
export const MAX_COLLECTION_BYTES = MODEL.maxCollectionBytes;

const utf8 = new TextEncoder();

/**
 * @param {string} id
 * @returns {Record}
 */
export function emptyRecord(id) {
  return { id, deleted: ZERO_STAMP, fields: new Map() };
}

/**
 * Whether field f beats g: the larger stamp wins; at equal stamps an unset
 * wins over a value, and otherwise the larger value bytes win.
 * @param {Field} f
 * @param {Field} g
 */
export function beats(f, g) {
  const c = compareStamps(f.stamp, g.stamp);
  if (c !== 0) return c > 0;
  if (f.value === null) return g.value !== null;
  if (g.value === null) return false;
  return compareBytes(f.value, g.value) > 0;
}

/**
 * Merges delta into r in place and reports whether r changed: the join of
 * a semilattice (commutative, associative, idempotent). Never modifies
 * delta; field objects are shared (they are immutable).
 * @param {Record} r
 * @param {Record} delta
 * @returns {boolean}
 */
export function mergeInto(r, delta) {
  let changed = false;
  if (!r.id) r.id = delta.id;
  if (compareStamps(delta.deleted, r.deleted) > 0) {
    r.deleted = delta.deleted;
    changed = true;
    for (const [name, f] of r.fields) {
      if (compareStamps(f.stamp, r.deleted) <= 0) r.fields.delete(name);
    }
  }
  for (const [name, f] of delta.fields) {
    if (compareStamps(f.stamp, r.deleted) <= 0) continue; // hidden by the delete
    const cur = r.fields.get(name);
    if (cur !== undefined && !beats(f, cur)) continue;
    r.fields.set(name, f);
    changed = true;
  }
  return changed;
}

/**
 * The visible field values of r as canonical bytes, or null when the record
 * does not exist.
 * @param {Record} r
 * @returns {Map<string, Uint8Array>|null}
 */
export function visibleValues(r) {
  /** @type {Map<string, Uint8Array>|null} */
  let out = null;
  for (const [name, f] of r.fields) {
    if (f.value !== null && compareStamps(f.stamp, r.deleted) > 0) {
      if (out === null) out = new Map();
      out.set(name, f.value);
    }
  }
  return out;
}

/**
 * The largest stamp in r.
 * @param {Record} r
 * @returns {Stamp}
 */
export function maxStamp(r) {
  let m = r.deleted;
  for (const f of r.fields.values()) if (compareStamps(f.stamp, m) > 0) m = f.stamp;
  return m;
}

/**
 * Moves clock past the newest stamp record r holds; a stamp too far ahead
 * is ignored (the clock refuses it, as the server will: keep ours sane).
 * @param {import('./hlc.js').Clock} clock
 * @param {Record} r
 * @param {number} now
 */
export function observeRecord(clock, r, now) {
  const top = maxStamp(r);
  if (top.wall > 0) {
    try {
      clock.observe(top, now);
    } catch {
      /* too far ahead */
    }
  }
}

// ------------------------------------------------------------ validation

/** The control characters (C0, DEL, C1) a name or id may not hold. */
const CONTROL_RE = /[\0-\x1f\x7f-\x9f]/;

/**
 * @param {string} what
 * @param {string} s
 * @param {number} maxBytes
 */
function validateText(what, s, maxBytes) {
  if (typeof s !== 'string') throw new ConvergoError('invalid', `${what} must be a string`);
  const n = utf8Length(s);
  if (n === 0 || n > maxBytes) throw new ConvergoError('invalid', `${what} must be 1 to ${maxBytes} bytes, got ${n}`);
  if (CONTROL_RE.test(s)) throw new ConvergoError('invalid', `${what} ${JSON.stringify(s)} has a control character`);
  if (!isWellFormed(s)) throw new ConvergoError('invalid', `${what} is not well-formed Unicode`);
}

/** @param {string} id */
export function validateId(id) {
  validateText('record id', id, MAX_ID_BYTES);
}

/** @param {string} name */
export function validateFieldName(name) {
  validateText('field name', name, MAX_FIELD_NAME_BYTES);
}

const COLLECTION_RE = new RegExp(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,${MAX_COLLECTION_BYTES - 1}}$`);

/**
 * Checks a collection name: 1 to MAX_COLLECTION_BYTES (128) of ASCII letters, digits, '_', '-',
 * '.', starting with a letter, digit or '_'.
 * @param {string} name
 */
export function validateCollection(name) {
  if (typeof name !== 'string' || !COLLECTION_RE.test(name)) {
    throw new ConvergoError('invalid', `collection name ${JSON.stringify(name)} must match ${COLLECTION_RE}`);
  }
}

// ---------------------------------------------------------------- encoding

/**
 * How a message writes its stamps (docs/protocol.md, "Compact stamps"):
 * index maps replica ids to their places in the message's table, table is
 * what the message carries under key 7 (a push's own replica, index 0, is
 * carried as key 1), base is the wall stamps are written from: key 8, or
 * null (plain), or a live push's session base (not written).
 * @typedef {{index: Map<string, number>, table: string[], base: number|null}} CompactPlan
 */

/**
 * @param {Writer} w
 * @param {Stamp} s
 * @param {Uint8Array|null} value
 * @param {CompactPlan} [plan]
 */
function writeStamp(w, s, value, plan) {
  w.head(4, value === null ? 3 : 4);
  w.head(0, s.wall - (plan?.base ?? 0));
  w.head(0, s.logical);
  const i = plan?.index.get(s.replica);
  if (i === undefined) w.text(s.replica);
  else w.head(0, i);
  if (value !== null) w.raw(value);
}

/**
 * Orders field names by their encoded form: shorter UTF-8 first, then
 * bytewise.
 * @param {[Uint8Array, string]} a
 * @param {[Uint8Array, string]} b
 */
function byEncodedName(a, b) {
  if (a[0].length !== b[0].length) return a[0].length - b[0].length;
  return compareBytes(a[0], b[0]);
}

/**
 * Appends the deterministic encoding of r: {1: id, 2: deleted?, 3: fields?},
 * its stamps as plan writes them (none: plain).
 * @param {Writer} w
 * @param {Record} r
 * @param {CompactPlan} [plan]
 */
export function writeRecord(w, r, plan) {
  const del = !isZeroStamp(r.deleted);
  w.head(5, 1 + (del ? 1 : 0) + (r.fields.size > 0 ? 1 : 0));
  w.byte(0x01);
  w.text(r.id);
  if (del) {
    w.byte(0x02);
    writeStamp(w, r.deleted, null, plan);
  }
  if (r.fields.size > 0) {
    w.byte(0x03);
    w.head(5, r.fields.size);
    /** @type {[Uint8Array, string][]} */
    const names = [];
    for (const name of r.fields.keys()) names.push([utf8.encode(name), name]);
    names.sort(byEncodedName);
    for (const [enc, name] of names) {
      const f = /** @type {Field} */ (r.fields.get(name));
      w.head(3, enc.length);
      w.raw(enc);
      writeStamp(w, f.stamp, f.value, plan);
    }
  }
}

/**
 * @param {Record} r
 * @returns {Uint8Array}
 */
export function encodeRecord(r) {
  return encodeWith((w) => writeRecord(w, r));
}

/**
 * Appends {1: collection, 2: record}.
 * @param {Writer} w
 * @param {Change} c
 * @param {CompactPlan} [plan]
 */
export function writeChange(w, c, plan) {
  w.byte(0xa2);
  w.byte(0x01);
  w.text(c.collection);
  w.byte(0x02);
  writeRecord(w, c.record, plan);
}

/**
 * @param {Change} c
 * @returns {Uint8Array}
 */
export function encodeChange(c) {
  return encodeWith((w) => writeChange(w, c));
}

// ---------------------------------------------------------------- decoding

/**
 * What a message's compact stamps are read against (docs/protocol.md,
 * "Compact stamps"; protocol.js compactContext makes it): wall(w) is the
 * wall of a stamp written w (its base added), replica(i) the replica id
 * its table's index i names (a push's replica first); extra counts how
 * many bytes the record being read grows by in plain form (readRecord
 * sets it to 0, both add to it).
 * @typedef {{wall: (w: number) => number, replica: (i: number|bigint) => string, extra: number}} CompactContext
 */

/**
 * Reads a stamp array's three items (after the array head).
 * @param {Reader} r
 * @param {CompactContext} [cx]
 * @returns {Stamp}
 */
function readStampItems(r, cx) {
  const wh = r.head();
  if (wh.major === 1) throw new ConvergoError('invalid', 'negative wall time');
  if (wh.major !== 0) throw new ConvergoError('malformed', 'wall time is not an integer');
  let wall = wh.arg;
  if (cx && typeof wall === 'number') wall = cx.wall(wall);
  if (typeof wall === 'bigint' || wall > MAX_WALL) throw new ConvergoError('invalid', `stamp wall time ${wall} out of range`);
  const lh = r.head();
  if (lh.major !== 0 || typeof lh.arg === 'bigint' || lh.arg > MAX_LOGICAL) {
    throw new ConvergoError('malformed', 'logical counter is not a 32-bit unsigned integer');
  }
  const rh = r.head();
  let replica;
  if (rh.major === 0 && cx) {
    replica = cx.replica(rh.arg);
  } else {
    if (rh.major !== 3) throw new ConvergoError('malformed', 'replica id is not a text string');
    replica = r.textBody(rh.arg);
  }
  const s = { wall, logical: lh.arg, replica };
  // The wall is in range: a non-negative integer, MAX_WALL at most (checked
  // above; MAX_WALL is a safe integer: test/hlc.test.js). A zero stamp has
  // no replica id to check.
  if (!isZeroStamp(s)) validateReplica(replica);
  return s;
}

/**
 * Reads a field: [wall, logical, replica] or [wall, logical, replica, value].
 * @param {Reader} r
 * @param {CompactContext|undefined} cx
 * @param {(r: Reader) => Uint8Array} held reads the value at r as held (readRecord)
 * @returns {Field}
 */
function readField(r, cx, held) {
  const canonical = r.canonical;
  // The field's array head and stamp are in deterministic encoding, or
  // invalid, in every record however lenient its reader is about the
  // envelope around them (docs/protocol.md, section 2): crdt reads them so.
  r.canonical = true;
  /** @type {{major: number, arg: number|bigint}} */
  let h;
  /** @type {Stamp} */
  let stamp;
  try {
    h = r.head();
    if (h.major !== 4 || (h.arg !== 3 && h.arg !== 4)) throw new ConvergoError('malformed', 'field must be an array of 3 or 4 items');
    stamp = readStampItems(r, cx);
  } finally {
    r.canonical = canonical;
  }
  if (isZeroStamp(stamp)) throw new ConvergoError('invalid', 'field has a zero stamp');
  /** @type {Uint8Array|null} */
  let value = null;
  if (h.arg === 4) value = held(r);
  return { stamp, value };
}

/**
 * Reads the field value at r as this client stores it: in deterministic
 * encoding already (it normalized what it received, and encodes what it
 * writes deterministically), checked as it is decoded (Reader.item with
 * canonical set: the UTF-8, map key order, float forms, shortest heads and
 * nesting crdt.CanonicalValue checks, with checkValue's refusals; and, as
 * reading the value back refuses them anyway, map keys that decode to one
 * JS key, such as 1 and 1.0) and kept as is. A stored value in another
 * encoding is refused (invalid): only corruption makes one. The records
 * and outbox entries this client stored are read with it, so the main entry
 * needs neither the normalizer nor the check without decoding (check.js):
 * they come with what reads the wire.
 * @param {Reader} r
 * @returns {Uint8Array}
 */
export function storedValue(r) {
  const start = r.off;
  const canonical = r.canonical;
  r.canonical = true;
  try {
    // Start deep enough that at most MAX_VALUE_DEPTH containers fit under MAX_DEPTH (as checkValue).
    r.item(MAX_DEPTH - MAX_VALUE_DEPTH);
  } finally {
    r.canonical = canonical;
  }
  checkValueSize(r.off - start);
  return r.b.slice(start, r.off);
}

/**
 * Reads and validates a record, as crdt's Record.UnmarshalCBOR; envelopes,
 * names and stamps are strict. held reads a field value at the reader and
 * returns it as held: for what came over the wire normalize.js
 * receivedValue (liberal in values: any encoding of the value model, held
 * in the deterministic one, docs/protocol.md, section 2), for what this
 * client stored storedValue. cx, in a message
 * with compact stamps, is what they are read against.
 * @param {Reader} r
 * @param {CompactContext|undefined} cx
 * @param {(r: Reader) => Uint8Array} held
 * @returns {Record}
 */
export function readRecord(r, cx, held) {
  const start = r.off;
  if (cx) cx.extra = 0;
  const n = r.mapHead();
  /** @type {string|undefined} */
  let id;
  /** @type {Stamp} */
  let deleted = ZERO_STAMP;
  /** @type {Map<string, Field>} */
  const fields = new Map();
  let seen = 0; // bit k set: key k was read
  for (let i = 0; i < n; i++) {
    const k = r.head();
    if (k.major !== 0) throw new ConvergoError('malformed', 'record key is not an integer');
    if (k.arg === 1 || k.arg === 2 || k.arg === 3) {
      if (seen & (1 << k.arg)) throw new ConvergoError('malformed', 'duplicate map key in record');
      seen |= 1 << k.arg;
    }
    if (k.arg === 1) {
      id = r.text();
    } else if (k.arg === 2) {
      const h = r.head();
      if (h.major !== 4 || h.arg !== 3) throw new ConvergoError('malformed', 'delete stamp must be an array of 3 items');
      deleted = readStampItems(r, cx);
      if (isZeroStamp(deleted)) throw new ConvergoError('invalid', 'record has an explicit zero delete stamp');
    } else if (k.arg === 3) {
      const nf = r.mapHead();
      for (let j = 0; j < nf; j++) {
        const name = r.text();
        if (fields.has(name)) throw new ConvergoError('malformed', 'duplicate field name');
        fields.set(name, readField(r, cx, held));
      }
    } else {
      throw new ConvergoError('malformed', `unknown record key ${k.arg}`);
    }
  }
  const size = r.off - start + (cx ? cx.extra : 0); // as stored: plain
  if (size > MAX_RECORD_BYTES) throw new ConvergoError('too_large', `record of ${size} bytes exceeds ${MAX_RECORD_BYTES}`);
  if (id === undefined) id = '';
  validateId(id);
  if (fields.size > MAX_FIELDS) throw new ConvergoError('too_large', `record ${JSON.stringify(id)} has ${fields.size} fields, more than ${MAX_FIELDS}`);
  for (const name of fields.keys()) validateFieldName(name);
  return { id, deleted, fields };
}

// ------------------------------------------------------- values <-> fields

/**
 * Decodes a field's canonical bytes to a JS value.
 * @param {Uint8Array} bytes
 */
export function decodeValue(bytes) {
  return decode(bytes, { canonical: true });
}

/**
 * The visible values of r decoded, or null when r does not exist; a field
 * r lacks (absent, or hidden by its delete: an unset field stays unset)
 * reads as its default, if defaults has one.
 * @param {Record} r
 * @param {Map<string, unknown>} [defaults]
 */
export function docOf(r, defaults) {
  const vals = visibleValues(r);
  if (vals === null) return null;
  /** @type {{[k: string]: unknown}} */
  const doc = {};
  for (const [k, v] of vals) setOwn(doc, k, decodeValue(v));
  if (defaults) {
    for (const [k, v] of defaults) {
      const f = r.fields.get(k);
      if (f === undefined || compareStamps(f.stamp, r.deleted) <= 0) setOwn(doc, k, structuredClone(v));
    }
  }
  return doc;
}

/**
 * Encodes a field value of a document written (values.js fieldsOf),
 * checking its name and the value limit.
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
 * Throws unless the record after a change keeps to the field limit and the
 * change to the size limit (Collection checks every write with it).
 * @param {Record} merged
 * @param {Record} change
 */
export function checkSize(merged, change) {
  if (merged.fields.size > MAX_FIELDS) throw new ConvergoError('too_large', `record ${JSON.stringify(merged.id)} would have more than ${MAX_FIELDS} fields`);
  const n = encodeRecord(change).length;
  if (n > MAX_RECORD_BYTES) throw new ConvergoError('too_large', `change to ${JSON.stringify(change.id)} is ${n} bytes, over ${MAX_RECORD_BYTES}`);
}
