// Replica ids belong to subjects (docs/protocol.md, section 4, "Replica
// ids"): the ids a subject owns are its replica prefix, the separator and a
// device part. The client computes its prefix from the subject its token
// names, so it stamps writes with an id the server accepts before it ever
// reaches the server; the hello answer repeats the prefix (key 11), and the
// Syncer takes that as the last word. The rule's constants (domain, prefix
// length, separator) come from model.js REPLICA_RULE.

import { MODEL, REPLICA_RULE } from './model.js';
import { ConvergoError } from './errors.js';

/** The most characters of a device part: what the prefix and separator leave of a replica id. */
export const MAX_DEVICE_BYTES = MODEL.maxReplicaBytes - REPLICA_RULE.prefixLen - REPLICA_RULE.separator.length;

const DEVICE_RE = new RegExp(`^[A-Za-z0-9_-]{1,${MAX_DEVICE_BYTES}}$`);
const PREFIX_RE = new RegExp(`^[a-z2-7]{${REPLICA_RULE.prefixLen}}$`);

/**
 * The replica prefix of a subject: the first bytes of SHA-256(domain,
 * subject) in lower-case base32, REPLICA_RULE.prefixLen characters.
 * @param {string} subject "" when anonymous
 * @returns {Promise<string>}
 */
export async function replicaPrefix(subject) {
  const subtle = globalThis.crypto?.subtle;
  if (!subtle) {
    // Browsers give crypto.subtle to secure contexts only.
    throw new ConvergoError('invalid', 'crypto.subtle is missing: Convergo needs a secure context (https or localhost)');
  }
  // The domain is ASCII: the UTF-8 of domain + subject is the two's, joined.
  const d = new Uint8Array(await subtle.digest('SHA-256', new TextEncoder().encode(REPLICA_RULE.domain + subject)));
  let out = '';
  for (let i = 0; i < REPLICA_RULE.prefixLen; i++) {
    // The 5 bits from bit 5i on, read from the two bytes they start in (past
    // the digest's end, a byte reads as 0), in RFC 4648's alphabet: a-z, 2-7.
    const v = (((d[(5 * i) >> 3] << 8) | d[((5 * i) >> 3) + 1]) >> (11 - ((5 * i) & 7))) & 31;
    out += String.fromCharCode(v < 26 ? 97 + v : 24 + v);
  }
  return out;
}

/**
 * The subject a token names: the `sub` claim of a JWT, read without
 * checking the signature (the server checks it; the client only needs to
 * know whose ids to stamp with). "" for no token or one it cannot read.
 * @param {string} token
 * @returns {string}
 */
export function subjectOfToken(token) {
  const parts = typeof token === 'string' ? token.split('.') : [];
  if (parts.length !== 3) return '';
  try {
    // base64url to base64; atob takes it without its padding.
    const bin = atob(parts[1].replace(/-/g, '+').replace(/_/g, '/'));
    const json = new TextDecoder('utf-8', { fatal: true }).decode(Uint8Array.from(bin, (c) => c.charCodeAt(0)));
    const sub = JSON.parse(json)?.sub;
    return typeof sub === 'string' ? sub : '';
  } catch {
    return '';
  }
}

/** @param {unknown} d */
export function isDevice(d) {
  return typeof d === 'string' && DEVICE_RE.test(d);
}

/** @param {unknown} p */
export function isPrefix(p) {
  return typeof p === 'string' && PREFIX_RE.test(p);
}

/**
 * A new random device part: 22 url-safe characters (132 bits), itself a
 * valid replica id.
 * @returns {string}
 */
export function newDevice() {
  // 17 random bytes in base64url (A-Z, a-z, 0-9, '-', '_'): the first 22
  // characters carry 132 of their bits.
  const b = globalThis.crypto.getRandomValues(new Uint8Array(17));
  return btoa(String.fromCharCode(...b)).slice(0, 22).replace(/\+/g, '-').replace(/\//g, '_');
}

/**
 * The replica id of a device under a prefix.
 * @param {string} prefix
 * @param {string} device
 */
export function replicaId(prefix, device) {
  return ownedStart(prefix) + device;
}

/**
 * How every replica id a prefix owns starts: the prefix and the separator.
 * @param {string} prefix
 */
export function ownedStart(prefix) {
  return prefix + REPLICA_RULE.separator;
}
