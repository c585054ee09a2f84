// Types of convergo/react (src/react.js).
import type { Collection, Database, Doc, Query, Status, Value } from './index.js';

/**
 * The documents of a live query; undefined until the first result (or without a collection).
 * An inline query object is compared by value; a where predicate by identity: an inline arrow
 * subscribes again at each render of the component, keeping the result shown until its own
 * (useCallback, or a predicate defined outside the component, spares those reads).
 */
export function useQuery<T extends object = { [field: string]: Value }>(collection: Collection<T> | null | undefined, query?: Query<T>): Doc<T>[] | undefined;
/** One live document: null when it does not exist, undefined until read. */
export function useDoc<T extends object = { [field: string]: Value }>(collection: Collection<T> | null | undefined, id: string): Doc<T> | null | undefined;
/** The database's sync status, kept current. */
export function useStatus(db: Database | null | undefined): Status | undefined;
/** The key a query subscribes under: equal for equal queries; predicates count by identity. */
export function queryKey(q: string | Query<any>): string;
