// Errors the library raises. Every error carries a stable `code` that callers
// branch on; messages are for people.

/**
 * Stable error codes. The protocol's codes (docs/protocol.md) plus the
 * client's own: quota_exceeded, network, closed, counter_overflow.
 * @typedef {'malformed'|'invalid'|'unsupported_version'|'unauthenticated'|'token_expired'|'forbidden'|'not_found'|'too_large'|'rate_limited'|'clock_drift'|'unavailable'|'internal'|'quota_exceeded'|'network'|'closed'|'counter_overflow'|'database'} ErrorCode
 */

/** An error with a stable code. */
export class ConvergoError extends Error {
  /**
   * @param {ErrorCode} code
   * @param {string} message
   * @param {{status?: number, cause?: unknown, retryAfter?: number}} [opts]
   */
  constructor(code, message, opts = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'ConvergoError';
    /** @type {ErrorCode} */
    this.code = code;
    /** HTTP status, when the error came from the server. */
    this.status = opts.status;
    /** Seconds the server asked us to wait (429), when it said. */
    this.retryAfter = opts.retryAfter;
  }
}

/**
 * Maps an IndexedDB failure to a ConvergoError: a full disk becomes
 * quota_exceeded so apps can tell the user, the rest is "database".
 * @param {unknown} err
 * @param {string} what the operation, for the message
 * @returns {ConvergoError}
 */
export function fromIDBError(err, what) {
  if (err instanceof ConvergoError) return err;
  const name = /** @type {any} */ (err)?.name;
  if (name === 'QuotaExceededError') {
    return new ConvergoError('quota_exceeded', `${what}: storage quota exceeded; free space or delete data`, { cause: err });
  }
  const msg = /** @type {any} */ (err)?.message ?? String(err);
  return new ConvergoError('database', `${what}: ${name ? name + ': ' : ''}${msg}`, { cause: err });
}
