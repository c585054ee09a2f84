// The shared Go<->JS vectors (crdt/testdata/vectors.json): the codec must
// produce Go's bytes, decode them back, refuse what Go refuses with the same
// error class, and merge, tick and order exactly as Go does.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { Float, checkValue, decode, encode, normalizeValue } from '../src/codec.js';
import { Clock, compareStamps } from '../src/hlc.js';
import { encodeRecord, emptyRecord } from '../src/record.js';
import { decodeChanges, decodeRecord } from '../src/received.js';
import { decodeStored } from '../src/db.js';
import { ZERO_STAMP } from '../src/hlc.js';
import { exists, merge } from '../src/parts.js';
import { decodeEntry } from '../src/change.js';
import { parsePullAnswer } from '../src/protocol.js';

const vectors = JSON.parse(readFileSync(new URL('../../crdt/testdata/vectors.json', import.meta.url), 'utf8'));

const hex = (/** @type {Uint8Array} */ b) => Buffer.from(b).toString('hex');
const unhex = (/** @type {string} */ s) => new Uint8Array(Buffer.from(s, 'hex'));

/**
 * Turns a vector's JSON description into the JS value the codec encodes.
 * @param {any} j
 * @returns {any}
 */
export function fromJSON(j) {
  if (Array.isArray(j)) return j.map(fromJSON);
  if (j !== null && typeof j === 'object') {
    const keys = Object.keys(j);
    if (keys.length === 1 && keys[0].startsWith('$')) {
      const v = j[keys[0]];
      switch (keys[0]) {
        case '$int':
          return BigInt(v);
        case '$bytes':
          return unhex(v);
        case '$float':
          return new Float(typeof v === 'number' ? v : v === '-0' ? -0 : Number(v));
      }
    }
    const out = {};
    for (const k of keys) out[k] = fromJSON(j[k]);
    return out;
  }
  return j;
}

/**
 * The JS value decoding should give for a vector (Float unwrapped).
 * @param {any} v
 * @returns {any}
 */
function plain(v) {
  if (v instanceof Float) return v.value;
  if (Array.isArray(v)) return v.map(plain);
  if (v !== null && typeof v === 'object' && !(v instanceof Uint8Array)) {
    const out = {};
    for (const k of Object.keys(v)) out[k] = plain(v[k]);
    return out;
  }
  return v;
}

/** @param {any} j */
function stampOf(j) {
  return { wall: j[0], logical: j[1], replica: j[2] };
}

/** @param {any} j */
function recordOf(j) {
  const r = emptyRecord(j.id);
  if (j.deleted) r.deleted = stampOf(j.deleted);
  for (const [name, f] of Object.entries(j.fields ?? {})) {
    const fd = /** @type {any} */ (f);
    r.fields.set(name, { stamp: stampOf(fd.stamp), value: 'value' in fd ? encode(fromJSON(fd.value)) : null });
  }
  return r;
}

test('values encode to Go bytes and decode back', async (t) => {
  for (const v of vectors.values) {
    await t.test(v.name, () => {
      const value = fromJSON(v.json);
      assert.equal(hex(encode(value)), v.hex, 'encoding');
      const back = decode(unhex(v.hex));
      const want = plain(value);
      if (typeof want === 'number' && Number.isNaN(want)) assert.ok(Number.isNaN(back));
      else assert.deepEqual(back, want);
      checkValue(unhex(v.hex));
      if (!(value instanceof Float)) assert.equal(hex(encode(back)), v.hex, 're-encoding the decoded value');
    });
  }
});

test('stamp order', () => {
  for (const o of vectors.stamp_order) {
    assert.equal(compareStamps(stampOf(o.a), stampOf(o.b)), o.cmp, JSON.stringify(o));
    assert.equal(compareStamps(stampOf(o.b), stampOf(o.a)), -o.cmp || 0, JSON.stringify(o));
  }
});

test('clocks', async (t) => {
  for (const cv of vectors.clocks) {
    await t.test(cv.name, () => {
      const c = new Clock({ replica: cv.replica, maxDrift: cv.max_drift_ms });
      c.restore({ wall: cv.start[0], logical: cv.start[1] });
      for (const [i, s] of cv.steps.entries()) {
        let code = '';
        try {
          if (s.op === 'now') {
            const st = c.now(s.wall);
            assert.deepEqual([st.wall, st.logical, st.replica], [...s.want, cv.replica]);
          } else {
            c.observe({ wall: s.remote[0], logical: s.remote[1] }, s.wall);
          }
        } catch (e) {
          code = /** @type {any} */ (e).code;
        }
        assert.equal(code, s.error ?? '', `step ${i} error`);
        assert.deepEqual([c.last.wall, c.last.logical], s.want, `step ${i} state`);
      }
    });
  }
});

test('records encode to Go bytes', async (t) => {
  for (const rv of vectors.records) {
    await t.test(rv.name, () => {
      const r = recordOf(rv.record);
      assert.equal(hex(encodeRecord(r)), rv.hex);
      const back = decodeRecord(unhex(rv.hex));
      assert.equal(hex(encodeRecord(back)), rv.hex);
    });
  }
});

test('merges match Go', async (t) => {
  for (const m of vectors.merges) {
    await t.test(m.name, () => {
      const a = decodeRecord(unhex(m.a_hex));
      const b = decodeRecord(unhex(m.b_hex));
      assert.equal(hex(encodeRecord(a)), hex(encodeRecord(recordOf(m.a))), 'description of a');
      const [ab, changed] = merge(a, b);
      assert.equal(hex(encodeRecord(ab)), m.want_hex, 'a+b');
      assert.equal(changed, m.changed, 'changed');
      assert.equal(exists(ab), m.exists, 'exists');
      const [ba] = merge(b, a);
      assert.equal(hex(encodeRecord(ba)), m.want_hex, 'b+a');
      const [abb, again] = merge(ab, b);
      assert.equal(hex(encodeRecord(abb)), m.want_hex, 'idempotent');
      assert.equal(again, false);
      // Merging into an empty record normalizes, as Go's Normalize does.
      const [n] = merge({ ...emptyRecord(''), deleted: ZERO_STAMP }, ab);
      assert.equal(hex(encodeRecord(n)), m.want_hex, 'normalized');
    });
  }
});

test('invalid inputs are refused like Go refuses them', async (t) => {
  for (const iv of vectors.invalid) {
    await t.test(iv.name, () => {
      const b = unhex(iv.hex);
      const run = () => {
        if (iv.kind === 'record') decodeRecord(b);
        else if (iv.kind === 'changes') decodeChanges(b);
        else checkValue(b);
      };
      assert.throws(run, (e) => {
        assert.equal(/** @type {any} */ (e).code, iv.error, /** @type {any} */ (e).message);
        return true;
      });
    });
  }
});

test('envelope keys of other versions are ignored, and keys of other types refused, as Go reads them', async (t) => {
  assert.ok(vectors.envelopes.length > 0, 'the vectors have an envelopes section');
  for (const ev of vectors.envelopes) {
    await t.test(ev.name, () => {
      const read = () => parsePullAnswer(unhex(ev.hex));
      if (ev.error === '') {
        const page = read();
        assert.equal(page.records.length, 0);
        assert.equal(hex(page.next), '010203');
        return;
      }
      assert.throws(read, (e) => {
        assert.equal(/** @type {any} */ (e).code, ev.error, /** @type {any} */ (e).message);
        return true;
      });
    });
  }
});

test('values in any encoding are held canonically, as Go normalizes them', async (t) => {
  assert.ok(vectors.normalized.length > 0, 'the vectors have a normalized section');
  for (const v of vectors.normalized) {
    await t.test(v.name, () => {
      const rec = decodeRecord(unhex(v.hex));
      assert.equal(hex(encodeRecord(rec)), v.want_hex);
      for (const f of rec.fields.values()) if (f.value) checkValue(f.value); // canonical now
      // The canonical form is a fixed point: it decodes to itself.
      assert.equal(hex(encodeRecord(decodeRecord(unhex(v.want_hex)))), v.want_hex);
    });
    await t.test(`${v.name}: read back as stored, it is corrupt`, () => {
      // This client stores values deterministic (it normalizes what it
      // receives): what it reads back from IndexedDB in another encoding
      // was corrupted there, and is refused rather than normalized.
      const id = decodeRecord(unhex(v.want_hex)).id;
      assert.equal(hex(encodeRecord(decodeStored(unhex(v.want_hex), id))), v.want_hex);
      assert.throws(() => decodeStored(unhex(v.hex), id), (e) => /** @type {any} */ (e).code === 'database');
      const entry = (/** @type {string} */ h) => Uint8Array.of(0xa2, 0x01, 0x61, 0x63, 0x02, ...unhex(h)); // {1: "c", 2: record}
      assert.equal(hex(encodeRecord(decodeEntry(entry(v.want_hex)))), v.want_hex);
      assert.throws(() => decodeEntry(entry(v.hex)), (e) => /** @type {any} */ (e).code === 'invalid');
    });
  }
  await t.test('normalizeValue returns canonical input itself', () => {
    const b = encode({ a: 1, b: [0.5, 'x'] });
    assert.equal(normalizeValue(b), b);
  });
});
