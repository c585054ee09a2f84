// Capture of plain Redis hashes (docs/redis.md, "Capture of plain
// hashes"): the server runs with the rule
// capture=demo.todos=app:todo:*;mirror on a private redis-server, so
// keyspace-notification config, CLIENT KILL and restarts disturb no one
// else. A writer that knows nothing of Convergo (redis-cli) changes, adds
// and deletes app:todo:<id> hashes while two people edit the same todos
// in the demo; every browser and the server converge on the merge (no
// write lost, no deleted todo back), browsers' edits appear in the plain
// hashes (the mirror), and writes made while capture was not listening
// (its subscriptions killed, no server running, Redis restarted) come to
// the browsers anyway.

import assert from 'node:assert/strict';
import { execFile, execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';

import {
  Server, addTodo, freePort, launchBrowser, openDemo, pane, renameTodo, shown, todo, visible, waitFor, waitSynced,
} from './harness.mjs';

const KEY = 'app:todo:'; // the plain hashes: app:todo:<record id>
const execFileAsync = promisify(execFile);

describe('capture: plain Redis hashes written by another program', () => {
  let dir;
  let port;
  let redis = null;
  let server;
  let browser;
  let a; // Alice's pane
  let b; // Bob's pane
  const ids = {}; // the ids of the todos the browsers made, by name

  /** redis-cli against the private server: the app that knows nothing of Convergo. */
  const cli = (...args) => execFileSync('redis-cli', ['-p', String(port), ...args], { stdio: 'pipe' }).toString().trim();
  const cliAsync = async (...args) => (await execFileAsync('redis-cli', ['-p', String(port), ...args])).stdout.trim();

  /** The plain hash of record id as {field: value}, or null when there is none. */
  const hash = (id) => {
    const out = execFileSync('redis-cli', ['-p', String(port), 'HGETALL', KEY + id], { stdio: 'pipe' }).toString();
    const lines = out.split('\n');
    if (lines.at(-1) === '') lines.pop();
    if (lines.length === 0 || (lines.length === 1 && lines[0] === '')) return null;
    const h = {};
    for (let i = 0; i + 1 < lines.length; i += 2) h[lines[i]] = lines[i + 1];
    return h;
  };

  /**
   * Kills every pub/sub connection (capture's keyspace subscription and
   * the server's notification subscription) and runs commands (redis-cli
   * lines) in the same MULTI, so no notification of them reaches anyone.
   */
  const killAndWrite = (...commands) => {
    const out = execFileSync('redis-cli', ['-p', String(port)], {
      stdio: 'pipe',
      input: ['MULTI', 'CLIENT KILL TYPE pubsub', ...commands, 'EXEC', ''].join('\n'),
    }).toString().split('\n');
    // OK, a QUEUED per command, then EXEC's results: the first is the kill count.
    const killed = Number(out[1 + out.filter((l) => l === 'QUEUED').length]);
    assert.ok(killed >= 1, `CLIENT KILL TYPE pubsub killed no client: ${JSON.stringify(out)}`);
  };

  const startRedis = async () => {
    // appendfsync always: a restart is no new epoch (docs/redis.md,
    // "Identity and epochs"), so the browsers keep their state through it.
    redis = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--appendonly', 'yes',
      '--appendfsync', 'always', '--save', '', '--protected-mode', 'no'], { stdio: 'ignore' });
    await waitFor(() => {
      try {
        return /PONG/.test(cli('PING'));
      } catch {
        return false;
      }
    }, { message: 'the private redis-server to answer' });
  };

  /**
   * Waits until the server and both panes show exactly want (id -> title)
   * and returns the server's documents.
   */
  async function expectTodos(want, what, timeout = 15_000) {
    const wanted = JSON.stringify(Object.entries(want).sort(([x], [y]) => (x < y ? -1 : 1)));
    let last = null;
    let docs = null;
    await waitFor(async () => {
      docs = await server.docs();
      const views = [docs, ...(await Promise.all([a, b].map((p) => shown(p))))].map((m) =>
        JSON.stringify([...m].map(([id, t]) => [id, t.title]).sort(([x], [y]) => (x < y ? -1 : 1))));
      last = { server: views[0], alice: views[1], bob: views[2] };
      return views.every((v) => v === wanted);
    }, { timeout, message: `${what}: the server and both browsers to show ${wanted}` }).catch((err) => {
      err.message += `\nlast: ${JSON.stringify(last, null, 1)}`;
      throw err;
    });
    return docs;
  }

  /**
   * Waits until every plain hash is the mirror of its record: the live
   * fields as text (values that are not text as JSON), no key for a
   * record that shows nothing.
   */
  async function expectMirrored(what) {
    let last = null;
    await waitFor(async () => {
      for (const [id, r] of await server.records()) {
        const doc = visible(r);
        const want = doc && Object.fromEntries(Object.entries(doc).map(([k, v]) => [k, mirrored(v)]));
        const got = hash(id);
        if (JSON.stringify(sortKeys(want)) !== JSON.stringify(sortKeys(got))) {
          last = { id, record: want, hash: got };
          return false;
        }
      }
      return true;
    }, { timeout: 15_000, message: `${what}: every plain hash to mirror its record` }).catch((err) => {
      err.message += `; last: ${JSON.stringify(last)}`;
      throw err;
    });
  }

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'convergo-capture-'));
    port = await freePort();
    await startRedis();
    // The app had data before Convergo ever ran: captured at start.
    cli('HSET', `${KEY}seed`, 'title', 'Seeded by the app');
    server = new Server({ store: `redis://127.0.0.1:${port}?prefix=cv:&capture=demo.todos=${KEY}*;mirror` });
    await server.start();
    browser = await launchBrowser();
    const ctxA = await browser.newContext();
    const ctxB = await browser.newContext();
    a = pane(await openDemo(ctxA, server.url, 'Alice'), 'alice');
    b = pane(await openDemo(ctxB, server.url, 'Bob'), 'bob');
  });

  after(async () => {
    await browser?.close();
    await server?.dispose('capture');
    redis?.kill('SIGKILL');
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('captures, mirrors, and catches every write capture missed', async () => {
    await expectTodos({ seed: 'Seeded by the app' }, 'the hash written before the server started');

    // The app writes while both people add todos.
    const writer = (async () => {
      for (let i = 1; i <= 5; i++) {
        await cliAsync('HSET', `${KEY}plain-${i}`, 'title', `Plain ${i}`);
        await sleep(30);
      }
      await cliAsync('HSET', `${KEY}seed`, 'title', 'Seeded, edited by the app');
    })();
    // And a client of the wire protocol (as the Go client would) sets
    // another field of the seeded record meanwhile.
    const pusher = server.push('go-client', 'seed', { priority: 'high' });
    [ids.alice, ids.bob] = await Promise.all([addTodo(a, 'Alice one'), addTodo(b, 'Bob one'), writer, pusher]);
    const want = {
      seed: 'Seeded, edited by the app',
      'plain-1': 'Plain 1', 'plain-2': 'Plain 2', 'plain-3': 'Plain 3', 'plain-4': 'Plain 4', 'plain-5': 'Plain 5',
      [ids.alice]: 'Alice one', [ids.bob]: 'Bob one',
    };
    let docs = await expectTodos(want, 'writes of the app, of both browsers and of a pushing client at once');
    assert.equal(docs.get('seed').priority, 'high', "the pushing client's field beside the app's title");

    // The mirror: the browsers' todos are plain hashes too, and an edit in
    // a browser lands in the app's hash.
    await waitFor(() => hash(ids.alice)?.title === 'Alice one' && hash(ids.alice).done === 'false' && /^\d+$/.test(hash(ids.alice).created),
      { message: `Alice's todo mirrored into ${KEY}${ids.alice} (${JSON.stringify(hash(ids.alice))})` });
    await renameTodo(b, 'plain-1', 'Plain 1, renamed by Bob');
    want['plain-1'] = 'Plain 1, renamed by Bob';
    await expectTodos(want, "Bob's rename of a plain todo");
    await waitFor(() => hash('plain-1')?.title === 'Plain 1, renamed by Bob', { message: `Bob's rename in ${KEY}plain-1` });

    // The same record, different fields, at once: Alice renames, the app
    // adds a field. Both stay.
    await Promise.all([renameTodo(a, 'plain-3', 'Plain 3, renamed by Alice'), cliAsync('HSET', `${KEY}plain-3`, 'note', 'from the app')]);
    want['plain-3'] = 'Plain 3, renamed by Alice';
    docs = await expectTodos(want, 'a rename and a plain field on one todo');
    await waitFor(async () => (docs = await server.docs()).get('plain-3')?.note === 'from the app', { message: 'the plain field captured beside the rename' });
    await waitFor(() => hash('plain-3')?.title === 'Plain 3, renamed by Alice' && hash('plain-3')?.note === 'from the app',
      { message: `both fields in ${KEY}plain-3 (${JSON.stringify(hash('plain-3'))})` });

    // Deletes both ways: Bob deletes a plain todo (its hash goes); the app
    // deletes Alice's todo's hash (the todo goes).
    await todo(b, 'plain-2').getByTestId('todo-delete').click();
    cli('DEL', `${KEY}${ids.alice}`);
    delete want['plain-2'];
    delete want[ids.alice];
    await expectTodos(want, 'a delete in a browser and a DEL by the app');
    await waitFor(() => cli('EXISTS', `${KEY}plain-2`) === '0', { message: `Bob's delete to remove ${KEY}plain-2` });
    await expectMirrored('after the deletes');

    // Capture's keyspace subscription dies (so does the server's own
    // notification subscription) and the app writes in the same MULTI, so
    // no notification of these writes reaches anyone: reconciliation at
    // re-subscription must catch them.
    killAndWrite(`HSET ${KEY}plain-6 title "Written during the kill"`,
      `HSET ${KEY}plain-4 title "Plain 4, retitled during the kill"`, `DEL ${KEY}plain-5`);
    want['plain-6'] = 'Written during the kill';
    want['plain-4'] = 'Plain 4, retitled during the kill';
    delete want['plain-5'];
    await expectTodos(want, 'writes around CLIENT KILL TYPE pubsub');

    // No server runs: the app keeps writing (a change, a new key, a field
    // removed, a delete), and Alice edits offline. All of it at restart.
    await server.stop();
    cli('HSET', `${KEY}plain-1`, 'title', 'Plain 1, changed while no server ran');
    cli('HSET', `${KEY}plain-7`, 'title', 'Added while no server ran');
    cli('HDEL', `${KEY}plain-3`, 'note');
    cli('DEL', `${KEY}${ids.bob}`);
    cli('HSET', `${KEY}plain-6`, 'note', 'while no server ran');
    await renameTodo(a, 'plain-6', 'Written during the kill, renamed by Alice offline');
    await server.start();
    want['plain-1'] = 'Plain 1, changed while no server ran';
    want['plain-7'] = 'Added while no server ran';
    want['plain-6'] = 'Written during the kill, renamed by Alice offline';
    delete want[ids.bob];
    docs = await expectTodos(want, 'writes made while no server ran');
    assert.equal(docs.get('plain-6').note, 'while no server ran', 'the plain field written beside the offline rename');
    assert.equal(docs.get('plain-3').note, undefined, 'the field the app removed');
    await Promise.all([waitSynced(a, { what: "Alice's pane" }), waitSynced(b, { what: "Bob's pane" })]);
    await expectMirrored('after the restart');

    // Nothing deleted comes back: not after the mirror's walk from the
    // start, not after another reconciliation pass.
    killAndWrite(`HSET ${KEY}plain-7 title "Added while no server ran, edited again"`);
    want['plain-7'] = 'Added while no server ran, edited again';
    await expectTodos(want, 'a second reconciliation pass');
    for (const id of ['plain-2', 'plain-5', ids.alice, ids.bob]) {
      assert.equal(cli('EXISTS', `${KEY}${id}`), '0', `${KEY}${id} stays deleted`);
    }
    await expectMirrored('at the end');
  });

  // After a restart Redis has forgotten the notify-keyspace-events that
  // capture set with CONFIG SET: capture sets it again when its
  // subscription comes back, so plain writes are captured at once, not at
  // the next reconciliation.
  it('after a Redis restart, plain writes are captured at once again', async () => {
    const docs = await server.docs();
    const want = Object.fromEntries([...docs].map(([id, d]) => [id, d.title]));
    const runs = () => server.logs().split('\n').filter((l) => /recorded the Redis servers' run/.test(l)).length;
    const seen = runs();
    redis.kill('SIGTERM');
    await new Promise((r) => redis.once('exit', r));
    await startRedis();
    await waitFor(() => runs() > seen, { message: 'the server to notice the new Redis run' });
    // Writes missed while Redis was away are reconciled at re-subscription;
    // this one comes after it and needs a notification (milliseconds), not
    // the reconciliation every 30 s.
    await sleep(500);
    cli('HSET', `${KEY}plain-4`, 'title', 'Written after Redis restarted');
    want['plain-4'] = 'Written after Redis restarted';
    const flags = cli('CONFIG', 'GET', 'notify-keyspace-events').split('\n')[1] ?? '';
    await expectTodos(want, `a write after the Redis restart, with notify-keyspace-events "${flags}"`, 3_000);
    await renameTodo(a, 'plain-4', 'Renamed by Alice after the Redis restart');
    await waitFor(() => hash('plain-4')?.title === 'Renamed by Alice after the Redis restart', { message: 'the mirror after the Redis restart' });
  });
});

/** A value as the mirror writes it: text as is, anything else as JSON. */
function mirrored(v) {
  if (typeof v === 'string') return v;
  if (typeof v === 'bigint') return String(v); // cbor-x decodes large integers (created) as BigInt
  return JSON.stringify(v);
}

function sortKeys(o) {
  return o && Object.fromEntries(Object.entries(o).sort(([x], [y]) => (x < y ? -1 : 1)));
}
