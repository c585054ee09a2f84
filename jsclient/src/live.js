// One live session: a WebSocket to the server's live path (PATHS.live) that
// says hello, sends a ping when it has heard nothing for
// TIMINGS.pingIntervalMs and takes a session silent for
// TIMINGS.clientSilenceTimeoutMs for dead (docs/protocol.md, section 9),
// checks on demand that its peer still answers, and hands the server's
// messages to the Syncer in order. A session ends when its socket closes;
// the Syncer's loop starts the next. Once welcomed it carries the Syncer's
// pushes too (push): one in flight, answered by a pushed message, which
// goes to the push waiting for it at once (not behind the sync work the
// push belongs to). A push in flight when the socket closes fails
// (network): the Syncer pushes its changes again. So does one in flight
// when a message too big to read comes (it may be its answer): the
// session then ends.
//
// The session knows the socket and the frames; what the server's welcome,
// changes and resync mean for the local data is the Syncer's (sync.js).

import { PATHS, TIMINGS } from './constants.js';
import { ConvergoError } from './errors.js';
import { MAX_ANSWER_BYTES, SESSION_CODES, checkToken, encodeLiveHello, encodePing, encodeSub, encodeUnsub, parseServerMessage, sentWith } from './protocol.js';
import { equalBytes } from './cbor.js';

/** @typedef {import('./protocol.js').Hello} Hello */
/** @typedef {{results?: import('./protocol.js').PushResult[], code?: string, message?: string, requestId?: string}} Pushed */

/** @typedef {import('./protocol.js').ServerMessage} ServerMessage */

/**
 * How long a live socket has to answer the ping sent when the network or
 * the page's visibility changes before it is taken for dead (ms).
 */
const PROBE_TIMEOUT_MS = 5_000;

/**
 * @typedef {object} LiveOptions
 * @property {string} url the server's base URL (http or https)
 * @property {any} WebSocket a WebSocket constructor
 * @property {() => boolean} stopped whether the sync loop was stopped
 * @property {() => string} replica this client's replica id, for the hello
 * @property {(force: boolean) => Promise<string>} token the token for the
 *   hello; its failures must be ConvergoErrors
 * @property {(fn: () => Promise<void>) => Promise<void>} serial runs fn
 *   after the sync work queued before it
 * @property {(m: ServerMessage, session: LiveSession) => Promise<void>} onMessage
 *   a message of this session, in order with the other sync work (through
 *   serial); rejecting ends the session with that error
 * @property {(c: string) => Promise<unknown>} pull pulls collection c over
 *   HTTP (for a frame too big to read)
 * @property {(c: string, e: ConvergoError) => Promise<void>|void} onRefused the
 *   server refused the sub of collection c (an error message with key 3):
 *   the session goes on, c no longer among the subscribed
 * @property {() => void} onClose the socket closed
 * @property {number} [pingInterval] ms of silence after which the client
 *   pings (default TIMINGS.pingIntervalMs)
 * @property {number} [silenceTimeout] ms of silence after which the
 *   session is dead (default TIMINGS.clientSilenceTimeoutMs)
 * @property {number} [pushTimeout] ms a push may wait for its pushed
 *   answer before the session is dead (default TIMINGS.clientPushTimeoutMs)
 */

/**
 * The error an error frame of a session whose hello carried token carries.
 * @param {Extract<ServerMessage, {type: 'error'}>} m
 * @param {string|null} token
 */
function refusal(m, token) {
  const e = new ConvergoError(/** @type {any} */ (m.code), `live: ${m.code}${m.message ? ': ' + m.message : ''}${m.requestId ? ` (request ${m.requestId})` : ''}`, { requestId: m.requestId });
  if (token !== null) sentWith.set(e, token);
  return e;
}

export class LiveSession {
  /** @param {LiveOptions} o */
  constructor(o) {
    this.o = o;
    /** @type {WebSocket|null} the socket, until it closes */
    this.ws = null;
    /** The Syncer accepted the server's welcome (accept). */
    this.accepted = false;
    /** @type {Set<string>} collections subscribed on this session */
    this.subscribed = new Set();
    /**
     * @type {Map<string, number>} the sub of each collection subscribed:
     * the number of the last sub sent of it (subs counts them), which
     * each frame of a collection is read under (handle)
     */
    this.subs = new Map();
    /** How many subs this session sent. */
    this.subCount = 0;
    /** @type {Set<string>} collections whose sub has sent a page with more false (Syncer.fresh) */
    this.caught = new Set();
    /**
     * @type {Map<string, Uint8Array>} of each collection subscribed, the
     * cursor its next page builds on: the one the sub was read from, then
     * the next of each page (the Syncer's onLive, overtaken)
     */
    this.at = new Map();
    /**
     * @type {Map<string, number>} collections unsubscribed whose frames
     * may still come: the nonce of the ping sent behind the unsub, until
     * its pong (unsubscribe)
     */
    this.draining = new Map();
    /** The nonce of the last ping sent on the socket. */
    this.nonce = 0;
    /** @type {(() => void)|null} sends a ping, whose pong must come in time (unsubscribe) */
    this.barrier = null;
    /** @type {(() => void)|null} checks that the socket still answers, once welcomed */
    this.probeLive = null;
    /** @type {((m: ServerMessage) => Promise<void>|void)|null} the session's own handling of a message */
    this.onMessage = null;
    /** The replica the hello named: the pushing replica of the session's pushes. */
    this.replica = '';
    /** @type {string|null} the token the hello carried (null: none yet): the session reads as its subject */
    this.token = null;
    /** @type {Hello|null} the welcome's hello answer: its server time is the session base of pushes */
    this.welcome = null;
    /** When the hello was sent (local ms; 0: not yet): the welcome's round trip began */
    this.helloAt = 0;
    /** @type {{resolve: (m: Pushed) => void, reject: (e: ConvergoError) => void}|null} the push in flight */
    this.pending = null;
    /** @type {((e: ConvergoError) => void)|null} ends the running socket as failed */
    this.fail = null;
  }

  /** Whether sync work may use the session: welcomed, accepted, not closed. */
  get live() {
    return this.ws !== null && this.accepted === true;
  }

  /** The Syncer took the server's welcome: the session is live. */
  accept() {
    this.accepted = true;
  }

  /**
   * Closes the socket; run() then settles. Frames that arrive meanwhile
   * are dropped (handle), and no sync work uses the session.
   */
  close() {
    this.ws?.close();
    this.ws = null;
  }

  /**
   * @param {string} c
   * @param {Uint8Array} cursor the stored cursor, as the server made it
   * @param {Uint8Array} [scope] the predicate to read c under, encoded (none: unscoped)
   * @param {import('./protocol.js').Lease} [lease] the reader's lease (keys 5 and 6)
   * @param {number} [version] the schema version to read in (key 8; 0: none)
   */
  subscribe(c, cursor, scope, lease, version = 0) {
    this.subscribed.add(c);
    this.subs.set(c, ++this.subCount);
    this.caught.delete(c);
    this.at.set(c, cursor);
    this.send(encodeSub(c, cursor, scope, lease, version));
  }

  /**
   * A page of collection c (its cursor after it: next) that was not
   * written, the cursor stored being another than the one it builds on
   * (at). Without Web Locks every tab streams its own session into the
   * IndexedDB they share, and another tab's writes moved the cursor
   * stored: written now, the page could undo what those brought (a leave
   * entry removing a record that came back into the scope, a record put
   * back that left it) while a later page stored a cursor past them.
   * When the cursor stored is next (that tab wrote the same page), the sub
   * goes on from it; otherwise the sub ends (unsubscribe) and true is
   * returned: the Syncer reads c again from the cursor stored and
   * subscribes again (catchUp).
   * @param {Uint8Array} stored the cursor of c stored now
   * @param {string} c
   * @param {Uint8Array} next
   * @returns {boolean} whether the sub ended
   */
  overtaken(stored, c, next) {
    if (!equalBytes(stored, next)) {
      this.unsubscribe(c);
      return true;
    }
    this.at.set(c, next);
    return false;
  }

  /**
   * Ends the sub of collection c: sends the unsub and, behind it, a ping.
   * Pages of the sub the server sent before it read the unsub may still
   * come; the server writes none after it, so everything of c that comes
   * before that ping's pong is of the ended sub, and is dropped (subOf),
   * even once c is subscribed again. A pong that does not come in time
   * ends the session (docs/protocol.md, section 9).
   * @param {string} c
   */
  unsubscribe(c) {
    this.subscribed.delete(c);
    if (!this.ws || this.ws.readyState !== 1) return;
    this.send(encodeUnsub(c));
    this.draining.set(c, ++this.nonce);
    this.send(encodePing(this.nonce));
    this.barrier?.();
  }

  /**
   * Sends a live push (encodeLivePush, from this session's base) and
   * resolves with the server's pushed answer. Rejects (network) when the
   * socket closes first, or when no answer comes within the push timeout:
   * the session is then dead (the socket is closed, and the loop dials
   * again); one push at a time.
   * @param {Uint8Array<ArrayBuffer>} frame
   * @returns {Promise<Pushed>}
   */
  push(frame) {
    return new Promise((resolve, reject) => {
      if (!this.live || this.pending) return reject(new ConvergoError('network', 'live push: no session'));
      const ms = this.o.pushTimeout ?? TIMINGS.clientPushTimeoutMs;
      const timer = setTimeout(() => {
        if (this.pending === p) this.lose(new ConvergoError('network', `live push: no pushed answer within ${ms} ms`));
      }, ms);
      const p = {
        resolve: (/** @type {Pushed} */ m) => (clearTimeout(timer), resolve(m)),
        reject: (/** @type {ConvergoError} */ e) => (clearTimeout(timer), reject(e)),
      };
      this.pending = p;
      this.send(frame);
    });
  }

  /**
   * Ends the session as a lost one: the push in flight fails at once with
   * e (its changes go again, over HTTP now), no sync work uses the session
   * from now on, and the socket closes (run rejects with e).
   * @param {ConvergoError} e
   */
  lose(e) {
    const p = this.pending;
    this.accepted = false;
    this.pending = null;
    p?.reject(e);
    this.fail?.(e);
  }

  /**
   * Sends on the socket if it is open; a closed socket is the loop's
   * business (it reconnects and subscribes again).
   * @param {Uint8Array<ArrayBuffer>} frame
   */
  send(frame) {
    if (this.ws && this.ws.readyState === 1) this.ws.send(frame);
  }

  /**
   * Runs the session; resolves when the socket closes normally, rejects
   * with the error that ended it.
   */
  run() {
    const WS = this.o.WebSocket;
    const url = this.o.url.replace(/^http/, 'ws') + PATHS.live;
    return new Promise((resolve, reject) => {
      if (this.o.stopped()) {
        resolve(undefined);
        return;
      }
      /** @type {WebSocket} */
      let ws;
      try {
        ws = new WS(url);
      } catch (e) {
        reject(new ConvergoError('network', `WebSocket ${url}: ${/** @type {any} */ (e)?.message ?? e}`));
        return;
      }
      ws.binaryType = 'arraybuffer';
      this.ws = ws;
      this.accepted = false;
      this.subscribed.clear();
      this.subs.clear();
      this.caught.clear();
      this.draining.clear();
      this.nonce = 0;
      /** @type {ConvergoError|null} */
      let failure = null;
      /** When the socket last brought anything (ms). */
      let heard = Date.now();
      /** Whether a ping went out since then. */
      let pinged = false;
      const pingInterval = this.o.pingInterval ?? TIMINGS.pingIntervalMs;
      const silenceTimeout = this.o.silenceTimeout ?? TIMINGS.clientSilenceTimeoutMs;
      /** @type {any} */
      let pinger = null;
      // One timer, set for the next moment something may be due: a ping
      // after pingInterval of silence, the end after silenceTimeout. A
      // message only moves `heard`; the timer finds out when it fires,
      // except that the first message after a ping sets it again for the
      // next ping (onmessage): left set for the end of the silence before
      // it, the timer would send that ping late, and its answer would have
      // less than silenceTimeout to come (the Go client's pinger, too,
      // pings after PingInterval of silence since the last message).
      const watch = () => {
        const quiet = Date.now() - heard;
        if (quiet >= silenceTimeout) {
          fail(new ConvergoError('network', `live socket silent for ${quiet} ms`));
          return;
        }
        if (quiet >= pingInterval && !pinged) {
          pinged = true;
          if (ws.readyState === 1) ws.send(encodePing(++this.nonce));
        }
        const next = quiet < pingInterval ? pingInterval : silenceTimeout;
        pinger = setTimeout(watch, next - quiet);
      };
      /** @type {any} */
      let probe = null;
      const fail = (/** @type {ConvergoError} */ e) => {
        failure ??= e;
        try {
          ws.close();
        } catch {
          /* closing already */
        }
      };
      this.fail = fail;
      /** @type {any} */
      let barrier = null;
      // The pong of an unsub's ping must come within the silence timeout.
      this.barrier = () => {
        if (barrier !== null) return;
        const check = () => {
          barrier = null;
          if (this.ws !== ws || this.draining.size === 0) return;
          fail(new ConvergoError('network', `live socket did not answer the ping behind an unsub within ${silenceTimeout} ms`));
        };
        barrier = setTimeout(check, silenceTimeout);
      };
      ws.onopen = async () => {
        if (this.o.stopped()) {
          ws.close();
          return;
        }
        try {
          this.replica = this.o.replica();
          this.token = await this.o.token(false);
          checkToken(this.token);
          ws.send(encodeLiveHello(this.replica, this.token));
          this.helloAt = Date.now();
        } catch (e) {
          fail(/** @type {ConvergoError} */ (e));
        }
      };
      ws.onmessage = (/** @type {MessageEvent} */ ev) => {
        heard = Date.now();
        if (pinged) {
          pinged = false;
          clearTimeout(pinger);
          pinger = setTimeout(watch, pingInterval);
        }
        if (typeof ev.data === 'string') {
          fail(new ConvergoError('malformed', 'text frame on the live socket'));
          return;
        }
        const bytes = new Uint8Array(ev.data);
        if (bytes.length > MAX_ANSWER_BYTES) {
          // Too big to read. While a push waits, it may be that push's
          // answer: the session ends as a lost one, and the push goes
          // again over HTTP at once, where an answer over the cap halves
          // the batch (splitter, sync.js); the next session catches up
          // from the cursors. Else fetch the same changes over HTTP in
          // pages, the session going on.
          if (this.pending) {
            this.lose(new ConvergoError('network', `live: a message of ${bytes.length} bytes, over ${MAX_ANSWER_BYTES}, while a push waits for its answer`));
            return;
          }
          this.o
            .serial(async () => {
              for (const c of this.subscribed) await this.o.pull(c);
            })
            .catch((e) => fail(e));
          return;
        }
        /** @type {ServerMessage|ConvergoError} */
        let m;
        try {
          m = parseServerMessage(bytes);
        } catch (e) {
          m = /** @type {ConvergoError} */ (e);
        }
        if (/** @type {any} */ (m).type === 'pushed') {
          // The push waiting for it is sync work itself: answer it now.
          const p = this.pending;
          this.pending = null;
          if (p) p.resolve(/** @type {Pushed} */ (m));
          else fail(new ConvergoError('malformed', 'live: pushed without a push'));
          return;
        }
        // A refusal of the session (token_expired, say) ends it with its
        // error also when the socket closes before the frame's turn comes
        // (handle drops the frames of a closed socket).
        if (/** @type {any} */ (m).type === 'error' && !(/** @type {any} */ (m).collection)) failure ??= refusal(/** @type {any} */ (m), this.token);
        if (/** @type {any} */ (m).type === 'pong') {
          // Pongs come in the order of the pings: every unsub behind
          // which a ping up to this one went is over.
          const n = /** @type {any} */ (m).nonce;
          for (const [c, at] of this.draining) if (at <= n) this.draining.delete(c);
          if (this.draining.size === 0) {
            clearTimeout(barrier);
            barrier = null;
          }
        }
        const sub = this.subOf(m);
        this.o.serial(() => this.handle(m, ws, sub)).catch((e) => fail(e));
      };
      ws.onerror = () => {
        failure ??= new ConvergoError('network', `WebSocket ${url} failed`);
      };
      ws.onclose = () => {
        clearTimeout(pinger);
        clearTimeout(probe);
        clearTimeout(barrier);
        if (this.ws === ws) {
          this.ws = null;
          this.probeLive = null;
        }
        this.accepted = false;
        this.pending?.reject(new ConvergoError('network', 'live push: the session closed'));
        this.pending = null;
        this.o.onClose();
        if (failure && !this.o.stopped()) reject(failure);
        else resolve(undefined);
      };
      /**
       * @param {ServerMessage} m
       * @returns {Promise<void>|void}
       */
      this.onMessage = (m) => {
        if (m.type === 'welcome') {
          // One per session: a second would move the base its pushes
          // write their walls from, which the server keeps at the first
          // (docs/protocol.md, section 9). Thrown: the session ends.
          if (this.welcome) throw new ConvergoError('malformed', 'live: a second welcome');
          this.welcome = m.hello;
          clearTimeout(pinger);
          pinger = setTimeout(watch, pingInterval);
          this.probeLive = () => {
            if (probe !== null || ws.readyState !== 1) return;
            probe = setTimeout(() => fail(new ConvergoError('network', 'live socket did not answer a ping after the network or page visibility changed')), PROBE_TIMEOUT_MS);
            ws.send(encodePing(++this.nonce));
          };
        } else if (m.type === 'pong') {
          clearTimeout(probe);
          probe = null;
        } else if (m.type === 'error') {
          // Without a collection, or with a code of the session, the
          // server's, the principal's or the request's as a whole (the
          // code table's session): the session's, whatever it names.
          if (!m.collection || SESSION_CODES.has(m.code)) return fail(refusal(m, this.token));
          // Of a collection not (or no longer) subscribed: nothing to
          // refuse (a server naming one this client does not sync must
          // not have it pulled, nor said unreadable).
          if (!this.subscribed.has(m.collection)) return;
          // The server streams nothing of it: subscribed again only by a
          // later sub (a new token, the next session).
          this.subscribed.delete(m.collection);
          return this.o.onRefused(m.collection, refusal(m, this.token));
        }
      };
    });
  }

  /**
   * The sub a frame of a collection (changes, reset, resync, a refused
   * sub) belongs to, as it arrives: the number of the last sub of its
   * collection sent (subs), 0 when none is (unsubscribed, or its unsub's
   * ping not answered yet: unsubscribe); undefined for a frame of no
   * collection.
   * @param {ServerMessage|ConvergoError} m
   * @returns {number|undefined}
   */
  subOf(m) {
    if (m instanceof Error || !('collection' in m) || typeof m.collection !== 'string') return undefined;
    if (this.draining.has(m.collection)) return 0;
    return this.subscribed.has(m.collection) ? /** @type {number} */ (this.subs.get(m.collection)) : 0;
  }

  /**
   * Handles one frame, in order with other sync work.
   * @param {ServerMessage|ConvergoError} m the frame, parsed (or why it could not be)
   * @param {WebSocket} ws the socket it came on
   * @param {number} [sub] the sub it came under (subOf)
   */
  async handle(m, ws, sub) {
    // Frames of a socket that has closed since they arrived are dropped:
    // the next session catches up from the cursors.
    if (this.ws !== ws) return;
    if (m instanceof Error) throw m;
    // A frame of a collection that came while it was not subscribed, or
    // under a sub another has replaced since (an unsub and a sub again: a
    // scope changed, a reconciliation), is of a sub that has ended: the
    // server sent it before it read the unsub. Dropped, since it is not
    // of the read that follows: a leave entry in it would remove a record
    // the pull before the new sub brought, which that sub, going on from
    // past it, never sends again (docs/protocol.md, section 9).
    if (sub !== undefined && 'collection' in m && typeof m.collection === 'string' && (sub === 0 || this.subs.get(m.collection) !== sub || !this.subscribed.has(m.collection))) return;
    await this.onMessage?.(m);
    await this.o.onMessage(m, this);
  }
}
