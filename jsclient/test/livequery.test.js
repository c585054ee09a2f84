// Incremental live queries and batch writes: after any sequence of writes
// (put, update, delete, putMany), every live query's last result equals the
// query run over the whole collection, and a batch is one transaction and
// one notification.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { openClient, until } from './helpers/util.js';
import { runQuery } from '../src/query.js';
import { peekOutbox } from '../src/syncstore.js';

/** A small deterministic random generator. */
function rng(seed) {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
}

const QUERIES = [
  {},
  { desc: true },
  { orderBy: 'n' },
  { orderBy: 'n', desc: true, limit: 5 },
  { where: { done: false }, orderBy: 'title' },
  { where: { tag: 't1' }, limit: 3 },
  { where: (/** @type {any} */ d) => typeof d.n === 'number' && d.n % 2 === 0, orderBy: 'n' },
  { orderBy: 'title', limit: 0 },
  { orderBy: 'mixed' },
];

test('live queries stay equal to a full run after random writes', async () => {
  const db = await openClient({ sync: false });
  const c = db.collection('todos');
  const r = rng(7);
  /** @type {any[][]} */
  const last = QUERIES.map(() => []);
  QUERIES.forEach((q, i) => c.subscribe(q, (docs) => (last[i] = docs)));
  const mixed = [1, 'a', true, null, [1], { x: 1 }, 2n ** 60n, 2.5, NaN, -Infinity];
  const doc = () => ({
    title: 'T' + Math.floor(r() * 20),
    n: Math.floor(r() * 10),
    done: r() < 0.5,
    tag: 't' + Math.floor(r() * 3),
    ...(r() < 0.8 ? { mixed: mixed[Math.floor(r() * mixed.length)] } : {}),
  });
  for (let step = 0; step < 200; step++) {
    const id = 'r' + Math.floor(r() * 25);
    const op = r();
    if (op < 0.4) await c.put(id, doc());
    else if (op < 0.6) await c.update(id, { n: Math.floor(r() * 10), title: r() < 0.2 ? undefined : 'U' + step });
    else if (op < 0.75) await c.delete(id);
    else await c.putMany(Array.from({ length: 1 + Math.floor(r() * 6) }, () => ({ id: 'r' + Math.floor(r() * 25), ...doc() })));
    if (step % 20 === 19) {
      await new Promise((res) => setTimeout(res, 0));
      const all = await db.store.list('todos');
      QUERIES.forEach((q, i) => assert.deepEqual(last[i], runQuery(all, q), `query ${i} after step ${step}`));
    }
  }
  await db.close();
});

test('putMany writes every record and outbox entry in one transaction, with one notification', async () => {
  const db = await openClient({ sync: false });
  const c = db.collection('todos');
  /** @type {any[]} */
  const changes = [];
  db.on('change', (e) => changes.push(e));
  let calls = 0;
  c.subscribe({ orderBy: 'n' }, () => calls++);
  await until(() => calls === 1, 'the first result');
  const docs = Array.from({ length: 500 }, (_, i) => ({ id: 'd' + i, n: i, title: 'x' }));
  const written = await c.putMany(docs);
  assert.equal(written.length, 500);
  assert.deepEqual(written[7], { id: 'd7', n: 7, title: 'x' });
  assert.equal(db.status.pending, 500);
  await until(() => calls === 2, 'one callback for the batch');
  assert.equal(changes.length, 1, 'one change event');
  assert.equal(changes[0].ids.length, 500);
  assert.equal((await peekOutbox(db.store, 10_000)).length, 500);
  // put semantics: fields missing are unset; a later duplicate id wins.
  await c.putMany([{ id: 'd1', n: 100 }, { id: 'd2', title: 'a' }, { id: 'd2', title: 'b' }]);
  assert.deepEqual(await c.get('d1'), { id: 'd1', n: 100 });
  assert.deepEqual(await c.get('d2'), { id: 'd2', title: 'b' });
  // All or nothing: one bad document fails the whole batch before writing.
  await assert.rejects(c.putMany([{ id: 'ok', n: 1 }, { id: 'bad', when: new Date() }]), (e) => /** @type {any} */ (e).code === 'invalid');
  await assert.rejects(c.putMany([{ id: 'ok', n: 1 }, /** @type {any} */ ({ n: 2 })]), (e) => /** @type {any} */ (e).code === 'invalid');
  await assert.rejects(c.putMany([{ id: 'ok', n: 1 }, { id: 'big', blob: 'x'.repeat(200 << 10) }]), (e) => /** @type {any} */ (e).code === 'too_large');
  assert.equal(await c.get('ok'), null);
  assert.deepEqual(await c.putMany([]), []);
  await db.close();
});

test('a limited query is not called back for changes beyond its end', async () => {
  const db = await openClient({ sync: false });
  const c = db.collection('todos');
  await c.putMany(Array.from({ length: 20 }, (_, i) => ({ id: 'k' + String(i).padStart(2, '0'), n: i })));
  /** @type {any[][]} */
  const seen = [];
  c.subscribe({ orderBy: 'n', limit: 3 }, (docs) => seen.push(docs.map((/** @type {any} */ d) => d.n)));
  await until(() => seen.length === 1, 'first result');
  await c.update('k15', { n: 16 });
  await c.update('k01', { n: -1 });
  await until(() => seen.length === 2, 'the change inside the limit');
  await new Promise((res) => setTimeout(res, 20));
  assert.deepEqual(seen, [[0, 1, 2], [-1, 0, 2]]);
  await db.close();
});

test('a write made as a live query subscribes is reported once, whether its first read saw it or not', async () => {
  // README: a query whose visible result did not change is not called. A
  // write that commits before the subscription's first read is in that
  // read, and its change, applied after it, changes nothing seen.
  const db = await openClient({ sync: false });
  const c = db.collection('todos');
  /** @type {string[]} */
  const seen = [];
  /** @type {(string|null)[]} */
  const one = [];
  c.subscribe({ orderBy: 'title' }, (rows) => seen.push(rows.map((d) => d.title).join(',')));
  c.subscribe('t1', (d) => one.push(d ? String(d.title) : null));
  await c.put('t1', { title: 'A' });
  await until(() => seen.length > 0 && one.length > 0, 'first results');
  await new Promise((r) => setTimeout(r, 50));
  await c.put('t2', { title: 'B' });
  await until(() => seen.includes('A,B'), 'the second write seen');
  await new Promise((r) => setTimeout(r, 50));
  assert.deepEqual(seen, ['A', 'A,B'], 'each visible result once');
  assert.deepEqual(one, ['A'], 'the record once');
  await db.close();
});

test('where: a field equal to an integer matches it as a number or a bigint in the safe range, and only in its own type beyond', () => {
  const MAX = Number.MAX_SAFE_INTEGER;
  const values = [0, 1, -1, 7, MAX, -MAX, 2 ** 53, -(2 ** 53), 1.5, 0n, 1n, -1n, 7n, BigInt(MAX), -BigInt(MAX), BigInt(MAX) + 1n, -BigInt(MAX) - 1n, 2n ** 64n, '7'];
  const rows = values.map((n, i) => ({ c: 'todos', id: `r${String(i).padStart(2, '0')}`, doc: { n } }));
  // The rule as it was first written: a bigint in the safe range compares
  // as the number it equals; anything else as itself.
  const scalar = (/** @type {unknown} */ x) => (typeof x === 'bigint' && x >= -BigInt(MAX) && x <= BigInt(MAX) ? Number(x) : x);
  for (const v of values) {
    const want = rows.filter((r) => scalar(r.doc.n) === scalar(v)).map((r) => r.id);
    assert.deepEqual(
      runQuery(/** @type {any} */ (rows), { where: { n: v } }).map((d) => d.id),
      want,
      `where n = ${typeof v} ${String(v)}`,
    );
  }
  assert.deepEqual(runQuery(/** @type {any} */ (rows), { where: { n: 7n } }).map((d) => d.id), ['r03', 'r12'], 'the number 7 and the bigint 7');
  assert.deepEqual(runQuery(/** @type {any} */ (rows), { where: { n: 2n ** 53n } }).map((d) => d.id), ['r15'], 'beyond the safe range only the bigint');
});
