// Types for Convergo's browser client (src/index.js). Hand-written; kept in
// step with the JSDoc in database.js, collection.js and query.js.

import type { MigrationDefinition } from './migrate.js';
export type { MigrationDefinition, MigrationOp } from './migrate.js';

/**
 * Stable error codes: the protocol's (docs/protocol.md, section 5; the
 * generated src/constants.js CODES, which test/constants.test.js holds this
 * list to) plus the client's own (network, closed, counter_overflow,
 * database). quota_exceeded is both a per-change refusal (a collection's
 * quota) and what the client says when the browser's storage is full.
 */
export type ErrorCode =
  | 'malformed'
  | 'invalid'
  | 'unsupported_version'
  | 'unauthenticated'
  | 'token_expired'
  | 'forbidden'
  | 'not_found'
  | 'method_not_allowed'
  | 'too_large'
  | 'upgrade_required'
  | 'rate_limited'
  | 'clock_drift'
  | 'forged_replica'
  | 'bad_seal'
  | 'out_of_scope'
  | 'schema'
  | 'untranslatable'
  | 'schema_ahead'
  | 'collected'
  | 'revoked'
  | 'corrupt'
  | 'unavailable'
  | 'internal'
  | 'quota_exceeded'
  | 'network'
  | 'closed'
  | 'counter_overflow'
  | 'database';

export class ConvergoError extends Error {
  constructor(code: ErrorCode, message: string, opts?: { status?: number; cause?: unknown; retryAfter?: number; requestId?: string });
  readonly name: 'ConvergoError';
  readonly code: ErrorCode;
  /** HTTP status when the error came from the server. */
  readonly status?: number;
  /** Seconds the server asked to wait (rate_limited). */
  readonly retryAfter?: number;
  /**
   * The id the server logged the request under (its error body, or the
   * Convergo-Request-Id header): quote it when reporting a problem.
   */
  readonly requestId?: string;
}

/** A number that is stored as a CBOR float even when integral. */
export class Float {
  constructor(value: number);
  readonly value: number;
}

/**
 * A field value: JSON-like values plus bigint (integers beyond 2^53),
 * Uint8Array (bytes), Map (maps with non-string keys) and Float.
 */
export type Value =
  | null
  | boolean
  | number
  | bigint
  | string
  | Uint8Array
  | Float
  | Value[]
  | { [key: string]: Value }
  | Map<Value, Value>;

/** A stored document: its fields plus its id. */
export type Doc<T extends object = { [field: string]: Value }> = T & { id: string };

export interface Status {
  /**
   * The leader tab's last attempt reached the server and had its answer,
   * whatever the answer: it stays true while the server refuses the token
   * (401; the 'auth' event and lastError tell that) or refuses a request.
   * False while the browser is offline or the network or the server
   * (unavailable) cannot be reached, from a live session's close to the
   * next answer, and while syncing waits: paused, revoked, or a server this
   * client cannot speak to.
   */
  online: boolean;
  /** A push/pull round is running. */
  syncing: boolean;
  /** Local changes not yet acknowledged by the server that this client may push now. */
  pending: number;
  /**
   * Local changes of another subject, held in the outbox until it signs in
   * again. They are not pending: whenSynced() does not wait for them.
   */
  held: number;
  /** Changes the server refused that are kept (see Database.rejected()). */
  rejected: number;
  /**
   * When the last sync completed (ms since epoch; also one before a reload),
   * or null: a push-and-pull round, a live session's catch-up or a live
   * page. An idle live session does not move it: while online with a live
   * session the data is current however old it is.
   */
  lastSyncedAt: number | null;
  lastError: ConvergoError | null;
  /** This tab holds the server connection. */
  leader: boolean;
  /** pause() stopped syncing (until resume()). */
  paused: boolean;
  /**
   * The server revoked the subject: every record held was purged, the
   * outbox moved to the rejected changes (code revoked), and syncing waits
   * for a new token (setToken).
   */
  revoked: boolean;
  /**
   * The server runs older rules than this code: it refused a request
   * naming a schema version it does not have yet (schema_ahead). The
   * outbox and records stay as they are and sync retries with backoff;
   * false again after the next round that succeeds.
   */
  schemaAhead: boolean;
  /**
   * The collections the token may not read, as the server last refused
   * each ('unreadable' event); one leaves the list when a pull of it
   * succeeds, or after a refused heal when the heal is made (after
   * setToken with a token that grants it, say).
   */
  unreadable: Unreadable[];
}

/**
 * A scope: a predicate over a record's top-level fields, evaluated by the
 * server (docs/protocol.md, section 12). Where a value stands, a parameter
 * the server binds from the token may stand instead: {$: 'sub'} or
 * {$: 'claims.X'}. Equality is on canonical bytes (1 and new Float(1) differ).
 */
export type ScopeValue = Value | { $: string };
export type Scope =
  | ['all']
  | ['eq', string, ScopeValue]
  | ['in', string, ScopeValue[] | { $: string }]
  | ['has', string, ScopeValue]
  | ['and', ...Scope[]]
  | ['or', ...Scope[]];

/**
 * The server revoked the subject ('revoked' event): every record held was
 * purged and moved outbox changes became rejected changes with code
 * revoked.
 */
export interface Revocation {
  message: string;
  requestId: string | null;
  /** How many outbox changes became rejected changes. */
  moved: number;
  /** How many of the oldest rejected changes were dropped to make room. */
  dropped: number;
}

/**
 * The server refused collection to this token ('unreadable' event,
 * Status.unreadable): a pull or a live sub (forbidden; or invalid, a
 * scope it finds invalid, such as a parameter the token cannot bind; a
 * sub refused leaves the list once a sub of it is served), or a heal after a
 * server reset (forbidden: what this device holds of the collection was
 * not given back yet; the heal stays owed, and gives it back once the
 * token may read the collection). The other collections sync on.
 */
export interface Unreadable {
  collection: string;
  op: 'pull' | 'sub' | 'heal';
  code: ErrorCode | string;
  message: string;
  /** The request id the server logged the refusal under, or null. */
  requestId: string | null;
}

export interface Query<T extends object = { [field: string]: Value }> {
  /** Field equality (values compared by canonical encoding), or a predicate. */
  where?: Partial<{ [K in keyof T]: T[K] }> | { [field: string]: Value } | ((doc: Doc<T>) => boolean);
  /** Field to sort by; documents missing it sort last, equal values by id. Default: id. */
  orderBy?: string;
  /** Reverses the order (of orderBy, or of the ids): documents missing the field then come first. */
  desc?: boolean;
  limit?: number;
}

/**
 * A pushed change the server refused ('refused' event). It was rolled back
 * (the record shows the server's version plus changes still pending) and
 * kept among the rejected changes as entry rejectedId.
 */
export interface Refusal {
  collection: string;
  id: string;
  code: ErrorCode | string;
  message: string;
  /** The request id the server logged the push under, or null. */
  requestId: string | null;
  /** The entry in Database.rejected(), or null. */
  rejectedId: number | null;
  /** How many of the oldest rejected changes were dropped to make room (the bounds: 1000 entries, 4 MiB). */
  dropped: number;
}

/** A change the server refused, kept until retried or discarded (Database.rejected()). */
export interface RejectedChange {
  id: number;
  collection: string;
  recordId: string;
  /** What the change wrote: fields it set, field names it unset, whether it deleted the record. */
  change: { deleted: boolean; fields: { [field: string]: Value }; unset: string[] };
  /** The server's per-change code: too_large, invalid, forbidden, clock_drift, forged_replica, malformed, out_of_scope, schema, untranslatable (a change the collection's migration cannot map, found when the client upgraded its data or the server translated a push), quota_exceeded, collected (a change of a record deleted on the server while this device was away, or stamped before the server's write horizon), revoked (the outbox of a revoked subject), or a newer server's. */
  code: ErrorCode | string;
  message: string;
  /** The request id the server logged the push under, or null. */
  requestId: string | null;
  /** When the refusal arrived, ms since epoch. */
  when: number;
  /** The subject the client was signed in as ("" anonymous), or null when unknown. */
  subject: string | null;
}

/**
 * The local IndexedDB database vanished under the page (site data
 * cleared, evicted, deleted by another context) and is being rebuilt from
 * the server ('reset' event). What it held that the server did not have
 * went with it, as this tab last counted it (its status before the
 * wipe); the status counts what the rebuilt database holds.
 */
export interface LocalReset {
  /** Local changes not pushed yet (pending and held) lost with the database. */
  lost: number;
  /** Rejected changes lost with it. */
  rejected: number;
}

/**
 * The server reset a collection's cursor ('serverReset' event): its history
 * is not the one the cursor was of (the store was wiped, restored from a
 * backup, failed over, or its log rebuilt). The client pulls the
 * collection again from the beginning and, unless reason is 'rebuilt',
 * gives the server back what it holds; nothing local is dropped.
 */
export interface ServerReset {
  collection: string;
  /** history_lost, rebuilt, lease_expired (the device was away longer than the collection's maximum offline period: the client reconciles, see Reconciliation), or a reason this client does not know (treated as history_lost). */
  reason: string;
  message: string;
}

/**
 * A collection was reconciled ('reconciled' event): after every reset
 * lease_expired, and at the first pull of a collection this device pushed
 * to and never pulled (it held no lease there) when that dropped or
 * rejected something. Pulled from the beginning, then the records the
 * server deleted and collected while this device was away (or held no
 * lease) were dropped locally (dropped; not pushed, nothing deleted),
 * their pending changes kept as rejected changes with code collected
 * (rejected, each also a 'refused' event), and the outbox pushed; pending
 * changes the server refused collected whose record it still has, or
 * that were created on this device, were written again with fresh stamps
 * and pushed (restamped).
 */
export interface Reconciliation {
  collection: string;
  dropped: number;
  rejected: number;
  restamped: number;
}

/**
 * Fields of a local change that lost to newer writes on the server (push
 * status superseded: the change altered nothing; or applied: the rest of
 * it applied). A change refused collected that is written again after a
 * reconciliation is written without the fields the record as known here
 * hides or beats (applied), or settled when nothing is left (superseded). The change has left the outbox: the newer values are on
 * their way, and the local record converges when they arrive.
 */
export interface Superseded {
  collection: string;
  id: string;
  /** The field names of the change that lost. */
  lost: string[];
  status: 'applied' | 'superseded';
}

export interface ChangeEvent {
  collection: string;
  ids: string[];
  /** local: this tab wrote; remote: from the server; tab: another tab. */
  origin: 'local' | 'remote' | 'tab';
}

export interface OpenOptions {
  /** Server base URL, e.g. location.origin. */
  url: string;
  /**
   * A bearer token (JWT). Like setToken, it becomes the token of every tab
   * of the database; a tab opened without one takes the leader's.
   */
  token?: string;
  /**
   * Called for a token at start and whenever the server says it expired
   * (then by the leader tab; the token it answers is every tab's).
   */
  getToken?: () => Promise<string> | string;
  /** Database name; one IndexedDB database ("convergo-" + name) per name. Default "default". */
  name?: string;
  /** Collections to sync from the start (db.collection(name) adds more). */
  collections?: string[];
  /**
   * Per collection, its named scopes: the collection is synced under their
   * or and holds their union. The scopes of each collection named here
   * become exactly these (for every tab of the database); setScope and
   * removeScope change them later.
   */
  scopes?: { [collection: string]: { [name: string]: Scope } };
  /**
   * Per collection, its schema versions: the "migrations" object of the
   * collection's rule in the server's rules file (the same JSON). The
   * collection's local data is upgraded to the definition's version on
   * open when it is older, in one IndexedDB transaction (outbox changes
   * the migration cannot map become rejected changes, code
   * 'untranslatable'); reads show its defaults; sync speaks its version
   * and the server translates. A definition older than the local data
   * refuses to open (code 'database'). A collection named in none is
   * served in the server's current version.
   */
  migrations?: { [collection: string]: MigrationDefinition };
  fetch?: typeof fetch;
  /** WebSocket constructor; null to poll over HTTP instead. */
  WebSocket?: any;
  indexedDB?: IDBFactory;
  IDBKeyRange?: typeof IDBKeyRange;
  /** Web Locks for leader election (default navigator.locks); null: this tab leads. */
  locks?: { request: (...args: any[]) => Promise<any> } | null;
  /** BroadcastChannel constructor (default global); null disables tab messaging. */
  BroadcastChannel?: any;
  /** false: local only, never contact a server. */
  sync?: boolean;
  /**
   * When a local write (put, putMany, update, delete) counts as committed:
   * its promise resolves when IndexedDB's transaction completes, and this
   * is the durability hint that transaction carries. "strict" (the
   * default): Chromium asks the operating system to flush the write to
   * disk before it completes, so it survives a crash of the tab, the
   * browser or the operating system. "relaxed": it completes once the
   * write is in the operating system's buffers, which the system flushes
   * within seconds (Chromium's own default since version 121; other
   * browsers treat the hint as they see fit). A write is then cheaper
   * (docs/benchmarks.md) and still survives a crash of the tab or the
   * browser, but the writes of the last seconds before an operating-system
   * crash or a power loss may be lost, outbox entries and all, and so never
   * reach the server. Pulled pages are always written relaxed: the server
   * sends them again.
   */
  durability?: 'strict' | 'relaxed';
  /** ms between polls when there is no WebSocket (default 10000). */
  pollInterval?: number;
  /**
   * Reconnect backoff in ms: before retry n the client waits a random time
   * in [0, min(max, base * 2^n)] (full jitter), never less than the
   * server's Retry-After. Default 200 .. 30000 (the protocol's timings).
   */
  backoff?: { base?: number; max?: number };
}

/**
 * The events of Database.on. What the server tells the leader tab (auth,
 * refused, superseded, serverReset, reconciled, revoked, schemaAhead,
 * unreadable) is
 * heard in every tab of the database, once each; a follower's ConvergoError
 * carries the leader's code, message and requestId. status is each tab's
 * (a follower's mirrors the leader's), change comes in every tab (origin
 * 'tab' for another tab's), reset in every tab (the one that rebuilt the database tells the others), and
 * error only in the tab where it happened.
 */
export interface EventMap {
  status: Status;
  /** This tab's failures only (a sync failure: the leader's; other tabs see status.lastError). */
  error: ConvergoError | Error;
  /** The token was refused, and getToken (if any) gave none better: its error, when it threw, is the cause. setToken in any tab reaches the leader. */
  auth: ConvergoError;
  refused: Refusal;
  superseded: Superseded;
  change: ChangeEvent;
  /** The local IndexedDB database vanished and is being rebuilt from the server; see LocalReset. */
  reset: LocalReset;
  serverReset: ServerReset;
  reconciled: Reconciliation;
  /** The server revoked the subject; see Status.revoked. */
  revoked: Revocation;
  /** The server refused a schema version it does not have yet; see Status.schemaAhead. */
  schemaAhead: ConvergoError;
  /** The server refused a collection to the token, once until a pull of it succeeds; see Status.unreadable. */
  unreadable: Unreadable;
}

export class Collection<T extends object = { [field: string]: Value }> {
  readonly name: string;
  /** Replaces the document: fields missing from doc are unset. */
  put(id: string, doc: T): Promise<Doc<T>>;
  /** Replaces many documents (each with its id) in one transaction and one notification. */
  putMany(docs: Array<T & { id: string }>): Promise<Doc<T>[]>;
  /** Sets the given fields (creating the document if missing); undefined unsets a field. */
  update(id: string, partial: Partial<T> | { [field: string]: Value | undefined }): Promise<Doc<T> | null>;
  /** Deletes the document; a later write re-creates it with only the newer fields. */
  delete(id: string): Promise<void>;
  get(id: string): Promise<Doc<T> | null>;
  /** Every document, ordered by id. */
  list(): Promise<Doc<T>[]>;
  query(q?: Query<T>): Promise<Doc<T>[]>;
  /** Live document: called now and on every change to it. Returns unsubscribe. */
  subscribe(id: string, callback: (doc: Doc<T> | null) => void): () => void;
  /** Live query: called now and on every change to the collection. Returns unsubscribe. */
  subscribe(query: Query<T>, callback: (docs: Doc<T>[]) => void): () => void;
}

export class Database {
  readonly name: string;
  /** A snapshot of the sync status. */
  readonly status: Status;
  collection<T extends object = { [field: string]: Value }>(name: string): Collection<T>;
  /** Listens to event (see EventMap: what the server tells the leader fires in every tab); returns a function that stops listening. */
  on<E extends keyof EventMap>(event: E, fn: (arg: EventMap[E]) => void): () => void;
  /**
   * Resolves once the database has synced with the server and has no
   * pending changes (at once if so already), with how many local changes
   * the server refused since whenSynced() last resolved; rejects with
   * 'closed' if it is closed first. Changes held for another subject
   * (status.held) do not hold it up. It waits through offline periods, a
   * token refused ('auth') or the subject revoked (until setToken): race
   * it with a timeout where the app must go on.
   */
  whenSynced(): Promise<{ refused: number }>;
  /** The changes the server refused, kept across reloads until retried or discarded; oldest first. */
  rejected(): Promise<RejectedChange[]>;
  /**
   * Writes rejected change id again with fresh stamps (so it can win again)
   * as a new local write, and removes the entry; rejects with not_found if
   * there is none, and with untranslatable (the entry stays) if it was
   * written under an older schema version the collection's migration
   * cannot map to the one its data is in now.
   */
  retry(id: number): Promise<void>;
  /** Forgets rejected change id; resolves to whether it existed. */
  discard(id: number): Promise<boolean>;
  /** Push local changes and pull remote ones now (through the leader tab if needed). */
  sync(): Promise<void>;
  /**
   * Stops talking to the server (an "offline" switch); writes keep going to
   * IndexedDB and the outbox. Applies to the connection this tab holds when
   * it leads.
   */
  pause(): Promise<void>;
  /** Starts syncing again after pause(); pending writes are pushed. */
  resume(): void;
  /**
   * Replaces the token and reconnects (after an 'auth' event, or a 'revoked'
   * one). The token is the database's: called in any tab, it replaces the
   * token of every tab (BroadcastChannel; never stored), so the leader's
   * connection uses it, every tab's new writes are stamped as its subject,
   * and a tab that leads later keeps it. Of two calls in different tabs
   * the later wins everywhere. A live session opened with a token of
   * another subject (its `sub`) ends, and the next one, with this token,
   * resumes every collection from its cursor under the new subject's
   * rights; a refreshed token of the same subject keeps the session.
   * Writes made after the call are the new subject's. Nothing in the
   * outbox is lost.
   */
  setToken(token: string): void;
  /**
   * Sets the scope called name of a collection (for every tab); the
   * collection is synced from now on under the or of its scopes. A change
   * reads the collection again from its cursor: the server sends the
   * records newly in scope and leave entries for those out of it, which
   * are removed locally (no delete, the outbox untouched). Rejects with
   * invalid for a malformed predicate, and for one that would make the or
   * of the collection's scopes over SCOPES.maxBytes in its wire form (the
   * scopes stay as they were). Resolves once the scope is stored, before
   * the collection is read again under it: await sync() after it to wait
   * for that read (whenSynced() does not wait for it).
   */
  setScope(collection: string, name: string, scope: Scope): Promise<void>;
  /** Removes the scope called name of a collection (none left: unscoped). */
  removeScope(collection: string, name: string): Promise<void>;
  /** Stops syncing and closes IndexedDB. */
  close(): Promise<void>;
}

export function open(options: OpenOptions): Promise<Database>;
