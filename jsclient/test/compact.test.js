// The shared compact-stamp vectors (crdt/testdata/compact.json,
// docs/protocol.md "Compact stamps"): the client writes Go's bytes for a
// push, reads pages and changes messages in both forms to the records Go
// encoded, and refuses what Go refuses with the same code.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { encodePush, parsePullAnswer, parseServerMessage } from '../src/protocol.js';
import { encodeRecord } from '../src/record.js';
import { Writer } from '../src/cbor.js';

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

for (const v of vectors.messages) {
  test(`compact: ${v.kind}: ${v.name}`, () => {
    if (v.kind === 'push') {
      assert.equal(hex(encodePush(v.replica, v.changes.map(unhex), undefined, v.prefix)), v.compact_hex, 'push encoding');
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
  test(`compact: refuses ${v.kind}: ${v.name}`, () => {
    assert.throws(() => parse(v, unhex(v.hex)), (/** @type {any} */ e) => e.code === v.error);
  });
}

test('compact: a record is as large as its plain form', () => {
  // One record whose compact form is under the record limit and whose plain
  // form is over it: refused too_large, as the server would store it plain.
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
  assert.throws(() => parsePullAnswer(bytes), (/** @type {any} */ e) => e.code === 'too_large');
});
