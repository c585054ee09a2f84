// Healing a server that lost history (docs/protocol.md, "Resets"): what
// to give back (every record as the server sealed it, and this subject's
// acknowledged writes no seal covers) and the requests that give it. Loaded
// only when a reset asks for it (sync.js imports it on demand), so apps
// that never meet one do not carry it.

import { ConvergoError } from './errors.js';
import { compareStamps, isZeroStamp } from './hlc.js';
import { DEFAULTS, PATHS, STATUSES } from './constants.js';
import { decodeRecord, emptyRecord, encodeChange, encodeRecord, hasStamps } from './record.js';
import { encodePush, encodeRestore, parsePushAnswer, parseRestoreAnswer } from './protocol.js';
import { RECORDS, SEALED, baseOf, decodeStored, fromStored, req, sealOf } from './db.js';

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
 * @returns {Promise<{sealed: {record: Rec, seal: Uint8Array}[], mine: Rec[]}>}
 */
export function healPlan(store, c, prefix) {
  const range = store.keyRange.bound([c], [c, []]);
  const own = prefix + '_';
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
    for (const s of stored) {
      const base = baseOf(s, s.id) ?? fromStored(s, s.id);
      const seal = sealedOf.get(s.id)?.record;
      const part = emptyRecord(s.id);
      if (!isZeroStamp(base.deleted) && base.deleted.replica.startsWith(own) && !(seal && compareStamps(seal.deleted, base.deleted) === 0)) {
        part.deleted = base.deleted;
      }
      for (const [name, f] of base.fields) {
        if (!f.stamp.replica.startsWith(own)) continue;
        const g = seal?.fields.get(name);
        if (g && compareStamps(g.stamp, f.stamp) === 0) continue;
        part.fields.set(name, f);
      }
      if (hasStamps(part)) mine.push(part);
    }
    return { sealed, mine };
  });
}


/**
 * Gives the server back what it may have lost of collection c
 * (Store.healPlan): the records held as it sealed them, restored in
 * batches of at most its max-push records and max-body bytes, and this
 * subject's acknowledged writes no seal covers, pushed again. Refusals
 * are reported as errors and the records stay local (a bad_seal: the
 * server's seal key changed). The outbox is pushed as always, by
 * pushAll.
 * @param {Syncer} syncer
 * @param {string} c
 */
export async function heal(syncer, c) {
  const { sealed, mine } = await healPlan(syncer.store, c, /** @type {string} */ (syncer.store.prefix));
  // What is held is in the collection's schema version (its seals too: an
  // upgrade drops the older ones).
  const version = await syncer.store.schemaVersion(c);
  const maxCount = syncer.hello?.maxPush ?? DEFAULTS.maxPushChanges;
  const maxBody = (syncer.hello?.maxBody ?? DEFAULTS.maxBodyBytes) - 1024;
  let refused = 0;
  /** @type {string} */
  let why = '';
  const sized = sealed.map((x) => ({ item: x, size: encodeRecord(x.record).length + x.seal.length + 4 }));
  await batches(sized, maxCount, maxBody, async (items) => {
    const results = parseRestoreAnswer(await syncer.post(PATHS.restore, encodeRestore(c, items, version)));
    for (const r of results) {
      if (r.status === STATUSES.refused) {
        refused++;
        why = `${r.code}: ${r.message ?? ''}`;
      }
    }
  });
  const changes = mine.map((record) => encodeChange({ collection: c, record }));
  await batches(changes.map((ch) => ({ item: ch, size: ch.length })), maxCount, maxBody, async (items) => {
    const results = parsePushAnswer(await syncer.post(PATHS.push, encodePush(/** @type {string} */ (syncer.store.replica), items, new Map([[c, version]]))));
    for (const r of results) {
      if (r.status === STATUSES.refused) {
        refused++;
        why = `${r.code}: ${r.message ?? ''}`;
      }
    }
  });
  await syncer.store.healed(c);
  if (refused > 0) {
    syncer.o.onError(new ConvergoError('invalid', `heal ${c}: the server refused ${refused} of the ${sealed.length + mine.length} records given back (last: ${why}); they stay local`));
  }
}

/**
 * Sends items in batches of at most maxCount items and maxBytes bytes (one
 * larger item goes alone); a too_large answer halves the batch.
 * @template T
 * @param {{item: T, size: number}[]} all
 * @param {number} maxCount
 * @param {number} maxBytes
 * @param {(items: T[]) => Promise<void>} send
 */
export async function batches(all, maxCount, maxBytes, send) {
  let limit = maxCount;
  let i = 0;
  while (i < all.length) {
    let n = 0;
    let size = 0;
    while (i + n < all.length && n < limit && (n === 0 || size + all[i + n].size <= maxBytes)) {
      size += all[i + n].size;
      n++;
    }
    try {
      await send(all.slice(i, i + n).map((x) => x.item));
    } catch (e) {
      if (/** @type {any} */ (e).code === 'too_large' && n > 1) {
        limit = Math.max(1, Math.floor(n / 2));
        continue;
      }
      throw e;
    }
    i += n;
  }
}

