// The codec on its own: properties over random values, differential tests
// against cbor-x, and the decode limits.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Decoder, Encoder } from 'cbor-x';
import { Float, MAX_DEPTH, MAX_ITEMS, MAX_VALUE_BYTES, Reader, decode, encode, fromHalf, isWellFormed, toHalfExact } from '../src/cbor.js';
import { checkValue, validUTF8 } from '../src/check.js';
import { storedValue } from '../src/record.js';

const hex = (/** @type {Uint8Array} */ b) => Buffer.from(b).toString('hex');
const unhex = (/** @type {string} */ s) => new Uint8Array(Buffer.from(s, 'hex'));

/** A small seeded PRNG (mulberry32) so a failure names its seed. */
function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * A random value of the kinds the client stores.
 * @param {() => number} r
 * @param {number} depth
 * @returns {any}
 */
function genValue(r, depth = 0) {
  const pick = (/** @type {any[]} */ xs) => xs[Math.floor(r() * xs.length)];
  const kind = Math.floor(r() * (depth > 3 ? 8 : 11));
  switch (kind) {
    case 0:
      return pick([null, true, false]);
    case 1: {
      // Integers around every head-size boundary.
      const edges = [0, 1, 23, 24, 255, 256, 65535, 65536, 2 ** 32 - 1, 2 ** 32, Number.MAX_SAFE_INTEGER];
      const n = pick(edges) + pick([-1, 0, 0, 1]);
      const v = Math.min(n, Number.MAX_SAFE_INTEGER);
      return r() < 0.5 ? v : -v;
    }
    case 2:
      return Math.floor((r() - 0.5) * 2 ** Math.floor(r() * 53));
    case 3: {
      // Bigints beyond the safe range, within 64 bits plus sign.
      const mag = (BigInt(Math.floor(r() * 2 ** 32)) << 32n) | BigInt(Math.floor(r() * 2 ** 32));
      const v = mag < BigInt(Number.MAX_SAFE_INTEGER) + 1n ? mag + (1n << 53n) : mag;
      return r() < 0.5 ? v : -v;
    }
    case 4: {
      // Floats: halves, float32s, doubles, specials.
      const c = Math.floor(r() * 6);
      if (c === 0) return pick([NaN, Infinity, -Infinity, -0, 0.5, -1.5, 65504, 5.960464477539063e-8, 1e300, 1.1]);
      if (c === 1) return fromHalf(Math.floor(r() * 0x10000) & 0x7bff);
      if (c === 2) return Math.fround((r() - 0.5) * 1e10);
      if (c === 3) return (r() - 0.5) * 10 ** Math.floor(r() * 40 - 20);
      if (c === 4) return (r() - 0.5) * 1e-310; // subnormal doubles
      return Math.floor(r() * 1000) + 0.25;
    }
    case 5:
      return pick(['', 'a', 'milk', 'héllo', '✓ done', '😀 emoji', 'x'.repeat(Math.floor(r() * 300)), 'ünï' + r()]);
    case 6: {
      const n = Math.floor(r() * 40);
      const b = new Uint8Array(n);
      for (let i = 0; i < n; i++) b[i] = Math.floor(r() * 256);
      return b;
    }
    case 7:
      return String.fromCodePoint(...Array.from({ length: Math.floor(r() * 8) }, () => Math.floor(r() * 0xd7ff)));
    case 8: {
      const n = Math.floor(r() * 5);
      return Array.from({ length: n }, () => genValue(r, depth + 1));
    }
    default: {
      const n = Math.floor(r() * 6);
      /** @type {Record<string, any>} */
      const o = {};
      for (let i = 0; i < n; i++) o[pick(['a', 'b', 'aa', 'ab', 'z', '', 'é', 'title', 'x'.repeat(30), String(i)])] = genValue(r, depth + 1);
      return o;
    }
  }
}

/**
 * The value cbor-x and ours should agree on: safe bigints as numbers.
 * @param {any} v
 * @param {{dropNegZero?: boolean}} [o]
 * @returns {any}
 */
function norm(v, o = {}) {
  if (typeof v === 'bigint') return v >= -BigInt(Number.MAX_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
  if (o.dropNegZero && Object.is(v, -0)) return 0;
  if (v instanceof Uint8Array) return Array.from(v);
  if (Buffer.isBuffer(v)) return Array.from(v);
  if (Array.isArray(v)) return v.map((e) => norm(e, o));
  if (v instanceof Map) return norm(Object.fromEntries(v), o);
  if (v !== null && typeof v === 'object') {
    /** @type {Record<string, any>} */
    const out = {};
    for (const k of Object.keys(v).sort()) out[k] = norm(v[k], o);
    return out;
  }
  return v;
}

const SEEDS = Number(process.env.CBOR_SEEDS ?? 300);
const BASE = Number(process.env.CBOR_SEED ?? Date.now() % 1e9);

/**
 * Runs prop over SEEDS random values; a failure names the seed.
 * @param {(v: any) => void} prop
 */
function forAll(prop) {
  for (let i = 0; i < SEEDS; i++) {
    const seed = BASE + i;
    const v = genValue(rng(seed));
    try {
      prop(v);
    } catch (e) {
      /** @type {any} */ (e).message = `seed ${seed} (rerun: CBOR_SEED=${seed} CBOR_SEEDS=1): ${/** @type {any} */ (e).message}`;
      throw e;
    }
  }
}

test('encoding is canonical and round-trips', () => {
  forAll((v) => {
    const b = encode(v);
    checkValue(b.length > 128 << 10 ? new Uint8Array([0]) : b);
    const back = decode(b);
    assert.deepEqual(norm(back), norm(v));
    assert.equal(hex(encode(back)), hex(b), 're-encoding');
  });
});

test('map key order does not depend on insertion order', () => {
  forAll((v) => {
    if (v === null || typeof v !== 'object' || Array.isArray(v) || v instanceof Uint8Array) return;
    const keys = Object.keys(v).reverse();
    /** @type {Record<string, any>} */
    const rev = {};
    for (const k of keys) rev[k] = v[k];
    assert.equal(hex(encode(rev)), hex(encode(v)));
    assert.equal(hex(encode(new Map(keys.map((k) => [k, v[k]])))), hex(encode(v)));
  });
});

const xenc = new Encoder({ useRecords: false, mapsAsObjects: true, tagUint8Array: false, largeBigIntToFloat: false });
const xdec = new Decoder({ useRecords: false, mapsAsObjects: true, int64AsType: 'bigint' });

test('differential: cbor-x decodes what we encode to the same value', () => {
  forAll((v) => {
    const got = xdec.decode(encode(v));
    assert.deepEqual(norm(got), norm(v));
  });
});

test('differential: we decode what cbor-x encodes to the same value', () => {
  forAll((v) => {
    const b = new Uint8Array(xenc.encode(v));
    // cbor-x is not deterministic (insertion-ordered keys, float64s, long
    // heads), so decode leniently and compare values; cbor-x writes -0 as 0.
    const got = decode(b, { canonical: false });
    assert.deepEqual(norm(got), norm(v, { dropNegZero: true }));
    // Our re-encoding is canonical and agrees with encoding the original.
    assert.equal(hex(encode(got)), hex(encode(norm2(v))));
  });
});

/**
 * The original as cbor-x transports it (-0 becomes 0).
 * @param {any} v
 * @returns {any}
 */
function norm2(v) {
  if (Object.is(v, -0)) return 0;
  if (Array.isArray(v)) return v.map(norm2);
  if (v !== null && typeof v === 'object' && !(v instanceof Uint8Array)) {
    /** @type {Record<string, any>} */
    const out = {};
    for (const k of Object.keys(v)) out[k] = norm2(v[k]);
    return out;
  }
  return v;
}

test('float16 conversion is exact', () => {
  for (let h = 0; h < 0x10000; h++) {
    const x = fromHalf(h);
    if (Number.isNaN(x)) continue;
    assert.equal(toHalfExact(x), h, `half 0x${h.toString(16)}`);
    // The doubles next to a half are none (Math.log2 may be one off near a power of two).
    if (x !== 0 && Number.isFinite(x)) for (const y of [x * (1 + 2 ** -52), x * (1 - 2 ** -53)]) assert.equal(toHalfExact(y), null, `${y}`);
  }
  assert.equal(toHalfExact(2 ** -14 * (1 - 2 ** -10)), 0x3ff); // the largest subnormal
  assert.equal(toHalfExact(1 + 2 ** -11), null); // needs 11 mantissa bits
  assert.equal(toHalfExact(65520), null);
  assert.equal(toHalfExact(2 ** -25), null);
  assert.equal(hex(encode(new Float(1))), 'f93c00');
  assert.equal(hex(encode(-0)), 'f98000');
  assert.equal(hex(encode(NaN)), 'f97e00');
  assert.equal(hex(encode(2 ** 53)), 'fa5a000000');
  assert.equal(hex(encode(Math.fround(0.1))), 'fa3dcccccd');
});

test('decode reads 8-byte arguments as numbers up to 2^53 - 1 and bigints beyond', () => {
  assert.equal(decode(unhex('1b001fffffffffffff')), Number.MAX_SAFE_INTEGER);
  assert.equal(decode(unhex('1b0020000000000000')), 2n ** 53n);
  assert.equal(decode(unhex('1b0020000000000001')), 2n ** 53n + 1n);
  assert.equal(decode(unhex('1bffffffffffffffff')), 2n ** 64n - 1n);
  assert.equal(decode(unhex('3b001ffffffffffffe')), -Number.MAX_SAFE_INTEGER);
  assert.equal(decode(unhex('3bffffffffffffffff')), -(2n ** 64n));
  assert.equal(decode(unhex('1a80000000')), 2 ** 31);
  assert.equal(decode(unhex('1affffffff')), 2 ** 32 - 1);
});

test('decode limits and refusals', async (t) => {
  const nest = (/** @type {number} */ n) => unhex('81'.repeat(n - 1) + '00');
  /** @type {[string, Uint8Array, string|null, object?][]} */
  const cases = [
    ['depth at the limit', nest(MAX_DEPTH), null],
    ['depth over the limit', nest(MAX_DEPTH + 1), 'malformed'],
    ['array of max items', unhex('994000' + '00'.repeat(MAX_ITEMS)), null],
    ['array over max items', unhex('994001' + '00'.repeat(MAX_ITEMS + 1)), 'malformed'],
    ['length past the end', unhex('5a7fffffff00'), 'malformed'],
    ['truncated', unhex('1a0001'), 'malformed'],
    ['indefinite array', unhex('9f00ff'), 'malformed'],
    ['indefinite string', unhex('7f6161ff'), 'malformed'],
    ['tag', unhex('c11a00000000'), 'malformed'],
    ['undefined', unhex('f7'), 'malformed'],
    ['simple 16', unhex('f0'), 'malformed'],
    ['simple in next byte', unhex('f820'), 'malformed'],
    ['break', unhex('ff'), 'malformed'],
    ['reserved info', unhex('1c'), 'malformed'],
    ['invalid utf-8', unhex('62c328'), 'malformed'],
    ['utf-8 surrogate', unhex('63eda080'), 'malformed'],
    ['duplicate key', unhex('a2616101616102'), 'malformed'],
    ['duplicate key, lenient', unhex('a2616101616102'), 'malformed', { canonical: false }],
    ['duplicate int key written two ways, lenient', unhex('a2010218010203'), 'malformed', { canonical: false }],
    ['duplicate key 1 and 1.0 (one key in JS), lenient', unhex('a201f93c0002'), 'malformed', { canonical: false }],
    ['duplicate true key, lenient', unhex('a2f501f502'), 'malformed', { canonical: false }],
    ['duplicate null key, lenient', unhex('a2f601f602'), 'malformed', { canonical: false }],
    ['duplicate byte string key, lenient', unhex('a24101014101'), 'malformed', { canonical: false }],
    ['duplicate array key, lenient', unhex('a28201020182010202'), 'malformed', { canonical: false }],
    ['keys false, true, null, h\'01\', [1, 2] apart, lenient', unhex('a5f401f502f60341010482010205'), null, { canonical: false }],
    ['a byte string key and an array key of the same items apart, lenient', unhex('a24201020182010202'), null, { canonical: false }],
    ['unsorted keys', unhex('a2616201616102'), 'invalid'],
    ['unsorted keys, lenient', unhex('a2616201616102'), null, { canonical: false }],
    ['long head', unhex('1817'), 'invalid'],
    ['long head, lenient', unhex('1817'), null, { canonical: false }],
    ['long head of 2 bytes', unhex('1900ff'), 'invalid'],
    ['head of 2 bytes', unhex('190100'), null],
    ['long head of 4 bytes', unhex('1a0000ffff'), 'invalid'],
    ['head of 4 bytes', unhex('1a00010000'), null],
    ['long head of 8 bytes', unhex('1b00000000ffffffff'), 'invalid'],
    ['head of 8 bytes', unhex('1b0000000100000000'), null],
    ['long length of 8 bytes', unhex('5b000000000000000100'), 'invalid'],
    ['float64 that fits float32', unhex('fb3ff8000000000000'), 'invalid'],
    ['float32 that fits float16', unhex('fa3fc00000'), 'invalid'],
    ['non-canonical NaN', unhex('f97e01'), 'invalid'],
    ['float64 NaN', unhex('fb7ff8000000000000'), 'invalid'],
    ['trailing bytes', unhex('0000'), 'malformed'],
    ['empty', new Uint8Array(0), 'malformed'],
    ['over the size bound', new Uint8Array(10), 'too_large', { maxBytes: 5 }],
  ];
  for (const [name, b, code, opts] of cases) {
    await t.test(name, () => {
      if (code === null) {
        decode(b, opts);
        return;
      }
      assert.throws(
        () => decode(b, opts),
        (e) => /** @type {any} */ (e).code === code,
      );
    });
  }
});

test('encode refuses what has no CBOR form', () => {
  const bad = [undefined, () => 1, Symbol('x'), new Date(0), new Set([1]), new Uint16Array(2), '\ud800', 2n ** 64n, -(2n ** 64n) - 1n];
  for (const v of bad) {
    assert.throws(
      () => encode(v),
      (e) => /** @type {any} */ (e).code === 'invalid',
      String(typeof v === 'symbol' ? 'symbol' : v),
    );
  }
  let deep = /** @type {any} */ (0);
  for (let i = 0; i < MAX_DEPTH; i++) deep = [deep];
  assert.throws(() => encode(deep), (e) => /** @type {any} */ (e).code === 'invalid');
  // Undefined object members are left out, as JSON does.
  assert.equal(hex(encode({ a: 1, b: undefined })), 'a1616101');
  // "__proto__" is an ordinary key both ways.
  const o = decode(encode(JSON.parse('{"__proto__": 1}')));
  assert.equal(Object.getPrototypeOf(o), Object.prototype);
  assert.deepEqual(Object.keys(o), ['__proto__']);
  // Maps with non-text keys decode to Map.
  assert.deepEqual(decode(encode(new Map([[1, 'a'], ['b', 2]]))), new Map([[1, 'a'], ['b', 2]]));
});

test('isWellFormed without String.prototype.isWellFormed (older browsers) agrees with it', () => {
  const strings = ['', 'a', 'é', '\ufffd', '😀', 'a😀b', '\ud800', '\udc00', 'a\ud800', '\udc00a', '\ud800\ud800\udc00', '\udc00\ud800', '\ud83d\ude00\ude00'];
  const r = rng(BASE + 2);
  for (let i = 0; i < 2000; i++) {
    let s = '';
    for (let j = Math.floor(r() * 6); j > 0; j--) s += String.fromCharCode(r() < 0.5 ? 0xd7f0 + Math.floor(r() * 0x820) : Math.floor(r() * 0x10000));
    strings.push(s);
  }
  const want = strings.map((s) => /** @type {any} */ (s).isWellFormed());
  const native = Object.getOwnPropertyDescriptor(String.prototype, 'isWellFormed');
  assert.ok(native, 'this Node has String.prototype.isWellFormed');
  delete (/** @type {any} */ (String.prototype).isWellFormed);
  try {
    strings.forEach((s, i) => assert.equal(isWellFormed(s), want[i], JSON.stringify(s)));
  } finally {
    Object.defineProperty(String.prototype, 'isWellFormed', native);
  }
});

test('the UTF-8 validator agrees with TextDecoder', () => {
  const td = new TextDecoder('utf-8', { fatal: true });
  const r = rng(BASE);
  const interesting = [0x00, 0x7f, 0x80, 0xbf, 0xc0, 0xc1, 0xc2, 0xdf, 0xe0, 0xed, 0xef, 0xf0, 0xf4, 0xf5, 0xff, 0x9f, 0xa0, 0x8f, 0x90];
  for (let i = 0; i < 20000; i++) {
    const n = 1 + Math.floor(r() * 5);
    const b = new Uint8Array(n);
    for (let j = 0; j < n; j++) b[j] = r() < 0.7 ? interesting[Math.floor(r() * interesting.length)] : Math.floor(r() * 256);
    let want = true;
    try {
      td.decode(b);
    } catch {
      want = false;
    }
    assert.equal(validUTF8(b, 0, n), want, `bytes ${hex(b)}`);
  }
  // Every sequence of two bytes; every lead of three or four bytes with
  // every second byte, the rest at the edges of a continuation byte.
  /** @param {number[]} bytes */
  const agree = (bytes) => {
    const s = Uint8Array.from(bytes);
    let want = true;
    try {
      td.decode(s);
    } catch {
      want = false;
    }
    assert.equal(validUTF8(s, 0, s.length), want, `bytes ${hex(s)}`);
  };
  for (let x = 0; x < 1 << 16; x++) agree([x >> 8, x & 255]);
  const edges = [0x7f, 0x80, 0xbf, 0xc0];
  for (let lead = 0xe0; lead < 0x100; lead++) {
    for (let second = 0; second < 0x100; second++) {
      for (const e of edges) {
        agree([lead, second, e]);
        for (const f of edges) agree([lead, second, e, f]);
      }
    }
  }
});

test('checking a value without decoding it agrees with decoding it', () => {
  const r = rng(BASE + 1);
  /** @param {Uint8Array} b */
  const outcome = (b, /** @type {(b: Uint8Array) => void} */ f) => {
    try {
      f(b);
      return 'ok';
    } catch (e) {
      return /** @type {any} */ (e).code;
    }
  };
  for (let i = 0; i < SEEDS * 5; i++) {
    const b = encode(genValue(rng(BASE + 17 * i)));
    // Mutate a byte or two, sometimes: both must refuse alike.
    if (r() < 0.8) b[Math.floor(r() * b.length)] = Math.floor(r() * 256);
    if (r() < 0.3) b[Math.floor(r() * b.length)] = Math.floor(r() * 256);
    const viaCheck = outcome(b, checkValue);
    const viaDecode = outcome(b, (x) => {
      if (x.length > 128 << 10) throw Object.assign(new Error(), { code: 'too_large' });
      decode(x, { canonical: true });
    });
    assert.equal(viaCheck, viaDecode, `bytes ${hex(b).slice(0, 200)}`);
  }
  // Every head of major type 7 (simple values, floats of each width, with
  // and without their argument bytes), alone and as a map's value.
  for (let ib = 0xe0; ib <= 0xff; ib++) {
    for (const arg of ['', '00', '18', '7e00', '3c00', '7c01', '3fc00000', '7fc00000', '3ff8000000000000', '3ff0000000000001']) {
      for (const b of [unhex(ib.toString(16) + arg), unhex('a16161' + ib.toString(16) + arg)]) {
        const viaDecode = outcome(b, (x) => decode(x, { canonical: true }));
        assert.equal(outcome(b, checkValue), viaDecode, `bytes ${hex(b)}`);
        const msg = (/** @type {(x: Uint8Array) => void} */ f) => {
          try {
            f(b);
            return '';
          } catch (e) {
            return /** @type {any} */ (e).message;
          }
        };
        assert.equal(msg(checkValue), msg((x) => decode(x, { canonical: true })), `message for bytes ${hex(b)}`);
      }
    }
  }
});

test('a stored value is checked as it is decoded: storedValue refuses what checkValue refuses, with the same code and message', () => {
  const r = rng(BASE + 2);
  /**
   * What f says of b: 'ok', or the error's code and message.
   * @param {Uint8Array} b
   * @param {(b: Uint8Array) => void} f
   */
  const outcome = (b, f) => {
    try {
      f(b);
      return 'ok';
    } catch (e) {
      return `${/** @type {any} */ (e).code}: ${/** @type {any} */ (e).message}`;
    }
  };
  // As readRecord reads a field value: at a lenient reader, which
  // storedValue leaves past the value it returns, lenient still.
  const stored = (/** @type {Uint8Array} */ b) => {
    const rd = new Reader(b, { canonical: false });
    try {
      assert.deepEqual(storedValue(rd), b);
      assert.equal(rd.off, b.length);
    } finally {
      assert.equal(rd.canonical, false);
    }
  };
  /** @type {Uint8Array[]} */
  const inputs = [];
  for (let i = 0; i < SEEDS * 5; i++) {
    const b = encode(genValue(rng(BASE + 19 * i)));
    inputs.push(b.slice());
    // Mutate a byte or two, most of the time.
    if (r() < 0.8) b[Math.floor(r() * b.length)] = Math.floor(r() * 256);
    if (r() < 0.3) b[Math.floor(r() * b.length)] = Math.floor(r() * 256);
    inputs.push(b);
  }
  // Long heads, a float wider than it needs, keys out of order or twice,
  // bad UTF-8, a tag, an indefinite length, a simple value not allowed, a
  // NaN not canonical.
  for (const h of ['1817', '190017', 'fa3fc00000', 'fb3ff8000000000000', 'a2616201616101', 'a2616101616101', '62c328', '62eda080', 'c101', '9f01ff', 'f0', 'f97e01']) inputs.push(unhex(h));
  for (const b of inputs) {
    const want = outcome(b, checkValue);
    // Bytes after the item are the record's next, not the value's.
    if (/bytes after the data item/.test(want)) continue;
    assert.equal(outcome(b, stored), want, `bytes ${hex(b).slice(0, 200)}`);
  }
  // Nesting: the same bound as checkValue's (MAX_VALUE_DEPTH containers).
  for (const k of [16, 17, 23]) {
    /** @type {unknown} */
    let v = 0;
    for (let i = 0; i < k; i++) v = i % 2 ? { k: v } : [v];
    const b = encode(v);
    assert.equal(outcome(b, stored), outcome(b, checkValue), `${k} levels`);
  }
  // Over the value bound, in deterministic encoding.
  const big = encode(new Uint8Array(MAX_VALUE_BYTES));
  assert.equal(outcome(big, stored), outcome(big, checkValue));
  assert.match(outcome(big, stored), /^too_large: /);
});

test('field values nest at most MAX_VALUE_DEPTH containers, as crdt.MaxValueNestedLevels', () => {
  for (const [k, ok] of [[0, true], [16, true], [17, false], [23, false]]) {
    /** @type {unknown} */
    let v = 0;
    for (let i = 0; i < k; i++) v = i % 2 ? { k: v } : [v];
    const bytes = encode(v);
    if (ok) assert.doesNotThrow(() => checkValue(bytes), `${k} levels`);
    else assert.throws(() => checkValue(bytes), (/** @type {any} */ e) => e.code === 'malformed', `${k} levels`);
  }
});
