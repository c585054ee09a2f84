// The sync loop: hello (clock offset), push the outbox, pull every
// collection from its cursor, then stay live over WebSocket (or poll when
// there is none), reconnecting with exponential backoff and jitter. While
// live, the outbox is pushed over the session (pushOutbox).
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
// beginning; the outbox goes out as always. Nothing local is dropped. A
// heal that fails (network) is owed in IndexedDB and made at the next
// round.
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
// created here, is written again with fresh stamps, once. A replica that
// pushed to a collection it never pulled held no lease there, and a read
// from the beginning is never reset: its first pull, if it holds a record
// the server acknowledged, is a reconciliation too
// (Store.firstPullReconciles), made after its outbox went out, of the
// first two steps only (replace, drop: nothing is noted for a re-stamp).
//
// Scopes (docs/protocol.md, section 12): a collection with named scopes
// is read under their or (Store.scope), sent with every pull (key 4) and
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
// schema version the collection's local data is in (Store.schemaVersion;
// none for an app without migrations), and the server translates. After
// an upgrade (schema.js) the collection's first pull, from the
// beginning, replaces the server state of each record it brings, as a
// reconciliation's does (and, from the empty cursor with records the
// server acknowledged held, is one: Store.firstPullReconciles). A server
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
import { ConvergoError } from './errors.js';
import { post, postAnswer } from './http.js';
import { LiveSession } from './live.js';
import { CURSOR_KEY, RESTAMP_KEY } from './db.js';
import { isPrefix, replicaPrefix, subjectOfToken } from './replica.js';
import { DEFAULTS, PATHS, STATUSES, VERSION } from './constants.js';
import { encodeHello, encodeLivePush, encodePull, encodePush, encodeUnsub, parseHello, parsePullAnswer, parsePushAnswer, pushBudget, resetAction, retryOf } from './protocol.js';

/** @typedef {import('./protocol.js').Hello} Hello */
/** @typedef {import('./db.js').Store} Store */

/** The most records a first sync writes in one transaction. */
const FIRST_SYNC_BATCH = 10_000;

/**
 * The most transactions a first sync has issued and not yet seen commit:
 * one committing, the next queued behind it.
 */
const FIRST_SYNC_INFLIGHT = 2;

/** A page asked for that failed (its error is met when it is awaited). */
const FAILED = /** @type {import('./protocol.js').Page} */ ({ records: [], next: new Uint8Array(0), more: false, seals: [], leaves: [] });

/** A live session at least this long resets the reconnect backoff. */
const STABLE_SESSION_MS = 10_000;

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
 * @property {(s: {collection: string, id: string, lost: string[], status: 'applied'|'superseded'}) => void} onSuperseded
 *   fields of a pushed change lost to newer writes (status superseded:
 *   the change altered nothing; applied: the rest of it applied)
 * @property {(s: Partial<import('./database.js').Status>) => void} onStatus
 * @property {(e: Error) => void} onError
 * @property {(e: ConvergoError) => void} onAuth the token was refused
 * @property {(c: string, leaves: Uint8Array[]) => Promise<string[]>} [leaves]
 *   the ids of the records held in collection c whose leave entries these
 *   are (docs/protocol.md, section 12)
 * @property {(e: ConvergoError) => Promise<void>} [onRevoked] the server
 *   refused the subject (revoked): purge what it held; the loop then waits
 *   for a new token (retryNow('token'))
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
    /** @type {((at: number) => void)|null} moves the end of the current wait to an earlier time */
    this.wakeAt = null;
    /**
     * What the loop is waiting for, if it waits: the next reconnect
     * attempt, the next poll, the browser to report a network, sync()
     * after the server refused the protocol version, a new token after
     * it revoked the subject, or (push) the delay before a live push
     * refused for now goes over HTTP (pushOutbox).
     * @type {'backoff'|'poll'|'offline'|'halted'|'revoked'|'push'|null}
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
    /** @type {Promise<void>} serializes push/pull work */
    this.chain = Promise.resolve();
    this.resetWanted = false;
    /** @type {Promise<void>|null} */
    this.loop = null;
    /** @type {ConvergoError|null} */
    this.lastError = null;
    /** @type {Map<string, number>} when each collection was last pulled to the end (ms) */
    this.pulledAt = new Map();
    /** @type {Map<string, import('./heal.js').HealCheck>} per collection, what its last heal gave back that the reading after it has not yet delivered (heal.js's checkHeal) */
    this.healChecks = new Map();
    /** Whether pushAll is running (a reconciliation inside it leaves the push to it). */
    this.pushing = false;
    /** @type {Map<string, Reconciliation>} reconciliations whose outbox is not yet pushed */
    this.reconciled = new Map();
    /** @type {import('./http.js').HttpOptions} */
    this.http = { base: this.base, fetch: (input, init) => this.o.fetch(input, init), token: (force) => this.token(force) };
  }

  start() {
    this.loop = this.run();
  }

  async stop() {
    this.stopped = true;
    this.session?.close();
    this.wake?.();
    this.settleRound(new ConvergoError('network', 'sync stopped'));
    await this.loop;
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
    // A push's delay is not cut short: the server asked for less.
    if (this.waiting === null || this.waiting === 'push') {
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
   * cursors. A token of the same subject keeps the session.
   * @param {string} token
   */
  retoken(token) {
    this.tokens++;
    const s = this.session;
    if (s?.token != null && subjectOfToken(s.token) !== subjectOfToken(token)) {
      this.retryWanted = true;
      s.close();
    }
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
      this.serial(() => this.catchUp(session, c)).catch((e) => this.report(e));
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
      session.subscribed.delete(c);
      session.send(encodeUnsub(c));
      this.serial(() => this.catchUp(session, c)).catch((e) => this.report(e));
    } else this.addCollection(c);
  }

  /**
   * Pulls collection c and subscribes to it on session (if it is still the
   * live one), from the cursor stored, under its scope.
   * @param {LiveSession} session
   * @param {string} c
   */
  async catchUp(session, c) {
    await this.pullCollection(c);
    await this.subscribe(session, c);
  }

  /**
   * @param {LiveSession} session
   * @param {string} c
   */
  async subscribe(session, c) {
    const [cursor, scope, lease, version] = await Promise.all([this.store.cursor(c), this.store.scope(c), this.lease(c), this.store.schemaVersion(c)]);
    if (this.session === session) session.subscribe(c, cursor, scope, lease, version);
  }

  /**
   * This reader's lease on collection c, sent with every pull and sub: the
   * replica id it stamps with and its pending floor.
   * @param {string} c
   * @returns {Promise<import('./protocol.js').Lease>}
   */
  async lease(c) {
    return { replica: /** @type {string} */ (this.store.replica), floor: await this.store.pendingFloor(c) };
  }

  /**
   * Whether collection c's outbox may be pushed without pulling first:
   * it was pulled to the end within FRESH_MS, or is subscribed live, or
   * was never pulled (no cursor: no lease to have expired). The pull that
   * follows the push reconciles a never-pulled collection that holds
   * records the server acknowledged (pullCollection); its changes the
   * server refused collected meanwhile stay rejected.
   * @param {string} c
   */
  async fresh(c) {
    if (Date.now() - (this.pulledAt.get(c) ?? -Infinity) < FRESH_MS) return true;
    if (this.live && this.session?.subscribed.has(c)) return true;
    return (await this.store.cursor(c)).length === 0 && !(await this.store.owesReconcile(c));
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
    return this.syncNow();
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
   * Push and pull now. Resolves when done; rejects with the error that
   * stopped it.
   */
  syncNow() {
    return this.serial(async () => {
      if (!this.hello) await this.doHello();
      await this.pushAll();
      await this.healOwed();
      await this.pullAll();
      this.o.onStatus({ lastSyncedAt: Date.now(), lastError: null, online: true, schemaAhead: false });
    });
  }

  /**
   * Pulls every collection. One the token may not read is reported and
   * skipped rather than stopping the others: the set of collections
   * outlives sessions (and users' rights), so one that became forbidden
   * must not stall the sync of the rest.
   */
  async pullAll() {
    for (const c of this.o.collections()) await this.pullOne(c);
  }

  /**
   * Pulls collection c; one the token may not read (or whose scope the
   * server finds invalid) is reported and skipped.
   * @param {string} c
   */
  async pullOne(c) {
    try {
      await this.pullCollection(c);
    } catch (e) {
      // A scope the server finds invalid (a parameter the token cannot
      // bind) stops that collection alone too.
      const code = /** @type {any} */ (e)?.code;
      if (code !== 'forbidden' && (code !== 'invalid' || (await this.store.scope(c)) === undefined)) throw e;
      const { status, requestId } = /** @type {ConvergoError} */ (e);
      this.o.onError(new ConvergoError(code, `pull ${c}: ${/** @type {any} */ (e).message}`, { status, requestId }));
    }
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
   * @param {() => Promise<void>} fn
   */
  serial(fn) {
    const p = this.chain.then(fn);
    this.chain = p.catch(() => {});
    return p;
  }

  get live() {
    return this.session?.live ?? false;
  }

  async run() {
    let tokenRetried = false;
    while (!this.stopped) {
      try {
        if (globalThis.navigator && globalThis.navigator.onLine === false) {
          this.o.onStatus({ online: false, syncing: false });
          this.settleRound(new ConvergoError('network', 'sync: the browser is offline'));
          await this.wait(60_000, 'offline');
          continue;
        }
        if (this.resetWanted) {
          this.resetWanted = false;
          await this.store.dropMeta(CURSOR_KEY);
        }
        await this.store.verify();
        this.o.onStatus({ syncing: true });
        await this.syncNow();
        this.o.onStatus({ syncing: false });
        tokenRetried = false;
        this.lastError = null;
        this.retryAt = 0;
        this.retryWanted = false;
        this.settleRound(null);
        if (this.stopped) break;
        if (!this.o.WebSocket) {
          this.attempt = 0;
          // A write made during the round's push goes out now.
          if (this.pushWanted) continue;
          await this.wait(this.o.pollInterval ?? 10_000, 'poll');
          continue;
        }
        const since = Date.now();
        await this.runLive();
        // A session that ended on its own soon after it began (a server
        // closing sockets, a proxy cutting them) counts as a failure, so
        // reconnecting backs off instead of spinning.
        if (Date.now() - since >= STABLE_SESSION_MS) {
          this.attempt = 0;
          continue;
        }
      } catch (e) {
        if (this.stopped) break;
        const err = asConvergoError(e);
        this.lastError = err;
        this.retryAt = err.retryAfter ? Date.now() + err.retryAfter * 1000 : 0;
        // A sync() that woke the loop hears why this attempt failed (an
        // auth failure too: its retry with a fresh token is a new round).
        this.settleRound(err);
        this.o.onStatus({ online: err.code !== 'network' && err.code !== 'unavailable' ? true : false, syncing: false, lastError: err });
        if (err.code === 'schema_ahead') this.o.onSchemaAhead?.(err);
        if (err.code === 'revoked') {
          // The subject is denied: purge, then wait for a new token.
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
   * A push's delay may be under way when the loop starts to wait (its
   * session closed meanwhile): the loop's wait takes wake and wakeAt over,
   * and the delay, when it ends, leaves them be.
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
        if (this.wake === finish) {
          this.wake = null;
          this.wakeAt = null;
          this.waiting = null;
        }
        resolve(undefined);
      };
      this.waiting = why;
      this.wake = finish;
      this.wakeAt = (/** @type {number} */ at) => {
        if (at >= end) return;
        end = at;
        clearTimeout(t);
        t = setTimeout(finish, Math.max(0, at - Date.now()));
      };
      if (ms !== Infinity) t = setTimeout(finish, ms);
    });
  }

  // ------------------------------------------------------------- HTTP

  /**
   * POSTs a CBOR body (see http.js). Once stop() was called, rejects with
   * network 'sync stopped' and sends nothing: this is where every request
   * of the Syncer goes (postAnswer too), so work still running when it
   * stopped (a push loop, a pull of many pages, a heal's restores, a
   * reconciliation) goes no further; what it had not done stays owed (the
   * outbox, the cursor, the heal).
   * @param {string} path
   * @param {import('./http.js').Body} body
   * @returns {Promise<Uint8Array>}
   */
  async post(path, body) {
    this.checkStopped();
    return post(this.http, path, body);
  }

  /** Throws network 'sync stopped' once stop() was called (post). */
  checkStopped() {
    if (this.stopped) throw new ConvergoError('network', 'sync stopped');
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
    return postAnswer(this.http, path, body);
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
   * @param {number} t0 when the request left (local ms)
   * @param {number} t1 when the answer came (local ms)
   * @param {boolean} [measure] false: keep the clock offset measured over
   *   HTTP (a welcome's server time has no round trip to halve)
   */
  applyHello(hello, t0, t1, measure = true) {
    if (hello.protocol !== VERSION) {
      throw new ConvergoError('unsupported_version', `server speaks protocol ${hello.protocol}, not ${VERSION}`);
    }
    this.hello = hello;
    if (this.store.clock && hello.maxDrift > 0) this.store.clock.maxDrift = hello.maxDrift;
    this.o.onStatus({ online: true });
    if (!measure) return;
    // The server read its clock about half way through the round trip.
    const offset = Math.round(hello.serverTime - (t0 + t1) / 2);
    this.store.now = () => Date.now() + offset;
    this.store.setMeta('offset', offset).catch(() => {});
  }

  /**
   * Pushes the whole outbox in batches of at most the server's max-push
   * changes and max-body bytes (as its hello announced). This is the one
   * place that splits a batch: a push the server refuses whole as
   * too_large or malformed is the fault of its changes, so it is halved
   * down to the change at fault, which is settled as refused with that
   * code (docs/protocol.md, "Push"); the rest of the outbox goes on.
   * Other whole refusals (forbidden, unauthenticated...) are not the
   * changes' fault: they stay, and the error goes to the loop.
   */
  async pushAll() {
    this.pushWanted = false;
    this.pushing = true;
    try {
      await this.pushOutbox();
    } finally {
      this.pushing = false;
    }
    // Every reconciliation's outbox went out: say how it went.
    const done = [...this.reconciled.values()];
    this.reconciled.clear();
    // The outbox entries reconciliations noted may be written again after
    // a collected refusal (meta "restamp:<collection>", reconcile.js) had
    // their chance: drop the notes. restampsDropped, unset at first (a
    // reload keeps the notes), is unset again by each reconciliation.
    if (!this.restampsDropped) {
      this.restampsDropped = true;
      await this.store.dropMeta(RESTAMP_KEY);
    }
    for (const r of done) this.o.onReconciled?.(r);
  }

  /** The body of pushAll. */
  async pushOutbox() {
    const [maxCount, maxBody] = pushBudget(this.hello);
    // A whole refusal halves the batch size, and the size a batch went at
    // stays for the rest of the push (a server that takes fewer changes
    // than its hello said); once the change at fault is found alone, the
    // batches are full again, as the Go client's are (Client.Push).
    let limit = maxCount;
    /** whether the server read a push of no changes during this push (readsPushes) */
    let readable = false;
    /** @type {Set<string>} collections pulled first by this push */
    const pulled = new Set();
    /** @type {{upTo: number|null}} changes written again after a collected refusal come after upTo: never again */
    const restamping = { upTo: null };
    /** @type {Map<number, import('./record.js').Record>} the outbox entries written again, to the changes they came from */
    const originals = new Map();
    let dropped = 0;
    for (;;) {
      const entries = await this.store.peekOutbox(limit);
      if (entries.length === 0) break;
      // A collection not pulled lately is pulled first: a lease that
      // expired meanwhile is reconciled before its changes go out.
      let stale = false;
      for (const c of new Set(entries.map((e) => e.c))) {
        if (pulled.has(c) || (await this.fresh(c))) continue;
        pulled.add(c);
        stale = true;
        await this.pullOne(c);
      }
      if (stale) continue; // the outbox may have changed
      let size = 0;
      let n = 0;
      while (n < entries.length && (n === 0 || size + entries[n].change.length <= maxBody)) {
        size += entries[n].change.length;
        n++;
      }
      const batch = entries.slice(0, n);
      let results;
      /** @type {string|null} */
      let requestId = null;
      /** @type {ConvergoError|null} a live push refused whole */
      let liveRefusal = null;
      try {
        /** @type {Map<string, number>} the schema version of each collection of the batch */
        const versions = new Map();
        for (const c of new Set(batch.map((e) => e.c))) versions.set(c, await this.store.schemaVersion(c));
        const replica = /** @type {string} */ (this.store.replica);
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
          // Made for the token it goes with: under that token's subject
          // the replica is named by its device part (docs/protocol.md,
          // "Push").
          const answer = await this.postAnswer(PATHS.push, async (token) => encodePush(replica, changes, versions, await this.pushPrefix(token)));
          requestId = answer.requestId;
          results = parsePushAnswer(answer.body);
        }
      } catch (e) {
        const err = /** @type {ConvergoError} */ (e);
        // Refused whole by the server (an HTTP error answer, or a live
        // pushed with a code), not an answer this client could not read.
        const whole = err.status !== undefined || err === liveRefusal;
        if (!whole || (err.code !== 'too_large' && err.code !== 'malformed')) throw e;
        if (batch.length > 1) {
          limit = Math.max(1, Math.floor(batch.length / 2));
          continue;
        }
        // One change the server will never take (too large alone, or
        // unreadable to it): refused, loudly, so the rest does not stall;
        // unless the server reads no push of this client at all (a push
        // of no changes is refused malformed too): then the fault is not
        // the change's, and it stays. A server that reads one now may
        // have just stopped refusing every push: the change goes once
        // more before it is taken as at fault.
        if (err.code === 'malformed' && !readable) {
          if (!(readable = await this.readsPushes())) throw e;
          continue;
        }
        results = [{ status: STATUSES.refused, code: err.code, message: err.message }];
        requestId = err.requestId ?? null;
        limit = maxCount;
      }
      if (results.length !== batch.length) {
        throw new ConvergoError('malformed', `push answer has ${results.length} results for ${batch.length} changes`);
      }
      // Changes refused collected that are to be written again with fresh
      // stamps (reconcile.js), read before they are rolled back.
      const again = results.some((r) => r.status === STATUSES.refused && r.code === 'collected')
        ? await (await import('./reconcile.js')).restampable(this, batch, results, restamping)
        : null;
      // applied, duplicate and superseded acknowledge the change: it
      // leaves the outbox. A superseded change's fields come back from
      // the server with the newer values that beat them.
      // A refused change is rolled back and kept among the rejected
      // changes, in the same transaction.
      /** @type {import('./db.js').Settled[]} */
      const settled = [];
      for (let i = 0; i < batch.length; i++) {
        const r = results[i];
        settled.push({ entry: batch[i], refused: r.status === STATUSES.refused, code: r.code ?? 'invalid', message: r.message ?? '', requestId });
      }
      const settledNow = await this.store.settle(settled, { when: Date.now(), subject: this.subject() });
      const { changed: rolledBack, rejected } = settledNow;
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
        items.forEach((x, k) => restamped.set(x.i, out[k]));
      }
      for (let i = 0; i < batch.length; i++) {
        const r = results[i];
        const { c: collection, id } = batch[i];
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
      this.o.onStatus(await this.store.outboxCounts());
    }
  }

  /**
   * Whether the server reads a push of this client at all: a push of no
   * changes, over HTTP. A change refused whole as malformed alone is its
   * own fault only when it does (docs/protocol.md, section 5).
   * @returns {Promise<boolean>}
   */
  async readsPushes() {
    const replica = /** @type {string} */ (this.store.replica);
    try {
      await this.postAnswer(PATHS.push, async (token) => encodePush(replica, [], undefined, await this.pushPrefix(token)));
      return true;
    } catch (e) {
      const err = /** @type {ConvergoError} */ (e);
      if (err.code === 'malformed' && err.status !== undefined) return false;
      throw e;
    }
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
   * (lease_expired), tell the app.
   * @param {string} c
   * @param {{reason: string, message: string}} reset
   */
  async onReset(c, reset) {
    const action = resetAction(reset.reason);
    this.pulledAt.delete(c);
    await this.store.resetCollection(c, action === 'history_lost', action === 'lease_expired');
    this.o.onServerReset({ collection: c, reason: reset.reason, message: reset.message });
  }

  /**
   * Reconciles collection c after lease_expired, or at its first pull
   * (first: Store.firstPullReconciles) (reconcile.js, loaded on demand):
   * pull it from the beginning, drop what the server collected, then push
   * its outbox (unless pushAll, which called this, goes on).
   * @param {string} c
   * @param {boolean} [first]
   */
  async reconcile(c, first = false) {
    await (await import('./reconcile.js')).reconcile(this, c, first);
    if (!this.pushing) await this.pushAll();
  }

  /** Heals every collection owed a heal (a reset whose heal did not finish). */
  async healOwed() {
    for (const c of await this.store.owedHeals()) {
      try {
        await (await import('./heal.js')).heal(this, c);
      } catch (e) {
        // Restoring needs read access: a collection the token may no
        // longer read cannot be healed by this client. Say so, and do not
        // stall the others.
        if (/** @type {any} */ (e)?.code !== 'forbidden') throw e;
        await this.store.healed(c);
        const { status, requestId } = /** @type {ConvergoError} */ (e);
        this.o.onError(new ConvergoError('forbidden', `heal ${c}: ${/** @type {any} */ (e).message}`, { status, requestId }));
      }
    }
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
   * each id delivered replaces the server state held (Store.applyRemote's
   * replace): the tombstones the server collected can no longer hide the
   * older fields held here. So is a pull from the beginning of a
   * collection that holds a record the server acknowledged, unless a heal
   * or a reset's pull from the beginning is under way
   * (Store.firstPullReconciles): a replica that pushed and never pulled
   * held no lease, and the server does not reset an empty cursor.
   * Every pull comes here, the live ones before their sub too.
   * @param {string} c
   * @param {Set<string>} [seen]
   */
  async pullCollection(c, seen) {
    if (!seen) {
      if (await this.store.owesReconcile(c)) return this.reconcile(c);
      if (await this.store.firstPullReconciles(c)) return this.reconcile(c, true);
    }
    let limit = this.hello?.maxPull ?? DEFAULTS.maxPullRecords;
    let resets = 0;
    const [scope, lease, version, replacing] = await Promise.all([this.store.scope(c), this.lease(c), this.store.schemaVersion(c), seen ? false : this.store.owesReplace(c)]);
    const fetchPage = (/** @type {Uint8Array} */ cursor) =>
      this.post(PATHS.pull, encodePull(c, cursor, limit, scope, lease, first, version))
        .then(parsePullAnswer)
        .then(async (p) => {
          if (seen) for (const r of p.records) seen.add(r.id);
          // After a heal, the reading from the beginning must bring what
          // it gave back (heal.js's checkHeal).
          if (this.healChecks.has(c) && !p.reset) return { ...p, healAgain: await (await import('./heal.js')).checkHeal(this, c, p, cursor.length === 0) };
          return p;
        });
    /** @type {Set<string>|null} the ids whose held record a reconciliation's (or an upgrade's) pull replaced */
    const replaced = seen || replacing ? new Set() : null;
    let cursor = seen || replacing ? new Uint8Array(0) : await this.store.cursor(c);
    let first = cursor.length === 0 && (await this.store.isEmpty(c));
    /** @type {Promise<import('./protocol.js').Page>|null} the next page, asked for */
    let next = null;
    /**
     * A first sync's writes issued and not yet awaited, oldest first (at
     * most FIRST_SYNC_INFLIGHT): each is a transaction created behind the
     * one before, which checks that one's cursor before anything it
     * writes can commit (Store.applyFirst).
     * @type {{p: Promise<void>, settled: boolean}[]}
     */
    const writes = [];
    /** The cursor the last write issued stores. */
    let written = cursor;
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
          limit = Math.max(1, Math.floor(limit / 4));
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
        if (++resets > 2) throw new ConvergoError('malformed', `pull ${c}: the server reset the cursor again after a reset`);
        await this.onReset(c, page.reset);
        seen?.clear();
        replaced?.clear();
        if (!seen && resetAction(page.reset.reason) === 'lease_expired') return this.reconcile(c);
        await this.healOwed();
        // onReset forgot the stored cursor: the next write builds on none.
        cursor = new Uint8Array(0);
        written = cursor;
        first = await this.store.isEmpty(c);
        continue; // from the beginning
      }
      if (page.more) {
        next = fetchPage(page.next);
        next.catch(() => {}); // its error is handled when it is awaited
      }
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
          if (page.more) {
            next = fetchPage(page.next);
            next.catch(() => {});
          }
        }
        const prepared = this.store.prepareRemote(c, records, seals);
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
        await this.applyPage(c, page.records, page.next, page.seals, page.leaves, replaced, !!seen);
        written = page.next;
      }
      cursor = page.next;
      if (!page.more && /** @type {{healAgain?: boolean}} */ (page).healAgain) {
        // The store went back in time again during the heal: heal again,
        // and pull again from the beginning.
        await drain();
        await this.onReset(c, { reason: 'history_lost', message: `the store went back in time again while this client healed ${c}` });
        await this.healOwed();
        cursor = new Uint8Array(0);
        written = cursor;
        first = await this.store.isEmpty(c);
        continue;
      }
      if (!page.more) break;
    }
    await drain();
    // Every record the server holds replaced the one held: an upgrade's
    // replacement, if one was owed, is done too.
    if (replaced) await this.store.replaced(c);
    if (!seen) this.pulledAt.set(c, Date.now());
  }

  /**
   * A first sync's write of a batch of pages merged ahead, issued at once
   * behind the write before (Store.applyFirst). If its checks fail (that
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
    let ids = await this.store.applyFirst(c, prepared, after, next);
    if (ids === null) {
      await before;
      ids = await this.store.applyRemote(c, records, next, seals);
    }
    if (ids.length > 0) this.o.onChanges(c, ids);
  }

  /**
   * Merges a page of records and stores the cursor after it. Cursors are
   * the server's opaque bytes: stored as they come, never compared. A page
   * that comes late (after a resync's pull) merges harmlessly: merging is
   * idempotent, and at worst the next pull fetches again what is held.
   * @param {string} c
   * @param {import('./record.js').Record[]} records
   * @param {Uint8Array} next
   * @param {Uint8Array[]} [seals] one per record, or none
   * @param {Uint8Array[]} [leaves] the page's leave entries: the records
   *   held that they name are removed in the same transaction
   * @param {Set<string>|null} [replace] a reconciliation's pull (Store.applyRemote)
   * @param {boolean} [giveBack] replace is a reconciliation's (Store.applyRemote)
   */
  async applyPage(c, records, next, seals, leaves = [], replace = null, giveBack = false) {
    const gone = leaves.length > 0 && this.o.leaves ? await this.o.leaves(c, leaves) : [];
    const ids = await this.store.applyRemote(c, records, next, seals, gone, replace, giveBack);
    if (ids.length > 0) this.o.onChanges(c, ids);
  }

  // -------------------------------------------------------- WebSocket

  /**
   * Runs one live session (live.js); resolves when the socket closes
   * normally, rejects with the error that ended it.
   */
  async runLive() {
    const session = new LiveSession({
      url: this.base,
      WebSocket: this.o.WebSocket,
      stopped: () => this.stopped,
      replica: () => /** @type {string} */ (this.store.replica),
      token: (force) => this.token(force),
      serial: (fn) => this.serial(fn),
      onMessage: (m, s) => this.onLive(m, s),
      pull: (c) => this.pullCollection(c),
      onError: (e) => {
        this.o.onError(e);
        if (e.code === 'schema_ahead') {
          // The server went back to older rules under this session: a new
          // round finds out (and backs off) over HTTP.
          this.o.onSchemaAhead?.(e);
          session.close();
        }
      },
      onClose: () => this.o.onStatus({ online: false }),
      pingInterval: this.o.pingInterval,
      silenceTimeout: this.o.silenceTimeout,
      pushTimeout: this.o.pushTimeout,
    });
    this.session = session;
    try {
      await session.run();
    } finally {
      if (this.session === session) this.session = null;
    }
  }

  /**
   * Handles one live message, in order with other sync work.
   * @param {import('./protocol.js').ServerMessage} m
   * @param {LiveSession} session the session it came on
   */
  async onLive(m, session) {
    switch (m.type) {
      case 'welcome': {
        const now = Date.now();
        this.applyHello(m.hello, now, now, false);
        await this.writeAs(m.hello);
        session.accept();
        this.o.onStatus({ online: true, lastError: null });
        // Writes made while we connected, then everything after the cursors.
        await this.pushAll();
        await this.healOwed();
        await this.pullAll();
        for (const c of this.o.collections()) await this.subscribe(session, c);
        this.o.onStatus({ lastSyncedAt: Date.now() });
        if (this.pushWanted) await this.pushAll();
        break;
      }
      case 'changes': {
        // Pages of collections not (or no longer) subscribed are dropped.
        if (!session.subscribed.has(m.collection)) break;
        await this.applyPage(m.collection, m.records, m.next, m.seals, m.leaves);
        this.o.onStatus({ lastSyncedAt: Date.now() });
        break;
      }
      case 'reset': {
        // The subscription has ended: heal, pull from the beginning,
        // subscribe again.
        if (!session.subscribed.has(m.collection)) break;
        session.subscribed.delete(m.collection);
        await this.onReset(m.collection, m);
        await this.healOwed();
        await this.catchUp(session, m.collection);
        break;
      }
      case 'resync': {
        session.subscribed.delete(m.collection);
        await this.catchUp(session, m.collection);
        break;
      }
    }
  }
}

/**
 * @param {unknown} e
 * @returns {ConvergoError}
 */
function asConvergoError(e) {
  if (e instanceof ConvergoError) return e;
  return new ConvergoError('internal', `sync: ${/** @type {any} */ (e)?.message ?? e}`, { cause: e });
}
