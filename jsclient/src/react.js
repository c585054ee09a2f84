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
 * predicate counts by identity: one written inline subscribes again at
 * each render (useLive keeps its result meanwhile); useCallback spares
 * those reads.
 * @param {string|Query} q
 * @param {boolean} [byShape] every predicate as one: the key of the
 *   query's shape, which an inline predicate does not change
 * @returns {string}
 */
export function queryKey(q, byShape = false) {
  return typeof q === 'string' ? 'id:' + q : JSON.stringify(tagged(q ?? {}, byShape));
}

/**
 * v as JSON-able data that is equal only for equal values.
 * @param {unknown} v
 * @param {boolean} [byShape] a function as 'f', whichever it is
 * @returns {unknown}
 */
function tagged(v, byShape = false) {
  switch (typeof v) {
    case 'function':
      if (byShape) return 'f';
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
      if (v instanceof Map) return ['m', ...[...v].map(([k, x]) => [tagged(k, byShape), tagged(x, byShape)])];
      if (Array.isArray(v)) return ['a', ...v.map((x) => tagged(x, byShape))];
      // A plain object, or an instance (Float) with its fields.
      return [Object.getPrototypeOf(v) === Object.prototype ? 'o' : 'c', ...Object.keys(v).sort().flatMap((k) => [k, tagged(/** @type {any} */ (v)[k], byShape)])];
  }
  return v;
}

/**
 * Subscribes while mounted; returns the latest result, undefined before
 * the first one (or with no collection). A query that differs only in
 * its predicates' identities (one written inline, a new function at each
 * render) is subscribed again, as it may read other state, but keeps the
 * result shown until its own, and a first result equal to the one shown
 * renders nothing: the render that made the new predicate is not
 * followed by another, so the component settles.
 * @param {Collection|null|undefined} collection
 * @param {string|Query} queryOrId
 */
function useLive(collection, queryOrId) {
  const key = queryKey(queryOrId);
  const shape = queryKey(queryOrId, true);
  /** @typedef {{c: Collection|null|undefined, shape: string, value: any}} Shown */
  /** @type {[Shown, (s: Shown | ((s: Shown) => Shown)) => void]} */
  const [state, setState] = useState(/** @type {Shown} */ ({ c: collection, shape, value: undefined }));
  useEffect(() => {
    if (!collection) return undefined;
    let on = true;
    let first = true;
    const stop = collection.subscribe(queryOrId, (value) => {
      if (!on) return;
      const again = first;
      first = false;
      setState((s) => (again && s.c === collection && s.shape === shape && sameResult(s.value, value) ? s : { c: collection, shape, value }));
    });
    return () => {
      on = false;
      stop();
    };
    // queryOrId is represented by key (and shape by it).
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [collection, key]);
  return state.c === collection && state.shape === shape ? state.value : undefined;
}

/**
 * Whether two results of one query's shape hold the same documents in
 * the same order.
 * @param {unknown} a
 * @param {unknown} b
 */
function sameResult(a, b) {
  return a !== undefined && JSON.stringify(tagged(a)) === JSON.stringify(tagged(b));
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
