// The rejected changes as the app handles them (Database.rejected, retry,
// discard): listing them decoded, writing one again with fresh stamps,
// forgetting one. Keeping them when the server refuses is the Store's
// (settle); this part is loaded on demand, the first time the app asks.

import { ConvergoError } from './errors.js';
import { isZeroStamp } from './hlc.js';
import { decodeValue, emptyRecord } from './record.js';
import { decodeChanges } from './received.js';
import { setOwn } from './cbor.js';
import { META, OUTBOX, RECORDS, REJECTED, req } from './db.js';
import { decodeEntry } from './change.js';
import { TabMessage } from './tabs.js';
import { recountRejected } from './peer.js';

/** @typedef {import('./db.js').Store} Store */
/** @typedef {import('./database.js').Database} Database */
/** @typedef {import('./db.js').RejectedEntry} RejectedEntry */
/** @typedef {import('./database.js').RejectedChange} RejectedChange */

/**
 * The rejected changes, oldest first, decoded.
 * @param {Store} store
 * @returns {Promise<RejectedChange[]>}
 */
export async function rejected(store) {
  /** @type {RejectedEntry[]} */
  const entries = await store.tx([REJECTED], 'readonly', 'read rejected changes', (tx) => req(tx.objectStore(REJECTED).getAll()));
  return entries.map((e) => {
    /** @type {RejectedChange['change']} */
    const change = { deleted: false, fields: {}, unset: [] };
    try {
      const rec = decodeChanges(new Uint8Array([0x81, ...e.change]))[0].record;
      change.deleted = !isZeroStamp(rec.deleted);
      for (const [name, f] of rec.fields) {
        if (f.value === null) change.unset.push(name);
        else setOwn(change.fields, name, decodeValue(f.value));
      }
    } catch {
      /* a corrupt entry: listed without its values */
    }
    return {
      id: e.id,
      collection: e.c,
      recordId: e.rid,
      change,
      code: e.code,
      message: e.message,
      requestId: e.requestId ?? null,
      when: e.when,
      subject: e.subject ?? null,
    };
  });
}

/**
 * Forgets rejected change id (Database.discard), and tells the tabs and
 * the status the count changed. Returns whether there was one.
 * @param {Database} db
 * @param {number} id
 * @returns {Promise<boolean>}
 */
export async function discard(db, id) {
  const had = await db.store.tx([REJECTED], 'readwrite', `discard rejected change ${id}`, async (tx) => {
    const os = tx.objectStore(REJECTED);
    const e = await req(os.get(id));
    if (!e) return false;
    os.delete(id);
    return true;
  });
  recounted(db);
  return had;
}

/**
 * The rejected changes were changed by this tab: the other tabs count
 * them again (TabMessage.rejected), and so does its status.
 * @param {Database} db
 */
function recounted(db) {
  db._post({ t: TabMessage.rejected });
  recountRejected(db);
}

/**
 * retryIn (Database.retry), then the count told as discard tells it, and
 * the write pushed and counted pending as any local write.
 * @param {Database} db
 * @param {number} id
 */
export async function retry(db, id) {
  await retryIn(db.store, id);
  recounted(db);
  db._wrote(1);
}

/**
 * Writes rejected change id again as a new local write, in one
 * transaction: its delete (if any) and its fields are stamped afresh, so
 * they sort after everything this client has seen and can win again;
 * the write is merged locally and queued in the outbox, and the entry
 * leaves the rejected changes. The values are the ones refused: a change
 * refused for its content is likely refused again (and comes back as a
 * new entry). A change written under an older schema version is in the
 * current shape (schema.js's upgrade translated it), or, when the
 * migration cannot map it, refused: throws untranslatable, and it stays.
 * Throws not_found when there is no such entry. As any local write
 * (Store.writeMany), it waits for a switch of subject under way: made
 * after setToken, it is the new subject's.
 * @param {Store} store
 * @param {number} id
 * @returns {Promise<{c: string, id: string}>}
 */
async function retryIn(store, id) {
  if (store.switching) await store.switching;
  return store.tx([RECORDS, OUTBOX, META, REJECTED], 'readwrite', `retry rejected change ${id}`, async (tx) => {
    const os = tx.objectStore(REJECTED);
    const e = /** @type {RejectedEntry|undefined} */ (await req(os.get(id)));
    if (!e) throw new ConvergoError('not_found', `no rejected change ${id}`);
    // Written under a schema version the collection's data has left, and
    // untranslatable to its current one (schema.js's upgrade): written
    // again, its fields would be of a shape the server resolves away.
    if (e.v !== undefined) throw new ConvergoError('untranslatable', `retry rejected change ${id}: it was written under schema version ${e.v} of ${e.c}, which the migration cannot map to the version the data is in now`);
    const old = decodeEntry(e.change);
    await store.writeIn(tx, e.c, [
      {
        id: e.rid,
        build: (_current, stamp, next) => {
          const rec = emptyRecord(e.rid);
          let s = stamp;
          if (!isZeroStamp(old.deleted)) {
            rec.deleted = s;
            s = next(); // after the delete, so the delete does not hide them
          }
          for (const [name, f] of old.fields) rec.fields.set(name, { stamp: s, value: f.value });
          return rec;
        },
      },
    ]);
    os.delete(id);
    return { c: e.c, id: e.rid };
  });
}
