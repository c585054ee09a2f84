// Record operations only what talks to the server needs, loaded with it
// rather than up front: the part of a record a subject wrote and what of
// it a record lacks (the sync loop settling the outbox, heal.js giving
// back), a record's stamps grouped as the changes that made them,
// whether a record exists or holds any stamp, and a merge into a copy.

import { compareStamps, isZeroStamp } from './hlc.js';
import { emptyRecord, mergeInto } from './record.js';

/** @typedef {import('./record.js').Record} Record */

/**
 * Returns the merge of a and b (neither modified) and whether it differs
 * from a.
 * @param {Record} a
 * @param {Record} b
 * @returns {[Record, boolean]}
 */
export function merge(a, b) {
  const out = cloneRecord(a);
  const changed = mergeInto(out, b);
  return [out, changed];
}

/** @param {Record} r */
export function cloneRecord(r) {
  return { id: r.id, deleted: r.deleted, fields: new Map(r.fields) };
}

/**
 * The stamps of base that the ids of this subject wrote (own: its replica
 * prefix and the separator), as a record; with seal, those the sealed
 * record holds as they are are left out (the restore gives them back).
 * @param {Record} base
 * @param {string} own
 * @param {Record} [seal]
 * @returns {Record}
 */
export function ownPart(base, own, seal) {
  const part = emptyRecord(base.id);
  if (!isZeroStamp(base.deleted) && base.deleted.replica.startsWith(own) && !(seal && compareStamps(seal.deleted, base.deleted) === 0)) {
    part.deleted = base.deleted;
  }
  for (const [name, f] of base.fields) {
    if (!f.stamp.replica.startsWith(own)) continue;
    const g = seal?.fields.get(name);
    if (g && compareStamps(g.stamp, f.stamp) === 0) continue;
    part.fields.set(name, f);
  }
  return part;
}

/**
 * Rec split into one record per stamp: its delete alone, then its fields
 * grouped by stamp (the fields one change wrote), in stamp order. Pushed
 * apart, a stamp refused collected takes no later one with it.
 * @param {Record} rec
 * @returns {Record[]}
 */
export function byStamp(rec) {
  /** @type {Record[]} */
  const out = [];
  if (!isZeroStamp(rec.deleted)) out.push({ ...emptyRecord(rec.id), deleted: rec.deleted });
  /** @type {Map<string, Record>} */
  const groups = new Map();
  const fields = [...rec.fields].sort((a, b) => compareStamps(a[1].stamp, b[1].stamp));
  for (const [name, f] of fields) {
    const key = `${f.stamp.wall}/${f.stamp.logical}/${f.stamp.replica}`;
    let g = groups.get(key);
    if (!g) {
      g = emptyRecord(rec.id);
      groups.set(key, g);
      out.push(g);
    }
    g.fields.set(name, f);
  }
  return out;
}

/**
 * The stamps of part that rec neither holds nor hides: a field rec holds
 * at the same stamp or a newer one, or stamped at or before rec's delete,
 * is covered, and so is a delete at or before rec's.
 * @param {Record} part
 * @param {Record} rec
 * @returns {Record}
 */
export function uncovered(part, rec) {
  const out = emptyRecord(part.id);
  if (compareStamps(part.deleted, rec.deleted) > 0) out.deleted = part.deleted;
  for (const [name, f] of part.fields) {
    if (compareStamps(f.stamp, rec.deleted) <= 0) continue;
    const g = rec.fields.get(name);
    if (g && compareStamps(g.stamp, f.stamp) >= 0) continue;
    out.fields.set(name, f);
  }
  return out;
}

/**
 * Whether r has at least one visible field with a value.
 * @param {Record} r
 */
export function exists(r) {
  for (const f of r.fields.values()) {
    if (f.value !== null && compareStamps(f.stamp, r.deleted) > 0) return true;
  }
  return false;
}

/**
 * Whether r holds any stamp: a delete or a field (set or unset). An empty
 * record is a write of nothing, or a server state never acknowledged.
 * @param {Record} r
 */
export function hasStamps(r) {
  return !isZeroStamp(r.deleted) || r.fields.size > 0;
}
