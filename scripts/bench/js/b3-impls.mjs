// The documents crdt-benchmarks' B3 harness drives (dmonad/crdt-benchmarks,
// js-lib/b3.js and js-lib/utils.js: a factory whose create(updateHandler)
// makes a document that hands every update it produces to updateHandler;
// the document offers setMap, transact, applyUpdate and getMap). Each
// implementation here follows that shape; methods may return promises,
// since the Convergo client writes through IndexedDB.
//
// Convergo's two rows use the client's own modules and nothing written for
// the benchmark on the write side: each document is a fresh client database
// (Database from jsclient/src/database.js on fake-indexeddb, sync off, with
// the replica id the client makes for itself: the anonymous subject's
// prefix, "_", 22 random characters), setMap is Collection.put, and the
// update is the push body the Syncer would send for that write
// (protocol.encodePush of the replica id and the outbox entries, with the
// replica prefix of the anonymous token it goes with, as sync.js does over
// HTTP). What a client sends for that write over an open live session is
// counted beside it (liveBytes): protocol.encodeLivePush of the same
// replica, entries and versions, as sync.js does, from a session base S,
// the server time of the session's welcome, taken as the write's wall less
// 1 s (a session opened just before the writes: 3-byte differences) and
// less 3 h (a session opened hours before: 5-byte ones). The update handed
// to the harness, which the documents decode and apply, stays the HTTP
// body: the same changes. They differ in how a document applies updates:
//   convergo      the push bodies decoded (b3-push.mjs: change.js
//                 readChange in the body's compact-stamp context) and merged
//                 into the document's record in memory (record.js
//                 mergeInto): the client's merge, no storage
//   convergo-idb  the same decoded changes handed, all in one call, to the
//                 client's apply path for remote records (db.js
//                 Store.applyRemote: one IndexedDB transaction reading the
//                 record, merging, writing it and the cursor, notifying),
//                 on fake-indexeddb in Node, not a browser's IndexedDB

import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import * as Y from 'yjs';
import * as Automerge from '@automerge/automerge';
import { createMergeableStore } from 'tinybase';
import { IDBFactory, IDBKeyRange } from 'fake-indexeddb';
import { open } from '../../../jsclient/src/database.js';
import { compactContext, encodeLivePush, encodePush } from '../../../jsclient/src/protocol.js';
import { readChange } from '../../../jsclient/src/change.js';
import { receivedValue } from '../../../jsclient/src/normalize.js';
import { applyRemote, peekOutbox, schemaVersion } from '../../../jsclient/src/syncstore.js';
import * as cbor from '../../../jsclient/src/codec.js';
import { decodeValue, emptyRecord, maxStamp, mergeInto, visibleValues } from '../../../jsclient/src/record.js';
import { replicaPrefix } from '../../../jsclient/src/replica.js';
import { pushDecoder } from './b3-push.mjs';

/** The anonymous subject's replica prefix: the documents' token has no subject. */
const PREFIX = await replicaPrefix('');

/** N and the client count of crdt-benchmarks (js-lib/utils.js, js-lib/b3.js). */
export const N = 6000;
export const CLIENTS = Math.floor(Math.sqrt(N)) * 20; // 1540

/**
 * The scenarios: B3.1–B3.3 as crdt-benchmarks defines them (each client i
 * calls setMap with this key and value), and B3.x, ours, with distinct
 * keys: 1,000 clients, so that the merged record stays within the 1,024
 * fields a record may hold (1,540 fields are refused by every store).
 * Their titles, the report's rows, are the Go command's (rowNames).
 */
export const scenarios = [
  { id: 'B3.1', clients: CLIENTS, key: () => 'v', value: (i) => i },
  { id: 'B3.2', clients: CLIENTS, key: () => 'v', value: (i) => ({ name: i.toString(), address: 'here' }) },
  { id: 'B3.3', clients: CLIENTS, key: () => 'v', value: (i) => i.toString().repeat(CLIENTS) },
  { id: 'B3.x', clients: 1000, key: (i) => 'k' + i, value: (i) => i },
];

/** The implementations, by the name the driver passes. */
export const factories = {
  yjs: {
    // As crdt-benchmarks' Yjs factory: V2 updates, applyUpdateV2.
    name: 'Yjs 13 (Y.Map, V2 updates)',
    create(onUpdate) {
      const doc = new Y.Doc();
      doc.on('updateV2', (u) => onUpdate(u));
      doc.getArray('array');
      doc.getText('text');
      const map = doc.getMap('map');
      return {
        setMap: (k, v) => map.set(k, v),
        transact: (f) => doc.transact(f),
        applyUpdate: (u) => Y.applyUpdateV2(doc, u),
        getMap: () => map.toJSON(),
      };
    },
  },
  automerge: {
    name: 'Automerge 2',
    create(onUpdate) {
      let doc = Automerge.init();
      /** @type {Uint8Array[]|null} changes held by transact */
      let held = null;
      return {
        setMap(k, v) {
          doc = Automerge.change(doc, (d) => {
            d[k] = v;
          });
          onUpdate(Automerge.getLastLocalChange(doc));
        },
        transact(f) {
          held = [];
          f();
          [doc] = Automerge.applyChanges(doc, held);
          held = null;
        },
        applyUpdate(u) {
          if (held) held.push(u);
          else [doc] = Automerge.applyChanges(doc, [u]);
        },
        getMap: () => JSON.parse(JSON.stringify(doc)),
      };
    },
  },
  tinybase: {
    // Values stored as they are: TinyBase 10 stores objects and arrays
    // natively. The update is the JSON of a transaction's mergeable
    // changes, what its synchronizers send.
    name: 'TinyBase 10 (MergeableStore)',
    create(onUpdate) {
      const store = createMergeableStore();
      const enc = new TextEncoder();
      const dec = new TextDecoder();
      store.addDidFinishTransactionListener(() => onUpdate(enc.encode(JSON.stringify(store.getTransactionMergeableChanges()))));
      return {
        setMap: (k, v) => store.setValue(k, v),
        transact: (f) => store.transaction(f),
        applyUpdate: (u) => store.applyMergeableChanges(JSON.parse(dec.decode(u))),
        getMap: () => ({ ...store.getValues() }),
      };
    },
  },
  convergo: {
    name: 'Convergo JS client: decode push body + merge in memory',
    ours: true,
    create: (onUpdate) => convergoDoc(onUpdate, false),
  },
  'convergo-idb': {
    name: 'Convergo JS client: decode push body + apply to IndexedDB (fake-indexeddb)',
    ours: true,
    create: (onUpdate) => convergoDoc(onUpdate, true),
  },
};

/**
 * The bytes of the live pushes the Convergo documents' writes make
 * (encodeLivePush), summed: from a session opened 1 s before the write
 * (recent) and 3 h before (hours).
 */
export const liveBytes = { recent: 0, hours: 0 };

/**
 * How long before a write its session opened, for each figure of liveBytes
 * (ms): cmd/convergo-bench's b3SessionAge, the one definition, which
 * scripts/bench.sh passes in CONVERGO_B3_SESSION_AGE (the output of
 * `convergo-bench b3 -session-age`; without it, fromGo reads it).
 * @returns {{recent: number, hours: number}}
 */
export function sessionAge() {
  const age = fromGo('CONVERGO_B3_SESSION_AGE', ['-session-age']);
  if (!(age.recent > 0 && age.hours > 0)) throw new Error(`CONVERGO_B3_SESSION_AGE=${process.env.CONVERGO_B3_SESSION_AGE}: want {"recent": ms, "hours": ms}, as convergo-bench b3 -session-age prints`);
  return age;
}

/**
 * The names of the report's B3 rows for runs of warm warm runs each: the
 * metric of each figure, and the title of each scenario by id.
 * cmd/convergo-bench's b3Rows is the one definition (the report matches
 * samples by these names, and refuses a B3 metric it does not name),
 * which scripts/bench.sh passes in CONVERGO_B3_ROWS (the output of
 * `convergo-bench b3 -rows -warm N`; without it, fromGo reads it). They
 * must be for warm warm runs and name exactly the scenarios here.
 * @param {number} warm
 * @returns {{warmRuns: number, cold: string, warm: string, bytes: string, bytesHours: string, bytesHTTP: string, scenarios: Record<string, string>}}
 */
export function rowNames(warm) {
  const rows = fromGo('CONVERGO_B3_ROWS', ['-rows', '-warm', String(warm)]);
  const ids = scenarios.map((s) => s.id).sort();
  const named = Object.keys(rows.scenarios ?? {}).sort();
  const metrics = [rows.cold, rows.warm, rows.bytes, rows.bytesHours, rows.bytesHTTP];
  if (rows.warmRuns !== warm || !metrics.every((m) => typeof m === 'string' && m !== '') || ids.join() !== named.join()) {
    throw new Error(`CONVERGO_B3_ROWS=${process.env.CONVERGO_B3_ROWS}: want the rows convergo-bench b3 -rows -warm ${warm} prints, naming scenarios ${ids.join(', ')}`);
  }
  return rows;
}

/**
 * What `convergo-bench b3 ...args` prints, as JSON: from the environment
 * variable env when it is set, else read once from the Go command (`go
 * run`, from the repository root) and set in the environment, for the
 * processes this one starts.
 * @param {string} env
 * @param {string[]} args
 */
function fromGo(env, args) {
  if (!process.env[env]) {
    const root = fileURLToPath(new URL('../../../', import.meta.url));
    process.env[env] = execFileSync('go', ['run', './cmd/convergo-bench', 'b3', ...args], { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  }
  return JSON.parse(/** @type {string} */ (process.env[env]));
}

/** @type {{recent: number, hours: number}|undefined} sessionAge, once read */
let sessionAges;

const COLLECTION = 'b3';
const ID = 'doc';
let dbs = 0;

/**
 * A fresh Convergo client database as one B3 document.
 * @param {(u: Uint8Array) => void} onUpdate
 * @param {boolean} idb apply through Store.applyRemote (else in memory)
 */
async function convergoDoc(onUpdate, idb) {
  const db = await open({ name: `b3-${dbs++}`, sync: false, indexedDB: new IDBFactory(), IDBKeyRange, locks: null, BroadcastChannel: null });
  const coll = db.collection(COLLECTION);
  /** the document's record in memory (the in-memory row) */
  let rec = emptyRecord(ID);
  /** @type {import('../../../jsclient/src/record.js').Record[]|null} changes held by transact */
  let held = null;
  const cursor = new Uint8Array([1]);
  return {
    async setMap(k, v) {
      // Collection.put of a fresh document sets exactly this field.
      await coll.put(ID, { [k]: v });
      // As sync.js pushes: the outbox entries, the collection's schema version.
      const entries = await peekOutbox(db.store, 1000);
      const versions = new Map([[COLLECTION, await schemaVersion(db.store, COLLECTION)]]);
      const replica = /** @type {string} */ (db.store.replica);
      const changes = entries.map((e) => e.change);
      const body = encodePush(replica, changes, versions, PREFIX);
      // The document holds its own write from here on, as a client does.
      let wall = 0;
      for (const c of decodePush(body)) {
        mergeInto(rec, c.record);
        wall = Math.max(wall, maxStamp(c.record).wall);
      }
      // The same write over an open live session, as sync.js sends it.
      sessionAges ??= sessionAge();
      for (const k of /** @type {const} */ (['recent', 'hours'])) liveBytes[k] += encodeLivePush(replica, changes, versions, wall - sessionAges[k]).length;
      onUpdate(body);
    },
    async transact(f) {
      held = [];
      f();
      const records = held;
      held = null;
      if (idb) await applyRemote(db.store, COLLECTION, records, cursor);
    },
    applyUpdate(u) {
      for (const c of decodePush(u)) {
        if (idb) /** @type {any[]} */ (held).push(c.record);
        else mergeInto(rec, c.record);
      }
    },
    async getMap() {
      if (idb) {
        const doc = /** @type {Record<string, unknown>} */ ({ ...(await coll.get(ID)) });
        delete doc.id;
        return doc;
      }
      const out = {};
      for (const [k, v] of visibleValues(rec) ?? []) out[k] = decodeValue(v);
      return out;
    },
  };
}

/** The changes of a push body, read with the client's own modules (b3-push.mjs). */
export const decodePush = pushDecoder(cbor, { readChange, compactContext, receivedValue }, PREFIX);
