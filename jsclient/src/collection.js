// A collection of documents: writes (put, update, delete), reads, queries
// and live subscriptions. Writes go to the Store (IndexedDB and the
// outbox) and then tell the Database, which refreshes subscriptions,
// other tabs and the sync loop.

import { encode, equalBytes } from './cbor.js';
import { ConvergoError } from './errors.js';
import { compileQuery, matching, position, runQuery } from './query.js';
import { checkSize, emptyRecord, validateId } from './record.js';
import { docOfStored, fieldsOf } from './values.js';

/** @typedef {import('./db.js').StoredRecord} StoredRecord */
/** @typedef {import('./database.js').Database} Database */
/** @typedef {import('./query.js').Query} Query */
/** @typedef {import('./values.js').Doc} Doc */

/**
 * A live query or record subscription. A query keeps its result (every
 * matching document, in order) and updates it from the records that
 * changed: a change costs a binary search per changed record, not a pass
 * over the collection.
 */
export class Subscription {
  /**
   * @param {Database} db
   * @param {string} collection
   * @param {string|null} id
   * @param {Query} query
   * @param {(result: any) => void} cb
   */
  constructor(db, collection, id, query, cb) {
    this.db = db;
    this.collection = collection;
    this.id = id;
    this.q = compileQuery(query);
    this.cb = cb;
    this.active = true;
    /** @type {Doc[]|null} the matching documents in order; null until the first full run */
    this.rows = null;
    /** @type {Map<string, Doc>} the documents in rows by id */
    this.byId = new Map();
    /**
     * The documents the first run read, until a change is applied: the
     * changes applied first may be in that read already (written as the
     * subscription began), and one that leaves a document as it was read
     * changes nothing seen.
     * @type {Map<string, Doc|null>|null}
     */
    this.read = null;
  }

  /**
   * Calls back, reporting a throwing callback as an error event.
   * @param {unknown} result
   */
  emit(result) {
    if (!this.active) return;
    try {
      this.cb(result);
    } catch (e) {
      this.db._emit('error', e);
    }
  }

  /** Calls back with the current result. */
  emitRows() {
    // A copy, of the first limit rows (all without a limit).
    this.emit(/** @type {Doc[]} */ (this.rows).slice(0, this.q.limit));
  }

  /**
   * The first run: the whole collection (a record subscription reads its
   * record alone).
   * @param {(c: string) => Promise<StoredRecord[]>} listOf reads a collection
   */
  async full(listOf) {
    if (!this.active) return;
    if (this.id !== null) {
      this.rows = [];
      const d = docOfStored(await this.db.store.get(this.collection, this.id));
      this.read = new Map([[this.id, d]]);
      this.emit(d);
      return;
    }
    const rows = matching(await listOf(this.collection), this.q);
    this.byId = new Map(rows.map((d) => [d.id, d]));
    this.rows = rows;
    this.read = this.byId;
    this.emitRows();
  }

  /**
   * Records of the collection changed: update the result from them alone,
   * and call back if what the subscriber sees changed.
   * @param {Map<string, StoredRecord|null>} records the records as stored now (null: none)
   * @param {Map<string, Doc|null>} docs their documents
   */
  apply(records, docs) {
    if (!this.active || this.rows === null) return;
    const read = this.read;
    this.read = null;
    if (this.id !== null) {
      const d = docs.get(this.id) ?? null;
      if (docs.has(this.id) && !(read && same(read.get(this.id) ?? null, d))) this.emit(d);
      return;
    }
    const { filter, compare, limit } = this.q;
    const rows = this.rows;
    // The first position whose document changed: a limited result need not
    // be reported when every change is beyond its end.
    let first = Infinity;
    for (const [id, s] of records) {
      const old = this.byId.get(id);
      const d = s ? filter(s, docs.get(id) ?? null) : null;
      if (!old && !d) continue;
      if (read && same(old, d)) continue;
      if (old) {
        let i = position(rows, old, compare);
        if (rows[i] !== old) i = rows.indexOf(old);
        rows.splice(i, 1);
        this.byId.delete(id);
        first = Math.min(first, i);
      }
      if (d) {
        const i = position(rows, d, compare);
        rows.splice(i, 0, d);
        this.byId.set(id, d);
        first = Math.min(first, i);
      }
    }
    if (first === Infinity || (limit !== undefined && first >= limit)) return;
    this.emitRows();
  }
}

/**
 * Whether two documents hold the same values (canonical encodings).
 * @param {Doc|null|undefined} a
 * @param {Doc|null} b
 */
const same = (a, b) => a === b || (!!a && !!b && equalBytes(encode(a), encode(b)));

/**
 * The change a put or an update makes: the given fields set and, for a
 * put (whole), every other field unset.
 * @param {string} id
 * @param {Map<string, Uint8Array|null>} fields
 * @param {boolean} [whole]
 * @returns {(current: import('./record.js').Record, stamp: import('./hlc.js').Stamp) => import('./record.js').Record}
 */
function fieldsChange(id, fields, whole = true) {
  return (current, stamp) => {
    const change = emptyRecord(id);
    for (const [k, v] of fields) change.fields.set(k, { stamp, value: v });
    if (whole) {
      for (const [k, f] of current.fields) {
        if (!fields.has(k) && f.value !== null) change.fields.set(k, { stamp, value: null });
      }
    }
    checkSize({ ...current, fields: new Map([...current.fields, ...change.fields]) }, change);
    return change;
  };
}

/** One collection of documents. */
export class Collection {
  /**
   * @param {Database} db
   * @param {string} name
   */
  constructor(db, name) {
    this.db = db;
    this.name = name;
  }

  _check() {
    if (this.db.closed) throw new ConvergoError('closed', 'database is closed');
  }

  /**
   * Replaces document id: fields missing from doc are unset.
   * @param {string} id
   * @param {Record<string, unknown>} doc
   * @returns {Promise<Doc>}
   */
  async put(id, doc) {
    this._check();
    validateId(id);
    const fields = fieldsOf(id, doc, `put ${this.name}/${id}`);
    const { record } = await this.db.store.write(this.name, id, fieldsChange(id, fields));
    this.db._wrote(1);
    return /** @type {Doc} */ (docOfStored(record) ?? { id });
  }

  /**
   * Replaces many documents in one IndexedDB transaction, with one
   * notification of live queries and other tabs: each document's fields
   * missing from it are unset, as put does. docs are documents with their
   * id (a string); a later document with the same id wins. All are written
   * or none.
   * @param {Array<Record<string, unknown> & {id: string}>} docs
   * @returns {Promise<Doc[]>}
   */
  async putMany(docs) {
    this._check();
    if (!Array.isArray(docs)) throw new ConvergoError('invalid', 'putMany: docs must be an array');
    const items = docs.map((doc, i) => {
      const id = doc?.id;
      if (typeof id !== 'string') throw new ConvergoError('invalid', `putMany: docs[${i}] has no string id`);
      validateId(id);
      const fields = fieldsOf(id, doc, `put ${this.name}/${id}`);
      return { id, build: fieldsChange(id, fields) };
    });
    if (items.length === 0) return [];
    const written = await this.db.store.writeMany(this.name, items);
    this.db._wrote(items.length);
    return written.map(({ record }) => /** @type {Doc} */ (docOfStored(record) ?? { id: record.id }));
  }

  /**
   * Sets the given fields of document id (creating it when missing); a
   * field set to undefined is unset.
   * @param {string} id
   * @param {Record<string, unknown>} partial
   * @returns {Promise<Doc|null>}
   */
  async update(id, partial) {
    this._check();
    validateId(id);
    const fields = fieldsOf(id, partial, `update ${this.name}/${id}`);
    if (fields.size === 0) return this.get(id);
    const { record } = await this.db.store.write(this.name, id, fieldsChange(id, fields, false));
    this.db._wrote(1);
    return docOfStored(record);
  }

  /**
   * Deletes document id. A later write re-creates it with only its fields.
   * @param {string} id
   */
  async delete(id) {
    this._check();
    validateId(id);
    await this.db.store.write(this.name, id, (_current, stamp) => ({ id, deleted: stamp, fields: new Map() }));
    this.db._wrote(1);
  }

  /**
   * @param {string} id
   * @returns {Promise<Doc|null>}
   */
  async get(id) {
    this._check();
    validateId(id);
    return docOfStored(await this.db.store.get(this.name, id));
  }

  /** @returns {Promise<Doc[]>} every document, ordered by id */
  async list() {
    return this.query({});
  }

  /**
   * @param {Query} [q]
   * @returns {Promise<Doc[]>}
   */
  async query(q = {}) {
    this._check();
    return runQuery(await this.db.store.list(this.name), q);
  }

  /**
   * Calls cb now and after every local or remote change: with the document
   * (or null) when queryOrId is an id, with the query's result otherwise.
   * Returns a function that stops the subscription.
   * @param {string|Query} queryOrId
   * @param {(result: any) => void} cb
   * @returns {() => void}
   */
  subscribe(queryOrId, cb) {
    this._check();
    if (typeof cb !== 'function') throw new ConvergoError('invalid', 'subscribe: callback must be a function');
    let sub;
    if (typeof queryOrId === 'string') {
      validateId(queryOrId);
      sub = new Subscription(this.db, this.name, queryOrId, {}, cb);
    } else {
      sub = new Subscription(this.db, this.name, null, queryOrId ?? {}, cb); // checks the query now rather than in the callback
    }
    this.db.subs.add(sub);
    this.db.fresh.add(sub);
    this.db._flush();
    return () => {
      sub.active = false;
      this.db.subs.delete(sub);
      this.db.fresh.delete(sub);
    };
  }
}

