// The sync loop: hello (clock offset), push the outbox, pull every
// collection from its cursor, then stay live over WebSocket (or poll when
// there is none), reconnecting with exponential backoff and jitter. While
// live, the outbox is pushed over the session (pushOutbox). A live
// session subscribes each collection from its cursor, its sub catching it
// up, and pulls first only one that owes a reading a sub does not make
// (owesPull); so does the round before it once a session was welcomed.
//
// Backoff protects a struggling server from a fleet of clients, but a
// client that only follows it can sit out half a minute after a short
// outage. So signs that the server may be reachable again cut the wait
// short and start the backoff over (retryNow): the browser's online event,
// the page becoming visible, sync() and, at most once per WRITE_RETRY_MS
// so that typing into a dead server does not hammer it, a local write.
// None of them tries before the server's Retry-After.
//
// A server that does not speak this client's protocol version
// (unsupported_version, a code whose retry class is "upgrade") stops the
// loop: retrying cannot help, so the client reports the error and waits for
// sync() or a reload (after the app is upgraded) instead of hammering the
// server.
//
// A reset (a pull answer's key 4, or a live reset message) says the
// server's history is not the one a collection's cursor was of: the store
// was wiped, restored from a backup or failed over. The client forgets the
// cursor and, unless the reason is rebuilt, heals the server: it restores
// every record it holds as the server sealed it and pushes again its own
// acknowledged writes no seal covers (heal), then pulls from the
// beginning; the outbox goes out as always. Nothing local is dropped but
// what the server refused collected when given back and does not deliver
// in that pull: deleted and collected, it goes as a reconciliation drops
// it (reconcile.js's dropHealed). A heal that fails (network), or that
// the server refuses forbidden (said unreadable), is owed in IndexedDB and
// made at the next round; what the reading after a heal must deliver
// (heal.js's HealCheck) is kept there too, until that reading ends.
//
// One collection's failure is its own (docs/protocol.md, section 10): a
// heal or pull that fails with an error that is not the round's (the
// network, the server as a whole, the token: ROUND_CODES) skips that
// collection, and the round goes on with the others (pullEach); the
// failure is told (the error event, naming the collection) once until the
// collection is served again, or again for a failure of another code
// (tell), so that a failure that lasts does not flood the app's error
// handler, is said by status.lastError while it lasts, and the collection
// is tried again after a backoff: by the loop's next round when polling,
// by retryFailing while live (the welcome does not fail for it, and the
// others stream on), one that starts over only once every collection
// that failed was served again (served). A collection
// whose pull before its push fails holds back its own changes only. A
// collection the live session resets a second time fails so too (onLive):
// a store goes back in time rarely, and a reset storm must not have it
// healed and pulled back to back.
//
// Tombstone collection (docs/protocol.md, section 8): every pull and sub
// carries the reader's lease (replica id, pending floor: Syncer.lease). A
// reset lease_expired says the server may have collected tombstones this
// replica never saw: the collection is reconciled before its outbox is
// pushed (reconcile.js, loaded on demand): pulled from the beginning, the
// records the server acknowledged once and no longer serves given back
// (this subject's stamps, an ordinary push: a record the server lost is
// taken back and stays) and those refused collected dropped with their
// pending changes (rejected, code collected). Since the client
// learns of the reset only by pulling, a collection not pulled lately
// (fresh) is pulled before its outbox goes out (pushAll). A change
// refused collected whose record the server still has, or that was
// created here, is written again with fresh stamps, once. One refused
// collected that no reconciliation noted (no reset came: an edit left
// pending past the write horizon, no lease) stays in the outbox and has
// its collection reconciled first (reconcile.js's holdRefused), which
// writes it again at once or rejects it with its record. A replica that
// pushed to a collection it never pulled held no lease there, and a read
// from the beginning is never reset: its first pull, if it holds a record
// the server acknowledged, is a reconciliation too
// (syncstore.js firstPullReconciles), made after its outbox went out, of the
// first two steps only (replace, drop: nothing is noted for a re-stamp).
//
// Scopes (docs/protocol.md, section 12): a collection with named scopes
// is read under their or (syncstore.js scopeOf), sent with every pull (key 4) and
// sub (key 3) beside the cursor as stored. A page's leave entries name
// records that left the scope: the Database resolves them to held ids
// (leaves) and they are removed in the page's transaction. A scope that
// changes needs nothing but a new read from the same cursor (rescope): the
// server answers the difference. A revoked subject (code revoked, over
// HTTP or live) has its records purged and its outbox moved to the
// rejected changes (onRevoked); the loop then waits for a new token.
//
// Schema versions (docs/protocol.md, section 13): every pull and sub
// (key 8), push (key 3, per collection) and restore (key 3) carries the
// schema version the collection's local data is in (syncstore.js schemaVersion;
// none for an app without migrations), and the server translates. After
// an upgrade (schema.js) the collection's first pull, from the
// beginning, replaces the server state of each record it brings, as a
// reconciliation's does (and, from the empty cursor with records the
// server acknowledged held, is one: syncstore.js firstPullReconciles). A server
// running older rules refuses a version above its own (schema_ahead,
// request level): the outbox and records stay, the app hears it
// (onSchemaAhead), and the loop backs off and tries again until the
// server is upgraded.
//
// Only the leader tab runs a Syncer. Everything it learns goes through the
// Store (IndexedDB), so a reload resumes from the stored cursors and outbox.
//
// The Syncer orchestrates; the parts are elsewhere: one HTTP request and
// its error mapping in http.js, the WebSocket session in live.js, the
// reconnect delay in backoff.js, the messages in protocol.js; the paths,
// statuses and what each error code asks for in constants.js.

import { backoff } from './backoff.js';
import { equalBytes } from './cbor.js';
import { ConvergoError } from './errors.js';
import { BY_TOKEN, post, postAnswer } from './http.js';
import { isPrefix, ownedStart, replicaPrefix, subjectOfToken } from './replica.js';
import { DEFAULTS, PATHS, STATUSES, TIMINGS, VERSION } from './constants.js';
import { SESSION_CODES, sentWith, encodeHello, encodeLivePush, encodePull, encodePush, parseHello, parsePullAnswer, parsePushAnswer, batchLength, pushBudget, pushSizer, resetAction, retryOf } from './protocol.js';
import { OVERTAKEN, applyFirst, applyRemote, cursorOf, dropMeta, firstPullReconciles, healChecks, isEmpty, outboxCounts, owedHeals, owesReconcile, owesReplace, peekOutbox, pendingFloor, prepareRemote, pruneNotes, replacementDone, resetCollection, restartClock, schemaVersion, scopeOf, settle, subStates } from './syncstore.js';
import { CURSOR_KEY, FIRST_PULL, RECONCILE_KEY, RESTAMP_KEY } from './metakeys.js';

/** @typedef {import('./protocol.js').Hello} Hello */
/** @typedef {import('./db.js').Store} Store */
/** @typedef {import('./live.js').LiveSession} LiveSession */

/**
 * live.js, loading or loaded: an app without WebSocket never loads it,
 * and one with it loads it while its first round runs over HTTP
 * (Syncer.start), so the main entry does without the live session's code.
 * @type {Promise<typeof import('./live.js')>|null}
 */
let liveModule = null;

/**
 * Loads live.js once. A load that fails (a network error fetching the
 * chunk) rejects with a network error, so the round fails as a dial that
 * fails does (reported, then retried after backoff), and the next try
 * loads it again.
 */
function loadLive() {
  liveModule ??= import('./live.js').catch((e) => {
    liveModule = null;
    throw new ConvergoError('network', `sync: loading the live session (live.js): ${e?.message ?? e}`, { cause: e });
  });
  return liveModule;
}

/**
 * Whether the browser says it has no network (navigator.onLine false; the
 * 'offline' event fires once it does). The sync loop neither starts a
 * round nor dials then (Syncer.run, runLive), and no request leaves
 * (Syncer.http): it waits for 'online'. Outside a browser, never.
 */
function browserOffline() {
  return globalThis.navigator?.onLine === false;
}

/** The most records a first sync writes in one transaction. */
const FIRST_SYNC_BATCH = 10_000;

/**
 * The most transactions a first sync has issued and not yet seen commit:
 * one committing, the next queued behind it.
 */
const FIRST_SYNC_INFLIGHT = 2;

/** The cause of the error of a push whose token names another subject than its changes (postPush). */
const SWITCHED = Symbol('switched');

/** A page asked for that failed (its error is met when it is awaited). */
const FAILED = /** @type {import('./protocol.js').Page} */ ({ records: [], next: new Uint8Array(0), more: false, seals: [], leaves: [] });

/**
 * The codes of a failure that is not one collection's: the client's own
 * (the network, the database closed or failing) and the protocol's codes
 * marked session in CODES (the server as a whole, the token or its
 * subject, the protocol version or paths). A heal or pull that
 * fails with one stops the round (the others would fail alike); any other
 * failure (internal, corrupt, an answer the client cannot read, a
 * schema_ahead of the collection's version...) is its collection's alone,
 * and the round goes on with the others (pullEach), as the Go client's
 * Pull goes on past one collection's error.
 */
const ROUND_CODES = new Set(['network', 'closed', 'database', ...SESSION_CODES]);

/**
 * The errors about() made: they name their collection already.
 * @type {WeakSet<Error>}
 */
const named = new WeakSet();

/**
 * e, of op on collection c, as the app hears it: naming the collection.
 * @param {string} c
 * @param {'pull'|'sub'|'heal'} op
 * @param {unknown} e
 * @returns {ConvergoError}
 */
function about(c, op, e) {
  const err = asConvergoError(e);
  if (named.has(err)) return err;
  const { code, message, status, requestId, retryAfter } = err;
  const out = new ConvergoError(code, `${op} ${c}: ${message}`, { status, requestId, retryAfter, cause: err });
  const token = sentWith.get(err);
  if (token !== undefined) sentWith.set(out, token);
  named.add(out);
  return out;
}

/**
 * While disconnected, local writes start an early reconnect attempt at most
 * this often (ms): the first write after an outage reconnects at once, a
 * user typing into a dead server costs it one early request per interval
 * (plus the backoff's, which each early attempt starts over).
 */
export const WRITE_RETRY_MS = 2_000;

/**
 * Why a reconnect attempt is wanted now: a local write, the browser's
 * online event, the page became visible, sync() was called, or a new token.
 * @typedef {'write'|'online'|'visible'|'sync'|'token'} RetryReason
 */

/**
 * @typedef {object} SyncerOptions
 * @property {string} url server base URL (http or https)
 * @property {Store} store
 * @property {() => string[]} collections the collections to sync
 * @property {(force: boolean) => Promise<string>} token the current token
 *   ("" for none); force asks for a fresh one
 * @property {typeof fetch} fetch
 * @property {any} [WebSocket] a WebSocket constructor, or null to poll
 * @property {(c: string, ids: string[]) => void} onChanges records changed by the server
 * @property {(r: import('./database.js').Refusal) => void} onRefused a
 *   pushed change was refused, rolled back and kept among the rejected
 *   changes
 * @property {(r: {collection: string, reason: string, message: string}) => void} onServerReset
 *   the server reset a collection's cursor (docs/protocol.md, "Resets")
 * @property {(r: Reconciliation) => void} [onReconciled] a collection
 *   was reconciled and its outbox pushed: after a reset lease_expired
 *   always; at the first pull of a collection this replica pushed to and
 *   never pulled, only when something was dropped or rejected
 * @property {() => string|null} [subject] the subject signed in, for
 *   rejected changes (null: unknown)
 * @property {(s: Superseded) => void} onSuperseded fields of a pushed
 *   change lost to newer writes
 * @property {(s: Partial<import('./database.js').Status>) => void} onStatus
 * @property {() => Promise<void>} [onStopped] awaited by stop() once the
 *   loop has ended: the leader stores a lastSyncedAt still waiting
 *   (leader.js syncedKeeper), before Database.close closes the Store
 * @property {(e: Error) => void} onError
 * @property {(e: ConvergoError) => void} onAuth the token was refused
 * @property {(c: string, leaves: Uint8Array[]) => Promise<string[]>} [leaves]
 *   the ids of the records held in collection c whose leave entries these
 *   are (docs/protocol.md, section 12)
 * @property {(e: ConvergoError) => Promise<void>} [onRevoked] the server
 *   refused the subject (revoked): purge what it held; the loop then waits
 *   for a new token (retryNow('token'))
 * @property {(c: string, u: import('./database.js').Unreadable|null) => void} [onUnreadable]
 *   the server refused a pull, a live sub or a heal of collection c for this token
 *   (u), or a pull of it succeeded (null)
 * @property {(e: ConvergoError) => void} [onSchemaAhead] the server refused
 *   a schema version it does not have yet (schema_ahead); the loop retries
 *   with backoff
 * @property {number} [pollInterval] ms between polls without WebSocket
 * @property {number} [pingInterval] ms of silence before a live ping
 * @property {number} [silenceTimeout] ms of silence that ends a live session
 * @property {number} [pushTimeout] ms a live push may wait for its answer before the session is dead
 * @property {{base?: number, max?: number, random?: () => number}} [backoff]
 * @property {() => number} [random]
 */

/**
 * Fields of a pushed change that lost to newer writes (the 'superseded'
 * event): status superseded, the change altered nothing; applied, the
 * rest of it applied.
 * @typedef {{collection: string, id: string, lost: string[], status: 'applied'|'superseded'}} Superseded
 */

/**
 * How a reconciliation went (the 'reconciled' event; after a reset
 * lease_expired, or at the first pull of a collection this replica pushed
 * to and never pulled when it dropped or rejected something):
 * dropped, the records held that the server had deleted and collected;
 * rejected, their pending changes, moved to the rejected changes with code
 * collected; restamped, pending changes the server refused collected that
 * were written again with fresh stamps and pushed.
 * @typedef {{collection: string, dropped: number, rejected: number, restamped: number}} Reconciliation
 */

/**
 * How long a pull keeps a collection fresh (ms): its outbox is pushed
 * without pulling first. After longer (a reload, an outage, a laptop that
 * slept) the collection is pulled before its outbox goes out, so that a
 * lease that expired meanwhile is reconciled before anything is pushed
 * (docs/protocol.md, "Tombstone collection"). Far below any sensible
 * maximum offline period; a live subscription keeps its collection fresh.
 */
const FRESH_MS = 60_000;

export class Syncer {
  /** @param {SyncerOptions} o */
  constructor(o) {
    this.o = o;
    this.base = o.url.replace(/\/+$/, '');
    this.store = o.store;
    /** @type {Hello|null} */
    this.hello = null;
    /** How many times the token changed (retoken): a hello answer sent before the last is not taken (doHello). */
    this.tokens = 0;
    this.stopped = false;
    this.attempt = 0;
    /** @type {LiveSession|null} the live session, while there is one */
    this.session = null;
    /** @type {(() => void)|null} wakes the loop from a wait */
    this.wake = null;
    /** @type {Set<() => void>} ends each push's delay under way (wait 'push'): stop() does */
    this.delays = new Set();
    /** @type {((at: number) => void)|null} moves the end of the current wait to an earlier time */
    this.wakeAt = null;
    /**
     * What the loop is waiting for, if it waits: the next reconnect
     * attempt, the next poll, the browser to report a network, sync()
     * after the server refused the protocol version, a new token after
     * it revoked the subject. A push's delay (the one before a live push
     * refused for now goes over HTTP, pushOutbox) is none of the loop's
     * waits and leaves it as it is (wait).
     * @type {'backoff'|'poll'|'offline'|'halted'|'revoked'|null}
     */
    this.waiting = null;
    /** No request before this time (ms since epoch): the server's Retry-After. */
    this.retryAt = 0;
    /** When a write last started an early attempt. */
    this.lastWriteRetry = -Infinity;
    /** A reason to retry at once came while a round was under way. */
    this.retryWanted = false;
    /** @type {{resolve: () => void, reject: (e: Error) => void}[]} sync() calls waiting for the loop's next round */
    this.roundWaiters = [];
    this.pushWanted = false;
    this.pushQueued = false;
    /** @type {{subject: string, prefix: string}|null} the last token subject's replica prefix (pushPrefix) */
    this.lastPrefix = null;
    /** @type {string|null} the replica the outbox was last counted as, when pushOutbox found nothing to push */
    this.countedAs = null;
    /** @type {Promise<void>} serializes push/pull work */
    this.chain = Promise.resolve();
    this.resetWanted = false;
    /** @type {Promise<void>|null} */
    this.loop = null;
    /** @type {ConvergoError|null} */
    this.lastError = null;
    /** @type {Map<string, number>} when each collection was last pulled to the end (ms) */
    this.pulledAt = new Map();
    /** How many requests the server answered, and sessions it welcomed (run: a run of token failures ends with one) */
    this.answered = 0;
    /**
     * Whether a live session was welcomed since the last dial that got no
     * welcome: the next round pulls only the collections that owe a pull
     * (owesPull), the session's subs catching the others up.
     */
    this.resume = false;
    /** @type {Map<string, import('./heal.js').HealCheck>} per collection, what its last heal gave back that the reading after it has not yet delivered (heal.js's checkHeal) */
    this.healChecks = new Map();
    /** Whether the heal checks kept in IndexedDB were loaded (loadHealChecks). */
    this.checksLoaded = false;
    /** @type {Set<string>} the collections whose heal the server refused forbidden, still owed (healOwed): said unreadable until it is made */
    this.healRefused = new Set();
    /** @type {Set<string>} the collections in healRefused whose refusal the error event told, since the token last changed (healOwed) */
    this.healTold = new Set();
    /** @type {Set<string>} the collections whose last pull (or live sub: subRefused) the server refused to the token (pullOne) */
    this.refusedPulls = new Set();
    /** @type {Set<string>} the collections whose last live sub the server refused to the token (subRefused): said unreadable until a sub of it is served */
    this.refusedSubs = new Set();
    /** @type {Map<string, ConvergoError>} the collections whose last heal or pull failed with an error of their own (pullEach), and that error: tried again with backoff */
    this.failing = new Map();
    /** @type {Map<string, string>} the collections whose failure the error event told (tell), and its code, until served again (served): a failure of another code is told again */
    this.told = new Map();
    /** The backoff attempt of the next try of the failing collections while live (retryFailing): it starts over once none fails or is told (served). */
    this.failAttempt = 0;
    /** @type {any} the timer of that try, while one is set */
    this.failTimer = null;
    /** Whether pushAll is running (a reconciliation inside it leaves the push to it). */
    this.pushing = false;
    /** @type {Set<string>} the collections the live session reset (onLive): a second reset is the collection's failure */
    this.liveResets = new Set();
    /** @type {Set<string>} the collections the live session reset twice (onLive): a page of one does not serve it again (served) */
    this.liveStorms = new Set();
    /** @type {Map<string, Reconciliation>} reconciliations whose outbox is not yet pushed */
    this.reconciled = new Map();
    // No request leaves while the browser says it is offline
    // (browserOffline): it could only fail, and the browser logs that
    // failure on the page's console. Work under way when the page hears
    // 'offline' (a welcome's pulls, a push) fails at its next request as
    // at a request that fails (network); the loop waits for 'online'.
    /** @type {import('./http.js').HttpOptions} */
    this.http = {
      base: this.base,
      fetch: (input, init) => (browserOffline() ? Promise.reject(new Error('the browser is offline')) : this.o.fetch(input, init)),
      token: (force) => this.token(force),
    };
  }

  start() {
    // Load the live session while the first round runs (its failure is
    // the live round's to report: runLive).
    if (this.o.WebSocket) loadLive().catch(() => {});
    this.loop = this.run();
  }

  async stop() {
    this.stopped = true;
    clearTimeout(this.failTimer);
    this.session?.close();
    this.wake?.();
    for (const finish of this.delays) finish();
    this.settleRound(new ConvergoError('network', 'sync stopped'));
    await this.loop;
    await this.o.onStopped?.();
  }

  /** Local writes are waiting: push soon. */
  kick() {
    this.pushWanted = true;
    if (!this.live) {
      // Polling: push now rather than at the next poll. Disconnected: an
      // early reconnect attempt, rate-limited. In the middle of a round:
      // the round pushes what is pending (pushWanted).
      if (this.waiting === 'poll') this.wake?.();
      else if (this.waiting === 'backoff') this.retryNow('write');
      return;
    }
    if (this.pushQueued) return; // the queued push will see this write too
    this.pushQueued = true;
    this.serial(() => {
      this.pushQueued = false;
      return this.pushAll();
    }).catch((e) => this.report(e));
  }

  /** The network came back: retry now. */
  online() {
    this.retryNow('online');
  }

  /**
   * The server may be reachable now: end a reconnect wait early and start
   * the backoff over (never before the server's Retry-After). Writes do so
   * at most once per WRITE_RETRY_MS: a write within that time of the last
   * early attempt moves the next attempt to the end of it. While live, a
   * change of network or visibility checks that the socket still answers
   * (a laptop that slept often holds a socket whose peer is long gone).
   * @param {RetryReason} why
   * @returns {boolean} whether an early attempt was started or scheduled
   */
  retryNow(why) {
    if (this.stopped) return false;
    const now = Date.now();
    if (why === 'write') {
      if (this.waiting !== 'backoff') return false;
      // One early attempt per interval: a write inside the interval of the
      // last one brings the next attempt to the interval's end (once).
      if (this.lastWriteRetry > now) return false;
      const at = Math.max(now, this.lastWriteRetry + WRITE_RETRY_MS);
      this.lastWriteRetry = at;
      this.attempt = 0;
      this.wakeAt?.(Math.max(at, this.retryAt));
      return true;
    }
    if (this.waiting === 'halted') return false; // only sync() tries again
    if (this.waiting === 'revoked' && why !== 'token') return false; // only a new token
    this.attempt = 0;
    // A push's delay (no wait of the loop's) is not cut short: the server
    // asked for less.
    if (this.waiting === null) {
      // Live, or a round is under way: if it fails (it may have started
      // before the server or the network came back), the next attempt goes
      // at once instead of after the backoff.
      if (this.live) {
        if (why === 'online' || why === 'visible') this.session?.probeLive?.();
      } else this.retryWanted = true;
      return false;
    }
    this.wakeAt?.(Math.max(now, this.retryAt));
    return true;
  }

  /**
   * The token is now token: a session whose hello carried another
   * subject's ends (its pages are read under that subject's rights), and
   * the loop dials again at once with the new one, resuming from the
   * cursors. A token of the same subject keeps the session, unless a
   * collection was refused to the token before (a heal, a pull or a
   * sub): the session ends too, and the next one, with the new token,
   * makes those heals and reads those collections again.
   * @param {string} token
   */
  retoken(token) {
    this.tokens++;
    // A heal still refused to the new token is told again (healOwed).
    this.healTold.clear();
    const s = this.session;
    if (s?.token != null && subjectOfToken(s.token) !== subjectOfToken(token)) {
      this.retryWanted = true;
      s.close();
      return;
    }
    // A collection refused to the token before (a heal: healOwed; a
    // pull: pullOne; a sub) may be granted to this one. Polling, the
    // round retryNow('token') wakes reads it again. A live session reads
    // as its hello's token (docs/protocol.md, section 9): a sub sent
    // again over it is refused again, so the session ends and the loop
    // dials again at once with the new token, whose welcome makes the
    // heals and pulls and subscribes each such collection.
    const refused = this.healRefused.size + this.refusedPulls.size + this.refusedSubs.size;
    if (!s?.live || s.token === token || refused === 0) return;
    this.retryWanted = true;
    s.close();
  }

  /** The network went away: drop the socket; the loop waits for online(). */
  offline() {
    this.session?.close();
  }

  /** The database was wiped: pull everything again. */
  reset() {
    this.resetWanted = true;
    this.session?.close();
    // Disconnected, the next attempt resets the cursors.
    if (this.waiting === 'poll' || this.waiting === 'offline') this.wake?.();
  }

  /** A new collection to sync. */
  addCollection(/** @type {string} */ c) {
    if (this.live && this.session && !this.session.subscribed.has(c)) {
      const session = this.session;
      this.serial(() => this.catchUp(session, [c])).catch((e) => this.report(e));
    } else if (this.waiting === 'poll') {
      this.wake?.();
    }
    // Otherwise the round under way or the next attempt includes it.
  }

  /**
   * The scopes of collection c changed: read it again from its cursor under
   * the new scope (the server answers the difference) and, while live,
   * subscribe again with it.
   * @param {string} c
   */
  rescope(c) {
    const session = this.session;
    if (this.live && session?.subscribed.has(c)) {
      session.unsubscribe(c);
      this.serial(() => this.catchUp(session, [c])).catch((e) => this.report(e));
    } else this.addCollection(c);
  }

  /**
   * Heals (where owed) and pulls the collections cs, and subscribes each
   * pulled on session (if it is still the live one), from the cursor
   * stored, under its scope; one the token may not read is reported and
   * skipped (pullOne), one that fails with an error of its own is told
   * and tried again with backoff (pullEach, retryFailing).
   * @param {LiveSession} session
   * @param {string[]} cs
   */
  async catchUp(session, cs) {
    this.tellFailed(await this.pullEach(cs, session));
    this.retryFailing(session);
  }

  /**
   * @param {LiveSession} session
   * @param {string} c
   */
  async subscribe(session, c) {
    const [cursor, scope, floor, version] = await Promise.all([cursorOf(this.store, c), scopeOf(this.store, c), pendingFloor(this.store, c), schemaVersion(this.store, c)]);
    this.subscribeAt(session, c, { cursor, scope, floor, version });
  }

  /**
   * Subscribes collection c on session (if it is still the live one and
   * c is not subscribed on it) from what was read of it (subscribe, or
   * pullEach's subStates for many at once).
   * @param {LiveSession} session
   * @param {string} c
   * @param {{cursor: Uint8Array, scope: Uint8Array|undefined, floor: number|null, version: number}} s
   */
  subscribeAt(session, c, s) {
    if (this.session === session && !session.subscribed.has(c)) session.subscribe(c, s.cursor, s.scope, this.leaseAt(s.floor), s.version);
  }

  /**
   * Whether collection c is read over HTTP before its sub, rather than
   * subscribed from its cursor: it has none (a first sync's pull is the
   * fast one; a reset's reading from the beginning), its pull or sub was
   * refused to the token or failed (a pull tells how it goes now), or it
   * owes a reading a sub's pages do not make: a reconciliation's (its
   * pull from the beginning, its give-back; a first pull's too, from the
   * empty cursor of a collection that holds records the server
   * acknowledged), an upgrade's replacement, a heal (made before it), or
   * the reading whose pages end a heal's check (subStates). A collection
   * never written keeps the empty cursor its pull to the end stored: it
   * is subscribed from it.
   * @param {string} c
   * @param {import('./syncstore.js').SubState} s what subStates read of c
   */
  owesPull(c, s) {
    if (this.failing.has(c) || this.refusedPulls.has(c) || this.refusedSubs.has(c) || this.healChecks.has(c)) return true;
    return s.owed;
  }

  /**
   * This reader's lease on collection c, sent with every pull and sub: the
   * replica id it stamps with and its pending floor.
   * @param {string} c
   * @returns {Promise<import('./protocol.js').Lease>}
   */
  async lease(c) {
    return this.leaseAt(await pendingFloor(this.store, c));
  }

  /**
   * This reader's lease with pending floor floor (lease).
   * @param {number|null} floor
   * @returns {import('./protocol.js').Lease}
   */
  leaseAt(floor) {
    return { replica: /** @type {string} */ (this.store.replica), floor };
  }

  /**
   * Whether collection c's outbox may be pushed without pulling first:
   * it owes no reconciliation, and was pulled to the end within FRESH_MS,
   * or is subscribed live and its sub caught up (a sub from an old cursor
   * may yet be reset lease_expired), or was never pulled (no cursor: no lease to
   * have expired). The pull that follows the push reconciles a
   * never-pulled collection that holds records the server acknowledged
   * (pullCollection); a change of it the server refused collected
   * meanwhile has it reconciled first (pushOutbox, reconcile.js's
   * holdRefused), as any change refused collected outside a
   * reconciliation.
   * @param {string} c
   */
  async fresh(c) {
    if (await owesReconcile(this.store, c)) return false;
    if (Date.now() - (this.pulledAt.get(c) ?? -Infinity) < FRESH_MS) return true;
    if (this.live && this.session?.subscribed.has(c) && this.session.caught.has(c)) return true;
    return (await cursorOf(this.store, c)).length === 0;
  }

  /**
   * sync(): push and pull now. While the loop waits to reconnect, it
   * reconnects at once and this reports how that went, so the live
   * connection comes back with it; while the server's Retry-After lasts,
   * rejects at once with rate_limited.
   * @returns {Promise<void>}
   */
  requestSync() {
    const wait = this.retryAt - Date.now();
    if (wait > 0) {
      return Promise.reject(
        new ConvergoError('rate_limited', `sync: the server asked to wait ${Math.ceil(wait / 1000)} s more`, { retryAfter: Math.ceil(wait / 1000) }),
      );
    }
    if (this.waiting === 'backoff') {
      return new Promise((resolve, reject) => {
        this.roundWaiters.push({ resolve, reject });
        this.retryNow('sync');
      });
    }
    if (this.waiting === 'revoked') return Promise.reject(this.lastError);
    if (this.waiting === 'halted') {
      // Try the server again once: it may have been rolled forward or back.
      return new Promise((resolve, reject) => {
        this.roundWaiters.push({ resolve, reject });
        this.attempt = 0;
        this.wake?.();
      });
    }
    return this.syncNow().then((failed) => {
      if (failed.size === 0) return;
      // The collections that failed are tried again with backoff: live,
      // by retryFailing; polling, by a round that comes sooner.
      this.tellFailed(failed);
      if (this.live && this.session) this.retryFailing(this.session);
      else if (this.waiting === 'poll') this.wakeAt?.(Date.now() + backoff(this.attempt++, { random: this.o.random, ...this.o.backoff }));
      throw failed.values().next().value;
    });
  }

  /**
   * Reports the end of a round to the sync() calls waiting for it.
   * @param {Error|null} err
   */
  settleRound(err) {
    const waiters = this.roundWaiters;
    this.roundWaiters = [];
    for (const w of waiters) {
      if (err) w.reject(err);
      else w.resolve();
    }
  }

  /**
   * Push and pull now. Resolves, when done, to the collections whose heal
   * or pull failed with an error of their own (pullEach: the others were
   * pulled all the same), untold; rejects with the error that stopped it.
   * With resume (the loop's round before a live session, after one was
   * welcomed), a collection that owes no pull is left to that session's
   * sub (pullEach's direct), and lastSyncedAt left to its pages.
   * @param {boolean} [resume]
   * @returns {Promise<Map<string, ConvergoError>>}
   */
  syncNow(resume = false) {
    return this.serial(async () => {
      if (!this.hello) await this.doHello();
      // A collection whose pull before its push failed is not pulled again
      // in this round (nor healed): its failure is the round's.
      const held = await this.pushAll();
      const direct = resume && !this.live ? new Set() : null;
      const failed = await this.pullEach(
        this.o.collections().filter((c) => !held.has(c)),
        this.live ? this.session : null,
        (c) => !held.has(c),
        direct,
      );
      for (const [c, e] of held) failed.set(c, e);
      this.o.onStatus({ ...(direct?.size ? {} : { lastSyncedAt: Date.now() }), online: true, ...(failed.size === 0 ? { lastError: null, schemaAhead: false } : {}) });
      return failed;
    });
  }

  /**
   * Heals the collections owed a heal that heals says, then pulls each
   * collection of cs, and, with a session, subscribes each it pulled.
   * Each goes on its own: one the token may not read is reported and
   * skipped (pullOne), and one whose heal or pull fails with an error of
   * its own (not of ROUND_CODES) is skipped too (its pull too, when its
   * heal failed), so that one collection's failure does not stall the
   * sync of the rest (the set of collections outlives sessions, users'
   * rights and the server's health). An error of the round (the network,
   * the token) is thrown. Resolves to the failures, by collection, each
   * naming its collection, and notes them in failing (the collections of
   * cs pulled leave it); the caller tells them (tellFailed).
   * With direct, a collection that owes no pull (owesPull) is not pulled:
   * it is subscribed from its cursor on session (the sub sends what
   * follows it, docs/protocol.md, section 9), or, without one, left to the
   * next session's; direct collects them.
   * @param {string[]} cs
   * @param {LiveSession|null} [session]
   * @param {(c: string) => boolean} [heals] which owed heals to make (default: those of cs)
   * @param {Set<string>|null} [direct]
   * @returns {Promise<Map<string, ConvergoError>>}
   */
  async pullEach(cs, session = null, heals = (c) => cs.includes(c), direct = null) {
    const failed = await this.healOwed(heals);
    /** @type {string[]} */
    const pulled = [];
    // With direct, what each collection's sub needs is read at once, in
    // one transaction for them all, and those that owe no pull are
    // subscribed first, from the cursors that transaction read: a page
    // that builds on a cursor another tab moved since is not written
    // (onLive, live.js's overtaken).
    const states = direct ? await subStates(this.store, cs.filter((c) => !failed.has(c))) : null;
    /** @type {Set<string>} */
    const subscribed = new Set();
    for (const [c, s] of states ?? []) {
      if (this.owesPull(c, s)) continue;
      subscribed.add(c);
      direct?.add(c);
      if (session) this.subscribeAt(session, c, s);
    }
    for (const c of cs) {
      if (failed.has(c) || subscribed.has(c)) continue;
      try {
        if (await this.pullOne(c)) {
          // Live, its sub's first page serves it (onLive), not the pull
          // before it: a server refusing every sub would have its backoff
          // start over at every try.
          if (session) await this.subscribe(session, c);
          else pulled.push(c);
        }
      } catch (e) {
        if (ROUND_CODES.has(asConvergoError(e).code)) throw e;
        failed.set(c, about(c, 'pull', e));
      }
    }
    for (const c of cs) this.failing.delete(c);
    for (const [c, e] of failed) this.failing.set(c, e);
    this.served(pulled);
    return failed;
  }

  /**
   * The collections cs were served again: pulled outside a live session
   * (pullEach), or a page of one delivered on it (onLive; not of one the
   * session reset twice, liveStorms, until the next session). The next
   * failure of each is told (tell); and once none fails nor is told, none
   * served since its failure, the backoff of the tries of the failing
   * collections starts over: a collection pulled, then refused its sub or
   * reset again, is tried less and less often, never back to back.
   * @param {string[]} cs
   */
  served(cs) {
    for (const c of cs) this.told.delete(c);
    if (this.failing.size === 0 && this.told.size === 0) this.failAttempt = 0;
  }

  /**
   * Tells the app of the failures pullEach returned (the error event;
   * onSchemaAhead for schema_ahead), each collection's once until it is
   * served again or fails with another code (tell), and sets the status's lastError to the first
   * collection still failing, or null.
   * @param {Map<string, ConvergoError>} failed
   */
  tellFailed(failed) {
    if (this.stopped) return;
    for (const [c, e] of failed) this.tell(c, e);
    this.o.onStatus({ lastError: this.failing.values().next().value ?? null });
  }

  /**
   * Tells the app of collection c's failure e (the error event;
   * onSchemaAhead for schema_ahead): once until c is served again
   * (served), and again for a failure of another code, so that one that
   * fails internal, then schema_ahead, has the app hear it must upgrade.
   * @param {string} c
   * @param {ConvergoError} e
   */
  tell(c, e) {
    if (this.told.get(c) === e.code) return;
    this.told.set(c, e.code);
    this.o.onError(e);
    if (e.code === 'schema_ahead') this.o.onSchemaAhead?.(e);
  }

  /**
   * While session is live, tries again, after a backoff (the next of
   * failAttempt), the collections whose heal or pull failed with an error
   * of their own (failing): heals, pulls and subscribes each that now
   * succeeds, tells again those that fail, and sets the next try, until
   * none fails. Polling, or between sessions, the loop's rounds try them.
   * @param {LiveSession} session
   */
  retryFailing(session) {
    if (this.failing.size === 0 || this.failTimer !== null || this.stopped) return;
    const delay = backoff(this.failAttempt++, { random: this.o.random, ...this.o.backoff });
    this.failTimer = this.after(delay, 'retry', () => {
      this.failTimer = null;
      if (this.session !== session || !session.live) return; // the next welcome skips them, and sets the next try
      this.serial(async () => {
        if (this.session !== session || !session.live) return;
        const before = this.failing.size;
        this.tellFailed(await this.pullEach([...this.failing.keys()], session));
        // Changes held back while their collection failed go now.
        if (this.failing.size < before) await this.pushAll();
      })
        .catch((e) => this.report(e))
        .finally(() => this.retryFailing(session));
    });
  }

  /**
   * Calls fn after ms: a timer of sync work beside the loop's wait (why
   * names it, as wait's does: 'retry', retryFailing's); returns its id.
   * @param {number} ms
   * @param {'retry'} why
   * @param {() => void} fn
   */
  after(ms, why, fn) {
    return setTimeout(fn, ms);
  }

  /**
   * Pulls collection c; one the token may not read (or whose scope the
   * server finds invalid) is reported and skipped. Resolves to whether it
   * was pulled.
   * @param {string} c
   */
  async pullOne(c) {
    try {
      await this.pullCollection(c);
      this.refusedPulls.delete(c);
      // A heal refused stays said until it is made (healOwed), a sub
      // refused until one is served (onLive).
      if (!this.healRefused.has(c) && !this.refusedSubs.has(c)) this.o.onUnreadable?.(c, null);
      return true;
    } catch (e) {
      // A scope the server finds invalid (a parameter the token cannot
      // bind) stops that collection alone too.
      const code = /** @type {any} */ (e)?.code;
      if (code !== 'forbidden' && (code !== 'invalid' || (await scopeOf(this.store, c)) === undefined)) throw e;
      this.refusedPulls.add(c);
      this.unreadable(c, 'pull', /** @type {ConvergoError} */ (e));
      return false;
    }
  }

  /**
   * The server refused op of collection c with e, for this token: the
   * tab hears it as an error, the app as onUnreadable.
   * @param {string} c
   * @param {'pull'|'sub'|'heal'} op
   * @param {ConvergoError} e
   */
  unreadable(c, op, e) {
    const { code, message, status, requestId } = e;
    this.o.onError(new ConvergoError(code, `${op} ${c}: ${message}`, { status, requestId }));
    this.o.onUnreadable?.(c, { collection: c, op, code, message, requestId: requestId ?? null });
  }

  /**
   * Reports an error of sync work started outside the loop (a push, a
   * catch-up) to the app, unless stop() was called since: that work ends
   * with 'sync stopped' (post).
   * @param {Error} e
   */
  report(e) {
    if (!this.stopped) this.o.onError(e);
  }

  /**
   * Runs fn after the work queued before it.
   * @template T
   * @param {() => Promise<T>} fn
   * @returns {Promise<T>}
   */
  serial(fn) {
    const p = this.chain.then(fn);
    this.chain = p.then(
      () => {},
      () => {},
    );
    return p;
  }

  get live() {
    return this.session?.live ?? false;
  }

  async run() {
    let tokenRetried = false;
    let tokenRefreshed = false;
    while (!this.stopped) {
      // What the server answered before this attempt's round, then
      // before its session: a run of token failures ends only once it
      // answers again (a round whose collections all owe no pull, nothing
      // pending, sends no request; a session welcomed answers).
      let answered = this.answered;
      let round = false;
      try {
        if (browserOffline()) {
          this.o.onStatus({ online: false, syncing: false });
          this.settleRound(new ConvergoError('network', 'sync: the browser is offline'));
          await this.wait(60_000, 'offline');
          continue;
        }
        if (this.resetWanted) {
          this.resetWanted = false;
          // The heals owed and their checks went with the database.
          this.healChecks.clear();
          this.healRefused.clear();
          this.healTold.clear();
          this.failing.clear();
          this.told.clear();
          await dropMeta(this.store, CURSOR_KEY);
        }
        await this.store.verify();
        this.o.onStatus({ syncing: true });
        // A round sync() waits for pulls every collection: it resolves
        // before the session's subs catch any up.
        const failed = await this.syncNow(this.resume && !!this.o.WebSocket && this.roundWaiters.length === 0);
        this.o.onStatus({ syncing: false });
        if (this.answered !== answered) {
          tokenRetried = false;
          tokenRefreshed = false;
        }
        answered = this.answered;
        round = true;
        this.lastError = null;
        this.retryAt = 0;
        this.retryWanted = false;
        // The collections that failed on their own are told (once until
        // served again: tellFailed), and tried again after a backoff:
        // polling, by the next round; live, by retryFailing.
        if (failed.size > 0) this.tellFailed(failed);
        this.settleRound(failed.values().next().value ?? null);
        if (this.stopped) break;
        if (!this.o.WebSocket) {
          if (failed.size === 0) {
            this.attempt = 0;
            // A write made during the round's push goes out now.
            if (this.pushWanted) continue;
            await this.wait(this.o.pollInterval ?? 10_000, 'poll');
            continue;
          }
        } else {
          const since = Date.now();
          // The browser went offline while the round ran, after its
          // requests were answered: no dial; the loop waits for the
          // online event (above).
          if (!(await this.runLive())) continue;
          // A session that ended on its own soon after it began (a server
          // closing sockets, a proxy cutting them) counts as a failure, so
          // reconnecting backs off instead of spinning (stableSessionMs,
          // as in the Go client's Live).
          if (Date.now() - since >= TIMINGS.stableSessionMs) {
            this.attempt = 0;
            continue;
          }
        }
      } catch (e) {
        if (this.stopped) break;
        // A session welcomed (or a request answered) since the round:
        // this failure starts a new run.
        if (round && this.answered !== answered) {
          tokenRetried = false;
          tokenRefreshed = false;
        }
        let err = asConvergoError(e);
        // A refusal the token decided, of a live session (or of a push
        // over it) whose hello carried a token replaced since, says
        // nothing of the current one (docs/protocol.md, "Retrying"): the
        // loop dials again at once with it, and neither tells the refusal
        // nor acts on it (a revoked purges nothing). Refused again, the
        // refusal is of the current token and stands.
        if (BY_TOKEN.has(err.code) && (await this.sentWithReplaced(err))) continue;
        // A live session whose token expired (its refusal has no HTTP
        // status: an HTTP request refreshes its token itself, http.js)
        // asks for a fresh token as an HTTP request does, once, and dials
        // again with it at once: a token that ran out is no news for the
        // app. So it is asked before the refusal is taken as the loop's
        // failure: a token getToken replaced is neither status.lastError
        // (in any tab) nor the answer of a sync() waiting for the round
        // (the next round answers it). A refresh that fails, or gives the
        // token refused, is told as 'auth' (with getToken's failure as its
        // cause).
        if (err.code === 'token_expired' && err.status === undefined && !tokenRefreshed) {
          tokenRefreshed = true;
          const refused = sentWith.get(err);
          try {
            if ((await this.token(true)) !== refused) continue;
          } catch (t) {
            err = new ConvergoError(err.code, `${err.message}; getToken: ${/** @type {any} */ (t)?.message ?? t}`, { requestId: err.requestId, cause: t });
            if (refused !== undefined) sentWith.set(err, refused);
          }
          if (this.stopped) break;
        }
        // schemaAhead is told once per run of refused rounds (as a
        // collection's is, tell): the error event says each.
        const ahead = err.code === 'schema_ahead' && this.lastError?.code !== 'schema_ahead';
        this.lastError = err;
        this.retryAt = err.retryAfter ? Date.now() + err.retryAfter * 1000 : 0;
        // A sync() that woke the loop hears why this attempt failed (an
        // auth failure too: its retry with a fresh token is a new round).
        this.settleRound(err);
        this.o.onStatus({ online: err.code !== 'network' && err.code !== 'unavailable' ? true : false, syncing: false, lastError: err });
        if (ahead) this.o.onSchemaAhead?.(err);
        if (err.code === 'revoked') {
          // The subject is denied: purge (the heal checks kept too), then
          // wait for a new token.
          this.healChecks.clear();
          this.healRefused.clear();
          this.healTold.clear();
          this.refusedPulls.clear();
          this.refusedSubs.clear();
          this.failing.clear();
          this.told.clear();
          this.o.onStatus({ online: false });
          try {
            await this.o.onRevoked?.(err);
          } catch (e) {
            this.o.onError(asConvergoError(e));
          }
          await this.wait(Infinity, 'revoked');
          this.attempt = 0;
          continue;
        }
        const retry = retryOf(err.code);
        if (retry === 'auth') {
          if (!tokenRetried) {
            tokenRetried = true;
            this.o.onAuth(err);
            continue; // the next round asks for a fresh token
          }
        }
        this.o.onError(err);
        if (err.code === 'closed') break;
        if (retry === 'upgrade') {
          // Retrying cannot help: wait for sync() (or a reload).
          this.o.onStatus({ online: false });
          await this.wait(Infinity, 'halted');
          continue;
        }
      }
      // Something said the server may be back while the round was failing:
      // try again at once (never before the server's Retry-After).
      const soon = this.retryWanted;
      this.retryWanted = false;
      const delay = soon ? Math.max(0, this.retryAt - Date.now()) : backoff(this.attempt++, { random: this.o.random, ...this.o.backoff, floor: this.retryAt - Date.now() });
      await this.wait(delay, 'backoff');
    }
    this.settleRound(new ConvergoError('network', 'sync stopped'));
  }

  /**
   * Waits ms, or less if woken (wake) or the end moved earlier (wakeAt).
   * The loop's waits are what wake, wakeAt and waiting name. A push's
   * delay ('push') is no wait of the loop's: it may begin or end while the
   * loop waits (a push loop outlives the session it began in), and leaves
   * them be, so the loop stays wakeable ('online', a write, sync()) and
   * says what it waits for; stop() ends it (delays).
   * @param {number} ms Infinity: until woken
   * @param {'backoff'|'poll'|'offline'|'halted'|'revoked'|'push'} why
   */
  wait(ms, why) {
    if (this.stopped) return Promise.resolve();
    return new Promise((resolve) => {
      /** @type {any} */
      let t = null;
      let end = Date.now() + ms;
      const finish = () => {
        clearTimeout(t);
        this.delays.delete(finish);
        if (this.wake === finish) {
          this.wake = null;
          this.wakeAt = null;
          this.waiting = null;
        }
        resolve(undefined);
      };
      if (ms !== Infinity) t = setTimeout(finish, ms);
      if (why === 'push') {
        this.delays.add(finish);
        return;
      }
      this.waiting = why;
      this.wake = finish;
      this.wakeAt = (/** @type {number} */ at) => {
        if (at >= end) return;
        end = at;
        clearTimeout(t);
        t = setTimeout(finish, Math.max(0, at - Date.now()));
      };
    });
  }

  // ------------------------------------------------------------- HTTP

  /**
   * POSTs a CBOR body (see http.js). Once stop() was called, rejects with
   * network 'sync stopped' and sends nothing: this is where every request
   * of the Syncer goes (postAnswer too), so work still running when it
   * stopped (a push loop, a pull of many pages, a heal's restores, a
   * reconciliation) goes no further; what it had not done stays owed (the
   * outbox, the cursor, the heal). So does work under way while the
   * browser says it is offline, at its request (Syncer.http: network).
   * @param {string} path
   * @param {import('./http.js').Body} body
   * @returns {Promise<Uint8Array>}
   */
  async post(path, body) {
    this.checkStopped();
    const out = await post(this.http, path, body);
    this.answered++;
    return out;
  }

  /** Throws network 'sync stopped' once stop() was called (post). */
  checkStopped() {
    if (this.stopped) throw new ConvergoError('network', 'sync stopped');
  }

  /**
   * Whether err was a refusal of a token replaced since it was sent (an
   * error that names no token, or a token that cannot be read now, was
   * not).
   * @param {ConvergoError} err
   * @returns {Promise<boolean>}
   */
  async sentWithReplaced(err) {
    const sent = sentWith.get(err);
    if (sent === undefined) return false;
    try {
      return (await this.o.token(false)) !== sent;
    } catch {
      return false;
    }
  }

  /**
   * The token to send; getToken's failures become ConvergoErrors.
   * @param {boolean} force
   * @returns {Promise<string>}
   */
  async token(force) {
    try {
      return await this.o.token(force);
    } catch (e) {
      if (e instanceof ConvergoError) throw e;
      throw new ConvergoError('network', `getToken: ${/** @type {any} */ (e)?.message ?? e}`, { cause: e });
    }
  }

  /**
   * POSTs a CBOR body, with the request id of the answer; nothing once
   * stopped (post).
   * @param {string} path
   * @param {import('./http.js').Body} body
   */
  async postAnswer(path, body) {
    this.checkStopped();
    const out = await postAnswer(this.http, path, body);
    this.answered++;
    return out;
  }

  /**
   * The replica prefix of the subject of token, which a push sent with it
   * may leave to the server: null when the token names no subject this
   * client can read (the server may read one, so the push names its
   * replica whole). The last answer is kept: the token rarely changes.
   * @param {string} token
   * @returns {Promise<string|null>}
   */
  async pushPrefix(token) {
    const subject = subjectOfToken(token);
    if (token && subject === '') return null;
    if (this.lastPrefix?.subject !== subject) this.lastPrefix = { subject, prefix: await replicaPrefix(subject) };
    return this.lastPrefix.prefix;
  }

  /**
   * Pushes changes (as the outbox holds them) of replica over HTTP, the
   * body made for the token it goes with: under that token's subject the
   * replica is named by its device part (docs/protocol.md, "Push").
   * @param {string} replica
   * @param {Uint8Array[]} changes
   * @param {Map<string, number>} [versions]
   */
  postPush(replica, changes, versions) {
    return this.postAnswer(PATHS.push, async (token) => {
      const prefix = await this.pushPrefix(token);
      // Changes of another subject's replica (the token was switched since
      // they were read): under this token they would be refused
      // forged_replica and rolled back. They wait for their subject.
      if (changes.length > 0 && prefix !== null && !replica.startsWith(ownedStart(prefix))) throw new ConvergoError('network', 'push: the token is another subject’s than the changes read', { cause: SWITCHED });
      return encodePush(replica, changes, versions, prefix);
    });
  }

  /**
   * Greets the server over HTTP: its limits, the clock offset, the replica
   * prefix of the token's subject. An answer to a hello sent with a token
   * replaced since is dropped and the hello made again.
   * @returns {Promise<void>}
   */
  async doHello() {
    let tokens = -1;
    const t0 = Date.now();
    const body = await this.post(PATHS.hello, () => ((tokens = this.tokens), encodeHello(/** @type {string} */ (this.store.replica))));
    const t1 = Date.now();
    const hello = parseHello(body);
    // Sent with a token replaced since (retoken), perhaps another
    // subject's: its prefix must not win over the new token's. Again.
    if (tokens !== this.tokens) return this.doHello();
    this.applyHello(hello, t0, t1);
    await this.writeAs(hello);
  }

  /**
   * The server names the replica prefix of the token's subject: new writes
   * use it (docs/protocol.md, "Replica ids"). The client computed it from
   * the token already; the server's word settles it.
   * @param {Hello} hello
   */
  async writeAs(hello) {
    if (isPrefix(hello.replicaPrefix) && hello.replicaPrefix !== this.store.prefix) await this.store.setPrefix(hello.replicaPrefix);
  }

  /**
   * @param {Hello} hello
   * @param {number} t0 when the request (or live hello) left (local ms)
   * @param {number} t1 when the answer (or welcome) came (local ms)
   */
  applyHello(hello, t0, t1) {
    if (hello.protocol !== VERSION) {
      throw new ConvergoError('unsupported_version', `server speaks protocol ${hello.protocol}, not ${VERSION}`);
    }
    this.hello = hello;
    this.store.clock?.state(hello.maxDrift); // never 0: parseHello
    this.o.onStatus({ online: true });
    // The server read its clock about half way through the round trip.
    const offset = Math.round(hello.serverTime - (t0 + t1) / 2);
    this.store.setOffset(offset);
    // Stored with the restart, the max drift with the clock: a clock left
    // ahead of the server's time by more than the max drift starts again
    // (docs/protocol.md, section 6), in every tab.
    // A failure is told: until the next hello, writes stamped by that
    // clock are refused.
    restartClock(this.store, offset, hello.maxDrift).catch((e) => this.report(asConvergoError(e)));
  }

  /**
   * Pushes the whole outbox in batches of at most the server's max-push
   * changes and max-body bytes (as its hello announced: pushBudget), cut
   * by batchLength and split by splitter as a heal's are (heal.js): a
   * push the server refuses whole as too_large or malformed is the fault
   * of its changes, so it is halved down to the change at fault, which is
   * settled as refused with that code (docs/protocol.md, "Push"); the rest
   * of the outbox goes on. An answer over the client's cap halves the
   * batch too. Other whole refusals (forbidden, unauthenticated...) are
   * not the changes' fault: they stay, and the error goes to the loop.
   * A collection not fresh whose pull first fails with an error of its
   * own holds back its own changes only (they wait for a pull of it that
   * succeeds: the next push tries it again) and joins failing; resolves
   * to those collections and their errors.
   * @returns {Promise<Map<string, ConvergoError>>}
   */
  async pushAll() {
    this.pushWanted = false;
    this.pushing = true;
    /** @type {Map<string, ConvergoError>} */
    let held;
    try {
      held = await this.pushOutbox();
    } finally {
      this.pushing = false;
    }
    // Every reconciliation's outbox went out: say how it went.
    const done = [...this.reconciled.values()];
    this.reconciled.clear();
    // The outbox entries reconciliations noted may be written again after
    // a collected refusal (meta "restamp:<collection>", reconcile.js):
    // those pushed had their chance, and their notes go; those still
    // waiting (their collection's pull first failed: held; another
    // subject's) keep theirs for the push that takes them.
    // restampsDropped, unset at first (a reload keeps the notes), is
    // unset again by each reconciliation, and stays unset while notes
    // are left.
    if (!this.restampsDropped) this.restampsDropped = !(await pruneNotes(this.store, RESTAMP_KEY));
    for (const r of done) this.o.onReconciled?.(r);
    // Live, the retries of the failing collections tell why, and push
    // their changes once they are pulled.
    if (held.size > 0 && this.live && this.session) this.retryFailing(this.session);
    return held;
  }

  /**
   * The body of pushAll.
   * @returns {Promise<Map<string, ConvergoError>>} the collections whose changes waited: their pull first failed (with an error of their own)
   */
  async pushOutbox() {
    const [maxCount, maxBody] = pushBudget(this.hello);
    // A batch that fails whole is split (splitter), over HTTP or live; a
    // push of no changes, over HTTP, tells whether the server reads this
    // client's pushes at all.
    const split = splitter(maxCount, () => this.postPush(/** @type {string} */ (this.store.replica), []));
    /** @type {Set<string>} collections pulled first by this push */
    const pulled = new Set();
    /** @type {Map<string, ConvergoError>} those whose pull first failed with an error of their own: their changes wait, the others go */
    const held = new Map();
    /** @type {Map<number, import('./record.js').Record>} the outbox entries written again, to the changes they came from */
    const originals = new Map();
    let dropped = 0;
    for (;;) {
      /** @type {Map<string, number>} the schema version the entries' collections are in */
      const inVersion = new Map();
      /** @type {Map<string, number>} the count of resets with history lost of the entries' collections (settle) */
      const losses = new Map();
      const entries = await peekOutbox(this.store, split.limit, held, inVersion, losses);
      if (entries.length === 0) {
        // Counted as another subject (setToken): what the old one left is
        // held, not pending.
        if (this.countedAs !== this.store.replica) {
          this.countedAs = this.store.replica;
          this.o.onStatus(await outboxCounts(this.store));
        }
        break;
      }
      // A collection not pulled lately is pulled first: a lease that
      // expired meanwhile is reconciled before its changes go out.
      let stale = false;
      for (const c of new Set(entries.map((e) => e.c))) {
        if (pulled.has(c) || (await this.fresh(c))) continue;
        pulled.add(c);
        stale = true;
        // Subscribed, it owes a reconciliation (fresh): its sub ends, and
        // starts again from where the reconciliation's pull ends.
        const session = this.live && this.session?.subscribed.has(c) ? this.session : null;
        session?.unsubscribe(c);
        try {
          if ((await this.pullOne(c)) && session) await this.subscribe(session, c);
        } catch (e) {
          if (ROUND_CODES.has(asConvergoError(e).code)) throw e;
          // The round tells why (syncNow; live: retryFailing).
          held.set(c, about(c, 'pull', e));
          this.failing.set(c, /** @type {ConvergoError} */ (held.get(c)));
        }
      }
      if (stale) continue; // the outbox may have changed
      const batch = entries.slice(0, batchLength(entries, split.limit, maxBody, pushSizer(inVersion)));
      let results;
      /** @type {string|null} */
      let requestId = null;
      /** @type {ConvergoError|null} a live push refused whole */
      let liveRefusal = null;
      /** The replica the batch is pushed as. */
      let as = '';
      try {
        /** @type {Map<string, number>} the schema version of each collection of the batch, as read with it */
        const versions = new Map();
        for (const e of batch) versions.set(e.c, /** @type {number} */ (inVersion.get(e.c)));
        const replica = (as = /** @type {string} */ (this.store.replica));
        // The subject switched since the batch was read: read again.
        if (batch.some((e) => e.r !== undefined && e.r !== replica)) continue;
        const changes = batch.map((e) => e.change);
        // Over the live session when there is one (docs/protocol.md,
        // "Pushing over a live session"), unless the message is over its
        // limit or the session is another replica's (its hello came before
        // a new token's subject); else over HTTP, with the current token.
        const session = this.live && this.session?.replica === replica ? this.session : null;
        const welcome = session?.welcome;
        const frame = welcome ? encodeLivePush(replica, changes, versions, welcome.serverTime) : null;
        if (session && frame && frame.length <= /** @type {Hello} */ (welcome).maxMessageBytes) {
          let m;
          try {
            m = await session.push(frame);
          } catch (e) {
            // The session closed with the push in flight, or left it
            // unanswered past the push timeout (the session is then dead):
            // its changes stay in the outbox and go again (over HTTP now,
            // or the next session); any the server applied come back
            // duplicate.
            if (session.live) throw e;
            continue;
          }
          results = m.results;
          requestId = m.requestId ?? null;
          if (!results) {
            const e = new ConvergoError(/** @type {any} */ (m.code), `live push: ${m.code}${m.message ? ': ' + m.message : ''}`, { requestId: m.requestId });
            if (session.token !== null) sentWith.set(e, session.token);
            // Unreadable to the server (the two ends disagree on the live
            // encoding): the same batch once over HTTP, which answers it
            // change by change or refuses it as any HTTP push.
            const unreadable = e.code === 'malformed' || e.code === 'invalid';
            liveRefusal = e;
            if (!unreadable && retryOf(e.code) !== 'backoff') throw e;
            // The server cannot take it now (unavailable: it holds too
            // many pushes): the same batch again after one backoff delay,
            // over HTTP (docs/protocol.md, "Pushing over a live session"),
            // a wait that stop() ends.
            if (!unreadable) await this.wait(backoff(0, { random: this.o.random, ...this.o.backoff }), 'push');
          }
        }
        if (!results) {
          // Stopped meanwhile (in that delay, or with a live push in
          // flight), postAnswer sends nothing: the batch stays in the
          // outbox.
          const answer = await this.postPush(replica, changes, versions);
          requestId = answer.requestId;
          results = parsePushAnswer(answer.body);
        }
      } catch (e) {
        // Read as the subject the token no longer names: once the switch
        // is done (Store.switching), the outbox is read again as the new
        // one. A store still writing as the old one (the switch failed)
        // fails the round.
        if (/** @type {any} */ (e)?.cause === SWITCHED) {
          await this.store.switching;
          if (this.store.replica === as) throw e;
          continue;
        }
        // A change at fault refused alone (splitter) is settled with its
        // code, loudly, so the rest does not stall.
        results = await split(/** @type {ConvergoError} */ (e), batch.length, liveRefusal);
        if (!results) continue;
        requestId = /** @type {ConvergoError} */ (e).requestId ?? null;
      }
      if (results.length !== batch.length) {
        throw new ConvergoError('malformed', `push answer has ${results.length} results for ${batch.length} changes`);
      }
      // Changes refused collected that are to be written again with fresh
      // stamps, read before they are rolled back, and those that stay in
      // the outbox while their collection is reconciled (reconcile.js).
      const { again, hold } = results.some((r) => r.status === STATUSES.refused && r.code === 'collected')
        ? await (await import('./reconcile.js')).restampable(this, batch, results)
        : { again: null, hold: null };
      // applied, duplicate and superseded acknowledge the change: it
      // leaves the outbox. A superseded change's fields come back from
      // the server with the newer values that beat them.
      // A refused change is rolled back and kept among the rejected
      // changes, in the same transaction.
      /** @type {import('./db.js').Settled[]} */
      const settled = [];
      for (let i = 0; i < batch.length; i++) {
        const r = results[i];
        if (!hold?.has(i)) settled.push({ entry: batch[i], refused: r.status === STATUSES.refused, code: r.code ?? 'invalid', message: r.message ?? '', requestId });
      }
      if (hold && hold.size > 0) {
        // Refused collected outside a reconciliation: the collection is
        // reconciled (pulled first, below) before they go, written again.
        const items = [...hold].map((i) => ({ entry: batch[i], message: results[i].message ?? '' }));
        await (await import('./reconcile.js')).holdRefused(this.store, items);
        for (const { entry } of items) {
          this.pulledAt.delete(entry.c);
          pulled.delete(entry.c);
        }
      }
      const settledNow = await settle(this.store, settled, { when: Date.now(), subject: this.subject() }, losses);
      const { changed: rolledBack, rejected, taken } = settledNow;
      dropped += settledNow.dropped;
      // The edits that stay are written again with fresh stamps, pushed by
      // this loop (and never again): what of them the record as known
      // here neither hides nor beats; one left with nothing is settled
      // like a superseded change.
      /** @type {Map<number, {written: boolean, lost: string[]}>} */
      const restamped = new Map();
      if (again && again.size > 0) {
        const items = [...again].filter((i) => rejected.has(batch[i].seq)).map((i) => ({ i, entry: batch[i], rid: /** @type {number} */ (rejected.get(batch[i].seq)) }));
        const out = await (await import('./reconcile.js')).restampRefused(this.store, items, originals);
        // One not written again (null: another subject's, or of a newer
        // version than this code's) stays rejected: told as refused, below.
        items.forEach((x, k) => {
          const re = out[k];
          if (re) restamped.set(x.i, re);
        });
      }
      for (let i = 0; i < batch.length; i++) {
        const r = results[i];
        const { c: collection, id } = batch[i];
        // Held, or settled already by another tab that syncs too: told
        // there.
        if (hold?.has(i) || !taken.has(batch[i].seq)) continue;
        if (r.status === STATUSES.refused) {
          const rid = rejected.get(batch[i].seq);
          const re = restamped.get(i);
          if (re) {
            if (re.written) {
              const rec = this.reconciled.get(collection);
              if (rec) rec.restamped++;
            }
            if (!re.written || re.lost.length > 0) {
              this.o.onSuperseded({ collection, id, lost: re.lost, status: re.written ? 'applied' : 'superseded' });
            }
            continue;
          }
          /** @type {import('./database.js').Refusal} */
          const refusal = { collection, id, code: r.code ?? 'invalid', message: r.message ?? '', requestId, rejectedId: rid ?? null, dropped };
          dropped = 0;
          this.o.onRefused(refusal);
        } else if (r.status === STATUSES.superseded || (r.status === STATUSES.applied && r.lost && r.lost.length > 0)) {
          this.o.onSuperseded({ collection, id, lost: r.lost ?? [], status: r.status === STATUSES.applied ? 'applied' : 'superseded' });
        }
      }
      for (const [c, ids] of rolledBack) this.o.onChanges(c, ids);
      this.o.onStatus(await outboxCounts(this.store));
    }
    return held;
  }

  /**
   * The subject signed in, as the last hello named it (null before one).
   * @returns {string|null}
   */
  subject() {
    return this.o.subject?.() ?? this.hello?.subject ?? null;
  }

  /**
   * The server reset collection c's cursor (a pull answer or a live
   * message): forget the cursor, note the heal owed (history_lost, or a
   * reason this client does not know) or the reconciliation owed
   * (lease_expired), tell the app. With after, the cursor the reset pull
   * was read from: if another is stored (another tab's, without Web
   * Locks), nothing is done and false returned (syncstore.js's
   * resetCollection).
   * @param {string} c
   * @param {{reason: string, message: string}} reset
   * @param {Uint8Array|null} [after]
   * @returns {Promise<boolean>} whether the reset was taken
   */
  async onReset(c, reset, after = null) {
    const action = resetAction(reset.reason);
    if (!(await resetCollection(this.store, c, action === 'history_lost', action === 'lease_expired', after))) return false;
    this.pulledAt.delete(c);
    this.o.onServerReset({ collection: c, reason: reset.reason, message: reset.message });
    return true;
  }

  /**
   * Reconciles collection c after lease_expired, or at its first pull
   * (first: syncstore.js firstPullReconciles) (reconcile.js, loaded on demand):
   * pull it from the beginning, drop what the server collected, then push
   * its outbox (unless pushAll, which called this, goes on).
   * @param {string} c
   * @param {boolean} [first]
   */
  async reconcile(c, first = false) {
    await (await import('./reconcile.js')).reconcile(this, c, first);
    if (!this.pushing) await this.pushAll();
  }

  /**
   * Loads, once, the heal checks kept in IndexedDB (syncstore.js's healChecks): of
   * heals made before a reload, or by the tab that led before.
   */
  async loadHealChecks() {
    if (this.checksLoaded) return;
    for (const [c, hc] of await healChecks(this.store)) if (!this.healChecks.has(c)) this.healChecks.set(c, hc);
    this.checksLoaded = true;
  }

  /**
   * Heals every collection owed a heal (a reset whose heal did not
   * finish) that heals says. Restoring needs read access: one the token
   * may not read (a heal refused forbidden) is said unreadable and
   * skipped, not to stall the others, and stays owed: every round makes it
   * again (heal.js's heal asks first with an empty restore, sending
   * nothing held while it is refused), and the one after setToken with a
   * token that grants it gives back what is held. One that fails with an
   * error of its own (not of ROUND_CODES: internal, say) stays owed too,
   * and the others go on: resolves to those errors, by collection (named
   * heal c). An error of the round is thrown.
   * @param {(c: string) => boolean} [heals]
   * @returns {Promise<Map<string, ConvergoError>>}
   */
  async healOwed(heals = () => true) {
    await this.loadHealChecks();
    /** @type {Map<string, ConvergoError>} */
    const failed = new Map();
    for (const c of await owedHeals(this.store)) {
      if (!heals(c)) continue;
      try {
        await (await import('./heal.js')).heal(this, c);
        this.healTold.delete(c);
        if (this.healRefused.delete(c)) this.o.onUnreadable?.(c, null);
      } catch (e) {
        const code = asConvergoError(e).code;
        if (code !== 'forbidden') {
          if (ROUND_CODES.has(code)) throw e;
          failed.set(c, about(c, 'heal', e));
          continue;
        }
        this.healRefused.add(c);
        // Told once per refusal, as the Go client does: again only after
        // the heal was made or the token changed (retoken).
        if (this.healTold.has(c)) continue;
        this.healTold.add(c);
        this.unreadable(c, 'heal', /** @type {ConvergoError} */ (e));
      }
    }
    return failed;
  }

  /**
   * Heals collection c if it owes a heal (healOwed), the pull of c that
   * follows a reset waiting for it: its failure is thrown.
   * @param {string} c
   */
  async healThis(c) {
    const e = (await this.healOwed((x) => x === c)).get(c);
    if (e) throw e;
  }

  /**
   * Pulls one collection from its cursor until the server has no more.
   * The next page is asked for (and decoded) while the current one is
   * written to IndexedDB: a page's cursor comes with it, so the two
   * overlap. A first sync (no cursor, no records held) stores records
   * without reading them first.
   *
   * A collection owed a reconciliation (lease_expired) is reconciled
   * instead, which pulls it from the beginning with seen: the ids of the
   * records the pages deliver are added to it, and the first record of
   * each id delivered replaces the server state held (syncstore.js's applyRemote's
   * replace): the tombstones the server collected can no longer hide the
   * older fields held here. So is a pull from the beginning of a
   * collection that holds a record the server acknowledged, unless a heal
   * or a reset's pull from the beginning is under way
   * (syncstore.js firstPullReconciles): a replica that pushed and never pulled
   * held no lease, and the server does not reset an empty cursor.
   * A collection with a heal check whose reading from the beginning has
   * not begun in this tab (heal.js's HealCheck: loaded after a reload),
   * or stands elsewhere than the cursor stored (a live page moved that on
   * while the reading was cut short), is read from the beginning too, and
   * its check settled when that reading ends.
   * Every pull comes here, the live ones before their sub too.
   *
   * Without Web Locks every tab pulls: a page is written only if the
   * cursor stored is still the one it builds on (syncstore.js's
   * applyRemote's after). Else another tab stored a cursor meanwhile,
   * and the pull starts again from it (at most OVERTAKEN times; then it
   * ends, that tab pulling). So does a reset of the cursor the pull read
   * when another is stored by then (syncstore.js's resetCollection's
   * after): that tab was reset and healed already. So does a heal's drop of the records its
   * reading did not deliver (reconcile.js's dropHealed) when another tab
   * stored a cursor after that reading's last page: the reading is made
   * again. A reconciliation's pull from the beginning (seen) is guarded
   * the same way, from the cursor stored when it began, but does not
   * start again itself: it ends with null, and the reconciliation, which
   * judges what it delivered, starts again (reconcile.js's reconcile).
   * An upgrade's pull from the beginning writes every page.
   * @param {string} c
   * @param {Set<string>} [seen]
   * @param {number} [overtaken] how often this pull started again
   * @returns {Promise<Uint8Array|null|void>} with seen, the cursor
   *   the pull's last page stored, or null if another tab overtook it
   */
  async pullCollection(c, seen, overtaken = 0) {
    if (!seen) {
      if (await owesReconcile(this.store, c)) return this.reconcile(c);
      if (await firstPullReconciles(this.store, c)) return this.reconcile(c, true);
    }
    await this.loadHealChecks();
    let limit = this.hello?.maxPull ?? DEFAULTS.maxPullRecords;
    let resets = 0;
    const [scope, lease, version, replacing] = await Promise.all([scopeOf(this.store, c), this.lease(c), schemaVersion(this.store, c), seen ? false : owesReplace(this.store, c)]);
    /** Another tab stored a cursor this pull did not build on: it starts again from that one, or ends (above). */
    const pullAgain = () => (seen ? null : overtaken >= OVERTAKEN ? undefined : this.pullCollection(c, seen, overtaken + 1));
    /**
     * The cursors this reading asked from, as strings of their bytes: a
     * page that says there is more after one of them (the cursor it was
     * asked from, or one before it) would have the pull go round for
     * ever. Such a server is broken: the pull fails malformed, as the
     * collection's own failure (pullEach), tried again with backoff.
     * @type {Set<string>}
     */
    const asked = new Set();
    const fetchPage = (/** @type {Uint8Array} */ cursor) => {
      asked.add(String.fromCharCode(...cursor));
      return this.post(PATHS.pull, encodePull(c, cursor, limit, scope, lease, first, version))
        .then(parsePullAnswer)
        .then((p) => {
          if (p.more && asked.has(String.fromCharCode(...p.next))) {
            throw new ConvergoError('malformed', 'protocol: a page says there is more after a cursor this pull asked from already');
          }
          if (seen) for (const r of p.records) seen.add(r.id);
          return p;
        });
    };
    /** @type {Set<string>|null} the ids a heal gave back refused collected that the reading after it did not deliver (checkHeal) */
    let drop = null;
    /** Whether the reading after a heal ended: its check kept is settled (checkHeal). */
    let checked = false;
    /** The count of heals made again of the heal whose check the reading judges (HealCheck's again). */
    let again = 0;
    /** @type {Set<string>|null} the ids whose held record a reconciliation's (or an upgrade's) pull replaced */
    const replaced = seen || replacing ? new Set() : null;
    // A heal's check counts only the pages of its reading from the
    // beginning (heal.js's HealCheck).
    const held = replacing ? null : await cursorOf(this.store, c);
    const stored = seen ? null : held;
    const check = this.healChecks.get(c);
    let cursor = stored === null || (check && !equalBytes(stored, check.chain)) ? new Uint8Array(0) : stored;
    let first = cursor.length === 0 && (await isEmpty(this.store, c));
    /** Whether a page is written only over the cursor it builds on. */
    const guard = !replacing;
    /** @type {Promise<import('./protocol.js').Page>|null} the next page, asked for */
    let next = null;
    /**
     * A first sync's writes issued and not yet awaited, oldest first (at
     * most FIRST_SYNC_INFLIGHT): each is a transaction created behind the
     * one before, which checks that one's cursor before anything it
     * writes can commit (syncstore.js's applyFirst).
     * @type {{p: Promise<void>, settled: boolean}[]}
     */
    const writes = [];
    /** The cursor the last write issued stores (first, the one stored). */
    let written = held ?? cursor;
    /** Waits for every write issued; the first failure is thrown. */
    const drain = async () => {
      while (writes.length > 0) await /** @type {{p: Promise<void>}} */ (writes.shift()).p;
    };
    for (;;) {
      let page;
      try {
        page = await (next ?? fetchPage(cursor));
      } catch (e) {
        next = null;
        // A page of large records: ask for fewer at a time.
        if (/** @type {any} */ (e).code === 'too_large' && limit > 1) {
          limit = Math.max(1, Math.floor(limit / DEFAULTS.pullShrink));
          continue;
        }
        // The page failed; a write of the pages before it that failed too
        // is told to the app, not dropped behind the page's error.
        await drain().catch((w) => this.o.onError(asConvergoError(w)));
        throw e;
      }
      next = null;
      if (page.reset) {
        await drain();
        // A server that resets the empty cursor too is broken: stop.
        if (++resets > DEFAULTS.maxPullResets) throw new ConvergoError('malformed', `pull ${c}: the server reset the cursor again after a reset`);
        if (!(await this.onReset(c, page.reset, guard ? written : null))) {
          // Another tab stored a cursor since this pull read it (it was
          // reset too, and healed): start again from that one.
          return pullAgain();
        }
        seen?.clear();
        replaced?.clear();
        if (!seen && resetAction(page.reset.reason) === 'lease_expired') return this.reconcile(c);
        await this.healThis(c);
        // onReset forgot the stored cursor: the next write builds on none.
        cursor = new Uint8Array(0);
        asked.clear();
        written = cursor;
        first = await isEmpty(this.store, c);
        continue; // from the beginning
      }
      if (page.more) {
        next = fetchPage(page.next);
        next.catch(() => {}); // its error is handled when it is awaited
      }
      /** The pages written now, in order. */
      const batch = [page];
      if (first && !replaced && page.leaves.length === 0) {
        // Take the pages that arrive into this one's transaction (up to
        // FIRST_SYNC_BATCH records) while the writes issued before keep
        // IndexedDB busy: fewer, larger transactions, and the next one
        // queued before the one before commits.
        const records = page.records.slice();
        /** @type {Uint8Array[]} seals[i] of records[i], if it came with one */
        const seals = page.seals.slice();
        seals.length = records.length;
        while (next && records.length < FIRST_SYNC_BATCH && writes.some((w) => !w.settled)) {
          const busy = Promise.race(writes.filter((w) => !w.settled).map((w) => w.p)).then(() => null, () => null);
          const more = await Promise.race([next.then((p) => p, () => FAILED), busy]);
          // A write settled (next stays asked for; go on while another is
          // still busy), or a failure, reset or leaves for the loop to meet
          // with a page of its own.
          if (!more) continue;
          if (more === FAILED || more.reset || more.leaves.length > 0) break;
          next = null;
          for (let i = 0; i < more.records.length; i++) {
            records.push(more.records[i]);
            seals.push(more.seals[i]);
          }
          page = more;
          batch.push(page);
          if (page.more) {
            next = fetchPage(page.next);
            next.catch(() => {});
          }
        }
        const prepared = prepareRemote(this.store, c, records, seals);
        while (writes.length >= FIRST_SYNC_INFLIGHT) await /** @type {{p: Promise<void>}} */ (writes.shift()).p;
        const before = writes.length > 0 ? writes[writes.length - 1].p : null;
        const p = this.applyFirst(c, records, seals, prepared, written, page.next, before);
        /** @type {{p: Promise<void>, settled: boolean}} */
        const w = { p, settled: false };
        p.then(
          () => (w.settled = true),
          () => (w.settled = true),
        );
        writes.push(w);
        written = page.next;
      } else {
        await drain();
        // If this fails, the page asked for is dropped: a later pull asks
        // again from the cursor stored.
        if (!(await this.applyPage(c, page.records, page.next, page.seals, page.leaves, replaced, !!seen, guard ? written : null))) {
          // Another tab stored a cursor since this page was asked for:
          // start again from it.
          return pullAgain();
        }
        written = page.next;
      }
      // After a heal, the reading from the beginning must bring what it
      // gave back (heal.js's checkHeal): judged of each page once it is
      // written, so that one not written (its write failed, or one before
      // it did) takes nothing off the check.
      /** @type {{again: boolean, drop: Set<string>|null, ended: boolean}|null} */
      let healed = null;
      if (this.healChecks.has(c)) {
        again = /** @type {import('./heal.js').HealCheck} */ (this.healChecks.get(c)).again;
        await drain();
        const { checkHeal } = await import('./heal.js');
        for (const [i, p] of batch.entries()) healed = await checkHeal(this, c, p, i === 0 ? cursor : batch[i - 1].next);
      }
      cursor = page.next;
      if (!page.more && healed?.again) {
        // The store went back in time again during the heal: heal again,
        // and pull again from the beginning.
        await drain();
        await this.onReset(c, { reason: 'history_lost', message: `the store went back in time again while this client healed ${c}` });
        await this.healThis(c);
        cursor = new Uint8Array(0);
        asked.clear();
        written = cursor;
        first = await isEmpty(this.store, c);
        continue;
      }
      if (!page.more) {
        drop = healed?.drop ?? null;
        checked = healed?.ended ?? false;
        break;
      }
    }
    await drain();
    // What the heal gave back refused collected and the reading did not
    // deliver goes, as a reconciliation's would.
    // The check kept in IndexedDB goes with that drop (or alone).
    if (drop && !(await (await import('./reconcile.js')).dropHealed(this, c, drop, guard ? written : null))) {
      // Another tab pulled since the reading's last page was asked for: a
      // record it pulled may be one of these, created again since. The
      // reading is made again (the check kept stays).
      this.healChecks.set(c, { ids: new Set(), collected: drop, chain: null, again });
      return pullAgain();
    } else if (checked) await (await import('./heal.js')).checked(this.store, c);
    // Every record the server holds replaced the one held: an upgrade's
    // replacement, if one was owed, is done too.
    if (replaced) await replacementDone(this.store, c);
    if (!seen) {
      this.pulledAt.set(c, Date.now());
      // A first pull's reconciliation cut short once a page stored a
      // cursor (reconcile.js's reconcile) is made now that a pull from
      // that cursor reached the end: a store that went back in time since
      // reset it, and was healed (what pages of others' writes brought
      // given back) before the reconciliation judges what the server lacks.
      if ((await this.store.getMeta(RECONCILE_KEY + c)) === FIRST_PULL) return this.reconcile(c, true);
    }
    return written;
  }

  /**
   * A first sync's write of a batch of pages merged ahead, issued at once
   * behind the write before (syncstore.js's applyFirst). If its checks fail (that
   * write failed, or a record of the batch was written locally, or another
   * tab pulled meanwhile), the batch is written again with reads once the
   * write before has settled: its failure is this one's.
   * @param {string} c
   * @param {import('./record.js').Record[]} records
   * @param {Uint8Array[]} seals
   * @param {import('./db.js').Prepared} prepared
   * @param {Uint8Array} after the cursor the write before stores
   * @param {Uint8Array} next the cursor after these records
   * @param {Promise<void>|null} before the write before, if not yet awaited
   */
  async applyFirst(c, records, seals, prepared, after, next, before) {
    let ids = await applyFirst(this.store, c, prepared, after, next);
    if (ids === null) {
      await before;
      ids = /** @type {string[]} */ (await applyRemote(this.store, c, records, next, seals));
    }
    if (ids.length > 0) this.o.onChanges(c, ids);
  }

  /**
   * Merges a page of records and stores the cursor after it. Cursors are
   * the server's opaque bytes: stored as they come, never parsed, only
   * told apart (after). A page written without after (an upgrade's
   * replacement) that comes late merges harmlessly: merging is
   * idempotent, and at worst the next pull fetches again what is held.
   * @param {string} c
   * @param {import('./record.js').Record[]} records
   * @param {Uint8Array} next
   * @param {Uint8Array[]} [seals] one per record, or none
   * @param {Uint8Array[]} [leaves] the page's leave entries: the records
   *   held that they name are removed in the same transaction
   * @param {Set<string>|null} [replace] a reconciliation's pull (syncstore.js's applyRemote)
   * @param {boolean} [giveBack] replace is a reconciliation's (syncstore.js's applyRemote)
   * @param {Uint8Array|null} [after] the cursor the page builds on
   *   (syncstore.js's applyRemote): the page is written only if it is
   *   still the one stored
   * @returns {Promise<boolean>} whether the page was written
   */
  async applyPage(c, records, next, seals, leaves = [], replace = null, giveBack = false, after = null) {
    const gone = leaves.length > 0 && this.o.leaves ? await this.o.leaves(c, leaves) : [];
    const ids = await applyRemote(this.store, c, records, next, seals, gone, replace, giveBack, after);
    if (ids === null) return false;
    if (ids.length > 0) this.o.onChanges(c, ids);
    return true;
  }

  // -------------------------------------------------------- WebSocket

  /**
   * Runs one live session (live.js); resolves when the socket closes
   * normally (true), or at once without dialing (false) when the browser
   * says it is offline; rejects with the error that ended the session.
   * @returns {Promise<boolean>} whether it dialed
   */
  async runLive() {
    // Loaded already, in most rounds (start): then this waits a microtask.
    // From here to the dial nothing waits, so no 'offline' event comes
    // between this check and the dial. One the page has heard of (during
    // the round's requests, or the load of live.js) leaves the dial out:
    // it could only fail, and the browser logs that failure on the page's
    // console. A dial under way when the network goes, or made before the
    // browser tells the page, fails as any dial that fails does (a network
    // error, retried after backoff; the loop then waits for 'online').
    // A stopped loop opens none (LiveSession.run).
    const { LiveSession } = await loadLive();
    if (browserOffline()) return false;
    const session = new LiveSession({
      url: this.base,
      WebSocket: this.o.WebSocket,
      stopped: () => this.stopped,
      replica: () => /** @type {string} */ (this.store.replica),
      token: (force) => this.token(force),
      serial: (fn) => this.serial(fn),
      onMessage: (m, s) => this.onLive(m, s),
      pull: (c) => this.pullCollection(c),
      onRefused: (c, e) => this.subRefused(session, c, e),
      onClose: () => this.o.onStatus({ online: false }),
      pingInterval: this.o.pingInterval,
      silenceTimeout: this.o.silenceTimeout,
      pushTimeout: this.o.pushTimeout,
    });
    this.session = session;
    // Set again by its welcome: a dial that gets none (a network that
    // blocks WebSockets) has the next round pull every collection.
    this.resume = false;
    this.liveResets.clear();
    this.liveStorms.clear();
    try {
      await session.run();
      return true;
    } finally {
      if (this.session === session) this.session = null;
      // The next welcome sets the next try of the failing collections.
      clearTimeout(this.failTimer);
      this.failTimer = null;
    }
  }

  /**
   * The server refused the sub of collection c on session with e (live.js
   * took c off the subscribed set; the session goes on). One the token
   * may not read (forbidden; or invalid, a scope the server finds
   * invalid) is said unreadable as a refused pull is (pullOne): listed,
   * told once, and read and subscribed again when a new token of the same
   * subject comes (retoken) or at the next session's welcome; it leaves
   * the list once a sub of it is served. schema_ahead is told (tell) and
   * ends the session: a new round finds out (and backs off) over HTTP.
   * Any other refusal is
   * told, and the collection tried again (pulled and subscribed) after a
   * backoff, as one whose pull failed (retryFailing).
   * @param {LiveSession} session
   * @param {string} c
   * @param {ConvergoError} e
   */
  async subRefused(session, c, e) {
    if (e.code === 'forbidden' || (e.code === 'invalid' && (await scopeOf(this.store, c)) !== undefined)) {
      this.refusedPulls.add(c);
      this.refusedSubs.add(c);
      this.unreadable(c, 'sub', e);
      return;
    }
    const err = about(c, 'sub', e);
    if (e.code === 'schema_ahead') {
      // The server went back to older rules under this session.
      this.tell(c, err);
      session.close();
      return;
    }
    // Another failure of its own (internal, say): tried again, with the
    // others that failed, after a backoff (retryFailing), the session
    // going on.
    this.failing.set(c, err);
    this.tellFailed(new Map([[c, err]]));
    this.retryFailing(session);
  }

  /**
   * Handles one live message, in order with other sync work.
   * @param {import('./protocol.js').ServerMessage} m
   * @param {LiveSession} session the session it came on
   */
  async onLive(m, session) {
    switch (m.type) {
      case 'welcome': {
        // A hello as the one over HTTP: the wall time is corrected again,
        // and a clock left too far ahead starts again.
        const now = Date.now();
        this.applyHello(m.hello, session.helloAt || now, now);
        await this.writeAs(m.hello);
        session.accept();
        this.answered++;
        this.resume = true;
        this.o.onStatus({ online: true, lastError: this.failing.values().next().value ?? null });
        // Writes made while we connected, then everything after the
        // cursors: each collection that owes no pull is subscribed from
        // its cursor, its sub catching it up (pullEach's direct). A
        // collection whose heal or pull failed with an error of its own
        // (in the round before, say) waits for its backoff: the others go
        // live without it.
        await this.pushAll();
        const later = (/** @type {string} */ c) => this.failing.has(c);
        const direct = new Set();
        const failed = await this.pullEach(this.o.collections().filter((c) => !later(c)), session, (c) => !later(c), direct);
        if (failed.size > 0) this.tellFailed(failed);
        this.retryFailing(session);
        // Caught up when each sub's first page comes (changes), else now.
        if (direct.size === 0) this.o.onStatus({ lastSyncedAt: Date.now() });
        if (this.pushWanted) await this.pushAll();
        break;
      }
      case 'changes': {
        // Pages of collections not (or no longer) subscribed are dropped.
        if (!session.subscribed.has(m.collection)) break;
        // Written only over the cursor it builds on (without Web Locks
        // every tab streams into the store they share): else the sub goes
        // on if another tab wrote this page, or the collection is read
        // again and subscribed again (live.js's overtaken).
        if (await this.applyPage(m.collection, m.records, m.next, m.seals, m.leaves, null, false, session.at.get(m.collection))) session.at.set(m.collection, m.next);
        else if (session.overtaken(await cursorOf(this.store, m.collection), m.collection, m.next)) {
          await this.catchUp(session, [m.collection]);
          break;
        }
        // Caught up: its lease is as good as a pull to the end's (fresh).
        if (!m.more) session.caught.add(m.collection);
        // Served again; unless the session reset it twice, when the page
        // before each reset of a reset storm would have it told, and its
        // backoff start over, at every try (liveStorms).
        if (!this.liveStorms.has(m.collection)) this.served([m.collection]);
        // A sub refused before is served now: readable again.
        if (this.refusedSubs.delete(m.collection) && !this.healRefused.has(m.collection)) this.o.onUnreadable?.(m.collection, null);
        this.o.onStatus({ lastSyncedAt: Date.now() });
        break;
      }
      case 'reset': {
        // The subscription has ended: heal, pull from the beginning,
        // subscribe again.
        if (!session.subscribed.has(m.collection)) break;
        session.subscribed.delete(m.collection);
        await this.onReset(m.collection, m);
        // Reset again in the same session: a store goes back in time
        // rarely, and a server that resets every sub would have the
        // client heal and pull the collection again and again, back to
        // back. It is the collection's failure instead, as a sub refused
        // internal is (subRefused): told, and healed (what the reset owes
        // stays owed), pulled and subscribed again after a backoff
        // (retryFailing), one that grows for the rest of the session (a
        // page of it does not serve it again: liveStorms), while the
        // session streams the others.
        if (this.liveResets.has(m.collection)) {
          this.liveStorms.add(m.collection);
          const err = about(m.collection, 'sub', new ConvergoError('malformed', 'the server reset it twice in one live session'));
          this.failing.set(m.collection, err);
          this.tellFailed(new Map([[m.collection, err]]));
          this.retryFailing(session);
          break;
        }
        this.liveResets.add(m.collection);
        await this.catchUp(session, [m.collection]);
        break;
      }
      case 'pong': {
        // A safety net for a write whose push message never reached this
        // leader (the BroadcastChannel is best effort: a follower's page
        // frozen or put in the back/forward cache as it posts), which
        // would wait for the next write or session: at the pong of each
        // ping (one after TIMINGS.pingIntervalMs of silence, one when the
        // network or a page's visibility changes), one count of the
        // outbox, and a push if changes wait. Not while a push is queued
        // (it takes them) or collections fail (their changes wait for
        // their pulls: retryFailing).
        if (this.pushQueued || this.failing.size > 0) break;
        if ((await outboxCounts(this.store)).pending > 0) await this.pushAll();
        break;
      }
      case 'resync': {
        // Of a collection not (or no longer) subscribed: nothing to read
        // again (a server naming one this client does not sync must not
        // have it pulled and stored).
        if (!session.subscribed.has(m.collection)) break;
        session.subscribed.delete(m.collection);
        await this.catchUp(session, [m.collection]);
        break;
      }
    }
  }
}

/**
 * How a request of items (a push's changes, a restore's records) cut by
 * batchLength is split when it fails whole: the one place that does,
 * for pushAll's pushes and a heal's or a give-back's restores
 * and pushes (batches, heal.js), as transport/client's splitRefused does
 * the Go client's (docs/protocol.md, section 5, "A push refused whole",
 * and section 8, "Restore"). Returns split, which the caller hands each
 * failure, and whose limit is the most items its next request may carry.
 * A request refused whole by the server (an HTTP error answer, or a live
 * pushed with a code) as too_large or malformed is the fault of its items
 * (too many, too big, or one the server cannot read): it is halved, again
 * and again, down to the item at fault, which alone is taken as refused
 * with that code; then the batches are full again (until then the size a
 * batch went at stays: a server that takes fewer than its hello said).
 * An answer over the client's cap (MAX_ANSWER_BYTES: too_large, not
 * whole) holds one result per item: it halves the batch too, and is
 * thrown for one item, never taken as a refusal (only the server's counts).
 * Before it takes an item refused alone as malformed, it sends a request
 * of no items (empty), unless the server read one earlier in this run:
 * when that is refused malformed too, the server reads no such request of
 * this client, the fault is not the item's, and the error is thrown; when
 * it is read, the item goes once more (the server may have just been
 * mended) before a second refusal settles it. Other errors are thrown.
 * @param {number} maxCount the hello's max-push
 * @param {() => Promise<unknown>} empty sends a request of no items
 */
export function splitter(maxCount, empty) {
  let readable = false;
  /**
   * The results to take for a request of n items that failed with e, or
   * null: the request goes again, of at most limit items. e is whole
   * (refused by the server) when it has an HTTP status or is live, a live
   * pushed with a code. Throws e when the failure is not the items'.
   * @param {ConvergoError} e
   * @param {number} n
   * @param {ConvergoError|null} [live]
   * @returns {Promise<import('./protocol.js').PushResult[]|null>}
   */
  const split = async (e, n, live) => {
    const { code } = e;
    const whole = e.status !== undefined || e === live;
    if (code !== 'too_large' && (code !== 'malformed' || !whole)) throw e;
    if (n > 1) {
      split.limit = n >> 1;
      return null;
    }
    if (!whole) throw e;
    if (code === 'malformed' && !readable) {
      try {
        await empty();
      } catch (x) {
        throw /** @type {ConvergoError} */ (x).code === 'malformed' && /** @type {ConvergoError} */ (x).status !== undefined ? e : x;
      }
      readable = true;
      return null;
    }
    split.limit = maxCount;
    return [{ status: STATUSES.refused, code, message: e.message }];
  };
  /** How many items the next request may carry at most. */
  split.limit = maxCount;
  return split;
}

/**
 * @param {unknown} e
 * @returns {ConvergoError}
 */
function asConvergoError(e) {
  if (e instanceof ConvergoError) return e;
  return new ConvergoError('internal', `sync: ${/** @type {any} */ (e)?.message ?? e}`, { cause: e });
}
