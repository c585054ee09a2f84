// Starting the real server, `convergo serve --store memory:`, for tests.
// The binary is built once per test process from ./cmd/convergo, unless
// CONVERGO_BIN names one already built (as scripts/e2e.sh does).

import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = fileURLToPath(new URL('../../..', import.meta.url));

/** The go tool, or null when there is none. */
export function findGo() {
  for (const p of [process.env.GO, '/usr/local/go/bin/go', 'go']) {
    if (!p) continue;
    try {
      execFileSync(p, ['version'], { stdio: 'ignore' });
      return p;
    } catch {
      /* next */
    }
  }
  return null;
}

/** @type {string|null} */
let built = null;

/**
 * Builds ./cmd/convergo (once) and runs `convergo serve` on a free loopback
 * port with an in-memory store.
 * @param {string} go
 * @param {string[]} [args] extra serve flags
 * @returns {Promise<{url: string, stop: () => Promise<void>, logs: () => string}>}
 */
export async function startGoServer(go, args = []) {
  if (!built && process.env.CONVERGO_BIN) built = process.env.CONVERGO_BIN;
  if (!built) {
    const bin = join(mkdtempSync(join(tmpdir(), 'convergo-js-')), 'convergo');
    execFileSync(go, ['build', '-o', bin, './cmd/convergo'], { cwd: repo, stdio: 'inherit' });
    built = bin;
  }
  const p = spawn(built, ['serve', '--store', 'memory:', '--addr', '127.0.0.1:0', '--rate', '-1', '--log-level', 'info', ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`convergo serve did not start:\n${out}`)), 20_000);
    // The "listening" log line names the port the OS picked.
    const onData = (/** @type {Buffer} */ d) => {
      out += d;
      const m = /listening.*?addr=(\S+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve('http://' + m[1]);
      }
    };
    p.stdout.on('data', onData);
    p.stderr.on('data', onData);
    p.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`convergo serve exited with ${code}:\n${out}`));
    });
  });
  return {
    url,
    logs: () => out,
    stop: () =>
      new Promise((resolve) => {
        if (p.exitCode !== null) return resolve(undefined);
        p.on('exit', () => resolve(undefined));
        p.kill('SIGTERM');
        setTimeout(() => p.kill('SIGKILL'), 5000).unref();
      }),
  };
}
