// The server's store goes back in time while browsers hold data: the store
// file is removed, a backup is restored (and the operator runs `convergo
// store mark-restored`), or Redis loses its last second of writes. Each
// time the clients are reset, give back what they hold, and everyone
// converges: the server ends up with every record any client held.

import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';

import {
  Server, addTodo, env, freePort, launchBrowser, openDemo, pane, renameTodo, serverTodos, shown, waitFor, waitSynced,
} from './harness.mjs';

const SECRET = 'e2e-heal-secret-0123456789abcdef';

/** Waits until both panes and the server show the same todos, n of them. */
async function converged(server, panes, n) {
  let last = null;
  await waitFor(async () => {
    const want = await serverTodos(server);
    const views = await Promise.all(panes.map((p) => shown(p)));
    last = { server: [...want.values()].map((t) => t.title).sort(), panes: views.map((v) => v.size) };
    return want.size === n && views.every((v) => JSON.stringify([...v].sort()) === JSON.stringify([...want].sort()));
  }, { timeout: 30_000, message: `the server and every pane to hold the same ${n} todos` }).catch((err) => {
    err.message += `; last: ${JSON.stringify(last)}`;
    throw err;
  });
}

describe('a store that went back in time is healed by its clients', () => {
  let browser;
  let dir;

  before(async () => {
    browser = await launchBrowser();
    dir = mkdtempSync(path.join(tmpdir(), 'convergo-heal-'));
  });

  after(async () => {
    await browser?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** Two people in separate browser profiles. */
  async function twoPeople(t, server) {
    const ctxA = await browser.newContext();
    const ctxB = await browser.newContext();
    t.after(() => Promise.all([ctxA.close(), ctxB.close()]));
    const pageA = await openDemo(ctxA, server.url, 'Alice');
    const pageB = await openDemo(ctxB, server.url, 'Bob');
    return { a: pane(pageA, 'alice'), b: pane(pageB, 'bob'), pageA, pageB };
  }

  it('(a) the store file is removed: every record any client held comes back', async (t) => {
    const server = new Server({ store: `bolt:${path.join(dir, 'a1.db')}`, extraArgs: ['--secret', SECRET] });
    await server.start();
    t.after(() => server.dispose('heal-removed'));
    const { a, b } = await twoPeople(t, server);
    const ids = [];
    for (const title of ['Water the plants', 'Call the plumber', 'Renew passport']) ids.push(await addTodo(a, title));
    await addTodo(b, 'Buy stamps');
    await addTodo(b, 'Return the drill');
    await converged(server, [a, b], 5);
    // Alice edits offline: her outbox goes out as usual after the reset.
    await a.getByTestId('offline-toggle').click();
    await renameTodo(a, ids[0], 'Water the plants (and the lawn)');
    await addTodo(a, 'Written offline');
    // The store file is lost: a new, empty one, the same secret (so the
    // seals of the old server still verify).
    await server.stop();
    rmSync(path.join(dir, 'a1.db'));
    // The new store starts with no file at all; the clients reconnect and
    // give their records back as soon as it answers, so by the time this
    // test could ask, the server may well be healed already.
    assert.equal(existsSync(path.join(dir, 'a2.db')), false, 'the new store starts empty');
    server.store = `bolt:${path.join(dir, 'a2.db')}`;
    await server.start();
    await a.getByTestId('offline-toggle').click();
    await converged(server, [a, b], 6);
    const titles = [...(await serverTodos(server)).values()].map((x) => x.title).sort();
    assert.deepEqual(titles, ['Buy stamps', 'Call the plumber', 'Renew passport', 'Return the drill', 'Water the plants (and the lawn)', 'Written offline']);
    await waitFor(async () => /lost history/.test((await b.getByTestId('notice').textContent()) ?? ''), { message: 'Bob to be told the server was reset' });
  });

  it('(b) a backup is restored and marked restored: the writes after it come back', async (t) => {
    const file = path.join(dir, 'b.db');
    const backup = path.join(dir, 'b.backup.db');
    const server = new Server({ store: `bolt:${file}`, extraArgs: ['--secret', SECRET] });
    await server.start();
    t.after(() => server.dispose('heal-backup'));
    const { a, b } = await twoPeople(t, server);
    const first = await addTodo(a, 'In the backup');
    await addTodo(b, 'Also in the backup');
    await converged(server, [a, b], 2);
    // The nightly backup (taken with the server stopped: bolt holds a lock).
    await server.stop();
    cpSync(file, backup);
    await server.start();
    await waitSynced(a);
    await addTodo(a, 'After the backup');
    await renameTodo(b, first, 'In the backup, renamed after it');
    await addTodo(b, 'Bob after the backup');
    await converged(server, [a, b], 4);
    // Disaster: restore the backup, as docs/operations.md says, with
    // mark-restored before starting again.
    await server.stop();
    cpSync(backup, file);
    execFileSync(env('CONVERGO_BIN'), ['store', 'mark-restored', '--store', `bolt:${file}`], { stdio: 'pipe' });
    await server.start();
    await converged(server, [a, b], 4);
    const titles = [...(await serverTodos(server)).values()].map((x) => x.title).sort();
    assert.deepEqual(titles, ['After the backup', 'Also in the backup', 'Bob after the backup', 'In the backup, renamed after it']);
  });

  it('(c) Redis loses its last second of writes: subscribers are reset and converge', async (t) => {
    const redisDir = path.join(dir, 'redis');
    const aside = path.join(dir, 'redis-aside');
    const port = await freePort();
    let redis = null;
    const startRedis = async () => {
      redis = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--dir', redisDir, '--appendonly', 'yes',
        '--appendfsync', 'everysec', '--save', '', '--protected-mode', 'no'], { stdio: 'ignore' });
      await waitFor(async () => {
        try {
          const res = execFileSync('redis-cli', ['-p', String(port), 'ping'], { stdio: 'pipe' }).toString();
          return /PONG/.test(res);
        } catch {
          return false;
        }
      }, { message: 'the private redis-server to answer' });
    };
    execFileSync('mkdir', ['-p', redisDir]);
    await startRedis();
    t.after(() => redis?.kill('SIGKILL'));
    const server = new Server({ store: `redis://127.0.0.1:${port}?prefix=heal:`, extraArgs: ['--secret', SECRET] });
    await server.start();
    t.after(() => server.dispose('heal-redis'));
    const { a, b } = await twoPeople(t, server);
    await addTodo(a, 'Durable one');
    await addTodo(b, 'Durable two');
    await converged(server, [a, b], 2);
    // Everything so far is on disk (fsync every second); keep that AOF.
    await sleep(1500);
    cpSync(path.join(redisDir, 'appendonlydir'), aside, { recursive: true });
    // The last writes: on the clients and in Redis's memory, not in the
    // AOF we keep.
    await addTodo(a, 'Lost by Redis');
    await addTodo(b, 'Also lost by Redis');
    await converged(server, [a, b], 4);
    redis.kill('SIGKILL');
    await new Promise((r) => redis.once('exit', r));
    rmSync(path.join(redisDir, 'appendonlydir'), { recursive: true, force: true });
    cpSync(aside, path.join(redisDir, 'appendonlydir'), { recursive: true });
    await startRedis();
    // The server notices the new Redis run and starts a new epoch, and
    // wakes its live subscribers: they are reset without a reconnect of
    // their own, and give back the writes Redis lost.
    await waitFor(() => /the Redis servers changed/.test(server.logs()), { message: 'the server to notice the new Redis run' });
    await converged(server, [a, b], 4);
    const titles = [...(await serverTodos(server)).values()].map((x) => x.title).sort();
    assert.deepEqual(titles, ['Also lost by Redis', 'Durable one', 'Durable two', 'Lost by Redis']);
    for (const p of [a, b]) {
      await waitFor(async () => /lost history/.test((await p.getByTestId('notice').textContent()) ?? ''), { message: 'each subscriber to be told of the reset' });
    }
    await addTodo(b, 'Written after Redis came back');
    await converged(server, [a, b], 5);
  });
});
