// The demo keeps its own files for offline reloads, never the API: the
// page (app.js ownFile) and its service worker (sw.js cacheable) leave out
// every path of the protocol, of any version (/v<digits>/ and /v<digits>:
// the server answers each as a protocol path, proto.VersionOfPath), by the
// one pattern the Go package exports (PATHS.versionPattern).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import vm from 'node:vm';
import { PATHS } from '../src/constants.js';

const ORIGIN = 'http://demo.test';
const appSource = readFileSync(new URL('../demo/app.js', import.meta.url), 'utf8');
const swSource = readFileSync(new URL('../demo/sw.js', import.meta.url), 'utf8');

// Paths of the protocol, of this version and any other, and paths that are not.
const PROTOCOL = ['/v1/hello', '/v2/pull', '/v2/', '/v3/hello', '/v3', '/v10/live', '/v0/x'];
const OWN = ['/', '/app.js', '/sw.js', '/style.css', '/convergo/index.js', '/video', '/v/', '/v', '/vx/', '/v2x', '/v2x/y', '/demo/v3/x'];

/** The source of app.js's top-level function name. @param {string} name */
function appFunction(name) {
  const m = new RegExp(`\\nfunction ${name}\\([^]*?\\n}\\n`).exec(appSource);
  assert.ok(m, `app.js has a top-level function ${name}`);
  return m[0];
}

/** app.js's ownFile and workerURL, in a context like the page's. */
function page() {
  const demoToken = /\nconst DEMO_TOKEN = [^\n]*/.exec(appSource);
  assert.ok(demoToken, 'app.js declares DEMO_TOKEN');
  const ctx = vm.createContext({ PATHS, URL, location: new URL(`${ORIGIN}/?people=Alice`) });
  vm.runInContext(`${demoToken[0]}\n${appFunction('ownFile')}\n${appSource.includes('\nfunction workerURL(') ? appFunction('workerURL') : ''}`, ctx);
  return ctx;
}

/** sw.js, loaded as a worker registered at url. @param {string} url */
function worker(url) {
  const u = new URL(url);
  const ctx = vm.createContext({ URL, self: { location: { href: u.href, origin: u.origin }, addEventListener() {} } });
  vm.runInContext(swSource, ctx);
  return ctx;
}

test('the exported pattern of protocol paths matches every version and nothing else', () => {
  assert.equal(typeof PATHS.versionPattern, 'string', 'constants.js PATHS.versionPattern');
  const re = new RegExp(PATHS.versionPattern);
  for (const p of PROTOCOL) assert.ok(re.test(p), `${p} is a protocol path`);
  for (const p of OWN) assert.ok(!re.test(p), `${p} is no protocol path`);
});

test("the page caches none of the protocol's paths, of any version", () => {
  const { ownFile } = page();
  for (const p of PROTOCOL) assert.equal(ownFile(new URL(p, ORIGIN)), false, `the page caches ${p}`);
  for (const p of OWN) assert.equal(ownFile(new URL(p, ORIGIN)), true, `the page does not cache ${p}`);
  assert.equal(ownFile(new URL('/demo/token', ORIGIN)), false, 'the page caches the demo token');
  assert.equal(ownFile(new URL('/app.js', 'http://other.test')), false, "the page caches another origin's file");
});

test("the worker the page registers caches none of the protocol's paths, of any version, as the page", () => {
  const { ownFile, workerURL } = page();
  const url = workerURL ? workerURL(new URL(`${ORIGIN}/app.js`)) : new URL(`${ORIGIN}/sw.js`);
  const { cacheable } = worker(url.href);
  const get = (p) => cacheable({ method: 'GET', url: new URL(p, ORIGIN).href });
  for (const p of PROTOCOL) assert.equal(get(p), false, `the worker caches ${p}`);
  for (const p of OWN) {
    assert.equal(get(p), true, `the worker does not cache ${p}`);
    assert.equal(get(p), ownFile(new URL(p, ORIGIN)), `page and worker differ on ${p}`);
  }
  for (const p of ['/metrics', '/healthz', '/readyz']) assert.equal(get(p), false, `the worker caches ${p}`);
  assert.equal(cacheable({ method: 'POST', url: `${ORIGIN}/demo/token` }), false);
  assert.equal(cacheable({ method: 'GET', url: 'http://other.test/app.js' }), false);
});

test('a worker registered without the pattern caches nothing rather than guess', () => {
  for (const url of [`${ORIGIN}/sw.js`, `${ORIGIN}/sw.js?protocol=%5B`]) {
    const { cacheable } = worker(url);
    assert.equal(cacheable({ method: 'GET', url: `${ORIGIN}/app.js` }), false, url);
  }
});
