// Several tabs of one database: one leads (Web Locks) and holds the
// connection; the others write to IndexedDB, hear about changes over
// BroadcastChannel and ask the leader to push.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FakeServer } from './helpers/server.js';
import { fakeLocks, freshIDB, openClient, until } from './helpers/util.js';
import { subjectOfToken } from '../src/replica.js';

test('one tab leads; followers write, read and see changes', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const idb = freshIDB();
  const locks = fakeLocks();
  const tabOpts = { url: server.url, name: 'tabs', indexedDB: idb, locks, BroadcastChannel: globalThis.BroadcastChannel, collections: ['todos'] };
  const tab1 = await openClient(tabOpts);
  const tab2 = await openClient(tabOpts);
  const other = await openClient({ url: server.url, name: 'other', collections: ['todos'] });
  t.after(() => Promise.all([tab1.close(), tab2.close(), other.close()]));

  await until(() => tab1.status.leader && tab1.status.online, 'tab1 leads');
  assert.equal(tab2.status.leader, false);
  await until(() => other.status.online && server.sockets.size >= 2, 'other online');
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(server.sockets.size, 2, 'one connection for both tabs, one for the other client');
  await until(() => tab2.status.online, 'the follower mirrors the leader status');

  /** @type {any[][]} */
  const seen2 = [];
  tab2.collection('todos').subscribe({ orderBy: 'title' }, (docs) => seen2.push(docs.map((/** @type {any} */ d) => d.title)));

  // Remote change: the leader pulls it; the follower's query follows.
  await other.collection('todos').put('o1', { title: 'from other' });
  await until(() => seen2.at(-1)?.includes('from other'), 'follower subscription sees a remote change');

  // Follower write: goes to IndexedDB; the leader pushes it.
  await tab2.collection('todos').put('f1', { title: 'from follower' });
  await until(async () => (await other.collection('todos').get('f1'))?.title === 'from follower', 'other to see the follower write');
  await until(() => tab2.status.pending === 0 && tab1.status.pending === 0, 'outbox drained');

  // tab1 sees tab2's local write in its own queries right away too.
  assert.equal((await tab1.collection('todos').get('f1'))?.title, 'from follower');

  // sync() from a follower goes through the leader.
  await tab2.sync();

  // A tab opened after the leader settled learns its status at once.
  const tab3 = await openClient(tabOpts);
  t.after(() => tab3.close());
  await until(() => tab3.status.online && !tab3.status.leader && tab3.status.lastSyncedAt !== null, 'a late tab mirrors the leader status');

  // The leader goes away: the follower takes over the connection.
  await tab1.close();
  await until(() => (tab2.status.leader || tab3.status.leader) && tab2.status.online, 'another tab leads after tab1 closed');
  await other.collection('todos').put('o2', { title: 'after failover' });
  await until(() => seen2.at(-1)?.includes('after failover'), 'the new leader receives changes');
});

test('a new leader syncs the collections only another tab opened', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const idb = freshIDB();
  const locks = fakeLocks();
  const tabOpts = { url: server.url, name: 'colls', indexedDB: idb, locks, BroadcastChannel: globalThis.BroadcastChannel, collections: ['todos'] };
  // tab1 leads; tab2 is next in line; tab3 alone opens "notes".
  const tab1 = await openClient(tabOpts);
  await until(() => tab1.status.leader && tab1.status.online, 'tab1 leads');
  const tab2 = await openClient(tabOpts);
  const tab3 = await openClient(tabOpts);
  const other = await openClient({ url: server.url, name: 'other' });
  t.after(() => Promise.all([tab1.close(), tab2.close(), tab3.close(), other.close()]));

  /** @type {string[][]} */
  const seen = [];
  tab3.collection('notes').subscribe({}, (docs) => seen.push(docs.map((/** @type {any} */ d) => d.id)));
  await other.collection('notes').put('n1', { text: 'before failover' });
  await until(() => seen.at(-1)?.includes('n1'), 'the leader pulls what a follower opened');
  assert.equal(tab2.collections.has('notes'), false, 'tab2 never opened notes');

  await tab1.close();
  await until(() => tab2.status.leader && tab2.status.online, 'tab2 leads');
  await other.collection('notes').put('n2', { text: 'after failover' });
  await until(() => seen.at(-1)?.includes('n2'), "the new leader syncs tab3's collection");
  // It may pull n2 over HTTP before its sub goes out.
  await until(() => [...server.sockets].some((ws) => ws.subs?.has('notes')), 'and follows it live');
});

test('the collections a database opened are synced after a reload, whatever the app opens first', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const idb = freshIDB();
  const a = await openClient({ url: server.url, name: 'reload', indexedDB: idb, collections: ['todos'] });
  a.collection('notes');
  await a.sync();
  await a.close();

  const other = await openClient({ url: server.url, name: 'other' });
  t.after(() => other.close());
  await other.collection('notes').put('n', { text: 'written while the app was closed' });
  await until(() => other.status.pending === 0, 'pushed');

  const again = await openClient({ url: server.url, name: 'reload', indexedDB: idb, collections: ['todos'] });
  t.after(() => again.close());
  await again.sync();
  assert.equal((await again.store.get('notes', 'n'))?.doc?.text, 'written while the app was closed');
  assert.deepEqual((await again.store.collections()).sort(), ['notes', 'todos']);
});

test('a remembered collection the token may not read does not stop the others', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  server.forbidden.add('secret');
  const a = await openClient({ url: server.url, name: 'a', collections: ['secret', 'todos'] });
  const b = await openClient({ url: server.url, name: 'b', collections: ['todos'] });
  t.after(() => Promise.all([a.close(), b.close()]));
  /** @type {string[]} */
  const errors = [];
  a.on('error', (e) => errors.push(e.code));
  await b.collection('todos').put('t', { n: 1 });
  await until(async () => (await a.collection('todos').get('t'))?.n === 1, 'todos to sync');
  await until(() => errors.includes('forbidden'), 'the refusal reported');
  assert.equal(a.status.lastError, null);
  await b.collection('todos').put('live', { n: 2 });
  await until(async () => (await a.collection('todos').get('live'))?.n === 2, 'live on todos');
});

test('sync() called before the lock is granted is answered by this tab once it leads', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  // Web Locks grant asynchronously; here, once the test says so.
  /** @type {() => void} */
  let grant = () => {};
  const granted = new Promise((/** @type {(v?: unknown) => void} */ r) => (grant = r));
  const slowLocks = {
    request(/** @type {string} */ _name, /** @type {() => Promise<unknown>} */ cb) {
      return granted.then(cb);
    },
  };
  const a = await openClient({ url: server.url, name: 'early', locks: slowLocks, BroadcastChannel: globalThis.BroadcastChannel, collections: ['todos'] });
  t.after(() => a.close());
  await a.collection('todos').put('t', { n: 1 });
  assert.equal(a.status.leader, false);
  const t0 = Date.now();
  const synced = a.sync();
  grant();
  // Without a leader to answer, sync() rejects after 30 s ("the leader tab
  // did not answer"), so resolving says this tab answered; how soon says
  // it took the lead at once (about 1 s at load 28), not at the end of a
  // wait.
  await synced;
  assert.ok(Date.now() - t0 < 15_000, 'answered by this tab as soon as it led');
  assert.equal(a.status.leader, true);
  assert.ok(server.coll('todos').byId.has('t'));
});

/** A JWT (unsigned: the fake server reads its payload) for subject sub. */
function tokenOf(/** @type {string} */ sub) {
  const b64 = (/** @type {object} */ o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  return `${b64({ alg: 'none' })}.${b64({ sub })}.x`;
}

/**
 * A server and tabs of database "tok" opened with opts (one each), the
 * first of them leading and live.
 * @param {import('node:test').TestContext} t
 * @param {object[]} opts
 * @param {object} [serverOpts]
 */
async function tokenTabs(t, opts, serverOpts) {
  const server = await new FakeServer(serverOpts).start();
  t.after(() => server.stop());
  const idb = freshIDB();
  const locks = fakeLocks();
  const tabs = [];
  for (const o of opts) {
    tabs.push(await openClient({ url: server.url, name: 'tok', indexedDB: idb, locks, BroadcastChannel: globalThis.BroadcastChannel, collections: ['todos'], ...o }));
    if (tabs.length === 1) await until(() => tabs[0].status.leader && /** @type {any} */ (tabs[0]).syncer?.live, 'the first tab leads, live');
  }
  t.after(() => Promise.all(tabs.map((tab) => tab.close())));
  /** The subjects of the live hellos, in order. */
  const hellos = () => server.received.filter((m) => m.get(0) === 'hello').map((m) => subjectOfToken(m.get(3)));
  /** @type {string[]} */
  const refused = [];
  for (const tab of tabs) tab.on('refused', (/** @type {any} */ r) => refused.push(`${r.id}: ${r.code}`));
  return { server, tabs, hellos, refused };
}

test("setToken in a follower reaches the leader's connection: the new subject's writes go out under its token", async (t) => {
  const { server, tabs, hellos, refused } = await tokenTabs(t, [{ token: tokenOf('alice') }, { token: tokenOf('alice') }]);
  const [leader, follower] = tabs;
  assert.equal(follower.status.leader, false);
  follower.setToken(tokenOf('bob'));
  await follower.collection('todos').put('f1', { title: 'bob wrote it in the follower' });
  await until(() => hellos().at(-1) === 'bob', "the leader's connection signs in as bob");
  await until(() => server.coll('todos').byId.has('f1'), "the follower's write reaches the server");
  await until(() => leader.status.pending === 0 && leader.status.held === 0, 'outbox drained');
  assert.deepEqual(refused, []);
  assert.equal(hellos().includes('alice'), true);
  assert.equal(hellos().slice(hellos().indexOf('bob')).every((s) => s === 'bob'), true, 'no session of alice after bob signed in');
});

test('setToken in the leader reaches the followers: the one that leads next uses it', async (t) => {
  const { server, tabs, hellos, refused } = await tokenTabs(t, [{ token: tokenOf('alice') }, { token: tokenOf('alice') }]);
  const [leader, follower] = tabs;
  leader.setToken(tokenOf('bob'));
  await until(() => hellos().at(-1) === 'bob', 'the leader signs in as bob');
  await follower.collection('todos').put('f1', { title: 'bob' });
  await until(() => server.coll('todos').byId.has('f1'), "the follower's write reaches the server");
  const before = hellos().length;
  await leader.close();
  await until(() => follower.status.leader && /** @type {any} */ (follower).syncer?.live && hellos().length > before, 'the follower leads, live');
  await follower.collection('todos').put('f2', { title: 'bob again' });
  await until(() => server.coll('todos').byId.has('f2'), 'the new leader pushes');
  assert.deepEqual(hellos().slice(before), hellos().slice(before).map(() => 'bob'), 'the new leader signs in as bob');
  assert.deepEqual(refused, []);
});

test('a tab opened without a token learns the current one; setToken nearly together in two tabs settles on one token everywhere', async (t) => {
  const { tabs, hellos, refused } = await tokenTabs(t, [{ token: tokenOf('alice') }, {}, {}]);
  const [leader, a, b] = tabs;
  const tok = (/** @type {any} */ tab) => tab.tok;
  await until(() => tok(a) === tokenOf('alice') && tok(b) === tokenOf('alice'), 'the tabs opened without a token learn alice’s');
  // Within the same moment, either may win, but the same one in every tab.
  a.setToken(tokenOf('carol'));
  b.setToken(tokenOf('dave'));
  await until(() => tok(leader) === tok(a) && tok(a) === tok(b) && [tokenOf('carol'), tokenOf('dave')].includes(tok(leader)), 'one of the two tokens in every tab');
  const won = subjectOfToken(tok(leader));
  await until(() => hellos().at(-1) === won, `the leader signs in as ${won}`);
  // A later call wins.
  const later = Date.now() + 2;
  await until(() => Date.now() > later, 'a later moment');
  b.setToken(tokenOf('erin'));
  await until(() => tabs.every((tab) => tok(tab) === tokenOf('erin')), 'erin’s token in every tab');
  await until(() => hellos().at(-1) === 'erin', 'the leader signs in as erin');
  // The tab that leads next uses it.
  await leader.close();
  await until(() => (a.status.leader || b.status.leader) && hellos().filter((s) => s === 'erin').length >= 2, 'the next leader signs in as erin');
  assert.equal(hellos().at(-1), 'erin');
  assert.deepEqual(refused, []);
});

test("the token the leader's getToken refreshes is every tab's: the tab that leads next need not ask again", async (t) => {
  let valid = tokenOf('alice') + '1';
  /** @type {number[]} each tab's getToken calls */
  const calls = [0, 0];
  const getToken = (/** @type {number} */ i) => () => {
    calls[i]++;
    return valid;
  };
  const { server, tabs, refused } = await tokenTabs(t, [{ getToken: getToken(0) }, { getToken: getToken(1) }], { auth: (/** @type {string} */ tok) => (tok === valid ? null : 'token_expired') });
  const [leader, follower] = tabs;
  assert.deepEqual(calls, [1, 1], 'each asked once, at open');
  valid = tokenOf('alice') + '2';
  server.expireLive();
  await until(() => calls[0] === 2 && /** @type {any} */ (leader).syncer?.live, 'the leader refreshed its token and is live again');
  await leader.close();
  await until(() => follower.status.leader && /** @type {any} */ (follower).syncer?.live, 'the follower leads, live');
  await follower.collection('todos').put('f1', { n: 1 });
  await until(() => server.coll('todos').byId.has('f1'), 'the new leader pushes');
  assert.equal(calls[1], 1, 'the new leader used the token the old one got');
  assert.deepEqual(refused, []);
});
