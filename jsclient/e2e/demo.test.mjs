// The demo app itself: usable by keyboard and by role and name (what a
// screen reader sees), edits and deletes reach the server, and records
// from other clients are treated as untrusted input.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { STATUSES } from '../src/constants.js';

import { Server, launchBrowser, openDemo, pane, serverTodos, shown, todo, waitFor, waitSynced } from './harness.mjs';

describe('demo app', () => {
  let server;
  let browser;

  before(async () => {
    server = await new Server().start();
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    await server?.dispose('demo');
  });

  it('adds, ticks, renames, cancels a rename and deletes by keyboard, found by role and name', async (t) => {
    const ctx = await browser.newContext();
    t.after(() => ctx.close());
    const page = await openDemo(ctx, server.url, 'Alice');
    const alice = page.getByRole('region', { name: 'Alice' });
    await alice.getByRole('heading', { name: 'Alice' }).waitFor();
    assert.equal(await alice.getByRole('button', { name: 'Go offline' }).getAttribute('aria-pressed'), 'false');

    const input = alice.getByRole('textbox', { name: 'New todo' });
    await input.fill('Plan the trip');
    await input.press('Enter');
    const done = alice.getByRole('checkbox', { name: 'Done: Plan the trip' });
    await done.waitFor();
    assert.equal(await input.inputValue(), '', 'the input clears after adding');
    const [id] = [...(await shown(alice))].find(([, v]) => v.title === 'Plan the trip');

    await done.focus();
    await page.keyboard.press('Space');
    await waitFor(() => done.isChecked(), { message: 'the checkbox to tick' });

    const edit = alice.getByRole('button', { name: 'Edit “Plan the trip”' });
    await edit.focus();
    await page.keyboard.press('Enter');
    const title = alice.getByRole('textbox', { name: 'New title for “Plan the trip”' });
    await waitFor(() => title.evaluate((el) => el === document.activeElement), { message: 'the title editor to take focus' });
    await page.keyboard.press('ControlOrMeta+a');
    await page.keyboard.type('Plan the summer trip');
    await page.keyboard.press('Enter');
    const renamed = alice.getByRole('button', { name: 'Edit “Plan the summer trip”' });
    await renamed.waitFor();
    assert.ok(await renamed.evaluate((el) => el === document.activeElement), 'focus returns to the Edit button');

    // Escape leaves the title as it was.
    await page.keyboard.press('Enter');
    await page.keyboard.type('not this');
    await page.keyboard.press('Escape');
    assert.equal(await todo(alice, id).getByTestId('todo-title').textContent(), 'Plan the summer trip');

    await waitSynced(alice);
    assert.deepEqual((await serverTodos(server)).get(id), { title: 'Plan the summer trip', done: true });

    await alice.getByRole('button', { name: 'Delete “Plan the summer trip”' }).press('Enter');
    await waitFor(async () => (await todo(alice, id).count()) === 0, { message: 'the todo to go' });
    await waitSynced(alice);
    const rec = (await server.records()).get(id);
    assert.ok(rec.deleted, 'the server holds a tombstone');
    assert.equal((await server.docs()).has(id), false, 'and no visible todo');
    assert.equal(await alice.getByTestId('empty').isVisible(), true, 'the empty list says so');
    assert.deepEqual(page.errors, []);
  });

  it('shows records from other clients as text, whatever their fields hold', async (t) => {
    const ctx = await browser.newContext();
    t.after(() => ctx.close());
    const page = await openDemo(ctx, server.url, 'Alice');
    const alice = pane(page, 'alice');
    await waitSynced(alice);

    const hostile = '<img src=x onerror="window.pwned=1">';
    const statuses = [
      ...(await server.push('mallory', 'hostile-1', { title: hostile, done: 'yes', created: 'soon' })),
      ...(await server.push('mallory', 'hostile-2', { title: 42, done: 1, created: -1 })),
      ...(await server.push('mallory', 'hostile-3', { unrelated: new Map([['deep', [1, 2, 3]]]) })),
    ];
    assert.deepEqual(statuses, [STATUSES.applied, STATUSES.applied, STATUSES.applied], 'the server applied the foreign records');

    await waitFor(async () => (await shown(alice)).size === 3, { message: 'the foreign records to arrive live' });
    const rows = await shown(alice);
    assert.deepEqual(rows.get('hostile-1'), { title: hostile, done: false });
    assert.deepEqual(rows.get('hostile-2'), { title: '(untitled)', done: false });
    assert.deepEqual(rows.get('hostile-3'), { title: '(untitled)', done: false });
    assert.equal(await page.evaluate(() => window.pwned ?? null), null, 'no markup from a record ran');
    assert.equal(await page.locator('[data-testid=todo] img').count(), 0);
    assert.deepEqual(page.errors, []);
  });
});
