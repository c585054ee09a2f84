// One request to the server over HTTP: a CBOR body POSTed with the token
// and the protocol version, the answer's bytes back, or a ConvergoError
// carrying the server's code (from the error body, the Convergo-Error
// header, or the HTTP status when only one code has it), its Retry-After
// and the request id the server logged it under. An expired token is
// refreshed once and the request repeated; a request refused with a token
// replaced since goes again with the current one. Header names, the content type
// and the codes come from constants.js.

import { CODES, CONTENT_TYPE, HEADERS, TIMINGS, VERSION } from './constants.js';
import { ConvergoError } from './errors.js';
import { MAX_ANSWER_BYTES, checkToken, codeOfStatus, isProtocolCode, parseErrorBody, sentWith } from './protocol.js';

/**
 * @typedef {object} HttpOptions
 * @property {string} base the server's base URL, without a trailing slash
 * @property {typeof fetch} fetch
 * @property {(force: boolean) => Promise<string>} token the token to send
 *   ("" for none); force asks for a fresh one. Its failures must be
 *   ConvergoErrors.
 */

/**
 * A request body, or a function that makes it for the token it goes with
 * (called again when an expired token is refreshed): a push names its
 * replica by its device part only under its own token's subject.
 * @typedef {Uint8Array<ArrayBuffer> | ((token: string) => Uint8Array<ArrayBuffer> | Promise<Uint8Array<ArrayBuffer>>)} Body
 */

/**
 * The refusals the request's token decides (constants.js CODES, key
 * token), which a token set since may not get (docs/protocol.md,
 * "Retrying").
 */
export const BY_TOKEN = new Set(CODES.filter((c) => c.token).map((c) => c.code));

/**
 * POSTs a CBOR body; returns the answer's bytes or throws a ConvergoError
 * with the server's code. An error answer the client cannot read as the
 * protocol's (a proxy's page) is a network failure: retried with backoff.
 * @param {HttpOptions} o
 * @param {string} path
 * @param {Body} body
 * @returns {Promise<Uint8Array>}
 */
export async function post(o, path, body) {
  return (await postAnswer(o, path, body)).body;
}

/**
 * As post, but returns the answer's body with the request id the server
 * logged it under (null when it sent none).
 * @param {HttpOptions} o
 * @param {string} path
 * @param {Body} body
 * @param {boolean} [retried]
 * @returns {Promise<{body: Uint8Array, requestId: string|null}>}
 */
export async function postAnswer(o, path, body, retried = false) {
  const token = await o.token(false);
  checkToken(token);
  const bytes = typeof body === 'function' ? await body(token) : body;
  /** @type {Record<string, string>} */
  const headers = { 'Content-Type': CONTENT_TYPE, Accept: CONTENT_TYPE, [HEADERS.protocol]: String(VERSION) };
  if (token) headers.Authorization = 'Bearer ' + token;
  let res;
  try {
    res = await o.fetch(o.base + path, { method: 'POST', headers, body: bytes, credentials: 'omit', cache: 'no-store' });
  } catch (e) {
    throw new ConvergoError('network', `POST ${path}: ${/** @type {any} */ (e)?.message ?? e}`, { cause: e });
  }
  const requestId = res.headers.get(HEADERS.requestId) || undefined;
  const answer = await readAnswer(res, path, requestId);
  if (res.ok) return { body: answer, requestId: requestId ?? null };
  const parsed = parseErrorBody(answer);
  const header = res.headers.get(HEADERS.error);
  const code = [parsed?.code, header].find(isProtocolCode) ?? codeOfStatus(res.status) ?? 'network';
  const retryAfter = retryAfterOf(res.headers.get(HEADERS.retryAfter));
  const id = parsed?.requestId ?? requestId;
  const e = new ConvergoError(
    /** @type {any} */ (code),
    `POST ${path}: ${res.status} ${code}${parsed?.message ? ': ' + parsed.message : ''}${id ? ` (request ${id})` : ''}`,
    { status: res.status, retryAfter, requestId: id },
  );
  sentWith.set(e, token);
  if (retried || !BY_TOKEN.has(code)) throw e;
  // A refusal the token decided says nothing of a token set since
  // (setToken, another tab's): the request goes again with the current
  // one, getToken not asked (its answer would be taken as newer still,
  // and replace it in every tab). Otherwise an expired token is
  // refreshed once and the request repeated. A refresh that fails (the
  // app's getToken cannot give a token: its user must sign in again)
  // leaves the refusal standing, with the failure as its cause, so the
  // sync loop tells the app ('auth') rather than retry as if offline.
  try {
    if ((await o.token(false)) === token) {
      if (code !== 'token_expired') throw e;
      await o.token(true);
    }
  } catch (t) {
    if (t === e) throw e;
    const w = new ConvergoError(e.code, `${e.message}; getToken: ${/** @type {any} */ (t)?.message ?? t}`, { status: e.status, requestId: e.requestId, cause: t });
    sentWith.set(w, token);
    throw w;
  }
  return postAnswer(o, path, body, true);
}

/**
 * The wait (s) a Retry-After header asks for: at most
 * TIMINGS.maxRetryAfterMs, so that a broken server's absurd one (a
 * year, Infinity) neither stops the client for ever nor, past what a
 * timer holds, makes it retry at once; none for none, nonsense or 0.
 * @param {string|null} v
 * @returns {number|undefined}
 */
function retryAfterOf(v) {
  const s = Number(v);
  return s > 0 ? Math.min(s, TIMINGS.maxRetryAfterMs / 1000) : undefined;
}

/**
 * Reads an answer's body, at most MAX_ANSWER_BYTES of it: past that it
 * stops, cancels the body and throws too_large (no status: the server
 * refused nothing), which the callers handle (a push or a restore halved,
 * a pull page asked again in fewer records: protocol.js). The bound is
 * counted on the bytes read, never taken from Content-Length: an answer
 * may be sent chunked without one, and fetch decodes a compressed body
 * whose Content-Length is the compressed size. A Content-Length over the
 * cap only saves reading up to it. As the Go client's post, with its
 * io.LimitReader. A failure while reading is a network failure.
 * @param {Response} res
 * @param {string} path
 * @param {string|undefined} requestId
 * @returns {Promise<Uint8Array>}
 */
async function readAnswer(res, path, requestId) {
  const over = () => new ConvergoError('too_large', `POST ${path}: answer over ${MAX_ANSWER_BYTES} bytes`, { requestId });
  if (Number(res.headers.get('Content-Length')) > MAX_ANSWER_BYTES) {
    res.body?.cancel().catch(() => {});
    throw over();
  }
  // No body (null: an answer without one) reads as empty.
  if (!res.body) return new Uint8Array(await res.arrayBuffer());
  const reader = res.body.getReader();
  /** @type {Uint8Array[]} */
  const chunks = [];
  let n = 0;
  for (;;) {
    let r;
    try {
      r = await reader.read();
    } catch (e) {
      throw new ConvergoError('network', `POST ${path}: read answer: ${/** @type {any} */ (e)?.message ?? e}`, { requestId, cause: e });
    }
    if (r.done) break;
    n += r.value.length;
    if (n > MAX_ANSWER_BYTES) {
      reader.cancel().catch(() => {});
      throw over();
    }
    chunks.push(r.value);
  }
  if (chunks.length === 1) return chunks[0];
  const answer = new Uint8Array(n);
  let off = 0;
  for (const c of chunks) {
    answer.set(c, off);
    off += c.length;
  }
  return answer;
}
