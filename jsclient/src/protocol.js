// Encoding and decoding of the v1 wire protocol's messages (docs/protocol.md).
// Every server message is untrusted: parsers check shapes and limits and
// throw ConvergoError("malformed") on anything unexpected.

import { Reader, Writer, decode, encode, MAX_MESSAGE_BYTES } from './cbor.js';
import { ConvergoError } from './errors.js';
import { readRecord, validateCollection } from './record.js';

export const PROTOCOL = 1;

/**
 * The largest server answer or live frame the client reads. The server
 * bounds pages by record count, not bytes; a page over this is pulled again
 * in smaller pages.
 */
export const MAX_ANSWER_BYTES = 64 << 20;

/** @typedef {import('./record.js').Record} Record */
/** @typedef {import('./record.js').Change} Change */

/**
 * The server's hello answer.
 * @typedef {{protocol: number, serverTime: number, serverReplica: string, maxPush: number, maxPull: number, maxBody: number, maxDrift: number, subject: string}} Hello
 */

/** @typedef {{status: number, seq?: number, code?: string, message?: string}} PushResult */
/** @typedef {{entries: [number, Record][], next: number, more: boolean}} Page */

/**
 * @param {string} msg
 */
function malformed(msg) {
  return new ConvergoError('malformed', `protocol: ${msg}`);
}

/**
 * @param {unknown} v
 * @param {string} what
 * @returns {number}
 */
function uintOf(v, what) {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw malformed(`${what} is not an unsigned integer`);
  return v;
}

/**
 * @param {unknown} v
 * @param {string} what
 * @returns {string}
 */
function textOf(v, what) {
  if (typeof v !== 'string') throw malformed(`${what} is not a text string`);
  return v;
}

/**
 * @param {unknown} m
 * @param {string} what
 * @returns {Map<unknown, unknown>}
 */
function mapOf(m, what) {
  if (m instanceof Map) return m;
  if (m !== null && typeof m === 'object' && !Array.isArray(m) && !(m instanceof Uint8Array) && Object.keys(m).length === 0) {
    return new Map();
  }
  throw malformed(`${what} is not an integer-keyed map`);
}

// ------------------------------------------------------------ HTTP bodies

/**
 * @param {string} replica
 */
export function encodeHello(replica) {
  return encode(new Map(/** @type {[number, unknown][]} */ ([[1, PROTOCOL], [2, replica]])));
}

/**
 * Parses a hello answer (the HTTP body, or the welcome message's key 1).
 * @param {unknown} v
 * @returns {Hello}
 */
export function parseHello(v) {
  const m = mapOf(v, 'hello answer');
  const num = (/** @type {number} */ k, /** @type {string} */ what, /** @type {number} */ dflt) => (m.has(k) ? uintOf(m.get(k), what) : dflt);
  return {
    protocol: num(1, 'protocol', PROTOCOL),
    serverTime: uintOf(m.get(2), 'server time'),
    serverReplica: m.has(3) ? textOf(m.get(3), 'server replica') : '',
    maxPush: Math.max(1, num(4, 'max push', 1000)),
    maxPull: Math.max(1, num(5, 'max pull', 1000)),
    maxBody: Math.max(1024, num(6, 'max body', MAX_MESSAGE_BYTES)),
    maxDrift: num(7, 'max drift', 0),
    subject: m.has(8) ? textOf(m.get(8), 'subject') : '',
  };
}

/**
 * Encodes a push body {1: replica, 2: [change, ...]} from already encoded
 * changes.
 * @param {string} replica
 * @param {Uint8Array[]} changes encoded changes
 */
export function encodePush(replica, changes) {
  const w = new Writer(64 + changes.reduce((n, c) => n + c.length, 0));
  w.head(5, 2);
  w.byte(0x01);
  w.text(replica);
  w.byte(0x02);
  w.head(4, changes.length);
  for (const c of changes) w.raw(c);
  return w.bytes();
}

/**
 * @param {unknown} v
 * @returns {PushResult}
 */
function parseResult(v) {
  const m = mapOf(v, 'push result');
  /** @type {PushResult} */
  const r = { status: uintOf(m.get(1), 'status') };
  if (r.status > 2) throw malformed(`unknown push status ${r.status}`);
  if (m.has(2)) r.seq = uintOf(m.get(2), 'seq');
  if (m.has(3)) r.code = textOf(m.get(3), 'code');
  if (m.has(4)) r.message = textOf(m.get(4), 'message');
  return r;
}

/**
 * @param {unknown} v the list of results
 * @returns {PushResult[]}
 */
function parseResults(v) {
  if (!Array.isArray(v)) throw malformed('push results are not an array');
  return v.map(parseResult);
}

/**
 * Parses a push answer {1: [result, ...]}.
 * @param {Uint8Array} body
 * @returns {PushResult[]}
 */
export function parsePushAnswer(body) {
  const m = mapOf(decode(body, { canonical: false }), 'push answer');
  return parseResults(m.get(1));
}

/**
 * @param {string} collection
 * @param {number} cursor
 * @param {number} limit
 */
export function encodePull(collection, cursor, limit) {
  return encode(new Map(/** @type {[number, unknown][]} */ ([[1, collection], [2, cursor], [3, limit]])));
}

/**
 * Reads [[seq, record], ...].
 * @param {Reader} r
 * @returns {[number, Record][]}
 */
function readEntries(r) {
  const n = r.arrayHead();
  /** @type {[number, Record][]} */
  const out = [];
  for (let i = 0; i < n; i++) {
    if (r.arrayHead() !== 2) throw malformed('entry is not [seq, record]');
    const seq = r.uint();
    out.push([seq, readRecord(r)]);
  }
  return out;
}

/**
 * Parses a pull answer {1: entries, 2: next, 3: more}.
 * @param {Uint8Array} body
 * @returns {Page}
 */
export function parsePullAnswer(body) {
  if (body.length > MAX_ANSWER_BYTES) throw new ConvergoError('too_large', `pull answer of ${body.length} bytes`);
  const r = new Reader(body, { canonical: false });
  const n = r.mapHead();
  /** @type {Page} */
  const page = { entries: [], next: -1, more: false };
  const seen = new Set();
  for (let i = 0; i < n; i++) {
    const k = r.uint();
    if (seen.has(k)) throw malformed('duplicate key in pull answer');
    seen.add(k);
    if (k === 1) page.entries = readEntries(r);
    else if (k === 2) page.next = r.uint();
    else if (k === 3) page.more = r.bool();
    else r.item(2); // a newer server's addition
  }
  r.end();
  if (page.next < 0) throw malformed('pull answer without a next cursor');
  return page;
}

/**
 * Parses an error body {1: code, 2: message}; null when it is not one.
 * @param {Uint8Array} body
 * @returns {{code: string, message: string}|null}
 */
export function parseErrorBody(body) {
  try {
    const m = mapOf(decode(body, { canonical: false }), 'error');
    return { code: textOf(m.get(1), 'code'), message: m.has(2) ? textOf(m.get(2), 'message') : '' };
  } catch {
    return null;
  }
}

// ------------------------------------------------------ WebSocket messages

/**
 * @param {string} replica
 * @param {string} token
 */
export function encodeLiveHello(replica, token) {
  return encode(new Map(/** @type {[number, unknown][]} */ ([[0, 'hello'], [1, PROTOCOL], [2, replica], [3, token]])));
}

/**
 * @param {string} collection
 * @param {number} cursor
 */
export function encodeSub(collection, cursor) {
  return encode(new Map(/** @type {[number, unknown][]} */ ([[0, 'sub'], [1, collection], [2, cursor]])));
}

/** @param {string} collection */
export function encodeUnsub(collection) {
  return encode(new Map(/** @type {[number, unknown][]} */ ([[0, 'unsub'], [1, collection]])));
}

/** @param {number} nonce */
export function encodePing(nonce) {
  return encode(new Map(/** @type {[number, unknown][]} */ ([[0, 'ping'], [1, nonce]])));
}

/**
 * A server message over WebSocket.
 * @typedef {{type: 'welcome', hello: Hello}
 *   | {type: 'changes', collection: string, entries: [number, Record][], next: number, more: boolean}
 *   | {type: 'ack', id: number, results: PushResult[]}
 *   | {type: 'pong', nonce: number}
 *   | {type: 'error', code: string, message: string, collection?: string}
 *   | {type: 'resync', collection: string}
 *   | {type: 'unknown', name: string}} ServerMessage
 */

/**
 * Parses a server message. The type (key 0) comes first, as deterministic
 * encoding puts it.
 * @param {Uint8Array} bytes
 * @returns {ServerMessage}
 */
export function parseServerMessage(bytes) {
  if (bytes.length > MAX_ANSWER_BYTES) throw new ConvergoError('too_large', `message of ${bytes.length} bytes`);
  const r = new Reader(bytes, { canonical: false });
  const n = r.mapHead();
  if (n === 0 || r.uint() !== 0) throw malformed('message does not start with its type (key 0)');
  const type = r.text();
  /** @type {Map<number, unknown>} */
  const f = new Map();
  let prev = 0;
  for (let i = 1; i < n; i++) {
    const k = r.uint();
    if (k <= prev) throw malformed('message keys out of order or duplicated');
    prev = k;
    if (type === 'changes' && k === 2) f.set(k, readEntries(r));
    else f.set(k, r.item(2));
  }
  r.end();
  switch (type) {
    case 'welcome':
      return { type, hello: parseHello(f.get(1)) };
    case 'changes': {
      const collection = textOf(f.get(1), 'collection');
      validateCollection(collection);
      const entries = /** @type {[number, Record][]} */ (f.get(2) ?? []);
      const more = f.get(4) ?? false;
      if (typeof more !== 'boolean') throw malformed('more is not a boolean');
      return { type, collection, entries, next: uintOf(f.get(3), 'next cursor'), more };
    }
    case 'ack':
      return { type, id: uintOf(f.get(1), 'request id'), results: parseResults(f.get(2)) };
    case 'pong':
      return { type, nonce: uintOf(f.get(1), 'nonce') };
    case 'error': {
      /** @type {ServerMessage} */
      const e = { type, code: textOf(f.get(1), 'code'), message: f.has(2) ? textOf(f.get(2), 'message') : '' };
      if (f.has(3)) e.collection = textOf(f.get(3), 'collection');
      return e;
    }
    case 'resync':
      return { type, collection: textOf(f.get(1), 'collection') };
  }
  return { type: 'unknown', name: type };
}

