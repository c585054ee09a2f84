// The public API: open() a database, write and read documents, live
// queries, status, and the leader election that decides which tab syncs.

import { encode, MAX_VALUE_BYTES } from './cbor.js';
import { ConvergoError } from './errors.js';
import { Store } from './db.js';
import { Syncer } from './sync.js';
import { MAX_FIELDS, MAX_RECORD_BYTES, emptyRecord, encodeRecord, validateCollection, validateFieldName, validateId } from './record.js';
import { compareBytes, equalBytes } from './cbor.js';

/** @typedef {import('./record.js').Record} Rec */
/** @typedef {import('./db.js').StoredRecord} StoredRecord */

/**
 * @typedef {object} Status
 * @property {boolean} online the leader reached the server recently
 * @property {boolean} syncing a push/pull round is running
 * @property {number} pending local changes not yet acknowledged
 * @property {number|null} lastSyncedAt ms since epoch of the last completed sync
 * @property {ConvergoError|null} lastError
 * @property {boolean} leader this tab holds the connection
 * @property {boolean} paused pause() stopped syncing
 */

/**
 * @typedef {object} OpenOptions
 * @property {string} url server base URL, e.g. "https://sync.example.com"
 * @property {string} [token] a bearer token (JWT)
 * @property {() => Promise<string>|string} [getToken] called for a token at start and when it expires
 * @property {string} [name] database name (default "default"); one IndexedDB database per name
 * @property {string[]} [collections] collections to sync from the start
 * @property {typeof fetch} [fetch]
 * @property {any} [WebSocket] WebSocket constructor; null to poll over HTTP
 * @property {IDBFactory} [indexedDB]
 * @property {typeof IDBKeyRange} [IDBKeyRange]
 * @property {{request: Function}|null} [locks] Web Locks (navigator.locks); null for a single tab
 * @property {any} [BroadcastChannel] BroadcastChannel constructor; null to disable
 * @property {boolean} [sync] false to stay local (no network)
 * @property {number} [pollInterval] ms between polls without WebSocket (default 10000)
 * @property {{base?: number, max?: number}} [backoff] reconnect backoff bounds in ms
 */

/**
 * @typedef {{where?: Record<string, unknown> | ((doc: Doc) => boolean), orderBy?: string, desc?: boolean, limit?: number}} Query
 * @typedef {Record<string, unknown> & {id: string}} Doc
 */

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

const EVENTS = new Set(['status', 'error', 'auth', 'refused', 'change', 'reset']);

export class Database {
  /** @param {OpenOptions} o */
  constructor(o) {
    if (!o || typeof o !== 'object') throw new ConvergoError('invalid', 'open: options required');
    if (o.sync !== false && (typeof o.url !== 'string' || !/^https?:\/\//.test(o.url))) {
      throw new ConvergoError('invalid', 'open: url must be an http(s) URL');
    }
    const idb = o.indexedDB ?? globalThis.indexedDB;
    if (!idb) throw new ConvergoError('database', 'open: IndexedDB is not available');
    this.name = o.name ?? 'default';
    this.o = o;
    /** @type {Set<string>} */
    this.collections = new Set();
    for (const c of o.collections ?? []) {
      validateCollection(c);
      this.collections.add(c);
    }
    /** @type {Map<number, Function>|null} this tab's sync() calls waiting for the leader */
    this.peerSync = null;
    /** @type {((e: any) => void)[]} other tabs' sync() calls that came while this one started leading */
    this.startupSyncs = [];
    /** @type {Map<string, Set<Function>>} */
    this.listeners = new Map();
    /** @type {Status} */
    this._status = { online: false, syncing: false, pending: 0, lastSyncedAt: null, lastError: null, leader: false, paused: false };
    this.leading = false;
    /** @type {Set<Subscription>} */
    this.subs = new Set();
    /** @type {Set<Subscription>} */
    this.dirty = new Set();
    this.flushing = false;
    this.closed = false;
    /** @type {string|null} */
    this.tok = o.token ?? null;
    /** @type {Syncer|null} */
    this.syncer = null;
    /** @type {Map<string, Collection>} */
    this.colls = new Map();
    this.store = new Store({
      name: 'convergo-' + this.name,
      indexedDB: idb,
      IDBKeyRange: o.IDBKeyRange,
      onReset: () => this._onReset(),
      onError: (e) => this._emit('error', e),
    });
    /** @type {(() => void)|null} */
    this.releaseLock = null;
    /** @type {any} */
    this.channel = null;
    /** @type {Array<() => void>} */
    this.cleanups = [];
    /** @type {Set<() => void>} */
    this.closeWaiters = new Set();
  }

  async _init() {
    await this.store.init();
    const offset = await this.store.getMeta('offset');
    if (Number.isSafeInteger(offset)) this.store.now = () => Date.now() + offset;
    this._setStatus({ pending: await this.store.outboxCount() });
    // Whichever tab leads, now or later, syncs what any tab opened.
    await this.store.addCollections(this.collections);
    const BC = this.o.BroadcastChannel === undefined ? globalThis.BroadcastChannel : this.o.BroadcastChannel;
    if (BC) {
      this.channel = new BC('convergo:' + this.name);
      this.channel.onmessage = (/** @type {MessageEvent} */ ev) => this._onPeer(ev.data);
      // Learn the leader's status now rather than at its next change.
      this._post({ t: 'ask' });
      for (const c of this.collections) this._post({ t: 'collection', c });
    }
    if (this.o.sync === false) return;
    this._watchVisibility();
    const locks = this.o.locks === undefined ? globalThis.navigator?.locks : this.o.locks;
    if (locks && typeof locks.request === 'function') {
      locks
        .request('convergo:' + this.name, () => {
          if (this.closed) return undefined;
          this._lead().catch((e) => this._emit('error', e));
          return new Promise((resolve) => {
            this.releaseLock = () => resolve(undefined);
          });
        })
        .catch((/** @type {Error} */ e) => this._emit('error', e));
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
    if (!doc || typeof doc.addEventListener !== 'function' || typeof doc.removeEventListener !== 'function') return;
    const onVisibility = () => {
      if (doc.visibilityState !== 'visible' || this.closed) return;
      if (this.syncer) this.syncer.retryNow('visible');
      else this._post({ t: 'retry' });
    };
    doc.addEventListener('visibilitychange', onVisibility);
    this.cleanups.push(() => doc.removeEventListener('visibilitychange', onVisibility));
  }

  /** This tab holds the connection. */
  async _lead() {
    this.leading = true;
    this._setStatus({ leader: true });
    const g = /** @type {any} */ (globalThis);
    if (typeof g.addEventListener === 'function' && typeof g.removeEventListener === 'function') {
      const on = () => this.syncer?.online();
      const off = () => {
        this._setStatus({ online: false });
        this.syncer?.offline();
      };
      g.addEventListener('online', on);
      g.addEventListener('offline', off);
      this.cleanups.push(() => {
        g.removeEventListener('online', on);
        g.removeEventListener('offline', off);
      });
    }
    // Collections that other tabs opened, now or before a reload: a
    // follower's subscriptions depend on the leader pulling them.
    try {
      for (const c of await this.store.collections()) this.collections.add(c);
    } catch (e) {
      if (!this.closed) this._emit('error', e);
    }
    if (!this._status.paused) this._startSyncer();
    // This tab's sync() calls made before it knew it would lead went to a
    // leader that was not there, and other tabs' calls came while it
    // started: it answers them now.
    const syncer = this.syncer;
    const answers = this.startupSyncs;
    this.startupSyncs = [];
    if (syncer) {
      for (const done of this.peerSync?.values() ?? []) answers.push((/** @type {any} */ e) => done(e ? { code: e.code, message: e.message } : undefined));
      for (const answer of answers) syncer.requestSync().then(() => answer(null), answer);
    } else {
      const e = this.closed ? new ConvergoError('closed', 'sync: the leader tab closed') : new ConvergoError('network', 'sync: the leader tab is paused');
      for (const answer of answers) answer(e);
    }
  }

  _startSyncer() {
    if (this.syncer || this.closed) return;
    const o = this.o;
    const f = o.fetch ?? globalThis.fetch?.bind(globalThis);
    if (!f) {
      this._emit('error', new ConvergoError('network', 'open: no fetch available'));
      return;
    }
    this.syncer = new Syncer({
      url: /** @type {string} */ (o.url),
      store: this.store,
      collections: () => [...this.collections],
      token: (force) => this._token(force),
      fetch: f,
      WebSocket: o.WebSocket === undefined ? globalThis.WebSocket ?? null : o.WebSocket,
      onChanges: (c, ids) => this._changed(c, ids, 'remote'),
      onRefused: (r) => this._emit('refused', r),
      onStatus: (s) => this._setStatus(s),
      onError: (e) => this._emit('error', e),
      onAuth: (e) => {
        if (o.getToken) this.tok = null;
        this._emit('auth', e);
      },
      pollInterval: o.pollInterval,
      backoff: o.backoff,
    });
    this.syncer.start();
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
    if (this.leading && this.o.sync !== false) this._startSyncer();
  }

  /**
   * @param {boolean} force
   * @returns {Promise<string>}
   */
  async _token(force) {
    if (this.o.getToken && (force || this.tok === null)) {
      const t = await this.o.getToken();
      if (typeof t !== 'string') throw new ConvergoError('unauthenticated', 'getToken did not return a string');
      this.tok = t;
    }
    return this.tok ?? '';
  }

  /**
   * Replaces the token (after an 'auth' event, for example) and reconnects.
   * @param {string} token
   */
  setToken(token) {
    this.tok = token;
    this.syncer?.retryNow('token');
  }

  /** The current sync status (a copy). */
  get status() {
    return { ...this._status };
  }

  /**
   * Listens to 'status' (Status), 'error' (ConvergoError), 'auth'
   * (ConvergoError: the token was refused), 'refused' ({collection, id,
   * code, message}: the server refused a local change, now dropped),
   * 'change' ({collection, ids, origin}) or 'reset' (the local database
   * vanished and is rebuilt from the server). Returns a function that stops
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
    this._post({ t: 'status', s: { ...rest, lastError: lastError ? { code: lastError.code, message: lastError.message } : null } });
  }

  /** @param {any} m */
  _post(m) {
    try {
      this.channel?.postMessage(m);
    } catch {
      /* closed */
    }
  }

  /**
   * A message from another tab of this database.
   * @param {any} m
   */
  _onPeer(m) {
    if (!m || typeof m !== 'object' || this.closed) return;
    switch (m.t) {
      case 'changed':
        if (typeof m.c === 'string' && Array.isArray(m.ids)) this._changed(m.c, m.ids, 'tab');
        break;
      case 'push':
        this.syncer?.kick();
        break;
      case 'retry':
        // A follower's page became visible.
        this.syncer?.retryNow('visible');
        break;
      case 'ask':
        // A tab opened and wants the sync status: the leader answers.
        if (this._status.leader) this._announce();
        break;
      case 'collection':
        // A tab opened a collection (it also stored the name for leaders
        // to come). The leader syncs it from now on, paused or not.
        if (this.leading && typeof m.c === 'string' && !this.collections.has(m.c)) {
          try {
            validateCollection(m.c);
          } catch {
            break;
          }
          this.collections.add(m.c);
          this.syncer?.addCollection(m.c);
        }
        break;
      case 'sync': {
        if (!this.leading) break;
        const answer = (/** @type {any} */ e) => this._post({ t: 'synced', n: m.n, error: e ? { code: e.code, message: e.message } : undefined });
        if (!this.syncer) {
          if (this._status.paused) answer(new ConvergoError('network', 'sync: the leader tab is paused'));
          else this.startupSyncs.push(answer); // answered once the syncer runs (_lead)
          break;
        }
        this.syncer.requestSync().then(() => answer(null), answer);
        break;
      }
      case 'synced':
        this.peerSync?.get(m.n)?.(m.error);
        break;
      case 'status':
        if (!this._status.leader && m.s && typeof m.s === 'object') {
          const { pending, ...rest } = m.s;
          const lastError = rest.lastError ? new ConvergoError(rest.lastError.code, rest.lastError.message) : null;
          this._setStatus({ ...rest, lastError }, true);
          this.store
            .outboxCount()
            .then((n) => this._setStatus({ pending: n }, true))
            .catch(() => {});
        }
        break;
    }
  }

  /**
   * Records of collection c changed: refresh live queries.
   * @param {string} c
   * @param {string[]} ids
   * @param {'local'|'remote'|'tab'} origin
   */
  _changed(c, ids, origin) {
    if (origin !== 'tab') this._post({ t: 'changed', c, ids });
    for (const s of this.subs) {
      if (s.collection === c && (s.id === null || ids.includes(s.id))) this.dirty.add(s);
    }
    this._emit('change', { collection: c, ids, origin });
    this._flush();
  }

  _onReset() {
    // The wipe took the remembered collections too: put back ours.
    this.store.addCollections(this.collections).catch((e) => this._emit('error', e));
    this.syncer?.reset();
    for (const s of this.subs) this.dirty.add(s);
    this._emit('reset', undefined);
    this._flush();
  }

  _flush() {
    if (this.flushing) return;
    this.flushing = true;
    queueMicrotask(async () => {
      try {
        while (this.dirty.size > 0 && !this.closed) {
          const batch = [...this.dirty];
          this.dirty.clear();
          // Query subscriptions of one collection share one read.
          /** @type {Map<string, Promise<StoredRecord[]>>} */
          const lists = new Map();
          const listOf = (/** @type {string} */ c) => {
            let p = lists.get(c);
            if (!p) lists.set(c, (p = this.store.list(c)));
            return p;
          };
          await Promise.all(batch.map((s) => s.run(listOf)));
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
      else this._post({ t: 'collection', c: name });
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
    if (this.syncer) {
      this._setStatus({ syncing: true });
      try {
        // While disconnected this also reconnects at once.
        await this.syncer.requestSync();
      } catch (e) {
        this._setStatus({ lastError: /** @type {any} */ (e) });
        throw e;
      } finally {
        this._setStatus({ syncing: false });
      }
      return;
    }
    if (!this.channel || this.o.sync === false) throw new ConvergoError('network', 'sync: this database does not sync');
    this.peerSync ??= new Map();
    const n = Math.random();
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.peerSync?.delete(n);
        reject(new ConvergoError('network', 'sync: the leader tab did not answer'));
      }, 30_000);
      /** @type {Map<number, Function>} */ (this.peerSync).set(n, (/** @type {any} */ err) => {
        clearTimeout(timer);
        this.peerSync?.delete(n);
        if (err) reject(new ConvergoError(err.code, err.message));
        else resolve(undefined);
      });
      this._post({ t: 'sync', n });
    });
  }

  /**
   * Resolves once this database has synced with the server and has no
   * pending changes (at once if that is already so). It waits through
   * offline periods; race it with a timeout if you need to give up.
   * @returns {Promise<void>}
   */
  whenSynced() {
    const ok = () => this._status.lastSyncedAt !== null && this._status.pending === 0 && this._status.online;
    if (ok()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const offStatus = this.on('status', () => {
        if (ok()) {
          stop();
          resolve(undefined);
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

  /** Stops syncing and closes the database. */
  async close() {
    if (this.closed) return;
    this.closed = true;
    for (const f of this.cleanups) f();
    await this.syncer?.stop();
    this.releaseLock?.();
    try {
      this.channel?.close();
    } catch {
      /* already */
    }
    this.subs.clear();
    this.store.close();
    for (const f of [...this.closeWaiters]) f();
  }

  /** A local write happened. */
  async _wrote(/** @type {string} */ c, /** @type {string} */ id) {
    this._changed(c, [id], 'local');
    if (this.syncer) this.syncer.kick();
    else this._post({ t: 'push' });
    this._setStatus({ pending: await this.store.outboxCount() });
  }
}

/**
 * @param {unknown} doc
 * @param {string} what
 */
function checkDoc(doc, what) {
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) throw new ConvergoError('invalid', `${what}: document must be a plain object`);
  const p = Object.getPrototypeOf(doc);
  if (p !== Object.prototype && p !== null) throw new ConvergoError('invalid', `${what}: document must be a plain object`);
}

/**
 * Encodes a field value, checking the value limit.
 * @param {string} name
 * @param {unknown} v
 */
function encodeField(name, v) {
  validateFieldName(name);
  const b = encode(v);
  if (b.length > MAX_VALUE_BYTES) throw new ConvergoError('too_large', `field ${JSON.stringify(name)}: value of ${b.length} bytes exceeds ${MAX_VALUE_BYTES}`);
  return b;
}

/**
 * The fields to write from a document, without the "id" key.
 * @param {string} id
 * @param {Record<string, unknown>} doc
 * @param {string} what
 * @returns {Map<string, Uint8Array|null>} null means unset
 */
function fieldsOf(id, doc, what) {
  checkDoc(doc, what);
  /** @type {Map<string, Uint8Array|null>} */
  const out = new Map();
  for (const k of Object.keys(doc)) {
    const v = doc[k];
    if (k === 'id') {
      if (v !== undefined && v !== id) throw new ConvergoError('invalid', `${what}: doc.id ${JSON.stringify(v)} differs from the id ${JSON.stringify(id)}`);
      continue;
    }
    out.set(k, v === undefined ? null : encodeField(k, v));
  }
  return out;
}

/**
 * @param {Rec} merged
 * @param {Rec} change
 */
function checkSize(merged, change) {
  if (merged.fields.size > MAX_FIELDS) throw new ConvergoError('too_large', `record ${JSON.stringify(merged.id)} would have more than ${MAX_FIELDS} fields`);
  const n = encodeRecord(change).length;
  if (n > MAX_RECORD_BYTES) throw new ConvergoError('too_large', `change to ${JSON.stringify(change.id)} is ${n} bytes, over ${MAX_RECORD_BYTES}`);
}

/**
 * @param {StoredRecord|undefined} s
 * @returns {Doc|null}
 */
function docOfStored(s) {
  if (!s || !s.doc) return null;
  const d = /** @type {Doc} */ ({ id: s.id });
  for (const k of Object.keys(s.doc)) {
    if (k === 'id') continue;
    if (k === '__proto__') Object.defineProperty(d, k, { value: s.doc[k], enumerable: true, writable: true, configurable: true });
    else d[k] = s.doc[k];
  }
  return d;
}

/** Orders values of mixed types: null/undefined last, then by type, then value. */
const TYPE_RANK = { number: 0, bigint: 0, string: 1, boolean: 2, object: 3 };

/**
 * @param {unknown} a
 * @param {unknown} b
 */
export function compareValues(a, b) {
  const an = a === undefined || a === null;
  const bn = b === undefined || b === null;
  if (an || bn) return an === bn ? 0 : an ? 1 : -1;
  const ta = /** @type {keyof typeof TYPE_RANK} */ (typeof a);
  const tb = /** @type {keyof typeof TYPE_RANK} */ (typeof b);
  const ra = TYPE_RANK[ta] ?? 4;
  const rb = TYPE_RANK[tb] ?? 4;
  if (ra !== rb) return ra - rb;
  if (ra === 0) {
    // number vs bigint compare fine with < in JS.
    return /** @type {any} */ (a) < /** @type {any} */ (b) ? -1 : /** @type {any} */ (a) > /** @type {any} */ (b) ? 1 : 0;
  }
  if (ra === 1) return /** @type {string} */ (a) < /** @type {string} */ (b) ? -1 : a > /** @type {string} */ (b) ? 1 : 0;
  if (ra === 2) return Number(a) - Number(b);
  return compareBytes(encode(a), encode(b));
}

/**
 * A scalar in the form equal values share: bigints in the safe range as
 * numbers.
 * @param {unknown} x
 */
function scalar(x) {
  return typeof x === 'bigint' && x >= -BigInt(Number.MAX_SAFE_INTEGER) && x <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(x) : x;
}

/**
 * Runs a query over stored records.
 * @param {StoredRecord[]} records
 * @param {Query} q
 * @returns {Doc[]}
 */
export function runQuery(records, q = {}) {
  const where = q.where;
  /** @type {[string, Uint8Array][]} */
  let want = [];
  if (where && typeof where === 'object') {
    want = Object.keys(where).map((k) => [k, encode(where[k])]);
  } else if (where !== undefined && typeof where !== 'function') {
    throw new ConvergoError('invalid', 'query: where must be an object or a function');
  }
  /** @type {Doc[]} */
  let out = [];
  for (const s of records) {
    if (!s.doc) continue;
    if (want.length > 0) {
      let ok = true;
      for (const [k, b] of want) {
        const v = /** @type {any} */ (where)[k];
        if (k === 'id') ok = v === s.id;
        else if (!Object.hasOwn(s.doc, k)) ok = false;
        else if (v === null || typeof v !== 'object') {
          // Scalars compare as values, so 31 matches a 31.0 another client
          // stored as a float, and 5n matches 5.
          ok = scalar(s.doc[k]) === scalar(v);
        } else ok = equalBytes(s.fields.get(k)?.value, b);
        if (!ok) break;
      }
      if (!ok) continue;
    }
    const d = /** @type {Doc} */ (docOfStored(s));
    if (typeof where === 'function' && !where(d)) continue;
    out.push(d);
  }
  if (q.orderBy !== undefined) {
    const k = q.orderBy;
    const sign = q.desc ? -1 : 1;
    out.sort((a, b) => sign * compareValues(a[k], b[k]) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  } else {
    out.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    if (q.desc) out.reverse();
  }
  if (q.limit !== undefined) {
    if (!Number.isSafeInteger(q.limit) || q.limit < 0) throw new ConvergoError('invalid', 'query: limit must be a non-negative integer');
    out = out.slice(0, q.limit);
  }
  return out;
}

/** A live query or record subscription. */
class Subscription {
  /**
   * @param {Database} db
   * @param {string} collection
   * @param {string|null} id
   * @param {Query} query
   * @param {(result: any) => void} cb
   */
  constructor(db, collection, id, query, cb) {
    this.db = db;
    this.collection = collection;
    this.id = id;
    this.query = query;
    this.cb = cb;
    this.active = true;
    /** @type {Promise<void>} */
    this.running = Promise.resolve();
  }

  /**
   * Re-reads and calls back, after any earlier run of this subscription.
   * @param {(c: string) => Promise<StoredRecord[]>} listOf reads a collection
   */
  run(listOf) {
    this.running = this.running.then(async () => {
      if (!this.active) return;
      try {
        const result =
          this.id !== null
            ? docOfStored(await this.db.store.get(this.collection, this.id))
            : runQuery(await listOf(this.collection), this.query);
        if (this.active) this.cb(result);
      } catch (e) {
        this.db._emit('error', e);
      }
    });
    return this.running;
  }
}

/** One collection of documents. */
export class Collection {
  /**
   * @param {Database} db
   * @param {string} name
   */
  constructor(db, name) {
    this.db = db;
    this.name = name;
  }

  _check() {
    if (this.db.closed) throw new ConvergoError('closed', 'database is closed');
  }

  /**
   * Replaces document id: fields missing from doc are unset.
   * @param {string} id
   * @param {Record<string, unknown>} doc
   * @returns {Promise<Doc>}
   */
  async put(id, doc) {
    this._check();
    validateId(id);
    const fields = fieldsOf(id, doc, `put ${this.name}/${id}`);
    const { record } = await this.db.store.write(this.name, id, (current, stamp) => {
      const change = emptyRecord(id);
      for (const [k, v] of fields) change.fields.set(k, { stamp, value: v });
      for (const [k, f] of current.fields) {
        if (!fields.has(k) && f.value !== null) change.fields.set(k, { stamp, value: null });
      }
      checkSize({ ...current, fields: new Map([...current.fields, ...change.fields]) }, change);
      return change;
    });
    await this.db._wrote(this.name, id);
    return /** @type {Doc} */ (docOfStored(record) ?? { id });
  }

  /**
   * Sets the given fields of document id (creating it when missing); a
   * field set to undefined is unset.
   * @param {string} id
   * @param {Record<string, unknown>} partial
   * @returns {Promise<Doc|null>}
   */
  async update(id, partial) {
    this._check();
    validateId(id);
    const fields = fieldsOf(id, partial, `update ${this.name}/${id}`);
    if (fields.size === 0) return this.get(id);
    const { record } = await this.db.store.write(this.name, id, (current, stamp) => {
      const change = emptyRecord(id);
      for (const [k, v] of fields) change.fields.set(k, { stamp, value: v });
      checkSize({ ...current, fields: new Map([...current.fields, ...change.fields]) }, change);
      return change;
    });
    await this.db._wrote(this.name, id);
    return docOfStored(record);
  }

  /**
   * Deletes document id. A later write re-creates it with only its fields.
   * @param {string} id
   */
  async delete(id) {
    this._check();
    validateId(id);
    await this.db.store.write(this.name, id, (_current, stamp) => ({ id, deleted: stamp, fields: new Map() }));
    await this.db._wrote(this.name, id);
  }

  /**
   * @param {string} id
   * @returns {Promise<Doc|null>}
   */
  async get(id) {
    this._check();
    validateId(id);
    return docOfStored(await this.db.store.get(this.name, id));
  }

  /** @returns {Promise<Doc[]>} every document, ordered by id */
  async list() {
    return this.query({});
  }

  /**
   * @param {Query} [q]
   * @returns {Promise<Doc[]>}
   */
  async query(q = {}) {
    this._check();
    return runQuery(await this.db.store.list(this.name), q);
  }

  /**
   * Calls cb now and after every local or remote change: with the document
   * (or null) when queryOrId is an id, with the query's result otherwise.
   * Returns a function that stops the subscription.
   * @param {string|Query} queryOrId
   * @param {(result: any) => void} cb
   * @returns {() => void}
   */
  subscribe(queryOrId, cb) {
    this._check();
    if (typeof cb !== 'function') throw new ConvergoError('invalid', 'subscribe: callback must be a function');
    let sub;
    if (typeof queryOrId === 'string') {
      validateId(queryOrId);
      sub = new Subscription(this.db, this.name, queryOrId, {}, cb);
    } else {
      const q = queryOrId ?? {};
      runQuery([], q); // validates the query now rather than in the callback
      sub = new Subscription(this.db, this.name, null, q, cb);
    }
    this.db.subs.add(sub);
    this.db.dirty.add(sub);
    this.db._flush();
    return () => {
      sub.active = false;
      this.db.subs.delete(sub);
      this.db.dirty.delete(sub);
    };
  }
}

