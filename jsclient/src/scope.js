// Scopes on the client (docs/protocol.md, section 12), loaded on demand:
// checking and encoding the app's predicates, finding the held records that
// leave entries name, and purging what a revoked subject held. The server
// evaluates scopes; the client only sends them (syncstore.js scopeOf composes the
// or of a collection's named scopes) and acts on what comes back.

import { encode } from './cbor.js';
import { SCOPES } from './constants.js';
import { ConvergoError } from './errors.js';
import { META, OUTBOX, RECORDS, REJECTED, req } from './db.js';
import { boundRejected, rejectedEntry } from './change.js';
import { CURSOR_KEY, HEALCHECK_KEY, HEAL_KEY, REREAD_KEY, SCOPE_KEY, SEALED } from './metakeys.js';
import { TabMessage } from './tabs.js';
import { heldIds, orScopes } from './syncstore.js';

/** @typedef {import('./db.js').Store} Store */
/** @typedef {import('./database.js').Database} Database */
/** @typedef {import('./db.js').OutboxEntry} OutboxEntry */

/** How many arguments each form takes after its name (-1: any number of predicates). */
const FORMS = new Map([
  ['all', 0],
  ['eq', 2],
  ['in', 2],
  ['has', 2],
  ['and', -1],
  ['or', -1],
]);

/**
 * Checks the shape of a predicate and encodes it: ["eq", field, value],
 * ["in", field, [values]], ["has", field, value], ["and", p, ...],
 * ["or", p, ...], ["all"]; a value may be a parameter {"$": "sub"} or
 * {"$": "claims.X"}. The server checks the rest (its limits, that
 * parameters bind) and answers invalid; setScope checks the byte limit of
 * the or a collection's scopes make (edit). Throws ConvergoError("invalid").
 * @param {unknown} p
 * @returns {Uint8Array}
 */
export function encodeScope(p) {
  check(p, 'scope', 0);
  return encode(p);
}

/**
 * @param {unknown} p
 * @param {string} at where p is, for the message
 * @param {number} depth
 */
function check(p, at, depth) {
  const n = Array.isArray(p) ? FORMS.get(p[0]) : undefined;
  const bad = (/** @type {string} */ why) => new ConvergoError('invalid', `${at}: ${why}`);
  if (n === undefined) throw bad(`not a predicate (an array starting with ${[...FORMS.keys()].join(', ')})`);
  const a = /** @type {unknown[]} */ (p);
  if (depth > 32) throw bad('nested too deep');
  if (n < 0) {
    a.slice(1).forEach((q, i) => check(q, `${at}[${i + 1}]`, depth + 1));
    return;
  }
  if (a.length !== n + 1) throw bad(`${a[0]} takes ${n} arguments`);
  if (n > 0 && typeof a[1] !== 'string') throw bad(`${a[0]}: the field name is not a string`);
  const v = a[2];
  const param = v !== null && typeof v === 'object' && !Array.isArray(v) && Object.keys(v).length === 1 && typeof (/** @type {any} */ (v).$) === 'string';
  if (a[0] === 'in' && !Array.isArray(v) && !param) throw bad('in: the values are not an array or a parameter');
}

/**
 * The leave entry of record id of collection c: the first
 * SCOPES.leaveBytes bytes of SHA-256(SCOPES.leaveDomain, c, 0x00, id).
 * @param {string} c
 * @param {string} id
 * @returns {Promise<Uint8Array>}
 */
export async function leaveDigest(c, id) {
  const h = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(SCOPES.leaveDomain + c + '\0' + id));
  return new Uint8Array(h, 0, SCOPES.leaveBytes);
}

/** @param {Uint8Array} b */
const key = (b) => String.fromCharCode(...b);

/**
 * Which of ids (records of collection c) the leave entries leaves name.
 * @param {string} c
 * @param {string[]} ids
 * @param {Uint8Array[]} leaves
 * @returns {Promise<string[]>}
 */
export async function named(c, ids, leaves) {
  const want = new Set(leaves.map(key));
  const digests = await Promise.all(ids.map((id) => leaveDigest(c, id)));
  return ids.filter((_, i) => want.has(key(digests[i])));
}

/**
 * The digests of the ids held, per collection, to find the records leave
 * entries name. A collection's ids are listed once, at its first leave;
 * after that the ids the Database hears of (note: local writes, pulled
 * pages, other tabs) are digested when the next leaves come.
 */
export class LeaveIndex {
  constructor() {
    /** @type {Map<string, {byDigest: Map<string, string>, todo: Set<string>}>} */
    this.colls = new Map();
  }

  /**
   * Records of collection c were written: their ids may be new.
   * @param {string} c
   * @param {Iterable<string>} ids
   */
  note(c, ids) {
    const x = this.colls.get(c);
    if (x) for (const id of ids) x.todo.add(id);
  }

  /**
   * The ids of collection c that these leave entries name (held or once
   * held: the Store removes only what it holds).
   * @param {Store} store
   * @param {string} c
   * @param {Uint8Array[]} leaves
   * @returns {Promise<string[]>}
   */
  async resolve(store, c, leaves) {
    let x = this.colls.get(c);
    if (!x) {
      x = { byDigest: new Map(), todo: new Set(await heldIds(store, c)) };
      this.colls.set(c, x);
    }
    const todo = [...x.todo];
    x.todo.clear();
    const digests = await Promise.all(todo.map((id) => leaveDigest(c, id)));
    todo.forEach((id, i) => x.byDigest.set(key(digests[i]), id));
    /** @type {string[]} */
    const out = [];
    for (const l of leaves) {
      const id = x.byDigest.get(key(l));
      if (id !== undefined) out.push(id);
    }
    return out;
  }
}

/**
 * The server revoked the subject: in one transaction, every record of
 * every collection is removed (live queries hear each go), every outbox
 * change becomes a rejected change with code revoked (the oldest dropped
 * past the bounds), and the cursors, owed heals, heal checks and
 * rereads are forgotten, so that a new token reads everything it may from the
 * beginning. Identity,
 * clock, scopes and the collections opened stay. Returns how many changes
 * were moved and how many old rejected changes dropped.
 * @param {Store} store
 * @param {ConvergoError} e the server's revoked error
 * @param {string|null} subject the subject that was signed in
 * @returns {Promise<{moved: number, dropped: number}>}
 */
export function purge(store, e, subject) {
  return store.tx([RECORDS, OUTBOX, REJECTED, META, SEALED], 'readwrite', 'purge after revoked', async (tx) => {
    const info = { when: Date.now(), subject };
    const outbox = tx.objectStore(OUTBOX);
    const entries = /** @type {OutboxEntry[]} */ (await req(outbox.getAll()));
    for (const x of entries) tx.objectStore(REJECTED).add(rejectedEntry(x, 'revoked', e.message, e.requestId ?? null, info));
    outbox.clear();
    const records = tx.objectStore(RECORDS);
    for (const k of await req(records.getAllKeys())) {
      const [c, id] = /** @type {[string, string]} */ (/** @type {unknown} */ (k));
      store.notify(tx, c, id, null, 'remote');
    }
    records.clear();
    tx.objectStore(SEALED).clear();
    const meta = tx.objectStore(META);
    for (const k of await req(meta.getAllKeys())) {
      if (typeof k === 'string' && (k.startsWith(CURSOR_KEY) || k.startsWith(HEAL_KEY) || k.startsWith(HEALCHECK_KEY) || k.startsWith(REREAD_KEY))) meta.delete(k);
    }
    const dropped = entries.length > 0 ? await boundRejected(tx) : 0;
    return { moved: entries.length, dropped };
  });
}

/**
 * Sets (pred given) or removes (undefined) the scope called name of
 * collection c; returns whether the collection's scopes changed.
 * @param {Store} store
 * @param {string} c
 * @param {string} name
 * @param {unknown} pred
 * @returns {Promise<boolean>}
 */
export function setScope(store, c, name, pred) {
  if (typeof name !== 'string' || name === '') throw new ConvergoError('invalid', 'setScope: the name is not a non-empty string');
  const bytes = pred === undefined ? undefined : encodeScope(pred);
  return edit(store, c, (cur) => {
    const next = { ...cur };
    if (bytes === undefined) delete next[name];
    else next[name] = bytes;
    return next;
  });
}

/**
 * Database.setScope and removeScope (pred undefined): sets the scope
 * called name of collection c, then syncs the collection under its
 * scopes: one not synced yet is opened; one whose scopes changed is read
 * again from its cursor, by the loop of this tab when it leads, else by
 * the leader's (TabMessage.scope).
 * @param {Database} db
 * @param {string} c
 * @param {string} name
 * @param {unknown} pred
 */
export async function rescope(db, c, name, pred) {
  const changed = await setScope(db.store, c, name, pred);
  if (!db.collections.has(c)) db.collection(c);
  else if (changed && db.syncer) db.syncer.rescope(c);
  else if (changed) db._post({ t: TabMessage.scope, c });
}

/**
 * Replaces every scope of collection c by these ({name: predicate});
 * returns whether they changed.
 * @param {Store} store
 * @param {string} c
 * @param {Record<string, unknown>} scopes
 * @returns {Promise<boolean>}
 */
export function replaceScopes(store, c, scopes) {
  /** @type {Record<string, Uint8Array>} */
  const next = {};
  for (const [name, p] of Object.entries(scopes ?? {})) next[name] = encodeScope(p);
  return edit(store, c, () => next);
}

/**
 * Rewrites the scopes of collection c in one transaction; returns whether
 * they changed.
 * @param {Store} store
 * @param {string} c
 * @param {(cur: Record<string, Uint8Array>) => Record<string, Uint8Array>} f
 * @returns {Promise<boolean>}
 */
function edit(store, c, f) {
  return store.tx([META], 'readwrite', `scopes of ${c}`, async (tx) => {
    const meta = tx.objectStore(META);
    const cur = (await req(meta.get(SCOPE_KEY + c))) ?? {};
    const next = f(cur);
    // The server refuses a scope over the scope limits invalid: one over
    // the byte limit is kept from the wire here (the Go client's
    // ErrScopeTooLarge), and the scopes stay as they were.
    const n = orScopes(next)?.length ?? 0;
    if (n > SCOPES.maxBytes) throw new ConvergoError('invalid', `the scopes of ${c} take ${n} bytes, over ${SCOPES.maxBytes}`);
    const ks = Object.keys(next);
    if (ks.length === Object.keys(cur).length && ks.every((k) => cur[k] instanceof Uint8Array && key(cur[k]) === key(next[k]))) return false;
    meta.put(next, SCOPE_KEY + c);
    return true;
  });
}
