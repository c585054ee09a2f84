// Starting the real Go server (test/_goserver) for tests.

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

/**
 * Builds test/_goserver and starts it on a free port.
 * @param {string} go
 * @param {string[]} args
 * @returns {Promise<{url: string, stop: () => Promise<void>}>}
 */
export async function startGoServer(go, args) {
  const bin = join(mkdtempSync(join(tmpdir(), 'convergo-js-')), 'goserver');
  execFileSync(go, ['build', '-o', bin, './jsclient/test/_goserver'], { cwd: repo, stdio: 'inherit' });
  const p = spawn(bin, args, { stdio: ['pipe', 'pipe', 'inherit'] });
  const url = await new Promise((resolve, reject) => {
    let out = '';
    p.stdout.on('data', (d) => {
      out += d;
      const m = /listening (\S+)/.exec(out);
      if (m) resolve(m[1]);
    });
    p.on('exit', (code) => reject(new Error(`server exited with ${code}`)));
  });
  return {
    url,
    stop: () =>
      new Promise((resolve) => {
        if (p.exitCode !== null) return resolve(undefined);
        p.on('exit', () => resolve(undefined));
        p.stdin.end();
        setTimeout(() => p.kill(), 3000).unref();
      }),
  };
}
