// Several tabs of one database: one leads (Web Locks) and holds the
// connection; the others write to IndexedDB, hear about changes over
// BroadcastChannel and ask the leader to push.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FakeServer } from './helpers/server.js';
import { freshIDB, openClient, until } from './helpers/util.js';

/** An in-process stand-in for navigator.locks: exclusive, FIFO per name. */
function fakeLocks() {
  /** @type {Map<string, Promise<unknown>>} */
  const tails = new Map();
  return {
    /**
     * @param {string} name
     * @param {() => Promise<unknown>} cb
     */
    request(name, cb) {
      const prev = tails.get(name) ?? Promise.resolve();
      const p = prev.then(() => cb());
      tails.set(
        name,
        p.catch(() => {}),
      );
      return p;
    },
  };
}

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
