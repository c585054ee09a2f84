// Schema versions of a collection (docs/design.md, "Schema versions";
// docs/protocol.md, section 13): the definition an app shares with the
// server's rules file, checked here as crdt/migrate checks it in Go, and
// the translation of records and changes, with their stamps, from one
// version to another. Pure functions over record.js's records: no
// IndexedDB, no network. Loaded on demand by open({migrations}) (the
// Database imports it only then), and exported on its own as
// "convergo/migrate" for apps that want to check a definition in their
// build.
//
// A translation is resolving: a target field already present keeps its
// value unless the source's stamp is newer (strictly, in stamp order). So
// translating data that is already in the new shape changes nothing, and
// a record may hold fields of two versions at once (reading resolves it).
// crdt/testdata/migrations.json holds the vectors that Go and this module
// must agree on byte for byte (test/migrate.test.js).

import { MAX_VALUE_BYTES, decode, encode } from './cbor.js';
import { ConvergoError } from './errors.js';
import { compareStamps, isZeroStamp } from './hlc.js';
import { validateFieldName } from './record.js';

/** @typedef {import('./record.js').Record} Rec */
/** @typedef {import('./record.js').Field} Field */

/** The most steps a definition may have, and ops a step. */
export const MAX_STEPS = 64;
export const MAX_OPS = 64;

/**
 * One op of a step (see the spec in the README, "Schema versions").
 * @typedef {{op: 'rename', from: string, to: string}
 *   | {op: 'split', from: string, to: string[], sep: string}
 *   | {op: 'merge', from: string[], to: string, sep: string}
 *   | {op: 'default', field: string, value: unknown}
 *   | {op: 'drop', field: string}} Op
 */

/**
 * A checked definition: version is the current version (1..), steps[i]
 * goes from version i+1 to i+2.
 * @typedef {{version: number, steps: {to: number, ops: Op[]}[]}} Definition
 */

/** What a translation translates: a stored record, or a change. @typedef {'record'|'change'} Kind */

/** The keys each op takes. */
const OP_KEYS = new Map([
  ['rename', ['op', 'from', 'to']],
  ['split', ['op', 'from', 'to', 'sep']],
  ['merge', ['op', 'from', 'to', 'sep']],
  ['default', ['op', 'field', 'value']],
  ['drop', ['op', 'field']],
]);

/** @param {string} msg */
function invalid(msg) {
  return new ConvergoError('invalid', `migrations: ${msg}`);
}

/**
 * @param {unknown} v
 * @returns {v is Record<string, unknown>}
 */
function isObject(v) {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/**
 * @param {Record<string, unknown>} o
 * @param {string[]} allowed
 * @param {string} at
 */
function onlyKeys(o, allowed, at) {
  for (const k of Object.keys(o)) if (!allowed.includes(k)) throw invalid(`${at}: unknown key ${JSON.stringify(k)}`);
}

/**
 * @param {unknown} v
 * @param {string} at
 * @returns {string}
 */
function fieldName(v, at) {
  if (typeof v !== 'string') throw invalid(`${at}: a field name must be a string`);
  try {
    validateFieldName(v);
  } catch (e) {
    throw invalid(`${at}: ${/** @type {Error} */ (e).message}`);
  }
  return v;
}

/**
 * @param {unknown} v
 * @param {string} at
 * @returns {string[]}
 */
function parts(v, at) {
  if (!Array.isArray(v) || v.length < 2) throw invalid(`${at}: needs a list of at least 2 fields`);
  return v.map((x, i) => fieldName(x, `${at}[${i}]`));
}

/**
 * @param {unknown} v
 * @param {string} at
 * @returns {string}
 */
function separator(v, at) {
  if (typeof v !== 'string' || v === '') throw invalid(`${at}: the separator must be a non-empty string`);
  return v;
}

/**
 * Checks a definition (the "migrations" object of a rule) and returns it
 * normalized: {version, steps: [{to, ops}]}. Throws ConvergoError
 * ("invalid") saying what is wrong: an unknown op or key, a step whose to
 * is not the next version, a version that is not the last step's to, a
 * field named twice as a target in one step, a split or merge of fewer
 * than 2 parts or with an empty separator, an invalid field name or
 * default value, more than MAX_STEPS steps or MAX_OPS ops in a step.
 * @param {unknown} def
 * @returns {Definition}
 */
export function parseDefinition(def) {
  if (!isObject(def)) throw invalid('a definition must be an object {version, steps}');
  onlyKeys(def, ['version', 'steps'], 'definition');
  const steps = def.steps ?? [];
  if (!Array.isArray(steps)) throw invalid('steps must be a list');
  if (steps.length > MAX_STEPS) throw invalid(`${steps.length} steps, more than ${MAX_STEPS}`);
  /** @type {Definition['steps']} */
  const out = [];
  /** @type {Set<string>} the fields ops of earlier steps read: a record resolves from version 1, so a later op may not write them */
  const retired = new Set();
  steps.forEach((s, i) => {
    const at = `steps[${i}]`;
    if (!isObject(s)) throw invalid(`${at} must be an object {to, ops}`);
    onlyKeys(s, ['to', 'ops'], at);
    if (s.to !== i + 2) throw invalid(`${at}.to must be ${i + 2} (step ${i} goes from version ${i + 1} to ${i + 2}), got ${JSON.stringify(s.to)}`);
    if (!Array.isArray(s.ops)) throw invalid(`${at}.ops must be a list`);
    if (s.ops.length > MAX_OPS) throw invalid(`${at} has ${s.ops.length} ops, more than ${MAX_OPS}`);
    /** @type {Set<string>} */
    const targets = new Set();
    /** @type {Set<string>} */
    const sources = new Set();
    const target = (/** @type {string} */ name, /** @type {string} */ where) => {
      if (targets.has(name)) throw invalid(`${where}: field ${JSON.stringify(name)} is a target twice in step ${i}`);
      if (sources.has(name)) throw invalid(`${where}: field ${JSON.stringify(name)} is both a source and a target in step ${i}`);
      if (retired.has(name)) throw invalid(`${where}: field ${JSON.stringify(name)} was retired by an earlier version: its name cannot be used again`);
      targets.add(name);
    };
    const source = (/** @type {string} */ name, /** @type {string} */ where) => {
      if (sources.has(name)) throw invalid(`${where}: field ${JSON.stringify(name)} is a source twice in step ${i}`);
      if (targets.has(name)) throw invalid(`${where}: field ${JSON.stringify(name)} is both a source and a target in step ${i}`);
      sources.add(name);
    };
    out.push({
      to: i + 2,
      ops: s.ops.map((o, j) => {
        const where = `${at}.ops[${j}]`;
        if (!isObject(o)) throw invalid(`${where} must be an object`);
        const keys = typeof o.op === 'string' ? OP_KEYS.get(o.op) : undefined;
        if (!keys) throw invalid(`${where}: unknown op ${JSON.stringify(o.op)}`);
        onlyKeys(o, keys, where);
        for (const k of keys) if (!Object.hasOwn(o, k)) throw invalid(`${where}: ${o.op} needs ${JSON.stringify(k)}`);
        switch (o.op) {
          case 'rename': {
            const op = /** @type {Op} */ ({ op: 'rename', from: fieldName(o.from, `${where}.from`), to: fieldName(o.to, `${where}.to`) });
            source(op.from, where);
            target(op.to, where);
            return op;
          }
          case 'split': {
            const to = parts(o.to, `${where}.to`);
            const op = /** @type {Op} */ ({ op: 'split', from: fieldName(o.from, `${where}.from`), to, sep: separator(o.sep, `${where}.sep`) });
            source(op.from, where);
            for (const t of to) target(t, where);
            return op;
          }
          case 'merge': {
            const op = /** @type {Op} */ ({ op: 'merge', from: parts(o.from, `${where}.from`), to: fieldName(o.to, `${where}.to`), sep: separator(o.sep, `${where}.sep`) });
            for (const f of op.from) source(f, where);
            target(op.to, where);
            return op;
          }
          case 'default': {
            let bytes;
            try {
              bytes = encode(o.value);
            } catch (e) {
              throw invalid(`${where}.value: ${/** @type {Error} */ (e).message}`);
            }
            if (bytes.length > MAX_VALUE_BYTES) throw invalid(`${where}.value: ${bytes.length} bytes, over ${MAX_VALUE_BYTES}`);
            const op = /** @type {Op} */ ({ op: 'default', field: fieldName(o.field, `${where}.field`), value: o.value });
            target(op.field, where);
            return op;
          }
          default: {
            const op = /** @type {Op} */ ({ op: 'drop', field: fieldName(o.field, `${where}.field`) });
            source(op.field, where);
            return op;
          }
        }
      }),
    });
    for (const f of sources) retired.add(f);
  });
  const want = out.length + 1;
  if (def.version !== want) throw invalid(`version must be the last step's to (${want}), got ${JSON.stringify(def.version)}`);
  return { version: want, steps: out };
}

/**
 * The values that absent fields of a record read as at version v: the
 * default ops of the steps up to v, followed through later renames and
 * forgotten by later drops, splits and merges of their field (as Go's
 * Definition.Defaults).
 * @param {Definition} def
 * @param {number} v
 * @returns {Map<string, unknown>}
 */
export function defaults(def, v) {
  /** @type {Map<string, unknown>} */
  let out = new Map();
  for (const step of def.steps) {
    if (step.to > v) break;
    /** @type {Map<string, unknown>} */
    const next = new Map();
    /** @type {Set<string>} */
    const moved = new Set();
    for (const op of step.ops) {
      switch (op.op) {
        case 'rename':
          if (out.has(op.from)) next.set(op.to, out.get(op.from));
          moved.add(op.from);
          break;
        case 'split':
          moved.add(op.from);
          break;
        case 'merge':
          for (const f of op.from) moved.add(f);
          break;
        case 'drop':
          moved.add(op.field);
          break;
        case 'default':
          next.set(op.field, op.value);
          break;
      }
    }
    for (const [f, val] of out) if (!next.has(f) && !moved.has(f)) next.set(f, val);
    out = next;
  }
  return out;
}

/**
 * Sets field name of fields to f unless the one held is as new or newer
 * (the resolving rule).
 * @param {Map<string, Field>} fields
 * @param {string} name
 * @param {Field} f
 */
function resolve(fields, name, f) {
  const cur = fields.get(name);
  if (cur === undefined || compareStamps(f.stamp, cur.stamp) > 0) fields.set(name, f);
}

/**
 * The string a value holds, or null when it is not a string.
 * @param {Uint8Array} v canonical bytes
 * @returns {string|null}
 */
function stringOf(v) {
  if (v.length === 0 || v[0] >> 5 !== 3) return null;
  const s = decode(v, { canonical: false });
  return typeof s === 'string' ? s : null;
}

/**
 * s cut at the first n-1 occurrences of sep, the last part keeping the
 * rest; missing parts are "" (Go's strings.SplitN, padded).
 * @param {string} s
 * @param {string} sep
 * @param {number} n
 */
function splitN(s, sep, n) {
  /** @type {string[]} */
  const out = [];
  let rest = s;
  while (out.length < n - 1) {
    const k = rest.indexOf(sep);
    if (k < 0) break;
    out.push(rest.slice(0, k));
    rest = rest.slice(k + sep.length);
  }
  out.push(rest);
  while (out.length < n) out.push('');
  return out;
}

/**
 * @param {string} msg
 */
function untranslatable(msg) {
  return new ConvergoError('untranslatable', msg);
}

/**
 * Splits field from of fields into to (resolving), removing from. A value
 * that is not a string makes a change untranslatable and is dropped from
 * a record.
 * @param {Map<string, Field>} fields
 * @param {string} from
 * @param {string[]} to
 * @param {string} sep
 * @param {Kind} kind
 */
function split(fields, from, to, sep, kind) {
  const f = fields.get(from);
  if (f === undefined) return;
  fields.delete(from);
  if (f.value === null) {
    for (const t of to) resolve(fields, t, { stamp: f.stamp, value: null });
    return;
  }
  const s = stringOf(f.value);
  if (s === null) {
    if (kind === 'change') throw untranslatable(`field ${JSON.stringify(from)} is not a string: it cannot be split into ${to.map((t) => JSON.stringify(t)).join(', ')}`);
    return;
  }
  splitN(s, sep, to.length).forEach((p, i) => resolve(fields, to[i], { stamp: f.stamp, value: encode(p) }));
}

/**
 * Merges fields from of fields into to (resolving), removing them. A
 * change must hold every part (whole: every part present); a record uses
 * the parts it has. A part that is set and not a string makes a change
 * untranslatable and is left out of a record's merge.
 * @param {Map<string, Field>} fields
 * @param {string[]} from
 * @param {string} to
 * @param {string} sep
 * @param {Kind} kind
 * @param {boolean} whole a change must hold every part
 */
function merge(fields, from, to, sep, kind, whole) {
  const present = from.filter((a) => fields.has(a));
  if (present.length === 0) return;
  if (whole && kind === 'change' && present.length < from.length) {
    const missing = from.filter((a) => !fields.has(a));
    throw untranslatable(`merge needs every part: the change sets ${present.map((a) => JSON.stringify(a)).join(', ')} but not ${missing.map((a) => JSON.stringify(a)).join(', ')}, of ${JSON.stringify(to)}`);
  }
  /** @type {string[]} */
  const values = [];
  /** @type {Field|null} */
  let top = null;
  let any = false;
  for (const a of present) {
    const f = /** @type {Field} */ (fields.get(a));
    fields.delete(a);
    if (f.value !== null) {
      const s = stringOf(f.value);
      if (s === null) {
        if (kind === 'change') throw untranslatable(`field ${JSON.stringify(a)} is not a string: it cannot be merged into ${JSON.stringify(to)}`);
        continue;
      }
      values.push(s);
      any = true;
    }
    if (top === null || compareStamps(f.stamp, top.stamp) > 0) top = f;
  }
  if (top === null) return;
  resolve(fields, to, { stamp: top.stamp, value: any ? encode(values.join(sep)) : null });
}

/**
 * Moves field from of fields to field to (resolving).
 * @param {Map<string, Field>} fields
 * @param {string} from
 * @param {string} to
 */
function rename(fields, from, to) {
  const f = fields.get(from);
  if (f === undefined) return;
  fields.delete(from);
  resolve(fields, to, f);
}

/**
 * Applies step i of def (from version i+1 to i+2) to fields, up or down.
 * @param {Definition} def
 * @param {number} i
 * @param {Map<string, Field>} fields
 * @param {boolean} up
 * @param {Kind} kind
 */
function applyStep(def, i, fields, up, kind) {
  const ops = def.steps[i].ops;
  if (up) {
    for (const op of ops) {
      switch (op.op) {
        case 'rename':
          rename(fields, op.from, op.to);
          break;
        case 'split':
          split(fields, op.from, op.to, op.sep, kind);
          break;
        case 'merge':
          merge(fields, op.from, op.to, op.sep, kind, true);
          break;
        case 'drop':
          fields.delete(op.field);
          break;
      }
    }
    return;
  }
  for (let j = ops.length - 1; j >= 0; j--) {
    const op = ops[j];
    switch (op.op) {
      case 'rename':
        rename(fields, op.to, op.from);
        break;
      case 'split':
        merge(fields, op.to, op.from, op.sep, kind, false);
        break;
      case 'merge':
        split(fields, op.to, op.from, op.sep, kind);
        break;
    }
  }
}

/**
 * Translates a record or a change from version `from` to version `to` of
 * def (both 1..def.version), one step at a time; the input is not
 * modified. The delete stamp is carried unchanged. A change the
 * migration cannot map (a split of a value that is not a string, a merge
 * missing a part, a change left with nothing) throws ConvergoError
 * ("untranslatable"); a record drops what it cannot map.
 * @param {Definition} def
 * @param {Rec} r
 * @param {number} from
 * @param {number} to
 * @param {Kind} kind
 * @returns {Rec}
 */
export function translate(def, r, from, to, kind) {
  for (const v of [from, to]) {
    if (!Number.isSafeInteger(v) || v < 1) throw invalid(`schema version ${v}`);
    if (v > def.version) throw new ConvergoError('schema_ahead', `schema version ${v}, current ${def.version}`);
  }
  const fields = new Map(r.fields);
  const out = { id: r.id, deleted: r.deleted, fields };
  if (from === to) return out;
  const up = to > from;
  for (let v = from; v !== to; v += up ? 1 : -1) {
    applyStep(def, up ? v - 1 : v - 2, fields, up, kind);
    if (kind === 'change' && fields.size === 0 && isZeroStamp(r.deleted)) {
      throw untranslatable(`every field of the change was dropped in version ${up ? v + 1 : v - 1}`);
    }
  }
  return out;
}

/**
 * Translates up from `from` to `to` (from < to).
 * @param {Definition} def
 * @param {Rec} r
 * @param {number} from
 * @param {number} to
 * @param {Kind} kind
 */
export function up(def, r, from, to, kind) {
  if (from > to) throw invalid(`up from ${from} to ${to}`);
  return translate(def, r, from, to, kind);
}

/**
 * Translates down from `from` to `to` (from > to).
 * @param {Definition} def
 * @param {Rec} r
 * @param {number} from
 * @param {number} to
 * @param {Kind} kind
 */
export function down(def, r, from, to, kind) {
  if (from < to) throw invalid(`down from ${from} to ${to}`);
  return translate(def, r, from, to, kind);
}
