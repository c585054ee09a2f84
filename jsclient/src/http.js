// One request to the server over HTTP: a CBOR body POSTed with the token,
// the answer's bytes back, or a ConvergoError carrying the server's code
// (from the error body, the Convergo-Error header, or the HTTP status) and
// its Retry-After. An expired token is refreshed once and the request
// repeated.

import { ConvergoError } from './errors.js';
import { MAX_ANSWER_BYTES, PROTOCOL, parseErrorBody } from './protocol.js';

/**
 * @typedef {object} HttpOptions
 * @property {string} base the server's base URL, without a trailing slash
 * @property {typeof fetch} fetch
 * @property {(force: boolean) => Promise<string>} token the token to send
 *   ("" for none); force asks for a fresh one. Its failures must be
 *   ConvergoErrors.
 */

/**
 * POSTs a CBOR body; returns the answer's bytes or throws a ConvergoError
 * with the server's code.
 * @param {HttpOptions} o
 * @param {string} path
 * @param {Uint8Array<ArrayBuffer>} body
 * @param {boolean} [retried]
 * @returns {Promise<Uint8Array>}
 */
export async function post(o, path, body, retried = false) {
  const token = await o.token(false);
  /** @type {Record<string, string>} */
  const headers = { 'Content-Type': 'application/cbor', Accept: 'application/cbor', 'Convergo-Protocol': String(PROTOCOL) };
  if (token) headers.Authorization = 'Bearer ' + token;
  let res;
  try {
    res = await o.fetch(o.base + path, { method: 'POST', headers, body, credentials: 'omit', cache: 'no-store' });
  } catch (e) {
    throw new ConvergoError('network', `POST ${path}: ${/** @type {any} */ (e)?.message ?? e}`, { cause: e });
  }
  if (Number(res.headers.get('Content-Length')) > MAX_ANSWER_BYTES) {
    throw new ConvergoError('too_large', `POST ${path}: answer of ${res.headers.get('Content-Length')} bytes`);
  }
  const bytes = new Uint8Array(await res.arrayBuffer());
  if (res.ok) return bytes;
  const parsed = parseErrorBody(bytes);
  const code = /** @type {any} */ (parsed?.code ?? res.headers.get('Convergo-Error') ?? statusCode(res.status));
  const retryAfter = Number(res.headers.get('Retry-After')) || undefined;
  const e = new ConvergoError(code, `POST ${path}: ${res.status} ${code}${parsed?.message ? ': ' + parsed.message : ''}`, {
    status: res.status,
    retryAfter,
  });
  if (code === 'token_expired' && !retried) {
    // Refresh once and retry the same request.
    await o.token(true);
    return post(o, path, body, true);
  }
  throw e;
}


/**
 * The protocol's code for an HTTP status without a body.
 * @param {number} status
 */
function statusCode(status) {
  switch (status) {
    case 400:
      return 'malformed';
    case 401:
      return 'unauthenticated';
    case 403:
      return 'forbidden';
    case 404:
      return 'not_found';
    case 413:
      return 'too_large';
    case 429:
      return 'rate_limited';
    case 503:
    case 502:
    case 504:
      return 'unavailable';
  }
  return 'internal';
}
