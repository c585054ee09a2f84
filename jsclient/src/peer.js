// What a tab does with a message from another tab of its database (see
// TabMessage in tabs.js for who sends each and why). Loaded on demand, when
// the first one comes (Database._onPeer): a tab alone never needs it.
// What a tab does when a change was refused (onRefused, recount) and when
// a token was refused (forgetToken) is here too: the leader's sync loop
// (leader.js) calls them as well; rejected.js recounts the rejected
// changes with recountRejected.

import { ConvergoError } from './errors.js';
import { validateCollection } from './record.js';
import { TabMessage, toWire } from './tabs.js';

/**
 * The names of the tab messages (tabs.js's table) that only the sync side
 * sends and reads: a follower's sync() and the leader's answer (askLeader,
 * onPeer), and the app's events the leader forwards (leader.js). Here,
 * not with TabMessage, whose names every tab posts: the main entry does
 * not load these.
 */
export const SyncMessage = Object.freeze({
  sync: 'sync',
  synced: 'synced',
  refused: 'refused',
  serverReset: 'serverReset',
  reconciled: 'reconciled',
  superseded: 'superseded',
  auth: 'auth',
  schemaAhead: 'schemaAhead',
  unreadable: 'unreadable',
  revoked: 'revoked',
});

/** @typedef {import('./database.js').Database} Database */
/** @typedef {import('./database.js').Refusal} Refusal */

/**
 * How long a tab that does not lead waits for the refused message of a
 * refused change its count of the outbox met before it takes the count
 * (ms; recount).
 */
const DOUBT_MS = 2_000;

/**
 * The ConvergoError another tab sent (toWire, tabs.js).
 * @param {import('./tabs.js').WireError} w
 */
function fromWire(w) {
  return new ConvergoError(w.code, w.message, { requestId: typeof w.requestId === 'string' ? w.requestId : undefined });
}

/**
 * Handles message m from another tab in db, in the order they came.
 * @param {import('./database.js').Database} db
 * @param {any} m
 */
export function onPeer(db, m) {
  if (db.closed) return;
  switch (m.t) {
    case TabMessage.changed:
      if (typeof m.c === 'string' && Array.isArray(m.ids)) db._changed(m.c, new Map(m.ids.filter((/** @type {unknown} */ id) => typeof id === 'string').map((/** @type {string} */ id) => [id, undefined])), 'tab');
      break;
    case TabMessage.push:
      db.syncer?.kick();
      // The leader counts the outbox after each push it settles: another
      // tab's writes are counted now, or a push that fails (offline)
      // would leave them out of its status.
      if (db._status.leader) countOutbox(db);
      break;
    case TabMessage.reset: {
      // Another tab found the database wiped and rebuilt it: what this one
      // remembers of the records went with it too (forgotten at once, so
      // that no write of this tab builds on it), and its status counts
      // what the rebuilt database holds (Store.holds; no module to load,
      // which this tab, offline, may not be able to).
      db.store.forget();
      const was = { ...db._status };
      db.store.holds().then(
        (holds) => db.closed || db._onReset(holds, was),
        (e) => db._emit('error', e),
      );
      break;
    }
    case TabMessage.retry:
      // A follower's page became visible.
      db.syncer?.retryNow('visible');
      break;
    case TabMessage.ask:
      // A tab opened and wants the sync status (and the token): the
      // leader answers.
      if (!db._status.leader) break;
      db._announce();
      db._postToken();
      break;
    case TabMessage.token:
      // Another tab set the token: the later one is every tab's (a tie
      // goes to the greater token, the same choice in every tab).
      if (typeof m.token !== 'string' || typeof m.at !== 'number' || !(m.at > db.tokAt || (m.at === db.tokAt && m.token > (db.tok ?? '')))) break;
      db.tokAt = m.at;
      if (m.token === db.tok) break;
      db.tok = m.token;
      db._retoken(m.token);
      break;
    case TabMessage.collection:
      // A tab opened a collection (it also stored the name for leaders
      // to come). The leader syncs it from now on, paused or not.
      if (db.leading && typeof m.c === 'string' && !db.collections.has(m.c)) {
        try {
          validateCollection(m.c);
        } catch {
          break;
        }
        db.collections.add(m.c);
        db.syncer?.addCollection(m.c);
      }
      break;
    case TabMessage.lead:
      // Another tab leads now: this tab's sync() calls not answered went
      // to a leader that closed first (or to none), so it is asked again.
      for (const w of db.peerSync?.values() ?? []) w.ask();
      break;
    case SyncMessage.sync: {
      if (!db.leading) break;
      // A call asked again on this tab's lead (the asker sent it before
      // it heard lead, and again on it) has its round under way, or its
      // answer sent: it gets no second one.
      const asked = (db.peerAsked ??= new Set());
      if (asked.has(m.n)) break;
      asked.add(m.n);
      if (asked.size > ASKED_KEPT) asked.delete(asked.values().next().value);
      // A failure as this tab closes (its loop stopped) is not the
      // caller's: the tab that leads next is asked again (lead).
      const answer = (/** @type {any} */ e) => (e && db.closed ? undefined : db._post({ t: SyncMessage.synced, n: m.n, error: e ? toWire(e) : undefined }));
      const run = (/** @type {import('./sync.js').Syncer|null} */ syncer) => (syncer ? syncer.requestSync().then(() => answer(null), answer) : answer(noLoop(db)));
      // While the tab starts leading, the call waits for its loop
      // (Database._lead); paused, it has none.
      if (db.syncer || db._status.paused) run(db.syncer);
      else db.startupSyncs.push(run);
      break;
    }
    case SyncMessage.synced:
      db.peerSync?.get(m.n)?.done(m.error);
      break;
    case SyncMessage.refused:
      if (m.r && typeof m.r === 'object') onRefused(db, m.r);
      break;
    case SyncMessage.serverReset:
    case SyncMessage.reconciled:
    case SyncMessage.superseded:
    case SyncMessage.unreadable:
      // The message is named as the event (leader.js tell).
      if (m.r && typeof m.r === 'object') db._emit(m.t, m.r);
      break;
    case SyncMessage.auth:
      forgetToken(db, m.token);
    // falls through
    case SyncMessage.schemaAhead:
      if (m.e && typeof m.e === 'object') db._emit(m.t, fromWire(m.e));
      break;
    case TabMessage.rejected:
      recountRejected(db);
      recount(db, true);
      break;
    case TabMessage.scope:
      // A tab changed the scopes of a collection (stored already).
      if (db.leading && typeof m.c === 'string' && db.collections.has(m.c)) db.syncer?.rescope(m.c);
      break;
    case SyncMessage.revoked:
      if (m.r && typeof m.r === 'object') db._emit('revoked', m.r);
      recountRejected(db);
      recount(db, true);
      break;
    case TabMessage.status:
      if (!db._status.leader && m.s && typeof m.s === 'object') {
        const { pending, held, ...rest } = m.s;
        const lastError = rest.lastError ? fromWire(rest.lastError) : null;
        db._setStatus({ ...rest, lastError }, true);
        recount(db);
      }
      break;
  }
}

/** How long a tab that does not lead waits for the leader it asked to answer its sync() (ms; askLeader). */
const ANSWER_MS = 30_000;

/**
 * Why the tab that leads has no loop to run another tab's sync() with: it
 * closed, it is paused, its loop did not load, or it does not sync.
 * @param {Database} db
 */
function noLoop(db) {
  return db.closed ? new ConvergoError('closed', 'sync: the leader tab closed') : db._status.paused ? new ConvergoError('network', 'sync: the leader tab is paused') : (db.syncLoadError ?? new ConvergoError('network', 'sync: the leader tab does not sync'));
}

/**
 * How many of other tabs' sync() calls (their ids, SyncMessage.sync) the
 * leader remembers, so as to run one round for a call asked again (onPeer).
 * A call is asked again only at once on this tab's lead message, so the
 * calls it names are among the last few taken; one forgotten costs a
 * round, answered again (the asker heeds the first answer).
 */
const ASKED_KEPT = 256;

/**
 * Database.sync() in a tab that does not lead: asks the leader for a round
 * (SyncMessage.sync) and waits for its answer (SyncMessage.synced, onPeer).
 * When another tab starts leading before the answer came (TabMessage.lead:
 * the leader asked closed first, or none led), that one is asked again,
 * under the same id (the leader runs one round for an id it has under way
 * or answered: onPeer); so is this tab by itself if it leads (leader.js
 * answerWaiting). Fails with a network error when the leader asked last
 * says nothing for ANSWER_MS, and with closed at once when this tab
 * closes first (Database.close).
 * @param {Database} db
 * @returns {Promise<void>}
 */
export function askLeader(db) {
  const waiting = (db.peerSync ??= new Map());
  const n = Math.random();
  return new Promise((resolve, reject) => {
    /** @type {any} */
    let timer;
    const end = (/** @type {any} */ e) => {
      clearTimeout(timer);
      waiting.delete(n);
      db.closeWaiters.delete(closed);
      if (e) reject(e);
      else resolve();
    };
    // Closed, the call fails with closed, whatever the round this tab ran
    // for it as it led (leader.js answerWaiting) says as its loop stops.
    const closed = () => end(new ConvergoError('closed', 'database is closed'));
    if (db.closed) return closed();
    db.closeWaiters.add(closed);
    waiting.set(n, {
      ask() {
        clearTimeout(timer);
        timer = setTimeout(() => end(new ConvergoError('network', 'sync: the leader tab did not answer')), ANSWER_MS);
        db._post({ t: SyncMessage.sync, n });
      },
      done(/** @type {any} */ err) {
        if (err && db.closed) closed();
        else end(err && fromWire(err));
      },
    });
    /** @type {any} */ (waiting.get(n)).ask();
  });
}

/**
 * A pushed change was refused (by this tab's sync, or the leader's).
 * @param {Database} db
 * @param {Refusal} r
 */
export function onRefused(db, r) {
  db._refusedSince++;
  if (typeof r.rejectedId === 'number' && r.rejectedId > db._heard) db._heard = r.rejectedId;
  db._emit('refused', r);
  recountRejected(db);
  recount(db);
}

/**
 * Reads how many rejected changes are kept into db's status (after a
 * refusal, a revocation, or another tab's or this one's change to the
 * rejected changes: rejected.js). A count that fails is told ('error', in
 * this tab) and taken again at the next of those.
 * @param {Database} db
 */
export function recountRejected(db) {
  db.store.rejectedCount().then(
    (n) => db._setStatus({ rejected: n }, !db._status.leader),
    (e) => db.closed || db._emit('error', e),
  );
}

/**
 * The counts of the outbox under way (countOutbox, recount), by database:
 * what was asked meanwhile (null: nothing; else whether with trust).
 * @typedef {WeakMap<Database, {again: boolean|null}>} Counting
 */

/**
 * Runs count(db, trust) one at a time for db (under, by database): a count
 * asked while one is under way makes one more after it, with trust if
 * any of those asked meanwhile had it; so a burst of messages makes two
 * counts, not one for each.
 * @param {Counting} under
 * @param {Database} db
 * @param {(db: Database, trust: boolean) => Promise<unknown>} count
 * @param {boolean} trust
 */
function oneAtATime(under, db, count, trust) {
  const now = under.get(db);
  if (now) {
    now.again = !!now.again || trust;
    return;
  }
  /** @type {{again: boolean|null}} */
  const run = { again: null };
  under.set(db, run);
  count(db, trust).finally(() => {
    under.delete(db);
    if (run.again !== null) oneAtATime(under, db, count, run.again);
  });
}

/** @type {Counting} */
const counting = new WeakMap();

/**
 * The leader reads the outbox counts into its status, for another tab's
 * writes (its push message). A burst of writes makes one count: while one
 * is under way, the messages that come make one more after it
 * (oneAtATime). A count that fails is told ('error', a local IndexedDB
 * failure) and taken again at the next message.
 * @param {Database} db
 */
function countOutbox(db) {
  oneAtATime(counting, db, leaderCount, false);
}

/**
 * One count of countOutbox's.
 * @param {Database} db
 */
function leaderCount(db) {
  if (db.closed || !db._status.leader) return Promise.resolve();
  return db.store.outboxView().then(
    ({ counts }) => db.closed || !db._status.leader || db._setStatus(counts),
    (e) => db.closed || db._emit('error', e),
  );
}

/** @type {Counting} */
const recounting = new WeakMap();

/**
 * A tab that does not lead reads the outbox counts into its status (the
 * leader's sync sets its own). A change the server refused leaves the
 * outbox in the transaction that keeps it among the rejected changes,
 * so a count can see it gone before the leader's refused message comes:
 * such a count (it meets a rejected change newer than any told of) is
 * dropped, so that whenSynced does not resolve without the refusal, and
 * the message, when it comes, counts again; if none comes (its leader
 * went away, the change was written again) the count is taken after
 * DOUBT_MS. A count that fails is told ('error', in this tab) and taken
 * again at the next message that asks for one. trust: other tabs made
 * rejected changes that no refused message tells of. A burst of messages
 * makes one count: while one is under way, those asked make one more
 * after it, with trust if any of them had it (oneAtATime).
 * @param {Database} db
 * @param {boolean} [trust]
 */
export function recount(db, trust = false) {
  if (db._status.leader) return;
  oneAtATime(recounting, db, followerCount, trust);
}

/**
 * One count of recount's.
 * @param {Database} db
 * @param {boolean} trust
 */
function followerCount(db, trust) {
  if (db.closed || db._status.leader) return Promise.resolve();
  return db.store.outboxView().then(({ counts, newest }) => {
    if (db.closed) return;
    if (!trust && newest > db._heard) {
      if (db._doubt === null)
        db._doubt = setTimeout(() => {
          db._doubt = null;
          recount(db, true);
        }, DOUBT_MS);
      return;
    }
    // A doubt this count ends: a later one waits its whole DOUBT_MS.
    clearTimeout(db._doubt);
    db._doubt = null;
    db._heard = Math.max(db._heard, newest);
    db._setStatus(counts, true);
  }, (e) => db.closed || db._emit('error', e));
}

/**
 * The server refused token refused (in any tab's sync): with getToken,
 * this tab asks it for a fresh one before it next syncs instead of
 * trying the refused one again; a token set since stays (refused
 * undefined: not known, as when getToken gave none; forgotten too).
 * @param {Database} db
 * @param {string} [refused]
 */
export function forgetToken(db, refused) {
  if (db.o.getToken && (refused === undefined || refused === db.tok)) db.tok = null;
}
