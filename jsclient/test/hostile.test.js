// A server that is broken or hostile: whatever it sends, the client loses
// no local data, keeps its IndexedDB whole, and neither spins nor stops
// for ever. Each test names what the server does wrong.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FakeServer } from './helpers/server.js';
import { openClient, until, waitsOf } from './helpers/util.js';
import { TIMINGS } from '../src/constants.js';

/** The most a timer waits: setTimeout fires at once past it. */
const MAX_TIMER_MS = 2 ** 31 - 1;

for (const retryAfter of ['1000000000', 'Infinity']) {
  test(`a Retry-After of ${retryAfter} s is taken as the longest the client waits, not as "at once" nor "for ever"`, async (t) => {
    const server = await new FakeServer().start();
    t.after(() => server.stop());
    server.retryAfter = /** @type {any} */ (retryAfter);
    server.limitedUntil = Infinity;
    const waits = await waitsOf(t);
    const db = await openClient({ url: server.url, name: 'ra', collections: ['todos'], WebSocket: null });
    t.after(() => db.close());
    await db.collection('todos').put('x', { n: 1 });
    await until(() => waits.length > 0, 'the wait after the rate-limited attempt');
    const [wait] = waits;
    // A wait past the longest timer would fire at once (a request storm);
    // an endless one would never try again.
    assert.ok(wait <= TIMINGS.maxRetryAfterMs && wait <= MAX_TIMER_MS, `the client waits ${wait} ms, at most ${TIMINGS.maxRetryAfterMs}`);
    assert.ok(wait > TIMINGS.maxRetryAfterMs - 60_000, `the client waits ${wait} ms, about ${TIMINGS.maxRetryAfterMs}: the server asked for more`);
    await assert.rejects(db.sync(), (/** @type {any} */ e) => e.code === 'rate_limited' && e.retryAfter <= TIMINGS.maxRetryAfterMs / 1000);
    assert.equal(server.limited.length, 1, 'one request, rate-limited');
    assert.equal(db.status.pending, 1, 'the write waits in the outbox');
  });
}
