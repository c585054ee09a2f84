// Several tabs of one database: one leads (Web Locks) and holds the
// connection; the others write to IndexedDB, hear about changes over
// BroadcastChannel and ask the leader to push.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FakeServer } from './helpers/server.js';
import { WebSocket, fakeLocks, freshIDB, heldAnswers, openClient, slowAnswers, until } from './helpers/util.js';
import { PATHS } from '../src/constants.js';
import { subjectOfToken } from '../src/replica.js';
import { fromStored } from '../src/db.js';
import { maxStamp } from '../src/record.js';
import { ZERO_STAMP } from '../src/hlc.js';
import { encode } from '../src/cbor.js';
import { ConvergoError } from '../src/errors.js';
import { Database } from '../src/database.js';
import { TabMessage } from '../src/tabs.js';
import { SyncMessage } from '../src/peer.js';
import { dropMeta, openedCollections, owedHeals } from '../src/syncstore.js';
import { CURSOR_KEY } from '../src/metakeys.js';

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
  assert.deepEqual((await openedCollections(again.store)).sort(), ['notes', 'todos']);
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

test("a live session's expiry the leader's getToken fixes is no failure in any tab: a follower's sync() right after it resolves, and no status says token_expired", async (t) => {
  // README: a token that expired and that getToken replaced, over HTTP or a
  // live session, is no event; over HTTP such a refresh never reaches
  // status.lastError nor a sync() call (http.js), nor may a live one.
  let valid = tokenOf('alice') + '1';
  const server = await new FakeServer({ auth: (/** @type {string} */ tok) => (tok === valid ? null : 'token_expired') }).start();
  t.after(() => server.stop());
  let calls = 0;
  const getToken = async () => {
    calls++;
    return valid;
  };
  const { leader, follower, heard } = await eventTabs(t, server, { getToken }, ['auth', 'error']);
  /** @type {string[][]} the codes of lastError each tab's status events carried */
  const lastErrors = [[], []];
  [leader, follower].forEach((tab, i) => tab.on('status', (s) => s.lastError && lastErrors[i].push(s.lastError.code)));
  await until(() => follower.status.online, 'the follower mirrors the live leader');
  const hellos = server.received.filter((m) => m.get(0) === 'hello').length;
  const before = calls;
  valid = tokenOf('alice') + '2';
  server.expireLive();
  const synced = follower.sync().then(
    () => 'resolved',
    (e) => `rejected ${e.code}: ${e.message}`,
  );
  await until(() => server.received.filter((m) => m.get(0) === 'hello').length > hellos && /** @type {any} */ (leader).syncer?.live, 'the leader live again with a fresh token');
  assert.equal(await synced, 'resolved', "the follower's sync() right after the expiry");
  assert.equal(await follower.sync().then(() => 'resolved', (e) => `rejected ${e.code}`), 'resolved', "the follower's sync() once live again");
  assert.ok(calls > before, 'getToken asked for a fresh token');
  assert.deepEqual(lastErrors, [[], []], 'no status of either tab says the expiry getToken fixed');
  assert.deepEqual(heard, [{}, {}], "no 'auth' nor 'error' in either tab");
  assert.equal(follower.status.lastError, null);
});

/**
 * Two tabs of database "ev" on one server (collection todos), the first
 * leading (and live, unless opts.migrations are ahead of the server's),
 * each with opts; every event of theirs named in events is recorded (by
 * tab: heard[0] the leader's, heard[1] the follower's), so that a test can
 * count each tab's emissions.
 * @param {import('node:test').TestContext} t
 * @param {FakeServer} server
 * @param {object} opts
 * @param {string[]} events
 */
async function eventTabs(t, server, opts, events) {
  const idb = freshIDB();
  const locks = fakeLocks();
  const o = { url: server.url, name: 'ev', indexedDB: idb, locks, BroadcastChannel: globalThis.BroadcastChannel, collections: ['todos'], ...opts };
  const leader = await openClient(o);
  t.after(() => leader.close());
  // Live and caught up: a session is live at its welcome, before the pull
  // that follows it, whose refusal a test changing the server's tokens
  // right after would meet (todos is subscribed once it is pulled).
  await until(
    () => leader.status.leader && ('migrations' in opts || /** @type {any} */ (leader).syncer?.session?.subscribed.has('todos')),
    'the first tab leads, live and caught up',
  );
  const follower = await openClient(o);
  t.after(() => follower.close());
  assert.equal(follower.status.leader, false);
  /** @type {Record<string, any[]>[]} */
  const heard = [{}, {}];
  [leader, follower].forEach((tab, i) => {
    for (const ev of events) tab.on(/** @type {any} */ (ev), (/** @type {any} */ a) => (heard[i][ev] ??= []).push(a));
  });
  return { leader, follower, heard };
}

test("a follower hears 'auth' when the leader's token is refused, and its setToken unblocks the leader", async (t) => {
  let valid = tokenOf('alice') + '1';
  const server = await new FakeServer({ auth: (/** @type {string} */ tok) => (tok === valid ? null : 'token_expired') }).start();
  t.after(() => server.stop());
  // Once the leader heard 'auth', a minute's backoff after its refused
  // retry: only the new token can end it in time. Until then none.
  let slow = false;
  const backoff = { base: 60_000, max: 60_000, random: () => (slow ? 1 : 0) };
  const { leader, follower, heard } = await eventTabs(t, server, { token: valid, backoff }, ['auth']);
  leader.on('auth', () => (slow = true));
  valid = tokenOf('alice') + '2';
  server.expireLive();
  await until(() => heard[1].auth?.length > 0, "the follower's auth listener");
  await until(() => /** @type {any} */ (leader).syncer?.waiting === 'backoff', 'the leader waits out its backoff, its token refused');
  assert.deepEqual(heard[1].auth.map((e) => e.code), ['token_expired']);
  assert.deepEqual(heard[0].auth.map((e) => e.code), ['token_expired'], 'the leader hears it once too');
  assert.ok(heard[1].auth[0] instanceof ConvergoError, 'a ConvergoError in the follower as well');
  follower.setToken(valid);
  await until(() => /** @type {any} */ (leader).syncer?.live, "the follower's setToken ends the leader's wait");
  await follower.collection('todos').put('f1', { n: 1 });
  await until(() => server.coll('todos').byId.has('f1'), "the follower's write reaches the server");
  assert.equal(heard[0].auth.length + heard[1].auth.length, 2, 'no echo');
});

test("'auth' is told once per run of refusals, though the round before each dial sends no request (every collection subscribed from its cursor)", async (t) => {
  let valid = tokenOf('alice') + '1';
  const server = await new FakeServer({ auth: (/** @type {string} */ tok) => (tok === valid ? null : 'token_expired') }).start();
  t.after(() => server.stop());
  let slow = false;
  const backoff = { base: 60_000, max: 60_000, random: () => (slow ? 1 : 0) };
  const { leader, follower, heard } = await eventTabs(t, server, { token: valid, backoff }, ['auth']);
  for (const tab of [leader, follower]) tab.on('error', () => {});
  // Written: its cursor is not the empty one, and a reconnect pulls nothing.
  await leader.collection('todos').put('r', { n: 1 });
  await until(() => leader.status.pending === 0 && /** @type {any} */ (leader).syncer?.session?.caught.has('todos'), 'pushed, and caught up');
  leader.on('auth', () => (slow = true));
  valid = tokenOf('alice') + '2';
  server.expireLive();
  await until(() => /** @type {any} */ (leader).syncer?.waiting === 'backoff', 'the leader waits out its backoff, its token refused again');
  assert.deepEqual(heard[0].auth.map((e) => e.code), ['token_expired'], "the leader's 'auth', once");
  assert.deepEqual(heard[1].auth.map((e) => e.code), ['token_expired'], "the follower's, once");
  follower.setToken(valid);
  await until(() => /** @type {any} */ (leader).syncer?.live, "the follower's setToken ends the leader's wait");
});

test("after 'auth' a follower with getToken asks it for a fresh token when it leads, rather than try the refused one", async (t) => {
  let valid = tokenOf('alice') + '1';
  /** @type {string[]} */
  const refusals = [];
  const server = await new FakeServer({
    auth: (/** @type {string} */ tok) => {
      if (tok === valid) return null;
      refusals.push(tok);
      // Not token_expired: an HTTP request would refresh it at once, without 'auth'.
      return 'unauthenticated';
    },
  }).start();
  t.after(() => server.stop());
  const { leader, follower, heard } = await eventTabs(t, server, { getToken: () => valid }, ['auth']);
  // From now on the leader tab's getToken fails (its tab is closing, say).
  let leaderAsked = 0;
  /** @type {any} */ (leader).o.getToken = () => {
    leaderAsked++;
    return new Promise((_, reject) => setTimeout(() => reject(new Error('offline')), 100));
  };
  valid = tokenOf('alice') + '2';
  server.expireLive();
  await until(() => heard[1].auth?.length === 1 && leaderAsked > 0, "the follower's auth listener, the leader's getToken");
  const refused = refusals.length;
  await leader.close();
  await until(() => follower.status.leader && /** @type {any} */ (follower).syncer?.live, 'the follower leads, live');
  assert.deepEqual(refusals.slice(refused), [], 'the new leader did not try the refused token');
  assert.equal(heard[1].auth.length, 1);
});

/**
 * A server that takes one token, valid, and refuses any other
 * token_expired, noting it in refusals; accept makes another the valid one.
 * @param {import('node:test').TestContext} t
 * @param {string} valid
 */
async function tokenServer(t, valid) {
  /** @type {string[]} */
  const refusals = [];
  const server = await new FakeServer({
    auth: (/** @type {string} */ tok) => {
      if (tok === valid) return null;
      refusals.push(tok);
      return 'token_expired';
    },
  }).start();
  t.after(() => server.stop());
  return { server, refusals, accept: (/** @type {string} */ tok) => (valid = tok) };
}

test("a refused token set over in a follower since is forgotten in no tab: the next leader goes on with the newer one", async (t) => {
  const { server, refusals, accept } = await tokenServer(t, 'tok-1');
  // Both tabs' getToken answer the token of the app's last sign-in.
  let asked = 0;
  const { leader, follower, heard } = await eventTabs(t, server, { getToken: () => (asked++, 'tok-1') }, ['auth']);
  // Live is said at the welcome, before its catch-up pull: a pull still
  // on its way with tok-1 when tok-1 stops being valid would be refused.
  await until(() => /** @type {any} */ (leader).syncer?.session?.subscribed.has('todos'), "the leader's catch-up pull done, todos subscribed");
  const before = asked;
  accept('tok-2');
  follower.setToken('tok-2');
  await until(() => /** @type {any} */ (leader).tok === 'tok-2', 'the leader took the token');
  server.expireLive(); // refuses the session's token: tok-1
  // A refusal of a token replaced since is not told (docs/protocol.md,
  // "Retrying"): the leader dials again at once with tok-2.
  await until(() => /** @type {any} */ (leader).syncer?.live && /** @type {any} */ (leader).syncer.session.token === 'tok-2', 'the leader live again, with tok-2');
  assert.deepEqual([heard[0].auth ?? [], heard[1].auth ?? []], [[], []], 'no tab told of the refusal of tok-1');
  await leader.close();
  await until(() => follower.status.leader && /** @type {any} */ (follower).syncer?.live, 'the follower leads, live');
  assert.equal(asked, before, 'no tab asked getToken: the token refused was not theirs any more');
  assert.deepEqual(refusals, [], 'no request went with tok-1 again');
});

test("a request the server refuses with a token another tab replaced since is sent again with the new one: getToken is not asked, the new token stays", async (t) => {
  const { server, refusals, accept } = await tokenServer(t, 'tok-1');
  let asked = 0;
  /** @type {any} */
  let leader = null;
  // The leader's first pull once live (its catch-up after the welcome)
  // waits, its token read already, until the follower's token reached it.
  /** @type {() => void} */
  let release = () => {};
  const gate = new Promise((r) => (release = () => r(undefined)));
  let gated = false;
  /** @type {string[]} the Authorization of each pull after the gated one's */
  const pulls = [];
  const fetchVia = async (/** @type {any} */ input, /** @type {any} */ init) => {
    if (String(input).endsWith(PATHS.pull) && leader?.syncer?.live) {
      if (!gated) {
        gated = true;
        await gate;
      }
      pulls.push(init.headers.Authorization);
    }
    return fetch(input, init);
  };
  // The leader's first dial has todos owe a pull (its cursor forgotten,
  // as after a reset), for its welcome to read over HTTP: a collection
  // that holds a cursor, the empty one of one never written too, is
  // subscribed from it.
  let dials = 0;
  /** @type {any} */
  let store = null;
  class Dialing extends WebSocket {
    /** @param {ConstructorParameters<typeof WebSocket>} args */
    constructor(...args) {
      super(...args);
      if (store && dials++ === 0) dropMeta(store, CURSOR_KEY);
    }
  }
  const o = { url: server.url, name: 'retry', indexedDB: freshIDB(), locks: fakeLocks(), BroadcastChannel: globalThis.BroadcastChannel, collections: ['todos'], fetch: fetchVia, getToken: () => (asked++, 'tok-1'), WebSocket: Dialing };
  leader = await openClient(o);
  store = leader.store;
  t.after(() => leader.close());
  await until(() => leader.status.leader && gated, 'the leader live, its catch-up pull held');
  const follower = await openClient(o);
  t.after(() => follower.close());
  const before = asked;
  accept('tok-2');
  follower.setToken('tok-2');
  await until(() => leader.tok === 'tok-2', 'the leader took the token');
  release();
  await until(() => pulls.length >= 2, 'the held pull and its retry');
  assert.deepEqual(pulls.slice(0, 2), ['Bearer tok-1', 'Bearer tok-2'], 'the refused pull went again with the new token');
  assert.deepEqual(refusals, ['tok-1']);
  assert.equal(asked, before, 'no tab asked getToken: the token refused was not theirs any more');
  await until(() => leader.status.lastSyncedAt !== null && follower.status.lastSyncedAt !== null, 'the round done');
  assert.equal(leader.tok, 'tok-2');
  assert.equal(/** @type {any} */ (follower).tok, 'tok-2');
});

test("a follower hears 'superseded' for an offline edit that lost to a newer write, once, as the leader does", async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const { leader, follower, heard } = await eventTabs(t, server, {}, ['superseded', 'change']);
  const other = await openClient({ url: server.url, name: 'other', collections: ['todos'] });
  t.after(() => other.close());
  await until(() => other.status.online, 'other online');
  await leader.pause();
  await follower.collection('todos').put('r', { title: 'from the follower' });
  const top = maxStamp(fromStored(await follower.store.get('todos', 'r'), 'r'));
  await until(() => other.store.now() > top.wall, 'the clock to pass the follower’s stamp');
  await other.collection('todos').put('r', { title: 'from other' });
  await until(() => other.status.pending === 0, 'other pushed');
  leader.resume();
  await until(() => heard[1].superseded?.length > 0, "the follower's superseded listener");
  assert.deepEqual(heard[1].superseded, [{ collection: 'todos', id: 'r', lost: ['title'], status: 'superseded' }]);
  assert.deepEqual(heard[0].superseded, heard[1].superseded, 'the leader hears it once too');
  // 'change' reaches the follower through the Store's notice: the pulled
  // record once, from the other tab.
  await until(async () => (await follower.collection('todos').get('r'))?.title === 'from other', 'the follower converges');
  await until(() => heard[1].change?.some((c) => c.origin === 'tab' && c.ids.includes('r')), "the follower's change listener");
  assert.equal(heard[1].change.filter((c) => c.origin === 'remote').length, 0, 'the follower pulls nothing itself');
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(heard[1].superseded.length, 1, 'no echo');
});

test("a follower's status.schemaAhead and 'schemaAhead' listener follow the leader's", async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const V2 = { version: 2, steps: [{ to: 2, ops: [{ op: 'rename', from: 'title', to: 'name' }] }] };
  const { leader, follower, heard } = await eventTabs(t, server, { migrations: { todos: V2 } }, ['schemaAhead']);
  await follower.collection('todos').put('x', { name: 'n' });
  await until(() => leader.status.schemaAhead, "the leader's status.schemaAhead");
  await until(() => follower.status.schemaAhead, "the follower's status.schemaAhead");
  await until(() => heard[1].schemaAhead?.length > 0, "the follower's schemaAhead listener");
  assert.equal(heard[1].schemaAhead[0].code, 'schema_ahead');
  server.setMigrations('todos', V2);
  await follower.sync().catch(() => {});
  await until(() => !leader.status.schemaAhead && leader.status.pending === 0, 'the leader synced after the server caught up');
  await until(() => !follower.status.schemaAhead && follower.status.pending === 0, 'and the follower says so');
  assert.equal(heard[1].schemaAhead.length, heard[0].schemaAhead.length, 'each attempt told once in every tab');
});

test('a closed follower hears nothing more', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const { leader, follower, heard } = await eventTabs(t, server, {}, ['superseded']);
  const other = await openClient({ url: server.url, name: 'other', collections: ['todos'] });
  t.after(() => other.close());
  await leader.pause();
  await leader.collection('todos').put('r', { title: 'from the leader' });
  const top = maxStamp(fromStored(await leader.store.get('todos', 'r'), 'r'));
  await until(() => other.store.now() > top.wall, 'the clock to pass the leader’s stamp');
  await other.collection('todos').put('r', { title: 'from other' });
  await until(() => other.status.pending === 0, 'other pushed');
  await follower.close();
  leader.resume();
  await until(() => heard[0].superseded?.length === 1, "the leader's superseded listener");
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(heard[1].superseded, undefined);
});

/**
 * What a tab's status says of the collections it cannot read.
 * @param {import('../src/database.js').Database} tab
 */
const unreadableOf = (tab) => (/** @type {any} */ (tab.status).unreadable ?? []).map((/** @type {any} */ u) => `${u.collection}: ${u.op} ${u.code}`);

test("every tab hears once that a collection's pull is refused, and its status lists the collection until a pull of it succeeds", async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const { leader, follower, heard } = await eventTabs(t, server, {}, ['unreadable', 'error']);
  server.forbidden.add('secret');
  follower.collection('secret');
  await until(() => heard[1].unreadable?.length > 0, "the follower's unreadable listener");
  assert.deepEqual(
    heard[1].unreadable.map((u) => [u.collection, u.op, u.code, typeof u.message]),
    [['secret', 'pull', 'forbidden', 'string']],
  );
  assert.deepEqual(heard[0].unreadable, heard[1].unreadable, 'the leader hears it once too');
  await until(() => unreadableOf(follower).length > 0, "the follower's status");
  assert.deepEqual(unreadableOf(follower), ['secret: pull forbidden']);
  assert.deepEqual(unreadableOf(leader), ['secret: pull forbidden']);
  // Every round pulls it again, is refused again and says so in 'error'
  // (the leader's): the app hears of the collection once.
  const errors = heard[0].error?.length ?? 0;
  await follower.sync();
  await follower.sync();
  assert.ok(heard[0].error.length > errors, "'error' in the leader as before");
  assert.equal(heard[1].error, undefined, "'error' stays in its tab");
  assert.equal(heard[0].unreadable.length + heard[1].unreadable.length, 2, 'once in each tab');
  assert.deepEqual(unreadableOf(follower), ['secret: pull forbidden']);
  // The token grants it now: the next pull of it succeeds.
  server.forbidden.delete('secret');
  await follower.sync();
  await until(() => unreadableOf(follower).length === 0 && unreadableOf(leader).length === 0, 'the collection readable again in every tab');
  assert.equal(heard[1].unreadable.length, 1);
});

test("every tab hears once that a heal is refused, the records not given back until the token may read the collection, as the status says until then", async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const { leader, follower, heard } = await eventTabs(t, server, {}, ['unreadable']);
  await follower.collection('todos').put('x', { n: 1 });
  await until(() => server.coll('todos').byId.has('x') && follower.status.pending === 0, 'x pushed');
  await until(() => [...server.sockets].some((ws) => ws.subs?.has('todos')), 'the leader subscribed');
  server.forbidden.add('todos');
  server.wipe();
  await until(() => heard[1].unreadable?.length > 0, "the follower's unreadable listener");
  assert.deepEqual(await owedHeals(leader.store), ['todos'], 'the heal stays owed');
  assert.deepEqual(
    heard[1].unreadable.map((u) => [u.collection, u.op, u.code]),
    [['todos', 'heal', 'forbidden']],
  );
  assert.deepEqual(heard[0].unreadable, heard[1].unreadable, 'the leader hears it once too');
  await until(() => unreadableOf(follower).length > 0, "the follower's status");
  await follower.sync().catch(() => {});
  assert.deepEqual(unreadableOf(follower), ['todos: heal forbidden'], 'the refused pulls after it keep the heal said');
  assert.equal(server.coll('todos').byId.size, 0, 'nothing given back');
  assert.equal(heard[0].unreadable.length + heard[1].unreadable.length, 2, 'once in each tab');
  server.forbidden.delete('todos');
  await follower.sync();
  await until(() => unreadableOf(follower).length === 0 && unreadableOf(leader).length === 0, 'readable again in every tab');
  assert.deepEqual(await owedHeals(leader.store), [], 'healed');
  assert.ok(server.coll('todos').byId.has('x'), 'x given back');
  assert.equal(heard[0].unreadable.length + heard[1].unreadable.length, 2, 'still once in each tab');
});

test("a 'superseded' answered while the leader closes reaches the other tabs: the writer hears its write lost", async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const opts = { url: server.url, name: 'closing', indexedDB: freshIDB(), locks: fakeLocks(), BroadcastChannel: globalThis.BroadcastChannel, collections: ['todos'], WebSocket: null, pollInterval: 60_000 };
  const leader = await openClient(opts);
  const writer = await openClient(opts);
  const other = await openClient({ url: server.url, name: 'other', collections: ['todos'], WebSocket: null });
  t.after(() => Promise.all([writer.close(), other.close()]));
  await until(() => leader.status.leader && leader.status.online, 'the first tab leads');
  await leader.pause();
  await writer.collection('todos').put('r', { title: 'from the writer' });
  const top = maxStamp(fromStored(await writer.store.get('todos', 'r'), 'r'));
  await until(() => other.store.now() > top.wall, 'the clock to pass the writer’s stamp');
  await other.collection('todos').put('r', { title: 'from other' });
  await other.whenSynced();
  /** @type {any[]} */
  const told = [];
  writer.on('superseded', (s) => told.push(s));
  const pushes = heldAnswers(server, PATHS.push);
  leader.resume();
  await until(() => pushes.count() > 0, 'the push sent');
  const closed = leader.close(); // waits for the push's answer
  pushes.release();
  await closed;
  await until(() => told.length > 0, "the writer's superseded listener");
  assert.deepEqual(told, [{ collection: 'todos', id: 'r', lost: ['title'], status: 'superseded' }]);
});

test("an event the server tells while the database closes ('superseded') is not told to its listeners", async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const idb = freshIDB();
  const a = await openClient({ url: server.url, name: 'a', indexedDB: idb, collections: ['todos'], WebSocket: null, pollInterval: 60_000 });
  const other = await openClient({ url: server.url, name: 'other', collections: ['todos'], WebSocket: null });
  t.after(() => Promise.all([a.close(), other.close()]));
  await a.sync();
  await a.pause();
  await a.collection('todos').put('r', { title: 'from a' });
  const top = maxStamp(fromStored(await a.store.get('todos', 'r'), 'r'));
  await until(() => other.store.now() > top.wall, 'the clock to pass a’s stamp');
  await other.collection('todos').put('r', { title: 'from other' });
  await other.whenSynced();
  const pushes = slowAnswers(server, PATHS.push, 200);
  let closing = false;
  /** @type {any[]} */
  const after = [];
  a.on('superseded', (s) => closing && after.push(s));
  a.resume();
  await until(() => pushes() > 0, 'the push sent');
  closing = true;
  await a.close(); // waits for the push's answer
  assert.deepEqual(after, []);
  const again = await openClient({ name: 'a', indexedDB: idb, sync: false });
  t.after(() => again.close());
  assert.equal(again.status.pending, 0, 'the push was answered (superseded) as it closed');
});

// What a tab does with another tab's message (peer.js) is not in the main
// entry: it starts loading when the channel opens, the messages that come
// before it loaded wait, in order, and a load that fails is reported and
// tried again with them.

test('messages from another tab that come while their handler loads are all handled, in order', async (t) => {
  const db = await openClient({ name: 'peerload', sync: false, BroadcastChannel: globalThis.BroadcastChannel });
  const peer = new BroadcastChannel('convergo:peerload');
  t.after(async () => {
    peer.close();
    await db.close();
  });
  /** @type {number[]} */
  const heard = [];
  db.on('serverReset', (/** @type {any} */ r) => heard.push(r.n));
  for (let n = 0; n < 20; n++) peer.postMessage({ t: 'serverReset', r: { n } });
  await until(() => heard.length === 20, 'the first 20 messages handled');
  for (let n = 20; n < 25; n++) peer.postMessage({ t: 'serverReset', r: { n } });
  await until(() => heard.length === 25, 'the next 5 handled');
  assert.deepEqual(heard, Array.from({ length: 25 }, (_, i) => i));
});

test('a failed load of the tab-message handler is reported, and the messages wait for the next try', async (t) => {
  // The load as the channel opens fails (unreported: no message waits),
  // and so does the first message's; the second message's succeeds.
  const load = Database.prototype._loadPeer;
  let fails = 2;
  Database.prototype._loadPeer = function () {
    return fails-- > 0 ? Promise.reject(new TypeError('Failed to fetch dynamically imported module')) : load.call(this);
  };
  t.after(() => {
    Database.prototype._loadPeer = load;
  });
  const db = await openClient({ name: 'peerfail', sync: false, BroadcastChannel: globalThis.BroadcastChannel });
  const peer = new BroadcastChannel('convergo:peerfail');
  t.after(async () => {
    peer.close();
    await db.close();
  });
  /** @type {any[]} */
  const errors = [];
  db.on('error', (/** @type {any} */ e) => errors.push(e));
  /** @type {number[]} */
  const heard = [];
  db.on('serverReset', (/** @type {any} */ r) => heard.push(r.n));
  peer.postMessage({ t: 'serverReset', r: { n: 1 } });
  await until(() => errors.length === 1, 'the failed load reported');
  assert.ok(errors[0] instanceof ConvergoError, 'a ConvergoError');
  assert.match(errors[0].message, /Failed to fetch dynamically imported module/);
  assert.deepEqual(heard, [], 'nothing handled without the handler');
  peer.postMessage({ t: 'serverReset', r: { n: 2 } });
  await until(() => heard.length === 2, 'both messages handled after the next load');
  assert.deepEqual(heard, [1, 2]);
  assert.equal(errors.length, 1);
  assert.equal(fails, -1, 'three loads: as the channel opened, for each message');
});

test("a follower's sync() while the tab-message handler fails to load says so, and reaches the leader once it loads", async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const opts = { url: server.url, name: 'peersync', indexedDB: freshIDB(), locks: fakeLocks(), BroadcastChannel: globalThis.BroadcastChannel, collections: ['todos'] };
  const leader = await openClient(opts);
  t.after(() => leader.close());
  await until(() => leader.status.leader && leader.status.online, 'the first tab leads');
  // The follower's loads of peer.js fail (as its channel opens, for the
  // leader's messages, for its first sync()) until the test says so.
  const load = Database.prototype._loadPeer;
  let failing = true;
  Database.prototype._loadPeer = function () {
    return failing ? Promise.reject(new TypeError('Failed to fetch dynamically imported module')) : load.call(this);
  };
  t.after(() => {
    Database.prototype._loadPeer = load;
  });
  const follower = await openClient(opts);
  t.after(() => follower.close());
  assert.equal(follower.status.leader, false);
  await follower.collection('todos').put('f', { n: 1 });
  const t0 = Date.now();
  await assert.rejects(follower.sync(), (/** @type {any} */ e) => {
    assert.ok(e instanceof ConvergoError, `a ConvergoError, not ${e}`);
    assert.equal(e.code, 'network');
    assert.match(e.message, /peer\.js/);
    return true;
  });
  assert.ok(Date.now() - t0 < 15_000, 'told at once, not after the wait for an answer');
  // Back online: the next sync() loads it and goes through the leader.
  failing = false;
  await follower.sync();
  assert.ok(server.coll('todos').byId.has('f'));
});

test('the tab-message handler starts loading as the channel opens, before another tab speaks', async (t) => {
  const db = await openClient({ name: 'peerpreload', sync: false, BroadcastChannel: globalThis.BroadcastChannel });
  t.after(() => db.close());
  // No other tab: an app that caches what the page loaded holds peer.js
  // for a reload offline, when a second tab may open.
  await until(() => db.peer !== null, 'peer.js loaded with no message');
});

// The sync loop (sync.js) is loaded by the tab that leads, when it starts
// leading: a follower never loads it.

test('a failed load of the sync loop is reported, and sync() loads it again', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const locks = fakeLocks();
  /** @type {() => void} */
  let release = () => {};
  const held = new Promise((r) => (release = () => r(undefined)));
  locks.request('convergo:syncload', () => held);
  // The load is tried again after the loop's backoff too: a long one, so
  // that the status is read, and the loop loaded by sync(), before it.
  const db = await openClient({ url: server.url, name: 'syncload', locks, collections: ['todos'], backoff: { base: 60_000, random: () => 1 } });
  t.after(() => db.close());
  const load = db._loadSync;
  let fails = 1;
  db._loadSync = () => (fails-- > 0 ? Promise.reject(new TypeError('Failed to fetch dynamically imported module')) : load.call(db));
  /** @type {any[]} */
  const errors = [];
  db.on('error', (/** @type {any} */ e) => errors.push(e));
  await db.collection('todos').put('a', { title: 'written before the tab leads' });
  release();
  await until(() => errors.length === 1, 'the failed load reported');
  assert.ok(errors[0] instanceof ConvergoError, 'a ConvergoError');
  assert.match(errors[0].message, /Failed to fetch dynamically imported module/);
  assert.equal(db.status.leader, true);
  assert.equal(db.status.lastError?.code, 'network', 'the status says why it does not sync');
  await db.sync();
  assert.equal(db.status.pending, 0, 'the write went out');
  assert.ok(server.coll('todos').byId.has('a'), 'the server holds it');
});

/**
 * Makes the first n loads of the sync loop (Database._loadSync) of every
 * Database fail, as a browser offline fails to import a module its cache
 * lacks, until the end of test t.
 * @param {import('node:test').TestContext} t
 * @param {number} n
 * @returns {{count: number}} how many loads were asked for
 */
function failingSyncLoads(t, n) {
  const load = Database.prototype._loadSync;
  const loads = { count: 0 };
  Database.prototype._loadSync = function () {
    return loads.count++ < n ? Promise.reject(new TypeError('Failed to fetch dynamically imported module')) : load.call(this);
  };
  t.after(() => {
    Database.prototype._loadSync = load;
  });
  return loads;
}

test('a sync loop that failed to load is loaded again after a backoff, with no sign from the page', async (t) => {
  // A page reloaded while the server was down (from a service worker's
  // cache that lacks leader.js, say) gets no online or visibility event
  // when the server comes back: the load is tried again as the loop
  // retries, after the backoff, and the writes made meanwhile go out.
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const loads = failingSyncLoads(t, 3);
  /** @type {any[]} */
  const errors = [];
  const db = await openClient({ url: server.url, name: 'syncloadbackoff', collections: ['todos'], backoff: { base: 20, max: 100, random: () => 1 } });
  t.after(() => db.close());
  db.on('error', (/** @type {any} */ e) => errors.push(e));
  await until(() => db.status.lastError?.code === 'network', 'the failed load in the status');
  await db.collection('todos').put('a', { n: 1 });
  await until(() => db.syncer !== null && db.status.pending === 0 && server.coll('todos').byId.has('a') && db.status.lastError === null,
    'the loop loaded again, the write pushed, and the status no longer says it did not load');
  assert.equal(loads.count, 4, 'loaded at the fourth try');
  assert.ok(errors.length >= 2 && errors.every((e) => e.code === 'network'), 'each failed load told, as each failed round is');
});

test('a failed load of the sync loop that sync() waited for too is told once, and backs off one step', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const load = Database.prototype._loadSync;
  /** @type {(e: Error) => void} */
  let fail = () => {};
  let loads = 0;
  Database.prototype._loadSync = function () {
    return loads++ === 0 ? new Promise((_, reject) => (fail = reject)) : load.call(this);
  };
  t.after(() => {
    Database.prototype._loadSync = load;
  });
  const locks = fakeLocks();
  /** @type {() => void} */
  let release = () => {};
  locks.request('convergo:syncload2', () => new Promise((r) => (release = () => r(undefined))));
  const db = await openClient({ url: server.url, name: 'syncload2', locks, collections: ['todos'], backoff: { base: 60_000, random: () => 1 } });
  t.after(() => db.close());
  /** @type {any[]} */
  const errors = [];
  db.on('error', (/** @type {any} */ e) => errors.push(e));
  release();
  await until(() => db.status.leader && loads === 1, 'the tab leads and loads the sync loop');
  const synced = db.sync(); // waits for the same load
  await new Promise((r) => setTimeout(r, 20));
  fail(new TypeError('Failed to fetch dynamically imported module'));
  await assert.rejects(synced, (/** @type {any} */ e) => e.code === 'network');
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(errors.length, 1, `one failed load, told ${errors.length} times`);
  assert.equal(db.loadAttempt, 1, 'the next try one backoff step on');
});

test('a sync loop that failed to load is loaded again when the page becomes visible', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  failingSyncLoads(t, 1);
  /** @type {Set<() => void>} */
  const onVisible = new Set();
  const doc = { visibilityState: 'visible', addEventListener: (/** @type {string} */ _e, /** @type {() => void} */ f) => onVisible.add(f), removeEventListener: (/** @type {string} */ _e, /** @type {() => void} */ f) => onVisible.delete(f) };
  /** @type {any} */ (globalThis).document = doc;
  t.after(() => {
    delete (/** @type {any} */ (globalThis)).document;
  });
  /** @type {any[]} */
  const errors = [];
  // The load is tried again after the loop's backoff too: a long one, so
  // that the page becoming visible loads it, before that.
  const db = await openClient({ url: server.url, name: 'syncretry', collections: ['todos'], backoff: { base: 60_000, random: () => 1 } });
  t.after(() => db.close());
  db.on('error', (/** @type {any} */ e) => errors.push(e));
  await until(() => db.status.lastError?.code === 'network', 'the failed load in the status');
  assert.equal(db.syncer, null);
  await db.collection('todos').put('a', { n: 1 });
  for (const f of onVisible) f();
  await until(() => db.syncer !== null && db.status.pending === 0 && server.coll('todos').byId.has('a'), 'the loop loaded again and the write pushed');
});

test('without Web Locks every tab syncs: a refused change two tabs pushed is rolled back once, and the second answer does not take the record away', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const opts = { url: server.url, name: 'nolocks', indexedDB: freshIDB(), locks: null, BroadcastChannel: globalThis.BroadcastChannel, collections: ['todos'], WebSocket: null, pollInterval: 60_000 };
  const a = await openClient(opts);
  const b = await openClient(opts);
  t.after(() => Promise.all([a.close(), b.close()]));
  /** @type {Map<any, string[]>} */
  const heard = new Map([[a, []], [b, []]]);
  for (const [tab, list] of heard) tab.on('refused', (/** @type {any} */ r) => list.push(r.id));
  await until(() => a.status.leader && b.status.leader && a.status.online && b.status.online, 'both lead');
  await a.collection('todos').put('x', { title: 'base' });
  await until(() => server.coll('todos').byId.has('x') && a.status.pending === 0, 'pushed');
  server.refuse = (ch) => ch.record.fields.has('title') && new TextDecoder().decode(ch.record.fields.get('title').value ?? new Uint8Array()).includes('bad');
  // Both loops idle, waiting for their next poll: only a's, which its
  // write kicks, pushes the change on its own. A round of b's still under
  // way (a loaded machine makes the first ones slow) would push it from
  // the outbox the tabs share, beside a's.
  await until(() => [a, b].every((tab) => /** @type {any} */ (tab).syncer?.waiting === 'poll'), 'both loops idle');
  // a's push of the refused change waits at the server while b pushes it.
  const held = heldAnswers(server, PATHS.push, { first: true });
  await a.collection('todos').put('x', { title: 'bad' });
  await until(() => held.count() === 1, "a's push under way");
  await b.sync();
  assert.deepEqual(await b.collection('todos').get('x'), { id: 'x', title: 'base' }, 'rolled back by b');
  held.release();
  await until(() => server.pushStatuses.length >= 2, "a's push answered");
  await a.sync();
  assert.deepEqual(await a.collection('todos').get('x'), { id: 'x', title: 'base' }, 'the server version, after a settled its answer too');
  assert.deepEqual(await b.collection('todos').get('x'), { id: 'x', title: 'base' });
  assert.equal((await a.rejected()).length, 1, 'kept once among the rejected changes');
  await until(() => heard.get(a)?.length === 1 && heard.get(b)?.length === 1, 'each tab hears the refusal');
  await new Promise((r) => setTimeout(r, 100));
  assert.deepEqual([heard.get(a), heard.get(b)], [['x'], ['x']], 'once each');
});

test('a write that committed as its tab went, before it told the leader, goes out when a tab opens again, the leader staying live', async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const tabOpts = { url: server.url, name: 'died', indexedDB: freshIDB(), locks: fakeLocks(), BroadcastChannel: globalThis.BroadcastChannel, collections: ['todos'] };
  const leader = await openClient(tabOpts);
  t.after(() => leader.close());
  await until(() => leader.status.leader && /** @type {any} */ (leader).syncer?.live, 'a leader, live');
  const tab = await openClient(tabOpts);
  await until(() => tab.status.online, 'the other tab mirrors it');
  // The write commits in IndexedDB; the tab goes before its code after
  // the commit runs (Collection.put's _wrote: the push message).
  await tab.store.write('todos', 'd', (_current, stamp) => ({ id: 'd', deleted: ZERO_STAMP, fields: new Map([['v', { stamp, value: encode(1) }]]) }));
  await tab.close();
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(server.coll('todos').byId.has('d'), false, 'the leader was not told');
  const again = await openClient(tabOpts);
  t.after(() => again.close());
  await until(() => server.coll('todos').byId.has('d'), 'pushed once a tab opened again');
  assert.deepEqual(await again.collection('todos').get('d'), { id: 'd', v: 1 });
  await until(() => again.status.pending === 0 && leader.status.pending === 0, 'nothing pending');
});

test("a follower's push message lost on the channel: the leader finds the write waiting at the pong of its next live ping, and pushes it", async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const opts = { url: server.url, name: 'lostpush', indexedDB: freshIDB(), locks: fakeLocks(), BroadcastChannel: globalThis.BroadcastChannel, collections: ['todos'] };
  const leader = await openClient(opts);
  const follower = await openClient(opts);
  t.after(() => Promise.all([leader.close(), follower.close()]));
  await until(() => leader.status.leader && leader.status.online && !follower.status.leader && leader.syncer?.session?.welcome, 'one leads, live');
  // The session's first push and pulls are over.
  await leader.syncer?.serial(async () => {});
  // The channel is best effort (a page frozen, or put in the back/forward
  // cache, as it posts): the follower's push message never arrives.
  const post = follower._post.bind(follower);
  follower._post = (/** @type {any} */ m) => {
    if (m.t !== 'push') post(m);
  };
  await follower.collection('todos').put('f', { title: 'from the follower' });
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(server.coll('todos').byId.has('f'), false, 'nothing told the leader');
  // A ping of the live session (here the one a page that becomes visible
  // has the leader send; idle, one goes every TIMINGS.pingIntervalMs):
  // its pong has the leader look at the outbox.
  follower._post({ t: TabMessage.retry });
  await until(() => server.coll('todos').byId.has('f') && follower.status.pending === 0, 'the leader pushed the write at the pong', 3000);
});

test("a follower's sync() under way as the leader closes goes to the tab that leads next, and is answered by it", async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const opts = { url: server.url, name: 'handover', indexedDB: freshIDB(), locks: fakeLocks(), BroadcastChannel: globalThis.BroadcastChannel, collections: ['todos'] };
  const leader = await openClient(opts);
  t.after(() => leader.close());
  await until(() => leader.status.leader && leader.status.online, 'the first tab leads');
  const next = await openClient(opts);
  const follower = await openClient(opts);
  t.after(() => Promise.all([next.close(), follower.close()]));
  await follower.collection('todos').put('f', { n: 1 });
  await until(() => server.coll('todos').byId.has('f'), 'pushed');
  // The leader's pulls are held: the follower's sync() is surely under
  // way in the leader as it closes.
  const held = heldAnswers(server, PATHS.pull);
  const asked = held.count();
  const t0 = Date.now();
  /** @type {any} */
  let outcome = null;
  const synced = follower.sync().then(
    () => (outcome = 'resolved'),
    (e) => (outcome = e),
  );
  await until(() => held.count() > asked, "the leader's round under way");
  const closing = leader.close();
  await until(() => next.status.leader, 'the next tab leads');
  held.release();
  await closing;
  await synced;
  assert.equal(outcome, 'resolved', `sync() resolved, not ${outcome?.code}: ${outcome?.message}`);
  assert.ok(Date.now() - t0 < 15_000, 'answered by the next leader, not after the wait for an answer');
  assert.equal(follower.status.leader, false);
});

test("a follower's sync() under way as the leader closes is answered by the follower itself when it leads next", async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const opts = { url: server.url, name: 'handover2', indexedDB: freshIDB(), locks: fakeLocks(), BroadcastChannel: globalThis.BroadcastChannel, collections: ['todos'] };
  const leader = await openClient(opts);
  t.after(() => leader.close());
  await until(() => leader.status.leader && leader.status.online, 'the first tab leads');
  const follower = await openClient(opts);
  t.after(() => follower.close());
  const held = heldAnswers(server, PATHS.pull);
  const asked = held.count();
  const t0 = Date.now();
  /** @type {any} */
  let outcome = null;
  const synced = follower.sync().then(
    () => (outcome = 'resolved'),
    (e) => (outcome = e),
  );
  await until(() => held.count() > asked, "the leader's round under way");
  const closing = leader.close();
  held.release();
  await closing;
  await until(() => follower.status.leader, 'the follower leads');
  await synced;
  assert.equal(outcome, 'resolved', `sync() resolved, not ${outcome?.code}: ${outcome?.message}`);
  assert.ok(Date.now() - t0 < 15_000, 'answered by this tab once it led, not after the wait for an answer');
});

test("a follower's sync() while the leader cannot reach the server fails as the leader's does, with its network error, not after the wait for an answer", async (t) => {
  const opts = { url: 'http://127.0.0.1:1', name: 'offlinesync', indexedDB: freshIDB(), locks: fakeLocks(), BroadcastChannel: globalThis.BroadcastChannel, collections: ['todos'] };
  const leader = await openClient(opts);
  t.after(() => leader.close());
  await until(() => leader.status.leader && leader.status.lastError, 'the first tab leads, failing');
  const follower = await openClient(opts);
  t.after(() => follower.close());
  const t0 = Date.now();
  await assert.rejects(follower.sync(), (/** @type {any} */ e) => {
    assert.equal(e.code, 'network');
    assert.doesNotMatch(e.message, /did not answer/);
    return true;
  });
  assert.ok(Date.now() - t0 < 15_000, 'told by the leader, not after the wait for an answer');
});

test("a follower's sync() waiting for the leader's answer rejects with closed as the follower closes, not after the wait for an answer", async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const opts = { url: server.url, name: 'closewait', indexedDB: freshIDB(), locks: fakeLocks(), BroadcastChannel: globalThis.BroadcastChannel, collections: ['todos'] };
  const leader = await openClient(opts);
  t.after(() => leader.close());
  await until(() => leader.status.leader && leader.status.online, 'the first tab leads');
  const follower = await openClient(opts);
  // The leader's pulls are held: its answer does not come before the
  // follower closes.
  const held = heldAnswers(server, PATHS.pull);
  const asked = held.count();
  /** @type {any} */
  let outcome = null;
  follower.sync().then(
    () => (outcome = 'resolved'),
    (e) => (outcome = e),
  );
  await until(() => held.count() > asked, "the leader's round under way");
  await follower.close();
  await until(() => outcome !== null, 'the follower\'s sync() to settle as it closed');
  // The leader's round ends before the server stops.
  held.release();
  await leader.close();
  assert.equal(outcome?.code, 'closed', `sync() rejected with closed, not ${outcome === 'resolved' ? outcome : `${outcome?.code}: ${outcome?.message}`}`);
});

test("a follower's sync() asked again on a lead message the leader already has under way runs one round and is answered once", async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const opts = { url: server.url, name: 'askedtwice', indexedDB: freshIDB(), locks: fakeLocks(), BroadcastChannel: globalThis.BroadcastChannel, collections: ['todos'] };
  const leader = await openClient(opts);
  t.after(() => leader.close());
  await until(() => leader.status.leader && leader.status.online && leader.syncer, 'the first tab leads');
  const follower = await openClient(opts);
  t.after(() => follower.close());
  // The rounds the leader runs for sync() calls.
  const syncer = leader.syncer;
  let rounds = 0;
  const requestSync = syncer.requestSync.bind(syncer);
  syncer.requestSync = () => (rounds++, requestSync());
  // What the tabs post, seen from beside them.
  const channel = new BroadcastChannel('convergo:askedtwice');
  t.after(() => channel.close());
  /** @type {any[]} */
  const seen = [];
  channel.onmessage = (ev) => seen.push(ev.data);
  const held = heldAnswers(server, PATHS.pull);
  const asked = held.count();
  const synced = follower.sync();
  await until(() => held.count() > asked, "the leader's round under way");
  // A lead message comes (as from a tab that starts leading) after the
  // leader took the call: the follower asks again with the same id, and
  // the leader has it under way.
  channel.postMessage({ t: TabMessage.lead });
  await until(() => seen.filter((m) => m.t === SyncMessage.sync).length === 2, 'the follower to ask again');
  const [first, again] = seen.filter((m) => m.t === SyncMessage.sync);
  assert.equal(again.n, first.n, 'asked again under the same id');
  held.release();
  await synced;
  // A later call reaches the leader after the one asked again: once it
  // is answered, the leader has handled both.
  await follower.sync();
  assert.equal(rounds, 2, 'one round for each sync() call');
  await new Promise((r) => setTimeout(r, 50));
  assert.deepEqual(
    seen.filter((m) => m.t === SyncMessage.synced).map((m) => m.n === first.n),
    [true, false],
    'each call answered once',
  );
});

test("a follower's sync() that a tab takes as it starts leading is answered with why that tab has no loop: its load failed, or it is paused", async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const load = Database.prototype._loadSync;
  /** @type {(e: Error) => void} */
  let fail = () => {};
  Database.prototype._loadSync = function () {
    return new Promise((_, reject) => (fail = reject));
  };
  t.after(() => {
    Database.prototype._loadSync = load;
  });
  const locks = fakeLocks();
  /** @type {() => void} */
  let release = () => {};
  locks.request('convergo:startup', () => new Promise((r) => (release = () => r(undefined))));
  const opts = { url: server.url, name: 'startup', indexedDB: freshIDB(), locks, BroadcastChannel: globalThis.BroadcastChannel, collections: ['todos'], backoff: { base: 60_000, random: () => 1 } };
  const leader = await openClient(opts);
  const follower = await openClient(opts);
  t.after(() => Promise.all([leader.close(), follower.close()]));
  const synced = follower.sync();
  release();
  // The first tab leads and loads its loop; the follower, told of the new
  // leader, asks it again, and it takes the call to answer once it knows.
  await until(() => leader.status.leader && /** @type {any} */ (leader).startupSyncs.length === 1, 'the tab that leads takes the call while its loop loads');
  fail(new TypeError('Failed to fetch dynamically imported module'));
  await assert.rejects(synced, (/** @type {any} */ e) => e instanceof ConvergoError && e.code === 'network' && e.message === 'sync: loading leader.js: Failed to fetch dynamically imported module');
  await leader.pause();
  await assert.rejects(follower.sync(), (/** @type {any} */ e) => e instanceof ConvergoError && e.code === 'network' && e.message === 'sync: the leader tab is paused');
});

test("the leader counts a follower's writes as pending while its pushes fail (offline, the server down)", async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const { leader, follower } = await eventTabs(t, server, {}, []);
  for (const tab of [leader, follower]) tab.on('error', () => {});
  let pushes = 0;
  server.failPush = () => (pushes++, true);
  await follower.collection('todos').put('f1', { n: 1 });
  await follower.collection('todos').put('f2', { n: 2 });
  await until(() => pushes > 0 && follower.status.pending === 2, "the follower's writes pending, a push of them tried");
  await until(() => leader.status.pending === 2, `the leader's status counts them too (pending ${leader.status.pending} after ${pushes} pushes refused)`).catch((e) => {
    throw new Error(`${e.message}: the leader says pending ${leader.status.pending} after ${pushes} pushes refused`);
  });
  server.failPush = () => false;
  await until(() => leader.status.pending === 0 && follower.status.pending === 0, 'both at 0 once pushed');
});

/**
 * Two tabs whose pushes the server fails, so that writes stay pending for
 * the counts to see; side's counts of the outbox (outboxView) go through
 * through(view), view the Store's own.
 * @param {import('node:test').TestContext} t
 * @param {'leader'|'follower'} side
 * @param {(view: () => Promise<any>) => Promise<any>} through
 */
async function countingTabs(t, side, through) {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const tabs = await eventTabs(t, server, {}, []);
  server.failPush = () => true;
  const db = tabs[side];
  const view = db.store.outboxView.bind(db.store);
  db.store.outboxView = () => through(view);
  return tabs;
}

test("the leader counts the outbox once for a burst of a follower's writes, not at each, and the last count is right", async (t) => {
  let counts = 0;
  const { leader, follower } = await countingTabs(t, 'leader', (view) => (counts++, view()));
  for (const tab of [leader, follower]) tab.on('error', () => {});
  const n = 200;
  const todos = follower.collection('todos');
  await Promise.all(Array.from({ length: n }, (_, i) => todos.put(`f${i}`, { n: i })));
  await until(() => leader.status.pending === n, `the leader counts the ${n} writes pending (says ${leader.status.pending})`);
  // Messages still on their way are counted too: wait for them to settle.
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(leader.status.pending, n);
  assert.ok(counts <= n / 10, `${counts} counts of the outbox for ${n} writes of a follower`);
});

/**
 * Two tabs whose pushes the server fails, side's count of the outbox
 * (outboxView) failing with an injected error until heal() is called;
 * errors collects side's 'error' events.
 * @param {import('node:test').TestContext} t
 * @param {'leader'|'follower'} side
 */
async function failingCount(t, side) {
  const failure = new ConvergoError('database', 'count outbox: injected');
  let fail = true;
  const tabs = await countingTabs(t, side, (view) => (fail ? Promise.reject(failure) : view()));
  /** @type {ConvergoError[]} */
  const errors = [];
  tabs[side].on('error', (e) => errors.push(e));
  (side === 'leader' ? tabs.follower : tabs.leader).on('error', () => {});
  return { ...tabs, errors, failure, heal: () => (fail = false) };
}

// The leader's sync loop counts with countIn after its push: only the
// count the follower's message makes goes through the leader's
// outboxView. The follower's counts after the leader's status messages.
for (const { side, name, counted } of [
  {
    side: /** @type {const} */ ('leader'),
    name: "a failed count of the outbox in the leader is told ('error'), and taken again at the next write of a follower",
    counted: (/** @type {any} */ tabs) => tabs.leader.status.pending === 2,
  },
  {
    side: /** @type {const} */ ('follower'),
    name: "a follower's failed count of the outbox is told ('error') in it, and taken again at the leader's next status",
    counted: (/** @type {any} */ tabs) => tabs.follower.status.pending === 2 && tabs.leader.status.pending === 2,
  },
]) {
  test(name, async (t) => {
    const tabs = await failingCount(t, side);
    const { follower, errors, failure, heal } = tabs;
    await follower.collection('todos').put('f1', { n: 1 });
    await until(() => errors.includes(failure), `the ${side}'s failed count told`);
    heal();
    await follower.collection('todos').put('f2', { n: 2 });
    await until(() => counted(tabs), `counted again (pending: leader ${tabs.leader.status.pending}, follower ${follower.status.pending})`);
  });
}

test("a follower counts the outbox once for a burst of the leader's status messages, not at each, and the last count is right", async (t) => {
  let counts = 0;
  const { leader, follower } = await countingTabs(t, 'follower', (view) => (counts++, view()));
  for (const tab of [leader, follower]) tab.on('error', () => {});
  const n = 200;
  // The leader's writes (each announces its status) and as many status
  // messages more: only a count of the follower's tells it they are pending.
  const todos = leader.collection('todos');
  const writes = [];
  for (let i = 0; i < n; i++) {
    writes.push(todos.put(`l${i}`, { n: i }));
    /** @type {any} */ (leader)._announce();
  }
  await Promise.all(writes);
  await until(() => follower.status.pending === n, `the follower counts the ${n} writes pending (says ${follower.status.pending})`);
  // Messages still on their way are counted too: wait for them to settle.
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(follower.status.pending, n);
  assert.ok(counts <= n / 10, `${counts} counts of the outbox for ${2 * n} status messages of the leader`);
});

test("a failed count of the rejected changes is told ('error') in its tab, and taken again at the next message that asks for one", async (t) => {
  const server = await new FakeServer().start();
  t.after(() => server.stop());
  const { leader, follower } = await eventTabs(t, server, {}, []);
  /** @type {ConvergoError[]} */
  const errors = [];
  follower.on('error', (e) => errors.push(e));
  const failure = new ConvergoError('database', 'count rejected: injected');
  let fail = true;
  let counts = 0;
  const count = follower.store.rejectedCount.bind(follower.store);
  follower.store.rejectedCount = () => (counts++, fail ? Promise.reject(failure) : count());
  // Another tab changed the rejected changes (rejected.js recounted).
  /** @type {any} */ (leader)._post({ t: TabMessage.rejected });
  await until(() => errors.includes(failure), "the follower's failed count of the rejected changes told");
  fail = false;
  /** @type {any} */ (leader)._post({ t: TabMessage.rejected });
  await until(() => counts === 2, 'counted again at the next message');
  await new Promise((r) => setTimeout(r, 50));
  assert.deepEqual(errors, [failure], 'the count that went through told nothing');
});
