// Offline edits from two replicas merge field by field, and the same
// field converges to the later write everywhere.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';

import {
  Server, addTodo, clockPast, errorsBeyondOffline, launchBrowser, openDemo, pane, renameTodo, sameTodos, screenshot,
  serverTodos, setOffline, shown, status, todo, waitFor, waitSynced, watchRequests,
} from './harness.mjs';

describe('offline merge', () => {
  let server;
  let browser;

  before(async () => {
    server = await new Server().start();
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    await server?.dispose('merge');
  });

  it('two offline browsers: different fields both survive, the same field goes to the later write', async (t) => {
    const ctxA = await browser.newContext();
    const ctxB = await browser.newContext();
    t.after(() => Promise.all([ctxA.close(), ctxB.close()]));
    await watchRequests(ctxA);
    await watchRequests(ctxB);
    const a = await openDemo(ctxA, server.url, 'Alice');
    const b = await openDemo(ctxB, server.url, 'Bob');
    const pa = pane(a, 'alice');
    const pb = pane(b, 'bob');

    const milk = await addTodo(pa, 'Buy milk');
    const call = await addTodo(pa, 'Call mom');
    await waitSynced(pa);
    await waitFor(async () => (await shown(pb)).size === 2, { message: 'Bob to see both todos live' });

    await setOffline(ctxA, true);
    await setOffline(ctxB, true);
    await waitFor(async () => !(await status(pa)).online && !(await status(pb)).online,
      { message: 'both panes to show offline' });

    // Different fields of one record.
    await renameTodo(pa, milk, 'Buy oat milk');
    await todo(pb, milk).getByTestId('todo-done').check();
    // The same field of another: Bob writes last.
    await renameTodo(pa, call, 'Call mom tonight');
    await waitFor(async () => (await status(pa)).pending >= 2, { message: 'Alice to count her offline changes' });
    await clockPast(pb, pa);
    await renameTodo(pb, call, 'Call dad');
    await waitFor(async () => (await status(pb)).pending >= 2, { message: 'Bob to count his offline changes' });

    // Offline means offline: each side sees only its own edits and the
    // server has none of them (an open WebSocket would leak them).
    await sleep(500);
    assert.deepEqual(Object.fromEntries(await shown(pa)), {
      [milk]: { title: 'Buy oat milk', done: false },
      [call]: { title: 'Call mom tonight', done: false },
    });
    assert.deepEqual(Object.fromEntries(await shown(pb)), {
      [milk]: { title: 'Buy milk', done: true },
      [call]: { title: 'Call dad', done: false },
    });
    assert.deepEqual(Object.fromEntries(await serverTodos(server)), {
      [milk]: { title: 'Buy milk', done: false },
      [call]: { title: 'Call mom', done: false },
    });

    await setOffline(ctxA, false);
    await setOffline(ctxB, false);
    const want = {
      [milk]: { title: 'Buy oat milk', done: true },
      [call]: { title: 'Call dad', done: false },
    };
    for (const p of [pa, pb]) {
      await waitSynced(p, { timeout: 40_000 });
      await waitFor(async () => JSON.stringify(Object.fromEntries(await shown(p))) === JSON.stringify(want),
        { message: 'the merged list on both', timeout: 20_000 });
    }
    assert.deepEqual(Object.fromEntries(await serverTodos(server)), want);

    // The same-field winner is the later hybrid-logical-clock stamp, and it
    // is Bob's replica on the server.
    const rec = (await server.records()).get(call);
    assert.equal(rec.fields.title.value, 'Call dad');
    const replicaOf = (page, slug) => page.evaluate((s) => window.convergoDemo.panes[s].db.store.replica, slug);
    assert.equal(rec.fields.title.replica, await replicaOf(b, 'bob'));
    assert.notEqual(await replicaOf(a, 'alice'), await replicaOf(b, 'bob'));
    assert.equal(rec.fields.title.replica === (await server.records()).get(milk).fields.done.replica, true,
      'Bob stamped both the winning title and the tick');
    assert.equal((await server.records()).get(milk).fields.title.replica, await replicaOf(a, 'alice'));
    // Bob's todos may come by the pull of a round that dials once it is
    // over, or of the welcome after that dial: the network can go away
    // under that dial or pull, which then fails and Chromium logs it, or
    // before the page is told, which the client cannot know
    // (errorsBeyondOffline). A dial or request made once the page was
    // told is the client's, and is an error here.
    assert.deepEqual([...(await errorsBeyondOffline(a)), ...(await errorsBeyondOffline(b))], []);
  });

  it('the network going away while a round reads: the round does not dial, the online event does', async (t) => {
    const ctx = await browser.newContext();
    t.after(() => ctx.close());
    await watchRequests(ctx);
    const page = await openDemo(ctx, server.url, 'Alice');
    const alice = pane(page, 'alice');
    await waitSynced(alice);
    const syncer = (/** @type {string} */ what) => page.evaluate((w) => {
      const s = window.convergoDemo.panes.alice.db.syncer;
      // A round after a session that was welcomed leaves each collection
      // it need not pull to the next session's sub: ended as one whose
      // dial got no welcome, the round after it pulls them all.
      return w === 'end' ? ((s.resume = false), s.session?.close()) : w === 'live' ? s.live : s.waiting;
    }, what);
    await waitFor(() => syncer('live'), { message: 'a live session' });
    // The session ends; the round after it pulls, then dials. Its pulls
    // are held, and answered once the page heard the network go away (as
    // answers already on their way would be).
    const held = [];
    let holding = true;
    await ctx.route('**/v2/pull', async (route) => {
      if (!holding) return route.continue();
      held.push({ route, answer: await route.fetch() });
    });
    await syncer('end');
    await waitFor(() => held.length > 0, { message: 'the round to pull' });
    await setOffline(ctx, true);
    await waitFor(() => page.evaluate(() => !navigator.onLine), { message: 'the page to hear it is offline' });
    holding = false;
    for (const h of held) await h.route.fulfill({ response: h.answer });
    await waitFor(async () => (await syncer('waiting')) === 'offline' || (await errorsBeyondOffline(page)).length > 0,
      { message: 'the loop to wait for the online event, or a dial' });
    assert.deepEqual(await errorsBeyondOffline(page), []);
    assert.equal((await status(alice)).online, false);
    await setOffline(ctx, false);
    await waitFor(() => syncer('live'), { message: 'live again after the online event' });
    await waitSynced(alice);
    assert.deepEqual(await errorsBeyondOffline(page), []);
  });

  it('the demo\'s offline switches: two people in one page merge, and the screenshot shows it', async (t) => {
    const ctx = await browser.newContext({ viewport: { width: 1100, height: 760 }, colorScheme: 'light' });
    t.after(() => ctx.close());
    const page = await openDemo(ctx, server.url, 'Alice,Bob');
    const alice = pane(page, 'alice');
    const bob = pane(page, 'bob');

    const plants = await addTodo(alice, 'Water the plants');
    const bread = await addTodo(bob, 'Bake bread');
    for (const p of [alice, bob]) {
      await waitSynced(p);
      await todo(p, plants).waitFor();
      await todo(p, bread).waitFor();
    }

    for (const p of [alice, bob]) {
      await p.getByTestId('offline-toggle').click();
      await waitFor(async () => (await p.getByTestId('offline-toggle').getAttribute('aria-pressed')) === 'true',
        { message: 'the switch to show offline' });
      assert.equal((await status(p)).online, false);
    }

    await renameTodo(alice, plants, 'Water the plants and the herbs');
    await todo(bob, plants).getByTestId('todo-done').check();
    await todo(alice, bread).getByTestId('todo-delete').click();
    await waitFor(async () => (await todo(alice, bread).count()) === 0, { message: "Alice's delete to show" });
    await clockPast(bob, alice);
    await renameTodo(bob, bread, 'Bake sourdough bread');

    await waitFor(async () => (await status(alice)).pending >= 2 && (await status(bob)).pending >= 2,
      { message: 'both to count pending changes' });
    // Paused really means paused: nothing reached the server, and each
    // person still sees only their own edits.
    await sleep(500);
    const held = await serverTodos(server);
    assert.deepEqual(held.get(plants), { title: 'Water the plants', done: false });
    assert.deepEqual(held.get(bread), { title: 'Bake bread', done: false });
    assert.equal(await todo(alice, plants).getByTestId('todo-done').isChecked(), false);
    assert.equal(await todo(bob, plants).getByTestId('todo-title').textContent(), 'Water the plants');
    assert.equal(await todo(alice, bread).count(), 0);
    t.diagnostic(`screenshot while offline: ${await screenshot(page, 'demo-offline.png')}`);

    await alice.getByTestId('offline-toggle').click();
    await bob.getByTestId('offline-toggle').click();
    for (const p of [alice, bob]) {
      await waitSynced(p, { timeout: 40_000 });
      await waitFor(async () => {
        const s = await shown(p);
        const w = s.get(plants);
        // Different fields of plants: both survive. bread: Alice deleted it,
        // then Bob renamed it later, so the rename brings back a todo
        // holding only the later field (the delete wiped the rest).
        return w?.title === 'Water the plants and the herbs' && w.done === true && s.get(bread)?.title === 'Bake sourdough bread';
      }, { message: 'the merged list in both panes', timeout: 20_000 });
    }
    assert.ok(sameTodos(await shown(alice), await shown(bob)), 'both panes show the same list');
    assert.ok(sameTodos(await shown(alice), await serverTodos(server)), 'the panes show what the server holds');

    const file = await screenshot(page, 'demo-merge.png');
    t.diagnostic(`screenshot: ${file}`);
    assert.deepEqual(page.errors, []);
  });
});
