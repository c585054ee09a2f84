// Reconciling a collection after the server reset it lease_expired
// (docs/protocol.md, "Tombstone collection"): this replica stayed away
// longer than the collection's maximum offline period, so the server may
// have collected the tombstones of records deleted meanwhile. Only the
// client knows which records the server once acknowledged, so it decides:
// after a full pull from the beginning, a record it holds that the server
// acknowledged once and no longer serves was deleted and collected. It is
// dropped locally (no delete, nothing pushed) and its pending changes
// become rejected changes with code collected; everything else stays and
// is pushed, and a change the server refuses collected whose record it
// still has, or that was created here, is written again with fresh
// stamps (Syncer.pushAll, through the rejected changes' retry), once.
//
// The collection's outbox waits meanwhile: the reset notes the
// reconciliation owed in IndexedDB (meta "reconcile:<collection>", so a
// reload still owes it), and the Syncer pulls (so reconciles) a
// collection it has not pulled lately before it pushes its changes.
// Loaded on demand (sync.js imports it), like heal.js.

import { STATUSES } from './constants.js';
import { isZeroStamp } from './hlc.js';
import { META, OUTBOX, RECONCILE_KEY, RECORDS, REJECTED, SEALED, baseOf, rejectedEntry, req } from './db.js';

/** @typedef {import('./db.js').Store} Store */
/** @typedef {import('./db.js').OutboxEntry} OutboxEntry */
/** @typedef {import('./db.js').StoredRecord} StoredRecord */
/** @typedef {import('./sync.js').Syncer} Syncer */
/** @typedef {import('./protocol.js').PushResult} PushResult */

/** The message of the rejected changes of records the server collected. */
export const COLLECTED_MESSAGE = 'deleted on the server while this device was away';

/**
 * Pulls collection c from the beginning, drops what the server collected
 * (dropCollected) and notes, for the push that follows, which changes may
 * be written again after a collected refusal. The push is the caller's.
 * @param {Syncer} syncer
 * @param {string} c
 */
export async function reconcile(syncer, c) {
  /** @type {Set<string>} */
  const seen = new Set();
  await syncer.pullCollection(c, seen);
  const out = await dropCollected(syncer.store, c, seen, { when: Date.now(), subject: syncer.subject() });
  syncer.pulledAt.set(c, Date.now());
  syncer.restamp.set(c, { ids: out.keep, upTo: out.upTo });
  const before = syncer.reconciled.get(c);
  syncer.reconciled.set(c, {
    collection: c,
    dropped: (before?.dropped ?? 0) + out.dropped.length,
    rejected: (before?.rejected ?? 0) + out.moved.length,
    restamped: before?.restamped ?? 0,
  });
  if (out.dropped.length > 0) syncer.o.onChanges(c, out.dropped);
  let dropped = out.droppedRejected;
  for (const m of out.moved) {
    syncer.o.onRefused({ collection: c, id: m.id, code: 'collected', message: COLLECTED_MESSAGE, requestId: null, rejectedId: m.rejectedId, dropped });
    dropped = 0;
  }
  syncer.o.onStatus(await syncer.store.outboxCounts());
}

/**
 * In one transaction, after a full pull of collection c that delivered
 * the records seen: every record held that the server acknowledged once
 * (its server state is not empty) and that the pull did not deliver is
 * removed (live queries hear it go; no delete, nothing in the outbox),
 * and its pending changes move to the rejected changes with code
 * collected (the oldest rejected changes dropped past the bounds); the
 * reconciliation owed is settled. Returns the ids dropped, the changes
 * moved, how many old rejected changes were dropped, the ids whose
 * changes may be written again after a collected refusal (delivered, or
 * never acknowledged) and the newest outbox entry of c.
 * @param {Store} store
 * @param {string} c
 * @param {Set<string>} seen
 * @param {{when: number, subject: string|null}} info
 * @returns {Promise<{dropped: string[], moved: {id: string, rejectedId: number}[], droppedRejected: number, keep: Set<string>, upTo: number}>}
 */
export function dropCollected(store, c, seen, info) {
  const range = store.keyRange.bound([c], [c, []]);
  return store.tx([RECORDS, OUTBOX, REJECTED, META, SEALED], 'readwrite', `reconcile ${c}`, async (tx) => {
    const records = tx.objectStore(RECORDS);
    const outbox = tx.objectStore(OUTBOX);
    const [held, entries] = await Promise.all([
      /** @type {Promise<StoredRecord[]>} */ (req(records.getAll(range))),
      /** @type {Promise<OutboxEntry[]>} */ (req(outbox.index('record').getAll(range))),
    ]);
    /** @type {Map<string, OutboxEntry[]>} */
    const pending = new Map();
    let upTo = 0;
    for (const e of entries) {
      upTo = Math.max(upTo, e.seq);
      const list = pending.get(e.id);
      if (list) list.push(e);
      else pending.set(e.id, [e]);
    }
    const keep = new Set(seen);
    /** @type {string[]} */
    const dropped = [];
    /** @type {{id: string, rejectedId: number}[]} */
    const moved = [];
    for (const s of held) {
      if (seen.has(s.id)) continue;
      if (unacknowledged(s)) {
        keep.add(s.id); // created here: it stays and is pushed
        continue;
      }
      records.delete([c, s.id]);
      tx.objectStore(SEALED).delete([c, s.id]);
      store.notify(tx, c, s.id, null, 'remote');
      dropped.push(s.id);
      for (const e of (pending.get(s.id) ?? []).sort((a, b) => a.seq - b.seq)) {
        outbox.delete(e.seq);
        const rejectedId = /** @type {number} */ (await req(tx.objectStore(REJECTED).add(rejectedEntry(e, 'collected', COLLECTED_MESSAGE, null, info))));
        moved.push({ id: s.id, rejectedId });
      }
    }
    const droppedRejected = moved.length > 0 ? await store.boundRejected(tx) : 0;
    tx.objectStore(META).delete(RECONCILE_KEY + c);
    return { dropped, moved, droppedRejected, keep, upTo };
  });
}

/**
 * Whether stored record s has changes pending over an empty server state:
 * the server never acknowledged it (created here, neither a push of it
 * acknowledged nor a page brought it).
 * @param {StoredRecord|undefined} s
 */
export function unacknowledged(s) {
  const base = s ? baseOf(s, s.id) : null;
  return base !== null && isZeroStamp(base.deleted) && base.fields.size === 0;
}

/**
 * The positions in a pushed batch of the changes refused collected that
 * are to be written again with fresh stamps (Syncer.pushAll): those whose
 * record the server still has (the full pull of a reconciliation
 * delivered it) or never acknowledged (created here). Only changes
 * queued before the first is written again (state.upTo, set then) qualify,
 * so none is written again twice. Anything else refused collected stays
 * rejected.
 * @param {Syncer} syncer
 * @param {OutboxEntry[]} batch
 * @param {PushResult[]} results
 * @param {{upTo: number|null}} state of one pushAll
 * @returns {Promise<Set<number>>}
 */
export async function restampable(syncer, batch, results, state) {
  const store = syncer.store;
  if (state.upTo === null) {
    state.upTo = await store.tx([OUTBOX], 'readonly', 'read outbox', async (tx) => {
      const r = await req(tx.objectStore(OUTBOX).openKeyCursor(null, 'prev'));
      return r ? /** @type {number} */ (r.key) : 0;
    });
  }
  const upTo = state.upTo;
  const held = await store.tx([RECORDS], 'readonly', 'read records', (tx) => {
    const records = tx.objectStore(RECORDS);
    return Promise.all(batch.map((e, i) => (results[i].code === 'collected' ? /** @type {Promise<StoredRecord|undefined>} */ (req(records.get([e.c, e.id]))) : undefined)));
  });
  /** @type {Set<number>} */
  const out = new Set();
  batch.forEach((e, i) => {
    const r = results[i];
    if (r.status !== STATUSES.refused || r.code !== 'collected' || e.seq > upTo) return;
    const kept = syncer.restamp.get(e.c);
    if ((kept && kept.ids.has(e.id) && e.seq <= kept.upTo) || unacknowledged(held[i])) out.add(i);
  });
  return out;
}
