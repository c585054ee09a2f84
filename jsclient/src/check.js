// The canonical check of CBOR without building values (as
// crdt.CanonicalValue): what checks a field value that came from elsewhere
// before it is held (normalize.js), steps over the items of a wire message
// (protocol.js, normalize.js receivedValue), and `convergo/cbor`'s
// checkValue and Reader.check (codec.js). Not in the main entry, which reads
// only what this client stored, in deterministic encoding, and checks each
// stored value as it decodes it (record.js storedValue: Reader.item with
// canonical set makes the same checks with the same refusals).

import { MAX_DEPTH, MAX_VALUE_DEPTH, Reader, checkValueSize, compareRanges, err, utf8dec } from './cbor.js';

/**
 * The head of an array at r: its length (Reader.count's bounds). Only the
 * wire's messages hold arrays outside values (protocol.js, received.js);
 * `convergo/cbor`'s Reader has it as a method (codec.js).
 * @param {Reader} r
 * @returns {number}
 */
export function arrayHead(r) {
  const { major, arg } = r.head();
  if (major !== 4) throw err('malformed', 'expected an array');
  return r.count(arg, 1);
}

/**
 * Checks the data item at r without building its value, as
 * crdt.CanonicalValue does: the hot path when records arrive by the
 * thousand. With full false it only steps over the item, checking its
 * structure (heads, lengths, nesting, no tags, allowed simple values);
 * the caller then checks the bytes it spans (see normalize.js
 * receivedValue, which holds them with normalizeValue).
 * @param {Reader} r
 * @param {number} [depth]
 * @param {boolean} [full] also UTF-8, map key order and float forms
 * @returns {void}
 */
export function check(r, depth = 1, full = true) {
  if (depth > MAX_DEPTH) throw err('malformed', `nested deeper than ${MAX_DEPTH} levels`);
  const start = r.off;
  const { major, info, arg } = r.head();
  switch (major) {
    case 0:
    case 1:
      return;
    case 2:
    case 3: {
      const n = r.len(arg, 1);
      if (full && major === 3 && !textOK(r.b, r.off, r.off + n)) throw err('malformed', 'invalid UTF-8 in text string');
      r.off += n;
      return;
    }
    case 4: {
      const n = r.count(arg, 1);
      for (let i = 0; i < n; i++) check(r, depth + 1, full);
      return;
    }
    case 5: {
      const n = r.count(arg, 2);
      let p0 = -1;
      let p1 = -1;
      for (let i = 0; i < n; i++) {
        const k0 = r.off;
        check(r, depth + 1, full);
        const k1 = r.off;
        if (full && p0 >= 0) {
          const c = compareRanges(r.b, p0, p1, r.b, k0, k1);
          if (c === 0) throw err('malformed', 'duplicate map key');
          if (c > 0) throw err('invalid', 'map keys are not in deterministic order');
        }
        p0 = k0;
        p1 = k1;
        check(r, depth + 1, full);
      }
      return;
    }
    case 6:
      throw err('malformed', 'tags are not allowed');
  }
  // Major type 7: item's checks (false, true and null, the floats' forms,
  // no other simple value), read again from the head; a float's form is
  // a byte-level check.
  if (full || info < 25 || info > 27) {
    r.off = start;
    r.item(depth);
  }
}

/**
 * Steps over the data item at r, checking only its structure: check
 * without its byte-level checks.
 * @param {Reader} r
 * @param {number} [depth]
 */
export function skip(r, depth = 1) {
  check(r, depth, false);
}

/**
 * Checks that v is one canonical field value, as crdt.CanonicalValue.
 * @param {Uint8Array} v
 */
export function checkValue(v) {
  if (v.length === 0) throw err('malformed', 'empty value');
  checkValueSize(v.length);
  const r = new Reader(v, { canonical: true });
  // Start deep enough that at most MAX_VALUE_DEPTH containers fit under MAX_DEPTH.
  check(r, MAX_DEPTH - MAX_VALUE_DEPTH);
  r.end();
}

/**
 * Whether b[start..end) is well-formed UTF-8 (Unicode's table 3-7: no
 * overlongs, no surrogates, nothing above U+10FFFF).
 * @param {Uint8Array} b
 * @param {number} start
 * @param {number} end
 */
export function validUTF8(b, start, end) {
  for (let i = start; i < end; ) {
    const c = b[i++];
    if (c < 0x80) continue;
    // The continuation bytes a lead byte announces, and the least code point it may hold.
    const n = c < 0xe0 ? 1 : c < 0xf0 ? 2 : 3;
    if (c < 0xc2 || c > 0xf4 || i + n > end) return false;
    let cp = c & (0x3f >> n);
    for (let k = 0; k < n; k++) {
      const d = b[i++];
      if ((d & 0xc0) !== 0x80) return false;
      cp = (cp << 6) | (d & 0x3f);
    }
    if (cp < (n === 1 ? 0x80 : n === 2 ? 0x800 : 0x10000) || cp > 0x10ffff || (cp >= 0xd800 && cp < 0xe000)) return false;
  }
  return true;
}

/**
 * Whether b[start..end) is well-formed UTF-8: checked in JS for short
 * strings, by the native decoder for long ones (faster despite the string
 * it builds).
 * @param {Uint8Array} b
 * @param {number} start
 * @param {number} end
 */
export function textOK(b, start, end) {
  if (end - start < 256) return validUTF8(b, start, end);
  try {
    utf8dec.decode(b.subarray(start, end));
    return true;
  } catch {
    return false;
  }
}
