// Encoding and decoding of the wire protocol's messages (docs/protocol.md,
// version 2). Every constant of the protocol (version, paths, codes,
// statuses, message types, limits) comes from constants.js, generated from
// the Go package transport/proto; this module only knows the shapes.
//
// Every server message is untrusted: parsers check shapes and limits and
// throw ConvergoError("malformed") on anything unexpected. Envelopes (the
// maps of answers and live messages) are tolerant: keys the client does not
// know are skipped, in every message alike, so a newer server may add keys.
// What they carry (records, stamps) is strict (record.js).

import { Reader, Writer, encode, err, utf8Length } from './cbor.js';
import { receivedValue } from './normalize.js';
import { arrayHead, skip } from './check.js';
import { CODES, COMPACT, DEFAULTS, MODEL, PUSH_ENVELOPE_BYTES, RESET_REASONS, SCOPES, SERVER_MESSAGE_TYPES, STATUSES, VERSION } from './constants.js';
import { ConvergoError } from './errors.js';
import { isDevice, isPrefix, ownedStart } from './replica.js';
import { readRecord, validateCollection, writeChange, writeRecord } from './record.js';
import { MAX_WALL, isZeroStamp, validateReplica } from './hlc.js';
import { readChange } from './change.js';

/**
 * The token a request the server refused went with, by the refusal (kept
 * off the error, which reaches the app's logs): an 'auth' refusal forgets
 * that token only, not one set since (peer.js forgetToken).
 * @type {WeakMap<Error, string>}
 */
export const sentWith = new WeakMap();

/** The codes of a failure of the session, the server, the principal or the request as a whole, not one collection's (the code table's session). */
export const SESSION_CODES = new Set(CODES.filter((c) => c.session).map((c) => c.code));

/**
 * Throws when token is over DEFAULTS.maxTokenBytes: no server reads it
 * (over HTTP its request is answered 431, outside the protocol's errors),
 * so it is not sent, and fails unauthenticated, as a token the server
 * refused, until the app gives another (docs/protocol.md, section 11).
 * @param {string|null} token
 */
export function checkToken(token) {
  const n = token ? utf8Length(token) : 0;
  if (n <= DEFAULTS.maxTokenBytes) return;
  const e = new ConvergoError('unauthenticated', `the token is ${n} bytes, over the ${DEFAULTS.maxTokenBytes} a server reads: not sent`);
  sentWith.set(e, /** @type {string} */ (token));
  throw e;
}

/**
 * The largest server answer or live frame the client reads: a bound the
 * client sets itself against a broken or hostile peer, not a protocol
 * limit (a page is at most max-page-bytes, or one record). A frame over it
 * is fetched over HTTP instead, a pull answer over it again in smaller
 * pages, and a push or a restore over it again in halves (splitter, sync.js).
 */
export const MAX_ANSWER_BYTES = DEFAULTS.maxAnswerBytes;

/** @typedef {import('./record.js').Record} Record */

/**
 * The server's hello answer (docs/protocol.md, section 6). A limit the
 * server leaves out or gives as 0 (which a server never announces), the
 * max drift (ms) among them, is the protocol's default, as in the Go
 * client (proto.HelloResponse.WithDefaults).
 * replicaPrefix is the prefix of the replica ids the subject owns ("" when
 * the server did not say).
 * @typedef {{protocol: number, serverTime: number, serverReplica: string, maxPush: number, maxPull: number, maxBody: number, maxDrift: number, subject: string, maxPageBytes: number, maxMessageBytes: number, replicaPrefix: string}} Hello
 */

/**
 * A push result: status is a value of STATUSES; lost names the fields of
 * the change that lost to newer writes (applied or superseded).
 * @typedef {{status: number, code?: string, message?: string, lost?: string[]}} PushResult
 */

/**
 * A page of records: from a pull or a live changes message. seals[i] is the
 * seal of records[i] (empty when the server sent none); leaves are the
 * leave entries of a scoped read (16-byte digests of records that left the
 * reader's scope: docs/protocol.md, section 12); reset, when set, says the
 * cursor was of another history (docs/protocol.md, "Resets"): the page has
 * no records and next is the empty cursor.
 * @typedef {{records: Record[], next: Uint8Array, more: boolean, seals: Uint8Array[], leaves: Uint8Array[], reset?: Reset}} Page
 */

/**
 * Why the server reset a cursor: reason is one of RESET_REASONS, or a
 * reason this client does not know, which it treats as history_lost.
 * @typedef {{reason: string, message: string}} Reset
 */

/**
 * The reason a client acts on: a reason it does not know counts as
 * history_lost, the safe choice (docs/protocol.md, "Resets").
 * @param {string} reason
 * @returns {string}
 */
export function resetAction(reason) {
  return RESET_REASONS.includes(reason) ? reason : 'history_lost';
}

/** What a client does about an error code (constants.js CODES). @typedef {'never'|'backoff'|'auth'|'upgrade'} RetryClass */

/** @type {Map<string, {code: string, http: number, retry: RetryClass, perChange: boolean, token: boolean}>} */
const CODE_INFO = new Map(CODES.map((c) => [c.code, /** @type {any} */ (c)]));

/**
 * What to do about a code: retry with backoff, with a new token, not at
 * all, or not before the client is upgraded. Codes the protocol does not
 * define (the client's own: network, database, ...) are retried with
 * backoff.
 * @param {string} code
 * @returns {RetryClass}
 */
export function retryOf(code) {
  return CODE_INFO.get(code)?.retry ?? 'backoff';
}

/**
 * Whether code is one of the protocol's error codes.
 * @param {unknown} code
 * @returns {code is string}
 */
export function isProtocolCode(code) {
  return typeof code === 'string' && CODE_INFO.has(code);
}

/**
 * The protocol's code for an HTTP status, when exactly one code has that
 * status (a proxy's 413 or 429 without a body); null otherwise, which the
 * client takes for a network failure (docs/protocol.md, section 5).
 * @param {number} status
 * @returns {string|null}
 */
export function codeOfStatus(status) {
  const codes = CODES.filter((c) => c.http === status);
  return codes.length === 1 ? codes[0].code : null;
}

/** @type {Set<number>} */
const STATUS_VALUES = new Set(Object.values(STATUSES));

/**
 * @param {string} msg
 */
function malformed(msg) {
  return new ConvergoError('malformed', `protocol: ${msg}`);
}

/** -2^63 and 2^63: an envelope's integer keys are 64-bit signed integers. */
const KEY_MIN = -(1n << 63n);
const KEY_END = 1n << 63n;

/**
 * Reads one envelope: a map whose unsigned integer keys it returns with
 * the bytes of their values (checked as well-formed CBOR), for the caller
 * to read the keys it knows. Other keys, integers of 64 bits and text
 * strings, are skipped; a key of another type or beyond 64 bits, or one
 * key twice (in whatever width), is malformed (docs/protocol.md, section
 * 2, as Go reads envelopes: crdt/testdata/vectors.json "envelopes").
 * @param {Reader} r
 * @param {string} what
 * @returns {Map<number, Uint8Array>}
 */
function readEnvelope(r, what) {
  const n = r.mapHead();
  /** @type {Map<number, Uint8Array>} */
  const out = new Map();
  /** @type {Set<string>} */
  const others = new Set();
  for (let i = 0; i < n; i++) {
    const major = r.off < r.b.length ? r.b[r.off] >> 5 : -1;
    if (major !== 0 && major !== 1 && major !== 3) throw malformed(`a key of ${what} is not an integer or a text string`);
    const k = /** @type {number|bigint|string} */ (r.item());
    const start = r.off;
    skip(r, 2);
    if (typeof k === 'number' && major === 0) {
      if (out.has(k)) throw malformed(`duplicate key ${k} in ${what}`);
      out.set(k, r.b.subarray(start, r.off));
      continue;
    }
    // Nobody's key today: skipped, but a map may not hold it twice.
    if (typeof k !== 'string' && (BigInt(k) < KEY_MIN || BigInt(k) >= KEY_END)) throw malformed(`a key of ${what} is an integer beyond 64 bits`);
    const id = `${typeof k === 'string' ? 't' : 'i'}${k}`;
    if (others.has(id)) throw malformed(`duplicate key in ${what}`);
    others.add(id);
  }
  return out;
}

/**
 * Decodes a whole body or frame as an envelope.
 * @param {Uint8Array} bytes
 * @param {string} what
 */
function envelope(bytes, what) {
  if (bytes.length > MAX_ANSWER_BYTES) throw new ConvergoError('too_large', `${what} of ${bytes.length} bytes`);
  if (bytes.length === 0) throw malformed(`empty ${what}`);
  const r = new Reader(bytes, { canonical: false });
  const m = readEnvelope(r, what);
  r.end();
  return m;
}

/**
 * One item of an envelope, with the reader that reads it.
 * @template T
 * @param {Map<number, Uint8Array>} m
 * @param {number} k
 * @param {(r: Reader) => T} read
 * @returns {T|undefined}
 */
function field(m, k, read) {
  const b = m.get(k);
  if (b === undefined) return undefined;
  const r = new Reader(b, { canonical: false });
  try {
    const v = read(r);
    r.end();
    return v;
  } catch (e) {
    // What the answer holds breaks a model limit (a record or value too
    // large): an answer this client cannot read, malformed as any other
    // (docs/protocol.md, section 5), not the answer over its cap
    // (envelope) that a pull asks for again in fewer records.
    if (e instanceof ConvergoError && e.code === 'too_large') throw malformed(`key ${k}: ${e.message}`);
    throw e;
  }
}

/**
 * Reads an unsigned integer that is a safe JS integer. The wire's reads
 * (this and bool) are not the Reader's: the main entry, which reads only
 * what this client stored, needs neither.
 * @param {Reader} r
 * @returns {number}
 */
export function uint(r) {
  const { major, arg } = r.head();
  if (major !== 0) throw err('malformed', 'expected an unsigned integer');
  if (typeof arg === 'bigint') throw err('malformed', 'integer out of range');
  return arg;
}

/** @param {Reader} r */
const text = (r) => r.text();

/**
 * @param {Reader} r
 * @returns {boolean}
 */
function bool(r) {
  const b = r.b[r.off];
  if (b === 0xf4 || b === 0xf5) {
    r.off++;
    return b === 0xf5;
  }
  throw err('malformed', 'expected a boolean');
}

/**
 * Reads a cursor: a byte string of at most MODEL.maxCursorBytes. A longer
 * one, stored, would be sent back with every read and refused invalid,
 * the collection stuck behind it.
 * @param {Reader} r
 * @returns {Uint8Array}
 */
function byteString(r) {
  const v = r.item();
  if (!(v instanceof Uint8Array)) throw malformed('cursor is not a byte string');
  if (v.length > MODEL.maxCursorBytes) throw malformed(`cursor of ${v.length} bytes, over ${MODEL.maxCursorBytes}`);
  return v;
}

/**
 * The records of a message (key k), read against its compact stamps (its
 * keys COMPACT.tableKey and COMPACT.baseKey: docs/protocol.md, "Compact
 * stamps").
 * @param {Map<number, Uint8Array>} m
 * @param {number} k
 * @returns {Record[]}
 */
function records(m, k) {
  const cx = compactContext(field(m, COMPACT.tableKey, texts) ?? [], field(m, COMPACT.baseKey, uint));
  return (
    field(m, k, (r) => {
      const n = arrayHead(r);
      /** @type {Record[]} */
      const out = [];
      for (let i = 0; i < n; i++) out.push(readRecord(r, cx, receivedValue));
      return out;
    }) ?? []
  );
}

/**
 * Reads a list of text strings.
 * @param {Reader} r
 * @returns {string[]}
 */
function texts(r) {
  const n = arrayHead(r);
  /** @type {string[]} */
  const out = [];
  for (let i = 0; i < n; i++) out.push(r.text());
  return out;
}

/**
 * Reads a list of byte strings: seals (opaque to the client) or leave
 * entries (len: each exactly that long).
 * @param {Reader} r
 * @param {number} [len]
 * @returns {Uint8Array[]}
 */
function seals(r, len) {
  const n = arrayHead(r);
  /** @type {Uint8Array[]} */
  const out = [];
  for (let i = 0; i < n; i++) {
    const v = r.item();
    if (!(v instanceof Uint8Array) || (len && v.length !== len)) throw malformed(len ? `leave entry is not ${len} bytes` : 'seal is not a byte string');
    out.push(v);
  }
  return out;
}

/** @param {Reader} r */
const leaves = (r) => seals(r, SCOPES.leaveBytes);

/**
 * The seals of a page, checked against its records: one per record, or
 * none from a server that sends none.
 * @param {Uint8Array[]|undefined} s
 * @param {Record[]} recs
 */
function sealsOf(s, recs) {
  if (s === undefined || s.length === 0) return [];
  if (s.length !== recs.length) throw malformed(`${s.length} seals for ${recs.length} records`);
  return s;
}

/**
 * A required key.
 * @template T
 * @param {T|undefined} v
 * @param {string} what
 * @returns {T}
 */
function need(v, what) {
  if (v === undefined) throw malformed(`${what} missing`);
  return v;
}

// ------------------------------------------------------------ HTTP bodies

/**
 * @param {string} replica
 */
export function encodeHello(replica) {
  return encode(new Map(/** @type {[number, unknown][]} */ ([[1, VERSION], [2, replica]])));
}

/**
 * Parses a hello answer (the HTTP body, or a welcome's key 1).
 * @param {Uint8Array} bytes
 * @returns {Hello}
 */
export function parseHello(bytes) {
  return helloOf(envelope(bytes, 'hello answer'));
}

/**
 * @param {Map<number, Uint8Array>} m
 * @returns {Hello}
 */
function helloOf(m) {
  return {
    protocol: need(field(m, 1, uint), 'protocol'),
    // 0 is no wall time: taken, it would restart the clock at the epoch.
    serverTime: need(field(m, 2, uint) || undefined, 'server time'),
    serverReplica: field(m, 3, text) ?? '',
    maxPush: field(m, 4, uint) || DEFAULTS.maxPushChanges,
    maxPull: field(m, 5, uint) || DEFAULTS.maxPullRecords,
    maxBody: field(m, 6, uint) || DEFAULTS.maxBodyBytes,
    maxDrift: field(m, 7, uint) || DEFAULTS.maxDriftMs,
    subject: field(m, 8, text) ?? '',
    maxPageBytes: field(m, 9, uint) || DEFAULTS.maxPageBytes,
    maxMessageBytes: field(m, 10, uint) || DEFAULTS.maxMessageBytes,
    replicaPrefix: field(m, 11, text) ?? '',
  };
}

/**
 * How pushes are split under the server's hello (its defaults before one):
 * batches of at most maxCount changes whose encoded changes take at most
 * maxBody bytes, what PUSH_ENVELOPE_BYTES leaves of the announced body,
 * 0 when it is smaller (one change always goes, alone when larger:
 * batchLength cuts by these figures). The
 * rule is transport/proto's PushRoom, which the Go client splits by;
 * test/protocol.test.js holds this to its vectors (PUSH_ROOMS).
 * @param {{maxPush: number, maxBody: number}|null|undefined} hello
 * @returns {[maxCount: number, maxBody: number]}
 */
export function pushBudget(hello) {
  return [hello?.maxPush ?? DEFAULTS.maxPushChanges, Math.max(0, (hello?.maxBody ?? DEFAULTS.maxBodyBytes) - PUSH_ENVELOPE_BYTES)];
}

/**
 * What the entry of collection c at schema version v takes in a push's
 * schema versions (key 3): 0 for version 0, which a push leaves out.
 * transport/proto's PushVersionBytes; test/push-envelope.test.js holds
 * this to its vectors (PUSH_VERSIONS).
 * @param {string} c
 * @param {number} v
 */
export function pushVersionBytes(c, v) {
  const n = utf8Length(c);
  return v > 0 ? headLen(n) + n + headLen(v) : 0;
}

/**
 * The size function pushAll cuts a batch of outbox entries by
 * (batchLength's size, fresh for each batch): an entry's encoded change
 * and, for the first entry of each collection in the batch, its entry of
 * key 3 (pushVersionBytes at the version versions gives it), which
 * PUSH_ENVELOPE_BYTES does not hold: a push spanning many collections with
 * schema versions stays within the body limit. transport/proto's
 * PushSizer, the Go client's rule.
 * @param {Map<string, number>} versions
 * @returns {(e: {c: string, change: Uint8Array}) => number}
 */
export function pushSizer(versions) {
  const seen = new Set();
  return (e) => {
    if (seen.has(e.c)) return e.change.length;
    seen.add(e.c);
    return e.change.length + pushVersionBytes(e.c, versions.get(e.c) ?? 0);
  };
}

/**
 * How many of items, from index from on, go in the next request: at most
 * maxCount, whose sizes (as size gives them) take at most maxBytes; at
 * least one while any is left (one larger than maxBytes goes alone), none
 * of none. The one rule that cuts a request: pushAll's pushes (sync.js)
 * and a heal's or a give-back's restores and pushes (batches, heal.js)
 * cut by it, under pushBudget's figures or, after a refusal whole, a
 * smaller count. The rule is transport/proto's BatchLen, which the Go
 * client cuts by; test/protocol.test.js holds this to its vectors
 * (BATCH_LENS).
 * @template T
 * @param {readonly T[]} items
 * @param {number} maxCount
 * @param {number} maxBytes
 * @param {(item: T) => number} size
 * @param {number} [from]
 * @returns {number}
 */
export function batchLength(items, maxCount, maxBytes, size, from = 0) {
  const end = Math.min(items.length, from + Math.max(1, maxCount));
  let total = 0;
  for (let i = from; i < end; i++) {
    total += size(items[i]);
    if (i > from && total > maxBytes) return i - from;
  }
  return Math.max(0, end - from);
}

/**
 * The device part of replica when it is one of prefix's ids (the prefix,
 * the separator, a device part), else null: the inverse of replicaId.
 * @param {string} replica
 * @param {string|null|undefined} prefix
 * @returns {string|null}
 */
function deviceOf(replica, prefix) {
  if (!isPrefix(prefix)) return null;
  const start = ownedStart(/** @type {string} */ (prefix));
  if (!replica.startsWith(start)) return null;
  const d = replica.slice(start.length);
  return isDevice(d) ? d : null;
}

/**
 * Encodes a push body {1: replica, 2: [change, ...], 3?: {collection:
 * version}, 7: table?, 8: base?} from encoded changes (as the outbox holds
 * them), its stamps compact (docs/protocol.md, "Compact stamps": index 0
 * is the replica); key 3 names the schema version the changes of each
 * collection were written under (none: no collection has one). With
 * prefix, the replica prefix of the subject of the token the body goes
 * with, a replica of that prefix is named by its device part (key 9, in
 * place of key 1: docs/protocol.md, "Push"); the token vouches for the
 * rest. The body must then go with that token.
 * @param {string} replica
 * @param {Uint8Array[]} changes encoded changes
 * @param {Map<string, number>} [versions] per collection, its schema version (0: none)
 * @param {string|null} [prefix]
 */
export function encodePush(replica, changes, versions, prefix) {
  return /** @type {Uint8Array<ArrayBuffer>} */ (pushBytes(replica, changes, versions, deviceOf(replica, prefix), null));
}

/**
 * Encodes a live push {0: "push", 2: [change, ...], 3?: {collection:
 * version}, 7: table?, 8: base?} (docs/protocol.md, "Pushing over a live session"): the
 * replica is the session's (the hello's), index 0 of the table, and every
 * wall is a difference from session, the session base (the welcome's
 * server time), or from the smallest wall, written as key 8, when one is
 * below session or that is shorter. Null when a change cannot be read
 * here (it goes over HTTP, for the server to refuse it alone).
 * @param {string} replica the session's replica
 * @param {Uint8Array[]} changes encoded changes
 * @param {Map<string, number>|undefined} versions per collection, its schema version (0: none)
 * @param {number} session the session base
 * @returns {Uint8Array<ArrayBuffer>|null}
 */
export function encodeLivePush(replica, changes, versions, session) {
  return pushBytes(replica, changes, versions, null, session);
}

/**
 * A push: over HTTP (session null: key 1, or key 9 when device is the
 * replica's device part), or live (from session).
 * @param {string} replica
 * @param {Uint8Array[]} changes
 * @param {Map<string, number>|undefined} versions
 * @param {string|null} device
 * @param {number|null} session
 */
function pushBytes(replica, changes, versions, device, session) {
  const named = [...(versions ?? [])].filter(([, v]) => v > 0).sort(([a], [b]) => (a.length !== b.length ? a.length - b.length : a < b ? -1 : a > b ? 1 : 0));
  /** @type {import('./record.js').Change[]|null} */
  let cs = null;
  try {
    cs = changes.map((c) => {
      const r = new Reader(c, { canonical: false });
      const ch = readChange(r, undefined, receivedValue);
      r.end();
      return ch;
    });
  } catch {
    // A change this client cannot read goes as it is, for the server to
    // refuse it alone: the push is then plain (over HTTP only).
    if (session !== null) return null;
  }
  const plan = planCompact(replica, cs ? cs.map((c) => c.record) : [], session);
  const live = session !== null;
  const base = plan.base !== session;
  const w = new Writer(64 + changes.reduce((n, c) => n + c.length, 0));
  w.head(5, 2 + (named.length > 0 ? 1 : 0) + (plan.table.length ? 1 : 0) + (base ? 1 : 0));
  if (live) {
    w.byte(0x00);
    w.text('push');
  } else if (device === null) {
    w.byte(0x01);
    w.text(replica);
  }
  w.byte(0x02);
  w.head(4, changes.length);
  if (cs) for (const c of cs) writeChange(w, c, plan);
  else for (const c of changes) w.raw(c);
  if (named.length > 0) {
    w.byte(0x03);
    w.head(5, named.length);
    for (const [c, v] of named) {
      w.text(c);
      w.head(0, v);
    }
  }
  if (plan.table.length) {
    w.head(0, COMPACT.tableKey);
    w.head(4, plan.table.length);
    for (const id of plan.table) w.text(id);
  }
  if (base) {
    w.head(0, COMPACT.baseKey);
    w.head(0, /** @type {number} */ (plan.base));
  }
  if (device !== null) {
    w.head(0, COMPACT.deviceKey);
    w.text(device);
  }
  return w.bytes();
}

/**
 * @param {Reader} r
 * @returns {PushResult}
 */
function result(r) {
  const m = readEnvelope(r, 'push result');
  const status = need(field(m, 1, uint), 'push status');
  if (!STATUS_VALUES.has(status)) throw malformed(`unknown push status ${status}`);
  /** @type {PushResult} */
  const out = { status };
  const code = field(m, 2, text);
  if (code !== undefined) out.code = code;
  const message = field(m, 3, text);
  if (message !== undefined) out.message = message;
  const lost = field(m, 4, texts);
  if (lost !== undefined) out.lost = lost;
  return out;
}

/**
 * Parses a push answer {1: [result, ...]}.
 * @param {Uint8Array} body
 * @returns {PushResult[]}
 */
export function parsePushAnswer(body) {
  return need(field(envelope(body, 'push answer'), 1, results), 'push results');
}

/**
 * Reads a list of push results.
 * @param {Reader} r
 * @returns {PushResult[]}
 */
function results(r) {
  const n = arrayHead(r);
  /** @type {PushResult[]} */
  const out = [];
  for (let i = 0; i < n; i++) out.push(result(r));
  return out;
}

/**
 * An envelope of entries (keys ascending), then key k holding scope,
 * unless there is none (an unscoped read sends no key at all), then the
 * reader's lease: key 5 its replica id, key 6 its pending floor (absent
 * when nothing is pending); key 7 fresh, when set; key 8 the schema
 * version to read in (absent when 0: the current one).
 * @param {[number, unknown][]} entries
 * @param {number} k above the keys of entries, below 5
 * @param {Uint8Array} [scope] the predicate, encoded (syncstore.js scopeOf)
 * @param {Lease} [lease]
 * @param {boolean} [fresh]
 * @param {number} [version]
 */
function scoped(entries, k, scope, lease, fresh = false, version = 0) {
  const w = new Writer(96 + (scope?.length ?? 0));
  const floor = lease?.floor ?? null;
  w.head(5, entries.length + (scope ? 1 : 0) + (lease ? 1 : 0) + (lease && floor !== null ? 1 : 0) + (fresh ? 1 : 0) + (version > 0 ? 1 : 0));
  for (const [key, v] of entries) {
    w.head(0, key);
    w.value(v);
  }
  if (scope) {
    w.head(0, k);
    w.raw(scope);
  }
  if (lease) {
    w.head(0, 5);
    w.text(lease.replica);
    if (floor !== null) {
      w.head(0, 6);
      w.value(floor);
    }
  }
  if (fresh) {
    w.head(0, 7);
    w.value(true);
  }
  if (version > 0) {
    w.head(0, 8);
    w.head(0, version);
  }
  return w.bytes();
}

/**
 * A reader's lease on a collection, sent with every pull and sub
 * (docs/protocol.md, "Tombstone collection"): the replica id it stamps
 * with, and its pending floor, the wall time (ms) of the oldest stamp in
 * its outbox for the collection (null: nothing pending). It holds the
 * server's tombstone horizons back while the reader may still push.
 * @typedef {{replica: string, floor: number|null}} Lease
 */

/**
 * @param {string} collection
 * @param {Uint8Array} cursor the stored cursor, as the server made it (empty: from the beginning)
 * @param {number} limit
 * @param {Uint8Array} [scope] the client's own scope (key 4), an encoded predicate
 * @param {Lease} [lease] keys 5 and 6
 * @param {boolean} [fresh] key 7, with an empty cursor: the client holds no
 *   record of the collection, so a scoped read needs no leave entries
 * @param {number} [version] key 8, the schema version to read the records
 *   in (0: none, the current one)
 */
export function encodePull(collection, cursor, limit, scope, lease, fresh = false, version = 0) {
  return scoped([[1, collection], [2, cursor], [3, limit]], 4, scope, lease, fresh && cursor.length === 0, version);
}

/**
 * Parses a pull answer {1: [record, ...], 2: next cursor, 3: more}.
 * @param {Uint8Array} body
 * @returns {Page}
 */
export function parsePullAnswer(body) {
  const m = envelope(body, 'pull answer');
  // Every key's type, then what the records hold, then the keys
  // required (docs/protocol.md, section 2: a message with several
  // faults), as Go reads it.
  const next = field(m, 2, byteString);
  const more = field(m, 3, bool) ?? false;
  const reset = field(m, 4, (r) => readEnvelope(r, 'reset'));
  const why = reset && { reason: field(reset, 1, text), message: field(reset, 2, text) ?? '' };
  const ls = field(m, 5, leaves) ?? [];
  const ss = field(m, 6, seals);
  const recs = records(m, 1);
  if (why) return { records: [], next: new Uint8Array(0), more: false, seals: [], leaves: [], reset: { reason: need(why.reason, 'reset reason'), message: why.message } };
  return { records: recs, next: need(next, 'next cursor'), more, seals: sealsOf(ss, recs), leaves: ls };
}

/**
 * Encodes a restore body {1: collection, 2: [[record, seal], ...], 3?:
 * version}: records exactly as the server sent them, with their seals, and
 * the schema version they were sent in (0: none).
 * @param {string} collection
 * @param {{record: Record, seal: Uint8Array}[]} items
 * @param {number} [version]
 */
export function encodeRestore(collection, items, version = 0) {
  const w = new Writer(256);
  w.head(5, version > 0 ? 3 : 2);
  w.byte(0x01);
  w.text(collection);
  w.byte(0x02);
  w.head(4, items.length);
  for (const { record, seal } of items) {
    w.head(4, 2);
    writeRecord(w, record);
    w.head(2, seal.length);
    w.raw(seal);
  }
  if (version > 0) {
    w.byte(0x03);
    w.head(0, version);
  }
  return w.bytes();
}

/**
 * Parses a restore answer {1: [result, ...]}: one result per record, as a
 * push's.
 * @param {Uint8Array} body
 * @returns {PushResult[]}
 */
export function parseRestoreAnswer(body) {
  return parsePushAnswer(body);
}

/**
 * Parses an error body {1: code, 2: message, 3: request id}; null when it
 * is not one.
 * @param {Uint8Array} body
 * @returns {{code: string, message: string, requestId?: string}|null}
 */
export function parseErrorBody(body) {
  try {
    const m = envelope(body, 'error');
    /** @type {{code: string, message: string, requestId?: string}} */
    const e = { code: need(field(m, 1, text), 'code'), message: field(m, 2, text) ?? '' };
    const id = field(m, 3, text);
    if (id) e.requestId = id;
    return e;
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
  return encode(new Map(/** @type {[number, unknown][]} */ ([[0, 'hello'], [1, VERSION], [2, replica], [3, token]])));
}

/**
 * @param {string} collection
 * @param {Uint8Array} cursor
 * @param {Uint8Array} [scope] the client's own scope (key 3), an encoded predicate
 * @param {Lease} [lease] keys 5 and 6, as a pull's
 * @param {number} [version] key 8, as a pull's
 */
export function encodeSub(collection, cursor, scope, lease, version = 0) {
  return scoped([[0, 'sub'], [1, collection], [2, cursor]], 3, scope, lease, false, version);
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
 * A server message over WebSocket. Types the client does not know come
 * back as 'unknown' and are ignored.
 * @typedef {{type: 'welcome', hello: Hello}
 *   | {type: 'changes', collection: string, records: Record[], next: Uint8Array, more: boolean, seals: Uint8Array[], leaves: Uint8Array[]}
 *   | {type: 'reset', collection: string, reason: string, message: string}
 *   | {type: 'pong', nonce: number}
 *   | {type: 'error', code: string, message: string, collection?: string, requestId?: string}
 *   | {type: 'resync', collection: string}
 *   | {type: 'pushed', results?: PushResult[], code?: string, message?: string, requestId?: string}
 *   | {type: 'unknown', name: string}} ServerMessage
 */

/** @type {Set<string>} */
const SERVER_TYPES = new Set(SERVER_MESSAGE_TYPES);

/**
 * Parses a server message: a map whose key 0 is its type.
 * @param {Uint8Array} bytes
 * @returns {ServerMessage}
 */
export function parseServerMessage(bytes) {
  const m = envelope(bytes, 'message');
  const type = need(field(m, 0, text), 'message type (key 0)');
  if (!SERVER_TYPES.has(type)) return { type: 'unknown', name: type };
  switch (type) {
    case 'welcome':
      return { type, hello: helloOf(need(field(m, 1, (r) => readEnvelope(r, 'hello answer')), 'hello answer')) };
    case 'changes': {
      // Every key's type, then what the keys hold, then the keys
      // required, as a pull answer's.
      const collection = field(m, 1, text);
      const next = field(m, 3, byteString);
      const more = field(m, 4, bool) ?? false;
      const ss = field(m, 5, seals);
      const ls = field(m, 6, leaves) ?? [];
      if (collection !== undefined) validateCollection(collection);
      const recs = records(m, 2);
      return { type, collection: need(collection, 'collection'), records: recs, next: need(next, 'next cursor'), more, seals: sealsOf(ss, recs), leaves: ls };
    }
    case 'reset': {
      const collection = field(m, 1, text);
      const reason = field(m, 2, text);
      const message = field(m, 3, text) ?? '';
      if (collection !== undefined) validateCollection(collection);
      return { type, collection: need(collection, 'collection'), reason: need(reason, 'reset reason'), message };
    }
    case 'pong':
      return { type, nonce: need(field(m, 1, uint), 'nonce') };
    case 'error': {
      /** @type {ServerMessage} */
      const e = { type, code: need(field(m, 1, text), 'code'), message: field(m, 2, text) ?? '' };
      const c = field(m, 3, text);
      if (c !== undefined) e.collection = c;
      const id = field(m, 4, text);
      if (id) e.requestId = id;
      return e;
    }
    case 'resync':
      return { type, collection: need(field(m, 1, text), 'collection') };
    case 'pushed': {
      // The answer to a live push: its results, or a code refusing it
      // whole (docs/protocol.md, "Pushing over a live session").
      const rs = field(m, 1, results);
      const code = field(m, 2, text);
      // Exactly one of them, and a code that is not empty.
      if ((rs === undefined) === (code === undefined) || code === '') throw malformed('pushed holds results or a code');
      /** @type {ServerMessage} */
      const p = rs ? { type, results: rs } : { type, code, message: field(m, 3, text) ?? '' };
      const id = field(m, 4, text); // the push's request id
      if (id) p.requestId = id;
      return p;
    }
  }
  return { type: 'unknown', name: type };
}

// ------------------------------------------------------ compact stamps
//
// A message's plan and context of compact stamps: only the wire needs them
// (record.js writes and reads stamps by them), so they load with the sync
// loop.

/**
 * The length of a CBOR head with argument n.
 * @param {number} n
 */
const headLen = (n) => (n < 24 ? 1 : n < 0x100 ? 2 : n < 0x10000 ? 3 : n < 0x100000000 ? 5 : 9);

/**
 * Plans the compact stamps of a message, as every encoder does (Go's
 * crdt.PlanCompact): the table holds pinned (a push's replica) at index 0,
 * then every other id of two or more stamps in encoded order (shorter
 * first, then bytewise: ids are ASCII); the base is the smallest wall, when
 * it saves bytes. With session, a live push's session base
 * (docs/protocol.md, "Pushing over a live session"): walls are always
 * differences, from session unless one is below it or the smallest wall,
 * written as key 8, makes them shorter; the plan's base is then session.
 * @param {string} pinned
 * @param {import('./record.js').Record[]} records
 * @param {number|null} [session]
 * @returns {import('./record.js').CompactPlan}
 */
export function planCompact(pinned, records, session = null) {
  /** @type {import('./hlc.js').Stamp[]} */
  const stamps = [];
  for (const r of records) {
    if (!isZeroStamp(r.deleted)) stamps.push(r.deleted);
    for (const f of r.fields.values()) stamps.push(f.stamp);
  }
  /** @type {Map<string, number>} */
  const count = new Map();
  const from = session ?? 0;
  let min = Infinity;
  let plain = 0;
  for (const s of stamps) {
    count.set(s.replica, (count.get(s.replica) ?? 0) + 1);
    if (s.wall < min) min = s.wall;
    plain += headLen(s.wall - from);
  }
  const table = [...count.keys()].filter((id) => id !== pinned && /** @type {number} */ (count.get(id)) > 1);
  table.sort((a, b) => a.length - b.length || (a < b ? -1 : 1));
  const index = new Map(table.map((id, i) => [id, i + (pinned ? 1 : 0)]));
  if (pinned) index.set(pinned, 0);
  let delta = 1 + headLen(min);
  for (const s of stamps) delta += headLen(s.wall - min);
  return { index, table, base: stamps.length && (min < from || delta < plain) ? min : session };
}

/**
 * The context of a message's compact stamps: its table (key 7, after a
 * push's own replica) and base wall (key 8). Both are checked: a bad one
 * makes the message malformed.
 * @param {string[]} table
 * @param {number|undefined} base
 * @returns {import('./record.js').CompactContext}
 */
export function compactContext(table, base) {
  for (const id of table) {
    try {
      validateReplica(id);
    } catch {
      throw new ConvergoError('malformed', `replica table holds an invalid replica id ${JSON.stringify(id)}`);
    }
  }
  if (base !== undefined && base > MAX_WALL) throw new ConvergoError('malformed', `base wall ${base} out of range`);
  /** @type {import('./record.js').CompactContext} */
  const cx = {
    extra: 0,
    wall(w) {
      if (base === undefined) return w;
      cx.extra += headLen(w + base) - headLen(w);
      return w + base;
    },
    replica(i) {
      const id = table[Number(i)];
      if (id === undefined) throw new ConvergoError('malformed', `replica index ${i} outside the message's table`);
      cx.extra += headLen(id.length) + id.length - headLen(Number(i));
      return id;
    },
  };
  return cx;
}
