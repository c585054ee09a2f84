// src/constants.js is generated from the Go package transport/proto (`go
// test ./transport/proto -update`), which also writes
// crdt/testdata/protocol.json. Every export must equal its part of the
// JSON, so a hand edit of either copy fails here.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import * as constants from '../src/constants.js';
import * as model from '../src/model.js';
import { ConvergoError, CLIENT_CODES } from '../src/errors.js';
import { MAX_WALL, MAX_LOGICAL, MAX_ISSUED_LOGICAL, DEFAULT_MAX_DRIFT } from '../src/hlc.js';
import { MAX_DEPTH, MAX_ITEMS, MAX_VALUE_BYTES, MAX_VALUE_DEPTH } from '../src/cbor.js';
import { MAX_COLLECTION_BYTES, MAX_FIELDS, MAX_FIELD_NAME_BYTES, MAX_ID_BYTES, MAX_RECORD_BYTES } from '../src/record.js';

const json = JSON.parse(readFileSync(new URL('../../crdt/testdata/protocol.json', import.meta.url), 'utf8'));

/**
 * The export that holds a part of the JSON: its name in upper snake case
 * (contentType: CONTENT_TYPE), as the generator writes it.
 * @param {string} part
 */
const exportName = (part) => part.replace(/[A-Z]/g, (c) => '_' + c).toUpperCase();

test('every export of constants.js equals its part of protocol.json', () => {
  const parts = Object.keys(json);
  for (const want of ['version', 'paths', 'headers', 'contentType', 'codes', 'statuses', 'clientMessageTypes', 'serverMessageTypes', 'defaults', 'timings', 'model']) {
    assert.ok(parts.includes(want), `protocol.json holds ${want}`);
  }
  assert.deepEqual(Object.keys(constants).sort(), parts.map(exportName).sort(), 'constants.js exports exactly the parts of protocol.json');
  for (const part of parts) {
    const name = exportName(part);
    const got = /** @type {any} */ (constants)[name];
    // JSON round trip too: the frozen objects compare as plain data.
    assert.deepEqual(JSON.parse(JSON.stringify(got)), json[part], `constants.js ${name} differs from protocol.json ${part}`);
    assert.deepEqual(got, json[part], `constants.js ${name} differs from protocol.json ${part}`);
  }
});

test("model.js holds the model and the keys of the defaults, the replica rule and the timings the main entry reads, as protocol.json has them", () => {
  assert.deepEqual(Object.keys(model).sort(), ['BACKOFF', 'LOCAL_DEFAULTS', 'MODEL', 'REPLICA_RULE']);
  assert.equal(constants.MODEL, model.MODEL, 'constants.js re-exports MODEL');
  assert.deepEqual(model.MODEL, json.model);
  for (const [name, part] of /** @type {const} */ ([['LOCAL_DEFAULTS', 'defaults'], ['REPLICA_RULE', 'replica'], ['BACKOFF', 'timings']])) {
    const got = /** @type {Record<string, unknown>} */ (model[name]);
    assert.ok(Object.isFrozen(got), `${name} is frozen`);
    assert.ok(Object.keys(got).length > 0, `${name} holds keys`);
    for (const [k, v] of Object.entries(got)) assert.deepEqual(v, json[part][k], `model.js ${name}.${k} differs from protocol.json ${part}.${k}`);
  }
});

test('the constants cannot be changed at run time', () => {
  for (const part of Object.keys(json)) {
    const name = exportName(part);
    const v = /** @type {any} */ (constants)[name];
    if (typeof v === 'object') assert.ok(Object.isFrozen(v), `${name} is frozen`);
  }
});

test("the client's limits are the model's", () => {
  const { MODEL, DEFAULTS } = constants;
  // Wall times are exact JS numbers: the model's bound must be 2^53-1.
  assert.equal(MODEL.maxWall, Number.MAX_SAFE_INTEGER);
  assert.equal(MODEL.maxWall, 2 ** 53 - 1);
  assert.equal(MAX_WALL, MODEL.maxWall);
  assert.equal(MAX_LOGICAL, MODEL.maxLogical);
  assert.equal(MAX_LOGICAL, 2 ** 32 - 1);
  assert.equal(MAX_ISSUED_LOGICAL, MODEL.maxIssuedLogical);
  assert.equal(DEFAULT_MAX_DRIFT, DEFAULTS.maxDriftMs);
  assert.equal(MAX_DEPTH, MODEL.maxNestedLevels);
  assert.equal(MAX_VALUE_DEPTH, MODEL.maxValueNestedLevels);
  assert.equal(MAX_ITEMS, MODEL.maxContainerItems);
  assert.equal(MAX_VALUE_BYTES, MODEL.maxValueBytes);
  assert.equal(MAX_RECORD_BYTES, MODEL.maxRecordBytes);
  assert.equal(MAX_FIELDS, MODEL.maxFieldsPerRecord);
  assert.equal(MAX_ID_BYTES, MODEL.maxIdBytes);
  assert.equal(MAX_FIELD_NAME_BYTES, MODEL.maxFieldNameBytes);
  assert.equal(MAX_COLLECTION_BYTES, MODEL.maxCollectionBytes);
});

test('the ErrorCode type lists exactly the protocol codes and the client codes', () => {
  // errors.js declares ErrorCode as a JSDoc union; index.d.ts repeats it.
  const fromDoc = (/** @type {string} */ src, /** @type {RegExp} */ re) => {
    const m = re.exec(src);
    assert.ok(m, 'the ErrorCode union is where this test looks for it');
    return [...m[1].matchAll(/'([a-z_]+)'/g)].map((x) => x[1]).sort();
  };
  const want = [...constants.CODES.map((c) => c.code), ...CLIENT_CODES].sort();
  const errorsJs = readFileSync(new URL('../src/errors.js', import.meta.url), 'utf8');
  assert.deepEqual(fromDoc(errorsJs, /@typedef \{([^}]*)\} ErrorCode/), want, 'errors.js ErrorCode');
  const dts = readFileSync(new URL('../src/index.d.ts', import.meta.url), 'utf8');
  assert.deepEqual(fromDoc(dts, /export type ErrorCode =([^;]*);/), want, 'index.d.ts ErrorCode');
  assert.equal(new Set(want).size, want.length, 'no client code shadows a protocol code');
  assert.equal(new ConvergoError('invalid', 'x', { requestId: 'r1' }).requestId, 'r1');
});

/** The codes in backticks of text, in order. @param {string} text */
const codesIn = (text) => [...text.matchAll(/`([a-z_]+)`/g)].map((m) => m[1]);

test("the README's 'refused' event lists exactly the codes a push refuses one change with, as CODES says (perChange, not restoreOnly)", () => {
  const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
  const row = readme.split('\n').find((line) => line.startsWith('| `refused` |'));
  assert.ok(row, 'README.md has a row for the refused event');
  const m = /\(push status `refused`: ([^;]*);/.exec(row);
  assert.ok(m, "the refused row lists the push's codes: (push status `refused`: ...;");
  const documented = codesIn(m[1]);
  assert.equal(new Set(documented).size, documented.length, `a code listed twice: ${documented}`);
  const pushed = constants.CODES.filter((c) => c.perChange && !c.restoreOnly).map((c) => c.code);
  assert.ok(pushed.length > 0);
  assert.deepEqual([...documented].sort(), [...pushed].sort(), "README's refused codes vs CODES's push refusals");
  // A restore-only code never reaches 'refused': a record refused so stays local, an 'error' event.
  for (const c of constants.CODES.filter((c) => c.restoreOnly)) {
    assert.ok(c.perChange, `${c.code} is restoreOnly but not perChange`);
  }
});

test("the README's list of the protocol's error codes is CODES", () => {
  const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
  const m = /the protocol's codes \(`src\/constants\.js` `CODES`, generated from the Go\s+package `transport\/proto`: ([^;]*);/.exec(readme);
  assert.ok(m, "README.md lists the protocol's codes under Errors");
  assert.deepEqual(codesIn(m[1]).sort(), constants.CODES.map((c) => c.code).sort());
});
