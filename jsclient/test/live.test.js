// The live session (live.js) on its own against the protocol server: it
// pings when it has heard nothing for the ping interval, takes a session
// silent for the silence timeout for dead, and passes over messages of
// types it does not know.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FakeServer } from './helpers/server.js';
import { WebSocket, until } from './helpers/util.js';
import { LiveSession } from '../src/live.js';
import { encodeLivePush } from '../src/protocol.js';
import { TIMINGS } from '../src/constants.js';
import { encode } from '../src/cbor.js';

/**
 * A session with short timings; resolves to the session, its messages and
 * how its run ended.
 * @param {FakeServer} server
 * @param {{pingInterval?: number, silenceTimeout?: number, pushTimeout?: number}} timings
 */
function session(server, timings) {
  /** @type {any[]} */
  const messages = [];
  /** @type {number|null} when the welcome came */
  let welcomed = null;
  const s = new LiveSession({
    url: /** @type {string} */ (server.url),
    WebSocket,
    stopped: () => false,
    replica: () => 'live-test',
    token: async () => '',
    serial: (fn) => fn(),
    onMessage: async (m, sess) => {
      messages.push(m);
      if (m.type === 'welcome') {
        welcomed ??= Date.now();
        sess.accept();
      }
    },
    pull: async () => {},
    onRefused: () => {},
    onClose: () => {},
    ...timings,
  });
  /** @type {{error: any, at: number}|null} */
  let ended = null;
  const started = Date.now();
  const run = s.run().then(
    () => (ended = { error: null, at: Date.now() }),
    (e) => (ended = { error: e, at: Date.now() }),
  );
  return { s, messages, run, started, ended: () => ended, welcomed: () => welcomed };
}

const pings = (/** @type {FakeServer} */ server) => server.received.filter((m) => m.get(0) === 'ping').length;

test('the default timings are the protocol’s', () => {
  assert.equal(TIMINGS.pingIntervalMs, 20_000);
  assert.equal(TIMINGS.clientSilenceTimeoutMs, 40_000);
  assert.equal(TIMINGS.clientPushTimeoutMs, 60_000);
});

test('a push left unanswered on a session that answers pings ends the session after the push timeout', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const x = session(server, { pingInterval: 50, silenceTimeout: 5_000, pushTimeout: 400 });
  t.after(() => x.s.close());
  await until(() => x.s.live, 'welcomed');
  server.holdPushAnswers = 1;
  const sent = Date.now();
  const push = x.s.push(encodeLivePush('live-test', [], new Map(), /** @type {any} */ (x.s.welcome).serverTime));
  await assert.rejects(push, (e) => /** @type {any} */ (e).code === 'network');
  assert.ok(Date.now() - sent >= 400, `rejected after ${Date.now() - sent} ms`);
  assert.equal(x.s.live, false, 'the session is no longer used');
  await x.run;
  assert.equal(/** @type {any} */ (x.ended())?.error?.code, 'network', 'ended as a dead session (the loop dials again)');
  assert.ok(pings(server) >= 1, 'the server answered pings meanwhile');
});

test('a quiet session that answers pings stays open; a ping goes out only after silence', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  // The silence timeout is far above the ping interval, so that a loaded
  // machine's late timers cannot pass for silence; the session is watched
  // for well past it.
  // When the server sent the welcome: the session heard it later, and
  // its silence counts from then.
  let welcomeSent = 0;
  const helloAnswer = server.helloAnswer.bind(server);
  server.helloAnswer = (/** @type {string} */ prefix) => {
    welcomeSent = Date.now();
    return helloAnswer(prefix);
  };
  const x = session(server, { pingInterval: 100, silenceTimeout: 1_000 });
  t.after(() => x.s.close());
  await until(() => x.s.live, 'welcomed');
  await new Promise((r) => setTimeout(r, 2_500));
  assert.equal(x.ended(), null, 'still open: every ping was answered');
  // When each ping came, as the server heard it: a loaded machine may
  // let the test look long after the welcome, while the session's timers
  // run on time. Each ping follows 100 ms of silence at the earliest
  // (since the welcome for the first, since the pong of the one before
  // it, which came after that one), and enough of them span the silence.
  const at = server.receivedAt.filter((_, i) => server.received[i].get(0) === 'ping');
  assert.ok(at.length >= 2, `${at.length} pings in 2.5 s`);
  assert.ok(at[0] - welcomeSent >= 95, `no ping while the welcome is fresh: the first came ${at[0] - welcomeSent} ms after it`);
  const gaps = at.slice(1).map((a, i) => a - at[i]);
  assert.ok(
    gaps.every((g) => g >= 95),
    `one ping per 100 ms of silence at most: pings ${gaps.join(', ')} ms apart`,
  );
});

test('a ping answered slower than the one before it is given the silence timeout, not what the timer had left', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  // The first pong comes at once, every later one 300 ms after its ping:
  // each well within the silence timeout of the silence it answers.
  server.pongDelay = (n) => (n === 1 ? 0 : 300);
  const x = session(server, { pingInterval: 100, silenceTimeout: 1_000 });
  t.after(() => x.s.close());
  await until(() => x.s.live, 'welcomed');
  await until(() => pings(server) >= 3 || x.ended() !== null, 'three pings', 5_000);
  assert.equal(x.ended(), null, 'still open: every ping was answered');
});

test('a session silent for the silence timeout is dropped, after one ping', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  server.ignorePings = true;
  // When the session's timer (its watch: live.js) is set to fire: a
  // loaded machine fires it late, the session decides when.
  /** @type {number[]} */
  const due = [];
  const set = globalThis.setTimeout;
  globalThis.setTimeout = /** @type {any} */ (
    (/** @type {any} */ fn, /** @type {number} */ ms, /** @type {any[]} */ ...args) => {
      if (fn?.name === 'watch') due.push(Date.now() + ms);
      return set(fn, ms, ...args);
    }
  );
  t.after(() => {
    globalThis.setTimeout = set;
  });
  const x = session(server, { pingInterval: 100, silenceTimeout: 400 });
  t.after(() => x.s.close());
  await until(() => x.s.live, 'welcomed');
  // Silent since the welcome came (the session's last message), which
  // the session heard before its onMessage saw it.
  const welcomed = /** @type {number} */ (x.welcomed());
  await until(() => x.ended() !== null, 'the session to end', 3000);
  const end = /** @type {{error: any, at: number}} */ (x.ended());
  assert.equal(end.error?.code, 'network');
  // Not before the silence timeout, as the session measured it.
  const silent = Number(/silent for (\d+) ms/.exec(end.error.message)?.[1]);
  assert.ok(silent >= 400, `dropped after ${silent} ms of silence (${end.error.message})`);
  // At it: the timer that ended the session was set for the end of the
  // silence (a few ms of clock skew between its reading and the test's).
  const last = /** @type {number} */ (due.at(-1));
  assert.ok(last - welcomed <= 400 + 5, `the timer that ended the session was set for ${last - welcomed} ms after the welcome`);
  assert.equal(pings(server), 1, 'one ping per silence');
});

test('messages of unknown types are passed over; the session goes on', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  server.newer = true;
  const x = session(server, { pingInterval: 60_000, silenceTimeout: 120_000 });
  t.after(() => x.s.close());
  await until(() => x.messages.some((m) => m.type === 'unknown'), 'the unknown message');
  assert.deepEqual(
    x.messages.map((m) => m.type),
    ['welcome', 'unknown'],
  );
  assert.equal(x.messages[1].name, 'bulletin');
  assert.equal(x.ended(), null);
  assert.equal(x.s.live, true);
});

test('a token_expired frame whose turn comes after the socket closed still ends the session with it', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  /** @type {Promise<void>|null} sync work under way: the session's frames wait for it */
  let busy = null;
  const x = session(server, { serial: (/** @type {() => Promise<void>} */ fn) => (busy ? busy.then(fn) : fn()) });
  t.after(() => x.s.close());
  await until(() => x.s.live, 'welcomed');
  /** @type {() => void} */
  let done = () => {};
  busy = new Promise((resolve) => (done = resolve));
  server.expireLive(); // the error frame, then the close
  await until(() => x.s.ws === null, 'the socket closed');
  done();
  await x.run;
  assert.equal(/** @type {any} */ (x.ended())?.error?.code, 'token_expired', 'ended by the refusal, not as a session that closed on its own');
});

test('a second welcome on a session is a protocol error of the server: the session ends, its push base kept', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const x = session(server, { pingInterval: 60_000, silenceTimeout: 120_000 });
  t.after(() => x.s.close());
  await until(() => x.s.live, 'welcomed');
  const base = /** @type {any} */ (x.s.welcome).serverTime;
  // A welcome of a later server time: taken, it would move the base the
  // session's pushes write their walls from (section 3, "Compact
  // stamps"), while the server reads them from the first one's.
  const again = server.helloAnswer();
  again.set(2, base + 60_000);
  for (const ws of server.sockets) ws.send(encode(server.env([[0, 'welcome'], [1, again]])));
  await until(() => x.ended() !== null || /** @type {any} */ (x.s.welcome).serverTime !== base, 'the second welcome handled');
  assert.equal(/** @type {any} */ (x.s.welcome).serverTime, base, 'the push base is the first welcome\'s');
  await x.run;
  assert.equal(/** @type {any} */ (x.ended())?.error?.code, 'malformed', 'ended as by a message it cannot read');
  assert.equal(x.messages.filter((m) => m.type === 'welcome').length, 1, 'the Syncer took one welcome');
  assert.equal(x.s.live, false);
});
