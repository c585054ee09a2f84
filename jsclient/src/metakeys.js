// The meta keys (db.js describes them) that only the sync loop and the
// modules loaded on demand (heal, reconciliation, schema upgrades,
// scopes) read or write: loaded with them, not up front. Each is the
// prefix of a key per collection. SEALED names the object store of the
// seals of versions before 5, which only they read.

export const CURSOR_KEY = 'cursor:';
export const SEALED = 'sealed';

export const HEAL_KEY = 'heal:';
export const RECONCILE_KEY = 'reconcile:';
export const REREAD_KEY = 'reread:';
export const RESTAMP_KEY = 'restamp:';
export const SCOPE_KEY = 'scope:';
export const REPLACE_KEY = 'replace:';
export const GIVEBACK_KEY = 'giveback:';
export const HEALCHECK_KEY = 'healcheck:';
