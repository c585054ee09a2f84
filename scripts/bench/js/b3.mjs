// crdt-benchmarks' B3 map scenarios (dmonad/crdt-benchmarks, js-lib/b3.js)
// for Convergo's JS client merge and its peers: Yjs (Y.Map), Automerge and
// TinyBase (MergeableStore).
//
// As in crdt-benchmarks, N = 6000 and 20·⌊√N⌋ = 1540 clients each make one
// change to a map; every change is captured as the update the library would
// send; the timed part applies all updates, in one transaction, to a
// client's document. Unlike crdt-benchmarks (one cold run per process) each
// figure here is RUNS warm runs on fresh documents after one warm-up, so the
// median and spread mean something.
//
// Scenarios (the update each client makes):
//   B3.1  set key "v" to the number i
//   B3.2  set key "v" to the object {name: String(i), address: "here"}
//   B3.3  set key "v" to the string String(i).repeat(1540)
//   B3.x  set key "k"+i to i (distinct keys: no conflicts; not in crdt-benchmarks)
//
// Output: one JSON sample per line per run (the sample type of
// cmd/convergo-bench, whose report subcommand aggregates them).
//
// Usage: node b3.mjs [runs] [impl,...]

import * as Y from 'yjs';
import * as Automerge from '@automerge/automerge';
import { createMergeableStore } from 'tinybase';

const N = 6000;
const CLIENTS = Math.floor(Math.sqrt(N)) * 20; // 1540
const RUNS = Number(process.argv[2] ?? 7);
const ONLY = process.argv[3] ? new Set(process.argv[3].split(',')) : null;

const scenarios = [
  { id: 'B3.1', title: 'B3.1 1540 clients set one key to a number', key: () => 'v', value: (i) => i },
  { id: 'B3.2', title: 'B3.2 1540 clients set one key to an object', key: () => 'v', value: (i) => ({ name: String(i), address: 'here' }) },
  { id: 'B3.3', title: 'B3.3 1540 clients set one key to a long string', key: () => 'v', value: (i) => String(i).repeat(CLIENTS) },
  { id: 'B3.x', title: 'B3.x 1540 clients set distinct keys', key: (i) => 'k' + i, value: (i) => i },
];

/**
 * Each implementation: makeUpdates(scenario) → {updates, target()} where
 * target() returns a fresh document holding client 1's own change, and
 * apply(doc, updates) applies all updates in one transaction; read(doc)
 * returns the map as a plain object for the convergence check.
 */
const impls = {
  yjs: {
    name: 'Yjs 13 (Y.Map)',
    setup(sc) {
      const updates = [];
      const own = [];
      for (let i = 0; i < CLIENTS; i++) {
        const doc = new Y.Doc();
        doc.on('update', (u) => updates.push(u));
        doc.getMap('map').set(sc.key(i), sc.value(i));
        if (i === 1) own.push(Y.encodeStateAsUpdate(doc));
      }
      return {
        updates,
        target() {
          const doc = new Y.Doc();
          Y.applyUpdate(doc, own[0]);
          return doc;
        },
        apply(doc, ups) {
          doc.transact(() => {
            for (const u of ups) Y.applyUpdate(doc, u);
          });
        },
        read: (doc) => doc.getMap('map').toJSON(),
      };
    },
  },
  automerge: {
    name: 'Automerge 2',
    setup(sc) {
      const updates = [];
      let own;
      for (let i = 0; i < CLIENTS; i++) {
        let doc = Automerge.init();
        doc = Automerge.change(doc, (d) => {
          d[sc.key(i)] = sc.value(i);
        });
        updates.push(Automerge.getLastLocalChange(doc));
        if (i === 1) own = Automerge.save(doc);
      }
      return {
        updates,
        target: () => Automerge.load(own),
        apply(doc, ups) {
          const [next] = Automerge.applyChanges(doc, ups);
          return next;
        },
        read: (doc) => JSON.parse(JSON.stringify(doc)),
      };
    },
  },
  tinybase: {
    name: 'TinyBase 10 (MergeableStore)',
    setup(sc) {
      const updates = [];
      let own;
      for (let i = 0; i < CLIENTS; i++) {
        const store = createMergeableStore('c' + i);
        store.addDidFinishTransactionListener(() => {
          updates.push(new TextEncoder().encode(JSON.stringify(store.getTransactionMergeableChanges())));
        });
        const v = sc.value(i);
        // TinyBase values are scalars: an object is stored as its JSON.
        store.setValue(sc.key(i), typeof v === 'object' ? JSON.stringify(v) : v);
        if (i === 1) own = store.getMergeableContent();
      }
      const dec = new TextDecoder();
      return {
        updates,
        target() {
          const store = createMergeableStore('target');
          store.setMergeableContent(own);
          return store;
        },
        apply(store, ups) {
          store.transaction(() => {
            for (const u of ups) store.applyMergeableChanges(JSON.parse(dec.decode(u)));
          });
        },
        read: (store) => store.getValues(),
      };
    },
  },
};

// Convergo's JS client, once jsclient/src/record.js exists.
try {
  const rec = await import('../../../jsclient/src/record.js');
  const { Clock } = await import('../../../jsclient/src/hlc.js');
  const { encode } = await import('../../../jsclient/src/cbor.js');
  const WALL = 1_764_000_000_000;
  impls.convergo = {
    name: 'Convergo JS client',
    ours: true,
    setup(sc) {
      const updates = [];
      let own;
      for (let i = 0; i < CLIENTS; i++) {
        const clock = new Clock({ replica: 'c' + i });
        const r = rec.emptyRecord('doc');
        // Every client writes in the same millisecond: stamps tie on time
        // and the replica id decides, as with truly concurrent writers.
        r.fields.set(sc.key(i), { stamp: clock.now(WALL), value: encode(sc.value(i)) });
        updates.push(rec.encodeRecord(r));
        if (i === 1) own = r;
      }
      return {
        updates,
        target: () => rec.cloneRecord(own),
        apply(doc, ups) {
          for (const u of ups) rec.mergeInto(doc, rec.decodeRecord(u));
        },
        read(doc) {
          const out = {};
          for (const [k, v] of rec.visibleValues(doc) ?? []) out[k] = rec.decodeValue(v);
          return out;
        },
      };
    },
  };
} catch (e) {
  console.error(`b3: Convergo JS client not measured: ${e.message}`);
}

function emit(o) {
  process.stdout.write(JSON.stringify(o) + '\n');
}

for (const sc of scenarios) {
  for (const [key, impl] of Object.entries(impls)) {
    if (ONLY && !ONLY.has(key)) continue;
    const s = impl.setup(sc);
    const bytes = s.updates.reduce((n, u) => n + u.length, 0);
    // Convergence check: applying every update in two orders gives one map.
    const applied = (ups) => {
      const doc = s.target();
      return s.apply(doc, ups) ?? doc;
    };
    const sorted = (o) => JSON.stringify(Object.fromEntries(Object.entries(o).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))));
    const ja = sorted(s.read(applied(s.updates)));
    const jb = sorted(s.read(applied([...s.updates].reverse())));
    if (ja !== jb) throw new Error(`${impl.name} ${sc.id}: replicas diverge: ${ja.slice(0, 200)} vs ${jb.slice(0, 200)}`);
    for (let run = -1; run < RUNS; run++) {
      let doc = s.target();
      const t0 = performance.now();
      doc = s.apply(doc, s.updates) ?? doc;
      const ms = performance.now() - t0;
      if (run < 0) continue; // warm-up
      emit({ scenario: sc.title, metric: 'apply all updates', unit: 'ms', better: 'lower', impl: impl.name, ours: !!impl.ours, run, value: ms });
    }
    emit({ scenario: sc.title, metric: 'update bytes', unit: 'bytes', better: 'lower', impl: impl.name, ours: !!impl.ours, run: 0, value: bytes });
  }
}
