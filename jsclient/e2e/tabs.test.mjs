// Two tabs of one browser profile share one connection per database to the
// server (one tab leads, the others follow through IndexedDB and
// BroadcastChannel), and both update live when either writes. When the
// leading tab closes, the other takes over. Each person of the demo has two
// databases, the todos (anonymous) and the notes (signed in), so a profile
// holds two connections: one for each. A sign-in in either tab is the
// database's: it reaches the connection whichever tab holds it.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { PATHS } from '../src/constants.js';

import {
  Server, addTodo, launchBrowser, openDemo, pane, renameTodo, shown, todo, waitFor, waitSynced,
} from './harness.mjs';

const LIVE = 'convergo_live_connections';

describe('two tabs of one profile', () => {
  let server;
  let browser;
  let ctx;
  let tab1;
  let tab2;
  let p1;
  let p2;
  let leader;
  let bob;
  // Every WebSocket any page of the context opens to the server, with what
  // it sent: the notes database's subscribes name demo.notes.
  const sockets = [];
  const isNotes = (s) => s.sent.some((b) => b.includes('demo.notes'));
  // A closed page's sockets are gone even if Playwright reports no close.
  const live = () => sockets.filter((s) => !s.closed && !s.page.isClosed());
  // The todos' connections.
  const open = () => live().filter((s) => !isNotes(s));
  const notes = () => live().filter(isNotes);

  before(async () => {
    server = await new Server().start();
    browser = await launchBrowser();
    ctx = await browser.newContext();
    ctx.on('page', (page) => page.on('websocket', (ws) => {
      if (new URL(ws.url()).pathname !== PATHS.live) return;
      const s = { page, ws, closed: false, sent: [] };
      sockets.push(s);
      ws.on('framesent', ({ payload }) => s.sent.push(Buffer.from(payload)));
      ws.on('close', () => { s.closed = true; });
    }));
    tab1 = await openDemo(ctx, server.url, 'Alice');
    p1 = pane(tab1, 'alice');
    await waitSynced(p1, { what: 'tab 1' });
    tab2 = await openDemo(ctx, server.url, 'Alice');
    p2 = pane(tab2, 'alice');
  });

  after(async () => {
    await browser?.close();
    await server?.dispose('tabs');
  });

  it('the second tab shows the sync status of the tab that leads', async () => {
    await waitSynced(p2, { what: 'tab 2 (a follower)', timeout: 10_000 });
  });

  it('hold exactly one WebSocket per database between them', async (t) => {
    await sleep(1500); // time for a second connection to show up, if one would
    assert.equal(open().length, 1, `open todos WebSockets from the two tabs: ${open().map((s) => s.ws.url()).join(', ')}`);
    assert.equal(notes().length, 1, `open notes WebSockets from the two tabs: ${notes().length}`);
    assert.equal(sockets.length, 2, 'no tab opened and dropped another connection');
    assert.equal(await server.metric(LIVE), 2, 'the server counts two live connections, todos and notes');
    leader = open()[0].page;
    t.diagnostic(`the connection belongs to tab ${leader === tab1 ? 1 : 2}`);
  });

  it('update each other live, and get other browsers\' writes live', async (t) => {
    // A write in either tab shows in the other without a reload, and
    // reaches the server.
    const fromTab1 = await addTodo(p1, 'Written in tab 1');
    await todo(p2, fromTab1).waitFor({ timeout: 10_000 });
    const fromTab2 = await addTodo(p2, 'Written in tab 2');
    await todo(p1, fromTab2).waitFor({ timeout: 10_000 });
    await renameTodo(p2, fromTab1, 'Renamed in tab 2');
    await waitFor(async () => (await shown(p1)).get(fromTab1)?.title === 'Renamed in tab 2',
      { message: 'tab 1 to show the rename from tab 2' });
    await todo(p1, fromTab2).getByTestId('todo-done').check();
    await waitFor(async () => (await shown(p2)).get(fromTab2)?.done === true,
      { message: 'tab 2 to show the tick from tab 1' });

    // A write from another browser arrives live in both tabs.
    const other = await browser.newContext();
    bob = pane(await openDemo(other, server.url, 'Bob'), 'bob');
    const fromBob = await addTodo(bob, 'Written by Bob elsewhere');
    await todo(p1, fromBob).waitFor({ timeout: 10_000 });
    await todo(p2, fromBob).waitFor({ timeout: 10_000 });
    await waitSynced(p1);
    const docs = await server.docs();
    assert.deepEqual(
      [fromTab1, fromTab2, fromBob].map((id) => docs.get(id) && { title: docs.get(id).title, done: docs.get(id).done }),
      [
        { title: 'Renamed in tab 2', done: false },
        { title: 'Written in tab 2', done: true },
        { title: 'Written by Bob elsewhere', done: false },
      ],
    );
    // Bob's notes connect beside his todos, without holding his page up:
    // on a loaded machine after his first todo has arrived.
    let live = null;
    await waitFor(async () => (live = await server.metric(LIVE)) === 4,
      { message: 'this profile and Bob: two live connections each' }).catch((e) => {
      throw new Error(`${e.message}; the server counts ${live}`);
    });
    assert.equal(open().length, 1, 'still one todos WebSocket from the two tabs');
    assert.equal(notes().length, 1, 'still one notes WebSocket from the two tabs');
    assert.deepEqual([...tab1.errors, ...tab2.errors], []);
  });

  it("a sign-in in the following tab reaches the leading tab's connection", async () => {
    assert.equal(notes().length, 1, 'the earlier tests set the scene');
    const before = notes()[0];
    const notesLeader = before.page;
    const follower = notesLeader === tab1 ? tab2 : tab1;
    // Carol signs in to the notes database in the tab that does not hold
    // its connection, and writes a private note there.
    const token = (await (await fetch(`${server.url}/demo/token?name=carol`, { method: 'POST' })).json()).token;
    const id = await follower.evaluate(async (tok) => {
      const n = window.convergoDemo.panes.alice.notes;
      n.db.setToken(tok);
      const noteId = crypto.randomUUID();
      await n.notes.put(noteId, { title: 'Carol, from the following tab', owner: 'demo:carol', shared: false, created: Date.now() });
      return noteId;
    }, token);
    // The leader's connection ends Alice's session and signs in as Carol,
    // who pushes the note: the server shows it to Carol (it is private).
    await waitFor(async () => (await server.docs('demo.notes', token)).has(id), { timeout: 15_000, message: "Carol's note to reach the server" });
    await waitFor(() => before.closed && notes().length === 1, { message: "Alice's notes session to end and Carol's to be the one" });
    assert.equal(notes()[0].page, notesLeader, 'the leading tab holds it');
    const status = await follower.evaluate(() => window.convergoDemo.panes.alice.notes.db.status);
    assert.deepEqual([status.rejected, status.held], [0, 0], 'nothing refused (forged_replica) or held');
    assert.deepEqual([...tab1.errors, ...tab2.errors], []);
  });

  it('hand the connection to the other tab when the leading one closes', async () => {
    assert.ok(leader && bob, 'the earlier tests set the scene');
    const survivor = leader === tab1 ? tab2 : tab1;
    const sp = pane(survivor, 'alice');
    await leader.close();
    await waitFor(() => open().length === 1 && open()[0].page === survivor,
      { timeout: 15_000, message: 'the surviving tab to open the connection' });
    await waitFor(() => notes().length === 1 && notes()[0].page === survivor,
      { timeout: 15_000, message: 'the surviving tab to open the notes connection' });
    await waitFor(async () => (await server.metric(LIVE)) === 4, { message: 'the server to count the replacements' });
    const afterTakeover = await addTodo(bob, 'Written by Bob after the takeover');
    await todo(sp, afterTakeover).waitFor({ timeout: 15_000 });
    const fromSurvivor = await addTodo(sp, 'Written by the surviving tab');
    await todo(bob, fromSurvivor).waitFor({ timeout: 15_000 });
    await waitSynced(sp, { what: 'the surviving tab, now leading' });
    assert.deepEqual(survivor.errors, []);
  });
});
