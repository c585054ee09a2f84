// A small in-memory implementation of the protocol's server side (version
// 2, docs/protocol.md), built on the client's own record code and the
// generated constants, for tests that need a server without Go. Tests that
// can run the real Go server do so in server-go.test.js.
//
// Its cursors are opaque to the client as the protocol says: a prefix, the
// server's generation (wipe() starts a new one) and the collection's
// sequence number in 8 bytes, which the client must store and send back
// unchanged. A cursor of another generation gets a reset. Records it sends
// carry seals (HMAC-SHA256 of the collection and the record, cut to 16
// bytes), which POST /v2/restore checks.
//
// Scopes (docs/protocol.md, section 12): a pull's key 4 or a sub's key 3
// narrows the read; each entry after the cursor is sent as the record when
// it matches, else as a leave entry. A scoped cursor carries the scope's
// bytes after the sequence number; a read under another scope is a
// transition, answered with the difference as the real server does.
// Parameters bind to the token's subject and claims (its JWT payload).
//
// Tombstone collection (docs/protocol.md, "Tombstone collection"), as far
// as a client can tell it: collect() removes a record as a delete whose
// tombstone was collected would, purge() drops the tombstones (unset
// fields, the delete stamp) of one record and keeps its live fields,
// leaseExpire() resets the next read of a non-empty cursor lease_expired
// (and live subscribers at once), and a write horizon per collection
// refuses changes stamped before it collected (records given back too,
// unless the record held already holds them). The leases clients send (pull and sub keys 5 and 6) are kept
// as they came (pulls, received).
//
// Schema versions (docs/protocol.md, section 13): setMigrations(c, def)
// installs a collection's migrations (src/migrate.js). Pushed changes are
// translated up from the version the push names (key 3) and stored in the
// current shape (untranslatable: refused); pulls (key 8) and subs (key 8)
// read each record resolved to the current version and translated down to
// theirs, sealed over the version; restores (key 3) are checked at their
// version and translated up. A version above the current one is
// schema_ahead (409, a sub's error).

import http from 'node:http';
import { createHash, createHmac } from 'node:crypto';
import { WebSocketServer } from 'ws';
import { encode, decode, Writer, Reader } from '../../src/codec.js';
import { receivedValue } from '../../src/normalize.js';
import { CODES, CONTENT_TYPE, DEFAULTS, HEADERS, PATHS, REPLICA, STATUSES, VERSION } from '../../src/constants.js';
import { mergeInto, emptyRecord, writeRecord, maxStamp, readRecord, encodeRecord, visibleValues } from '../../src/record.js';
import { compactContext, uint } from '../../src/protocol.js';
import { compareStamps } from '../../src/hlc.js';
import { replicaPrefix, subjectOfToken } from '../../src/replica.js';
import { parseDefinition, translate } from '../../src/migrate.js';
import { cloneRecord } from '../../src/parts.js';
import { readChange } from '../../src/change.js';

/**
 * @typedef {object} FakeServerOptions
 * @property {(token: string) => string|null} [auth] returns an error code to refuse the token, or null
 * @property {() => string|null} [liveRefusal] called at each live hello: an error code to refuse it with (closed 1013, try again later, when unavailable, as the server refuses a hello while its clock is off; else 1008), or null
 * @property {number} [maxPush] announced as given; 0 is enforced as the default, as clients read it (docs/protocol.md, section 6)
 * @property {number} [maxBody] the request body limit its hello announces and HTTP pushes are held to (too_large)
 * @property {number} [maxPull] announced as given; 0 is enforced as the default, as clients read it
 * @property {number} [maxMessageBytes] the live message limit its hello announces
 * @property {number} [timeOffset] added to the server clock (ms)
 * @property {number} [maxDrift]
 * @property {number} [protocol] the version the server speaks (default VERSION)
 * @property {number} [pageTooLargeOver] answer pulls asking for more records with 413 (pages of big records)
 */

const CURSOR_TAG = [0x66, 0x6b]; // "fk"

/**
 * @param {number} seq
 * @param {number} [gen] the server's generation
 * @param {Uint8Array} [scope] the scope it was read under, encoded
 */
export function cursorOf(seq, gen = 0, scope = undefined) {
  if (seq === 0 && !scope) return new Uint8Array(0);
  const b = new Uint8Array(11 + (scope?.length ?? 0));
  b.set(CURSOR_TAG);
  b[2] = gen;
  new DataView(b.buffer).setBigUint64(3, BigInt(seq));
  if (scope) b.set(scope, 11);
  return b;
}

/**
 * The scope a cursor was read under (undefined: unscoped).
 * @param {unknown} c
 */
export function scopeOfCursor(c) {
  return c instanceof Uint8Array && c.length > 11 ? c.subarray(11) : undefined;
}

/**
 * The leave entry of record id of collection c, as node:crypto computes it.
 * @param {string} c
 * @param {string} id
 */
export function leaveOf(c, id) {
  return new Uint8Array(createHash('sha256').update('convergo/leave/v2\0' + c + '\0' + id).digest().subarray(0, 16));
}

/**
 * Whether record rec matches predicate p (docs/protocol.md, section 12),
 * parameters bound by param; equality on canonical bytes.
 * @param {any} p
 * @param {import('../../src/record.js').Record} rec
 * @param {(name: string) => unknown} param
 * @returns {boolean}
 */
export function matches(p, rec, param) {
  const vals = visibleValues(rec);
  if (vals === null) return false;
  const bind = (/** @type {any} */ v) => (v && typeof v === 'object' && !Array.isArray(v) && typeof v.$ === 'string' ? param(v.$) : v);
  const same = (/** @type {Uint8Array|undefined} */ b, /** @type {unknown} */ v) => b !== undefined && v !== undefined && Buffer.compare(Buffer.from(b), Buffer.from(encode(v))) === 0;
  switch (p[0]) {
    case 'all':
      return true;
    case 'eq':
      return same(vals.get(p[1]), bind(p[2]));
    case 'in': {
      const vs = bind(p[2]);
      return Array.isArray(vs) && vs.some((v) => same(vals.get(p[1]), v));
    }
    case 'has': {
      const b = vals.get(p[1]);
      const arr = b === undefined ? null : decode(b, { canonical: false });
      return Array.isArray(arr) && arr.some((x) => same(encode(x), bind(p[2])));
    }
    case 'and':
      return p.slice(1).every((/** @type {any} */ q) => matches(q, rec, param));
    case 'or':
      return p.slice(1).some((/** @type {any} */ q) => matches(q, rec, param));
  }
  throw Object.assign(new Error('bad scope'), { code: 'invalid' });
}

/**
 * The token's claims (its JWT payload; {} for none).
 * @param {string} token
 */
function claimsOf(token) {
  try {
    return JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString('utf8')) ?? {};
  } catch {
    return {};
  }
}

/**
 * The sequence number behind a cursor (-1 when it is of another
 * generation than gen); null when it is not one of ours.
 * @param {unknown} c
 * @param {number} [gen]
 */
export function seqOf(c, gen = 0) {
  if (c === undefined || (c instanceof Uint8Array && c.length === 0)) return 0;
  if (!(c instanceof Uint8Array) || c.length < 11 || c[0] !== CURSOR_TAG[0] || c[1] !== CURSOR_TAG[1]) return null;
  if (c[2] !== gen) return -1;
  return Number(new DataView(c.buffer, c.byteOffset).getBigUint64(3));
}

const statusOf = new Map(CODES.map((c) => [c.code, c.http]));

/**
 * The items of a CBOR envelope with integer keys: a reader at each key's
 * value, for the caller to read.
 * @param {Uint8Array} body
 * @returns {(k: number) => Reader|undefined}
 */
function items(body) {
  const r = new Reader(body, { canonical: false });
  const keys = r.mapHead();
  /** @type {Map<number, number>} */
  const at = new Map();
  for (let i = 0; i < keys; i++) {
    const k = uint(r);
    at.set(k, r.off);
    r.skip();
  }
  r.end();
  return (k) => {
    const off = at.get(k);
    if (off === undefined) return undefined;
    const ir = new Reader(body, { canonical: false });
    ir.off = off;
    return ir;
  };
}

/**
 * The stamps record rec holds: its delete's (if deleted) and its fields'.
 * @param {import('../../src/record.js').Record} rec
 */
function stampsOf(rec) {
  return [rec.deleted, ...[...rec.fields.values()].map((f) => f.stamp)].filter((st) => st.wall > 0 || st.replica !== '');
}

export class FakeServer {
  /** @param {FakeServerOptions} [opts] */
  constructor(opts = {}) {
    this.opts = opts;
    /** @type {Map<string, {seq: number, byId: Map<string, {seq: number, record: any}>}>} */
    this.colls = new Map();
    /** @type {string[]} the path of every HTTP request */
    this.requests = [];
    /** @type {{path: string, headers: http.IncomingHttpHeaders}[]} */
    this.requestHeaders = [];
    /** Set to a number to make the next N push answers fail after applying (HTTP: 503; live: the session is lost before the answer). */
    this.dropPushAnswers = 0;
    /** Set to a number to leave the next N live pushes unanswered after applying them, the session kept (pings answered). */
    this.holdPushAnswers = 0;
    /** @type {(changes: import('../../src/record.js').Change[]) => boolean} a push it returns true for fails unavailable, nothing applied */
    this.failPush = () => false;
    /** Set to refuse changes to these ids. */
    this.refuseIds = new Set();
    /** @type {(ch: import('../../src/record.js').Change) => boolean|string} refuses changes it returns true for (forbidden) or a code for */
    this.refuse = () => false;
    /** @type {Set<any>} */
    this.sockets = new Set();
    this.pushes = 0;
    /** @type {number[][]} the statuses of every push answer, in order */
    this.pushStatuses = [];
    /** Collections the token may not read: pulls and subs are refused (forbidden). */
    this.forbidden = new Set();
    /** Live pings go unanswered while true (a socket whose peer is gone). */
    this.ignorePings = false;
    /** @type {(n: number) => number} ms the answer to the nth live ping (from 1) is held before it goes (a slow network) */
    this.pongDelay = () => 0;
    /** HTTP requests are answered 429 with Retry-After until this time (ms). */
    this.limitedUntil = 0;
    /** The Retry-After of those answers, in seconds. */
    this.retryAfter = 1;
    /** @type {number[]} when each rate-limited answer was sent */
    this.limited = [];
    /**
     * Adds keys no client knows (99, and a text key) to every answer and
     * live message, and sends a live message of an unknown type after
     * each welcome: a newer server, which clients must read as today's.
     */
    this.newer = false;
    /** @type {any[]} the live messages clients sent, decoded */
    this.received = [];
    /** @type {number[]} when each of received came (Date.now()) */
    this.receivedAt = [];
    this.nextRequestId = 0;
    /** The generation of the server's history: wipe() starts a new one. */
    this.gen = 0;
    /** The seal key; a new one makes old seals bad_seal. */
    this.sealKey = 'fake-seal-key';
    /** The reason of the resets wipe() causes. */
    this.resetReason = 'history_lost';
    /** @type {number} records restored (POST /v2/restore) that changed the server */
    this.restoredRecords = 0;
    /** @type {number[]} how many records each restore request carried */
    this.restores = [];
    /** Subjects whose requests are refused revoked (403), live sessions too. */
    this.revoked = new Set();
    /** @type {Map<string, any>[]} the pull requests, decoded */
    this.pulls = [];
    /** @type {Map<string, string|null>} collections whose next read of a non-empty cursor (by the replica named, null: by anyone) is reset lease_expired */
    this.expired = new Map();
    /** @type {Map<string, number>} per collection, the write horizon (ms): changes stamped before it are refused collected */
    this.writeHorizon = new Map();
    /** @type {{c: string, id: string, status: number, code?: string, record?: import('../../src/record.js').Record}[]} every pushed change (its record as pushed), with how it was answered */
    this.pushed = [];
    /** @type {Map<string, import('../../src/migrate.js').Definition>} per collection, its migrations */
    this.migrations = new Map();
    /** @type {Map<string, number>[]} the versions (key 3) of every push */
    this.pushVersions = [];
    /** @type {number[]} the body size of every HTTP push, refused too_large or not */
    this.pushSizes = [];
    /** @type {{replica: string, device?: boolean, live?: boolean}[]} the pushing replica of every push, and whether key 9 named it or it came over a live session */
    this.pushReplicas = [];
    /** @type {Uint8Array[]} every live push message, as it came */
    this.livePushes = [];
    /** @type {(changes: number) => string|null} a code it returns refuses a live push of that many changes whole (pushed {2: code}), nothing applied */
    this.refuseLivePush = () => null;
    /** @type {(changes: import('../../src/record.js').Change[]) => string|null} a code it returns refuses a push (HTTP or live) of these changes whole, nothing applied */
    this.refusePush = () => null;
    /** @type {(items: {record: import('../../src/record.js').Record, seal: Uint8Array}[], c: string) => string|null} a code it returns refuses a restore of these records of collection c whole, nothing applied */
    this.refuseRestore = () => null;
    /** @type {(c: string) => string|null} a code it returns refuses a live sub of collection c (error with key 3), its pulls served */
    this.refuseSub = () => null;
    /** @type {(c: string) => string|null} a code it returns refuses a pull of collection c whole */
    this.refusePull = () => null;
  }

  /**
   * Installs the migrations of collection c (the rules file's "migrations"
   * of its rule), as a restart with new rules would; null removes them.
   * @param {string} c
   * @param {unknown} def
   */
  setMigrations(c, def) {
    if (def === null) this.migrations.delete(c);
    else this.migrations.set(c, parseDefinition(def));
  }

  /**
   * The current schema version of collection c (1 without migrations).
   * @param {string} c
   */
  current(c) {
    return this.migrations.get(c)?.version ?? 1;
  }

  /**
   * A version as a request names it: 0 (none) is the current one; above
   * the current one is schema_ahead.
   * @param {string} c
   * @param {unknown} v
   */
  versionOf(c, v) {
    if (v === undefined || v === 0) return this.current(c);
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw Object.assign(new Error('bad version'), { code: 'invalid' });
    if (v > this.current(c)) throw Object.assign(new Error(`schema version ${v}, current ${this.current(c)}`), { code: 'schema_ahead' });
    return v;
  }

  /**
   * Record rec of collection c as a reader of version v sees it: resolved
   * to the current version (a record stored before the migrations were
   * installed holds older fields), then translated down.
   * @param {string} c
   * @param {import('../../src/record.js').Record} rec
   * @param {number} v
   */
  served(c, rec, v) {
    const def = this.migrations.get(c);
    if (!def) return rec;
    return translate(def, translate(def, rec, 1, def.version, 'record'), def.version, v, 'record');
  }

  /**
   * Deletes record id of collection c and collects its tombstone at once:
   * the record is gone, as if it had never been (clients that held it
   * learn nothing from a pull).
   * @param {string} c
   * @param {string} id
   */
  collect(c, id) {
    this.coll(c).byId.delete(id);
  }

  /**
   * Collects the tombstones of record id of collection c, as the
   * collection job does once they are older than the write horizon: its
   * unset fields go, its delete stamp is cleared (the fields it hid are
   * gone already), and a record left with nothing is removed. Like a
   * purge, it takes no sequence number: no reader hears of it.
   * @param {string} c
   * @param {string} id
   */
  purge(c, id) {
    const x = this.coll(c);
    const e = x.byId.get(id);
    if (!e) return;
    const rec = cloneRecord(e.record);
    rec.deleted = emptyRecord(id).deleted;
    for (const [name, f] of rec.fields) if (f.value === null) rec.fields.delete(name);
    if (rec.fields.size === 0) x.byId.delete(id);
    else x.byId.set(id, { seq: e.seq, record: rec });
  }

  /**
   * The readers of collection c stayed away too long: the next read of a
   * non-empty cursor (a pull, or a sub) is reset lease_expired, and live
   * subscribers of c are reset at once (which uses it up). With replica,
   * only that replica's lease expired: the reads naming it.
   * @param {string} c
   * @param {string|null} [replica]
   */
  leaseExpire(c, replica = null) {
    this.expired.set(c, replica);
    for (const ws of this.sockets) {
      if (!ws.subs?.has(c) || (replica !== null && ws.leases?.get(c) !== replica)) continue;
      ws.subs.delete(c);
      this.expired.delete(c);
      ws.send(encode(this.env([[0, 'reset'], [1, c], [2, 'lease_expired'], [3, 'the test expired the lease']])));
    }
  }

  /**
   * Whether a read of collection c from cursor is reset lease_expired now
   * (once per leaseExpire).
   * @param {string} c
   * @param {unknown} cursor
   * @param {unknown} replica the lease the read names (key 5)
   */
  leaseExpired(c, cursor, replica) {
    const who = this.expired.get(c);
    if (who === undefined || (who !== null && who !== replica) || !(cursor instanceof Uint8Array) || cursor.length === 0) return false;
    this.expired.delete(c);
    return true;
  }

  /**
   * Denies subject: its requests are refused revoked from now on and its
   * live sessions get error revoked and are closed.
   * @param {string} subject
   */
  revoke(subject) {
    this.revoked.add(subject);
    for (const ws of this.sockets) {
      if (ws.subject !== subject) continue;
      ws.send(encode(this.env([[0, 'error'], [1, 'revoked'], [2, 'access revoked'], [4, 'fake-revoked']])));
      ws.close(1008);
    }
  }

  /**
   * The seal of record rec in collection c.
   * @param {string} c
   * @param {import('../../src/record.js').Record} rec
   */
  seal(c, rec, v = this.current(c)) {
    const domain = v < this.current(c) ? `convergo/seal/v2/schema${v}\0` : 'convergo/seal/v2\0';
    return new Uint8Array(createHmac('sha256', this.sealKey).update(domain + c + '\0').update(encodeRecord(rec)).digest().subarray(0, 16));
  }

  /**
   * Loses every record (a wiped store): a new generation, whose cursors
   * differ from the old ones, so clients holding an old cursor are reset
   * (pulls, and live subscribers at once) with resetReason.
   */
  wipe() {
    this.colls.clear();
    this.gen++;
    for (const ws of this.sockets) {
      for (const c of [...(ws.subs?.keys() ?? [])]) {
        ws.subs.delete(c);
        ws.send(encode(this.env([[0, 'reset'], [1, c], [2, this.resetReason], [3, 'the test wiped the store']])));
      }
    }
  }

  /**
   * Whether a stamp of stamps is before collection c's write horizon: a
   * change holding one is refused collected.
   * @param {string} c
   * @param {import('../../src/hlc.js').Stamp[]} stamps
   */
  beforeHorizon(c, stamps) {
    const horizon = this.writeHorizon.get(c);
    return horizon !== undefined && stamps.some((st) => st.wall < horizon);
  }

  /**
   * Whether the record of change ch as stored holds every stamp of it
   * before the write horizon: each such field under its name, with a
   * value stamped at it or after and not hidden by the record's delete,
   * and such a delete at or before the record's (engine's heldLive, by
   * the names the change was written with).
   * @param {import('../../src/record.js').Change} ch
   */
  holdsOld(ch) {
    const horizon = this.writeHorizon.get(ch.collection) ?? 0;
    const rec = this.coll(ch.collection).byId.get(ch.record.id)?.record;
    if (!rec) return false;
    const d = ch.record.deleted;
    if (d.wall > 0 && d.wall < horizon && compareStamps(d, rec.deleted) > 0) return false;
    for (const [name, f] of ch.record.fields) {
      if (f.stamp.wall >= horizon) continue;
      const g = rec.fields.get(name);
      if (!g || g.value === null || compareStamps(g.stamp, rec.deleted) <= 0 || compareStamps(g.stamp, f.stamp) < 0) return false;
    }
    return true;
  }

  /**
   * Merges records given back with their seals; results as a push's.
   * @param {string} c
   * @param {{record: import('../../src/record.js').Record, seal: Uint8Array}[]} items
   * @param {number} [v] the schema version they were served in
   */
  restore(c, items, v = this.current(c)) {
    const results = [];
    let touched = false;
    for (const item of items) {
      const want = this.seal(c, item.record, v);
      if (Buffer.compare(Buffer.from(want), Buffer.from(item.seal)) !== 0) {
        results.push(this.result(STATUSES.refused, { code: 'bad_seal', message: 'not a seal of this server' }));
        continue;
      }
      const def = this.migrations.get(c);
      const record = def ? translate(def, item.record, v, def.version, 'record') : item.record;
      const x = this.coll(c);
      const cur = x.byId.get(record.id);
      const rec = cur ? cloneRecord(cur.record) : emptyRecord(record.id);
      const changed = mergeInto(rec, record) || !cur;
      // A record given back is refused collected like a push, unless
      // the record held holds it already.
      if (changed && this.beforeHorizon(c, stampsOf(record))) {
        results.push(this.result(STATUSES.refused, { code: 'collected', message: 'stamped before the write horizon' }));
        continue;
      }
      if (changed) {
        x.seq++;
        x.byId.set(rec.id, { seq: x.seq, record: rec });
        this.restoredRecords++;
        touched = true;
        results.push(this.result(STATUSES.applied));
      } else {
        results.push(this.result(STATUSES.duplicate));
      }
    }
    if (touched) this.notify(c);
    return results;
  }

  async start() {
    // Headers of up to the protocol's token bound and 4 KiB more, as the
    // server's net/http reads them (Node's own default is 16 KiB).
    this.http = http.createServer({ maxHeaderSize: DEFAULTS.maxTokenBytes + 4096 }, (req, res) => this.handle(req, res));
    this.wss = new WebSocketServer({ noServer: true });
    this.http.on('upgrade', (req, socket, head) => {
      if (new URL(req.url ?? '/', 'http://x').pathname !== PATHS.live) {
        socket.end('HTTP/1.1 404 Not Found\r\n\r\n');
        return;
      }
      this.wss.handleUpgrade(req, socket, head, (ws) => this.live(ws));
    });
    await new Promise((r) => this.http.listen(0, '127.0.0.1', r));
    const a = /** @type {any} */ (this.http.address());
    this.url = `http://127.0.0.1:${a.port}`;
    return this;
  }

  async stop() {
    for (const ws of this.sockets) ws.terminate();
    await new Promise((r) => this.wss.close(r));
    this.http.closeAllConnections?.();
    if (this.http.listening) await new Promise((r) => this.http.close(r));
  }

  /**
   * An outage: drops every connection and stops listening, so connecting
   * is refused, until up(). The data stays.
   */
  async down() {
    for (const ws of this.sockets) ws.terminate();
    const closed = new Promise((r) => this.http.close(r));
    this.http.closeAllConnections?.();
    await closed;
  }

  /** Listens again on the same port after down(). */
  async up() {
    const port = Number(new URL(/** @type {string} */ (this.url)).port);
    await new Promise((r) => this.http.listen(port, '127.0.0.1', r));
  }

  now() {
    return Date.now() + (this.opts.timeOffset ?? 0);
  }

  /**
   * An envelope, with a newer server's additions when this.newer.
   * @param {[number, unknown][]} entries
   */
  env(entries) {
    /** @type {Map<unknown, unknown>} */
    const m = new Map(entries);
    if (this.newer) {
      m.set(99, new Map([[1, 'a key from the future']]));
      m.set('x-newer', [1, 2, 3]);
    }
    return m;
  }

  /** @param {string} [prefix] the replica prefix of the token's subject */
  helloAnswer(prefix = '') {
    return this.env([
      [1, this.opts.protocol ?? VERSION],
      [2, this.now()],
      [3, 'fake-server'],
      [4, this.opts.maxPush ?? DEFAULTS.maxPushChanges],
      [5, this.opts.maxPull ?? DEFAULTS.maxPullRecords],
      [6, this.opts.maxBody ?? DEFAULTS.maxBodyBytes],
      [7, this.opts.maxDrift ?? DEFAULTS.maxDriftMs],
      [8, ''],
      [9, DEFAULTS.maxPageBytes],
      [10, this.opts.maxMessageBytes ?? DEFAULTS.maxMessageBytes],
      [11, prefix],
    ]);
  }

  /** @param {string} c */
  coll(c) {
    let x = this.colls.get(c);
    if (!x) this.colls.set(c, (x = { seq: 0, byId: new Map() }));
    return x;
  }

  /**
   * A push result.
   * @param {number} status
   * @param {{code?: string, message?: string, lost?: string[]}} [o]
   */
  result(status, o = {}) {
    /** @type {[number, unknown][]} */
    const e = [[1, status]];
    if (o.code) e.push([2, o.code], [3, o.message ?? '']);
    if (o.lost && o.lost.length > 0) e.push([4, o.lost]);
    return this.env(e);
  }

  /**
   * Applies changes; returns results: applied when the record changed
   * (naming the fields of the change that lost), duplicate when it held
   * every stamp already, superseded when newer writes beat the change.
   * @param {import('../../src/record.js').Change[]} changes
   * @param {string} prefix the replica prefix of the pusher's subject: a
   *   stamp of another id is forged_replica
   * @param {Map<string, number>} [versions] per collection, the schema
   *   version the changes were written under (none: the current one)
   */
  apply(changes, prefix, versions = new Map()) {
    const results = [];
    /** @type {Set<string>} */
    const touched = new Set();
    for (let ch of changes) {
      const n = results.length;
      const def = this.migrations.get(ch.collection);
      if (def) {
        try {
          ch = { collection: ch.collection, record: translate(def, ch.record, this.versionOf(ch.collection, versions.get(ch.collection)), def.version, 'change') };
        } catch (e) {
          // One with a stamp before the write horizon that the record as
          // stored does not hold under the names it was written with is
          // refused collected, as it would be translated (docs/protocol.md,
          // section 13).
          const code = /** @type {any} */ (e).code === 'untranslatable' && this.beforeHorizon(ch.collection, stampsOf(ch.record)) && !this.holdsOld(ch) ? 'collected' : /** @type {any} */ (e).code ?? 'invalid';
          results.push(this.result(STATUSES.refused, { code, message: /** @type {any} */ (e).message }));
          this.pushed.push({ c: ch.collection, id: ch.record.id, status: STATUSES.refused, code });
          continue;
        }
      }
      this.applyOne(ch, prefix, results, touched);
      const r = results[n];
      this.pushed.push({ c: ch.collection, id: ch.record.id, status: r.get(1), code: r.get(2), record: cloneRecord(ch.record) });
    }
    for (const c of touched) this.notify(c);
    return results;
  }

  /**
   * Applies one pushed change (see apply), its result added to results.
   * @param {import('../../src/record.js').Change} ch
   * @param {string} prefix
   * @param {Map<number, unknown>[]} results
   * @param {Set<string>} touched
   */
  applyOne(ch, prefix, results, touched) {
    const refusal = this.refuseIds.has(ch.record.id) || this.refuse(ch);
    if (refusal) {
      results.push(this.result(STATUSES.refused, { code: typeof refusal === 'string' ? refusal : 'forbidden', message: 'refused by test' }));
      return;
    }
    const stamps = stampsOf(ch.record);
    if (this.beforeHorizon(ch.collection, stamps)) {
      results.push(this.result(STATUSES.refused, { code: 'collected', message: 'stamped before the write horizon' }));
      return;
    }
    const forged = stamps.find((st) => !st.replica.startsWith(prefix + REPLICA.separator));
    if (forged) {
      results.push(this.result(STATUSES.refused, { code: 'forged_replica', message: `stamp of replica ${forged.replica}` }));
      return;
    }
    const top = maxStamp(ch.record);
    if (top.wall - this.now() > (this.opts.maxDrift ?? DEFAULTS.maxDriftMs)) {
      results.push(this.result(STATUSES.refused, { code: 'clock_drift', message: 'too far ahead' }));
      return;
    }
    const c = this.coll(ch.collection);
    const cur = c.byId.get(ch.record.id);
    const rec = cur ? cloneRecord(cur.record) : emptyRecord(ch.record.id);
    const changed = mergeInto(rec, ch.record);
    // The fields of the change the record does not hold as written.
    const lost = [];
    for (const [name, f] of ch.record.fields) {
      const held = rec.fields.get(name);
      if (!held || compareStamps(held.stamp, f.stamp) !== 0) lost.push(name);
    }
    if (changed || !cur) {
      c.seq++;
      c.byId.set(rec.id, { seq: c.seq, record: rec });
      results.push(this.result(STATUSES.applied, { lost }));
      touched.add(ch.collection);
    } else {
      results.push(this.result(lost.length > 0 ? STATUSES.superseded : STATUSES.duplicate, { lost }));
    }
  }

  /**
   * The records changed after seq after, at most limit of them. Under a
   * scope (encoded), entries that do not match are leave entries; a
   * cursor of another scope (prev) is a transition: entries up to after
   * are sent only where the two scopes disagree.
   * @param {string} c
   * @param {number} after
   * @param {number} limit
   * @param {{scope?: Uint8Array, prev?: Uint8Array, param?: (name: string) => unknown}} [s]
   */
  page(c, after, limit, s = {}) {
    const x = this.coll(c);
    const same = Buffer.compare(Buffer.from(s.scope ?? []), Buffer.from(s.prev ?? [])) === 0;
    const pred = (/** @type {Uint8Array|undefined} */ b) => (b ? decode(b, { canonical: false }) : ['or', ['all'], ['and']]);
    const inScope = (/** @type {Uint8Array|undefined} */ b, /** @type {any} */ rec) => (b ? matches(pred(b), rec, s.param ?? (() => undefined)) : true);
    /** @type {{seq: number, record: any, leave?: Uint8Array}[]} */
    const entries = [];
    for (const e of [...x.byId.values()].sort((a, b) => a.seq - b.seq)) {
      const now = inScope(s.scope, e.record);
      if (e.seq <= after) {
        if (same) continue;
        const before = inScope(s.prev, e.record);
        if (now && !before) entries.push(e);
        else if (!now && before) entries.push({ ...e, leave: leaveOf(c, e.record.id) });
      } else if (now || !s.scope) entries.push(e);
      else entries.push({ ...e, leave: leaveOf(c, e.record.id) });
    }
    // A transition goes in one page (the real server's cursor remembers
    // where its scan is; this one does not).
    const page = same ? entries.slice(0, limit) : entries;
    const more = entries.length > page.length;
    const next = more ? page[page.length - 1].seq : Math.max(after, x.seq);
    return { page: page.filter((e) => !e.leave), leaves: page.filter((e) => e.leave).map((e) => /** @type {Uint8Array} */ (e.leave)), next: cursorOf(next, this.gen, s.scope), seq: next, more };
  }

  /**
   * Writes an envelope whose key 1 (or 2 for changes) is a list of records.
   * @param {[number, unknown][]} before keys before the records
   * @param {number} key the records' key
   * @param {{seq: number, record: any}[]} page
   * @param {[number, unknown][]} after keys after the records
   * @param {{c: string, key: number, version?: number}} [sealed] adds the seals of the records under key; version: serves them in that schema version
   */
  pageBytes(before, key, page, after, sealed) {
    const extra = this.newer ? [...this.env([]).entries()] : [];
    if (sealed) {
      const v = sealed.version ?? this.current(sealed.c);
      page = page.map((e) => ({ ...e, record: this.served(sealed.c, e.record, v) }));
      if (page.length > 0) after = [...after, [sealed.key, page.map((e) => this.seal(sealed.c, e.record, v))]];
    }
    const w = new Writer();
    w.head(5, before.length + 1 + after.length + extra.length);
    for (const [k, v] of before) {
      w.raw(encode(k));
      w.raw(encode(v));
    }
    w.head(0, key);
    w.head(4, page.length);
    for (const e of page) writeRecord(w, e.record);
    for (const [k, v] of [...after, ...extra]) {
      w.raw(encode(k));
      w.raw(encode(v));
    }
    return w.bytes();
  }

  /**
   * @param {http.IncomingMessage} req
   * @param {http.ServerResponse} res
   */
  async handle(req, res) {
    const chunks = [];
    for await (const ch of req) chunks.push(ch);
    const body = new Uint8Array(Buffer.concat(chunks));
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    this.requests.push(path);
    this.requestHeaders.push({ path, headers: req.headers });
    const asked = req.headers[HEADERS.requestId.toLowerCase()];
    const requestId = typeof asked === 'string' && /^[A-Za-z0-9_-]{1,64}$/.test(asked) ? asked : `fake-${++this.nextRequestId}`;
    /** @param {number} status @param {Record<string, string>} [headers] */
    const head = (status, headers = {}) => res.writeHead(status, { 'Content-Type': CONTENT_TYPE, [HEADERS.requestId]: requestId, ...headers });
    const fail = (/** @type {string} */ code, /** @type {Record<string, string>} */ headers = {}) => {
      head(/** @type {number} */ (statusOf.get(code)), { [HEADERS.error]: code, ...headers });
      res.end(encode(this.env([[1, code], [2, 'test server says ' + code], [3, requestId]])));
    };
    if (Date.now() < this.limitedUntil) {
      this.limited.push(Date.now());
      return fail('rate_limited', { [HEADERS.retryAfter]: String(this.retryAfter) });
    }
    if (path.startsWith(PATHS.legacyPrefix) || req.headers[HEADERS.protocol.toLowerCase()] !== String(this.opts.protocol ?? VERSION)) {
      return fail('unsupported_version');
    }
    const token = (req.headers.authorization ?? '').replace(/^Bearer /, '');
    const refused = this.opts.auth?.(token);
    if (refused) return fail(refused);
    if (this.revoked.has(subjectOfToken(token))) return fail('revoked');
    const prefix = await replicaPrefix(subjectOfToken(token));
    const ok = (/** @type {Uint8Array} */ b) => {
      head(200);
      res.end(b);
    };
    try {
      switch (path) {
        case PATHS.hello:
          decode(body, { canonical: false });
          return ok(encode(this.helloAnswer(prefix)));
        case PATHS.push: {
          this.pushSizes.push(body.length);
          if (body.length > (this.opts.maxBody ?? DEFAULTS.maxBodyBytes)) return fail('too_large');
          // {1: replica, 2: [change...], 7: table?, 8: base?}, or with
          // 9: the device part under the token subject's prefix in place
          // of 1: compact stamps (docs/protocol.md) are read against the
          // pushing replica and keys 7 and 8.
          const item = items(body);
          const rr = item(1);
          const dr = item(9);
          if (!(rr || dr) || (rr && dr)) throw new Error('bad push');
          const replica = rr ? rr.text() : prefix + REPLICA.separator + /** @type {Reader} */ (dr).text();
          this.pushReplicas.push(rr ? { replica } : { replica, device: true });
          const out = this.push(item, replica, prefix, undefined);
          if (typeof out === 'string') return fail(out);
          if (this.dropPushAnswers > 0) {
            this.dropPushAnswers--;
            return fail('unavailable');
          }
          return ok(encode(this.env([[1, out]])));
        }
        case PATHS.pull: {
          const m = decode(body, { canonical: false });
          this.pulls.push(m);
          const c = m.get(1);
          if (this.forbidden.has(c)) return fail('forbidden');
          const refusedPull = this.refusePull(c);
          if (refusedPull) return fail(refusedPull);
          this.versionOf(c, m.get(8));
          const maxPull = this.opts.maxPull || DEFAULTS.maxPullRecords;
          const limit = m.get(3) || maxPull;
          if (limit > maxPull) return fail('too_large');
          if (this.opts.pageTooLargeOver !== undefined && limit > this.opts.pageTooLargeOver) return fail('too_large');
          const after = seqOf(m.get(2), this.gen);
          if (after === null) return fail('invalid');
          if (this.leaseExpired(c, m.get(2), m.get(5))) {
            const reset = new Map([[1, 'lease_expired'], [2, 'the test expired the lease']]);
            return ok(encode(this.env([[1, []], [2, new Uint8Array(0)], [3, false], [4, reset]])));
          }
          if (after < 0 || after > this.coll(c).seq) {
            const reset = new Map([[1, this.resetReason], [2, 'the test wiped the store']]);
            return ok(encode(this.env([[1, []], [2, new Uint8Array(0)], [3, false], [4, reset]])));
          }
          const scope = m.has(4) ? encode(m.get(4)) : undefined;
          const version = this.versionOf(c, m.get(8));
          const { page, next, more, leaves } = this.page(c, after, limit, { scope, prev: scopeOfCursor(m.get(2)), param: this.params(token) });
          return ok(this.pageBytes([], 1, page, [[2, next], [3, more], ...(leaves.length > 0 ? [[5, leaves]] : [])], { c, key: 6, version }));
        }
        case PATHS.restore: {
          const r = new Reader(body, { canonical: false });
          const keys = r.mapHead();
          if ((keys !== 2 && keys !== 3) || uint(r) !== 1) throw new Error('bad restore');
          const c = r.text();
          if (uint(r) !== 2) throw new Error('bad restore');
          const n = r.arrayHead();
          if (n > (this.opts.maxPush || DEFAULTS.maxPushChanges)) return fail('too_large');
          const items = [];
          for (let i = 0; i < n; i++) {
            if (r.arrayHead() !== 2) throw new Error('bad restore');
            const record = readRecord(r, undefined, receivedValue);
            const seal = r.item();
            if (!(seal instanceof Uint8Array)) throw new Error('bad restore');
            items.push({ record, seal });
          }
          let version = 0;
          if (keys === 3) {
            if (uint(r) !== 3) throw new Error('bad restore');
            version = uint(r);
          }
          r.end();
          if (this.forbidden.has(c)) return fail('forbidden');
          const v = this.versionOf(c, version);
          const whole = this.refuseRestore(items, c);
          if (whole) return fail(whole);
          this.restores.push(n);
          return ok(encode(this.env([[1, this.restore(c, items, v)]])));
        }
      }
      return fail('not_found');
    } catch (e) {
      const code = /** @type {any} */ (e).code;
      return fail(code === 'invalid' || code === 'schema_ahead' ? code : 'malformed');
    }
  }

  /**
   * Applies a push (HTTP or live) from its envelope's items: its results,
   * or the code refusing it whole.
   * @param {(k: number) => Reader|undefined} item
   * @param {string} replica the pushing replica, index 0 of the table
   * @param {string} prefix the replica prefix of the pusher's subject
   * @param {number|undefined} session a live push's session base
   * @returns {Map<number, unknown>[]|string}
   */
  push(item, replica, prefix, session) {
    const ar = item(2);
    if (!ar) throw new Error('bad push');
    const tr = item(7);
    const table = [];
    if (tr) for (let i = 0, n = tr.arrayHead(); i < n; i++) table.push(tr.text());
    const br = item(8);
    const cx = compactContext([replica, ...table], br ? uint(br) : session);
    const n = ar.arrayHead();
    if (n > (this.opts.maxPush || DEFAULTS.maxPushChanges)) return 'too_large';
    const refused = session !== undefined && this.refuseLivePush(n);
    if (refused) return refused;
    const changes = [];
    for (let i = 0; i < n; i++) changes.push(readChange(ar, cx, receivedValue));
    const whole = this.refusePush(changes);
    if (whole) return whole;
    /** @type {Map<string, number>} */
    let versions = new Map();
    const vr = item(3);
    if (vr) {
      const v = vr.item();
      versions = v instanceof Map ? v : new Map(Object.entries(/** @type {object} */ (v)));
    }
    if (this.failPush(changes)) return 'unavailable';
    this.pushVersions.push(versions);
    for (const [c, v] of versions) this.versionOf(c, v);
    this.pushes++;
    const results = this.apply(changes, prefix, versions);
    this.pushStatuses.push(results.map((m) => /** @type {number} */ (m.get(1))));
    return results;
  }

  /**
   * A live push (docs/protocol.md, "Pushing over a live session"): applied as an HTTP push
   * by the session's replica, its walls from key 8 or the session base;
   * answered pushed, with its results or the code refusing it whole.
   * @param {any} ws
   * @param {Uint8Array} body
   */
  livePush(ws, body) {
    this.livePushes.push(body);
    // Each push has a request id of its own (key 4), as an HTTP request has.
    const requestId = `fake-${++this.nextRequestId}`;
    const refuse = (/** @type {string} */ code) => ws.send(encode(this.env([[0, 'pushed'], [2, code], [3, 'test server says ' + code], [4, requestId]])));
    if (body.length > (this.opts.maxBody ?? DEFAULTS.maxBodyBytes)) return refuse('too_large');
    let out;
    try {
      const item = items(body);
      if (item(1) || item(9)) throw new Error('a live push names no replica');
      this.pushReplicas.push({ replica: ws.replica, live: true });
      out = this.push(item, ws.replica, ws.prefix, ws.base);
    } catch (e) {
      const code = /** @type {any} */ (e).code;
      return refuse(code === 'invalid' || code === 'schema_ahead' ? code : 'malformed');
    }
    if (typeof out === 'string') return refuse(out);
    if (this.dropPushAnswers > 0) {
      // Applied, and the session lost before its answer.
      this.dropPushAnswers--;
      return ws.terminate();
    }
    if (this.holdPushAnswers > 0) {
      // Applied, and never answered: the session goes on.
      this.holdPushAnswers--;
      return;
    }
    ws.send(encode(this.env([[0, 'pushed'], [1, out], [4, requestId]])));
  }

  /**
   * The parameters of a token's scopes: sub and its claims.
   * @param {string} token
   * @returns {(name: string) => unknown}
   */
  params(token) {
    const claims = claimsOf(token);
    return (name) => (name === 'sub' ? subjectOfToken(token) : name.startsWith('claims.') ? claims[name.slice(7)] : undefined);
  }

  /** @param {import('ws').WebSocket} ws */
  live(ws) {
    this.sockets.add(ws);
    /** @type {Map<string, number>} collection -> seq of its cursor */
    const subs = new Map();
    /** @type {any} */ (ws).subs = subs;
    /** @type {any} */ (ws).leases = new Map(); // collection -> the replica its sub named
    /** @type {any} */ (ws).versions = new Map(); // collection -> the schema version its sub named
    let hello = false;
    let requestIds = 0;
    const send = (/** @type {Uint8Array} */ b) => ws.send(b);
    const error = (/** @type {string} */ code, /** @type {string} */ message, /** @type {string|undefined} */ collection = undefined) => {
      /** @type {[number, unknown][]} */
      const e = [[0, 'error'], [1, code], [2, message]];
      if (collection) e.push([3, collection]);
      e.push([4, `fake-live-${++requestIds}`]);
      send(encode(this.env(e)));
    };
    ws.on('close', () => this.sockets.delete(ws));
    ws.on('message', (data) => {
      const m = decode(new Uint8Array(/** @type {Buffer} */ (data)), { canonical: false });
      this.received.push(m);
      this.receivedAt.push(Date.now());
      const type = m.get(0);
      if (!hello) {
        if (type !== 'hello') return ws.close(1008);
        if (m.get(1) !== (this.opts.protocol ?? VERSION)) {
          error('unsupported_version', 'speak protocol ' + (this.opts.protocol ?? VERSION));
          return ws.close(1002);
        }
        const refused = this.opts.liveRefusal?.() || this.opts.auth?.(m.get(3)) || (this.revoked.has(subjectOfToken(m.get(3))) ? 'revoked' : null);
        if (refused) {
          error(refused, 'refused');
          return ws.close(refused === 'unavailable' ? 1013 : 1008);
        }
        hello = true;
        /** @type {any} */ (ws).token = m.get(3);
        /** @type {any} */ (ws).subject = subjectOfToken(m.get(3));
        /** @type {any} */ (ws).param = this.params(m.get(3));
        /** @type {any} */ (ws).scopes = new Map();
        /** @type {any} */ (ws).replica = m.get(2);
        replicaPrefix(subjectOfToken(m.get(3))).then((prefix) => {
          const welcome = this.helloAnswer(prefix);
          /** @type {any} */ (ws).prefix = prefix;
          /** @type {any} */ (ws).base = welcome.get(2);
          send(encode(this.env([[0, 'welcome'], [1, welcome]])));
          if (this.newer) send(encode(this.env([[0, 'bulletin'], [1, 'a message type from the future']])));
        });
        return;
      }
      switch (type) {
        case 'sub': {
          const c = m.get(1);
          // A sub ends the collection's subscription first, taken or
          // refused, as the real server does (docs/protocol.md, section 9).
          subs.delete(c);
          if (this.forbidden.has(c)) {
            error('forbidden', 'not yours', c);
            break;
          }
          const refusedSub = this.refuseSub(c);
          if (refusedSub) {
            error(refusedSub, 'refused by test', c);
            break;
          }
          const after = seqOf(m.get(2), this.gen);
          if (after === null) {
            error('invalid', 'unreadable cursor', c);
            break;
          }
          if (this.leaseExpired(c, m.get(2), m.get(5))) {
            send(encode(this.env([[0, 'reset'], [1, c], [2, 'lease_expired'], [3, 'the test expired the lease']])));
            break;
          }
          if (after < 0 || after > this.coll(c).seq) {
            send(encode(this.env([[0, 'reset'], [1, c], [2, this.resetReason], [3, 'the test wiped the store']])));
            break;
          }
          let version;
          try {
            version = this.versionOf(c, m.get(8));
          } catch (e) {
            error(/** @type {any} */ (e).code, /** @type {any} */ (e).message, c);
            break;
          }
          /** @type {any} */ (ws).versions.set(c, version);
          subs.set(c, after);
          /** @type {any} */ (ws).leases.set(c, m.get(5));
          /** @type {any} */ (ws).scopes.set(c, { scope: m.has(3) ? encode(m.get(3)) : undefined, prev: scopeOfCursor(m.get(2)) });
          this.stream(ws, c, true);
          break;
        }
        case 'unsub':
          subs.delete(m.get(1));
          break;
        case 'push':
          this.livePush(ws, new Uint8Array(/** @type {Buffer} */ (data)));
          break;
        case 'ping': {
          if (this.ignorePings) break;
          const pong = encode(this.env([[0, 'pong'], [1, m.get(1)]]));
          const ms = this.pongDelay(this.received.filter((r) => r.get(0) === 'ping').length);
          if (ms > 0) setTimeout(() => send(pong), ms);
          else send(pong);
          break;
        }
        default:
          error('malformed', `unknown message type ${JSON.stringify(type)}`);
      }
    });
  }

  /**
   * Sends what follows the subscription's cursor.
   * @param {any} ws
   * @param {string} c
   * @param {boolean} [first] the first page after a sub goes out even when empty
   */
  stream(ws, c, first = false) {
    const subs = ws.subs;
    for (;;) {
      const after = subs.get(c);
      if (after === undefined) return;
      const sc = ws.scopes.get(c) ?? {};
      const { page, next, seq, more, leaves } = this.page(c, after, 100, { ...sc, param: ws.param });
      sc.prev = sc.scope; // the transition, if any, is over
      if (page.length === 0 && leaves.length === 0 && !first) return;
      first = false;
      ws.send(this.pageBytes([[0, 'changes'], [1, c]], 2, page, [[3, next], [4, more], ...(leaves.length > 0 ? [[6, leaves]] : [])], { c, key: 5, version: ws.versions.get(c) }));
      subs.set(c, seq);
      if (!more) return;
    }
  }

  /** @param {string} c */
  notify(c) {
    for (const ws of this.sockets) if (ws.subs?.has(c)) this.stream(ws, c);
  }

  /** Sends resync for c to every subscriber and stops streaming it. */
  resync(/** @type {string} */ c) {
    for (const ws of this.sockets) {
      if (ws.subs?.has(c)) {
        ws.subs.delete(c);
        ws.send(encode(this.env([[0, 'resync'], [1, c]])));
      }
    }
  }

  /**
   * Ends every live session whose hello carried token with an error of
   * code (a refusal the token decides: its id put on the deny list, say).
   * @param {string} token
   * @param {string} code
   */
  endLiveOf(token, code) {
    for (const ws of this.sockets) {
      if (/** @type {any} */ (ws).token !== token) continue;
      ws.send(encode(this.env([[0, 'error'], [1, code], [2, 'refused to this token'], [4, 'fake-token']])));
      ws.close(1008);
    }
  }

  /** Tells every live client its token expired and closes the socket. */
  expireLive() {
    for (const ws of this.sockets) {
      ws.send(encode(this.env([[0, 'error'], [1, 'token_expired'], [2, 'token expired'], [4, 'fake-expired']])));
      ws.close(1008);
    }
  }

  /** Closes every live socket (a server restart, a network blip). */
  dropSockets() {
    for (const ws of this.sockets) ws.terminate();
  }
}
