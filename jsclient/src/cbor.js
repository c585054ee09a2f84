// CBOR in RFC 8949 core deterministic encoding, byte for byte what the Go
// side (package crdt, fxamacker/cbor CoreDetEncOptions) produces, and a
// decoder that treats its input as hostile with the limits of crdt's DecMode.
//
// Encoding: integers in their shortest head; floats in the shortest of
// float16/float32/float64 that holds the value exactly (NaN is 0xf97e00);
// map keys sorted by the bytewise order of their encodings (for keys of one
// type that is: shorter first, then bytewise); definite lengths only.
//
// JavaScript values map to CBOR as follows: null, booleans, strings,
// Uint8Array (byte strings), arrays, plain objects (maps with text keys) and
// Map (maps with any keys) as themselves; a number that is a safe integer
// (and not -0) is a CBOR integer, any other number is a float; a bigint is a
// CBOR integer (it must fit in 64 bits plus sign). `new Float(x)` forces a
// float. Decoding gives numbers for integers in the safe range and bigints
// beyond it, plain objects for maps whose keys are all text and Map
// otherwise.

import { LOCAL_DEFAULTS, MODEL } from './model.js';
import { ConvergoError } from './errors.js';

/** Decode limits, the same as package crdt's (model.js MODEL): levels of nesting in one message. */
export const MAX_DEPTH = MODEL.maxNestedLevels;
/** Nesting bound of containers inside one field value (crdt.MaxValueNestedLevels): leaves room for the envelopes a value travels in. */
export const MAX_VALUE_DEPTH = MODEL.maxValueNestedLevels;
/** Items of one array or pairs of one map. */
export const MAX_ITEMS = MODEL.maxContainerItems;
/** Encoded bytes of one field value. */
export const MAX_VALUE_BYTES = MODEL.maxValueBytes;
/** decode()'s default bound on its input: a server's default max live message. */
export const MAX_MESSAGE_BYTES = LOCAL_DEFAULTS.maxMessageBytes;

const MAX_SAFE = Number.MAX_SAFE_INTEGER;
const TWO64 = 1n << 64n;

/** A number that encodes as a CBOR float even when it is integral. */
export class Float {
  /** @param {number} value */
  constructor(value) {
    this.value = value;
  }
}

/**
 * A codec error (also normalize.js's).
 * @param {'malformed'|'invalid'|'too_large'} code
 * @param {string} msg
 */
export function err(code, msg) {
  return new ConvergoError(code, `cbor: ${msg}`);
}

const utf8enc = new TextEncoder();
/** Strict UTF-8 (also check.js's). */
export const utf8dec = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

// ---------------------------------------------------------------- encoding

/** A growable byte buffer that appends CBOR. */
export class Writer {
  constructor(size = 256) {
    this.buf = new Uint8Array(size);
    this.view = new DataView(this.buf.buffer);
    this.len = 0;
  }

  /** @param {number} n */
  ensure(n) {
    if (this.len + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.len + n) size *= 2;
    const b = new Uint8Array(size);
    b.set(this.buf.subarray(0, this.len));
    this.buf = b;
    this.view = new DataView(b.buffer);
  }

  /** @param {number} b */
  byte(b) {
    this.ensure(1);
    this.buf[this.len++] = b;
  }

  /** @param {Uint8Array} bytes */
  raw(bytes) {
    this.ensure(bytes.length);
    this.buf.set(bytes, this.len);
    this.len += bytes.length;
  }

  /**
   * Appends a head with major type major and argument n (a non-negative
   * safe integer or bigint below 2^64) in its shortest form.
   * @param {number} major
   * @param {number|bigint} n
   */
  head(major, n) {
    const m = major << 5;
    if (typeof n === 'bigint') {
      if (n <= BigInt(MAX_SAFE)) {
        n = Number(n);
      } else {
        this.ensure(9);
        this.buf[this.len++] = m | 27;
        this.view.setBigUint64(this.len, n);
        this.len += 8;
        return;
      }
    }
    this.ensure(9);
    if (n < 24) {
      this.buf[this.len++] = m | n;
    } else if (n < 0x100) {
      this.buf[this.len++] = m | 24;
      this.buf[this.len++] = n;
    } else if (n < 0x10000) {
      this.buf[this.len++] = m | 25;
      this.view.setUint16(this.len, n);
      this.len += 2;
    } else if (n < 0x100000000) {
      this.buf[this.len++] = m | 26;
      this.view.setUint32(this.len, n);
      this.len += 4;
    } else {
      this.buf[this.len++] = m | 27;
      this.view.setUint32(this.len, Math.floor(n / 0x100000000));
      this.view.setUint32(this.len + 4, n >>> 0);
      this.len += 8;
    }
  }

  /** @param {string} s */
  text(s) {
    // Short ASCII strings are the common case (keys, ids): skip TextEncoder.
    if (s.length < 64 && !/[^\0-\x7f]/.test(s)) {
      this.head(3, s.length);
      this.ensure(s.length);
      for (let i = 0; i < s.length; i++) this.buf[this.len++] = s.charCodeAt(i);
      return;
    }
    if (!isWellFormed(s)) throw err('invalid', 'string is not well-formed UTF-16 (lone surrogate)');
    const b = utf8enc.encode(s);
    this.head(3, b.length);
    this.raw(b);
  }

  /** @param {number} x */
  float(x) {
    this.ensure(9);
    // NaN is the one canonical NaN, float16 0x7e00.
    const h = Number.isNaN(x) ? 0x7e00 : toHalfExact(x);
    if (h !== null) {
      this.buf[this.len++] = 0xf9;
      this.view.setUint16(this.len, h);
      this.len += 2;
    } else if (Math.fround(x) === x) {
      this.buf[this.len++] = 0xfa;
      this.view.setFloat32(this.len, x);
      this.len += 4;
    } else {
      this.buf[this.len++] = 0xfb;
      this.view.setFloat64(this.len, x);
      this.len += 8;
    }
  }

  /**
   * Appends v in deterministic encoding.
   * @param {unknown} v
   * @param {number} [depth]
   */
  value(v, depth = 1) {
    if (depth > MAX_DEPTH) throw err('invalid', `value nested deeper than ${MAX_DEPTH} levels`);
    switch (typeof v) {
      case 'number':
        if (Number.isSafeInteger(v) && !Object.is(v, -0)) {
          if (v >= 0) this.head(0, v);
          else this.head(1, -1 - v);
        } else {
          this.float(v);
        }
        return;
      case 'bigint':
        if (v >= TWO64 || v < -TWO64) throw err('invalid', `integer ${v} does not fit in 64 bits`);
        if (v >= 0n) this.head(0, v);
        else this.head(1, -1n - v);
        return;
      case 'string':
        this.text(v);
        return;
      case 'boolean':
        this.byte(v ? 0xf5 : 0xf4);
        return;
      case 'object':
        break;
      default:
        throw err('invalid', `cannot encode a ${typeof v}`);
    }
    if (v === null) {
      this.byte(0xf6);
      return;
    }
    if (v instanceof Uint8Array) {
      this.head(2, v.length);
      this.raw(v);
      return;
    }
    if (Array.isArray(v)) {
      this.head(4, v.length);
      for (const e of v) this.value(e, depth + 1);
      return;
    }
    if (v instanceof Float) {
      if (typeof v.value !== 'number') throw err('invalid', 'Float holds a non-number');
      this.float(v.value);
      return;
    }
    /** @type {[Uint8Array, unknown][]} */
    let pairs;
    if (v instanceof Map) {
      pairs = [];
      for (const [k, e] of v) pairs.push([encodeKey(k, depth + 1), e]);
    } else {
      const proto = Object.getPrototypeOf(v);
      if (proto !== Object.prototype && proto !== null) {
        throw err('invalid', `cannot encode a ${proto?.constructor?.name ?? 'object'}: use plain objects, arrays, Map or Uint8Array`);
      }
      pairs = [];
      for (const k of Object.keys(v)) {
        const e = /** @type {any} */ (v)[k];
        if (e === undefined) continue; // like JSON: undefined members are absent
        pairs.push([encodeKey(k, depth + 1), e]);
      }
    }
    pairs.sort((a, b) => compareBytes(a[0], b[0]));
    this.head(5, pairs.length);
    for (let i = 0; i < pairs.length; i++) {
      if (i > 0 && compareBytes(pairs[i - 1][0], pairs[i][0]) === 0) throw err('invalid', 'duplicate map key');
      this.raw(pairs[i][0]);
      this.value(pairs[i][1], depth + 1);
    }
  }

  /** @returns {Uint8Array<ArrayBuffer>} the bytes written (a copy). */
  bytes() {
    return this.buf.slice(0, this.len);
  }
}

/**
 * @param {unknown} k
 * @param {number} depth
 */
function encodeKey(k, depth) {
  const w = new Writer(typeof k === 'string' ? k.length + 9 : 16);
  w.value(k, depth);
  return w.bytes();
}

/**
 * Encodes v in deterministic CBOR.
 * @param {unknown} v
 * @returns {Uint8Array<ArrayBuffer>}
 */
export function encode(v) {
  return encodeWith((w) => w.value(v));
}

const SCRATCH_BYTES = 1024;
/** A scratch buffer grown past this by a large item is let go. */
const SCRATCH_KEEP = 64 << 10;
let scratch = new Writer(SCRATCH_BYTES);

/**
 * The bytes write appends, written into one buffer for every call and
 * copied out: a first sync encodes a record per record pulled, a batch
 * write a record, a change and every value per record written; a buffer
 * each was a tenth of the encoding time, and garbage. write must not
 * call encodeWith.
 * @param {(w: Writer) => void} write
 * @returns {Uint8Array<ArrayBuffer>}
 */
export function encodeWith(write) {
  const w = scratch;
  w.len = 0;
  write(w);
  const out = w.bytes();
  if (w.buf.length > SCRATCH_KEEP) scratch = new Writer(SCRATCH_BYTES);
  return out;
}

/**
 * Returns the IEEE 754 half-precision bits of x when x is exactly
 * representable as a float16 (including subnormals, zeros and infinities),
 * else null.
 * @param {number} x
 * @returns {number|null}
 */
export function toHalfExact(x) {
  const sign = x < 0 || Object.is(x, -0) ? 0x8000 : 0;
  const a = Math.abs(x);
  if (a === Infinity) return sign | 0x7c00;
  if (a > 65504) return null;
  // a = m * 2^(e-10) with e its binary exponent (Math.log2 may be one off
  // near a power of two: corrected), at least -14: below 2^-14 (zero too) a
  // is subnormal, m < 1024, and its exponent bits are 0.
  let e = Math.max(Math.floor(Math.log2(a)), -14);
  if (2 ** e > a && e > -14) e--;
  else if (2 ** (e + 1) <= a) e++;
  const m = a * 2 ** (10 - e); // exact: scaling by a power of two
  return Number.isInteger(m) ? sign | (((e + 14) << 10) + m) : null;
}

/**
 * @param {number} h half-precision bits
 * @returns {number}
 */
export function fromHalf(h) {
  const sign = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return sign * m * 2 ** -24;
  if (e === 0x1f) return m === 0 ? sign * Infinity : NaN;
  return sign * (1024 + m) * 2 ** (e - 25);
}

/**
 * Compares byte arrays lexicographically.
 * @param {Uint8Array} a
 * @param {Uint8Array} b
 */
export function compareBytes(a, b) {
  return compareRanges(a, 0, a.length, b, 0, b.length);
}

/**
 * @param {Uint8Array|null|undefined} a
 * @param {Uint8Array|null|undefined} b
 */
export function equalBytes(a, b) {
  if (a == null || b == null) return a == b;
  return a.length === b.length && compareBytes(a, b) === 0;
}

/**
 * The length of s in UTF-8, without encoding it. Lone surrogates count as
 * the 3 bytes of U+FFFD, as TextEncoder writes them.
 * @param {string} s
 */
export function utf8Length(s) {
  let n = s.length;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) continue;
    if (c < 0x800) n += 1;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length && (s.charCodeAt(i + 1) & 0xfc00) === 0xdc00) {
      n += 2; // a pair: 2 UTF-16 units, 4 bytes
      i++;
    } else n += 2;
  }
  return n;
}

/**
 * Whether s is well-formed UTF-16 (no lone surrogate).
 * @param {string} s
 */
export function isWellFormed(s) {
  // String.prototype.isWellFormed is Node 20+/recent browsers; fall back.
  if (typeof (/** @type {any} */ (s).isWellFormed) === 'function') return /** @type {any} */ (s).isWellFormed();
  // A lone surrogate comes back from UTF-8 as U+FFFD.
  return utf8dec.decode(utf8enc.encode(s)) === s;
}

// ---------------------------------------------------------------- decoding

/**
 * A CBOR reader over untrusted bytes. With canonical set it also refuses
 * anything that is not in deterministic encoding (errors with code
 * "invalid", as crdt.CanonicalValue does); structural problems are
 * "malformed".
 */
export class Reader {
  /**
   * @param {Uint8Array} bytes
   * @param {{canonical?: boolean}} [opts]
   */
  constructor(bytes, opts = {}) {
    if (!(bytes instanceof Uint8Array)) throw err('malformed', 'input is not a Uint8Array');
    this.b = bytes;
    this.off = 0;
    /** @type {DataView|null} made on first use: most inputs have no floats */
    this.dv = null;
    this.canonical = opts.canonical ?? true;
  }

  /** @returns {DataView} */
  get view() {
    this.dv ??= new DataView(this.b.buffer, this.b.byteOffset, this.b.byteLength);
    return this.dv;
  }

  /** Fails unless every byte was read. */
  end() {
    if (this.off !== this.b.length) throw err('malformed', `${this.b.length - this.off} bytes after the data item`);
  }

  /**
   * Reads a head. For major type 7 the argument is the raw bits.
   * @returns {{major: number, info: number, arg: number|bigint}}
   */
  head() {
    if (this.off >= this.b.length) throw err('malformed', 'unexpected end of data');
    const ib = this.b[this.off++];
    const major = ib >> 5;
    const info = ib & 0x1f;
    if (info < 24) return { major, info, arg: info };
    if (info > 27) throw err('malformed', `indefinite length or reserved head 0x${ib.toString(16)} at byte ${this.off - 1}`);
    const size = 1 << (info - 24);
    if (this.b.length - this.off < size) throw err('malformed', 'unexpected end of data');
    // Exact up to 2^53 - 1; a larger one (at least 2^53 here) is read again as a bigint.
    /** @type {number|bigint} */
    let arg = 0;
    for (let i = 0; i < size; i++) arg = arg * 256 + this.b[this.off + i];
    if (arg > MAX_SAFE) arg = this.view.getBigUint64(this.off);
    this.off += size;
    // Shortest: an argument of n bytes is 24 and up for n = 1, 2^(4n) and up for n = 2, 4, 8.
    if (major !== 7 && this.canonical && arg < (size === 1 ? 24 : 2 ** (4 * size))) throw err('invalid', 'value is not in deterministic CBOR encoding (long head)');
    return { major, info, arg };
  }

  /**
   * Reads a length (of a string, array or map) that must fit the input.
   * @param {number|bigint} arg
   * @param {number} minBytesEach the least bytes each element takes
   */
  len(arg, minBytesEach) {
    if (typeof arg === 'bigint' || arg * minBytesEach > this.b.length - this.off) {
      throw err('malformed', `length ${arg} runs past the end of the data`);
    }
    return arg;
  }

  /**
   * The length of an array (each 1) or the pairs of a map (each 2): at
   * most MAX_ITEMS, and fitting the input (len).
   * @param {number|bigint} arg
   * @param {1|2} each
   */
  count(arg, each) {
    if (arg > MAX_ITEMS) throw err('malformed', each === 1 ? `array of ${arg} items exceeds ${MAX_ITEMS}` : `map of ${arg} pairs exceeds ${MAX_ITEMS}`);
    return this.len(arg, each);
  }

  /** @returns {string} a text string */
  text() {
    const { major, arg } = this.head();
    if (major !== 3) throw err('malformed', 'expected a text string');
    return this.textBody(arg);
  }

  /** @param {number|bigint} arg */
  textBody(arg) {
    const n = this.len(arg, 1);
    const s = this.b.subarray(this.off, this.off + n);
    this.off += n;
    // ASCII fast path for the short strings (ids, names, replicas) that
    // dominate records.
    if (n < 32) {
      let out = '';
      let i = 0;
      for (; i < n; i++) {
        const c = s[i];
        if (c > 0x7f) break;
        out += String.fromCharCode(c);
      }
      if (i === n) return out;
    }
    try {
      return utf8dec.decode(s);
    } catch {
      throw err('malformed', 'invalid UTF-8 in text string');
    }
  }


  /** @returns {number} the number of pairs of a map */
  mapHead() {
    const { major, arg } = this.head();
    if (major !== 5) throw err('malformed', 'expected a map');
    return this.count(arg, 2);
  }



  /**
   * Reads one data item as a JS value.
   * @param {number} [depth] nesting level of this item (1 for the top)
   * @returns {unknown}
   */
  item(depth = 1) {
    if (depth > MAX_DEPTH) throw err('malformed', `nested deeper than ${MAX_DEPTH} levels`);
    const start = this.off;
    const { major, info, arg } = this.head();
    switch (major) {
      case 0:
        return arg;
      case 1:
        if (typeof arg === 'number' && arg < MAX_SAFE) return -1 - arg;
        return -1n - BigInt(arg);
      case 2: {
        const n = this.len(arg, 1);
        const out = this.b.slice(this.off, this.off + n);
        this.off += n;
        return out;
      }
      case 3:
        return this.textBody(arg);
      case 4: {
        const n = this.count(arg, 1);
        const out = new Array(n);
        for (let i = 0; i < n; i++) out[i] = this.item(depth + 1);
        return out;
      }
      case 5:
        return this.map(arg, depth);
      case 6:
        throw err('malformed', 'tags are not allowed');
    }
    // Major type 7: false, true, null and floats.
    switch (info) {
      case 20:
        return false;
      case 21:
        return true;
      case 22:
        return null;
      case 25: {
        const h = /** @type {number} */ (arg);
        if (this.canonical && (h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0 && h !== 0x7e00) {
          throw err('invalid', 'non-canonical NaN');
        }
        return fromHalf(h);
      }
      case 26: {
        const f = this.view.getFloat32(this.off - 4);
        if (this.canonical && (Number.isNaN(f) || toHalfExact(f) !== null)) throw err('invalid', 'float32 that fits a float16');
        return f;
      }
      case 27: {
        const f = this.view.getFloat64(this.off - 8);
        if (this.canonical && (!Number.isFinite(f) || Math.fround(f) === f)) throw err('invalid', 'float64 that fits a float32');
        return f;
      }
    }
    this.off = start;
    throw err('malformed', `simple value ${info === 24 ? arg : info} is not allowed`);
  }

  /**
   * @param {number|bigint} arg
   * @param {number} depth
   */
  map(arg, depth) {
    const n = this.count(arg, 2);
    /** @type {Record<string, unknown>} */
    const obj = {};
    /** @type {Map<unknown, unknown>|null} */
    let map = null;
    const seen = new Set();
    /** @type {Uint8Array|null} */
    let prev = null;
    for (let i = 0; i < n; i++) {
      const ks = this.off;
      const k = this.item(depth + 1);
      const kb = this.b.subarray(ks, this.off);
      if (this.canonical && prev !== null) {
        const c = compareBytes(prev, kb);
        if (c === 0) throw err('malformed', 'duplicate map key');
        if (c > 0) throw err('invalid', 'map keys are not in deterministic order');
      }
      prev = kb;
      const id = keyIdentity(k, kb);
      if (seen.has(id)) throw err('malformed', 'duplicate map key');
      seen.add(id);
      const v = this.item(depth + 1);
      if (map === null && typeof k !== 'string') {
        map = new Map(Object.entries(obj));
      }
      if (map !== null) map.set(k, v);
      else setOwn(obj, /** @type {string} */ (k), v);
    }
    return map ?? obj;
  }
}

/**
 * A key's identity for duplicate detection that does not depend on the
 * encoding being canonical: a string or a number by its value (so 1 and
 * 1.0, one key in JS, are one), any other key by its bytes (false, true and
 * null have one encoding each; the reader refuses the others).
 * @param {unknown} k
 * @param {Uint8Array} kb
 */
function keyIdentity(k, kb) {
  return typeof k === 'string' ? 's' + k : typeof k === 'number' || typeof k === 'bigint' ? 'n' + k : 'x' + kb.join();
}

/**
 * Sets an own enumerable property, also for the key "__proto__".
 * @param {Record<string, unknown>} obj
 * @param {string} k
 * @param {unknown} v
 */
export function setOwn(obj, k, v) {
  if (k === '__proto__') Object.defineProperty(obj, k, { value: v, enumerable: true, writable: true, configurable: true });
  else obj[k] = v;
}

/**
 * Decodes exactly one data item.
 * @param {Uint8Array} bytes
 * @param {{canonical?: boolean, maxBytes?: number}} [opts] canonical
 *   (default true) also refuses non-deterministic encodings.
 * @returns {any}
 */
export function decode(bytes, opts = {}) {
  const max = opts.maxBytes ?? MAX_MESSAGE_BYTES;
  if (bytes.length > max) throw err('too_large', `${bytes.length} bytes exceed ${max}`);
  if (bytes.length === 0) throw err('malformed', 'empty input');
  const r = new Reader(bytes, opts);
  const v = r.item();
  r.end();
  return v;
}

/**
 * Refuses a field value of n bytes, more than MAX_VALUE_BYTES (too_large):
 * checkValue's, normalizeValue's and storedValue's bound.
 * @param {number} n
 */
export function checkValueSize(n) {
  if (n > MAX_VALUE_BYTES) throw err('too_large', `value of ${n} bytes exceeds ${MAX_VALUE_BYTES}`);
}

/**
 * Compares a[a0..a1) with b[b0..b1) bytewise: compareBytes, and check.js's
 * map keys, which are ranges of one input.
 * @param {Uint8Array} a
 * @param {number} a0
 * @param {number} a1
 * @param {Uint8Array} b
 * @param {number} b0
 * @param {number} b1
 */
export function compareRanges(a, a0, a1, b, b0, b1) {
  const n = Math.min(a1 - a0, b1 - b0);
  for (let i = 0; i < n; i++) {
    if (a[a0 + i] !== b[b0 + i]) return a[a0 + i] < b[b0 + i] ? -1 : 1;
  }
  return a1 - a0 === b1 - b0 ? 0 : a1 - a0 < b1 - b0 ? -1 : 1;
}
