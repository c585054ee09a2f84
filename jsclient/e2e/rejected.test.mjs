// A change the server refuses because merging it would grow its record past
// the record size limit (MODEL.maxRecordBytes, 300 KiB): no client can see
// that coming, since it depends on what others wrote meanwhile. The demo
// rolls the change back, lists it as rejected (also after a reload) and
// lets the user discard it.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { MODEL } from '../src/constants.js';
import { Server, addTodo, launchBrowser, openDemo, pane, screenshot, serverTodos, shown, waitFor, waitReady, waitSynced } from './harness.mjs';

describe('rejected changes in the demo', () => {
  let server;
  let browser;

  before(async () => {
    server = await new Server().start();
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    await server?.dispose('rejected');
  });

  it('a change refused for growing its record past the limit is rolled back, listed after a reload, and discarded', async (t) => {
    const ctx = await browser.newContext({ viewport: { width: 900, height: 900 } });
    t.after(() => ctx.close());
    const page = await openDemo(ctx, server.url, 'Alice');
    const a = pane(page, 'alice');
    const id = await addTodo(a, 'Pack for the trip');
    await waitSynced(a);

    // Alice goes offline and attaches long notes to the todo (within the
    // limit on her side: the record is about 100 KiB).
    await a.getByTestId('offline-toggle').click();
    const noteBytes = Math.floor(MODEL.maxValueBytes * 0.8);
    await page.evaluate(([todoId, n]) => window.convergoDemo.panes.alice.todos.update(todoId, {
      title: 'Pack for the trip (see notes)',
      notes: 'n'.repeat(n),
    }), [id, noteBytes]);
    await waitFor(async () => (await shown(a)).get(id)?.title === 'Pack for the trip (see notes)', { message: 'the offline edit to show' });

    // Meanwhile someone else attaches two large photos' worth of fields:
    // with Alice's notes, the record would pass the limit.
    const big = 'p'.repeat(noteBytes);
    assert.deepEqual(await server.push('photos', id, { photo1: big, photo2: big }), [0]);
    assert.ok(3 * noteBytes > MODEL.maxRecordBytes, 'together they pass the record limit');

    // Alice comes back: the server refuses her change (too_large), the
    // demo takes it back and lists it.
    await a.getByTestId('offline-toggle').click();
    const rejected = a.getByTestId('rejected-item');
    await waitFor(async () => (await rejected.count()) === 1, { timeout: 20_000, message: 'the refused change to be listed' });
    assert.equal(await rejected.getAttribute('data-code'), 'too_large');
    assert.match(await rejected.getByTestId('rejected-what').textContent(), /Pack for the trip \(see notes\)/);
    assert.match(await rejected.getByTestId('rejected-why').textContent(), /^too_large/);
    await waitFor(async () => (await shown(a)).get(id)?.title === 'Pack for the trip', { message: "the todo to show the server's title again" });
    assert.equal((await serverTodos(server)).get(id)?.title, 'Pack for the trip');
    const local = await page.evaluate((todoId) => window.convergoDemo.panes.alice.todos.get(todoId), id);
    assert.equal(local.notes, undefined, 'the notes were rolled back too');
    assert.equal(local.photo1.length, noteBytes, "the other writer's fields arrived");
    await waitSynced(a);

    // After a reload the rejected change is still there, and shown.
    await page.reload();
    await waitReady(page);
    await waitFor(async () => (await rejected.count()) === 1, { message: 'the rejected change to be listed after the reload' });
    assert.ok(await a.getByTestId('rejected').isVisible());
    assert.match(await rejected.getByTestId('rejected-what').textContent(), /Pack for the trip \(see notes\)/);
    const file = await screenshot(page, 'demo-rejected.png');
    t.diagnostic(`screenshot: ${file}`);
    const status = await page.evaluate(() => window.convergoDemo.panes.alice.db.status);
    assert.equal(status.rejected, 1);

    // Discard: the list empties and stays empty after another reload.
    await rejected.getByTestId('rejected-discard').click();
    await waitFor(async () => (await rejected.count()) === 0, { message: 'the discarded change to leave the list' });
    assert.ok(await a.getByTestId('rejected').isHidden());
    await page.reload();
    await waitReady(page);
    assert.equal(await page.evaluate(async () => (await window.convergoDemo.panes.alice.db.rejected()).length), 0);
    assert.deepEqual(page.errors.filter((e) => !/too_large|413/.test(e)), []);
  });
});
