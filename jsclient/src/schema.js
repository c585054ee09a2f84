// Schema versions on the client (docs/design.md, "Schema versions"),
// loaded on demand by open({migrations}): the definitions checked
// (migrate.js), and the local data of a collection upgraded to this code's
// version when it is older.
//
// The version the local data of a collection is in is kept in meta
// "schema:<collection>" (absent: 1). An upgrade is one IndexedDB
// transaction: every record held translated up (the records rule: what a
// migration cannot map is dropped), every outbox change translated up (the
// changes rule: one it cannot map moves to the rejected changes, code
// untranslatable, and its record is rebuilt without it, as after a
// refusal), every rejected change kept translated up too (one it cannot
// map keeps its shape and notes its version: written again, it is refused
// untranslatable), the version stored, and the cursor cleared with meta
// "replace:<collection>" set, so that the next pull, from the beginning,
// replaces the server state of every record it brings (syncstore.js's applyRemote's
// replace, as a reconciliation after lease_expired does, without dropping
// what it does not bring): the server translated the same fields with
// stamps of its own, which merging would not let win. Seals are dropped
// with the old shape (the pull brings new ones). A definition older than
// the stored version refuses to open: this code would write in a shape the
// data has left. Every open stores the defaults of its version beside it
// (meta "defaults:<collection>"): a tab still running older code cannot
// write the collection any more, but if it leads it pulls for every tab,
// and stores the records it pulls with those defaults, not its own
// (syncstore.js schemaVersion).

import { ConvergoError } from './errors.js';
import { encodeChange, mergeInto, validateCollection } from './record.js';
import { META, OUTBOX, RECORDS, REJECTED, SCHEMA_KEY, baseOf, fromStored, req } from './db.js';
import { defaults, parseDefinition, translate } from './migrate.js';
import { cloneRecord } from './parts.js';
import { boundRejected, decodeEntry, rejectedEntry } from './change.js';
import { CURSOR_KEY, DEFAULTS_KEY, REPLACE_KEY, SEALED } from './metakeys.js';

/** @typedef {import('./db.js').Store} Store */
/** @typedef {import('./db.js').OutboxEntry} OutboxEntry */
/** @typedef {import('./db.js').StoredRecord} StoredRecord */
/** @typedef {import('./db.js').RejectedEntry} RejectedEntry */
/** @typedef {import('./record.js').Record} Rec */

/**
 * What an upgrade did: the collection, the versions, the records
 * translated, and the outbox changes moved to the rejected changes
 * (untranslatable), with the id of each rejected entry.
 * @typedef {{collection: string, from: number, to: number, records: number, rejected: {id: string, rejectedId: number, message: string}[], dropped: number}} Upgrade
 */

/**
 * Checks open's migrations ({collection: definition}), tells the Store
 * the version and defaults of each collection, and upgrades the local data
 * of each whose stored version is older. Throws ConvergoError("invalid")
 * for a bad definition, ("database") for a downgrade.
 * @param {Store} store
 * @param {Record<string, unknown>} migrations
 * @param {{when: number, subject: string|null}} info for rejected changes
 * @returns {Promise<Upgrade[]>} the upgrades made
 */
export async function openSchemas(store, migrations, info) {
  if (migrations === null || typeof migrations !== 'object' || Array.isArray(migrations)) {
    throw new ConvergoError('invalid', 'open: migrations must be an object {collection: definition}');
  }
  /** @type {[string, import('./migrate.js').Definition][]} */
  const defs = [];
  for (const [c, raw] of Object.entries(migrations)) {
    validateCollection(c);
    try {
      defs.push([c, parseDefinition(raw)]);
    } catch (e) {
      throw new ConvergoError('invalid', `open: migrations of ${c}: ${/** @type {Error} */ (e).message}`);
    }
  }
  /** @type {Upgrade[]} */
  const out = [];
  for (const [c, def] of defs) {
    store.versions.set(c, def.version);
    store.defaults.set(c, defaults(def, def.version));
    const up = await upgrade(store, c, def, info);
    if (up) out.push(up);
  }
  return out;
}

/**
 * Upgrades collection c's local data to def's version, in one
 * transaction (see the top of this file); null when it is there already.
 * @param {Store} store
 * @param {string} c
 * @param {import('./migrate.js').Definition} def
 * @param {{when: number, subject: string|null}} info
 * @returns {Promise<Upgrade|null>}
 */
export function upgrade(store, c, def, info) {
  const range = store.keyRange.bound([c], [c, []]);
  return store.tx([RECORDS, OUTBOX, REJECTED, META, SEALED], 'readwrite', `upgrade ${c}`, async (tx) => {
    const meta = tx.objectStore(META);
    const had = await req(meta.get(SCHEMA_KEY + c));
    const from = Number.isSafeInteger(had) && had > 0 ? had : 1;
    if (from > def.version) {
      throw new ConvergoError('database', `open: the local data of ${c} is at schema version ${from}, newer than this code's migrations (version ${def.version}); open it with code of version ${from} or later`);
    }
    // The defaults of the version the data is in, beside it: a tab of
    // older code that leads stores what it pulls with them
    // (syncstore.js schemaVersion).
    meta.put([...defaults(def, def.version)], DEFAULTS_KEY + c);
    if (from === def.version) return null;
    const records = tx.objectStore(RECORDS);
    const outbox = tx.objectStore(OUTBOX);
    const [held, entries] = await Promise.all([
      /** @type {Promise<StoredRecord[]>} */ (req(records.getAll(range))),
      /** @type {Promise<OutboxEntry[]>} */ (req(outbox.index('record').getAll(range))),
    ]);
    // The rejected changes kept of c are local data too: written again
    // (rejected.js's retry) they must be in the shape the data is in. One
    // the migration cannot map keeps the shape it was written in, with
    // that version (v), and is refused untranslatable if written again.
    const kept = tx.objectStore(REJECTED);
    // Translated, a kept change may grow (a rename to a longer name), so
    // the bounds are kept again below even when nothing new is rejected.
    let grew = false;
    for (const r of /** @type {RejectedEntry[]} */ (await req(kept.getAll()))) {
      if (r.c !== c || r.v !== undefined) continue;
      let ch;
      try {
        ch = decodeEntry(r.change);
      } catch {
        continue; // listed without its values, as any corrupt entry
      }
      try {
        const change = encodeChange({ collection: c, record: translate(def, ch, from, def.version, 'change') });
        kept.put({ ...r, change, size: r.size - r.change.length + change.length });
        grew ||= change.length > r.change.length;
      } catch (err) {
        if (/** @type {any} */ (err)?.code !== 'untranslatable') throw err;
        kept.put({ ...r, v: from });
      }
    }
    /** @type {Map<string, Rec[]>} the changes still pending per record, translated, in order */
    const pending = new Map();
    /** @type {Upgrade['rejected']} */
    const rejected = [];
    for (const e of entries.sort((a, b) => a.seq - b.seq)) {
      let ch;
      try {
        ch = decodeEntry(e.change);
      } catch {
        continue; // refused when pushed, as any corrupt entry
      }
      try {
        const t = translate(def, ch, from, def.version, 'change');
        outbox.put({ ...e, change: encodeChange({ collection: c, record: t }) });
        const list = pending.get(e.id);
        if (list) list.push(t);
        else pending.set(e.id, [t]);
      } catch (err) {
        if (/** @type {any} */ (err)?.code !== 'untranslatable') throw err;
        const message = /** @type {Error} */ (err).message;
        outbox.delete(e.seq);
        const rejectedId = /** @type {number} */ (await req(kept.add({ ...rejectedEntry(e, 'untranslatable', message, null, info), v: from })));
        rejected.push({ id: e.id, rejectedId, message });
      }
    }
    const defs = store.defaults.get(c);
    for (const s of held) {
      const base = baseOf(s, s.id);
      const changes = pending.get(s.id) ?? [];
      /** @type {Rec} */
      let view;
      /** @type {Rec|null} */
      let server = null;
      if (base) {
        // The server's state and the changes pending on it, each
        // translated: the record shown is their merge again, without a
        // change that moved to the rejected ones.
        server = translate(def, base, from, def.version, 'record');
        view = cloneRecord(server);
        for (const ch of changes) mergeInto(view, ch);
      } else {
        view = translate(def, fromStored(s, s.id), from, def.version, 'record');
      }
      const next = store.stored(c, view, changes.length > 0 ? server : null, null);
      records.put(next);
      store.notify(tx, c, s.id, next, 'remote');
    }
    const dropped = rejected.length > 0 || grew ? await boundRejected(tx) : 0;
    tx.objectStore(SEALED).delete(range);
    meta.put(def.version, SCHEMA_KEY + c);
    meta.delete(CURSOR_KEY + c);
    if (held.length > 0) meta.put(true, REPLACE_KEY + c);
    return { collection: c, from, to: def.version, records: held.length, rejected, dropped };
  });
}
