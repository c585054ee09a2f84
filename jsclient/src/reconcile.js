// Reconciling a collection after the server reset it lease_expired
// (docs/protocol.md, "Tombstone collection"): this replica stayed away
// longer than the collection's maximum offline period, so the server may
// have collected the tombstones of records deleted meanwhile. Only the
// client knows which records the server once acknowledged, so it decides:
// after a full pull from the beginning, a record it holds that the server
// acknowledged once and no longer serves was deleted and collected, or
// the server lost it: so this subject's stamps of it (and those the
// pull's replace of a delivered record dropped) are given back first, an
// ordinary push (heal.js's giveBack), and only a record whose stamps all
// come back refused collected is dropped locally (no delete, nothing else
// pushed) and its pending changes
// become rejected changes with code collected; everything else stays and
// is pushed, and a change the server refuses collected whose record it
// still has, or that was created here, is written again with fresh
// stamps (Syncer.pushAll, restampRefused), once: which may be is noted in
// IndexedDB in the reconciliation's transaction (meta
// "restamp:<collection>", the keys of those outbox entries, each kept
// until a push of the outbox takes its entry: Syncer.pushAll), so a
// reload, or a push that ends with them still waiting (their pull first
// failed), before their push changes nothing; only what the record as
// this client knows it neither hides nor beats (a change left empty is
// settled like a superseded one). A change refused collected that no
// reconciliation noted (no reset came: an edit left pending past the
// write horizon, a reader with no lease) asks for one: it stays in the
// outbox, marked, and its collection owes a reconciliation
// (holdRefused); that one rejects it with its record or writes it again
// at once (restampHeld). Each is held once and written again once (its
// outbox entry is marked). The pull from the beginning replaces
// the server state held by each record it delivers (syncstore.js's applyRemote's
// replace): merged, the fields hidden by tombstones the server collected
// would stay here for ever.
//
// The collection's outbox waits meanwhile: the reset notes the
// reconciliation owed in IndexedDB (meta "reconcile:<collection>", so a
// reload still owes it), and the Syncer pulls (so reconciles) a
// collection it has not pulled lately before it pushes its changes.
//
// A replica's first pull of a collection it pushed to reconciles the same
// way without any reset (syncstore.js firstPullReconciles): it held no lease
// until then, so the server may have collected what it pushed and was
// deleted since, and a read from the beginning is never reset
// lease_expired. Its steps are the first two (docs/protocol.md, "A pull
// from the beginning reconciles too"): the records delivered replace the
// ones held, and what the server collected is dropped with its pending
// changes, after the give-back: an empty cursor carries no store
// identity, so a store that went back in time resets it not, and the
// records it lost are absent too; given back, they stay. A give-back that
// fails drops nothing and notes the reconciliation owed (meta
// "reconcile:<collection>"): the next pull makes it again. Its outbox went out before (the collection had no cursor:
// Syncer.fresh), so nothing is noted for a re-stamp: a change refused
// collected then asks for a reconciliation of its own (holdRefused). Such a
// reconciliation is reported (the 'reconciled' event) only when it
// dropped or rejected something: it follows every first sync after
// offline writes.
//
// After a heal (a reset history_lost), the records whose every give-back
// the server refused collected and that the reading from the beginning
// after it did not deliver are dropped the same way, their pending
// changes rejected with code collected (dropHealed): the server deleted
// and collected them while this replica was away.
//
// Loaded on demand (sync.js imports it), like heal.js.

import { STATUSES } from './constants.js';
import { compareStamps, isZeroStamp } from './hlc.js';
import { emptyRecord, mergeInto } from './record.js';
import { checked, giveBack } from './heal.js';
import { META, OUTBOX, RECORDS, REJECTED, SCHEMA_KEY, baseOf, fromStored, req } from './db.js';
import { OVERTAKEN, acknowledged, heldIds, outboxCounts, prepareRemote, putPage, settle, storedCursor } from './syncstore.js';
import { cloneRecord } from './parts.js';
import { boundRejected, decodeEntry, rejectedEntry } from './change.js';
import { CURSOR_KEY, FIRST_PULL, GIVEBACK_KEY, RECONCILE_KEY, RESTAMP_KEY, SEALED } from './metakeys.js';
import { equalBytes } from './cbor.js';
import { isPrefix, replicaId } from './replica.js';

/** @typedef {import('./db.js').Store} Store */
/** @typedef {import('./db.js').OutboxEntry} OutboxEntry */
/** @typedef {import('./db.js').StoredRecord} StoredRecord */
/** @typedef {import('./sync.js').Syncer} Syncer */
/** @typedef {import('./protocol.js').PushResult} PushResult */
/** @typedef {import('./record.js').Record} Rec */

/** The message of the rejected changes of records the server collected. */
export const COLLECTED_MESSAGE = 'deleted on the server and collected before this device learnt of the delete';

/**
 * Pulls collection c from the beginning, drops what the server collected
 * (dropCollected) and notes, for the push that follows, which changes may
 * be written again after a collected refusal. The push is the caller's.
 * A first pull's reconciliation (first: no reset asked for it) notes no
 * change for a re-stamp, and is noted for the 'reconciled' event only
 * when it dropped or rejected something.
 *
 * Without Web Locks another tab pulls too. A page of this pull is written
 * only over the cursor it builds on, and the drop is made only while the
 * cursor the pull's last page stored is still stored (dropCollected's
 * after): else another tab pulled since, and a record it pulled may be
 * one this pull did not deliver, created again after the pull passed it
 * (or whose give-back the server refused collected since). Nothing is
 * dropped then; the reconciliation stays owed, and is made again from the
 * beginning (at most OVERTAKEN times; then the next pull makes it).
 * @param {Syncer} syncer
 * @param {string} c
 * @param {boolean} [first]
 * @param {number} [overtaken] how often this reconciliation started again
 * @returns {Promise<void>}
 */
export async function reconcile(syncer, c, first = false, overtaken = 0) {
  // A first pull's reconciliation is noted as under way: its pages store
  // cursors, after which a pull of the collection is no longer a first
  // one, so one cut short (the network, a reload) would otherwise never
  // be made. The next pull goes on from the cursor stored (a store that
  // went back in time since resets it, and is healed) and then makes it
  // again from the beginning, a first pull's still
  // (Syncer.pullCollection); its end (dropCollected) settles it.
  // One owed already (another tab's reset, without Web Locks) stays as
  // it is.
  if (first && overtaken === 0) {
    await syncer.store.tx([META], 'readwrite', `reconcile ${c} first`, async (tx) => {
      const meta = tx.objectStore(META);
      if ((await req(meta.get(RECONCILE_KEY + c))) === undefined) meta.put(FIRST_PULL, RECONCILE_KEY + c);
    });
  }
  const again = async () => {
    // A first pull's reconciliation is owed from now on, as a reset's is.
    if (first) await syncer.store.setMeta(RECONCILE_KEY + c, true);
    if (overtaken < OVERTAKEN) return reconcile(syncer, c, first, overtaken + 1);
  };
  /** @type {Set<string>} */
  const seen = new Set();
  // What the pull may judge: without Web Locks another tab syncs too, and
  // a record it pulls meanwhile (a page answered after this pull's) is
  // not this pull's to drop.
  const before = new Set(await heldIds(syncer.store, c));
  const last = await syncer.pullCollection(c, seen);
  if (!last) return again();
  /** @type {Awaited<ReturnType<typeof giveBack>>} */
  let back;
  try {
    back = await giveBack(syncer, c, seen, before);
  } catch (e) {
    // Nothing is dropped; the reconciliation is owed (a reset's is
    // already), so the next pull reconciles and gives back again.
    if (first) await syncer.store.setMeta(RECONCILE_KEY + c, true);
    throw e;
  }
  for (const id of back.kept.keys()) seen.add(id);
  const out = await dropCollected(syncer.store, c, seen, { when: Date.now(), subject: syncer.subject() }, !first, back.restore, back.kept, before, last);
  if (!out) return again();
  if (out.restored.length > 0) syncer.o.onChanges(c, out.restored);
  syncer.pulledAt.set(c, Date.now());
  syncer.restampsDropped = false;
  const restamped = out.held.length > 0 ? await restampHeld(syncer, c, out.held) : 0;
  await reported(syncer, c, out, first, restamped);
}

/**
 * Tells the app what a drop of collection c's collected records did (out,
 * of dropRecords): live queries hear the records go, each pending change
 * moved is a refusal with code collected, and the reconciliation is noted
 * for the 'reconciled' event (pushAll's, once the outbox went out), when
 * quiet only if something was dropped or rejected.
 * @param {Syncer} syncer
 * @param {string} c
 * @param {{dropped: string[], moved: {id: string, rejectedId: number}[], droppedRejected: number}} out
 * @param {boolean} quiet
 * @param {number} [restamped] pending changes it wrote again (restampHeld)
 */
async function reported(syncer, c, out, quiet, restamped = 0) {
  if (!quiet || out.dropped.length > 0 || out.moved.length > 0) {
    const before = syncer.reconciled.get(c);
    syncer.reconciled.set(c, {
      collection: c,
      dropped: (before?.dropped ?? 0) + out.dropped.length,
      rejected: (before?.rejected ?? 0) + out.moved.length,
      restamped: (before?.restamped ?? 0) + restamped,
    });
  }
  if (out.dropped.length > 0) syncer.o.onChanges(c, out.dropped);
  let dropped = out.droppedRejected;
  for (const m of out.moved) {
    syncer.o.onRefused({ collection: c, id: m.id, code: 'collected', message: COLLECTED_MESSAGE, requestId: null, rejectedId: m.rejectedId, dropped });
    dropped = 0;
  }
  syncer.o.onStatus(await outboxCounts(syncer.store));
}

/**
 * Drops the records ids of collection c that a heal gave back, the server
 * refused collected, and the reading from the beginning after the heal
 * did not deliver (heal.js's checkHeal): deleted and collected, as a
 * reconciliation drops them (dropRecords), and told to the app as one
 * (reported); the heal check kept is settled in the same transaction.
 * With after (the cursor the reading's last page stored), nothing is
 * done, and false returned, if another cursor is stored: without Web
 * Locks another tab pulled since, and a record it pulled may be one of
 * ids, created again after that reading passed it.
 * @param {Syncer} syncer
 * @param {string} c
 * @param {Set<string>} ids
 * @param {Uint8Array|null} [after]
 * @returns {Promise<boolean>} whether the drop was made
 */
export async function dropHealed(syncer, c, ids, after = null) {
  const info = { when: Date.now(), subject: syncer.subject() };
  const out = await syncer.store.tx([RECORDS, OUTBOX, REJECTED, SEALED, META], 'readwrite', `heal ${c}`, async (tx) => {
    if (after && !equalBytes(storedCursor(await req(tx.objectStore(META).get(CURSOR_KEY + c))), after)) return null;
    checked(syncer.store, c, tx);
    const { held, pending } = await readHeld(syncer.store, tx, c);
    return dropRecords(syncer.store, tx, c, held.filter((s) => ids.has(s.id) && acknowledged(s)), pending, info);
  });
  if (!out) return false;
  await reported(syncer, c, out, true);
  return true;
}

/**
 * The records held of collection c, and the pending outbox entries of
 * each, oldest first, read in transaction tx.
 * @param {Store} store
 * @param {IDBTransaction} tx
 * @param {string} c
 * @returns {Promise<{held: StoredRecord[], entries: OutboxEntry[], pending: Map<string, OutboxEntry[]>}>}
 */
async function readHeld(store, tx, c) {
  const range = store.keyRange.bound([c], [c, []]);
  const [held, entries] = await Promise.all([
    /** @type {Promise<StoredRecord[]>} */ (req(tx.objectStore(RECORDS).getAll(range))),
    /** @type {Promise<OutboxEntry[]>} */ (req(tx.objectStore(OUTBOX).index('record').getAll(range))),
  ]);
  /** @type {Map<string, OutboxEntry[]>} */
  const pending = new Map();
  for (const e of entries.sort((a, b) => a.seq - b.seq)) {
    const list = pending.get(e.id);
    if (list) list.push(e);
    else pending.set(e.id, [e]);
  }
  return { held, entries, pending };
}

/**
 * In transaction tx, drops the records gone of collection c, which the
 * server deleted and collected: each is removed (live queries hear it go;
 * no delete, nothing in the outbox), and its pending changes (pending)
 * move to the rejected changes with code collected (the oldest rejected
 * changes dropped past the bounds). Returns the ids dropped, the changes
 * moved and how many old rejected changes were dropped. A reconciliation
 * (dropCollected) and the reading after a heal (dropHealed) drop this way.
 * @param {Store} store
 * @param {IDBTransaction} tx
 * @param {string} c
 * @param {StoredRecord[]} gone
 * @param {Map<string, OutboxEntry[]>} pending
 * @param {{when: number, subject: string|null}} info
 */
async function dropRecords(store, tx, c, gone, pending, info) {
  /** @type {string[]} */
  const dropped = [];
  /** @type {{id: string, rejectedId: number}[]} */
  const moved = [];
  for (const s of gone) {
    tx.objectStore(RECORDS).delete([c, s.id]);
    tx.objectStore(SEALED).delete([c, s.id]);
    store.notify(tx, c, s.id, null, 'remote');
    dropped.push(s.id);
    for (const e of pending.get(s.id) ?? []) {
      tx.objectStore(OUTBOX).delete(e.seq);
      const rejectedId = /** @type {number} */ (await req(tx.objectStore(REJECTED).add(rejectedEntry(e, 'collected', COLLECTED_MESSAGE, null, info))));
      moved.push({ id: s.id, rejectedId });
    }
  }
  const droppedRejected = moved.length > 0 ? await boundRejected(tx) : 0;
  return { dropped, moved, droppedRejected };
}

/**
 * In one transaction, after a full pull of collection c that delivered
 * the records seen: every record held that the server acknowledged once
 * (its server state is not empty) and that the pull did not deliver is
 * removed (live queries hear it go; no delete, nothing in the outbox),
 * and its pending changes move to the rejected changes with code
 * collected (the oldest rejected changes dropped past the bounds); the
 * reconciliation owed is settled; with restamp, the keys of the outbox
 * entries of c that may be written again after a collected refusal
 * (their record was delivered, or never acknowledged) are noted in meta
 * "restamp:<collection>" (restampable). Returns the ids dropped, the
 * changes moved, how many old rejected changes were dropped, the records
 * the stamps given back changed and, with restamp, the entries noted that
 * were held for this reconciliation (holdRefused: restampHeld writes them
 * again).
 * @param {Store} store
 * @param {string} c
 * @param {Set<string>} seen
 * @param {{when: number, subject: string|null}} info
 * @param {boolean} [restamp] note what may be re-stamped (after a reset
 *   lease_expired; a first pull's reconciliation notes nothing)
 * @param {Rec[]} [restore] stamps given back (giveBack) of records the
 *   pull delivered, which its replace had dropped: merged into the server
 *   state of those held, as if the server had sent them
 * @param {Map<string, Rec>} [kept] of records the pull did not deliver
 *   that stay, the stamps given back that the server took: their server
 *   state from now on (their pending changes stay over it)
 * @param {Set<string>|null} [before] the ids held when the pull began
 *   (syncstore.js's heldIds): a record held now that was not stays, as if
 *   delivered: without Web Locks another tab syncs too, and a record it
 *   pulled meanwhile came in a page answered after this pull's, which
 *   cannot say it is gone
 * @param {Uint8Array|null} [after] the cursor the pull's last page
 *   stored: if another is stored, nothing is done and the result is
 *   null (without Web Locks another tab pulled since, and a record it
 *   pulled may be one the pull did not deliver, created again since)
 * @returns {Promise<{dropped: string[], moved: {id: string, rejectedId: number}[], droppedRejected: number, restored: string[], held: OutboxEntry[]}|null>}
 */
export function dropCollected(store, c, seen, info, restamp = true, restore = [], kept = new Map(), before = null, after = null) {
  return store.tx([RECORDS, OUTBOX, REJECTED, META, SEALED], 'readwrite', `reconcile ${c}`, async (tx) => {
    if (after && !equalBytes(storedCursor(await req(tx.objectStore(META).get(CURSOR_KEY + c))), after)) return null;
    const { held, entries, pending } = await readHeld(store, tx, c);
    const keep = new Set(seen);
    /** @type {StoredRecord[]} */
    const gone = [];
    for (const s of held) {
      if (seen.has(s.id)) continue;
      // Pulled since by another tab, or created here: it stays (and is
      // pushed).
      if ((before && !before.has(s.id)) || unacknowledged(s)) keep.add(s.id);
      else gone.push(s);
    }
    const { dropped, moved, droppedRejected } = await dropRecords(store, tx, c, gone, pending, info);
    // The stamps given back that join their delivered record again, and
    // those that are all the server holds of a record it had lost.
    const heldOf = new Map(held.map((s) => [s.id, s]));
    const back = [...restore, ...kept.values()].filter((r) => seen.has(r.id) && heldOf.has(r.id));
    /** @type {Map<string, Rec[]>} */
    const taken = new Map();
    for (const id of kept.keys()) taken.set(id, (pending.get(id) ?? []).map((e) => decodeEntry(e.change)));
    const page = prepareRemote(store, c, back, [], back.map((r) => heldOf.get(r.id)), taken);
    putPage(store, tx, c, page);
    const meta = tx.objectStore(META);
    meta.delete(RECONCILE_KEY + c);
    meta.delete(GIVEBACK_KEY + c);
    /** @type {OutboxEntry[]} */
    let waiting = [];
    if (restamp) {
      const kept = entries.filter((e) => keep.has(e.id));
      const noted = kept.map((e) => e.seq);
      if (noted.length > 0) meta.put(noted, RESTAMP_KEY + c);
      else meta.delete(RESTAMP_KEY + c);
      waiting = kept.filter((e) => e.collected !== undefined && (e.r === undefined || e.r === store.replica));
    }
    return { dropped, moved, droppedRejected, restored: [...page.changed], held: waiting };
  });
}

/**
 * Whether stored record s is held and its server state is empty: the
 * server never acknowledged it (created here, neither a push of it
 * acknowledged nor a page brought it; Store's acknowledged).
 * @param {StoredRecord|undefined} s
 */
export function unacknowledged(s) {
  return s !== undefined && !acknowledged(s);
}

/**
 * Of the changes of a pushed batch refused collected, those to write again
 * with fresh stamps now (again: Syncer.pushAll, restampRefused) and those
 * to hold for a reconciliation of their collection (hold: holdRefused).
 * Written again: those a reconciliation noted (their record was
 * delivered by its full pull, or never acknowledged: meta
 * "restamp:<collection>", which outlives a reload). Held: the others
 * refused collected for the first time, outside a reconciliation (a
 * reader without a lease, an edit left pending past the write horizon:
 * docs/protocol.md, "Tombstone collection"); the reconciliation notes
 * them or drops them with their record. Neither, so rejected: a change
 * written again already (outbox entry marked restamped) or held once
 * already (marked collected), so none is written again twice, nor held
 * for ever.
 * @param {Syncer} syncer
 * @param {OutboxEntry[]} batch
 * @param {PushResult[]} results
 * @returns {Promise<{again: Set<number>, hold: Set<number>}>}
 */
export async function restampable(syncer, batch, results) {
  const refused = (/** @type {number} */ i) => results[i].status === STATUSES.refused && results[i].code === 'collected';
  const cs = [...new Set(batch.filter((_e, i) => refused(i)).map((e) => e.c))];
  const kept = await syncer.store.tx([META], 'readonly', 'read notes', (tx) => Promise.all(cs.map((c) => req(tx.objectStore(META).get(RESTAMP_KEY + c)))));
  /** @type {Set<number>} the outbox entries reconciliations noted */
  const noted = new Set(kept.flatMap((v) => (Array.isArray(v) ? v : [])));
  const out = { again: new Set(), hold: new Set() };
  batch.forEach((e, i) => {
    if (!refused(i) || e.restamped) return;
    if (noted.has(e.seq)) out.again.add(i);
    else if (e.collected === undefined) out.hold.add(i);
  });
  return out;
}

/**
 * Holds the outbox entries items, refused collected outside a
 * reconciliation (restampable), for one: each stays in the outbox,
 * marked collected (with the server's message), and their collections
 * owe a reconciliation (meta "reconcile:<collection>"), in one
 * transaction, so a reload still makes it before they go again. The
 * reconciliation drops those whose record the server collected (rejected
 * collected) and writes the others again at once (reconcile, restampHeld).
 * An entry no longer in the outbox was settled already, by another tab
 * that syncs too (without Web Locks every tab does, and may have held,
 * reconciled and written it again meanwhile): it is not put back.
 * @param {Store} store
 * @param {{entry: OutboxEntry, message: string}[]} items
 * @returns {Promise<void>}
 */
export function holdRefused(store, items) {
  return store.tx([OUTBOX, META], 'readwrite', 'hold refused changes', async (tx) => {
    const outbox = tx.objectStore(OUTBOX);
    const current = /** @type {(OutboxEntry|undefined)[]} */ (await Promise.all(items.map(({ entry }) => req(outbox.get(entry.seq)))));
    items.forEach(({ message }, i) => {
      const e = current[i];
      if (!e) return;
      outbox.put({ ...e, collected: message });
      tx.objectStore(META).put(true, RECONCILE_KEY + e.c);
    });
  });
}

/**
 * After collection c's reconciliation: writes again at once, with fresh
 * stamps, the outbox entries held for it (holdRefused) that it noted (of
 * records the server still has, or created here): refused collected
 * already, pushed as they are they would be refused again (the horizon
 * only goes up). As pushAll does with a change refused collected that a
 * reconciliation noted: settled as refused, then restampRefused, and told
 * the app alike. Returns how many were written again.
 * @param {Syncer} syncer
 * @param {string} c
 * @param {OutboxEntry[]} held
 * @returns {Promise<number>}
 */
async function restampHeld(syncer, c, held) {
  const settled = held.map((entry) => ({ entry, refused: true, code: 'collected', message: entry.collected ?? '', requestId: null }));
  const settledNow = await settle(syncer.store, settled, { when: Date.now(), subject: syncer.subject() });
  const { changed, rejected } = settledNow;
  let dropped = settledNow.dropped;
  const items = held.filter((e) => rejected.has(e.seq)).map((entry) => ({ entry, rid: /** @type {number} */ (rejected.get(entry.seq)) }));
  const out = await restampRefused(syncer.store, items, new Map());
  let written = 0;
  items.forEach(({ entry, rid }, k) => {
    const re = out[k];
    if (!re) {
      // Not written again (another subject's, or of a version this code
      // does not write): it stays rejected.
      syncer.o.onRefused({ collection: c, id: entry.id, code: 'collected', message: entry.collected ?? '', requestId: null, rejectedId: rid, dropped });
      dropped = 0;
      return;
    }
    if (re.written) written++;
    if (!re.written || re.lost.length > 0) syncer.o.onSuperseded({ collection: c, id: entry.id, lost: re.lost, status: re.written ? 'applied' : 'superseded' });
  });
  for (const [x, ids] of changed) syncer.o.onChanges(x, ids);
  return written;
}

/**
 * What is left of change old, refused collected, to write again with
 * fresh stamps, given known: the record as this client knows it without
 * old (the server's state it holds, with its other pending changes, at
 * their original stamps). Only what known neither hides nor beats: a
 * field (or unset) stamped at or before known's delete, or older than
 * known's stamp of that field, is left out (lost); a delete of a record
 * with a field written after it becomes unsets of the fields it would
 * have hidden. null when nothing is left.
 * @param {Rec} old
 * @param {Rec} known
 * @returns {{deleted: boolean, unset: string[], fields: Map<string, Uint8Array|null>, lost: string[]}|null}
 */
export function restampWhat(old, known) {
  let deleted = false;
  /** @type {string[]} */
  const unset = [];
  if (!isZeroStamp(old.deleted)) {
    let newer = false;
    for (const f of known.fields.values()) newer ||= f.value !== null && compareStamps(f.stamp, old.deleted) > 0;
    if (!newer) deleted = true;
    else {
      for (const [name, f] of known.fields) {
        if (f.value !== null && compareStamps(f.stamp, old.deleted) < 0) unset.push(name);
      }
    }
  }
  /** @type {Map<string, Uint8Array|null>} */
  const fields = new Map();
  /** @type {string[]} */
  const lost = [];
  for (const [name, f] of old.fields) {
    const cur = known.fields.get(name);
    if (compareStamps(f.stamp, known.deleted) <= 0 || (cur && compareStamps(cur.stamp, f.stamp) > 0)) lost.push(name);
    else fields.set(name, f.value);
  }
  if (!deleted && unset.length === 0 && fields.size === 0) return null;
  return { deleted, unset, fields, lost };
}

/**
 * Writes again with fresh stamps, in one transaction, the outbox entries
 * of items (in push order), which the server refused collected and which
 * were kept among the rejected changes as rid: only what the record as
 * this client knows it (the server's state it holds, its other pending
 * changes and the other changes of items, at their original stamps)
 * neither hides nor beats (restampWhat). A change that keeps something is
 * merged locally and queued as a new write (its delete first, then its
 * unsets, then its fields, each after the one before); one left empty is
 * settled, not pushed. Either way its rejected entry goes, and so does
 * its key from meta "restamp:<collection>". The entries written are
 * marked restamped: refused collected again, they stay rejected
 * (restampable). Returns, per item, whether it was written again and the
 * fields left out, or null for one this tab does not write again: it
 * stays among the rejected changes, for the app to retry, and is told as
 * a refusal. So is one written by another replica than the one this tab
 * writes as now (the token was switched to another subject since it was
 * pushed): written again, it would be pushed as the new subject's; its
 * subject retries it. And so is one of a collection whose data a tab of
 * newer code upgraded (Store.newerSchema): this code does not write in
 * its version; the app retries it in a tab of that code (in this one,
 * retry fails as every write of the collection does, asking for a
 * reload).
 *
 * originals maps the outbox entries written again by earlier calls (of
 * one push) to the changes they were written from: the record as known
 * holds those at their original stamps, not at the fresh ones; the
 * entries this call writes join it.
 * @param {Store} store
 * @param {{entry: OutboxEntry, rid: number}[]} items
 * @param {Map<number, Rec>} originals
 * @returns {Promise<({written: boolean, lost: string[]}|null)[]>}
 */
export function restampRefused(store, items, originals) {
  return store.tx([RECORDS, OUTBOX, META, REJECTED], 'readwrite', 'write refused changes again', async (tx) => {
    // The replica the writes below stamp as (writeIn reads the prefix
    // the same way, in this transaction), and the collections a tab of
    // newer code upgraded, which this one does not write (writeIn).
    const meta = tx.objectStore(META);
    const cs = [...new Set(items.map((x) => x.entry.c))];
    const [prefix, ...schemas] = await Promise.all([req(meta.get('prefix')), ...cs.map((c) => req(meta.get(SCHEMA_KEY + c)))]);
    const as = isPrefix(prefix) && store.device !== null ? replicaId(prefix, store.device) : store.replica;
    const newer = new Set(cs.filter((c, i) => store.newerSchema(c, schemas[i])));
    const records = tx.objectStore(RECORDS);
    const index = tx.objectStore(OUTBOX).index('record');
    const keys = [...new Map(items.map((x) => [JSON.stringify([x.entry.c, x.entry.id]), [x.entry.c, x.entry.id]])).values()];
    const read = await Promise.all(
      keys.map(async ([c, id]) => {
        const [s, pending] = await Promise.all([
          /** @type {Promise<StoredRecord|undefined>} */ (req(records.get([c, id]))),
          /** @type {Promise<OutboxEntry[]>} */ (req(index.getAll([c, id]))),
        ]);
        const server = s ? (baseOf(s, id) ?? fromStored(s, id)) : emptyRecord(id);
        for (const e of pending.sort((a, b) => a.seq - b.seq)) mergeInto(server, originals.get(e.seq) ?? decodeEntry(e.change));
        return /** @type {[string, Rec]} */ ([JSON.stringify([c, id]), server]);
      }),
    );
    const held = new Map(read);
    const olds = items.map((x) => decodeEntry(x.entry.change));
    /** @type {({written: boolean, lost: string[]}|null)[]} */
    const out = [];
    /** @type {Map<string, {id: string, build: import('./db.js').Build, old: Rec}[]>} per collection */
    const writes = new Map();
    items.forEach((x, i) => {
      const key = JSON.stringify([x.entry.c, x.entry.id]);
      const known = cloneRecord(/** @type {Rec} */ (held.get(key)));
      items.forEach((y, j) => {
        if (j !== i && y.entry.c === x.entry.c && y.entry.id === x.entry.id) mergeInto(known, olds[j]);
      });
      if ((x.entry.r !== undefined && x.entry.r !== as) || newer.has(x.entry.c)) {
        out.push(null);
        return;
      }
      const what = restampWhat(olds[i], known);
      tx.objectStore(REJECTED).delete(x.rid);
      if (!what) {
        out.push({ written: false, lost: [...olds[i].fields.keys()] });
        return;
      }
      out.push({ written: true, lost: what.lost });
      const list = writes.get(x.entry.c) ?? [];
      list.push({
        id: x.entry.id,
        old: olds[i],
        build: (_current, stamp, next) => {
          const rec = emptyRecord(x.entry.id);
          let s = stamp;
          if (what.deleted) {
            rec.deleted = s;
            s = next(); // after the delete, so the delete does not hide them
          }
          if (what.unset.length > 0) {
            for (const name of what.unset) rec.fields.set(name, { stamp: s, value: null });
            s = next(); // after the unsets, so a field set again wins
          }
          for (const [name, value] of what.fields) rec.fields.set(name, { stamp: s, value });
          return rec;
        },
      });
      writes.set(x.entry.c, list);
    });
    for (const c of cs) {
      const noted = await req(meta.get(RESTAMP_KEY + c));
      if (!Array.isArray(noted)) continue;
      const left = noted.filter((seq) => !items.some((x) => x.entry.seq === seq));
      if (left.length > 0) meta.put(left, RESTAMP_KEY + c);
      else meta.delete(RESTAMP_KEY + c);
    }
    for (const [c, list] of writes) {
      await store.writeIn(tx, c, list);
      // The entries written are the last ones of the outbox, in order.
      const outbox = tx.objectStore(OUTBOX);
      const seqs = await lastKeys(outbox, list.length);
      list.forEach((w, k) => originals.set(seqs[k], w.old));
      // Marked: refused collected again, they stay rejected (restampable).
      for (const e of await Promise.all(seqs.map((seq) => req(outbox.get(seq))))) outbox.put({ ...e, restamped: true });
    }
    return out;
  });
}

/**
 * The last n keys of object store os, in order.
 * @param {IDBObjectStore} os
 * @param {number} n
 * @returns {Promise<number[]>}
 */
function lastKeys(os, n) {
  /** @type {number[]} */
  const out = [];
  return new Promise((resolve, reject) => {
    const r = os.openKeyCursor(null, 'prev');
    r.onerror = () => reject(r.error);
    r.onsuccess = () => {
      const cur = r.result;
      if (!cur || out.length >= n) return resolve(out.reverse());
      out.push(/** @type {number} */ (cur.key));
      cur.continue();
    };
  });
}
