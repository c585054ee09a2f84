// The package's types as an app's TypeScript finds them: through the
// "exports" map (not ../src paths), with no allowJs (so a module without
// a declaration file is an implicit any, an error under --strict), under
// moduleResolution bundler and nodenext. Every name each entry point
// exports at run time must be declared by its types.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const pkg = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8'));
const tsc = path.join(root, 'node_modules', 'typescript', 'bin', 'tsc');

test('every entry point has types that declare what it exports, under bundler and nodenext resolution', async () => {
  const lines = [];
  for (const [sub, target] of Object.entries(pkg.exports)) {
    const file = typeof target === 'string' ? target : target.default;
    const names = Object.keys(await import(path.join(root, file))).sort();
    const spec = sub === '.' ? pkg.name : pkg.name + sub.slice(1);
    const alias = 'm' + lines.length;
    lines.push(`import * as ${alias} from '${spec}';`, `export const ${alias}names = [${names.map((n) => `${alias}.${n}`).join(', ')}];`);
  }
  // An app of its own with the package installed, as npm links a local
  // package (the types of react, which react.d.ts does not need, aside).
  const app = mkdtempSync(path.join(tmpdir(), 'convergo-types-'));
  try {
    mkdirSync(path.join(app, 'node_modules'));
    symlinkSync(root, path.join(app, 'node_modules', pkg.name), 'dir');
    writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'app', type: 'module', private: true }));
    writeFileSync(path.join(app, 'app.ts'), lines.join('\n') + '\n');
    for (const [module, resolution] of [['esnext', 'bundler'], ['nodenext', 'nodenext']]) {
      const args = [tsc, '--ignoreConfig', '--strict', '--noEmit', '--skipLibCheck', '--target', 'es2022', '--lib', 'es2023,dom', '--module', module, '--moduleResolution', resolution, '--types', '', 'app.ts'];
      let out = '';
      try {
        execFileSync(process.execPath, args, { cwd: app, encoding: 'utf8', stdio: 'pipe' });
      } catch (e) {
        out = String(/** @type {any} */ (e).stdout) + String(/** @type {any} */ (e).stderr);
      }
      assert.equal(out, '', `tsc --moduleResolution ${resolution}`);
    }
  } finally {
    rmSync(app, { recursive: true, force: true });
  }
});
