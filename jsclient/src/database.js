// The Database: open() it, then it holds the local store, the sync status
// and events, the live subscriptions to refresh, and which tab leads. The
// leader tab runs the Syncer; the others reach it through the messages of
// tabs.js.

import { ConvergoError, loadOnDemand } from './errors.js';
import { Store } from './db.js';
import { validateCollection } from './record.js';
import { Collection } from './collection.js';
import { replicaPrefix, subjectOfToken } from './replica.js';
import { docOfStored } from './values.js';
import { backoff } from './backoff.js';
import { TabMessage, toWire } from './tabs.js';
import { TabChannel, requestLeadership } from './channel.js';

/** @typedef {import('./db.js').StoredRecord} StoredRecord */

/**
 * @typedef {object} Status
 * @property {boolean} online the leader reached the server recently
 * @property {boolean} syncing a push/pull round is running
 * @property {number} pending local changes not yet acknowledged that this
 *   client may push now
 * @property {number} held local changes of another subject, held in the
 *   outbox until it signs in again (not pending: whenSynced does not wait
 *   for them)
 * @property {number} rejected changes the server refused, kept until the
 *   app retries or discards them (Database.rejected)
 * @property {number|null} lastSyncedAt ms since epoch of the last completed
 *   sync, also one before a reload
 * @property {ConvergoError|null} lastError
 * @property {boolean} leader this tab holds the connection
 * @property {boolean} paused pause() stopped syncing
 * @property {boolean} revoked the server revoked the subject: what it held
 *   was purged and syncing waits for a new token (setToken)
 * @property {boolean} schemaAhead the server runs older rules than this
 *   code: it refused a request (schema_ahead) naming a schema version it
 *   does not have yet. The outbox and records stay as they are and sync
 *   retries with backoff until the server is upgraded.
 * @property {Unreadable[]} unreadable the collections the token may not
 *   read, as the server last refused each ('unreadable' event); one leaves
 *   the list when a pull of it succeeds (a refused sub: when a sub of it is
 *   served; a refused heal: when the heal is made)
 */

/**
 * The server refused a pull or a live sub (forbidden, or invalid: a scope
 * it finds invalid) or a heal (forbidden: what this client holds was not given
 * back yet; the heal stays owed, made once the token may read c) of
 * collection c for this token (the
 * 'unreadable' event, status.unreadable). Syncing goes on without it.
 * @typedef {{collection: string, op: 'pull'|'sub'|'heal', code: string, message: string, requestId: string|null}} Unreadable
 */

/**
 * A pushed change the server refused (the 'refused' event): it was rolled
 * back locally and kept among the rejected changes as entry rejectedId;
 * dropped counts the oldest rejected changes dropped to make room.
 * @typedef {{collection: string, id: string, code: string, message: string, requestId: string|null, rejectedId: number|null, dropped: number}} Refusal
 */

/**
 * The server revoked the subject (the 'revoked' event): every record held
 * was purged, moved outbox changes became rejected changes with code
 * revoked, dropped counts the oldest rejected changes dropped to make
 * room.
 * @typedef {{message: string, requestId: string|null, moved: number, dropped: number}} Revocation
 */

/**
 * A rejected change as the app sees it (Database.rejected): the change's
 * values (fields it set, names it unset, whether it deleted), the server's
 * code and message, the request id of the push, when (ms since epoch) and
 * the subject signed in (null: unknown).
 * @typedef {{id: number, collection: string, recordId: string, change: {deleted: boolean, fields: Record<string, unknown>, unset: string[]}, code: string, message: string, requestId: string|null, when: number, subject: string|null}} RejectedChange
 */

/**
 * @typedef {object} OpenOptions
 * @property {string} url server base URL, e.g. "https://sync.example.com"
 * @property {string} [token] a bearer token (JWT), every tab's (setToken)
 * @property {() => Promise<string>|string} [getToken] called for a token at start and when it expires
 *   (then by the leader; its answer is every tab's token)
 * @property {string} [name] database name (default "default"); one IndexedDB database per name
 * @property {string[]} [collections] collections to sync from the start
 * @property {Record<string, import('./migrate.js').MigrationDefinition>} [migrations]
 *   per collection, its schema versions: the "migrations" object of its
 *   rule in the server's rules file. The collection's local data is
 *   upgraded to the definition's version when it is older (changes the
 *   migration cannot map become rejected changes, code untranslatable),
 *   reads show its defaults, and sync speaks that version: the server
 *   translates. A definition older than the local data refuses to open.
 * @property {Record<string, Record<string, unknown>>} [scopes] per
 *   collection, its named scopes ({name: predicate}); the collections named
 *   are synced, each under the or of its scopes, and their scopes are
 *   exactly these (setScope and removeScope change them later)
 * @property {typeof fetch} [fetch]
 * @property {any} [WebSocket] WebSocket constructor; null to poll over HTTP
 * @property {IDBFactory} [indexedDB]
 * @property {typeof IDBKeyRange} [IDBKeyRange]
 * @property {{request: Function}|null} [locks] Web Locks (navigator.locks); null for a single tab
 * @property {any} [BroadcastChannel] BroadcastChannel constructor; null to disable
 * @property {boolean} [sync] false to stay local (no network)
 * @property {'strict'|'relaxed'} [durability] when a local write counts as
 *   committed (index.d.ts OpenOptions.durability); default strict
 * @property {number} [pollInterval] ms between polls without WebSocket (default 10000)
 * @property {{base?: number, max?: number, random?: () => number}} [backoff] reconnect
 *   backoff bounds in ms (default TIMINGS.backoffInitialMs ..
 *   TIMINGS.backoffMaxMs); random, for tests, replaces Math.random in its
 *   jitter
 */

/** @typedef {import('./collection.js').Subscription} Subscription */

/**
 * Opens (or creates) a local database and starts syncing it.
 * @param {OpenOptions} options
 * @returns {Promise<Database>}
 */
export async function open(options) {
  const db = new Database(options);
  await db._init();
  return db;
}

/** How long open() waits for getToken to name the subject to write as (ms). */
const FIRST_TOKEN_MS = 3_000;

const EVENTS = new Set(['status', 'error', 'auth', 'refused', 'superseded', 'change', 'reset', 'serverReset', 'reconciled', 'revoked', 'schemaAhead', 'unreadable']);

export class Database {
  /** @param {OpenOptions} o */
  constructor(o) {
    if (!o || typeof o !== 'object') throw new ConvergoError('invalid', 'open: options required');
    if (o.sync !== false && (typeof o.url !== 'string' || !/^https?:\/\//.test(o.url))) {
      throw new ConvergoError('invalid', 'open: url must be an http(s) URL');
    }
    if (o.durability !== undefined && o.durability !== 'strict' && o.durability !== 'relaxed') {
      throw new ConvergoError('invalid', `open: durability must be "strict" or "relaxed", not ${JSON.stringify(o.durability)}`);
    }
    const idb = o.indexedDB ?? globalThis.indexedDB;
    if (!idb) throw new ConvergoError('database', 'open: IndexedDB is not available');
    this.name = o.name ?? 'default';
    this.o = o;
    /** @type {Set<string>} */
    this.collections = new Set();
    for (const c of [...(o.collections ?? []), ...Object.keys(o.scopes ?? {})]) {
      validateCollection(c);
      this.collections.add(c);
    }
    /** @type {Map<number, {ask: () => void, done: (e?: import('./tabs.js').WireError) => void}>|null} this tab's sync() calls waiting for the leader (peer.js askLeader): ask it (again), or settle with its answer */
    this.peerSync = null;
    /** @type {Set<unknown>|null} the ids of the other tabs' sync() calls this tab took as leader, the last peer.js ASKED_KEPT: one asked again is not run again (peer.js onPeer) */
    this.peerAsked = null;
    /** @type {((syncer: import('./sync.js').Syncer|null) => void)[]} other tabs' sync() calls that came while this one started leading: each runs a round with the loop, or is told why there is none (null), once _lead knows (peer.js onPeer) */
    this.startupSyncs = [];
    /** @type {Map<string, Set<Function>>} */
    this.listeners = new Map();
    /** @type {Status} */
    this._status = { online: false, syncing: false, pending: 0, held: 0, rejected: 0, lastSyncedAt: null, lastError: null, leader: false, paused: false, revoked: false, schemaAhead: false, unreadable: [] };
    /** @type {number} lastSyncedAt as stored before this open: a sync since is newer */
    this._storedSyncedAt = -Infinity;
    /** Changes refused since whenSynced last resolved. */
    this._refusedSince = 0;
    /** The newest rejected change this tab was told of (peer.js recount). */
    this._heard = 0;
    /** @type {any} the timer of a count dropped for a refusal not told of yet (peer.js recount) */
    this._doubt = null;
    this.leading = false;
    /** @type {Set<Subscription>} */
    this.subs = new Set();
    /** @type {Set<Subscription>} subscriptions waiting for their first run (or a rerun after a reset) */
    this.fresh = new Set();
    /** @type {Map<string, Map<string, StoredRecord|null|undefined>>} records changed since the last refresh, by collection (undefined: to be read) */
    this.changes = new Map();
    this.flushing = false;
    this.closed = false;
    /** @type {string|null} the token, the same in every tab (TabMessage.token); never stored */
    this.tok = o.token ?? null;
    /** When tok was set (ms): a token another tab set later replaces it. */
    this.tokAt = -Infinity;
    /** @type {import('./sync.js').Syncer|null} */
    this.syncer = null;
    /** @type {Promise<typeof import('./leader.js')>|null} the sync loop, loading or loaded (_startSyncer) */
    this.syncModule = null;
    /** @type {ConvergoError|null} why sync.js did not load, until it does */
    this.syncLoadError = null;
    /** The failed loads of sync.js in a row: the backoff of the next try (_startSyncer). */
    this.loadAttempt = 0;
    /** @type {any} the timer of that try, while one is set */
    this.loadTimer = null;
    /** @type {Map<string, Collection>} */
    this.colls = new Map();
    this.store = new Store({
      name: 'convergo-' + this.name,
      indexedDB: idb,
      IDBKeyRange: o.IDBKeyRange,
      onReset: (holds) => this._onReset(holds),
      onError: (e) => this._emit('error', e),
      // A tab of newer code upgraded the database: step aside (stop
      // syncing, give the leader lock up to it) and say why.
      onNewer: () => {
        this._emit('error', new ConvergoError('database', `newer code in another tab upgraded ${this.store.name}: closed here; reload the page`));
        this.close();
      },
      onChange: (c, records, origin) => this._changed(c, records, origin),
      durability: o.durability,
    });
    /** @type {(() => void)|null} */
    this.releaseLock = null;
    /** @type {TabChannel|null} */
    this.channel = null;
    /** @type {import('./tabs.js').TabMsg[]|null} what this tab told while it opened, before its channel (_init): a schema upgrade's changes */
    this.early = [];
    /** @type {Array<() => void>} */
    this.cleanups = [];
    /** @type {Set<() => void>} */
    this.closeWaiters = new Set();
    /** @type {import('./scope.js').LeaveIndex|null} digests of held ids, once leaves came */
    this.leaveIndex = null;
    /** @type {typeof import('./peer.js').onPeer|null} the handler of other tabs' messages, once loaded (_onPeer) */
    this.peer = null;
    /** @type {any[]|null} other tabs' messages that came while it loads */
    this.peerWaiting = null;
    this.peerLoading = false;
  }

  async _init() {
    let rejected = false;
    // Stamp with the ids of the subject the token names, when one is known
    // (docs/protocol.md, "Replica ids").
    if (this.tok === null && this.o.getToken && this.o.sync !== false) await this._firstToken();
    if (this.tok !== null) this.tokAt = Date.now();
    const prefix = this.tok ? await replicaPrefix(subjectOfToken(this.tok)) : null;
    await this.store.init({ prefix });
    if (this.o.migrations !== undefined) {
      // Schema versions (schema.js, loaded only by apps that use them):
      // upgrades the local data written under an older definition, or
      // refuses a definition older than the data.
      try {
        const { openSchemas } = await loadOnDemand('open', 'schema.js', () => import('./schema.js'));
        const ups = await openSchemas(this.store, this.o.migrations, { when: Date.now(), subject: this.tok ? subjectOfToken(this.tok) : null });
        rejected = ups.some((u) => u.rejected.length > 0);
      } catch (e) {
        this.closed = true;
        this.store.close();
        throw e;
      }
    }
    const synced = await this.store.getMeta('lastSyncedAt');
    if (Number.isSafeInteger(synced)) this._storedSyncedAt = synced;
    const { counts, newest } = await this.store.outboxView();
    this._heard = newest;
    this._setStatus({
      ...counts,
      rejected: await this.store.rejectedCount(),
      lastSyncedAt: Number.isSafeInteger(synced) ? synced : null,
    });
    /** @type {string[]} the collections whose stored scopes open's changed */
    const rescoped = [];
    if (this.o.scopes) {
      const { replaceScopes } = await loadOnDemand('open', 'scope.js', () => import('./scope.js'));
      for (const [c, s] of Object.entries(this.o.scopes)) if (await replaceScopes(this.store, c, s)) rescoped.push(c);
    }
    // Whichever tab leads, now or later, syncs what any tab opened.
    await this.store.addCollections(this.collections);
    const BC = this.o.BroadcastChannel === undefined ? globalThis.BroadcastChannel : this.o.BroadcastChannel;
    if (BC) {
      this.channel = new TabChannel(BC, this.name, (m) => this._onPeer(m));
      this._peerLoad();
      // What the upgrade changed (rolled back, translated): the tabs open
      // already show it.
      for (const m of /** @type {import('./tabs.js').TabMsg[]} */ (this.early)) this._post(m);
      // Learn the leader's status (and token) now rather than at its next
      // change; a token this tab opened with is the database's from now.
      this._post({ t: TabMessage.ask });
      // A write that committed as its tab went (closed or crashed before
      // it told the leader) waits in the outbox: the leader, live, would
      // push it only at its next write or session.
      if (counts.pending > 0) this._post({ t: TabMessage.push });
      this._postToken();
      // The leader reads again under the scopes this tab stored (one it
      // does not sync yet it opens from the next message, under them).
      for (const c of rescoped) this._post({ t: TabMessage.scope, c });
      for (const c of this.collections) this._post({ t: TabMessage.collection, c });
      // The upgrade made rejected changes: the tabs open already count them.
      if (rejected) this._post({ t: TabMessage.rejected });
    }
    this.early = null;
    if (this.o.sync === false) return;
    this._watchVisibility();
    const locks = this.o.locks === undefined ? globalThis.navigator?.locks : this.o.locks;
    if (locks && typeof locks.request === 'function') {
      requestLeadership(locks, this.name, {
        closed: () => this.closed,
        lead: () => this._lead().catch((e) => this._emit('error', e)),
        held: (release) => {
          this.releaseLock = release;
        },
        onError: (e) => this._emit('error', e),
      });
    } else {
      await this._lead();
    }
  }

  /**
   * A page that becomes visible again (the user is back) is a moment to
   * reconnect without waiting out the backoff. The leader may be a hidden
   * tab: a follower asks it.
   */
  _watchVisibility() {
    const doc = /** @type {any} */ (globalThis).document;
    this._listen(doc, 'visibilitychange', () => {
      if (doc.visibilityState !== 'visible' || this.closed) return;
      if (this.syncer) this.syncer.retryNow('visible');
      else if (this.syncLoadError) this._retryLoad();
      else this._post({ t: TabMessage.retry });
    });
  }

  /**
   * Listens to event type of target, if it can be listened to, until the
   * database closes.
   * @param {any} target
   * @param {string} type
   * @param {() => void} fn
   */
  _listen(target, type, fn) {
    if (typeof target?.addEventListener !== 'function' || typeof target.removeEventListener !== 'function') return;
    target.addEventListener(type, fn);
    this.cleanups.push(() => target.removeEventListener(type, fn));
  }

  /** This tab holds the connection. */
  async _lead() {
    this.leading = true;
    this._setStatus({ leader: true });
    // The other tabs' sync() calls the last leader did not answer come again.
    this._post({ t: TabMessage.lead });
    // The sync loop starts loading (_startSyncer reports a failure).
    if (!this._status.paused) this._loadSyncOnce().catch(() => {});
    this._listen(globalThis, 'online', () => (this.syncer ? this.syncer.online() : this._retryLoad()));
    this._listen(globalThis, 'offline', () => {
      this._setStatus({ online: false });
      this.syncer?.offline();
    });
    if (!this._status.paused) await this._startSyncer();
    // This tab's sync() calls made before it knew it would lead went to a
    // leader that was not there, and other tabs' calls came while it
    // started: it answers them now, after a round of its loop (leader.js
    // answerWaiting: it has loaded) or, with none, each other tab's call
    // with why (peer.js, which queued it).
    const syncer = this.syncer;
    const waiting = this.startupSyncs;
    this.startupSyncs = [];
    if (syncer) (await this._loadSyncOnce()).answerWaiting(this, syncer, waiting);
    else for (const settle of waiting) settle(null);
  }

  /**
   * Loads the sync loop (leader.js, and sync.js with it) once: only the
   * tab that leads runs it, so the others never load it. A load that
   * fails is forgotten once reported (_startSyncer), and the next try
   * (after the loop's backoff, or sooner: sync(), resume(), the browser
   * online, the page visible) loads it again.
   * @returns {Promise<typeof import('./leader.js')>}
   */
  _loadSyncOnce() {
    return (this.syncModule ??= this._loadSync());
  }

  /**
   * The sync loop did not load (syncLoadError) and its backoff ended or a
   * sign says the server may be reachable again (the browser is online,
   * the page visible): try again, as the loop itself would.
   */
  _retryLoad() {
    if (this.syncLoadError && this.leading && !this._status.paused && this.o.sync !== false) this._startSyncer().catch((e) => this._emit('error', e));
  }

  /** Loads leader.js (_loadSyncOnce). */
  _loadSync() {
    return import('./leader.js');
  }

  /**
   * Starts the sync loop once leader.js has loaded (its startLoop); a load
   * that fails is reported ('error', status.lastError) and tried again
   * after the loop's backoff.
   */
  async _startSyncer() {
    if (this.syncer || this.closed) return;
    /** @type {typeof import('./leader.js').startLoop} */
    let startLoop;
    const loading = this._loadSyncOnce();
    try {
      ({ startLoop } = await loadOnDemand('sync', 'leader.js', () => loading));
    } catch (e) {
      // Told and retried once, by the first of the calls that waited for
      // this load (the others find it forgotten).
      if (this.syncModule !== loading) return;
      this.syncModule = null;
      if (this.closed || this.syncer) return;
      const err = /** @type {ConvergoError} */ (e);
      this.syncLoadError = err;
      this._setStatus({ lastError: err });
      this._emit('error', err);
      // Tried again after the loop's backoff, as a failed round is: a page
      // reloaded while the server was down may hear no other sign.
      clearTimeout(this.loadTimer);
      this.loadTimer = setTimeout(() => {
        this.loadTimer = null;
        this._retryLoad();
      }, backoff(this.loadAttempt++, this.o.backoff));
      return;
    }
    await startLoop(this);
  }

  /**
   * Stops talking to the server (an "offline" switch): writes keep going
   * to IndexedDB and the outbox; resume() pushes them. Affects the
   * connection this tab holds when it leads; a follower's pause takes
   * effect if it becomes the leader.
   */
  async pause() {
    if (this._status.paused) return;
    this._setStatus({ paused: true });
    const s = this.syncer;
    this.syncer = null;
    await s?.stop();
    this._setStatus({ online: false, syncing: false });
  }

  /** Starts syncing again after pause(). */
  resume() {
    if (!this._status.paused || this.closed) return;
    this._setStatus({ paused: false });
    if (this.leading && this.o.sync !== false) this._startSyncer().catch((e) => this._emit('error', e));
  }

  /**
   * Asks getToken for the token at open, so that writes made before the
   * first sync are stamped as its subject. A getToken that fails or takes
   * long (the app is offline) is asked again when sync starts; until then
   * writes use the subject the database last wrote as.
   */
  async _firstToken() {
    /** @type {any} */
    let timer;
    try {
      const t = await Promise.race([
        Promise.resolve(/** @type {() => any} */ (this.o.getToken)()),
        new Promise((resolve) => (timer = setTimeout(resolve, FIRST_TOKEN_MS, null))),
      ]);
      if (typeof t === 'string') this.tok = t;
    } catch {
      /* asked again when sync starts */
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * New writes use the replica ids of the subject token names; a live
   * session of another subject ends (Syncer.retoken). Writes made before
   * the prefix is switched wait for it (Store.switching).
   * @param {string} token
   * @returns {Promise<void>}
   */
  _writeAs(token) {
    this.syncer?.retoken(token);
    const done = (async () => {
      const prefix = await replicaPrefix(subjectOfToken(token));
      // A later token may have come meanwhile: its prefix wins.
      if (prefix !== this.store.prefix && this.tok === token) await this.store.setPrefix(prefix);
    })();
    // Writes made meanwhile wait: they are the new subject's.
    const switching = Promise.all([this.store.switching, done])
      .catch(() => {})
      .then(() => {
        if (this.store.switching === switching) this.store.switching = null;
      });
    this.store.switching = switching;
    return done;
  }

  /**
   * This tab set the token: it is the database's, the other tabs take it
   * too (TabMessage.token), later than any this tab held.
   * @param {string} token
   */
  _ownToken(token) {
    this.tok = token;
    this.tokAt = Math.max(Date.now(), this.tokAt + 1);
    this._postToken();
  }

  /** Tells the other tabs the token, if there is one (TabMessage.token). */
  _postToken() {
    if (this.tok !== null) this._post({ t: TabMessage.token, token: this.tok, at: this.tokAt });
  }

  /**
   * Replaces the token (after an 'auth' event, for example) in every tab
   * of the database and reconnects: a live session opened with another
   * subject's token ends, and the next one, with this token, resumes from
   * the cursors under its subject's rights; a token of the same subject
   * keeps the session.
   * @param {string} token
   */
  setToken(token) {
    this._ownToken(token);
    this._retoken(token);
  }

  /**
   * The token is now token (this tab's setToken or another tab's): new
   * writes use its subject's ids, the leader reconnects with it.
   * @param {string} token
   */
  _retoken(token) {
    if (this.leading) this._setStatus({ revoked: false });
    this._writeAs(token)
      .catch((e) => this._emit('error', e))
      .finally(() => {
        this.syncer?.retryNow('token');
        // Changes the new subject wrote before may be waiting.
        this.syncer?.kick();
      });
  }

  /**
   * Sets the scope called name of collection c to predicate pred (see
   * OpenOptions.scopes), for every tab of the database; the collection is
   * synced from now on. Changing the scopes of a collection reads it again
   * from its cursor: the server sends the records newly in scope and leave
   * entries for those out of it, which are removed locally.
   * @param {string} c
   * @param {string} name
   * @param {unknown} pred undefined: removes it (removeScope)
   */
  async setScope(c, name, pred) {
    if (this.closed) throw new ConvergoError('closed', 'database is closed');
    validateCollection(c);
    await (await loadOnDemand('scope', 'scope.js', () => import('./scope.js'))).rescope(this, c, name, pred);
  }

  /**
   * Removes the scope called name of collection c (no scopes left: the
   * collection is read unscoped).
   * @param {string} c
   * @param {string} name
   */
  removeScope(c, name) {
    return this.setScope(c, name, undefined);
  }

  /** The current sync status (a copy). */
  get status() {
    return { ...this._status };
  }

  /**
   * Listens to 'status' (Status), 'error' (ConvergoError), 'auth'
   * (ConvergoError: the token was refused), 'refused' (Refusal: the
   * server refused a local change; it was rolled back and kept among the
   * rejected changes), 'serverReset' ({collection, reason, message}: the
   * server's history is not the one the collection's cursor was of; the
   * client pulls it again and gives back what it holds, or, for
   * lease_expired, reconciles), 'reconciled' (Reconciliation: a
   * collection was reconciled and its outbox pushed: records dropped
   * because the server collected them, their changes rejected with code
   * collected, changes re-stamped and pushed again; after every reset
   * lease_expired, and at the first pull of a collection this device
   * pushed to and never pulled when something was dropped or rejected),
   * 'superseded' ({collection, id, lost, status}: fields of a local change
   * lost to newer writes on the server; the record converges when those
   * arrive),
   * 'change' ({collection, ids, origin}), 'reset' ({lost, rejected}: the
   * local database vanished and is rebuilt from the server; lost local
   * changes not pushed yet and rejected changes kept went with it, as
   * last counted), 'revoked' (Revocation: the
   * server revoked the subject; everything held was purged, the outbox
   * moved to the rejected changes, and syncing waits for setToken),
   * 'schemaAhead' (ConvergoError: the server refused a schema version it
   * does not have yet; see Status.schemaAhead) or 'unreadable'
   * (Unreadable: the server refused a pull, a live sub or a heal of a collection to
   * this token; told once, as status.unreadable comes to list it).
   * The events the server tells the leader tab (auth, refused, superseded,
   * serverReset, reconciled, revoked, schemaAhead, unreadable) fire in every tab of the
   * database, once each (leader.js tell); 'change' too, origin 'tab' for another
   * tab's; 'status' is each tab's (a follower's mirrors the leader's),
   * 'reset' the tab that rebuilt the database tells them, and 'error' stays in the tab where
   * it happened (_startSyncer says why). Returns a function that stops
   * listening.
   * @param {string} event
   * @param {(arg: any) => void} fn
   */
  on(event, fn) {
    if (!EVENTS.has(event)) throw new ConvergoError('invalid', `unknown event ${JSON.stringify(event)}`);
    let set = this.listeners.get(event);
    if (!set) this.listeners.set(event, (set = new Set()));
    set.add(fn);
    return () => set.delete(fn);
  }

  /**
   * @param {string} event
   * @param {unknown} arg
   */
  _emit(event, arg) {
    for (const fn of this.listeners.get(event) ?? []) {
      try {
        fn(arg);
      } catch (e) {
        if (event !== 'error') this._emit('error', e);
      }
    }
  }

  /** @param {Partial<Status>} s */
  _setStatus(s, fromPeer = false) {
    let changed = false;
    for (const [k, v] of Object.entries(s)) {
      if (/** @type {any} */ (this._status)[k] !== v) {
        /** @type {any} */ (this._status)[k] = v;
        changed = true;
      }
    }
    if (!changed) return;
    this._emit('status', this.status);
    if (!fromPeer && this._status.leader) this._announce();
  }

  /** The leader tells the other tabs its sync status. */
  _announce() {
    if (!this.channel) return;
    const { lastError, leader, paused, ...rest } = this._status;
    this._post({ t: TabMessage.status, s: { ...rest, lastError: lastError ? toWire(lastError) : null } });
  }

  /** @param {import('./tabs.js').TabMsg} m */
  _post(m) {
    if (this.channel) this.channel.post(m);
    else this.early?.push(m);
  }

  /**
   * A message from another tab of this database: see TabMessage (tabs.js)
   * for who sends each and why. What a tab does with it is peer.js's,
   * which is not in the main entry: it starts loading when the channel
   * opens (_init), so that an app that caches what the page loaded has it
   * for a reload offline, and a message that comes first waits for it.
   * Messages wait until it has loaded and are handled in the order they
   * came; a load that fails with messages waiting is reported ('error')
   * and the next message tries again, those waiting first.
   * @param {any} m
   */
  _onPeer(m) {
    if (!m || typeof m !== 'object' || this.closed) return;
    if (this.peer && !this.peerWaiting) {
      this.peer(this, m);
      return;
    }
    (this.peerWaiting ??= []).push(m);
    this._peerLoad();
  }

  /**
   * Loads peer.js unless it is loading, then handles the messages waiting
   * (_onPeer), in the order they came. A failure is reported when messages
   * wait for it (the load _init starts fails silently otherwise: the first
   * message tries again).
   */
  _peerLoad() {
    if (this.peerLoading) return;
    this.peerLoading = true;
    loadOnDemand('tabs', 'peer.js', () => this._loadPeer()).then(
      ({ onPeer }) => {
        this.peerLoading = false;
        this.peer = onPeer;
        const waiting = this.peerWaiting ?? [];
        this.peerWaiting = null;
        for (const w of waiting) onPeer(this, w);
      },
      (e) => {
        this.peerLoading = false;
        if (this.peerWaiting && !this.closed) this._emit('error', e);
      },
    );
  }

  /** Loads peer.js (_onPeer). */
  _loadPeer() {
    return import('./peer.js');
  }

  /**
   * Records of collection c changed: tell the other tabs, refresh the live
   * queries from these records alone. records holds them as stored now
   * (null: none); undefined (another tab's change) means read them.
   * @param {string} c
   * @param {Map<string, StoredRecord|null|undefined>} records
   * @param {'local'|'remote'|'tab'} origin
   */
  _changed(c, records, origin) {
    const ids = [...records.keys()];
    // Closing, the other tabs still hear what its last transactions
    // changed (a refusal rolled back as the sync loop stops).
    if (origin !== 'tab') this._post({ t: TabMessage.changed, c, ids });
    if (this.closed) return;
    this.leaveIndex?.note(c, ids);
    let pending = this.changes.get(c);
    if (!pending) this.changes.set(c, (pending = new Map()));
    for (const [id, s] of records) {
      pending.delete(id); // keeps the latest last
      pending.set(id, s);
    }
    this._emit('change', { collection: c, ids, origin });
    this._flush();
  }

  /**
   * The database was found wiped and rebuilt (wiped.js): what it held
   * went with it, which the reset event tells as last counted; the status
   * counts what the rebuilt one holds.
   * @param {{pending: number, held: number, rejected: number}} holds
   * @param {{pending: number, held: number, rejected: number}} [was] the
   *   counts as the message of another tab that found it came
   *   (TabMessage.reset; a recount may have run since); else this tab
   *   found it, and tells the others
   */
  _onReset(holds, was) {
    if (!was) this._post({ t: TabMessage.reset });
    const { pending, held, rejected } = was ?? this._status;
    this._setStatus(holds, !this._status.leader);
    this.leaveIndex = null;
    // The wipe took the remembered collections too: put back ours.
    this.store.addCollections(this.collections).catch((e) => this._emit('error', e));
    this.syncer?.reset();
    for (const s of this.subs) this.fresh.add(s);
    this._emit('reset', { lost: pending + held, rejected });
    this._flush();
  }

  /**
   * Refreshes live subscriptions, one round after another until nothing
   * is left: new ones run over their collection (one read shared by the
   * queries of a collection), the others take the changed records.
   */
  _flush() {
    if (this.flushing) return;
    this.flushing = true;
    queueMicrotask(async () => {
      try {
        while ((this.fresh.size > 0 || this.changes.size > 0) && !this.closed) {
          const changes = this.changes;
          this.changes = new Map();
          const fresh = [...this.fresh];
          this.fresh.clear();
          for (const [c, records] of changes) {
            const subs = [...this.subs].filter((s) => s.collection === c && s.rows !== null && !fresh.includes(s));
            if (subs.length === 0) continue;
            const unread = [...records].filter(([, s]) => s === undefined).map(([id]) => id);
            if (unread.length > 0) {
              try {
                const got = await this.store.getMany(c, unread);
                unread.forEach((id, i) => records.set(id, got[i] ?? null));
              } catch (e) {
                this._emit('error', e);
                for (const s of subs) this.fresh.add(s); // read them whole next round
                continue;
              }
            }
            const stored = /** @type {Map<string, StoredRecord|null>} */ (records);
            /** @type {Map<string, import('./values.js').Doc|null>} */
            const docs = new Map();
            for (const [id, s] of stored) docs.set(id, docOfStored(s));
            for (const s of subs) s.apply(stored, docs);
          }
          if (fresh.length === 0) continue;
          /** @type {Map<string, Promise<StoredRecord[]>>} */
          const lists = new Map();
          const listOf = (/** @type {string} */ c) => {
            let p = lists.get(c);
            if (!p) lists.set(c, (p = this.store.list(c)));
            return p;
          };
          await Promise.all(
            fresh.map((s) =>
              s.full(listOf).catch((e) => {
                if (!this.closed) this._emit('error', e);
              }),
            ),
          );
        }
      } finally {
        this.flushing = false;
      }
    });
  }

  /**
   * The collection called name; it is synced from now on.
   * @param {string} name
   * @returns {Collection}
   */
  collection(name) {
    let c = this.colls.get(name);
    if (c) return c;
    validateCollection(name);
    c = new Collection(this, name);
    this.colls.set(name, c);
    if (!this.collections.has(name)) {
      this.collections.add(name);
      this.store.addCollections([name]).catch((e) => this._emit('error', e));
      if (this.syncer) this.syncer.addCollection(name);
      else this._post({ t: TabMessage.collection, c: name });
    }
    return c;
  }

  /**
   * Pushes local changes and pulls remote ones now (through the leader tab
   * when this one is not it).
   * @returns {Promise<void>}
   */
  async sync() {
    if (this.closed) throw new ConvergoError('closed', 'database is closed');
    if (this._status.paused && this.leading) throw new ConvergoError('network', 'sync: paused; call resume() first');
    // Leading, the loop may still be loading (or its load failed: try again).
    if (this.leading && !this.syncer && this.o.sync !== false) {
      await this._startSyncer();
      if (!this.syncer) throw this.closed ? new ConvergoError('closed', 'database is closed') : (this.syncLoadError ?? new ConvergoError('network', 'sync: paused; call resume() first'));
    }
    // The loop runs, so leader.js has loaded (syncNow).
    const syncer = this.syncer;
    if (syncer) return (await this._loadSyncOnce()).syncNow(this, syncer);
    if (!this.channel || this.o.sync === false) throw new ConvergoError('network', 'sync: this database does not sync');
    // A follower asks the leader (peer.js askLeader, which the channel
    // started loading as it opened).
    await (await loadOnDemand('sync', 'peer.js', () => this._loadPeer())).askLeader(this);
  }

  /**
   * Resolves once this database has synced with the server (in this
   * session) and has no pending changes (at once if that is already so),
   * with how many local changes the server refused since whenSynced last
   * resolved ({refused: n}; see rejected()). Changes of another subject
   * held in the outbox until it signs in again are not pending and do not
   * hold it up. It waits through offline periods; race it with a timeout
   * if you need to give up.
   * @returns {Promise<{refused: number}>}
   */
  whenSynced() {
    const ok = () =>
      this._status.lastSyncedAt !== null && this._status.lastSyncedAt > this._storedSyncedAt && this._status.pending === 0 && this._status.online;
    const result = () => {
      const refused = this._refusedSince;
      this._refusedSince = 0;
      return { refused };
    };
    if (ok()) return Promise.resolve(result());
    return new Promise((resolve, reject) => {
      const offStatus = this.on('status', () => {
        if (ok()) {
          stop();
          resolve(result());
        } else if (this.closed) {
          stop();
          reject(new ConvergoError('closed', 'database is closed'));
        }
      });
      const stop = () => {
        offStatus();
        this.closeWaiters.delete(onClose);
      };
      const onClose = () => {
        stop();
        reject(new ConvergoError('closed', 'database is closed'));
      };
      this.closeWaiters.add(onClose);
    });
  }

  /**
   * The changes the server refused that are kept (rolled back locally,
   * neither retried nor discarded yet), oldest first. They survive
   * reloads; at most DEFAULTS.maxRejected of them and
   * DEFAULTS.maxRejectedBytes bytes are kept, the oldest dropped first.
   * @returns {Promise<RejectedChange[]>}
   */
  async rejected() {
    return (await this._rejected()).rejected(this.store);
  }

  /**
   * Writes rejected change id again as a new local write: its fields (and
   * its delete) get fresh stamps, so it can win over what the server has,
   * and it is queued like any write; the entry leaves the rejected
   * changes. Its values are the ones refused: a change refused for its
   * content (too_large, invalid) is likely refused again. Rejects with
   * not_found when there is no such entry, and with untranslatable (the
   * entry stays) when it was written under an older schema version that
   * the collection's migration cannot map to the one its data is in now.
   * @param {number} id
   */
  async retry(id) {
    if (this.closed) throw new ConvergoError('closed', 'database is closed');
    await (await this._rejected()).retry(this, id);
  }

  /**
   * Forgets rejected change id (the local record already is the server's
   * version). Resolves to whether there was such an entry.
   * @param {number} id
   * @returns {Promise<boolean>}
   */
  async discard(id) {
    if (this.closed) throw new ConvergoError('closed', 'database is closed');
    return (await this._rejected()).discard(this, id);
  }

  /** The rejected changes' module (rejected.js), loaded on demand. */
  _rejected() {
    return loadOnDemand('rejected changes', 'rejected.js', () => import('./rejected.js'));
  }

  /** Stops syncing and closes the database. */
  async close() {
    if (this.closed) return;
    this.closed = true;
    for (const f of this.cleanups) f();
    await this.syncer?.stop();
    clearTimeout(this._doubt);
    clearTimeout(this.loadTimer);
    this.releaseLock?.();
    this.channel?.close();
    this.subs.clear();
    this.store.close();
    for (const f of [...this.closeWaiters]) f();
  }

  /**
   * n local writes were queued (the Store told the live queries and other
   * tabs as they committed): push them, and count them pending. No
   * recount of the outbox here: counting an index walks it in IndexedDB,
   * which a large outbox makes slow; the leader counts after each push.
   * @param {number} n
   */
  _wrote(n) {
    if (this.syncer) this.syncer.kick();
    else this._post({ t: TabMessage.push });
    this._setStatus({ pending: this._status.pending + n });
  }
}
