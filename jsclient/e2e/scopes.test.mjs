// Scoped sync in real browsers (docs/protocol.md, section 12), against the
// real server with a rules file: collection tasks, read and write scope
// `team in $claims.teams`, tokens that carry a teams claim. Each person has
// a browser context of their own (a fresh profile) and a page that uses the
// library as an app would, rendering what it holds.
//
// 1. Alice (teams [red]) and Bob (teams [blue, green]) hold only their
//    teams' tasks, and nothing of the others ever reached their browsers:
//    not in IndexedDB, not in the library's change events or live queries,
//    not in a single WebSocket frame or HTTP answer.
// 2. An admin moves a task from red to blue: it leaves Alice's device and
//    arrives on Bob's, live.
// 3. Alice is offline with an unsent edit when the operator denies her
//    (`convergo deny`): when she reconnects the server says revoked, her
//    device purges every task and lists the unsent edit as rejected.
// 4. Bob edits a blue task offline; meanwhile his token is reissued with
//    teams [green] only. He reconnects with the new token: the edit is
//    refused out_of_scope, rolled back and listed as rejected; his green
//    write goes through; the blue tasks leave his device.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { randomBytes } from 'node:crypto';

import { STATUSES } from '../src/constants.js';
import { Server, captureWire, convergo, launchBrowser, screenshot, signToken, waitFor, watchPage } from './harness.mjs';

const SECRET = 'e2e-scopes-secret-' + randomBytes(8).toString('hex');
const TASKS = 'tasks';
const RULES = { [TASKS]: { scope: 'team in $claims.teams' } };
const RUN = randomBytes(4).toString('hex');
// Every task's id and title carry its team and this run's mark, so a
// task's bytes can be looked for anywhere: IndexedDB, the wire.
const id = (team, n) => `${team}-${n}-${RUN}`;
const title = (team, n) => `${team.toUpperCase()}-ONLY-${RUN} task ${n}`;

const TIMEOUT = 30_000;

/** A token for tasks with the given teams. */
const tokenFor = (sub, teams) => signToken(SECRET, { sub, read: [TASKS], write: [TASKS], teams });

describe('scoped sync: two people, one collection, rules by team', () => {
  let server;
  let browser;
  let dir;
  let admin;
  // The seeded tasks: id -> {title, team}.
  const seeded = new Map();
  const people = {};

  /** Writes fields of task tid as the admin (every team) and checks the server applied them. */
  async function adminWrite(tid, fields) {
    const got = await server.push('admin', tid, fields, TASKS, { token: admin, subject: 'admin' });
    assert.deepEqual(got, [STATUSES.applied], `the admin's write of ${tid} applied`);
  }

  /** What the server holds of tasks, for the admin: id -> doc. */
  const serverTasks = () => server.docs(TASKS, admin);

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'convergo-scopes-'));
    const rules = path.join(dir, 'rules.json');
    writeFileSync(rules, JSON.stringify(RULES));
    server = await new Server({ extraArgs: ['--secret', SECRET, '--rules', rules] }).start();
    browser = await launchBrowser();
    admin = tokenFor('admin', ['red', 'blue', 'green']);
    for (const [team, n] of [['red', 3], ['blue', 3], ['green', 2]]) {
      for (let i = 1; i <= n; i++) {
        seeded.set(id(team, i), { title: title(team, i), team });
        await adminWrite(id(team, i), { title: title(team, i), team });
      }
    }
    // The task that moves in test 2, red for now; its title names no team.
    await adminWrite(id('move', 1), { title: `moves from red to blue ${RUN}`, team: 'red' });
  });

  after(async () => {
    for (const p of Object.values(people)) await p.ctx.close().catch(() => {});
    await browser?.close();
    await server?.dispose('scopes');
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /**
   * Opens a person's page in a fresh browser context: the library on the
   * server's origin with their token, rendering what it holds, and logging
   * every id its change events and live query ever named.
   */
  async function openPerson(who, token) {
    const ctx = await browser.newContext({ viewport: { width: 640, height: 560 } });
    const page = await ctx.newPage();
    watchPage(page);
    const wire = captureWire(page);
    // A document of the server's origin that is not the demo (which would
    // open its own database and sync demo.todos).
    await page.goto(`${server.url}/convergo/errors.js`);
    await page.evaluate(async ({ url, token, who, c }) => {
      const { open } = await import('/convergo/index.js');
      document.title = who;
      document.body.innerHTML = `<style>body{font:15px system-ui,sans-serif;margin:16px;color:#222}
        h1{font-size:20px;margin:0 0 4px} .st{color:#555;margin-bottom:10px} li{margin:2px 0}
        .team{display:inline-block;min-width:48px;font-weight:600} .rej{color:#a00}</style>
        <h1></h1><div class="st"></div><h2 style="font-size:16px">Tasks</h2><ul id="rows"></ul>
        <h2 style="font-size:16px">Rejected changes</h2><ul id="rejected"></ul>`;
      document.querySelector('h1').textContent = `${who}`;
      const db = await open({ url, token, name: `scopes-${who}`, collections: [c], backoff: { base: 100, max: 2000 } });
      const tasks = db.collection(c);
      const log = { changed: new Set(), revoked: [], rows: [] };
      window.db = db;
      window.tasks = tasks;
      window.log = log;
      const li = (text, cls) => Object.assign(document.createElement('li'), { textContent: text, className: cls ?? '' });
      const renderRejected = async () => {
        const rej = await db.rejected();
        document.getElementById('rejected').replaceChildren(...rej.map((r) => li(`${r.recordId}: ${r.code} (${JSON.stringify(r.change.fields)})`, 'rej')));
      };
      const renderStatus = (s) => {
        document.querySelector('.st').textContent = `${s.online ? 'online' : 'offline'}, ${s.pending} pending, ${s.rejected} rejected${s.revoked ? ', REVOKED' : ''}`;
      };
      db.on('change', (e) => {
        if (e.collection === c) for (const i of e.ids) log.changed.add(i);
      });
      db.on('revoked', (r) => log.revoked.push(r));
      db.on('status', (s) => {
        renderStatus(s);
        renderRejected();
      });
      renderStatus(db.status);
      tasks.subscribe({ orderBy: 'title' }, (docs) => {
        log.rows = docs.map((d) => d.id);
        for (const d of docs) log.changed.add(d.id);
        const ul = document.getElementById('rows');
        ul.replaceChildren(...docs.map((d) => {
          const el = li('');
          el.append(Object.assign(document.createElement('span'), { className: 'team', textContent: String(d.team) }), ` ${d.title}`);
          return el;
        }));
      });
    }, { url: server.url, token, who, c: TASKS });
    const p = { who, ctx, page, wire };
    people[who] = p;
    return p;
  }

  /** What a person's library holds and has said, from the page. */
  const state = (p) => p.page.evaluate(async () => ({
    held: (await window.tasks.list()).map((d) => d.id).sort(),
    docs: Object.fromEntries((await window.tasks.list()).map((d) => [d.id, { title: d.title, team: d.team }])),
    rows: [...window.log.rows].sort(),
    changed: [...window.log.changed].sort(),
    revoked: window.log.revoked,
    status: window.db.status,
  }));

  /**
   * Every IndexedDB object store of a person's database, read raw (not
   * through the library): its rows' [collection, id] keys where it has them
   * and every string in it, binary values read as Latin-1 so that encoded
   * bytes are searched too.
   */
  const rawIDB = (p) => p.page.evaluate(async (name) => {
    const req = (r) => new Promise((resolve, reject) => { r.onsuccess = () => resolve(r.result); r.onerror = () => reject(r.error); });
    const idb = await req(indexedDB.open(name));
    try {
      const out = {};
      for (const s of idb.objectStoreNames) {
        const rows = await req(idb.transaction(s).objectStore(s).getAll());
        const strings = [];
        const walk = (v, depth) => {
          if (depth > 20 || v == null) return;
          if (typeof v === 'string') strings.push(v);
          else if (v instanceof ArrayBuffer || ArrayBuffer.isView(v)) {
            const b = v instanceof ArrayBuffer ? new Uint8Array(v) : new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
            let t = '';
            for (let i = 0; i < b.length; i++) t += String.fromCharCode(b[i]);
            strings.push(t);
          } else if (v instanceof Map) for (const [k, x] of v) { walk(k, depth + 1); walk(x, depth + 1); }
          else if (typeof v === 'object') for (const [k, x] of Object.entries(v)) { strings.push(k); walk(x, depth + 1); }
        };
        walk(rows, 0);
        out[s] = { count: rows.length, keys: rows.filter((r) => r && typeof r.c === 'string').map((r) => `${r.c}/${r.id}`), text: strings.join('\n') };
      }
      return out;
    } finally {
      idb.close();
    }
  }, `convergo-scopes-${p.who}`);

  /** Fails when any of needles occurs in a person's IndexedDB or anything their browser received. */
  async function neverArrived(p, needles, what) {
    const raw = await rawIDB(p);
    for (const [store, { text }] of Object.entries(raw)) {
      for (const n of needles) assert.ok(!text.includes(n), `${p.who}'s IndexedDB (${store}) holds ${JSON.stringify(n)} (${what})`);
    }
    for (const n of needles) {
      const b = Buffer.from(n);
      const i = p.wire.findIndex((buf) => buf.includes(b));
      assert.equal(i, -1, `${p.who}'s browser received ${JSON.stringify(n)} (${what}) in message ${i} of ${p.wire.length}`);
    }
  }

  /** Waits until a person holds exactly want (ids), in the library and its live query. */
  async function holds(p, want, message) {
    const w = JSON.stringify([...want].sort());
    let last;
    await waitFor(async () => {
      last = await state(p);
      return JSON.stringify(last.held) === w && JSON.stringify(last.rows) === w;
    }, { timeout: TIMEOUT, message: `${p.who} to hold ${message}` }).catch((err) => {
      err.message += `\nwant ${w}\nheld ${JSON.stringify(last?.held)}\nrows ${JSON.stringify(last?.rows)}\nstatus ${JSON.stringify(last?.status)}`;
      throw err;
    });
    return last;
  }

  const ids = (...teams) => [...seeded].filter(([, t]) => teams.includes(t.team)).map(([i]) => i);
  /** The needles of the seeded tasks of teams: their ids and titles. */
  const needles = (...teams) => [...seeded].filter(([, t]) => teams.includes(t.team)).flatMap(([i, t]) => [i, t.title]);
  // Uncaught errors of a page. Console errors are not counted: a page
  // offline or refused logs failed requests and sockets, as it should.
  const errorsOf = (p) => p.page.errors.filter((e) => e.startsWith('pageerror:'));

  it('1. each person holds only their teams\' tasks, and nothing of the others ever reaches their browser', async (t) => {
    const alice = await openPerson('alice', tokenFor('alice', ['red']));
    const bob = await openPerson('bob', tokenFor('bob', ['blue', 'green']));
    const aliceWants = [...ids('red'), id('move', 1)];
    const bobWants = ids('blue', 'green');
    await holds(alice, aliceWants, 'the red tasks');
    await holds(bob, bobWants, 'the blue and green tasks');

    // Live writes of each, in their own scope, while both are connected.
    await alice.page.evaluate((r) => window.tasks.put(r.id, { title: r.title, team: 'red' }), { id: id('red', 9), title: title('red', 9) });
    await bob.page.evaluate((r) => window.tasks.put(r.id, { title: r.title, team: 'blue' }), { id: id('blue', 9), title: title('blue', 9) });
    seeded.set(id('red', 9), { title: title('red', 9), team: 'red' });
    seeded.set(id('blue', 9), { title: title('blue', 9), team: 'blue' });
    await waitFor(async () => {
      const docs = await serverTasks();
      return docs.get(id('red', 9))?.team === 'red' && docs.get(id('blue', 9))?.team === 'blue';
    }, { timeout: TIMEOUT, message: 'the server to hold both live writes' });
    // Fences: written after both, one per scope. The server sends each
    // reader its log in order, so once a person holds their fence, the
    // other's live write (before it in the log) has been dealt with.
    await adminWrite(id('red', 'fence'), { title: title('red', 'fence'), team: 'red' });
    await adminWrite(id('blue', 'fence'), { title: title('blue', 'fence'), team: 'blue' });
    seeded.set(id('red', 'fence'), { title: title('red', 'fence'), team: 'red' });
    seeded.set(id('blue', 'fence'), { title: title('blue', 'fence'), team: 'blue' });
    const a = await holds(alice, [...ids('red'), id('move', 1)], 'the red tasks, her live write and the red fence');
    const b = await holds(bob, ids('blue', 'green'), 'the blue and green tasks, his live write and the blue fence');

    // Nothing outside the scope was ever named by the library's events or
    // live queries.
    const aliceMay = new Set([...ids('red'), id('move', 1)]);
    const bobMay = new Set(ids('blue', 'green'));
    assert.deepEqual(a.changed.filter((i) => !aliceMay.has(i)), [], "alice's change events and live query named only red tasks");
    assert.deepEqual(b.changed.filter((i) => !bobMay.has(i)), [], "bob's change events and live query named only blue and green tasks");
    assert.equal(a.docs[id('red', 2)].title, title('red', 2));
    assert.equal(b.docs[id('green', 1)].team, 'green');

    // Raw IndexedDB: the records and seals kept are exactly the scope's.
    for (const [p, want] of [[alice, aliceMay], [bob, bobMay]]) {
      const raw = await rawIDB(p);
      assert.deepEqual(raw.records.keys.sort(), [...want].map((i) => `${TASKS}/${i}`).sort(), `${p.who}'s IndexedDB records`);
      assert.ok(raw.sealed.keys.every((k) => want.has(k.slice(TASKS.length + 1))), `${p.who}'s IndexedDB seals: ${raw.sealed.keys}`);
    }
    // Not a byte of another team's tasks reached either browser.
    await neverArrived(alice, needles('blue', 'green'), 'a blue or green task');
    await neverArrived(bob, needles('red'), 'a red task');

    t.diagnostic(`screenshots: ${await screenshot(alice.page, 'scopes-1-alice.png')}, ${await screenshot(bob.page, 'scopes-1-bob.png')}`);
    for (const p of [alice, bob]) assert.deepEqual(errorsOf(p), [], `${p.who}'s page errors`);
  });

  it('2. a task moved from red to blue leaves Alice\'s device and arrives on Bob\'s, live', async (t) => {
    const { alice, bob } = people;
    assert.ok(alice && bob, 'test 1 opened both people');
    const moved = id('move', 1);
    const navigations = { alice: 0, bob: 0 };
    for (const p of [alice, bob]) p.page.on('framenavigated', () => navigations[p.who]++);
    // The admin moves it and gives it a blue title in the same change:
    // Alice must not receive even that.
    const movedTitle = `BLUE-ONLY-${RUN} moved from red`;
    await adminWrite(moved, { title: movedTitle, team: 'blue' });

    await holds(alice, ids('red'), 'the red tasks without the moved one');
    const b = await holds(bob, [...ids('blue', 'green'), moved], 'the blue and green tasks and the moved one');
    assert.deepEqual(b.docs[moved], { title: movedTitle, team: 'blue' });
    assert.deepEqual(navigations, { alice: 0, bob: 0 }, 'no page reloaded');

    // The leave removed it locally only: Alice sent nothing, and the
    // server still holds it, blue.
    const a = await state(alice);
    assert.equal(a.status.pending, 0, "nothing in alice's outbox");
    assert.deepEqual((await serverTasks()).get(moved), { title: movedTitle, team: 'blue' });
    const raw = await rawIDB(alice);
    assert.ok(!raw.records.keys.includes(`${TASKS}/${moved}`), "alice's IndexedDB dropped the moved task");
    await neverArrived(alice, [movedTitle, ...needles('blue', 'green')], 'the moved task\'s new state or a blue or green task');

    t.diagnostic(`screenshots: ${await screenshot(alice.page, 'scopes-2-alice.png')}, ${await screenshot(bob.page, 'scopes-2-bob.png')}`);
    for (const p of [alice, bob]) assert.deepEqual(errorsOf(p), [], `${p.who}'s page errors`);
  });

  it('3. a subject denied while offline purges everything on reconnect and is told revoked', async (t) => {
    const { alice, bob } = people;
    assert.ok(alice && bob, 'test 1 opened both people');
    const aliceToken = tokenFor('alice', ['red']);
    await alice.ctx.setOffline(true);
    await waitFor(async () => !(await state(alice)).status.online, { timeout: TIMEOUT, message: 'alice to be offline' });
    // An unsent edit, made offline.
    await alice.page.evaluate((i) => window.tasks.update(i, { title: 'alice edited this offline' }), id('red', 2));
    await waitFor(async () => (await state(alice)).status.pending === 1, { timeout: TIMEOUT, message: 'alice to hold her offline edit' });

    // The operator denies her, through the store the server runs on.
    const out = await convergo(['deny', '--store', server.store, '--subject', 'alice', '--reason', 'left the company']);
    t.diagnostic(`convergo deny: ${out.trim()}`);
    // The server refuses her token from now on (it follows the list).
    await waitFor(async () => {
      try {
        await server.records(TASKS, aliceToken);
        return false;
      } catch (err) {
        return /403/.test(err.message) && /revoked/.test(err.message) && err.message;
      }
    }, { timeout: TIMEOUT, message: "the server to refuse alice's token with 403 revoked" });

    await alice.ctx.setOffline(false);
    let a;
    await waitFor(async () => {
      a = await state(alice);
      return a.status.revoked && a.revoked.length >= 1;
    }, { timeout: TIMEOUT, message: 'alice to be told revoked' }).catch((err) => {
      err.message += `\nstate ${JSON.stringify(a)}`;
      throw err;
    });
    a = await holds(alice, [], 'nothing (purged)');
    assert.equal(a.revoked.length, 1, 'one revoked event');
    assert.equal(a.revoked[0].moved, 1, 'the unsent edit moved to the rejected changes');
    assert.equal(a.status.pending, 0);
    const raw = await rawIDB(alice);
    assert.deepEqual(raw.records.keys, [], 'no record left in IndexedDB');
    assert.deepEqual(raw.sealed.keys, [], 'no seal left in IndexedDB');
    assert.equal(raw.outbox.count, 0, 'an empty outbox');
    const rejected = await alice.page.evaluate(() => window.db.rejected());
    assert.deepEqual(rejected.map((r) => [r.recordId, r.code, r.change.fields.title]), [[id('red', 2), 'revoked', 'alice edited this offline']]);
    // Her edit never reached the server.
    assert.equal((await serverTasks()).get(id('red', 2))?.title, title('red', 2));

    // Bob, not denied, keeps syncing.
    const after = id('blue', 'after-deny');
    seeded.set(after, { title: title('blue', 'after-deny'), team: 'blue' });
    await adminWrite(after, { title: title('blue', 'after-deny'), team: 'blue' });
    await holds(bob, [...ids('blue', 'green'), id('move', 1)], "the blue and green tasks and the admin's new one");
    await waitFor(() => alice.page.evaluate(() => document.getElementById('rejected').children.length === 1), { message: "alice's page to list the rejected edit" });
    t.diagnostic(`screenshot: ${await screenshot(alice.page, 'scopes-3-alice-revoked.png')}`);
  });

  it('4. an offline write outside the reissued token\'s scope is refused out_of_scope, rolled back and listed', async (t) => {
    const { bob } = people;
    assert.ok(bob, 'test 1 opened bob');
    await bob.ctx.setOffline(true);
    await waitFor(async () => !(await state(bob)).status.online, { timeout: TIMEOUT, message: 'bob to be offline' });
    const edited = id('blue', 2);
    const mine = id('green', 'bob');
    await bob.page.evaluate(([e, m, mt]) => Promise.all([
      window.tasks.update(e, { title: 'bob edited this offline' }),
      window.tasks.put(m, { title: mt, team: 'green' }),
    ]), [edited, mine, title('green', 'bob')]);
    await waitFor(async () => (await state(bob)).status.pending === 2, { timeout: TIMEOUT, message: 'bob to hold his two offline writes' });
    seeded.set(mine, { title: title('green', 'bob'), team: 'green' });

    // Meanwhile Bob leaves the blue team: his backend reissues his token.
    await bob.page.evaluate((tok) => window.db.setToken(tok), tokenFor('bob', ['green']));
    await bob.ctx.setOffline(false);

    let b;
    await waitFor(async () => {
      b = await state(bob);
      return b.status.online && b.status.pending === 0 && b.status.rejected === 1;
    }, { timeout: TIMEOUT, message: 'bob to sync with one rejected change' }).catch((err) => {
      err.message += `\nstate ${JSON.stringify(b)}`;
      throw err;
    });
    const rejected = await bob.page.evaluate(() => window.db.rejected());
    assert.deepEqual(rejected.map((r) => [r.recordId, r.code, r.change.fields.title]), [[edited, 'out_of_scope', 'bob edited this offline']]);
    // Rolled back: the blue tasks (the edited one included) left his
    // device; the server kept the admin's title; his green write landed.
    b = await holds(bob, ids('green'), 'the green tasks only, his offline one included');
    assert.equal(b.docs[mine].title, title('green', 'bob'));
    const docs = await serverTasks();
    assert.equal(docs.get(edited)?.title, title('blue', 2), 'the server kept the blue title');
    assert.deepEqual(docs.get(mine), { title: title('green', 'bob'), team: 'green' });
    const raw = await rawIDB(bob);
    assert.deepEqual(raw.records.keys.sort(), ids('green').map((i) => `${TASKS}/${i}`).sort(), "bob's IndexedDB holds only green records");
    assert.ok(!raw.records.text.includes('bob edited this offline'), 'the refused edit is gone from his records');
    await waitFor(() => bob.page.evaluate(() => document.getElementById('rejected').children.length === 1), { message: "bob's page to list the rejected edit" });
    t.diagnostic(`screenshot: ${await screenshot(bob.page, 'scopes-4-bob-out-of-scope.png')}`);
    // Still, over the whole file, no red task reached Bob's browser.
    await neverArrived(bob, needles('red'), 'a red task');
    assert.deepEqual(errorsOf(bob), [], "bob's page errors");
  });
});

