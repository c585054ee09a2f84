// Errors the library raises. Every error carries a stable `code` that callers
// branch on; messages are for people.

/**
 * Stable error codes: the protocol's (constants.js CODES, generated from
 * transport/proto; test/constants.test.js holds this list to it) plus the
 * client's own: network, closed, counter_overflow, database. The
 * protocol's quota_exceeded (a change refused by a collection's quota)
 * is also what the client says when the browser's storage is full;
 * out_of_scope, schema and untranslatable refuse single changes, revoked a
 * subject; schema_ahead says the server runs older rules than the client.
 * @typedef {'malformed'|'invalid'|'unsupported_version'|'unauthenticated'|'token_expired'|'forbidden'|'not_found'|'method_not_allowed'|'too_large'|'upgrade_required'|'rate_limited'|'clock_drift'|'forged_replica'|'bad_seal'|'out_of_scope'|'schema'|'untranslatable'|'schema_ahead'|'collected'|'revoked'|'corrupt'|'unavailable'|'internal'|'quota_exceeded'|'network'|'closed'|'counter_overflow'|'database'} ErrorCode
 */

/** The client's own codes, beside the protocol's. */
export const CLIENT_CODES = /* @__PURE__ */ Object.freeze(['network', 'closed', 'counter_overflow', 'database']);

/** An error with a stable code. */
export class ConvergoError extends Error {
  /**
   * @param {ErrorCode} code
   * @param {string} message
   * @param {{status?: number, cause?: unknown, retryAfter?: number, requestId?: string}} [opts]
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
    /** The id under which the server logged the request (quote it when reporting a problem), when it said. */
    this.requestId = opts.requestId;
  }
}

/**
 * Loads a module of the client loaded on demand (the sync loop, the
 * Store's upgrade.js and wiped.js, schema.js, scope.js, rejected.js). A
 * load that fails (a browser offline whose cache lacks the file) is a
 * ConvergoError 'network' naming it; the next call that needs it loads it
 * again.
 * @template T
 * @param {string} what what the client was doing
 * @param {string} file
 * @param {() => Promise<T>} load
 * @returns {Promise<T>}
 */
export async function loadOnDemand(what, file, load) {
  try {
    return await load();
  } catch (e) {
    throw new ConvergoError('network', `${what}: loading ${file}: ${/** @type {any} */ (e)?.message ?? e}`, { cause: e });
  }
}
