// The messages of protocol version 2 (protocol.js): envelopes ignore keys
// they do not know, the rest is checked.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Writer, decode, encode } from '../src/cbor.js';
import { BATCH_LENS, DEFAULTS, PUSH_ROOMS, STATUSES, VERSION } from '../src/constants.js';
import { codeOfStatus, encodePull, encodeSub, parseErrorBody, parseHello, parsePullAnswer, parsePushAnswer, parseRestoreAnswer, parseServerMessage, pushBudget, batchLength, resetAction, retryOf } from '../src/protocol.js';

const malformed = (/** @type {any} */ e) => e.code === 'malformed';
/** @param {[unknown, unknown][]} entries */
const env = (entries) => encode(new Map(entries));

test('hello answers: every key of section 6, defaults for the limits left out, unknown keys ignored', () => {
  const h = parseHello(env([[1, VERSION], [2, 1_700_000_000_000], [3, 'srv'], [4, 5000], [5, 2000], [6, 8 << 20], [7, 1000], [8, 'alice'], [9, 2 << 20], [10, 8 << 20], [11, '3y46xdnv3bk6uhgg'], [12, 'later'], ['text', 1]]));
  assert.deepEqual(h, { protocol: 2, serverTime: 1_700_000_000_000, serverReplica: 'srv', maxPush: 5000, maxPull: 2000, maxBody: 8 << 20, maxDrift: 1000, subject: 'alice', maxPageBytes: 2 << 20, maxMessageBytes: 8 << 20, replicaPrefix: '3y46xdnv3bk6uhgg' });
  const d = parseHello(env([[1, VERSION], [2, 5]]));
  assert.deepEqual([d.maxPush, d.maxPull, d.maxBody, d.maxPageBytes, d.maxMessageBytes], [1000, 1000, 4 << 20, 1 << 20, 4 << 20]);
  assert.throws(() => parseHello(env([[2, 5]])), malformed, 'no protocol');
  assert.throws(() => parseHello(env([[1, VERSION], [2, 'soon']])), malformed, 'a known key of the wrong type');
});

test('hello answers: a server time of 0 is no wall time, malformed as one left out (taken, the clock would restart at the epoch), as in the Go client', () => {
  assert.throws(() => parseHello(env([[1, VERSION]])), malformed, 'no server time');
  assert.throws(() => parseHello(env([[1, VERSION], [2, 0]])), malformed, 'server time 0');
  assert.throws(() => parseHello(env([[1, VERSION], [2, -1]])), malformed, 'server time below 0');
  assert.throws(() => parseHello(env([[1, VERSION], [2, 2 ** 53]])), malformed, 'server time past 2^53-1');
  assert.equal(parseHello(env([[1, VERSION], [2, 1]])).serverTime, 1);
});

test('hello answers: a limit announced as 0 is the default, as one left out (a server never announces 0), as in the Go client', () => {
  /** @type {Record<number, [name: string, announced: number, fallback: number]>} */
  const limits = {
    4: ['maxPush', 7, DEFAULTS.maxPushChanges],
    5: ['maxPull', 8, DEFAULTS.maxPullRecords],
    6: ['maxBody', 9, DEFAULTS.maxBodyBytes],
    7: ['maxDrift', 10, DEFAULTS.maxDriftMs],
    9: ['maxPageBytes', 11, DEFAULTS.maxPageBytes],
    10: ['maxMessageBytes', 12, DEFAULTS.maxMessageBytes],
  };
  const keys = Object.keys(limits).map(Number);
  for (const key of keys) {
    for (const absent of [false, true]) {
      const entries = /** @type {[number, number][]} */ ([[1, VERSION], [2, 5]]);
      for (const k of keys) if (k !== key || !absent) entries.push([k, k === key ? 0 : limits[k][1]]);
      const h = /** @type {Record<string, unknown>} */ (parseHello(env(entries)));
      for (const k of keys) {
        const [name, announced, fallback] = limits[k];
        assert.equal(h[name], k === key ? fallback : announced, `${name} (key ${k}) when key ${key} is ${absent ? 'absent' : 'announced 0'}`);
      }
    }
  }
});

test('hello answers: a limit below 0 is malformed, as in the Go client (a limit is a count)', () => {
  for (const key of [4, 5, 6, 7, 9, 10]) {
    assert.throws(() => parseHello(env([[1, VERSION], [2, 5], [key, -1]])), malformed, `key ${key} at -1`);
  }
});

test('push budget: the room of a batch is proto.PushRoom of the announced max-body, as the Go client splits', () => {
  for (const { maxBody, room } of PUSH_ROOMS) {
    assert.deepEqual(pushBudget({ maxPush: 7, maxBody }), [7, room], `max-body ${maxBody}`);
    if (maxBody === 0) continue; // announced 0 is none: below
    const h = parseHello(env([[1, VERSION], [2, 5], [4, 7], [6, maxBody]]));
    assert.equal(h.maxBody, maxBody, 'hello.maxBody is what the server announced');
    assert.deepEqual(pushBudget(h), [7, room], `max-body ${maxBody} through hello`);
  }
  // As the Go client (ServerInfo.MaxBody): a max-body of 0 is none, the default.
  assert.equal(parseHello(env([[1, VERSION], [2, 5], [6, 0]])).maxBody, DEFAULTS.maxBodyBytes);
});

test('batch length: proto.BatchLen of the vectors, as the Go client cuts', () => {
  assert.ok(BATCH_LENS.length > 0);
  for (const { sizes, maxCount, maxBytes, len } of BATCH_LENS) {
    assert.equal(batchLength(sizes, maxCount, maxBytes, (x) => x), len, `sizes ${sizes}, max count ${maxCount}, max bytes ${maxBytes}`);
  }
});

test('batch length: at most the count and the bytes, exactly at either included; one item larger than the bytes goes alone; none of none', () => {
  const n = (/** @type {number[]} */ sizes, /** @type {number} */ maxCount, /** @type {number} */ maxBytes, from = 0) => batchLength(sizes, maxCount, maxBytes, (x) => x, from);
  // Empty input, or nothing left from index from.
  assert.equal(n([], 5, 100), 0);
  assert.equal(n([10, 10], 5, 100, 2), 0);
  // Exactly at the byte limit goes; one byte over stops before the item.
  assert.equal(n([50, 50], 5, 100), 2);
  assert.equal(n([50, 51], 5, 100), 1);
  assert.equal(n([50, 50, 1], 5, 100), 2);
  // Exactly at the count limit goes; one more waits for the next batch.
  assert.equal(n([1, 1, 1], 3, 100), 3);
  assert.equal(n([1, 1, 1, 1], 3, 100), 3);
  // At both limits at once.
  assert.equal(n([25, 25, 25, 25], 4, 100), 4);
  assert.equal(n([25, 25, 25, 25, 1], 4, 100), 4);
  // A change larger than the byte budget alone goes alone, first or not,
  // and the one after it does not join it.
  assert.equal(n([500], 5, 100), 1);
  assert.equal(n([500, 1], 5, 100), 1);
  assert.equal(n([500, 1], 5, 100, 1), 1);
  assert.equal(n([1, 500, 1], 5, 100), 1);
  assert.equal(n([1, 500, 1], 5, 100, 1), 1);
  assert.equal(n([1, 500, 1], 5, 100, 2), 1);
  // No room at all (max-body at or under PUSH_ENVELOPE_BYTES): one change a
  // request; a count under one still lets one go, as proto.BatchLen.
  const [, room] = pushBudget({ maxPush: 5, maxBody: PUSH_ROOMS[0].maxBody });
  assert.equal(room, 0);
  assert.equal(n([1, 1, 1], 5, room), 1);
  assert.equal(n([1, 1, 1], 0, 100), 1);
  // Cutting a whole list from its start takes every item once, in order,
  // each batch within both limits unless it is one item.
  const sizes = [3, 90, 7, 200, 1, 1, 1, 1, 1, 60, 40, 41, 100];
  const cuts = [];
  for (let from = 0; from < sizes.length; ) {
    const k = n(sizes, 4, 100, from);
    const batch = sizes.slice(from, from + k);
    assert.ok(k === 1 || (k <= 4 && batch.reduce((a, b) => a + b, 0) <= 100), `batch ${batch} from ${from}`);
    cuts.push(batch);
    from += k;
  }
  assert.deepEqual(cuts, [[3, 90, 7], [200], [1, 1, 1, 1], [1, 60], [40, 41], [100]]);
});

test('push answers: statuses, codes, messages and lost fields', () => {
  const results = parsePushAnswer(
    env([
      [
        1,
        [
          new Map([[1, STATUSES.applied]]),
          new Map(/** @type {[number, unknown][]} */ ([[1, STATUSES.applied], [4, ['a']]])),
          new Map([[1, STATUSES.duplicate]]),
          new Map(/** @type {[number, unknown][]} */ ([[1, STATUSES.superseded], [4, ['a', 'b']], [7, 'new']])),
          new Map(/** @type {[number, unknown][]} */ ([[1, STATUSES.refused], [2, 'clock_drift'], [3, 'ahead']])),
        ],
      ],
      [2, 'a key from the future'],
    ]),
  );
  assert.deepEqual(results, [
    { status: 0 },
    { status: 0, lost: ['a'] },
    { status: 1 },
    { status: 2, lost: ['a', 'b'] },
    { status: 3, code: 'clock_drift', message: 'ahead' },
  ]);
  assert.throws(() => parsePushAnswer(env([[1, [new Map([[1, 4]])]]])), malformed, 'an unknown status');
  assert.throws(() => parsePushAnswer(env([[2, []]])), malformed, 'no results');
  const dup = new Writer();
  dup.head(5, 2);
  dup.head(0, 1);
  dup.head(4, 0);
  dup.head(0, 1);
  dup.head(4, 0);
  assert.throws(() => parsePushAnswer(dup.bytes()), malformed, 'a duplicate key');
});

test('pull answers carry records and an opaque cursor', () => {
  const next = Uint8Array.of(1, 2, 3);
  const page = parsePullAnswer(env([[1, []], [2, next], [3, true], [9, 'later']]));
  assert.deepEqual(page, { records: [], next, more: true, seals: [], leaves: [] });
  assert.deepEqual(parsePullAnswer(env([[2, new Uint8Array(0)]])), { records: [], next: new Uint8Array(0), more: false, seals: [], leaves: [] });
  // Seals: one per record, kept as they came.
  const rec = new Map(/** @type {[unknown, unknown][]} */ ([[1, 'r1']]));
  const seal = Uint8Array.of(1, 2, 3, 4);
  const sealed = parsePullAnswer(env([[1, [rec]], [2, next], [6, [seal]]]));
  assert.deepEqual(sealed.seals, [seal]);
  assert.equal(sealed.records[0].id, 'r1');
  assert.throws(() => parsePullAnswer(env([[1, [rec]], [2, next], [6, [seal, seal]]])), malformed, 'two seals for one record');
  assert.throws(() => parsePullAnswer(env([[1, [rec]], [2, next], [6, ['x']]])), malformed, 'a seal that is not bytes');
  // A reset: no records, the empty cursor, the reason as it came.
  const reset = parsePullAnswer(env([[1, []], [2, new Uint8Array(0)], [3, false], [4, new Map(/** @type {[unknown, unknown][]} */ ([[1, 'history_lost'], [2, 'wiped'], [3, 'later']]))]]));
  assert.deepEqual(reset, { records: [], next: new Uint8Array(0), more: false, seals: [], leaves: [], reset: { reason: 'history_lost', message: 'wiped' } });
  assert.equal(resetAction('history_lost'), 'history_lost');
  assert.equal(resetAction('rebuilt'), 'rebuilt');
  assert.equal(resetAction('lease_expired'), 'lease_expired');
  assert.equal(resetAction('moon_phase'), 'history_lost', 'an unknown reason counts as history_lost');
  assert.throws(() => parsePullAnswer(env([[1, []], [2, 7], [3, false]])), malformed, 'a numeric cursor');
  assert.throws(() => parsePullAnswer(env([[1, [[7, new Map()]]], [2, next]])), malformed, 'protocol 1 entries');
  // Requests carry the cursor as it came.
  const req = encodePull('todos', next, 10);
  assert.deepEqual([...req], [...env([[1, 'todos'], [2, next], [3, 10]])]);
  assert.deepEqual([...encodeSub('todos', new Uint8Array(0))], [...env([[0, 'sub'], [1, 'todos'], [2, new Uint8Array(0)]])]);
});

test('the lease: replica id under pull and sub key 5, the pending floor under key 6 only when something is pending', () => {
  const next = Uint8Array.of(1, 2, 3);
  const scope = encode(['all']);
  const m = (/** @type {[unknown, unknown][]} */ e) => [...encode(new Map(e))];
  const floor = 1_760_000_000_123;
  assert.deepEqual([...encodePull('todos', next, 10, undefined, { replica: 'p_d', floor: null })], m([[1, 'todos'], [2, next], [3, 10], [5, 'p_d']]));
  assert.deepEqual([...encodePull('todos', next, 10, scope, { replica: 'p_d', floor })], m([[1, 'todos'], [2, next], [3, 10], [4, ['all']], [5, 'p_d'], [6, floor]]));
  assert.deepEqual([...encodeSub('todos', next, undefined, { replica: 'p_d', floor })], m([[0, 'sub'], [1, 'todos'], [2, next], [5, 'p_d'], [6, floor]]));
  assert.deepEqual([...encodeSub('todos', next, scope, { replica: 'p_d', floor: null })], m([[0, 'sub'], [1, 'todos'], [2, next], [3, ['all']], [5, 'p_d']]));
});

test('a first sync says it holds nothing (pull key 7), only from the beginning', () => {
  const scope = encode(['all']);
  const m = (/** @type {[unknown, unknown][]} */ e) => [...encode(new Map(e))];
  const empty = new Uint8Array(0);
  assert.deepEqual([...encodePull('todos', empty, 10, scope, { replica: 'p_d', floor: null }, true)], m([[1, 'todos'], [2, empty], [3, 10], [4, ['all']], [5, 'p_d'], [7, true]]));
  assert.deepEqual([...encodePull('todos', Uint8Array.of(1), 10, scope, undefined, true)], m([[1, 'todos'], [2, Uint8Array.of(1)], [3, 10], [4, ['all']]]), 'not with a cursor');
  assert.deepEqual([...encodePull('todos', empty, 10, scope)], m([[1, 'todos'], [2, empty], [3, 10], [4, ['all']]]), 'not unless asked');
});

test('scoped reads: the scope under pull key 4 and sub key 3, leave entries under pull key 5 and changes key 6', () => {
  const next = Uint8Array.of(1, 2, 3);
  const pred = ['or', ['eq', 'owner', { $: 'sub' }], ['in', 'team', { $: 'claims.teams' }]];
  const scope = encode(pred);
  assert.deepEqual(decode(encodePull('todos', next, 10, scope)), new Map(/** @type {[unknown, unknown][]} */ ([[1, 'todos'], [2, next], [3, 10], [4, pred]])));
  assert.deepEqual([...encodePull('todos', next, 10, scope)], [...encode(new Map(/** @type {[unknown, unknown][]} */ ([[1, 'todos'], [2, next], [3, 10], [4, pred]])))], 'deterministic');
  assert.deepEqual([...encodeSub('todos', next, scope)], [...encode(new Map(/** @type {[unknown, unknown][]} */ ([[0, 'sub'], [1, 'todos'], [2, next], [3, pred]])))]);
  const leave = new Uint8Array(16).fill(7);
  assert.deepEqual(parsePullAnswer(env([[1, []], [2, next], [5, [leave, leave]]])).leaves, [leave, leave]);
  assert.throws(() => parsePullAnswer(env([[1, []], [2, next], [5, [leave.subarray(1)]]])), malformed, 'a leave entry of 15 bytes');
  assert.throws(() => parsePullAnswer(env([[1, []], [2, next], [5, ['x']]])), malformed, 'a leave entry that is not bytes');
  const m = parseServerMessage(env([[0, 'changes'], [1, 'todos'], [2, []], [3, next], [6, [leave]]]));
  assert.deepEqual(m.type === 'changes' && m.leaves, [leave]);
});

test('live messages: known types parsed whatever else they hold, unknown types passed over', () => {
  const next = Uint8Array.of(9);
  assert.deepEqual(parseServerMessage(env([[1, 'todos'], [0, 'changes'], [2, []], [3, next], [4, false], [9, 'x']])), { type: 'changes', collection: 'todos', records: [], next, more: false, seals: [], leaves: [] });
  assert.deepEqual(parseServerMessage(env([[0, 'reset'], [1, 'todos'], [2, 'rebuilt'], [3, 'repaired'], [4, 'x']])), { type: 'reset', collection: 'todos', reason: 'rebuilt', message: 'repaired' });
  assert.throws(() => parseServerMessage(env([[0, 'reset'], [1, 'todos']])), malformed, 'a reset without a reason');
  assert.deepEqual(parseServerMessage(env([[0, 'error'], [1, 'forbidden'], [2, 'no'], [3, 'todos'], [4, 'req-9']])), { type: 'error', code: 'forbidden', message: 'no', collection: 'todos', requestId: 'req-9' });
  assert.deepEqual(parseServerMessage(env([[0, 'resync'], [1, 'todos'], [2, 'x']])), { type: 'resync', collection: 'todos' });
  assert.deepEqual(parseServerMessage(env([[0, 'pong'], [1, 3]])), { type: 'pong', nonce: 3 });
  assert.deepEqual(parseServerMessage(env([[0, 'ack'], [1, 3]])), { type: 'unknown', name: 'ack' }, "protocol 1's ack is no message of protocol 2");
  assert.deepEqual(parseServerMessage(env([[0, 'bulletin'], [1, [1, 2]]])), { type: 'unknown', name: 'bulletin' });
  const w = parseServerMessage(env([[0, 'welcome'], [1, new Map(/** @type {[unknown, unknown][]} */ ([[1, VERSION], [2, 9], [12, 'x']]))]]));
  assert.equal(w.type === 'welcome' && w.hello.serverTime, 9);
  assert.throws(() => parseServerMessage(env([[1, 'todos']])), malformed, 'no type');
});

test('error bodies: code, message and request id', () => {
  assert.deepEqual(parseErrorBody(env([[1, 'invalid'], [2, 'bad'], [3, 'req-1'], [4, 'later']])), { code: 'invalid', message: 'bad', requestId: 'req-1' });
  assert.deepEqual(parseErrorBody(env([[1, 'internal']])), { code: 'internal', message: '' });
  assert.equal(parseErrorBody(new TextEncoder().encode('<html>bad gateway</html>')), null);
});

test('what to do about each code comes from the generated table', () => {
  assert.equal(retryOf('unsupported_version'), 'upgrade');
  assert.equal(retryOf('token_expired'), 'auth');
  assert.equal(retryOf('unauthenticated'), 'auth');
  assert.equal(retryOf('rate_limited'), 'backoff');
  assert.equal(retryOf('forbidden'), 'never');
  assert.equal(retryOf('network'), 'backoff', "the client's own codes retry with backoff");
  // A status without a readable body: the one code that has it, else none.
  assert.equal(codeOfStatus(413), 'too_large');
  assert.equal(codeOfStatus(429), 'rate_limited');
  assert.equal(codeOfStatus(503), 'unavailable');
  assert.equal(codeOfStatus(400), null, 'several codes answer 400');
  assert.equal(codeOfStatus(502), null, "a proxy's 502 is a network failure");
});

test('replica prefixes follow the samples of protocol.json; subjects come from the token', async () => {
  const { REPLICA } = await import('../src/constants.js');
  const { replicaPrefix, subjectOfToken, isDevice, MAX_DEVICE_BYTES } = await import('../src/replica.js');
  for (const [subject, prefix] of Object.entries(REPLICA.samples)) assert.equal(await replicaPrefix(subject), prefix, JSON.stringify(subject));
  assert.equal(MAX_DEVICE_BYTES, 47);
  assert.ok(isDevice('x'.repeat(47)) && !isDevice('x'.repeat(48)) && !isDevice('') && !isDevice('a b'));
  const b64 = (/** @type {any} */ o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  assert.equal(subjectOfToken(`${b64({ alg: 'HS256' })}.${b64({ sub: 'bob@example.com' })}.sig`), 'bob@example.com');
  assert.equal(subjectOfToken(`${b64({ alg: 'HS256' })}.${b64({ sub: '用户' })}.sig`), '用户');
  for (const bad of ['', 'opaque', 'a.b.c', `x.${b64({ sub: 5 })}.y`]) assert.equal(subjectOfToken(bad), '', bad);
  // Payloads of every length modulo 4 in base64url (no padding), and padded.
  for (const sub of ['a', 'ab', 'abc', 'abcd', 'é', 'éé', '😀', 'x😀y']) {
    const p = b64({ sub });
    assert.equal(subjectOfToken(`h.${p}.s`), sub, p);
    assert.equal(subjectOfToken(`h.${Buffer.from(JSON.stringify({ sub })).toString('base64')}.s`), sub, 'padded ' + p);
  }
  assert.equal(subjectOfToken(`h.${b64({ sub: 'ab' })}x.s`), '', 'a payload of 4n+1 characters');
});

test('pushed: the results of a live push, or a code refusing it whole', () => {
  assert.deepEqual(parseServerMessage(env([[0, 'pushed'], [1, [new Map([[1, STATUSES.applied]]), new Map(/** @type {[number, unknown][]} */ ([[1, STATUSES.refused], [2, 'forbidden'], [3, 'no']]))]], [9, 'later']])), {
    type: 'pushed',
    results: [{ status: 0 }, { status: 3, code: 'forbidden', message: 'no' }],
  });
  assert.deepEqual(parseServerMessage(env([[0, 'pushed'], [1, []]])), { type: 'pushed', results: [] });
  assert.deepEqual(parseServerMessage(env([[0, 'pushed'], [2, 'too_large'], [3, '1001 changes']])), { type: 'pushed', code: 'too_large', message: '1001 changes' });
  assert.deepEqual(parseServerMessage(env([[0, 'pushed'], [2, 'unavailable']])), { type: 'pushed', code: 'unavailable', message: '' });
  // Key 4: the push's request id.
  assert.deepEqual(parseServerMessage(env([[0, 'pushed'], [1, []], [4, 'req-7']])), { type: 'pushed', results: [], requestId: 'req-7' });
  assert.deepEqual(parseServerMessage(env([[0, 'pushed'], [2, 'unavailable'], [3, ''], [4, 'req-8']])), { type: 'pushed', code: 'unavailable', message: '', requestId: 'req-8' });
  for (const [what, entries] of /** @type {[string, [unknown, unknown][]][]} */ ([
    ['neither', [[0, 'pushed']]],
    ['both', [[0, 'pushed'], [1, []], [2, 'unavailable'], [3, '']]],
    ['an empty code', [[0, 'pushed'], [2, ''], [3, '']]],
    ['null results', [[0, 'pushed'], [1, null]]],
    ['an unknown status', [[0, 'pushed'], [1, [new Map([[1, 9]])]]]],
  ])) {
    assert.throws(() => parseServerMessage(env(entries)), malformed, what);
  }
});

test('the message vectors Go writes (crdt/testdata/messages.json) are read, or refused with the same code, as Go reads them', async (t) => {
  const { readFileSync } = await import('node:fs');
  const { messages } = JSON.parse(readFileSync(new URL('../../crdt/testdata/messages.json', import.meta.url), 'utf8'));
  assert.ok(messages.length > 0, 'messages.json holds vectors');
  /** @type {Record<string, (b: Uint8Array) => unknown>} */
  const parsers = { pull: parsePullAnswer, push: parsePushAnswer, restore: parseRestoreAnswer, hello: parseHello, server: parseServerMessage };
  for (const v of messages) {
    await t.test(`${v.kind}: ${v.name}`, () => {
      const read = () => parsers[v.kind](Uint8Array.from(Buffer.from(v.hex, 'hex')));
      if (v.error === '') {
        read();
        return;
      }
      assert.throws(read, (e) => {
        assert.equal(/** @type {any} */ (e).code, v.error, /** @type {any} */ (e).message);
        return true;
      });
    });
  }
});
