// The Store's part only the sync loop uses (sync.js; reconcile.js too):
// pulled pages merged and stored with their cursor, a first sync's
// pipelined writes, the outbox read and settled after a push, and what a
// reset left owed (heals, reconciliations, replacements). It loads with
// the sync loop, in the tab that leads: a tab that only reads and writes
// records needs none of it. Each function takes the Store first; db.js
// describes the object stores. What the loop reads of a collection
// before it pulls (its cursor, scope, schema version, whether it is empty
// and whether its first pull reconciles) is here too.

import { COLLECTION_KEY, META, OUTBOX, RECORDS, REJECTED, SCHEMA_KEY, STALE, baseOf, fromStored, guarded, keptIn, req, sealOf } from './db.js';
import { emptyRecord, encodeRecord, mergeInto, observeRecord, validateCollection } from './record.js';
import { Writer, equalBytes } from './cbor.js';
import { compareStamps, isZeroStamp } from './hlc.js';
import { boundRejected, decodeEntry, rejectedEntry } from './change.js';
import { cloneRecord, exists, hasStamps, ownPart, uncovered } from './parts.js';
import { ownedStart } from './replica.js';
import { CURSOR_KEY, DEFAULTS_KEY, GIVEBACK_KEY, HEALCHECK_KEY, HEAL_KEY, LOSSES_KEY, RECONCILE_KEY, REPLACE_KEY, REREAD_KEY, SCOPE_KEY, SEALED, prefixRange } from './metakeys.js';

/** @typedef {import('./db.js').Store} Store */
/** @typedef {import('./db.js').StoredRecord} StoredRecord */
/** @typedef {import('./db.js').Seal} Seal */
/** @typedef {import('./db.js').Prepared} Prepared */
/** @typedef {import('./db.js').OutboxEntry} OutboxEntry */
/** @typedef {import('./db.js').Settled} Settled */
/** @typedef {import('./record.js').Record} Rec */
/** @typedef {import('./hlc.js').Clock} Clock */

/**
 * Whether a and b hold the same stamps and values (field objects are
 * shared by merging, so identity decides).
 * @param {Rec} a
 * @param {Rec} b
 */
function sameRecord(a, b) {
  if (a.fields.size !== b.fields.size || compareStamps(a.deleted, b.deleted) !== 0) return false;
  for (const [k, f] of b.fields) if (a.fields.get(k) !== f) return false;
  return true;
}

/**
 * Whether a and b hold the same stamps and values, compared (null: no
 * record).
 * @param {Rec|null} a
 * @param {Rec|null} b
 */
function sameContent(a, b) {
  if (a === null || b === null) return a === b;
  if (a.fields.size !== b.fields.size || compareStamps(a.deleted, b.deleted) !== 0) return false;
  for (const [k, f] of b.fields) {
    const g = a.fields.get(k);
    if (!g || compareStamps(f.stamp, g.stamp) !== 0) return false;
    if (f.value === null || g.value === null ? f.value !== g.value : !equalBytes(f.value, g.value)) return false;
  }
  return true;
}

/**
 * Merges pulled records into the stored ones and advances the cursor, in one
 * transaction, reading the records of the page held first (readHeld; a first sync's
 * pages, merged ahead with nothing held, go through applyFirst).
 * Returns the ids whose record changed.
 * @param {Store} st
 * @param {string} c
 * @param {Rec[]} records
 * @param {Uint8Array} cursor the cursor after these records
 * @param {Uint8Array[]} [seals] seals[i] is the seal of records[i]: kept
 *   with the record as the server sent it, for a restore
 * @param {string[]} [gone] ids of held records that left the reader's
 *   scope (leave entries): removed locally, without a delete and without
 *   touching the outbox, except a delete the server acknowledged
 *   (heldDeleted)
 * @param {Set<string>|null} [replace] the pull from the beginning of a
 *   reconciliation (reconcile.js) is under way and has taken in these
 *   ids: a record of the page not among them is the server's whole
 *   current state, whose collected tombstones can no longer hide older
 *   fields held here, so it replaces the server state held (the record
 *   shown is then it with the changes pending), and its id joins them;
 *   a record delivered again merges as usual
 * @param {boolean} [giveBack] replace is a reconciliation's: the stamps
 *   of this subject in a replaced server state that the record replacing
 *   it neither holds nor hides are noted (meta "giveback:<collection>")
 *   for the reconciliation to give back (heal.js's giveBack)
 * @param {Uint8Array|null} [after] the cursor stored when the page was
 *   asked for (the one its pull began at, or the one the write before
 *   stored; of a live page, the one its sub was read from, or the one
 *   the page before stored: live.js's LiveSession at). If another is stored now, nothing is written and the result
 *   is null: without Web Locks every tab pulls, and another tab stored
 *   the cursor of a page that may have been answered after this one, so
 *   this one's leave entries and records could undo what that page
 *   brought (a record back in the scope removed, one that left put back)
 *   while the cursor stored says they are read
 * @returns {Promise<string[]|null>}
 */
export function applyRemote(st, c, records, cursor, seals = [], gone = [], replace = null, giveBack = false, after = null) {
  return st.tx([RECORDS, META, OUTBOX, SEALED], 'readwrite', `apply ${c}`, async (tx) => {
    if (after && !equalBytes(storedCursor(await req(tx.objectStore(META).get(CURSOR_KEY + c))), after)) return null;
    const store = tx.objectStore(RECORDS);
    /** @type {Map<string, Rec[]>|null} */
    let taken = null;
    if (replace) {
      const fresh = [...new Set(records.map((r) => r.id))].filter((id) => !replace.has(id));
      const index = tx.objectStore(OUTBOX).index('record');
      const lists = await Promise.all(fresh.map((id) => /** @type {Promise<OutboxEntry[]>} */ (req(index.getAll([c, id])))));
      taken = new Map(fresh.map((id, i) => [id, lists[i].sort((a, b) => a.seq - b.seq).map((e) => decodeEntry(e.change))]));
      for (const id of fresh) replace.add(id);
    }
    // One read per id held, however often the page holds it; and, unless
    // a reconciliation takes them, how many changes of c are pending.
    const range = st.keyRange.bound([c], [c, []]);
    const [held, owed] = await Promise.all([st.readHeld(store, c, records.map((r) => r.id)), taken ? 0 : req(tx.objectStore(OUTBOX).index('record').count(range))]);
    if (owed > 0) {
      // A record not held with changes pending left the scope since they
      // were written, and comes back: it is the server's record with them,
      // which stays its server state while they are pending, as if they
      // had been written over it.
      const back = new Set(records.filter((r) => !held.get(r.id)).map((r) => r.id));
      if (back.size > 0) {
        const entries = /** @type {OutboxEntry[]} */ (await req(tx.objectStore(OUTBOX).index('record').getAll(range)));
        taken = new Map();
        for (const e of entries.filter((x) => back.has(x.id)).sort((a, b) => a.seq - b.seq)) {
          const list = taken.get(e.id) ?? [];
          list.push(decodeEntry(e.change));
          taken.set(e.id, list);
        }
      }
    }
    if (taken && giveBack && st.prefix) {
      const own = ownedStart(st.prefix);
      /** @type {Uint8Array[]} */
      const owed = [];
      for (const id of taken.keys()) {
        const prev = held.get(id);
        const r = records.find((x) => x.id === id);
        if (!prev || !r) continue;
        const unc = uncovered(ownPart(baseOf(prev, id) ?? fromStored(prev, id), own), r);
        if (hasStamps(unc)) owed.push(encodeRecord(unc));
      }
      if (owed.length > 0) {
        const meta = tx.objectStore(META);
        const before = await req(meta.get(GIVEBACK_KEY + c));
        meta.put([...(Array.isArray(before) ? before : []), ...owed], GIVEBACK_KEY + c);
      }
    }
    const page = prepareRemote(st, c, records, seals, records.map((r) => held.get(r.id)), taken);
    putPage(st, tx, c, page);
    for (const id of gone) {
      if (page.puts.has(id)) continue;
      const s = /** @type {StoredRecord|undefined} */ (await req(store.get([c, id])));
      if (!s || heldDeleted(s)) continue;
      store.delete([c, id]);
      tx.objectStore(SEALED).delete([c, id]);
      st.notify(tx, c, id, null, 'remote');
      page.changed.add(id);
    }
    putCursor(st, tx, c, cursor);
    return [...page.changed];
  }, 'relaxed');
}

/**
 * Whether the server's version of stored record s is a delete it
 * acknowledged: a leave entry does not remove it. No scope matches a
 * deleted record, so every delete leaves a scoped reader, and the
 * tombstone is how the client gives its acknowledged delete back after
 * the server lost it (heal.js's healPlan); it shows nothing.
 * @param {StoredRecord} s
 */
function heldDeleted(s) {
  const server = baseOf(s, s.id) ?? fromStored(s, s.id);
  return hasStamps(server) && !exists(server);
}

/**
 * Notes that tx writes entry e of c/id (null: deletes it) without
 * telling the Store's onChange, so that its seen holds it once tx commits
 * (Store.tx).
 * @param {IDBTransaction} tx
 * @param {string} c
 * @param {string} id
 * @param {StoredRecord|null} e
 */
function keep(tx, c, id, e) {
  let kept = keptIn.get(tx);
  if (!kept) keptIn.set(tx, (kept = []));
  kept.push([c, id, e]);
}

/**
 * The collections any tab of the database opened (Store.addCollections),
 * which the tab that leads syncs. Names that are not valid collection
 * names (a corrupt or foreign entry) are left out.
 * @param {Store} st
 * @returns {Promise<string[]>}
 */
export function openedCollections(st) {
  const range = prefixRange(st.keyRange, COLLECTION_KEY);
  return st.tx([META], 'readonly', 'read collections', async (tx) => {
    const keys = await req(tx.objectStore(META).getAllKeys(range));
    /** @type {string[]} */
    const out = [];
    for (const k of keys) {
      if (typeof k !== 'string') continue;
      const c = k.slice(COLLECTION_KEY.length);
      try {
        validateCollection(c);
      } catch {
        continue;
      }
      out.push(c);
    }
    return out;
  });
}

/**
 * Counts the outbox (Store.countIn) in a transaction of its own.
 * @param {Store} st
 * @returns {Promise<{pending: number, held: number}>}
 */
export function outboxCounts(st) {
  return st.tx([OUTBOX], 'readonly', 'count outbox', (tx) => st.countIn(tx));
}

/**
 * Puts a page's merged entries (prepareRemote) in tx, telling live
 * queries of the records that changed.
 * @param {Store} st
 * @param {IDBTransaction} tx
 * @param {string} c
 * @param {Prepared} page
 */
export function putPage(st, tx, c, page) {
  const store = tx.objectStore(RECORDS);
  for (const [id, e] of page.puts) {
    store.put(e);
    if (page.changed.has(id)) st.notify(tx, c, id, e, 'remote');
    else keep(tx, c, id, e);
  }
}

/**
 * A first sync's write of records merged ahead (prepareRemote, nothing
 * held), issued without waiting for anything: the transaction is created
 * at once, so it may be created while the one before (an earlier page of
 * the same sync) still commits, and its puts go out behind two reads
 * that check what it builds on. IndexedDB runs read-write transactions
 * over the same stores in the order they were created, so those reads
 * see what every write issued before it left:
 * - the stored cursor must be `after` (the cursor the write before
 *   stored; empty: none stored). If the write before failed, or another
 *   tab pulled meanwhile, it differs: this transaction aborts before any
 *   of its writes commit, and no cursor is ever stored past a page whose
 *   records were not;
 * - no outbox entry may name a record of the page (a local write made
 *   since the sync began, in this tab or another): then it aborts too.
 * Both checks abort in the read's own success event, before the
 * transaction can commit. Resolves to the ids changed, or to null when
 * a check failed: the caller writes the page again through applyRemote
 * (which reads what it must) once the writes before it have settled.
 * @param {Store} st
 * @param {string} c
 * @param {Prepared} prepared
 * @param {Uint8Array} after the cursor the write before this one stores
 * @param {Uint8Array} cursor the cursor after these records
 * @returns {Promise<string[]|null>}
 */
export async function applyFirst(st, c, prepared, after, cursor) {
  try {
    return await st.tx([RECORDS, META, OUTBOX, SEALED], 'readwrite', `apply ${c}`, async (tx) => {
      const checked = guarded(tx, (check) => {
        check(tx.objectStore(META).get(CURSOR_KEY + c), (v) => !equalBytes(storedCursor(v), after));
        check(tx.objectStore(OUTBOX).index('record').getAll(st.keyRange.bound([c], [c, []])), (entries) => entries.some((/** @type {OutboxEntry} */ e) => prepared.puts.has(e.id)));
      });
      putPage(st, tx, c, prepared);
      putCursor(st, tx, c, cursor);
      await checked;
      return [...prepared.changed];
    }, 'relaxed');
  } catch (e) {
    if (/** @type {any} */ (e)?.cause === STALE) return null;
    throw e;
  }
}

/**
 * Merges a pulled page into the stored records given (current[i] is the
 * entry of records[i]; none: a first sync's records, held nowhere yet):
 * the entries to put, and the ids whose record changed. Pure work, so a
 * first sync can do it for the next page while the current one commits.
 * @param {Store} st
 * @param {string} c
 * @param {Rec[]} records
 * @param {Uint8Array[]} seals
 * @param {(StoredRecord|undefined)[]} [current]
 * @param {Map<string, Rec[]>|null} [taken] ids whose record (its first
 *   in the page) replaces the server state held, with their pending
 *   changes in order (applyRemote's replace)
 * @returns {Prepared}
 */
export function prepareRemote(st, c, records, seals, current = [], taken = null) {
  const clock = /** @type {Clock} */ (st.clock);
  /** @type {Map<string, {rec: Rec, base: Rec|null, prev: StoredRecord|undefined, changed: boolean, seal: Seal|null, sealed: Rec|null}>} */
  const byId = new Map();
  records.forEach((r, i) => {
    let x = byId.get(r.id);
    const pending = x ? undefined : taken?.get(r.id);
    if (pending) {
      // The server's whole record: it with the changes pending.
      const prev = current[i];
      const rec = cloneRecord(r);
      for (const ch of pending) mergeInto(rec, ch);
      const base = pending.length > 0 ? cloneRecord(r) : null;
      const changed = !prev || !sameContent(fromStored(prev, r.id), rec) || !sameContent(baseOf(prev, r.id), base);
      x = { rec, base, prev, changed, seal: sealOf(prev), sealed: null };
      byId.set(r.id, x);
    } else if (!x) {
      const prev = current[i];
      x = { rec: fromStored(prev, r.id), base: baseOf(prev, r.id), prev, changed: false, seal: sealOf(prev), sealed: null };
      byId.set(r.id, x);
    }
    if (mergeInto(x.rec, r)) x.changed = true;
    if (x.base && mergeInto(x.base, r)) x.changed = true;
    // Kept with the record as the server sent it, for a restore.
    if (seals[i]) {
      x.seal = { s: seals[i], sr: null };
      x.sealed = r;
    }
    observeRecord(clock, r, st.now());
  });
  /** @type {Map<string, StoredRecord>} */
  const puts = new Map();
  /** @type {Set<string>} */
  const changed = new Set();
  for (const [id, x] of byId) {
    if (x.seal && x.sealed) {
      // The record as the server sent it: the merged one itself when they
      // hold the same stamps (a first sync), else its own encoding.
      if (!sameRecord(x.rec, x.sealed)) x.seal.sr = encodeRecord(x.sealed);
    }
    if (!x.changed) {
      // Only the seal is new: keep the rest of the entry as it is.
      if (x.sealed && x.seal && x.prev) {
        const { s: _s, sr: _sr, ...rest } = x.prev;
        if (rest.r instanceof Uint8Array) {
          const sr = x.seal.sr ?? encodeRecord(x.rec);
          puts.set(id, { ...rest, s: x.seal.s, ...(equalBytes(sr, rest.r) ? {} : { sr }) });
        } else puts.set(id, st.stored(c, x.rec, x.base, x.seal));
      }
      continue;
    }
    puts.set(id, st.stored(c, x.rec, x.base, x.seal));
    changed.add(id);
  }
  return { puts, changed };
}

/**
 * Stores the cursor of collection c in tx (spanning meta). A position
 * past the beginning ends the pull from the beginning a reset asked for
 * (meta "reread:<collection>").
 * @param {Store} st
 * @param {IDBTransaction} tx
 * @param {string} c
 * @param {Uint8Array} cursor
 */
export function putCursor(st, tx, c, cursor) {
  const meta = tx.objectStore(META);
  meta.put(cursor, CURSOR_KEY + c);
  if (cursor.length > 0) meta.delete(REREAD_KEY + c);
}

/**
 * Starts st's clock again from the wall time when the clock saved is more
 * than the max drift ahead of it, in one transaction with its read:
 * called once a hello has corrected the wall time to the server's. Such a
 * clock (stamps issued while the wall clock ran fast, or offline before
 * the first hello) issues only stamps the server refuses as clock_drift,
 * and would until real time caught up. Every stamp a server took is
 * within the max drift of its time, so a write still stamps after each
 * one its record holds (observeRecord). The other tabs take the clock
 * saved at their next write (Clock.settle), and so does a tab's restart
 * when a clock saved is in time already: every tab syncs without Web
 * Locks, and a tab that led before may have restarted and stamped since.
 * docs/protocol.md, section 6. With offset, the hello's correction of the
 * wall time is stored (in meta "clock", whose correction every tab's
 * writes take) and taken in the same transaction, once its read is answered: a write
 * whose transaction began before read the correction stored then and took
 * it (Store.writeIn), and the restart and the writes after it must go by
 * the hello's. With drift, the hello's max drift is taken and stored with
 * the clock, which every tab's writes read (Clock.settle): the followers
 * stamp under the server's bound too, not the default.
 * @param {Store} st
 * @param {number} [offset]
 * @param {number} [drift]
 * @returns {Promise<void>}
 */
export function restartClock(st, offset, drift) {
  return st.tx([META], 'readwrite', 'restart the clock', async (tx) => {
    const meta = tx.objectStore(META);
    const saved = await req(meta.get('clock'));
    // The transactions before this one have run (writes that took the
    // correction stored then): the hello's is taken now.
    if (offset !== undefined) st.setOffset(offset);
    const clock = st.clock;
    if (!clock) {
      // Nothing to restart: the hello's correction is stored all the same.
      if (offset !== undefined) meta.put({ ...(typeof saved === 'object' ? saved : null), offset }, 'clock');
      return;
    }
    const wall = st.now();
    // A clock saved in time (another tab started again already, and may
    // have stamped since) is taken, as a write would (Clock.settle):
    // started again below it, this tab would issue stamps that tab issued.
    clock.settle(saved, wall);
    // The hello's bound, not the one saved before it.
    if (drift) clock.state(drift);
    const ahead = clock.ahead(wall);
    if (ahead) clock.last = { wall, logical: 0 };
    const entry = st.clockEntry();
    // Without a correction of its own, the one stored stays.
    if (offset === undefined && Number.isSafeInteger(saved?.offset)) entry.offset = saved.offset;
    if (ahead || drift || offset !== undefined) meta.put(entry, 'clock');
  });
}

/**
 * Deletes every meta entry whose key starts with prefix: CURSOR_KEY
 * forgets every cursor, so the next pull starts from the beginning.
 * @param {Store} st
 * @param {string} prefix
 */
export function dropMeta(st, prefix) {
  return st.tx([META], 'readwrite', `drop ${prefix}`, (tx) => {
    tx.objectStore(META).delete(prefixRange(st.keyRange, prefix));
  });
}

/**
 * After a push of the outbox: of the outbox entries reconciliations
 * noted may be written again after a collected refusal (meta
 * "restamp:<collection>", reconcile.js), keeps those still in the outbox
 * (their push did not come: their collection's pull first failed, or
 * they are another subject's), drops the others (pushed and settled:
 * they had their chance). Resolves to whether any note is left.
 * @param {Store} st
 * @param {string} prefix RESTAMP_KEY
 * @returns {Promise<boolean>}
 */
export function pruneNotes(st, prefix) {
  return st.tx([META, OUTBOX], 'readwrite', `prune ${prefix}`, async (tx) => {
    const meta = tx.objectStore(META);
    const outbox = tx.objectStore(OUTBOX);
    const range = prefixRange(st.keyRange, prefix);
    const [keys, notes] = await Promise.all([req(meta.getAllKeys(range)), req(meta.getAll(range))]);
    let left = false;
    for (let i = 0; i < keys.length; i++) {
      /** @type {number[]} */
      const seqs = Array.isArray(notes[i]) ? notes[i] : [];
      const counts = await Promise.all(seqs.map((seq) => req(outbox.count(seq))));
      const kept = seqs.filter((_seq, k) => counts[k] > 0);
      if (kept.length === 0) meta.delete(keys[i]);
      else if (kept.length < seqs.length) meta.put(kept, keys[i]);
      left ||= kept.length > 0;
    }
    return left;
  });
}

/**
 * The server reset collection c's cursor: forget it (the next pull starts
 * from the beginning) and note what is owed, in one transaction, so a
 * reload still does it: heal, the server is owed what this client holds
 * (healPlan); reconcile, the client must drop what the server collected
 * before it pushes the collection's outbox (reconcile.js). Any other
 * reset is noted as a reread (meta "reread:<collection>", until a pull
 * stores a position past the beginning): its pull from the beginning
 * drops nothing (firstPullReconciles). Nothing local is dropped here.
 * With after (the cursor the reset pull was read from), nothing is done,
 * and false returned, if another cursor is stored: without Web Locks
 * every tab pulls, and another tab stored one since (it was reset and
 * healed already, or pulled on): the reset is of a cursor forgotten.
 * @param {Store} st
 * @param {string} c
 * @param {boolean} heal
 * @param {boolean} [reconcile]
 * @param {Uint8Array|null} [after]
 * @returns {Promise<boolean>} whether the reset was noted
 */
export function resetCollection(st, c, heal, reconcile = false, after = null) {
  return st.tx([META], 'readwrite', `reset ${c}`, async (tx) => {
    const meta = tx.objectStore(META);
    if (after && !equalBytes(storedCursor(await req(meta.get(CURSOR_KEY + c))), after)) return false;
    meta.delete(CURSOR_KEY + c);
    if (heal) {
      meta.put(true, HEAL_KEY + c);
      // Counted: a push answered after this reset was perhaps
      // acknowledged by the store that lost it (settle).
      meta.put(lossesIn(await req(meta.get(LOSSES_KEY + c))) + 1, LOSSES_KEY + c);
    }
    if (reconcile) meta.put(true, RECONCILE_KEY + c);
    else meta.put(true, REREAD_KEY + c);
    return true;
  });
}

/**
 * A count of resets with history lost as stored (meta
 * "losses:<collection>"): 0 when there is none.
 * @param {unknown} v
 */
const lossesIn = (v) => (Number.isSafeInteger(v) ? /** @type {number} */ (v) : 0);

/**
 * Whether collection c is owed a reconciliation (resetCollection with
 * reconcile set).
 * @param {Store} st
 * @param {string} c
 * @returns {Promise<boolean>}
 */
export async function owesReconcile(st, c) {
  return (await st.getMeta(RECONCILE_KEY + c)) === true;
}

/**
 * Whether collection c's next pull is to replace the server state of the
 * records it delivers (meta "replace:<collection>": an upgrade
 * translated them here).
 * @param {Store} st
 * @param {string} c
 */
export async function owesReplace(st, c) {
  return (await st.getMeta(REPLACE_KEY + c)) === true;
}

/**
 * Collection c's pull from the beginning replaced every record it
 * brought: the replacement an upgrade owed is done.
 * @param {Store} st
 * @param {string} c
 */
export function replacementDone(st, c) {
  return st.tx([META], 'readwrite', `replaced ${c}`, (tx) => req(tx.objectStore(META).delete(REPLACE_KEY + c)));
}

/**
 * The pending floor of collection c: the wall time (ms) of the oldest
 * stamp in its outbox entries (of any replica id: a held change may be
 * pushed later too); null when nothing is pending. Sent with pulls and
 * subs, it keeps the server from collecting tombstones those changes
 * could still meet (docs/protocol.md, "Tombstone collection").
 * @param {Store} st
 * @param {string} c
 * @returns {Promise<number|null>}
 */
export function pendingFloor(st, c) {
  return st.tx([OUTBOX], 'readonly', `pending floor of ${c}`, (tx) => floorIn(st, tx, c));
}

/**
 * pendingFloor, read in tx.
 * @param {Store} st
 * @param {IDBTransaction} tx
 * @param {string} c
 * @returns {Promise<number|null>}
 */
async function floorIn(st, tx, c) {
  const entries = /** @type {OutboxEntry[]} */ (await req(tx.objectStore(OUTBOX).index('record').getAll(st.keyRange.bound([c], [c, []]))));
  let floor = Infinity;
  for (const e of entries) {
    let rec;
    try {
      rec = decodeEntry(e.change);
    } catch {
      continue; // refused when pushed, as any corrupt entry
    }
    if (!isZeroStamp(rec.deleted)) floor = Math.min(floor, rec.deleted.wall);
    for (const f of rec.fields.values()) floor = Math.min(floor, f.stamp.wall);
  }
  return floor === Infinity ? null : floor;
}

/**
 * What a live session's start reads of each collection of cs to
 * subscribe it from its cursor (Syncer.pullEach's direct), in one
 * transaction for them all: its cursor (cursorOf), whether it owes a
 * reading of its own (owed), its scope (scopeOf), its pending floor
 * (pendingFloor) and its schema version (schemaVersion). Each the value
 * stored, as the reads of each alone give it.
 * A collection owes a reading of its own when no cursor is stored (never
 * pulled: a first sync's pull is the fast one; reset: a reset's reading
 * from the beginning), when it owes a reconciliation, a heal or a
 * replacement, and when a pull of it from its cursor stored, the empty
 * one, would be a first pull's reconciliation (firstPullReconciles).
 * The empty cursor stored is that of a collection never written, pulled
 * to its end (a reset forgets the cursor: resetCollection): a sub from it
 * sends what a pull would.
 * @param {Store} st
 * @param {string[]} cs
 * @returns {Promise<Map<string, SubState>>}
 */
export async function subStates(st, cs) {
  const prefixes = [CURSOR_KEY, RECONCILE_KEY, HEAL_KEY, REPLACE_KEY, SCOPE_KEY, SCHEMA_KEY, DEFAULTS_KEY, REREAD_KEY];
  const [[cursors, reconciles, heals, replaces, scopes, schemas, defaults], floors, first] = await st.tx([META, OUTBOX, RECORDS], 'readonly', 'read subs', async (tx) => {
    const meta = tx.objectStore(META);
    const byName = async (/** @type {string} */ prefix) => {
      const range = prefixRange(st.keyRange, prefix);
      const [keys, values] = await Promise.all([req(meta.getAllKeys(range)), req(meta.getAll(range))]);
      return new Map(keys.map((k, i) => [String(k).slice(prefix.length), values[i]]));
    };
    const [stored, pending] = await Promise.all([Promise.all(prefixes.map(byName)), req(tx.objectStore(OUTBOX).count())]);
    const [cursors, , heals, , , , , rereads] = stored;
    return [
      stored,
      pending === 0 ? null : await Promise.all(cs.map((c) => floorIn(st, tx, c))),
      await Promise.all(cs.map((c) => cursors.get(c) instanceof Uint8Array && reconcilesIn(st, tx, c, cursors.get(c), heals.get(c), rereads.get(c)))),
    ];
  });
  /** @type {Map<string, SubState>} */
  const out = new Map();
  for (const [i, c] of cs.entries()) {
    out.set(c, {
      cursor: storedCursor(cursors.get(c)),
      owed: !(cursors.get(c) instanceof Uint8Array) || reconciles.get(c) != null || heals.get(c) != null || replaces.get(c) === true || first[i],
      scope: scopeFrom(scopes.get(c)),
      floor: floors?.[i] ?? null,
      version: await versionFrom(st, c, schemas.get(c), async () => defaults.get(c)),
    });
  }
  return out;
}

/**
 * @typedef {object} SubState what subStates reads of a collection
 * @property {Uint8Array} cursor
 * @property {boolean} owed whether it owes a reading of its own, a pull before its sub
 * @property {Uint8Array|undefined} scope
 * @property {number|null} floor
 * @property {number} version
 */

/**
 * The collections owed a heal (resetCollection with heal set).
 * @param {Store} st
 * @returns {Promise<string[]>}
 */
export function owedHeals(st) {
  const range = prefixRange(st.keyRange, HEAL_KEY);
  return st.tx([META], 'readonly', 'read heals', async (tx) => {
    const keys = await req(tx.objectStore(META).getAllKeys(range));
    return keys.filter((k) => typeof k === 'string').map((k) => /** @type {string} */ (k).slice(HEAL_KEY.length));
  });
}

/**
 * The heal checks kept (heal.js's healed), per collection, their reading from the
 * beginning not begun in this tab; a corrupt entry is left out.
 * @param {Store} st
 * @returns {Promise<Map<string, import('./heal.js').HealCheck>>}
 */
export function healChecks(st) {
  const range = prefixRange(st.keyRange, HEALCHECK_KEY);
  return st.tx([META], 'readonly', 'read heal checks', async (tx) => {
    const meta = tx.objectStore(META);
    const [keys, values] = await Promise.all([req(meta.getAllKeys(range)), req(meta.getAll(range))]);
    /** @type {Map<string, import('./heal.js').HealCheck>} */
    const out = new Map();
    keys.forEach((k, i) => {
      const v = values[i];
      const strings = (/** @type {unknown} */ a) => Array.isArray(a) && a.every((x) => typeof x === 'string');
      if (typeof k !== 'string' || !v || !strings(v.ids) || !strings(v.collected) || !Number.isSafeInteger(v.again)) return;
      out.set(k.slice(HEALCHECK_KEY.length), { ids: new Set(v.ids), collected: new Set(v.collected), chain: null, again: v.again });
    });
    return out;
  });
}

/**
 * The oldest outbox entries the current replica id may push, at most
 * limit of them: those it stamped, and protocol 1's (which name no
 * replica: the server settles them). Entries of another subject wait,
 * and so do those of the collections in held. A limit past what getAll
 * counts (an unsigned long: a hello's absurd max-push) reads them all.
 * With versions, the schema version of each of their collections
 * (schemaVersion) is set in it, read in the same transaction: an upgrade
 * (another tab's) translates the outbox and stores the version together,
 * so the version is the one the entries are in. With losses, the count of
 * resets with history lost of each of their collections (meta
 * "losses:<collection>"), read in the same transaction, for settle.
 * @param {Store} st
 * @param {number} limit
 * @param {{has: (c: string) => boolean}} [held]
 * @param {Map<string, number>} [versions]
 * @param {Map<string, number>} [losses]
 * @returns {Promise<OutboxEntry[]>}
 */
export function peekOutbox(st, limit, held, versions, losses) {
  const mine = (/** @type {OutboxEntry} */ e) => (e.r === undefined || e.r === st.replica) && !held?.has(e.c);
  return st.tx(versions || losses ? [OUTBOX, META] : [OUTBOX], 'readonly', 'read outbox', async (tx) => {
    const store = tx.objectStore(OUTBOX);
    let out = /** @type {OutboxEntry[]} */ (await req(store.getAll(null, limit < 2 ** 32 ? limit : undefined)));
    if (!out.every(mine)) {
      // Some belong to another subject: walk the outbox for ours.
      /** @type {OutboxEntry[]} */
      const ours = (out = []);
      await new Promise((resolve, reject) => {
        const r = store.openCursor();
        r.onerror = () => reject(r.error);
        r.onsuccess = () => {
          const cur = r.result;
          if (!cur || ours.length >= limit) return resolve(undefined);
          if (mine(cur.value)) ours.push(cur.value);
          cur.continue();
        };
      });
    }
    if (versions) {
      for (const c of new Set(out.map((e) => e.c))) {
        const v = await req(tx.objectStore(META).get(SCHEMA_KEY + c));
        const stored = Number.isSafeInteger(v) && v > 0;
        // Rolling a refused change back stores its record: with the
        // defaults of the version the data is in (schemaVersion).
        if (stored && st.newerSchema(c, v)) adoptDefaults(st, c, await req(tx.objectStore(META).get(DEFAULTS_KEY + c)));
        versions.set(c, stored ? v : st.versions.get(c) ?? 0);
      }
    }
    if (losses) for (const c of new Set(out.map((e) => e.c))) losses.set(c, lossesIn(await req(tx.objectStore(META).get(LOSSES_KEY + c))));
    return out;
  });
}

/**
 * Settles pushed entries in one transaction: removes them from the
 * outbox; for an accepted change, folds it into the record's server
 * state; for a refused one, takes it back by rebuilding the record from
 * the server state and the changes still pending, and keeps it among the
 * rejected changes (dropping the oldest past the bounds). An entry no
 * longer in the outbox was settled already, by another tab that syncs
 * too (without Web Locks every tab does): it is left alone, since the
 * record holds no server state of it any more to roll back to. Returns
 * the records (collection, ids) whose visible state changed, the id of
 * the rejected entry of each refused outbox entry (by its seq), how many
 * old rejected entries were dropped, and the seqs of the entries this
 * call settled (taken). With losses (peekOutbox's, of the pushed
 * entries' collections when they were read), an accepted entry of a
 * collection reset with history lost since is not taken: it stays in the
 * outbox, to be pushed again. The store that acknowledged it may be the
 * one that lost it, and the heal that reset asked for (this tab's, or
 * another's) did not give it back, pending then.
 * @param {Store} st
 * @param {Settled[]} settled
 * @param {{when: number, subject: string|null}} [info] for rejected entries
 * @param {Map<string, number>} [losses]
 * @returns {Promise<{changed: Map<string, string[]>, rejected: Map<number, number>, dropped: number, taken: Set<number>}>}
 */
export function settle(st, settled, info = { when: Date.now(), subject: null }, losses) {
  if (settled.length === 0) return Promise.resolve({ changed: new Map(), rejected: new Map(), dropped: 0, taken: new Set() });
  const anyRefused = settled.some((x) => x.refused);
  const stores = anyRefused ? [RECORDS, OUTBOX, REJECTED, META] : losses ? [RECORDS, OUTBOX, META] : [RECORDS, OUTBOX];
  return st.tx(stores, 'readwrite', 'settle outbox', async (tx) => {
    const outbox = tx.objectStore(OUTBOX);
    const records = tx.objectStore(RECORDS);
    // The collections reset with history lost since their entries were read.
    /** @type {Set<string>} */
    const lost = new Set();
    if (losses) {
      for (const [c, n] of losses) if (lossesIn(await req(tx.objectStore(META).get(LOSSES_KEY + c))) !== n) lost.add(c);
    }
    // The entries still in the outbox, listed in one read.
    const seqs = settled.map((x) => x.entry.seq);
    const held = new Set(await req(outbox.getAllKeys(st.keyRange.bound(Math.min(...seqs), Math.max(...seqs)))));
    /** @type {Set<number>} */
    const taken = new Set();
    /** @type {Map<string, {c: string, id: string, accepted: Rec[], refused: boolean}>} */
    const touched = new Map();
    /** @type {Map<number, number>} */
    const rejected = new Map();
    for (const x of settled) {
      const { entry, refused } = x;
      if (!held.has(entry.seq) || (!refused && lost.has(entry.c))) continue;
      taken.add(entry.seq);
      outbox.delete(entry.seq);
      const key = JSON.stringify([entry.c, entry.id]);
      let t = touched.get(key);
      if (!t) touched.set(key, (t = { c: entry.c, id: entry.id, accepted: [], refused: false }));
      if (refused) {
        t.refused = true;
        rejected.set(entry.seq, /** @type {number} */ (await req(tx.objectStore(REJECTED).add(rejectedEntry(entry, x.code ?? 'invalid', x.message ?? '', x.requestId ?? null, info)))));
      } else t.accepted.push(decodeEntry(entry.change));
    }
    const dropped = rejected.size > 0 ? await boundRejected(tx) : 0;
    /** @type {Map<string, string[]>} */
    const changed = new Map();
    for (const t of touched.values()) {
      const [stored, pending] = await Promise.all([
        req(records.get([t.c, t.id])),
        req(outbox.index('record').getAll([t.c, t.id])),
      ]);
      if (!stored) continue;
      const base = baseOf(stored, t.id) ?? emptyRecord(t.id);
      for (const ch of t.accepted) mergeInto(base, ch);
      const seal = sealOf(stored);
      if (!t.refused) {
        // Still pending: the server's state moves on; nothing pending:
        // the record is what the server has.
        const settled = st.stored(t.c, fromStored(stored, t.id), pending.length > 0 ? base : null, seal);
        records.put(settled);
        keep(tx, t.c, t.id, settled);
        continue;
      }
      // Take the refused change back: the server state plus what is
      // still pending, in order.
      const view = { id: t.id, deleted: base.deleted, fields: new Map(base.fields) };
      for (const e of pending) mergeInto(view, decodeEntry(e.change));
      const back = st.stored(t.c, view, pending.length > 0 ? base : null, seal);
      records.put(back);
      st.notify(tx, t.c, t.id, back, 'remote');
      const ids = changed.get(t.c) ?? [];
      ids.push(t.id);
      changed.set(t.c, ids);
    }
    return { changed, rejected, dropped, taken };
  }, anyRefused ? 'strict' : 'relaxed');
}

/**
 * The schema version collection c's local data is in, to send with its
 * pulls, subs, pushes and restores: the stored one (an upgrade, of this
 * tab or another, set it), else this code's (1 with migrations of no
 * steps), else 0: no version (the server serves and hears the current
 * one). A stored version newer than this code's brings its defaults
 * (adoptDefaults): what is pulled in it is stored with them.
 * @param {Store} st
 * @param {string} c
 * @returns {Promise<number>}
 */
export async function schemaVersion(st, c) {
  return versionFrom(st, c, await st.getMeta(SCHEMA_KEY + c), () => st.getMeta(DEFAULTS_KEY + c));
}

/**
 * schemaVersion, from v, the version stored; defaults reads the defaults
 * stored beside it (adoptDefaults), wanted only when v is newer than this
 * code's.
 * @param {Store} st
 * @param {string} c
 * @param {unknown} v
 * @param {() => Promise<unknown>} defaults
 * @returns {Promise<number>}
 */
async function versionFrom(st, c, v, defaults) {
  if (!(Number.isSafeInteger(v) && /** @type {number} */ (v) > 0)) return st.versions.get(c) ?? 0;
  if (st.newerSchema(c, /** @type {number} */ (v))) adoptDefaults(st, c, await defaults());
  return /** @type {number} */ (v);
}

/**
 * Collection c's data is in a version newer than this code's (Store.newerSchema):
 * the records this tab stores from now on read as that version's code
 * reads them, with the defaults it stored beside the version (stored:
 * meta "defaults:<collection>", schema.js), not this code's. Data an
 * older client upgraded, which stored none, keeps this code's.
 * @param {Store} st
 * @param {string} c
 * @param {unknown} stored
 */
function adoptDefaults(st, c, stored) {
  if (Array.isArray(stored)) st.defaults.set(c, new Map(stored));
}

/**
 * How often a pull starts again from the cursor another tab stored while
 * one of its pages was asked for (sync.js's Syncer.pullCollection), or a
 * reconciliation another tab overtook (reconcile.js's reconcile); then it
 * ends, that tab pulling.
 */
export const OVERTAKEN = 3;

/**
 * The stored cursor of collection c: the bytes the server made, to send
 * back unchanged; empty (from the beginning) when there is none.
 * @param {Store} st
 * @param {string} c
 * @returns {Promise<Uint8Array>}
 */
export async function cursorOf(st, c) {
  const v = await st.getMeta(CURSOR_KEY + c);
  return storedCursor(v);
}

/**
 * The ids of the records held in collection c (existing or deleted).
 * @param {Store} st
 * @param {string} c
 * @returns {Promise<string[]>}
 */
export function heldIds(st, c) {
  const range = st.keyRange.bound([c], [c, []]);
  return st.tx([RECORDS], 'readonly', `list ids of ${c}`, async (tx) => (await req(tx.objectStore(RECORDS).getAllKeys(range))).map((k) => /** @type {any} */ (k)[1]));
}

/**
 * Whether collection c holds no records (existing or deleted).
 * @param {Store} st
 * @param {string} c
 * @returns {Promise<boolean>}
 */
export function isEmpty(st, c) {
  return st.tx([RECORDS], 'readonly', `count ${c}`, async (tx) => (await req(tx.objectStore(RECORDS).count(st.keyRange.bound([c], [c, []])))) === 0);
}

/**
 * Whether collection c's next pull is a reconciliation although no reset
 * asked for one (docs/protocol.md, "Tombstone collection"): its cursor
 * is empty (never pulled, or forgotten by an upgrade), no heal is owed,
 * no reset other than lease_expired is being read again (meta
 * "reread:<collection>"), and it holds a record the server acknowledged.
 * (One cut short after a page stored a cursor is made after the next
 * pull from that cursor: Syncer.pullCollection.)
 * A replica that pushed but never pulled holds no lease, so the server
 * may have collected a record it pushed, deleted since, without waiting
 * for it; and a read from the beginning misses nothing, so the server
 * does not reset it lease_expired. Only the client knows what it held.
 * The scan stops at the first record acknowledged: it reads every
 * record only when all were created here, and only while the cursor is
 * empty.
 * @param {Store} st
 * @param {string} c
 * @returns {Promise<boolean>}
 */
export function firstPullReconciles(st, c) {
  return st.tx([META, RECORDS], 'readonly', `first pull of ${c}`, async (tx) => {
    const meta = tx.objectStore(META);
    const [cursor, heal, reread] = await Promise.all([req(meta.get(CURSOR_KEY + c)), req(meta.get(HEAL_KEY + c)), req(meta.get(REREAD_KEY + c))]);
    return reconcilesIn(st, tx, c, cursor, heal, reread);
  });
}

/**
 * firstPullReconciles in tx (spanning records), from the cursor, heal
 * and reread marks of c stored.
 * @param {Store} st
 * @param {IDBTransaction} tx
 * @param {string} c
 * @param {unknown} cursor
 * @param {unknown} heal
 * @param {unknown} reread
 * @returns {Promise<boolean>}
 */
function reconcilesIn(st, tx, c, cursor, heal, reread) {
  if (storedCursor(cursor).length > 0 || heal === true || reread === true) return Promise.resolve(false);
  return new Promise((resolve, reject) => {
    const r = tx.objectStore(RECORDS).openCursor(st.keyRange.bound([c], [c, []]));
    r.onerror = () => reject(r.error);
    r.onsuccess = () => {
      const cur = r.result;
      if (!cur) return resolve(false);
      let hit = false;
      try {
        hit = acknowledged(cur.value);
      } catch {
        // A corrupt entry says nothing either way.
      }
      if (hit) resolve(true);
      else cur.continue();
    };
  });
}

/**
 * The scope to read collection c under, encoded: the or of its named
 * scopes (meta "scope:<collection>", {name: encoded predicate}, shared by
 * the tabs of the database; encoded, because IndexedDB would not keep a
 * Float a Float) in the order of their names, so that the same set always
 * encodes alike (the server compares scopes by their bytes); one scope
 * alone as it is; undefined when there is none (an unscoped read).
 * @param {Store} st
 * @param {string} c
 * @returns {Promise<Uint8Array|undefined>}
 */
export async function scopeOf(st, c) {
  return scopeFrom(await st.getMeta(SCOPE_KEY + c));
}

/**
 * scopeOf, from v, the scopes stored.
 * @param {any} v
 */
function scopeFrom(v) {
  return orScopes(v && typeof v === 'object' ? v : {});
}

/**
 * The wire form of the or of named scopes ({name: encoded predicate}),
 * their names sorted; undefined for none. What scopeOf sends, and what
 * setScope bounds by SCOPES.maxBytes (scope.js).
 * @param {Record<string, Uint8Array>} s
 * @returns {Uint8Array|undefined}
 */
export function orScopes(s) {
  const preds = Object.keys(s).sort().map((k) => s[k]).filter((p) => p instanceof Uint8Array);
  if (preds.length < 2) return preds[0];
  const w = new Writer();
  w.head(4, preds.length + 1);
  w.text('or');
  for (const p of preds) w.raw(p);
  return w.bytes();
}

/**
 * Whether the server acknowledged stored record s once: its server state
 * (the record as the server knows it while changes are pending, else the
 * record itself) is not empty. A record created here and never
 * acknowledged has changes pending over an empty server state.
 * @param {StoredRecord} s
 */
export function acknowledged(s) {
  const server = baseOf(s, s.id) ?? fromStored(s, s.id);
  return hasStamps(server);
}

/**
 * A stored cursor (meta "cursor:<collection>"): the bytes, or the empty
 * cursor (the beginning) when none is stored.
 * @param {unknown} v
 * @returns {Uint8Array}
 */
export function storedCursor(v) {
  return v instanceof Uint8Array ? v : new Uint8Array(0);
}
