// The meta keys (db.js describes them) that only the sync loop and the
// modules loaded on demand (heal, reconciliation, schema upgrades,
// scopes) read or write: loaded with them, not up front. Each is the
// prefix of a key per collection; prefixRange is the range of all keys
// with one. SEALED names the object store of the seals of versions
// before 5, which only they read.

export const CURSOR_KEY = 'cursor:';
export const SEALED = 'sealed';

export const HEAL_KEY = 'heal:';
export const RECONCILE_KEY = 'reconcile:';
/**
 * The value of a RECONCILE_KEY that notes a first pull's reconciliation
 * under way (reconcile.js's reconcile): made again, as a first pull's,
 * if it is cut short. A reset's, or any other owed, is true.
 */
export const FIRST_PULL = 'first';
export const REREAD_KEY = 'reread:';
export const LOSSES_KEY = 'losses:';
export const RESTAMP_KEY = 'restamp:';
export const SCOPE_KEY = 'scope:';
export const REPLACE_KEY = 'replace:';
export const GIVEBACK_KEY = 'giveback:';
export const HEALCHECK_KEY = 'healcheck:';
export const DEFAULTS_KEY = 'defaults:';

/**
 * The key range of every meta key that starts with prefix: strings sort
 * by code unit, and no key after a prefix (a collection name, a
 * collection's part of a key) holds the character U+FFFF.
 * @param {typeof IDBKeyRange} keyRange the Store's (Store.keyRange)
 * @param {string} prefix a prefix above, or db.js's COLLECTION_KEY
 * @returns {IDBKeyRange}
 */
export function prefixRange(keyRange, prefix) {
  return keyRange.bound(prefix, prefix + '\uffff');
}
