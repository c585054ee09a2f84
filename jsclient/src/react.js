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
 * inline (a new object each render) does not subscribe again. A predicate
 * counts by identity: wrap it in useCallback, or it subscribes anew each
 * render.
 * @param {string|Query} q
 * @returns {string}
 */
export function queryKey(q) {
  if (typeof q === 'string') return 'id:' + q;
  return JSON.stringify(q ?? {}, (_k, v) => {
    if (typeof v === 'function') {
      if (!fnIds.has(v)) fnIds.set(v, nextFn++);
      return 'fn#' + fnIds.get(v);
    }
    if (typeof v === 'bigint') return v.toString() + 'n';
    if (v instanceof Uint8Array) return 'bytes:' + Array.from(v).join(',');
    if (v instanceof Map) return ['map', ...v];
    if (v && typeof v === 'object' && !Array.isArray(v)) return Object.fromEntries(Object.entries(v).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
    return v;
  });
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
  const [status, setStatus] = useState(() => db?.status);
  useEffect(() => {
    if (!db) return undefined;
    setStatus(db.status);
    return db.on('status', setStatus);
  }, [db]);
  return db ? status : undefined;
}
