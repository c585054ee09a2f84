// What a tab does when it finds its database deleted or evicted under it
// (Store.checkIdentity, after a reopen and before each sync round), or
// hears that another tab found it so (peer.js): loaded only then.

import { Clock } from './hlc.js';
import { META, OUTBOX, REJECTED, done, req } from './db.js';
import { isDevice, replicaId } from './replica.js';

/** @typedef {import('./db.js').Store} Store */

/**
 * Writes the identity and clock of st back into the database db, unless
 * another tab rebuilt it first (then st shares that tab's), and lets st's
 * owner rebuild from the server (onReset, with what the rebuilt database
 * holds: its outbox counts and rejected changes, none unless another tab
 * wrote since it rebuilt, so that the owner's status stops counting what
 * went with the old one). The in-memory clock is at least
 * as far as anything st issued, so stamps stay unique. Nothing happens if
 * the identity is st's again by the time it reads it.
 * @param {Store} st
 * @param {IDBDatabase} db
 */
export async function rebuild(st, db) {
  const tx = db.transaction([META, OUTBOX, REJECTED], 'readwrite');
  const meta = tx.objectStore(META);
  const [device, saved] = await Promise.all([req(meta.get('device')), req(meta.get('clock'))]);
  let reset = false;
  if (device !== st.device) {
    reset = true;
    const last = st.clock?.last;
    if (isDevice(device)) {
      // Another tab rebuilt the database first: share its identity. Tabs
      // that share an id stay unique because every write restores the
      // clock from the database inside its transaction.
      st.device = device;
      st.replica = replicaId(/** @type {string} */ (st.prefix), device);
      if (st.clock) st.clock.replica = st.replica;
      else st.clock = new Clock({ replica: st.replica });
      if (saved && typeof saved.wall === 'number') st.clock.restore(saved);
    } else {
      meta.put(st.device, 'device');
      meta.put(st.prefix, 'prefix');
    }
    if (last) st.clock?.restore(last);
    if (st.clock) meta.put(st.clockEntry(), 'clock');
  }
  const held = reset && (await holdsIn(st, tx));
  await done(tx);
  if (held) {
    st.forget();
    st.onReset(held);
  }
}

/**
 * What st's database holds, counted in tx (spanning the outbox and the
 * rejected changes): the outbox counts (Store.countIn) and the rejected
 * changes, as the owner's status counts them after a wipe
 * (Database._onReset).
 * @param {Store} st
 * @param {IDBTransaction} tx
 * @returns {Promise<{pending: number, held: number, rejected: number}>}
 */
async function holdsIn(st, tx) {
  const [counts, rejected] = await Promise.all([st.countIn(tx), req(tx.objectStore(REJECTED).count())]);
  return { ...counts, rejected };
}

/**
 * Another tab found db's database wiped and rebuilt it (TabMessage.reset;
 * peer.js, which had the Store forget what it remembered of the records
 * as the message came): db counts what the rebuilt database holds and
 * rebuilds from the server as that tab did (Database._onReset).
 * @param {import('./database.js').Database} db
 * @param {{pending: number, held: number, rejected: number}} was db's
 *   status as the message came
 */
export async function heard(db, was) {
  const holds = await db.store.tx([OUTBOX, REJECTED], 'readonly', 'count the rebuilt database', (tx) => holdsIn(db.store, tx));
  if (!db.closed) db._onReset(holds, was);
}
