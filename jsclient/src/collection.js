// A collection of documents: writes (put, update, delete), reads, queries
// and live subscriptions. Writes go to the Store (IndexedDB and the
// outbox) and then tell the Database, which refreshes subscriptions,
// other tabs and the sync loop.

import { ConvergoError } from './errors.js';
import { runQuery } from './query.js';
import { emptyRecord, validateId } from './record.js';
import { checkSize, docOfStored, fieldsOf } from './values.js';

/** @typedef {import('./db.js').StoredRecord} StoredRecord */
/** @typedef {import('./database.js').Database} Database */
/** @typedef {import('./query.js').Query} Query */
/** @typedef {import('./values.js').Doc} Doc */

/** A live query or record subscription. */
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
    this.query = query;
    this.cb = cb;
    this.active = true;
    /** @type {Promise<void>} */
    this.running = Promise.resolve();
  }

  /**
   * Re-reads and calls back, after any earlier run of this subscription.
   * @param {(c: string) => Promise<StoredRecord[]>} listOf reads a collection
   */
  run(listOf) {
    this.running = this.running.then(async () => {
      if (!this.active) return;
      try {
        const result =
          this.id !== null
            ? docOfStored(await this.db.store.get(this.collection, this.id))
            : runQuery(await listOf(this.collection), this.query);
        if (this.active) this.cb(result);
      } catch (e) {
        this.db._emit('error', e);
      }
    });
    return this.running;
  }
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
    const { record } = await this.db.store.write(this.name, id, (current, stamp) => {
      const change = emptyRecord(id);
      for (const [k, v] of fields) change.fields.set(k, { stamp, value: v });
      for (const [k, f] of current.fields) {
        if (!fields.has(k) && f.value !== null) change.fields.set(k, { stamp, value: null });
      }
      checkSize({ ...current, fields: new Map([...current.fields, ...change.fields]) }, change);
      return change;
    });
    await this.db._wrote(this.name, id);
    return /** @type {Doc} */ (docOfStored(record) ?? { id });
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
    const { record } = await this.db.store.write(this.name, id, (current, stamp) => {
      const change = emptyRecord(id);
      for (const [k, v] of fields) change.fields.set(k, { stamp, value: v });
      checkSize({ ...current, fields: new Map([...current.fields, ...change.fields]) }, change);
      return change;
    });
    await this.db._wrote(this.name, id);
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
    await this.db._wrote(this.name, id);
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
      const q = queryOrId ?? {};
      runQuery([], q); // validates the query now rather than in the callback
      sub = new Subscription(this.db, this.name, null, q, cb);
    }
    this.db.subs.add(sub);
    this.db.dirty.add(sub);
    this.db._flush();
    return () => {
      sub.active = false;
      this.db.subs.delete(sub);
      this.db.dirty.delete(sub);
    };
  }
}

