// Liberal in values (docs/protocol.md, section 2): a field value that comes
// in any encoding of the value model is held in the deterministic one
// (normalizeValue, as crdt.NormalizeValue). A module of its own because the
// main entry does not need it: it reads only what this client stored, which
// is deterministic already (record.js storedValue); what reads the wire
// (protocol.js, received.js) loads it with the sync loop or on demand.
// `convergo/cbor` (codec.js) exports it with the rest of the codec.

import { MAX_VALUE_DEPTH, Reader, Writer, checkValueSize, compareBytes, equalBytes, err, fromHalf } from './cbor.js';
import { checkValue, skip, textOK } from './check.js';

/**
 * Returns field value v in deterministic encoding, as crdt.NormalizeValue:
 * v itself when it already is, else its canonical bytes (shortest heads,
 * floats in the shortest exact width, one NaN, map keys sorted bytewise by
 * their canonical encoding). Values may arrive in any encoding of the value
 * model (docs/protocol.md, section 2); what the model does not hold is
 * refused (malformed), as are map keys that are equal once canonical
 * (invalid), nesting beyond MAX_VALUE_DEPTH containers and a result over
 * MAX_VALUE_BYTES (too_large).
 * @param {Uint8Array} v
 * @returns {Uint8Array}
 */
export function normalizeValue(v) {
  try {
    checkValue(v);
    return v;
  } catch (e) {
    // checkValue says "invalid" only for an encoding that is not the
    // deterministic one; anything else is refused as it is.
    if (/** @type {any} */ (e)?.code !== 'invalid') throw e;
  }
  const r = new Reader(v, { canonical: false });
  const w = new Writer(v.length);
  normItem(r, w, 0);
  r.end();
  const out = w.bytes();
  checkValueSize(out.length);
  return out;
}

/**
 * Reads the field value at r as received (record.js readRecord's held for
 * what came from elsewhere): its structure stepped over, however it is
 * encoded, then held in deterministic encoding (normalizeValue).
 * @param {Reader} r
 * @returns {Uint8Array}
 */
export function receivedValue(r) {
  const start = r.off;
  const canonical = r.canonical;
  r.canonical = false; // structure first; normalizeValue checks the value
  try {
    skip(r, 4);
  } finally {
    r.canonical = canonical;
  }
  return normalizeValue(r.b.slice(start, r.off));
}

/**
 * Appends the deterministic encoding of the item at r to w (normalizeValue).
 * @param {Reader} r
 * @param {Writer} w
 * @param {number} depth containers around this item (0 at the top)
 */
function normItem(r, w, depth) {
  const { major, info, arg } = r.head();
  if ((major === 4 || major === 5) && depth >= MAX_VALUE_DEPTH) throw err('malformed', `value nested deeper than ${MAX_VALUE_DEPTH} levels`);
  switch (major) {
    case 0:
    case 1:
      w.head(major, arg);
      return;
    case 2:
    case 3: {
      const n = r.len(arg, 1);
      if (major === 3 && !textOK(r.b, r.off, r.off + n)) throw err('malformed', 'invalid UTF-8 in text string');
      w.head(major, n);
      w.raw(r.b.subarray(r.off, r.off + n));
      r.off += n;
      return;
    }
    case 4: {
      const n = r.count(arg, 1);
      w.head(4, n);
      for (let i = 0; i < n; i++) normItem(r, w, depth + 1);
      return;
    }
    case 5: {
      const n = r.count(arg, 2);
      /** @type {[Uint8Array, Uint8Array][]} */
      const pairs = [];
      for (let i = 0; i < n; i++) {
        const k = new Writer(16);
        normItem(r, k, depth + 1);
        const val = new Writer(16);
        normItem(r, val, depth + 1);
        pairs.push([k.bytes(), val.bytes()]);
      }
      pairs.sort((a, b) => compareBytes(a[0], b[0]));
      w.head(5, n);
      for (let i = 0; i < n; i++) {
        if (i > 0 && equalBytes(pairs[i - 1][0], pairs[i][0])) throw err('invalid', 'duplicate map key in a value');
        w.raw(pairs[i][0]);
        w.raw(pairs[i][1]);
      }
      return;
    }
    case 6:
      throw err('malformed', 'tags are not allowed');
  }
  if (info === 20 || info === 21 || info === 22) {
    w.byte(0xe0 | info);
    return;
  }
  if (info === 25) {
    w.float(fromHalf(/** @type {number} */ (arg)));
    return;
  }
  if (info === 26) {
    w.float(r.view.getFloat32(r.off - 4));
    return;
  }
  if (info === 27) {
    w.float(r.view.getFloat64(r.off - 8));
    return;
  }
  throw err('malformed', `simple value ${arg} is not allowed`);
}
