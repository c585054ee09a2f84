// The upgrade of the client's IndexedDB database to DB_VERSION (db.js):
// the object stores and indexes of a new database, and what an older
// version left that this one cannot use. Loaded on demand by
// Store.openDB only when the database needs it: a new database (the
// first run on a device, or after a wipe) or one an older client wrote.

import { META, OUTBOX, RECORDS, REJECTED } from './db.js';
import { CURSOR_KEY, SEALED, prefixRange } from './metakeys.js';

/**
 * Brings the database of open request r to DB_VERSION, inside its
 * version-change transaction (the onupgradeneeded of r, whose event is ev).
 * @param {IDBOpenDBRequest} r
 * @param {IDBVersionChangeEvent} ev
 * @param {typeof IDBKeyRange} keyRange
 */
export function upgrade(r, ev, keyRange) {
  const db = r.result;
  const tx = /** @type {IDBTransaction} */ (r.transaction);
  if (!db.objectStoreNames.contains(RECORDS)) db.createObjectStore(RECORDS, { keyPath: ['c', 'id'] });
  const outbox = db.objectStoreNames.contains(OUTBOX) ? tx.objectStore(OUTBOX) : db.createObjectStore(OUTBOX, { keyPath: 'seq', autoIncrement: true });
  if (!outbox.indexNames.contains('record')) outbox.createIndex('record', ['c', 'id']);
  if (!outbox.indexNames.contains('replica')) outbox.createIndex('replica', 'r');
  if (!db.objectStoreNames.contains(SEALED)) db.createObjectStore(SEALED, { keyPath: ['c', 'id'] });
  if (!db.objectStoreNames.contains(REJECTED)) db.createObjectStore(REJECTED, { keyPath: 'id', autoIncrement: true });
  if (!db.objectStoreNames.contains(META)) {
    db.createObjectStore(META);
    return;
  }
  const meta = tx.objectStore(META);
  if (ev.oldVersion < 4) {
    // Protocol 1's cursors were numbers the server of protocol 2 cannot
    // read, and version 3 kept no seals: pull everything once more.
    meta.delete(prefixRange(keyRange, CURSOR_KEY));
  }
  if (ev.oldVersion < 6) {
    // The correction of the wall time the last hello stored moves into
    // the clock entry, which every write reads (db.js ClockEntry). The
    // requests of a transaction are answered in order: the clock's first.
    const clock = meta.get('clock');
    const offset = meta.get('offset');
    offset.onsuccess = () => {
      meta.delete('offset');
      const saved = clock.result;
      if (Number.isSafeInteger(offset.result)) meta.put({ ...(saved && typeof saved.wall === 'number' ? saved : null), offset: offset.result }, 'clock');
    };
  }
}
