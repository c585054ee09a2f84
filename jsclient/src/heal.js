// Healing a server that lost history (docs/protocol.md, "Resets"): what
// to give back (every record as the server sealed it, and this subject's
// acknowledged writes no seal covers) and the requests that give it. Loaded
// only when a reset asks for it (sync.js imports it on demand), so apps
// that never meet one do not carry it. A reconciliation gives back the
// same way, with an ordinary push of this subject's stamps, before it
// drops a record (giveBack, reconcile.js).

import { ConvergoError } from './errors.js';
import { equalBytes } from './cbor.js';
import { DEFAULTS, PATHS, STATUSES } from './constants.js';
import { emptyRecord, encodeChange, encodeRecord } from './record.js';
import { decodeRecord } from './received.js';
import { batchLength, encodePush, encodeRestore, parsePushAnswer, parseRestoreAnswer, pushBudget } from './protocol.js';
import { splitter } from './sync.js';
import { META, RECORDS, baseOf, decodeStored, fromStored, req, sealOf } from './db.js';
import { acknowledged, schemaVersion, storedCursor } from './syncstore.js';
import { byStamp, hasStamps, merge, ownPart } from './parts.js';
import { CURSOR_KEY, GIVEBACK_KEY, HEALCHECK_KEY, HEAL_KEY, SEALED } from './metakeys.js';
import { ownedStart } from './replica.js';

/** @typedef {import('./record.js').Record} Rec */
/** @typedef {import('./db.js').Store} Store */
/** @typedef {import('./db.js').StoredRecord} StoredRecord */
/** @typedef {import('./db.js').SealedEntry} SealedEntry */
/** @typedef {import('./sync.js').Syncer} Syncer */

/**
 * What to give the server back for collection c after it lost history:
 * every record held as the server sealed it (restore: anyone's stamps),
 * and the parts of the server's version of each record (its base) that
 * the ids of prefix stamped and no seal covers: acknowledged writes of
 * this subject the server may have lost, pushed again as ordinary
 * changes (the replica binding allows them). The outbox needs nothing:
 * it is pushed as always.
 * @param {Store} store
 * @param {string} c
 * @param {string} prefix the replica prefix of the subject signed in
 * Own holds, of each record sealed, every stamp of those ids in its base,
 * covered by the seal or not: what is pushed back of it when its restore
 * is refused collected (heal).
 * @returns {Promise<{sealed: {record: Rec, seal: Uint8Array}[], mine: Rec[], own: Map<string, Rec>}>}
 */
export function healPlan(store, c, prefix) {
  const range = store.keyRange.bound([c], [c, []]);
  const own = ownedStart(prefix);
  return store.tx([RECORDS, SEALED], 'readonly', `heal ${c}`, async (tx) => {
    const [stored, seals] = await Promise.all([
      /** @type {Promise<StoredRecord[]>} */ (req(tx.objectStore(RECORDS).getAll(range))),
      /** @type {Promise<SealedEntry[]>} */ (req(tx.objectStore(SEALED).getAll(range))),
    ]);
    /** @type {Map<string, {record: Rec, seal: Uint8Array}>} */
    const sealedOf = new Map();
    // Seals of version 4 first: one in the record's entry is newer.
    for (const e of seals) {
      let rec;
      try {
        rec = decodeRecord(e.rec);
      } catch {
        continue; // a corrupt entry: nothing to give back
      }
      if (!(e.seal instanceof Uint8Array)) continue;
      sealedOf.set(rec.id, { record: rec, seal: e.seal });
    }
    for (const s of stored) {
      const seal = sealOf(s);
      if (!seal) continue;
      try {
        sealedOf.set(s.id, { record: decodeStored(/** @type {Uint8Array} */ (seal.sr), s.id), seal: seal.s });
      } catch {
        /* a corrupt entry: nothing to give back */
      }
    }
    const sealed = [...sealedOf.values()];
    /** @type {Rec[]} */
    const mine = [];
    /** @type {Map<string, Rec>} */
    const ownOf = new Map();
    for (const s of stored) {
      const base = baseOf(s, s.id) ?? fromStored(s, s.id);
      const part = ownPart(base, own, sealedOf.get(s.id)?.record);
      if (hasStamps(part)) mine.push(part);
      const all = sealedOf.has(s.id) ? ownPart(base, own) : null;
      if (all && hasStamps(all)) ownOf.set(s.id, all);
    }
    return { sealed, mine, own: ownOf };
  });
}

/**
 * Before a reconciliation of collection c drops the records the server
 * acknowledged once and its pull from the beginning did not deliver
 * (docs/protocol.md, "Tombstone collection", step 2), gives back this
 * subject's stamps of each (its server state's, ownPart), and those the
 * pull's replace of a delivered record dropped (meta
 * "giveback:<collection>", syncstore.js's applyRemote), one change per stamp
 * (byStamp), with an ordinary push: the server refuses collected those
 * of a record it collected (they are before its write horizon), and
 * takes back those it lost (a store that went back in time, which an
 * empty cursor cannot be reset for). Returns, of each record not
 * delivered that stays (a stamp of its acknowledged, or refused for
 * another reason than collected: told to the app as an error, it stays
 * local, as after a heal), those stamps: its server state from now on,
 * without those refused collected; and the stamps of delivered records
 * that join them again on the same terms (dropCollected). A failed push
 * throws: nothing may be dropped then. With before, a record not among
 * those ids (held when the pull began) is left alone: another tab that
 * syncs too pulled it since (reconcile.js's reconcile).
 * @param {Syncer} syncer
 * @param {string} c
 * @param {Set<string>} seen the ids the pull delivered
 * @param {Set<string>|null} [before] the ids held when the pull began
 * @returns {Promise<{kept: Map<string, Rec>, restore: Rec[]}>}
 */
export async function giveBack(syncer, c, seen, before = null) {
  const own = syncer.store.prefix ? ownedStart(syncer.store.prefix) : null;
  /** @type {Map<string, Rec>} */
  const kept = new Map();
  /** @type {Rec[]} */
  const restore = [];
  if (!own) return { kept, restore };
  const range = syncer.store.keyRange.bound([c], [c, []]);
  /** @type {{record: Rec, back: boolean}[]} */
  const parts = await syncer.store.tx([RECORDS, META], 'readonly', `give back ${c}`, async (tx) => {
    const [held, owed] = await Promise.all([
      /** @type {Promise<StoredRecord[]>} */ (req(tx.objectStore(RECORDS).getAll(range))),
      req(tx.objectStore(META).get(GIVEBACK_KEY + c)),
    ]);
    /** @type {{record: Rec, back: boolean}[]} */
    const out = [];
    for (const s of held) {
      if (seen.has(s.id) || (before && !before.has(s.id))) continue;
      try {
        if (!acknowledged(s)) continue;
        for (const record of byStamp(ownPart(baseOf(s, s.id) ?? fromStored(s, s.id), own))) out.push({ record, back: false });
      } catch {
        // A corrupt entry: nothing to give back.
      }
    }
    for (const b of Array.isArray(owed) ? owed : []) {
      try {
        for (const record of byStamp(decodeRecord(b))) out.push({ record, back: true });
      } catch {
        // A corrupt entry: nothing to give back.
      }
    }
    return out;
  });
  if (parts.length === 0) return { kept, restore };
  const version = await schemaVersion(syncer.store, c);
  const [maxCount, maxBody] = pushBudget(syncer.hello);
  const items = parts.map((p) => ({ item: { ...p, change: encodeChange({ collection: c, record: p.record }) }, size: 0 }));
  for (const x of items) x.size = x.item.change.length;
  let refused = 0;
  let why = '';
  await batches(items, maxCount, maxBody, pushOf(syncer, c, version), (batch, results) =>
    results.forEach((r, i) => {
      if (r.status === STATUSES.refused && r.code === 'collected') return;
      if (r.status === STATUSES.refused) {
        refused++;
        why = `${r.code}: ${r.message ?? ''}`;
      }
      const rec = batch[i].record;
      if (batch[i].back) restore.push(rec);
      else kept.set(rec.id, merge(kept.get(rec.id) ?? emptyRecord(rec.id), rec)[0]);
    }),
  );
  if (refused > 0) {
    syncer.o.onError(new ConvergoError('invalid', `reconcile ${c}: the server refused ${refused} of the ${parts.length} writes given back (last: ${why}); they stay local`));
  }
  return { kept, restore };
}


/**
 * A batches sender of changes to collection c (schema version version),
 * pushed over HTTP.
 * @param {Syncer} syncer
 * @param {string} c
 * @param {number} version
 * @returns {(items: {change: Uint8Array}[]) => Promise<import('./protocol.js').PushResult[]>}
 */
const pushOf = (syncer, c, version) => async (items) =>
  parsePushAnswer(await syncer.post(PATHS.push, encodePush(/** @type {string} */ (syncer.store.replica), items.map((x) => x.change), new Map([[c, version]]))));

/**
 * Gives the server back what it may have lost of collection c
 * (Store.healPlan): the records held as it sealed them, restored in
 * batches of at most its max-push records and max-body bytes, and this
 * subject's acknowledged writes no seal covers, pushed again. Refusals
 * are reported as errors and the records stay local (a bad_seal: the
 * server's seal key changed), but for collected: a record whose every
 * give-back is refused collected is dropped after the reading that
 * follows unless it delivers it (checkHeal). The outbox is pushed as
 * always, by pushAll.
 * @param {Syncer} syncer
 * @param {string} c
 */
export async function heal(syncer, c) {
  const { sealed, mine, own } = await healPlan(syncer.store, c, /** @type {string} */ (syncer.store.prefix));
  // What is held is in the collection's schema version (its seals too: an
  // upgrade drops the older ones).
  const version = await schemaVersion(syncer.store, c);
  // A heal the server refused forbidden (Syncer.healOwed) is asked about
  // first with an empty restore, so that each round the token still may
  // not read c sends that, not a batch of what is held.
  if (syncer.healRefused.has(c)) parseRestoreAnswer(await syncer.post(PATHS.restore, encodeRestore(c, [], version)));
  const [maxCount, maxBody] = pushBudget(syncer.hello);
  let refused = 0;
  /** @type {string} */
  let why = '';
  /** @type {Set<string>} the ids of the records the server took back */
  const acked = new Set();
  /** @type {Set<string>} the ids of the records refused for another reason than collected: they stay local */
  const kept = new Set();
  /** @type {Set<string>} the ids of the records refused collected */
  const collected = new Set();
  /**
   * Counts the refusals other than collected among a batch's results (the
   * last one's reason in why); the ids of the records the server took go
   * to acked, those it refused collected to collected (batches hands one
   * result per item).
   * @param {{status: number, code?: string, message?: string}[]} results
   * @param {string[]} ids the batch's record ids, in order
   */
  const tally = (results, ids) =>
    results.forEach((r, i) => {
      if (r.status !== STATUSES.refused) acked.add(ids[i]);
      else if (r.code === 'collected') collected.add(ids[i]);
      else {
        kept.add(ids[i]);
        refused++;
        why = `${r.code}: ${r.message ?? ''}`;
      }
    });
  const sized = sealed.map((x) => ({ item: x, size: encodeRecord(x.record).length + x.seal.length + 4 }));
  await batches(
    sized,
    maxCount,
    maxBody,
    async (items) => parseRestoreAnswer(await syncer.post(PATHS.restore, encodeRestore(c, items, version))),
    (items, results) => tally(results, items.map((x) => x.record.id)),
  );
  // This subject's writes go back one change per stamp, as a
  // reconciliation gives them back (giveBack): a record refused collected
  // whole is dropped (checkHeal), so one stamp before the write horizon
  // must not take a later one with it. A record whose restore was refused
  // collected (a stamp of it, of any writer, is before the horizon) gives
  // back its stamps of this subject all the same, the seal's too: the
  // server takes back those after the horizon, and the record is not
  // dropped for another writer's old stamp.
  const parts = [...mine.filter((r) => !collected.has(r.id)), ...[...collected].map((id) => own.get(id) ?? emptyRecord(id))];
  const changes = parts.flatMap((r) => byStamp(r)).map((record) => ({ change: encodeChange({ collection: c, record }), id: record.id }));
  await batches(
    changes.map((x) => ({ item: x, size: x.change.length })),
    maxCount,
    maxBody,
    pushOf(syncer, c, version),
    (items, results) => tally(results, items.map((x) => x.id)),
  );
  // A record whose every give-back was refused collected was deleted and
  // collected, unless the reading that follows delivers it (checkHeal).
  for (const id of collected) if (acked.has(id) || kept.has(id)) collected.delete(id);
  // The reading from the beginning that follows must deliver what the
  // server took back (checkHeal): the check is kept with the heal's end
  // (healed), for whichever tab leads after a reload.
  /** @type {HealCheck} */
  const check = { ids: acked, collected, chain: null, again: syncer.healChecks.get(c)?.again ?? 0 };
  if (await healed(syncer.store, c, acked.size + collected.size > 0 ? check : null)) syncer.healChecks.set(c, check);
  else syncer.healChecks.delete(c);
  if (refused > 0) {
    syncer.o.onError(new ConvergoError('invalid', `heal ${c}: the server refused ${refused} of the ${sealed.length + changes.length} records and writes given back (last: ${why}); they stay local`));
  }
}

/**
 * What a heal of a collection gave back that the server acknowledged
 * (ids), or refused collected (collected: every give-back of the record),
 * and the reading from the beginning after it has not yet delivered: that
 * reading starts from the empty cursor, which carries no history, so a
 * store that went back in time again meanwhile resets nothing (docs/design.md,
 * "A store that goes back again during a heal"); and a record refused
 * collected that it does not deliver was deleted and collected. Kept in
 * IndexedDB as the heal ends (healed) until that reading ends
 * (checked, dropHealed), so that a reload meanwhile loses
 * neither. chain is where that reading stands in this tab: the cursor its
 * next page is read from, null until it begins. Only a page read from the
 * empty cursor (which begins it) or from chain counts toward its end
 * (checkHeal); a pull of a collection whose check has no chain, or one
 * other than the cursor stored (a live page moved that on while the
 * reading was cut short), reads from the beginning (Syncer.pullCollection).
 * @typedef {{ids: Set<string>, collected: Set<string>, chain: Uint8Array|null, again: number}} HealCheck
 */

/**
 * What the error of a collection c given up healing tells the server's
 * operator to do, as the Go client's log line of client.ErrNotHealed
 * (transport/client/errors.go, notHealedRemedy) does.
 * @param {string} c
 */
const notHealedRemedy = (c) =>
  `the server's operator rebuilds the collection's log from its records: convergo repair --store URL --collection ${c} (docs/operations.md, "Repairing a collection's log")`;

/**
 * Notes what pull page p of collection c, read from cursor from, delivers
 * of its last heal (a record, or a leave entry of a scoped read: the
 * server holds it). When p ends a reading from the beginning begun after
 * the heal (read from the empty cursor, or from where that reading
 * stands: HealCheck's chain), again is true if it missed a record the
 * server acknowledged: the store went back again, and c is to be healed
 * and read again (at most DEFAULTS.maxHealAgain times in a row; then an
 * error says so and the records stay local); else drop holds the records
 * refused collected it did not deliver, for the pull to drop once its
 * pages are written (reconcile.js's dropHealed). ended says the reading
 * ended: the pull settles the check kept (checked, dropHealed)
 * once its pages are written; a heal again keeps one of its own.
 * @param {Syncer} syncer
 * @param {string} c
 * @param {import('./protocol.js').Page} p
 * @param {Uint8Array} from
 * @returns {Promise<{again: boolean, drop: Set<string>|null, ended: boolean}>}
 */
export async function checkHeal(syncer, c, p, from) {
  const none = { again: false, drop: null, ended: false };
  const hc = syncer.healChecks.get(c);
  if (!hc) return none;
  const chained = from.length === 0 || equalBytes(from, hc.chain);
  if (chained) hc.chain = p.next;
  for (const ids of [hc.ids, hc.collected]) {
    for (const r of p.records) ids.delete(r.id);
    if (p.leaves.length > 0 && ids.size > 0) for (const id of await (await import('./scope.js')).named(c, [...ids], p.leaves)) ids.delete(id);
  }
  if (!chained || p.more) return none;
  syncer.healChecks.delete(c);
  if (hc.ids.size === 0) return { again: false, drop: hc.collected.size > 0 ? hc.collected : null, ended: true };
  if (++hc.again > DEFAULTS.maxHealAgain) {
    syncer.o.onError(new ConvergoError('internal', `heal ${c}: the server acknowledged ${hc.ids.size} records given back after it lost history and does not serve them; they stay local; ${notHealedRemedy(c)}`));
    return { ...none, ended: true };
  }
  // heal keeps the count of heals made again; the next one judges again
  // what was collected.
  syncer.healChecks.set(c, { ids: new Set(), collected: new Set(), chain: null, again: hc.again });
  return { again: true, drop: null, ended: false };
}

/**
 * Collection c was given back what it was owed (meta "heal:<collection>"
 * goes); in the same transaction, check is kept (meta
 * "healcheck:<collection>") for the reading from the beginning that
 * follows, if there is one and the cursor is still the beginning (once it
 * moved on, a later loss resets it), else the check kept before is
 * forgotten. Resolves to whether check was kept.
 * @param {Store} store
 * @param {string} c
 * @param {HealCheck|null} check
 * @returns {Promise<boolean>}
 */
export function healed(store, c, check) {
  return store.tx([META], 'readwrite', `healed ${c}`, async (tx) => {
    const meta = tx.objectStore(META);
    meta.delete(HEAL_KEY + c);
    const keep = check !== null && storedCursor(await req(meta.get(CURSOR_KEY + c))).length === 0;
    if (keep) meta.put({ ids: [...check.ids], collected: [...check.collected], again: check.again }, HEALCHECK_KEY + c);
    else meta.delete(HEALCHECK_KEY + c);
    return keep;
  });
}

/**
 * The reading after collection c's heal ended: its check kept
 * (healed) is settled, in tx if given (spanning meta: dropHealed's),
 * else in a transaction of its own.
 * @param {Store} store
 * @param {string} c
 * @param {IDBTransaction} [tx]
 */
export function checked(store, c, tx) {
  if (tx) return tx.objectStore(META).delete(HEALCHECK_KEY + c);
  return store.tx([META], 'readwrite', `heal checked ${c}`, (t) => req(t.objectStore(META).delete(HEALCHECK_KEY + c)));
}

/**
 * Sends items in batches of at most maxCount items and maxBytes bytes (cut
 * by batchLength, as pushAll's are: one larger item goes alone) and hands
 * each batch's results to take: the one place that cuts a heal's or a
 * give-back's requests. A batch that fails whole is split as pushAll's
 * are (splitter: halved down to the item at fault, which alone is taken as
 * refused: it stays local, and the caller reports it), so the rest goes
 * on. An answer without one result per item is thrown malformed, as a
 * push's is (pushAll). Other errors are thrown (a heal stays owed).
 * @template T
 * @param {{item: T, size: number}[]} all
 * @param {number} maxCount
 * @param {number} maxBytes
 * @param {(items: T[]) => Promise<import('./protocol.js').PushResult[]>} send
 *   the results of the items, in order
 * @param {(items: T[], results: import('./protocol.js').PushResult[]) => void} take
 */
export async function batches(all, maxCount, maxBytes, send, take) {
  const split = splitter(maxCount, () => send([]));
  let i = 0;
  while (i < all.length) {
    const n = batchLength(all, split.limit, maxBytes, (x) => x.size, i);
    const items = all.slice(i, i + n).map((x) => x.item);
    let results;
    try {
      results = await send(items);
    } catch (e) {
      results = await split(/** @type {ConvergoError} */ (e), n);
      if (!results) continue;
    }
    // One result per item, or none is known: nothing is taken (a
    // give-back would drop the records it has no result for).
    if (results.length !== n) throw new ConvergoError('malformed', `answer has ${results.length} results for ${n} records`);
    take(items, results);
    i += n;
  }
}
