// Hostile input: random and mutated bytes through every parser of server
// data must either parse or fail with a ConvergoError of a decode code —
// never a TypeError, RangeError or hang.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { ConvergoError } from '../src/errors.js';
import { Writer, encode } from '../src/cbor.js';
import { STATUSES, VERSION } from '../src/constants.js';
import { writeRecord } from '../src/record.js';
import { decodeChanges, decodeRecord } from '../src/received.js';
import { parseErrorBody, parsePullAnswer, parsePushAnswer, parseServerMessage, parseHello } from '../src/protocol.js';

const vectors = JSON.parse(readFileSync(new URL('../../crdt/testdata/vectors.json', import.meta.url), 'utf8'));
const unhex = (/** @type {string} */ s) => new Uint8Array(Buffer.from(s, 'hex'));

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

/** Valid inputs to mutate, per parser. */
function seeds() {
  const records = vectors.merges.flatMap((/** @type {any} */ m) => [unhex(m.a_hex), unhex(m.want_hex)]);
  const cursor = Uint8Array.of(0x66, 0x6b, 0, 0, 0, 0, 0, 0, 0, 7);
  const page = new Writer();
  page.head(5, 3);
  page.byte(1);
  page.head(4, records.length);
  for (const r of records) writeRecord(page, decodeRecord(r));
  page.byte(2);
  page.raw(encode(cursor));
  page.byte(3);
  page.byte(0xf4);
  const changes = new Writer();
  changes.head(5, 5);
  changes.byte(0);
  changes.text('changes');
  changes.byte(1);
  changes.text('todos');
  changes.byte(2);
  changes.head(4, 1);
  changes.raw(records[1]);
  changes.byte(3);
  changes.raw(encode(cursor));
  changes.byte(4);
  changes.byte(0xf5);
  const hello = new Map(/** @type {[number, unknown][]} */ ([[1, VERSION], [2, 1_700_000_000_000], [3, 'srv'], [4, 1000], [5, 1000], [6, 4 << 20], [7, 300000], [8, ''], [9, 1 << 20], [10, 4 << 20], [99, 'newer']]));
  return {
    record: records,
    page: [page.bytes()],
    live: [
      changes.bytes(),
      encode(new Map(/** @type {[number, unknown][]} */ ([[0, 'welcome'], [1, hello]]))),
      encode(new Map(/** @type {[number, unknown][]} */ ([[0, 'pong'], [1, 4]]))),
      encode(new Map(/** @type {[number, unknown][]} */ ([[0, 'bulletin'], [1, 4], [2, [new Map([[1, 0]])]]]))),
      encode(new Map(/** @type {[number, unknown][]} */ ([[0, 'error'], [1, 'forbidden'], [2, 'no'], [3, 'todos'], [4, 'req-1']]))),
      encode(new Map(/** @type {[number, unknown][]} */ ([[0, 'resync'], [1, 'todos']]))),
    ],
    push: [
      encode(
        new Map([
          [
            1,
            [
              new Map(/** @type {[number, unknown][]} */ ([[1, STATUSES.refused], [2, 'invalid'], [3, 'bad']])),
              new Map(/** @type {[number, unknown][]} */ ([[1, STATUSES.superseded], [4, ['a', 'b']]])),
              new Map(/** @type {[number, unknown][]} */ ([[1, STATUSES.applied], [4, ['c']], [9, true]])),
            ],
          ],
        ]),
      ),
    ],
    hello: [encode(hello)],
    error: [encode(new Map(/** @type {[number, unknown][]} */ ([[1, 'invalid'], [2, 'bad'], [3, 'req-2']])))],
  };
}

const parsers = {
  record: (/** @type {Uint8Array} */ b) => decodeRecord(b),
  changes: (/** @type {Uint8Array} */ b) => decodeChanges(b),
  page: (/** @type {Uint8Array} */ b) => parsePullAnswer(b),
  live: (/** @type {Uint8Array} */ b) => parseServerMessage(b),
  push: (/** @type {Uint8Array} */ b) => parsePushAnswer(b),
  hello: (/** @type {Uint8Array} */ b) => parseHello(b),
  error: (/** @type {Uint8Array} */ b) => {
    const e = parseErrorBody(b); // never throws: null when it is not an error body
    assert.ok(e === null || typeof e.code === 'string');
  },
};

test('parsers of server data fail only with decode errors', () => {
  const seed = Number(process.env.FUZZ_SEED ?? Date.now() % 1e9);
  const r = rng(seed);
  const s = seeds();
  /** @type {Record<string, Uint8Array[]>} */
  const corpus = { ...s, changes: s.record.map((b) => Uint8Array.of(0x81, 0xa2, 0x01, 0x61, 0x74, 0x02, ...b)) };
  for (const [name, parse] of Object.entries(parsers)) {
    for (const valid of corpus[name]) parse(valid); // the seeds themselves parse
    for (let i = 0; i < 3000; i++) {
      const base = corpus[name][Math.floor(r() * corpus[name].length)];
      let b;
      const how = r();
      if (how < 0.1) {
        b = new Uint8Array(Math.floor(r() * 40));
        for (let j = 0; j < b.length; j++) b[j] = Math.floor(r() * 256);
      } else if (how < 0.2) {
        b = base.slice(0, Math.floor(r() * base.length)); // truncated
      } else {
        b = base.slice();
        const flips = 1 + Math.floor(r() * 3);
        for (let f = 0; f < flips; f++) b[Math.floor(r() * b.length)] = r() < 0.5 ? Math.floor(r() * 256) : b[Math.floor(r() * b.length)] ^ (1 << Math.floor(r() * 8));
      }
      try {
        parse(b);
      } catch (e) {
        if (!(e instanceof ConvergoError) || !['malformed', 'invalid', 'too_large'].includes(e.code)) {
          assert.fail(`seed ${seed} (FUZZ_SEED=${seed}): ${name} threw ${/** @type {any} */ (e)?.name} ${/** @type {any} */ (e)?.code ?? ''}: ${/** @type {any} */ (e)?.message} on ${Buffer.from(b).toString('hex')}`);
        }
      }
    }
  }
});
