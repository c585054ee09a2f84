// The shared compact-stamp vectors (crdt/testdata/compact.json,
// docs/protocol.md "Compact stamps"): the client writes Go's bytes for a
// push, reads pages and changes messages in both forms to the records Go
// encoded, and refuses what Go refuses with the same code.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { compactContext, encodeLivePush, encodePush, parsePullAnswer, parseServerMessage } from '../src/protocol.js';
import { emptyRecord, encodeChange, encodeRecord } from '../src/record.js';
import { Reader, Writer, decode, encode } from '../src/codec.js';
import { receivedValue } from '../src/normalize.js';
import { ConvergoError } from '../src/errors.js';
import { readChange } from '../src/change.js';

const vectors = JSON.parse(readFileSync(new URL('../../crdt/testdata/compact.json', import.meta.url), 'utf8'));

const hex = (/** @type {Uint8Array} */ b) => Buffer.from(b).toString('hex');
const unhex = (/** @type {string} */ s) => new Uint8Array(Buffer.from(s, 'hex'));

/**
 * The records of a parsed message, in plain form (hex).
 * @param {import('../src/record.js').Record[]} rs
 */
const plain = (rs) => rs.map((r) => hex(encodeRecord(r)));

/**
 * @param {any} v
 * @param {Uint8Array} bytes
 */
function parse(v, bytes) {
  if (v.kind === 'pull') return parsePullAnswer(bytes);
  const m = /** @type {any} */ (parseServerMessage(bytes));
  assert.equal(m.type, 'changes');
  return m;
}

/**
 * A live push read as the server reads it (docs/protocol.md, "Pushing over a live session"):
 * the changes against the table [replica, ...key 7] and the walls from key
 * 8 or the session base; each change, or the error refusing it alone. A
 * message refused whole throws.
 * @param {Uint8Array} bytes
 * @param {string} replica
 * @param {number} session
 */
function readLivePush(bytes, replica, session) {
  const m = decode(bytes, { canonical: false });
  if (m.get(0) !== 'push') throw new Error('not a push');
  if (m.has(1) || m.has(9)) throw new ConvergoError('malformed', 'a live push names no replica');
  const base = m.get(8);
  if (base !== undefined && typeof base !== 'number') throw new ConvergoError('malformed', 'base wall out of range');
  const cx = compactContext([replica, ...(m.get(7) ?? [])], base ?? session);
  const r = new Reader(encode(m.get(2)), { canonical: false });
  /** @type {(string|ConvergoError)[]} */
  const out = [];
  for (let i = 0, n = r.arrayHead(); i < n; i++) {
    const start = r.off;
    try {
      out.push(hex(encodeChange(readChange(r, cx, receivedValue))));
    } catch (e) {
      out.push(/** @type {ConvergoError} */ (e));
      r.off = start;
      r.skip();
    }
  }
  return out;
}

for (const v of vectors.messages) {
  test(`compact: ${v.kind}: ${v.name}`, () => {
    if (v.kind === 'push') {
      assert.equal(hex(encodePush(v.replica, v.changes.map(unhex), undefined, v.prefix)), v.compact_hex, 'push encoding');
      return;
    }
    if (v.kind === 'live push') {
      const changes = (v.changes ?? []).map(unhex);
      const versions = v.versions ? new Map(Object.entries(v.versions)) : undefined;
      assert.equal(hex(/** @type {Uint8Array} */ (encodeLivePush(v.replica, changes, versions, v.base))), v.compact_hex, 'live push encoding');
      assert.deepEqual(readLivePush(unhex(v.compact_hex), v.replica, v.base), v.changes ?? [], 'read back');
      return;
    }
    for (const form of [v.plain_hex, v.compact_hex]) {
      const page = parse(v, unhex(form));
      assert.deepEqual(plain(page.records), v.records ?? []);
      assert.equal(hex(page.next), v.next ?? '');
      assert.equal(page.more, v.more ?? false);
      if (v.kind === 'changes') assert.equal(page.collection, v.collection);
    }
  });
}

for (const v of vectors.invalid) {
  if (v.kind === 'push') continue; // the server's side: Go's test
  if (v.kind === 'live push') {
    // The server's side too; read here as the test server reads them.
    test(`compact: refuses ${v.kind}: ${v.name}`, () => {
      const code = (/** @type {any} */ e) => e.code === v.error;
      if (v.change === undefined) {
        assert.throws(() => readLivePush(unhex(v.hex), v.replica, v.base), code);
        return;
      }
      const out = readLivePush(unhex(v.hex), v.replica, v.base);
      out.forEach((c, i) => assert.equal(typeof c === 'string', i !== v.change, `change ${i}`));
      assert.ok(code(out[v.change]), `change ${v.change}: ${/** @type {any} */ (out[v.change])?.code}`);
    });
    continue;
  }
  test(`compact: refuses ${v.kind}: ${v.name}`, () => {
    assert.throws(() => parse(v, unhex(v.hex)), (/** @type {any} */ e) => e.code === v.error);
  });
}

test('compact: a record is as large as its plain form', () => {
  // One record whose compact form is under the record limit and whose plain
  // form is over it: over the limit, as the server would store it plain. In
  // an answer that is a page the client cannot read (malformed, section 5),
  // not one over its cap, which a pull asks for again in fewer records.
  // Three 90 KB values and 1,000 stamps whose 64-byte replica id the
  // table carries once and whose walls are the base.
  const replica = 'r'.repeat(64);
  const n = 1000;
  const names = [];
  for (let i = 0; i < n; i++) names.push(`f${String(i).padStart(4, '0')}`);
  const body = new Writer();
  body.head(5, 4);
  body.head(0, 1);
  body.head(4, 1);
  body.head(5, 2);
  body.head(0, 1);
  body.text('big');
  body.head(0, 3);
  body.head(5, n);
  for (const name of names) {
    body.text(name);
    body.head(4, 4);
    body.head(0, 0); // the base's difference
    body.head(0, 0);
    body.head(0, 0); // index 0: the replica
    if (name < 'f0003') {
      body.head(2, 90_000);
      body.raw(new Uint8Array(90_000));
    } else {
      body.byte(0x01);
    }
  }
  body.head(0, 2);
  body.head(2, 0);
  body.head(0, 7);
  body.head(4, 1);
  body.text(replica);
  body.head(0, 8);
  body.head(0, 1_764_720_000_000);
  const bytes = body.bytes();
  assert.ok(bytes.length < 300 * 1024, `compact message of ${bytes.length} bytes`);
  assert.throws(
    () => parsePullAnswer(bytes),
    (/** @type {any} */ e) => e.code === 'malformed' && /record of \d+ bytes exceeds 307200/.test(e.message),
  );
});

// Live push (docs/protocol.md, "Pushing over a live session"): walls from the session base S
// (the welcome's server time) unless one is below it or key 8, the
// smallest wall, makes the message shorter.
const S = 1_764_720_000_000;
const me = 'abcdefghijklmnop_dev1';

/**
 * A change of collection c: record id with one field per wall.
 * @param {string} id
 * @param {number[]} walls
 * @param {string} [replica]
 */
function changeAt(id, walls, replica = me) {
  const rec = emptyRecord(id);
  walls.forEach((wall, i) => rec.fields.set('f' + i, { stamp: { wall, logical: i, replica }, value: encode(i) }));
  return encodeChange({ collection: 'notes', record: rec });
}

/**
 * The live push read back as its receiver does: keys, and its changes.
 * @param {Uint8Array} bytes
 * @param {number} session
 */
function readLive(bytes, session) {
  const m = decode(bytes, { canonical: true });
  const cx = compactContext([me, ...(m.get(7) ?? [])], m.get(8) ?? session);
  const r = new Reader(encode(m.get(2)), { canonical: false });
  const n = r.arrayHead();
  const changes = [];
  for (let i = 0; i < n; i++) changes.push(hex(encodeChange(readChange(r, cx, receivedValue))));
  return { keys: [...m.keys()], type: m.get(0), base: m.get(8), table: m.get(7), changes };
}

test('live push: walls after S are written from S, without key 8', () => {
  const cs = [changeAt('a', [S + 1000, S + 60_000]), changeAt('b', [S + 5])];
  const bytes = /** @type {Uint8Array} */ (encodeLivePush(me, cs, undefined, S));
  const got = readLive(bytes, S);
  assert.deepEqual(got.keys, [0, 2]);
  assert.equal(got.type, 'push');
  assert.deepEqual(got.changes, cs.map(hex), 'the changes as written');
  // 3-byte differences: a wall 60 s after S is 0x19 + 2 bytes.
  assert.ok(hex(bytes).includes('19ea60'), 'a difference of 60,000 in 3 bytes');
});

test('live push: a wall below S, or many close walls long after it, write key 8 (the smallest wall)', () => {
  const below = [changeAt('a', [S - 1, S + 10])];
  const got = readLive(/** @type {Uint8Array} */ (encodeLivePush(me, below, undefined, S)), S);
  assert.deepEqual(got.keys, [0, 2, 8]);
  assert.equal(got.base, S - 1);
  assert.deepEqual(got.changes, below.map(hex));
  const later = S + 5 * 3600_000;
  const close = [changeAt('a', [later, later + 1, later + 2, later + 3])];
  const far = readLive(/** @type {Uint8Array} */ (encodeLivePush(me, close, undefined, S)), S);
  assert.equal(far.base, later, '1 + 9 + 4 bytes beat 4 × 5 bytes');
  assert.deepEqual(far.changes, close.map(hex));
  const one = [changeAt('a', [later])];
  assert.deepEqual(readLive(/** @type {Uint8Array} */ (encodeLivePush(me, one, undefined, S)), S).keys, [0, 2], 'one wall: 5 bytes from S beat 1 + 9 + 1');
});

test('live push: the table holds the session replica at 0 and other ids of two stamps; versions as key 3', () => {
  const other = 'abcdefghijklmnop_dev2';
  const cs = [changeAt('a', [S + 1, S + 2], other), changeAt('b', [S + 3])];
  const bytes = /** @type {Uint8Array} */ (encodeLivePush(me, cs, new Map([['notes', 2], ['x', 0]]), S));
  const got = readLive(bytes, S);
  assert.deepEqual(got.keys, [0, 2, 3, 7]);
  assert.deepEqual(got.table, [other]);
  assert.deepEqual({ ...decode(bytes).get(3) }, { notes: 2 });
  assert.deepEqual(got.changes, cs.map(hex));
});

test('live push: no stamps, no key 8; an unreadable change is not pushed live', () => {
  const none = encodeChange({ collection: 'notes', record: emptyRecord('z') });
  assert.deepEqual(readLive(/** @type {Uint8Array} */ (encodeLivePush(me, [none], undefined, S)), S).keys, [0, 2]);
  assert.equal(encodeLivePush(me, [Uint8Array.of(0xa0)], undefined, S), null);
});
