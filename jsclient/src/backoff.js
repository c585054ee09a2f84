// The delay between reconnect attempts. The Syncer (sync.js) is its one
// user: it decides when an attempt counts as a failure and what may cut a
// wait short (see retryNow there).

/**
 * The delay before reconnect attempt n (0-based): exponential from base to
 * max, with "full jitter" in [d/2, d] so a fleet of clients that lost the
 * server together does not come back together.
 * @param {number} attempt
 * @param {{base?: number, max?: number, random?: () => number}} [opts]
 */
export function backoff(attempt, opts = {}) {
  const base = opts.base ?? 500;
  const max = opts.max ?? 30_000;
  const d = Math.min(max, base * 2 ** Math.min(attempt, 30));
  const rnd = (opts.random ?? Math.random)();
  return Math.round(d / 2 + (d / 2) * rnd);
}
