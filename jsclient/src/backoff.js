// The delay before a retry: the one backoff of the client (docs/protocol.md,
// section 10). The Syncer (sync.js) decides when an attempt counts as a
// failure and what may cut a wait short (see retryNow there); the Database
// (database.js) waits it out between failed loads of the sync loop itself.
// Nothing else in the client waits between attempts. Its bounds come from
// model.js, loaded up front with the Database.

import { BACKOFF } from './model.js';

/**
 * The delay before retry number n (0 for the first): exponential with full
 * jitter, uniform in [0, min(max, base·2^n)], so that a fleet of clients
 * that lost the server together does not come back together; and never
 * less than floor, the wait the server asked for (Retry-After).
 * @param {number} attempt
 * @param {{base?: number, max?: number, random?: () => number, floor?: number}} [opts]
 *   base and max default to TIMINGS.backoffInitialMs and
 *   TIMINGS.backoffMaxMs (model.js's BACKOFF); floor (ms) to 0
 * @returns {number} ms
 */
export function backoff(attempt, opts = {}) {
  const base = opts.base ?? BACKOFF.backoffInitialMs;
  const max = opts.max ?? BACKOFF.backoffMaxMs;
  const cap = Math.min(max, base * 2 ** Math.min(Math.max(attempt, 0), 52));
  const rnd = (opts.random ?? Math.random)();
  return Math.max(Math.round(cap * rnd), opts.floor ?? 0);
}
