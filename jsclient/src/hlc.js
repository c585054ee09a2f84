// Hybrid logical clock, the same rules as Go's crdt.Clock: the clock never
// reads the time itself; callers pass wall time (ms) in.

import { ConvergoError } from './errors.js';

/** The largest wall time a stamp may carry (2^53-1). */
export const MAX_WALL = Number.MAX_SAFE_INTEGER;
/** The largest logical counter (2^32-1). */
export const MAX_LOGICAL = 0xffffffff;
/** Default bound on how far ahead of local time a remote stamp may be. */
export const DEFAULT_MAX_DRIFT = 5 * 60 * 1000;

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

const REPLICA_RE = /^[A-Za-z0-9_-]{1,64}$/;

/**
 * Checks a replica id: 1 to 64 ASCII letters, digits, '_' and '-'.
 * @param {string} id
 */
export function validateReplica(id) {
  if (typeof id !== 'string' || !REPLICA_RE.test(id)) {
    throw new ConvergoError('invalid', `replica id ${JSON.stringify(id)} must be 1 to 64 of A-Z a-z 0-9 _ -`);
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
    /** @type {Timestamp} */
    this.last = { wall: 0, logical: 0 };
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
   * Issues the stamp of a local event at wall time wall (ms).
   * @param {number} wall
   * @returns {Stamp}
   */
  now(wall) {
    const w = Math.max(this.last.wall, clampWall(wall));
    let l = 0;
    if (w === this.last.wall) {
      if (this.last.logical === MAX_LOGICAL) {
        throw new ConvergoError('counter_overflow', `clock now at ${this.last.wall}: logical counter overflow`);
      }
      l = this.last.logical + 1;
    }
    this.last = { wall: w, logical: l };
    return { wall: w, logical: l, replica: this.replica };
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
    const last = this.last;
    const w = Math.max(last.wall, remote.wall, wall);
    let l;
    if (w === last.wall && w === remote.wall) l = Math.max(last.logical, remote.logical) + 1;
    else if (w === last.wall) l = last.logical + 1;
    else if (w === remote.wall) l = remote.logical + 1;
    else l = 0;
    if (l > MAX_LOGICAL) {
      throw new ConvergoError('counter_overflow', `clock observe ${remote.wall}.${remote.logical}: logical counter overflow`);
    }
    this.last = { wall: w, logical: l };
  }
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

/**
 * A new random replica id (22 url-safe characters, 132 bits).
 * @returns {string}
 */
export function newReplicaId() {
  const b = new Uint8Array(22);
  globalThis.crypto.getRandomValues(b);
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
  let s = '';
  for (const x of b) s += alphabet[x & 63];
  return s;
}
