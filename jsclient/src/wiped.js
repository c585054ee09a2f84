// What a tab does when it finds its database deleted or evicted under it
// (Store.checkIdentity, after a reopen and before each sync round): loaded
// only then. The other tabs, which it tells, load nothing (peer.js).

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
  const held = reset && (await st.holds(tx));
  await done(tx);
  if (held) {
    st.forget();
    st.onReset(held);
  }
}
