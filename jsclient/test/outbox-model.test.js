// Model-based test of the IndexedDB layer's outbox: random local writes,
// remote records and settled pushes (accepted or refused) against a model
// in which a record's local view is always the server's state merged with
// the changes still pending. A failure prints the seed (OUTBOX_SEED=...).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Store, fromStored } from '../src/db.js';
import { emptyRecord, encodeRecord, mergeInto } from '../src/record.js';
import { decodeChanges } from '../src/received.js';
import { encode } from '../src/cbor.js';
import { freshIDB, IDBKeyRange } from './helpers/util.js';
import { applyRemote, outboxCounts, peekOutbox, settle } from '../src/syncstore.js';
import { merge } from '../src/parts.js';

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

const hex = (/** @type {Uint8Array} */ b) => Buffer.from(b).toString('hex');
const norm = (/** @type {any} */ r) => hex(encodeRecord(merge(emptyRecord(r.id), r)[0]));

const seed = Number(process.env.OUTBOX_SEED ?? Date.now() % 1e9);

test(`the local view is the server state plus pending changes (seed ${seed})`, async () => {
  const r = rng(seed);
  const pick = (/** @type {any[]} */ xs) => xs[Math.floor(r() * xs.length)];
  const store = new Store({ name: 'model', indexedDB: freshIDB(), IDBKeyRange });
  await store.init();
  let wall = 1_700_000_000_000;
  store.now = () => wall;
  const C = 'c';
  const ids = ['a', 'b', 'c'];
  /** @type {Map<string, any>} the server's state of each record */
  const server = new Map();
  /** @type {{seq: number, id: string, change: any}[]} */
  let pending = [];
  let cursor = 0;
  const serverOf = (/** @type {string} */ id) => server.get(id) ?? emptyRecord(id);

  try {
    for (let step = 0; step < 800; step++) {
      wall += Math.floor(r() * 3) - 1; // the wall clock wobbles
      const op = r();
      if (op < 0.5) {
        const id = pick(ids);
        const kind = r();
        const { change } = await store.write(C, id, (_cur, stamp) => {
          const ch = emptyRecord(id);
          if (kind < 0.15) ch.deleted = stamp;
          else ch.fields.set(pick(['x', 'y', 'z']), { stamp, value: kind < 0.3 ? null : encode(Math.floor(r() * 5)) });
          return ch;
        });
        const [entry] = (await peekOutbox(store, 10_000)).slice(-1);
        pending.push({ seq: entry.seq, id, change });
      } else if (op < 0.8) {
        const entries = await peekOutbox(store, 1 + Math.floor(r() * 4));
        const settled = entries.map((entry) => ({ entry, refused: r() < 0.3 }));
        await settle(store, settled);
        for (const { entry, refused } of settled) {
          const p = pending.find((x) => x.seq === entry.seq);
          assert.ok(p, 'settled entry is pending in the model');
          if (!refused) server.set(p.id, merge(serverOf(p.id), p.change)[0]);
          pending = pending.filter((x) => x.seq !== entry.seq);
          // What the outbox held is the change the write made.
          assert.equal(norm(decodeChanges(Uint8Array.of(0x81, ...entry.change))[0].record), norm(p.change));
        }
      } else {
        // Another replica's change arrives from the server.
        const id = pick(ids);
        const rec = emptyRecord(id);
        const stamp = { wall: wall + Math.floor(r() * 5) - 2, logical: Math.floor(r() * 3), replica: pick(['p', 'q']) };
        if (r() < 0.15) rec.deleted = stamp;
        else rec.fields.set(pick(['x', 'y', 'z']), { stamp, value: r() < 0.2 ? null : encode('remote' + Math.floor(r() * 3)) });
        const merged = merge(serverOf(id), rec)[0];
        server.set(id, merged);
        await applyRemote(store, C, [merged], ++cursor);
      }
      // The invariant, for every record.
      for (const id of ids) {
        const want = serverOf(id);
        const view = merge(want, emptyRecord(id))[0];
        for (const p of pending) if (p.id === id) mergeInto(view, p.change);
        const stored = await store.get(C, id);
        const got = fromStored(stored, id);
        assert.equal(norm(got), norm(view), `step ${step}: view of ${id}`);
        const hasPending = pending.some((p) => p.id === id);
        assert.equal(stored?.b !== undefined, hasPending, `step ${step}: ${id} keeps the server state aside exactly while changes are pending`);
      }
    }
    assert.equal((await outboxCounts(store)).pending, pending.length);
  } catch (e) {
    /** @type {any} */ (e).message = `seed ${seed} (rerun with OUTBOX_SEED=${seed}): ${/** @type {any} */ (e).message}`;
    throw e;
  } finally {
    store.close();
  }
});
