// The demo app itself: usable by keyboard and by role and name (what a
// screen reader sees), edits and deletes reach the server, records from
// other clients are treated as untrusted input, and each person's notes
// (demo.notes, scoped by the server's built-in demo rule) stay private
// until shared.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { STATUSES } from '../src/constants.js';

import { Server, launchBrowser, openDemo, pane, screenshot, serverTodos, shown, todo, waitFor, waitSynced } from './harness.mjs';

const TIMEOUT = 30_000;

/** What a demo pane's notes list shows: a Map from id to {title, owner, shared, mine, canShare}. */
async function notesShown(p) {
  const rows = await p.getByTestId('note').evaluateAll((els) => els.map((e) => [e.dataset.id, {
    title: e.querySelector('[data-testid=note-title]').textContent,
    owner: e.dataset.owner,
    shared: e.querySelector('[data-testid=note-share]').checked,
    mine: e.dataset.mine === 'true',
    canShare: !e.querySelector('[data-testid=note-share]').disabled,
  }]));
  return new Map(rows);
}

/** Adds a note through a pane's UI and returns its id (titles unique within the test). */
async function addNote(p, text) {
  await p.getByTestId('new-note-title').fill(text);
  await p.getByTestId('add-note-button').click();
  return waitFor(async () => [...await notesShown(p)].find(([, n]) => n.title === text)?.[0], { timeout: TIMEOUT, message: `the note ${JSON.stringify(text)} to show` });
}

/** Waits until a pane's notes are online with nothing pending. */
const notesSynced = (p, who) => waitFor(async () => {
  const n = p.getByTestId('notes');
  return (await n.getAttribute('data-state')) === 'ready' && (await n.getAttribute('data-online')) === 'true' && (await n.getAttribute('data-pending')) === '0';
}, { timeout: TIMEOUT, message: `${who}'s notes to be synced` });

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

  it("Alice shares a note: it appears in Bob's pane; she unshares it: it leaves his pane", async (t) => {
    // A server of its own, so the screenshot shows the notes, not the
    // other tests' todos.
    const server = await new Server().start();
    const ctx = await browser.newContext({ viewport: { width: 1200, height: 1100 } });
    t.after(async () => {
      await ctx.close();
      await server.dispose('demo-notes');
    });
    const page = await openDemo(ctx, server.url, 'Alice,Bob');
    const a = pane(page, 'alice');
    const b = pane(page, 'bob');
    await notesSynced(a, 'alice');
    await notesSynced(b, 'bob');

    const privateNote = await addNote(a, "Alice's private plan");
    const picnic = await addNote(a, 'Picnic on Sunday?');
    const bobs = await addNote(b, "Bob's shopping list");
    await notesSynced(a, 'alice');
    await notesSynced(b, 'bob');
    assert.deepEqual([...(await notesShown(a)).values()].map((n) => [n.title, n.mine, n.shared]), [["Alice's private plan", true, false], ['Picnic on Sunday?', true, false]]);
    assert.deepEqual([...(await notesShown(b)).keys()], [bobs]);

    // Share: Bob's pane shows it, live, and he may not unshare it.
    await a.locator(`[data-testid=note][data-id="${picnic}"] [data-testid=note-share]`).check();
    const shared = await waitFor(async () => (await notesShown(b)).get(picnic), { timeout: TIMEOUT, message: "the shared note in Bob's pane" });
    assert.deepEqual(shared, { title: 'Picnic on Sunday?', owner: 'demo:alice', shared: true, mine: false, canShare: false });
    // Alice's private note was written before the share: had it been sent
    // to Bob, it would be there by now.
    assert.deepEqual([...(await notesShown(b)).keys()].sort(), [bobs, picnic].sort(), "Bob holds his note and the shared one, not Alice's private one");
    const bobHeld = await page.evaluate(async () => (await window.convergoDemo.panes.bob.notes.notes.list()).map((d) => d.id));
    assert.ok(!bobHeld.includes(privateNote), "Bob's database does not hold Alice's private note");
    // The server agrees: Bob's token reads the same.
    const bobToken = (await (await fetch(`${server.url}/demo/token?name=bob`, { method: 'POST' })).json()).token;
    assert.deepEqual([...(await server.docs('demo.notes', bobToken)).keys()].sort(), [bobs, picnic].sort());
    await b.locator(`[data-testid=note][data-id="${picnic}"]`).scrollIntoViewIfNeeded();
    t.diagnostic(`screenshot: ${await screenshot(page, 'demo-scopes.png')}`);

    // Unshare: it leaves Bob's pane (a leave entry, not a delete) and stays Alice's.
    await a.locator(`[data-testid=note][data-id="${picnic}"] [data-testid=note-share]`).uncheck();
    await waitFor(async () => !(await notesShown(b)).has(picnic), { timeout: TIMEOUT, message: "the unshared note to leave Bob's pane" });
    assert.deepEqual((await notesShown(a)).get(picnic), { title: 'Picnic on Sunday?', owner: 'demo:alice', shared: false, mine: true, canShare: true });
    await notesSynced(b, 'bob');
    assert.equal(await b.getByTestId('notes').getAttribute('data-pending'), '0', 'Bob sent nothing: the note left his copy only');
    const aliceToken = (await (await fetch(`${server.url}/demo/token?name=alice`, { method: 'POST' })).json()).token;
    assert.equal((await server.docs('demo.notes', aliceToken)).get(picnic)?.shared, false, 'the server still holds the note, unshared');
    t.diagnostic(`screenshot: ${await screenshot(page, 'demo-scopes-unshared.png')}`);
    assert.deepEqual(page.errors, []);
  });
});
