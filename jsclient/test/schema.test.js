// Schema versions on the client (src/schema.js, open({migrations})) against
// the in-memory server, which translates as the spec says: offline edits
// made under v1 are upgraded in IndexedDB when v2 code opens the database
// and land on the server translated, with their stamps; a v1 client keeps
// syncing beside v2 ones; a downgrade refuses to open; a server on older
// rules (schema_ahead) holds the outbox until it catches up.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FakeServer } from './helpers/server.js';
import { freshIDB, openClient, until } from './helpers/util.js';
import { decodeValue } from '../src/record.js';

const WAIT = 8000;
const C = 'notes';
const V1 = { version: 1, steps: [] };
const V2 = {
  version: 2,
  steps: [
    {
      to: 2,
      ops: [
        { op: 'rename', from: 'title', to: 'name' },
        { op: 'split', from: 'who', to: ['first', 'last'], sep: ' ' },
        { op: 'default', field: 'priority', value: 0 },
        { op: 'drop', field: 'legacy' },
      ],
    },
  ],
};

/**
 * The server's record id of C as a reader of the current version sees it
 * (the store may hold fields of v1 beside v2's: reading resolves them), as
 * {field: [replica, wall, value]}.
 * @param {FakeServer} server
 * @param {string} id
 */
function onServer(server, id) {
  const e = server.coll(C).byId.get(id);
  if (!e) return null;
  const rec = server.served(C, e.record, server.current(C));
  /** @type {Record<string, [string, number, unknown]>} */
  const out = {};
  for (const [k, f] of [...rec.fields].sort()) out[k] = [f.stamp.replica, f.stamp.wall, f.value === null ? undefined : decodeValue(f.value)];
  return out;
}

test('offline v1 edits are upgraded when v2 code opens the database and land translated with their stamps', async () => {
  const server = await new FakeServer().start();
  server.setMigrations(C, V1);
  const idb = freshIDB();
  try {
    // Online under v1: n1 synced.
    let db = await openClient({ url: server.url, indexedDB: idb, migrations: { [C]: V1 } });
    await db.collection(C).put('n1', { title: 'milk', who: 'Ada Lovelace' });
    await db.whenSynced();
    assert.equal(server.pushVersions.at(-1)?.get(C), 1, 'pushes name version 1');
    assert.equal(server.pulls.at(-1)?.get(8), 1, 'pulls name version 1');
    // Offline: three edits under v1, one of which v2 cannot map.
    await db.pause();
    await db.collection(C).update('n1', { title: 'oat milk' });
    await db.collection(C).put('n2', { title: 'bread', who: 'Grace Hopper' });
    await db.collection(C).update('n3', { legacy: true });
    await db.close();
    const stamps = await localStamps(idb);
    // The server moves to v2.
    server.setMigrations(C, V2);
    // Reload with v2 code, still offline.
    db = await openClient({ url: server.url, indexedDB: idb, migrations: { [C]: V2 }, sync: false });
    const notes = db.collection(C);
    assert.deepEqual(await notes.get('n1'), { id: 'n1', name: 'oat milk', first: 'Ada', last: 'Lovelace', priority: 0 });
    assert.deepEqual(await notes.get('n2'), { id: 'n2', name: 'bread', first: 'Grace', last: 'Hopper', priority: 0 });
    assert.equal(await notes.get('n3'), null, 'n3 rolled back: its only change is dropped in v2');
    const rej = await db.rejected();
    assert.equal(rej.length, 1);
    assert.equal(rej[0].code, 'untranslatable');
    assert.equal(rej[0].recordId, 'n3');
    assert.match(rej[0].message, /dropped in version 2/);
    assert.equal(db.status.rejected, 1);
    assert.equal(db.status.pending, 2);
    // A write at v2 reads its defaults too; queries see them.
    await notes.put('n4', { name: 'eggs', priority: 2 });
    assert.deepEqual((await notes.query({ where: { priority: 0 } })).map((d) => d.id), ['n1', 'n2']);
    await db.close();
    // Back online with v2 code.
    db = await openClient({ url: server.url, indexedDB: idb, migrations: { [C]: V2 } });
    await db.whenSynced();
    assert.equal(server.pushVersions.at(-1)?.get(C), 2, 'the outbox goes out as version 2');
    // Every edit landed translated, with the stamps it was written with.
    const n1 = /** @type {any} */ (onServer(server, 'n1'));
    assert.deepEqual(Object.keys(n1), ['first', 'last', 'name']);
    assert.equal(n1.name[2], 'oat milk');
    assert.equal(n1.name[1], stamps.get('n1')?.get('title'), 'name carries the stamp the title edit was made with');
    const n2 = /** @type {any} */ (onServer(server, 'n2'));
    assert.deepEqual([n2.name[2], n2.first[2], n2.last[2]], ['bread', 'Grace', 'Hopper']);
    assert.equal(n2.first[1], stamps.get('n2')?.get('who'));
    assert.equal(onServer(server, 'n3'), null, 'the untranslatable change never reached the server');
    // The pull from the beginning replaced what was held: the local records
    // are the server's, in v2.
    assert.deepEqual(await db.collection(C).get('n1'), { id: 'n1', name: 'oat milk', first: 'Ada', last: 'Lovelace', priority: 0 });
    const pulls = server.pulls.filter((m) => m.get(1) === C);
    assert.equal(pulls.at(-1)?.get(8), 2, 'pulls name version 2');
    await db.close();
    // A downgrade refuses to open.
    await assert.rejects(openClient({ url: server.url, indexedDB: idb, migrations: { [C]: V1 }, sync: false }), (e) => {
      assert.equal(/** @type {any} */ (e).code, 'database');
      assert.match(/** @type {Error} */ (e).message, /schema version 2, newer than this code's migrations \(version 1\)/);
      return true;
    });
  } finally {
    await server.stop();
  }
});

test('a v1 client keeps syncing beside v2 ones: it reads v2 writes down-translated and its writes land translated', async () => {
  const server = await new FakeServer().start();
  server.setMigrations(C, V2);
  const old = await openClient({ url: server.url, name: 'old', migrations: { [C]: V1 } });
  const cur = await openClient({ url: server.url, name: 'new', migrations: { [C]: V2 } });
  try {
    await cur.collection(C).put('a', { name: 'tea', first: 'Alan', last: 'Turing' });
    await cur.whenSynced();
    await until(async () => (await old.collection(C).get('a'))?.title === 'tea', 'the v1 client reads a in v1', WAIT);
    assert.deepEqual(await old.collection(C).get('a'), { id: 'a', title: 'tea', who: 'Alan Turing' });
    await old.collection(C).update('a', { who: 'Alan M Turing' });
    await old.whenSynced();
    await until(async () => (await cur.collection(C).get('a'))?.last === 'M Turing', 'the v2 client reads the v1 edit translated', WAIT);
    assert.deepEqual(await cur.collection(C).get('a'), { id: 'a', name: 'tea', first: 'Alan', last: 'M Turing', priority: 0 });
    // Then the v1 client upgrades.
    const idb = old.store.idb;
    await old.close();
    const upgraded = await openClient({ url: server.url, name: 'old', indexedDB: idb, migrations: { [C]: V2 } });
    await upgraded.whenSynced();
    assert.deepEqual(await upgraded.collection(C).get('a'), { id: 'a', name: 'tea', first: 'Alan', last: 'M Turing', priority: 0 });
    await upgraded.close();
  } finally {
    await cur.close().catch(() => {});
    await server.stop();
  }
});

test('a server on older rules refusing round after round (schema_ahead): schemaAhead is told once, not at every retry, and again after a round succeeded', async () => {
  const server = await new FakeServer().start();
  const db = await openClient({ url: server.url, migrations: { [C]: V2 }, WebSocket: null, pollInterval: 60_000, backoff: { base: 10, max: 20 } });
  try {
    /** @type {unknown[]} */
    const heard = [];
    /** @type {unknown[]} */
    const errors = [];
    db.on('schemaAhead', (e) => heard.push(e));
    db.on('error', (e) => errors.push(e));
    await db.collection(C).put('x', { name: 'n' });
    await until(() => errors.length >= 4, 'the round refused again and again, with backoff', WAIT);
    assert.equal(heard.length, 1, `schemaAhead told once for ${errors.length} refused rounds`);
    server.setMigrations(C, V2);
    await until(() => !db.status.schemaAhead && db.status.pending === 0, 'synced after the server caught up', WAIT);
    server.setMigrations(C, { version: 1, steps: [] });
    await db.collection(C).put('y', { name: 'm' });
    await until(() => heard.length === 2, 'told again after a round succeeded', WAIT);
  } finally {
    await db.close();
    await server.stop();
  }
});

test('a server on older rules (schema_ahead) holds the outbox, says so, and syncs once it catches up', async () => {
  const server = await new FakeServer().start();
  const db = await openClient({ url: server.url, migrations: { [C]: V2 } });
  try {
    /** @type {unknown[]} */
    const heard = [];
    db.on('schemaAhead', (e) => heard.push(e));
    await db.collection(C).put('x', { name: 'n' });
    await until(() => db.status.schemaAhead, 'status.schemaAhead', WAIT);
    assert.equal(/** @type {any} */ (heard[0])?.code, 'schema_ahead');
    assert.equal(db.status.pending, 1, 'the outbox holds');
    assert.equal(server.coll(C).byId.size, 0);
    server.setMigrations(C, V2);
    await db.sync().catch(() => {});
    await until(() => !db.status.schemaAhead && db.status.pending === 0, 'synced after the server caught up', WAIT);
    assert.equal(/** @type {any} */ (onServer(server, 'x')).name[2], 'n');
  } finally {
    await db.close();
    await server.stop();
  }
});

test('open refuses a bad definition with invalid', async () => {
  await assert.rejects(openClient({ sync: false, migrations: { [C]: { version: 2, steps: [] } } }), { code: 'invalid' });
  await assert.rejects(openClient({ sync: false, migrations: { 'bad name!': V1 } }), { code: 'invalid' });
});

/**
 * Per record id, the wall time of each field's stamp in the outbox (the
 * newest change), read raw from IndexedDB.
 * @param {IDBFactory} idb
 */
async function localStamps(idb) {
  const { Store } = await import('../src/db.js');
  const { IDBKeyRange } = await import('fake-indexeddb');
  const { decodeEntry } = await import('../src/change.js');
  const store = new Store({ name: 'convergo-test', indexedDB: idb, IDBKeyRange });
  /** @type {Map<string, Map<string, number>>} */
  const out = new Map();
  const entries = await store.tx(['outbox'], 'readonly', 'read', (tx) => new Promise((resolve) => {
    const r = tx.objectStore('outbox').getAll();
    r.onsuccess = () => resolve(r.result);
  }));
  for (const e of /** @type {any[]} */ (entries)) {
    const rec = decodeEntry(e.change);
    const m = out.get(e.id) ?? new Map();
    for (const [k, f] of rec.fields) m.set(k, f.stamp.wall);
    out.set(e.id, m);
  }
  store.close();
  return out;
}

test('a tab still running older code cannot write once another tab upgraded the collection', async () => {
  const idb = freshIDB();
  const old = await openClient({ sync: false, indexedDB: idb, migrations: { [C]: V1 } });
  try {
    await old.collection(C).put('a', { title: 't' });
    const cur = await openClient({ sync: false, indexedDB: idb, migrations: { [C]: V2 } });
    assert.deepEqual(await cur.collection(C).get('a'), { id: 'a', name: 't', priority: 0 });
    await assert.rejects(old.collection(C).update('a', { title: 'u' }), (e) => {
      assert.equal(/** @type {any} */ (e).code, 'database');
      assert.match(/** @type {Error} */ (e).message, /schema version 2, newer than this code's \(1\): reload/);
      return true;
    });
    await cur.collection(C).update('a', { name: 'u' });
    assert.equal((await cur.collection(C).get('a'))?.name, 'u');
    await cur.close();
  } finally {
    await old.close();
  }
});

test('subs name the version, and a v1 client heals a wiped v2 server with records sealed in v1', async () => {
  const server = await new FakeServer().start();
  server.setMigrations(C, V2);
  const old = await openClient({ url: server.url, name: 'old', migrations: { [C]: V1 } });
  try {
    /** @type {Error[]} */
    const errors = [];
    old.on('error', (e) => errors.push(e));
    await old.collection(C).put('a', { title: 'tea', who: 'Alan Turing' });
    await old.whenSynced();
    await until(() => server.received.some((m) => m.get(0) === 'sub' && m.get(1) === C), 'a live sub', WAIT);
    assert.deepEqual(server.received.filter((m) => m.get(0) === 'sub' && m.get(1) === C).map((m) => m.get(8)), [1], 'the sub names version 1');
    const before = onServer(server, 'a');
    server.wipe();
    await until(() => onServer(server, 'a') !== null, 'the record restored', WAIT);
    assert.deepEqual(onServer(server, 'a'), before, 'restored in v2, stamps kept');
    assert.ok(server.restoredRecords > 0, 'restored through its v1 seal');
    assert.deepEqual(errors.filter((e) => /heal/.test(e.message)), [], 'no refusal while healing');
  } finally {
    await old.close();
    await server.stop();
  }
});

test('a tab whose upgrade makes a change untranslatable tells the tabs open already', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  server.setMigrations(C, V1);
  const idb = freshIDB();
  const BC = globalThis.BroadcastChannel;
  const old = await openClient({ url: server.url, name: 'up', indexedDB: idb, BroadcastChannel: BC, migrations: { [C]: V1 } });
  t.after(() => old.close());
  await old.whenSynced();
  await old.pause();
  await old.collection(C).update('n3', { legacy: true });
  assert.equal(old.status.rejected, 0);
  // A tab of newer code opens beside it, offline: its upgrade rejects n3.
  const fresh = await openClient({ url: server.url, name: 'up', indexedDB: idb, BroadcastChannel: BC, migrations: { [C]: V2 }, sync: false });
  t.after(() => fresh.close());
  assert.equal(fresh.status.rejected, 1);
  await until(() => old.status.rejected === 1, 'the tab open already to count the rejected change', WAIT);
});

for (const live of [false, true]) {
  test(`${live ? 'live' : 'over HTTP'}: a collection that fails internal, then schema_ahead, is told again: the app hears it must upgrade (each code told once)`, async (t) => {
    const server = await new FakeServer().start();
    t.after(() => server.stop());
    /** @type {'internal'|'schema_ahead'} */
    let code = 'internal';
    let pulls = 0;
    // Polling, every pull of b fails; live, every sub of b is refused
    // internal and, once schema_ahead, the pull before each sub fails.
    server.refusePull = (c) => (c === 'b' && ++pulls > 0 && (!live || code === 'schema_ahead') ? code : null);
    if (live) server.refuseSub = (c) => (c === 'b' ? 'internal' : null);
    const db = await openClient({
      url: server.url,
      collections: ['a', 'b'],
      pollInterval: 60_000,
      backoff: { base: 10, max: 40 },
      ...(live ? {} : { WebSocket: null }),
    });
    t.after(() => db.close());
    /** @type {any[]} */
    const told = [];
    /** @type {any[]} */
    const heard = [];
    db.on('error', (e) => told.push(e));
    db.on('schemaAhead', (e) => heard.push(e));
    await until(() => told.length > 0, 'the internal told', WAIT);
    code = 'schema_ahead';
    const before = pulls;
    await until(() => pulls >= before + 4, 'b tried again and again', WAIT);
    assert.deepEqual(
      told.map((e) => e.code),
      ['internal', 'schema_ahead'],
      `told: ${told.map((e) => e.message).join('; ')}`,
    );
    assert.match(told[1].message, /\bb\b/, 'naming the collection');
    assert.equal(heard.length, 1, 'the app hears it must upgrade');
    assert.equal(heard[0].code, 'schema_ahead');
    assert.ok(db.status.schemaAhead, 'status.schemaAhead');
  });
}

test('a change read for a push under v1 as another tab upgrades the collection goes out named v1, and lands translated', async () => {
  const server = await new FakeServer().start();
  server.setMigrations(C, V2);
  const idb = freshIDB();
  const old = await openClient({ url: server.url, indexedDB: idb, WebSocket: null, pollInterval: 50, migrations: { [C]: V1 } });
  /** @type {any} */
  let cur = null;
  try {
    await old.whenSynced();
    const store = /** @type {any} */ (old).store;
    const getMeta = store.getMeta.bind(store);
    let armed = true;
    // The other tab upgrades after the push read the outbox, before it
    // goes.
    store.getMeta = async (/** @type {string} */ key) => {
      if (armed && key === 'schema:' + C) {
        armed = false;
        cur = await openClient({ sync: false, indexedDB: idb, migrations: { [C]: V2 } });
      }
      return getMeta(key);
    };
    await old.collection(C).put('a', { title: 'tea' });
    await until(() => server.coll(C).byId.has('a') || old.status.rejected > 0, 'a pushed', WAIT);
    assert.deepEqual(await old.rejected(), []);
    assert.deepEqual(server.pushVersions.map((v) => v.get(C)).filter((v) => v !== undefined), [1], 'the push names the version its changes were read in');
    const a = onServer(server, 'a');
    assert.equal(a?.name?.[2], 'tea', 'title translated to name');
    assert.equal(a?.title, undefined);
  } finally {
    await cur?.close();
    await old.close();
    await server.stop();
  }
});

test('a tab still running older code that leads stores the records it pulls after another tab upgraded the collection as the newer code reads them', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  server.setMigrations(C, V2);
  const idb = freshIDB();
  // The older tab leads (it holds the connection); the newer one opens
  // beside it and upgrades the collection.
  const BC = globalThis.BroadcastChannel;
  const old = await openClient({ url: server.url, name: 'older', indexedDB: idb, BroadcastChannel: BC, WebSocket: null, pollInterval: 50, collections: [C], migrations: { [C]: V1 } });
  t.after(() => old.close());
  await old.whenSynced();
  const cur = await openClient({ url: server.url, name: 'older', indexedDB: idb, BroadcastChannel: BC, sync: false, migrations: { [C]: V2 } });
  t.after(() => cur.close());
  // Another device writes b in v2, without the defaulted field.
  const other = await openClient({ url: server.url, name: 'other', migrations: { [C]: V2 } });
  t.after(() => other.close());
  await other.collection(C).update('b', { name: 'tea' });
  await other.whenSynced();
  await until(async () => (await cur.collection(C).get('b')) !== null, 'b pulled by the leader', WAIT);
  assert.deepEqual(await cur.collection(C).get('b'), { id: 'b', name: 'tea', priority: 0 }, 'the newer tab reads b with its version’s default');
  assert.deepEqual((await cur.collection(C).query({ where: { priority: 0 } })).map((d) => d.id), ['b']);
});

test('a tab still running older code that leads rolls back a refused change of a newer tab as the newer code reads the record', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  server.setMigrations(C, V2);
  server.refuse = (ch) => {
    const f = ch.record.fields.get('name');
    return f?.value != null && decodeValue(f.value) === 'bad';
  };
  const other = await openClient({ url: server.url, name: 'other', migrations: { [C]: V2 } });
  t.after(() => other.close());
  await other.collection(C).update('a', { name: 'tea' });
  await other.whenSynced();
  const idb = freshIDB();
  const BC = globalThis.BroadcastChannel;
  const old = await openClient({ url: server.url, name: 'older', indexedDB: idb, BroadcastChannel: BC, collections: [C], migrations: { [C]: V1 } });
  t.after(() => old.close());
  await old.whenSynced();
  assert.deepEqual(await old.collection(C).get('a'), { id: 'a', title: 'tea' });
  const cur = await openClient({ url: server.url, name: 'older', indexedDB: idb, BroadcastChannel: BC, sync: false, migrations: { [C]: V2 } });
  t.after(() => cur.close());
  assert.deepEqual(await cur.collection(C).get('a'), { id: 'a', name: 'tea', priority: 0 });
  /** @type {any[]} */
  const refused = [];
  cur.on('refused', (r) => refused.push(r));
  await cur.collection(C).update('a', { name: 'bad' });
  await until(() => refused.length === 1, 'the refusal', WAIT);
  assert.deepEqual(await cur.collection(C).get('a'), { id: 'a', name: 'tea', priority: 0 }, 'rolled back to the server’s record, read with its version’s default');
});

test("the records a tab's upgrade changed reach the live queries of the tabs open already: a change it made untranslatable is rolled back there too", async (t) => {
  const idb = freshIDB();
  const BC = globalThis.BroadcastChannel;
  const old = await openClient({ name: 'up2', indexedDB: idb, BroadcastChannel: BC, sync: false, migrations: { [C]: V1 } });
  t.after(() => old.close());
  /** @type {any[][]} */
  const seen = [];
  const stop = old.collection(C).subscribe({}, (ds) => seen.push(ds));
  t.after(stop);
  await old.collection(C).put('n1', { title: 'tea' });
  await old.collection(C).update('n3', { legacy: true });
  await until(() => seen.at(-1)?.length === 2, 'the live query to show both', WAIT);
  // A tab of newer code opens beside it: its upgrade translates n1 and
  // rejects n3's change, which created it.
  const fresh = await openClient({ name: 'up2', indexedDB: idb, BroadcastChannel: BC, sync: false, migrations: { [C]: V2 } });
  t.after(() => fresh.close());
  assert.equal(fresh.status.rejected, 1);
  const stored = await old.collection(C).query();
  assert.deepEqual(stored, [{ id: 'n1', name: 'tea', priority: 0 }]);
  await until(() => JSON.stringify(seen.at(-1)) === JSON.stringify(stored), "the older tab's live query to show what is stored", WAIT);
});
