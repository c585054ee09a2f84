// A page that reloads while it is still pushing loses no write: every write
// the library acknowledged is in IndexedDB's outbox, and the reloaded page
// pushes what the server has not acknowledged.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { PATHS } from '../src/constants.js';

import {
  Server, launchBrowser, openDemo, pane, serverTodos, shown, status, waitFor, waitReady,
  waitSynced,
} from './harness.mjs';

const BATCH = 150;

/** Writes n todos through the library as fast as it takes them. */
function writeMany(page, label, n) {
  return page.evaluate(async ({ label, n }) => {
    const p = window.convergoDemo.panes.alice;
    const ids = await Promise.all(Array.from({ length: n }, (_, i) => p.add(`${label} ${String(i).padStart(3, '0')}`)));
    return { ids, status: p.db.status };
  }, { label, n });
}

describe('reload during sync', () => {
  let server;
  let browser;

  before(async () => {
    server = await new Server().start();
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    await server?.dispose('reload');
  });

  it('reloads right after writes, amid writes and pushes, and before a push answer lose nothing', async (t) => {
    const ctx = await browser.newContext();
    t.after(() => ctx.close());
    // Count what reaches the server over each transport, to show the
    // reload really interrupted a sync: pushes go over the live session
    // while it is open (push messages), over HTTP otherwise. The live
    // socket goes through this route, which can hold back the answers to
    // live pushes (pushed messages) as the HTTP route below does.
    let pushes = 0;
    let hold = false;
    let held = 0;
    // Deterministic CBOR: a message's key 0, its type, comes first.
    const typed = (m, type) => typeof m !== 'string' && m.length > 2 && m[1] === 0x00 && m[2] === 0x60 + type.length && m.subarray(3, 3 + type.length).toString() === type;
    await ctx.routeWebSocket((url) => url.pathname === PATHS.live, (ws) => {
      const toServer = ws.connectToServer();
      ws.onMessage((m) => {
        if (typed(m, 'push')) pushes++;
        toServer.send(m);
      });
      toServer.onMessage((m) => {
        if (hold && typed(m, 'pushed')) {
          held++;
          return; // never answered: the reload ends the session
        }
        ws.send(m);
      });
      ws.onClose((code, reason) => toServer.close({ code, reason }));
      toServer.onClose((code, reason) => ws.close({ code, reason }));
    });
    const page = await openDemo(ctx, server.url, 'Alice');
    const alice = pane(page, 'alice');
    await waitSynced(alice);
    page.on('request', (r) => { if (new URL(r.url()).pathname === PATHS.push) pushes++; });

    const first = await writeMany(page, 'first', BATCH);
    t.diagnostic(`before the first reload: pending ${first.status.pending}, syncing ${first.status.syncing}`);
    await page.reload();
    await waitReady(page);

    // Second round: a writer keeps writing one todo after another, and the
    // page reloads while writes and pushes are both in flight. Node hears of
    // each write the library acknowledged; those must all survive.
    const acked = [];
    await page.exposeFunction('ackedWrite', (id) => acked.push(id));
    const sentBefore = pushes;
    await page.evaluate(({ n }) => {
      const p = window.convergoDemo.panes.alice;
      (async () => {
        for (let i = 0; i < n; i++) window.ackedWrite(await p.add(`second ${String(i).padStart(3, '0')}`));
      })();
    }, { n: 10 * BATCH });
    await waitFor(() => pushes > sentBefore + 2 && acked.length >= 30,
      { timeout: 20_000, interval: 5, message: 'writes and pushes to be under way' });
    const mid = await status(alice);
    t.diagnostic(`second reload after ${acked.length} acknowledged writes, ${pushes - sentBefore} pushes sent, ${mid.pending} pending, syncing ${mid.syncing}`);
    await page.reload();
    await waitReady(page);
    const second = { ids: [...acked] };
    t.diagnostic(`acknowledged before the reload: ${second.ids.length}`);

    // Third round: the server applies a push but its answer never reaches
    // the page, which reloads. The reloaded page must push those changes
    // again (the server answers duplicate) and not lose or double them.
    await page.route('**' + PATHS.push, async (route) => {
      const res = await route.fetch().catch(() => null); // the server applies it
      if (hold) {
        held++;
        return; // never answered: the reload cancels it
      }
      if (res) await route.fulfill({ response: res }).catch(() => {});
      else await route.abort().catch(() => {});
    });
    await waitSynced(alice, { timeout: 30_000 });
    hold = true;
    // The third batch goes in one push: written while the page does not
    // sync, it is all pending when syncing resumes. Written as the page
    // syncs (on a loaded machine the writes trickle), it would go out in
    // several pushes, and the first one's answer, held back, would hold
    // the next ones for the push timeout (a minute).
    await page.evaluate(() => window.convergoDemo.panes.alice.db.pause());
    const third = await writeMany(page, 'third', BATCH);
    await page.evaluate(() => window.convergoDemo.panes.alice.db.resume());
    await waitFor(async () => {
      const docs = await server.docs();
      return third.ids.every((id) => docs.has(id));
    }, { timeout: 20_000, message: 'the server to apply the third batch' });
    const unacked = await status(alice);
    assert.ok(held >= 1, 'a push answer was held back');
    assert.equal(unacked.pending, BATCH, 'the page still holds every applied change as pending');
    const duplicatesBefore = await server.metric('convergo_push_changes_total{status="duplicate"}');
    await page.reload();
    hold = false;
    await waitReady(page);
    await waitSynced(alice, { timeout: 60_000 });
    const duplicates = (await server.metric('convergo_push_changes_total{status="duplicate"}')) - duplicatesBefore;
    t.diagnostic(`third round: ${held} push answers held back; after the reload the server saw ${duplicates} duplicate changes`);
    assert.ok(duplicates >= BATCH, `the reloaded page pushed the unacknowledged changes again (${duplicates} duplicates)`);

    const want = new Set([...first.ids, ...second.ids, ...third.ids]);
    assert.equal(want.size, 2 * BATCH + second.ids.length, 'every write got its own id');
    await waitSynced(alice, { timeout: 60_000 });

    const heldByServer = await serverTodos(server);
    const missing = [...want].filter((id) => !heldByServer.has(id));
    assert.deepEqual(missing, [], 'every acknowledged write reached the server');
    // Writes cut off by the reload may or may not have landed; nothing
    // else may have.
    const strays = [...heldByServer].filter(([id, todo]) => !want.has(id) && !/^second \d{3,4}$/.test(todo.title));
    assert.deepEqual(strays, []);
    await waitFor(async () => (await shown(alice)).size === heldByServer.size,
      { message: `the page to show all ${heldByServer.size} todos` });
    const onPage = await shown(alice);
    for (const [id, todo] of heldByServer) assert.deepEqual(onPage.get(id), todo, `todo ${id} on the page`);
    assert.deepEqual(page.errors, []);
  });
});
