// The IndexedDB layer: merged records, the durable outbox and metadata.
//
// Object stores:
//   records  key [collection, id] -> {c, id, r, doc, b?, s?, sr?}: the
//            merged record encoded (r: stamps and canonical value bytes,
//            the wire encoding) plus its visible values decoded (doc, null
//            when the record does not exist) for querying. While the record
//            has local changes the server has not confirmed, b holds the
//            record as the server knows it (encoded), so a change the
//            server refuses can be taken back: the record becomes b merged
//            with the changes still pending. s is the seal the server sent
//            with the record, sr the record as it sent it when that differs
//            from r: what the client gives back (POST /v2/restore) after a
//            reset that lost history. Bytes rather than objects: IndexedDB
//            clones a few byte strings much faster than a map of stamps,
//            which is most of a first sync's cost. Entries written before
//            version 5 hold {c, id, deleted, fields, doc, base?} instead
//            (base: {deleted, fields}) and their seal in "sealed"; both
//            forms are read.
//   outbox   auto-increment key -> {c, id, change}: local changes not yet
//            acknowledged by the server; change is the encoded crdt change,
//            r the replica id that stamped it (absent in entries of
//            protocol 1). Index "record" on [c, id]. Only the entries of
//            the current replica id are pushed: those of another subject
//            are held until it signs in again. Index "replica" on r.
//   sealed   key [collection, id] -> {c, id, rec, seal}: before version 5,
//            each record as the server last sent it (rec, its encoding)
//            with the seal that came with it (a seal in the record's entry
//            wins): what the client gives back (POST /v2/restore) after a
//            reset that lost history (docs/protocol.md, "Resets").
//   rejected auto-increment key id -> RejectedEntry: changes the server
//            refused, kept until the app retries or discards them, at most
//            DEFAULTS.maxRejected entries and DEFAULTS.maxRejectedBytes
//            bytes (the oldest dropped first, counted in meta
//            "rejectedDropped"); v, when set, is the schema version an
//            entry is written in, one its collection's migration cannot
//            map to the version the data is in (schema.js).
//   meta     key string -> value (the prefixes of the keys per collection
//            that only the sync loop and the modules loaded on demand use
//            are metakeys.js's): "device" (the device part of the replica
//            id, generated once; protocol 1's "replica" id becomes it),
//            "prefix" (the replica prefix of the subject the client last
//            wrote as: docs/protocol.md, "Replica ids"), "clock"
//            (ClockEntry: what every write reads and writes of the clock,
//            in one entry: its last reading, {wall, logical}; drift, the
//            max drift the server's hello stated, which every tab's writes
//            take: Clock.saved; and offset, the correction of the wall
//            time, ms, as the last hello of any tab measured it, which
//            every write adopts: Store.setOffset; until version 6 an entry
//            of its own, "offset"),
//            "cursor:<collection>" (the server's opaque
//            cursor bytes, a Uint8Array, stored and sent back unchanged;
//            absent or empty means from the beginning), "collection:<collection>" (true: some tab
//            opened the collection, so whichever tab leads syncs it),
//            "heal:<collection>" (true: the server reset the collection
//            with history lost and has not been given back what this
//            client holds yet), "reconcile:<collection>" (true: the
//            server reset the collection lease_expired and the client has
//            not reconciled yet: its outbox for it waits; "first": a
//            first pull's reconciliation is under way, made again as one
//            if cut short),
//            "reread:<collection>" (true: the server reset the collection
//            for another reason, history_lost or rebuilt, and no pull has
//            stored a position past the beginning since: its pull from the
//            beginning is not a reconciliation, since a reset drops
//            nothing local; see syncstore.js firstPullReconciles),
//            "losses:<collection>" (how many resets with history lost
//            the collection had: a push answered after one is not taken
//            as acknowledged; see syncstore.js settle),
//            "restamp:<collection>" (the keys of the outbox entries a
//            reconciliation found may be written again with fresh stamps,
//            once, if the server refuses them collected: reconcile.js;
//            each dropped once a push of the outbox took its entry; the
//            keys of entries that waited stay), "rejectedDropped" (how many
//            rejected changes were dropped to stay within the bounds),
//            "lastSyncedAt" (ms since epoch of the last completed sync),
//            "scope:<collection>" ({name: encoded predicate}: the app's named
//            scopes of the collection, whose or it reads under; absent or
//            empty: unscoped), "schema:<collection>" (the schema version
//            the collection's records and outbox are in; absent: 1, or
//            none for an app without migrations: schema.js),
//            "defaults:<collection>" ([[field, value]]: the defaults of
//            that version, written with it, so that a tab running older
//            code, which does not know them, stores the records it pulls
//            as the code of that version reads them: syncstore.js
//            schemaVersion),
//            "replace:<collection>" (true: an upgrade translated the
//            records held, so the next pull, from the beginning, replaces
//            the server state of every record it delivers),
//            "giveback:<collection>" (encoded records: the stamps of this
//            subject a reconciliation's replace dropped, which its
//            give-back pushes; heal.js's giveBack, reconcile.js),
//            "healcheck:<collection>" ({ids, collected, again}: what the
//            last heal gave back that the reading from the beginning after
//            it must deliver, written as the heal owed is settled and
//            deleted when that reading ends: heal.js's HealCheck, so that
//            whichever tab leads after a reload checks it).
//
// A local write merges into the record and appends its change to the outbox
// in ONE transaction, so a write is either pending or not there at all. The
// clock state is read and written in that same transaction: tabs that share
// the database (and so the replica id) are serialized by IndexedDB and never
// issue the same stamp.

import { ConvergoError, loadOnDemand } from './errors.js';
import { Clock } from './hlc.js';
import { docOf, emptyRecord, encodeChange, encodeRecord, mergeInto, observeRecord, readRecord, storedValue } from './record.js';
import { Reader, equalBytes } from './cbor.js';
import { compareTime } from './hlc.js';
import { isDevice, isPrefix, newDevice, replicaId, replicaPrefix } from './replica.js';

/** @typedef {import('./record.js').Record} Rec */
/** @typedef {import('./hlc.js').Stamp} Stamp */
/** @typedef {{deleted: Stamp, fields: Map<string, import('./record.js').Field>}} Base */
/**
 * A record as stored (see the records store above): r, b, s and sr in the
 * current form; deleted, fields and base in entries written before
 * version 5.
 * @typedef {{c: string, id: string, doc: Record<string, unknown>|null, r?: Uint8Array, b?: Uint8Array, s?: Uint8Array, sr?: Uint8Array, deleted?: Stamp, fields?: Map<string, import('./record.js').Field>, base?: Base}} StoredRecord
 */
/**
 * The seal to keep with a record: s, of the record as the server sent it
 * (sr, encoded; null: the stored record itself).
 * @typedef {{s: Uint8Array, sr: Uint8Array|null}} Seal
 */
/** A pulled page merged: the entries to put, the ids whose record changed. @typedef {{puts: Map<string, StoredRecord>, changed: Set<string>}} Prepared */

/**
 * Maps an IndexedDB failure to a ConvergoError: a full disk becomes
 * quota_exceeded so apps can tell the user, the rest is "database".
 * @param {unknown} err
 * @param {string} what the operation, for the message
 * @returns {ConvergoError}
 */
function fromIDBError(err, what) {
  if (err instanceof ConvergoError) return err;
  const name = /** @type {any} */ (err)?.name;
  if (name === 'QuotaExceededError') {
    return new ConvergoError('quota_exceeded', `${what}: storage quota exceeded; free space or delete data`, { cause: err });
  }
  const msg = /** @type {any} */ (err)?.message ?? String(err);
  return new ConvergoError('database', `${what}: ${name ? name + ': ' : ''}${msg}`, { cause: err });
}


/**
 * An outbox entry. restamped: written again with fresh stamps after a
 * collected refusal; collected: refused collected outside a
 * reconciliation, held for one, with the server's message (both
 * reconcile.js's).
 * @typedef {{seq: number, c: string, id: string, change: Uint8Array, r?: string, restamped?: true, collected?: string}} OutboxEntry
 */
/**
 * Builds a local change to a record from its current state and a fresh
 * stamp; next issues another stamp, after stamp.
 * @typedef {(current: Rec, stamp: Stamp, next: () => Stamp) => Rec} Build
 */
/**
 * A change the server refused, as stored: c and rid name the record,
 * change is the encoded change as it was pushed, when is ms since epoch,
 * subject the subject the client was signed in as (null: unknown), size
 * what it counts against DEFAULTS.maxRejectedBytes.
 * @typedef {{id: number, c: string, rid: string, change: Uint8Array, code: string, message: string, requestId: string|null, when: number, subject: string|null, size: number, v?: number}} RejectedEntry
 */
/** @typedef {{c: string, id: string, rec: Uint8Array, seal: Uint8Array}} SealedEntry */
/**
 * Hears the records of collection c a transaction changed, as they are
 * stored now (null: none), once it commits, in commit order: local (a
 * write of this tab) or remote (pulled, or a refused change taken back).
 * @typedef {(c: string, records: Map<string, StoredRecord|null>, origin: 'local'|'remote') => void} OnChange
 */

/** @type {WeakMap<IDBTransaction, {origin: 'local'|'remote', changes: Map<string, Map<string, StoredRecord|null>>}>} what Store.notify noted in each transaction */
const changedIn = new WeakMap();
/** @type {WeakMap<IDBTransaction, [string, string, StoredRecord|null][]>} entries a transaction wrote without a notification (syncstore.js keep), which Store.seen holds once it commits */
export const keptIn = new WeakMap();
/** The cause of the error a guessed write fails with when its guess was wrong (Store.writeGuessed). */
export const STALE = Object.freeze({ name: 'Stale', message: 'the records a guessed write built on changed' });

/**
 * Reads that guard the writes issued behind them in the same transaction:
 * place calls check(request, differs) for each read. The promise resolves
 * once every read found what the writes assumed; when one did not, it
 * aborts tx in that read's own success event, before any write of the
 * transaction can have committed, and rejects with STALE. The promise is
 * marked handled, so a transaction that fails first leaves no unhandled
 * rejection; await it before the transaction's body returns.
 * @param {IDBTransaction} tx
 * @param {(check: (r: IDBRequest, differs: (v: any) => boolean) => void) => void} place
 * @returns {Promise<void>}
 */
export function guarded(tx, place) {
  const checked = new Promise((resolve, reject) => {
    let left = 0;
    let placed = false;
    let stale = false;
    place((r, differs) => {
      left++;
      r.onerror = () => reject(r.error);
      r.onsuccess = () => {
        if (stale) return;
        if (differs(r.result)) {
          stale = true;
          try {
            tx.abort();
          } catch {
            /* already finished */
          }
          reject(STALE);
        } else if (--left === 0 && placed) resolve(undefined);
      };
    });
    placed = true;
    if (left === 0) resolve(undefined);
  });
  checked.catch(() => {});
  return /** @type {Promise<void>} */ (checked);
}
/** @type {typeof import('./upgrade.js').upgrade|null} the upgrade of the database, once loaded (Store.openDB) */
let upgrade = null;

/**
 * How many stored entries a Store remembers (Store.seen): a write to a
 * record among them is one round trip to IndexedDB instead of two. About
 * 200 to 500 bytes each (the encoded record and its seal; the document is
 * not kept).
 */
const SEEN_MAX = 20_000;

/**
 * The fewest distinct ids a write reading first lists the keys held for
 * (Store.readHeld) instead of reading each id: the listing costs a second
 * round trip for the ids held and saves a read for each id not held.
 */
const PROBE_MIN = 16;
/** How many keys per id of the batch Store.readHeld lists at most. */
const PROBE_KEYS = 2;

/**
 * Whether stored entry a (as read) holds what remembered entry b holds:
 * the encoded record, the server state and the seal (undefined: none).
 * An entry written before version 5 is never taken for a remembered one.
 * @param {StoredRecord|undefined} a
 * @param {StoredRecord|undefined} b
 */
function sameEntry(a, b) {
  if (!a || !b) return a === b;
  const same = (/** @type {unknown} */ x, /** @type {unknown} */ y) => (x instanceof Uint8Array && y instanceof Uint8Array ? equalBytes(x, y) : x === undefined && y === undefined);
  return a.r instanceof Uint8Array && same(a.r, b.r) && same(a.b, b.b) && same(a.s, b.s) && same(a.sr, b.sr);
}

/**
 * How a pushed outbox entry was settled: acknowledged, or refused with the
 * server's code, message and the request id of the push.
 * @typedef {{entry: OutboxEntry, refused: boolean, code?: string, message?: string, requestId?: string|null}} Settled
 */

/**
 * The database version. 3: cursors are the protocol's opaque byte strings
 * (version 2 of the protocol); the upgrade from 2 drops the numeric cursors
 * of version 1, so every collection pulls again from the beginning once,
 * which merging makes harmless (it is idempotent). 4: seals (sealed), the
 * rejected changes (rejected) and the outbox's replica index; the upgrade
 * from 3 drops the cursors once more, so that every record comes again
 * with its seal. 5: records are written in their encoded form with their
 * seal (older entries are still read); the version keeps tabs running an
 * older client, which cannot read them, out. 6: the correction of the
 * wall time lives in the clock entry (ClockEntry), so a write reads one
 * entry fewer; the upgrade from 5 moves it there, and the version keeps
 * tabs running an older client out, whose writes would store the clock
 * without it and whose hellos would store it where no write reads it.
 */
export const DB_VERSION = 6;
export const RECORDS = 'records';
export const OUTBOX = 'outbox';
export const META = 'meta';
export const COLLECTION_KEY = 'collection:';
export const REJECTED = 'rejected';
export const SCHEMA_KEY = 'schema:';

/**
 * The meta "clock" entry: the clock's last reading (wall and logical;
 * absent until a tab saves one) with drift, the max drift a server stated
 * (Clock.saved), and offset, the correction of the device's wall time
 * (ms) the last hello of any tab measured (absent until a tab saved one).
 * Every write reads it and writes it back (Store.writeIn, Store.stampIn),
 * so whatever else every write must know of the clock belongs in it too,
 * a field of its own, taken where the offset is taken and saved by
 * Store.clockEntry.
 * @typedef {{wall?: number, logical?: number, drift?: number, offset?: number}} ClockEntry
 */

/**
 * @template T
 * @param {IDBRequest<T>} r
 * @returns {Promise<T>}
 */
export function req(r) {
  return new Promise((resolve, reject) => {
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error);
  });
}

/**
 * Resolves when tx commits; rejects with its error when it aborts.
 * @param {IDBTransaction} tx
 * @returns {Promise<void>}
 */
export function done(tx) {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onabort = () => reject(tx.error ?? new DOMException('transaction aborted', 'AbortError'));
  });
}

/**
 * Converts a record to its stored form.
 * @param {string} c
 * @param {Rec} r
 * @param {Rec|null} [base] the server's state while local changes are pending
 * @param {Seal|null} [seal] the seal to keep
 * @param {Map<string, unknown>} [defaults] what absent fields read as
 *   (the collection's schema defaults: Store.defaults)
 * @returns {StoredRecord}
 */
export function toStored(c, r, base, seal, defaults) {
  /** @type {StoredRecord} */
  const s = { c, id: r.id, r: encodeRecord(r), doc: docOf(r, defaults) };
  if (base) s.b = encodeRecord(base);
  if (seal) {
    s.s = seal.s;
    if (seal.sr !== null && !equalBytes(seal.sr, /** @type {Uint8Array} */ (s.r))) s.sr = seal.sr;
  }
  return s;
}

/**
 * The seal kept with stored record s (null: none in its entry).
 * @param {StoredRecord|undefined} s
 * @returns {Seal|null}
 */
export function sealOf(s) {
  if (!s || !(s.s instanceof Uint8Array)) return null;
  const sr = s.sr ?? s.r;
  return sr instanceof Uint8Array ? { s: s.s, sr } : null;
}

/**
 * Decodes a record this client stored (no size limit: a merged record may
 * hold more tombstones than one change).
 * @param {Uint8Array} bytes
 * @param {string} id the id it is stored under
 * @returns {Rec}
 */
export function decodeStored(bytes, id) {
  let rec;
  try {
    const r = new Reader(bytes, { canonical: false });
    rec = readRecord(r, undefined, storedValue);
    r.end();
  } catch {
    rec = null;
  }
  if (!rec || rec.id !== id) throw new ConvergoError('database', `stored record ${JSON.stringify(id)} is corrupt`);
  return rec;
}

/**
 * The server's state of stored record s while local changes are pending
 * (null: nothing pending).
 * @param {StoredRecord|undefined} s
 * @param {string} id
 * @returns {Rec|null}
 */
export function baseOf(s, id) {
  if (!s) return null;
  if (s.b instanceof Uint8Array) return decodeStored(s.b, id);
  return s.base ? fromBefore5(s.base, id) : null;
}

/**
 * The record an entry written before version 5 holds as {deleted, fields}
 * (the entry itself, or its base), its shape checked: stored data is input
 * like any other.
 * @param {{deleted?: Stamp, fields?: Map<string, import('./record.js').Field>}} e
 * @param {string} id
 * @returns {Rec}
 */
function fromBefore5(e, id) {
  if (!(e.fields instanceof Map) || !e.deleted || typeof e.deleted.wall !== 'number') {
    throw new ConvergoError('database', `stored record ${JSON.stringify(id)} is corrupt`);
  }
  return { id, deleted: e.deleted, fields: new Map(e.fields) };
}


/**
 * The record a stored entry holds (empty when there is none).
 * @param {StoredRecord|undefined} s
 * @param {string} id
 * @returns {Rec}
 */
export function fromStored(s, id) {
  if (!s) return emptyRecord(id);
  return s.r instanceof Uint8Array ? decodeStored(s.r, id) : fromBefore5(s, id);
}

/**
 * The database of one Convergo client. It reopens itself when the browser
 * closes the connection or another context deletes or upgrades the
 * database, and reports a database that came back empty through onReset.
 */
export class Store {
  /**
   * @param {{name: string, indexedDB: IDBFactory, IDBKeyRange?: typeof IDBKeyRange, onReset?: (holds: {pending: number, held: number, rejected: number}) => void, onError?: (e: Error) => void, onNewer?: () => void, onChange?: OnChange, durability?: 'strict'|'relaxed'}} opts
   *   durability: of local writes (OpenOptions.durability); onNewer: another
   *   context upgraded the database to a version this code cannot open
   */
  constructor(opts) {
    /** @type {'strict'|'relaxed'} */
    this.durability = opts.durability ?? 'strict';
    this.onChange = opts.onChange ?? (() => {});
    this.name = opts.name;
    this.idb = opts.indexedDB;
    this.keyRange = opts.IDBKeyRange ?? globalThis.IDBKeyRange;
    this.onReset = opts.onReset ?? (() => {});
    this.onError = opts.onError ?? (() => {});
    this.onNewer = opts.onNewer ?? (() => {});
    /** @type {IDBDatabase|null} */
    this.db = null;
    /** @type {Promise<IDBDatabase>|null} */
    this.opening = null;
    this.closed = false;
    /** @type {string|null} the replica id this client stamps with: prefix, separator, device */
    this.replica = null;
    /** @type {string|null} the device part of the replica id, shared by the tabs of the database */
    this.device = null;
    /** @type {string|null} the replica prefix of the subject the client writes as */
    this.prefix = null;
    /** @type {Promise<unknown>|null} a switch to a new token's prefix under way: writes wait for it */
    this.switching = null;
    /** @type {Clock|null} */
    this.clock = null;
    /** The correction of the device clock (ms) now applies: the server's time minus the device's, as the last hello of any tab measured it (setOffset). */
    this.offset = 0;
    /** Current wall time in ms, corrected by the server offset. */
    this.now = () => Date.now();
    /**
     * Stored entries as this tab last saw them (read or written), by
     * collection + "/" + id, the least recently seen first, at most
     * SEEN_MAX (the document left out): what a write builds on before it
     * reads (writeMany). Only a guess: another tab may have written since.
     * @type {Map<string, StoredRecord>}
     */
    this.seen = new Map();
    /** @type {Set<string>} collections whose every stored entry is in seen (listed whole since, none forgotten): an id not in seen holds no record */
    this.whole = new Set();
    /** @type {Map<string, number>} per collection, the schema version this code writes in (open's migrations; none: no migrations) */
    this.versions = new Map();
    /** @type {Map<string, Map<string, unknown>>} per collection, what absent fields read as at that version */
    this.defaults = new Map();
  }

  /**
   * Remembers the stored entry of c/id (null or undefined: none).
   * @param {string} c
   * @param {string} id
   * @param {StoredRecord|null|undefined} e
   */
  remember(c, id, e) {
    const k = c + '/' + id;
    this.seen.delete(k);
    if (!e) return;
    if (!(e.r instanceof Uint8Array)) {
      // An entry of before version 5: never guessed on.
      this.whole.delete(c);
      return;
    }
    // Without its document, which a guessed write does not read.
    this.seen.set(k, { ...e, doc: null });
    if (this.seen.size > SEEN_MAX) {
      // Forget the oldest quarter at once, into a new map: deleting from
      // the front of a Map one at a time leaves holes that every later
      // walk from the front steps over.
      const all = [...this.seen];
      const drop = all.length - (SEEN_MAX * 3) / 4;
      for (let i = 0; i < drop; i++) this.whole.delete(all[i][1].c);
      this.seen = new Map(all.slice(drop));
    }
  }

  /**
   * Stores record r of collection c (see toStored), with the collection's
   * defaults.
   * @param {string} c
   * @param {Rec} r
   * @param {Rec|null} [base]
   * @param {Seal|null} [seal]
   */
  stored(c, r, base, seal) {
    return toStored(c, r, base, seal, this.defaults.get(c));
  }

  /**
   * Opens the database and loads (or creates) the device part, the replica
   * id and the clock.
   * @param {{maxDrift?: number, prefix?: string|null}} [opts]
   *   prefix: the replica prefix of the token's subject, when a token is
   *   known (it wins over the stored one); a database that never knew one
   *   takes the prefix of subject ""
   */
  async init(opts = {}) {
    const anonymous = await replicaPrefix('');
    await this.conn();
    // Read or create the identity in one transaction, so tabs that open a
    // new database together agree on it.
    const [device, prefix, saved] = await this.tx([META], 'readwrite', 'load identity', async (tx) => {
      const meta = tx.objectStore(META);
      const [dev, old, pre, clock] = await Promise.all([req(meta.get('device')), req(meta.get('replica')), req(meta.get('prefix')), req(meta.get('clock'))]);
      let d = dev;
      if (!isDevice(d)) {
        // Protocol 1's random replica id is a fine device part.
        d = isDevice(old) ? old : newDevice();
        meta.put(d, 'device');
      }
      const p = opts.prefix ?? (isPrefix(pre) ? pre : anonymous);
      if (p !== pre) meta.put(p, 'prefix');
      return [d, p, clock];
    });
    this.device = device;
    this.prefix = prefix;
    this.replica = replicaId(prefix, device);
    this.clock = new Clock({ replica: this.replica, maxDrift: opts.maxDrift });
    // The correction first: the clock settles at the corrected wall time.
    this.setOffset(saved?.offset);
    this.clock.settle(saved, this.now());
  }

  /**
   * Writes from now on as the subject whose replica prefix this is (a new
   * token, or the server's hello said so). Pending changes of the previous
   * subject stay in the outbox for when it signs in again. Taken in
   * memory once stored: a write whose transaction began before read the
   * prefix stored then and took it (writeIn), and taken first, this one
   * would be undone, the tab writing as the old subject while the
   * database says the new one.
   * @param {string} prefix
   */
  async setPrefix(prefix) {
    if (!isPrefix(prefix)) throw new ConvergoError('invalid', `replica prefix ${JSON.stringify(prefix)}`);
    await this.setMeta('prefix', prefix);
    this.usePrefix(prefix);
  }

  /**
   * Corrects the wall time by offset ms from now on: the one a hello
   * measured (the sync loop's, stored in meta "clock"). A write reads
   * the stored one in its transaction and adopts it, so a tab that did
   * not hear the hello (a follower) stamps on the corrected wall time
   * too, not on a device clock the server would refuse (clock_drift).
   * @param {unknown} offset anything but a safe integer (none stored, a
   *   stored one corrupt) leaves the correction as it is, as does the one
   *   taken already
   */
  setOffset(offset) {
    if (!Number.isSafeInteger(offset) || offset === this.offset) return;
    const o = /** @type {number} */ (offset);
    this.offset = o;
    this.now = () => Date.now() + o;
  }

  /**
   * The clock entry to save (meta "clock", ClockEntry): the clock's
   * (Clock.saved) with the correction of the wall time.
   * @returns {ClockEntry}
   */
  clockEntry() {
    return { .../** @type {Clock} */ (this.clock).saved(), offset: this.offset };
  }

  /**
   * Adopts a prefix in memory.
   * @param {string} prefix
   */
  usePrefix(prefix) {
    if (prefix === this.prefix || this.device === null) return;
    this.prefix = prefix;
    this.replica = replicaId(prefix, this.device);
    if (this.clock) this.clock.replica = this.replica;
  }

  /** @returns {Promise<IDBDatabase>} an open connection, reopening if needed. */
  conn() {
    if (this.closed) return Promise.reject(new ConvergoError('closed', 'database is closed'));
    if (this.db) return Promise.resolve(this.db);
    if (!this.opening) {
      this.opening = this.openDB().finally(() => {
        this.opening = null;
      });
    }
    return this.opening;
  }

  /**
   * Opens the connection. A database that needs upgrading (new, or of an
   * older version) has its version change aborted the first time, while
   * upgrade.js, which only that needs, loads; then it is opened again.
   * @returns {Promise<IDBDatabase>}
   */
  async openDB() {
    const r = this.idb.open(this.name, DB_VERSION);
    let wait = false;
    r.onupgradeneeded = (ev) => {
      if (upgrade) upgrade(r, ev, this.keyRange);
      else {
        wait = true;
        /** @type {IDBTransaction} */ (r.transaction).abort();
      }
    };
    r.onblocked = () => this.onError(new ConvergoError('database', `opening ${this.name} is blocked by another tab holding an older version`));
    let db;
    try {
      db = await req(r);
    } catch (e) {
      if (!wait) throw fromIDBError(e, `open ${this.name}`);
      ({ upgrade } = await loadOnDemand(`open ${this.name}`, 'upgrade.js', () => import('./upgrade.js')));
      return this.openDB();
    }
    let gone = false;
    const lost = (/** @type {any} */ ev) => {
      gone = true;
      if (this.db === db) this.db = null;
      db.close();
      // Newer code upgraded it: this code can never open it again.
      if (ev?.newVersion > DB_VERSION) return this.onNewer();
      // Reopen soon (after the delete or upgrade that asked us to step
      // aside) and find out whether our data survived.
      if (!this.closed) {
        setTimeout(() => {
          if (!this.closed) this.verify().catch((e) => this.onError(e));
        }, 20);
      }
    };
    // Another context deletes or upgrades the database: step aside, and
    // reopen (and notice it came back empty) on next use.
    db.onversionchange = lost;
    // The browser closed the connection (storage cleared, evicted).
    db.onclose = lost;
    // The connection is kept only once its identity is checked: a wipe
    // that could not be handled yet (wiped.js did not load) is found
    // again by the next operation, which opens again.
    try {
      if (this.device !== null) await this.checkIdentity(db);
    } catch (e) {
      db.close();
      throw e;
    }
    if (this.closed) {
      db.close();
      throw new ConvergoError('closed', 'database is closed');
    }
    if (!gone) this.db = db;
    return db;
  }

  /**
   * After a reopen: if the identity is gone the database was deleted or
   * evicted, and wiped.js (loaded only then) writes ours back and lets the
   * owner rebuild from the server.
   * @param {IDBDatabase} db
   */
  async checkIdentity(db) {
    const device = await req(db.transaction([META]).objectStore(META).get('device'));
    if (device !== this.device) await (await loadOnDemand(`open ${this.name}`, 'wiped.js', () => import('./wiped.js'))).rebuild(this, db);
  }

  /** Checks that the database still holds our identity (detects a wipe). */
  async verify() {
    const db = await this.conn();
    await this.checkIdentity(db);
  }

  /**
   * Runs fn in a transaction and waits for it to commit.
   * @template T
   * @param {string[]} stores
   * @param {IDBTransactionMode} mode
   * @param {string} what
   * @param {(tx: IDBTransaction) => Promise<T>|T} fn
   * @param {'strict'|'relaxed'} [durability] strict (the default) for local
   *   writes, which exist nowhere else (unless the app chose relaxed:
   *   OpenOptions.durability); relaxed for what the server can give again
   *   (pulled pages, settled outbox entries)
   * @returns {Promise<T>}
   */
  async tx(stores, mode, what, fn, durability = 'strict') {
    const db = await this.conn();
    /** @type {IDBTransaction} */
    let tx;
    try {
      tx = db.transaction(stores, mode, { durability });
    } catch (e) {
      if (/** @type {any} */ (e)?.name === 'InvalidStateError') {
        // The connection closed under us: reopen once.
        this.db = null;
        tx = (await this.conn()).transaction(stores, mode, { durability });
      } else {
        throw fromIDBError(e, what);
      }
    }
    // Listeners run in the order they were added, and the page runs its
    // microtasks after each: the changes are announced before the caller
    // hears the transaction committed.
    tx.addEventListener('complete', () => {
      const kept = keptIn.get(tx);
      if (kept) for (const [c, id, e] of kept) this.remember(c, id, e);
      const noted = changedIn.get(tx);
      if (!noted) return;
      for (const [c, recs] of noted.changes) {
        for (const [id, e] of recs) this.remember(c, id, e);
        this.onChange(c, recs, noted.origin);
      }
    });
    const committed = done(tx);
    try {
      const out = await fn(tx);
      await committed;
      return out;
    } catch (e) {
      try {
        tx.abort();
      } catch {
        /* already finished */
      }
      committed.catch(() => {});
      throw fromIDBError(e, what);
    }
  }

  /** @param {string} key */
  getMeta(key) {
    return this.tx([META], 'readonly', `read ${key}`, (tx) => req(tx.objectStore(META).get(key)));
  }

  /**
   * @param {string} key
   * @param {unknown} value
   */
  setMeta(key, value) {
    return this.tx([META], 'readwrite', `write ${key}`, (tx) => req(tx.objectStore(META).put(value, key)));
  }

  /**
   * Tells onChange about record s of collection c once tx commits (with
   * the other records tx changed, after the transactions committed before
   * it).
   * @param {IDBTransaction} tx
   * @param {string} c
   * @param {string} id
   * @param {StoredRecord|null} s
   * @param {'local'|'remote'} origin
   */
  notify(tx, c, id, s, origin) {
    let byC = changedIn.get(tx);
    if (!byC) changedIn.set(tx, (byC = { origin, changes: new Map() }));
    let recs = byC.changes.get(c);
    if (!recs) byC.changes.set(c, (recs = new Map()));
    recs.set(id, s);
  }

  /**
   * The stored records of collection c with these ids (undefined: none).
   * @param {string} c
   * @param {string[]} ids
   * @returns {Promise<(StoredRecord|undefined)[]>}
   */
  getMany(c, ids) {
    return this.tx([RECORDS], 'readonly', `read ${c}`, async (tx) => {
      // The records of other tabs' changes: held, so read without listing.
      const held = await this.readHeld(tx.objectStore(RECORDS), c, ids, false);
      return ids.map((id) => {
        this.remember(c, id, held.get(id));
        return held.get(id);
      });
    });
  }

  /**
   * Writes locally: in one transaction, reads the record and the clock,
   * builds a change with a fresh stamp, merges it, stores the record and
   * appends the change to the outbox.
   * @param {string} c collection
   * @param {string} id
   * @param {Build} build returns the change
   * @returns {Promise<{record: StoredRecord, change: Rec}>}
   */
  async write(c, id, build) {
    return (await this.writeMany(c, [{ id, build }]))[0];
  }

  /**
   * Writes many records locally in one transaction (all or none): write
   * for each item in order. A later item with the id of an earlier one
   * builds on its result.
   *
   * The transaction first builds on the records as this tab last saw them
   * stored (remembered; an id it has not seen is taken to hold none) and
   * issues its writes at once, with the reads that check that guess in
   * front of them: the clock (with the correction), the prefix and the records. IndexedDB runs
   * the requests of a transaction in order, so the reads see the state
   * the writes replace; if any differs from the guess (another tab wrote,
   * the record was never seen here), the transaction is aborted before it
   * commits and written again after reading them (writeIn). The common
   * write is then one round trip to IndexedDB instead of two.
   * @param {string} c collection
   * @param {{id: string, build: Build}[]} items
   * @returns {Promise<{record: StoredRecord, change: Rec}[]>}
   */
  async writeMany(c, items) {
    // Without a switch under way, the transaction is issued at once, in
    // the order of the calls.
    if (this.switching) await this.switching;
    const what = items.length === 1 ? `write ${c}/${items[0].id}` : `write ${items.length} records of ${c}`;
    const guess = this.guess(c, items);
    if (guess) {
      try {
        return await this.tx([RECORDS, OUTBOX, META], 'readwrite', what, (tx) => this.writeGuessed(tx, c, items, guess), this.durability);
      } catch (e) {
        if (/** @type {any} */ (e)?.cause !== STALE) throw e;
      }
    }
    return this.tx([RECORDS, OUTBOX, META], 'readwrite', what, (tx) => this.writeIn(tx, c, items), this.durability);
  }

  /**
   * What the records of items hold as remembered (seen), to write without
   * reading first; null when some record is unknown: an id not seen holds
   * no record only in a collection seen whole.
   * @param {string} c
   * @param {{id: string}[]} items
   * @returns {Map<string, StoredRecord|undefined>|null}
   */
  guess(c, items) {
    /** @type {Map<string, StoredRecord|undefined>} */
    const out = new Map();
    // A clock too far ahead may take the clock saved (writeIn: settle).
    if (this.clock?.ahead(this.now())) return null;
    const whole = this.whole.has(c);
    for (const { id } of items) {
      const e = this.seen.get(c + '/' + id);
      if (!e && !whole) return null;
      out.set(id, e);
    }
    return out;
  }

  /**
   * writeIn without reading first: builds on guess (the stored entry of
   * each id as remembered), issues the writes, and checks the guess with
   * reads placed before them; aborts tx and rejects with STALE (as the
   * cause) when the guess was wrong.
   * @param {IDBTransaction} tx spanning records, outbox and meta
   * @param {string} c
   * @param {{id: string, build: Build}[]} items
   * @param {Map<string, StoredRecord|undefined>} guess
   * @returns {Promise<{record: StoredRecord, change: Rec}[]>}
   */
  async writeGuessed(tx, c, items, guess) {
    const records = tx.objectStore(RECORDS);
    const meta = tx.objectStore(META);
    // Stamps issued from here on follow before: if no tab saved a later
    // clock, none of them was issued by another tab.
    const { last: before, maxDrift: drift } = /** @type {Clock} */ (this.clock);
    const prefix = this.prefix;
    const offset = this.offset;
    const checked = guarded(tx, (check) => {
      // A later clock, or another bound than this tab's (the leader
      // heard the server's): writeIn takes it (Clock.settle); or another
      // correction of the wall time: writeIn takes it too.
      check(meta.get('clock'), (v) => v != null && ((typeof v.wall === 'number' && (compareTime(v, before) > 0 || (v.drift > 0 && v.drift !== drift))) || (Number.isSafeInteger(v.offset) && v.offset !== offset)));
      check(meta.get('prefix'), (v) => isPrefix(v) && v !== prefix);
      // A newer schema version than this code's: writeIn says so.
      check(meta.get(SCHEMA_KEY + c), (v) => this.newerSchema(c, v));
      for (const [id, g] of guess) check(records.get([c, id]), (v) => !sameEntry(v, g));
    });
    const out = this.stampIn(tx, c, items, (id) => guess.get(id));
    await checked;
    return out;
  }

  /**
   * The body of writeMany, in transaction tx (which spans records, outbox
   * and meta): one read of the clock (with the correction) and the prefix, the records held read
   * together (readHeld).
   * @param {IDBTransaction} tx
   * @param {string} c
   * @param {{id: string, build: Build}[]} items
   * @returns {Promise<{record: StoredRecord, change: Rec}[]>}
   */
  async writeIn(tx, c, items) {
    const clock = /** @type {Clock} */ (this.clock);
    const records = tx.objectStore(RECORDS);
    const meta = tx.objectStore(META);
    const [savedClock, prefix, schema, byId] = await Promise.all([
      req(meta.get('clock')),
      req(meta.get('prefix')),
      req(meta.get(SCHEMA_KEY + c)),
      this.readHeld(records, c, items.map((x) => x.id)),
    ]);
    // Another tab, running newer code, upgraded the collection: writes of
    // this one would be in a shape its data has left.
    if (this.newerSchema(c, schema)) {
      throw new ConvergoError('database', `write ${c}: its local data is at schema version ${schema}, newer than this code's (${this.versions.get(c) ?? 1}): reload the app`);
    }
    // The wall time as the last hello (of any tab) corrected it.
    this.setOffset(savedClock?.offset);
    clock.settle(savedClock, this.now());
    // Another tab may have learnt a new subject: write as it does.
    if (isPrefix(prefix)) this.usePrefix(prefix);
    return this.stampIn(tx, c, items, (id) => byId.get(id));
  }

  /**
   * Whether v, stored as the schema version collection c's data is in
   * (meta "schema:<collection>"), is newer than this code's: another tab,
   * running newer code, upgraded it, and this one writes c no more
   * (writeIn; nor writes a refused change of it again: reconcile.js's
   * restampRefused). While it leads it still stores what it pulls of c,
   * whose pages come in v (syncstore.js's schemaVersion).
   * @param {string} c
   * @param {unknown} v
   */
  newerSchema(c, v) {
    return Number.isSafeInteger(v) && /** @type {number} */ (v) > (this.versions.get(c) ?? 1);
  }

  /**
   * The stored entries of ids in collection c (undefined: none), read in
   * records' transaction. A batch of PROBE_MIN ids or more first lists the
   * keys held between its smallest and its largest id (at most PROBE_KEYS
   * per id) and reads only the ids listed, and those past the listing's
   * end when it stopped short: a batch of new records reads none, for one
   * more round trip.
   * @param {IDBObjectStore} records
   * @param {string} c
   * @param {string[]} ids
   * @param {boolean} [probe] false: read every id (they are expected held)
   * @returns {Promise<Map<string, StoredRecord|undefined>>}
   */
  async readHeld(records, c, ids, probe = true) {
    // Sorted as IndexedDB orders strings: by their UTF-16 code units.
    ids = [...new Set(ids)].sort();
    const most = PROBE_KEYS * ids.length;
    if (probe && ids.length >= PROBE_MIN) {
      const keys = /** @type {[string, string][]} */ (await req(records.getAllKeys(this.keyRange.bound([c, ids[0]], [c, ids[ids.length - 1]]), most)));
      const found = new Set(keys.map((k) => k[1]));
      ids = ids.filter((id) => found.has(id) || (keys.length === most && id > keys[most - 1][1]));
    }
    const got = await Promise.all(ids.map((id) => /** @type {Promise<StoredRecord|undefined>} */ (req(records.get([c, id])))));
    return new Map(ids.map((id, i) => [id, got[i]]));
  }

  /**
   * Builds each item's change with a fresh stamp on the record it finds
   * (storedOf: the stored entry of an id before this transaction), merges
   * it, and writes the record, the outbox entry and the clock, in tx.
   * @param {IDBTransaction} tx
   * @param {string} c
   * @param {{id: string, build: Build}[]} items
   * @param {(id: string) => StoredRecord|undefined} storedOf
   * @returns {{record: StoredRecord, change: Rec}[]}
   */
  stampIn(tx, c, items, storedOf) {
    const clock = /** @type {Clock} */ (this.clock);
    const records = tx.objectStore(RECORDS);
    const outbox = tx.objectStore(OUTBOX);
    /** @type {Map<string, StoredRecord>} records written earlier in this batch */
    const written = new Map();
    /** @type {{record: StoredRecord, change: Rec}[]} */
    const out = [];
    for (const { id, build } of items) {
      const before = written.get(id) ?? storedOf(id);
      const current = fromStored(before, id);
      const now = this.now();
      // Stamp after everything this record holds, so a write over a value
      // the user saw wins over it even if our wall clock lags.
      observeRecord(clock, current, now);
      const stamp = clock.now(now);
      const change = build(current, stamp, () => clock.now(this.now()));
      // The first pending change keeps the server's state aside.
      const base = baseOf(before, id) ?? { id, deleted: current.deleted, fields: new Map(current.fields) };
      mergeInto(current, change);
      const record = this.stored(c, current, base, sealOf(before));
      records.put(record);
      outbox.add({ c, id, change: encodeChange({ collection: c, record: change }), r: this.replica });
      written.set(id, record);
      this.notify(tx, c, id, record, 'local');
      out.push({ record, change });
    }
    tx.objectStore(META).put(this.clockEntry(), 'clock');
    return out;
  }

  /**
   * Remembers that collections are in use, so that any tab that leads,
   * now or after a reload, syncs them.
   * @param {Iterable<string>} names valid collection names
   */
  addCollections(names) {
    const list = [...names];
    if (list.length === 0) return Promise.resolve();
    return this.tx([META], 'readwrite', 'remember collections', (tx) => {
      const meta = tx.objectStore(META);
      for (const c of list) meta.put(true, COLLECTION_KEY + c);
    });
  }

  /**
   * @param {string} c
   * @param {string} id
   * @returns {Promise<StoredRecord|undefined>}
   */
  get(c, id) {
    return this.tx([RECORDS], 'readonly', `get ${c}/${id}`, async (tx) => {
      const e = await req(tx.objectStore(RECORDS).get([c, id]));
      this.remember(c, id, e);
      return e;
    });
  }

  /**
   * Every stored record of collection c (existing or not).
   * @param {string} c
   * @returns {Promise<StoredRecord[]>}
   */
  list(c) {
    const range = this.keyRange.bound([c], [c, []]);
    return this.tx([RECORDS], 'readonly', `list ${c}`, async (tx) => {
      const all = /** @type {StoredRecord[]} */ (await req(tx.objectStore(RECORDS).getAll(range)));
      // All of them, when they fit: then an id not among them holds none.
      for (const e of all) this.remember(c, e.id, e);
      if (all.length <= SEEN_MAX && all.every((e) => e.r instanceof Uint8Array)) this.whole.add(c);
      return all;
    });
  }

  /** @returns {Promise<number>} how many rejected changes are kept */
  rejectedCount() {
    return this.tx([REJECTED], 'readonly', 'count rejected changes', (tx) => req(tx.objectStore(REJECTED).count()));
  }

  /**
   * Counts the outbox in transaction tx (spanning the outbox): pending,
   * the entries the current replica id may push (its own and protocol
   * 1's); held, those of another subject, waiting for it to sign in again
   * (syncstore.js outboxCounts in a transaction of its own).
   * @param {IDBTransaction} tx
   * @returns {Promise<{pending: number, held: number}>}
   */
  async countIn(tx) {
    const store = tx.objectStore(OUTBOX);
    const idx = store.index('replica');
    const [all, stamped, mine] = await Promise.all([
      req(store.count()),
      req(idx.count()),
      this.replica === null ? Promise.resolve(0) : req(idx.count(this.replica)),
    ]);
    const held = stamped - mine;
    return { pending: all - held, held };
  }

  /**
   * countIn, with the id of the newest rejected change (0: none),
   * read together: a change the server refused leaves the outbox in the
   * transaction that makes it the newest rejected change.
   * @returns {Promise<{counts: {pending: number, held: number}, newest: number}>}
   */
  outboxView() {
    return this.tx([OUTBOX, REJECTED], 'readonly', 'count outbox', async (tx) => {
      const [counts, last] = await Promise.all([this.countIn(tx), req(tx.objectStore(REJECTED).openKeyCursor(null, 'prev'))]);
      return { counts, newest: last ? Number(last.key) : 0 };
    });
  }

  /**
   * What the database holds: the outbox counts (countIn) and the rejected
   * changes, as a status counts them after a wipe (Database._onReset), read
   * in tx (spanning both: wiped.js, for the tab that found the wipe) or in
   * a transaction of its own (peer.js, for the tabs it tells, which load
   * no module for it: a tab offline may not be able to).
   * @param {IDBTransaction} [tx]
   * @returns {Promise<{pending: number, held: number, rejected: number}>}
   */
  holds(tx) {
    const count = async (/** @type {IDBTransaction} */ t) => {
      const [counts, rejected] = await Promise.all([this.countIn(t), req(t.objectStore(REJECTED).count())]);
      return { ...counts, rejected };
    };
    return tx ? count(tx) : this.tx([OUTBOX, REJECTED], 'readonly', 'count the rebuilt database', count);
  }

  /**
   * Forgets what it remembers of the records (seen, whole): they went with
   * a wiped database (wiped.js, and peer.js for another tab's wipe), or
   * the Store closes.
   */
  forget() {
    this.seen.clear();
    this.whole.clear();
  }

  close() {
    this.closed = true;
    this.forget();
    this.db?.close();
    this.db = null;
  }
}
