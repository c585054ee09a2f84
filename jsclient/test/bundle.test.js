// What an app that imports `convergo` loads up front, and what it loads only
// when it needs it (docs/benchmarks.md, "Browser client bundle"): a module
// named here must be its own on-demand chunk and put no code in the main
// entry, so that a static import of it (or of a part of it) shows up here
// rather than as a few hundred bytes more in the next size measurement.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { measure } from '../scripts/size.mjs';

/** Loaded on demand, each with why a common session does without it. */
const ON_DEMAND = {
  'src/rejected.js': 'the rejected changes, read when the app asks',
  'src/heal.js': 'healing a server that lost history',
  'src/reconcile.js': 'reconciling after lease_expired',
  'src/schema.js': 'schema migrations',
  'src/scope.js': 'named scopes',
  'src/leader.js': 'the sync loop, loaded by the tab that leads (a follower never does)',
  'src/live.js': 'the WebSocket session, after the first round over HTTP',
  'src/peer.js': 'what a tab does with another tab\'s message, when a second tab first speaks',
};

/** Modules only on-demand ones import: in a chunk they share, not up front. */
const NOT_UP_FRONT = {
  'src/constants.js': 'the wire names, codes and timings (model.js holds what the main entry needs)',
  'src/sync.js': "the sync loop, leader.js's",
  'src/protocol.js': "the wire format, the sync loop's",
  'src/http.js': "one HTTP request, the sync loop's",
  'src/backoff.js': "the reconnect delays, the sync loop's",
  'src/syncstore.js': "the Store's part the sync loop uses",
  'src/normalize.js': 'values in another encoding than the deterministic one, which only the wire brings',
  'src/received.js': 'records and changes decoded as received, with normalize.js',
  'src/parts.js': "records' own and uncovered parts, stamps by change: the sync loop's and the heal's",
  'src/change.js': 'changes decoded, outbox entries and the rejected entries they become',
  'src/metakeys.js': 'the meta keys of heals, reconciliations, scopes and replacements',
};

test('bundle: the modules loaded on demand stay out of the main entry', async () => {
  const { lazy, modules } = await measure();
  const lazyNames = new Set(lazy.map((l) => l.lazy));
  for (const [m, why] of Object.entries(ON_DEMAND)) {
    assert.ok(lazyNames.has(m), `${m} (${why}) is not loaded on demand`);
    const inMain = modules.find((x) => x.module === m);
    assert.ok(!inMain || inMain.min === 0, `${m} (${why}) puts ${inMain?.min} bytes in the main entry`);
  }
  for (const [m, why] of Object.entries(NOT_UP_FRONT)) {
    const inMain = modules.find((x) => x.module === m);
    assert.ok(!inMain || inMain.min === 0, `${m} (${why}) puts ${inMain?.min} bytes in the main entry`);
  }
});
