// The hybrid logical clock beyond the shared vectors: properties over
// random wall times, drift, restore, replica ids.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Clock, DEFAULT_MAX_DRIFT, MAX_ISSUED_LOGICAL, MAX_LOGICAL, MAX_WALL, compareStamps, validateReplica } from '../src/hlc.js';
import { isDevice, newDevice } from '../src/replica.js';

function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

test('stamps strictly increase whatever the wall clock does, and follow observed ones', () => {
  const seed = Date.now() % 1e9;
  const r = rng(seed);
  const c = new Clock({ replica: 'r1', maxDrift: 60_000 });
  let wall = 1_700_000_000_000;
  let last = c.now(wall);
  for (let i = 0; i < 5000; i++) {
    wall += Math.floor((r() - 0.4) * 2000); // mostly forward, sometimes back
    if (r() < 0.3) {
      const remote = { wall: wall + Math.floor((r() - 0.5) * 100_000), logical: Math.floor(r() * 10) };
      let refused = false;
      try {
        c.observe(remote, wall);
      } catch (e) {
        refused = true;
        assert.equal(/** @type {any} */ (e).code, 'clock_drift', `seed ${seed}`);
        assert.ok(remote.wall - wall > 60_000, `seed ${seed}: refused within the drift bound`);
      }
      const s = c.now(wall);
      if (!refused) assert.equal(compareStamps(s, { ...remote, replica: 'r1' }), 1, `seed ${seed}: after the observed stamp`);
      assert.equal(compareStamps(last, s), -1, `seed ${seed}: increasing`);
      last = s;
    } else {
      const s = c.now(wall);
      assert.equal(compareStamps(last, s), -1, `seed ${seed}: increasing`);
      assert.ok(s.wall >= wall || s.wall === last.wall, `seed ${seed}: wall part is max(last, wall)`);
      last = s;
    }
  }
});

test('restore only moves forward; the counter carries into the wall and refuses to overflow only at its end', () => {
  const c = new Clock({ replica: 'r1' });
  assert.equal(c.maxDrift, DEFAULT_MAX_DRIFT);
  c.restore({ wall: 100, logical: 5 });
  c.restore({ wall: 50, logical: 9 });
  assert.deepEqual(c.last, { wall: 100, logical: 5 });
  // Past MAX_ISSUED_LOGICAL the counter carries into the wall part.
  c.restore({ wall: 100, logical: MAX_ISSUED_LOGICAL - 1 });
  assert.deepEqual(c.now(100), { wall: 100, logical: MAX_ISSUED_LOGICAL, replica: 'r1' });
  assert.deepEqual(c.now(100), { wall: 101, logical: 0, replica: 'r1' });
  // A stored counter above it (records may hold up to MAX_LOGICAL) too.
  c.restore({ wall: 200, logical: MAX_LOGICAL });
  assert.deepEqual(c.now(150), { wall: 201, logical: 0, replica: 'r1' });
  c.observe({ wall: 300, logical: MAX_LOGICAL }, 250);
  assert.deepEqual(c.last, { wall: 301, logical: 0 }, 'an observed huge counter moves the clock one millisecond past it');
  // Only at the end of wall time is there nowhere to carry.
  c.restore({ wall: MAX_WALL, logical: MAX_ISSUED_LOGICAL });
  assert.throws(() => c.now(100), (e) => /** @type {any} */ (e).code === 'counter_overflow');
  assert.deepEqual(c.last, { wall: MAX_WALL, logical: MAX_ISSUED_LOGICAL }, 'unchanged after the refusal');
});

test('a clock too far ahead takes a clock saved in time (settle), and never goes back further', () => {
  const wall = 1_700_000_000_000;
  const hour = 3_600_000;
  const c = new Clock({ replica: 'r1', maxDrift: 60_000 });
  c.now(wall + hour); // issued before the server's time corrected ours
  assert.ok(c.ahead(wall));
  // Another tab already started again and saved its clock: follow it.
  c.settle({ wall: wall + 5, logical: 3 }, wall);
  assert.deepEqual(c.now(wall), { wall: wall + 5, logical: 4, replica: 'r1' });
  assert.ok(!c.ahead(wall));
  // None saved in time: settle keeps the clock (restartClock, syncstore.js,
  // starts it again once a hello has corrected the wall time).
  const d = new Clock({ replica: 'r1', maxDrift: 60_000 });
  const top = d.now(wall + hour);
  d.settle({ wall: wall + hour, logical: 0 }, wall);
  assert.equal(compareStamps(d.now(wall), top), 1, 'a wall clock set back pulls no stamp back');
  // Ahead within the drift: nothing changes, stamps keep increasing.
  const e = new Clock({ replica: 'r1', maxDrift: 60_000 });
  const near = e.now(wall + 59_000);
  e.settle(null, wall);
  assert.ok(!e.ahead(wall));
  assert.equal(compareStamps(e.now(wall), near), 1);
});

test('settle takes a saved clock without a wall reading as none: neither its stamp nor its drift', () => {
  const wall = 1_700_000_000_000;
  // Stored data is input: a clock entry holding only the correction of
  // the wall time, or a corrupt one, moves nothing.
  for (const saved of [{ offset: 5 }, { wall: String(wall + 9), logical: 2, drift: 7 }, { drift: 7 }]) {
    const c = new Clock({ replica: 'r1', maxDrift: 60_000 });
    const before = c.now(wall);
    c.settle(saved, wall);
    assert.equal(c.maxDrift, 60_000, `drift of ${JSON.stringify(saved)}`);
    assert.equal(c.stated, false);
    assert.deepEqual(c.last, { wall: before.wall, logical: before.logical });
  }
});

test('MAX_WALL is a safe integer (record.js reads a wall within it as one)', () => {
  assert.ok(Number.isSafeInteger(MAX_WALL));
});

test('replica ids', () => {
  const seen = new Set();
  for (let i = 0; i < 1000; i++) {
    const id = newDevice();
    validateReplica(id);
    assert.ok(isDevice(id), id);
    assert.equal(id.length, 22);
    seen.add(id);
  }
  assert.equal(seen.size, 1000);
  for (const bad of ['', 'a b', 'x'.repeat(65), 'é', 'a/b']) {
    assert.throws(() => validateReplica(bad), (e) => /** @type {any} */ (e).code === 'invalid', bad);
    assert.throws(() => new Clock({ replica: bad }));
  }
  assert.throws(() => new Clock({ replica: 'ok', maxDrift: -1 }), (e) => /** @type {any} */ (e).code === 'invalid');
});
