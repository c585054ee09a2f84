// Hybrid logical clock, the same rules as Go's crdt.Clock: the clock never
// reads the time itself; callers pass wall time (ms) in.

import { LOCAL_DEFAULTS, MODEL } from './model.js';
import { ConvergoError } from './errors.js';

/**
 * The largest wall time a stamp may carry (2^53-1, which is
 * Number.MAX_SAFE_INTEGER: wall times are exact JS numbers;
 * test/constants.test.js checks it).
 */
export const MAX_WALL = MODEL.maxWall;
/** The largest logical counter a stamp may carry (2^32-1). */
export const MAX_LOGICAL = MODEL.maxLogical;
/**
 * The largest logical counter a Clock issues (65,535): past it the clock
 * carries into the wall part (one millisecond later, counter 0), as Go's
 * crdt.Clock; a server refuses pushed stamps above it.
 */
export const MAX_ISSUED_LOGICAL = MODEL.maxIssuedLogical;
/** Default bound on how far ahead of local time a remote stamp may be (the server's default; its hello says its own). */
export const DEFAULT_MAX_DRIFT = LOCAL_DEFAULTS.maxDriftMs;

/**
 * A stamp: hybrid logical clock reading plus the issuing replica's id.
 * @typedef {{wall: number, logical: number, replica: string}} Stamp
 */

/** @typedef {{wall: number, logical: number}} Timestamp */

/** The zero stamp: sorts before every real stamp and means "never". */
export const ZERO_STAMP = Object.freeze({ wall: 0, logical: 0, replica: '' });

/**
 * Orders stamps by wall, logical, then replica (bytewise; replica ids are
 * ASCII so UTF-16 order is byte order).
 * @param {Stamp} a
 * @param {Stamp} b
 * @returns {-1|0|1}
 */
export function compareStamps(a, b) {
  if (a.wall !== b.wall) return a.wall < b.wall ? -1 : 1;
  if (a.logical !== b.logical) return a.logical < b.logical ? -1 : 1;
  if (a.replica !== b.replica) return a.replica < b.replica ? -1 : 1;
  return 0;
}

/** @param {Stamp|null|undefined} s */
export function isZeroStamp(s) {
  return !s || (s.wall === 0 && s.logical === 0 && s.replica === '');
}

const REPLICA_RE = new RegExp(`^[A-Za-z0-9_-]{1,${MODEL.maxReplicaBytes}}$`);

/**
 * Checks a replica id: 1 to MODEL.maxReplicaBytes (64) ASCII letters, digits, '_' and '-'.
 * @param {string} id
 */
export function validateReplica(id) {
  if (typeof id !== 'string' || !REPLICA_RE.test(id)) {
    throw new ConvergoError('invalid', `replica id ${JSON.stringify(id)} must match ${REPLICA_RE}`);
  }
}

/** @param {number} w */
function clampWall(w) {
  return Math.min(Math.max(Math.floor(w), 0), MAX_WALL);
}

/**
 * Hybrid logical clock (Kulkarni et al. 2014). Not shared between tabs: the
 * database layer restores it from IndexedDB inside each write transaction so
 * tabs that share a replica id never issue the same stamp.
 */
export class Clock {
  /**
   * @param {{replica: string, maxDrift?: number}} cfg maxDrift in ms; 0 or
   *   missing means DEFAULT_MAX_DRIFT.
   */
  constructor(cfg) {
    validateReplica(cfg.replica);
    const d = cfg.maxDrift ?? 0;
    if (d < 0) throw new ConvergoError('invalid', `negative maxDrift ${d}`);
    this.replica = cfg.replica;
    this.maxDrift = d === 0 ? DEFAULT_MAX_DRIFT : d;
    /**
     * Whether maxDrift is the one a server stated (state), which the
     * clock saved carries to the other tabs (saved, settle).
     */
    this.stated = false;
    /** @type {Timestamp} */
    this.last = { wall: 0, logical: 0 };
  }

  /**
   * Takes max drift d (ms) that a server stated (its hello): this tab
   * stamps under it, and the clock it saves carries it to the others.
   * @param {number} d
   */
  state(d) {
    this.maxDrift = d;
    this.stated = true;
  }

  /**
   * The clock to save (meta "clock"): last, with the max drift a server
   * stated (drift) once one did. A tab running older code saves last
   * alone; the tabs then keep the bound they took.
   * @returns {Timestamp & {drift?: number}}
   */
  saved() {
    return this.stated ? { ...this.last, drift: this.maxDrift } : this.last;
  }

  /**
   * Moves the clock forward to t (never backwards): restores a state saved
   * earlier from `last`.
   * @param {Timestamp|null|undefined} t
   */
  restore(t) {
    if (t && compareTime(t, this.last) > 0) this.last = { wall: t.wall, logical: t.logical };
  }

  /**
   * Restores the clock a write transaction read (saved: the clock any tab
   * saved last) before it stamps, at wall time wall (ms), with the max
   * drift the server stated if it carries one (a tab that heard the
   * server's hello saved it: every tab stamps under the server's bound,
   * the followers too, with no read of its own). A clock more
   * than maxDrift ahead of wall takes saved when that is in time: the tab
   * that heard the server's time started the clock again (syncstore.js,
   * restartClock), and
   * this tab's reading is older than that. It never goes back further: a
   * wall clock set back must not pull stamps back below those issued.
   * A saved entry without a wall reading (none saved, or corrupt: stored
   * data is input like any other) is taken as none.
   * @param {any} saved (Timestamp & {drift?: number}) when well formed
   * @param {number} wall
   */
  settle(saved, wall) {
    if (typeof saved?.wall !== 'number') saved = null;
    const d = saved?.drift;
    if (d > 0) this.state(d);
    this.restore(saved);
    if (saved && this.ahead(wall) && saved.wall - clampWall(wall) <= this.maxDrift) {
      this.last = { wall: saved.wall, logical: saved.logical };
    }
  }

  /**
   * Whether the clock is more than maxDrift ahead of wall time wall (ms).
   * @param {number} wall
   */
  ahead(wall) {
    return this.last.wall - clampWall(wall) > this.maxDrift;
  }

  /**
   * Issues the stamp of a local event at wall time wall (ms).
   * @param {number} wall
   * @returns {Stamp}
   */
  now(wall) {
    const next = after(this.last, clampWall(wall), this.last.logical + 1, 'clock now');
    this.last = next;
    return { wall: next.wall, logical: next.logical, replica: this.replica };
  }

  /**
   * Folds a remote timestamp in at local wall time wall, so later stamps
   * sort after it. Refuses (clock_drift) a remote more than maxDrift ahead.
   * @param {Timestamp} remote
   * @param {number} wall
   */
  observe(remote, wall) {
    wall = clampWall(wall);
    if (!Number.isSafeInteger(remote.wall) || remote.wall < 0) {
      throw new ConvergoError('invalid', `clock observe: wall time ${remote.wall} out of range`);
    }
    if (remote.wall - wall > this.maxDrift) {
      throw new ConvergoError(
        'clock_drift',
        `clock observe: remote ${remote.wall} is ${remote.wall - wall}ms ahead of local ${wall} (max ${this.maxDrift}ms)`,
      );
    }
    // The later of the two readings, and the counter that follows it.
    const top = compareTime(remote, this.last) > 0 ? remote : this.last;
    this.last = after(top, wall, top.logical + 1, `clock observe ${remote.wall}.${remote.logical}`);
  }
}

/**
 * The timestamp that follows last at wall time wall: wall if it is ahead,
 * else last's wall with counter logical, carried into the wall part when
 * logical passes MAX_ISSUED_LOGICAL (as Go's Clock.after). Fails with
 * counter_overflow only when the wall part would pass MAX_WALL.
 * @param {Timestamp} last
 * @param {number} wall
 * @param {number} logical
 * @param {string} what for the message
 * @returns {Timestamp}
 */
function after(last, wall, logical, what) {
  if (wall > last.wall) return { wall, logical: 0 };
  if (logical <= MAX_ISSUED_LOGICAL) return { wall: last.wall, logical };
  if (last.wall >= MAX_WALL) throw new ConvergoError('counter_overflow', `${what}: at ${last.wall}: logical counter overflow`);
  return { wall: last.wall + 1, logical: 0 };
}

/**
 * @param {Timestamp} a
 * @param {Timestamp} b
 */
export function compareTime(a, b) {
  if (a.wall !== b.wall) return a.wall < b.wall ? -1 : 1;
  if (a.logical !== b.logical) return a.logical < b.logical ? -1 : 1;
  return 0;
}
