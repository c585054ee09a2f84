// A small in-memory implementation of the v1 protocol's server side, built
// on the client's own record code, for tests that need a server without Go.
// It follows docs/protocol.md; tests that can run the real Go server do so
// in server-go.test.js.

import http from 'node:http';
import { WebSocketServer } from 'ws';
import { encode, decode, Writer } from '../../src/cbor.js';
import { decodeChanges, mergeInto, emptyRecord, writeRecord, cloneRecord, maxStamp, readChange } from '../../src/record.js';
import { Reader } from '../../src/cbor.js';

/**
 * @typedef {object} FakeServerOptions
 * @property {(token: string) => string|null} [auth] returns an error code to refuse the token, or null
 * @property {number} [maxPush]
 * @property {number} [maxPull]
 * @property {number} [timeOffset] added to the server clock (ms)
 * @property {number} [maxDrift]
 * @property {number} [pageTooLargeOver] answer pulls asking for more records with 413 (pages of big records)
 */

export class FakeServer {
  /** @param {FakeServerOptions} [opts] */
  constructor(opts = {}) {
    this.opts = opts;
    /** @type {Map<string, {seq: number, byId: Map<string, {seq: number, record: any}>}>} */
    this.colls = new Map();
    this.requests = [];
    /** Set to a number to make the next N push answers fail after applying. */
    this.dropPushAnswers = 0;
    /** Set to refuse changes to these ids. */
    this.refuseIds = new Set();
    /** @type {(ch: import('../../src/record.js').Change) => boolean} refuses changes it returns true for */
    this.refuse = () => false;
    /** @type {Set<any>} */
    this.sockets = new Set();
    this.pushes = 0;
    /** Collections the token may not read: pulls and subs are refused (forbidden). */
    this.forbidden = new Set();
    /** Live pings go unanswered while true (a socket whose peer is gone). */
    this.ignorePings = false;
    /** HTTP requests are answered 429 with Retry-After until this time (ms). */
    this.limitedUntil = 0;
    /** The Retry-After of those answers, in seconds. */
    this.retryAfter = 1;
    /** @type {number[]} when each rate-limited answer was sent */
    this.limited = [];
  }

  async start() {
    this.http = http.createServer((req, res) => this.handle(req, res));
    this.wss = new WebSocketServer({ server: this.http, path: '/v1/live' });
    this.wss.on('connection', (ws) => this.live(ws));
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

  helloAnswer() {
    return new Map([
      [1, 1],
      [2, this.now()],
      [3, 'fake-server'],
      [4, this.opts.maxPush ?? 1000],
      [5, this.opts.maxPull ?? 1000],
      [6, 4 << 20],
      [7, this.opts.maxDrift ?? 300000],
      [8, ''],
    ]);
  }

  /** @param {string} c */
  coll(c) {
    let x = this.colls.get(c);
    if (!x) this.colls.set(c, (x = { seq: 0, byId: new Map() }));
    return x;
  }

  /**
   * Applies changes; returns results.
   * @param {import('../../src/record.js').Change[]} changes
   */
  apply(changes) {
    const results = [];
    /** @type {Set<string>} */
    const touched = new Set();
    for (const ch of changes) {
      if (this.refuseIds.has(ch.record.id) || this.refuse(ch)) {
        results.push(new Map([[1, 2], [3, 'forbidden'], [4, 'refused by test']]));
        continue;
      }
      const top = maxStamp(ch.record);
      if (top.wall - this.now() > (this.opts.maxDrift ?? 300000)) {
        results.push(new Map([[1, 2], [3, 'clock_drift'], [4, 'too far ahead']]));
        continue;
      }
      const c = this.coll(ch.collection);
      const cur = c.byId.get(ch.record.id);
      const rec = cur ? cloneRecord(cur.record) : emptyRecord(ch.record.id);
      if (mergeInto(rec, ch.record) || !cur) {
        c.seq++;
        c.byId.set(rec.id, { seq: c.seq, record: rec });
        results.push(new Map([[1, 0], [2, c.seq]]));
        touched.add(ch.collection);
      } else {
        results.push(new Map([[1, 1], [2, cur.seq]]));
      }
    }
    for (const c of touched) this.notify(c);
    return results;
  }

  /**
   * Encodes a page of entries after cursor.
   * @param {string} c
   * @param {number} after
   * @param {number} limit
   */
  page(c, after, limit) {
    const x = this.coll(c);
    const entries = [...x.byId.values()].filter((e) => e.seq > after).sort((a, b) => a.seq - b.seq);
    const page = entries.slice(0, limit);
    const next = page.length > 0 ? page[page.length - 1].seq : after;
    return { page, next, more: entries.length > limit };
  }

  /** @param {Writer} w @param {{seq: number, record: any}[]} page */
  writeEntries(w, page) {
    w.head(4, page.length);
    for (const e of page) {
      w.head(4, 2);
      w.head(0, e.seq);
      writeRecord(w, e.record);
    }
  }

  /**
   * @param {http.IncomingMessage} req
   * @param {http.ServerResponse} res
   */
  async handle(req, res) {
    const chunks = [];
    for await (const ch of req) chunks.push(ch);
    const body = new Uint8Array(Buffer.concat(chunks));
    this.requests.push(req.url);
    const fail = (/** @type {number} */ status, /** @type {string} */ code) => {
      res.writeHead(status, { 'Content-Type': 'application/cbor', 'Convergo-Error': code });
      res.end(encode(new Map([[1, code], [2, 'test server says ' + code]])));
    };
    if (Date.now() < this.limitedUntil) {
      this.limited.push(Date.now());
      res.writeHead(429, { 'Content-Type': 'application/cbor', 'Convergo-Error': 'rate_limited', 'Retry-After': String(this.retryAfter) });
      res.end(encode(new Map([[1, 'rate_limited'], [2, 'test server says slow down']])));
      return;
    }
    const token = (req.headers.authorization ?? '').replace(/^Bearer /, '');
    const refused = this.opts.auth?.(token);
    if (refused) return fail(401, refused);
    if (req.headers['convergo-protocol'] !== '1') return fail(400, 'unsupported_version');
    const ok = (/** @type {Uint8Array} */ b) => {
      res.writeHead(200, { 'Content-Type': 'application/cbor' });
      res.end(b);
    };
    try {
      switch (req.url) {
        case '/v1/hello':
          decode(body, { canonical: false });
          return ok(encode(this.helloAnswer()));
        case '/v1/push': {
          const r = new Reader(body, { canonical: false });
          if (r.mapHead() !== 2 || r.uint() !== 1) throw new Error('bad push');
          r.text();
          if (r.uint() !== 2) throw new Error('bad push');
          const n = r.arrayHead();
          if (n > (this.opts.maxPush ?? 1000)) return fail(413, 'too_large');
          const changes = [];
          for (let i = 0; i < n; i++) changes.push(readChange(r));
          r.end();
          this.pushes++;
          const results = this.apply(changes);
          if (this.dropPushAnswers > 0) {
            this.dropPushAnswers--;
            return fail(503, 'unavailable');
          }
          return ok(encode(new Map([[1, results]])));
        }
        case '/v1/pull': {
          const m = decode(body, { canonical: false });
          if (this.forbidden.has(m.get(1))) return fail(403, 'forbidden');
          if (this.opts.pageTooLargeOver !== undefined && m.get(3) > this.opts.pageTooLargeOver) return fail(413, 'too_large');
          const { page, next, more } = this.page(m.get(1), m.get(2), Math.min(m.get(3), this.opts.maxPull ?? 1000));
          const w = new Writer();
          w.head(5, 3);
          w.byte(1);
          this.writeEntries(w, page);
          w.byte(2);
          w.head(0, next);
          w.byte(3);
          w.byte(more ? 0xf5 : 0xf4);
          return ok(w.bytes());
        }
      }
      return fail(404, 'not_found');
    } catch (e) {
      return fail(400, /** @type {any} */ (e).code ?? 'malformed');
    }
  }

  /** @param {import('ws').WebSocket} ws */
  live(ws) {
    this.sockets.add(ws);
    /** @type {Map<string, number>} collection -> cursor */
    const subs = new Map();
    /** @type {any} */ (ws).subs = subs;
    let hello = false;
    const send = (/** @type {Uint8Array} */ b) => ws.send(b);
    ws.on('close', () => this.sockets.delete(ws));
    ws.on('message', (data) => {
      const m = decode(new Uint8Array(/** @type {Buffer} */ (data)), { canonical: false });
      const type = m.get(0);
      if (!hello) {
        if (type !== 'hello') return ws.close();
        const refused = this.opts.auth?.(m.get(3));
        if (refused) {
          send(encode(new Map([[0, 'error'], [1, refused], [2, 'refused']])));
          return ws.close();
        }
        hello = true;
        send(encode(new Map([[0, 'welcome'], [1, this.helloAnswer()]])));
        return;
      }
      switch (type) {
        case 'sub':
          if (this.forbidden.has(m.get(1))) {
            send(encode(new Map([[0, 'error'], [1, 'forbidden'], [2, 'not yours'], [3, m.get(1)]])));
            break;
          }
          subs.set(m.get(1), m.get(2));
          this.stream(ws, m.get(1));
          break;
        case 'unsub':
          subs.delete(m.get(1));
          break;
        case 'ping':
          if (this.ignorePings) break;
          send(encode(new Map([[0, 'pong'], [1, m.get(1)]])));
          break;
        case 'push': {
          const w = new Writer();
          w.raw(encode(m.get(2)));
          const changes = decodeChanges(w.bytes());
          send(encode(new Map([[0, 'ack'], [1, m.get(1)], [2, this.apply(changes)]])));
          break;
        }
      }
    });
  }

  /** @param {any} ws @param {string} c */
  stream(ws, c) {
    const subs = ws.subs;
    for (;;) {
      const after = subs.get(c);
      if (after === undefined) return;
      const { page, next, more } = this.page(c, after, 100);
      if (page.length === 0) return;
      const w = new Writer();
      w.head(5, 5);
      w.byte(0);
      w.text('changes');
      w.byte(1);
      w.text(c);
      w.byte(2);
      this.writeEntries(w, page);
      w.byte(3);
      w.head(0, next);
      w.byte(4);
      w.byte(more ? 0xf5 : 0xf4);
      ws.send(w.bytes());
      subs.set(c, next);
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
        ws.send(encode(new Map([[0, 'resync'], [1, c]])));
      }
    }
  }

  /** Tells every live client its token expired and closes the socket. */
  expireLive() {
    for (const ws of this.sockets) {
      ws.send(encode(new Map([[0, 'error'], [1, 'token_expired'], [2, 'token expired']])));
      ws.close();
    }
  }

  /** Closes every live socket (a server restart, a network blip). */
  dropSockets() {
    for (const ws of this.sockets) ws.terminate();
  }
}
