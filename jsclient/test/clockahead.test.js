// A replica whose clock ran ahead of the server's before it first heard
// the server's time: what it wrote then is refused clock_drift, and what
// it writes once its clock is corrected is not.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FakeServer } from './helpers/server.js';
import { fakeLocks, freshIDB, openClient, until } from './helpers/util.js';
import { PATHS } from '../src/constants.js';
import { decode } from '../src/cbor.js';

test('writes made after the clock is corrected are not refused for the stamps an uncorrected clock issued', async (t) => {
  // The server's clock is an hour behind ours, and this replica writes
  // offline before its first hello: those stamps are an hour ahead.
  const server = await new FakeServer({ timeOffset: -3_600_000, maxDrift: 60_000 }).start();
  t.after(() => server.stop());
  const idb = freshIDB();
  const offline = await openClient({ name: 'ahead', indexedDB: idb, sync: false });
  await offline.collection('todos').put('early', { n: 1 });
  await offline.close();

  const a = await openClient({ url: server.url, name: 'ahead', indexedDB: idb, collections: ['todos'] });
  t.after(() => a.close());
  /** @type {any[]} */
  const refused = [];
  a.on('refused', (r) => refused.push(r));
  await until(() => a.status.online && a.status.pending === 0, 'the early write settled');
  assert.deepEqual(refused.map((r) => [r.id, r.code]), [['early', 'clock_drift']]);
  assert.equal(await a.collection('todos').get('early'), null, 'the refused write rolled back');

  // Written now, with the clock corrected by the hello: in time, on a
  // record of its own and on the one the refused write touched. Near the
  // server's time while they were written (a loaded machine may take
  // seconds from the writes to the test's look).
  const from = server.now();
  await a.collection('todos').put('later', { n: 2 });
  await a.collection('todos').put('early', { n: 3 });
  await until(() => a.status.pending === 0, 'pushed');
  const to = server.now();
  assert.deepEqual(refused.map((r) => [r.id, r.code]), [['early', 'clock_drift']], 'nothing more refused');
  for (const id of ['later', 'early']) {
    const stamp = server.coll('todos').byId.get(id)?.record.fields.get('n')?.stamp;
    assert.ok(stamp && stamp.wall > from - 2000 && stamp.wall < to + 2000, `${id} stamped ${stamp?.wall}, near the server's ${from}..${to}`);
  }

  // And after a reload: the clock restored from the database is not the
  // one the uncorrected clock left.
  await a.close();
  const b = await openClient({ url: server.url, name: 'ahead', indexedDB: idb, collections: ['todos'] });
  t.after(() => b.close());
  b.on('refused', (r) => refused.push(r));
  await until(() => b.status.online, 'online again');
  await b.collection('todos').put('reloaded', { n: 4 });
  await until(() => b.status.pending === 0, 'pushed after the reload');
  assert.deepEqual(refused.map((r) => [r.id, r.code]), [['early', 'clock_drift']], 'nothing refused after the reload');
});

test("live: a session's welcome corrects the wall time again and restarts a clock left too far ahead, as the hello over HTTP does: writes after a device clock jumped ahead are not refused", async (t) => {
  const server = await new FakeServer({ maxDrift: 60_000 }).start();
  t.after(() => server.stop());
  const a = await openClient({ url: server.url, name: 'jump', indexedDB: freshIDB(), collections: ['todos'] });
  t.after(() => a.close());
  /** @type {any[]} */
  const refused = [];
  a.on('refused', (r) => refused.push(r));
  const syncer = () => /** @type {any} */ (a).syncer;
  await until(() => syncer()?.live && syncer().session?.subscribed.has('todos'), 'live');
  await a.collection('todos').put('before', { n: 1 });
  await until(() => a.status.pending === 0 && server.coll('todos').byId.has('before'), 'pushed');
  // The device's clock jumps an hour ahead (seen from here, the server's
  // falls an hour behind); the session ends and another opens, with no
  // hello over HTTP.
  const first = syncer().session;
  let hellos = 0;
  const handle = server.handle.bind(server);
  server.handle = (/** @type {any} */ req, /** @type {any} */ res) => {
    if (req.url === PATHS.hello) hellos++;
    return handle(req, res);
  };
  server.opts.timeOffset = -3_600_000;
  server.dropSockets();
  await until(() => syncer()?.live && syncer().session !== first && syncer().session?.subscribed.has('todos'), 'live again');
  assert.equal(hellos, 0, 'no hello over HTTP');
  const from = server.now();
  await a.collection('todos').put('after', { n: 2 });
  await until(() => a.status.pending === 0, 'settled');
  const to = server.now();
  assert.deepEqual(refused.map((r) => [r.id, r.code]), [], 'nothing refused');
  const stamp = server.coll('todos').byId.get('after')?.record.fields.get('n')?.stamp;
  assert.ok(stamp && stamp.wall > from - 2000 && stamp.wall < to + 2000, `after stamped ${stamp?.wall}, near the server's ${from}..${to}`);
});

test("a follower's writes are stamped on the wall time the leader's hello corrected, not on its device clock: they are not refused clock_drift", async (t) => {
  // The server's clock is an hour behind the device's; both tabs open
  // before the leader's first hello has measured it.
  const server = await new FakeServer({ timeOffset: -3_600_000, maxDrift: 60_000 }).start();
  t.after(() => server.stop());
  const opts = { url: server.url, name: 'tabs', indexedDB: freshIDB(), locks: fakeLocks(), BroadcastChannel: globalThis.BroadcastChannel, collections: ['todos'] };
  const leader = await openClient(opts);
  const follower = await openClient(opts);
  t.after(() => Promise.all([leader.close(), follower.close()]));
  await until(() => leader.status.leader && leader.status.online, 'the first tab leads, online');
  /** @type {any[]} */
  const refused = [];
  follower.on('refused', (r) => refused.push(r));
  await follower.collection('todos').put('f', { n: 1 });
  assert.deepEqual(await follower.whenSynced(), { refused: 0 }, `refused: ${JSON.stringify(refused.map((r) => r.code))}`);
  const stamp = server.coll('todos').byId.get('f')?.record.fields.get('n')?.stamp;
  assert.ok(stamp && Math.abs(stamp.wall - server.now()) < 60_000, `stamped ${stamp?.wall}, near the server's ${server.now()}`);
});

test('a hello that corrects the wall time restarts a clock left ahead even while a write that read the old correction is under way', async (t) => {
  const { restartClock } = await import('../src/syncstore.js');
  const db = await openClient({ name: 'race', indexedDB: freshIDB(), sync: false });
  t.after(() => db.close());
  const st = /** @type {any} */ (db).store;
  const hour = 3_600_000;
  st.clock.maxDrift = 60_000;
  // A correction an hour too far ahead, stored, and a write stamped by it.
  st.setOffset(hour);
  await st.setMeta('clock', st.clockEntry());
  await db.collection('todos').put('x', { n: 1 });
  assert.ok(st.clock.ahead(Date.now()), 'the clock is an hour ahead');
  // A write of a record not seen yet (it reads first) begins, then the
  // hello's answer corrects the wall time and restarts the clock.
  const write = db.collection('todos').put('y', { n: 2 });
  st.setOffset(0); // as the Syncer's applyHello does
  await restartClock(st, 0);
  await write;
  assert.equal(st.clock.ahead(Date.now()), false, `the clock restarted (last ${st.clock.last.wall}, now ${Date.now()})`);
  assert.equal(st.offset, 0, 'the correction is the hello’s');
});

test("a follower stamps under the max drift the server's hello stated, not the default: a clock it left ahead by more than a smaller bound takes the one the leader started again", async (t) => {
  // The server's clock is two minutes behind the device's, and it takes
  // stamps at most a minute ahead (the default bound is five).
  const server = await new FakeServer({ timeOffset: -120_000, maxDrift: 60_000 }).start();
  t.after(() => server.stop());
  const idb = freshIDB();
  const opts = { url: server.url, name: 'tabs', indexedDB: idb, locks: fakeLocks(), BroadcastChannel: globalThis.BroadcastChannel, collections: ['todos'] };
  // A tab that never leads writes before any tab has heard the server:
  // its clock is two minutes ahead of the server's time.
  const follower = await openClient({ ...opts, sync: false });
  t.after(() => follower.close());
  /** @type {any[]} */
  const refused = [];
  follower.on('refused', (r) => refused.push(r));
  await follower.collection('todos').put('early', { n: 1 });
  const leader = await openClient(opts);
  t.after(() => leader.close());
  await until(() => leader.status.online && refused.length === 1, 'the early write refused');
  assert.deepEqual(refused.map((r) => [r.id, r.code]), [['early', 'clock_drift']]);
  // Written now, under the hello's correction and bound.
  await follower.collection('todos').put('later', { n: 2 });
  await until(() => leader.status.pending === 0 && follower.status.pending === 0, 'settled');
  assert.deepEqual(refused.map((r) => [r.id, r.code]), [['early', 'clock_drift']], 'nothing more refused');
  const stamp = server.coll('todos').byId.get('later')?.record.fields.get('n')?.stamp;
  assert.ok(stamp && Math.abs(stamp.wall - server.now()) < 60_000, `stamped ${stamp?.wall}, near the server's ${server.now()}`);
});

test("a follower stamps under the max drift the server's hello stated, not the default: a larger bound lets its write follow a stamp ahead by more than the default", async (t) => {
  const { emptyRecord } = await import('../src/record.js');
  const { encode } = await import('../src/cbor.js');
  const { newDevice, replicaId, replicaPrefix } = await import('../src/replica.js');
  const server = await new FakeServer({ maxDrift: 3_600_000 }).start();
  t.after(() => server.stop());
  const opts = { url: server.url, name: 'tabs', indexedDB: freshIDB(), locks: fakeLocks(), BroadcastChannel: globalThis.BroadcastChannel, collections: ['todos'] };
  const leader = await openClient(opts);
  t.after(() => leader.close());
  await until(() => leader.status.leader && leader.status.online, 'the first tab leads, online');
  const follower = await openClient(opts);
  t.after(() => follower.close());
  // Another replica's stamp ten minutes ahead, which the server took
  // (within its hour) and the leader pulls.
  const prefix = await replicaPrefix('other');
  const rec = emptyRecord('k');
  rec.fields.set('n', { stamp: { wall: server.now() + 600_000, logical: 0, replica: replicaId(prefix, newDevice()) }, value: encode(1) });
  server.apply([{ collection: 'todos', record: rec }], prefix);
  await leader.sync();
  assert.deepEqual(await follower.collection('todos').get('k'), { id: 'k', n: 1 });
  // The follower's edit of what it sees follows that stamp, so it wins.
  await follower.collection('todos').update('k', { n: 2 });
  assert.deepEqual(await follower.collection('todos').get('k'), { id: 'k', n: 2 }, "the follower's write taken here");
  await follower.sync();
  assert.equal(decode(/** @type {any} */ (server.coll('todos').byId.get('k')?.record.fields.get('n')?.value)), 2, 'and on the server');
});
