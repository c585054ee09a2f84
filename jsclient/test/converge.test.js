// Convergence simulation: clients write concurrently while going offline
// and online, the server loses push answers, and in the end every client
// holds exactly the server's records. A failure prints the seed
// (CONVERGE_SEED=... reruns it).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FakeServer } from './helpers/server.js';
import { openClient, until } from './helpers/util.js';
import { encodeRecord } from '../src/record.js';
import { fromStored } from '../src/db.js';

/** mulberry32 */
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

/**
 * The records of collection c in a client, encoded, by id.
 * @param {any} db
 * @param {string} c
 */
async function state(db, c) {
  const out = new Map();
  for (const s of await db.store.list(c)) out.set(s.id, hex(encodeRecord(fromStored(s, s.id))));
  return out;
}

const seed = Number(process.env.CONVERGE_SEED ?? Date.now() % 1e9);

test(`clients converge under concurrent writes, pauses and lost answers (seed ${seed})`, async (t) => {
  const r = rng(seed);
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const clients = [];
  for (let i = 0; i < 3; i++) {
    clients.push(await openClient({ url: server.url, name: 'c' + i, collections: ['sim'], WebSocket: i === 2 ? null : undefined, pollInterval: 30 }));
  }
  t.after(() => Promise.all(clients.map((c) => c.close())));
  const ids = ['a', 'b', 'c', 'd'];
  const fields = ['x', 'y', 'z'];
  const pick = (/** @type {any[]} */ xs) => xs[Math.floor(r() * xs.length)];
  try {
    for (let step = 0; step < 120; step++) {
      const c = pick(clients);
      const coll = c.collection('sim');
      const op = r();
      const id = pick(ids);
      if (op < 0.35) await coll.update(id, { [pick(fields)]: Math.floor(r() * 100) });
      else if (op < 0.55) await coll.put(id, { [pick(fields)]: pick(['p', 'q', 1.5, null, [1]]) });
      else if (op < 0.65) await coll.update(id, { [pick(fields)]: undefined });
      else if (op < 0.75) await coll.delete(id);
      else if (op < 0.82) await (c.status.paused ? c.resume() : c.pause());
      else if (op < 0.86) server.dropPushAnswers += 1;
      else if (op < 0.9) server.dropSockets();
      else await new Promise((res) => setTimeout(res, Math.floor(r() * 15)));
    }
    for (const c of clients) c.resume();
    server.dropPushAnswers = 0;
    await until(() => clients.every((c) => c.status.pending === 0), 'every outbox drained', 15000);
    for (const c of clients) await c.sync();
    const want = new Map([...server.coll('sim').byId].map(([id, e]) => [id, hex(encodeRecord(e.record))]));
    for (const [i, c] of clients.entries()) {
      assert.deepEqual(await state(c, 'sim'), want, `client ${i} differs from the server`);
    }
  } catch (e) {
    /** @type {any} */ (e).message = `seed ${seed} (rerun with CONVERGE_SEED=${seed}): ${/** @type {any} */ (e).message}`;
    throw e;
  }
});
