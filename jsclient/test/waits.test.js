// The sync loop's waits and a push's delay: a push's delay that begins
// while the loop waits leaves the loop's wait wakeable, and stop() ends
// both.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Syncer } from '../src/sync.js';

/** A Syncer whose waits alone are used (nothing is started). */
const syncer = () => new Syncer(/** @type {any} */ ({ url: 'http://127.0.0.1:1', store: null, fetch: globalThis.fetch }));

/** Whether p settles within ms. */
const settlesWithin = (p, ms) =>
  Promise.race([p.then(() => true), new Promise((r) => setTimeout(() => r(false), ms))]);

test("a push's delay that begins and ends while the loop waits leaves the loop's wait wakeable and what it waits for", async () => {
  const s = syncer();
  const loop = s.wait(60_000, 'offline');
  const push = s.wait(20, 'push');
  assert.equal(s.waiting, 'offline', 'the loop waits for the network while a push is delayed');
  await push;
  assert.equal(s.waiting, 'offline', "the loop still waits for the network once the push's delay ended");
  s.wake?.(); // the 'online' event
  assert.ok(await settlesWithin(loop, 500), "the online event wakes the loop's wait after a push's delay ended in it");
});

test("stop() ends a push's delay and the loop's wait alike, whichever began first", async () => {
  for (const order of [['halted', 'push'], ['push', 'halted']]) {
    const s = syncer();
    const waits = order.map((why) => s.wait(why === 'push' ? 60_000 : Infinity, /** @type {any} */ (why)));
    assert.ok(await settlesWithin(s.stop(), 500), `${order.join(' then ')}: stop() returns`);
    for (const [i, p] of waits.entries()) assert.ok(await settlesWithin(p, 500), `${order.join(' then ')}: the ${order[i]} wait ends at stop()`);
  }
});
