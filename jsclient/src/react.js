// React binding (convergo/react): hooks over Collection.subscribe and the
// database's status. React is a peer dependency of this module only; the
// rest of the library does not import it.
//
//   import { useQuery, useDoc, useStatus } from 'convergo/react';
//   const todos = useQuery(db.collection('demo.todos'), { where: { done: false }, orderBy: 'title' });
//   if (todos === undefined) return <Spinner />;   // before the first result

import { useEffect, useState } from 'react';

/** @typedef {import('./collection.js').Collection} Collection */
/** @typedef {import('./database.js').Database} Database */
/** @typedef {import('./query.js').Query} Query */

/** @type {WeakMap<Function, number>} */
const fnIds = new WeakMap();
let nextFn = 1;

/**
 * A string that is equal for equal queries, so a query object written
 * inline (a new object each render) does not subscribe again, and differs
 * for queries that differ (each value tagged with its kind, so 1n, '1n',
 * undefined, NaN, null, a Float and bytes never pass for one another). A
 * predicate counts by identity: wrap it in useCallback, or it subscribes
 * anew each render.
 * @param {string|Query} q
 * @returns {string}
 */
export function queryKey(q) {
  return typeof q === 'string' ? 'id:' + q : JSON.stringify(tagged(q ?? {}));
}

/**
 * v as JSON-able data that is equal only for equal values.
 * @param {unknown} v
 * @returns {unknown}
 */
function tagged(v) {
  switch (typeof v) {
    case 'function':
      if (!fnIds.has(v)) fnIds.set(v, nextFn++);
      return 'f' + fnIds.get(v);
    case 'string':
      return 's' + v;
    case 'number':
    case 'bigint':
    case 'undefined':
      return typeof v + String(v);
    case 'object':
      if (v === null) return v;
      if (v instanceof Uint8Array) return 'b' + v.join();
      if (v instanceof Map) return ['m', ...[...v].map(([k, x]) => [tagged(k), tagged(x)])];
      if (Array.isArray(v)) return ['a', ...v.map(tagged)];
      // A plain object, or an instance (Float) with its fields.
      return [Object.getPrototypeOf(v) === Object.prototype ? 'o' : 'c', ...Object.keys(v).sort().flatMap((k) => [k, tagged(/** @type {any} */ (v)[k])])];
  }
  return v;
}

/**
 * Subscribes while mounted; returns the latest result, undefined before
 * the first one (or with no collection).
 * @param {Collection|null|undefined} collection
 * @param {string|Query} queryOrId
 */
function useLive(collection, queryOrId) {
  const key = queryKey(queryOrId);
  /** @type {[{c: Collection|null|undefined, key: string, value: any}, (s: {c: Collection|null|undefined, key: string, value: any}) => void]} */
  const [state, setState] = useState({ c: collection, key, value: undefined });
  useEffect(() => {
    if (!collection) return undefined;
    let on = true;
    const stop = collection.subscribe(queryOrId, (value) => {
      if (on) setState({ c: collection, key, value });
    });
    return () => {
      on = false;
      stop();
    };
    // queryOrId is represented by key.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [collection, key]);
  return state.c === collection && state.key === key ? state.value : undefined;
}

/**
 * The documents of a live query: called again whenever the result changes
 * (local writes, other tabs, the server). undefined until the first result.
 * @param {Collection|null|undefined} collection
 * @param {Query} [query]
 * @returns {import('./values.js').Doc[]|undefined}
 */
export function useQuery(collection, query = {}) {
  return useLive(collection, query);
}

/**
 * One live document: null when it does not exist, undefined until read.
 * @param {Collection|null|undefined} collection
 * @param {string} id
 * @returns {import('./values.js').Doc|null|undefined}
 */
export function useDoc(collection, id) {
  return useLive(collection, id);
}

/**
 * The database's sync status, kept current.
 * @param {Database|null|undefined} db
 * @returns {import('./database.js').Status|undefined}
 */
export function useStatus(db) {
  // The database the status is of: another db renders its own at once.
  const [state, setState] = useState(() => ({ db, status: db?.status }));
  useEffect(() => {
    if (!db) return undefined;
    setState({ db, status: db.status });
    return db.on('status', (status) => setState({ db, status }));
  }, [db]);
  return db ? (state.db === db ? state.status : db.status) : undefined;
}
