// One B3 run in its own process: crdt-benchmarks' benchmark template
// (dmonad/crdt-benchmarks, js-lib/b3.js) for one implementation and one
// scenario, then warm runs. Update counts and bytes are taken after the
// clients' changes, before anything is applied.
//
// As the template: every client is a fresh document made by the
// implementation's factory, whose update handler collects the updates;
// client i makes its change (setMap); client 0 applies all updates in one
// transaction (untimed: the reference); then client 1 (a fresh document
// holding its own change) applies all updates in one transaction, timed
// once: the cold figure crdt-benchmarks publishes. Its map must equal client
// 0's. Then WARM further clients (2, 3, …, each a fresh document holding
// its own change) apply the same updates, timed each: the warm figures.
// Last, one more client applies them in reverse order, untimed, and must
// reach the same map.
//
// Output: one JSON line {impl, scenario, cold, warm, bytes, live, updates,
// setupMs}: bytes, of the updates handed to the harness; live, for the
// Convergo client, of its live pushes for the same writes ({recent,
// hours}: b3-impls.mjs liveBytes).
//
// Usage: node b3-run.mjs IMPL SCENARIO [WARM]   e.g. node b3-run.mjs yjs B3.1 5

import { factories, liveBytes, scenarios } from './b3-impls.mjs';

const [implName, scenarioId, warmArg] = process.argv.slice(2);
const impl = factories[implName];
const sc = scenarios.find((s) => s.id === scenarioId);
if (!impl || !sc) {
  console.error(`usage: node b3-run.mjs {${Object.keys(factories).join('|')}} {${scenarios.map((s) => s.id).join('|')}} [warm]`);
  process.exit(2);
}
const WARM = Number(warmArg ?? 5);

const t0 = performance.now();
/** @type {Uint8Array[]} */
const updates = [];
const docs = [];
// The template's mutex: updates a document emits while it applies others'
// updates are not collected.
let applying = false;
const collect = (/** @type {Uint8Array} */ u) => {
  if (!applying) updates.push(u);
};
for (let i = 0; i < sc.clients; i++) docs.push(await impl.create(collect));
for (let i = 0; i < sc.clients; i++) await docs[i].setMap(sc.key(i), sc.value(i));
if (updates.length < sc.clients) throw new Error(`${impl.name} ${sc.id}: ${updates.length} updates from ${sc.clients} clients`);
const setupMs = performance.now() - t0;
const count = updates.length;
const bytes = updates.reduce((n, u) => n + u.length, 0);
// The JS client's writes over an open live session (b3-impls.mjs), summed
// once setup is done.
const live = impl.ours ? { ...liveBytes } : undefined;

/** Applies ups to doc in one transaction; returns the time taken in ms. */
async function applyAll(doc, ups) {
  applying = true;
  const start = performance.now();
  await doc.transact(() => {
    for (const u of ups) doc.applyUpdate(u);
  });
  const ms = performance.now() - start;
  applying = false;
  return ms;
}

/** JSON with object keys sorted at every level. */
function canon(v) {
  if (Array.isArray(v)) return `[${v.map(canon).join(',')}]`;
  if (v && typeof v === 'object') {
    return `{${Object.keys(v)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canon(v[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(v);
}

async function check(doc, what) {
  const got = canon(await doc.getMap());
  if (got !== ref) throw new Error(`${impl.name} ${sc.id}: ${what} diverges from client 0: ${got.slice(0, 120)} vs ${ref.slice(0, 120)}`);
}

await applyAll(docs[0], updates);
const ref = canon(await docs[0].getMap());
const cold = await applyAll(docs[1], updates);
await check(docs[1], 'client 1');
const warm = [];
for (let w = 0; w < WARM; w++) {
  warm.push(await applyAll(docs[2 + w], updates));
  await check(docs[2 + w], `client ${2 + w}`);
}
await applyAll(docs[2 + WARM], [...updates].reverse());
await check(docs[2 + WARM], 'the reverse order');

if (updates.length !== count) throw new Error(`${impl.name} ${sc.id}: updates were collected while applying`);
process.stdout.write(JSON.stringify({ impl: implName, scenario: sc.id, cold, warm, bytes, live, updates: count, setupMs }) + '\n');
process.exit(0);
