// An answer over the client's own cap (MAX_ANSWER_BYTES) to a request of
// many items: the answer lists one result per item, so a smaller batch has
// a smaller answer. A push, as a heal's give-back (heal.js, batches),
// halves its batch until the answer fits; none of its changes is refused
// for it (only the server's refusal counts: docs/protocol.md, section 5),
// and a single change whose answer is still over the cap is an error. A
// live push's answer over the cap ends the session: the push goes again
// over HTTP at once (docs/protocol.md, section 9). The cap bounds what the
// client reads, whatever the answer's headers say: an answer sent chunked,
// or whose Content-Length is smaller than the body it decodes to, is read
// only up to the cap, and handled as an answer whose Content-Length is over
// it.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FakeServer } from './helpers/server.js';
import { openClient, until } from './helpers/util.js';
import WebSocket from 'ws';
import http from 'node:http';
import { once } from 'node:events';
import { createGzip } from 'node:zlib';
import { MAX_ANSWER_BYTES, parsePullAnswer, parsePushAnswer, parseServerMessage } from '../src/protocol.js';
import { CONTENT_TYPE, HEADERS, PATHS, TIMINGS } from '../src/constants.js';

const WAIT = 10_000;

/**
 * A fetch whose push answers of more than most results say they are over
 * the client's cap (Content-Length), as an answer that grows with its
 * results would be.
 * @param {number} most
 */
function capped(most) {
  const s = { over: 0 };
  /** @type {typeof fetch} */
  const f = async (input, init) => {
    const res = await fetch(input, init);
    if (!String(input).endsWith(PATHS.push) || !res.ok) return res;
    const body = new Uint8Array(await res.arrayBuffer());
    const headers = new Headers(res.headers);
    if (parsePushAnswer(body).length > most) {
      s.over++;
      headers.set('Content-Length', String(MAX_ANSWER_BYTES + 1));
    }
    return new Response(body, { status: res.status, headers });
  };
  return { fetch: f, s };
}

/**
 * Writes seven records offline in a client of url that fetches with f,
 * then lets it push them: the outbox drains within wait, every record is
 * on server, and nothing is refused or rejected.
 * @param {any} t
 * @param {FakeServer} server
 * @param {string} url
 * @param {typeof fetch} f
 * @param {number} wait
 */
async function pushSeven(t, server, url, f, wait) {
  const a = await openClient({ url, name: 'a', collections: ['todos'], WebSocket: null, fetch: f });
  t.after(() => a.close());
  /** @type {any[]} */
  const refused = [];
  a.on('refused', (r) => refused.push(r));
  a.on('error', () => {});
  await a.whenSynced();
  await a.pause();
  const ids = ['a', 'b', 'c', 'd', 'e', 'f', 'g'];
  for (const id of ids) await a.collection('todos').put(id, { n: 1 });
  a.resume();
  await until(() => a.status.pending === 0, 'the outbox drained', wait);
  for (const id of ids) assert.ok(server.coll('todos').byId.has(id), `${id} on the server`);
  assert.deepEqual(refused, []);
  assert.equal(a.status.rejected, 0);
}

test('a push whose answer is over the client cap is halved until the answers fit: the outbox drains, nothing is refused', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const cap = capped(2);
  await pushSeven(t, server, server.url, cap.fetch, WAIT);
  assert.ok(cap.s.over > 0, 'an answer was over the cap');
});

test('a single change whose push answer is over the client cap is not refused: it stays, and the error is reported', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const cap = capped(0);
  const a = await openClient({ url: server.url, name: 'a', collections: ['todos'], WebSocket: null, fetch: cap.fetch });
  t.after(() => a.close());
  /** @type {any[]} */
  const errors = [];
  a.on('error', (e) => errors.push(e));
  await a.whenSynced();
  await a.collection('todos').put('a', { n: 1 });
  await until(() => errors.filter((e) => e.code === 'too_large').length >= 2, 'too_large reported again and again', WAIT);
  assert.equal(a.status.pending, 1, 'kept in the outbox');
  assert.equal(a.status.rejected, 0);
});

/**
 * A WebSocket whose pushed messages of more than most results arrive over
 * the client's cap, as an answer that grows with its results would.
 * @param {number} most
 */
function cappedWebSocket(most) {
  const s = { over: 0 };
  class CappedWebSocket extends WebSocket {
    /** @param {any} fn */
    set onmessage(fn) {
      super.onmessage =
        typeof fn === 'function'
          ? (/** @type {MessageEvent} */ ev) => {
              const m = typeof ev.data === 'string' ? null : parseServerMessage(new Uint8Array(ev.data));
              if (m?.type === 'pushed' && (m.results?.length ?? 0) > most) {
                s.over++;
                return fn({ data: new ArrayBuffer(MAX_ANSWER_BYTES + 1) });
              }
              return fn(ev);
            }
          : fn;
    }
    get onmessage() {
      return super.onmessage;
    }
  }
  return { WebSocket: CappedWebSocket, s };
}

test('a live push whose answer is over the client cap goes again over HTTP at once, halved until the answers fit: the outbox drains within the push timeout', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const cap = capped(2);
  const ws = cappedWebSocket(2);
  const a = await openClient({ url: server.url, name: 'a', collections: ['todos'], WebSocket: ws.WebSocket, fetch: cap.fetch });
  t.after(() => a.close());
  /** @type {any[]} */
  const refused = [];
  a.on('refused', (r) => refused.push(r));
  /** @type {any[]} */
  const errors = [];
  a.on('error', (e) => errors.push(e));
  await until(() => /** @type {any} */ (a).syncer?.live, 'live', WAIT);
  const ids = ['a', 'b', 'c', 'd', 'e', 'f', 'g'];
  const t0 = Date.now();
  await a.collection('todos').putMany(ids.map((id) => ({ id, n: 1 })));
  await until(() => a.status.pending === 0, 'the outbox drained', WAIT);
  const took = Date.now() - t0;
  assert.ok(took < TIMINGS.clientPushTimeoutMs / 2, `drained in ${took} ms, not after the push timeout`);
  assert.ok(ws.s.over > 0, 'a live answer was over the cap');
  assert.ok(server.pushReplicas[0].live, 'the first push went live');
  assert.ok(cap.s.over > 0, 'pushed again over HTTP, where an answer over the cap halved the batch');
  for (const id of ids) assert.ok(server.coll('todos').byId.has(id), `${id} on the server`);
  assert.equal(server.coll('todos').seq, ids.length, 'applied once');
  assert.deepEqual(refused, []);
  assert.equal(a.status.rejected, 0);
  assert.deepEqual(
    errors.filter((e) => /no pushed answer/.test(e.message)),
    [],
  );
});

/** How much an over-cap answer of the proxy below holds: more than the cap. */
const OVER_BYTES = MAX_ANSWER_BYTES + (16 << 20);
/** How far past the cap the client may read before it stops: a few chunks. */
const READ_SLACK = 1 << 20;

/** @type {Promise<Buffer>|null} */
let gzipped = null;
/** OVER_BYTES of zeros, gzipped: a small Content-Length for a large body. */
function overGzipped() {
  gzipped ??= (async () => {
    const gz = createGzip({ level: 9 });
    /** @type {Buffer[]} */
    const parts = [];
    gz.on('data', (d) => parts.push(d));
    const zeros = Buffer.alloc(1 << 20);
    for (let n = 0; n < OVER_BYTES; n += zeros.length) if (!gz.write(zeros)) await once(gz, 'drain');
    gz.end();
    await once(gz, 'end');
    return Buffer.concat(parts);
  })();
  return gzipped;
}

/**
 * A proxy in front of server whose answers to path of more than most items
 * (results or records) are over the client's cap without a Content-Length
 * that says so: sent chunked (mode 'chunked', OVER_BYTES of zeros, as fast
 * as the client reads them), or gzipped with the Content-Length of the
 * compressed bytes (mode 'gzip'). Its fetch is the client's: it counts the
 * bytes the client reads of each such answer, and whether it cancelled it.
 * @param {FakeServer} server
 * @param {string} path
 * @param {number} most
 * @param {'chunked'|'gzip'} mode
 */
async function overProxy(server, path, most, mode) {
  const s = { /** @type {{read: number, cancelled: boolean}[]} */ over: [], /** bytes the proxy sent of its chunked answers */ sent: 0 };
  const items = (/** @type {Uint8Array} */ b) => (path === PATHS.push ? parsePushAnswer(b).length : parsePullAnswer(b).records.length);
  // A request still on its way when a test ends (the client polls) meets
  // a server stopped: its socket is destroyed, not left an unhandled
  // rejection that fails the file after the test.
  const proxy = http.createServer((req, res) => void serve(req, res).catch(() => res.destroy()));
  /**
   * @param {http.IncomingMessage} req
   * @param {http.ServerResponse} res
   */
  async function serve(req, res) {
    /** @type {Buffer[]} */
    const chunks = [];
    for await (const ch of req) chunks.push(ch);
    /** @type {Record<string, string>} */
    const headers = {};
    for (const h of ['content-type', 'accept', 'authorization', HEADERS.protocol.toLowerCase()]) {
      const v = req.headers[h];
      if (typeof v === 'string') headers[h] = v;
    }
    const up = await fetch(server.url + req.url, { method: req.method, headers, body: req.method === 'POST' ? Buffer.concat(chunks) : undefined });
    const body = new Uint8Array(await up.arrayBuffer());
    if (!(req.url === path && up.ok && items(body) > most)) {
      res.writeHead(up.status, Object.fromEntries([...up.headers].filter(([k]) => !['content-length', 'content-encoding', 'transfer-encoding', 'connection', 'keep-alive'].includes(k))));
      res.end(body);
      return;
    }
    if (mode === 'gzip') {
      const gz = await overGzipped();
      res.writeHead(200, { 'Content-Type': CONTENT_TYPE, 'Content-Encoding': 'gzip', 'Content-Length': String(gz.length), 'X-Over': '1' });
      res.end(gz);
      return;
    }
    res.writeHead(200, { 'Content-Type': CONTENT_TYPE, 'X-Over': '1' });
    const zeros = Buffer.alloc(1 << 20);
    for (let n = 0; n < OVER_BYTES && !res.destroyed; n += zeros.length) {
      s.sent += zeros.length;
      if (!res.write(zeros)) await Promise.race([once(res, 'drain'), once(res, 'close')]);
    }
    res.end();
  }
  await new Promise((r) => proxy.listen(0, '127.0.0.1', () => r(undefined)));
  const url = `http://127.0.0.1:${/** @type {any} */ (proxy.address()).port}`;
  /** @type {typeof fetch} */
  const f = async (input, init) => {
    const res = await fetch(input, init);
    if (res.headers.get('X-Over') !== '1' || !res.body) return res;
    const o = { read: 0, cancelled: false };
    s.over.push(o);
    const reader = res.body.getReader();
    const body = new ReadableStream(
      {
        async pull(c) {
          const { done, value } = await reader.read();
          if (done) return c.close();
          o.read += value.length;
          c.enqueue(value);
        },
        cancel(why) {
          o.cancelled = true;
          return reader.cancel(why);
        },
      },
      { highWaterMark: 0 },
    );
    return new Response(body, { status: res.status, headers: res.headers });
  };
  const stop = async () => {
    proxy.closeAllConnections();
    await new Promise((r) => proxy.close(() => r(undefined)));
  };
  return { url, fetch: f, s, stop };
}

/**
 * Each over-cap answer was read no further than the cap and cancelled.
 * @param {{read: number, cancelled: boolean}[]} over
 */
function readToTheCapOnly(over) {
  assert.ok(over.length > 0, 'an answer was over the cap');
  for (const o of over) {
    assert.ok(o.read <= MAX_ANSWER_BYTES + READ_SLACK, `read ${o.read} bytes of an answer over the cap, want at most ${MAX_ANSWER_BYTES + READ_SLACK}`);
    assert.ok(o.cancelled, 'the answer over the cap was cancelled');
  }
}

for (const mode of /** @type {const} */ (['chunked', 'gzip'])) {
  const how = mode === 'chunked' ? 'sent chunked, without a Content-Length' : 'with a Content-Length smaller than its body (gzip)';
  test(`a push answer over the client cap ${how} is read only up to the cap, and halved as an over-cap Content-Length is`, async (t) => {
    const server = await new FakeServer().start();
    t.after(() => server.stop());
    const proxy = await overProxy(server, PATHS.push, 2, mode);
    t.after(() => proxy.stop());
    await pushSeven(t, server, proxy.url, proxy.fetch, 60_000);
    readToTheCapOnly(proxy.s.over);
    if (mode === 'chunked') assert.ok(proxy.s.sent < proxy.s.over.length * OVER_BYTES, `the proxy sent ${proxy.s.sent} bytes: the client stopped the answers`);
  });

  test(`a pull page over the client cap ${how} is read only up to the cap, and asked again in fewer records`, async (t) => {
    const server = await new FakeServer({ maxPull: 8 }).start();
    t.after(() => server.stop());
    const b = await openClient({ url: server.url, name: 'b', WebSocket: null });
    for (let i = 0; i < 12; i++) await b.collection('big').put('r' + i, { i });
    await until(() => b.status.pending === 0, 'b pushed');
    await b.close();
    const proxy = await overProxy(server, PATHS.pull, 3, mode);
    t.after(() => proxy.stop());
    const a = await openClient({ url: proxy.url, name: 'a', WebSocket: null, collections: ['big'], fetch: proxy.fetch });
    t.after(() => a.close());
    a.on('error', () => {});
    await a.sync();
    assert.equal((await a.collection('big').list()).length, 12);
    readToTheCapOnly(proxy.s.over);
  });
}
